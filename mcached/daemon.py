"""Lifecycle: wires settings, clock, cache, handlers and server together; start, wait, stop.

The daemon is the only module that knows every layer. The server gets the handlers as a
plain callable; the handlers get this object as their `ServerInfo` (connection figures,
verbosity, stats reset). Signal handlers only record the signal; the main thread acts on it
(gunicorn's arbiter pattern), so no lock is ever taken inside a signal handler.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from mcached.clock import Clock
from mcached.handlers import Handlers
from mcached.protocol.parser import Parser
from mcached.server.listener import Server
from mcached.settings import Settings
from mcached.stats import Counters
from mcached.storage.cache import Cache

log = logging.getLogger("mcached")

TRACE = 5  # -vvv: every command and reply
logging.addLevelName(TRACE, "TRACE")

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def log_level(verbose: int) -> int:
    return VERBOSITY_LEVELS.get(verbose, TRACE)


class Daemon:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.cache = Cache(
            memory_limit=settings.memory_limit,
            item_size_max=settings.item_size_max,
            evictions=settings.evictions,
            cas_enabled=settings.cas_enabled,
            clock=self.clock,
        )
        self.handlers = Handlers(self.cache, settings, self, self.clock)
        item_size_max = settings.item_size_max
        cas_enabled = settings.cas_enabled

        def make_parser() -> Parser:
            return Parser(item_size_max=item_size_max, cas_enabled=cas_enabled)

        self.server = Server(settings, self.handlers, make_parser, self.request_stop)
        # Parts that re-read their configuration on SIGHUP (cluster membership, auth file...):
        # each has reload() -> None and is called from the main thread.
        self.reloadables: list[Any] = []
        # Parts with background threads: start() after the server, stop() before it.
        self.services: list[Any] = []
        self.started_mono = time.monotonic()
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self.port = 0
        self.udp_port = 0

    # ---- lifecycle ----

    def start(self) -> None:
        self.server.start()
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

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        for svc in reversed(self.services):
            svc.stop()
        self.server.stop()
        log.info("stopped")

    def request_stop(self, graceful: bool = False) -> None:
        """From any thread (the ``shutdown`` command, a signal): ask the main loop to stop."""
        self._events.put(("stop", graceful))
        if not self._waiting:
            # No main loop is waiting (the daemon runs inside a test): stop from a helper
            # thread, since the caller may be a worker that stop() joins.
            threading.Thread(target=self.stop, name="mcached-stop", daemon=True).start()

    _waiting = False

    def run(self) -> int:
        """Start, serve until asked to stop (signal or ``shutdown``), stop. Main thread only."""
        self.start()
        self._install_signals()
        self._waiting = True
        try:
            while True:
                kind, arg = self._events.get()
                if kind == "stop":
                    break
                if kind == "signal" and arg in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                    log.info("signal %s: stopping", signal.Signals(arg).name)
                    break
                if kind == "signal" and arg == signal.SIGHUP:
                    self.reload()
        finally:
            self._waiting = False
            self.stop()
        return 0

    def reload(self) -> None:
        """SIGHUP: re-read what can be re-read; the cache is never touched."""
        log.info("SIGHUP: reloading")
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
        }

    def conns_stats(self) -> list[tuple[str, object]]:
        return self.server.conns_stats()

    def all_counters(self) -> list[Counters]:
        return self.server.all_counters()

    def reset_stats(self) -> None:
        self.server.counters.reset()

    def set_verbosity(self, level: int) -> None:
        logging.getLogger("mcached").setLevel(log_level(level))


def configure_logging(verbose: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s mcached[%(process)d] %(levelname)s "
                                           "%(message)s"))
    root = logging.getLogger("mcached")
    root.handlers[:] = [handler]
    root.setLevel(log_level(verbose))
    root.propagate = False


def pid() -> int:
    return os.getpid()
