"""The same arena and workers on a free-threaded interpreter (3.13t, 3.14t): there the
``mcached`` command runs its workers as threads of one process, which run Python at the same
time without a supervisor. Runs where such an interpreter is installed (with click and psutil
importable); elsewhere it is skipped, saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOST, free_port, wait_ready
from tests.wire import Conn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ("python3.14t", "python3.13t")
ROUNDS = 150  # connections each of eight clients opens, one after another


def free_threaded_python() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path is None:
            continue
        probe = subprocess.run(
            [path, "-c", "import sys, click, psutil; print(sys._is_gil_enabled())"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "False":
            return path
    return None


@pytest.fixture
def ft_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    python = free_threaded_python()
    if python is None:
        pytest.skip(f"no free-threaded interpreter with click and psutil ({', '.join(CANDIDATES)})")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [python, "-m", "mcached", "-l", HOST, "-p", str(port), "-t", "4"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(20)


def test_workers_are_threads_and_lose_no_update(
    ft_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = ft_server
    import psutil

    assert psutil.Process(proc.pid).children() == []  # no worker processes: threads
    with Conn((HOST, port)) as c:
        assert c.request(b"set n 0 0 1\r\n0\r\n", expect_len=8) == b"STORED\r\n"

    def bump() -> None:
        with Conn((HOST, port)) as c:
            for _ in range(200):
                c.send(b"incr n 1\r\n")
                assert c.read_until(b"\r\n").rstrip().isdigit()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with Conn((HOST, port)) as c:
        assert c.request(b"get n\r\n") == b"VALUE n 0 4\r\n1600\r\nEND\r\n"
        assert b"STAT threads 4\r\n" in c.request(b"stats\r\n")


def test_threads_at_once_send_large_values_and_take_new_connections(
    ft_server: tuple[subprocess.Popen[bytes], int],
) -> None:
    """Eight clients at once, each opening a new connection every few requests, each getting
    ten values a reply sent from their page (8 KB each: slices of the pages' view) and
    storing one received into its chunk. Regression: slicing one memoryview from several
    threads at once can release it under all of them on a free-threaded CPython
    (gh-155606): the shared view of the pages (values) and of the board's words (-c's count
    at each accept) went dead, every worker thread ended with "operation forbidden on
    released memoryview object" and the daemon stopped answering (in 1 run of 3 of this
    test, in one of 2 to 6 of tests/integration/test_memory_bounds.py). Each thread now
    slices views of its own."""
    proc, port = ft_server
    value = bytes(range(256)) * 32
    hit = b"VALUE big 0 8192\r\n" + value + b"\r\n"
    reply = hit * 10 + b"END\r\n"  # ten slices a request
    with Conn((HOST, port)) as c:
        assert c.request(b"set big 0 0 8192\r\n" + value + b"\r\n", expect_len=8) == b"STORED\r\n"
        before = total_connections(c)
    errors: list[BaseException] = []

    def client(n: int) -> None:
        own = b"k%d" % n
        try:
            for i in range(ROUNDS):
                with Conn((HOST, port)) as c:
                    for _ in range(4):
                        got = c.request(b"get" + b" big" * 10 + b"\r\n", expect_len=len(reply))
                        assert got == reply
                    body = value[i:] + value[:i]
                    stored = c.request(b"set %b 0 0 8192\r\n%b\r\n" % (own, body), expect_len=8)
                    assert stored == b"STORED\r\n"
                    got = c.request(b"get %b\r\n" % own, expect_len=len(hit) + 2 + len(own))
                    assert got == b"VALUE %b 0 8192\r\n%b\r\nEND\r\n" % (own, body)
        except BaseException as exc:  # noqa: BLE001 - reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert proc.poll() is None
    with Conn((HOST, port)) as c:
        assert total_connections(c) == before + 8 * ROUNDS + 1  # and this one


def total_connections(c: Conn) -> int:
    for line in c.request(b"stats\r\n").split(b"\r\n"):
        if line.startswith(b"STAT total_connections "):
            return int(line.split()[2])
    raise AssertionError("no total_connections in stats")


def test_the_threads_path_of_the_command_runs_here_too() -> None:
    """What the command runs on a free-threaded interpreter (`Daemon.run` with threads for
    workers), run on this one: it serves from one process, answers stats, stops on SIGTERM."""
    import signal
    import sys

    port = free_port()
    script = (
        "import sys\n"
        "from mcached.cli import parse_settings\n"
        "from mcached.daemon import Daemon, configure_logging\n"
        "configure_logging(1)\n"
        f"s = parse_settings(['-l', '{HOST}', '-p', '{port}', '-t', '3'])\n"
        "sys.exit(Daemon(s, processes=False).run())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port)
        import psutil

        assert psutil.Process(proc.pid).children() == []  # no worker processes
        with Conn((HOST, port)) as c:
            assert c.request(b"set k 0 0 1\r\nv\r\nget k\r\n") == (
                b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
            )
            assert b"STAT threads 3\r\n" in c.request(b"stats\r\n")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        assert b"SIGTERM: stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
