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
