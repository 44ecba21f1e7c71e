"""One client connection: socket I/O, the parser, the output buffer, the state machine.

States (memcached's ``conn_states``): HANDSHAKE (a TLS connection before its handshake
is done), READING (waiting for input), YIELDED (commands are buffered but this connection used
its ``-R`` turn; the worker comes back to it without a read), BLOCKED (too much unsent output:
no reading or parsing until the client drains it), CLOSING (nothing more is read; the replies
already made are sent, then the connection closes: after ``quit``, a hang-up on hostile input,
or the client's EOF), CLOSED. Every change goes through `set_state()`, which also sets the
selector interest.

Output: replies for one turn are collected in `out`. A turn of up to `JOIN_MAX` bytes is
joined into one send (the common case: one syscall). A bigger turn (a multiget of large
values) is never joined: its pieces, which are the cache's own value objects, wait in `_wq`
and go out by scatter-gather `sendmsg` (TLS: in chunks of at most `TLS_WRITE_MAX`), and what
the socket does not take stays as memoryview slices, so no reply is ever copied whole. Past
`OUTPUT_SOFT_CAP` unsent bytes the connection stops reading and parsing (a client that
pipelines without reading cannot make us build more replies); a client that then reads
nothing for ``--stall-timeout`` seconds is closed by its worker.

After the client's EOF (a half-close), every request received before it is still answered
and every reply sent, as memcached does; then the connection closes.

Streams. A reply too large to build at once (a multiget of many large values) is given as
an iterator of pieces in `stream` instead of pieces in `out`: the connection pulls pieces
only while less than `STREAM_CAP` bytes wait to be sent, so a client that reads slowly, or
never, makes the daemon hold that much of its reply, not the whole of it. No command after
it runs before it is done (its replies would come first, and its reads would see what later
commands write). A stream whose producer walks something long (``lru_crawler metadump``
walks every item) yields `GIVE_WAY` after a step that found nothing to send: the pull stops
there and goes on when the socket is next writable, so one turn never walks the whole of it
and the worker serves its other connections between steps. `after_sent(callback)` runs the
callback once every byte queued so far has been sent, or the connection closes: what a reply
holds on to (a value sent from the cache's own memory) is let go then.

Values received into place. A large value still arriving when its command line (or binary
header) is parsed (`Incoming`) is not buffered: the handler reserves the cache memory it will
live in and calls `receive(views, nbytes, done, abort, tail, more)`, and the connection reads
the value's bytes straight into those views (``recv_into``; memcached's ``conn_nread``), and
once they are full into each view ``more()`` gives (the next chunk of a value of several,
taken as its bytes arrive), then the `tail` bytes after it (the text protocols' ``\r\n``;
none in binary), and calls ``done(terminated)``. Nothing is parsed meanwhile. If the
connection closes first, ``abort()`` gives the memory back. With no views (no memory for
it, or no more: ``more()`` gave None) the bytes are read and dropped, as memcached swallows
them.

A connection knows its worker only as an `Owner`: the worker's counters, poller, ready set
and loop clock, and six callbacks. `Worker` is the one owner in the daemon; tests build a
connection over a socketpair with a fake one (tests/server/test_connection.py).
"""

from __future__ import annotations

import fcntl
import logging
import socket
import ssl
import struct
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from itertools import islice
from typing import Any, Protocol

from mcached.errors import CloseConnection, Shutdown, StartWatch
from mcached.protocol.binary_parser import AnyParser, Negotiator
from mcached.protocol.commands import TRANSMITTING
from mcached.protocol.outcomes import GIVE_WAY, Piece, Pieces
from mcached.protocol.parser import NEED_DATA
from mcached.server.poller import READ, WRITE, Poller
from mcached.stats import Counters

log = logging.getLogger("mcached.conn")
_monotonic_ns = time.monotonic_ns

TRACE = 5  # the -vv log level
READ_SIZE = 65536
OUTPUT_SOFT_CAP = 256 * 1024  # stop reading past this much unsent output
STREAM_CAP = 256 * 1024  # a stream's pieces are pulled while less than this waits unsent
# ...and at most this many in one writable event: a multiget of small values makes ~5 pieces
# a key, so 256 KB of them was ~13,000 lookups (tens of ms) before the worker's other
# connections had a turn; this is ~800 (a few ms). Measured: 13 clients each served a 1 MB
# line of two-byte keys held a new client's first request up to 5.3 s, now 0.38 s at most.
PULL_PIECES = 4096
JOIN_MAX = 64 * 1024  # a turn's replies up to this size are joined into one send (a copy)
#: a request part-way in that holds this much (a long multiget line) has its worker check
#: what all its connections hold at once, not at its next tick (Owner.memory_pressure)
PRESSURE_AT = 256 * 1024
SENDMSG_BUFFERS = 512  # pieces per sendmsg (Linux's IOV_MAX is 1024)
TLS_WRITE_MAX = 256 * 1024  # one SSL_write: progress stays visible to the stall check
DRAIN_READ_MAX = 4 * 1024 * 1024  # bytes a stopping connection still reads (what it holds)
DROP_READS = 16  # reads of what a lingering connection's client sends, an event

HANDSHAKE = "conn_tls_handshake"
READING = "conn_read"
YIELDED = "conn_yield"
BLOCKED = "conn_write_blocked"
CLOSING = "conn_closing"
CLOSED = "conn_closed"
WATCHING = "conn_watch"  # a watch stream took the socket (memcached's conn_watch)
#: ``stats conns``: memcached's names of the states it names otherwise (a reply waiting for
#: the client to read is its conn_mwrite; a yield leaves it in conn_new_cmd)
STATE_NAMES = {BLOCKED: "conn_mwrite", YIELDED: "conn_new_cmd"}

_EVENTS = {
    HANDSHAKE: READ,
    READING: READ,
    YIELDED: 0,
    BLOCKED: WRITE,
    CLOSING: WRITE,
}
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
#: what a queued view may be a view of that is a copy (`held` counts it); any other object
#: under a view is the cache's memory, lent to the reply
_COPIES = (bytes, bytearray)


class Owner(Protocol):
    """What a connection needs from the worker that owns it (`mcached.server.workers.Worker`).

    Only the owner's thread calls a connection, so none of this is locked.
    """

    counters: Counters  # the worker's own; the connection adds its bytes and yields
    selector: Poller  # where the connection registers the events its state wants
    ready: set[Connection]  # YIELDED connections, served again without a read
    now: float  # time.monotonic() when the loop last woke (one clock read per batch)
    now_ns: int  # the same time, in nanoseconds (time.monotonic_ns())
    trace: bool  # -vv: log every command and reply
    latency_rows: dict[type, list[int]]  # per command type, its verb's histogram row

    def connection_closed(self, conn: Connection, reason: str) -> None: ...

    def request_shutdown(self, graceful: bool) -> None: ...

    def tls_handshake_failed(self) -> None: ...

    def tls_handshake_done(self, sock: Any) -> None: ...

    def start_watch(self, conn: Connection, flags: int) -> None: ...

    def memory_pressure(self, held: int) -> None: ...


class Connection:
    __slots__ = (
        "sock",
        "fd",
        "peer",
        "listen_addr",
        "worker",
        "parser",
        "out",
        "counters",
        "state",
        "_wq",
        "_wq_bytes",
        "_events",
        "last_cmd",
        "dispatch",
        "reqs_per_event",
        "eof",
        "tls",
        "opened",
        "req_start",
        "req_ns",
        "latency_rows",
        "out_since",
        "_closing",
        "drain_left",
        "lingering",
        "stream",
        "stream_held",
        "stacked",
        "_yielded",
        "_after",
        "_sent_total",
        "sink",
        "lone",
        "_hs_steps",
    )
    datagram = False  # (`Session.datagram`)

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        listen_addr: str,
        worker: Owner,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        parser: AnyParser,
        reqs_per_event: int,
        number: int | None = None,
    ) -> None:
        self.sock = sock
        # what stats conns, watch (cfd=) and -vv call it: its descriptor, or the number its
        # worker gives it (unique across worker processes: `Board.conn_number`)
        self.fd = sock.fileno() if number is None else number
        self.peer = peer
        self.listen_addr = listen_addr
        self.worker = worker
        self.parser = parser
        # this turn's replies: bytes-like pieces, or `Pieces` (unpacked when queued; a turn
        # holding one is never joined)
        self.out: list[Any] = []
        self.counters: Counters = worker.counters
        self.tls = isinstance(sock, ssl.SSLSocket)
        self.state = HANDSHAKE if self.tls else READING
        self._hs_steps = 0  # TLS handshake steps taken (only the first one's failure counts)
        # unsent output, oldest first: bytes, or memoryview slices of partly sent pieces
        self._wq: deque[bytes | memoryview] = deque()
        self._wq_bytes = 0
        self._events = READ
        self.last_cmd = self.opened = time.monotonic()
        # For the worker's stall check: when the request now arriving began, and when the
        # unsent output last moved (a handshake or a login is timed from `opened`).
        self.req_start = self.last_cmd
        self.req_ns = time.monotonic_ns()
        self.latency_rows = worker.latency_rows  # per command type, its latency row
        self.out_since = self.last_cmd
        self.dispatch = dispatch  # command type -> its handler(command, connection)
        self.reqs_per_event = reqs_per_event
        self.eof = False  # the client half-closed: nothing more is read
        self._closing = ""  # CLOSING: why, logged once the output is sent
        self.drain_left = -1  # stopping: bytes it may still read (-1: not stopping yet)
        self.lingering = False  # stopping, all sent: waits for the kernel to deliver it
        self.stream: Iterator[Piece] | None = None
        self.stream_held = 0  # bytes the request the stream serves holds (`held`)
        # Commands served since memcached would last have transmitted what it holds (after
        # a get or mn, when it needs more bytes, and at a -R yield): a metadump or a watch
        # behind any is refused. Set before each command of a turn; carried into the next
        # turn only when commands are left buffered behind a -R yield or a long reply.
        self.stacked = 0
        self._yielded = False  # the last turn spent its -R budget with commands left
        # after_sent callbacks: [bytes sent in all when they may run, callback]; the end is
        # None until the flush that queues their bytes
        self._after: deque[list[Any]] = deque()
        self._sent_total = 0
        self.sink: _Sink | None = None  # a value being received into place
        self.lone: Callable[[], Any] | None = None
        self._adopt(parser)
        if type(parser) is Negotiator:
            # -B: the first byte picks the parser, which this connection then uses directly
            parser.adopt = self._adopt

    def _adopt(self, parser: Any) -> None:
        self.parser = parser
        # a parser that can tell a read of one plain command (Parser.lone), when a turn may
        # run more than one (-R 1 yields after each: process() counts that)
        self.lone = getattr(parser, "lone", None) if self.reqs_per_event > 1 else None

    # ---- state ----

    def set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == CLOSED:
            return
        self._refresh_events()
        if state == YIELDED:
            self.worker.ready.add(self)
        else:
            self.worker.ready.discard(self)

    def _refresh_events(self) -> None:
        """Selector interest from the state, unsent output and EOF."""
        events = _EVENTS[self.state]
        if self._wq:
            events |= WRITE
        if self.eof or self.drain_left >= 0:
            # a half-closed socket is always readable; a stopping one reads only what
            # drain_step takes, and the worker's drain waits for writes alone: a client
            # sending on made each of its polls return at once, a spin until the deadline
            events &= ~READ
        self._set_events(events)

    def _set_events(self, events: int) -> None:
        if events == self._events:
            return
        sel = self.worker.selector
        if self._events and events:
            sel.modify(self.sock, events, self)
        elif events:
            sel.register(self.sock, events, self)
        else:
            sel.unregister(self.sock)
        self._events = events

    # ---- events ----

    def _recv(self, size: int = READ_SIZE) -> bytes | None:
        """What the socket holds, up to `size` bytes (b"" at EOF); None when nothing is ready
        or on a read error (then the connection is closed)."""
        sock = self.sock
        try:
            data = sock.recv(size)
            if self.tls and data:
                data = self._tls_pending([data])
        except _WOULD_BLOCK:
            return None
        except OSError:
            self.close("read error")
            return None
        return data

    def on_readable(self) -> None:
        # hot path: one call per request under a request-reply load, so the plain-TCP read
        # is written out here rather than through _recv()
        if self.sink is not None:
            self._receive_into()
            return
        if self.tls:
            if self.state == HANDSHAKE:
                self._handshake()
                return
            data = self._recv()
            if data is None:
                return
        else:
            try:
                data = self.sock.recv(READ_SIZE)
            except _WOULD_BLOCK:
                return
            except OSError:
                self.close("read error")
                return
        if not data:
            self.eof = True
            self.process()  # answer what was received before the EOF, then close
            return
        self.counters.bytes_read += len(data)
        if self.parser.feed(data):
            # a new request begins arriving (the loop clock, in seconds and nanoseconds)
            self.req_start = self.worker.now
            self.req_ns = self.worker.now_ns
            lone = self.lone
            if lone is not None and not self.worker.trace and self.stream is None:
                cmd = lone()
                if cmd is not None:
                    self._serve_lone(cmd)
                    return
        elif self.parser.buffered >= PRESSURE_AT:
            # many such requests at once could take hundreds of MB before the worker's
            # once-a-second check sheds them: it checks now (at most every few ms)
            self.worker.memory_pressure(self.parser.buffered)
            if self.state == CLOSED:
                return
        self.process()

    def _serve_lone(self, cmd: Any) -> None:
        """One command that is the whole read (Parser.lone): what process() does for it,
        without the loop. Hot path: the commonest turn of all (a get, ``mg <key> v`` or a
        plain set under a request-reply load); ~200 fewer bytecodes a request than
        process()."""
        kind = type(cmd)
        try:
            self.dispatch[kind](cmd, self)
        except (Exception, Shutdown) as exc:
            self._failed(exc)
            return
        self.last_cmd = self.worker.now
        self.flush()
        took = _monotonic_ns() - self.req_ns  # latency, as process() times a turn
        row = self.latency_rows[kind]
        row[took.bit_length()] += 1
        row[-1] += took
        # process()'s tail, for a turn that leaves nothing buffered (a multiget's reply
        # past STREAM_AFTER goes on as a stream: reading stops until it is sent)
        if self.stream is not None:
            self._pull()
        state = self.state
        if state == CLOSED:
            return
        if self._wq_bytes >= OUTPUT_SOFT_CAP or self.stream is not None:
            self.set_state(BLOCKED)
        elif self.eof:
            self._finish("client closed")
        elif state is not READING:
            self.set_state(READING)

    def on_writable(self) -> None:
        if self.state == HANDSHAKE:
            self._handshake()
            return
        self._drain_output()
        if self.stream is not None and self._wq_bytes < STREAM_CAP and self.state != CLOSED:
            self._pull()
        state = self.state
        if state == CLOSED:
            return
        if not self._wq and state == CLOSING:
            self.close(self._closing)
        elif state == BLOCKED and self._wq_bytes < OUTPUT_SOFT_CAP and self.stream is None:
            # drained enough: go back to parsing what is buffered, then reading
            self.set_state(YIELDED)
        elif not self._wq:
            self._refresh_events()

    def start_tls(self) -> None:
        """Just accepted: the handshake's first step, on whatever has arrived."""
        if self.state == HANDSHAKE:
            self._handshake()

    def _handshake(self) -> None:
        """One non-blocking step of the TLS handshake (memcached's ssl_accept).

        The first step is taken as the connection is accepted (`start_tls`), as memcached
        calls SSL_accept once in its accept, and only that step's failure counts in
        ``ssl_handshake_errors``: what had arrived by then (a ClientHello refused, plain
        text, an EOF). memcached runs the rest of the handshake inside its reads, where a
        failure (a client certificate refused, plain text sent late, a client that leaves
        without a byte) just closes the connection."""
        sock: ssl.SSLSocket = self.sock  # type: ignore[assignment]
        first = not self._hs_steps
        self._hs_steps += 1
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(WRITE)
            return
        except (OSError, ValueError) as exc:  # SSLError is an OSError
            if first:
                self.worker.tls_handshake_failed()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("<%d TLS handshake failed: %s", self.fd, exc)
            self.close("TLS handshake failed")
            return
        self.worker.tls_handshake_done(sock)
        self.set_state(READING)
        self.on_readable()  # a request may have come with the client's last flight

    def _finish(self, reason: str) -> None:
        """No more requests: send what is owed, then close (memcached's close-after-write)."""
        self.flush()
        if self.state == CLOSED:
            return
        if not self._wq:
            self.close(reason)
            return
        self.eof = True
        self._closing = reason
        self.set_state(CLOSING)

    def process(self) -> None:
        """Run up to ``-R`` buffered commands, then send their replies in one write."""
        # hot path: one iteration per request, so everything it touches is a local
        parser = self.parser
        next_command = parser.next_command
        dispatch = self.dispatch
        trace = self.worker.trace
        budget = self.reqs_per_event
        # for latency: the type of the turn's first command, and of the others when a
        # pipeline mixes types (one identity test per command otherwise)
        first: type | None = None
        others: list[type] | None = None
        cut = False  # stopped for a stream or a value to receive, with commands maybe left
        stacked = self.stacked
        # memcached transmits one command later than mcached yields: its first turn after a
        # read runs -R + 1 commands, the next ones -R; so behind the first of a turn that
        # goes on after a yield (`budget` is -R there)
        flush_at = budget if self._yielded else -1
        yielded = False
        try:
            while budget:
                cmd = next_command()
                if cmd is NEED_DATA:
                    break
                if trace:
                    log.log(TRACE, "<%d %.512r", self.fd, cmd)  # a value is cut as a reply is
                kind = type(cmd)
                self.stacked = stacked
                dispatch[kind](cmd, self)
                stacked = 0 if kind in TRANSMITTING or budget == flush_at else stacked + 1
                if kind is not first:
                    if first is None:
                        first = kind
                    elif others is None:
                        others = [kind]
                    else:
                        others.append(kind)
                budget -= 1
                if self.stream is not None or self.sink is not None:
                    cut = True  # a streamed reply, or a value to receive: nothing after it
                    break  # runs before it is done
                if budget and parser.at_end:
                    break  # nothing left: no call just to hear NEED_DATA
            else:
                yielded = True
                # memcached counts no yield after a command that transmitted its reply (get,
                # mn...) when nothing more is buffered: its next conn_new_cmd finds no reply
                # to send and no bytes to parse. After any other kind it counts one.
                if kind not in TRANSMITTING or parser.buffered:
                    self.counters.conn_yields += 1
        except (Exception, Shutdown) as exc:
            self._failed(exc)
            return
        if budget != self.reqs_per_event:
            self.last_cmd = self.worker.now
        # memcached also transmits when it needs more bytes and once a value read in parts
        # is in; a long reply that mcached sends on its own (a stream) is neither
        carry = (yielded or self.stream is not None) and parser.buffered > 0
        self.stacked = stacked if carry else 0
        self._yielded = yielded and carry
        if self.sink is not None:
            # the start of the value came with its line (never all of it: then the parser
            # had made it a plain store)
            self.sink.write(self.parser.take(self.sink.wanted))
        self.flush()
        if first is not None:
            # Latency (mcached.latency): from the read that brought the turn's first request
            # to its replies handed to the kernel, in integer nanoseconds (no float on this
            # path); its bucket is its bit length. One clock read per turn.
            took = _monotonic_ns() - self.req_ns
            bucket = took.bit_length()
            rows = self.latency_rows
            n = self.reqs_per_event - budget
            if others is not None:
                n -= len(others)
                for kind in others:
                    row = rows[kind]
                    row[bucket] += 1
                    row[-1] += took
            row = rows[first]
            row[bucket] += n
            row[-1] += took * n
        if self.stream is not None:
            self._pull()
        if self._wq:
            # replies the client does not read: as for a request arriving (`on_readable`),
            # many such connections at once (pipelined large gets, `stats detail dump`)
            # could take hundreds of MB before the worker's once-a-second check sheds them.
            # What it holds, not what is unsent: the socket may have taken most of a copy,
            # whose rest keeps all of it (a client that reads has nothing left here)
            held = self.held
            if held >= PRESSURE_AT:
                self.worker.memory_pressure(held)
        if self.state == CLOSED:
            return
        if self.sink is not None:
            self.set_state(READING)  # only the value's bytes are read, whatever is unsent
            return
        if self._wq_bytes >= OUTPUT_SOFT_CAP or self.stream is not None:
            self.set_state(BLOCKED)
        elif budget == 0 or (cut and parser.buffered):
            self.set_state(YIELDED)  # more commands may be buffered: another turn
        elif self.eof:
            self._finish("client closed")
        elif self.state is not READING:  # usually already READING: skip the call
            self.set_state(READING)

    def _failed(self, exc: BaseException) -> None:
        """A command raised: one of the exceptions handlers steer the connection with, or
        a bug (logged with its traceback; the connection closes)."""
        if isinstance(exc, CloseConnection):
            if exc.notice:
                log.info("<%d closing: %s", self.fd, exc.reason)
            self._finish(exc.reason)
        elif isinstance(exc, Shutdown):
            # Once the replies made before it are sent: memcached reaches the command only
            # when it has written those, and they reach the client whichever the mode.
            # (Closed at once, the connection dropped up to OUTPUT_SOFT_CAP bytes of them,
            # a reply cut in the middle.) Asked before the client sees its connection
            # close: from then on the daemon says it stops (an embedded server's `running`);
            # a client that never reads has it asked when its connection is closed for it.
            self.after_sent(partial(self.worker.request_shutdown, exc.graceful))
            self._finish("shutdown command")
        elif isinstance(exc, StartWatch):
            # `watch` answered OK: the worker streams log lines here from now on (it sends
            # the OK once every worker logs what the watcher wants)
            self.worker.start_watch(self, exc.flags)
        else:
            log.error(
                "error handling a request from %s; closing the connection",
                self.peer,
                exc_info=exc,
            )
            self.close("internal error")

    def drain_step(self, deadline: float = float("inf")) -> None:
        """Stopping: answer every complete request received, and nothing sent after.

        What the kernel holds for us at the first call was sent before the stop: that much
        is read (at most `DRAIN_READ_MAX` bytes: a client that keeps pipelining cannot hold
        the stop up) and answered, and nothing after it, even where the first reads come
        later (a connection in the middle of a long reply reads once it is sent). Stops
        early when the output is BLOCKED, the worker calls again once it drains; and at
        `deadline` (time.monotonic()), whatever is left.
        """
        if self.state == HANDSHAKE:
            self.close("server stopping")  # no request can have arrived yet
            return
        if self.drain_left < 0:
            # (TLS: the kernel's count is of records, not of requests; there, what the
            # reads find, up to the bound)
            held = -1 if self.tls else _queued(self.sock, _IN_QUEUE)
            self.drain_left = DRAIN_READ_MAX if held < 0 else min(held, DRAIN_READ_MAX)
            self._refresh_events()  # no more interest in reading (see there)
        # Only between two turns. In the middle of a streamed reply (a long multiget, its
        # pieces sent as the client reads) the worker's drain sends the rest first and calls
        # again once it is YIELDED; a connection CLOSING after a quit serves nothing more. (A
        # turn run here mid-stream wrote the next command's reply into the stream's middle,
        # and served a get the value a later pipelined set stored; after a quit, it ran the
        # commands behind it.)
        if self.stream is not None or self.state not in (READING, YIELDED):
            return
        self._process_until_blocked(deadline)
        while (
            self.drain_left > 0 and self.state == READING and self.stream is None and not self.eof
        ):
            if time.monotonic() >= deadline:
                return
            data = self._recv(min(READ_SIZE, self.drain_left))
            if not data:
                if data is not None:
                    self.eof = True
                self.drain_left = 0  # the kernel held no more: nothing is read from now on
                break
            self.counters.bytes_read += len(data)
            self.drain_left -= len(data)
            if self.sink is not None:
                data = data[self.sink.write(data) :]
                if self.sink.complete:
                    self._received()
            self.parser.feed(data)
            self._process_until_blocked(deadline)

    def linger(self) -> bool:
        """Stopping, with every reply handed to the socket: close it, unless the kernel still
        holds some of them (a client that reads slowly). Then True: the connection lingers.

        Closed with bytes it never read (what a client sent after the stop), a connection is
        reset, and the kernel drops whatever it had not delivered yet: the client would lose
        the tail of replies it was owed. So a lingering connection ends its sending side
        (the client reads a FIN after the last reply), reads and drops whatever the client
        sends (`drop_input`), and closes once the kernel holds nothing unsent
        (`linger` again, from the worker's drain), the client closes, or the drain's deadline
        passes. (TLS: closed at once, with its close_notify, as before.)
        """
        if self.lingering:
            if _queued(self.sock, _OUT_QUEUE) > 0:
                return True
            self.close("server stopping")
            return False
        if self.tls or _queued(self.sock, _OUT_QUEUE) <= 0:
            self.close("server stopping")
            return False
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close("server stopping")
            return False
        self.lingering = True
        self._set_events(READ)
        return True

    def drop_input(self) -> None:
        """Lingering: what the client sent is read and dropped; its EOF or an error closes.
        At most `DROP_READS` reads an event: a client that sends as fast as they go does not
        keep its worker here past the drain's deadline."""
        view = _discard_view()
        for _ in range(DROP_READS):
            try:
                n = self.sock.recv_into(view)
            except _WOULD_BLOCK:
                return
            except OSError:
                n = 0
            if not n:
                self.close("server stopping")
                return

    def _process_until_blocked(self, deadline: float = float("inf")) -> None:
        self.process()
        while self.state == YIELDED and time.monotonic() < deadline:
            self.process()

    def _pull(self) -> None:
        """Pieces of the stream, while less than `STREAM_CAP` bytes wait to be sent, up to a
        `GIVE_WAY` or `PULL_PIECES` pieces (then the next writable event pulls on)."""
        stream = self.stream
        assert stream is not None
        if self.stream_held:
            # a multiget's reply streams, and nothing is read meanwhile: its line, consumed,
            # is let go now rather than at the next read. Its keys stay until the stream
            # ends (up to ~1.3 MB: a long line's part, `parser.LINE_PART`), and the rest of
            # a long line waits in the parser: as for a long request arriving
            # (`on_readable`), the worker checks its bound now
            self.parser.compact()
            held = self.stream_held + self.parser.buffered
            if held >= PRESSURE_AT:
                self.worker.memory_pressure(held)
                if self.state == CLOSED:
                    return
        out = self.out
        room = STREAM_CAP - self._wq_bytes
        pieces = PULL_PIECES
        try:
            while room > 0 and pieces:
                pieces -= 1
                piece = next(stream, None)
                if piece is None:
                    self.stream = None
                    self.stream_held = 0
                    break
                if piece is GIVE_WAY:
                    break
                if piece.__class__ is Pieces:
                    out += piece.views
                else:
                    out.append(piece)
                room -= len(piece)
        except Exception:
            log.exception("error streaming a reply to %s; closing the connection", self.peer)
            self.close("internal error")
            return
        self.flush()

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything queued so far (this turn's replies included) has
        been sent, or when the connection closes."""
        self._after.append([None, callback])

    def _run_after(self) -> None:
        after = self._after
        sent = self._sent_total
        while after and after[0][0] is not None and after[0][0] <= sent:
            after.popleft()[1]()

    def _sent_after(self) -> None:
        """after_sent callbacks of this turn: their bytes end where every unsent byte does."""
        end = self._sent_total + self._wq_bytes
        for entry in self._after:
            if entry[0] is None:
                entry[0] = end
        self._run_after()

    # ---- values received into place ----

    def receive(
        self,
        views: list[memoryview] | None,
        nbytes: int,
        done: Callable[[bool], None],
        abort: Callable[[], None] | None,
        tail: int = 2,
        more: Callable[[], memoryview | None] | None = None,
    ) -> None:
        """Read the next `nbytes` bytes into `views` (None: drop them), and when they are
        full into what ``more()`` gives, one view at a time (None: the rest is dropped);
        check the `tail` after them (the text protocols' two; the binary protocol has none),
        then ``done(they were "\\r\\n")``; ``abort()`` if the connection closes first."""
        self.sink = _Sink(views, nbytes, done, abort, tail, more)

    def _receive_into(self) -> None:
        sink = self.sink
        assert sink is not None
        sock = self.sock
        try:
            got = sock.recv_into(sink.space())
        except _WOULD_BLOCK:
            return
        except OSError:
            self.close("read error")
            return
        if not got:
            self.eof = True
            self.close("client closed in the middle of a value")
            return
        sink.advance(got)
        if self.tls:
            # decrypted bytes OpenSSL holds are invisible to the selector: take them now
            try:
                while not sink.complete and sock.pending():  # type: ignore[attr-defined]
                    k = sock.recv_into(sink.space())
                    if not k:
                        break
                    sink.advance(k)
                    got += k
            except OSError:  # SSLWantRead included: the next read sees it
                pass
        self.counters.bytes_read += got
        if sink.complete:
            self._received()
            if self.tls and self.sink is None and self.state != CLOSED:
                self._take_pending()
            self.process()  # the replies, and whatever the client sent next

    def _tls_pending(self, parts: list[bytes]) -> bytes:
        """`parts` and the bytes OpenSSL has decrypted past them, which the selector cannot
        see."""
        sock = self.sock
        try:
            while sock.pending():  # type: ignore[attr-defined]
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                parts.append(data)
        except OSError:  # SSLWantRead included: the next read sees it
            pass
        return b"".join(parts)

    def _take_pending(self) -> None:
        """TLS: the bytes past a value just received (the next requests, in the record the
        value ended in) into the parser now, or they wait for the client's next bytes,
        which may never come."""
        data = self._tls_pending([])
        if data:
            self.counters.bytes_read += len(data)
            if self.parser.feed(data):
                self.req_start = self.worker.now
                self.req_ns = self.worker.now_ns

    def _received(self) -> None:
        """The value and its two closing bytes are in: the handler finishes the command."""
        sink = self.sink
        assert sink is not None and sink.complete
        self.sink = None
        self.last_cmd = self.worker.now
        try:
            sink.done(sink.terminated)
        except Exception:
            log.exception("error storing a value from %s; closing the connection", self.peer)
            self.close("internal error")

    def flush(self) -> None:
        out = self.out
        if len(out) == 1:
            data = out.pop()
        elif not out:
            if self._after:
                self._sent_after()
            return
        else:
            if sum(map(len, out)) > JOIN_MAX:
                # a big turn: queue the pieces themselves, never a joined copy
                if self.worker.trace:
                    log.log(TRACE, ">%d %r...", self.fd, out[0][:512])
                self._queue(out)
                out.clear()
                self._drain_output()
                if self._after:
                    self._sent_after()
                return
            data = b"".join(out)
            out.clear()
        if self.worker.trace:
            log.log(TRACE, ">%d %r", self.fd, data[:512])
        if self._wq or (self.tls and len(data) > TLS_WRITE_MAX):
            # earlier replies still wait (keep the order), or too big for one SSL_write
            self._queue((data,))
            self._drain_output()
            if self._after:
                self._sent_after()
            return
        try:
            sent = self.sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError:
            self.close("write error")
            return
        self.counters.bytes_written += sent
        self._sent_total += sent
        if sent < len(data):
            self._queue((memoryview(data)[sent:],))
            self._refresh_events()
        if self._after:
            self._sent_after()

    def _queue(self, pieces: Any) -> None:
        if not self._wq:
            self.out_since = time.monotonic()
        wq = self._wq
        for piece in pieces:
            if piece:
                if piece.__class__ is Pieces:
                    wq.extend(piece.views)  # a lent value in several chunks: each one's view
                else:
                    wq.append(piece)
                self._wq_bytes += len(piece)

    def _drain_output(self) -> None:
        """Send queued output until the socket takes no more; keep the rest as slices."""
        wq = self._wq
        sock = self.sock
        while wq:
            try:
                if self.tls:
                    chunk = self._tls_chunk()
                    asked = len(chunk)
                    sent = sock.send(chunk)
                else:
                    batch = list(islice(wq, SENDMSG_BUFFERS))
                    asked = sum(map(len, batch))
                    sent = sock.sendmsg(batch)
            except _WOULD_BLOCK:
                break
            except OSError:
                self.close("write error")
                return
            self.counters.bytes_written += sent
            self._sent_total += sent
            self._wq_bytes -= sent
            self.out_since = time.monotonic()
            left = sent
            while left:
                head = wq[0]
                if len(head) <= left:
                    left -= len(head)
                    wq.popleft()
                else:
                    wq[0] = memoryview(head)[left:]
                    left = 0
            if sent < asked:
                break  # the socket is full
        if self._after:
            self._run_after()
        if self.state != CLOSED:
            self._refresh_events()

    def _tls_chunk(self) -> bytes | memoryview:
        """The next SSL_write. OpenSSL wants a write it refused retried with the same bytes
        and no shorter: the head of the queue only ever grows (small pieces are merged into
        it) and is cut at the same `TLS_WRITE_MAX`, so a retry always satisfies that."""
        wq = self._wq
        head = wq[0]
        if len(head) < TLS_WRITE_MAX and len(wq) > 1:
            parts = [wq.popleft()]
            size = len(head)
            while wq and size + len(wq[0]) <= TLS_WRITE_MAX:
                size += len(wq[0])
                parts.append(wq.popleft())
            head = b"".join(parts)
            wq.appendleft(head)
        return head[:TLS_WRITE_MAX] if len(head) > TLS_WRITE_MAX else head

    def hand_over(self) -> bytes:
        """Stop serving requests (``watch``): the socket's events go to whoever takes it
        from now on; returns the output not yet sent, for it to send first."""
        self._set_events(0)
        self.worker.ready.discard(self)
        self.state = WATCHING
        pending = b"".join(
            [bytes(p) if p.__class__ is Pieces else p for p in [*self._wq, *self.out]]
        )
        self._wq.clear()
        self._wq_bytes = 0
        self.out.clear()
        # the values lent to those replies are copied into `pending`: their pins go now, not
        # when the watch ends (memcached has sent them before it parses the watch)
        while self._after:
            self._after.popleft()[1]()
        return pending

    @property
    def unsent(self) -> int:
        return self._wq_bytes

    @property
    def held(self) -> int:
        """Bytes this connection holds outside the cache: received and not yet served,
        replies not yet taken by the socket. A value the cache lends to a reply (a view of
        its memory, under a pin: see `Pieces`) is the cache's, inside ``-m``, and is not
        counted; a copy is, whole even when the socket took part of it (the view of its
        rest keeps all of it); so is what the request a stream serves holds
        (`stream_held`: a multiget's keys)."""
        lent = 0
        if self._wq_bytes:
            for piece in self._wq:
                if piece.__class__ is memoryview:
                    if piece.obj.__class__ not in _COPIES:
                        lent += piece.nbytes
                    else:  # the rest of a copy the socket took part of: all of it is held
                        lent -= len(piece.obj) - piece.nbytes
        return self._wq_bytes - lent + self.parser.buffered + self.stream_held

    def close(self, reason: str = "") -> None:
        if self.state == CLOSED:
            return
        if self.tls and self.state != HANDSHAKE:
            _close_notify(self.sock)  # type: ignore[arg-type]
        if self._events:
            try:
                self.worker.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self._events = 0
        self.state = CLOSED
        self.worker.ready.discard(self)
        self._wq.clear()  # release the values we were sending
        self._wq_bytes = 0
        self.out.clear()
        # what it received and had not served yet (a long multiget line: a MB or more),
        # let go now: a connection closed for holding too much (Worker._shed_memory) would
        # otherwise hold it until the collector ran, and a flood of such lines grew the
        # daemon by all of them
        self.parser.release()
        if self.stream is not None:
            close = getattr(self.stream, "close", None)
            self.stream = None
            self.stream_held = 0
            if close is not None:
                close()  # a generator's finally blocks let go of what it holds
        while self._after:
            self._after.popleft()[1]()
        if self.sink is not None:
            sink, self.sink = self.sink, None
            if sink.abort is not None:
                sink.abort()  # the memory reserved for the value goes back
        try:
            self.sock.close()
        except OSError:
            pass
        self.worker.connection_closed(self, reason)


def _close_notify(sock: ssl.SSLSocket) -> None:
    """Tell a TLS peer the connection ends (a close_notify alert), as memcached's
    ``SSL_shutdown`` before it closes: once, without waiting for the peer's own. A client
    that finds the connection closed without it may take the end for an attack on the
    stream (OpenSSL's "unexpected eof"), and Perl's IO::Socket::SSL then dies of SIGPIPE
    on its next write (memcached's idle-timeout.t over TLS)."""
    try:
        sock.unwrap()
    except (ssl.SSLError, OSError, ValueError):
        pass  # not sent whole (a full socket buffer, a reset peer): the close goes on


# ioctl requests for the bytes a socket's kernel queues hold: received and not read yet, sent
# and not acknowledged yet (Linux's SIOCINQ and SIOCOUTQ); None where the platform has none
_IN_QUEUE: int | None = getattr(termios, "FIONREAD", None)
_OUT_QUEUE: int | None = getattr(termios, "TIOCOUTQ", None)


def _queued(sock: socket.socket, request: int | None) -> int:
    """The bytes one of `sock`'s kernel queues holds (`_IN_QUEUE` or `_OUT_QUEUE`); -1 where
    that cannot be told."""
    if request is None:
        return -1
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0])
    except (OSError, ValueError):
        return -1


_discard = threading.local()


def _discard_view() -> memoryview:
    """Where dropped value bytes are read (never read back): each thread's own view. On a
    free-threaded CPython, slicing one memoryview from several threads at once can release
    it under all of them (CPython gh-155606, as `Arena.pages_view` says): worker threads
    that shared one module-wide view failed with "operation forbidden on released
    memoryview object" while they dropped values at once."""
    try:
        return _discard.view  # type: ignore[no-any-return]
    except AttributeError:
        _discard.view = view = memoryview(bytearray(READ_SIZE))
        return view


class _Sink:
    """A value being received into place: where its bytes go, and what runs when it is in."""

    __slots__ = ("views", "left", "tail", "ntail", "done", "abort", "more")

    def __init__(
        self,
        views: list[memoryview] | None,
        nbytes: int,
        done: Callable[[bool], None],
        abort: Callable[[], None] | None,
        tail: int = 2,
        more: Callable[[], memoryview | None] | None = None,
    ) -> None:
        # what is left of each view, the current one first (None: the bytes are dropped)
        self.views = deque(v for v in views if len(v)) if views is not None else None
        self.left = nbytes
        # the bytes after the value: "\r\n" when well formed (binary: none)
        self.tail = bytearray(tail)
        self.ntail = 0
        self.done = done
        self.abort = abort
        self.more = more  # the next view once `views` are full (memory taken as bytes come)

    @property
    def wanted(self) -> int:
        return self.left + len(self.tail) - self.ntail

    @property
    def complete(self) -> bool:
        return not self.left and self.ntail == len(self.tail)

    @property
    def terminated(self) -> bool:
        return self.tail == b"\r\n"[: len(self.tail)]

    def space(self) -> memoryview:
        """Where the next bytes received go."""
        if self.left:
            views = self.views
            if views is not None and not views:
                view = self.more() if self.more is not None else None
                if view is None:
                    self.views = views = None  # no memory for the rest: dropped as it comes
                else:
                    views.append(view)
            if views is None:
                return _discard_view()[: self.left]
            return views[0]
        return memoryview(self.tail)[self.ntail :]

    def advance(self, n: int) -> None:
        """`n` bytes were written into `space()`."""
        if not self.left:
            self.ntail += n
            return
        self.left -= n
        views = self.views
        if views is not None:
            head = views[0]
            if n == len(head):
                views.popleft()
            else:
                views[0] = head[n:]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Copy as much of `data` as belongs to the value in; the bytes taken."""
        taken = 0
        mv = memoryview(data)
        while taken < len(mv) and not self.complete:
            space = self.space()
            k = min(len(space), len(mv) - taken)
            space[:k] = mv[taken : taken + k]
            self.advance(k)
            taken += k
        return taken
