"""scripts/bench.py's ``--metrics``: mcached with its endpoint on, scraped while a load runs.

The benchmark itself is not run here (it takes minutes and a quiet machine); this checks
the part the figures depend on: the ``mcached+metrics`` command really serves /metrics on
the port the script picked, and the scraper reads it on schedule and reports a failure as
an error of the run.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

import mcached
from tests.wire import Conn, exchange

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses and typing look the module up by name
    # the script imports its neighbour `servers`, as `python scripts/bench.py` finds it
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_metrics_server_is_scraped_during_the_load(bench: ModuleType) -> None:
    mcached = f"{sys.executable} -m mcached -l 127.0.0.1 -p {{port}} -m 64"
    args = bench.parse_args(
        ["--servers", "mcached", "--metrics", "--scrape-every", "0.05", "--mcached-cmd", mcached]
    )
    template = bench.server_templates(args)[bench.METRICS_SERVER]
    assert template == [*mcached.split(), "--metrics-listen", "127.0.0.1:{metrics_port}"]
    server = bench.Server(bench.METRICS_SERVER, template, 2)
    server.start()
    try:
        assert server.metrics_port and f"127.0.0.1:{server.metrics_port}" in server.argv
        with bench.Scraper(server.metrics_port, args.scrape_every) as scraper:
            deadline = time.monotonic() + 10
            while scraper.scrapes < 3:
                assert time.monotonic() < deadline, (
                    f"{scraper.first_error}; server alive: {server.alive()}\n{server.log_tail()}"
                )
                time.sleep(0.05)
    finally:
        server.stop()
    result: dict[str, object] = {"errors": 0}
    scraper.record(result)
    assert scraper.failures == 0 and result["errors"] == 0
    extra = result["extra"]
    assert isinstance(extra, dict) and extra["scrapes"] >= 3 and extra["scrape_ms"] > 0


def test_a_failed_scrape_is_an_error_of_the_run(bench: ModuleType) -> None:
    with bench.Scraper(bench.free_port(), 0.05) as scraper:  # nothing listens there
        deadline = time.monotonic() + 10
        while scraper.failures < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    result: dict[str, object] = {"errors": 1}
    scraper.record(result)
    assert result["errors"] == 1 + scraper.failures
    assert result["error_kinds"] == {"metrics scrape failed": scraper.failures}
    assert "Connection refused" in str(result["error_samples"])


def test_ceiling_runs_as_many_processes_as_mcached_has_workers_over_one_cache(
    bench: ModuleType,
) -> None:
    """``--ceiling``'s cache server: N processes accepting on one port share one cache (a
    set through one connection is a hit on every other), and go when bench.py stops it."""
    import psutil

    from mcached.settings import default_threads

    args = bench.parse_args(["--ceiling"])
    template = bench.server_templates(args)["ceiling-cache"]
    assert template[-2:] == ["--procs", str(default_threads())]
    template[-1] = "2"
    server = bench.Server("ceiling-cache", template, 2)
    server.start()
    try:
        assert server.proc is not None
        parent = psutil.Process(server.proc.pid)
        assert len(parent.children()) == 1  # the parent serves too
        with Conn(("127.0.0.1", server.port)) as first:
            exchange(first, b"set shared 0 0 5\r\nhello\r\n", b"STORED\r\n")
        for _ in range(8):  # whichever process accepts each
            with Conn(("127.0.0.1", server.port)) as conn:
                exchange(conn, b"get shared\r\n", b"VALUE shared 0 5\r\nhello\r\nEND\r\n")
        children = parent.children()
    finally:
        server.stop()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


REQUESTS = 2000


def test_cpu_sample_counts_every_worker_process(bench: ModuleType) -> None:
    """``srv us/op``, ``slept/op`` and ``preempted/op`` read all the server's processes: 2,000
    requests, each sent only once the last was answered, make the workers leave the CPU ~2,000
    times (the supervisor alone would show a handful of switches and next to no CPU). A worker
    with nothing to do waits in epoll (a voluntary switch), unless the machine is busy and it
    was preempted first (an involuntary one): a clean clone's run once counted 980 of the one
    and 1,455 of the other, so the two are counted together. /proc counts CPU time per thread
    in whole 10 ms ticks: 200 requests (~8 ms of CPU over two workers) once read as none at
    all on a clean clone."""
    template = f"{sys.executable} -m mcached -l 127.0.0.1 -p {{port}} -m 64 -t 2".split()
    server = bench.Server("mcached", template, 2)
    server.start()
    try:
        conns = [Conn(("127.0.0.1", server.port)) for _ in range(4)]
        before, machine0 = server.cpu_sample(), bench.machine_ticks()
        for i in range(REQUESTS):
            exchange(conns[i % 4], b"delete nokey\r\n", b"NOT_FOUND\r\n")
        time.sleep(0.05)  # a few clock ticks for /proc/stat, however fast the requests
        after, machine1 = server.cpu_sample(), bench.machine_ticks()
        for conn in conns:
            conn.close()
    finally:
        server.stop()
    switches = after[2] - before[2] + after[3] - before[3]
    assert switches >= REQUESTS // 2, (before, after)
    figures = bench.server_cpu(before, after, 1.0, REQUESTS)
    assert figures["server_user_us_per_op"] + figures["server_sys_us_per_op"] > 0
    assert figures["server_sleeps_per_op"] + figures["server_preempted_per_op"] >= 0.5
    machine = bench.machine_cpu(machine0, machine1)["machine_pct"]
    assert tuple(machine) == bench.MACHINE_CPU and abs(sum(machine.values()) - 100) < 1e-6
    line = bench.cpu_per_op({**figures, "machine_pct": machine})
    assert line.startswith("srv us/op ") and "; machine user " in line


def test_a_port_another_server_answers_is_not_taken_for_the_one_started(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The port picked can be taken by another test's server between probe and bind: the
    one started then fails to bind, but until it has exited, the other answers `version`.
    The benchmark took that for its server (and scraped a metrics port nobody listened on
    for 10 s); now the answer's `stats` pid must be the started command's."""
    with mcached.serve() as other:  # its pid is this process's
        monkeypatch.setattr(bench, "free_port", lambda: other.port)
        server = bench.Server("not-listening", ["sleep", "30"], 1)
        try:
            with pytest.raises(RuntimeError, match=f"answered by pid {os.getpid()}"):
                server.start()
        finally:
            server.stop()


def test_bug_the_dict_yardsticks_misses_do_not_fail_the_benchmark(bench: ModuleType) -> None:
    """`make bench` (with --ceiling) exited 1 after every run: the dict yardstick's mix
    counts misses (each of its processes keeps its own dict), which it cannot help. Those
    are expected of it; a miss anywhere else, or any other error, still fails the run."""
    misses = {"errors": 5, "error_kinds": {"miss": 5}}
    expected = bench.EXPECTED_ERRORS.get("ceiling", set())
    assert not bench.run_failed(misses, expected)
    assert bench.run_failed(misses, bench.EXPECTED_ERRORS.get("mcached", set()))
    assert bench.run_failed({"errors": 2, "error_kinds": {"miss": 1, "desync": 1}}, expected)
    assert bench.run_failed({"failed": "no reply", "errors": 0}, expected)
    assert bench.run_failed({"errors": 1}, set())
    assert not bench.run_failed({"errors": 0, "error_kinds": {}}, set())


def test_pair_ratios_take_each_round_over_the_same_round_of_the_reference(
    bench: ModuleType,
) -> None:
    """The round-by-round ratios: each round of a server over the same round of memcached,
    whatever order the lists are in; a round that failed on either side is left out."""
    ours = [
        {"round": 1, "ops_per_s": 90.0},
        {"round": 2, "ops_per_s": 80.0},
        {"round": 3, "failed": "server died", "ops_per_s": None},
        {"round": 4, "ops_per_s": 70.0},
    ]
    ref = [
        {"round": 4, "failed": "no reply", "ops_per_s": 100.0},
        {"round": 2, "ops_per_s": 100.0},
        {"round": 1, "ops_per_s": 120.0},
        {"round": 3, "ops_per_s": 100.0},
    ]
    assert bench.pair_ratios(ours, ref) == [0.75, 0.8]
    assert bench.pair_ratios(ours, []) == []
