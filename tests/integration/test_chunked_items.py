"""Chained ("chunked") items laid out as memcached 1.6.18 lays them out: the same commands
against mcached (worker threads, worker processes) and memcached give the same replies and
the same ``stats slabs`` and ``stats items`` rows (memcached's items.c ``do_item_alloc`` and
``do_item_alloc_chunk``: the header item in a small class, full chunks of the largest class,
the last chunk of the class fitting the remainder; chunked-items.t)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from functools import partial

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

KB = 1024
#: the stats items fields that do not depend on time or on memcached's segmented LRU
ITEM_FIELDS = ("number", "mem_requested", "evicted", "evicted_unfetched", "outofmemory")


def value(n: int, seed: int = 0) -> bytes:
    """`n` bytes that show a piece out of place (no CRLF inside)."""
    unit = b"%07d|" % seed
    return (unit * (n // len(unit) + 1))[:n]


def _stats(conn: Conn, what: bytes) -> dict[str, str]:
    conn.send(b"stats " + what + b"\r\n")
    text = conn.read_until(b"END\r\n", 30).decode()
    return dict(re.findall(r"STAT (\S+) (\S+)\r\n", text))


def figures(conn: Conn) -> tuple[dict[str, str], dict[str, str]]:
    """Every ``stats slabs`` row, and `ITEM_FIELDS` of every ``stats items`` class."""
    slabs = _stats(conn, b"slabs")
    items = {k: v for k, v in _stats(conn, b"items").items() if k.split(":")[-1] in ITEM_FIELDS}
    return slabs, items


def dumps(conn: Conn, slabs: dict[str, str]) -> dict[int, set[str]]:
    """The ``stats cachedump`` rows of each class with pages (a chained item is listed in
    the largest class, where memcached links its header item)."""
    out = {}
    for cid in sorted({int(k.split(":")[0]) for k in slabs if ":" in k}):
        conn.send(b"stats cachedump %d 0\r\n" % cid)
        out[cid] = set(conn.read_until(b"END\r\n", 30).decode().splitlines()[:-1])
    return out


def store(
    conn: Conn, verb: bytes, key: bytes, data: bytes, flags: int = 0, end: bytes = b"\r\n"
) -> bytes:
    conn.send(b"%s %s %d 0 %d\r\n" % (verb, key, flags, len(data)) + data + end)
    return conn.read_until(b"\r\n", 30)


def get(conn: Conn, key: bytes) -> bytes:
    conn.send(b"get " + key + b"\r\n")
    return conn.read_until(b"END\r\n", 30)  # (no value here holds END)


Script = Callable[[Conn], list[bytes]]


def sizes_script(sizes: list[int]) -> Script:
    """Stores of each size (a second key with flags), an append and a prepend to the first,
    reads of everything, a delete: what each leaves in the classes is compared."""

    def run(conn: Conn) -> list[bytes]:
        out = []
        for i, n in enumerate(sizes):
            out.append(store(conn, b"set", b"a%d" % i, value(n, i)))
            out.append(store(conn, b"set", b"b%d" % i, value(n, i + 100), flags=i + 1))
            out.append(store(conn, b"append", b"a%d" % i, b"<tail>"))
            out.append(store(conn, b"prepend", b"a%d" % i, b"<head>" * 100))
        for i in range(len(sizes)):
            out += [get(conn, b"a%d" % i), get(conn, b"b%d" % i)]
        conn.send(b"delete b0\r\n")
        out.append(conn.read_until(b"\r\n", 10))
        return out

    return run


def full_cache(conn: Conn, end: bytes = b"\r\n", quiet: bool = False) -> list[bytes]:
    """The cache full of small items, then chained items of 1.3 MB twice and 1.9 MB: the
    last wants three 512 KB chunks where the largest class's one page holds two. `end`:
    what follows the last value (not its CRLF: memcached, out of memory while it reads
    the value, answers at once and swallows the rest unchecked, so no bad data chunk).
    `quiet`: the last is ``ms big 1900000 q``, whose "Out of memory during read" memcached
    does not send (its q sets the noreply that out_string obeys, errors and all)."""
    conn.send(b"cache_memlimit 9\r\nslabs automove 0\r\n")
    assert conn.read_until(b"OK\r\nOK\r\n", 10) == b"OK\r\nOK\r\n"
    fill = b"".join(b"set w%d 0 0 10 noreply\r\n0123456789\r\n" % i for i in range(120_000))
    conn.send(fill + b"mn\r\n")
    assert conn.read_until(b"MN\r\n", 120) == b"MN\r\n"
    out = [store(conn, b"set", b"big", value(n, n)) for n in (1_300_000, 1_300_000)]
    if quiet:
        conn.send(b"ms big 1900000 q\r\n" + value(1_900_000, 1_900_000) + end + b"mn\r\n")
        out.append(conn.read_until(b"MN\r\n", 30))
    else:
        out.append(store(conn, b"set", b"big", value(1_900_000, 1_900_000), end=end))
    out.append(get(conn, b"big"))
    st = _stats(conn, b"")
    out += [b"%s %s" % (k.encode(), st[k].encode()) for k in ("curr_items", "evictions")]
    return out


def fallback_copy(conn: Conn) -> list[bytes]:
    """An append whose copy meets a full small class (under -M, nothing is evicted): the
    empty chunk that follows the old value's part falls back to the largest class, whose
    room then takes the appended bytes too (memcached's ``do_item_alloc_chunk`` gives a
    fallback chunk the largest chunk's size). mcached used to fill it with nothing, then
    take a chunk of another class for the appended bytes and one more empty one."""
    out = [store(conn, b"set", b"big%d" % i, value(100_000, i)) for i in range(6)]
    conn.send(b"".join(b"delete big%d\r\n" % i for i in range(6)))  # free 16 KB chunks
    out.append(conn.read_until(b"DELETED\r\n" * 6, 30))
    out.append(store(conn, b"set", b"A", value(20_000, 7)))
    n = 11_000  # more small items than the memory holds (10,922 of class 1 in -m 2)
    conn.send(b"".join(b"set s%d 0 0 10\r\n0123456789\r\n" % i for i in range(n)))
    replies = b""
    while replies.count(b"\r\n") < n:
        replies += conn.read_until(b"\r\n", 60)
    lines = replies.splitlines()
    out.append(b"%d stored, then %s" % (lines.index(lines[-1]), lines[-1]))
    out.append(store(conn, b"append", b"A", b"+" * 100))
    out.append(get(conn, b"A"))
    return out


CASES: dict[str, tuple[tuple[str, ...], Script]] = {
    # 600 KB: a header (class 2), a 512 KB chunk, an 88 KB one (memcached's 512 KB + ~88 KB;
    # mcached's were two 512 KB chunks)
    "600k": (("-m", "64"), sizes_script([600 * KB, 524_200, 524_300, 1_048_000])),
    "1300k": (("-m", "64", "-I", "2m"), sizes_script([1_300_000])),
    "2m": (("-m", "64", "-I", "4m"), sizes_script([2 * 1024 * KB])),
    # chunked-items.t's setting: 16 KB chunks, so a 20 KB value is chained
    "chunk16k": (
        ("-m", "64", "-o", "slab_chunk_max=16384"),
        sizes_script([16_300, 16_400, 20_000, 32_670, 32_671, 40_000, 100_000, 900_000]),
    ),
    "full": (("-m", "8", "-I", "2m"), full_cache),
    "full-unterminated": (("-m", "8", "-I", "2m"), partial(full_cache, end=b"XX")),
    "full-quiet": (("-m", "8", "-I", "2m"), partial(full_cache, quiet=True)),
    "fallback": (
        ("-m", "2", "-M", "-o", "slab_chunk_max=16384,slab_automove=0"),
        fallback_copy,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_chained_items_take_memcacheds_chunks(
    case: str, server_factory: Callable[..., Server]
) -> None:
    flags, script = CASES[case]
    seen = {}
    for kind in ("memcached", "mcached", "mcached-procs"):
        srv = server_factory(kind, *flags)
        with Conn(srv.address, timeout=60) as conn:
            replies = script(conn)
            slabs, items = figures(conn)
            seen[kind] = (replies, slabs, items, dumps(conn, slabs))
    want_replies, want_slabs, want_items, want_dumps = seen["memcached"]
    for kind in ("mcached", "mcached-procs"):
        replies, slabs, items, dumped = seen[kind]
        assert replies == want_replies, kind
        assert slabs == want_slabs, kind
        if case.startswith("full"):
            # which of the 120,000 small items of the fill memcached evicts depends on its
            # LRU maintainer thread's timing: now and then one or two whose keys are a digit
            # shorter or longer (mem_requested a byte or two apart); their number is exact
            small = "items:1:mem_requested"
            assert abs(int(items[small]) - int(want_items[small])) <= 8, kind
            items = {**items, small: want_items[small]}
        assert items == want_items, kind
        # memcached lists its COLD LRU only (not what was stored last), and which small
        # items were evicted differs with mcached's clock: what it lists, mcached lists
        # in the same class
        if not case.startswith("full"):
            for cid, rows in want_dumps.items():
                assert rows <= dumped[cid], (kind, cid)


@pytest.mark.parametrize("kind", ["memcached", "mcached", "mcached-procs"])
def test_full_cache_sequence_answers_out_of_memory_during_read(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """What the sequence of `full_cache` comes to on memcached 1.6.18: the third store
    fails while its value is read, and the header's class 2, the last chunk's class 36 and
    the largest class each hold one page. mcached stored all three, having moved a page
    from class 1 to the largest class (`steal_page`): pages 1 (8) and 39 (2)."""
    srv = server_factory(kind, "-m", "8", "-I", "2m")
    with Conn(srv.address, timeout=60) as conn:
        replies = full_cache(conn)
        slabs, _ = figures(conn)
    assert replies[:4] == [
        b"STORED\r\n",
        b"STORED\r\n",
        b"SERVER_ERROR Out of memory during read\r\n",
        b"END\r\n",
    ]
    pages = {k.split(":")[0]: v for k, v in slabs.items() if k.endswith(":total_pages")}
    assert pages == {"1": "9", "2": "1", "36": "1", "39": "1"}


@pytest.mark.parametrize("kind", ["memcached", "mcached-procs"])
def test_chained_items_from_four_workers_with_page_moves_are_never_damaged(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """Clients on several connections (so several workers of `-t 4`) set, append to,
    prepend to, delete and read chained items of 16 KB chunks (up to ~90 of them, and
    items of a few chunks) and small ones, while pages move between classes (`slabs
    reassign`, `slab_automove=2`) and the cache evicts: every value read is one its client
    could have left there (its own stores, appends and prepends, or nothing: an eviction).
    A store may fail for memory; it never damages an item, nor brings back a deleted one."""
    srv = server_factory(
        kind, "-t", "4", "-m", "32", "-I", "2m", "-o", "slab_chunk_max=16384,slab_automove=2"
    )
    deadline = time.monotonic() + 6
    wrong: list[str] = []
    counts = {"chained": 0, "reads": 0}

    def size(rnd: random.Random) -> int:
        r = rnd.random()
        if r < 0.4:
            return rnd.randint(1, 300)
        if r < 0.6:
            return rnd.randint(1_000, 15_000)
        if r < 0.95:
            return rnd.randint(16_000, 200_000)
        return rnd.randint(400_000, 1_500_000)

    def client(n: int) -> None:
        rnd = random.Random(n)
        keys = [b"c%d-%d" % (n, i) for i in range(20)]
        # what each key may hold now: None for nothing (never stored, deleted, evicted)
        may: dict[bytes, set[bytes | None]] = {k: {None} for k in keys}
        with Conn(srv.address, timeout=60) as conn:
            while time.monotonic() < deadline and not wrong:
                key = rnd.choice(keys)
                r = rnd.random()
                if r < 0.35:
                    data = value(size(rnd), rnd.randrange(10**7))
                    counts["chained"] += len(data) > 16_000
                    reply = store(conn, b"set", key, data)
                    # a failed set may leave the old value, or (memcached) drop it
                    may[key] = {data} if reply == b"STORED\r\n" else may[key] | {None}
                elif r < 0.55:
                    verb = rnd.choice((b"append", b"prepend"))
                    data = value(size(rnd) // rnd.choice((1, 10, 100)) + 1, rnd.randrange(10**7))
                    reply = store(conn, verb, key, data)
                    if reply == b"STORED\r\n":
                        old = [v for v in may[key] if v is not None]
                        if not old:
                            wrong.append(f"{verb!r} to {key!r} stored, where nothing was")
                        may[key] = {v + data if verb == b"append" else data + v for v in old}
                    else:  # a miss, too large, or no memory: the old value stays, if any
                        may[key] = may[key] | {None}
                elif r < 0.6:
                    conn.send(b"delete " + key + b"\r\n")
                    conn.read_until(b"\r\n", 30)
                    may[key] = {None}
                else:
                    reply = get(conn, key)
                    got = None
                    if reply != b"END\r\n":
                        head, _, rest = reply.partition(b"\r\n")
                        got = rest[: int(head.split()[3])]
                    counts["reads"] += 1
                    if got is not None and got not in may[key]:  # (None: evicted)
                        wrong.append(
                            f"{key!r}: got {None if got is None else len(got)} bytes "
                            f"({(got or b'')[:40]!r}), could have "
                            f"{sorted(len(v) for v in may[key] if v is not None)} or nothing"
                        )
                    may[key] = {got}

    def mover() -> None:
        rnd = random.Random(99)
        with Conn(srv.address, timeout=60) as conn:
            while time.monotonic() < deadline:
                time.sleep(rnd.uniform(0.01, 0.1))
                conn.send(b"slabs reassign -1 %d\r\n" % rnd.randint(1, 24))
                conn.read_until(b"\r\n", 30)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=mover))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not wrong, wrong[:5]
    assert counts["chained"] > 50 and counts["reads"] > 500
    with Conn(srv.address, timeout=30) as conn:
        conn.send(b"stats\r\n")
        st = dict(re.findall(r"STAT (\S+) (\S+)\r\n", conn.read_until(b"END\r\n", 30).decode()))
    assert int(st["evictions"]) > 0 and int(st["slabs_moved"]) > 0


@pytest.mark.parametrize("kind", ["memcached", "mcached", "mcached-procs"])
def test_values_near_the_item_limit_arriving_at_once_take_chunks_as_their_bytes_come(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """Four values of nearly -I (16 MB at -m 64: a quarter of the memory each) arrive at
    once, on four connections, in halves, over three stored ones. memcached takes a value's
    chunks as its bytes come, so each value finished meanwhile becomes an item that the
    later chunks may evict: all four are stored (the first evicted for the last). mcached
    reserved every chunk when the command line came: the fourth found the other three's
    reservations holding the memory and was refused (`Out of memory during read`)."""
    srv = server_factory(kind, "-m", "64", "-I", "16m")
    n = 16 * 1024 * KB - 100
    conns = [Conn(srv.address, timeout=60) for _ in range(4)]
    try:
        for i in range(3):
            assert store(conns[0], b"set", b"old%d" % i, value(n, i)) == b"STORED\r\n"
        datas = [value(n, 10 + i) for i in range(4)]
        for i, conn in enumerate(conns):
            conn.send(b"set new%d 0 0 %d\r\n" % (i, n) + datas[i][: n // 2])
        for i, conn in enumerate(conns):
            conn.send(datas[i][n // 2 :] + b"\r\n")
        assert [conn.read_until(b"\r\n", 60) for conn in conns] == [b"STORED\r\n"] * 4

        def held(key: bytes) -> bytes | None:
            reply = get(conns[0], key)
            return None if reply == b"END\r\n" else reply.split(b"\r\n", 1)[1][:-7]

        # each whole or evicted, the last to finish whole (which one that is, is the
        # workers' timing at -t 4, memcached's threads' too)
        now = [held(b"new%d" % i) for i in range(4)]
        assert [now[i] in (datas[i], None) for i in range(4)] == [True] * 4
        assert any(value is not None for value in now)
        assert [held(b"old%d" % i) for i in range(3)] == [None] * 3
    finally:
        for conn in conns:
            conn.close()
