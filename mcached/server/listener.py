"""The listener: binds the TCP (and UDP) sockets, accepts, and hands connections to workers.

One thread accepts on every listening socket and hands each new connection to the next
worker, round-robin (memcached's ``dispatch_conn_new``). Past ``-c`` connections a newcomer
gets memcached's ``ERROR Too many open connections`` and is closed at once (memcached's
``maxconns_fast``), so accepting never stalls. Out of file descriptors (EMFILE), the
listener stops watching its sockets for `ACCEPT_BACKOFF` seconds instead of spinning on a
socket that stays readable; an error accept() reports about one connection (Linux passes on
ECONNABORTED, EPROTO...) drops that connection, never the listener.

With ``-Z`` every TCP listener speaks TLS except those bound from a ``notls:<addr>:<port>``
spec; their accepted sockets are wrapped here (no I/O: the handshake runs on the worker).

UDP (``-U``): the sockets are bound here and served by the workers (`mcached.server.udp`).
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mcached.addr import format_address, parse_listen, split_notls
from mcached.protocol.parser import Parser
from mcached.protocol.responses import TOO_MANY_CONNECTIONS
from mcached.server.connection import Connection
from mcached.server.tls import TLS
from mcached.server.udp import UdpServer
from mcached.server.workers import Worker
from mcached.settings import Settings
from mcached.stats import Counters, ServerCounters

log = logging.getLogger("mcached.server")

ACCEPT_BACKOFF = 0.05  # seconds without accepting after EMFILE (memcached: maxconns_handler)


def bind_sockets(
    listen: tuple[str, ...],
    port: int,
    kind: int,
    backlog: int,
    notls: set[socket.socket] | None = None,
) -> list[socket.socket]:
    """Bind every address of `listen`; the sockets of ``notls:`` specs also go in `notls`."""
    socks: list[socket.socket] = []
    for spec in listen:
        plain, _ = split_notls(spec)
        try:
            host, p = parse_listen(spec, port)
        except ValueError as exc:  # reported as a failure to listen, as a bad host is
            for other in socks:
                other.close()
            raise OSError(errno.EINVAL, str(exc)) from None
        infos = socket.getaddrinfo(host or None, p, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)
        for family, stype, proto, _, addr in infos:
            s = socket.socket(family, stype, proto)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(addr)
                if kind == socket.SOCK_STREAM:
                    s.listen(backlog)
                s.setblocking(False)
            except OSError:
                s.close()
                for other in socks:
                    other.close()
                raise
            socks.append(s)
            if plain and notls is not None:
                notls.add(s)
    return socks


class Server:
    """Listener plus workers. Knows nothing of what commands mean."""

    def __init__(
        self,
        settings: Settings,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        make_parser: Callable[[], Parser],
        on_shutdown: Callable[[bool], None],
        tcp_sockets: list[socket.socket] | None = None,
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch  # command type -> its handler(command, session)
        self.make_parser = make_parser
        self.on_shutdown = on_shutdown
        self.counters = ServerCounters()
        self._curr = 0
        self._curr_lock = threading.Lock()
        self.accepting = True
        self._paused_until = 0.0  # EMFILE backoff: monotonic time accepting resumes
        self.tcp: list[socket.socket] = tcp_sockets or []
        # -Z: every TCP listener speaks TLS except those bound from a notls: address
        self.tls = TLS(settings) if settings.ssl_enabled else None
        self.notls: set[socket.socket] = set()
        self.udp: list[socket.socket] = []
        self.udp_server = UdpServer(dispatch, make_parser, settings.reqs_per_event, on_shutdown)
        self.workers: list[Worker] = []
        self._next = 0
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        # made in start(): a Thread built before -d forks cannot start in the child (3.13)
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    def bind(self) -> None:
        s = self.settings
        if not self.tcp:
            self.tcp = bind_sockets(
                s.listen, s.port, socket.SOCK_STREAM, s.tcp_backlog, notls=self.notls
            )
        if s.udp_port and not self.udp:
            self.udp = bind_sockets(s.listen, s.udp_port, socket.SOCK_DGRAM, 0)

    def start(self) -> None:
        self.bind()
        s = self.settings
        for i in range(s.threads):
            w = Worker(
                i,
                self.dispatch,
                self.make_parser,
                s.reqs_per_event,
                s.idle_timeout,
                self._conn_closed,
                self.on_shutdown,
                stall_timeout=s.stall_timeout,
                tls=self.tls,
            )
            for u in self.udp:
                w.add_reader(u, self.udp_server.reader(u, w.counters))
            self.workers.append(w)
        for w in self.workers:
            w.start()
        for t in self.tcp:
            t.setblocking(False)
            self._selector.register(t, selectors.EVENT_READ, t)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(
            target=self._accept_loop, name="mcached-listener", daemon=True
        )
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listening sockets (first step of a stop)."""
        self._stopping = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(5)

    def stop(self, drain: float | None = None, timeout: float = 5.0) -> None:
        """Stop accepting, then stop the workers in reverse start order. With `drain`
        seconds, workers first answer the requests already received (graceful stop)."""
        self.stop_accepting()
        deadline = time.monotonic() + drain if drain else None
        for w in reversed(self.workers):
            w.stop(deadline)
        for w in reversed(self.workers):
            if threading.current_thread() is not w.thread:
                w.join((drain or 0) + timeout)
        for u in self.udp:
            u.close()

    @property
    def ports(self) -> list[int]:
        return [int(t.getsockname()[1]) for t in self.tcp]

    @property
    def udp_ports(self) -> list[int]:
        return [int(u.getsockname()[1]) for u in self.udp]

    # ---- accepting (listener thread) ----

    def _accept_loop(self) -> None:
        try:
            while not self._stopping:
                timeout = None
                if self._paused_until:
                    timeout = self._paused_until - time.monotonic()
                    if timeout <= 0:
                        self._resume_accepting()
                        timeout = None
                for key, _ in self._selector.select(timeout):
                    if key.data is None:
                        continue
                    try:
                        self._accept(key.data)
                    except Exception:  # never let one bad accept stop the listener
                        log.exception("accepting a connection failed")
        finally:
            for t in self.tcp:
                if not self._paused_until:
                    self._selector.unregister(t)
                t.close()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self, lsock: socket.socket) -> None:
        listen_addr = format_address(lsock.getsockname())
        for _ in range(64):  # bounded, so one busy listener cannot starve the others
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the pending connection stays in the backlog and
                    # the socket stays readable, so select would spin. Stop watching the
                    # listeners for a moment (memcached: accept_new_conns(false)).
                    log.warning("accept failed: %s; pausing accepts", exc)
                    self._pause_accepting()
                    return
                # ECONNABORTED, EPROTO, EPERM...: that one connection is gone, the rest wait
                log.info("accept failed: %s", exc)
                continue
            with self._curr_lock:
                over = self._curr >= self.settings.max_connections
                if not over:
                    self._curr += 1
            if over:
                with self.counters.lock:
                    self.counters.rejected_connections += 1
                try:
                    sock.setblocking(False)
                    sock.send(TOO_MANY_CONNECTIONS)
                except OSError:
                    pass
                sock.close()
                continue
            with self.counters.lock:
                self.counters.total_connections += 1
            try:
                sock.setblocking(False)
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.tls is not None and lsock not in self.notls:
                    sock = self.tls.wrap(sock)
            except (OSError, ValueError) as exc:  # reset before we got to it
                log.info("dropping a connection from %s: %s", format_address(peer), exc)
                sock.close()
                self._conn_closed(None, "reset before hand-off")
                continue
            worker = self.workers[self._next]
            self._next = (self._next + 1) % len(self.workers)
            worker.hand_off(sock, format_address(peer), listen_addr)

    def _pause_accepting(self) -> None:
        if not self._paused_until:
            for t in self.tcp:
                self._selector.unregister(t)
            self.accepting = False
            with self.counters.lock:
                self.counters.listen_disabled_num += 1
        self._paused_until = time.monotonic() + ACCEPT_BACKOFF

    def _resume_accepting(self) -> None:
        self._paused_until = 0.0
        for t in self.tcp:
            self._selector.register(t, selectors.EVENT_READ, t)
        self.accepting = True

    def _conn_closed(self, conn: Connection | None, reason: str) -> None:
        with self._curr_lock:
            self._curr -= 1

    # ---- figures ----

    @property
    def curr_connections(self) -> int:
        return self._curr

    def all_counters(self) -> list[Counters]:
        return [w.counters for w in self.workers]

    def conns_stats(self) -> list[tuple[str, object]]:
        import time as _time

        out: list[tuple[str, object]] = []
        for t in self.tcp:
            try:
                fd = t.fileno()
                out.append((f"{fd}:addr", "tcp:" + format_address(t.getsockname())))
                out.append((f"{fd}:state", "conn_listening"))
            except OSError:
                continue
        now = _time.monotonic()
        conns = []
        for w in self.workers:
            conns.extend(list(w.conns))
        for c in sorted(conns, key=lambda c: c.fd):
            out.append((f"{c.fd}:addr", f"tcp:{c.peer}"))
            out.append((f"{c.fd}:listen_addr", f"tcp:{c.listen_addr}"))
            out.append((f"{c.fd}:state", c.state))
            out.append((f"{c.fd}:secs_since_last_cmd", int(now - c.last_cmd)))
        return out
