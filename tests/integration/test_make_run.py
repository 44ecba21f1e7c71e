"""README's first command: ``make run`` starts the daemon in the foreground on the address
and port it is given, with memcached's defaults, and SIGTERM stops it.

The test runs the Makefile's own target over the environment the suite runs in (``VENV=``
that environment), so it checks the target's recipe and flags, not the set-up of a new
environment, which CI's clean clone does with ``make test``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pymemcache.client.base import Client

from tests.conftest import HOST, free_port, wait_ready

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_make_run_serves_with_memcacheds_defaults_and_stops_on_sigterm() -> None:
    venv = sys.prefix
    # make run installs the package first when its stamp is older than setup.cfg; under
    # `make test` (and CI) the stamp is fresh, and a reinstall here would need the network
    stale = subprocess.run(
        ["make", "-q", f"VENV={venv}", f"{venv}/.installed"], cwd=ROOT, capture_output=True
    )
    assert stale.returncode == 0, f"{venv} is not installed by the Makefile: run `make test`"
    port = free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"VENV={venv}", f"PORT={port}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # make and the daemon in a group of their own
    )
    try:
        wait_ready(port)
        client = Client((HOST, port), connect_timeout=5, timeout=10)
        try:
            assert client.set("greeting", b"hello")
            assert client.get("greeting") == b"hello"
            settings = client.stats("settings")
        finally:
            client.close()
        assert settings[b"inter"] == HOST.encode()
        assert settings[b"tcpport"] == port
        assert settings[b"maxbytes"] == 64 * 1024 * 1024  # -m 64
        assert settings[b"maxconns"] == 1024  # -c 1024
        assert settings[b"item_size_max"] == 1024 * 1024  # -I 1m
        (daemon,) = psutil.Process(proc.pid).children()  # the recipe's one command
        assert any(arg.endswith("/mcached") for arg in daemon.cmdline()[:2]), daemon.cmdline()
        daemon.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        # make exits 0 only if its recipe did: SIGTERM is a normal stop, status 0
        assert proc.returncode == 0, out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert out.decode(errors="replace").splitlines()[-1].endswith(" INFO stopped")
