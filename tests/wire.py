"""A raw-socket client for exact-bytes tests.

``conn.request(b"get k\\r\\n")`` sends and returns every byte the server sends until the reply
is complete (it waits for `until` or, by default, for the line ending a reply) or the server
goes quiet; ``conn.closed()`` tells whether the server hung up.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    """Until `condition()` holds; fails the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def readable(socks: list[Any], timeout: float) -> list[Any]:
    """Those of `socks` (sockets, or anything with a ``fileno``) with something to read (or
    closed) within `timeout` s: poll, not select, which refuses a descriptor past 1023 (a
    test process that has opened many: a free-threaded run's in-process servers did)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


TERMINATORS = (
    b"END\r\n",
    b"STORED\r\n",
    b"NOT_STORED\r\n",
    b"EXISTS\r\n",
    b"NOT_FOUND\r\n",
    b"DELETED\r\n",
    b"TOUCHED\r\n",
    b"OK\r\n",
    b"RESET\r\n",
    b"ERROR\r\n",
)


class Conn:
    def __init__(self, address: tuple[str, int] | str, timeout: float = 5.0) -> None:
        """`address`: (host, port), or a unix domain socket's path."""
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address, timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, n: int) -> bytes:
        buf = b""
        self.sock.settimeout(self.timeout)
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf

    def read_for(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds` (stops early at EOF)."""
        buf = b""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return buf
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return buf
            except ConnectionResetError:
                return buf
            if not chunk:
                return buf
            buf += chunk

    def read_until(self, end: bytes, limit: float | None = None) -> bytes:
        buf = b""
        deadline = time.monotonic() + (limit or self.timeout)
        while not buf.endswith(end):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {end!r} after {buf[-200:]!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {end!r}; got {buf[-200:]!r}")
            buf += chunk
        return buf

    def request(self, data: bytes, expect_len: int | None = None, quiet: float = 0.3) -> bytes:
        """Send `data`; return `expect_len` bytes, or what arrives until `quiet` s of silence
        after the first bytes. The first bytes are waited for up to the connection's timeout:
        every request sent this way has a reply, and on a loaded machine (the suite runs in
        parallel processes) it may come later than `quiet`."""
        self.send(data)
        if expect_len is not None:
            return self.read_exact(expect_len)
        buf = b""
        while True:
            self.sock.settimeout(quiet if buf else self.timeout)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return buf
            if not chunk:
                return buf
            buf += chunk

    def request_line(self, data: bytes) -> bytes:
        """Send `data`; return its one-line reply (``version``...) through its ``\\r\\n``.
        Unlike `request` it waits for no silence after the reply: a server's bytes past the
        line stay on the connection, for its next read to find."""
        self.send(data)
        return self.read_until(b"\r\n")

    def closed(self, wait: float = 2.0) -> bool:
        """True when the server has closed the connection (EOF or reset) within `wait` s."""
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


# ---- exact-bytes exchanges (tests/integration/test_wire*.py) ----

PROBE = b"get wire:probe\r\n"  # sent after a request: its END marks the end of the reply
PROBE_REPLY = b"END\r\n"


def recv_exact(conn: Conn, n: int, timeout: float = 5.0) -> bytes:
    """Up to `n` bytes: returns early (short) on EOF or after `timeout` s."""
    buf = b""
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        conn.sock.settimeout(left)
        try:
            chunk = conn.sock.recv(n - len(buf))
        except (TimeoutError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def exchange(conn: Conn, request: bytes, expected: bytes) -> None:
    """Send `request` + PROBE on `conn`; assert the reply is exactly `expected` + END."""
    conn.send(request + PROBE)
    got = recv_exact(conn, len(expected) + len(PROBE_REPLY))
    assert got == expected + PROBE_REPLY, got  # (this module's asserts are not rewritten)


def roundtrip(server: Any, request: bytes, expected: bytes) -> None:
    """`exchange` on a fresh connection to `server` (anything with an ``address``)."""
    with Conn(server.address) as conn:
        exchange(conn, request, expected)


def config_reply(data: bytes) -> bytes:
    """The ``config get cluster`` reply carrying `data`, as ElastiCache frames it: ``<n>``
    counts the data, not the ``\\r\\n`` after it."""
    return b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(data), data)
