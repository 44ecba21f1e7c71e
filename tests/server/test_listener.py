"""mcached/server/listener.py: the unix domain socket (-s, -a), bound as memcached binds it;
the claims that keep two daemons off one address."""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from mcached.server.listener import bind_sockets, bind_unix, claim_address, port_gate
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


def test_bug_binding_from_several_threads_at_once_left_the_process_umask_changed() -> None:
    # The mode was set by the umask around the bind: the umask is the process's, and two
    # threads binding at once (servers started in one program) gave back each other's.
    d = tempfile.mkdtemp(prefix="mcu", dir="/tmp")
    old = os.umask(0o022)
    try:

        def bind_many(n: int) -> None:
            for _ in range(200):
                bind_unix(os.path.join(d, f"s{n}"), 0o700, 16).close()

        threads = [threading.Thread(target=bind_many, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(old)
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_copies_of_a_claimed_address_are_not_bound() -> None:
    """Another daemon between its probe and its bind holds the claim: the copies are not
    bound, though the port itself is free, and the error is the port's own."""
    port = _free_port()
    other = claim_address(socket.SOCK_STREAM, ("127.0.0.1", port))
    try:
        with pytest.raises(OSError) as info:
            bind_sockets(("127.0.0.1",), port, socket.SOCK_STREAM, 16, copies=2)
        assert info.value.errno == errno.EADDRINUSE
        with socket.socket() as probe:  # nothing was left bound
            probe.bind(("127.0.0.1", port))
    finally:
        other.close()


def test_bug_a_daemon_bound_its_copies_while_another_was_between_probe_and_bind() -> None:
    """Two daemons starting at the same moment on a wildcard and a specific address with
    the same port (``0.0.0.0`` and ``127.0.0.1``) hold different claims, so both probed the
    port free and both bound their ``SO_REUSEPORT`` copies: the specific one then took
    every connection made to it. Now the port's gate makes the second wait until the first
    one's copies are bound, and its probe then fails. The test plays the first daemon on
    127.0.0.1 itself (tests stay on loopback): it holds the gate but no claim, as a daemon
    on the wildcard would hold none of 127.0.0.1's."""
    port = _free_port()
    gate = port_gate(socket.SOCK_STREAM, port)  # the first daemon: probed, about to bind
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            outcome["groups"] = bind_sockets(("127.0.0.1",), port, socket.SOCK_STREAM, 16, copies=2)
        except OSError as exc:
            outcome["error"] = exc

    t = threading.Thread(target=second)
    t.start()
    first: list[socket.socket] = []
    try:
        time.sleep(0.3)
        assert outcome == {}  # waiting at the gate, nothing bound
        for _ in range(2):  # the first daemon's copies
            s = socket.socket()
            first.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
            s.listen(16)
        gate.close()
        t.join(5)
        error = outcome.get("error")
        assert isinstance(error, OSError) and error.errno == errno.EADDRINUSE, outcome
    finally:
        gate.close()
        t.join(5)
        for g in outcome.get("groups", []):  # type: ignore[attr-defined]
            for s in g:
                s.close()
        for s in first:
            s.close()


def test_the_ports_gate_is_let_go_once_the_copies_are_bound_and_waited_for_briefly() -> None:
    claims: list[socket.socket] = []
    (group,) = bind_sockets(("127.0.0.1",), 0, socket.SOCK_STREAM, 16, copies=2, claims=claims)
    port = group[0].getsockname()[1]
    gate = port_gate(socket.SOCK_STREAM, port, wait=0)  # free again: not held with the copies
    try:
        began = time.monotonic()
        with pytest.raises(OSError) as info:
            port_gate(socket.SOCK_STREAM, port, wait=0.2)
        assert info.value.errno == errno.EADDRINUSE
        assert time.monotonic() - began >= 0.2  # it waited before giving up
        port_gate(socket.SOCK_DGRAM, port, wait=0).close()  # UDP's port is another gate
    finally:
        gate.close()
        for s in (*group, *claims):
            s.close()


def test_the_claim_is_held_with_the_copies_and_let_go_with_them() -> None:
    """(A datagram claim on the same port number is another address. It may be taken all
    the same, by a daemon of a test running beside this one whose UDP port has that number:
    a loaded CI run met it once. Then the test goes again on another port, up to 5 times.)"""
    for attempt in range(5):
        claims: list[socket.socket] = []
        groups = bind_sockets(("127.0.0.1",), 0, socket.SOCK_STREAM, 16, copies=2, claims=claims)
        (group,) = groups
        port = group[0].getsockname()[1]
        assert len(group) == 2 and len(claims) == 1
        with pytest.raises(OSError) as info:
            claim_address(socket.SOCK_STREAM, ("127.0.0.1", port))
        assert info.value.errno == errno.EADDRINUSE
        try:
            claim_address(socket.SOCK_DGRAM, ("127.0.0.1", port)).close()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
            continue  # another process's, by chance (see above)
        finally:
            for s in (*group, *claims):
                s.close()
        claim_address(socket.SOCK_STREAM, ("127.0.0.1", port)).close()
        return


def test_one_copy_takes_no_claim() -> None:
    """A lone socket (no SO_REUSEPORT) is kept exclusive by the kernel itself."""
    claims: list[socket.socket] = []
    (group,) = bind_sockets(("127.0.0.1",), 0, socket.SOCK_STREAM, 16, copies=1, claims=claims)
    assert claims == []
    group[0].close()


def test_bug_a_negative_backlog_was_none_at_all() -> None:
    """A hunt: ``-b -1`` made every listener's backlog 0 (Python's listen() turns a
    negative one into 0), where memcached's listen(-1) is the kernel's largest
    (net.core.somaxconn, as a huge unsigned value): a burst of connections then waited for
    SYN retries. Twenty connections to a listener nobody accepts from all complete now; with
    a backlog of 0 the second or third never does."""
    [[s]] = bind_sockets(("127.0.0.1",), 0, socket.SOCK_STREAM, -1)
    port = s.getsockname()[1]
    clients = []
    try:
        for _ in range(20):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    finally:
        for c in clients:
            c.close()
        s.close()
