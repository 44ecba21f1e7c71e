"""The pytest plugin (mcached/pytest_plugin.py), used as a downstream project uses it.

tests/example_app is a small project of its own (a package that caches through Django's
``PyMemcacheCache`` and through ``ClusterClient``, and its tests). Each test here copies it
to a temporary directory and runs pytest there in a subprocess, with no ``-p`` flag and no
conftest of ours: the fixtures come from the installed package's ``pytest11`` entry point,
as they would in any project that has mcached installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mcached import __version__, pytest_plugin
from tests.conftest import Server

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent / "example_app"
EXAMPLE_TESTS = 8


def run_example(tmp_path: Path, *args: str) -> tuple[str, dict[str, int]]:
    """pytest in a copy of the example project: its output and its summary's counts."""
    proc = pytest_in_example(tmp_path, *args)
    out = proc.stdout + proc.stderr
    summary = out.strip().splitlines()[-1]
    counts = {
        word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)
    }
    assert proc.returncode in (0, 1), out
    return out, counts


def pytest_in_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest run in a copy of the example project."""
    project = tmp_path / "example_app"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", ".*cache"))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    return subprocess.run(
        # (hypothesis is ours, not the example's: its plugin takes seconds to import)
        [sys.executable, "-m", "pytest", "-rs", "--setup-show", "-p", "no:hypothesispytest", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "option,message",
    [
        ("mcached_scope=bogus", "mcached_scope: 'bogus' is not one of function, session"),
        ("addopts=--mcached-address=localhost:x", "--mcached-address: "),
    ],
)
def test_a_bad_ini_value_is_a_usage_error_before_any_test(
    tmp_path: Path, option: str, message: str
) -> None:
    """Regression: a bad ``mcached_scope`` in the ini file was raised inside a fixture's
    scope callable, which pytest turned into an INTERNALERROR (exit 3) whose last line
    blamed the callable's signature."""
    proc = pytest_in_example(tmp_path, "-o", option)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert f"ERROR: {message}" in out and "INTERNALERROR" not in out, out


def test_the_plugin_is_installed_and_serves_a_server_per_test(tmp_path: Path) -> None:
    out, counts = run_example(tmp_path)
    assert counts == {"passed": EXAMPLE_TESTS}, out
    assert f"mcached-{__version__}" in out  # loaded from the entry point
    assert out.count("SETUP    F mcached_server") == 4
    assert out.count("SETUP    F mcached_cluster") == 4


def test_session_scope_shares_one_server_and_one_cluster(tmp_path: Path) -> None:
    """Shared across the run, yet each test starts with an empty cache and a cluster of its
    first three nodes (one test kills a node, another adds one)."""
    out, counts = run_example(tmp_path, "-o", "mcached_scope=session")
    assert counts == {"passed": EXAMPLE_TESTS}, out
    assert out.count("SETUP    S mcached_server") == 1
    assert out.count("SETUP    S mcached_cluster") == 1


def test_mcached_args_reach_the_servers(tmp_path: Path) -> None:
    out, counts = run_example(tmp_path, "-o", "mcached_args=-t 0", "-k", "asked_once")
    assert counts == {"error": 1}, out
    assert "Number of threads must be greater than 0" in out


def test_an_external_memcached(tmp_path: Path, server_factory: Callable[..., Server]) -> None:
    """The reference memcached: the server tests run against it, except the one that must
    crash it; it serves no cluster, so the cluster tests are skipped, saying why."""
    memcached = server_factory("memcached")
    out, counts = run_example(tmp_path, f"--mcached-address=127.0.0.1:{memcached.port}")
    assert counts == {"passed": 3, "skipped": 5}, out
    assert "kill(): the server given by --mcached-address is not ours to change" in out
    assert "serves no cluster" in out


def test_an_external_server_is_not_shared_by_xdist_workers(
    tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """Regression: under ``-n 2`` each worker flushed the one server before each of its
    tests, emptying it under the other's: tests failed at random (5 of 10, then 9 of 10, in
    a hunt's run). It is a usage error now, before any test runs."""
    memcached = server_factory("memcached")
    proc = pytest_in_example(tmp_path, "-n", "2", f"--mcached-address=127.0.0.1:{memcached.port}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "cannot be shared by pytest-xdist's workers" in out, out


def test_an_external_mcached_command(tmp_path: Path, server_factory: Callable[..., Server]) -> None:
    """``mcached`` run as a command (worker processes), named by host name: a lone node is a
    cluster of one, so only the tests that change the cluster are skipped."""
    node = server_factory("mcached-procs")
    out, counts = run_example(tmp_path, f"--mcached-address=localhost:{node.port}")
    assert counts == {"passed": 5, "skipped": 3}, out


# ---- the options, in-process ----


class Config:
    """What the plugin reads of pytest's config."""

    def __init__(self, options: dict[str, object], ini: dict[str, object]) -> None:
        self.options, self.ini = options, ini

    def getoption(self, name: str) -> object:
        return self.options.get(name)

    def getini(self, name: str) -> object:
        return self.ini.get(name, "")


@pytest.mark.unit
def test_scope_command_line_over_ini_over_default() -> None:
    def scope(options: dict[str, object], ini: dict[str, object]) -> object:
        return pytest_plugin._scope("mcached_server", Config(options, ini))  # type: ignore[arg-type]

    assert scope({}, {}) == "function"
    assert scope({}, {"mcached_scope": "session"}) == "session"
    assert scope({"mcached_scope": "function"}, {"mcached_scope": "session"}) == "function"
    with pytest.raises(pytest.UsageError, match="module"):
        scope({}, {"mcached_scope": "module"})


@pytest.mark.unit
def test_address_forms_and_a_bad_one() -> None:
    def address(text: str) -> object:
        return pytest_plugin._external(Config({"mcached_address": text}, {}))  # type: ignore[arg-type]

    assert address("127.0.0.1:11211") == ("127.0.0.1", 11211)
    assert address("[::1]:21001") == ("::1", 21001)
    with pytest.raises(pytest.UsageError, match="--mcached-address"):
        address("localhost:notaport")


def test_bug_a_shared_server_kept_the_run_time_settings_a_test_changed(tmp_path: Path) -> None:
    """Session scope: a test that sent ``cache_memlimit 8`` and ``verbosity 2`` left the
    next test a server of 8 MB logging every command; the server is now restarted (empty,
    on its port) when its ``stats settings`` is not what it was at the start."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_settings.py").write_text(
        "import socket\n"
        "\n"
        "def ask(server, line):\n"
        "    with socket.create_connection(server.address) as s:\n"
        "        s.sendall(line)\n"
        "        return s.recv(100)\n"
        "\n"
        "def test_1_changes_them(mcached_server):\n"
        "    assert ask(mcached_server, b'cache_memlimit 8\\r\\n') == b'OK\\r\\n'\n"
        "    assert ask(mcached_server, b'verbosity 2\\r\\n') == b'OK\\r\\n'\n"
        "    assert mcached_server.stats('settings')['maxbytes'] == 8 << 20\n"
        "\n"
        "def test_2_finds_them_as_they_started(mcached_server):\n"
        "    settings = mcached_server.stats('settings')\n"
        "    assert settings['maxbytes'] == 16 << 20, settings['maxbytes']\n"
        "    assert settings['verbosity'] == 0\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:hypothesispytest", "-p", "no:cacheprovider"]
        + ["-o", "mcached_scope=session", "-o", "mcached_args=-m 16", "test_settings.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed" in out, out
