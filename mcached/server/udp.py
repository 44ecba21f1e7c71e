"""UDP (``-U``): memcached's datagram framing, served from the workers' own loops.

Each datagram starts with an 8-byte header (request id, sequence number, datagram count,
reserved; 16-bit big-endian each); a request must fit in one datagram. Its commands are
answered as memcached 1.6.18 answers them: one message per memcached response object (a
multi-key get makes one per key), each split into datagrams of at most 1,400 bytes with the
request id, its own sequence number from 0 and its own count, sent when memcached would
send them (`mcached.protocol.datagram`). Each worker polls its own ``SO_REUSEPORT`` copy of
each UDP socket (`Server.datagram_sockets`) and reads up to `READS_PER_WAKE` datagrams a wake.

Rules: as meaning-free as the TCP side: a datagram is parsed by the parser the listener
was given and each command served through the same dispatch table, with a `Datagram` in the
place of a connection (its `out` and its worker's `counters`). There is no connection state:
a datagram's commands are answered from that datagram alone, and nothing stays buffered.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mcached.errors import CloseConnection, Shutdown
from mcached.protocol.binary_parser import AnyParser
from mcached.protocol.datagram import Unit, flushes, messages, transmit, units
from mcached.protocol.outcomes import Pieces
from mcached.protocol.parser import NEED_DATA
from mcached.protocol.responses import UDP_MULTI_PACKET
from mcached.stats import Counters

log = logging.getLogger("mcached.server")

UDP_HEADER = struct.Struct("!HHHH")
READS_PER_WAKE = 16  # datagrams one worker reads per wake-up, so it gets back to its TCP


class Datagram:
    """What a handler writes to while one datagram is served (a connection's stand-in). Its
    reply is made whole before it is sent: a stream is drained into `out` after each command,
    and what was lent for the reply goes back once it is joined (`done`)."""

    __slots__ = ("out", "counters", "stream", "stacked", "_after")

    def __init__(self, counters: Counters) -> None:
        self.out: list[Any] = []
        self.counters = counters
        self.stream: Iterator[Any] | None = None
        self.stacked = 0  # response objects not transmitted yet (set before each command)
        self._after: list[Callable[[], None]] = []

    def after_sent(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    def receive(
        self, views: Any, nbytes: int, done: Any, abort: Callable[[], None] | None, tail: int = 2
    ) -> None:
        """A value the datagram does not hold whole: it never will, so nothing is stored and
        the rest of the datagram is not served."""
        if abort is not None:
            abort()
        raise CloseConnection("a value cut short by the end of its datagram")

    def take_stream(self) -> None:
        if self.stream is not None:
            self.out.extend(self.stream)
            self.stream = None

    def take(self) -> bytes:
        """What the commands served since the last call answered, joined (a copy: what was
        lent for it is given back only by `done`)."""
        self.take_stream()
        # a value lent in several chunks (`Pieces`) is joined too: a datagram is made whole
        reply = b"".join([bytes(p) if p.__class__ is Pieces else p for p in self.out])
        self.out.clear()
        return reply

    def done(self) -> None:
        """Everything lent to the replies given back."""
        if self.stream is not None:
            self.stream.close()  # type: ignore[attr-defined]
            self.stream = None
        for callback in self._after:
            callback()
        self._after.clear()


class UdpServer:
    """Serves the UDP sockets: `reader` gives each worker its callback for one socket."""

    def __init__(
        self,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        make_parser: Callable[[], AnyParser],
        reqs_per_event: int,
        on_shutdown: Callable[[bool], None],
    ) -> None:
        self.dispatch = dispatch  # command type -> its handler(command, datagram)
        self.make_parser = make_parser
        self.reqs_per_event = reqs_per_event
        self.on_shutdown = on_shutdown

    def reader(self, sock: socket.socket, counters: Counters) -> Callable[[], None]:
        """The callback a worker runs when `sock` is readable; `counters` are the worker's."""

        def serve() -> None:
            for _ in range(READS_PER_WAKE):
                try:
                    data, peer = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                self.serve_datagram(sock, data, peer, counters)

        return serve

    def serve_datagram(
        self, sock: socket.socket, data: bytes, peer: Any, counters: Counters
    ) -> None:
        if len(data) < UDP_HEADER.size:
            return
        req_id, seq, total, _ = UDP_HEADER.unpack_from(data)
        counters.bytes_read += len(data)
        datagram = Datagram(counters)
        pending: list[Unit] = []  # response objects memcached has not transmitted yet
        try:
            if seq != 0 or total != 1:
                pending.append(UDP_MULTI_PACKET)
            else:
                parser = self.make_parser()
                parser.feed(data[UDP_HEADER.size :])
                try:
                    per_event = self.reqs_per_event
                    for n in range(1, per_event * 50 + 1):
                        cmd = parser.next_command()
                        if cmd is NEED_DATA:
                            break
                        datagram.stacked = len(pending)
                        self.dispatch[type(cmd)](cmd, datagram)
                        reply = datagram.take()
                        pending += units(cmd, reply)
                        # memcached also transmits when a turn's -R requests are spent: after
                        # the 21st command of a datagram (-R 20), then after every 20th
                        if flushes(cmd, reply) or (n - 1) % per_event == 0 < n - 1:
                            self._send(sock, peer, req_id, pending, counters)
                            pending = []
                except CloseConnection:
                    pass
                except Shutdown as exc:
                    self.on_shutdown(exc.graceful)
                except Exception:
                    log.exception("error handling a UDP request from %s", peer)
                    return
                rest = datagram.take()  # a command cut short by a hang-up may have answered
                if rest:
                    pending.append(rest)
            self._send(sock, peer, req_id, pending, counters)
        finally:
            datagram.done()

    def _send(
        self, sock: socket.socket, peer: Any, req_id: int, pending: list[Unit], counters: Counters
    ) -> None:
        for unit in transmit(pending):
            for message in messages(req_id, unit):
                try:
                    sock.sendto(message, peer)
                except OSError:
                    return
                counters.bytes_written += len(message)
