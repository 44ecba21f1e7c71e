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
                assert c.request(b"incr n 1\r\n").rstrip().isdigit()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with Conn((HOST, port)) as c:
        assert c.request(b"get n\r\n") == b"VALUE n 0 4\r\n1600\r\nEND\r\n"
        assert b"STAT threads 4\r\n" in c.request(b"stats\r\n")


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
