"""Lifecycle: wires settings, clock, cache, handlers and server together; start, wait, stop.

The daemon is the only module that knows every layer. The server gets the handlers as a
plain callable; the handlers get this object as their `ServerInfo` (connection figures,
verbosity, stats reset). Signal handlers only record the signal; the main thread acts on it
(gunicorn's arbiter pattern), so no lock is ever taken inside a signal handler.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from mcached import systemd
from mcached.auth import AuthFile
from mcached.clock import Clock
from mcached.cluster.discovery import Discovery
from mcached.handlers import Handlers
from mcached.protocol.parser import Parser
from mcached.server.connection import TRACE
from mcached.server.listener import Server
from mcached.settings import Settings
from mcached.stats import Counters
from mcached.storage.cache import Cache
from mcached.storage.maintainer import LruCrawler, SlabAutomover

log = logging.getLogger("mcached")
# Start, stop and reload lines: logged whatever the verbosity (a few lines per lifetime).
lifecycle = logging.getLogger("mcached.lifecycle")
lifecycle.setLevel(logging.INFO)

STATUS_INTERVAL = 5.0  # seconds between systemd STATUS= updates
logging.addLevelName(TRACE, "TRACE")  # -vvv: every command and reply (the connections log it)

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def log_level(verbose: int) -> int:
    return VERBOSITY_LEVELS.get(verbose, TRACE)


class Daemon:
    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        tcp_sockets: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.cache = Cache(
            memory_limit=settings.memory_limit,
            item_size_max=settings.item_size_max,
            evictions=settings.evictions,
            cas_enabled=settings.cas_enabled,
            clock=self.clock,
            chunk_size=settings.chunk_size,
            growth_factor=settings.growth_factor,
            slab_chunk_max=settings.slab_chunk_max,
            slab_reassign=settings.slab_reassign,
            slab_automove=settings.slab_automove,
        )
        # The `config get cluster` endpoint. It lists this node by its bound port, known only
        # once the server has bound (port 0 picks one), hence the callable.
        self.discovery = Discovery(settings, local_port=lambda: self.server.ports[0])
        # -Y: the credentials (read now: a bad file stops us before anything binds)
        self.authfile = AuthFile(settings.auth_file) if settings.auth_file else None
        self.handlers = Handlers(
            self.cache, settings, self, self.clock, discovery=self.discovery, authfile=self.authfile
        )
        item_size_max = settings.item_size_max
        cas_enabled = settings.cas_enabled
        auth = self.authfile is not None

        def make_parser() -> Parser:
            return Parser(item_size_max=item_size_max, cas_enabled=cas_enabled, auth=auth)

        # -Z: the Server builds its TLS context here, so bad certificates stop us early too
        self.server = Server(
            settings,
            self.handlers.dispatch_table(),
            make_parser,
            self.request_stop,
            tcp_sockets=tcp_sockets,
        )
        self.handlers.tls = self.server.tls  # refresh_certs
        # Parts that re-read their configuration on SIGHUP (cluster membership, auth file...):
        # each has reload() -> None and is called from the main thread.
        self.reloadables: list[Any] = [self.discovery]
        self.reloadables += [p for p in (self.authfile, self.server.tls) if p is not None]
        # Parts with background threads: start() after the server, stop() before it.
        self.services: list[Any] = [self.discovery]
        # The cache's own threads: the LRU crawler (-o lru_crawler) reclaims expired items
        # nobody reads; the automover moves slab pages (also what frees pages after
        # cache_memlimit lowers the limit), so it runs whenever pages may move.
        if settings.lru_crawler:
            self.services.append(LruCrawler(self.cache))
        if settings.slab_reassign:
            self.services.append(SlabAutomover(self.cache))
        self.started_mono = time.monotonic()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.port = 0
        self.udp_port = 0

    # ---- lifecycle ----

    def start(self) -> None:
        self.server.start()
        if self.settings.verbose >= 3:
            self.set_verbosity(self.settings.verbose)
        self.port = self.server.ports[0]
        self.udp_port = self.server.udp_ports[0] if self.server.udp_ports else 0
        if self.port != self.settings.port or self.udp_port != self.settings.udp_port:
            # port 0 asked for a free port: report the one we got (stats settings)
            self.settings = self.settings.replace(port=self.port, udp_port=self.udp_port)
            self.handlers.settings = self.settings
        self.started_mono = time.monotonic()
        for svc in self.services:
            svc.start()
        for t in self.server.tcp:
            log.info("listening on tcp %s", t.getsockname())
        for u in self.server.udp:
            log.info("listening on udp %s", u.getsockname())

    def stop(self, graceful: bool = True) -> None:
        """Stop accepting; when `graceful`, answer what every connection has sent and send
        the replies (within --shutdown-timeout); close the connections (at once, dropping
        unsent replies, when not `graceful`); stop the threads in reverse start order."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        for svc in reversed(self.services):
            svc.stop()
        self.server.stop(drain=self.settings.shutdown_timeout if graceful else None)
        lifecycle.info("stopped")

    def request_stop(self, graceful: bool = False) -> None:
        """From any thread (the ``shutdown [graceful]`` command): ask the main loop to stop,
        at once or `graceful` (see `stop`)."""
        self._events.put(("stop", graceful))
        if not self._waiting:
            # No main loop is waiting (the daemon runs inside a test): stop from a helper
            # thread, since the caller may be a worker that stop() joins.
            threading.Thread(
                target=self.stop, args=(graceful,), name="mcached-stop", daemon=True
            ).start()

    _waiting = False

    def run(self, before_start: Callable[[], None] | None = None) -> int:
        """Bind, (detach, drop privileges: `before_start`), start, serve until a signal or
        ``shutdown``, stop. Main thread only. Tells systemd each step when under it."""
        self._install_signals()
        self.server.bind()  # binding errors surface here, before we detach
        if before_start is not None:
            before_start()
        self.start()
        self._waiting = True
        systemd.notify("READY=1\nSTATUS=" + self.status_line() + f"\nMAINPID={os.getpid()}")
        lifecycle.info("ready: %s", self.status_line())
        watchdog = systemd.watchdog_interval()
        if watchdog:
            systemd.notify("WATCHDOG=1")
        next_status = time.monotonic() + STATUS_INTERVAL
        graceful = True  # signals drain; the shutdown command says which it wants
        try:
            while True:
                timeout = min(watchdog or STATUS_INTERVAL, STATUS_INTERVAL)
                try:
                    kind, arg = self._events.get(timeout=timeout)
                except queue.Empty:
                    kind, arg = "tick", None
                if watchdog:
                    systemd.notify("WATCHDOG=1")
                if time.monotonic() >= next_status:
                    systemd.notify("STATUS=" + self.status_line())
                    next_status = time.monotonic() + STATUS_INTERVAL
                if kind == "stop":
                    graceful = bool(arg)
                    how = "gracefully" if graceful else "at once"
                    lifecycle.info("shutdown command: stopping %s", how)
                    break
                if kind == "signal" and arg in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                    lifecycle.info("%s: stopping", signal.Signals(arg).name)
                    break
                if kind == "signal" and arg == signal.SIGHUP:
                    systemd.notify("RELOADING=1")
                    self.reload()
                    systemd.notify("READY=1\nSTATUS=" + self.status_line())
        finally:
            self._waiting = False
            systemd.notify("STOPPING=1")
            self.stop(graceful)
        return 0

    def status_line(self) -> str:
        """One line for systemd's STATUS= and the log: where we listen and what we hold."""
        c = self.cache.stats()
        addrs = ",".join(f"{h}:{p}" for h, p in self._addresses())
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
        """SIGHUP: re-read what can be re-read; the cache is never touched."""
        lifecycle.info("SIGHUP: reloading")
        for part in self.reloadables:
            try:
                part.reload()
            except Exception:
                log.exception("reload of %r failed; keeping the previous configuration", part)

    def _install_signals(self) -> None:
        def on_signal(signo: int, frame: Any) -> None:
            self._events.put(("signal", signo))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, on_signal)

    # ---- ServerInfo, for the handlers ----

    def general_stats(self) -> dict[str, Any]:
        srv = self.server
        return {
            "uptime": int(time.monotonic() - self.started_mono),
            "max_connections": self.settings.max_connections,
            "curr_connections": srv.curr_connections,
            "total_connections": srv.counters.total_connections,
            "rejected_connections": srv.counters.rejected_connections,
            "connection_structures": srv.curr_connections + len(srv.tcp) + len(srv.udp),
            "accepting_conns": 1 if srv.accepting else 0,
            "listen_disabled_num": srv.counters.listen_disabled_num,
            "threads": self.settings.threads,
            **(srv.tls.stats() if srv.tls is not None else {}),
        }

    def conns_stats(self) -> list[tuple[str, object]]:
        return self.server.conns_stats()

    def all_counters(self) -> list[Counters]:
        return self.server.all_counters()

    def reset_stats(self) -> None:
        self.server.counters.reset()

    def set_verbosity(self, level: int) -> None:
        logging.getLogger("mcached").setLevel(log_level(level))
        for w in self.server.workers:
            w.trace = level >= 3


class LogFile:
    """The ``--log-file`` handler, reopened on SIGHUP (and by itself when logrotate moves
    the file: WatchedFileHandler)."""

    def __init__(self, handler: logging.handlers.WatchedFileHandler) -> None:
        self.handler = handler

    def reload(self) -> None:
        self.handler.acquire()
        try:
            if self.handler.stream:
                self.handler.stream.close()
            self.handler.stream = self.handler._open()
        finally:
            self.handler.release()


def configure_logging(verbose: int, log_file: str = "") -> LogFile | None:
    """stderr (journald takes it) or a file; -v INFO, -vv DEBUG (connections), -vvv TRACE
    (every command and reply)."""
    handler: logging.Handler
    reopen = None
    if log_file:
        fh = logging.handlers.WatchedFileHandler(log_file)
        handler = fh
        reopen = LogFile(fh)
        fmt = "%(asctime)s mcached[%(process)d] %(levelname)s %(message)s"
    else:
        handler = logging.StreamHandler()
        # under systemd, journald adds the time and the pid itself
        fmt = (
            "%(levelname)s %(message)s"
            if os.environ.get("JOURNAL_STREAM")
            else "%(asctime)s mcached[%(process)d] %(levelname)s %(message)s"
        )
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger("mcached")
    root.handlers[:] = [handler]
    root.setLevel(log_level(verbose))
    root.propagate = False
    return reopen
