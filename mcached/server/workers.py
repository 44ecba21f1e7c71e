"""Workers: each runs its own poll loop, accepts its own connections and serves them for life.

A worker is a thread, or the main thread of a worker process (see `mcached.server.supervisor`):
the code is the same. Every worker watches its own copy of each listening TCP socket
(``SO_REUSEPORT``: the kernel spreads new connections over the copies; sockets passed by
systemd and the unix socket are one for all, watched with ``EPOLLEXCLUSIVE``), accepts, and
serves what it accepted until the connection closes (memcached's worker threads, minus its
dispatcher thread); a worker that accepts while another serves fewer hands the connection
over to it (`Board.fewer_than`, `Board.hand_over`). Past ``-c`` open connections in the whole
daemon (summed from the board), a newcomer gets memcached's ``ERROR Too many open
connections`` and is closed at once (memcached's ``maxconns_fast``). Out of file
descriptors (EMFILE), a worker stops watching the listening sockets for `ACCEPT_BACKOFF`
seconds instead of spinning on a socket that stays readable.

The loop serves I/O events, then gives each YIELDED connection (one that used its ``-R`` turn
with commands still buffered) another turn, so a pipelining client shares the worker fairly.

Its board slot (`mcached.server.board`) is how a worker hears the others: a byte on its
wake-up socket means look at the board: publish figures another worker asked for, apply a
run-time setting (verbosity, stats detail), reload certificates, reload on SIGHUP (the
server's `worker_woken`), stop.

Each worker owns its `Counters`; only its own thread writes them.

Timeouts, checked once a second (`TIMEOUT_CHECK_INTERVAL`):

* ``-o idle_timeout=S`` (memcached's): a connection waiting for its next command (a half-sent
  command line counts as waiting) that has completed none for S seconds is closed without a
  word. As in memcached, one in the middle of a value or of sending replies is not idle.
* ``--stall-timeout=S`` (mcached's; memcached has none): a connection part-way through
  something for S seconds is closed: a request begun S seconds ago and still incomplete (a
  slow-loris line or value), output the client has not taken a byte of for S seconds (it
  never reads), a TLS handshake not done S seconds after the accept, and, with ``-Y``, a
  connection that has not logged in S seconds after the accept (so that clients without
  credentials cannot hold the ``-c`` slots).

and the memory connections hold, in all (``-o read_buf_mem_limit``: see `Worker._shed_memory`).
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mcached import watch
from mcached.addr import NO_PREFIX, ListenSpec, format_address
from mcached.latency import Latency
from mcached.protocol.binary_parser import AnyParser
from mcached.protocol.responses import TOO_MANY_CONNECTIONS
from mcached.server.board import (
    CONNS,
    COUNTERS,
    DETAIL,
    G_DETAIL,
    G_SETTINGS_EPOCH,
    G_STOP,
    G_TLS_EPOCH,
    RESET,
    RESET_HOLD,
    RUNNING,
    STOPPING,
    W_ACCEPTING,
    W_CONNS,
    W_PID,
    W_STATE,
    W_WATCH,
    W_WATCHERS,
)
from mcached.server.connection import (
    BLOCKED,
    CLOSED,
    HANDSHAKE,
    READING,
    STATE_NAMES,
    YIELDED,
    Connection,
)
from mcached.server.eventlog import WATCH_INTERVAL, EventLog, Watchers, WatchStream
from mcached.server.poller import READ, READ_READY, WRITE, WRITE_READY, Poller
from mcached.settings import megabytes_in_32_bits
from mcached.stats import Counters

if TYPE_CHECKING:
    from mcached.server.board import Board
    from mcached.server.tls import TLS
    from mcached.server.udp import UdpReader, UdpServer
    from mcached.settings import Settings

log = logging.getLogger("mcached.worker")

TIMEOUT_CHECK_INTERVAL = 1.0
# ready sockets one poll's batch serves before it answers other workers' requests for figures
# (`stats`): a worker asking waits for them, its own clients with it (Board.gather), and a
# batch of hundreds of busy connections takes seconds
ANSWER_EVERY = 8
SHED_EVERY = 0.005  # seconds between two checks of what the connections hold, under pressure
#: what one worker's connections may hold outside the cache, in all, when ``-o
#: read_buf_mem_limit`` is 0 (see `Worker._shed_memory`)
CONN_MEMORY_DEFAULT = 32 * 1024 * 1024
ACCEPT_BACKOFF = 0.05  # seconds without accepting after EMFILE (memcached: maxconns_handler)
ACCEPT_BATCH = 16  # connections one wake-up accepts, so others get theirs too
FD_HEADROOM = 64  # descriptors short of the limit where a received one needs the reserve
# the close reasons a conn_close line calls normal (see `Worker._conn_event`)
NORMAL_CLOSE = frozenset(("client closed", "client closed in the middle of a value", "quit", ""))
EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)


class Host(Protocol):
    """What a worker needs from the server it belongs to (`mcached.server.listener.Server`)."""

    settings: Settings
    dispatch: Mapping[type, Callable[[Any, Any], None]]
    board: Board
    tls: TLS | None
    listen_specs: dict[socket.socket, ListenSpec]
    udp_server: UdpServer
    events: EventLog
    #: a connection's parser: the protocol of its listener's proto[...] ("": -B's)
    make_parser: Callable[[str], AnyParser]

    def listening(self, slot: int) -> list[socket.socket]: ...

    def datagram_sockets(self, slot: int) -> list[socket.socket]: ...

    def close_sockets(self) -> None: ...

    def worker_started(self, worker: Worker) -> None: ...

    def worker_tick(self, worker: Worker) -> None: ...

    def worker_woken(self, worker: Worker) -> None: ...

    def apply_settings(self, worker: Worker) -> None: ...

    def extra_figures(self, kinds: int) -> dict[str, Any]: ...

    def idle_kicked(self, worker: Worker) -> None: ...

    def read_buf_oom(self, worker: Worker) -> None: ...

    def request_shutdown(self, graceful: bool) -> None: ...

    def worker_failed(self, worker: Worker) -> None: ...


def transport(sock: socket.socket, kind: str = "tcp") -> str:
    """memcached's name for a socket's transport in ``stats conns``: tcp, tcp6, udp, udp6,
    unix."""
    if sock.family == socket.AF_UNIX:
        return "unix"
    return kind + "6" if sock.family == socket.AF_INET6 else kind


def sock_name(sock: socket.socket) -> str:
    """``<transport>:<address>`` of a listening socket, as ``stats conns`` prints it."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        return "unix:" + text
    kind = "udp" if sock.type == socket.SOCK_DGRAM else "tcp"
    return f"{transport(sock, kind)}:{format_address(name)}"


# memcached's address text for a unix domain client: it keeps no peer address for one
# (``request_addr_size`` 0), so ``stats conns`` prints address family 0
UNIX_PEER = "?:<AF 0>"


class _Listening:
    """Marks a listening socket among the poller's owners."""

    __slots__ = ("sock", "addr", "tls", "unix", "index", "protocol")

    def __init__(self, sock: socket.socket, spec: ListenSpec, index: int) -> None:
        self.sock = sock
        self.protocol = spec.protocol  # proto[...]: its connections' protocol ("": -B's)
        self.index = index  # its place in every worker's list (a connection handed over names it)
        self.addr = sock_name(sock)  # "tcp:127.0.0.1:11211", "unix:/run/memcached.sock"
        self.unix = sock.family == socket.AF_UNIX
        self.tls = not spec.plain and not self.unix  # memcached: a unix socket never speaks TLS


class Worker:
    def __init__(self, server: Host, slot: int) -> None:
        self.server = server
        self.slot = slot
        self.index = slot
        self.board = board = server.board
        s = server.settings
        self.dispatch = server.dispatch
        self.make_parser = server.make_parser
        self.reqs_per_event = s.reqs_per_event
        self.idle_timeout = s.idle_timeout
        self.stall_timeout = s.stall_timeout
        limit = megabytes_in_32_bits(s.read_buf_mem_limit)
        self.conn_memory_cap = limit // s.threads if limit else CONN_MEMORY_DEFAULT
        self.max_connections = s.max_connections
        self.tls = server.tls  # the server's `tls.TLS` (context, handshake counters), or None
        self.counters = Counters()
        # request latency per verb (mcached.latency): the connections record into it
        self.latency = Latency(server.dispatch)
        self.latency_rows = self.latency.index
        # watch: the log rings (events), and the watchers this worker streams to
        self.events = server.events
        self.watchers: dict[WatchStream, Connection] = {}
        self._watching = Watchers(self.events, self._watch_dropped)  # read for together
        self._next_pump = 0.0
        self.selector = Poller()
        self.ready: set[Connection] = set()
        self.conns: set[Connection] = set()
        self._wake = board.wake_fd(slot)
        self._wake_fd = self._wake.fileno()
        self.selector.register(self._wake, READ, None)
        self._listening = [
            _Listening(t, server.listen_specs.get(t, NO_PREFIX), i)
            for i, t in enumerate(server.listening(slot))
        ]
        # connections other workers accepted and hand to this one (Board.fewer_than), and,
        # in a worker process, a descriptor kept in reserve: closed just before one is
        # received, so that it has a place even when the process is out of them (it then
        # pauses as accept does). Worker threads receive the socket itself (Board.inboxes)
        self._handoff = board.handoff_fd(slot)
        self._threads = board.inboxes is not None
        self._reserve = -1
        self.selector.register(self._handoff, READ, self._take_handed)
        if not self._threads:
            self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._near_fd_limit = True  # until a received descriptor's number says otherwise
        self._paused_until = 0.0  # EMFILE backoff: monotonic time accepting resumes
        self._next_shed = 0.0  # memory_pressure: when it may check again
        self._pressed = 0  # memory_pressure: bytes claimed since its last check
        # out of descriptors since (monotonic; 0: not): one episode, however many retries
        self._starved_at = 0.0
        for lst in self._listening:
            self.selector.register(lst.sock, READ | EXCLUSIVE, lst)
        self._udp = server.datagram_sockets(slot)
        for u in self._udp:
            reader = server.udp_server.reader(
                u, self.counters, server.listen_specs.get(u, NO_PREFIX)
            )
            self.selector.register(u, READ | EXCLUSIVE, reader)
        # UDP readers in the middle of a datagram: served a turn each time round the loop
        self.udp_busy: set[UdpReader] = set()
        self.trace = False  # -vv: log every command and reply
        self.asking: object = None  # the connection whose stats conns is being answered
        self._stopping = False
        self._drain_until: float | None = None
        self._seen = [0] * board.requesters  # requests of each other worker (or asker) answered
        # while it holds for a `stats reset` (or asks for one): the resets it holds for
        self._held: list[tuple[int, int]] | None = None
        # what it published last, by kind: a publish of some kinds keeps the others' entries,
        # which a requester of those may still be reading
        self._blob: dict[str, Any] = {}
        self._settings_epoch = board.get(G_SETTINGS_EPOCH)
        # The loop's clock: time.monotonic() when the last poll returned. Connections stamp
        # their timeout bookkeeping with it (one clock read per batch of events, not two per
        # request); the timeouts it serves are whole seconds.
        self.now_ns = time.monotonic_ns()
        self.now = self.now_ns / 1e9
        self.thread: threading.Thread | None = None
        self.finished = threading.Event()  # set as `run` returns (see `join`)
        board.set_word(slot, W_ACCEPTING, 1)

    # ---- called from other threads (or a signal handler) ----

    def start(self) -> None:
        """Run the loop in a thread of its own (thread mode)."""
        self.thread = threading.Thread(
            target=self.run, name=f"mcached-worker-{self.slot}", daemon=True
        )
        self.thread.start()

    def stop(self, drain_until: float | None = None) -> None:
        """Stop the loop. With `drain_until` (a time.monotonic() deadline), first answer
        the requests already received on every connection and send the replies; without,
        during a drain, cut it short."""
        self._drain_until = drain_until
        self._stopping = True
        self.board.wake(self.slot)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop's thread to end, on `finished` rather than Thread.join alone:
        a Thread.join that an exception interrupts (Ctrl-C in a program that runs the
        daemon in its threads) leaves CPython 3.11's and 3.12's thread marked ended while
        it runs on, and whatever was freed after it "ended" was still in its use."""
        if self.thread is not None and self.finished.wait(timeout):
            self.thread.join(timeout)

    @property
    def running(self) -> bool:
        """Its thread has not returned from `run` (thread mode)."""
        return self.thread is not None and not self.finished.is_set()

    # ---- the loop (the worker's thread only) ----

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

    def _run(self) -> None:
        board = self.board
        self.events.bind(self.slot)  # this thread's events go to this slot's ring
        board.set_word(self.slot, W_PID, os.getpid())
        if not self._threads and board.in_flight(self.slot):
            self._settle_handed()
        board.set_word(self.slot, W_STATE, RUNNING)
        self.server.worker_started(self)
        # the run-time settings as they are now (verbosity: a worker process forked at start,
        # or in place of a dead one, traces commands under -vv from its first request)
        self.server.apply_settings(self)
        # and what a wake-up would find asked of it (a reload asked before it started)
        self.server.worker_woken(self)
        # A worker process forked in place of a dead one has the supervisor's copy of the
        # certificates, as loaded at start: it loads the files a refresh_certs loaded since
        # before its first handshake, not at its first wake-up
        self._catch_up_tls()
        failed = False
        try:
            self._loop()
            board.set_word(self.slot, W_STATE, STOPPING)
            if self._drain_until is not None:
                self._drain(self._drain_until)
        except Exception:
            # A bug outside any one request (those close their connection: Connection
            # ._failed). A worker process dies of it and its supervisor starts another; a
            # worker thread must not take the process's listening sockets, which its
            # sibling threads share, down with it (the port would refuse every client
            # while the daemon still ran): it closes its connections and asks the server
            # for a successor
            if not self._threads or self._stopping:
                raise
            failed = True
            log.critical(
                "worker %d failed: its %d connections are closed and another worker takes "
                "its place",
                self.slot,
                len(self.conns),
                exc_info=True,
            )
        finally:
            if failed:
                self._abandon()
            else:
                self._close_all()
        if failed:
            self.server.worker_failed(self)

    def _loop(self) -> None:
        poll = self.selector.poll
        owners = self.selector.owners
        ready = self.ready
        monotonic = time.monotonic
        monotonic_ns = time.monotonic_ns
        next_check = monotonic() + TIMEOUT_CHECK_INTERVAL
        # a loop clock that jumped past this (the process was stopped: SIGSTOP, a debugger,
        # a paused container) puts the timeout check off by an interval: the clients' bytes
        # that came meanwhile are read first (a request whole in the socket was closed as
        # "request incomplete" after a stop longer than --stall-timeout)
        jump_ns = int((TIMEOUT_CHECK_INTERVAL + 1.0) * 1e9)
        prev_ns = monotonic_ns()
        timeout: float | None
        udp_busy = self.udp_busy
        answer_every = ANSWER_EVERY
        while not self._stopping:
            if ready or udp_busy:
                timeout = 0
            else:
                # a watcher's lines go out every WATCH_INTERVAL
                timeout = WATCH_INTERVAL if self.watchers else TIMEOUT_CHECK_INTERVAL
                if self._paused_until:
                    timeout = max(0.0, min(timeout, self._paused_until - monotonic()))
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            # the loop clock, in nanoseconds too (requests' latency: mcached.latency)
            self.now_ns = ns = monotonic_ns()
            self.now = ns / 1e9
            if udp_busy:
                # datagrams half served: one turn each, then the other sockets
                for reader in list(udp_busy):
                    if not reader():
                        udp_busy.discard(reader)
            # hot path: one iteration per ready socket; raw epoll events and one dict
            # lookup (poller.py says why not selectors). A long batch is served a slice at a
            # time, other workers' requests answered in between (`_sliced`; the common short
            # batch pays one comparison for it)
            batch: Iterable[tuple[int, int]] = events
            if len(events) > answer_every:
                batch = self._sliced(events)
            for fd, mask in batch:
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
                        self._woken()
                    # else: closed by an earlier event of this batch
                elif type(conn) is _Listening:
                    self._accept(conn)
                elif conn not in udp_busy and conn():  # a UDP socket (a busy one: above)
                    udp_busy.add(conn)
            if ready:
                for conn in list(ready):
                    if conn.state != CLOSED:
                        conn.process()
            if self.watchers and self.now >= self._next_pump:
                self._pump_watchers()
            if self._paused_until and self.now >= self._paused_until:
                self._resume_accepting()
            if self.now >= next_check:
                if ns - prev_ns > jump_ns:
                    next_check = self.now + TIMEOUT_CHECK_INTERVAL  # stopped: read first
                else:
                    self._tick()
                    next_check = monotonic() + TIMEOUT_CHECK_INTERVAL
            prev_ns = ns  # (hot path: one store a turn; compared once a second)

    def _sliced(self, events: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
        """A long batch of ready sockets, `ANSWER_EVERY` at a time, other workers' requests
        for figures answered between two slices: a worker that asks (``stats``) waits for
        every other one, its own clients with it (`Board.gather`), and hundreds of busy
        connections take a worker seconds to serve once each (a hunt: a ``stats`` held its
        worker's other clients 0.4 s, ten pipelined 1.3 s, while another worker served ten
        clients' 16,000-key gets; 25 ms and 0.3 s with slices)."""
        for start in range(0, len(events), ANSWER_EVERY):
            if start:
                self.answer_requests()
            yield from events[start : start + ANSWER_EVERY]

    def _tick(self) -> None:
        """Once a second: timeouts, whether the daemon still runs, and this worker's
        counters onto the board (its ``stats detail`` table too while detail is on), so that
        a worker process killed (``kill -9``) takes at most its last second of counted
        requests with it (`Board.retire` keeps what it published; ``stats`` asks the running
        workers for their figures at once)."""
        if self.idle_timeout or self.stall_timeout:
            self._close_timed_out()
        self._shed_memory()
        self.publish(COUNTERS | DETAIL if self.board.get(G_DETAIL) else COUNTERS)
        self.server.worker_tick(self)

    # ---- the board ----

    def _woken(self) -> None:
        try:
            while self._wake.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        board = self.board
        epoch = board.get(G_SETTINGS_EPOCH)
        if epoch != self._settings_epoch:
            self._settings_epoch = epoch
            self.server.apply_settings(self)
        self._catch_up_tls()
        # what the server's owner has pending for a worker (a SIGHUP's reload): at once, not
        # at the next tick
        self.server.worker_woken(self)
        # after the settings: a worker gathering figures knows every worker applied them
        self.answer_requests()
        if board.get(G_STOP) and not self._stopping:
            pass  # the supervisor (or the daemon) stops every worker; nothing to do here

    def _catch_up_tls(self) -> None:
        epoch = self.board.get(G_TLS_EPOCH)
        if self.tls is not None and epoch != self.tls.epoch:
            # another worker ran refresh_certs (this process's copy, once: worker threads
            # share one)
            self.tls.epoch = epoch
            self.tls.refresh()

    def answer_requests(self) -> None:
        """Publish what other workers asked for since we last looked; for a `stats reset`,
        then hold until it is done (`_hold`)."""
        board = self.board
        asked = board.requests(self.slot, self._seen)
        if asked:
            kinds = 0
            resets = []
            for r, seq, k in asked:
                kinds |= k
                if k & RESET:
                    resets.append((r, seq))
            self.publish(kinds)
            board.acknowledge(self.slot, self._seen, asked)
            if resets:
                if self._held is not None:  # holding, or resetting: held for too, after
                    self._held += resets
                else:
                    self._hold(resets)

    def _hold(self, resets: list[tuple[int, int]]) -> None:
        """Serve nothing while other workers reset the figures (a RESET request): each
        zeroes what is counted beside them (the storage's counters, the processes' detail
        tables: `G_DETAIL_RESETS`, applied here before the next request) while none is
        served. A reset asked meanwhile is held for too."""
        board = self.board
        self._held = resets
        try:
            deadline = time.monotonic() + RESET_HOLD
            pause = 0.00005
            while board.holding(resets) and time.monotonic() < deadline:
                time.sleep(pause)
                pause = min(pause * 2, 0.002)
                self.answer_requests()  # other workers' `stats`, as gather does
        finally:
            self._held = None
        self.server.apply_settings(self)

    def reset_figures(self, during: Callable[[], None]) -> None:
        """``stats reset`` from this worker: every other worker publishes and holds; the
        board's baseline moves and `during` runs while they do. Resets other workers ask
        meanwhile are answered without a hold (two asking at once each wait for the
        other's answer), and held for once this one is done."""
        self._held = []
        try:
            self.gather(COUNTERS | RESET)
            self.board.reset()
            during()
        finally:
            self.board.reset_done(self.slot)
            others, self._held = self._held, None
        if others:
            self._hold(others)

    def publish(self, kinds: int) -> None:
        kinds &= ~RESET
        blob: dict[str, Any] | None = None
        if kinds & ~COUNTERS:
            blob = self._blob
            if kinds & CONNS:
                blob["conns"] = self.conns_rows()
            blob.update(self.server.extra_figures(kinds))
        self.board.publish(self.slot, self.counters, blob, self.latency.flat())

    def gather(self, kinds: int) -> list[int]:
        """Every worker's figures of `kinds`, published on the board (see `board.gather`)."""

        def answer() -> None:
            self.publish(kinds)
            self.answer_requests()

        return self.board.gather(self.slot, kinds, answer)

    def conns_rows(self) -> list[tuple[int, str, str, str, float, float]]:
        """(number, address, listen address, state, last command, opened) of each open
        connection, as ``stats conns`` names them: the one asking is in ``conn_parse_cmd``,
        one part-way through a value in ``conn_nread`` (buffered by its parser, or received
        into place), one skipping a refused value in ``conn_swallow``, one that has sent
        nothing yet in ``conn_new_cmd``; the rest by `STATE_NAMES`."""
        rows = []
        for c in self.conns:
            state = c.state
            if state == CLOSED:
                continue
            if c is self.asking:
                state = "conn_parse_cmd"
            elif state == READING and c.parser.swallowing:
                state = "conn_swallow"
            elif state == READING and (c.parser.in_data_block or c.sink is not None):
                state = "conn_nread"
            elif state == READING and c.last_cmd == c.opened and not c.parser.buffered:
                # nothing received yet: memcached's new connection waits in conn_new_cmd
                # until its first read (a TLS connection's handshake was that: conn_read)
                state = "conn_read" if c.tls else "conn_new_cmd"
            elif state == HANDSHAKE:
                # memcached's handshake goes on in the reads of conn_read, the first of which
                # comes with the client's first bytes: one that has sent none (most often
                # the case here) is still in conn_new_cmd
                state = "conn_new_cmd"
            else:
                state = STATE_NAMES.get(state, state)
            proto = c.listen_addr.partition(":")[0]
            addr = UNIX_PEER if proto == "unix" else f"{proto}:{c.peer}"
            rows.append((c.fd, addr, c.listen_addr, state, c.last_cmd, c.opened))
        return rows

    # ---- accepting ----

    def _accept(self, lst: _Listening) -> None:
        board = self.board
        lsock = lst.sock
        for _ in range(ACCEPT_BATCH):
            if self._stopping:
                # (a stop signal's handler ran in the middle of the batch) the rest stay in
                # the backlog, to be refused by the listener's close, as memcached's exit
                # does, not told "Too many open connections" and counted as rejected
                return
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the pending connection stays in the backlog and
                    # the socket stays readable, so the poll would spin. Stop watching the
                    # listeners for a moment (memcached: accept_new_conns(false)).
                    self._pause_accepting(exc)
                    return
                # ECONNABORTED, EPROTO, EPERM...: that one connection is gone, the rest wait
                log.info("accept failed: %s", exc)
                continue
            if self._starved_at:
                self._fed()
            # counted before -c is checked: two workers accepting at once cannot both take
            # the last place (both may refuse: a moment early, never past the limit)
            board.add(self.slot, W_CONNS, 1)
            if self._stopping:  # (since the accept) closed as the rest are: no error line
                board.add(self.slot, W_CONNS, -1)
                sock.close()
                return
            if board.connections() > self.max_connections:
                board.add(self.slot, W_CONNS, -1)
                board.add_figure(self.slot, "rejected_connections")
                try:
                    sock.setblocking(False)
                    sock.send(TOO_MANY_CONNECTIONS)
                except OSError:
                    pass
                sock.close()
                continue
            # a worker with fewer connections serves it (counted on its way there too)
            name = lst.addr if lst.unix else format_address(peer)  # a unix client has no name
            target = board.fewer_than(self.slot)
            if target is not None and board.hand_over(self.slot, target, sock, lst.index, name):
                continue
            self._serve_accepted(sock, name, lst)

    def _take_handed(self) -> None:
        """Connections another worker accepted and handed over (one descriptor a message,
        which names the listening socket it came from and the peer: Board.hand_over),
        each counted as this worker's own (Board.arrived; taken back if it is not served).
        Near the descriptor limit the reserve is given up for each one received (and made
        again after, or accepting pauses); far from it, that is two system calls saved.
        Worker threads take the sockets themselves, no descriptor made
        (Board.take_queued)."""
        board = self.board
        if self._threads:
            for handed, at, peer in board.take_queued(self.slot):
                lst = self._listener(at)
                if lst is None:
                    board.add(self.slot, W_CONNS, -1)
                    handed.close()
                else:
                    self._serve_accepted(handed, peer, lst)
            return
        while True:
            near = self._near_fd_limit
            if near:
                if self._reserve < 0:
                    return  # paused: nothing is received until descriptors are free
                os.close(self._reserve)  # the received descriptor's place
                self._reserve = -1
            msg: bytes | None
            try:
                msg, fds, flags, _ = socket.recv_fds(self._handoff, 512, 1)
            except (BlockingIOError, InterruptedError):
                msg = None
            except OSError as exc:
                log.warning("taking a connection handed over failed: %s", exc)
                msg = None
            if near:
                try:
                    self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as exc:
                    # that was the last descriptor: no more until some are free
                    self._pause_accepting(exc)
            if msg is None:
                return
            board.arrived(self.slot, len(fds))  # counted in W_CONNS (undone if not served)
            if flags & socket.MSG_CTRUNC:
                log.warning("a connection handed over was lost: out of descriptors")
            index, _, name = msg.partition(b" ")
            for fd in fds:
                limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
                # descriptors are numbered from the lowest free one: how full the table is
                self._near_fd_limit = 0 <= limit <= fd + FD_HEADROOM
                sock = socket.socket(fileno=fd)
                lst = self._listener(int(index)) if index.isdigit() else None
                if lst is None:
                    board.add(self.slot, W_CONNS, -1)
                    sock.close()
                else:
                    self._serve_accepted(sock, name.decode(errors="replace"), lst)

    def _settle_handed(self) -> None:
        """A worker process in place of a dead one, before it runs (no worker hands it a
        connection until then: `Board.fewer_than`), when connections handed to its slot are
        not counted as taken: those queued for it are taken (and served), and one its
        predecessor took but was killed before it counted it is counted as taken too
        (`Board.settle`), or ``-c`` would count it open for good. A hand-over to the dead
        predecessor that another worker had begun is finished first: each worker answers
        this one's request for figures from its loop, never in the middle of an accept.
        (Out of descriptors, with some still queued, nothing is settled.)"""
        self.gather(COUNTERS)
        self._take_handed()
        if self._reserve >= 0:  # not paused: every datagram queued was taken
            self.board.settle(self.slot)

    def _listener(self, index: int) -> _Listening | None:
        """The listening socket a connection handed over came from; None once this worker
        stops (its listeners are gone: the connection is closed)."""
        if self._stopping or not 0 <= index < len(self._listening):
            return None
        return self._listening[index]

    def _serve_accepted(self, sock: socket.socket, name: str, lst: _Listening) -> None:
        """A connection accepted here or handed over, from `name` (the peer's address, or
        the unix socket's), counted in W_CONNS already: set up and served for life."""
        board = self.board
        try:
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None and lst.tls:
                sock = self.tls.wrap(sock)
        except (OSError, ValueError) as exc:  # reset before we got to it
            log.info("dropping a connection from %s: %s", name, exc)
            if self.tls is not None and lst.tls:
                # memcached's handshake step at the accept fails on it: counted there
                board.add_figure(self.slot, "ssl_handshake_errors")
            board.add(self.slot, W_CONNS, -1)
            sock.close()
            return
        board.add_figure(self.slot, "total_connections")
        board.note_peak()
        conn = Connection(
            sock,
            name,
            lst.addr,
            self,
            self.dispatch,
            self.make_parser(lst.protocol),
            self.reqs_per_event,
            board.conn_number(self.slot, sock.fileno()),
        )
        self.conns.add(conn)
        self.selector.register(sock, READ, conn)
        if self.events.flags & watch.CONNEVENTS:
            self._conn_event(watch.CONN_NEW, conn, "")
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<%d new client connection from %s", conn.fd, conn.peer)
        conn.start_tls()  # memcached's SSL_accept in its accept

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: the listeners unwatched for `ACCEPT_BACKOFF`, then watched
        again (`_resume_accepting`), until an accept succeeds (`_fed`). That episode is
        logged, counted in listen_disabled_num and timed once, as memcached's
        accept_new_conns(false) is until a connection closes; the retries within it are
        not (each one logged a warning and counted a disable: 800 in 10 s at -t 4)."""
        if not self._starved_at:
            log.warning("accept failed: %s; pausing accepts until a descriptor is free", exc)
            self.board.add_figure(self.slot, "listen_disabled_num")
            self._starved_at = time.monotonic()
        if not self._paused_until:
            for lst in self._listening:
                self.selector.unregister(lst.sock)
            try:
                self.selector.unregister(self._handoff)  # W_ACCEPTING 0: none is sent here
            except KeyError:
                pass  # stopping (unregistered already)
            self.board.set_word(self.slot, W_ACCEPTING, 0)
        self._paused_until = time.monotonic() + ACCEPT_BACKOFF

    def _fed(self) -> None:
        """An accept succeeded: the episode `_pause_accepting` began is over."""
        starved = time.monotonic() - self._starved_at
        self._starved_at = 0.0
        self.board.add_figure(self.slot, "time_in_listen_disabled_us", int(starved * 1e6))
        log.info("accepting again, after %.1f s out of descriptors", starved)

    def _resume_accepting(self) -> None:
        self._paused_until = 0.0
        if self._stopping:
            return
        if not self._threads and self._reserve < 0:
            try:
                self._reserve = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:  # still out of descriptors: paused a while longer
                self._paused_until = time.monotonic() + ACCEPT_BACKOFF
                return
        for lst in self._listening:
            self.selector.register(lst.sock, READ | EXCLUSIVE, lst)
        self.selector.register(self._handoff, READ, self._take_handed)
        self.board.set_word(self.slot, W_ACCEPTING, 1)

    def _stop_accepting(self) -> None:
        """Stopping: no more connections. The listening sockets are closed here too (a
        worker process holds its own copies: the port refuses connections once every
        process has closed its own)."""
        for lst in self._listening:
            if not self._paused_until:
                try:
                    self.selector.unregister(lst.sock)
                except KeyError:
                    pass  # closed already (another worker thread of this process)
        for u in self._udp:
            try:
                self.selector.unregister(u)
            except KeyError:
                pass
        self._udp_abandon()
        self.server.close_sockets()  # this process's copies, all of them
        self._paused_until = 0.0
        self._listening = []
        self._udp = []
        # no more handed over either; one on its way now is closed (no listener to name)
        try:
            self.selector.unregister(self._handoff)
        except KeyError:
            pass  # paused
        self._take_handed()
        if self._reserve >= 0:
            os.close(self._reserve)
            self._reserve = -1

    # ---- stopping ----

    def _udp_abandon(self) -> None:
        """Datagrams half served are dropped: what their replies were lent let go."""
        for reader in self.udp_busy:
            reader.abandon()
        self.udp_busy.clear()

    def _drain(self, deadline: float) -> None:
        """Answer what was received, send it, close once delivered; give up at `deadline`."""
        while self.udp_busy and time.monotonic() < deadline:  # datagrams half served
            for reader in list(self.udp_busy):
                if not reader.resume():
                    self.udp_busy.discard(reader)
        self._stop_accepting()
        self._close_watchers("server stopping")
        for conn in list(self.conns):
            conn.drain_step(deadline)
        while True:
            busy = []
            lingering = False
            for conn in list(self.conns):
                if conn.state == CLOSED:
                    continue
                if conn.unsent or conn.state == BLOCKED:
                    busy.append(conn)
                elif conn.linger():  # all sent: the kernel still delivers it
                    busy.append(conn)
                    lingering = True
            left = deadline - time.monotonic()
            if self._drain_until is None:  # a stop without a drain came since
                left = 0
            if not busy or left <= 0:
                if busy:
                    log.warning(
                        "stop deadline passed with %d connection(s) still sending", len(busy)
                    )
                return
            # (a lingering connection's delivery makes no event: it is looked at again soon)
            for fd, mask in self.selector.poll(min(left, 0.01 if lingering else 0.1)):
                owner = self.selector.owners.get(fd)
                if type(owner) is Connection and owner.lingering:
                    if mask & READ_READY:
                        owner.drop_input()
                elif type(owner) is Connection and mask & WRITE_READY:
                    owner.on_writable()
                    if owner.state == YIELDED:
                        owner.drain_step(deadline)
                elif owner is None and fd == self._wake_fd:
                    self._woken()

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
                if idle and now - conn.opened > idle:
                    # memcached takes the handshake in its read state, which its idle kick
                    # covers: with stall checks off, a client silent after its connect or
                    # part of its handshake held its place against -c for good
                    self.server.idle_kicked(self)
                    conn.close("idle timeout")
                elif stall and now - conn.opened > stall:
                    conn.close("TLS handshake not done")
            elif state == READING:
                parser = conn.parser
                in_block = parser.in_data_block or conn.sink is not None
                if idle and not in_block and now - conn.last_cmd > idle:
                    self.server.idle_kicked(self)
                    conn.close("idle timeout")
                elif stall and parser.authenticating and now - conn.last_cmd > stall:
                    # silent that long without a login: since it opened, or since its last
                    # command (a SASL command takes a login away; memcached lets the
                    # connection log in again, and it was closed within a second when it
                    # had been open that long)
                    conn.close("not authenticated")
                elif (
                    stall
                    and (in_block or parser.buffered)
                    and now - max(conn.req_start, conn.last_cmd) > stall
                ):
                    conn.close("request incomplete")

    def memory_pressure(self, held: int) -> None:
        """A connection holds `held` bytes: a large request part-way in, the keys of a long
        multiget whose reply waits, or replies its client does not read: check the bound
        now, not only at the next tick; at most every `SHED_EVERY` seconds, unless such
        connections together claimed an eighth of the bound since the last check (under
        load, one worker made 25 MB of replies that nobody read within those 5 ms)."""
        # the clock read now, not the loop's: one poll may bring many such connections,
        # and each may add megabytes (a long multiget's keys) before the loop turns
        self._pressed += held
        now = time.monotonic()
        if now >= self._next_shed or self._pressed >= self.conn_memory_cap >> 3:
            self._next_shed = now + SHED_EVERY
            self._pressed = 0
            self._shed_memory()

    def _shed_memory(self) -> None:
        """Bound what this worker's connections hold outside the cache, in all: requests
        received and not yet served, replies not yet read (`Connection.held`). Each is
        bounded already (a line, `-I`, the output cap); this bounds their sum, which would
        otherwise grow with ``-c``. Past `conn_memory_cap` (``-o read_buf_mem_limit``, split
        between the workers), the connections holding the most are closed, largest first,
        until three quarters of it are held: as memcached closes a connection it finds no
        buffer memory for, counted in ``read_buf_oom``. A client that reads its replies
        holds a few KB, so only the ones that stop reading (or stall mid-request) go."""
        cap = self.conn_memory_cap
        held = [(conn.held, conn) for conn in self.conns]
        total = sum(h for h, _ in held)
        if total <= cap:
            return
        held.sort(key=lambda pair: pair[0], reverse=True)
        for h, conn in held:
            if total <= cap * 3 // 4 or not h:
                break
            log.info(
                "<%d closing: %d bytes held, over this worker's share of read_buf_mem_limit "
                "(%d bytes held by %d connections)",
                conn.fd,
                h,
                total,
                len(held),
            )
            conn.close("out of buffer memory")
            self.server.read_buf_oom(self)
            total -= h

    def _abandon(self) -> None:
        """A failed worker thread: its watchers and connections closed (as a dead worker
        process's are), its figures published for the totals, the listening sockets left
        open for its successor and its siblings."""
        try:
            self._close_watchers("worker failed")
        except Exception:  # the state that failed the worker may fail this too
            log.exception("closing the watchers of failed worker %d", self.slot)
        for conn in list(self.conns):
            try:
                conn.close("internal error")
            except Exception:  # the state that failed the worker may fail this too
                log.exception("closing a connection of failed worker %d", self.slot)
                try:
                    conn.sock.close()  # its count goes with the slot's (Board.retire)
                except OSError:
                    pass
        self.conns.clear()
        self.ready.clear()
        try:
            self._udp_abandon()
        except Exception:  # the state that failed the worker may fail this too
            log.exception("dropping the datagrams of failed worker %d", self.slot)
        self.publish(COUNTERS)
        self.selector.close()

    def _close_all(self) -> None:
        self._stop_accepting()
        self._close_watchers("server stopping")
        for conn in list(self.conns):
            conn.flush()
            conn.close("server stopping")
        self.selector.close()

    # ---- callbacks from connections (the Owner protocol) ----

    def connection_closed(self, conn: Connection, reason: str) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            self.board.add(self.slot, W_CONNS, -1)  # counted out at once: -c sees it free
            if self.events.flags & watch.CONNEVENTS:
                self._conn_event(watch.CONN_CLOSE, conn, reason)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<%d connection closed: %s", conn.fd, reason)

    def request_shutdown(self, graceful: bool) -> None:
        self.server.request_shutdown(graceful)

    def tls_handshake_failed(self) -> None:
        """The handshake's first step, taken as the connection was accepted, failed:
        memcached closes such a connection inside its accept, before it counts it in
        total_connections (`_serve_accepted` just did: taken back)."""
        self.board.add_figure(self.slot, "ssl_handshake_errors")
        self.board.add_figure(self.slot, "total_connections", -1)

    def tls_handshake_done(self, sock: Any) -> None:
        if self.tls is not None and (new := self.tls.new_sessions(sock)):
            self.board.add_figure(self.slot, "ssl_new_sessions", new)

    # ---- watch: streams of log lines (mcached.server.eventlog) ----

    def start_watch(self, conn: Connection, flags: int) -> None:
        """`conn` answered ``watch`` OK: a stream takes its socket from now on."""
        pending = conn.hand_over()
        stream = WatchStream(
            conn.sock,
            flags,
            pending,
            self._watch_closed,
            self._watch_register,
            self._watch_counted,
        )
        self.watchers[stream] = conn
        self._watching.add(stream)
        self._next_pump = 0.0
        self._publish_watch()
        self._settings_epoch = self.board.get(G_SETTINGS_EPOCH)
        self.server.apply_settings(self)  # this worker logs from now on too
        # every worker applies the new flags before it answers a publish request: once they
        # all have, the watcher sees every event from here on (memcached's min_gid), and
        # its OK goes out
        self.gather(COUNTERS)
        stream.send()

    def _watch_register(self, sock: socket.socket, want_write: bool, stream: Any) -> None:
        events = READ | WRITE if want_write else READ
        try:
            self.selector.modify(sock, events, stream)
        except (KeyError, ValueError, OSError):
            self.selector.register(sock, events, stream)

    def _watch_counted(self, sent: int, skipped: int) -> None:
        self.board.add_figure(self.slot, "log_watcher_sent", sent)
        self.board.add_figure(self.slot, "log_watcher_skipped", skipped)

    def _watch_dropped(self, n: int) -> None:
        self.board.add_figure(self.slot, "log_worker_dropped", n)

    def _watch_closed(self, stream: WatchStream, reason: str) -> None:
        conn = self.watchers.pop(stream, None)
        self._watching.remove(stream)
        try:
            self.selector.unregister(stream.sock)
        except (KeyError, ValueError, OSError):
            pass
        if conn is not None:
            conn.close(reason)
            self._publish_watch()

    def _pump_watchers(self) -> None:
        self._next_pump = self.now + WATCH_INTERVAL
        self._watching.pump()

    def _close_watchers(self, reason: str) -> None:
        self._watching.pump()  # what was logged before the stop
        for stream in list(self.watchers):
            stream.close(reason)

    def _publish_watch(self) -> None:
        """Tell every worker what the watchers want logged now (the board's G_WATCH)."""
        board = self.board
        flags = 0
        for stream in self.watchers:
            flags |= stream.flags
        board.set_word(self.slot, W_WATCH, flags)
        board.set_word(self.slot, W_WATCHERS, len(self.watchers))
        board.publish_watch()
        board.bump(G_SETTINGS_EPOCH)
        board.wake_all()

    def _conn_event(self, kind: int, conn: Connection, reason: str) -> None:
        host, _, port = conn.peer.rpartition(":")
        transport = watch.TCP
        if conn.listen_addr.startswith("unix:"):  # memcached: rip=unix rport=0 transport=local
            host, port, transport = "unix", "0", watch.LOCAL
        # memcached's close_reason: normal for the client's EOF (even inside a value) and
        # for quit, error (its zero value) for any other hang-up: a protocol error, an HTTP
        # request line, a failed read or write
        why = watch.ERROR
        if reason in NORMAL_CLOSE:
            why = watch.NORMAL
        elif reason == "idle timeout":
            why = watch.IDLE_TIMEOUT
        elif reason in ("server stopping", "shutdown command"):
            why = watch.SHUTDOWN
        rport = int(port) if port.isdigit() else 0
        self.events.conn_event(kind, host.strip("[]"), rport, transport, why, conn.fd)
