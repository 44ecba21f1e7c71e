#!/usr/bin/env python3
"""What hostile clients can make a server hold: mcached against memcached, same attacks.

Each server in turn (never both at once) runs with ``-m 64`` on a free loopback port, and its
memory -- the PSS of its process and every child, summed (shared pages counted once; see
bench_memory.py) -- is printed before an attack, while it holds, and after its connections
are closed:

* ``multiget``: 110 values of 500 KB are stored, then 10 connections with small receive
  buffers each send ``get big0 big1 ... big109`` and never read the reply;
* ``short-keys``: 3,844 one-byte values under two-byte keys are stored, then 100 connections
  with small receive buffers each send a 1 MB ``get`` line of 333,331 of those keys (a ~6
  MB reply) and never read it;
* ``half-values``: 300 connections each send ``set partN 0 0 1048000`` and 1,000 KB of its
  data, then stop sending (rounds of them, closing the connections in between, to show the
  memory comes back).

Usage: ``python scripts/hostile_memory.py [--servers mcached,memcached] [--rounds 3]``. The
bound mcached states for these attacks is in README "Security"; tests/integration/
test_memory_bounds.py asserts it with smaller sizes. ``--rounds 40`` runs long enough for
every process's garbage collector to make full passes (README "Memory over time"): what a
short run cannot show.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time

import servers

HOST = servers.HOST
MB = 1024 * 1024


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    args = ["-m", "64", *(["-U", "0", "-c", "1024"] if kind == "memcached" else [])]
    proc, port = servers.start(kind, *args)
    time.sleep(0.3)
    return proc, port


def memory(proc: subprocess.Popen[bytes]) -> float:
    return servers.pss(proc) / MB


def settle(proc: subprocess.Popen[bytes], seconds: float = 1.0) -> float:
    time.sleep(seconds)
    return memory(proc)


def unread(port: int, request: bytes, n: int) -> list[socket.socket]:
    """`n` connections with small receive buffers that each send `request`, never to read
    the reply."""
    conns = []
    for _ in range(n):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect((HOST, port))
        try:
            c.sendall(request)
        except OSError:
            pass  # closed as it sent: what it holds is what it holds
        conns.append(c)
    return conns


def unread_then_closed(
    proc: subprocess.Popen[bytes], port: int, request: bytes, n: int, label: str, hold: float
) -> list[tuple[str, float]]:
    """The memory once the items are stored, while `n` connections hold `request` unread
    (after `hold` seconds), and once they are closed."""
    marks = [("stored", settle(proc))]
    conns = unread(port, request, n)
    marks.append((label, settle(proc, hold)))
    for c in conns:
        c.close()
    marks.append(("closed", settle(proc, 2.0)))
    return marks


def multiget(proc: subprocess.Popen[bytes], port: int) -> list[tuple[str, float]]:
    value = b"m" * 500_000
    with socket.create_connection((HOST, port)) as s:
        for i in range(110):
            s.sendall(b"set big%d 0 0 %d noreply\r\n%b\r\n" % (i, len(value), value))
        s.sendall(b"version\r\n")
        s.recv(100)
    line = b"get " + b" ".join(b"big%d" % i for i in range(110)) + b"\r\n"
    return unread_then_closed(proc, port, line, 10, "10 multigets unread", 3.0)


def short_keys(proc: subprocess.Popen[bytes], port: int) -> list[tuple[str, float]]:
    alnum = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    keys = [bytes((a, b)) for a in alnum for b in alnum]
    with socket.create_connection((HOST, port)) as s:
        s.sendall(b"".join(b"set %b 0 0 1 noreply\r\nx\r\n" % k for k in keys))
        s.sendall(b"version\r\n")
        s.recv(100)
    line = b"get " + b" ".join((keys * 87)[:333_331]) + b"\r\n"
    return unread_then_closed(proc, port, line, 100, "100 multigets of 333,331 keys unread", 5.0)


def half_values(proc: subprocess.Popen[bytes], port: int, rounds: int) -> list[tuple[str, float]]:
    marks = [("start", settle(proc, 0.5))]
    chunk = b"h" * 1000 * 1024
    for r in range(rounds):
        conns = []
        for i in range(300):
            c = socket.create_connection((HOST, port))
            c.setblocking(False)
            data = b"set part%d 0 0 1048000\r\n" % i + chunk
            try:
                sent = c.send(data)
                c.setblocking(True)
                c.settimeout(2)
                c.sendall(data[sent:])
            except OSError:
                pass  # the server stopped reading: what it holds is what it holds
            conns.append(c)
        marks.append((f"round {r + 1}: 300 values, 1,000 KB each, half-sent", settle(proc, 2.0)))
        for c in conns:
            c.close()
        marks.append((f"round {r + 1}: closed", settle(proc, 2.0)))
    return marks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--servers", default="mcached,memcached")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    for kind in args.servers.split(","):
        for attack in ("multiget", "short-keys", "half-values"):
            proc, port = start(kind)
            try:
                base = memory(proc)
                print(f"{kind:9s} {attack}: {base:7.1f} MB at start (-m 64)")
                if attack == "multiget":
                    marks = multiget(proc, port)
                elif attack == "short-keys":
                    marks = short_keys(proc, port)
                else:
                    marks = half_values(proc, port, args.rounds)
                for label, mb in marks:
                    print(f"    {mb:7.1f} MB  {label}")
            finally:
                servers.stop(proc, 15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
