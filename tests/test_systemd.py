"""mcached/systemd.py with a patched environment: sd_notify datagrams to a socket of our own,
socket activation from fds we place, the watchdog interval. No systemd needed."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from mcached import systemd

pytestmark = pytest.mark.unit


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """The service manager's end of NOTIFY_SOCKET: a datagram socket bound to a path."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_notify_outside_systemd_is_a_no_op() -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert systemd.notify("READY=1") is False


def test_notify_sends_one_datagram(manager: socket.socket) -> None:
    with mock.patch.dict(os.environ, {"NOTIFY_SOCKET": manager.getsockname()}, clear=True):
        assert systemd.notify("READY=1\nSTATUS=listening on 127.0.0.1:11211") is True
        assert systemd.notify("STOPPING=1") is True
    assert manager.recv(4096) == b"READY=1\nSTATUS=listening on 127.0.0.1:11211"
    assert manager.recv(4096) == b"STOPPING=1"


def test_notify_to_an_abstract_socket() -> None:
    """``@name`` is the abstract namespace: a leading NUL byte, no file."""
    name = f"mcached-test-{os.getpid()}-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        with mock.patch.dict(os.environ, {"NOTIFY_SOCKET": "@" + name}, clear=True):
            assert systemd.notify("WATCHDOG=1") is True
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_notify_to_a_gone_socket_warns_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = str(tmp_path / "nobody-listens")
    with (
        mock.patch.object(systemd, "_notify_failed", False),
        mock.patch.dict(os.environ, {"NOTIFY_SOCKET": gone}, clear=True),
        caplog.at_level(logging.WARNING, "mcached.systemd"),
    ):
        assert systemd.notify("READY=1\nSTATUS=x") is False
        assert "sd_notify(READY=1) failed" in caplog.text
        caplog.clear()
        assert systemd.notify("WATCHDOG=1") is False
        assert caplog.text == ""  # said once, not at every watchdog ping


@pytest.mark.parametrize("kind", ["udp", "unix", "tcp not listening", "a file"])
def test_listen_fds_refuses_what_it_cannot_serve(kind: str, tmp_path: Path) -> None:
    """Only listening TCP sockets (as sd_is_socket checks): a UDP socket made a worker spin
    on accept, a unix one crashed the start, one not listening was served as refused."""
    if kind == "udp":
        thing: object = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        thing.bind(("127.0.0.1", 0))  # type: ignore[attr-defined]
    elif kind == "unix":
        thing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        thing.bind(str(tmp_path / "s"))  # type: ignore[attr-defined]
        thing.listen()  # type: ignore[attr-defined]
    elif kind == "tcp not listening":
        thing = socket.socket()
        thing.bind(("127.0.0.1", 0))  # type: ignore[attr-defined]
    else:
        thing = open(tmp_path / "f", "w")  # noqa: SIM115
    fd = max(200, thing.fileno() + 1)  # type: ignore[attr-defined]
    while _open(fd):
        fd += 1
    os.dup2(thing.fileno(), fd)  # type: ignore[attr-defined]
    thing.close()  # type: ignore[attr-defined]
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
    try:
        with (
            mock.patch.object(systemd, "SD_LISTEN_FDS_START", fd),
            mock.patch.dict(os.environ, env, clear=True),
            pytest.raises(systemd.ActivationError, match=f"descriptor {fd} is"),
        ):
            systemd.listen_fds()
    finally:
        os.close(fd)


def test_journal_lines_carry_their_priority_and_pid() -> None:
    fmt = __import__("mcached.daemon", fromlist=["JournalFormatter"]).JournalFormatter()
    record = logging.LogRecord("mcached", logging.ERROR, __file__, 1, "bad\nworse", None, None)
    assert fmt.format(record) == f"<3>ERROR [{os.getpid()}] bad\n<3>worse"


@pytest.fixture
def passed_fds() -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """Two listening sockets placed on two consecutive free fds, as systemd places its
    sockets from fd 3 on. Yields the first fd and their addresses. The sockets are made
    first and the fds chosen above theirs: a socket made after the choice could be given
    the chosen fd itself, as the lowest free one (with 200 fds open, as a free-threaded
    build's in-process daemons left until collected), and closing it closed the fd."""
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    first = max(200, max(s.fileno() for s in servers) + 1)
    while any(_open(fd) for fd in (first, first + 1)):
        first += 2
    addresses = []
    for s, fd in zip(servers, (first, first + 1), strict=True):
        addresses.append(s.getsockname())
        os.dup2(s.fileno(), fd)
        s.close()
    yield first, addresses
    for fd in (first, first + 1):
        if _open(fd):
            os.close(fd)


def _open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_listen_fds_takes_the_sockets_passed_to_this_process(
    passed_fds: tuple[int, list[tuple[str, int]]],
) -> None:
    first, addresses = passed_fds
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    with (
        mock.patch.object(systemd, "SD_LISTEN_FDS_START", first),
        mock.patch.dict(os.environ, env, clear=True),
    ):
        socks = systemd.listen_fds()
        # consumed: a child process (-d, a re-exec) must not take them for its own
        assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)
    try:
        assert [s.fileno() for s in socks] == [first, first + 1]
        assert [s.getsockname() for s in socks] == addresses
        assert not any(os.get_inheritable(s.fileno()) for s in socks)
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"LISTEN_PID": "1", "LISTEN_FDS": "2"},  # passed to another process (our parent)
        {"LISTEN_FDS": "2"},
        {"LISTEN_PID": "<pid>", "LISTEN_FDS": "0"},
        {"LISTEN_PID": "<pid>", "LISTEN_FDS": "two"},
        {"LISTEN_PID": "x", "LISTEN_FDS": "2"},
    ],
)
def test_listen_fds_takes_nothing_not_meant_for_us(
    env: dict[str, str], passed_fds: tuple[int, list[tuple[str, int]]]
) -> None:
    first, _ = passed_fds
    env = {k: v.replace("<pid>", str(os.getpid())) for k, v in env.items()}
    with (
        mock.patch.object(systemd, "SD_LISTEN_FDS_START", first),
        mock.patch.dict(os.environ, env, clear=True),
    ):
        assert systemd.listen_fds() == []
    assert _open(first) and _open(first + 1)  # left alone


def test_listen_fds_can_leave_the_environment() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    with mock.patch.dict(os.environ, env, clear=True):
        assert systemd.listen_fds(unset_environment=False) == []
        assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_PID"] == "1"


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "2000000"}, 1.0),  # pings at half the timeout
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "<pid>"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "10"}, 0.05),  # a floor, so the main loop never spins
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),  # systemd's "no watchdog" (pinged 20 times a second)
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    env = {k: v.replace("<pid>", str(os.getpid())) for k, v in env.items()}
    with mock.patch.dict(os.environ, env, clear=True):
        assert systemd.watchdog_interval() == interval


def test_the_journal_format_only_when_stderr_is_the_journal_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """JOURNAL_STREAM names the journal's stream (device:inode); a unit's process whose
    stderr was sent elsewhere (``2>file``) keeps the variable, and wrote journal lines
    (``<6>INFO [pid] ...``, no time) into its file."""
    from mcached.daemon import stderr_is_journal

    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
    assert not stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not stderr_is_journal()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not stderr_is_journal()
