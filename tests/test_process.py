"""mcached/process.py: the pid file's messages (memcached's words, in the log)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mcached import process

pytestmark = pytest.mark.unit


def test_the_pid_file_is_written_whole_and_removed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "mcached.pid"
    assert process.write_pidfile(str(path))
    assert path.read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == ["mcached.pid"]  # no temporary file left
    process.remove_pidfile(str(path))
    assert not path.exists()


def test_a_pid_file_that_cannot_be_written_is_logged_and_the_daemon_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing" / "mcached.pid"
    with caplog.at_level(logging.WARNING, "mcached"):
        assert not process.write_pidfile(str(path))
    assert caplog.messages == [
        f"Could not open the pid file {path}.{os.getpid()}.tmp for writing: "
        "No such file or directory"
    ]


def test_a_running_pid_in_the_old_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mcached.pid"
    path.write_text(f"{os.getppid()}\n")
    with caplog.at_level(logging.WARNING, "mcached"):
        assert process.write_pidfile(str(path))
    assert caplog.messages == [
        f"WARNING: The pid file contained the following (running) pid: {os.getppid()}"
    ]
    assert path.read_text() == f"{os.getpid()}\n"


def test_bug_a_pid_file_that_cannot_be_removed_was_left_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memcached prints "Could not remove the pid file ..." (mcached swallowed the error:
    a file left in a directory the -u user may not write went unnoticed)."""
    path = tmp_path / "mcached.pid"
    path.write_text(f"{os.getpid()}\n")

    def refuse(p: str) -> None:
        raise PermissionError(1, "Operation not permitted", p)

    monkeypatch.setattr(os, "unlink", refuse)
    with caplog.at_level(logging.WARNING, "mcached"):
        process.remove_pidfile(str(path))
    assert caplog.messages == [f"Could not remove the pid file {path}: Operation not permitted"]


def test_a_pid_file_another_instance_wrote_over_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mcached.pid"
    path.write_text("1\n")
    process.remove_pidfile(str(path))
    assert path.read_text() == "1\n"


class FakeLimits:
    """resource.getrlimit/setrlimit for RLIMIT_NOFILE; `cap`: what setrlimit refuses past."""

    def __init__(self, soft: int, hard: int, cap: int = 1 << 20) -> None:
        self.limits = (soft, hard)
        self.cap = cap
        self.set: list[tuple[int, int]] = []

    def getrlimit(self, which: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        if limits[1] > self.cap:
            raise ValueError("not allowed to raise maximum limit")
        self.set.append(limits)
        self.limits = limits


@pytest.mark.parametrize(
    ("soft", "hard", "cap", "ok", "after"),
    [
        (256, 4096, 1 << 20, 1120, (1120, 4096)),  # the soft limit raised to what -c needs
        (256, 512, 1 << 20, 1120, (1120, 1120)),  # the hard one too, when root may
        (256, 512, 512, 512, (512, 512)),  # not root: as high as allowed (short of -c: exit)
        (5000, 5000, 1 << 20, 1120, (5000, 5000)),  # higher already: never lowered
    ],
)
def test_c_sets_the_open_files_limit_with_room_and_never_lowers_it(
    monkeypatch: pytest.MonkeyPatch,
    soft: int,
    hard: int,
    cap: int,
    ok: int,
    after: tuple[int, int],
) -> None:
    fake = FakeLimits(soft, hard, cap)
    monkeypatch.setattr(process.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(process.resource, "setrlimit", fake.setrlimit)
    needed = process.open_files_needed(1024, 4, 1)
    assert needed == 1024 + 64 + 4 * (4 + 4)
    assert process.raise_open_files(needed) == ok
    assert fake.limits == after
