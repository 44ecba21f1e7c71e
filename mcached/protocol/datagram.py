"""How memcached 1.6.18 cuts a UDP datagram's replies into messages: its response objects.

memcached writes each reply into *response objects* (``mc_resp``) and sends each object as a
message of its own over UDP (``memcached.c`` ``transmit_udp``): datagrams of at most 1,400
bytes, each with the request id, the message's own sequence number (from 0) and its own
datagram count. So a datagram of several commands is answered with several messages, and
some commands make several objects:

* ``get``/``gets``/``gat``/``gats`` start one object per key (``proto_text.c``
  ``process_get_command``): a hit's ``VALUE`` block in its key's object, nothing in a miss's,
  ``END`` in the last key's. ``get a b`` with ``b`` missing is two messages, ``VALUE ...``
  and ``END``;
* a text command with nothing to say (``noreply``, a meta command's ``q``) has its object
  marked *skip*; a quiet binary command with nothing to say (a ``getq`` miss, a ``setq``)
  leaves an *empty* object.

What is sent of them depends on when memcached transmits. A get (any of the four) and ``mn``
transmit at once; of the binary commands, those memcached leaves in ``conn_mwrite``
(``proto_bin.c``): a noop, a quit, an SASL step that continues, and an error, but for a
getk/gatk miss (it carries the key) and an error behind which the request's body is
swallowed (a store too large or out of memory, an unknown command with a body); a binary
hit or success waits. So does the command that spends a
turn's ``-R`` requests (the 21st of a datagram with ``-R 20``, then every 20th: the server
counts); the rest wait for the next transmission. An object at the head of what waits is
sent even when empty (a message of just the header, count 0), while a skip object there is
dropped; once a message has gone, the empty and skip objects right behind it are dropped
unsent (``_transmit_post``). Hence ``get b a`` (``b`` missing) answers an empty message,
then ``VALUE a ... END``; but ``set ...`` then ``get b a`` answers ``STORED``, then
``VALUE a ... END``.

Nothing here needs a reply whole. `Splitter` takes a command's reply piece by piece (the
views of the cache's memory a handler lends, never joined) and gives each object once it is
complete, as its pieces (`Unit`); `Transmission` says which objects are sent, deciding each
from the ones before it alone, so an object can be sent as soon as it is made; `frames` cuts
an object's datagrams out of its pieces. So what a server holds for a reply is about one
object: one value, for a get. `units` is the whole-reply form; `flushes` tells whether
memcached transmits after a command. `mcached.server.udp` sends them.

Rules: pure, no sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.binary import BinaryReplies
from mcached.protocol.outcomes import Piece, Pieces

#: memcached's UDP_MAX_PAYLOAD_SIZE (header included) and what is left for the reply
MAX_PAYLOAD = 1400
HEADER_SIZE = 8
DATA_SIZE = MAX_PAYLOAD - HEADER_SIZE

#: a ``VALUE`` line longer than this is not one (a key is at most 250 bytes)
LINE_MAX = 1024

Buffer = bytes | bytearray | memoryview

_GETS = (c.Get, c.Gat)  # Gets and Gats are their subclasses
_END = b"END\r\n"


class Unit:
    """A response object: its bytes as the pieces they arrived in (views of the cache's
    memory stay views), and their length."""

    __slots__ = ("pieces", "nbytes")

    def __init__(self, pieces: list[Buffer], nbytes: int) -> None:
        self.pieces = pieces
        self.nbytes = nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces)


#: a response object memcached marks skip (nothing is ever sent for it)
SKIP = None

AnyUnit = Unit | None


def _is_text_get(cmd: Any) -> bool:
    return isinstance(cmd, _GETS) and not isinstance(cmd, BinaryReplies)


class Splitter:
    """A command's response objects, made as its reply arrives piece by piece (`feed`, then
    `end`). A multi-key text get's reply is cut per key: a ``VALUE`` block is an object of
    its own, a missed key an empty one, ``END`` goes with the last key's. Any other reply
    is one object (text: skip when empty).

    An object is given only once what follows it confirms the cut: a key's block and the
    misses before it once the next ``VALUE`` line parses, the last ones once ``END`` ends
    the reply. A reply that turns out not to be ``VALUE`` blocks then ``END`` goes as one
    object from what was still held (an error line: all of it); a split never needs more
    than one block held, so a get of many large values holds one of them.

    `low` is the first piece (counted from 0 in the order fed) that is not yet wholly in an
    object given out: what a server lent for the pieces before it may be let go once those
    objects are sent."""

    __slots__ = (
        "binary",
        "keys",
        "fed",
        "nbytes",
        "head",
        "_held_from",
        "_i",
        "_misses",
        "_prev",
        "_prev_len",
        "_cur",
        "_cur_len",
        "_left",
        "_line",
        "_line_from",
        "_ended",
        "_raw",
        "_raw_len",
    )

    def __init__(self, cmd: Any) -> None:
        self.binary = isinstance(cmd, BinaryReplies)
        keys = cmd.keys if _is_text_get(cmd) else None
        self.keys: list[bytes] | None = keys if keys is not None and len(keys) > 1 else None
        self.fed = 0  # pieces fed
        self.nbytes = 0  # bytes fed
        self.head = b""  # a binary reply's first bytes, for `flushes`
        self._held_from: int | None = None  # the first piece with bytes held
        self._i = 0  # the key whose block may come next
        self._misses = 0  # keys missed since the block held (or the start)
        self._prev: list[Buffer] | None = None  # the last whole block, held
        self._prev_len = 0
        self._cur: list[Buffer] = []  # the block arriving (its VALUE line first)
        self._cur_len = 0
        self._left = 0  # bytes of that block still to come
        self._line = bytearray()  # a line arriving (VALUE or END)
        self._line_from = 0
        self._ended = False  # END came: nothing more may
        # one object of everything from here on (not a split get, or it turned out not to be)
        self._raw: list[Buffer] | None = None if self.keys is not None else []
        self._raw_len = 0

    @property
    def low(self) -> int:
        return self.fed if self._held_from is None else self._held_from

    def feed(self, piece: Piece) -> list[AnyUnit]:
        """The objects `piece` completes (as confirmed: see the class)."""
        out: list[AnyUnit] = []
        views: list[memoryview] | tuple[Buffer] = (
            piece.views if isinstance(piece, Pieces) else (piece,)
        )
        for view in views:
            if len(view):
                self.nbytes += len(view)
                if self.binary and len(self.head) < b.HEADER_SIZE:
                    self.head += bytes(view[: b.HEADER_SIZE - len(self.head)])
                if self._held_from is None:
                    self._held_from = self.fed
                self._take(view, out)
        self.fed += 1
        return out

    def end(self) -> list[AnyUnit]:
        """The reply is whole: the objects still held."""
        out: list[AnyUnit] = []
        if self._raw is None:
            if self._ended:
                units: list[list[Buffer]] = [[] for _ in range(self._misses)]
                if self._prev is not None:
                    units.insert(0, self._prev)
                units[-1].append(_END)
                out = [Unit(u, sum(map(len, u))) for u in units]
                self._reset()
                return out
            self._break()  # cut short, or never END
        assert self._raw is not None
        if self._raw_len or self.binary:
            out.append(Unit(self._raw, self._raw_len))
        else:
            out.append(SKIP)
        self._reset()
        return out

    def cut(self) -> Splitter:
        """The reply was cut short: what is held, and what still comes, is one object."""
        if self._raw is None:
            self._break()
        return self

    def _reset(self) -> None:
        self._held_from = None
        self._prev = None
        self._raw = []
        self._raw_len = 0

    def _take(self, view: Buffer, out: list[AnyUnit]) -> None:
        pos = 0
        n = len(view)
        while pos < n:
            raw = self._raw
            if raw is not None:
                raw.append(view if not pos else memoryview(view)[pos:])
                self._raw_len += n - pos
                return
            if self._left:  # a block's value and CRLF
                k = min(self._left, n - pos)
                self._cur.append(view if k == n else memoryview(view)[pos : pos + k])
                self._cur_len += k
                self._left -= k
                pos += k
                if not self._left:  # whole: held until the next cut is confirmed
                    self._prev, self._prev_len = self._cur, self._cur_len
                    self._cur, self._cur_len = [], 0
                continue
            # a line: up to the first CRLF, at most LINE_MAX bytes (a small copy)
            line = self._line
            if not line:
                self._line_from = self.fed
            window = bytes(view[pos : pos + LINE_MAX - len(line) + 1])
            if line.endswith(b"\r") and window.startswith(b"\n"):
                end = 1
            else:
                end = window.find(b"\r\n")
                end = end + 2 if end >= 0 else -1
            if end < 0:
                line += window
                pos += len(window)
                if len(line) > LINE_MAX:
                    self._break()
                continue
            line += window[:end]
            pos += end
            self._line_done(out)

    def _line_done(self, out: list[AnyUnit]) -> None:
        line = bytes(self._line)
        keys = self.keys
        assert keys is not None
        if self._ended:
            self._break()  # more after END
            return
        while self._i < len(keys):
            if line.startswith(b"VALUE " + keys[self._i] + b" "):
                break
            self._i += 1
            self._misses += 1
        else:
            if line == _END:
                self._ended = True
                self._line = bytearray()
            else:
                self._break()
            return
        try:
            nbytes = int(line[:-2].split(b" ")[3])
        except (IndexError, ValueError):
            nbytes = -1
        if nbytes < 0:
            self._break()
            return
        # a block begins: what was held before it is confirmed
        if self._prev is not None:
            out.append(Unit(self._prev, self._prev_len))
            self._prev = None
        out += [Unit([], 0) for _ in range(self._misses)]
        self._misses = 0
        self._held_from = self._line_from
        self._cur, self._cur_len = [line], len(line)
        self._line = bytearray()
        self._left = nbytes + 2
        self._i += 1

    def _break(self) -> None:
        """Not VALUE blocks then END: everything held, and all that follows, one object."""
        raw: list[Buffer] = []
        if self._prev is not None:
            raw += self._prev
        raw += self._cur
        if self._ended:
            raw.append(_END)
        if self._line:
            raw.append(bytes(self._line))
        self._raw = raw
        self._raw_len = sum(map(len, raw))
        self._prev = None
        self._cur, self._cur_len, self._left = [], 0, 0
        self._line = bytearray()
        self._ended = False


def whole(cmd: Any, pieces: list[Piece]) -> AnyUnit | Literal[False]:
    """A reply all in `pieces` that is one object (any but a multi-key text get): that
    object, without a `Splitter`; False for one to split."""
    if _is_text_get(cmd) and len(cmd.keys) > 1:
        return False
    flat: list[Buffer] = []
    for piece in pieces:
        if isinstance(piece, Pieces):
            flat += piece.views
        else:
            flat.append(piece)
    nbytes = sum(map(len, flat))
    if nbytes or isinstance(cmd, BinaryReplies):
        return Unit(flat, nbytes)
    return SKIP


def closing(cmd: Any, pieces: list[Piece]) -> AnyUnit:
    """The object memcached sends as `cmd` closes the datagram's connection: a quit's (text
    quit's and quitq's empty: memcached transmits before it closes), SKIP for any other
    close (a value cut short sends nothing)."""
    if not isinstance(cmd, c.Quit):
        return SKIP
    unit = whole(cmd, pieces)
    assert unit is not False  # (a quit's reply is never split)
    return Unit([], 0) if unit is SKIP else unit


def units(cmd: Any, reply: bytes) -> list[bytes | None]:
    """The response objects memcached makes for `cmd`, which answered `reply` (whole)."""
    splitter = Splitter(cmd)
    made = splitter.feed(reply) + splitter.end()
    return [None if u is None else bytes(u) for u in made]


def flushes(cmd: Any, reply: list[Piece]) -> bool:
    """Whether memcached transmits what waits once `cmd` is served; `reply` is what it
    answered, or the start of it (a binary header's worth is read)."""
    if not isinstance(cmd, BinaryReplies):
        return type(cmd) in c.TRANSMITTING
    head = reply_head(reply)
    if len(head) < b.HEADER_SIZE:
        return False  # a quiet command that said nothing
    opcode = head[1]
    status = int.from_bytes(head[6:8], "big")
    if opcode == b.NOOP or opcode == b.QUIT or status == b.AUTH_CONTINUE:
        return True
    if status == b.SUCCESS or (status == b.KEY_ENOENT and head[2:4] != b"\0\0"):
        return False  # a hit, a success, a getk/gatk miss
    # an error: sent at once, unless memcached swallows the request's body behind it
    if isinstance(cmd, b.BinInvalid):
        return not cmd.swallows
    if isinstance(cmd, b.BinTooLarge):
        return False
    return not (isinstance(cmd, b.BinSet) and status == b.ENOMEM)


def reply_head(pieces: list[Piece]) -> bytes:
    """The first bytes of a reply written as `pieces`, a binary header's worth at most."""
    head = b""
    for piece in pieces:
        for view in piece.views if isinstance(piece, Pieces) else (piece,):
            head += bytes(view[: b.HEADER_SIZE - len(head)])
            if len(head) >= b.HEADER_SIZE:
                return head
    return head


class Transmission:
    """Which objects memcached sends when it transmits what waits: the head one, empty or
    not (skip ones at the head are dropped); after each one sent, the empty and skip ones
    right behind it are dropped. Each is decided from those before it, so `admit` may be
    asked as each object is made; `reset` at each of memcached's transmissions."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False  # one was sent since the last transmission

    def admit(self, unit: AnyUnit) -> bool:
        if unit is SKIP or (self.sent and not unit.nbytes):
            return False
        self.sent = True
        return True

    def reset(self) -> None:
        self.sent = False


def frames(request_id: int, unit: Unit) -> Iterator[list[Buffer]]:
    """One object's datagrams, each as the buffers to send: the 8-byte header (request id,
    sequence number, count, 0), then up to `DATA_SIZE` bytes of the object, cut out of its
    pieces (views, not copies); an empty object is the header alone, count 0. The count stops
    at 65,535 (memcached's), the sequence number wraps as its 16 bits do."""
    n = -(-unit.nbytes // DATA_SIZE)
    rid = request_id.to_bytes(2, "big")
    tail = min(n, 0xFFFF).to_bytes(2, "big") + b"\0\0"
    if not n:
        yield [rid + b"\0\0" + tail]
        return
    pieces = iter(unit.pieces)
    piece: Buffer = b""
    pos = 0
    for i in range(n):
        frame: list[Buffer] = [rid + (i & 0xFFFF).to_bytes(2, "big") + tail]
        room = DATA_SIZE
        while room:
            if pos == len(piece):
                nxt = next(pieces, None)
                if nxt is None:
                    break
                piece, pos = nxt, 0
                continue
            k = min(room, len(piece) - pos)
            frame.append(piece if k == len(piece) else memoryview(piece)[pos : pos + k])
            pos += k
            room -= k
        yield frame
