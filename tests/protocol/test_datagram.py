"""mcached/protocol/datagram.py: memcached's response objects over UDP, message by message."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol import datagram as d
from mcached.protocol.outcomes import Error, Pieces

pytestmark = pytest.mark.unit

VA = b"VALUE a 0 1\r\nx\r\n"
VC = b"VALUE c 0 3\r\nz\r\n\r\n"  # a value holding CRLF: cut by its length, not its lines


@pytest.mark.parametrize(
    ("cmd", "reply", "expected"),
    [
        (c.Get([b"a"]), VA + b"END\r\n", [VA + b"END\r\n"]),
        (c.Get([b"b"]), b"END\r\n", [b"END\r\n"]),
        (c.Get([b"a", b"b"]), VA + b"END\r\n", [VA, b"END\r\n"]),
        (c.Get([b"b", b"a"]), VA + b"END\r\n", [b"", VA + b"END\r\n"]),
        (c.Get([b"a", b"b", b"c"]), VA + VC + b"END\r\n", [VA, b"", VC + b"END\r\n"]),
        (c.Get([b"a", b"a"]), VA + VA + b"END\r\n", [VA, VA + b"END\r\n"]),
        (c.Gets([b"b", b"b"]), b"END\r\n", [b"", b"END\r\n"]),
        (c.Gat(0, [b"b", b"a"]), VA + b"END\r\n", [b"", VA + b"END\r\n"]),
        (
            c.Gats(0, [b"a", b"b"]),
            b"VALUE a 0 1 5\r\nx\r\nEND\r\n",
            [b"VALUE a 0 1 5\r\nx\r\n", b"END\r\n"],
        ),
        # not VALUE blocks then END: one object
        (
            c.Get([b"a", b"b"]),
            b"SERVER_ERROR out of memory\r\n",
            [b"SERVER_ERROR out of memory\r\n"],
        ),
        (c.Get([b"a", b"b"]), b"VALUE a 0 x\r\n", [b"VALUE a 0 x\r\n"]),
        (c.Get([b"a", b"b"]), b"VALUE a 0 1", [b"VALUE a 0 1"]),
        (c.Get([b"a", b"b"]), VA + b"END\r\nEND\r\n", [VA + b"END\r\nEND\r\n"]),
        # nothing to say: skip (text), empty (binary)
        (c.Set(b"k", 0, 0, b"v", True), b"", [None]),
        (c.Version(), b"VERSION 1.6.18\r\n", [b"VERSION 1.6.18\r\n"]),
        (b.BinGet(b"k", b.GETQ, 0, True), b"", [b""]),
        (b.BinGet(b"k", b.GET), b"frame", [b"frame"]),
    ],
)
def test_units(cmd: Any, reply: bytes, expected: list[bytes | None]) -> None:
    assert d.units(cmd, reply) == expected


def test_flushes() -> None:
    assert d.flushes(c.Get([b"a"]), [b"END\r\n"])
    assert d.flushes(c.Gats(0, [b"a"]), [b"END\r\n"])
    assert d.flushes(c.MetaNoop(), [b"MN\r\n"])
    assert not d.flushes(c.Version(), [b"VERSION 1.6.18\r\n"])


R = b.response
NF = R(b.GET, 0, b.KEY_ENOENT, b"Not found")
# (the command, its reply cut into pieces, whether memcached 1.6.18 transmits after it)
BINARY_FLUSHES: list[tuple[Any, list[Any], bool]] = [
    (b.BinNoop(), [R(b.NOOP, 0)], True),
    (b.BinQuit(), [R(b.QUIT, 0)], True),
    (b.BinGet(b"k", b.GETQ, 0, True), [], False),  # a quiet miss says nothing
    (b.BinGet(b"k", b.GET, 0, False), [NF[:5], Pieces([memoryview(NF[5:])])], True),
    (b.BinGet(b"k", b.GET, 0, False), [R(b.GET, 0, body=b"\0\0\0\0v", extlen=4)], False),
    (b.BinGetK(b"k", b.GETK, 0, False), [R(b.GETK, 0, b.KEY_ENOENT, b"k", keylen=1)], False),
    (b.BinVersion(), [R(b.VERSION, 0, body=b"1.6.18")], False),
    (b.BinDelete(b"k", b.DELETEQ, 0, True), [R(b.DELETEQ, 0, b.KEY_ENOENT, b"Not found")], True),
    (b.BinSet(b"k", 0, 0, b"v", b.SET, 0, False), [R(b.SET, 0, b.NOT_STORED)], True),
    (b.BinSet(b"k", 0, 0, b"v", b.SET, 0, False), [R(b.SET, 0, b.ENOMEM)], False),
    (b.BinTooLarge(b"set", b"k", b.SET), [R(b.SET, 0, b.E2BIG)], False),
    (b.BinInvalid(Error.UNKNOWN_COMMAND, 0x55), [R(0x55, 0, b.UNKNOWN_COMMAND)], True),
    (b.BinInvalid(Error.UNKNOWN_COMMAND, 0x55, 0, True), [R(0x55, 0, b.UNKNOWN_COMMAND)], False),
    (b.BinIncr(b"k", 1, 0, None, True, b.INCREMENT, 0, False, 0), [R(b.INCREMENT, 0)], False),
]


@pytest.mark.parametrize(("cmd", "reply", "expected"), BINARY_FLUSHES)
def test_flushes_binary(cmd: Any, reply: list[Any], expected: bool) -> None:
    assert d.flushes(cmd, reply) is expected


def sent(unit: d.Unit) -> list[bytes]:
    return [b"".join(frame) for frame in d.frames(7, unit)]


def test_frames() -> None:
    assert sent(d.Unit([b"STORED\r\n"], 8)) == [
        bytes.fromhex("0007 0000 0001 0000") + b"STORED\r\n"
    ]
    assert [b"".join(f) for f in d.frames(0x0102, d.Unit([], 0))] == [
        bytes.fromhex("0102 0000 0000 0000")
    ]
    big = bytes(range(256)) * 11  # 2816 bytes: 1392 + 1392 + 32
    for pieces in ([big], [big[:10], b"", memoryview(big)[10:2000], big[2000:]]):
        got = sent(d.Unit(list(pieces), len(big)))
        assert [m[:8] for m in got] == [
            bytes.fromhex("0007 0000 0003 0000"),
            bytes.fromhex("0007 0001 0003 0000"),
            bytes.fromhex("0007 0002 0003 0000"),
        ]
        assert b"".join(m[8:] for m in got) == big and [len(m) for m in got] == [1400, 1400, 40]
    # a piece that fills a datagram exactly is sent as it is, not copied
    frames = list(d.frames(7, d.Unit([big[:1392], big[1392:]], len(big))))
    assert frames[0][1] is not None and len(frames[0]) == 2 and frames[0][1] == big[:1392]


def test_frames_count_stops_at_65535() -> None:
    n = 0x10000 + 2  # datagrams: the count stops, the sequence number wraps
    unit = d.Unit([b"x" * (d.DATA_SIZE * n)], d.DATA_SIZE * n)
    heads = [f[0] for f in d.frames(1, unit)]
    assert len(heads) == n
    assert heads[0] == bytes.fromhex("0001 0000 ffff 0000")
    assert heads[-1] == bytes.fromhex("0001 0001 ffff 0000")


def transmit(pending: list[bytes | None]) -> list[bytes]:
    t = d.Transmission()
    units = [None if p is None else d.Unit([p], len(p)) for p in pending]
    return [bytes(u) for u in units if t.admit(u) and u is not None]


def test_transmit() -> None:
    # the head is sent even empty; skip ones at the head are dropped
    assert transmit([b"", b"V"]) == [b"", b"V"]
    assert transmit([None, b"", b"V"]) == [b"", b"V"]
    # after one sent, the empty and skip ones right behind it go unsent
    assert transmit([b"S", b"", None, b"", b"V"]) == [b"S", b"V"]
    assert transmit([b"", b"", b"V", b""]) == [b"", b"V"]
    assert transmit([None, None]) == []
    assert transmit([]) == []
    # a transmission starts afresh
    t = d.Transmission()
    assert t.admit(d.Unit([b"S"], 1)) and not t.admit(d.Unit([], 0))
    t.reset()
    assert t.admit(d.Unit([], 0))


def fed(cmd: Any, pieces: list[Any]) -> list[bytes | None]:
    splitter = d.Splitter(cmd)
    made = [u for p in pieces for u in splitter.feed(p)] + splitter.end()
    assert splitter.low == splitter.fed == len(pieces)
    return [None if u is None else bytes(u) for u in made]


SPLIT_CASES = [
    (c.Get([b"a", b"b", b"c"]), VA + VC + b"END\r\n"),
    (c.Get([b"b", b"a"]), VA + b"END\r\n"),
    (c.Get([b"a", b"b"]), VA + b"END\r\n"),
    (c.Get([b"a", b"a", b"a"]), VA + VA + VA + b"END\r\n"),
    (c.Gets([b"a", b"c"]), b"VALUE a 0 1 5\r\nx\r\nVALUE c 0 3 6\r\nz\r\n\r\nEND\r\n"),
    (c.Get([b"a", b"b"]), b"SERVER_ERROR out of memory\r\n"),
    (c.Get([b"a", b"b"]), VA + b"END\r\nEND\r\n"),
    (c.Get([b"a", b"b"]), VA + b"END\r"),
    (c.Get([b"a", b"b"]), VA + b"VALUE"),
    (c.Get([b"a", b"b"]), VA + b"VALUE b 0 5\r\nab"),
    (c.Get([b"a", b"b"]), b"VALUE a 0 -1\r\n\r\nEND\r\n"),
    (c.Get([b"a", b"b"]), b"VALUE a " + b"9" * 2000 + b"\r\nEND\r\n"),
    (c.Get([b"a", b"b"]), b""),
    (b.BinGet(b"k", b.GETQ, 0, True), b""),
    (b.BinGet(b"k", b.GET), b"frame"),
    (c.Version(), b"VERSION 1.6.18\r\n"),
]


@pytest.mark.parametrize(("cmd", "reply"), SPLIT_CASES)
def test_splitter_piece_by_piece(cmd: Any, reply: bytes) -> None:
    """Whole, byte by byte, as views, and as one `Pieces`: the same objects."""
    whole = d.units(cmd, reply)
    assert fed(cmd, [reply]) == whole
    assert fed(cmd, [reply[i : i + 1] for i in range(len(reply))]) == whole
    views = [memoryview(reply)[i : i + 3] for i in range(0, len(reply), 3)]
    assert fed(cmd, views) == whole
    assert fed(cmd, [Pieces(views)]) == whole


def test_splitter_gives_each_block_once_the_next_is_confirmed() -> None:
    """A get of several large values holds one of them: each goes once the next VALUE line
    parses; the pieces before `low` are in objects given out."""
    value = b"v" * 5000
    splitter = d.Splitter(c.Get([b"a", b"b", b"c"]))
    head = b"VALUE a 0 5000\r\n"
    assert splitter.feed(head) == [] and splitter.feed(value) == []
    assert splitter.feed(b"\r\n") == [] and splitter.low == 0  # a's block, held
    made = splitter.feed(b"VALUE c 0 5000\r\n")
    assert [bytes(u) for u in made if u is not None] == [head + value + b"\r\n", b""]
    assert splitter.low == 3  # c's line: held
    made = splitter.feed(Pieces([memoryview(value)]))
    assert made == [] and splitter.feed(b"\r\nEND\r\n") == []
    [last] = splitter.end()
    assert last is not None and bytes(last) == b"VALUE c 0 5000\r\n" + value + b"\r\nEND\r\n"
    assert last.pieces[1] is not value  # views of what was fed, not copies
    assert splitter.low == splitter.fed == 6


def test_splitter_cut_short() -> None:
    """A command cut short: what was held, and what still comes, one object."""
    splitter = d.Splitter(c.Get([b"a", b"b"]))
    assert splitter.feed(VA) == []
    splitter.cut()
    assert splitter.feed(b"rest") == []
    assert [bytes(u) for u in splitter.end() if u is not None] == [VA + b"rest"]
    assert d.Splitter(c.Version()).cut().end() == [None]


def test_whole() -> None:
    """A reply that is one object, taken as it is: the same object `units` makes."""
    value = memoryview(b"v" * 5000)
    unit = d.whole(c.Get([b"a"]), [b"VALUE a 0 5000\r\n", Pieces([value]), b"\r\nEND\r\n"])
    assert isinstance(unit, d.Unit) and unit.pieces[1] is value and unit.nbytes == 5023
    assert d.whole(c.Set(b"k", 0, 0, b"v", True), []) is d.SKIP
    empty = d.whole(b.BinGet(b"k", b.GETQ, 0, True), [])
    assert isinstance(empty, d.Unit) and empty.nbytes == 0
    assert d.whole(c.Get([b"a", b"b"]), [b"END\r\n"]) is False
