#!/usr/bin/env python3
"""Memory per item, mcached against memcached, and the -m bound under churn.

    python scripts/bench_memory.py                 # 1,000,000 items, both servers, + churn
    python scripts/bench_memory.py --items 200000 --skip-memcached
    python scripts/bench_memory.py --micro         # Cache.get/store micro-benchmark
    python scripts/bench_memory.py --micro --root /path/to/older/checkout

Load: each server in turn (never both at once) is started on a free loopback port, with
``-m 1024`` so nothing is evicted, and given N items -- 12-byte keys, 100-byte values --
as pipelined ``set ... noreply``. Its memory (PSS summed over its processes, see `rss`) is read
before and after; the script prints memory per item, both as (after - before) / N and as
after / N, for each server, and the ratios; then once more after 16 more connections were
served (`serve_everywhere`: every worker process, not only the one the load's connection
had). Target: mcached within 1.3x of memcached, each
ratio said apart (the total counts the start-up memory of every process: ``--threads``
sets mcached's ``-t``). mcached runs with its bytecode compiled, as an installed package does
(`servers.installed_env`), whatever this machine's PYTHONDONTWRITEBYTECODE says.

Churn: mcached (and memcached) with ``-m 64`` receive distinct keys totalling 10 x 64 MB of
values of mixed sizes (100 B to 16 KB), then the memory and ``total_malloced`` are printed: the
item memory stays at -m, whatever was written.

Micro: ``Cache.store`` and ``Cache.get`` in-process, no sockets: 200,000 ops of 100-byte
values, best of several rounds, ns per op. ``--root`` imports ``mcached`` from another
checkout (e.g. ``git worktree add /tmp/old <commit>``), to compare before and after.
"""

from __future__ import annotations

import argparse
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import servers

HOST = servers.HOST
ROOT = servers.ROOT
MB = 1024 * 1024


TARGET = 1.3  # mcached's PSS per item at most this many times memcached's
THREADS: list[str] = []  # --threads: mcached's -t (default: its own default)


def start(kind: str, memory_mb: int) -> tuple[subprocess.Popen[bytes], int]:
    args = ["-m", str(memory_mb), "-U", "0"]
    return servers.start(kind, *args, *(THREADS if kind == "mcached" else []))


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def sync(self) -> None:
        """Wait until everything sent before has been processed."""
        self.sock.sendall(b"version\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("server closed the connection")
            buf += chunk

    def stats(self, sub: bytes = b"") -> dict[str, str]:
        self.sock.sendall(b"stats" + (b" " + sub if sub else b"") + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += self.sock.recv(65536)
        return {
            line.split()[1].decode(): line.split()[2].decode()
            for line in buf.split(b"\r\n")
            if line.startswith(b"STAT ")
        }

    def set_many(self, items: list[tuple[bytes, bytes]]) -> None:
        self.sock.sendall(
            b"".join(b"set %b 0 0 %d noreply\r\n%b\r\n" % (k, len(v), v) for k, v in items)
        )


def load(kind: str, n: int, value_size: int, memory_mb: int) -> dict[str, float]:
    proc, port = start(kind, memory_mb)
    try:
        client = Client(port)
        client.sync()
        before = servers.pss(proc)
        value = b"v" * value_size
        t0 = time.perf_counter()
        batch = 2000
        for base in range(0, n, batch):
            client.set_many([(b"key:%08d" % i, value) for i in range(base, min(n, base + batch))])
            if base % 100_000 == 0:
                client.sync()  # bound what sits unread in the socket buffers
        client.sync()
        seconds = time.perf_counter() - t0
        st = client.stats()
        if int(st["curr_items"]) != n:
            raise SystemExit(
                f"{kind}: {st['curr_items']} items held, {n} sent (evictions "
                f"{st['evictions']}): raise --memory"
            )
        time.sleep(0.5)
        after = servers.pss(proc)
        serve_everywhere(port)
        time.sleep(1.0)
        served = servers.pss(proc)
        out = {
            "before": before,
            "after": after,
            "served": served,
            "seconds": seconds,
            "malloced": int(client.stats(b"slabs")["total_malloced"]),
        }
        if kind == "mcached":
            out["hash_bytes"] = int(st["hash_bytes"])
        return out
    finally:
        servers.stop(proc)


def serve_everywhere(port: int, conns: int = 16) -> None:
    """A few requests of each common kind on `conns` connections, which the kernel spreads
    over every worker: a worker's first requests copy interpreter pages it shared with the
    supervisor (reference counts written), which the load's one connection did in one
    worker only."""
    clients = [Client(port) for _ in range(conns)]
    for k, c in enumerate(clients):
        c.sock.sendall(
            b"".join(
                b"get key:%08d key:%08d\r\nset served:%d 0 0 3\r\nabc\r\nstats\r\n" % (i, i + 7, k)
                for i in range(50)
            )
        )
        c.sync()
    for c in clients:
        c.sock.close()


def churn(kind: str, memory_mb: int, factor: int, seed: int = 1) -> dict[str, int]:
    proc, port = start(kind, memory_mb)
    try:
        client = Client(port)
        client.sync()
        rnd = random.Random(seed)
        sizes = (100, 400, 1000, 4000, 16_000)
        written = n = 0
        target = factor * memory_mb * MB
        while written < target:
            items = []
            for _ in range(200):
                size = rnd.choice(sizes)
                items.append((b"churn:%010d" % n, b"c" * size))
                written += size
                n += 1
            client.set_many(items)
            if n % 20_000 == 0:
                client.sync()
        client.sync()
        time.sleep(0.5)
        st = client.stats()
        slabs = client.stats(b"slabs")
        return {
            "rss": servers.pss(proc),
            "written": written,
            "sets": n,
            "curr_items": int(st["curr_items"]),
            "evictions": int(st["evictions"]),
            "malloced": int(slabs["total_malloced"]),
            "slabs_moved": int(st["slabs_moved"]),
        }
    finally:
        servers.stop(proc)


def micro(root: str | None, ops: int, rounds: int) -> None:
    if root:
        sys.path.insert(0, root)
    else:
        sys.path.insert(0, str(ROOT))
    from mcached.storage import cache as cache_module
    from mcached.storage.results import StoreMode

    print(f"Cache from {Path(cache_module.__file__).resolve()}")
    cache = cache_module.Cache(memory_limit=1024 * MB)
    keys = [b"key:%08d" % i for i in range(ops)]
    misses = [k + b"!" for k in keys]
    value = b"x" * 100
    store, get, SET = cache.store, cache.get, StoreMode.SET

    def timed(fn: object, *args: object) -> float:
        t0 = time.process_time()
        fn(*args)  # type: ignore[operator]
        return (time.process_time() - t0) / ops * 1e9

    def stores() -> None:
        for k in keys:
            store(SET, k, value, 0, 0, 0)

    def gets(ks: list[bytes]) -> None:
        for k in ks:
            get(k)

    first = timed(stores)  # new keys
    best = {"store (overwrite)": 1e18, "get (hit)": 1e18, "get (miss)": 1e18}
    for _ in range(rounds):
        best["store (overwrite)"] = min(best["store (overwrite)"], timed(stores))
        best["get (hit)"] = min(best["get (hit)"], timed(gets, keys))
        best["get (miss)"] = min(best["get (miss)"], timed(gets, misses))
    print(f"  store (new key)     {first:7.0f} ns/op")
    for name, ns in best.items():
        print(f"  {name:19s} {ns:7.0f} ns/op   ({1e9 / ns:,.0f} ops/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--memory", type=int, default=1024, help="-m for the load (MB)")
    ap.add_argument("--churn-memory", type=int, default=64, help="-m for the churn (MB)")
    ap.add_argument("--churn-factor", type=int, default=10)
    ap.add_argument("--skip-memcached", action="store_true")
    ap.add_argument("--skip-churn", action="store_true")
    ap.add_argument("--micro", action="store_true", help="only the Cache micro-benchmark")
    ap.add_argument("--root", help="--micro: import mcached from this checkout")
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, help="mcached's -t (default: its own default)")
    args = ap.parse_args()
    if args.threads:
        THREADS[:] = ["-t", str(args.threads)]
    if args.micro:
        micro(args.root, args.ops, args.rounds)
        return

    kinds = ["mcached"] + ([] if args.skip_memcached else ["memcached"])
    results = {}
    n = args.items
    print(f"load: {n:,} items, 12-byte keys, {args.value_size}-byte values, -m {args.memory}")
    for kind in kinds:
        r = results[kind] = load(kind, n, args.value_size, args.memory)
        print(
            f"  {kind:9s} PSS {r['before'] / MB:7.1f} MB -> {r['after'] / MB:7.1f} MB   "
            f"{(r['after'] - r['before']) / n:6.1f} B/item added, {r['after'] / n:6.1f} B/item "
            f"total   (slab pages {r['malloced'] / MB:.0f} MB, {n / r['seconds']:,.0f} sets/s)"
        )
        print(
            f"  {'':9s} once 16 connections were served as well: {r['served'] / MB:7.1f} MB, "
            f"{r['served'] / n:6.1f} B/item total"
        )
    mine = results["mcached"]
    print(
        f"  mcached item table: {mine['hash_bytes'] / n:.1f} B/item "
        f"({mine['hash_bytes'] / MB:.1f} MB of slots)"
    )
    if "memcached" in results:
        ref = results["memcached"]
        added = (mine["after"] - mine["before"]) / (ref["after"] - ref["before"])
        total = mine["after"] / ref["after"]
        served = mine["served"] / ref["served"]
        print(
            f"  ratio mcached/memcached: {added:.2f}x (added), {total:.2f}x (total), "
            f"{served:.2f}x (total, every worker served)   target <= {TARGET}x: added "
            f"{'met' if added <= TARGET else 'NOT met'}, total "
            f"{'met' if total <= TARGET else 'NOT met'}, served "
            f"{'met' if served <= TARGET else 'NOT met'}"
        )
    if args.skip_churn:
        return
    m = args.churn_memory
    print(f"churn: distinct keys, {args.churn_factor} x -m {m} of values from 100 B to 16 KB")
    for kind in kinds:
        c = churn(kind, m, args.churn_factor)
        print(
            f"  {kind:9s} {c['sets']:,} sets, {c['written'] / MB:,.0f} MB written: PSS "
            f"{c['rss'] / MB:.1f} MB, slab pages {c['malloced'] / MB:.0f} MB (-m {m}), "
            f"{c['curr_items']:,} items held, {c['evictions']:,} evictions, "
            f"{c['slabs_moved']} pages moved"
        )


if __name__ == "__main__":
    main()
