#!/usr/bin/env python3
"""The daemon under load while its processes are killed and it is told to reload and flush.

mcached starts on a free loopback port (by default ``-t 4 -m 32 -o
slab_reassign,slab_automove=2``: a small cache, so pages move between classes and items are
evicted throughout). Then, for ``--seconds``:

* ``--clients`` client threads, each on its own connection and its own keys, in the text,
  meta and binary protocols in turn, store values of 10 B to 600 KB (most small, some
  chained over several chunks), read them back one at a time and in multigets (``get k1
  k2 ...``; quiet ``mg`` and ``mn``; ``getkq`` and ``noop``), and delete some. Every value
  is made from its key and a version number, so a hit is checked byte for byte against what
  its client last stored (or, where the reply to a store or a delete was lost with its
  connection, what it may have stored); a miss is always allowed (evicted, flushed, or a
  cache emptied by a death inside a cache operation);
* every ``--kill-every`` seconds, one of the supervisor's children (a worker or the
  maintainer), chosen at random, gets SIGKILL;
* every ``--hup-every`` seconds the supervisor gets SIGHUP (the reload of TLS certificates
  and the auth file: here neither is set, so only the reload's path runs);
* every ``--flush-every`` seconds, another connection sends ``flush_all``, and every
  ``--reset-every`` seconds ``stats reset`` (which holds every other worker while it
  resets).

Connections that a death closes are opened again. At the end every client reads all its keys
back with nothing else going on, the daemon is stopped with SIGTERM, and the figures are
printed: operations, hits, reconnections, kills, and the failures -- a wrong value, a request
unanswered for ``--stall`` seconds, a daemon that died or did not stop, a log line of a
warning or worse other than the deaths the script caused. The exit status is 1 if
there was any.

Usage: ``python scripts/chaos.py [--seconds 300] [--seed 1] [--args "-t 4 -m 32 ..."]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import servers

HOST = servers.HOST
KEYS = 200  # per client


def value_of(client: int, key: int, version: int, size: int) -> bytes:
    """The value `client` stores as `version` of its key `key`: a header that names them,
    then a pattern drawn from the header, `size` bytes in all."""
    head = b"%d:%d:%d|" % (client, key, version)
    block = hashlib.blake2b(head, digest_size=32).digest()
    body = block * (size // len(block) + 1)
    return (head + body)[: max(size, len(head))]


def size_of(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.70:
        return rng.randint(10, 1000)
    if r < 0.95:
        return rng.randint(1001, 50_000)
    return rng.randint(100_000, 600_000)


class Lost(Exception):
    """The connection went away (or stalled) before the reply was whole."""


class Conn:
    def __init__(self, port: int, stall: float) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=stall)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Lost(str(exc)) from None

    def _more(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except TimeoutError:
            raise Lost("stall") from None
        except OSError as exc:
            raise Lost(str(exc)) from None
        if not chunk:
            raise Lost("closed")
        self.buf += chunk

    def line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            self._more()

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def value(self, n: int) -> bytes:
        """A value of `n` bytes and the CRLF after it."""
        data = self.exactly(n + 2)
        if data[-2:] != b"\r\n":
            raise AssertionError("a value not followed by CRLF")
        return data[:-2]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.wrong: list[str] = []

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def fail(self, what: str) -> None:
        with self.lock:
            self.wrong.append(what)


def line_reply(conn: Conn, request: bytes, meanings: dict[bytes, str]) -> str:
    """`request` sent and its one-line reply read: what `meanings` says the line means,
    "out of memory" for that SERVER_ERROR, else the line itself (repr)."""
    conn.send(request)
    reply = conn.line()
    if reply in meanings:
        return meanings[reply]
    # memcached's two: "out of memory storing object" (no item) and "Out of memory during
    # read" (no chunk for the rest of a value over slab_chunk_max: every chunk of the largest
    # class in flight, which automove may have shrunk to a page), as the binary client's
    # status 0x82 counts both
    if reply.lower().startswith(b"server_error out of memory"):
        return "out of memory"
    return repr(reply[:100])


class Text:
    """set, get (a multiget for several keys) and delete in the text protocol."""

    @staticmethod
    def store(conn: Conn, key: bytes, flags: int, data: bytes) -> str:
        request = b"set %b %d 0 %d\r\n%b\r\n" % (key, flags, len(data), data)
        return line_reply(conn, request, {b"STORED": "stored"})

    @staticmethod
    def delete(conn: Conn, key: bytes) -> str:
        meanings = {b"DELETED": "deleted", b"NOT_FOUND": "not found"}
        return line_reply(conn, b"delete %b\r\n" % key, meanings)

    @staticmethod
    def get(conn: Conn, keys: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        conn.send(b"get " + b" ".join(keys) + b"\r\n")
        found = {}
        while True:
            line = conn.line()
            if line == b"END":
                return found
            parts = line.split()
            if len(parts) != 4 or parts[0] != b"VALUE":
                raise AssertionError(f"unexpected line {line[:200]!r}")
            found[parts[1]] = (int(parts[2]), conn.value(int(parts[3])))


class Meta:
    """The same in the meta protocol: ms, mg (quiet ones and mn for several keys), md."""

    @staticmethod
    def store(conn: Conn, key: bytes, flags: int, data: bytes) -> str:
        request = b"ms %b %d F%d\r\n%b\r\n" % (key, len(data), flags, data)
        return line_reply(conn, request, {b"HD": "stored"})

    @staticmethod
    def delete(conn: Conn, key: bytes) -> str:
        return line_reply(conn, b"md %b\r\n" % key, {b"HD": "deleted", b"NF": "not found"})

    @staticmethod
    def get(conn: Conn, keys: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        if len(keys) == 1:
            conn.send(b"mg %b v f\r\n" % keys[0])
        else:
            conn.send(b"".join(b"mg %b k v f q\r\n" % key for key in keys) + b"mn\r\n")
        found = {}
        while True:
            line = conn.line()
            if line in (b"MN", b"EN"):
                return found
            parts = line.split()
            if len(parts) < 2 or parts[0] != b"VA":
                raise AssertionError(f"unexpected line {line[:200]!r}")
            got = {t[:1]: t[1:] for t in parts[2:]}
            key = got.get(b"k", keys[0])
            found[key] = (int(got[b"f"]), conn.value(int(parts[1])))
            if len(keys) == 1:
                return found


BIN_HEADER = struct.Struct(">BBHBBHIIQ")


class Binary:
    """The same in the binary protocol: set, get (getkq and a noop for several keys),
    delete."""

    @staticmethod
    def request(opcode: int, key: bytes, extras: bytes = b"", value: bytes = b"") -> bytes:
        body = len(extras) + len(key) + len(value)
        head = BIN_HEADER.pack(0x80, opcode, len(key), len(extras), 0, 0, body, 0, 0)
        return head + extras + key + value

    @staticmethod
    def response(conn: Conn) -> tuple[int, int, bytes, bytes, bytes]:
        """opcode, status, extras, key, value."""
        magic, opcode, nkey, nextras, _, status, body, _, _ = BIN_HEADER.unpack(conn.exactly(24))
        if magic != 0x81:
            raise AssertionError(f"a response with magic {magic:#x}")
        data = conn.exactly(body)
        return (
            opcode,
            status,
            data[:nextras],
            data[nextras : nextras + nkey],
            data[nextras + nkey :],
        )

    @classmethod
    def store(cls, conn: Conn, key: bytes, flags: int, data: bytes) -> str:
        conn.send(cls.request(0x01, key, struct.pack(">II", flags, 0), data))
        _, status, *_ = cls.response(conn)
        if status == 0:
            return "stored"
        if status == 0x82:
            return "out of memory"
        return f"status {status:#x}"

    @classmethod
    def delete(cls, conn: Conn, key: bytes) -> str:
        conn.send(cls.request(0x04, key))
        _, status, *_ = cls.response(conn)
        return {0: "deleted", 1: "not found"}.get(status, f"status {status:#x}")

    @classmethod
    def get(cls, conn: Conn, keys: list[bytes]) -> dict[bytes, tuple[int, bytes]]:
        if len(keys) == 1:
            conn.send(cls.request(0x00, keys[0]))
            _, status, extras, _, value = cls.response(conn)
            if status == 1:
                return {}
            if status != 0:
                raise AssertionError(f"get: status {status:#x}")
            return {keys[0]: (struct.unpack(">I", extras)[0], value)}
        conn.send(b"".join(cls.request(0x0D, key) for key in keys) + cls.request(0x0A, b""))
        found = {}
        while True:
            opcode, status, extras, key, value = cls.response(conn)
            if opcode == 0x0A:
                return found
            if opcode != 0x0D or status != 0:
                raise AssertionError(f"getkq: opcode {opcode:#x}, status {status:#x}")
            found[key] = (struct.unpack(">I", extras)[0], value)


WIRES = {"text": Text, "meta": Meta, "binary": Binary}


class Client:
    """One client: its keys, what each may hold, and its connection."""

    def __init__(
        self, n: int, port: int, args: argparse.Namespace, tally: Tally, stop: threading.Event
    ) -> None:
        self.n = n
        self.port = port
        self.stall = args.stall
        self.tally = tally
        self.rng = random.Random(args.seed * 1000 + n)
        # key -> the (version, size) pairs a hit may show; empty: only a miss is right
        self.may: list[set[tuple[int, int]]] = [set() for _ in range(KEYS)]
        self.version = 0
        self.conn: Conn | None = None
        self.stop = stop  # the run is over: no more reconnecting
        self.protocol = args.protocols[n % len(args.protocols)]
        self.wire = WIRES[self.protocol]

    def key(self, k: int) -> bytes:
        return b"c%d:k%d" % (self.n, k)

    def connect(self) -> Conn:
        while self.conn is None:
            try:
                self.conn = Conn(self.port, self.stall)
            except OSError:
                if self.stop.is_set():
                    raise Lost("the run is over") from None
                time.sleep(0.05)
        return self.conn

    def lost(self, why: str) -> None:
        if self.conn is None:
            return  # never connected: the run is over
        self.conn.close()
        self.conn = None
        self.tally.add("reconnections")
        if why == "stall":
            self.tally.fail(f"client {self.n}: no reply within {self.stall} s")

    def check(self, k: int, flags: int, value: bytes) -> None:
        head = value[:40].split(b"|", 1)[0]
        try:
            client, key, version = (int(x) for x in head.split(b":"))
        except ValueError:
            self.tally.fail(f"{self.key(k)!r}: a value with no header: {value[:60]!r}")
            return
        if (client, key) != (self.n, k):
            self.tally.fail(f"{self.key(k)!r}: the value of c{client}:k{key}")
            return
        sizes = {size for v, size in self.may[k] if v == version}
        if not sizes:
            self.tally.fail(f"{self.key(k)!r}: version {version}, may be {sorted(self.may[k])}")
        elif value != value_of(self.n, k, version, len(value)) or len(value) not in sizes:
            self.tally.fail(f"{self.key(k)!r}: version {version} damaged ({len(value)} B)")
        elif flags != version & 0xFFFF:
            self.tally.fail(f"{self.key(k)!r}: flags {flags} for version {version}")
        else:
            self.tally.add(f"hits ({self.protocol})")

    def set(self, k: int) -> None:
        self.version += 1
        size = size_of(self.rng)
        data = value_of(self.n, k, self.version, size)
        new = (self.version, len(data))
        key = self.key(k)
        try:
            conn = self.connect()
            reply = self.wire.store(conn, key, self.version & 0xFFFF, data)
        except Lost as exc:
            self.may[k].add(new)  # stored or not
            self.lost(str(exc))
            return
        if reply == "stored":
            self.may[k] = {new}
            self.tally.add("sets")
        elif reply.startswith("out of memory"):
            self.tally.add("sets refused (out of memory)")  # every chunk of its class in use
        else:
            self.tally.fail(f"{key!r}: a set answered {reply}")

    def delete(self, k: int) -> None:
        try:
            conn = self.connect()
            reply = self.wire.delete(conn, self.key(k))
        except Lost as exc:
            self.lost(str(exc))  # deleted or not: what it held may stay
            return
        if reply in ("deleted", "not found"):
            self.may[k] = set()
            self.tally.add("deletes")
        else:
            self.tally.fail(f"a delete answered {reply}")

    def get(self, ks: list[int]) -> None:
        try:
            conn = self.connect()
            found = self.wire.get(conn, [self.key(k) for k in ks])
        except Lost as exc:
            self.lost(str(exc))
            return
        except AssertionError as exc:
            self.tally.fail(f"client {self.n}: {exc}")
            self.lost("bad reply")
            return
        self.tally.add("gets" if len(ks) == 1 else "multigets")
        for k in ks:
            hit = found.pop(self.key(k), None)
            if hit is not None:
                self.check(k, *hit)
            else:
                self.tally.add("misses")
        if found:
            self.tally.fail(f"client {self.n}: keys not asked for: {sorted(found)[:5]}")

    def run(self) -> None:
        rng = self.rng
        while not self.stop.is_set():
            r = rng.random()
            if r < 0.50:
                self.set(rng.randrange(KEYS))
            elif r < 0.85:
                self.get([rng.randrange(KEYS)])
            elif r < 0.95:
                self.get(rng.sample(range(KEYS), rng.randint(2, 20)))
            else:
                self.delete(rng.randrange(KEYS))

    def final(self) -> None:
        """Every key read back, in multigets of 20, with no chaos going on."""
        for first in range(0, KEYS, 20):
            self.get(list(range(first, min(first + 20, KEYS))))


def chaos(
    proc: subprocess.Popen[bytes],
    port: int,
    args: argparse.Namespace,
    tally: Tally,
    stop: threading.Event,
    killed: set[int],
) -> None:
    rng = random.Random(args.seed)
    start = time.monotonic()
    next_kill = start + args.kill_every
    next_hup = start + args.hup_every
    next_flush = start + args.flush_every
    next_reset = start + args.reset_every
    while not stop.wait(0.02):
        now = time.monotonic()
        if now >= next_kill:
            next_kill += args.kill_every
            try:
                children = psutil.Process(proc.pid).children()
            except psutil.NoSuchProcess:
                return  # the daemon is gone: main() reports it
            if children:
                victim = rng.choice(children).pid
                killed.add(victim)
                os.kill(victim, signal.SIGKILL)
                tally.add("kills")
        if now >= next_hup:
            next_hup += args.hup_every
            proc.send_signal(signal.SIGHUP)
            tally.add("SIGHUPs")
        for command, answer, due in (
            (b"flush_all", b"OK\r\n", now >= next_flush),
            (b"stats reset", b"RESET\r\n", now >= next_reset),
        ):
            if not due:
                continue
            if command == b"flush_all":
                next_flush += args.flush_every
            else:
                next_reset += args.reset_every
            name = command.decode()
            try:
                with socket.create_connection((HOST, port), timeout=args.stall) as s:
                    s.sendall(command + b"\r\n")
                    reply = s.recv(100)
                if reply == answer:
                    tally.add(name)
                elif reply:
                    tally.fail(f"{name} answered {reply!r}")
            except TimeoutError:
                tally.fail(f"{name}: no reply within {args.stall} s")
            except OSError:
                pass  # its worker was killed under it


LOG_LINE = re.compile(rb"^\S+ \S+ mcached\[\d+\] (\w+) (.*)$")
KILLED = re.compile(rb"^(worker|maintainer) \d+ \(pid (\d+)\) was killed by SIGKILL[;: ]")


def unexpected(lines: list[bytes], killed: set[int]) -> list[bytes]:
    """The daemon's log lines that are neither informational nor the death of a child this
    script killed (the daemon logs a death as an error, and empties the cache after a death
    inside a cache operation)."""
    odd = []
    for line in lines:
        m = LOG_LINE.match(line)
        if m is None:  # a traceback, or anything not logged through the daemon's logger
            odd.append(line)
        elif m[1] not in (b"INFO", b"DEBUG"):
            k = KILLED.match(m[2])
            if k is None or int(k[2]) not in killed:
                odd.append(line)
    return odd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument(
        "--protocols",
        default="text,meta,binary",
        type=lambda v: v.split(","),
        help="the clients' protocols, taken in turn (default text,meta,binary)",
    )
    ap.add_argument("--kill-every", type=float, default=10.0)
    ap.add_argument("--hup-every", type=float, default=0.4)
    ap.add_argument("--flush-every", type=float, default=1.4)
    ap.add_argument("--reset-every", type=float, default=1.1)
    ap.add_argument("--stall", type=float, default=15.0, help="seconds a reply may take")
    ap.add_argument(
        "--args", default="-t 4 -m 32 -o slab_reassign,slab_automove=2", help="the daemon's options"
    )
    args = ap.parse_args()

    port = servers.free_port()
    log_path = Path(tempfile.mkdtemp(prefix="mcached-chaos.")) / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            servers.server_cmd("mcached", port, *shlex.split(args.args), "-v"),
            cwd="/",
            env=servers.installed_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    servers.wait_ready(proc, port)
    print(f"mcached {args.args} on port {port}, log {log_path}", flush=True)

    tally = Tally()
    stop = threading.Event()
    killed: set[int] = set()
    clients = [Client(n, port, args, tally, stop) for n in range(args.clients)]
    threads = [threading.Thread(target=c.run) for c in clients]
    threads.append(threading.Thread(target=chaos, args=(proc, port, args, tally, stop, killed)))
    for t in threads:
        t.start()
    began = time.monotonic()
    try:
        while time.monotonic() - began < args.seconds and proc.poll() is None:
            time.sleep(min(10.0, args.seconds))
            with tally.lock:
                print(
                    f"{time.monotonic() - began:6.0f} s  {tally.counts}  wrong {len(tally.wrong)}",
                    flush=True,
                )
    finally:
        stop.set()
        for t in threads:
            t.join(args.stall + 5)

    died = proc.poll() is not None
    if not died:
        time.sleep(1.0)  # the last kill's replacement
        for c in clients:
            c.final()
        memory = servers.pss(proc) / 2**20
        t0 = time.monotonic()
        proc.terminate()
        try:
            status: int | None = proc.wait(30)
        except subprocess.TimeoutExpired:
            status = None
            proc.kill()
            proc.wait()
        took = time.monotonic() - t0
    lines = log_path.read_bytes().splitlines()
    odd = unexpected(lines, killed)
    print(f"\nafter {args.seconds:.0f} s: {dict(sorted(tally.counts.items()))}")
    failures = list(tally.wrong)
    if died:
        failures.append(f"the daemon died (status {proc.returncode})")
    else:
        print(
            f"PSS of all processes at the end {memory:.1f} MB; SIGTERM: "
            f"{'did not stop in 30 s' if status is None else f'status {status} in {took:.1f} s'}"
        )
        if status != 0:
            failures.append(f"SIGTERM: status {status}")
    failures += [f"log: {ln.decode(errors='replace')}" for ln in odd[:20]]
    print(f"{len(lines)} log lines, {len(odd)} unexpected")
    for f in failures[:50]:
        print("FAIL", f)
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
