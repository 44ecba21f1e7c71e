"""mcached/server/listener.py: the unix domain socket (-s, -a), bound as memcached binds it."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from collections.abc import Iterator

import pytest

from mcached.server.listener import bind_unix
from mcached.server.workers import sock_name

pytestmark = pytest.mark.unit


@pytest.fixture
def path() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="mcu", dir="/tmp")  # short: sun_path holds 107 bytes
    yield os.path.join(d, "s")
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


@pytest.mark.parametrize("mask", [0o700, 0o766, 0o777, 0o660])
def test_the_file_has_the_masks_permissions(path: str, mask: int) -> None:
    old = os.umask(0o022)
    try:
        with bind_unix(path, mask, 16) as s:
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == mask
            assert sock_name(s) == f"unix:{path}"
        assert os.umask(0o022) == 0o022  # the process's umask is given back
    finally:
        os.umask(old)


def test_a_socket_file_left_behind_is_replaced(path: str) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays, as after a crash
    with bind_unix(path, 0o700, 16) as s, socket.socket(socket.AF_UNIX) as client:
        client.connect(path)
        conn, _ = s.accept()
        conn.close()


def test_a_file_that_is_not_a_socket_is_kept(path: str) -> None:
    with open(path, "w") as f:
        f.write("data")
    with pytest.raises(OSError):
        bind_unix(path, 0o700, 16)
    with open(path) as f:
        assert f.read() == "data"


def test_tcp_and_udp_names() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind(("127.0.0.1", 0))
        assert sock_name(t) == f"tcp:127.0.0.1:{t.getsockname()[1]}"
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
        try:
            u.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        assert sock_name(u) == f"udp6:[::1]:{u.getsockname()[1]}"
