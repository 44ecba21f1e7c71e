"""Instructions per request on the in-process request path, counted by callgrind.

    python scripts/callgrind_request.py                  # get, set, 10-key get, noreply set
    python scripts/callgrind_request.py --root /tmp/old  # the same for another checkout
    python scripts/callgrind_request.py --loads cache-get,cache-set   # the storage calls alone

What is counted: one `Connection.on_readable()` per request, as a worker calls it (recv, the
parser, the handler, the cache, the reply joined and "sent"), over a socket whose ``recv``
returns the next request and whose ``send`` only counts: the kernel's share is left out.
Each load runs twice under ``valgrind --tool=callgrind``, with N and 2N requests after the
same warm-up; (Ir(2N) - Ir(N)) / N is what one request costs, start-up and warm-up cancel
out. With a fixed hash seed the counts repeat from run to run, so one run per load is enough.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VALUE = b"x" * 1024

LOADS = {
    "get": b"get key:0001\r\n",
    "set": b"set key:0001 0 0 1024\r\n" + VALUE + b"\r\n",
    "get-miss": b"get nokey:0001\r\n",
    "get10": b"get " + b" ".join(b"key:%04d" % i for i in range(10)) + b"\r\n",
    "set-noreply": b"set key:0001 0 0 1024 noreply\r\n" + VALUE + b"\r\n",
    "incr": b"incr n 1\r\n",
    "mg": b"mg key:0001 v\r\n",
    "mg-flags": b"mg key:0001 s f t c v\r\n",
    "ms": b"ms key:0001 1024\r\n" + VALUE + b"\r\n",
    "ma": b"ma n\r\n",
}
# The storage hot paths alone, called directly (no parser, handler or connection):
# `Cache.get` of a 1 KB hit and `Cache.store` of a 1 KB set over an item of the same class.
CACHE_LOADS = ("cache-get", "cache-set")


def child(root: str, load: str, n: int) -> None:
    """Runs under valgrind: build the stack, warm up, then serve `n` requests."""
    sys.path.insert(0, root)
    import mcached
    from mcached.cli import parse_settings

    assert mcached.__file__ and mcached.__file__.startswith(root), mcached.__file__
    from mcached.daemon import Daemon
    from mcached.protocol.parser import Parser
    from mcached.server.connection import Connection
    from mcached.stats import Counters
    from mcached.storage.results import StoreMode

    request = LOADS.get(load, b"")

    class FakeSocket:
        def fileno(self) -> int:
            return 99

        def recv(self, size: int) -> bytes:
            return request

        def send(self, data: bytes) -> int:
            return len(data)

        def close(self) -> None:
            pass

    daemon = Daemon(parse_settings(["-l", "127.0.0.1", "-p", "0", "-m", "64"]))
    dispatch = daemon.handlers.dispatch_table()

    class Owner:
        """The worker a connection answers to (`mcached.server.connection.Owner`): nothing
        but its counters (and latency rows, where the checkout has them) is used on this
        path (the socket never blocks)."""

        def __init__(self) -> None:
            self.counters = Counters()
            self.selector = None
            self.ready: set[Any] = set()
            self.now = 0.0
            self.now_ns = 0
            self.trace = False
            try:
                from mcached.latency import Latency

                self.latency_rows = Latency(dispatch).index
            except ImportError:  # a checkout from before latency histograms
                pass

        def connection_closed(self, conn: Any, reason: str) -> None:
            raise AssertionError(reason)

    owner = Owner()
    conn = Connection(FakeSocket(), "test", "test", owner, dispatch, Parser(), 20)  # type: ignore[arg-type]
    for i in range(10):
        daemon.cache.store(StoreMode.SET, b"key:%04d" % i, VALUE, 0, 0, 0)
    daemon.cache.store(StoreMode.SET, b"n", b"1", 0, 0, 0)
    if load in CACHE_LOADS:
        cache = daemon.cache
        key = b"key:0001"
        if load == "cache-get":
            get = cache.get
            for _ in range(200):
                get(key)
            for _ in range(n):
                get(key)
        else:
            store = cache.store
            mode = StoreMode.SET
            for _ in range(200):
                store(mode, key, VALUE, 0, 0, 0)
            for _ in range(n):
                store(mode, key, VALUE, 0, 0, 0)
        return
    on_readable = conn.on_readable
    for _ in range(200):  # warm-up: caches, the VALUE suffix table, specialisation
        on_readable()
    for _ in range(n):
        on_readable()


def instructions(root: str, load: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            load,
            str(n),
            "--root",
            root,
        ]
        # a fixed hash seed: the keys' partitions and the dicts' layouts, hence the counts,
        # are then the same from run to run
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        m = re.search(r"Collected : (\d+)", result.stderr)
        if m is None:
            raise RuntimeError(result.stderr)
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose mcached is measured")
    ap.add_argument("-n", type=int, default=2000, help="requests per measured run")
    every = (*LOADS, *CACHE_LOADS)
    ap.add_argument("--loads", default=",".join(LOADS), help="comma separated: " + ", ".join(every))
    ap.add_argument("--child", nargs=2, metavar=("LOAD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.root, args.child[0], int(args.child[1]))
        return
    print(f"mcached from {args.root}, Python {sys.version.split()[0]}")
    for load in args.loads.split(","):
        one = instructions(args.root, load, args.n)
        two = instructions(args.root, load, 2 * args.n)
        print(f"  {load:12s} {(two - one) / args.n:10,.0f} instructions a request")


if __name__ == "__main__":
    main()
