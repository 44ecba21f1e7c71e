"""The watch rings (mcached/server/eventlog.py): a read delivers gids in order across rings."""

from __future__ import annotations

import threading
import time

import pytest

from mcached import watch
from mcached.server.board import G_LOG_SEQ, Board
from mcached.server.eventlog import EventLog

pytestmark = pytest.mark.unit


def emit_from(log: EventLog, slot: int, key: bytes) -> None:
    """One item_get written by a thread bound to worker `slot`'s ring."""

    def run() -> None:
        log.bind(slot)
        log.item_get(watch.FOUND, key, 1, 3, 7)

    t = threading.Thread(target=run)
    t.start()
    t.join()


def test_a_record_drawn_after_the_read_began_waits_for_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ring 0 was read before gid 1 was written to it, and gid 2 reached ring 1 before ring
    1 was read: the read that began before both takes neither, so the watcher never sees
    gid 2 before gid 1."""
    log = EventLog(Board(2, ["cmd_get"]))
    try:
        cursors = log.cursors()
        emit_from(log, 0, b"first")
        emit_from(log, 1, b"second")
        words = log.board.words
        # as a read that began before both gids were drawn sees the counter and the clock
        words[G_LOG_SEQ] = 0
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: 0.0)
            got, lost = log.read(cursors, watch.FETCHERS)
        assert got == [] and lost == 0 and cursors == [0, 0]
        words[G_LOG_SEQ] = 2
        got, lost = log.read(cursors, watch.FETCHERS)
        assert [(r[0], r[-1]) for r in got] == [(1, b"first"), (2, b"second")] and lost == 0
    finally:
        log.close()


def test_a_record_stamped_before_the_read_is_taken_whatever_its_gid() -> None:
    """Two processes bumping the unlocked counter at once can step it back: a record whose
    gid is past the counter but whose time is before the read is still delivered."""
    log = EventLog(Board(2, ["cmd_get"]))
    try:
        cursors = log.cursors()
        emit_from(log, 1, b"late")
        log.board.words[G_LOG_SEQ] = 0  # stepped back
        time.sleep(0.01)
        got, _ = log.read(cursors, watch.FETCHERS)
        assert [(r[0], r[-1]) for r in got] == [(1, b"late")]
    finally:
        log.close()
