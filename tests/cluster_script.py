"""``scripts/cluster.py`` run by a test, and stopped whatever the test does.

The script starts each node in a process group of its own and stops them all when it gets
SIGINT. A test that fails before its own Ctrl-C must still send that SIGINT: killing the
script instead (SIGKILL) leaves every node running, with nothing left to stop them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from tests.conftest import ROOT


def node_pids(workdir: Path) -> list[int]:
    """The processes of nodes started over `workdir`'s cluster file (supervisors and
    workers: their command lines name it)."""
    cluster_file = str(workdir / "cluster.conf")
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if p.pid != os.getpid() and cluster_file in " ".join(p.info["cmdline"] or [])
    ]


@contextmanager
def cluster_script(
    workdir: Path, nodes: int, *node_args: str, spares: int = 0, timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[str], list[int], str]]:
    """``cluster.py -n nodes --spares spares --dir workdir -- node_args`` until it prints
    ``ready``: yields the script's process, its nodes' ports and what it printed. On the
    way out the script gets SIGINT unless it has exited, and any node process still
    running after its stop (or after the script was killed) gets SIGKILL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "cluster.py"), "-n", str(nodes)]
        + ["--spares", str(spares), "--base-port", "0", "--dir", str(workdir), "--", *node_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.stdout is not None
    try:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready"):
                break
        text = "".join(lines)
        assert "ready" in text, text
        ports = [int(p) for p in re.findall(r"^  127\.0\.0\.1:(\d+)  pid", text, re.M)]
        yield proc, ports, text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        for pid in node_pids(workdir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
