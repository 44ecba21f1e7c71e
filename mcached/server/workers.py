"""Worker threads: each runs its own selector loop over the connections handed to it.

A connection is handed to one worker for life (memcached's ``dispatch_conn_new``): the
listener puts the socket on the worker's `SimpleQueue` and writes one byte to its wake-up
socket. The loop then serves I/O events, and afterwards gives each YIELDED connection (one
that used its ``-R`` turn with commands still buffered) another turn, so a pipelining client
shares the thread fairly with the others.

Each worker owns its `Counters`; only its own thread writes them.

Timeouts, checked once a second (`TIMEOUT_CHECK_INTERVAL`) when either is on:

* ``-o idle_timeout=S`` (memcached's): a connection waiting for its next command (a half-sent
  command line counts as waiting) that has completed none for S seconds is closed without a
  word. As in memcached, one in the middle of a value or of sending replies is not idle.
* ``--stall-timeout=S`` (mcached's; memcached has none): a connection part-way through
  something for S seconds is closed: a request begun S seconds ago and still incomplete (a
  slow-loris line or value), output the client has not taken a byte of for S seconds (it
  never reads), a TLS handshake not done S seconds after the accept, and, with ``-Y``, a
  connection that has not logged in S seconds after the accept (so that clients without
  credentials cannot hold the ``-c`` slots).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mcached.protocol.parser import Parser
from mcached.server.connection import BLOCKED, CLOSED, HANDSHAKE, READING, YIELDED, Connection
from mcached.server.poller import READ, READ_READY, WRITE_READY, Poller
from mcached.stats import Counters

log = logging.getLogger("mcached.worker")

TIMEOUT_CHECK_INTERVAL = 1.0


class Worker:
    def __init__(
        self,
        index: int,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        make_parser: Callable[[], Parser],
        reqs_per_event: int,
        idle_timeout: int,
        on_close: Callable[[Connection, str], None],
        on_shutdown: Callable[[bool], None],
        stall_timeout: float = 0.0,
        tls: Any = None,
    ) -> None:
        self.index = index
        self.dispatch = dispatch
        self.make_parser = make_parser
        self.reqs_per_event = reqs_per_event
        self.idle_timeout = idle_timeout
        self.stall_timeout = stall_timeout
        self.tls = tls  # the server's `tls.TLS` (handshake counters), or None
        self._on_close = on_close
        self._on_shutdown = on_shutdown
        self.counters = Counters()
        self.selector = Poller()
        self.queue: queue.SimpleQueue[tuple[socket.socket, Any, str]] = queue.SimpleQueue()
        self.ready: set[Connection] = set()
        self.conns: set[Connection] = set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_fd = self._wake_r.fileno()
        self.selector.register(self._wake_r, READ, None)
        self.trace = False  # -vvv: log every command and reply
        self._stopping = False
        self._drain_until: float | None = None
        # The loop's clock: time.monotonic() when the last poll returned. Connections stamp
        # their timeout bookkeeping with it (one clock read per batch of events, not two per
        # request); the timeouts it serves are whole seconds.
        self.now = time.monotonic()
        self.thread = threading.Thread(target=self.run, name=f"mcached-worker-{index}", daemon=True)

    # ---- called from other threads ----

    def start(self) -> None:
        self.thread.start()

    def hand_off(self, sock: socket.socket, peer: Any, listen_addr: str) -> None:
        self.queue.put((sock, peer, listen_addr))
        self._wake()

    def stop(self, drain_until: float | None = None) -> None:
        """Stop the loop. With `drain_until` (a time.monotonic() deadline), first answer
        the requests already received on every connection and send the replies."""
        self._drain_until = drain_until
        self._stopping = True
        self._wake()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def add_reader(self, sock: socket.socket, callback: Callable[[], None]) -> None:
        """Serve another socket (the UDP one) from this loop. Call before `start()`."""
        self.selector.register(sock, READ, callback)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or we are shutting down

    # ---- the loop (worker thread only) ----

    def run(self) -> None:
        poll = self.selector.poll
        owners = self.selector.owners
        ready = self.ready
        monotonic = time.monotonic
        timed = bool(self.idle_timeout or self.stall_timeout)
        next_check = time.monotonic() + TIMEOUT_CHECK_INTERVAL
        timeout: float | None
        while not self._stopping:
            if ready:
                timeout = 0
            elif timed:
                timeout = TIMEOUT_CHECK_INTERVAL
            else:
                timeout = None
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            self.now = monotonic()
            # hot path: one iteration per ready socket; raw epoll events and one dict
            # lookup (poller.py says why not selectors)
            for fd, mask in events:
                conn = owners.get(fd)
                if mask == READ and type(conn) is Connection:
                    conn.on_readable()  # the common event first: one test
                elif type(conn) is Connection:
                    if mask & WRITE_READY:
                        conn.on_writable()
                    if mask & READ_READY and conn.state != CLOSED:
                        conn.on_readable()
                elif conn is None:
                    if fd == self._wake_fd:
                        self._accept_handed_off()
                    # else: closed by an earlier event of this batch
                else:
                    conn()  # an extra reader (UDP)
            if ready:
                for conn in list(ready):
                    if conn.state != CLOSED:
                        conn.process()
            if timed and time.monotonic() >= next_check:
                self._close_timed_out()
                next_check = time.monotonic() + TIMEOUT_CHECK_INTERVAL
        if self._drain_until is not None:
            self._drain(self._drain_until)
        self._close_all()

    def _drain(self, deadline: float) -> None:
        """Answer what was received, send it, close; give up at `deadline`."""
        self._accept_handed_off(draining=True)
        for conn in list(self.conns):
            conn.drain_step()
        while True:
            busy = []
            for conn in list(self.conns):
                if conn.state == CLOSED:
                    continue
                if conn.unsent or conn.state == BLOCKED:
                    busy.append(conn)
                else:
                    conn.close("server stopping")
            left = deadline - time.monotonic()
            if not busy or left <= 0:
                if busy:
                    log.warning(
                        "stop deadline passed with %d connection(s) still sending", len(busy)
                    )
                return
            for fd, mask in self.selector.poll(min(left, 0.1)):
                owner = self.selector.owners.get(fd)
                if type(owner) is Connection and mask & WRITE_READY:
                    owner.on_writable()
                    if owner.state == YIELDED:
                        owner.drain_step()

    def _accept_handed_off(self, draining: bool = False) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            try:
                sock, peer, listen_addr = self.queue.get_nowait()
            except queue.Empty:
                return
            if self._stopping and not draining:
                sock.close()
                continue
            conn = Connection(
                sock,
                peer,
                listen_addr,
                self,
                self.dispatch,
                self.make_parser(),
                self.reqs_per_event,
            )
            self.conns.add(conn)
            self.selector.register(sock, READ, conn)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<%d new client connection from %s", conn.fd, peer)

    def _close_timed_out(self) -> None:
        now = time.monotonic()
        idle = self.idle_timeout
        stall = self.stall_timeout
        for conn in list(self.conns):
            state = conn.state
            if state == CLOSED or state == YIELDED:
                continue
            if conn.unsent:
                if stall and now - conn.out_since > stall:
                    conn.close("replies not read")
            elif state == HANDSHAKE:
                if stall and now - conn.opened > stall:
                    conn.close("TLS handshake not done")
            elif state == READING:
                parser = conn.parser
                in_block = parser.in_data_block
                if idle and not in_block and now - conn.last_cmd > idle:
                    conn.close("idle timeout")
                elif stall and parser.authenticating and now - conn.opened > stall:
                    conn.close("not authenticated")
                elif (
                    stall
                    and (in_block or parser.buffered)
                    and now - max(conn.req_start, conn.last_cmd) > stall
                ):
                    conn.close("request incomplete")

    def _close_all(self) -> None:
        for conn in list(self.conns):
            conn.flush()
            conn.close("server stopping")
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---- callbacks from connections ----

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.conns.discard(conn)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<%d connection closed: %s", conn.fd, reason)
        self._on_close(conn, reason)

    def request_shutdown(self, graceful: bool) -> None:
        self._on_shutdown(graceful)

    def tls_handshake_failed(self) -> None:
        if self.tls is not None:
            self.tls.handshake_failed()

    def tls_handshake_done(self, sock: Any) -> None:
        if self.tls is not None:
            self.tls.handshake_done(sock)
