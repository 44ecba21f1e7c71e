"""Lifecycle: wires settings, clock, cache, handlers and server together; start, wait, stop.

The daemon is the only module that knows every layer. The server gets the handlers as a
plain callable; the handlers get this object as their `ServerInfo` (connection figures,
verbosity, stats reset); the server gets it as its `Hooks` (a stop request, run-time
settings). Signal handlers only record the signal; the main thread acts on it (gunicorn's
arbiter pattern), so no lock is ever taken inside a signal handler.

Two ways to run the same workers:

* *processes* (`run` with ``processes=True``: the ``mcached`` command under the GIL): this
  process binds, lays out the cache's arena and the board, then becomes the supervisor
  (`mcached.server.supervisor`) of ``-t`` worker processes and one maintainer process (the
  LRU crawler and the slab automover). Each worker process runs one worker loop in its main
  thread, with its own holder word in the arena (``slot + 1``); the maintainer's threads
  (crawler and ticker, automover, metrics) have the three words after the workers'.
* *threads* (`start`/`stop`, and `run` on a free-threaded interpreter): every worker is a
  thread of this process, the maintainer's threads too. Tests and programs that embed the
  daemon use this: forking a process that runs other threads (pytest, a web server) is not
  safe.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import platform
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psutil

from mcached import MEMCACHED_VERSION, process, systemd
from mcached.addr import DEFAULT_PORT, format_address
from mcached.auth import AuthFile, load_auth_file
from mcached.clock import Clock
from mcached.cluster.discovery import Discovery
from mcached.handlers import Handlers
from mcached.protocol.binary_parser import (
    ASCII,
    AUTO,
    BINARY,
    AnyParser,
    BinaryParser,
    Negotiator,
)
from mcached.protocol.parser import RECEIVE_MIN, Parser
from mcached.sasl import ENV as SASL_PWDB_ENV
from mcached.sasl import Cyrus, CyrusUnavailable, Passwords, Sasl
from mcached.server.board import (
    COUNTERS,
    DETAIL,
    G_AUTOMOVE_RATIO,
    G_CONN_PEAK,
    G_CRAWLER_SLEEP,
    G_CRAWLER_TOCRAWL,
    G_DETAIL,
    G_DETAIL_RESETS,
    G_HOT_LRU_PCT,
    G_HOT_MAX_FACTOR,
    G_LRU_CRAWLER,
    G_LRU_SEGMENTED,
    G_MAINTAINER_BEAT,
    G_OLDEST_LIVE,
    G_RELOAD_EPOCH,
    G_SETTINGS_EPOCH,
    G_SIZES,
    G_STOP,
    G_TEMP_LRU,
    G_TEMPORARY_TTL,
    G_TLS_EPOCH,
    G_VERBOSE,
    G_WARM_LRU_PCT,
    G_WARM_MAX_FACTOR,
    G_WATCH,
    RUNNING,
    STARTING,
    STOP_GRACEFUL,
    STOP_NOW,
    STOP_SIGNALLED,
    W_PID,
    W_PUBLISHED,
    W_RELOADED,
    W_STATE,
    W_STUCK,
)
from mcached.server.connection import TRACE
from mcached.server.docs import SharedDocs
from mcached.server.listener import Server
from mcached.server.supervisor import (
    CHILD_SIGNALS,
    MAINTAINER,
    WORKER,
    Child,
    Supervisor,
    TooManyDeaths,
)
from mcached.settings import Settings, binding_protocol
from mcached.stats import Counters, PrefixStats
from mcached.storage.cache import Cache
from mcached.storage.maintainer import LruCrawler, SlabAutomover, Ticker

if TYPE_CHECKING:
    from mcached.metrics import MetricsServer

log = logging.getLogger("mcached")
# Start, stop and reload lines: the daemon logs them whatever the verbosity (a few lines per
# lifetime: `configure_logging`); in a program that embeds it, as its `verbose` says
lifecycle = logging.getLogger("mcached.lifecycle")

# stats' libevent row names the event library: mcached's loop is Python's epoll
LIBEVENT = f"epoll-python{platform.python_version()}"
# the item tables' starting size without -o hashpower: memcached's (2^16 slots in all, so
# `stats` shows its hash_power_level and hash_bytes at start)
HASHPOWER_DEFAULT = 16
STATUS_INTERVAL = 5.0  # seconds between systemd STATUS= updates
RELOAD_WAIT = 5.0  # seconds the supervisor waits for every worker to reload on SIGHUP
RELOAD_POLL = 0.1  # seconds between its looks, meanwhile, for a stop waiting behind it
STOP_SIGNALS = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGUSR1))
logging.addLevelName(TRACE, "TRACE")  # -vv: every command and reply (the connections log it)

# memcached's levels: -vv prints connections, commands and replies; -vvv is the same here
# (memcached adds its state machine's transitions, which mcached does not have)
VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO}
TRACE_VERBOSITY = 2


#: run-time settings a command changes for every worker (`Daemon.tune_settings`), each in
#: a board word (a float as its bits): only stats settings reads them
TUNABLE_WORDS: dict[str, int] = {
    "slab_automove_ratio": G_AUTOMOVE_RATIO,
    "hot_lru_pct": G_HOT_LRU_PCT,
    "warm_lru_pct": G_WARM_LRU_PCT,
    "hot_max_factor": G_HOT_MAX_FACTOR,
    "warm_max_factor": G_WARM_MAX_FACTOR,
    "lru_segmented": G_LRU_SEGMENTED,
    "temp_lru": G_TEMP_LRU,
    "temporary_ttl": G_TEMPORARY_TTL,
    "oldest_live": G_OLDEST_LIVE,
}
_FLOAT_TUNABLES = frozenset(("slab_automove_ratio", "hot_max_factor", "warm_max_factor"))


def log_level(verbose: int) -> int:
    return VERBOSITY_LEVELS.get(verbose, TRACE)


def gil_enabled() -> bool:
    """False on a free-threaded interpreter that runs without its GIL."""
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


# seconds a worker process may go without publishing (it does every second), or stay starting,
# before the watchdog goes unfed: half of WatchdogSec, but never less (a short WatchdogSec, a
# worker busy with one long request)
LIVENESS_FLOOR = 5.0
# seconds after the start before workers that do not all run yet are logged (READY=1 waits
# for them however long it takes: systemd's TimeoutStartSec= decides when it is too long)
START_WAIT = 15.0
START_POLL = 0.01  # seconds between looks at the workers until they all run


class _Liveness:
    """Whether every worker runs its loop: each publishes its counters on the board once a
    second (`Worker._tick`); and whether the maintainer runs: its ticker beats once a second
    (G_MAINTAINER_BEAT). The supervisor feeds systemd's watchdog only while none has gone
    `window` seconds without (half of WatchdogSec), so a worker stuck for good (a deadlock,
    a loop that never returns) gets the daemon restarted, where a supervisor alone would
    keep the watchdog fed; so does a stuck maintainer (the LRU crawler, the automover and
    the cluster's checks stop with it: until, nothing noticed). A worker that dies is
    replaced by the supervisor instead, and its successor starts the count afresh; one that
    stays starting for `window` seconds (stuck before its loop, or dying as it starts, over
    and over) counts as stuck too: it was ignored, and the watchdog was fed while its slot
    served nobody, for good. Worker threads (a free-threaded build) are checked the same
    way: they publish on the board as processes do (until, they were not checked)."""

    def __init__(
        self,
        board: Any,
        window: float,
        watchdog: bool = True,
        maintainer_pid: Callable[[], int | None] | None = None,
    ) -> None:
        self.board = board
        self.window = window
        self.watchdog = watchdog  # what the log says a stuck worker costs
        self.maintainer_pid = maintainer_pid
        # slot (-1: the maintainer): ((state, pid, published), when it was first seen so)
        self._seen: dict[int, tuple[tuple[int, int, int], float]] = {}
        self._stuck: set[int] = set()  # told of in the log

    def all_alive(self) -> bool:
        board = self.board
        now = time.monotonic()
        ok = True
        for slot in range(board.slots):
            state = board.word(slot, W_STATE)
            if state not in (RUNNING, STARTING):
                self._seen.pop(slot, None)
                continue
            pid = board.word(slot, W_PID)
            mark = (state, pid, board.word(slot, W_PUBLISHED))
            if not self._runs(slot, mark, now):
                if slot not in self._stuck:
                    self._stuck.add(slot)
                    board.set_word(slot, W_STUCK, 1)  # asks for figures stop waiting for it
                    log.error(
                        "worker %d %s for %.0f s: %s",
                        slot,
                        f"(pid {pid}) has not run its loop"
                        if state == RUNNING
                        else "has not started",
                        now - self._seen[slot][1],
                        "the systemd watchdog is no longer fed"
                        if self.watchdog
                        else "stuck or stopped; while it holds a cache lock, the other "
                        "workers wait for it too",
                    )
                ok = False
            elif slot in self._stuck or board.word(slot, W_STUCK):
                board.set_word(slot, W_STUCK, 0)  # (or a new worker in a stuck one's slot)
                if slot in self._stuck:
                    self._stuck.discard(slot)
                    log.warning("worker %d (pid %d) runs its loop again", slot, pid)
        return self._maintainer_runs(now) and ok

    def _runs(self, slot: int, mark: tuple[int, int, int], now: float) -> bool:
        """Whether `slot`'s `mark` changed within the window (or is new)."""
        last = self._seen.get(slot)
        if last is None or last[0] != mark:
            self._seen[slot] = (mark, now)
            return True
        return now - last[1] <= self.window

    def _maintainer_runs(self, now: float) -> bool:
        pid = self.maintainer_pid() if self.maintainer_pid is not None else None
        if pid is None:  # dead, its successor not forked yet (or none to watch)
            self._seen.pop(-1, None)
            return True
        if self._runs(-1, (RUNNING, pid, self.board.get(G_MAINTAINER_BEAT)), now):
            if -1 in self._stuck:
                self._stuck.discard(-1)
                log.warning("the maintainer (pid %d) runs again", pid)
            return True
        if -1 not in self._stuck:
            self._stuck.add(-1)
            log.error(
                "the maintainer (pid %d) has not run for %.0f s: the LRU crawler, the slab "
                "automover and the cluster's checks wait for it; %s",
                pid,
                now - self._seen[-1][1],
                "the systemd watchdog is no longer fed"
                if self.watchdog
                else "stuck or stopped; while it holds a cache lock, the workers wait for it too",
            )
        return False


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        tcp_sockets: list[socket.socket] | None = None,
        processes: bool = False,
    ) -> None:
        # -B as served: memcached's choice when it was not given (stats settings shows it)
        settings = settings.replace(protocol=binding_protocol(settings))
        self.settings = settings
        self.clock = clock or Clock()
        self.processes = processes
        self.cache = self._make_cache()
        if settings.verbose > 1:  # memcached's slabs_init prints its classes under -vv
            for cid, (size, perslab) in enumerate(self.cache.slab_classes, 1):
                log.log(TRACE, "slab class %3d: chunk size %9d perslab %7d", cid, size, perslab)
        # The `config get cluster` endpoint. It lists this node by its bound port, known only
        # once the server has bound (port 0 picks one), hence the callable. Its membership and
        # health live in two shared documents, made here, before any worker process is forked,
        # so every process serves the same ones: writers are the workers (0..t-1), the
        # maintainer (t, the keeper: source and health checks) and the supervisor (t+1, the
        # first load); in one process, every thread writes as 0.
        writers = settings.threads + 2
        self._docs = (SharedDocs(writers), SharedDocs(writers))
        self.discovery = Discovery(
            settings,
            local_port=self._local_port,
            docs=self._docs[0],
            health_docs=self._docs[1],
        )
        # -Y: the credentials (read now: a bad file stops us before anything binds)
        self.authfile = AuthFile(settings.auth_file) if settings.auth_file else None
        # -S: the SASL password file (memcached's MEMCACHED_SASL_PWDB, or --sasl-pwdb)
        # (or, without one, Cyrus SASL's library, configuration and sasldb, as memcached)
        self.sasl_passwords: Passwords | None = None
        sasl: Sasl | Cyrus | None = None
        if settings.sasl:
            pwdb = settings.sasl_pwdb or os.environ.get(SASL_PWDB_ENV, "")
            if not pwdb:
                try:
                    sasl = Cyrus()
                except CyrusUnavailable as exc:
                    log.warning("%s", exc)
            if sasl is None:
                self.sasl_passwords = Passwords(pwdb)
                sasl = Sasl(self.sasl_passwords)
        self.handlers = Handlers(
            self.cache,
            settings,
            self,
            self.clock,
            discovery=self.discovery,
            authfile=self.authfile,
            sasl=sasl,
        )
        item_size_max = settings.item_size_max
        cas_enabled = settings.cas_enabled
        auth = self.authfile is not None
        sasl_on = settings.sasl
        mode = settings.protocol

        def make_text() -> Parser:
            return Parser(
                item_size_max=item_size_max,
                cas_enabled=cas_enabled,
                auth=auth,
                receive_min=RECEIVE_MIN,
            )

        def make_binary() -> BinaryParser:
            return BinaryParser(
                item_size_max=item_size_max,
                cas_enabled=cas_enabled,
                sasl=sasl_on,
                receive_min=RECEIVE_MIN,
            )

        # -B: each connection's protocol, from its first byte (memcached's negotiation), or
        # its listener's (-l proto[...]:, memcached's names; "": -B's)
        modes = {"": mode, "ascii": ASCII, "binary": BINARY, "negotiating": AUTO}

        def make_parser(listener: str = "") -> AnyParser:
            m = modes[listener]
            if m == BINARY:
                return make_binary()
            return Negotiator(m, make_text, make_binary, auth=auth)

        # -Z: the Server builds its TLS context here, so bad certificates stop us early too
        self.server = Server(
            settings,
            self.handlers.dispatch_table(),
            make_parser,
            self,
            tcp_sockets=tcp_sockets,
        )
        self.board = self.server.board
        self.handlers.events = self.server.events  # watch: where handlers log items
        self.handlers.tls = self.server.tls  # refresh_certs
        # Parts that re-read their configuration on SIGHUP (cluster membership, auth file...):
        # each has reload() -> None and is called from the thread that serves.
        self.reloadables: list[Any] = [self.discovery]
        self.reloadables += [
            p for p in (self.authfile, self.sasl_passwords, self.server.tls) if p is not None
        ]
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stop_asked = False  # a stop is in `_events` (or was served)
        self.memory_locked = True  # -k: the first process's mlockall (refused: it said so)
        # SIGHUPs received, taken from `_events`, and covered by a reload that began after
        # they came (those need no reload of their own)
        self._hups_received = self._hups_taken = self._hups_covered = 0
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._stop_done = threading.Event()  # `stop` finished (whichever thread ran it)
        self._threads_started: list[Any] = []
        self._hup = False  # a child process: SIGHUP sent to it arrived, reload at once
        # the board's G_RELOAD_EPOCH whose reload this process's copies have (a child forked
        # later inherits the supervisor's: the files as the supervisor last loaded them)
        self._reload_epoch = 0
        self._detail_resets = 0  # the board's G_DETAIL_RESETS this process's table has seen
        self._supervisor_pid = os.getpid()
        self._cpu_high = (0.0, 0.0)  # the most `_cpu` said in this process (see there)
        self.supervisor: Supervisor | None = None
        self.port = 0
        self.udp_port = 0
        # --metrics-listen: bound with the other sockets, served by a thread (see metrics)
        self.metrics_sock: socket.socket | None = None
        self.metrics: MetricsServer | None = None
        self.metrics_port = 0

    def _local_port(self) -> int:
        """The port this node lists itself with: its TCP port (under -s, which serves no
        TCP, the one given, or memcached's default). Once bound, the port recorded then:
        the listeners close first when the daemon stops, and a ``stats`` served meanwhile
        still asks (the socket's own answer was EBADF, and the request's connection closed)."""
        if self.port:
            return self.port
        return self.server.ports[0] if self.server.tcp else DEFAULT_PORT

    def _make_cache(self, memory_limit: int | None = None, automove: int | None = None) -> Cache:
        s = self.settings
        return Cache(
            memory_limit=s.memory_limit if memory_limit is None else memory_limit,
            item_size_max=s.item_size_max,
            evictions=s.evictions,
            cas_enabled=s.cas_enabled,
            clock=self.clock,
            chunk_size=s.chunk_size,
            growth_factor=s.growth_factor,
            slab_chunk_max=s.slab_chunk_max,
            slab_reassign=s.slab_reassign,
            slab_automove=s.slab_automove if automove is None else automove,
            # memcached's starting hash table size, in all the partitions' tables
            table_slots=1 << (s.hashpower or HASHPOWER_DEFAULT),
        )

    def _maintainers(self, holder: int) -> list[Any]:
        """The cache's own threads, each over a view of its own holder word: the LRU crawler
        (-o lru_crawler) reclaims expired items nobody reads; the ticker moves the read path's
        "60 s ago" and reclaims the dead items at the clock hands; the automover moves slab
        pages (also what frees pages after cache_memlimit lowers the limit), so it runs
        whenever pages may move."""
        board = self.board
        out: list[Any] = [
            # always there: `lru_crawler enable|disable` turns it on and off at run time
            LruCrawler(
                self.cache.view(holder=holder),
                enabled=lambda: bool(board.get(G_LRU_CRAWLER)),
                sleep=lambda: board.get(G_CRAWLER_SLEEP),
                tocrawl=lambda: board.get(G_CRAWLER_TOCRAWL),
            ),
            # reads refresh a referenced item's last access once it is 60 s old (Cache.tick);
            # with -o lru_maintainer, dead items at the clock hands go (Cache.reclaim_dead):
            # it takes locks, so it has a holder word of its own
            Ticker(
                self.cache.view(holder=holder + 3),
                beat=self._maintainer_beat,
                reclaim=self.settings.lru_maintainer,
            ),
        ]
        if self.settings.slab_reassign:
            out.append(
                SlabAutomover(
                    self.cache.view(holder=holder + 1),
                    ratio=lambda: board.get_float(G_AUTOMOVE_RATIO),
                    window=self.settings.slab_automove_window,
                )
            )
        return out

    def _maintainer_beat(self) -> None:
        """The ticker's run, once a second: the maintainer runs (`_Liveness`)."""
        self.board.set(G_MAINTAINER_BEAT, self.board.get(G_MAINTAINER_BEAT) + 1)

    def _bind_metrics(self) -> None:
        """--metrics-listen: bind now, with the other sockets (before -u drops root)."""
        if self.settings.metrics_listen and self.metrics_sock is None:
            from mcached import metrics  # prometheus_client: only in daemons that serve it

            self.metrics_sock = metrics.bind(self.settings.metrics_listen)
            self.metrics_port = int(self.metrics_sock.getsockname()[1])
            log.info(
                "metrics on http://%s/metrics", format_address(self.metrics_sock.getsockname())
            )

    def _start_metrics(self, cache: Cache) -> None:
        """Serve the metrics from a thread of this process, reading `cache` (a view with a
        holder word of its own: a scrape takes the cache's class locks)."""
        if self.metrics_sock is None:
            return
        from mcached import metrics

        self.metrics = metrics.MetricsServer(
            self.metrics_sock, metrics.Collector(lambda: self.metrics_snapshot(cache))
        )
        self.metrics.start()

    def _bound(self) -> None:
        """After binding: the ports we got (port 0 asks for a free one), in stats settings.
        With ``-s`` there are none: the settings keep the ports given, as memcached's do."""
        if not self.server.tcp:
            self.port, self.udp_port = self.settings.port, self.settings.udp_port
            self._bound_figures()
            return
        self.port = self.server.ports[0]
        self.udp_port = self.server.udp_ports[0] if self.server.udp_ports else 0
        if self.port != self.settings.port or self.udp_port != self.settings.udp_port:
            self.settings = self.settings.replace(port=self.port, udp_port=self.udp_port)
            self.handlers.settings = self.settings
        self._bound_figures()

    def _bound_figures(self) -> None:
        self.board.set(G_VERBOSE, self.settings.verbose)
        self.board.set(G_LRU_CRAWLER, int(self.settings.lru_crawler))
        self.board.set(G_CRAWLER_SLEEP, self.settings.lru_crawler_sleep)
        self.board.set(G_CRAWLER_TOCRAWL, self.settings.lru_crawler_tocrawl)
        self.board.set(G_SIZES, int(self.settings.track_sizes))  # from the first CAS
        self.board.set(G_DETAIL, int(self.settings.detail_enabled))
        self._put_tunables({name: getattr(self.settings, name) for name in TUNABLE_WORDS})
        for t in self.server.tcp:
            log.info("listening on tcp %s", t.getsockname())
        for u in self.server.udp:
            log.info("listening on udp %s", u.getsockname())
        if self.server.unix is not None:
            log.info("listening on unix socket %s", self.settings.unix_socket)

    # ---- threads: the daemon inside this process ----

    def start(self) -> None:
        """Serve from threads of this process (workers, maintainers, discovery)."""
        self.server.bind()
        self._bind_metrics()
        self._bound()
        self.server.start()
        if self.settings.verbose >= TRACE_VERBOSITY:
            self.set_verbosity(self.settings.verbose)
        self._threads_started = [self.discovery, *self._maintainers(holder=0)]
        for svc in self._threads_started:
            svc.start()
        self._start_metrics(self.cache)

    def stop(self, graceful: bool = True) -> None:
        """Stop accepting; when `graceful`, answer what every connection has sent and send
        the replies (within --shutdown-timeout); close the connections (at once, dropping
        unsent replies, when not `graceful`); stop the threads in reverse start order."""
        with self._stop_lock:
            stopping = self._stopped
            self._stopped = True
        if stopping:  # another thread stops it: done when that stop is
            self._stop_done.wait(self.settings.shutdown_timeout + 10)
            return
        try:
            if self.metrics is not None:
                self.metrics.stop()
            for svc in reversed(self._threads_started):
                svc.stop()
            try:
                self.server.stop(drain=self.settings.shutdown_timeout if graceful else None)
            except BaseException:
                # Interrupted while the drain waited on a client (Ctrl-C in a program that
                # runs the daemon in its threads): the workers stop now, so that the stop
                # ends whole (a second `stop` returns at once) before the interrupt goes on
                self.server.stop()
                raise
            finally:
                self.server.remove_unix_file()
            lifecycle.info("stopped")
        finally:
            self._stop_done.set()

    @property
    def stopped(self) -> bool:
        """Stopping or stopped: by `stop`, or by the ``shutdown`` command (from the moment
        it is asked: before the client that sent it sees its connection close)."""
        return self._stopped or self._stop_asked

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Wait for a `stop` another thread runs (the ``shutdown`` command's) to finish."""
        return self._stop_done.wait(timeout)

    def close(self) -> bool:
        """After `stop`: give the memory back now, not when the garbage collector finds the
        daemon's objects (they sit in reference cycles): the board's mappings and wake-up
        sockets, the arena's mappings, watch's event rings and the cluster's shared
        documents (a program that starts and stops daemons leaks nothing). False, and
        nothing done, while one of the daemon's threads still runs (a stop that gave up
        waiting): its memory then goes with its last reference."""
        threads = [getattr(svc, "_thread", None) for svc in self._threads_started]
        if not self._stopped or any(w.running for w in self.server.workers):
            return False
        if any(t is not None and t.is_alive() for t in threads):
            return False
        self._threads_started = []
        self.board.close()
        self.cache.arena.close()
        for mapped in (self.server.events, *self._docs):  # watch's rings, the cluster's docs
            try:
                mapped.close()
            except BufferError:
                pass  # a view in use: the mapping goes with it
        return True

    def request_stop(self, graceful: bool = False) -> None:
        """From any thread (the ``shutdown [graceful]`` command): ask the main loop to stop,
        at once or `graceful` (see `stop`)."""
        self._stop_asked = True
        self._events.put(("stop", graceful))
        if not self._waiting:
            # No main loop is waiting (the daemon runs inside a test): stop from a helper
            # thread, since the caller may be a worker that stop() joins.
            threading.Thread(
                target=self.stop, args=(graceful,), name="mcached-stop", daemon=True
            ).start()

    _waiting = False
    _stop_asked = False  # `request_stop` was called (`stopped`)
    _liveness: _Liveness | None = None  # the main loop's check of the workers (`reload`)
    failed = ""  # why the daemon stopped itself (worker threads kept failing), if it did

    # ---- the main loop ----

    def run(self, before_start: Callable[[], None] | None = None) -> int:
        """Bind, (detach, drop privileges: `before_start`), start, serve until a signal or
        ``shutdown``, stop. Main thread only. Tells systemd each step when under it."""
        self._install_signals()
        # blocked since the program's first import (mcached.__main__): one that came during
        # the imports is handled now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGUSR1})
        self.server.bind(unix=False)  # binding errors surface here, before we detach
        self._bind_metrics()
        if before_start is not None:
            before_start()
        # -s: the unix socket after -u, so its file is the user's (memcached's order)
        self.server.bind()
        self._supervisor_pid = os.getpid()  # -d made a new process: the pid file's
        if self.processes:
            return self._run_processes()
        # waiting before the start: a ``shutdown`` a worker serves at once is an event for
        # the main loop, not a stop from a thread of its own that the main thread's exit
        # would overtake
        self._waiting = True
        graceful = True  # signals drain; the shutdown command says which it wants
        try:
            self.start()
            graceful = self._main_loop()
        finally:
            self._waiting = False
            systemd.notify("STOPPING=1")
            self.stop(graceful)
        return 1 if self.failed else 0

    def _main_loop(
        self,
        on_tick: Callable[[str, Any], None] | None = None,
        starting: Callable[[], list[int]] | None = None,
    ) -> bool:
        """Serve signals and systemd until a stop; whether the stop is graceful. systemd
        hears READY=1 once no worker is `starting` (every worker process runs its loop),
        and WATCHDOG=1 from then on: a daemon whose workers do not start claims nothing
        (until, it was READY=1 after 15 s whatever they did, and pings for good)."""
        watchdog = systemd.watchdog_interval()
        alive = self._liveness = _Liveness(
            self.board,
            max(watchdog or 0.0, LIVENESS_FLOOR),
            bool(watchdog),
            maintainer_pid=self.supervisor.maintainer_pid if self.supervisor else os.getpid,
        )
        started = time.monotonic()
        ready = told = False
        late: list[int] = []
        next_status = started + STATUS_INTERVAL

        def status() -> str:
            if ready:
                return self.status_line()
            slots = ", ".join(map(str, late))
            return f"starting: worker(s) {slots} not running yet; {self.status_line()}"

        while True:
            if not ready:
                late = starting() if starting is not None else []
                if not late:
                    ready = True
                    systemd.notify(f"READY=1\nSTATUS={status()}\nMAINPID={os.getpid()}")
                    lifecycle.info("ready: %s", status())
                    if watchdog:
                        systemd.notify("WATCHDOG=1")
                elif not told and time.monotonic() - started >= START_WAIT:
                    told = True
                    log.error(
                        "worker(s) %s not running %.0f s after the start: not ready until "
                        "they are (a service manager's start timeout decides)",
                        ", ".join(map(str, late)),
                        START_WAIT,
                    )
                    systemd.notify("STATUS=" + status())
                    next_status = time.monotonic() + STATUS_INTERVAL
            timeout = min(watchdog or STATUS_INTERVAL, STATUS_INTERVAL, 1.0)
            try:
                kind, arg = self._events.get(timeout=timeout if ready else START_POLL)
            except queue.Empty:
                kind, arg = "tick", None
            if on_tick is not None:
                on_tick(kind, arg)
            self._follow_refresh_certs()
            # every worker and the maintainer run: checked with no watchdog to feed too, so
            # that a stuck or stopped one is in the log
            healthy = not ready or alive.all_alive()
            if ready and watchdog and healthy:
                systemd.notify("WATCHDOG=1")
            if time.monotonic() >= next_status:
                systemd.notify("STATUS=" + status())
                next_status = time.monotonic() + STATUS_INTERVAL
            if kind == "fail":
                return False  # logged by workers_failing
            if kind == "stop":
                graceful = bool(arg)
                how = "gracefully" if graceful else "at once"
                lifecycle.info("shutdown command: stopping %s", how)
                return graceful
            if kind == "signal" and arg in STOP_SIGNALS:
                if arg == signal.SIGTERM and self.board.get(G_STOP) == STOP_NOW:
                    lifecycle.info("shutdown command: stopping at once")
                    return False
                if self.board.get(G_STOP) == STOP_GRACEFUL:
                    lifecycle.info("shutdown command: stopping gracefully")
                else:
                    lifecycle.info("%s: stopping", signal.Signals(arg).name)
                return True
            if kind == "signal" and arg == signal.SIGHUP:
                self._hups_taken += 1
                if self._hups_taken <= self._hups_covered:
                    continue  # it came before a reload that has read the files since
                if self._stop_asked:
                    continue  # a stop is queued behind it: the daemon stops, unreloaded
                # the SIGHUPs queued behind it came before this reload reads anything: it
                # stands for them (one each, a stuck worker held a stop 5 s behind each)
                self._hups_covered = self._hups_received
                if ready:  # before, READY=1 is still to come, once the workers run
                    # with the time, as Type=notify-reload waits for (sd_notify(3))
                    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                    systemd.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")
                self.reload()
                if ready:
                    systemd.notify("READY=1\nSTATUS=" + status())

    # ---- processes: the supervisor ----

    def _run_processes(self) -> int:
        self._bound()
        nworkers = self.settings.threads
        # the first membership, before the workers exist: they only ever read it (and write
        # config set); the maintainer keeps it from then on
        self.discovery.writer = nworkers + 1
        self.discovery.keeper = False
        self.discovery.load()
        self.supervisor = sup = Supervisor(
            self.board,
            nworkers,
            worker_main=self._worker_main,
            maintainer_main=self._maintainer_main,
            died_inside=self._died_inside,
            rebuild=self._rebuild,
        )
        sup.start()
        self._waiting = True

        def on_tick(kind: str, arg: Any) -> None:
            sup.reap()

        graceful = True
        code = 0
        try:
            graceful = self._main_loop(on_tick, sup.starting)
        except TooManyDeaths as exc:
            log.error("%s: stopping", exc)
            code = 1
        finally:
            self._waiting = False
            systemd.notify("STOPPING=1")
            # our copies of the listening sockets first: the port refuses connections once
            # every worker has closed its own too, which each does as it starts to stop
            self.server.close_sockets()
            sup.stop(graceful, self.settings.shutdown_timeout)
            self.server.remove_unix_file()
            self._stopped = True  # every child reaped: `close` may give the memory back
            lifecycle.info("stopped")
        return code

    def _holders(self, kind: str, slot: int) -> list[int]:
        """The arena's holder words of a child process."""
        n = self.settings.threads
        if kind == MAINTAINER:
            return [n + 1, n + 2, n + 3, n + 4]  # crawler, automover, metrics, ticker
        return [slot + 1]

    def _died_inside(self, child: Child) -> bool:
        """Whether `child` died inside a cache operation (its holder word says so). The
        supervisor takes no lock of the arena, ever: a lock may be held by another child
        that died at the same moment and is not reaped yet, and the supervisor would wait
        for it for good, with no worker replaced and SIGTERM unheard. What the child still
        had pinned or reserved is let go by the child that takes its place
        (`_release_left`)."""
        arena = self.cache.arena
        holders = self._holders(child.kind, child.slot)
        inside = any(arena.holding(h) for h in holders)
        for h in holders:
            arena.clear_holder(h)
        return inside

    def _release_left(self, kind: str, slot: int) -> None:
        """In a child as it starts: let go what the child before it on its holder words
        pinned or reserved (values it was sending or receiving when it died between cache
        operations; nothing on a first start). A lock it waits for here is held by another
        child that died inside an operation, whose death empties the cache and kills this
        child too."""
        released = sum(
            self.cache.view(holder=h).release_holder(h) for h in self._holders(kind, slot)
        )
        if released:
            log.info("released %d pins and reservations of the dead %s %d", released, kind, slot)

    def _rebuild(self) -> None:
        """A child died inside a cache operation: a new, empty arena (every child is dead),
        with the run-time settings the old one held (`cache_memlimit`, `slabs automove`)
        and its counters (the daemon runs on: its figures do not go back to 0)."""
        old = self.cache
        limit = old.memory_limit if old.memory_limit > 0 else None  # a word of the old arena
        self.cache = self._make_cache(limit, old.automove)
        self.cache.reset_stats(like=old)
        self.handlers.cache = self.cache
        old.arena.close()

    def _child_signals(self, on_stop: Callable[[bool], None]) -> None:
        def stop_draining(signo: int, frame: Any) -> None:
            if not self.board.get(G_STOP) and os.getppid() == self._supervisor_pid:
                # not the supervisor's (it marks the board first), nor the kernel's for its
                # death (then this child has another parent, and its pid may be anyone's):
                # sent to the process group or to this child alone. The whole daemon stops,
                # as on the supervisor's.
                self.board.set(G_STOP, STOP_SIGNALLED)
                os.kill(self._supervisor_pid, signal.SIGTERM)
            on_stop(True)

        def stop_now(signo: int, frame: Any) -> None:
            on_stop(False)

        def hup(signo: int, frame: Any) -> None:
            # sent to this child alone (the supervisor asks its workers through the board)
            self._hup = True
            worker = self.server.current()
            if worker is not None:
                self.board.wake(worker.slot)  # the wake-up reloads (worker_woken)

        signal.signal(signal.SIGTERM, stop_draining)
        signal.signal(signal.SIGUSR1, stop_draining)
        signal.signal(signal.SIGQUIT, stop_now)
        signal.signal(signal.SIGHUP, hup)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # blocked since the fork (Supervisor._spawn): one that came meanwhile runs here now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)

    def check_files_as_user(self) -> None:
        """Once -u has dropped root: the -Y file read again, as memcached reads it, as that
        user (SettingsError, in memcached's words, if it cannot be). One that only root can
        read stops the start, as there: read as root, it was served, and no SIGHUP could
        ever read it again (a user removed from it stayed in)."""
        if self.authfile is not None:
            load_auth_file(self.authfile.path)

    def _lock_memory(self, slot: int = -1) -> None:
        """-k in a child process: mlockall's locks are not inherited across fork. A refusal
        the supervisor has told of (`memory_locked` false) is said at debug level; else
        worker 0 (`slot`) tells it, once for all (the supervisor's lock says nothing of the
        children's, taken after -u without root's privileges: with CAP_IPC_LOCK it locked
        itself while every child was refused, unsaid)."""
        if self.settings.lock_memory:
            tell = slot == 0 and self.memory_locked
            process.lock_memory(logging.WARNING if tell else logging.DEBUG)

    def _worker_main(self, slot: int) -> None:
        """A worker process: one worker loop in this (the main) thread."""
        self._lock_memory(slot)
        self._release_left(WORKER, slot)
        self.cache.bind_holder(slot + 1)
        worker = self.server.make_worker(slot)
        timeout = self.settings.shutdown_timeout

        def on_stop(graceful: bool) -> None:
            worker.stop(time.monotonic() + timeout if graceful else None)

        self._child_signals(on_stop)
        self.discovery.writer = slot
        self.discovery.keeper = False  # it serves the shared membership; the maintainer keeps it
        worker.run()

    def _maintainer_main(self) -> None:
        """The maintainer process: the LRU crawler, the slab automover, and the cluster's
        keeper (the source watcher and the health checks: one process for the daemon, and
        one that never serves a request, so a check never waits behind one)."""
        # A flag, not a threading.Event: the stop comes in a signal handler, which runs on
        # this thread between two bytecodes, maybe while Event.wait holds the event's lock,
        # and Event.set would then wait for that lock for good (a maintainer hung so after a
        # SIGTERM, its supervisor gone).
        stopping: list[bool] = []
        self._child_signals(lambda graceful: stopping.append(graceful))
        self._lock_memory()
        self._release_left(MAINTAINER, 0)
        self.discovery.writer = self.settings.threads
        services = [*self._maintainers(holder=self.settings.threads + 1), self.discovery]
        for svc in services:
            svc.start()
        self._start_metrics(self.cache.view(holder=self.settings.threads + 3))
        while not stopping:
            time.sleep(0.2)  # a handler runs inside it; the flag is seen within 0.2 s
            if stopping or os.getppid() != self._supervisor_pid:
                break
            if self._hup:
                self._hup = False
                self.discovery.reload()
        if self.metrics is not None:
            self.metrics.stop()
        for svc in reversed(services):
            svc.stop()

    # ---- Hooks, for the server (called in a worker) ----

    def request_shutdown(self, graceful: bool) -> None:
        if self.processes:
            self.board.set(G_STOP, STOP_GRACEFUL if graceful else STOP_NOW)
            os.kill(self._supervisor_pid, signal.SIGTERM)
        else:
            self.request_stop(graceful)

    def workers_failing(self, reason: str) -> None:
        """Worker threads keep failing (`Server.worker_failed`): stop at once; `run` then
        returns 1, so that a service manager sees a failure (and may restart the daemon),
        as after the supervisor gives up on worker processes."""
        log.error("%s: stopping", reason)
        self.failed = reason
        if self._waiting:
            self._stop_asked = True
            self._events.put(("fail", reason))
        else:  # inside a program: stop from a helper thread (the caller is a worker)
            threading.Thread(
                target=self.stop, args=(False,), name="mcached-stop", daemon=True
            ).start()

    def apply_settings(self) -> None:
        """Run-time settings another worker changed (verbosity, stats detail, a ``stats
        reset`` of the detail table)."""
        board = self.board
        resets = board.get(G_DETAIL_RESETS)
        if resets != self._detail_resets:
            self._detail_resets = resets
            self.handlers.detail.clear()
        level = board.get(G_VERBOSE)
        self._apply_verbosity(level)
        # watch: what the attached watchers want logged (a plain int the request path tests)
        self.handlers.watching = self.server.events.flags = board.get(G_WATCH)
        # the storage tells of evictions only while a watcher wants them
        self.handlers.cache.on_evict = self.server.events.eviction_hook()
        detail = bool(board.get(G_DETAIL))
        self.handlers.detail.enabled = detail
        self.handlers.settings = self.handlers.settings.replace(
            verbose=level,  # -vvv shows 3; the verbosity command caps at 2 (memcached's)
            detail_enabled=detail,
            lru_crawler=bool(board.get(G_LRU_CRAWLER)),
            lru_crawler_sleep=board.get(G_CRAWLER_SLEEP),
            lru_crawler_tocrawl=board.get(G_CRAWLER_TOCRAWL),
            memory_limit=self.cache.memory_limit,
            slab_automove=self.cache.automove,
            track_sizes=bool(board.get(G_SIZES)),
            **self._tunables(),
        )

    def _tunables(self) -> dict[str, Any]:
        board = self.board
        values: dict[str, Any] = {}
        for name, word in TUNABLE_WORDS.items():
            if name in _FLOAT_TUNABLES:
                values[name] = board.get_float(word)
            elif isinstance(getattr(self.settings, name), bool):
                values[name] = bool(board.get(word))
            else:
                values[name] = board.get(word)
        return values

    def _put_tunables(self, values: dict[str, Any]) -> None:
        board = self.board
        for name, value in values.items():
            if name in _FLOAT_TUNABLES:
                board.set_float(TUNABLE_WORDS[name], value)
            else:
                board.set(TUNABLE_WORDS[name], int(value))

    def worker_woken(self) -> None:
        """A worker process woke (or starts): a reload SIGHUP asked for is done now, before
        it serves on (the supervisor's, which bumps the board's reload epoch and wakes every
        worker, or a SIGHUP sent to this process alone), and recorded in the worker's
        W_RELOADED word: the supervisor tells systemd READY=1 once every worker has. (The
        reload waited for the worker's once-a-second tick: a user removed from the auth file
        could log in on some workers for up to a second after ``systemctl reload``.)"""
        if not self.processes:
            return
        board = self.board
        epoch = board.get(G_RELOAD_EPOCH)
        if self._hup or epoch != self._reload_epoch:
            self._hup = False
            self._reload_epoch = epoch
            self.reload()
        worker = self.server.current()
        if worker is not None and board.word(worker.slot, W_RELOADED) != epoch:
            board.set_word(worker.slot, W_RELOADED, epoch)

    def extra_figures(self, kinds: int) -> dict[str, Any]:
        if kinds & DETAIL:
            # the reset it dates from: `keep_figures` drops a table older than the last
            return {"detail": self.handlers.detail.snapshot(), "resets": self._detail_resets}
        return {}

    def keep_figures(self, kept: dict[str, Any], dead: dict[str, Any]) -> dict[str, Any]:
        """`Board.retire`: what of a dead worker process's last published blob stays in the
        totals, as its counters do: its ``stats detail`` table, added to those of the
        workers dead before it (bounded as one worker's table is), unless a ``stats reset``
        came after it was published (its worker died before it published its cleared
        table: what it held is gone from the totals, as the rest of the table; it came
        back). Worker threads share their process's table: a dead one's is still in what
        its siblings publish. (Under the board's lock, which a reset takes too.)"""
        if not self.processes:
            return kept
        stale = dead.get("resets") != self.board.get(G_DETAIL_RESETS)
        tables = [t for t in (kept.get("detail"), None if stale else dead.get("detail")) if t]
        if not tables:
            return kept
        return {**kept, "detail": PrefixStats.merge(tables, limit=PrefixStats.MAX_PREFIXES)}

    def worker_tick(self) -> None:
        if not self.processes:
            return
        self.worker_woken()
        if os.getppid() != self._supervisor_pid:
            worker = self.server.current()
            if worker is not None:
                log.error("the supervisor is gone: stopping")
                worker.stop(time.monotonic() + self.settings.shutdown_timeout)

    # ---- figures ----

    def status_line(self) -> str:
        """One line for systemd's STATUS= and the log: where we listen and what we hold."""
        c = self.cache.stats()
        addrs = ",".join(f"{h}:{p}" for h, p in self._addresses())
        if self.server.unix is not None:
            addrs = self.settings.unix_socket
        return (
            f"listening on {addrs}; {self.server.curr_connections} connections; "
            f"{c['curr_items']} items, {c['bytes']} of {c['limit_maxbytes']} bytes"
        )

    def _addresses(self) -> list[tuple[str, int]]:
        out = []
        for t in self.server.tcp:
            try:
                name = t.getsockname()
            except OSError:
                continue
            out.append((str(name[0]), int(name[1])))
        return out

    def reload(self) -> None:
        """SIGHUP: re-read what can be re-read; the cache is never touched. The supervisor
        passes it on to every child, which reloads its own copies, and reloads its own: a
        child it forks later (in place of one that died) starts from them. (It kept the
        files as read at start, so a user removed from the auth file and reloaded could log
        in again on the next worker.) It returns once every worker has reloaded (or after
        `RELOAD_WAIT` seconds), so the READY=1 that follows means the new files are in
        force in every worker."""
        lifecycle.info("SIGHUP: reloading")
        sup = self.supervisor if os.getpid() == self._supervisor_pid else None
        if sup is not None:
            board = self.board
            board.bump(G_RELOAD_EPOCH)
            self._reload_epoch = board.get(G_RELOAD_EPOCH)
            board.wake_all()  # each worker reloads as it wakes (worker_woken)
            sup.signal_all(signal.SIGHUP, MAINTAINER)
        for part in self.reloadables:
            try:
                part.reload()
            except Exception:
                log.exception("reload of %r failed; keeping the previous configuration", part)
        if sup is not None:
            # systemd keeps its watchdog armed through a reload: the pings go on meanwhile
            # (a worker that never reloads is no stuck one until its own 5 s: the main
            # loop's check), as long as the check passes (a reload fed the watchdog of a
            # daemon whose worker was stuck: SIGHUPs closer than WatchdogSec kept it so)
            alive = self._liveness
            step = systemd.watchdog_interval() or RELOAD_WAIT
            start = time.monotonic()
            deadline = start + RELOAD_WAIT
            ping = start + step
            while True:
                now = time.monotonic()
                left = deadline - now
                late = sup.wait_workers(
                    W_RELOADED, self._reload_epoch, max(0.0, min(ping - now, left, RELOAD_POLL))
                )
                if not late or time.monotonic() >= deadline:
                    break
                if self._stop_asked:
                    # a stop waits behind this reload: it is not held up (the stop's own
                    # deadline, --shutdown-timeout, is what a service manager counts on)
                    lifecycle.info("reload cut short by a stop")
                    late = []
                    break
                if time.monotonic() >= ping:
                    ping += step
                    if alive is None or alive.all_alive():
                        systemd.notify("WATCHDOG=1")
            if late:
                log.warning(
                    "worker(s) %s did not reload within %.0f s",
                    ", ".join(map(str, late)),
                    RELOAD_WAIT,
                )

    def _install_signals(self) -> None:
        def on_signal(signo: int, frame: Any) -> None:
            # counted here too, for a reload to see without reading the queue (`reload`,
            # `_main_loop`): plain writes, safe in a handler, as the queue's put is
            if signo == signal.SIGHUP:
                self._hups_received += 1
            elif signo in STOP_SIGNALS:
                self._stop_asked = True
            self._events.put(("signal", signo))

        sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1]
        if self.processes:
            sigs.append(signal.SIGCHLD)
        for sig in sigs:
            signal.signal(sig, on_signal)

    # ---- ServerInfo, for the handlers ----

    def _processes(self) -> list[psutil.Process]:
        """The daemon's processes: the supervisor and its children (this one alone when the
        workers are threads: a program that embeds the daemon has children of its own).
        None it cannot read: psutil reads /proc, and a process out of descriptors gets
        OSError (EMFILE), not a psutil.Error; `stats` must still be answered then (its
        figures of CPU and memory are left out), as memcached's getrusage needs none."""
        try:
            main = psutil.Process(self._supervisor_pid)
        except (psutil.Error, OSError):
            return []
        if not self.processes:
            return [main]
        try:
            return [main, *main.children()]
        except (psutil.Error, OSError):
            return [main]

    def _cpu(self, procs: list[psutil.Process] | None = None) -> tuple[float, float]:
        """User and system CPU seconds of every process of the daemon, those it has reaped
        too (a worker or maintainer that died, which a counter must not lose: a metric that
        went back at each death)."""
        user = system = 0.0
        for p in self._processes() if procs is None else procs:
            try:
                cpu = p.cpu_times()
            except (psutil.Error, OSError):
                continue  # a child that exited meanwhile, or no descriptor left to read it
            user += cpu.user
            system += cpu.system
            if self.processes and p.pid == self._supervisor_pid:
                user += cpu.children_user  # the children it has waited for
                system += cpu.children_system
        # A child reaped between the supervisor's read and its own is counted in neither
        # (a worker killed during a scrape: the counter stepped back by its CPU, 0.7 s, a
        # reset to Prometheus); never less than said before, in this process
        high_user, high_system = self._cpu_high
        self._cpu_high = (max(user, high_user), max(system, high_system))
        return self._cpu_high

    def metrics_snapshot(self, cache: Cache) -> dict[str, Any]:
        """Every figure the metrics endpoint serves (`mcached.metrics.Snapshot`), gathered
        from every worker through the board (the asker slot) and from the arena."""
        board = self.board
        srv = self.server
        board.gather(board.asker(), COUNTERS, lambda: None)
        counters, figures = srv.totals()
        stats: dict[str, Any] = dict(vars(counters))
        stats.update(figures)
        stats.update(cache.stats())
        procs = self._processes()
        user, system = self._cpu(procs)
        classes, totals = cache.slabs_stats()
        stats.update(
            version=MEMCACHED_VERSION,
            time=int(time.time()),
            uptime=self.clock.uptime(),
            rusage_user=user,
            rusage_system=system,
            curr_connections=srv.reported_connections,
            max_connections=self.settings.max_connections,
            accepting_conns=1 if srv.accepting else 0,
            total_malloced=totals["total_malloced"],
        )
        # the crawler's settings as ``stats settings`` shows them now (the run-time
        # ``lru_crawler enable|disable|sleep|tocrawl`` of any worker included)
        crawler = dict(
            self._tunables(),
            lru_crawler=bool(board.get(G_LRU_CRAWLER)),
            lru_crawler_sleep=board.get(G_CRAWLER_SLEEP),
            lru_crawler_tocrawl=board.get(G_CRAWLER_TOCRAWL),
            lru_maintainer_thread=self.settings.lru_maintainer,
        )
        host: dict[str, float] = {"cpu_user": user, "cpu_system": system}
        rss = pss = swap = 0
        for p in procs:
            try:
                mem = p.memory_full_info()
            except (psutil.Error, OSError):
                continue
            rss += mem.rss
            pss += getattr(mem, "pss", mem.rss)
            swap += getattr(mem, "swap", 0)
        host.update(rss=rss, pss=pss, swap=swap, processes=len(procs))
        host["host_available"] = psutil.virtual_memory().available
        host["host_swap_used"] = psutil.swap_memory().used
        host["host_cpu"] = psutil.cpu_percent(None) / 100.0
        return {
            "stats": stats,
            "settings": crawler,
            "items": dict(cache.items_stats()),
            "slabs": dict(classes),
            "latency": srv.latency_totals(),
            "host": host,
        }

    def general_stats(self) -> dict[str, Any]:
        srv = self.server
        srv.gather(COUNTERS)
        counters, figures = srv.totals()
        self._last_totals = counters
        # the daemon's pid (the pid file's) and the CPU of all its processes
        user, system = self._cpu()
        out: dict[str, Any] = {
            "pid": self._supervisor_pid,
            "rusage_user": f"{user:.6f}",
            "rusage_system": f"{system:.6f}",
            "uptime": self.clock.uptime(),
            "max_connections": self.settings.max_connections,
            "curr_connections": srv.reported_connections,
            "total_connections": figures["total_connections"],
            "rejected_connections": figures["rejected_connections"],
            # memcached's conn_structs: the structures it ever made, freed never
            "connection_structures": (
                max(srv.curr_connections, self.board.get(G_CONN_PEAK)) + srv.listening_conns
            ),
            "accepting_conns": 1 if srv.accepting else 0,
            "listen_disabled_num": figures["listen_disabled_num"],
            "threads": self.settings.threads,
        }
        out["idle_kicks"] = figures["idle_kicks"]  # shown with -o idle_timeout only
        out["read_buf_oom"] = figures["read_buf_oom"]
        out["log_watcher_sent"] = figures["log_watcher_sent"]
        out["log_watcher_skipped"] = figures["log_watcher_skipped"]
        out["log_worker_dropped"] = figures["log_worker_dropped"]
        out["time_in_listen_disabled_us"] = figures["time_in_listen_disabled_us"]
        out["libevent"] = LIBEVENT
        if srv.tls is not None:
            if self.settings.ssl_session_cache:
                out["ssl_new_sessions"] = figures["ssl_new_sessions"]
            out["ssl_handshake_errors"] = figures["ssl_handshake_errors"]
            out["time_since_server_cert_refresh"] = srv.tls.since_refresh(out["uptime"])
        s = self.settings
        if s.cluster_file or s.cluster_dns or s.config_set_enabled:
            # a node of a cluster: its configuration and health checks (mcached's own rows,
            # last; a lone node's stats stay memcached's)
            out.update(self.discovery.stat_rows())
        return out

    _last_totals: Counters | None = None

    def conns_stats(self, asking: object = None) -> list[tuple[str, object]]:
        return self.server.conns_stats(asking)

    def all_counters(self) -> list[Counters]:
        """The workers' counters, summed (as `general_stats` gathered them)."""
        if self._last_totals is None:
            self.server.gather(COUNTERS)
            self._last_totals = self.server.totals()[0]
        totals, self._last_totals = self._last_totals, None
        return [totals]

    def reset_stats(self, during: Callable[[], None]) -> None:
        """``stats reset``: the counters (a baseline on the board), and every worker
        process's ``stats detail`` table (each clears its own as it applies the settings,
        which a worker holding for the reset does before it serves a request); `during`
        (the handlers' part: the storage's counters, this process's table) runs while the
        other workers hold (`Worker.reset_figures`)."""
        board = self.board

        def still() -> None:
            during()
            self._detail_resets = board.get(G_DETAIL_RESETS)  # (bumped by the board's reset)

        self.server.reset_figures(still)
        if self.processes:  # a worker that did not hold in time clears its table now
            board.bump(G_SETTINGS_EPOCH)
            board.wake_all()

    def watchers(self) -> int:
        """Watchers attached to the whole daemon (``watch`` stops at memcached's 20)."""
        return self.board.watchers()[0]

    def latency(self) -> dict[str, list[int]]:
        """Every worker's latency histograms, summed per verb (``stats latency``)."""
        self.server.gather(COUNTERS)
        return self.server.latency_totals()

    def refresh_settings(self) -> None:
        """Before ``stats settings``: what another worker changed (the limit, automove,
        verbosity, detail) into this worker's copy of the settings."""
        self.apply_settings()

    def _follow_refresh_certs(self) -> None:
        """In the supervisor, within a second of a ``refresh_certs`` in a worker: its copy of
        the certificates loads the files too, so a worker forked in a dead one's place
        serves what the others loaded (it read the files again when it started: whatever
        was there by then, or, the files gone, the certificates of the start)."""
        tls = self.server.tls
        if tls is None or not self.processes:
            return
        epoch = self.board.get(G_TLS_EPOCH)
        if epoch != tls.epoch:
            tls.epoch = epoch
            tls.refresh()

    def tls_refreshed(self) -> None:
        """``refresh_certs`` worked here: every other worker process loads the files too."""
        board = self.board
        board.bump(G_TLS_EPOCH)
        if self.server.tls is not None:
            self.server.tls.epoch = board.get(G_TLS_EPOCH)
        board.wake_all()

    def set_detail(self, on: bool) -> None:
        board = self.board
        board.set(G_DETAIL, int(on))
        board.bump(G_SETTINGS_EPOCH)
        board.wake_all()

    def set_lru_crawler(self, on: bool) -> None:
        """``lru_crawler enable|disable``: the crawler (a thread of the maintainer process,
        or of this one) reads the word before each sweep; the workers' settings follow."""
        board = self.board
        board.set(G_LRU_CRAWLER, int(on))
        board.bump(G_SETTINGS_EPOCH)
        board.wake_all()

    def tune_crawler(self, name: str, value: int) -> None:
        """``lru_crawler sleep|tocrawl``: the crawler reads its word before each sweep."""
        board = self.board
        board.set(G_CRAWLER_SLEEP if name == "lru_crawler_sleep" else G_CRAWLER_TOCRAWL, value)
        board.bump(G_SETTINGS_EPOCH)
        board.wake_all()

    def tune_settings(self, values: dict[str, Any]) -> None:
        """``lru tune|mode|temp_ttl``, ``slabs automove ratio``, ``flush_all``'s oldest_live:
        every worker's stats settings shows them (`TUNABLE_WORDS`)."""
        self._put_tunables(values)
        board = self.board
        board.bump(G_SETTINGS_EPOCH)
        board.wake_all()

    def set_sizes(self, on: bool) -> None:
        """``stats sizes_enable|disable``: from now on (turned on already: as it was), the
        histogram counts the items with a later CAS than the last one handed out."""
        board = self.board
        if not on:
            board.set(G_SIZES, 0)
        elif not board.get(G_SIZES):
            board.set(G_SIZES, self.cache.cas_mark() + 2)  # 1 + the least CAS counted
        board.bump(G_SETTINGS_EPOCH)  # stats settings' track_sizes follows, as memcached's
        board.wake_all()

    def sizes_since(self) -> int | None:
        word = self.board.get(G_SIZES)
        return word - 1 if word else None

    def detail_table(self) -> dict[bytes, list[int]]:
        """Every process's ``stats detail`` table, and those dead workers left
        (`keep_figures`), summed: at most MAX_PREFIXES of them, as one table holds (each
        worker's held as many, and a dump of -t 4 tables of clients' own prefixes was 11
        MB, copied for each client that asked and never read: a memory hunt's 50 took a
        daemon of 82 MB to 435)."""
        self.server.gather(DETAIL)
        tables = self.server.per_process("detail")
        if self.server.current() is None or not tables:
            tables.append(self.handlers.detail.snapshot())
        kept = self.server.kept("detail")
        if kept:
            tables.append(kept)
        return self.handlers.detail.merge(tables, limit=PrefixStats.MAX_PREFIXES)

    def set_verbosity(self, level: int) -> None:
        board = self.board
        board.set(G_VERBOSE, level)
        board.bump(G_SETTINGS_EPOCH)
        self._apply_verbosity(level)
        board.wake_all()

    def _apply_verbosity(self, level: int) -> None:
        logging.getLogger("mcached").setLevel(log_level(level))
        for w in self.server.workers:
            w.trace = level >= TRACE_VERBOSITY
        worker = self.server.current()
        if worker is not None:
            worker.trace = level >= TRACE_VERBOSITY


class LogFileHandler(logging.handlers.WatchedFileHandler):
    """The ``--log-file`` handler: reopened by itself when logrotate moves the file (as
    WatchedFileHandler is) and on SIGHUP (`LogFile`), but a file that cannot be opened
    again (its directory gone, or not writable by the user of ``-u``) never raises into
    the line's caller: the daemon writes on to the file it had open and says so there,
    once, and tries again at the next line. (WatchedFileHandler's reopen raised out of
    whatever logged: a SIGHUP, or any request's log line, stopped the daemon.)"""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self._failed = ""  # why the last reopen failed ("" while the file is ours)

    def reopenIfNeeded(self) -> None:  # noqa: N802 (logging's name)
        try:
            st = os.stat(self.baseFilename)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) != (self.dev, self.ino):
            self.reopen()

    def reopen(self) -> None:
        """Open the file's path anew and write there; if it cannot be opened, keep the
        stream there is. Called with the handler's lock held."""
        try:
            stream = self._open()
        except OSError as exc:
            why = f"{exc.strerror or exc}"
            if why != self._failed and self.stream is not None:
                self._failed = why
                self.stream.write(
                    f"mcached: the log file {self.baseFilename} cannot be opened again "
                    f"({why}); writing on here\n"
                )
            return
        old, self.stream, self._failed = self.stream, stream, ""
        self._statstream()
        if old is not None:
            try:
                old.close()
            except OSError:
                pass


class LogFile:
    """The ``--log-file`` handler, reopened on SIGHUP (and by itself when logrotate moves
    the file)."""

    def __init__(self, handler: LogFileHandler) -> None:
        self.handler = handler

    def reload(self) -> None:
        self.handler.acquire()
        try:
            self.handler.reopen()
        finally:
            self.handler.release()


class JournalFormatter(logging.Formatter):
    """Lines for journald: its ``<N>`` priority prefix (so ``journalctl -p err`` finds the
    errors), and the process's pid, which journald does not tell apart (it tags every line
    of the stream with the main pid); it adds the time itself."""

    PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}

    def __init__(self) -> None:
        super().__init__("%(levelname)s [%(process)d] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITY.get(record.levelname, 7)  # (TRACE: debug)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def stderr_is_journal() -> bool:
    """Whether stderr is the journal's stream: JOURNAL_STREAM names its device and inode
    (systemd.exec(5)), which a redirection (``2>file``) under a unit does not change."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(2)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def configure_logging(verbose: int, log_file: str = "") -> LogFile | None:
    """stderr (journald takes it) or a file; warnings and errors always, -v INFO, -vv TRACE
    (connections, every command and reply)."""
    handler: logging.Handler
    reopen = None
    if log_file:
        fh = LogFileHandler(log_file)
        handler = fh
        reopen = LogFile(fh)
    else:
        handler = logging.StreamHandler()
    if not log_file and stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s mcached[%(process)d] %(levelname)s %(message)s")
        )
    root = logging.getLogger("mcached")
    root.handlers[:] = [handler]
    root.setLevel(log_level(verbose))
    root.propagate = False
    lifecycle.setLevel(logging.INFO)
    return reopen
