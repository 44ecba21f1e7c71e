"""mcached/server/board.py: the published vector (summed like the counters, kept when a worker
dies, read against a reset) and the asker slots (a gatherer that serves nothing)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from mcached.server.board import COUNTERS, RUNNING, W_STATE, Board

pytestmark = pytest.mark.unit


@dataclass
class Figures:
    cmd_get: int = 0


def test_vectors_are_summed_kept_after_a_death_and_read_against_a_reset() -> None:
    board = Board(2, ["cmd_get"], vector=3)
    board.publish(0, Figures(5), None, [1, 2, 3])
    board.publish(1, Figures(7), None, [10, 20, 30])
    assert board.totals()["cmd_get"] == 12
    assert board.vector_totals() == [11, 22, 33]
    board.retire(1)  # a dead worker's figures stay in the totals
    assert board.vector_totals() == [11, 22, 33]
    board.reset()
    assert board.vector_totals() == [0, 0, 0] and board.totals()["cmd_get"] == 0
    board.publish(0, Figures(6), None, [2, 2, 3])
    assert board.vector_totals() == [1, 0, 0] and board.totals()["cmd_get"] == 1
    board.close()


def test_an_asker_gathers_every_workers_figures_and_no_worker_waits_for_it() -> None:
    """Two workers (threads that answer requests as a worker's loop does); the asker's
    gather returns once both published what it asked for."""
    board = Board(2, ["cmd_get"], askers=1)
    asker = board.asker()
    assert asker == 2
    with pytest.raises(ValueError):
        board.asker(1)
    seen = [[0] * board.requesters for _ in range(2)]
    stop = threading.Event()

    def worker(slot: int) -> None:
        board.set_word(slot, W_STATE, RUNNING)
        n = 0
        while not stop.is_set():
            n += 1
            if board.requests(slot, seen[slot]) & COUNTERS:
                board.publish(slot, Figures(100 * (slot + 1) + n), None)
                board.acknowledge(slot, seen[slot])
            time.sleep(0.001)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    try:
        while board.live() != [0, 1]:
            time.sleep(0.001)
        assert board.gather(asker, COUNTERS, lambda: None) == []
        assert board.totals()["cmd_get"] > 300  # both published after the request
        # a worker asking meanwhile is not held up by the asker's slot (never RUNNING)
        assert board.word(asker, W_STATE) != RUNNING
    finally:
        stop.set()
        for t in threads:
            t.join()
        board.close()
