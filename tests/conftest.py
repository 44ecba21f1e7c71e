"""Shared fixtures: servers on free loopback ports.

`server` is parametrized over ``mcached`` (our daemon, started in-process on port 0, its
workers threads) and ``memcached`` (Debian's binary, started as a subprocess), so every
raw-wire expectation is checked against the reference as well as against us.
`server_factory` starts either kind, or ``mcached-procs`` (the ``mcached`` command in a
subprocess: a supervisor and worker processes, as it runs in production), with extra
memcached-style flags (``-C``, ``-F``, ``-M -m 2``...).

``MCACHED_STORAGE_CHECKS`` is on for the whole run (see below).

``MCACHED_NO_REFERENCE=1`` skips the reference runs on a machine without memcached; CI
installs it (``make test`` runs ``scripts/install-system-deps.sh``), so there they always run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# The storage's checks of its free lists and chains (mcached/storage/checks.py) in every
# cache the tests make, in this process and in the daemons they start: a chunk freed twice
# or a chain through a chunk not its own fails where it happens (read as the storage is
# imported: before any test module imports it)
os.environ.setdefault("MCACHED_STORAGE_CHECKS", "1")

HOST = "127.0.0.1"
# a downstream project's tests, run as their own pytest project by tests/test_pytest_plugin.py
collect_ignore = ["example_app"]
KINDS = ("mcached", "memcached")


@dataclass
class Server:
    kind: str
    host: str
    port: int
    udp_port: int = 0
    handle: Any = field(default=None, repr=False)
    path: str = ""  # -s: the unix domain socket it serves instead of TCP

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def unix_path(args: list[str]) -> str:
    """The ``-s`` path among memcached-style flags, or ""."""
    return args[args.index("-s") + 1] if "-s" in args else ""


def wait_for_unix(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(path)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def wait_ready(port: int, timeout: float = 60.0) -> None:
    """Until the server on `port` answers a plain-text ``version`` (whatever it answers:
    with -Y it refuses it). The port alone is not enough: worker processes are forked after
    it is bound, and until one runs, a connection only waits in the backlog."""
    deadline = time.monotonic() + timeout
    wait_for_port(port, timeout)
    while True:
        try:
            left = max(0.1, deadline - time.monotonic())
            with socket.create_connection((HOST, port), timeout=left) as s:
                s.sendall(b"version\r\n")
                if s.recv(100):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer on port {port}")
        time.sleep(0.05)


def _start_memcached(args: list[str]) -> Server:
    binary = shutil.which("memcached")
    if binary is None:
        if os.environ.get("MCACHED_NO_REFERENCE"):
            pytest.skip("reference memcached not installed (MCACHED_NO_REFERENCE set)")
        raise RuntimeError("memcached is not installed: run `make test` (it installs it)")
    port = free_port()
    cmd = [binary, "-l", HOST, "-p", str(port)]
    if "-U" not in args:
        cmd += ["-U", "0"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    cmd += args
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path = unix_path(args)
    try:
        if path:  # -s: no TCP port, the socket file
            wait_for_unix(path)
        else:
            wait_for_port(port)
    except OSError:
        proc.kill()
        _, err = proc.communicate()
        raise RuntimeError(f"memcached {args} did not start: {err.decode()}") from None
    udp = 0
    if "-U" in args:
        udp = int(args[args.index("-U") + 1])
    return Server("memcached", HOST, port, udp, proc, path)


def _stop_memcached(server: Server) -> None:
    proc: subprocess.Popen[bytes] = server.handle
    if proc.poll() is None:
        # memcached acts on SIGTERM only at its next once-a-second clock tick; it keeps
        # nothing on disk, so SIGKILL loses nothing and saves most of a second per test.
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def _start_mcached(args: list[str]) -> Server:
    from mcached.cli import parse_settings
    from mcached.daemon import Daemon

    argv = ["-l", HOST, "-p", "0"] + list(args)
    settings = parse_settings(argv)
    daemon = Daemon(settings)
    daemon.start()
    return Server("mcached", HOST, daemon.port, daemon.udp_port, daemon, unix_path(list(args)))


def _stop_mcached(server: Server) -> None:
    # close: its descriptors (19 at the default -t) go now, not when the garbage collector
    # finds the daemon's cycles: a test process met the select() limit of 1,024 waiting
    server.handle.stop()
    server.handle.close()


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _where_stuck(proc: subprocess.Popen[bytes]) -> str:
    """What a daemon that did not start was doing: each of its processes' state and kernel
    wait channel, then SIGABRT to each, so that Python's fault handler writes every thread's
    stack to the stderr they share (read once they are killed)."""
    import signal

    import psutil

    try:
        family = [psutil.Process(proc.pid)]
        family += family[0].children(recursive=True)
    except psutil.Error as exc:
        return f"(its processes are gone: {exc})"
    lines = []
    for p in family:
        try:
            wchan = open(f"/proc/{p.pid}/wchan").read()  # noqa: SIM115 (one read)
            lines.append(f"pid {p.pid} {p.status()} wchan {wchan or '-'}: {' '.join(p.cmdline())}")
            os.kill(p.pid, signal.SIGABRT)
        except (OSError, psutil.Error) as exc:
            lines.append(f"pid {p.pid}: {exc}")
    time.sleep(1)  # the handlers write their stacks
    return "\n".join(lines)


START_TRIES = 3  # ports tried: one free_port() found can be taken before the daemon binds it
START_TIMEOUT = 60.0  # seconds to READY=1: well under one, unless the machine is loaded


def _start_mcached_procs(args: list[str], new_session: bool = False) -> Server:
    """``python -m mcached`` (worker processes) on a free port, answering once it returns;
    with `new_session`, in a process group of its own (its pid is the group's id)."""
    import sys
    import tempfile

    # readiness as systemd hears it: READY=1 once every worker process runs its loop
    notify_dir = tempfile.mkdtemp(prefix="mcached-notify-")
    notify_path = os.path.join(notify_dir, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.1)
    # PYTHONFAULTHANDLER: a daemon that does not start is asked where it is (`_where_stuck`)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify_path, PYTHONFAULTHANDLER="1")
    try:
        for attempt in range(START_TRIES):
            port = free_port()
            cmd = [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), *args]
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=new_session,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    if b"READY=1" in notify.recv(4096):
                        return Server("mcached-procs", HOST, port, 0, proc, unix_path(args))
                except TimeoutError:
                    pass
                if proc.poll() is not None:  # it exited: never wait the minute out for it
                    err = proc.communicate()[1].decode()
                    if "Address already in use" in err and attempt + 1 < START_TRIES:
                        break  # another process took the port first: another one
                    raise RuntimeError(f"mcached {args} exited with {proc.returncode}: {err}")
                if time.monotonic() > deadline:
                    where = _where_stuck(proc)
                    proc.kill()
                    _, err = proc.communicate()
                    raise RuntimeError(f"mcached {args} did not start: {where}\n{err.decode()}")
        raise AssertionError("unreachable: the last try raises")
    finally:
        notify.close()
        os.unlink(notify_path)
        os.rmdir(notify_dir)


def _stop_mcached_procs(server: Server) -> None:
    proc: subprocess.Popen[bytes] = server.handle
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


#: the ``mcached-procs`` daemons a running test started, for `pytest_runtest_makereport`
_RUNNING_PROCS: list[Server] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report shows what each daemon it ran as a command wrote to stderr
    so far (its log) and whether it is still running: a daemon that died under a test
    otherwise leaves only "connection refused" behind."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when != "call":
        return
    for srv in _RUNNING_PROCS:
        proc: subprocess.Popen[bytes] = srv.handle
        if proc.stderr is None or proc.stderr.closed:
            continue
        os.set_blocking(proc.stderr.fileno(), False)
        try:
            log = proc.stderr.read() or b""
        except OSError:
            log = b""
        state = "running" if proc.poll() is None else f"exited with {proc.returncode}"
        text = log.decode(errors="replace")[-8000:]
        report.sections.append((f"mcached on port {srv.port} ({state}): stderr", text))


def _servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(kind: str, *args: str) -> Server:
        starter = {
            "mcached": _start_mcached,
            "mcached-procs": _start_mcached_procs,
            "memcached": _start_memcached,
        }[kind]
        srv = starter(list(args))
        started.append(srv)
        if kind == "mcached-procs":
            _RUNNING_PROCS.append(srv)
        return srv

    yield start
    for srv in reversed(started):
        if srv in _RUNNING_PROCS:
            _RUNNING_PROCS.remove(srv)
        if srv.kind == "mcached":
            _stop_mcached(srv)
        elif srv.kind == "mcached-procs":
            _stop_mcached_procs(srv)
        else:
            _stop_memcached(srv)


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    """``server_factory(kind, *flags)`` starts a server; all are stopped after the test."""
    yield from _servers()


@pytest.fixture(scope="module")
def module_server_factory() -> Iterator[Callable[..., Server]]:
    """`server_factory` for servers a whole module shares (stopped after its last test): for
    tables of cases that leave nothing behind but items (a ``flush_all`` clears those)."""
    yield from _servers()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, server_factory: Callable[..., Server]) -> Server:
    """A fresh server with default flags, once as mcached and once as memcached."""
    return server_factory(kind)


@pytest.fixture(scope="module", params=KINDS)
def module_server(
    request: pytest.FixtureRequest, module_server_factory: Callable[..., Server]
) -> Server:
    """One server of each kind for a whole module (see `emptied_server`)."""
    return module_server_factory(str(request.param))


@pytest.fixture
def emptied_server(module_server: Server) -> Server:
    """`server` for tests that leave nothing behind but items: the module's server of this
    kind, emptied with ``flush_all`` first (a fresh daemon per test costs ~0.2 s)."""
    with socket.create_connection(module_server.address, timeout=10) as s:
        s.sendall(b"flush_all\r\n")
        assert s.recv(16) == b"OK\r\n"
    return module_server


@pytest.fixture
def mcached(server_factory: Callable[..., Server]) -> Server:
    """A fresh mcached with default flags (for tests of mcached-only behaviour)."""
    return server_factory("mcached")
