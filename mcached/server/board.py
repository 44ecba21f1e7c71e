"""The board: what the workers of one daemon tell each other, in one shared mapping.

Workers (processes forked by the supervisor, or threads) share two things: the cache's arena
(`mcached.storage.arena`) and this board. The board has a *slot* per worker and a few global
words; like the arena it is an anonymous ``MAP_SHARED`` mapping made before the workers
start, so a forked worker and a thread read and write the same words. It carries:

* live figures each worker writes as they change, so anyone may read them at any time: its
  open connections (``-c`` counts the daemon's total), total and rejected connections, how
  often it stopped accepting, its TLS handshake figures, its pid and state;
* *published* figures: a worker's `Counters` stay plain Python attributes on the request
  path (a word of shared memory costs about twice as much to bump), and are copied here on
  request, with a blob of what varies in size (its connections for ``stats conns``, its
  ``stats detail`` table);
* a *vector* of ints each worker publishes beside its counters and that is summed like them
  (its latency histograms: `mcached.latency`); the board does not know what it holds;
* global words: a stop request (from the ``shutdown`` command), the run-time settings a
  command changes for every worker (``verbosity``, ``stats detail on|off``), and epochs that
  tell every worker to re-read something (``refresh_certs``, SIGHUP: each worker records
  the reload epoch it has done in its slot, so the supervisor knows when all have).

Publishing (exact, not sampled). A worker that needs every worker's figures (``stats``)
bumps its own request word, wakes every other worker (one byte on each worker's wake-up
socket, made here too), publishes its own, and waits until every running worker has
acknowledged its request. A worker acknowledges in its loop, as soon as it wakes, after the
requests it was serving: so every reply a client has *received* before asking for ``stats``
is counted in it, whichever worker served it. Requests are per requester (no shared counter,
no lock), so two workers asking at once each get their answer; a requester keeps answering
requests while it waits. A worker that does not answer within `PUBLISH_WAIT` seconds (stuck,
or dying) is counted with its last published figures.

*Askers*: slots past the workers' (`askers` of them) that only ask, for a process that is
not a worker and needs every worker's figures (the metrics endpoint, in the maintainer
process): it gathers as a worker does, answering nothing itself, and no worker waits for it.

Totals survive workers: when a worker dies, the supervisor adds its last published figures
to the *retired* row before the slot is reused, and what of its last published blob should
stay in the totals (its ``stats detail`` table) to the *kept* blob: the board's owner says
how (`keep`; the board does not know what a blob holds). ``stats reset`` records the current
totals as the *baseline* row, which every total is read against, and empties the kept blob.

A reset is a request too (RESET), and the workers that answer it *hold*: publish, acknowledge,
then serve nothing until the asker says it is done (`W_RESET_DONE`), at most `RESET_HOLD`
seconds, answering other requests meanwhile and holding for the resets among them too
(`Worker.reset_figures` says how two asked at once go). So what the reset zeroes elsewhere
while they hold (the storage's per-class counters, each process's ``stats detail`` table) is
zeroed at the same moment as the figures, with no request served between them: ``stats``
and ``stats slabs`` agree after a reset under load, as memcached's do, where three moments a
few milliseconds apart left them a few hits apart.

The lock. Those two are read-modify-writes by different processes (the supervisor retires,
any worker resets): a reset that read the totals between a retirement's add to the retired
row and its zeroing of the dead slot counted the dead worker twice (totals read low, even
negative, until the next reset); a retirement that read the kept blob before a reset emptied
it wrote it back after (the reset lost for ``stats detail``); two resets at once both added
the totals to the baseline. So they, and whoever reads the totals or the kept blob, take the
board's lock (`locked`): a POSIX record lock (``fcntl``) on a file made with the board, which
the kernel lets go when its holder dies however it dies (``kill -9`` inside `reset` wedges
nothing: no holder word to clear, no successor to wait for), plus a `threading.Lock` for the
threads of one process, which share record locks. It is held for microseconds and never
while waiting for anything else; a holder that keeps it longer (stopped, stuck) is waited for
`LOCK_WAIT` seconds, then logged and gone around, so that nothing, the supervisor least of
all, can hang on it.

Rules: words of a slot are written by its worker only (the supervisor writes them only for
a worker that is dead). Global words are written by anyone, each as a whole value, except
what is read-modify-written: the retired and baseline rows and the kept blob (`retire`,
`reset`) and the epochs (`bump`) are, under the lock; ``G_LOG_SEQ`` is bumped without it
(`mcached.server.eventlog`: two events at the same instant may share a gid). Nothing here is
on the request path.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import pickle
import socket
import struct
import tempfile
import threading
import time
import weakref
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("mcached.board")

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
PUBLISH_WAIT = 1.0  # seconds a requester waits for a worker's figures
LOCK_WAIT = 1.0  # seconds anyone waits for the board's lock before going on without it
BLOB_MAX = 4 * 1024 * 1024  # bytes of a worker's published blob (a longer one is cut short)
PUB_WAIT = 0.1  # seconds a reader waits for a publish under way (`_whole`)

# publish kinds (a request asks for the union)
COUNTERS = 1
CONNS = 2
DETAIL = 4
# ``stats reset``: a worker that answers it holds (serves nothing) until the asker's
# W_RESET_DONE says the reset is done (`holding`)
RESET = 8
RESET_HOLD = PUBLISH_WAIT + 0.5  # seconds a worker holds at most for a reset

# worker states
EMPTY = 0
STARTING = 1
RUNNING = 2
STOPPING = 3

# ---- a slot's words ----
W_PID = 0
W_STATE = 1
W_CONNS = 2  # open connections now
W_REQ_SEQ = 4  # publish requests this worker made
W_REQ_KINDS = 5  # the kinds of its latest request
W_BLOB_LEN = 6
W_PUBLISHED = 7  # how many times it published (tests, diagnostics)
W_ACCEPTING = 8  # 0 while it pauses accepting (out of descriptors)
W_WATCH = 9  # what the watchers this worker serves want logged
W_WATCHERS = 10  # how many watchers it serves
W_HANDED_IN = 11  # connections other workers handed it, all told (kept across its restarts)
W_RELOADED = 12  # the G_RELOAD_EPOCH whose reload this worker has done
W_STUCK = 13  # 1 while the supervisor finds this worker's loop stopped: `gather` skips it
W_PUB_SEQ = 14  # odd while the worker publishes (`publish`; its readers: `_whole`)
W_RESET_DONE = 15  # the last of its requests (W_REQ_SEQ) whose `stats reset` it has done
W_HEAD = 16  # then: the ack row (one word per requester), the figures row, the handed row

# ---- global words ----
# 0: none; STOP_NOW or STOP_GRACEFUL, set by the `shutdown` command and by the supervisor
# before it signals its children; STOP_SIGNALLED by a child that got a stop signal first
G_STOP = 0
G_VERBOSE = 1  # `verbosity` (and -v) for every worker
G_DETAIL = 2  # `stats detail on|off`
G_SETTINGS_EPOCH = 3  # bumped when one of the two above changes
G_TLS_EPOCH = 4  # bumped by refresh_certs: every worker reloads its certificates
G_STARTED = 5  # time.time() the daemon started (uptime survives worker restarts)
G_WATCH = 6  # what the attached watchers want logged (`mcached.watch` flags), OR of W_WATCH
G_LOG_SEQ = 7  # the daemon's log sequence (gid of `watch` lines)
G_LRU_CRAWLER = 8  # 1 while the LRU crawler runs (-o lru_crawler, `lru_crawler enable|disable`)
G_CRAWLER_SLEEP = 9  # -o lru_crawler_sleep, `lru_crawler sleep <us>`
G_CRAWLER_TOCRAWL = 10  # -o lru_crawler_tocrawl, `lru_crawler tocrawl <n>`
G_SIZES = 11  # `stats sizes`: 0 off, else 1 + the least CAS it counts (track_sizes, sizes_enable)
G_RELOAD_EPOCH = 12  # bumped by the supervisor on SIGHUP: every worker reloads, then says so
G_KEPT_LEN = 13  # bytes of the kept blob (what dead workers' blobs left in the totals)
G_DETAIL_RESETS = 14  # `reset`s so far: every worker clears its stats detail table
G_LOCK_PID = 15  # the pid of the process that holds the board's lock (for the log), or 0
# the run-time settings only stats settings shows (`lru tune|mode|temp_ttl`, `slabs automove
# ratio`, flush_all's oldest_live), a float as its IEEE bits (`get_float`)
G_AUTOMOVE_RATIO = 16
G_HOT_LRU_PCT = 17
G_WARM_LRU_PCT = 18
G_HOT_MAX_FACTOR = 19
G_WARM_MAX_FACTOR = 20
G_LRU_SEGMENTED = 21
G_TEMP_LRU = 22
G_TEMPORARY_TTL = 23
G_OLDEST_LIVE = 24
G_CONN_PEAK = 25  # the most connections open at once (memcached's conn_structs, less listeners)
G_MAINTAINER_BEAT = 26  # the maintainer's ticker runs (once a second): the supervisor's liveness
G_WORDS = 32
STOP_NOW = 1
STOP_GRACEFUL = 2
STOP_SIGNALLED = 3

#: figures kept per worker beside the `Counters` fields: written live by the server
SERVER_FIGURES = (
    "total_connections",
    "rejected_connections",
    "listen_disabled_num",
    "idle_kicks",
    "time_in_listen_disabled_us",
    "read_buf_oom",
    "ssl_handshake_errors",
    "ssl_new_sessions",
    "log_watcher_sent",
    "log_watcher_skipped",
    "log_worker_dropped",
)


_WORD = struct.Struct("q")
_DOUBLE = struct.Struct("d")


def _map(size: int) -> mmap.mmap:
    size = max(mmap.PAGESIZE, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | MAP_NORESERVE)


Blob = dict[str, Any]
_T = TypeVar("_T")

# A forked child gets a copy of every board's thread lock as it was, held if a thread other
# than the forking one held it: it starts with a free one of its own.
_BOARDS: weakref.WeakSet[Board] = weakref.WeakSet()


def _after_fork() -> None:
    for board in _BOARDS:
        board._threads_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _lock_file() -> int:
    """A file descriptor for the board's record lock: a memfd, or an unlinked temporary
    file where memfd_create is not allowed."""
    try:
        return os.memfd_create("mcached-board")
    except (AttributeError, OSError):
        return os.dup(tempfile.TemporaryFile().fileno())


def _pickled(blob: Blob) -> bytes:
    """`blob` as the board stores it (one cut short past `BLOB_MAX`)."""
    data = pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > BLOB_MAX:
        data = pickle.dumps({"truncated": True}, protocol=pickle.HIGHEST_PROTOCOL)
    return data


class Board:
    """The shared words and blobs of `slots` workers whose published figures are named
    `counter_fields` (the `Counters` fields), plus a published `vector` of that many ints,
    and `askers` slots for processes that only ask. Made before the workers start.
    `keep(kept, dead)`, if given, is what stays in the totals of the kept blob `kept` and
    the last blob `dead` of a worker that died (`retire`)."""

    def __init__(
        self,
        slots: int,
        counter_fields: Sequence[str],
        vector: int = 0,
        askers: int = 0,
        keep: Callable[[Blob, Blob], Blob] | None = None,
    ) -> None:
        self.slots = slots
        self.askers = askers
        self.requesters = slots + askers  # who may ask: every worker, then the askers
        self.fields = tuple(counter_fields) + SERVER_FIGURES
        self.index = {name: k for k, name in enumerate(self.fields)}
        self.vector = vector
        # the summed row: the fields, then the vector
        self.width = len(self.fields) + vector
        self.ack_base = W_HEAD
        self.fig_base = W_HEAD + self.requesters
        self.vec_base = self.fig_base + len(self.fields)
        # the handed row: how many connections this worker handed to each worker, all told
        # (kept across restarts, as W_HANDED_IN: their difference is what is in flight)
        self.handed_base = self.fig_base + self.width
        self.slot_words = self.handed_base + slots
        # globals, then the retired and baseline rows, then the slots (the askers' last)
        self.retired_base = G_WORDS
        self.baseline_base = self.retired_base + self.width
        self.slot_base = self.baseline_base + self.width
        nwords = self.slot_base + self.requesters * self.slot_words
        self._map = _map(nwords * 8)
        self.words = memoryview(self._map).cast("q")
        # each thread slices its own view of the words (`_own_words`)
        self._local = threading.local()
        self._own_views: list[memoryview] = []
        # a blob per slot, then the kept blob
        self.blobs = _map((slots + 1) * BLOB_MAX)
        self.keep = keep
        # a wake-up socket pair per slot: anyone writes a byte, the slot's worker reads it
        self.wakers = [socket.socketpair() for _ in range(slots)]
        # and a datagram pair per slot for the connections other workers hand it (one
        # descriptor a message, see hand_over). Worker threads (`threads`, set before they
        # start) share one table of descriptors, where another thread could take the place
        # a received one needs: they pass the socket itself, through a queue per slot, and
        # the pair's datagram only wakes the receiver
        self.inboxes: list[deque[tuple[socket.socket, int, str]]] | None = None
        self.handoffs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(slots)]
        for r, w in (*self.wakers, *self.handoffs):
            r.setblocking(False)
            w.setblocking(False)
        self.words[G_STARTED] = int(time.time())
        # the lock (`locked`): a record lock on this file between processes, and this
        # between the threads of one
        # a file object, not a bare descriptor: a board never closed gives it back when it
        # is collected (an int leaked a descriptor per board: a program starting daemons)
        self._lock_file = os.fdopen(_lock_file(), "r+b", buffering=0)
        self._threads_lock = threading.Lock()
        _BOARDS.add(self)

    # ---- the lock ----

    @contextmanager
    def locked(self, wait: float = LOCK_WAIT) -> Iterator[bool]:
        """The board's lock (see the module's docstring), for what several processes
        read-modify-write; yields whether this holds it: False when its holder kept it
        `wait` seconds (logged), and the caller goes on without it. Not reentrant."""
        held = self._acquire(wait)
        try:
            yield held
        finally:
            if held:
                self.words[G_LOCK_PID] = 0
                fcntl.lockf(self._lock_file, fcntl.LOCK_UN)
                self._threads_lock.release()

    def _acquire(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        threads = self._threads_lock
        if threads.acquire(timeout=wait):
            pause = 0.0001
            while True:
                try:
                    fcntl.lockf(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        threads.release()
                        raise
                else:
                    self.words[G_LOCK_PID] = os.getpid()
                    return True
                if time.monotonic() >= deadline:
                    threads.release()
                    break
                time.sleep(pause)  # no wait with a timeout for a record lock: a poll
                pause = min(pause * 2, 0.005)
        log.warning(
            "the board's lock was held for over %.1f s (by pid %d, stopped or stuck?): "
            "going on without it",
            wait,
            self.words[G_LOCK_PID],
        )
        return False

    # ---- places ----

    def base(self, slot: int) -> int:
        return self.slot_base + slot * self.slot_words

    def _own_words(self) -> memoryview:
        """The calling thread's view of the words, for the sums that read slices of them:
        on a free-threaded CPython, slicing one memoryview from several threads at once can
        release it (CPython gh-155606; see `mcached.storage.arena`)."""
        try:
            view: memoryview = self._local.words
        except AttributeError:
            view = self._local.words = memoryview(self._map).cast("q")
            self._own_views.append(view)
        return view

    def word(self, slot: int, w: int) -> int:
        return int(self.words[self.base(slot) + w])

    def set_word(self, slot: int, w: int, value: int) -> None:
        self.words[self.base(slot) + w] = value

    def add(self, slot: int, w: int, delta: int) -> None:
        """Only the slot's own worker (or the supervisor for a dead one) calls this."""
        self.words[self.base(slot) + w] += delta

    def add_figure(self, slot: int, name: str, delta: int = 1) -> None:
        self.words[self.base(slot) + self.fig_base + self.index[name]] += delta

    def note_peak(self) -> None:
        """A connection was accepted: keep the most ever open at once (a racy maximum:
        another process's write may replace one a little higher)."""
        n = self.connections()
        if n > self.words[G_CONN_PEAK]:
            self.words[G_CONN_PEAK] = n

    def add_retired(self, name: str, delta: int) -> None:
        """Count `delta` in the totals as no live worker's (as a dead worker's are kept)."""
        with self.locked():
            self.words[self.retired_base + self.index[name]] += delta

    # ---- global words ----

    def get(self, g: int) -> int:
        return int(self.words[g])

    def set(self, g: int, value: int) -> None:
        self.words[g] = value

    def get_float(self, g: int) -> float:
        return float(_DOUBLE.unpack(_WORD.pack(self.words[g]))[0])

    def set_float(self, g: int, value: float) -> None:
        self.words[g] = _WORD.unpack(_DOUBLE.pack(value))[0]

    def bump(self, g: int) -> None:
        """An epoch moves on (under the lock: two bumps at once are two)."""
        with self.locked():
            self.words[g] += 1

    # ---- waking ----

    def wake_fd(self, slot: int) -> socket.socket:
        return self.wakers[slot][0]

    def wake(self, slot: int) -> None:
        try:
            self.wakers[slot][1].send(b"\0")
        except OSError:
            pass  # a wake-up is already pending (the pair's buffer is full), or closed

    def wake_all(self, but: int = -1) -> None:
        for slot in range(self.slots):
            if slot != but and self.word(slot, W_STATE) in (STARTING, RUNNING, STOPPING):
                self.wake(slot)

    # ---- balancing connections ----

    def load(self, slot: int) -> int:
        """`slot`'s open connections and those on their way to it (handed over, not yet
        taken): what -c counts and balancing compares."""
        w = self._own_words()
        b, step = self.base(slot), self.slot_words
        col = self.slot_base + self.handed_base + slot
        handed = sum(w[col : col + self.slots * step : step])
        return int(w[b + W_CONNS] + handed - w[b + W_HANDED_IN])

    def _handed_to(self, slot: int) -> int:
        """Connections every worker handed to `slot`, all told."""
        w = self._own_words()
        step = self.slot_words
        col = self.slot_base + self.handed_base + slot
        return int(sum(w[col : col + self.slots * step : step]))

    def in_flight(self, slot: int) -> int:
        """Connections handed to `slot` and not yet taken (`arrived`)."""
        return self._handed_to(slot) - int(self.words[self.base(slot) + W_HANDED_IN])

    def settle(self, slot: int) -> None:
        """`slot`'s worker process, as it takes the place of a dead one, has taken what was
        queued for it, and nothing is on its way to it any more (`Worker.run` says why):
        every connection handed to `slot` counts as taken. One its predecessor took and was
        killed before it counted it (between `recv_fds` and `arrived`) was otherwise counted
        in flight for good, one place of ``-c`` lost for the daemon's life."""
        self.words[self.base(slot) + W_HANDED_IN] = self._handed_to(slot)

    def fewer_than(self, slot: int) -> int | None:
        """The worker to hand a connection `slot` just accepted (and counted) to: of the
        running workers that accept, the one with the fewest connections (`load`; the first
        of equals), if it has fewer than `slot` had before this one; None to keep it.
        memcached deals its new connections out to its threads in turn; SO_REUSEPORT
        spreads them by a hash of the addresses, which can leave a worker with none while
        another serves several."""
        best, fewest = None, self.load(slot) - 1
        for s in range(self.slots):
            if s == slot or self.word(s, W_STATE) != RUNNING or not self.word(s, W_ACCEPTING):
                continue
            n = self.load(s)
            if n < fewest:
                best, fewest = s, n
        return best

    def hand_over(
        self, sender: int, slot: int, sock: socket.socket, listener: int, peer: str
    ) -> bool:
        """`sender` sends `sock` (accepted from its `listener`-th listening socket, from
        `peer`) to `slot`'s worker, counted in flight until `slot` took it (`arrived`);
        False if it could not go (the pair's buffer is full): keep it. Between processes
        the message is ``<listener> <peer>`` with the descriptor, and the sender's own
        descriptor is closed once it went; between threads, the socket object itself goes
        into `slot`'s queue (`take_queued`)."""
        handed = self.base(sender) + self.handed_base + slot
        conns = self.base(sender) + W_CONNS
        # Counted in flight, then no longer the sender's, both before the receiver can
        # take it: -c never misses it, and once the receiver serves it no worker weighs
        # the sender's load with it still in (a sender whose thread waited for the GIL
        # after the wake-up did: the next newcomer went to a busier worker).
        self.words[handed] += 1
        self.words[conns] -= 1
        if self.inboxes is not None:
            self.inboxes[slot].append((sock, listener, peer))
            try:
                self.handoffs[slot][1].send(b"\0")
            except OSError:
                pass  # the pair's buffer is full: a wake-up is pending already
        else:
            msg = b"%d %s" % (listener, peer.encode(errors="replace"))
            try:
                socket.send_fds(self.handoffs[slot][1], [msg], [sock.fileno()])
            except OSError:
                self.words[conns] += 1  # the sender's again, then not in flight
                self.words[handed] -= 1
                return False
            sock.close()  # this process's descriptor: the receiver has its own
        return True

    def threads(self) -> None:
        """The workers are threads of this process: connections are handed over in
        queues (`hand_over`)."""
        self.inboxes = [deque() for _ in range(self.slots)]

    def conn_number(self, slot: int, fd: int) -> int:
        """The number of worker `slot`'s descriptor `fd` in what the daemon shows of its
        sockets (``stats conns`` keys, ``watch``'s ``cfd=``, ``-vv`` lines): memcached shows
        the descriptor, unique in its one process. Worker processes number their
        descriptors each for itself (a connection of each often has the same one), so there
        it is ``fd * slots + slot``, unique in the daemon (the slot is the remainder, the
        descriptor the quotient); worker threads share one table: the descriptor itself."""
        if self.inboxes is not None:
            return fd
        return fd * self.slots + slot

    def take_queued(self, slot: int) -> list[tuple[socket.socket, int, str]]:
        """Worker threads: what was handed to `slot` (its wake-up datagrams read first, so
        a hand-over that comes after the queue is emptied wakes it again), each counted as
        taken (`arrived`)."""
        assert self.inboxes is not None
        try:
            while self.handoffs[slot][0].recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        inbox = self.inboxes[slot]
        taken = []
        while inbox:
            taken.append(inbox.popleft())
            self.arrived(slot, 1)
        return taken

    def arrived(self, slot: int, conns: int) -> None:
        """`slot`'s worker received a connection handed to it: `conns` is 1, or 0 when its
        descriptor was lost on the way. It is counted as the receiver's open connection
        (which the receiver takes back if it does not serve it) *before* it stops counting
        as in flight, so that `connections` never misses it."""
        b = self.base(slot)
        self.words[b + W_CONNS] += conns
        self.words[b + W_HANDED_IN] += 1

    def handoff_fd(self, slot: int) -> socket.socket:
        """Where `slot`'s worker receives the connections handed to it."""
        return self.handoffs[slot][0]

    # ---- figures ----

    def live(self) -> list[int]:
        return [s for s in range(self.slots) if self.word(s, W_STATE) != EMPTY]

    def behind(self, w: int, value: int) -> list[int]:
        """The running workers whose word `w` is still short of `value` (an epoch each
        records once it has acted on it)."""
        return [
            s
            for s in range(self.slots)
            if self.word(s, W_STATE) == RUNNING and self.word(s, w) < value
        ]

    def publish_watch(self) -> None:
        """G_WATCH from every worker's W_WATCH, under the lock: two workers whose watchers
        came or went at once each read the words and wrote their OR; the one that read
        first could write last, and what the other's watchers asked for was logged by no
        worker until a watcher came or went again."""
        with self.locked():
            self.set(G_WATCH, self.watchers()[1])

    def watchers(self) -> tuple[int, int]:
        """How many watchers the daemon serves, and the OR of what they want logged."""
        n = flags = 0
        for s in range(self.slots):
            n += self.word(s, W_WATCHERS)
            flags |= self.word(s, W_WATCH)
        return n, flags

    def connections(self) -> int:
        """Open connections of the whole daemon, those handed from one worker to another
        included (what ``-c`` limits): every worker's open ones, plus all handed over, less
        all taken (once per accept: slices of the words, not a call per word).

        Other workers change the words while they are read, so a connection handed over
        could be missed (and let one more in past ``-c``): it is counted in the sender's open
        ones, then in flight (the sender's handed word, then its open ones less one), then in
        the receiver's open ones, then taken (`arrived`), each step before the last one is
        undone. Read in the order taken, open, handed, it is counted at least once whenever
        the reads fall (twice at worst: a newcomer refused a moment early)."""
        w, n, step, b = self._own_words(), self.slots, self.slot_words, self.slot_base
        end = b + n * step
        taken = sum(w[b + W_HANDED_IN : end : step])
        total = sum(w[b + W_CONNS : end : step]) - taken
        for s in range(n):
            row = b + s * step + self.handed_base
            total += sum(w[row : row + n])
        return int(total)

    def _summed(self) -> list[int]:
        """The fields and the vector, summed over workers, retired ones included, since the
        last reset (under the lock: a retirement moves figures from a slot to the retired
        row, a reset moves the baseline, and either, half seen, reads wrong)."""
        out = []
        w = self.words
        width = self.width
        rows = []
        for slot in range(self.slots):
            lo = self.base(slot) + self.fig_base

            def read(lo: int = lo) -> list[int]:
                return w[lo : lo + width].tolist()

            row = self._whole(slot, read)
            rows.append(row if row is not None else read())  # (stuck mid-publish: as it is)
        for k in range(width):
            total = w[self.retired_base + k] - w[self.baseline_base + k]
            for row in rows:
                total += row[k]
            out.append(int(total))
        return out

    def totals(self) -> dict[str, int]:
        """Every figure summed over workers, retired ones included, since the last reset."""
        n = len(self.fields)
        with self.locked():
            summed = self._summed()
        return dict(zip(self.fields, summed[:n], strict=True))

    def vector_totals(self) -> list[int]:
        """The published vectors, summed as `totals` sums the figures."""
        with self.locked():
            return self._summed()[len(self.fields) :]

    def reset(self) -> None:
        """``stats reset``: every total reads 0 from now on (after a publish round), the
        kept blob is empty, and G_DETAIL_RESETS counts one more."""
        w = self.words
        with self.locked():
            summed = self._summed()
            for k in range(self.width):
                w[self.baseline_base + k] += summed[k]
            w[G_KEPT_LEN] = 0
            w[G_DETAIL_RESETS] += 1  # with the rest: `keep` tells a blob older than this

    def retire(self, slot: int) -> None:
        """The supervisor, for a dead worker: keep its figures, free its slot."""
        w = self.words
        b = self.base(slot)
        watched = w[b + W_WATCH]
        with self.locked():
            if self.keep is not None and w[b + W_BLOB_LEN]:
                # (dead: read as it is, torn or not, without waiting on its word)
                kept = self.keep(self._kept(), self._read_blob(slot, w[b + W_BLOB_LEN]))
                self._write_blob(self.slots, kept, G_KEPT_LEN)
            for k in range(self.width):
                w[self.retired_base + k] += w[b + self.fig_base + k]
                w[b + self.fig_base + k] = 0
        for word in (W_PID, W_CONNS, W_BLOB_LEN, W_PUB_SEQ, W_ACCEPTING, W_WATCH, W_WATCHERS):
            w[b + word] = 0
        # Its next worker numbers its requests on from W_REQ_SEQ, which is kept: the other
        # workers remember (their `seen`) the last request of this slot they answered, and
        # would take a request numbered from zero again for one answered already: every
        # gather of the next worker then waited PUBLISH_WAIT and read stale figures, until
        # its numbers passed the dead worker's. The acks restart from zero.
        for r in range(self.requesters):
            w[b + self.ack_base + r] = 0
            w[self.base(r) + self.ack_base + slot] = 0
        w[b + W_RESET_DONE] = w[b + W_REQ_SEQ]  # a reset it died in: done, nobody holds
        w[b + W_STATE] = EMPTY
        if watched:
            # its watchers went with it: the others stop logging what only they wanted (a
            # worker that closes its watchers tells them so itself: Worker._publish_watch)
            self.publish_watch()
            self.bump(G_SETTINGS_EPOCH)
            self.wake_all()

    # ---- publishing (a worker) ----

    def publish(
        self,
        slot: int,
        counters: Any,
        blob: dict[str, Any] | None,
        vector: Sequence[int] = (),
    ) -> None:
        """Copy `counters` (a `Counters`), `vector` (at most `self.vector` ints) and `blob`
        into `slot`.

        Any worker reads a slot's figures and blob without the lock (`_summed`, `blob`),
        while the slot's worker may publish again (for another worker's request, or its
        once-a-second tick): the slot's W_PUB_SEQ word is odd while a publish writes them,
        and a reader reads again until the word holds still and even (`_whole`), so each
        publish is seen whole or not at all. (Read without it, a row or blob half rewritten
        was read torn: a `stats` now and then whose cmd_get was not get_hits + get_misses,
        kept for good by a `stats reset` that read it; one `stats conns` in ~2,000, with
        four workers asking at once, without a worker's connections.)"""
        names = self.fields[: -len(SERVER_FIGURES)]
        figures = memoryview(array("q", [getattr(counters, name) for name in names]))
        data = None if blob is None else _pickled(blob)
        w = self.words
        b = self.base(slot)
        w[b + W_PUB_SEQ] += 1  # odd: being written (only its worker writes it)
        f = b + self.fig_base
        w[f : f + len(figures)] = figures
        if vector:
            v = b + self.vec_base
            w[v : v + len(vector)] = memoryview(array("q", vector))
        if data is not None:
            self._put_blob(slot, data, b + W_BLOB_LEN)
        w[b + W_PUB_SEQ] += 1
        self.add(slot, W_PUBLISHED, 1)

    def _whole(self, slot: int, read: Callable[[], _T]) -> _T | None:
        """`read()` of what `slot`'s worker publishes, done while no publish of it is under
        way, and again until none was (see `publish`); None after `PUB_WAIT` seconds of
        publishes under way (a worker that died, or was stopped, in the middle of one)."""
        w = self.words
        at = self.base(slot) + W_PUB_SEQ
        deadline = 0.0
        while True:
            seq = w[at]
            if not seq & 1:
                got = read()
                if w[at] == seq:
                    return got
            now = time.monotonic()
            if not deadline:
                deadline = now + PUB_WAIT
            elif now >= deadline:
                return None
            time.sleep(0.0002)

    def _write_blob(self, index: int, blob: Blob, length_word: int) -> None:
        """`blob` into blob place `index` (the kept one, or a slot's), its length into the
        word at `length_word`."""
        self._put_blob(index, _pickled(blob), length_word)

    def _put_blob(self, index: int, data: bytes, length_word: int) -> None:
        start = index * BLOB_MAX
        self.blobs[start : start + len(data)] = data
        self.words[length_word] = len(data)

    def _read_blob(self, index: int, n: int) -> Blob:
        if not n:
            return {}
        start = index * BLOB_MAX
        try:
            data: Blob = pickle.loads(self.blobs[start : start + n])
        except Exception:  # torn by a worker that died while writing it
            return {}
        return data

    def blob(self, slot: int) -> Blob:
        """What `slot`'s worker published last (none if a publish of it stays under way: see
        `_whole`)."""
        length = self.base(slot) + W_BLOB_LEN
        start = slot * BLOB_MAX

        def read() -> bytes:
            return bytes(self.blobs[start : start + self.words[length]])

        data = self._whole(slot, read)
        if not data:
            return {}
        blob: Blob = pickle.loads(data)  # whole: no publish moved it meanwhile
        return blob

    def kept(self) -> Blob:
        """What the blobs of dead workers left in the totals since the last reset (`keep`)."""
        with self.locked():
            return self._kept()

    def _kept(self) -> Blob:
        return self._read_blob(self.slots, self.get(G_KEPT_LEN))

    def requests(self, slot: int, seen: list[int]) -> list[tuple[int, int, int]]:
        """The requests of other workers `slot` has not answered (`seen`: per requester, the
        request number acknowledged; updated by `acknowledge`): (requester, number, kinds)."""
        asked = []
        for r in range(self.requesters):
            seq = self.word(r, W_REQ_SEQ)  # (a requester writes its kinds, then the number)
            if r != slot and seq > seen[r]:
                asked.append((r, seq, self.word(r, W_REQ_KINDS)))
        return asked

    def acknowledge(self, slot: int, seen: list[int], asked: list[tuple[int, int, int]]) -> None:
        """After publishing: `slot` answered the requests `asked` (those `requests` read, and
        no later one: a ``stats reset`` asked between the two reads was acknowledged unread,
        and its worker then served requests the reset counted as held)."""
        b = self.base(slot) + self.ack_base
        for r, seq, _ in asked:
            seen[r] = seq
            self.words[b + r] = seq

    def holding(self, asked: list[tuple[int, int]]) -> bool:
        """Whether a reset of `asked` is still under way: its worker runs and has not said
        it done (`reset_done`)."""
        return any(
            self.word(r, W_RESET_DONE) < seq and self.word(r, W_STATE) == RUNNING
            for r, seq in asked
        )

    def reset_done(self, slot: int) -> None:
        """The reset `slot` asked for (its latest request) is done: the holders go on."""
        self.set_word(slot, W_RESET_DONE, self.word(slot, W_REQ_SEQ))

    def gather(
        self, slot: int, kinds: int, answer: Callable[[], None], wait: float = PUBLISH_WAIT
    ) -> list[int]:
        """Ask every other running worker to publish `kinds`, and wait for them. `answer`
        publishes this worker's own figures and answers requests made meanwhile. Returns
        the slots that did not answer in time (their figures are the last they published).
        `slot` -1: the asker has no slot (it does not ask; the figures are the last
        published); an asker's slot (`asker`) asks and answers nothing."""
        if slot >= 0:
            seq = self.word(slot, W_REQ_SEQ) + 1
            self.set_word(slot, W_REQ_KINDS, kinds)
            self.set_word(slot, W_REQ_SEQ, seq)
        else:
            return []
        # (not a worker the supervisor found stopped: each `stats` waited its whole `wait`
        # for one that SIGSTOP held, and the asker's other clients with it)
        others = [s for s in self.live() if s != slot and not self.word(s, W_STUCK)]
        for s in others:
            self.wake(s)
        answer()
        deadline = time.monotonic() + wait
        pause = 0.0001
        while True:
            late = [
                s
                for s in others
                if self.word(s, W_STATE) == RUNNING
                and self.words[self.base(s) + self.ack_base + slot] < seq
            ]
            if not late or time.monotonic() >= deadline:
                return late
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
            answer()

    def asker(self, k: int = 0) -> int:
        """The slot of asker `k` (pass it to `gather`)."""
        if not 0 <= k < self.askers:
            raise ValueError(f"the board has {self.askers} asker slot(s)")
        return self.slots + k

    def close(self) -> None:
        """Once no worker runs: the wake-up and hand-over sockets (a connection still in
        one is closed with it) and both mappings, now (a daemon started and stopped inside
        a program gives everything back at its stop)."""
        for r, w in (*self.wakers, *self.handoffs):
            r.close()
            w.close()
        for inbox in self.inboxes or ():
            while inbox:
                inbox.popleft()[0].close()
        self._lock_file.close()
        try:
            for view in (*self._own_views, self.words):
                view.release()
        except BufferError:
            return  # a view in use: the mappings go with it
        self._map.close()
        self.blobs.close()
