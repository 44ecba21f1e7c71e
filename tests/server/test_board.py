"""mcached/server/board.py: the published vector (summed like the counters, kept when a worker
dies, read against a reset) and the asker slots (a gatherer that serves nothing)."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from mcached.server.board import (
    COUNTERS,
    G_KEPT_LEN,
    G_RELOAD_EPOCH,
    G_SETTINGS_EPOCH,
    G_WATCH,
    PUB_WAIT,
    RESET,
    RUNNING,
    STOPPING,
    W_ACCEPTING,
    W_BLOB_LEN,
    W_CONNS,
    W_PUB_SEQ,
    W_RELOADED,
    W_STATE,
    W_WATCH,
    W_WATCHERS,
    Board,
)

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


def test_what_a_dead_worker_published_is_kept_as_its_owner_says_until_a_reset() -> None:
    """`keep` decides what of a dead worker's last blob stays (the board does not know what
    a blob holds); a slot retired twice, or with nothing published, adds nothing more; a
    reset empties it, as it zeroes the totals."""
    calls = []

    def keep(kept: dict[str, int], dead: dict[str, int]) -> dict[str, int]:
        calls.append(dead)
        return {"n": kept.get("n", 0) + dead["n"]}

    board = Board(2, ["cmd_get"], keep=keep)
    assert board.kept() == {}
    board.publish(0, Figures(1), {"n": 3, "conns": 9}, ())
    board.publish(1, Figures(1), {"n": 4}, ())
    board.retire(0)
    board.retire(0)  # its blob went with the first
    assert board.kept() == {"n": 3} and board.blob(0) == {}
    board.retire(1)
    assert board.kept() == {"n": 7}
    assert calls == [{"n": 3, "conns": 9}, {"n": 4}]
    board.reset()
    assert board.kept() == {}
    board.close()


def test_a_blob_being_rewritten_is_read_once_whole_or_not_at_all() -> None:
    """A slot's blob is read without the lock while its worker may rewrite it: the reader
    reads again while the sequence word is odd (or moved), and gives up after PUB_WAIT
    (a worker that died while writing); a dead worker's retirement reads it as it is."""
    kept: list[dict[str, int]] = []

    def keep(k: dict[str, int], dead: dict[str, int]) -> dict[str, int]:
        kept.append(dead)
        return dead

    board = Board(2, ["cmd_get"], keep=keep)
    board.publish(0, Figures(1), {"n": 1}, ())
    seq = board.base(0) + W_PUB_SEQ
    assert board.words[seq] == 2  # written once: odd then even again
    board.words[seq] += 1  # a rewrite under way (odd)

    def finish() -> None:
        board._write_blob(0, {"n": 2}, board.base(0) + W_BLOB_LEN)  # its bytes and length,
        board.words[seq] += 1  # then the word, even again

    writer = threading.Timer(0.02, finish)
    writer.start()
    assert board.blob(0) == {"n": 2}  # waited for the rewrite, not the blob half written
    writer.join()
    board.words[seq] += 1  # a writer that never finishes: none, after PUB_WAIT
    t0 = time.monotonic()
    assert board.blob(0) == {}
    assert time.monotonic() - t0 >= PUB_WAIT
    t0 = time.monotonic()
    board.retire(0)  # (it died so) its retirement reads the blob without waiting
    assert time.monotonic() - t0 < PUB_WAIT
    assert kept == [{"n": 2}] and board.words[seq] == 0
    board.close()


@dataclass
class Gets:
    cmd_get: int = 0
    get_hits: int = 0
    get_misses: int = 0


def test_totals_and_a_reset_never_read_a_publish_half_written() -> None:
    """A worker publishes over and over (another process: as a worker for other workers'
    requests) figures that always add up (cmd_get = get_hits + get_misses); the totals
    read meanwhile add up too, and so does the baseline a reset takes. (Read word by word
    while the words were rewritten, about a third of the reads did not add up, and a
    reset's baseline kept that for good.)"""
    board = Board(2, ["cmd_get", "get_hits", "get_misses"])
    board.set_word(0, W_STATE, RUNNING)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            figures = Gets()
            while True:
                figures.cmd_get += 2
                figures.get_hits += 1
                figures.get_misses += 1
                board.publish(0, figures, None)
        finally:
            os._exit(0)
    try:
        torn = reads = 0
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            t = board.totals()
            reads += 1
            torn += t["cmd_get"] != t["get_hits"] + t["get_misses"]
            if reads % 50 == 0:
                board.reset()
        assert reads > 100 and torn == 0, f"{torn} of {reads} totals did not add up"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # (killed in the middle of a publish, maybe: its slot written again whole, as a
    # worker's successor does) the baselines added up too
    board.set_word(0, W_PUB_SEQ, 0)
    board.publish(0, Gets(10, 5, 5), None)
    t = board.totals()
    assert t["cmd_get"] == t["get_hits"] + t["get_misses"]
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
            asked = board.requests(slot, seen[slot])
            if asked:
                board.publish(slot, Figures(100 * (slot + 1) + n), None)
                board.acknowledge(slot, seen[slot], asked)
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


def test_the_next_worker_of_a_retired_slot_is_answered_at_once_with_fresh_figures() -> None:
    """Worker 1 asks a few times, dies (retired), and the next worker of its slot asks:
    worker 0, which remembers the dead one's last request as answered, answers the new
    one, so the gather is whole and the figures are those worker 0 has now. (With the
    request numbers of the slot restarted from zero, worker 0 took them for answered: the
    gather returned slot 0 as late, and its figures were a publish behind: 0 here.)"""
    board = Board(2, ["cmd_get"])
    seen0 = [0] * board.requesters
    figures0 = [0]
    stop = threading.Event()

    def worker0() -> None:
        board.set_word(0, W_STATE, RUNNING)
        while not stop.is_set():
            asked = board.requests(0, seen0)
            if asked:
                board.publish(0, Figures(figures0[0]), None)
                board.acknowledge(0, seen0, asked)
            time.sleep(0.001)

    thread = threading.Thread(target=worker0)
    thread.start()
    try:
        while board.live() != [0]:
            time.sleep(0.001)
        board.set_word(1, W_STATE, RUNNING)
        for _ in range(5):
            assert board.gather(1, COUNTERS, lambda: None, wait=10) == []
        board.retire(1)
        figures0[0] = 42  # served since its last publish
        board.set_word(1, W_STATE, RUNNING)  # the next worker of slot 1
        assert board.gather(1, COUNTERS, lambda: None, wait=10) == []
        assert board.totals()["cmd_get"] == 42
    finally:
        stop.set()
        thread.join()
        board.close()


def test_behind_lists_the_running_workers_short_of_an_epoch() -> None:
    """What the supervisor waits on after SIGHUP (W_RELOADED against G_RELOAD_EPOCH)."""
    board = Board(3, ["cmd_get"])
    for slot in range(3):
        board.set_word(slot, W_STATE, RUNNING)
    board.bump(G_RELOAD_EPOCH)
    epoch = board.get(G_RELOAD_EPOCH)
    assert board.behind(W_RELOADED, epoch) == [0, 1, 2]
    board.set_word(1, W_RELOADED, epoch)
    board.set_word(2, W_STATE, STOPPING)  # not waited for
    assert board.behind(W_RELOADED, epoch) == [0]
    board.close()


def test_connection_numbers_are_unique_across_worker_processes() -> None:
    """Worker processes number their descriptors each for itself: `conn_number` makes one
    number of a slot and a descriptor (worker threads share one table: the descriptor)."""
    board = Board(4, ["cmd_get"])
    numbers = {board.conn_number(slot, fd) for slot in range(4) for fd in range(3, 200)}
    assert len(numbers) == 4 * 197
    assert board.conn_number(2, 25) == 25 * 4 + 2
    board.threads()
    assert board.conn_number(2, 25) == 25
    board.close()


def test_a_dead_workers_watchers_no_longer_make_the_others_log() -> None:
    """Worker 1 served a watcher of flags 4 and died (killed: it could not say so itself);
    its retirement leaves G_WATCH with worker 0's flags alone and bumps the settings epoch,
    so every worker copies them (before, they went on logging for nobody)."""
    board = Board(2, ["x"])
    board.set_word(0, W_WATCH, 3)
    board.set_word(0, W_WATCHERS, 1)
    board.set_word(1, W_WATCH, 4)
    board.set_word(1, W_WATCHERS, 1)
    board.set(G_WATCH, 7)
    epoch = board.get(G_SETTINGS_EPOCH)
    board.retire(1)
    assert board.get(G_WATCH) == 3 and board.watchers() == (1, 3)
    assert board.get(G_SETTINGS_EPOCH) == epoch + 1
    board.retire(0)
    assert board.get(G_WATCH) == 0 and board.get(G_SETTINGS_EPOCH) == epoch + 2
    board.close()


def test_a_connection_goes_to_the_running_accepting_worker_with_the_fewest() -> None:
    board = Board(4, ["x"])
    for slot, (conns, state, accepting) in enumerate(
        [(3, RUNNING, 1), (1, RUNNING, 1), (0, STOPPING, 1), (0, RUNNING, 0)]
    ):
        board.set_word(slot, W_CONNS, conns)
        board.set_word(slot, W_STATE, state)
        board.set_word(slot, W_ACCEPTING, accepting)
    # the acceptor has counted the new connection: slot 0 had 2 before it, slot 1 has 1;
    # slot 2 stops and slot 3 is out of descriptors: slot 1 is the one with fewer
    assert board.fewer_than(0) == 1
    board.set_word(1, W_CONNS, 2)  # slot 1 accepted one: it had 1, none has fewer
    assert board.fewer_than(1) is None
    board.set_word(0, W_CONNS, 2)  # slot 0 had 1 before: as few is not fewer, it keeps it
    assert board.fewer_than(0) is None
    board.set_word(3, W_ACCEPTING, 1)
    assert board.fewer_than(0) == 3 and board.fewer_than(1) == 3
    board.close()


def test_a_connection_handed_over_arrives_whole_with_its_listener() -> None:
    board = Board(2, ["x"])
    a, b = socket.socketpair()
    try:
        board.set_word(1, W_CONNS, 2)
        board.set_word(0, W_CONNS, 1)  # the sender accepted it (and counted it)
        assert board.connections() == 3 and board.load(1) == 2
        assert board.hand_over(0, 1, a, 3, "[::1]:4321")
        assert a.fileno() == -1  # the sender's descriptor is closed once it went
        # on its way: counted by -c and by balancing, on the receiver's side
        assert board.connections() == 3 and board.load(1) == 3 and board.load(0) == 0
        assert board.word(0, W_CONNS) == 0
        msg, fds, _, _ = socket.recv_fds(board.handoff_fd(1), 512, 1)
        assert msg == b"3 [::1]:4321" and len(fds) == 1
        board.arrived(1, len(fds))  # now the receiver's own
        assert board.connections() == 3 and board.load(1) == 3
        assert board.word(1, W_CONNS) == 3
        with socket.socket(fileno=fds[0]) as received:  # works without the sender's
            received.sendall(b"ping")
            assert b.recv(4) == b"ping"
    finally:
        a.close()
        b.close()
        board.close()


def test_worker_threads_hand_over_the_socket_itself() -> None:
    """Between threads no descriptor is made: the socket goes into the receiver's queue and
    a datagram wakes it; counted in flight until taken, as between processes."""
    board = Board(2, ["x"])
    board.threads()
    a, b = socket.socketpair()
    try:
        assert board.take_queued(1) == []
        board.set_word(0, W_CONNS, 1)  # the sender accepted it
        assert board.hand_over(0, 1, a, 2, "127.0.0.1:5")
        assert board.connections() == 1 and board.load(1) == 1 and board.load(0) == 0
        assert a.fileno() >= 0  # not closed: the receiver serves this very object
        assert board.handoff_fd(1).recv(512, socket.MSG_PEEK)  # it is woken
        assert board.take_queued(1) == [(a, 2, "127.0.0.1:5")]
        assert board.connections() == 1 and board.word(1, W_CONNS) == 1  # its own now
        with pytest.raises(BlockingIOError):  # its wake-ups were read with it
            board.handoff_fd(1).recv(512)
        assert board.hand_over(0, 1, a, 0, "127.0.0.1:5")
    finally:
        board.close()  # a socket still queued is closed with the board
        assert a.fileno() == -1
        b.close()


class Watching(deque[object]):
    """A worker thread's queue of handed connections that notes, as each one goes in (from
    then on the receiver can take and serve it), what `seen` returns."""

    def __init__(self, seen: Callable[[], object]):
        super().__init__()
        self.seen = seen
        self.noted: list[object] = []

    def append(self, item: object) -> None:
        self.noted.append(self.seen())
        super().append(item)


class SendingFds:
    """A datagram socket whose sendmsg (`socket.send_fds`) notes what `seen` returns just
    before the descriptor goes (from then on the receiver can take and serve it)."""

    def __init__(self, sock: socket.socket, seen: Callable[[], object]):
        self.sock = sock
        self.seen = seen
        self.noted: list[object] = []

    def sendmsg(self, *args: Any) -> int:
        self.noted.append(self.seen())
        return self.sock.sendmsg(*args)


@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
def test_the_sender_counts_a_connection_out_before_the_receiver_can_take_it(
    threads: bool,
) -> None:
    """Once the receiver can serve a handed connection, the sender's load is without it:
    the next connection's worker is chosen by the loads (`fewer_than`). Regression: the
    sender counted it out after the hand-over, and a worker thread that waited for the GIL
    there kept its load one too high while the receiver served the connection and its
    client opened the next (the embedded server at 4 threads then dealt 8 connections out
    1, 2, 2, 3)."""
    board = Board(2, ["x"])
    if threads:
        board.threads()
    a, b = socket.socketpair()
    try:
        board.set_word(0, W_CONNS, 2)  # the sender had 1 and accepted this one
        board.set_word(1, W_CONNS, 0)

        def seen() -> tuple[int, int, int]:
            return board.load(0), board.load(1), board.connections()

        watch: Watching | SendingFds
        if threads:
            assert board.inboxes is not None
            watch = board.inboxes[1] = Watching(seen)
        else:
            r, w = board.handoffs[1]
            watch = SendingFds(w, seen)
            board.handoffs[1] = (r, watch)  # type: ignore[assignment]
        assert board.hand_over(0, 1, a, 0, "p")
        assert watch.noted == [(1, 1, 2)]
        if not threads:
            board.handoffs[1] = (r, w)
    finally:
        a.close()
        b.close()
        board.close()


class Interleaved:
    """A thread's view of a board's words whose slice reads (what `Board.connections`
    reads, a slice of the words at a time) let other workers' steps happen first, as a
    schedule says: the steps listed under ``n`` run just before the ``n``-th slice read."""

    def __init__(self, words: memoryview, schedule: dict[int, list[Callable[[], object]]]):
        self.words = words
        self.schedule = schedule
        self.reads = 0

    def __getitem__(self, key: int | slice) -> object:
        if isinstance(key, slice):
            for step in self.schedule.pop(self.reads, []):
                step()
            self.reads += 1
        return self.words[key]

    def __setitem__(self, key: int, value: int) -> None:
        self.words[key] = value


@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
def test_a_connection_on_its_way_is_counted_wherever_the_count_reads_it(threads: bool) -> None:
    """-c is read while other workers change the words: a connection handed over (accepted
    and counted by worker 0, handed to worker 1, taken there) must be counted at least once
    wherever its steps fall between the count's reads, or one more newcomer gets in past the
    limit. Every placement of the steps is tried. Regression: the taken word was bumped
    before the receiver counted the connection, and the open connections were read before
    the taken ones, so a count read across a step saw none (31 connections let in under -c
    30 on a free-threaded interpreter)."""
    for first, second in itertools.combinations_with_replacement(range(6), 2):
        counted, after = count_during_a_hand_over(threads, first, second)
        assert counted >= 6, f"steps before reads {first} and {second}: {counted}"
        assert after == 6


def count_during_a_hand_over(threads: bool, first: int, second: int) -> tuple[int, int]:
    """What `Board.connections` says when a connection goes from worker 0 to worker 1 (a
    third holds 5), handed over just before its `first` slice read and taken just before
    its `second` (or after the count, past its last read); and the count once it is done."""
    board = Board(3, ["x"])
    if threads:
        board.threads()
    a, b = socket.socketpair()
    try:
        board.set_word(2, W_CONNS, 5)  # a third worker's own
        board.add(0, W_CONNS, 1)  # worker 0 accepted it

        def hand_over() -> None:
            assert board.hand_over(0, 1, a, 0, "p")

        def take() -> None:
            if threads:
                assert len(board.take_queued(1)) == 1
            else:
                _, fds, _, _ = socket.recv_fds(board.handoff_fd(1), 512, 1)
                board.arrived(1, len(fds))
                os.close(fds[0])

        schedule: dict[int, list[Callable[[], object]]] = {}
        schedule.setdefault(first, []).append(hand_over)
        schedule.setdefault(second, []).append(take)
        words = board._own_words()  # what this thread's sums read slices of
        interleaved = Interleaved(words, schedule)
        board._local.words = interleaved
        try:
            counted = board.connections()
        finally:
            board._local.words = words
        assert interleaved.reads >= 2  # the count reads a slice at a time
        for n in sorted(schedule):  # the steps placed after the count's last read
            for step in schedule[n]:
                step()
        return counted, board.connections()
    finally:
        a.close()
        b.close()
        board.close()


class Meanwhile:
    """A board's words through which the calling thread's first write to word `at` (or
    its first read, with `on_read`) lets another worker act: `other` runs in a thread of
    its own, waited for up to `wait` seconds (it finishes at once unless it waits for the
    board's lock, which the calling thread may hold), then the caller goes on. Two
    processes' sequences interleaved at a chosen word, in one process."""

    def __init__(
        self, board: Board, at: int, other: Callable[[], object], on_read: bool = False
    ) -> None:
        self.board = board
        self.words = board.words
        self.at = at
        self.other = other
        self.on_read = on_read
        self.thread: threading.Thread | None = None
        self.caller = threading.get_ident()

    def __enter__(self) -> Meanwhile:
        self.board.words = self  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:
            self.thread.join(10)
        self.board.words = self.words

    def _act(self, key: object) -> None:
        if key == self.at and self.thread is None and threading.get_ident() == self.caller:
            self.thread = threading.Thread(target=self.other)
            self.thread.start()
            self.thread.join(0.5)  # under LOCK_WAIT: a blocked one gets the lock after

    def __getitem__(self, key: int | slice) -> object:
        value = self.words[key]
        if self.on_read:
            self._act(key)
        return value

    def __setitem__(self, key: int | slice, value: object) -> None:
        self.words[key] = value  # type: ignore[assignment]
        if not self.on_read:
            self._act(key)


def test_bug_a_reset_in_the_middle_of_a_retirement_counted_the_dead_worker_twice() -> None:
    """Worker 1 died; as the supervisor moves its figures to the retired row (added there,
    not yet zeroed in its slot), a worker serves ``stats reset``. The totals read 0 after
    both. (They read -7: the reset counted the dead worker twice into the baseline, and
    every total read low by its figures until the next reset.)"""
    board = Board(2, ["cmd_get"])
    board.publish(0, Figures(5), None)
    board.publish(1, Figures(7), None)
    with Meanwhile(board, board.retired_base, board.reset):
        board.retire(1)
    assert board.totals()["cmd_get"] == 0
    board.publish(0, Figures(6), None)
    assert board.totals()["cmd_get"] == 1
    board.close()


def test_bug_stats_read_in_the_middle_of_a_retirement_counted_the_dead_worker_twice() -> None:
    """The same moment, for a worker reading the totals (``stats``): 12, not 19."""
    board = Board(2, ["cmd_get"])
    board.publish(0, Figures(5), None)
    board.publish(1, Figures(7), None)
    read: list[int] = []
    with Meanwhile(board, board.retired_base, lambda: read.append(board.totals()["cmd_get"])):
        board.retire(1)
    assert read == [12]
    board.close()


def test_bug_a_retirement_around_a_reset_brought_the_kept_table_back() -> None:
    """Worker 0 died earlier (its table kept); as the supervisor retires worker 1 (it has
    read the kept blob, not yet written it back with worker 1's table added), a worker
    serves ``stats reset``. The kept blob is empty after both: the reset came last. (It
    held both tables: the retirement wrote back what it had read before the reset.)"""

    def keep(kept: dict[str, int], dead: dict[str, int]) -> dict[str, int]:
        return {"n": kept.get("n", 0) + dead["n"]}

    board = Board(2, ["cmd_get"], keep=keep)
    board.publish(0, Figures(1), {"n": 3})
    board.publish(1, Figures(1), {"n": 4})
    board.retire(0)
    assert board.kept() == {"n": 3}
    with Meanwhile(board, G_KEPT_LEN, board.reset, on_read=True):
        board.retire(1)
    assert board.kept() == {} and board.totals()["cmd_get"] == 0
    board.close()


def test_bug_two_resets_at_once_both_moved_the_baseline() -> None:
    """Two workers serve ``stats reset`` at once: the second reads the totals while the
    first adds them to the baseline, field by field. Every total reads 0 after both. (The
    second added what the first was adding: total_connections read -3.)"""
    board = Board(1, ["cmd_get"])
    board.publish(0, Figures(5), None)
    board.add_figure(0, "total_connections", 3)
    with Meanwhile(board, board.baseline_base, board.reset):
        board.reset()
    assert set(board.totals().values()) == {0}
    board.close()


def test_bug_two_epoch_bumps_at_once_counted_one() -> None:
    """Two workers bump the settings epoch at once (``verbosity`` on one, ``stats detail
    on`` on another): it moves on twice. (Both read it, then both wrote it plus one: a
    worker that had applied the first bump missed the second setting.)"""
    board = Board(1, ["cmd_get"])
    with Meanwhile(board, G_SETTINGS_EPOCH, lambda: board.bump(G_SETTINGS_EPOCH), on_read=True):
        board.bump(G_SETTINGS_EPOCH)
    assert board.get(G_SETTINGS_EPOCH) == 2
    board.close()


def _hold_in_a_child(board: Board) -> int:
    """Fork a process that takes the board's lock and keeps it; its pid, once it holds it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            with board.locked():
                os.write(w, b"x")
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"x"
    finally:
        os.close(r)
    return pid


def test_the_lock_of_a_worker_killed_holding_it_is_free_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another process's lock keeps this one out (for `wait` seconds, then it goes on
    without it, logged, naming the holder); once the holder is killed (``kill -9`` in the
    middle of a ``stats reset``), the lock is free at once: nothing waits on the dead."""
    board = Board(2, ["cmd_get"])
    board.publish(0, Figures(5), None)
    pid = _hold_in_a_child(board)
    try:
        start = time.monotonic()
        with board.locked(wait=0.2) as held:
            assert not held
        assert 0.2 <= time.monotonic() - start < 5
        assert f"by pid {pid}" in caplog.text
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    caplog.clear()
    start = time.monotonic()
    with board.locked(wait=5) as held:
        assert held
    board.reset()
    assert time.monotonic() - start < 1 and not caplog.text
    assert board.totals()["cmd_get"] == 0
    board.close()


def test_a_process_forked_while_a_thread_held_the_lock_can_take_it() -> None:
    """A fork copies the thread lock as it was: the child starts with a free one (and the
    record lock, which is its own, waits for the parent's holder only)."""
    board = Board(1, ["cmd_get"])
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with board.locked():
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            with board.locked(wait=5) as held:
                code = 0 if held else 1
        finally:
            os._exit(code)
    try:
        time.sleep(0.1)
        release.set()
        holder.join()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    board.close()


def test_bug_a_board_never_closed_kept_its_lock_descriptor() -> None:
    """A board that is only collected (a daemon stopped inside a program without `close`)
    gives every descriptor back: its lock's was a bare int, one leaked per board (the
    free-threaded suite, whose tests start hundreds of daemons in one process, ran into
    fds in the hundreds)."""

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    gc.collect()
    before = descriptors()
    for _ in range(20):
        Board(2, ["a", "b"])
    gc.collect()
    assert descriptors() == before


def test_a_reset_asked_between_reading_the_requests_and_acknowledging_stays_unanswered() -> None:
    """Worker 0 reads the requests (none), worker 1 asks for a reset, worker 0 acknowledges
    what it read: worker 1's request is still unanswered, so worker 0 sees it (and holds for
    it) at its next look. Acknowledging "everything so far" took it for answered unread,
    and worker 0 served requests through the reset (``stats`` 2 hits off ``stats slabs``
    in one run of ~40 with four resets at once)."""
    board = Board(2, ["cmd_get"])
    try:
        for slot in (0, 1):
            board.set_word(slot, W_STATE, RUNNING)
        seen0 = [0] * board.requesters
        asked = board.requests(0, seen0)
        assert asked == []
        late = board.gather(1, COUNTERS | RESET, lambda: None, wait=0.01)
        assert late == [0]
        board.acknowledge(0, seen0, asked)
        assert board.requests(0, seen0) == [(1, 1, COUNTERS | RESET)]
    finally:
        board.close()


def test_a_reset_is_held_for_until_its_worker_says_it_done_or_stops_running() -> None:
    board = Board(2, ["cmd_get"])
    try:
        for slot in (0, 1):
            board.set_word(slot, W_STATE, RUNNING)
        seen0 = [0] * board.requesters
        board.gather(1, COUNTERS | RESET, lambda: None, wait=0.01)
        asked = board.requests(0, seen0)
        board.acknowledge(0, seen0, asked)
        resets = [(r, seq) for r, seq, kinds in asked if kinds & RESET]
        assert board.holding(resets)
        board.reset_done(1)
        assert not board.holding(resets)
        board.gather(1, COUNTERS | RESET, lambda: None, wait=0.01)
        resets = [(r, seq) for r, seq, kinds in board.requests(0, seen0) if kinds & RESET]
        assert board.holding(resets)
        board.set_word(1, W_STATE, STOPPING)  # (or dead: retired)
        assert not board.holding(resets)
    finally:
        board.close()
