"""Worker threads (the in-process server, a free-threaded interpreter) that fail.

A bug outside any one request (those close their own connection) ends a worker's loop. A
worker process dies of it and its supervisor starts another; a worker thread must not take
down the listening sockets its sibling threads share. Before this was handled, one failed
worker thread closed every listening socket of the process: the port refused every client
while the daemon, and systemd's watchdog, went on as if nothing had happened.

The failure is injected: `Connection.on_readable` raises for a connection whose bytes start
with ``boom`` (nothing a client sends can fail a worker on purpose, or it would be fixed).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

import pytest

from mcached.server.connection import Connection
from mcached.server.supervisor import CRASH_LIMIT
from tests.conftest import Server

pytestmark = pytest.mark.integration

THREADS = 4


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Connection.on_readable

    def on_readable(self: Connection) -> None:
        try:
            head = self.sock.recv(4, socket.MSG_PEEK)
        except OSError:
            head = b""
        if head == b"boom":
            raise RuntimeError("injected worker failure")
        original(self)

    monkeypatch.setattr(Connection, "on_readable", on_readable)


def request(sock: socket.socket, data: bytes, end: bytes) -> bytes:
    sock.sendall(data)
    reply = b""
    while not reply.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            return reply
        reply += chunk
    return reply


def fail_a_worker(server: Server) -> None:
    with socket.create_connection(server.address, timeout=10) as victim:
        victim.sendall(b"boom\r\n")
        try:
            assert victim.recv(100) == b""  # closed, unanswered
        except ConnectionResetError:
            pass


def test_a_failed_worker_thread_is_replaced_and_the_port_keeps_serving(
    server_factory: Callable[..., Server], failing: None, caplog: pytest.LogCaptureFixture
) -> None:
    server = server_factory("mcached", "-t", str(THREADS))
    daemon = server.handle
    bystanders = [socket.create_connection(server.address, timeout=10) for _ in range(8)]
    try:
        for i, c in enumerate(bystanders):
            assert request(c, b"set b%d 0 0 1\r\n%d\r\n" % (i, i % 10), b"\r\n") == b"STORED\r\n"
        caplog.set_level(logging.CRITICAL, logger="mcached.worker")
        fail_a_worker(server)
        # every new connection is served, on whichever worker the kernel picks (40
        # connections over 4 listening copies: the successor's copy among them)
        for i in range(40):
            with socket.create_connection(server.address, timeout=10) as c:
                assert request(c, b"set n%d 0 0 2\r\nok\r\n" % i, b"\r\n") == b"STORED\r\n"
                assert request(c, b"get b%d\r\n" % (i % 8), b"END\r\n") == (
                    b"VALUE b%d 0 1\r\n%d\r\nEND\r\n" % (i % 8, i % 8)
                )
        # the bystanders the failed worker served were closed (which, the kernel chose);
        # the others still answer, and are all that stats counts
        alive = 0
        for c in bystanders:
            try:
                alive += request(c, b"version\r\n", b"\r\n") == b"VERSION 1.6.18\r\n"
            except OSError:
                pass
        workers = daemon.server.workers
        assert len(workers) == THREADS
        assert all(w.thread is not None and w.thread.is_alive() for w in workers)
        with socket.create_connection(server.address, timeout=10) as c:
            stats = request(c, b"stats\r\n", b"END\r\n")
        fields = dict(line.split(b" ")[1:3] for line in stats.split(b"\r\n")[:-2])
        assert int(fields[b"curr_connections"]) == alive + 1  # and this one
        assert int(fields[b"cmd_set"]) == 8 + 40
        assert int(fields[b"get_hits"]) == 40
        assert "injected worker failure" in caplog.text  # the traceback
        assert "another worker takes its place" in caplog.text
    finally:
        for c in bystanders:
            c.close()


def test_worker_threads_that_keep_failing_stop_the_daemon(
    server_factory: Callable[..., Server], failing: None, caplog: pytest.LogCaptureFixture
) -> None:
    """As the supervisor gives up on worker processes that keep dying: `CRASH_LIMIT`
    failures within its window stop the daemon, at once, marked failed (the command then
    exits 1)."""
    server = server_factory("mcached", "-t", "2")
    daemon = server.handle
    with caplog.at_level(logging.ERROR, logger="mcached"):
        for _ in range(CRASH_LIMIT):
            fail_a_worker(server)
        deadline = time.monotonic() + 15
        while not (daemon.failed and daemon._stopped) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.failed == f"{CRASH_LIMIT} worker threads failed within 30s"
        assert f"{CRASH_LIMIT} worker threads failed within 30s: stopping" in caplog.text
        deadline = time.monotonic() + 15
        while any(w.thread and w.thread.is_alive() for w in daemon.server.workers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(server.address, timeout=5).close()
