"""One client connection: socket I/O, the parser, the output buffer, the state machine.

States (memcached's ``conn_states``): READING (waiting for input), YIELDED (commands are
buffered but this connection used its ``-R`` turn; the worker comes back to it without a
read), BLOCKED (too much unsent output: no reading or parsing until the client drains it),
CLOSED. Every change goes through `set_state()`, which also sets the selector interest.

Output: replies for one turn are collected in `out` and joined into one send. What the
socket does not take waits in `_wbuf`; past `OUTPUT_SOFT_CAP` the connection stops reading
(a client that pipelines without reading cannot grow our memory), and if one turn's output
alone overflows `OUTPUT_HARD_CAP` the connection is closed.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mcached.errors import CloseConnection, Shutdown
from mcached.protocol.parser import NEED_DATA, Parser
from mcached.stats import Counters

if TYPE_CHECKING:
    from mcached.server.workers import Worker

log = logging.getLogger("mcached.conn")

TRACE = 5  # the -vvv log level
READ_SIZE = 65536
OUTPUT_SOFT_CAP = 4 * 1024 * 1024  # stop reading past this much unsent output
OUTPUT_HARD_CAP = 64 * 1024 * 1024  # close a connection whose unsent output passes this

READING = "conn_read"
YIELDED = "conn_yield"
BLOCKED = "conn_write_blocked"
CLOSED = "conn_closed"

_EVENTS = {
    READING: selectors.EVENT_READ,
    YIELDED: 0,
    BLOCKED: selectors.EVENT_WRITE,
}


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
        "_wbuf",
        "_events",
        "last_cmd",
        "handle",
        "reqs_per_event",
        "session",
        "eof",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: Any,
        listen_addr: str,
        worker: Worker,
        handle: Callable[[Any, Any], None],
        parser: Parser,
        reqs_per_event: int,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.listen_addr = listen_addr
        self.worker = worker
        self.parser = parser
        self.out: list[bytes] = []
        self.counters: Counters = worker.counters
        self.state = READING
        self._wbuf = b""
        self._events = selectors.EVENT_READ
        self.last_cmd = time.monotonic()
        self.handle = handle
        self.reqs_per_event = reqs_per_event
        self.session: dict[str, Any] = {}  # per-connection state handlers may keep
        self.eof = False

    # ---- state ----

    def set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if state == CLOSED:
            return
        events = _EVENTS[state]
        if self._wbuf:
            events |= selectors.EVENT_WRITE
        self._set_events(events)
        if state == YIELDED:
            self.worker.ready.add(self)
        else:
            self.worker.ready.discard(self)

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

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close("read error")
            return
        if not data:
            self.eof = True
            self.process()  # answer what was received before the EOF
            while self.state == YIELDED:
                self.process()
            if self.state != CLOSED:
                self.flush()
                self.close("client closed")
            return
        self.counters.bytes_read += len(data)
        self.parser.feed(data)
        self.process()

    def on_writable(self) -> None:
        self._send(b"")
        if self.state == CLOSED:
            return
        if self.state == BLOCKED and len(self._wbuf) < OUTPUT_SOFT_CAP:
            # drained enough: go back to parsing what is buffered, then reading
            self.set_state(YIELDED)
        elif not self._wbuf:
            self._set_events(_EVENTS[self.state])

    def process(self) -> None:
        """Run up to ``-R`` buffered commands, then send their replies in one write."""
        parser = self.parser
        handle = self.handle
        budget = self.reqs_per_event
        try:
            while budget:
                cmd = parser.next_command()
                if cmd is NEED_DATA:
                    break
                if self.worker.trace:
                    log.log(TRACE, "<%d %r", self.fd, cmd)
                handle(cmd, self)
                budget -= 1
            else:
                self.counters.conn_yields += 1
        except CloseConnection as exc:
            self.flush()
            self.close(exc.reason)
            return
        except Shutdown as exc:
            self.flush()
            self.close("shutdown command")
            self.worker.request_shutdown(exc.graceful)
            return
        except Exception:
            log.exception("error handling a request from %s; closing the connection", self.peer)
            self.close("internal error")
            return
        if budget != self.reqs_per_event:
            self.last_cmd = time.monotonic()
        self.flush()
        if self.state == CLOSED:
            return
        if len(self._wbuf) >= OUTPUT_SOFT_CAP:
            self.set_state(BLOCKED)
        elif budget == 0:
            self.set_state(YIELDED)
        else:
            self.set_state(READING)

    def drain_step(self) -> None:
        """Stopping: read what the kernel already holds, answer every complete request in it.

        Stops early when the output is BLOCKED; the worker calls again once it drains.
        """
        while self.state != CLOSED:
            self._process_until_blocked()
            if self.state != READING:
                return
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close("read error")
                return
            if not data:
                self.eof = True
                return
            self.counters.bytes_read += len(data)
            self.parser.feed(data)

    def _process_until_blocked(self) -> None:
        self.process()
        while self.state == YIELDED:
            self.process()

    def flush(self) -> None:
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.worker.trace:
            log.log(TRACE, ">%d %r", self.fd, data[:512])
        self._send(data)

    def _send(self, data: bytes) -> None:
        if self._wbuf:
            data = self._wbuf + data if data else self._wbuf
            self._wbuf = b""
        if not data:
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close("write error")
            return
        self.counters.bytes_written += sent
        if sent < len(data):
            rest = data[sent:]
            if len(rest) > OUTPUT_HARD_CAP:
                self.close("output buffer over the hard cap")
                return
            self._wbuf = rest
            self._set_events(self._events | selectors.EVENT_WRITE)
        elif self._events & selectors.EVENT_WRITE and self.state != CLOSED:
            self._set_events(_EVENTS[self.state])

    @property
    def unsent(self) -> int:
        return len(self._wbuf)

    def close(self, reason: str = "") -> None:
        if self.state == CLOSED:
            return
        if self._events:
            try:
                self.worker.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self._events = 0
        self.state = CLOSED
        self.worker.ready.discard(self)
        try:
            self.sock.close()
        except OSError:
            pass
        self.worker.connection_closed(self, reason)
