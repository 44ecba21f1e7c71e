"""The harness's own rules: reading TAP, judging a run, the memcached-debug wrapper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.memcached_suite import runner

pytestmark = pytest.mark.unit

TAP = """\
1..4
ok 1 - stored foo
2026-01-01 00:00:00,000 mcached[1] INFO ready
not ok 2 - auto works
#   Failed test 'auto works'
ok 3
not ok 4 - big == 'xxxx'
"""


def test_parse_reads_plan_passes_and_failures() -> None:
    r = runner.parse("f.t", 2, 1.0, TAP)
    assert r.planned == 4
    assert r.ran == [1, 2, 3, 4]
    assert r.failed == {2: "auto works", 4: "big == 'xxxx'"}


def test_failures_outside_the_allowed_ones_are_problems() -> None:
    r = runner.parse("f.t", 2, 1.0, TAP)
    assert r.problems({"auto works": "", "big ==": ""}) == []
    assert r.problems({"auto works": ""}) == ["failed subtests: 4 (big == 'xxxx')"]


@pytest.mark.parametrize(
    ("status", "text", "unrun", "problem"),
    [
        (None, TAP, 0, "timed out after 1s"),
        (10, "Failed to connect\n", 0, "no TAP plan (the file died before its first test)"),
        (2, TAP.replace("1..4", "1..5"), 0, "planned 5 tests, ran 4"),
        (255, TAP, 0, "exit status 255"),  # died after its last test
    ],
)
def test_what_fails_a_run(status: int | None, text: str, unrun: int, problem: str) -> None:
    r = runner.parse("f.t", status, 1.0, text)
    assert problem in r.problems({"auto works": "", "big": ""}, unrun)


def test_unrun_subtests_are_allowed_only_in_that_number() -> None:
    r = runner.parse("f.t", 2, 1.0, TAP.replace("1..4", "1..5"))
    assert r.problems({"auto works": "", "big": ""}, unrun=1) == []
    assert r.problems({"auto works": "", "big": ""}, unrun=2) == ["planned 5 tests, ran 4"]


def test_skip_all_is_a_pass() -> None:
    r = runner.parse("f.t", 0, 0.1, "1..0 # SKIP extstore not enabled\n")
    assert r.problems({}) == []


def test_report_leaves_out_passes_and_server_logs_and_cuts_long_lines() -> None:
    r = runner.parse("f.t", 1, 1.0, TAP + "#   got: '" + "x" * 1000 + "'\n")
    report = r.report()
    assert "ok 1" not in report and "INFO" not in report
    assert "not ok 2 - auto works" in report
    assert "[...]" in report


def test_wrapper_drops_relaxed_privileges_and_answers_h_from_its_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memcached-debug passes every argument but the debug build's `-o relaxed_privileges`."""
    source = tmp_path / "src"
    (source / "t").mkdir(parents=True)
    echo = tmp_path / "echo-args"
    echo.write_text(
        '#!/bin/sh\nif [ "$1" = -h ]; then echo "usage: -s, --unix-socket"; exit 3; fi\n'
        'printf "<%s>" "$@"\n'
    )
    echo.chmod(0o755)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(runner, "server_command", lambda kind: [str(echo)])
    runner.make_run_dir(run_dir, "echo", source)
    wrapper = str(run_dir / "memcached-debug")
    args = ["-p", "1", "-o", "relaxed_privileges", "-o", "no_modern", "-o"]
    out = subprocess.run([wrapper, *args], capture_output=True, text=True, check=True).stdout
    assert out == "<-p><1><-o><no_modern><-o>"
    h = subprocess.run([wrapper, "-h"], capture_output=True, text=True)
    assert (h.returncode, h.stdout) == (3, "usage: -s, --unix-socket\n")
    timedrun = str(run_dir / "timedrun")
    out = subprocess.run([timedrun, "600", wrapper, "-U", "0"], capture_output=True, text=True)
    assert out.stdout == "<-U><0>"
    assert (run_dir / "t").resolve() == (source / "t").resolve()


# binary.t's output where it raced the server's clock in a CI run (its "Touch commands": a
# set with an exptime of 1, then a touch that found the item already expired); it plans at
# the end (done_testing), so a death leaves no plan
RACED = """\
ok 1954 - Flags is set properly
ok 1955 - toast2 = toast2
ok 1956 - Expected read length
ok 1957 - Got proper response magic
ok 1958 - Expected read length
ok 1959 - Got proper response magic
ok 1960 - Expected opaque
Memcache Error (1): Not found# Tests were run but no plan was declared and done_testing() was \
not seen.
# Looks like your test exited with -1 just after 1960.
"""


def test_a_death_where_binary_t_races_the_clock_is_run_once_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raced = runner.parse("binary.t", 255, 1.0, RACED)
    passed = runner.parse("binary.t", 0, 1.0, "ok 1 - x\n1..1\n")
    runs = iter([raced, passed, raced])
    monkeypatch.setattr(runner, "run_once", lambda *a, **k: next(runs))
    assert runner.lost_clock_race(raced)
    assert runner.run_file(Path("/nonexistent"), "binary.t", 1.0) is passed
    # once more only: the next run's death is the test's
    runs = iter([raced, raced, passed])
    assert runner.run_file(Path("/nonexistent"), "binary.t", 1.0) is raced


# shutdown.t's output where a server it started after its first test found its port taken
# (a CI run on 3.12: over TLS, the suite's other processes starting servers meanwhile); it
# plans at the end, so the death leaves no plan
PORT_RACED = """\
ok 1 - shutdown is not allowed by default
failed to listen on 127.0.0.1 port 44012: Address already in use
Failed to connect: memcached not running at t/shutdown.t line 21.
# Tests were run but no plan was declared and done_testing() was not seen.
# Looks like your test exited with 10 just after 1.
"""


@pytest.mark.parametrize("output", [PORT_RACED, PORT_RACED.split("\n", 1)[1]])
def test_a_file_whose_server_found_its_port_taken_is_run_once_more(
    monkeypatch: pytest.MonkeyPatch, output: str
) -> None:
    raced = runner.parse("shutdown.t", 10, 1.0, output)
    passed = runner.parse("shutdown.t", 0, 1.0, "ok 1 - x\n1..1\n")
    runs = iter([raced, passed])
    monkeypatch.setattr(runner, "run_once", lambda *a, **k: next(runs))
    assert runner.run_file(Path("/nonexistent"), "shutdown.t", 1.0) is passed
    # once more only
    runs = iter([raced, raced, passed])
    assert runner.run_file(Path("/nonexistent"), "shutdown.t", 1.0) is raced
    # a run that passed is kept, whatever its output says
    lucky = runner.parse("shutdown.t", 0, 1.0, "ok 1 - x\n1..1\n" + output)
    runs = iter([lucky, passed])
    assert runner.run_file(Path("/nonexistent"), "shutdown.t", 1.0) is lucky


FAR_FROM_THE_RACE = (
    "ok 1955 - toast2 = toast2\n"
    + "".join(f"ok {n} - Expected opaque\n" for n in range(1956, 1965))
    + "Memcache Error (1): Not found\n"
)


@pytest.mark.parametrize(
    ("name", "status", "output"),
    [
        ("getset.t", 255, RACED),  # not a file with a known race
        ("binary.t", 255, "not ok 1953 - Flags\n" + RACED),  # a subtest failed before it
        ("binary.t", 255, RACED.replace("Not found", "Exists")),  # another error
        # the same error, far from the race: an item lost elsewhere
        ("binary.t", 255, FAR_FROM_THE_RACE),
        ("binary.t", 0, RACED + "1..1960\n"),  # finished
        ("binary.t", 255, RACED + "1..1960\n"),  # died after its last test
    ],
)
def test_other_deaths_are_not_run_again(name: str, status: int, output: str) -> None:
    assert not runner.lost_clock_race(runner.parse(name, status, 1.0, output))
