#!/usr/bin/env python3
"""The shared cache under several processes at once, then its invariant checked (by hand).

    python scripts/stress_storage.py --seed 1 --seconds 20
    python scripts/stress_storage.py --seed 1 --workers 1 --no-crawler --no-flush --no-reserve

What it does: one arena, as the daemon makes it (``-m 16``, ``-o slab_reassign,
slab_automove=2``), shared by forked processes that use it as the daemon's children do, each
with its own holder word: `--workers` workers that store (set, add, replace, append,
prepend, cas), read (lending values and giving them back later, as replies do), touch,
get-and-touch, make and touch items by meta lookups, delete, incr and decr, reserve, fill
and commit or abandon values, and now and then flush_all, over 400 keys with values of 10 B
to 600 KB (the largest are chained items); a page mover that asks for moves, runs the
automover and changes the memory limit (``cache_memlimit``); a crawler. With `--kill`, a
worker is killed (SIGKILL) now and then between two cache operations, as `kill -9` would,
and what it held is let go as the daemon lets it go (`release_holder`), and another takes
its place.

Every value a worker reads is checked to be made of whole pieces as they are written (see
`WELL_FORMED`), and every value lent to it to be unchanged when it gives the value back (a
lent value is a reply being sent from the page). The storage's own checks are on
(``MCACHED_STORAGE_CHECKS``, `mcached.storage.checks`): a chunk freed twice or into the wrong
class, a free list handing out a chunk in use, a chain through a chunk not its own, fail the
process where they happen. Then every child is stopped between two operations and the arena
is checked: every table entry is a linked item of its own partition, reachable from its home
slot, whose chunks are its own (each on its page's grid, used by no other item); every
linked item's head in every page is in its partition's table; every class's free lists hold
free chunks of its own pages, each once, as many as it counts. A child that fails (an
assertion of the storage code, or a damaged value) is reported with its traceback, and the
others are killed (it may have died holding a lock). The exit status is 1 if the check or
any child failed.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MCACHED_STORAGE_CHECKS", "1")  # read as the storage is imported

from mcached.cli import parse_settings  # noqa: E402
from mcached.daemon import Daemon  # noqa: E402
from mcached.storage import checks  # noqa: E402
from mcached.storage.arena import (  # noqa: E402
    C_FREE_PAGES,
    OFF_CLSID,
    OFF_HASH,
    OFF_NEXT,
    P_CLSID,
    P_FNEXT,
    P_FREE_HEAD,
    P_NFREE,
    PAGE_SHIFT,
    ST_CHAINED,
    ST_CONT,
    ST_LINKED,
    ST_ZOMBIE,
    Q,
)
from mcached.storage.assoc import ADDR_MASK, make_entry  # noqa: E402
from mcached.storage.cache import Cache, Reservation  # noqa: E402
from mcached.storage.results import StoreMode  # noqa: E402

SIZES = [10, 100, 1000, 5000, 20000, 100000, 300000, 600000]
# Every value written is pieces of this form: "<" and ">" round one letter (a set's, "z" for
# an append's or another mode's, "c" for a cas's, "r" for a reservation's), so a value read
# that was torn, or mixed with another item's bytes, is seen. A meta lookup makes an empty
# value; incr and decr make digits (of a value that is a number, which none of these are).
WELL_FORMED = re.compile(rb"(?:<([A-Zcrz])\1*>)+|[0-9]*")


def piece(letter: int, n: int) -> bytes:
    return b"<" + bytes([letter]) * (n - 2) + b">"


def content(views: Any) -> bytes:
    """The bytes of a value as `get_ref` gives it: one view or copy, or a list of views."""
    return b"".join(views) if isinstance(views, list) else bytes(views)


class Damaged(AssertionError):
    """A value read, or lent, that is not what was written."""


def well_formed(key: bytes, value: bytes | bytearray | memoryview, how: str) -> None:
    if not WELL_FORMED.fullmatch(value):
        v = bytes(value)
        raise Damaged(f"{how} {key!r}: {len(v)} bytes, {v[:24]!r}...{v[-24:]!r}")


STOP = [False]


def _stop(signo: int, frame: Any) -> None:
    STOP[0] = True


def worker(cache: Cache, slot: int, seed: int, args: argparse.Namespace) -> None:
    cache.bind_holder(slot)
    rng = random.Random(seed)
    # what is lent: (token, key, the view or the views, the bytes they held when lent),
    # each checked to be unchanged when given back
    lent: list[tuple[int, bytes, Any, bytes]] = []
    keys = [b"k%d" % i for i in range(400)]
    modes = [StoreMode.APPEND, StoreMode.PREPEND, StoreMode.ADD, StoreMode.REPLACE]
    while not STOP[0]:
        key = rng.choice(keys)
        r = rng.random()
        n = rng.choice(SIZES)
        if r < 0.30:
            value = piece(65 + rng.randrange(26), n)
            cache.store(StoreMode.SET, key, value, 0, rng.choice([0, 0, 1, 2]), 0)
        elif r < 0.45:
            hit = cache.get_ref(key)
            if hit is not None:
                views = hit[0]
                now = content(views)
                well_formed(key, now, "read")
                if len(hit) == 4:
                    lent.append((hit[3], key, views, now))
        elif r < 0.52:
            cache.store(rng.choice(modes), key, piece(122, rng.choice(SIZES[:6])), 0, 0, 0)
        elif r < 0.58:
            cache.delete(key)
        elif r < 0.75 and args.reserve:
            res = cache.reserve(key, n, rng.choice([0, 5]))
            if isinstance(res, Reservation):
                whole, at, k = piece(114, n), 0, 0
                while at < n:  # as a connection fills it: chunks taken as bytes come
                    if k == len(res.views) and cache.grow(res) is None:
                        break  # no chunk for the rest: the commit refuses it
                    view = res.views[k]
                    view[:] = whole[at : at + len(view)]
                    at += len(view)
                    k += 1
                if rng.random() < 0.15:
                    cache.abandon(res)
                else:
                    mode = rng.choice([StoreMode.SET, StoreMode.SET, *modes[::2]])
                    cache.commit(res, mode, rng.choice([0, 0, 1]))
        elif r < 0.77:
            cache.incr(key, 1) if rng.random() < 0.5 else cache.decr(key, 1)
        elif r < 0.80:
            cache.touch(key, rng.choice([0, 1, 30]))
        elif r < 0.83:
            hit = cache.get_and_touch(key, rng.choice([0, 1, 30]))
            if hit is not None:
                well_formed(key, hit[0], "read (gat)")
        elif r < 0.86:
            hit = cache.get(key)
            if hit is not None:  # a cas with the CAS just read, or a stale one
                well_formed(key, hit[0], "read")
                cas = hit[2] + rng.choice([0, 0, 1])
                cache.store(StoreMode.CAS, key, piece(99, rng.choice(SIZES[:7])), 0, 0, cas)
        elif r < 0.88:
            # meta: created on a miss (N), a new TTL (T), no value lent
            cache.lookup(key, value=False, vivify=30, touch=rng.choice([None, 30]))
        elif r < 0.881 and args.flush:
            cache.flush_all(0)
        if lent and (len(lent) > 20 or rng.random() < 0.3):
            token, key, views, was = lent.pop(rng.randrange(len(lent)))
            now = content(views)
            if now != was:  # changed while lent (pinned): a reply would have sent that
                at = next(
                    (i for i, (x, y) in enumerate(zip(was, now, strict=True)) if x != y), None
                )
                raise Damaged(f"lent {key!r} changed while lent ({len(was)} bytes): at {at}")
            cache.unpin(token)


def mover(cache: Cache, slot: int, seed: int, args: argparse.Namespace) -> None:
    view = cache.view(holder=slot)
    rng = random.Random(seed)
    while not STOP[0]:
        r = rng.random()
        if r < 0.5:
            view.reassign(rng.randrange(1, 40), rng.randrange(0, 40))
            if args.reassign_moves:
                view.move_asked()  # carried out, as the daemon's mover does
        elif r < 0.52:
            view.set_memory_limit(rng.choice([12, 16, 20]) << 20)  # cache_memlimit
        else:
            view.automove_tick()
        time.sleep(0.001)


def crawler(cache: Cache, slot: int, seed: int, args: argparse.Namespace) -> None:
    view = cache.view(holder=slot)
    while not STOP[0]:
        view.crawl()
        time.sleep(0.01)


def spawn(role: Any, cache: Cache, slot: int, seed: int, args: argparse.Namespace) -> int:
    pid = os.fork()
    if pid == 0:  # the child: its role until SIGTERM, between two operations
        signal.signal(signal.SIGTERM, _stop)
        code = 0
        try:
            role(cache, slot, seed, args)
        except BaseException:
            print(f"{role.__name__} (holder {slot}) failed:", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
            code = 1
        os._exit(code)
    return pid


def stopped(pid: int) -> None:
    """Wait until the SIGSTOP sent to `pid` has taken effect."""
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "Tt":
        time.sleep(0.0005)


def check(cache: Cache) -> int:
    """The invariant, every child stopped: the number of faults found (each printed)."""
    items = cache._items
    pm, pmask, pshift = items.pm, items.pmask, items.pshift
    bad = entries = heads = 0
    owners: dict[int, int] = {}  # chunk -> the head of the item using it
    for part in items.parts:
        part.sync()
        for i, e in enumerate(part.tbl[: part.mask + 1]):
            if e <= 1:
                continue
            entries += 1
            a = e & ADDR_MASK
            st = pm[a]
            h = Q.unpack_from(pm, a + OFF_HASH)[0]
            if not st & ST_LINKED or st & ST_ZOMBIE or h & pmask != part.index:
                bad += 1
                print(f"table entry {part.index}/{i} -> {a}: status {st}, hash {h:#x}")
            elif make_entry(h >> pshift, a) != e or part.find_addr(h >> pshift, a) != i:
                bad += 1
                print(f"table entry {part.index}/{i} -> {a}: not where its hash leads")
            else:
                bad += check_chunks(items, a, owners)
    for cls in items.classes[1:]:
        for pno in cls.pages_locked():
            for o in range(0, cls.perslab * cls.size, cls.size):
                a = pno << PAGE_SHIFT | o
                if pm[a] & ST_LINKED and not pm[a] & ST_CONT:
                    heads += 1
                    h = Q.unpack_from(pm, a + OFF_HASH)[0]
                    if items.parts[h & pmask].find_addr(h >> pshift, a) < 0:
                        bad += 1
                        print(f"linked item at {a} (class {cls.id}) is in no table")
        bad += check_free(items, cls, owners)
    print(f"checked: {entries} table entries, {heads} linked items, {bad} faults")
    return bad


def on_grid(items: Any, a: int) -> int:
    """The class of the page chunk `a` lies on, if `a` is on its grid; else 0."""
    cid = int(items.w[items.arena.page_row(a >> PAGE_SHIFT) + P_CLSID])
    if not 0 < cid < len(items.classes):
        return 0
    try:
        checks.on_grid(items.classes[cid], a, "")
    except checks.ArenaDamaged:
        return 0
    return cid


def check_chunks(items: Any, head: int, owners: dict[int, int]) -> int:
    """The chunks of the linked item at `head`: each on its page's grid, used by it alone, a
    chained item's value chunks continuations of it. The faults found."""
    pm = items.pm
    chunks = [head]
    if pm[head] & ST_CHAINED:
        try:
            chunks = items.chain_of(head)  # (the storage's checks follow each link)
            for at, c in enumerate(chunks[1:], 1):
                checks.link(pm, head, c, at)
        except checks.ArenaDamaged as e:
            print(f"item at {head}: {e}")
            return 1
    elif on_grid(items, head) != pm[head + OFF_CLSID]:
        print(f"item at {head}: not a chunk of its class {pm[head + OFF_CLSID]}")
        return 1
    for c in chunks:
        if not on_grid(items, c):
            print(f"item at {head}: chunk {c} is off its page's grid")
            return 1
        if owners.setdefault(c, head) != head:
            print(f"item at {head}: chunk {c} is the item at {owners[c]}'s too")
            return 1
    return 0


def check_free(items: Any, cls: Any, owners: dict[int, int]) -> int:
    """Class `cls`'s free lists: pages of the class, each listed once, holding as many
    chunks as they count, each free, on the page's grid, listed once, used by no item; the
    class's count their sum. The faults found."""
    pm, w = items.pm, items.w
    pages = set(cls.pages_locked())
    listed: set[int] = set()
    total = 0
    pno = int(w[cls.b + C_FREE_PAGES])
    while pno >= 0:
        if pno in listed or pno not in pages:
            print(f"class {cls.id}: free list of page {pno}, listed twice or not the class's")
            return 1
        listed.add(pno)
        row = cls.row(pno)
        seen: set[int] = set()
        c = int(w[row + P_FREE_HEAD])
        while c >= 0:
            if c in seen or c >> PAGE_SHIFT != pno or on_grid(items, c) != cls.id or pm[c]:
                print(f"class {cls.id}: page {pno}'s free list holds {c} (status {pm[c]})")
                return 1
            if c in owners:
                print(f"class {cls.id}: free chunk {c} is used by the item at {owners[c]}")
                return 1
            seen.add(c)
            c = Q.unpack_from(pm, c + OFF_NEXT)[0]
        if len(seen) != w[row + P_NFREE]:
            n = int(w[row + P_NFREE])
            print(f"class {cls.id}: page {pno} lists {len(seen)} free chunks, counts {n}")
            return 1
        total += len(seen)
        pno = int(w[row + P_FNEXT])
    if total != cls.nfree:
        print(f"class {cls.id}: {total} chunks on its free lists, counts {cls.nfree}")
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kill", action="store_true", help="kill workers between operations")
    ap.add_argument("--no-mover", dest="mover", action="store_false")
    ap.add_argument(
        "--no-page-moves", dest="moves", action="store_false", help="-o no_slab_reassign"
    )
    ap.add_argument("--no-crawler", dest="crawler", action="store_false")
    ap.add_argument("--no-flush", dest="flush", action="store_false")
    ap.add_argument("--no-reserve", dest="reserve", action="store_false")
    ap.add_argument(
        "--reassign-moves",
        action="store_true",
        help="the mover carries out the moves its reassigns ask for (without, they are only "
        "asked: pages move through the automover and the workers' page steals alone)",
    )
    args = ap.parse_args()
    nw = args.workers
    flags = ["-l", "127.0.0.1", "-p", "0", "-m", "16", "-t", str(nw)]
    moves = "slab_reassign,slab_automove=2" if args.moves else "no_slab_reassign"
    daemon = Daemon(parse_settings([*flags, "-o", moves]))
    cache = daemon.cache
    arena = cache.arena
    kids: dict[int, tuple[Any, int]] = {}
    for slot in range(1, nw + 1):
        kids[spawn(worker, cache, slot, args.seed * 100 + slot, args)] = (worker, slot)
    if args.crawler:
        kids[spawn(crawler, cache, nw + 1, args.seed, args)] = (crawler, nw + 1)
    if args.mover and args.moves:
        kids[spawn(mover, cache, nw + 2, args.seed, args)] = (mover, nw + 2)
    rng = random.Random(args.seed)
    end = time.monotonic() + args.seconds
    kills = failed = 0
    while time.monotonic() < end and not failed:
        time.sleep(rng.uniform(0.05, 0.4))
        for pid in list(kids):
            if os.waitpid(pid, os.WNOHANG)[0]:
                kids.pop(pid)
                failed += 1
        if not args.kill or failed:
            continue
        pid = rng.choice([p for p, (role, _) in kids.items() if role is worker])
        role, slot = kids[pid]
        os.kill(pid, signal.SIGSTOP)
        stopped(pid)
        if arena.holding(slot):  # inside an operation: the daemon would start afresh
            os.kill(pid, signal.SIGCONT)
            continue
        del kids[pid]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        kills += 1
        cache.view(holder=slot).release_holder(slot)
        kids[spawn(worker, cache, slot, args.seed * 100 + slot + 7 * kills, args)] = (role, slot)
    for pid in kids:
        # after a failure, the others are killed: the child that failed may have died
        # holding a lock they wait for
        os.kill(pid, signal.SIGKILL if failed else signal.SIGTERM)
    for pid in kids:
        status = os.waitpid(pid, 0)[1]
        # a worker forked just before the stop may die of the SIGTERM before its handler
        # is in place: that is the stop, not a failure
        failed += status != 0 and not (
            os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGKILL)
        )
    held = [s for s in range(1, nw + 3) if arena.holding(s)]
    print(f"seed {args.seed}: {kills} workers killed, {failed} children failed")
    if held:
        print(f"holder words still set ({held}): not checked")
        return 1
    return 1 if check(cache) or failed else 0


if __name__ == "__main__":
    sys.exit(main())
