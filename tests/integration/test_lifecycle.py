"""The daemon as a real process: signals, systemd notify and socket activation, -d/-P, the
config file, bad flags. Each test starts ``python -m mcached`` on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from mcached.daemon import LIVENESS_FLOOR
from tests.conftest import HOST, Server, free_port, wait_for_port, wait_ready
from tests.wire import Conn, readable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# seconds a daemon may take to start answering: an interpreter's start-up is well under a
# second on a quiet machine, but several suites at once on two cores stretch it many times
STARTUP = 60.0


def spawn(
    *args: str, env: dict[str, str] | None = None, port: int | None = None, **kw: object
) -> tuple[subprocess.Popen[bytes], int]:
    port = port or free_port()
    full_env = dict(os.environ)
    full_env.pop("NOTIFY_SOCKET", None)
    full_env.update(env or {})
    extra = (env or {}).get("PYTHONPATH")  # a directory of start-up code (spawn_holding)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), extra] if extra else [str(ROOT)])
    cmd = [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), *args]
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


@pytest.fixture
def tmp() -> Iterator[Path]:
    d = tempfile.mkdtemp(prefix="mcached-test-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_mid_pipeline_loses_no_reply(signo: int) -> None:
    proc, port = spawn()
    try:
        wait_ready(port)
        with Conn((HOST, port)) as conn:
            assert conn.request(b"version\r\n").startswith(b"VERSION ")  # accepted
            n = 1500
            batch = b"".join(
                b"set key%d 0 0 6\r\nval%03d\r\nget key%d\r\n" % (i, i % 1000, i) for i in range(n)
            )
            assert len(batch) < 100_000  # all of it fits in the kernel's receive buffer
            conn.send(batch)
            proc.send_signal(signo)
            data = b""
            conn.sock.settimeout(15)
            while True:
                chunk = conn.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        expected = b"".join(
            b"STORED\r\nVALUE key%d 0 6\r\nval%03d\r\nEND\r\n" % (i, i % 1000) for i in range(n)
        )
        assert data == expected
        assert proc.wait(15) == 0
    finally:
        stop(proc)


BIG = 512 * 1024  # one value; a reader asks for it COPIES times and reads none of it
COPIES = 40  # 20 MB of replies: far more than the kernel buffers of one connection hold


def unread_replies(port: int) -> tuple[socket.socket, int]:
    """A connection that asked for ~20 MB of replies and has read none of them: most of them
    wait in the server, unsent. Returns it and the length of the whole reply."""
    with Conn((HOST, port)) as conn:
        assert conn.request(b"set big 0 0 %d\r\n%b\r\n" % (BIG, b"v" * BIG)) == b"STORED\r\n"
    reader = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    reader.connect((HOST, port))
    reader.sendall(b"get" + b" big" * COPIES + b"\r\n")
    # Readable: the server has begun sending, so it has made every reply (one command's
    # replies are queued together).
    assert readable([reader], 10), "no reply began"
    return reader, COPIES * (len(b"VALUE big 0 %d\r\n" % BIG) + BIG + 2) + len(b"END\r\n")


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything until the server closes (EOF or reset)."""
    sock.settimeout(10)
    parts = []
    try:
        while chunk := sock.recv(1 << 20):
            parts.append(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    return b"".join(parts)


def stops_accepting(port: int, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_bug_a_client_that_keeps_pipelining_held_the_stop_past_its_deadline() -> None:
    """At SIGTERM a stopping connection read whatever the kernel held, again and again: a
    client that never stops sending kept it draining until the stop thread gave up, and the
    reset lost replies it was owed. Now what arrives after the signal is not read, and the
    drain stops at its deadline: the daemon exits within --shutdown-timeout, with the replies
    in order (the last one possibly cut by the close at the deadline)."""
    proc, port = spawn("--shutdown-timeout", "3")
    stop_sending = threading.Event()
    try:
        wait_ready(port)
        conns = [socket.create_connection((HOST, port), timeout=10) for _ in range(2)]
        one = b"set p 0 0 2\r\nok\r\nget p\r\n"
        answer = b"STORED\r\nVALUE p 0 2\r\nok\r\nEND\r\n"

        def pipeline(sock: socket.socket) -> None:
            try:
                while not stop_sending.is_set():
                    sock.sendall(one * 200)
            except OSError:
                pass  # the daemon closed the connection

        senders = [threading.Thread(target=pipeline, args=(c,)) for c in conns]
        for t in senders:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        replies = []
        for c in conns:
            data = b""
            c.settimeout(15)
            try:
                while True:
                    chunk = c.recv(1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            replies.append(data)
        assert proc.wait(15) == 0
        # within the deadline (plus the supervisor's grace, on a loaded machine); whether a
        # worker had to be killed the log says, below
        assert time.monotonic() - t0 < 3 + 2 + 1.5
        assert proc.stderr is not None
        assert b"killed" not in proc.stderr.read()
        for data in replies:
            # replies in order; at the deadline the last may be cut short by the close
            whole = len(data) // len(answer)
            assert whole > 0 and data[: whole * len(answer)] == answer * whole
            assert answer.startswith(data[whole * len(answer) :])
    finally:
        stop_sending.set()
        stop(proc)


def _conn_states(port: int) -> list[str]:
    with Conn((HOST, port)) as admin:
        admin.send(b"stats conns\r\n")
        reply = admin.read_until(b"END\r\n")
    return re.findall(r"STAT \d+:state (\S+)", reply.decode())


def ask_a_big_value(port: int, reader: socket.socket) -> bytes:
    """Once the daemon on `port` is up: a 4 MB value stored, and asked for by `reader`, a
    slow reader (a 4 KB window): most of the reply waits in the daemon. The value."""
    wait_ready(port)
    value = b"v" * (4 << 20)
    with Conn((HOST, port), timeout=30) as setter:
        setter.send(b"set big 0 0 %d\r\n%b\r\n" % (len(value), value))
        assert setter.read_until(b"\r\n") == b"STORED\r\n"
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect((HOST, port))
    reader.sendall(b"get big\r\n")
    return value


def test_bug_a_stopping_worker_spun_while_a_client_it_owed_replies_was_readable() -> None:
    """At SIGTERM a connection with replies unsent but under the output cap (so still
    reading) stayed in its worker's poll for reads, which the drain no longer does: a
    client that sent on made every poll return at once, and the worker spun at a whole CPU
    until --shutdown-timeout (1.4 s of CPU in 1.5 s). Now a stopping connection waits for
    writes only, and what it owed is sent as its client reads."""
    proc, port = spawn("-t", "1", "-I", "8m", "-m", "64", "--shutdown-timeout", "6")
    reader = socket.socket()
    try:
        value = ask_a_big_value(port, reader)
        # read a little at a time until the worker takes reads again (what it has not sent
        # yet is under its cap): replies owed, the connection reading
        got = b""
        deadline = time.monotonic() + 30
        while "conn_mwrite" in _conn_states(port):
            assert time.monotonic() < deadline
            got += reader.recv(16384)
        whole = len(b"VALUE big 0 %d\r\n" % len(value)) + len(value) + len(b"\r\nEND\r\n")
        assert len(got) < whole - 512 * 1024  # owed still: in the kernel's buffers, and unsent
        # the worker process (the maintainer is forked last), or the daemon itself where its
        # workers are threads (a free-threaded build)
        children = psutil.Process(proc.pid).children()
        worker = min(children, key=lambda p: p.pid) if children else psutil.Process(proc.pid)

        def cpu() -> float:
            return float(sum(worker.cpu_times()[:2]))

        before = len(got)
        proc.send_signal(signal.SIGTERM)
        cpu0 = cpu()
        reader.setblocking(False)
        end = time.monotonic() + 2
        while time.monotonic() < end:  # the client sends on, and reads nothing
            with contextlib.suppress(BlockingIOError):
                reader.send(b"v")
            time.sleep(0.01)
        spent = cpu() - cpu0
        assert spent < 0.5, f"the stopping worker used {spent:.2f} s of CPU in 2 s"
        reader.setblocking(True)
        reader.settimeout(30)
        with contextlib.suppress(ConnectionResetError):
            # the bytes sent after the signal are never read: closed with them unread, the
            # connection is reset, and the kernel may drop the reply's tail still in flight
            while chunk := reader.recv(1 << 20):
                got += chunk
        assert len(got) > before  # sent on after the signal, as the client read
        assert (b"VALUE big 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)).startswith(got)
        assert proc.wait(15) == 0
    finally:
        reader.close()
        stop(proc)


def test_bug_a_sighup_during_the_exit_ended_the_daemon_by_that_signal() -> None:
    """SIGHUPs (reloads) keep coming while the daemon stops on SIGTERM. As the interpreter
    exits it sets its signals' handlers back to the default: a SIGHUP then ended the
    process by that signal (status -1) instead of its exit status 0, every time under a
    storm of them (found by a hostile-client hunt). Once stopped it ignores them."""
    for _ in range(3):
        proc, port = spawn("-t", "2")
        try:
            wait_ready(port)
            fd = os.pidfd_open(proc.pid)  # never signals a pid reused once it is reaped
            done = threading.Event()

            def storm(fd: int, done: threading.Event) -> None:
                while not done.is_set():
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGHUP)
                    except ProcessLookupError:
                        return  # exited
                    time.sleep(0.002)

            t = threading.Thread(target=storm, args=(fd, done))
            t.start()
            try:
                time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
            finally:
                done.set()
                t.join()
                os.close(fd)
            assert code == 0
        finally:
            stop(proc)


def test_shutdown_stops_at_once_dropping_unsent_replies() -> None:
    """``shutdown`` (memcached's: it raises SIGINT, which exits) does not wait for replies
    a client has not read, however long --shutdown-timeout is."""
    proc, port = spawn("-A", "--shutdown-timeout", "60")
    try:
        wait_ready(port)
        reader, whole = unread_replies(port)
        with Conn((HOST, port)) as admin:
            admin.send(b"shutdown\r\n")
            assert admin.closed()
        assert proc.wait(10) == 0  # at once, not after 60 s
        assert len(read_to_the_end(reader)) < whole  # the unsent replies were dropped
        assert proc.stderr is not None
        assert b"shutdown command: stopping at once" in proc.stderr.read()
    finally:
        stop(proc)


def test_shutdown_graceful_sends_every_reply_first() -> None:
    """``shutdown graceful`` (as SIGUSR1) stops accepting, then answers and sends everything
    already asked for (within --shutdown-timeout) before it exits."""
    proc, port = spawn("-A", "--shutdown-timeout", "60")
    try:
        wait_ready(port)
        reader, whole = unread_replies(port)
        with Conn((HOST, port)) as admin:
            admin.send(b"shutdown graceful\r\n")
            assert admin.closed()
        assert stops_accepting(port)
        time.sleep(0.2)
        assert proc.poll() is None  # stopping, but still owes the reader its replies
        reply = read_to_the_end(reader)
        assert len(reply) == whole and reply.endswith(b"\r\nEND\r\n")
        assert proc.wait(10) == 0
        assert proc.stderr is not None
        assert b"shutdown command: stopping gracefully" in proc.stderr.read()
    finally:
        stop(proc)


def _read_all(sock: socket.socket, timeout: float = 30.0) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while data := sock.recv(1 << 20):
        out += data
    return out


@pytest.mark.parametrize("how", ["SIGTERM", "SIGUSR1"])
def test_bug_a_graceful_stop_ran_the_next_command_in_the_middle_of_a_streamed_reply(
    how: str,
) -> None:
    """Regression (a hunt at -t 4): a stop that came while a long multiget's reply was
    being streamed (its client reading slowly) ran the command pipelined after it at once:
    its reply landed in the middle of the stream's values, and a later value of the get was
    the one a pipelined set had stored meanwhile. The stream is sent whole first now, then
    what follows it; and a connection closing after a ``quit`` runs nothing behind it (it
    ran those commands too)."""
    proc, port = spawn("-t", "4", "-R", "200")
    try:
        wait_ready(port)
        values = {b"big%d" % i: (b"%d" % i) * 500_000 for i in range(10)}
        with Conn((HOST, port)) as c:
            for key, value in values.items():
                c.send(b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value))
                assert c.read_until(b"\r\n") == b"STORED\r\n"
        streamed = socket.socket()
        streamed.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        streamed.connect((HOST, port))
        streamed.sendall(b"get " + b" ".join(values) + b"\r\nset big9 0 0 3\r\nNEW\r\n")
        quitter = socket.socket()
        quitter.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        quitter.connect((HOST, port))
        quitter.sendall(b"get big1\r\n" * 20 + b"quit\r\nset after 0 0 1\r\nX\r\n")
        time.sleep(0.5)  # both replies are being streamed, both clients not reading
        proc.send_signal(getattr(signal, how))
        time.sleep(0.3)
        whole = b"".join(b"VALUE %b 0 %d\r\n%b\r\n" % (k, len(v), v) for k, v in values.items())
        assert _read_all(streamed) == whole + b"END\r\nSTORED\r\n"
        one = b"VALUE big1 0 500000\r\n" + values[b"big1"] + b"\r\nEND\r\n"
        assert _read_all(quitter) == one * 20
        streamed.close()
        quitter.close()
        assert proc.wait(30) == 0
    finally:
        stop(proc)


@pytest.mark.parametrize("how", ["SIGTERM", "shutdown"])
def test_bug_a_stopped_daemon_left_its_board_sockets_and_lock_file_open(how: str) -> None:
    """Python's development mode reports every file or socket still open when the
    interpreter exits (``ResourceWarning``). The supervisor used to exit with the board's
    wake-up socket pairs and its lock file open, one warning each; now it closes them, and
    the arena's mappings, once every worker is reaped, however it was stopped."""
    proc, port = spawn("-A", "-t", "2", env={"PYTHONDEVMODE": "1"})
    try:
        wait_ready(port)
        with Conn((HOST, port)) as c:
            c.send(b"set k 0 0 1\r\nv\r\nget k k\r\n")
            assert (
                c.read_until(b"END\r\n")
                == b"STORED\r\nVALUE k 0 1\r\nv\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
            )
            if how == "shutdown":
                c.send(b"shutdown\r\n")
                assert c.closed()
            else:
                proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert b"stopped" in err  # the log reached stderr, and the exit was the daemon's own
        assert b"ResourceWarning" not in err, err.decode(errors="replace")
    finally:
        stop(proc)


# Start-up code for the daemon's processes: once the test names a process in the trigger
# file, that process's main thread, back from a `Condition.wait` and so holding the
# condition's lock again, sends itself SIGTERM, whose handler then runs inside that window.
SIGNAL_IN_WAIT = """
import os, signal, threading
_trigger = os.environ["MCACHED_TEST_TRIGGER"]
_wait = threading.Condition.wait
def wait(self, timeout=None):
    got = _wait(self, timeout)
    if threading.current_thread() is threading.main_thread():
        try:
            with open(_trigger) as f:
                named = int(f.read() or 0) == os.getpid()
        except OSError:
            named = False
        if named:
            os.remove(_trigger)
            signal.raise_signal(signal.SIGTERM)  # its handler runs here, the lock held
    return got
threading.Condition.wait = wait
"""


def test_bug_a_signal_during_the_maintainers_wait_hung_it_for_good(tmp: Path) -> None:
    """The maintainer process waited on a threading.Event and its SIGTERM handler set it.
    A handler runs on the main thread between two bytecodes, and one that came while
    Event.wait held the event's lock waited for that lock for good: a maintainer outlived
    its daemon after a CI run. Here the signal comes at exactly that moment whenever the
    maintainer's main thread waits on a condition (the start-up code above); if it no
    longer does, the test sends the signal itself. Either way the maintainer must be gone
    long before --shutdown-timeout, when its supervisor would kill it."""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # the maintainer's work runs in threads
        pytest.skip("a free-threaded build: the daemon starts no maintainer process")
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SIGNAL_IN_WAIT)
    trigger = tmp / "trigger"
    env = {"PYTHONPATH": str(tmp / "site"), "MCACHED_TEST_TRIGGER": str(trigger)}
    proc, port = spawn("-t", "1", "--shutdown-timeout", "60", env=env)
    children: list[psutil.Process] = []
    try:
        wait_ready(port)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2  # a worker and the maintainer, which runs the threads
        time.sleep(1.0)  # its services started, its loop waiting
        maintainer = max(children, key=lambda c: c.num_threads())
        (tmp / "named").write_text(str(maintainer.pid))
        os.replace(tmp / "named", trigger)  # whole, never read half-written
        time.sleep(1.0)  # the old loop waited 0.2 s at a time
        if trigger.exists():  # its main thread no longer waits on a condition
            maintainer.send_signal(signal.SIGTERM)
        gone, alive = psutil.wait_procs([maintainer], timeout=15)
        assert not alive, "the maintainer hung in its stop handler"
        assert proc.wait(30) == 0  # the signal stopped the whole daemon, as a stop does
    finally:
        stop(proc)
        for child in children:  # a hung maintainer outlives its supervisor's SIGKILL
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def test_notify_socket_ready_after_accepting_then_reload_and_stopping(tmp: Path) -> None:
    path = str(tmp / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(15)
    proc, port = spawn(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        messages: list[str] = []

        def next_msg() -> str:
            msg = sink.recv(4096).decode()
            messages.append(msg)
            return msg

        first = next_msg()
        assert "READY=1" in first.split("\n"), first
        # READY=1 promises the port accepts: connect at once, no retry
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"version\r\n")
            assert s.recv(100).startswith(b"VERSION ")
        assert any(line.startswith("STATUS=listening on") for line in first.split("\n"))
        assert f"MAINPID={proc.pid}" in first.split("\n")
        # watchdog pings at half of WATCHDOG_USEC
        deadline = time.monotonic() + 5
        while "WATCHDOG=1" not in messages[-1]:
            assert time.monotonic() < deadline
            next_msg()
        proc.send_signal(signal.SIGHUP)
        while "RELOADING=1" not in messages[-1]:
            next_msg()
        # with the time (CLOCK_MONOTONIC), as a Type=notify-reload unit waits for
        usec = [x for x in messages[-1].split("\n") if x.startswith("MONOTONIC_USEC=")]
        assert len(usec) == 1
        assert 0 < time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - int(usec[0][15:]) < 10**7
        while "READY=1" not in messages[-1].split("\n"):
            next_msg()
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1]:
            next_msg()
        assert proc.wait(15) == 0
    finally:
        sink.close()
        stop(proc)


def test_the_watchdog_goes_unfed_while_a_worker_process_is_stuck(tmp: Path) -> None:
    """The supervisor pings WATCHDOG=1 only while every worker process runs its loop (each
    publishes its counters every second): with one stuck (SIGSTOP stands in for a deadlock)
    the pings stop after LIVENESS_FLOOR seconds, so systemd restarts the daemon, and they
    come back once it runs again. It pinged whatever its workers did."""
    path = str(tmp / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    proc, port = spawn("-t", "2", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    stuck: list[int] = []
    try:
        sink.settimeout(15)
        while "READY=1" not in sink.recv(4096).decode().split("\n"):
            pass
        workers = [p.pid for p in psutil.Process(proc.pid).children()]
        if not workers:  # a free-threaded build: worker threads, none can be stopped alone
            pytest.skip("the daemon runs worker threads here, not processes")
        stuck.append(workers[0])  # a worker or the maintainer: stop every child but one
        os.kill(stuck[0], signal.SIGSTOP)
        for pid in workers[1:]:
            os.kill(pid, signal.SIGSTOP)
            stuck.append(pid)
        # pings go on for up to LIVENESS_FLOOR s (and STATUS= lines throughout), then stop
        pings_stop(sink, time.monotonic())
        for pid in stuck:
            os.kill(pid, signal.SIGCONT)
        pings_resume(sink)
    finally:
        for pid in stuck:
            os.kill(pid, signal.SIGCONT)
        sink.close()
        proc.terminate()
        proc.wait(30)
        err = proc.stderr.read() if proc.stderr else b""
        stop(proc)
    assert b"has not run its loop for" in err, err


def test_a_stuck_worker_process_is_logged_without_a_watchdog_too(tmp: Path) -> None:
    """A worker process that stops running its loop (SIGSTOP stands in for a debugger or a
    deadlock) is named in the log after LIVENESS_FLOOR seconds, and again once it runs:
    the check ran only to feed systemd's watchdog, so without one nothing was said, though
    a worker stopped while it holds a partition's lock holds up the others (found by a
    hostile-client hunt: the daemon froze, its log silent)."""
    path = str(tmp / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    proc, port = spawn("-t", "2", env={"NOTIFY_SOCKET": path})  # no WATCHDOG_USEC
    stopped: list[int] = []
    try:
        # READY=1: every worker runs its loop (the port accepts before they all do, and a
        # worker stopped before its loop is one that has not started: not this case)
        sink.settimeout(STARTUP)
        while "READY=1" not in sink.recv(4096).decode().split("\n"):
            pass
        workers = [p.pid for p in psutil.Process(proc.pid).children()]
        if not workers:  # a free-threaded build: worker threads, none can be stopped alone
            pytest.skip("the daemon runs worker threads here, not processes")
        for pid in workers:  # the workers and the maintainer (not checked): all stopped
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        time.sleep(LIVENESS_FLOOR + 2.5)
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        stopped.clear()
        time.sleep(2.5)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        sink.close()
        proc.terminate()
        code = proc.wait(30)
        err = proc.stderr.read().decode() if proc.stderr else ""
        stop(proc)
    assert code == 0
    stuck = re.findall(
        r"worker (\d) \(pid (\d+)\) has not run its loop for \d+ s: stuck or stopped; "
        r"while it holds a cache lock, the other workers wait for it too",
        err,
    )
    assert sorted(slot for slot, _ in stuck) == ["0", "1"], err
    assert {int(pid) for _, pid in stuck} <= set(workers)
    for slot, pid in stuck:
        assert f"worker {slot} (pid {pid}) runs its loop again" in err, err


def test_stats_stops_waiting_for_a_worker_found_stopped() -> None:
    """Regression (a hunt at -t 4): while one worker was stopped (SIGSTOP), every ``stats``
    on another waited the whole second `Board.gather` gives a worker to publish, and the
    asking worker's other clients with it, even once the supervisor had logged the worker
    as not running its loop. A worker found so is not waited for (its figures are the last
    it published) until it runs again."""
    proc, port = spawn("-t", "4")
    stopped = 0
    try:
        wait_ready(port)
        with Conn((HOST, port)) as c:
            c.send(b"version\r\n")
            assert c.read_until(b"\r\n").startswith(b"VERSION")
            children = psutil.Process(proc.pid).children()
            if not children:  # a free-threaded build: worker threads, none can be stopped alone
                pytest.skip("the daemon runs worker threads here, not processes")
            serving = None
            others = []
            for child in children:
                conns = child.net_connections(kind="tcp")
                if any(x.raddr and x.raddr[1] == c.sock.getsockname()[1] for x in conns):
                    serving = child.pid
                elif any(x.status == psutil.CONN_LISTEN for x in conns):
                    others.append(child.pid)  # a worker (the maintainer listens on nothing)
            assert serving is not None and others, (serving, others)
            stopped = others[0]
            os.kill(stopped, signal.SIGSTOP)
            time.sleep(LIVENESS_FLOOR + 2.5)  # the supervisor finds it stopped
            took = []
            for _ in range(3):
                started = time.monotonic()
                c.send(b"stats\r\n")
                assert b"STAT pid " in c.read_until(b"END\r\n")
                took.append(time.monotonic() - started)
            assert min(took) < 0.9, took  # (each took 1.0 s or more: the whole wait)
            os.kill(stopped, signal.SIGCONT)
            stopped = 0
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        stop(proc)


# Interpreter start-up code for the daemons below (as ``sitecustomize``, found first on their
# PYTHONPATH): while the file $MCACHED_TEST_HOLD exists, a worker process forked now waits
# before it starts (stuck before its loop, as a worker that never comes up), and the daemon
# logs workers that do not all run after $MCACHED_TEST_START_WAIT seconds, not 15.
HOLD_WORKERS = """
import os, time
import mcached.daemon as daemon

daemon.START_WAIT = float(os.environ["MCACHED_TEST_START_WAIT"])
worker_main = daemon.Daemon._worker_main


def held(self, slot):
    while os.path.exists(os.environ["MCACHED_TEST_HOLD"]):
        time.sleep(0.02)
    worker_main(self, slot)


daemon.Daemon._worker_main = held
"""


def spawn_holding(
    tmp: Path, *args: str, watchdog_usec: int
) -> tuple[subprocess.Popen[bytes], int, Path, socket.socket]:
    """A daemon whose workers wait while the returned file exists (`HOLD_WORKERS`), with a
    notify socket (returned) and the watchdog at `watchdog_usec`."""
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(HOLD_WORKERS)
    hold = tmp / "hold"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp / "notify.sock"))
    env = {
        "NOTIFY_SOCKET": str(tmp / "notify.sock"),
        "WATCHDOG_USEC": str(watchdog_usec),
        "PYTHONPATH": str(tmp / "site"),
        "MCACHED_TEST_HOLD": str(hold),
        "MCACHED_TEST_START_WAIT": "1",
    }
    proc, port = spawn(*args, env=env)
    return proc, port, hold, sink


def test_bug_ready_and_the_watchdog_came_though_the_workers_never_started(tmp: Path) -> None:
    """A daemon whose worker processes do not start tells systemd nothing but why: no
    READY=1 and no WATCHDOG=1 while they do not run (its STATUS= says which; the log says
    so after START_WAIT), and SIGTERM still stops it. Once they run, READY=1, then the
    pings. (READY=1 came 15 s after the start whatever the workers did, with an error in
    the log, and the watchdog was fed from then on: a daemon serving nobody was "active"
    for good.)"""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # its daemon runs worker threads
        pytest.skip("a free-threaded build: the daemon starts worker threads, not processes")
    (tmp / "hold").touch()
    proc, port, hold, sink = spawn_holding(tmp, "-t", "2", watchdog_usec=400000)
    messages: list[str] = []
    try:
        sink.settimeout(0.5)
        deadline = time.monotonic() + 4  # START_WAIT is 1 s here
        while time.monotonic() < deadline:
            try:
                messages.append(sink.recv(4096).decode())
            except TimeoutError:
                pass
        lines = [line for msg in messages for line in msg.split("\n")]
        assert "READY=1" not in lines and "WATCHDOG=1" not in lines, messages
        assert any(
            line.startswith("STATUS=starting: worker(s) 0, 1 not running yet") for line in lines
        ), messages
        hold.unlink()  # the workers start now
        sink.settimeout(STARTUP)
        while "READY=1" not in sink.recv(4096).decode().split("\n"):
            pass
        with socket.create_connection((HOST, port), timeout=5) as s:
            s.sendall(b"version\r\n")
            assert s.recv(100).startswith(b"VERSION ")
        while "WATCHDOG=1" not in sink.recv(4096).decode().split("\n"):
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "worker(s) 0, 1 not running 1 s after the start: not ready" in err, err
    finally:
        sink.close()
        stop(proc)


def test_bug_the_watchdog_was_fed_while_replaced_workers_never_started(tmp: Path) -> None:
    """Every child killed (``kill -9``) and its successors stuck before their loop: the
    pings stop after LIVENESS_FLOOR seconds, as for a worker stuck in its loop, and come
    back once they run. (Only running workers were watched: with none running the
    watchdog was fed for good.)"""
    proc, port, hold, sink = spawn_holding(tmp, "-t", "2", watchdog_usec=1000000)
    try:
        sink.settimeout(STARTUP)
        while "READY=1" not in sink.recv(4096).decode().split("\n"):
            pass
        children = psutil.Process(proc.pid).children()
        if not children:  # a free-threaded build: worker threads, none can be killed alone
            pytest.skip("the daemon runs worker threads here, not processes")
        hold.touch()
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
        pings_stop(sink, time.monotonic())
        hold.unlink()
        pings_resume(sink, 15)  # the workers start; a ping within a window
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "has not started for" in err, err
    finally:
        hold.unlink(missing_ok=True)
        sink.close()
        stop(proc)


def await_ready(sink: socket.socket) -> None:
    """Until READY=1 comes on `sink`: every worker runs its loop."""
    sink.settimeout(STARTUP)
    while "READY=1" not in sink.recv(4096).decode().split("\n"):
        pass


def terminated(proc: subprocess.Popen[bytes]) -> str:
    """SIGTERM: the daemon stops with status 0; its log."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    return proc.stderr.read().decode() if proc.stderr else ""


def pings_stop(sink: socket.socket, since: float) -> None:
    """The WATCHDOG=1 pings on `sink` end within LIVENESS_FLOOR seconds (and 3 of slack)
    of `since`: returns after 3 s without one, fails if they go on."""
    sink.settimeout(0.5)
    last_ping = since
    while time.monotonic() - last_ping < 3:
        try:
            msg = sink.recv(4096).decode()
        except TimeoutError:
            continue
        if "WATCHDOG=1" in msg.split("\n"):
            last_ping = time.monotonic()
            assert last_ping - since < LIVENESS_FLOOR + 3, "pinged on"


def pings_resume(sink: socket.socket, timeout: float = 5) -> None:
    sink.settimeout(timeout)  # a STATUS= line may come first
    while "WATCHDOG=1" not in sink.recv(4096).decode().split("\n"):
        pass


def test_bug_the_watchdog_was_fed_while_the_maintainer_was_stuck(tmp: Path) -> None:
    """The maintainer process (the LRU crawler, the slab automover, the ticker, the
    cluster's checks) stopped (SIGSTOP stands in for a deadlock): the pings stop after
    LIVENESS_FLOOR seconds, the log names it, and both come back once it runs. (Only
    workers were watched: the watchdog was fed while nothing crawled, moved a page or
    checked a peer, for good.)"""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):  # the maintainer's work runs in threads
        pytest.skip("a free-threaded build: the daemon starts no maintainer process")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    proc, port = spawn("-t", "1", env=env)
    maintainer: psutil.Process | None = None
    try:
        await_ready(sink)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2  # a worker and the maintainer, which runs the threads
        # (which it starts once forked: READY=1 may come first; CI once took the worker)
        deadline = time.monotonic() + 10
        while len({c.num_threads() for c in children}) == 1:
            assert time.monotonic() < deadline, "no child started its threads"
            time.sleep(0.05)
        maintainer = max(children, key=lambda c: c.num_threads())
        maintainer.suspend()
        # (the workers serve on, unless it was stopped holding a lock: the crawler's)
        pings_stop(sink, time.monotonic())
        maintainer.resume()
        pings_resume(sink)
        err = terminated(proc)
        pid = maintainer.pid
        assert f"the maintainer (pid {pid}) has not run for" in err, err
        assert f"the maintainer (pid {pid}) runs again" in err, err
    finally:
        if maintainer is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                maintainer.resume()
        sink.close()
        stop(proc)


def stop_a_worker(
    proc: subprocess.Popen[bytes], sink: socket.socket, stuck: list[int]
) -> psutil.Process:
    """Once the daemon is ready (READY=1 on `sink`), one of its worker processes stopped
    (SIGSTOP stands in for a deadlock) and listed in `stuck`, to be let go at the end."""
    await_ready(sink)
    children = psutil.Process(proc.pid).children()
    if not children:  # a free-threaded build: worker threads, none can be stopped alone
        pytest.skip("the daemon runs worker threads here, not processes")
    worker = min(children, key=lambda c: c.num_threads())  # not the maintainer
    worker.suspend()
    stuck.append(worker.pid)
    return worker


def test_bug_a_reload_fed_the_watchdog_while_a_worker_was_stuck(tmp: Path) -> None:
    """A SIGHUP while a worker process is stuck (SIGSTOP) waits up to RELOAD_WAIT seconds
    for it to reload; it pinged WATCHDOG=1 meanwhile whatever the liveness check said, so
    reloads closer than WatchdogSec kept a wedged daemon from being restarted (found by a
    liveness hunt). No ping now until the worker runs again."""
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp / "notify.sock"))
    env = {"NOTIFY_SOCKET": str(tmp / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    proc, port = spawn("-t", "2", env=env)
    stuck: list[int] = []
    try:
        worker = stop_a_worker(proc, sink, stuck)
        pings_stop(sink, time.monotonic())
        for _ in range(2):  # each waits RELOAD_WAIT (5 s) for the stuck worker
            proc.send_signal(signal.SIGHUP)
            sink.settimeout(0.5)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    msg = sink.recv(4096).decode().split("\n")
                    assert "WATCHDOG=1" not in msg, "a reload pinged for a stuck worker"
        worker.resume()
        stuck.clear()
        pings_resume(sink)
        err = terminated(proc)
        assert f"(pid {worker.pid}) has not run its loop for" in err, err
    finally:
        for pid in stuck:
            os.kill(pid, signal.SIGCONT)
        sink.close()
        stop(proc)


def test_a_stop_is_not_held_behind_reloads_waiting_for_a_stuck_worker(tmp: Path) -> None:
    """SIGHUPs, then SIGTERM, while a worker process is stuck (SIGSTOP): each SIGHUP was a
    reload of its own, each waiting RELOAD_WAIT (5 s) for the stuck worker, and the stop
    waited behind them all (four reloads and --shutdown-timeout 10 outlasted systemd's
    TimeoutStopSec=30, which kills). SIGHUPs queued together are one reload now, and a stop
    cuts the wait short: the daemon is gone within --shutdown-timeout, as for a SIGTERM
    alone. Regression (CI, when the SIGHUPs came apart): SIGHUPs queued during the cut
    reload were a reload of their own after the stop was asked (one line each from the
    supervisor and the maintainer, which it passes them on to)."""
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp / "notify.sock"))
    proc, port = spawn(
        "-t", "2", "--shutdown-timeout", "2", env={"NOTIFY_SOCKET": str(tmp / "notify.sock")}
    )
    stuck: list[int] = []
    try:
        stop_a_worker(proc, sink, stuck)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)  # the first reload waits for the stuck worker; these queue behind it
        for _ in range(2):
            proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - start
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 0, err
        assert took < 2 + 4, (took, err)  # its 2 s, and room for a loaded machine
        assert err.count("SIGHUP: reloading") < 3, err
    finally:
        for pid in stuck:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        sink.close()
        stop(proc)


# Start-up code (``sitecustomize``) for a daemon of worker threads, as on a free-threaded
# build, here under the GIL: worker 0's once-a-second tick waits while the file
# $MCACHED_TEST_HOLD exists (its loop stuck, as in a deadlock).
STUCK_THREAD = """
import os, time
import mcached.daemon as daemon
import mcached.server.workers as workers

daemon.gil_enabled = lambda: False
tick = workers.Worker._tick


def held(self):
    while self.slot == 0 and os.path.exists(os.environ["MCACHED_TEST_HOLD"]):
        time.sleep(0.02)
    tick(self)


workers.Worker._tick = held
"""


def test_bug_the_watchdog_was_fed_while_a_worker_thread_was_stuck(tmp: Path) -> None:
    """Worker threads (the daemon of a free-threaded build) are watched as worker processes
    are: one stuck in its loop stops the pings after LIVENESS_FLOOR seconds and is named in
    the log, and the pings come back once it runs. (Only worker processes were watched: a
    free-threaded daemon fed the watchdog whatever its workers did.)"""
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(STUCK_THREAD)
    hold = tmp / "hold"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(tmp / "notify.sock"))
    env = {
        "NOTIFY_SOCKET": str(tmp / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
        "PYTHONPATH": str(tmp / "site"),
        "MCACHED_TEST_HOLD": str(hold),
    }
    proc, port = spawn("-t", "2", env=env)
    try:
        await_ready(sink)
        assert not psutil.Process(proc.pid).children()  # threads: no process of their own
        hold.touch()
        pings_stop(sink, time.monotonic())
        hold.unlink()
        pings_resume(sink)
        err = terminated(proc)
        assert f"worker 0 (pid {proc.pid}) has not run its loop for" in err, err
        assert f"worker 0 (pid {proc.pid}) runs its loop again" in err, err
    finally:
        hold.unlink(missing_ok=True)
        sink.close()
        stop(proc)


def test_socket_activation_serves_the_inherited_socket() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    # systemd's contract: the sockets are fds 3.., LISTEN_PID is the service's own pid.
    # Move the socket to fd 3 unless it is there already (moving 3 onto 3, then closing
    # the original, would close the only copy).
    move = "" if fd == 3 else f"exec 3<&{fd}; exec {fd}<&-; "
    script = f'{move}LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m mcached -l {HOST} -p 1'
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        ["bash", "-c", script, sys.executable],
        pass_fds=(fd,),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    listener.close()  # the daemon holds the only copy now
    try:
        wait_for_port(port)  # connects at once: the socket listened before the daemon ran
        # so the first reply comes once the interpreter has started and a worker runs: under
        # a second on a quiet machine, many seconds on a loaded one. Wait for whole replies.
        with Conn((HOST, port), timeout=STARTUP) as conn:
            want = b"STORED\r\nVALUE a 0 1\r\nx\r\nEND\r\n"
            assert conn.request(b"set a 0 0 1\r\nx\r\nget a\r\n", expect_len=len(want)) == want
            conn.send(b"stats settings\r\n")
            assert f"STAT tcpport {port}\r\n".encode() in conn.read_until(b"END\r\n")
    finally:
        stop(proc)


def test_daemonize_writes_pidfile_and_detaches(tmp: Path) -> None:
    pidfile = tmp / "mcached.pid"
    proc, port = spawn("-d", "-P", str(pidfile))
    try:
        assert proc.wait(15) == 0  # the foreground process returns at once
        deadline = time.monotonic() + 10
        while not pidfile.exists():
            assert time.monotonic() < deadline, "no pid file"
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert pid != proc.pid
        assert os.getsid(pid) != os.getsid(0)  # a session of its own: detached
        wait_ready(port)
        with Conn((HOST, port)) as conn:
            assert conn.request(b"version\r\n").startswith(b"VERSION ")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while pidfile.exists():
            assert time.monotonic() < deadline, "pid file not removed on exit"
            time.sleep(0.05)
    finally:
        stop(proc)
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def nobody() -> int | None:
    """The uid of user nobody, when this runs as root and it exists (for -u)."""
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return None


@pytest.mark.skipif(nobody() is None, reason="-u needs root and a user nobody")
def test_bug_the_pid_file_was_written_as_root_and_left_behind_by_the_u_user(tmp: Path) -> None:
    """``-P`` with ``-u``: the pid file is written once root is dropped, as memcached writes
    it, so the user owns it and removes it at exit, even in a sticky world-writable
    directory such as /tmp. (It was written as root before dropping privileges: there the
    user could not remove it, and the failure went unsaid.)"""
    tmp.chmod(0o1777)
    pidfile = tmp / "mcached.pid"
    proc, port = spawn("-u", "nobody", "-P", str(pidfile))
    try:
        wait_ready(port, STARTUP)
        assert pidfile.read_text() == f"{proc.pid}\n"
        assert pidfile.stat().st_uid == nobody()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not pidfile.exists()
        assert proc.stderr is not None
        assert b"pid file" not in proc.stderr.read()
    finally:
        stop(proc)


def open_files_limit(pid: int) -> tuple[int, int]:
    """The soft and hard RLIMIT_NOFILE of process `pid` (/proc/<pid>/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit")


def with_open_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    """A preexec_fn: the child starts with these RLIMIT_NOFILE limits (hard: as it is)."""

    def preexec() -> None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard is None else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, limit))

    return preexec


def test_bug_connections_past_a_low_open_files_limit_were_left_unanswered() -> None:
    """``-c`` sets the open files limit, as memcached does at start, with room for the
    daemon's own descriptors: under a soft limit of 256 (``ulimit -n 256``), ``-c 1024``
    serves 300 connections on one worker. (mcached never set it: past about 230 the worker
    ran out of descriptors, stopped accepting, and the rest waited unanswered.)"""
    proc, port = spawn("-t", "1", "-c", "1024", preexec_fn=with_open_files(256))
    conns: list[socket.socket] = []
    try:
        wait_ready(port, STARTUP)
        soft, _ = open_files_limit(proc.pid)
        assert soft >= 1024 + 64
        for _ in range(300):
            s = socket.create_connection((HOST, port), timeout=10)
            s.sendall(b"version\r\n")
            conns.append(s)
        waiting = set(conns)
        deadline = time.monotonic() + 20
        while waiting and time.monotonic() < deadline:
            ready = readable(list(waiting), 0.5)
            for s in ready:
                assert s.recv(100).startswith(b"VERSION ")
                waiting.discard(s)
        assert not waiting, f"{len(waiting)} of 300 connections unanswered"
    finally:
        for s in conns:
            s.close()
        stop(proc)


def test_an_open_files_limit_above_what_c_needs_is_left_as_it_is() -> None:
    """memcached sets both limits to ``-c``; mcached never lowers one set higher."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 5000:
        pytest.skip("the hard open files limit is below 5000")
    proc, port = spawn("-c", "100", preexec_fn=with_open_files(5000))
    try:
        wait_ready(port, STARTUP)
        assert open_files_limit(proc.pid) == (5000, hard)
    finally:
        stop(proc)


def test_a_connection_limit_past_what_the_system_allows_stops_the_start() -> None:
    """memcached's words and EX_OSERR when the open files limit cannot be set from ``-c``
    (past fs.nr_open even root cannot)."""
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    proc, _ = spawn("-c", str(nr_open + 1))
    try:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 71
        assert err.decode().strip() == (
            "failed to set rlimit for open files. Try starting as root or requesting smaller "
            "maxconns value."
        )
    finally:
        stop(proc)


def test_a_limit_that_fits_c_but_not_the_daemons_own_descriptors_is_a_warning() -> None:
    """memcached starts wherever ``-c`` itself fits: so does mcached, warning that the
    connections near ``-c`` may wait (it refused to start at first). A hard limit of 1100
    that the daemon may not raise (setpriv drops CAP_SYS_RESOURCE): -c 1060 fits, the
    daemon's own descriptors (1132 in all with one worker) do not."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) missing")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    cmd = [setpriv, "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]
    cmd += [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), "-t", "1"]
    proc = subprocess.Popen(
        [*cmd, "-c", "1060"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=with_open_files(256, 1100),
    )
    try:
        wait_ready(port, STARTUP)
        assert open_files_limit(proc.pid) == (1100, 1100)
    finally:
        proc.terminate()
        proc.wait(30)
        err = proc.stderr.read().decode() if proc.stderr else ""
        stop(proc)
    assert "warning: the open files limit is 1100: -c 1060 and mcached's own" in err, err


def test_config_file_is_honoured_and_overridden(tmp: Path) -> None:
    conf = tmp / "mcached.conf"
    port = free_port()
    conf.write_text(
        "# Debian's /etc/memcached.conf format\n"
        f"-p {port}\n-l {HOST}\n-m 32\n-c 77\n\n-t 2\n"
        f"logfile {tmp / 'mcached.log'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcached", "--config", str(conf), "-m", "48"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port)
        with Conn((HOST, port)) as conn:
            settings = conn.request(b"stats settings\r\n")
        assert b"STAT maxbytes 50331648\r\n" in settings  # -m 48 on the command line wins
        assert b"STAT maxconns 77\r\n" in settings
        assert b"STAT num_threads 2\r\n" in settings
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log = (tmp / "mcached.log").read_text()
        assert "ready: listening on" in log and "SIGTERM: stopping" in log
    finally:
        stop(proc)


@pytest.mark.parametrize(
    "args,message,code",
    [
        (["-t", "0"], "Number of threads must be greater than 0", 1),
        (["-c", "0"], "Maximum connections must be greater than 0", 1),
        (["-I", "512"], "Item max size cannot be less than 1024 bytes.", 64),
        (["-f", "1.0"], "Factor must be greater than 1", 1),
        (["-B", "utf8"], "Invalid value for binding protocol: utf8", 64),
        # memcached's words: SASL rides on the binary protocol alone, -Y on the ascii one
        (["-S", "-B", "auto"], "You cannot allow the ASCII protocol while using SASL.", 64),
        (["-S", "-U", "11211"], "Cannot enable UDP while using binary SASL authentication", 64),
        (["-Y", "/dev/null", "-B", "binary"], "cannot allow the BINARY protocol", 64),
        (["-o", "no_such_option"], 'Illegal suboption "no_such_option"', 1),
        (["-p", "70000"], "Invalid port number 70000", 64),
        (["--config", "/nonexistent/mcached.conf"], "cannot read config file", 66),
        (["--log-file", "/nonexistent/dir/x.log"], "cannot open log file", 73),  # a traceback
        # regression: every bad float used to be reported as a bad -f growth factor
        (["--cluster-dns-interval", "abc"], "Invalid value for --cluster-dns-interval", 64),
    ],
)
def test_bad_flags_exit_at_once(args: list[str], message: str, code: int) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mcached", *args],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=30,
    )
    assert result.returncode == code
    assert message in result.stderr.decode()
    assert time.monotonic() - started < 20


def start_both(args: list[str]) -> list[tuple[int, str]]:
    """(exit code, stderr) of mcached, then memcached, started with `args` (each is
    expected to refuse them and exit)."""
    memcached = shutil.which("memcached")
    if memcached is None:
        pytest.skip("reference memcached not installed")
    root = ["-u", "root"] if os.geteuid() == 0 else []
    results = []
    for cmd in ([sys.executable, "-m", "mcached"], [memcached, *root]):
        result = subprocess.run(
            [*cmd, "-l", HOST, "-p", "0", "-U", "0", *args],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=30,
        )
        results.append((result.returncode, result.stderr.decode().strip()))
    return results


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "slab_chunk_max=2097152"],  # larger than -I
        ["-o", "slab_chunk_max=3000"],  # -I is not a multiple of it
        ["-I", "1000k"],  # the same, with the default of 512 KB
        ["-I", "2m", "-o", "slab_chunk_max=2097152"],  # not a divisor of the 1 MB page
        ["-I", "1000", "-o", "slab_chunk_max=1000"],  # -I's own bound comes first
    ],
)
def test_issue_12_slab_chunk_max_is_bytes_with_memcacheds_checks(args: list[str]) -> None:
    """Regression: mcached read ``-o slab_chunk_max`` in kilobytes (memcached 1.6.18 reads
    bytes: ``-o slab_chunk_max=16384`` failed to start). The bytes themselves are checked
    against both servers in test_conformance.py; here, that a value either refuses is refused
    by both, with the same message and exit code."""
    results = start_both(args)
    assert results[0] == results[1]
    assert results[0][0] == 64


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "hot_lru_pct=80"],
        ["-o", "hot_lru_pct"],
        ["-o", "hot_lru_pct=60,warm_lru_pct=30"],  # 64: the sum, checked after the list
        ["-o", "hot_max_factor=x"],
        ["-o", "temporary_ttl=100,no_lru_maintainer"],
        ["-o", "slab_automove_ratio=1.5"],
        ["-o", "slab_automove_window=2"],
        ["-o", "hashpower=40"],
        ["-o", "tail_repair_time=5"],
        ["-o", "hash_algorithm=foo"],
        ["-o", "watcher_logbuf_size=x"],
        ["-o", "idle_timeout"],
        ["-o", "read_buf_mem_limit=-1"],
        ["-o", "ext_max_frag=x"],
        ["-o", "bogus=1"],
        ["-o", "no_track_sizes"],
        ["-o", "inline_ascii_response"],
        ["-o", ",idle_timeout=5"],
        ["-c", "x"],
        ["-t", "x"],
        ["-R", "x"],
        ["-m", "x"],
        ["-I", "x"],
    ],
)
def test_startup_option_errors_are_memcacheds(args: list[str]) -> None:
    """Regression: mcached accepted hot_lru_pct, warm_lru_pct, hot_max_factor,
    warm_max_factor, temporary_ttl, slab_automove_ratio and memcached's other tuning
    suboptions with a warning whatever their value, refused in its own words what memcached
    reads with atoi (``-c x``: "Invalid value for -c"), and knew no_ forms memcached has not.
    Both now exit with the same code and the same stderr."""
    results = start_both(args)
    assert results[0] == results[1]
    assert results[0][0] in (1, 64)


@pytest.mark.parametrize(
    "args",
    [[], ["-f", "1.5", "-n", "100"], ["-o", "slab_chunk_max=16384"], ["-I", "2m", "-n", "10"]],
)
def test_vv_prints_memcacheds_slab_classes(
    args: list[str], server_factory: Callable[..., Server]
) -> None:
    """memcached's ``-vv`` prints its slab classes as it starts, one line each; mcached
    printed none. Its lines (in its log's format) now say the same, class for class."""
    tables = []
    for kind in ("mcached-procs", "memcached"):
        server = server_factory(kind, "-vv", *args)
        server.handle.terminate()
        _, err = server.handle.communicate(timeout=STARTUP)
        tables.append(re.findall(r"slab class +\d+: chunk size +\d+ perslab +\d+", err.decode()))
    assert tables[0] == tables[1]
    assert len(tables[0]) > 10


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port)],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=30,
        )
    assert result.returncode == 71
    assert b"failed to listen" in result.stderr


def test_a_udp_port_in_use_is_named_as_the_udp_port() -> None:
    """Regression (a hunt): with only the UDP port taken, the message named the TCP one
    (``failed to listen on 127.0.0.1 port <-p>``), which was free."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((HOST, 0))
        udp = u.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(free_port()), "-U", str(udp)],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=STARTUP,
        )
    assert result.returncode == 71
    assert f"failed to listen on {HOST} UDP port {udp}: Address already in use".encode() in (
        result.stderr
    ), result.stderr


@pytest.mark.parametrize("kind", ["mcached-procs", "memcached"])
def test_a_second_server_on_the_port_of_a_running_one_fails_to_start(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A server whose workers listen on copies of the port (``SO_REUSEPORT``) still refuses
    a port in use, as memcached does. The second mcached at ``-t 2`` bound copies of its own
    beside the first's and started, taking half of its connections."""
    first = server_factory(kind, "-t", "2")
    if kind == "memcached":
        cmd = [shutil.which("memcached") or "memcached", "-l", HOST, "-U", "0"]
        cmd += ["-u", "root"] if os.geteuid() == 0 else []
    else:
        cmd = [sys.executable, "-m", "mcached", "-l", HOST]
    result = subprocess.run(
        [*cmd, "-p", str(first.port), "-t", "2"],
        capture_output=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=STARTUP,
    )
    assert result.returncode == 71, result.stderr
    assert b"failed to listen" in result.stderr
    assert b"Address already in use" in result.stderr
    with Conn((HOST, first.port)) as c:  # the first still serves
        c.send(b"version\r\n")
        assert c.read_until(b"\r\n").startswith(b"VERSION ")


def test_a_server_starting_on_an_address_another_one_claimed_fails_to_start() -> None:
    """Two mcached daemons that probe one free port at the same moment: the one that finds
    it claimed (`claim_address`, held here as the other daemon would hold it between its
    probe and its bind) does not bind copies beside the other's, and says why as memcached
    would."""
    from mcached.server.listener import claim_address

    port = free_port()
    claim = claim_address(socket.SOCK_STREAM, (HOST, port))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), "-t", "2", "-U", "0"],
            capture_output=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            timeout=STARTUP,
        )
    finally:
        claim.close()
    assert result.returncode == 71, result.stderr
    assert b"failed to listen" in result.stderr
    assert b"Address already in use" in result.stderr


def test_version_and_help_entry_points() -> None:
    for cmd in (
        [sys.executable, "-m", "mcached", "--version"],
        [sys.executable, "-m", "mcached", "-V"],
    ):
        out = subprocess.run(
            cmd, capture_output=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT))
        )
        assert out.returncode == 0 and out.stdout.startswith(b"mcached ")
    out = subprocess.run(
        [sys.executable, "-m", "mcached", "-h"],
        capture_output=True,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0
    for flag in (b"--port", b"--memory-limit", b"--threads", b"--max-item-size", b"--config"):
        assert flag in out.stdout, flag


@pytest.mark.parametrize(
    ("args", "traced"),
    [(["-v"], False), (["-vv"], True), (["-vvv"], True), (["-v", "verbosity"], True)],
    ids=["v", "vv", "vvv", "verbosity-2-at-run-time"],
)
def test_vv_logs_commands_and_replies_as_memcacheds_does(args: list[str], traced: bool) -> None:
    """memcached's -vv prints each client's commands and replies (its -h: "very verbose (also
    print client commands/responses)"); mcached's logged them only from -vvv once."""
    runtime = "verbosity" in args
    proc, port = spawn(*[a for a in args if a != "verbosity"], "-t", "2")
    try:
        wait_ready(port)
        if runtime:
            with Conn((HOST, port)) as conn:
                assert conn.request(b"verbosity 2\r\n") == b"OK\r\n"
        value = b"v" * 50_000
        for _ in range(4):  # new connections, spread over both workers
            with Conn((HOST, port)) as conn:
                assert conn.request(b"set tracedkey 0 0 1\r\nx\r\n") == b"STORED\r\n"
                stored = conn.request(b"set bigvalue 0 0 50000\r\n%b\r\n" % value)
                assert stored == b"STORED\r\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    lines = err.splitlines()
    assert len([n for n in lines if b"tracedkey" in n]) == (4 if traced else 0), err[-2000:]
    assert (b"STORED" in err) == traced
    # a stored value is logged cut short, as a reply is (memcached logs the line alone)
    big = [n for n in lines if b"bigvalue" in n]
    assert len(big) == (4 if traced else 0)
    assert all(len(n) < 1000 for n in big)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_unit_files_verify(tmp: Path) -> None:
    """systemd-analyze accepts the units (ExecStart pointed at an existing binary)."""
    exe = shutil.which("mcached") or sys.executable
    for name in ("mcached.service", "mcached@.service"):
        src = ROOT / "scripts" / name
        if not src.exists():
            continue
        text = src.read_text().replace("/usr/local/bin/mcached", exe)
        dst = tmp / name
        dst.write_text(text)
        target = str(dst).replace("@.service", "@11211.service") if "@" in name else str(dst)
        if "@" in name:
            os.link(dst, target)
        result = subprocess.run(
            ["systemd-analyze", "verify", target], capture_output=True, timeout=60
        )
        errors = [
            line for line in result.stderr.decode().splitlines() if name.split("@")[0] in line
        ]
        assert result.returncode == 0 and not errors, result.stderr.decode()


@pytest.mark.parametrize(
    "args",
    [["-x"], ["--no-such-flag"], ["-c"], ["--threads"]],
    ids=["unknown letter", "unknown long", "no value", "long, no value"],
)
def test_a_bad_option_is_refused_in_getopts_and_memcacheds_words(args: list[str]) -> None:
    """getopt's line (after the program's name), memcached's ``Illegal argument "?"``,
    exit 1 (mcached printed click's usage and exited 64)."""
    (ours, our_err), (theirs, their_err) = start_both(args)
    assert ours == theirs == 1
    assert our_err.split(": ", 1)[1] == their_err.split(": ", 1)[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="-u acts only as root")
def test_an_unknown_user_exits_67() -> None:
    (ours, our_err), (theirs, their_err) = start_both(["-u", "no-such-user-mcached"])
    assert ours == theirs == 67  # EX_NOUSER
    assert our_err.splitlines()[-1] == their_err.splitlines()[-1]


def activated(sock: socket.socket, *args: str) -> subprocess.CompletedProcess[bytes]:
    """mcached started with `sock` passed as systemd passes one (fd 3, LISTEN_PID its own),
    expected to refuse it and exit."""
    fd = sock.fileno()
    move = "" if fd == 3 else f"exec 3<&{fd}; exec {fd}<&-; "
    script = f'{move}LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m mcached ' + " ".join(args)
    return subprocess.run(
        ["bash", "-c", script, sys.executable],
        pass_fds=(fd,),
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("kind", ["udp", "tcp not listening", "tcp with -s"])
def test_socket_activation_refuses_what_it_cannot_serve(kind: str, tmp: Path) -> None:
    """A UDP socket made a worker spin on accept, one not listening was served (every
    connection refused) after READY=1, and -s with a passed TCP socket hung a worker: now
    each is a one-line error at start (EX_CONFIG)."""
    args = [f"-l {HOST}", "-U 0"]
    if kind == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket()
    sock.bind((HOST, 0))
    if kind == "tcp with -s":
        sock.listen()
        args.append(f"-s {tmp / 'mc.sock'}")
    with sock:
        result = activated(sock, *args)
    assert result.returncode == 78, result.stderr
    err = result.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_the_watchdog_is_fed_while_a_reload_waits_for_a_busy_worker(tmp: Path) -> None:
    """A reload waits up to 5 s for every worker, and systemd's watchdog stays armed: with
    the workers busy (healthy by the daemon's own 5 s rule), the pings went quiet for those
    5 s, past a WatchdogSec of 4 s. They go on at half of it (slack for a loaded machine)."""
    path = str(tmp / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(15)
    proc, port = spawn("-t", "2", env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000"})
    try:
        assert "READY=1" in sink.recv(4096).decode().split("\n")
        children = [p.pid for p in psutil.Process(proc.pid).children()]
        for pid in children:  # busy, for the supervisor's eyes (the maintainer too)
            os.kill(pid, signal.SIGSTOP)
        try:
            proc.send_signal(signal.SIGHUP)
            pings = [time.monotonic()]  # (from the SIGHUP to the end of the window)
            deadline = pings[0] + 6
            while time.monotonic() < deadline:
                if "WATCHDOG=1" in sink.recv(4096).decode().split("\n"):
                    pings.append(time.monotonic())
        finally:
            for pid in children:
                os.kill(pid, signal.SIGCONT)
        pings.append(deadline)
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 3.5, [round(p - pings[0], 2) for p in pings]
    finally:
        sink.close()
        stop(proc)


def test_bug_a_log_file_that_cannot_be_opened_again_stopped_the_daemon(tmp: Path) -> None:
    """The log file's directory moved away (or made unwritable for the user of -u): every
    line the daemon logged after it, the SIGHUP's first, raised out of the logging call
    and the daemon exited 71 saying it failed to listen, its cache lost (found by a hunt).
    It now writes on to the file it had open, says so there once, and serves on."""
    logs = tmp / "logs"
    logs.mkdir()
    proc, port = spawn("-t", "2", "-vv", "--log-file", str(logs / "m.log"))
    try:
        wait_ready(port)
        with Conn((HOST, port)) as c:
            assert c.request(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        moved = tmp / "moved"
        logs.rename(moved)
        with Conn((HOST, port)) as c:  # -vv logs each command: the worker reopens
            assert c.request(b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
        with Conn((HOST, port)) as c:
            assert c.request(b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        text = (moved / "m.log").read_text()
        assert f"the log file {logs / 'm.log'} cannot be opened again" in text
        assert "SIGHUP: reloading" in text  # written on where it could be
    finally:
        stop(proc)


def test_bug_daemonized_relative_files_were_read_again_from_the_root(tmp: Path) -> None:
    """-d changes directory to /: a relative -Y or --cluster-file was read at the start,
    but a SIGHUP read it from / (a user removed from the auth file kept logging in; the
    cluster listed this node alone; found by a hunt). Both are made absolute first."""
    (tmp / "auth").write_text("alice:pw1\n")
    (tmp / "cluster.conf").write_text("localhost:21001\nlocalhost:21002\n")
    pidfile = tmp / "mcached.pid"
    proc, port = spawn(
        "-d", "-P", str(pidfile), "-Y", "auth", "--cluster-file", "cluster.conf", cwd=tmp
    )
    pid = 0
    try:
        assert proc.wait(15) == 0
        wait_ready(port)
        pid = int(pidfile.read_text())

        def login(user: bytes, password: bytes) -> bytes:
            with Conn((HOST, port)) as c:
                creds = user + b" " + password
                return c.request(b"set x 0 0 %d\r\n%b\r\n" % (len(creds), creds))

        assert login(b"alice", b"pw1") == b"STORED\r\n"
        (tmp / "auth").write_text("bob:pw2\n")
        (tmp / "cluster.conf").write_text("localhost:21003\n")
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while login(b"bob", b"pw2") != b"STORED\r\n":
            assert time.monotonic() < deadline, "the auth file was not read again"
            time.sleep(0.1)
        assert login(b"alice", b"pw1") == b"CLIENT_ERROR authentication failure\r\n"
        with Conn((HOST, port)) as c:
            assert c.request(b"set x 0 0 7\r\nbob pw2\r\n") == b"STORED\r\n"
            c.send(b"config get cluster\r\n")
            assert b"|21003\n" in c.read_until(b"END\r\n")
    finally:
        stop(proc)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def signal_masks(pid: int) -> tuple[int, int]:
    """Which signals process `pid` (its main thread) blocks and which it has handlers for,
    from /proc: bit n-1 is signal n."""
    rows = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(rows["SigBlk"], 16), int(rows["SigCgt"], 16)


@pytest.mark.parametrize("signo", [signal.SIGHUP, signal.SIGUSR1])
def test_a_reload_or_graceful_stop_during_the_imports_does_not_kill_the_daemon(
    signo: int,
) -> None:
    """A SIGHUP (a log rotation's reload) or a SIGUSR1 (memcached's graceful stop) that came
    in the program's first ~0.2 s, while it imported, ended it by the signal's default action
    (status -1 / -10, nothing logged). Both are blocked from the first import until the
    daemon has its handlers: the SIGHUP is then a reload of a daemon that goes on serving,
    the SIGUSR1 a graceful stop, status 0."""
    proc, port = spawn("-v")
    try:
        bit = 1 << (signo - 1)
        deadline = time.monotonic() + STARTUP
        while True:  # until the signal is blocked: sent now, it arrives during the imports
            try:
                blocked, caught = signal_masks(proc.pid)
            except (FileNotFoundError, ProcessLookupError, KeyError):
                blocked = caught = 0  # not started yet, or its status read half-written
            if blocked & bit:
                break
            assert not caught & bit, "its handler came without the signal ever blocked"
            assert proc.poll() is None and time.monotonic() < deadline, proc.returncode
            time.sleep(0.001)
        proc.send_signal(signo)
        if signo == signal.SIGUSR1:
            assert proc.wait(STARTUP) == 0
            return
        wait_ready(port)
        with Conn((HOST, port)) as conn:
            assert conn.request(b"version\r\n").startswith(b"VERSION ")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STARTUP) == 0
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "SIGHUP: reloading" in err, err
    finally:
        stop(proc)


@pytest.mark.parametrize("threads", ["1", "4"])
def test_bug_replies_owed_at_a_stop_were_cut_by_a_reset_when_the_client_sent_on(
    threads: str,
) -> None:
    """At SIGTERM, a client still owed most of a reply (it reads slowly) sends on: the drain
    never reads those bytes, and the connection, closed with them unread, was reset while
    the reply's tail still sat in the kernel's send queue: the client got a cut reply and
    ECONNRESET. Now the daemon ends its sending side first (FIN after the last reply), reads
    and drops what the client sends, and closes once the kernel has delivered every reply
    (or the client closes, or the deadline passes): the client reads every byte it was
    owed, then EOF. (What the client sent after the signal is not answered: the kernel held
    none of it at the signal.)"""
    proc, port = spawn("-t", threads, "-I", "8m", "-m", "64", "--shutdown-timeout", "10")
    reader = socket.socket()
    try:
        value = ask_a_big_value(port, reader)
        assert readable([reader], 10), "no reply began"
        got = reader.recv(16384)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the signal reaches the workers, which stop reading
        reader.sendall(b"get big\r\n" * 10)  # sent after the signal: never answered
        reader.settimeout(30)
        while chunk := reader.recv(1 << 20):  # a reset raises here
            got += chunk
            time.sleep(0.001)  # a slow reader: the tail waits in the daemon's send queue
        whole = b"VALUE big 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)
        assert len(got) == len(whole) and got == whole
        assert proc.wait(15) == 0
    finally:
        reader.close()
        stop(proc)


@pytest.mark.parametrize("mode", [b"shutdown", b"shutdown graceful"])
def test_bug_shutdown_behind_pipelined_gets_cut_the_replies_owed_before_it(mode: bytes) -> None:
    """``shutdown`` behind pipelined gets on one connection: the connection was closed as
    soon as the command was read, with up to 256 KB of replies to the gets before it still
    unsent (a reply cut in the middle, the rest gone). memcached reads the command only once
    it has written those, so every one reaches the client, whichever the mode; so here."""
    proc, port = spawn("-A", "-t", "1", "--shutdown-timeout", "10")
    try:
        wait_ready(port)
        value = b"y" * 1000
        with Conn((HOST, port)) as setter:
            assert setter.request(b"set a 0 0 1000\r\n%b\r\n" % value) == b"STORED\r\n"
        n = 3000  # 3 MB of replies: far more than the socket buffers hold
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, port))
        s.sendall(b"get a\r\n" * n + mode + b"\r\n")
        time.sleep(0.5)  # the daemon reads the command meanwhile
        got = read_to_the_end(s)
        one = b"VALUE a 0 1000\r\n%b\r\nEND\r\n" % value
        assert len(got) == n * len(one) and got == one * n
        assert proc.wait(15) == 0
    finally:
        stop(proc)


def test_bug_clients_connecting_through_a_stop_were_told_too_many_connections() -> None:
    """A stop signal's handler runs in the middle of a worker's batch of accepts; the rest
    of the batch took the -c path: told ``ERROR Too many open connections`` (and counted in
    rejected_connections) though nowhere near -c. Now they stay in the backlog, refused by
    the listener's close, as memcached's exit refuses them."""
    told = []
    for _ in range(3):
        proc, port = spawn("-t", "4")
        stopping = threading.Event()

        def connect_on(port: int = port, stopping: threading.Event = stopping) -> None:
            while not stopping.is_set():
                try:
                    s = socket.create_connection((HOST, port), timeout=5)
                except OSError:
                    time.sleep(0.001)
                    continue
                with s:
                    try:
                        s.sendall(b"version\r\n")
                        line = s.recv(100)
                    except OSError:
                        continue  # reset by the stop: fine
                    if line.startswith(b"ERROR"):
                        told.append(line)

        try:
            wait_ready(port)
            clients = [threading.Thread(target=connect_on) for _ in range(4)]
            for t in clients:
                t.start()
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            stopping.set()
            for t in clients:
                t.join(10)
            stop(proc)
    assert not told, told[:3]
