#!/usr/bin/env python3
"""The ceiling: the least a Python server does per request, for `bench.py --ceiling`.

One thread, one ``selectors`` loop, ``recv`` -> split lines -> look up -> one ``send`` per
read; it knows ``get`` (any number of keys), ``set`` and ``version``, and nothing else: no
expiry, no memory bound, no stats, no error handling beyond ``ERROR``. It is not a cache
anyone should run. It answers a question about the machine: how fast can CPython serve
memaslap here at all? mcached cannot beat it, so its ratio to memcached, measured in the
same run as mcached's, is how far "as close to memcached as Python can go" can go.

``--store dict`` keeps values in a dict (nothing cheaper exists in Python);
``--store cache`` keeps them in mcached's slab cache (`mcached.storage.cache.Cache`), which
separates the cost of the storage from the cost of the rest of the daemon.

``--procs N`` forks N processes that accept on the one listening socket (mcached's workers
each have their own ``SO_REUSEPORT`` copy instead; both spread the connections over the
processes): the most N interpreters get out of the machine. With ``--store cache`` they share
one cache (its arena and locks, as mcached's workers do); with ``--store dict`` each has its
own dict, so a key set through one process is a miss in another: cheaper than any cache,
an upper bound.

Usage: ``bench_ceiling.py --port N [--store dict|cache] [-m MB] [--procs N]``.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
_CACHES: dict[int, Any] = {}  # --store cache: made before the fork, shared by the processes


def dict_store() -> tuple[Any, Any]:
    data: dict[bytes, tuple[bytes, int]] = {}

    def get(key: bytes) -> tuple[bytes, int] | None:
        return data.get(key)

    def put(key: bytes, value: bytes, flags: int, exptime: int) -> None:
        data[key] = (value, flags)

    return get, put


def cache_store(megabytes: int, slot: int = 0) -> tuple[Any, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from mcached.storage.cache import Cache
    from mcached.storage.results import StoreMode

    cache = _CACHES.get(megabytes)
    if cache is None:
        cache = _CACHES[megabytes] = Cache(memory_limit=megabytes << 20)
    cache.bind_holder(slot)  # each process its own holder slot, as mcached's workers
    cache_get, store, mode = cache.get, cache.store, StoreMode.SET

    def get(key: bytes) -> tuple[bytes | bytearray, int] | None:
        hit = cache_get(key)
        return None if hit is None else (hit[0], hit[1])

    def put(key: bytes, value: bytes, flags: int, exptime: int) -> None:
        store(mode, key, value, flags, exptime)

    return get, put


def listen(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(1024)
    listener.setblocking(False)
    return listener


def serve(listener: socket.socket, get: Any, put: Any) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    pending: dict[socket.socket, bytes] = {}

    def on_readable(conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn)
            conn.close()
            pending.pop(conn, None)
            return
        buf = pending.pop(conn, b"") + data
        out: list[bytes | bytearray] = []
        pos = 0
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            parts = buf[pos:nl].split()
            verb = parts[0] if parts else b""
            if verb == b"get":
                for key in parts[1:]:
                    hit = get(key)
                    if hit is not None:
                        value, flags = hit
                        out += (b"VALUE %s %d %d\r\n" % (key, flags, len(value)), value, b"\r\n")
                out.append(b"END\r\n")
            elif verb == b"set" and len(parts) >= 5:
                end = nl + 2 + int(parts[4])
                if len(buf) < end + 2:
                    break  # the data block is still arriving
                put(parts[1], buf[nl + 2 : end], int(parts[2]), int(parts[3]))
                out.append(b"STORED\r\n")
                nl = end
            elif verb == b"version":
                out.append(b"VERSION ceiling\r\n")
            else:
                out.append(b"ERROR\r\n")
            pos = nl + 2
        if pos < len(buf):
            pending[conn] = buf[pos:]
        if out:
            # The loads' replies fit the socket buffer. One that did not would make this
            # non-blocking sendall raise and stop the server, which bench.py reports as a
            # failed run: a yardstick has no output queue.
            conn.sendall(b"".join(out))

    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(conn, selectors.EVENT_READ, 1)
            else:
                on_readable(key.fileobj)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--store", choices=("dict", "cache"), default="dict")
    p.add_argument("-m", type=int, default=1024, help="cache megabytes (--store cache)")
    p.add_argument("--procs", type=int, default=1, help="processes accepting on the port")
    args = p.parse_args(argv)
    listener = listen(args.port)
    if args.store == "cache":
        cache_store(args.m)  # the arena, made once before the fork
    children = []
    for slot in range(1, args.procs):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_one(listener, args, slot)  # until SIGTERM (the default: it ends here)
            finally:
                os._exit(0)
        children.append(pid)
    # bench.py stops a server with SIGTERM: the processes forked here go with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _serve_one(listener, args, 0 if args.procs == 1 else args.procs)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except OSError:
                pass
    return 0


def _serve_one(listener: socket.socket, args: argparse.Namespace, slot: int) -> None:
    get, put = dict_store() if args.store == "dict" else cache_store(args.m, slot)
    try:
        serve(listener, get, put)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
