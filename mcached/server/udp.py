"""UDP (``-U``): memcached's datagram framing, served from the workers' own loops.

Each datagram starts with an 8-byte header (request id, sequence number, datagram count,
reserved; 16-bit big-endian each); a request must fit in one datagram, and the reply is split
into datagrams of at most `UDP_MAX_PAYLOAD` bytes, each with the request id, its sequence
number and the total. Every worker polls every UDP socket (`Worker.add_reader`); the first
to wake reads up to `READS_PER_WAKE` datagrams.

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
from mcached.protocol.parser import NEED_DATA
from mcached.protocol.responses import UDP_MULTI_PACKET
from mcached.stats import Counters

log = logging.getLogger("mcached.server")

UDP_HEADER = struct.Struct("!HHHH")
UDP_MAX_PAYLOAD = 1400  # memcached's UDP_MAX_PAYLOAD_SIZE: header included
READS_PER_WAKE = 16  # datagrams one worker reads per wake-up, so it gets back to its TCP


class Datagram:
    """What a handler writes to while one datagram is served (a connection's stand-in). Its
    reply is made whole before it is sent: a stream is drained into `out` after each command,
    and what was lent for the reply goes back once it is joined (`done`)."""

    __slots__ = ("out", "counters", "stream", "_after")

    def __init__(self, counters: Counters) -> None:
        self.out: list[Any] = []
        self.counters = counters
        self.stream: Iterator[Any] | None = None
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

    def done(self) -> bytes:
        """The reply, joined; everything lent to it given back."""
        try:
            self.take_stream()
            return b"".join(self.out)
        finally:
            if self.stream is not None:
                self.stream.close()  # type: ignore[attr-defined]
            for callback in self._after:
                callback()


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
        if seq != 0 or total != 1:
            datagram.out.append(UDP_MULTI_PACKET)
        else:
            parser = self.make_parser()
            parser.feed(data[UDP_HEADER.size :])
            try:
                for _ in range(self.reqs_per_event * 50):
                    cmd = parser.next_command()
                    if cmd is NEED_DATA:
                        break
                    self.dispatch[type(cmd)](cmd, datagram)
                    datagram.take_stream()
            except CloseConnection:
                pass
            except Shutdown as exc:
                self.on_shutdown(exc.graceful)
            except Exception:
                log.exception("error handling a UDP request from %s", peer)
                datagram.done()
                return
        reply = datagram.done()
        if not reply:
            return
        size = UDP_MAX_PAYLOAD - UDP_HEADER.size
        chunks = [reply[i : i + size] for i in range(0, len(reply), size)]
        n = len(chunks)
        if n > 0xFFFF:
            return
        for i, chunk in enumerate(chunks):
            try:
                sock.sendto(UDP_HEADER.pack(req_id, i, n, 0) + chunk, peer)
                counters.bytes_written += len(chunk) + UDP_HEADER.size
            except OSError:
                return
