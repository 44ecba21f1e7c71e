"""mcached/server/workers.py: a long batch of ready sockets is served in slices, other
workers' requests for figures answered between two (`Worker._sliced`)."""

from __future__ import annotations

import pytest

from mcached.server.workers import ANSWER_EVERY, Worker

pytestmark = pytest.mark.unit


class Answering:
    """What `_sliced` uses of a worker: its answer to the board's requests, noted with how
    many events had been served by then."""

    def __init__(self) -> None:
        self.served = 0
        self.answered_at: list[int] = []

    def answer_requests(self) -> None:
        self.answered_at.append(self.served)


def test_a_long_batch_is_served_in_slices_with_answers_between() -> None:
    """Regression (a hunt): a worker answered other workers' requests (``stats``, which
    waits for every worker, the asking worker's clients with it) only between two polls,
    after serving every ready connection once: seconds with hundreds of busy ones."""
    w = Answering()
    events = [(fd, 1) for fd in range(2 * ANSWER_EVERY + 3)]
    seen = []
    for event in Worker._sliced(w, events):  # type: ignore[arg-type]
        seen.append(event)
        w.served += 1
    assert seen == events  # every event once, in order
    assert w.answered_at == [ANSWER_EVERY, 2 * ANSWER_EVERY]
