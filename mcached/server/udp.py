"""UDP (``-U``): memcached's datagram framing, served from the workers' own loops.

Each datagram starts with an 8-byte header (request id, sequence number, datagram count,
reserved; 16-bit big-endian each); a request must fit in one datagram. Its commands are
answered as memcached 1.6.18 answers them: one message per memcached response object (a
multi-key get makes one per key), each split into datagrams of at most 1,400 bytes with the
request id, its own sequence number from 0 and its own count, as memcached would send them
(`mcached.protocol.datagram`). Each worker polls its own ``SO_REUSEPORT`` copy of each UDP
socket (`Server.datagram_sockets`) through a `UdpReader`.

Memory: a reply is never made whole. The pieces a handler writes (views of the cache's
memory it lends, under a pin) are cut into response objects as they come (`Splitter`), and
each object's datagrams are cut out of its pieces and sent as soon as it is complete
(`frames`); what was lent for an object is let go once it is sent. A multiget's stream is
pulled only when everything before it went out. So serving a datagram holds about one
object (one value, for a get) whatever it asks: ``get a a a ...`` of a 1 MB value used to
join a copy of the whole reply (2 MB per key).

Fairness: a datagram is served in turns, as memcached serves one (``drive_machine``: a turn
ends when its ``-R`` requests are spent, after the 21st command with ``-R 20`` and then every
20th, and memcached goes back to its other connections). A turn here also ends once it sent
`WAKE_BYTES`; the worker then serves its other sockets and comes back (`UdpReader` says it
has more to do). A wake reads new datagrams while its turn has room, up to `READS_PER_WAKE`.

Rules: as meaning-free as the TCP side: a datagram is parsed by the parser the listener
was given and each command served through the same dispatch table, with a `Datagram` in the
place of a connection (its `out` and its worker's `counters`). There is no connection state:
a datagram's commands are answered from that datagram alone, and nothing stays buffered.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mcached.addr import ListenSpec
from mcached.errors import CloseConnection, Shutdown, StartWatch
from mcached.protocol.binary_parser import AnyParser
from mcached.protocol.datagram import (
    DATA_SIZE,
    AnyUnit,
    Splitter,
    Transmission,
    closing,
    flushes,
    frames,
    whole,
)
from mcached.protocol.outcomes import GIVE_WAY
from mcached.protocol.parser import NEED_DATA
from mcached.stats import Counters

log = logging.getLogger("mcached.server")

UDP_HEADER = struct.Struct("!HHHH")
READS_PER_WAKE = 16  # datagrams one worker reads per wake-up, so it gets back to its TCP
#: reply bytes one turn sends before the worker serves its other sockets (~190 datagrams:
#: a millisecond or two)
WAKE_BYTES = 256 * 1024
_NO_ANCILLARY: list[Any] = []


class Datagram:
    """What a handler writes to while one datagram is served (a connection's stand-in).
    The server takes each command's pieces out of `out` (and its `stream`) as it sends
    them; `after_sent` callbacks run once the pieces written before them, and the object
    the next piece written after them belongs to, are sent (`release`)."""

    __slots__ = ("out", "counters", "stream", "stream_held", "stacked", "taken", "_after")
    datagram = True  # (`Session.datagram`)

    def __init__(self, counters: Counters) -> None:
        self.out: list[Any] = []
        self.counters = counters
        self.stream: Iterator[Any] | None = None
        self.stream_held = 0  # (a datagram's request is bounded by its size: not checked)
        self.stacked = 0  # response objects not transmitted yet (set before each command)
        self.taken = 0  # pieces taken out of `out` and `stream` so far
        # [the piece the callback goes with (its number), callback], in order
        self._after: deque[tuple[int, Callable[[], None]]] = deque()

    def after_sent(self, callback: Callable[[], None]) -> None:
        # A handler lends a value just before it writes it (the next piece is its VALUE
        # line: the value is in that piece's object), or just after (a one-key reply, or a
        # streamed multiget, which ties each value's release to the piece after it: it then
        # goes with the next object, or at the command's end)
        self._after.append((self.taken + len(self.out), callback))

    def receive(
        self,
        views: Any,
        nbytes: int,
        done: Any,
        abort: Callable[[], None] | None,
        tail: int = 2,
        more: Any = None,
    ) -> None:
        """A value the datagram does not hold whole: it never will, so nothing is stored and
        the rest of the datagram is not served."""
        if abort is not None:
            abort()
        raise CloseConnection("a value cut short by the end of its datagram")

    def release(self, low: int | None = None) -> None:
        """Let go of what was lent for the pieces before piece number `low` (all: None)."""
        after = self._after
        while after and (low is None or after[0][0] < low):
            after.popleft()[1]()

    def done(self) -> None:
        """Everything lent to the replies given back."""
        if self.stream is not None:
            self.stream.close()  # type: ignore[attr-defined]
            self.stream = None
        self.out.clear()
        self.release()


class _Sender:
    """One datagram's replies on their way: which objects go (memcached's transmissions),
    each cut into datagrams and sent at once."""

    __slots__ = (
        "sock",
        "peer",
        "head",
        "one",
        "empty",
        "counters",
        "reader",
        "transmission",
        "stacked",
        "lost",
    )

    def __init__(
        self, sock: socket.socket, peer: Any, req_id: int, counters: Counters, reader: UdpReader
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.head = req_id
        rid = req_id.to_bytes(2, "big")
        self.one = rid + b"\0\0\0\x01\0\0"  # the header of an object of one datagram
        self.empty = rid + b"\0\0\0\0\0\0"  # ... of an empty one
        self.counters = counters
        self.reader = reader
        self.transmission = Transmission()
        self.stacked = 0  # objects since memcached's last transmission (its resp_has_stack)
        self.lost = False  # a send failed: the rest of this transmission is not sent

    def send(self, unit: AnyUnit) -> Iterator[None]:
        """Send `unit` if memcached would; yields when the turn's bytes are spent."""
        self.stacked += 1
        if not self.transmission.admit(unit) or self.lost:
            return
        assert unit is not None
        if unit.nbytes <= DATA_SIZE:  # one datagram (most replies): `frames`, inlined
            self._put([self.one if unit.nbytes else self.empty, *unit.pieces])
            return
        reader = self.reader
        for frame in frames(self.head, unit):
            if not self._put(frame):
                return
            if reader.turn_bytes >= WAKE_BYTES:
                yield

    def _put(self, frame: list[Any]) -> bool:
        """One datagram out, counted; False if it failed (the rest of the transmission is
        then not sent)."""
        try:
            sent = self.sock.sendmsg(frame, _NO_ANCILLARY, 0, self.peer)
        except OSError:
            self.lost = True
            return False
        self.counters.bytes_written += sent
        self.reader.turn_bytes += sent
        return True

    def transmitted(self) -> None:
        """memcached transmits here: what follows starts a new transmission."""
        self.transmission.reset()
        self.stacked = 0
        self.lost = False


class UdpReader:
    """A worker's service of one UDP socket. Called when the socket is readable, or again
    once it answered True (it stopped at the end of a turn with more to do)."""

    __slots__ = ("server", "sock", "counters", "job", "turn_bytes", "turn_cmds", "protocol")

    def __init__(
        self, server: UdpServer, sock: socket.socket, counters: Counters, protocol: str = ""
    ) -> None:
        self.server = server
        self.sock = sock
        self.protocol = protocol  # the -l entry's proto[...] ("": the daemon's)
        self.counters = counters
        self.job: Iterator[None] | None = None  # the datagram being served, between turns
        self.turn_bytes = 0
        self.turn_cmds = 0

    def __call__(self) -> bool:
        self.turn_bytes = self.turn_cmds = 0
        per_event = self.server.reqs_per_event
        reads = 0
        while True:
            job = self.job
            if job is None:
                if (
                    reads >= READS_PER_WAKE
                    or self.turn_cmds >= per_event
                    or self.turn_bytes >= WAKE_BYTES
                ):
                    return False  # the socket is still readable: the poller says so again
                try:
                    data, peer = self.sock.recvfrom(65536)
                except OSError:  # BlockingIOError: nothing more
                    return False
                reads += 1
                job = self.job = self.server.serve(self.sock, data, peer, self.counters, self)
            if self._turn(job):
                return True

    def resume(self) -> bool:
        """A turn of the datagram half served (none read); whether it still has more."""
        job = self.job
        if job is None:
            return False
        self.turn_bytes = self.turn_cmds = 0
        return self._turn(job)

    def _turn(self, job: Iterator[None]) -> bool:
        try:
            next(job)
        except StopIteration:
            self.job = None
            return False
        return True

    def abandon(self) -> None:
        """The worker stops: the datagram half served is dropped, what it was lent let go."""
        job, self.job = self.job, None
        if job is not None:
            job.close()  # type: ignore[attr-defined]


class UdpServer:
    """Serves the UDP sockets: `reader` gives each worker its callback for one socket."""

    def __init__(
        self,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        make_parser: Callable[[str], AnyParser],
        reqs_per_event: int,
        on_shutdown: Callable[[bool], None],
    ) -> None:
        self.dispatch = dispatch  # command type -> its handler(command, datagram)
        self.make_parser = make_parser
        self.reqs_per_event = reqs_per_event
        self.on_shutdown = on_shutdown

    def reader(self, sock: socket.socket, counters: Counters, spec: ListenSpec) -> UdpReader:
        """The callback a worker runs when `sock` (bound from `spec`) is readable;
        `counters` are the worker's."""
        return UdpReader(self, sock, counters, spec.protocol)

    def serve(
        self, sock: socket.socket, data: bytes, peer: Any, counters: Counters, reader: UdpReader
    ) -> Iterator[None]:
        """Serve one datagram; yields at the end of each turn (see the module docstring)."""
        if len(data) <= UDP_HEADER.size:
            return  # memcached neither serves nor counts a datagram of no request
        req_id, _, total, _ = UDP_HEADER.unpack_from(data)
        counters.bytes_read += len(data)
        if total != 1:  # part of a request of several datagrams: dropped unanswered, as
            return  # memcached 1.6 drops it (it reads no sequence number)
        sender = _Sender(sock, peer, req_id, counters, reader)
        datagram = Datagram(counters)
        try:
            yield from self._serve(datagram, data, sender, reader)
        finally:
            datagram.done()  # also when the worker stops between two turns

    def _serve(
        self, datagram: Datagram, data: bytes, sender: _Sender, reader: UdpReader
    ) -> Iterator[None]:
        parser = self.make_parser(reader.protocol)
        parser.feed(data[UDP_HEADER.size :])
        per_event = self.reqs_per_event
        dispatch = self.dispatch
        splitter: Splitter | None = None
        cmd = None
        try:
            for n in itertools.count(1):  # every command of the datagram, as memcached
                cmd = parser.next_command()
                if cmd is NEED_DATA:
                    break
                datagram.stacked = sender.stacked
                splitter = None
                dispatch[type(cmd)](cmd, datagram)
                unit = whole(cmd, datagram.out) if datagram.stream is None else False
                if unit is False:
                    splitter = Splitter(cmd)
                    yield from self._reply(datagram, splitter, sender)
                    reply: list[Any] = [splitter.head]
                else:
                    # most commands: one object, all written at once
                    datagram.taken += len(datagram.out)
                    datagram.out.clear()
                    yield from sender.send(unit)
                    datagram.release()
                    reply = [] if unit is None else unit.pieces
                reader.turn_cmds += 1
                # memcached also transmits when a turn's -R requests are spent: after the
                # 21st command of a datagram (-R 20), then after every 20th; then it serves
                # its other connections
                turn_spent = (n - 1) % per_event == 0 < n - 1
                if flushes(cmd, reply) or turn_spent:
                    sender.transmitted()
                if turn_spent:
                    datagram.counters.conn_yields += 1  # as memcached counts its yield
                    yield
            splitter = None
        except CloseConnection:
            if splitter is None:  # a quit's object goes, even empty; then nothing more
                unit = closing(cmd, datagram.out)
                datagram.taken += len(datagram.out)
                datagram.out.clear()
                yield from sender.send(unit)
                datagram.release()
        except Shutdown as exc:
            self.on_shutdown(exc.graceful)
        except StartWatch:
            # memcached makes the connection a watcher, which a datagram cannot be: nothing
            # of the datagram is sent, nor served after it (and nothing logged: any sender
            # could fill the log)
            return
        except Exception:
            log.exception("error handling a UDP request from %s", sender.peer)
            return
        # a command cut short by a hang-up may have answered: what it wrote and was not
        # sent yet goes as one object
        rest = Splitter(None) if splitter is None else splitter.cut()
        try:
            yield from self._reply(datagram, rest, sender)
        except Exception:
            log.exception("error handling a UDP request from %s", sender.peer)

    @staticmethod
    def _reply(datagram: Datagram, splitter: Splitter, sender: _Sender) -> Iterator[None]:
        """A command's reply sent object by object as its pieces come: those in `out`, then
        those of its stream, pulled one at a time once everything before went out."""
        out = datagram.out
        base = datagram.taken - splitter.fed  # the number of the command's first piece
        while True:
            if out:
                for piece in out:
                    made = splitter.feed(piece)
                    datagram.taken += 1
                    if made:
                        for unit in made:
                            yield from sender.send(unit)
                        datagram.release(base + splitter.low)
                out.clear()
            stream = datagram.stream
            if stream is None:
                break
            piece = next(stream, None)  # what it lends is numbered as this piece
            if piece is None:
                datagram.stream = None
                break
            if piece is GIVE_WAY:
                # a walk gives way (or waits for another one, a TCP client's, to end): the
                # turn ends here and the worker serves its other sockets, as a connection's
                # pull stops at it (asked again at once, the walk waited for never went on)
                yield
                continue
            out.append(piece)
        for unit in splitter.end():
            yield from sender.send(unit)
        datagram.release()
