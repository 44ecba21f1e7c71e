"""The supervisor (mcached/server/supervisor.py): forks workers, replaces dead ones, lays out
a new arena when one died inside a cache operation, gives up on a crash loop, and stops them.

The children here are small stand-ins (they mark their board slot running and sleep), so
each decision is checked on its own; tests/integration/test_processes.py runs the real
daemon.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from mcached.cli import parse_settings
from mcached.daemon import Daemon
from mcached.server import supervisor as sup_module
from mcached.server.board import (
    EMPTY,
    G_STOP,
    RUNNING,
    STOP_SIGNALLED,
    W_CONNS,
    W_STATE,
    Board,
)
from mcached.server.supervisor import MAINTAINER, WORKER, Child, Supervisor, TooManyDeaths
from mcached.storage.cache import Reservation
from mcached.storage.results import StoreMode, StoreResult

pytestmark = pytest.mark.unit


def stand_in(board: Board, stubborn: bool = False) -> object:
    def main(slot: int) -> None:
        board.set_word(slot, W_STATE, RUNNING)
        if stubborn:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(0.02)

    return main


class Harness:
    def __init__(self, workers: int = 2, stubborn: bool = False) -> None:
        self.board = Board(workers, ["cmd_get"])
        self.inside = False
        self.rebuilt = 0
        self.sup = Supervisor(
            self.board,
            workers,
            worker_main=stand_in(self.board, stubborn),  # type: ignore[arg-type]
            maintainer_main=None,
            died_inside=self.died_inside,
            rebuild=self.rebuild,
        )

    def died_inside(self, child: Child) -> bool:
        return self.inside

    def rebuild(self) -> None:
        self.rebuilt += 1

    def pids(self) -> dict[int, int]:
        return {c.slot: pid for pid, c in self.sup.children.items() if c.kind == WORKER}

    def wait_replaced(self, old: dict[int, int], slots: set[int]) -> None:
        deadline = time.monotonic() + 10
        while True:
            self.sup.reap()
            now = self.pids()
            if all(now.get(s) not in (None, old[s]) for s in slots) and self.sup.wait_ready(0.1):
                return
            assert time.monotonic() < deadline, (old, now)
            time.sleep(0.02)


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """The supervisor freezes the objects of the process it runs in (here, the test's) for
    good: each test gives them back to the collector."""
    yield
    gc.unfreeze()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    h.sup.start()
    assert h.sup.wait_ready(10)
    yield h
    h.sup.stop(graceful=True, timeout=1)


def test_workers_start_and_run(harness: Harness) -> None:
    assert sorted(harness.pids()) == [0, 1]
    assert all(harness.board.word(s, W_STATE) == RUNNING for s in (0, 1))


def test_a_worker_that_died_outside_the_cache_is_replaced_alone(harness: Harness) -> None:
    before = harness.pids()
    harness.board.add_figure(0, "cmd_get", 7)  # its figures so far
    os.kill(before[0], signal.SIGKILL)
    harness.wait_replaced(before, {0})
    after = harness.pids()
    assert after[1] == before[1]  # the other worker was left alone
    assert harness.rebuilt == 0 and harness.sup.restarts == 1
    assert harness.board.totals()["cmd_get"] == 7  # kept in the totals (retired)


def test_a_worker_that_died_inside_the_cache_restarts_everything_on_a_new_arena(
    harness: Harness,
) -> None:
    before = harness.pids()
    harness.inside = True
    os.kill(before[1], signal.SIGKILL)
    harness.wait_replaced(before, {0, 1})  # every worker, not only the dead one
    assert harness.rebuilt == 1 and harness.sup.rebuilds == 1


def test_a_crash_loop_stops_the_daemon(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sup_module, "CRASH_LIMIT", 3)
    harness.sup._deaths = sup_module.deque(maxlen=3)
    killed = []
    with pytest.raises(TooManyDeaths):
        for _ in range(3):
            before = harness.pids()
            killed.append(before[0])
            os.kill(before[0], signal.SIGKILL)
            harness.wait_replaced(before, {0})
    # every death is logged, the last one too (it was not: the limit was raised first)
    logged = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert all(f"(pid {pid}) was killed by SIGKILL" in logged for pid in killed), logged


def test_the_objects_shared_at_the_fork_are_left_out_of_garbage_collections() -> None:
    """A full pass of the garbage collector writes to the header of every object it looks
    at: in a child, the objects it shares with the supervisor (copy-on-write since the
    fork) would be copied, page by page. The supervisor freezes its objects for good before
    it forks (`gc.freeze`), so neither side's collections look at them."""
    board = Board(1, ["cmd_get"])
    shared = [object()]  # an object the supervisor made before the fork
    read_end, write_end = os.pipe()

    def main(slot: int) -> None:
        seen = any(o is shared for o in gc.get_objects())  # the generations it collects
        os.write(write_end, b"%d %d" % (gc.get_freeze_count(), seen))
        board.set_word(slot, W_STATE, RUNNING)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(0.02)

    sup = Supervisor(
        board,
        1,
        worker_main=main,
        maintainer_main=None,
        died_inside=lambda c: False,
        rebuild=lambda: None,
    )
    sup.start()
    try:
        assert sup.wait_ready(10)
        frozen, seen = map(int, os.read(read_end, 100).split())
        later = [object()]  # made after the fork: collected as before
        here = gc.get_objects()
        assert not any(o is shared for o in here) and any(o is later for o in here)
    finally:
        sup.stop(graceful=True, timeout=1)
        os.close(read_end)
        os.close(write_end)
    assert frozen > 1000 and not seen  # the child: its inheritance frozen, `shared` with it


def test_bug_a_fork_that_failed_left_the_supervisor_deaf_to_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop and reload signals are blocked across the fork (a new child must not run
    the supervisor's handlers); a fork that failed (EAGAIN: the process limit) left them
    blocked in the supervisor, which then ignored SIGTERM and SIGHUP for good."""
    h = Harness(workers=1)

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(sup_module.os, "fork", no_fork)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        with pytest.raises(BlockingIOError):
            h.sup.start()
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    assert not sup_module.CHILD_SIGNALS & before  # none of them was blocked to begin with
    assert not h.sup.children


def test_stop_drains_then_kills_what_ignores_it() -> None:
    h = Harness(stubborn=True)
    h.sup.start()
    assert h.sup.wait_ready(10)
    pids = list(h.pids().values())
    t0 = time.monotonic()
    h.sup.stop(graceful=True, timeout=0.3)
    took = time.monotonic() - t0
    assert sup_module.KILL_GRACE <= took < sup_module.KILL_GRACE + 3  # waited, then killed
    assert not h.sup.children
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert all(h.board.word(s, W_STATE) == EMPTY for s in (0, 1))


def test_bug_a_child_killed_between_asking_for_a_stop_and_signalling_it_lost_the_stop() -> None:
    """A child that gets SIGTERM (or the ``shutdown`` command) marks G_STOP on the board,
    then signals the supervisor. Of one killed between the two, the supervisor heard only
    the death: it forked another and ran on, the stop lost. The mark stayed, so a child
    later stopped by a SIGTERM of its own (which it no longer passed on: the mark said the
    supervisor had sent it) exited and was taken as stopped, not replaced: the daemon ran a
    worker, or its maintainer, short. Now the supervisor, which finds the mark as it reaps
    the dead child, sends itself the SIGTERM the child could not, and forks no other: the
    daemon stops."""
    heard: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signo, frame: heard.append(signo))
    h = Harness()
    try:
        h.sup.start()
        assert h.sup.wait_ready(10)
        before = h.pids()
        h.board.set(G_STOP, STOP_SIGNALLED)  # worker 0 got a SIGTERM and marked the board...
        os.kill(before[0], signal.SIGKILL)  # ...and was killed before it signalled us
        deadline = time.monotonic() + 10
        while before[0] in h.pids() or not heard:
            assert time.monotonic() < deadline, f"heard {heard}, workers {h.pids()}"
            h.sup.reap()
            time.sleep(0.02)
        assert heard == [signal.SIGTERM]  # the stop it asked for, as it would have sent it
        assert h.pids() == {1: before[1]} and h.sup.restarts == 0  # nothing forked: we stop
        h.sup.reap()
        assert heard == [signal.SIGTERM]  # once
    finally:
        h.sup.stop(graceful=True, timeout=1)
        signal.signal(signal.SIGTERM, previous)


# ---- the daemon's part: what a death leaves in the arena ----


def in_child(fn: Callable[[], None]) -> int:
    """Run `fn()` in a forked child that then exits (whatever it holds); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def two_worker_daemon() -> Daemon:
    return Daemon(parse_settings(["-t", "2", "-m", "8", "-p", "0"]), processes=True)


def reserve_and_die(daemon: Daemon) -> Callable[[], None]:
    """Worker 0 (holder word 1) dies between operations with a value half received: its
    chunk reserved and listed in its row of the pin table, its holder word clear."""

    def child() -> None:
        res = daemon.cache.view(holder=1).reserve(b"half-sent", 100_000, 0)
        assert isinstance(res, Reservation)

    return child


def test_a_death_is_dealt_with_without_a_lock_another_dead_worker_may_hold() -> None:
    """Two workers die at once: worker 0 between operations, leaving a reservation; worker
    1 inside one, holding partition locks. The supervisor, told of worker 0 first, let go
    of its reservation there and then, which takes the partition's lock: it waited for
    dead worker 1 for good (no worker replaced, no new arena, SIGTERM unheard). Now it
    takes no lock: it only reads the holder words."""
    daemon = two_worker_daemon()
    pid0 = in_child(reserve_and_die(daemon))

    def lock_and_die() -> None:
        view = daemon.cache.view(holder=2)
        view._hold.__enter__()  # inside an operation...
        for part in view._items.parts:  # ...that holds every partition's lock: killed there
            part.lock.acquire()

    pid1 = in_child(lock_and_die)
    verdicts: list[bool] = []
    t = threading.Thread(
        target=lambda: verdicts.append(daemon._died_inside(Child(WORKER, 0, pid0))), daemon=True
    )
    t.start()
    t.join(10)
    assert verdicts == [False]  # between operations: its successor lets go of what it held
    assert daemon._died_inside(Child(WORKER, 1, pid1)) is True  # a new arena follows


def test_a_successor_lets_go_of_what_its_dead_predecessor_reserved() -> None:
    daemon = two_worker_daemon()
    pid0 = in_child(reserve_and_die(daemon))
    assert daemon._died_inside(Child(WORKER, 0, pid0)) is False
    assert daemon.cache.view(holder=1).pins_held() == 1  # listed, not yet let go
    in_child(lambda: daemon._release_left(WORKER, 0))  # as worker 0's successor starts
    assert daemon.cache.view(holder=1).pins_held() == 0
    # the chunk is back: the key can be stored whole, and nothing half-stored is there
    assert daemon.cache.get(b"half-sent") is None
    assert daemon.cache.store(StoreMode.SET, b"half-sent", b"v" * 100_000) is StoreResult.STORED


def test_bug_a_connection_taken_by_a_worker_killed_before_it_counted_it_held_a_place() -> None:
    """Worker 0 accepts two connections and hands them to worker 1; worker 1 takes the first
    (`recv_fds`) and is killed before it counts it (`Board.arrived`). That connection stayed
    counted on its way for the daemon's life: ``-c N`` let N - 1 clients in, and
    ``curr_connections`` said one more than were open. Now worker 1's successor, before it
    runs, takes what is queued for it (the second connection, which it serves) and counts
    every connection handed to its slot as taken."""
    daemon = Daemon(
        parse_settings(["-t", "2", "-m", "8", "-l", "127.0.0.1", "-p", "0"]), processes=True
    )
    daemon.server.bind()
    board = daemon.board
    lost, lost_peer = socket.socketpair()
    queued, client = socket.socketpair()
    try:
        for sock in (lost, queued):
            board.add(0, W_CONNS, 1)  # accepted by worker 0...
            assert board.hand_over(0, 1, sock, 0, "127.0.0.1:1")  # ...and handed to worker 1
        assert board.connections() == 2
        in_child(lambda: socket.recv_fds(board.handoff_fd(1), 512, 1))  # taken, then killed
        board.retire(1)  # the supervisor, for the dead worker 1
        assert board.connections() == 2  # the one it took is gone with it, still counted
        client.sendall(b"version\r\n")  # the queued one's client asks
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: worker 1's successor
            code = 1
            try:
                daemon._worker_main(1)
                code = 0
            finally:
                os._exit(code)
        try:
            deadline = time.monotonic() + 10
            while board.word(1, W_STATE) != RUNNING:
                assert time.monotonic() < deadline, "the successor did not start"
                time.sleep(0.01)
            client.settimeout(10)
            assert client.recv(100) == b"VERSION 1.6.18\r\n"  # served by the successor
            assert board.connections() == 1  # that one, open; the lost one no longer counted
        finally:
            os.kill(pid, signal.SIGQUIT)  # the supervisor's quick stop
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert board.connections() == 0
    finally:
        for sock in (lost_peer, client):
            sock.close()
        daemon.server.close_sockets()


def test_bug_the_maintainer_killed_while_its_crawler_napped_emptied_the_cache() -> None:
    """The LRU crawler (in the maintainer process) naps between pages of a sweep, as the
    one that follows a flush_all. Its holder word stayed set across the naps, so a
    maintainer killed in one was taken to have died inside a cache operation: a new, empty
    arena, every worker restarted, every connection reset. It holds no lock there but the
    pass's own crawl lock: now the word is clear while it naps, its death costs only the
    maintainer, and the successor lets the crawl lock go (or no crawl would ever run again)."""
    daemon = two_worker_daemon()
    crawler_word = daemon._holders(MAINTAINER, 0)[0]  # the crawler's (and the ticker's)
    assert daemon.cache.store(StoreMode.SET, b"old", b"v") is StoreResult.STORED
    daemon.cache.flush_all()  # the crawler sweeps every class within a second
    assert daemon.cache.store(StoreMode.SET, b"kept", b"v") is StoreResult.STORED
    starts = daemon.cache.stats()["lru_crawler_starts"]

    def killed_in_a_nap(checked: int) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: the maintainer's crawler
        try:
            daemon.cache.view(holder=crawler_word).crawl(pause=killed_in_a_nap)
        finally:
            os._exit(1)  # the pass ended without a nap
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert daemon.cache.stats()["lru_crawler_running"] == 1
    assert daemon._died_inside(Child(MAINTAINER, 0, pid)) is False  # no new arena
    in_child(lambda: daemon._release_left(MAINTAINER, 0))  # as its successor starts
    stats = daemon.cache.stats()
    assert stats["lru_crawler_running"] == 0 and stats["lru_crawler_starts"] == starts + 1
    daemon.cache.view(holder=crawler_word).crawl()  # the next pass runs
    assert daemon.cache.stats()["lru_crawler_starts"] == starts + 2
    assert daemon.cache.get(b"kept") is not None and daemon.cache.get(b"old") is None


class _Times:
    def __init__(self, user: float, children_user: float = 0.0) -> None:
        self.user, self.system = user, user / 10
        self.children_user, self.children_system = children_user, children_user / 10


class _Proc:
    def __init__(self, pid: int, times: _Times) -> None:
        self.pid, self.times = pid, times

    def cpu_times(self) -> _Times:
        return self.times


def test_bug_the_cpu_seconds_stepped_back_when_a_child_was_reaped_between_two_reads() -> None:
    """The supervisor's times (with its reaped children's) are read before its children's:
    a worker killed and reaped between the two reads was counted in neither, and the
    metrics' CPU counters stepped back by its CPU (0.7 s in a hunt), a reset to Prometheus.
    The figures never go below what they said before."""
    daemon = two_worker_daemon()
    try:
        sup = daemon._supervisor_pid
        before = daemon._cpu([_Proc(sup, _Times(1.0)), _Proc(sup + 1, _Times(0.7))])
        assert before == pytest.approx((1.7, 0.17))
        # the child reaped after the supervisor's read, gone before its own
        during = daemon._cpu([_Proc(sup, _Times(1.01))])
        assert during >= before
        after = daemon._cpu([_Proc(sup, _Times(1.02, children_user=0.7))])  # next scrape
        assert after == pytest.approx((1.72, 0.172)) and after >= during
    finally:
        daemon.close()
