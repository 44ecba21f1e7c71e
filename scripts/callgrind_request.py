"""Instructions per request on the in-process request path, counted by callgrind.

    python scripts/callgrind_request.py                  # get, set, 10-key get, noreply set
    python scripts/callgrind_request.py --root /tmp/old  # the same for another checkout
    python scripts/callgrind_request.py --loads cache-get,cache-set   # the storage calls alone
    python scripts/callgrind_request.py --daemon --loads get,set,get10  # the real daemon

What is counted: one `Connection.on_readable()` per request, as a worker calls it (recv, the
parser, the handler, the cache, the reply joined and "sent"), over a socket whose ``recv``
returns the next request and whose ``send`` only counts: the kernel's share is left out.
Each load runs twice under ``valgrind --tool=callgrind``, with N and 2N requests after the
same warm-up; (Ir(2N) - Ir(N)) / N is what one request costs, start-up and warm-up cancel
out. With a fixed hash seed the counts repeat from run to run, so one run per load is enough.

With ``--daemon``, the real daemon (``-t 1``: one worker process) runs under callgrind
instead, and one client connection sends the requests over loopback, one at a time, waiting
for each reply, as the benchmarks' mix does: the worker's event loop, its ``epoll`` and the
real ``recv`` and ``send`` are counted too (their user side). The worker (the process that
holds the connection's server end) is counted, again as the difference of an N and a 2N
run. Its once-a-second upkeep falls in both, in proportion to the run's length, so these
counts vary from run to run: by a few tenths of a percent with the default N.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

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
# The loads `--daemon` runs: each reply ends in END or STORED
DAEMON_LOADS = ("get", "get-miss", "get10", "set")


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


def under_callgrind(out: str, *argv: str) -> list[str]:
    """This interpreter run with `argv` under callgrind, its counts written to `out`."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *argv]


def instructions(root: str, load: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = under_callgrind(
            os.path.join(tmp, "cg.out"), __file__, "--child", load, str(n), "--root", root
        )
        # a fixed hash seed: the keys' partitions and the dicts' layouts, hence the counts,
        # are then the same from run to run
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        m = re.search(r"Collected : (\d+)", result.stderr)
        if m is None:
            raise RuntimeError(result.stderr)
        return int(m.group(1))


def drive(port: int, request: bytes, n: int) -> None:
    """`n` round trips of `request` on one connection (after the loads' items are stored)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def round_trip(req: bytes) -> None:
            sock.sendall(req)
            buf = b""
            while not (buf.endswith(b"END\r\n") or buf.endswith(b"STORED\r\n")):
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("the daemon closed the connection")
                buf += data
                if buf.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
                    raise RuntimeError(buf.decode(errors="replace"))

        for i in range(10):
            round_trip(b"set key:%04d 0 0 1024\r\n" % i + VALUE + b"\r\n")
        for _ in range(n):
            round_trip(request)


def daemon_instructions(root: str, load: str, n: int) -> int:
    """The worker's instructions over 200 warm-up requests and `n` more of `load`."""
    if load not in DAEMON_LOADS:
        raise SystemExit(f"--daemon runs {', '.join(DAEMON_LOADS)}, not {load}")
    request = LOADS[load]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        flags = ("-l", "127.0.0.1", "-p", str(port), "-t", "1", "-m", "64", "-U", "0")
        cmd = under_callgrind(os.path.join(tmp, "cg.%p"), "-m", "mcached", *flags)
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=root)
        proc = subprocess.Popen(
            cmd, cwd="/", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the daemon did not start under valgrind") from None
                    time.sleep(0.5)
            worker = serving_pid(proc.pid, port)
            drive(port, request, 200)
            drive(port, request, n)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        m = re.search(rf"^=={worker}== Collected : (\d+)", err, re.MULTILINE)
        if m is None:
            raise RuntimeError(err)
        return int(m.group(1))


def serving_pid(daemon: int, port: int) -> int:
    """The process of the daemon `daemon` that serves a connection to `port` (the one
    worker of ``-t 1``; callgrind counts every process, the supervisor and the maintainer
    too)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(b"version\r\n")
        sock.recv(100)  # accepted and served: the worker holds its end
        for child in psutil.Process(daemon).children(recursive=True):
            for c in child.net_connections(kind="tcp"):
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port:
                    return child.pid
    raise RuntimeError(f"no process of {daemon} serves port {port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose mcached is measured")
    ap.add_argument("-n", type=int, default=2000, help="requests per measured run")
    every = (*LOADS, *CACHE_LOADS)
    ap.add_argument(
        "--loads",
        help=f"comma separated: {', '.join(every)} (default: {', '.join(LOADS)}; with "
        f"--daemon: {', '.join(DAEMON_LOADS)})",
    )
    ap.add_argument(
        "--daemon",
        action="store_true",
        help="count the real daemon's worker over loopback: " + ", ".join(DAEMON_LOADS),
    )
    ap.add_argument("--child", nargs=2, metavar=("LOAD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.root, args.child[0], int(args.child[1]))
        return
    print(f"mcached from {args.root}, Python {sys.version.split()[0]}")
    count = daemon_instructions if args.daemon else instructions
    loads = args.loads or ",".join(DAEMON_LOADS if args.daemon else LOADS)
    for load in loads.split(","):
        one = count(args.root, load, args.n)
        two = count(args.root, load, 2 * args.n)
        print(f"  {load:12s} {(two - one) / args.n:10,.0f} instructions a request")


if __name__ == "__main__":
    main()
