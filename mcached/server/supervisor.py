"""The supervisor: forks the worker processes, watches them, stops them (gunicorn's arbiter).

Under the GIL one interpreter runs Python on one core at a time, so ``-t N`` means N worker
*processes*: the daemon's first process binds the sockets, lays out the cache's arena and the
board, then forks the workers (and one maintainer process for the LRU crawler and the slab
automover) and stays their supervisor. It never serves a request and never takes a lock of
the cache, so nothing a worker does can stop it from acting. It owns the signals: the daemon's
main loop calls `reap` when a child exits and `stop` on SIGTERM.

A child that exits while the daemon is not stopping is replaced:

* if it died outside any cache operation (its holder words clear, `died_inside` False), a new
  process takes its slot; the cache is intact, the connections it served are gone (their
  clients see a reset and reconnect), its figures so far stay in the totals (`Board.retire`);
* if it died inside one (it may hold a lock, or have left an item half written), nothing in
  the arena can be trusted: every child is killed, `rebuild` lays out a fresh, empty arena,
  and every child is forked again. The listening sockets stay open throughout, so clients
  that connect meanwhile wait in the backlog. This is the price of a worker killed at the
  wrong moment: an empty cache, as after memcached's own crash, but without a restart.

A child that keeps dying (`CRASH_LIMIT` deaths within `CRASH_WINDOW` seconds) stops the
daemon instead of being replaced for ever.

A child that exits once a stop was asked (the board's G_STOP) stopped, it did not die, and
is not replaced. SIGTERM can reach the children before the supervisor, or without it: sent
to the whole process group (a terminal, ``timeout``, a unit without ``KillMode=mixed``) or
to one child. A child that gets it first passes it on (it marks G_STOP and signals the
supervisor: the daemon's `_child_signals`; the ``shutdown`` command does the same), so the
whole daemon stops, and the supervisor marks G_STOP itself before it signals them. A child
killed between its mark and its signal could not pass the stop on: the supervisor, which
finds the mark when it reaps the child, signals itself as the child would have. A new child
starts with the stop and reload signals blocked (`CHILD_SIGNALS`) until it has its own
handlers: one sent meanwhile waits for them instead of running the supervisor's, which the
fork copied.

Children exit when the supervisor does (``PR_SET_PDEATHSIG``, and a check of the parent pid
once a second where that is not available).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mcached.server.board import (
    EMPTY,
    G_STOP,
    RUNNING,
    STARTING,
    STOP_GRACEFUL,
    STOP_NOW,
    W_STATE,
    Board,
)

log = logging.getLogger("mcached.supervisor")

CRASH_LIMIT = 5
CRASH_WINDOW = 30.0
KILL_GRACE = 2.0  # seconds past a stop deadline before children are killed
PR_SET_PDEATHSIG = 1

WORKER = "worker"
MAINTAINER = "maintainer"
# blocked in a new child until it installs its handlers (then it unblocks them)
CHILD_SIGNALS = {signal.SIGTERM, signal.SIGUSR1, signal.SIGQUIT, signal.SIGHUP}


@dataclass
class Child:
    kind: str
    slot: int  # board slot (workers); 0 for the maintainer
    pid: int


class TooManyDeaths(Exception):
    """Children keep dying: the daemon stops rather than fork them for ever."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux)."""
    try:
        # the process's own symbols, libc's among them: find_library("c") would run
        # ``ldconfig -p`` in a subprocess, in every child as it starts
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the worker's once-a-second parent check remains


class Supervisor:
    def __init__(
        self,
        board: Board,
        workers: int,
        *,
        worker_main: Callable[[int], None],
        maintainer_main: Callable[[], None] | None,
        died_inside: Callable[[Child], bool],
        rebuild: Callable[[], None],
    ) -> None:
        """`worker_main(slot)` and `maintainer_main()` run in the child and return when it
        should exit; `died_inside(child)` tells whether a dead child was inside a cache
        operation; `rebuild()` lays out a new arena (in this process, children all dead)."""
        self.board = board
        self.nworkers = workers
        self.worker_main = worker_main
        self.maintainer_main = maintainer_main
        self.died_inside = died_inside
        self.rebuild = rebuild
        self.children: dict[int, Child] = {}
        self.stopping = False
        self._stop_passed = False  # a stop a child asked for, passed on to this process
        self.pid = os.getpid()
        self._deaths: deque[float] = deque(maxlen=CRASH_LIMIT)
        self.restarts = 0  # children replaced (stats, tests)
        self.rebuilds = 0  # arenas laid out again after a death inside the cache

    # ---- forking ----

    def start(self) -> None:
        for slot in range(self.nworkers):
            self._spawn(WORKER, slot)
        if self.maintainer_main is not None:
            self._spawn(MAINTAINER, 0)

    def _spawn(self, kind: str, slot: int) -> None:
        if kind == WORKER:
            self.board.set_word(slot, W_STATE, STARTING)
        # The child shares this process's objects copy-on-write, and a full pass of the
        # garbage collector writes to the header of every object it looks at: the first in
        # each child would copy every page that holds one (measured: ~5 MB a worker, 20 MB
        # at -t 4; README "Memory over time"). So they are frozen for good before the fork,
        # left out of every pass here and in the child (`gc.freeze`), after a collection,
        # so that no garbage is frozen with them. What either makes later is collected.
        gc.collect()
        gc.freeze()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        else:  # pragma: no cover - the child (tests see it through its behaviour)
            code = 0
            try:
                die_with_parent()
                if os.getppid() != self.pid:
                    os._exit(0)  # the supervisor died before we could ask to follow it
                if kind == WORKER:
                    self.worker_main(slot)
                else:
                    assert self.maintainer_main is not None
                    self.maintainer_main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("%s %d failed", kind, slot)
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = Child(kind, slot, pid)
        log.debug("started %s %d (pid %d)", kind, slot, pid)

    def starting(self) -> list[int]:
        """The workers that do not run their loop yet (none: the daemon is ready)."""
        return [s for s in range(self.nworkers) if self.board.word(s, W_STATE) != RUNNING]

    def maintainer_pid(self) -> int | None:
        """The maintainer process's pid (None between its death and its successor)."""
        return next((c.pid for c in self.children.values() if c.kind == MAINTAINER), None)

    def wait_ready(self, timeout: float) -> bool:
        """True once every worker runs its loop (False if `timeout` passed first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.reap()
            if not self.starting():
                return True
            time.sleep(0.01)
        return False

    # ---- watching ----

    def reap(self) -> None:
        """Collect every child that exited; replace those that should not have."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if self.stopping or self.board.get(G_STOP):
                # stopped, not dead: the daemon stops
                log.debug("%s %d (pid %d) stopped", child.kind, child.slot, child.pid)
                if child.kind == WORKER:
                    self.board.retire(child.slot)
                if not self.stopping:
                    self._stop_asked(child, status)
                continue
            self._died(child, status)

    def _stop_asked(self, child: Child, status: int) -> None:
        """A child exited once a stop was asked (G_STOP), before this process acted on it:
        the main loop hears of the stop from a SIGTERM, which the child that marked the
        board sends next. It may have been killed before it could (the mark was then left
        for good: the stop was lost, and a child stopped later by a SIGTERM of its own was
        not replaced, the daemon one worker, or its maintainer, short), so this process
        sends it to itself, once; a second one, if the child's came too, is not read."""
        if self._stop_passed:
            return
        self._stop_passed = True
        if status != 0:
            log.warning(
                "%s %d (pid %d) %s once a stop was asked: stopping",
                child.kind,
                child.slot,
                child.pid,
                _describe(status),
            )
        os.kill(self.pid, signal.SIGTERM)

    def _died(self, child: Child, status: int) -> None:
        how = _describe(status)
        now = time.monotonic()
        self._deaths.append(now)
        if len(self._deaths) == CRASH_LIMIT and now - self._deaths[0] < CRASH_WINDOW:
            log.error("%s %d (pid %d) %s", child.kind, child.slot, child.pid, how)
            raise TooManyDeaths(f"{CRASH_LIMIT} children died within {CRASH_WINDOW:.0f}s")
        if self.died_inside(child):
            log.error(
                "%s %d (pid %d) %s inside a cache operation: the cache cannot be trusted; "
                "emptying it and restarting every worker",
                child.kind,
                child.slot,
                child.pid,
                how,
            )
            self._kill_all()
            for slot in range(self.nworkers):
                self.board.retire(slot)
            # the old arena's objects were frozen at the forks (`_spawn`): given back to the
            # collector, they go at the next fork's collection (its locks hold a mapping
            # each until they are freed)
            gc.unfreeze()
            self.rebuild()
            self.rebuilds += 1
            self.start()
            return
        log.error("%s %d (pid %d) %s; starting another", child.kind, child.slot, child.pid, how)
        if child.kind == WORKER:
            self.board.retire(child.slot)
        self.restarts += 1
        self._spawn(child.kind, child.slot)

    def _kill_all(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()

    # ---- stopping ----

    def signal_all(self, sig: int, kind: str | None = None) -> None:
        """Send `sig` to every child (of `kind` only, if given)."""
        for pid, child in list(self.children.items()):
            if kind is not None and child.kind != kind:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait_workers(self, word: int, value: int, timeout: float) -> list[int]:
        """Until every running worker's board word `word` reaches `value` (an epoch it
        records once it has acted on it), reaping children meanwhile (one forked now starts
        from this process's state); the slots still short of it after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while True:
            self.reap()
            behind = self.board.behind(word, value)
            if not behind or time.monotonic() >= deadline:
                return behind
            time.sleep(pause)
            pause = min(pause * 2, 0.01)

    def stop(self, graceful: bool, timeout: float) -> None:
        """Tell every child to stop (workers drain for `timeout` seconds when `graceful`),
        wait for them, kill those still there `KILL_GRACE` seconds after the deadline."""
        self.stopping = True
        if not self.board.get(G_STOP):  # the children know the signal is the supervisor's
            self.board.set(G_STOP, STOP_GRACEFUL if graceful else STOP_NOW)
        for pid, child in list(self.children.items()):
            sig = signal.SIGTERM if graceful or child.kind == MAINTAINER else signal.SIGQUIT
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (timeout if graceful else 0) + KILL_GRACE
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        if self.children:
            log.warning(
                "%d child process(es) still running at the deadline: killed", len(self.children)
            )
            for pid, child in list(self.children.items()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                if child.kind == WORKER:
                    self.board.retire(child.slot)
            self.children.clear()
        for slot in range(self.nworkers):
            if self.board.word(slot, W_STATE) != EMPTY:
                self.board.retire(slot)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
