#!/usr/bin/env python3
"""How long gets wait while a cache fills with many small items (its tables growing).

For each server (mcached, then memcached) this starts it on a free loopback port (``-m 4096
-t 4`` by default, ``--args`` to change), fills it with ``--items`` 10-byte values under
distinct keys from two processes that pipeline ``set ... noreply`` in batches of 2,000, and
meanwhile a third connection asks ``get`` of a key once a millisecond, timing each. It
prints the fill's rate and the gets' p50, p99, p99.9 and longest wait, and the waits over
50 ms with when they came (seconds into the fill).

An item table grows in one pass under its partition's lock (mcached/storage/assoc.py), so
the longest wait tells how long a growth holds a partition's keys. With ``-o hashpower=N``
the tables start large enough and never grow during the fill.

Usage: ``python scripts/bench_growth.py [--items 20000000] [--args "-m 4096 -t 4"]
[--only mcached]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shlex
import socket
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import servers

BATCH = 2000
SLOW = 0.05  # seconds: a wait worth listing


def reply(s: socket.socket, end: bytes, who: str) -> bytes:
    """What the server sends on `s` until it ends in `end`."""
    buf = b""
    while not buf.endswith(end):
        chunk = s.recv(1000)
        if not chunk:
            raise SystemExit(f"the server closed {who}")
        buf += chunk
    return buf


def fill(port: int, start: int, stop: int) -> None:
    """Store keys `start` to `stop`, BATCH at a time, each batch's replies waited for."""
    with socket.create_connection((servers.HOST, port)) as s:
        for base in range(start, stop, BATCH):
            batch = b"".join(
                b"set k%09d 0 0 10 noreply\r\n0123456789\r\n" % i
                for i in range(base, min(stop, base + BATCH))
            )
            s.sendall(batch + b"version\r\n")
            buf = reply(s, b"\r\n", "a filling connection")
            if not buf.startswith(b"VERSION"):
                raise SystemExit(f"a fill's batch was answered {buf[:100]!r}")


def probe(port: int, done: Event, out: Connection) -> None:
    """A get of one of the first keys once a millisecond until `done`; sends the waits."""
    waits: list[tuple[float, float]] = []
    with socket.create_connection((servers.HOST, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        i = 0
        while not done.is_set():
            i += 1
            asked = time.monotonic()
            s.sendall(b"get k%09d\r\n" % (i * 7919 % 1000))
            reply(s, b"END\r\n", "the probe's connection")
            waits.append((asked - start, time.monotonic() - asked))
            time.sleep(0.001)
    out.send(waits)


def run(kind: str, items: int, args: list[str]) -> None:
    proc, port = servers.start(kind, *args)
    try:
        done = mp.Event()
        theirs, ours = mp.Pipe(duplex=False)
        prober = mp.Process(target=probe, args=(port, done, ours))
        prober.start()
        began = time.monotonic()
        fillers = [
            mp.Process(target=fill, args=(port, items * i // 2, items * (i + 1) // 2))
            for i in range(2)
        ]
        for f in fillers:
            f.start()
        for f in fillers:
            f.join()
        took = time.monotonic() - began
        time.sleep(0.5)
        done.set()
        waits = theirs.recv()
        prober.join()
    finally:
        servers.stop(proc)
    times = sorted(w for _, w in waits)
    slow = [(round(at, 1), round(w * 1e3)) for at, w in waits if w > SLOW]

    def q(f: float) -> float:
        return times[min(len(times) - 1, int(len(times) * f))] * 1e3

    print(
        f"{kind} {' '.join(args)}: {items:,} items in {took:.1f} s ({items / took:,.0f} a "
        f"second); {len(times):,} gets: p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, p99.9 "
        f"{q(0.999):.1f} ms, longest {times[-1] * 1e3:.0f} ms; {len(slow)} over "
        f"{SLOW * 1e3:.0f} ms (s into the fill, ms): {slow[:12]}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--items", type=int, default=20_000_000)
    ap.add_argument("--args", default="-m 4096 -t 4", help="both servers' flags")
    ap.add_argument("--only", choices=("mcached", "memcached"), action="append")
    opts = ap.parse_args()
    for kind in opts.only or ("mcached", "memcached"):
        run(kind, opts.items, shlex.split(opts.args))


if __name__ == "__main__":
    main()
