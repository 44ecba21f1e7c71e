"""The fixture that starts the daemon as it runs in production (`tests.conftest`'s
``mcached-procs``): a port taken between `free_port` and the daemon's bind, and a daemon
that exits at start, as the suite met them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests import conftest

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on (without SO_REUSEPORT, so the daemon cannot share it)."""
    with socket.socket() as s:
        s.bind((conftest.HOST, 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_bug_a_port_taken_before_the_daemon_binds_it_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    """In CI a port free_port() had found was taken by a parallel test before the daemon
    bound it: the daemon exited ("Address already in use") and the fixture waited a whole
    minute for its READY=1, then failed the test. It now takes another port."""
    ports = iter([taken_port, conftest.free_port()])
    monkeypatch.setattr(conftest, "free_port", lambda kind=socket.SOCK_STREAM: next(ports))
    server = conftest._start_mcached_procs(["-t", "2"])
    try:
        assert server.port != taken_port
        with socket.create_connection(server.address, timeout=10) as s:
            s.sendall(b"version\r\n")
            assert s.recv(100).startswith(b"VERSION ")
    finally:
        conftest._stop_mcached_procs(server)


def test_a_daemon_that_exits_at_start_is_reported_with_its_error(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    """Every try on a taken port, or any other error at start: the daemon's own message."""
    monkeypatch.setattr(conftest, "free_port", lambda kind=socket.SOCK_STREAM: taken_port)
    with pytest.raises(RuntimeError, match="Address already in use"):
        conftest._start_mcached_procs(["-t", "2"])
    with pytest.raises(RuntimeError, match="Number of threads must be greater than 0"):
        conftest._start_mcached_procs(["-t", "0"])
