"""mcached/protocol/datagram.py: memcached's response objects over UDP, message by message."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol import datagram as d

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
    assert d.flushes(c.Get([b"a"]), b"END\r\n")
    assert d.flushes(c.Gats(0, [b"a"]), b"END\r\n")
    assert d.flushes(c.MetaNoop(), b"MN\r\n")
    assert not d.flushes(c.Version(), b"VERSION 1.6.18\r\n")
    assert d.flushes(b.BinNoop(), b"frame")
    assert not d.flushes(b.BinGet(b"k", b.GETQ, 0, True), b"")


def test_messages() -> None:
    assert d.messages(7, b"STORED\r\n") == [bytes.fromhex("0007 0000 0001 0000") + b"STORED\r\n"]
    assert d.messages(0x0102, b"") == [bytes.fromhex("0102 0000 0000 0000")]
    big = bytes(range(256)) * 11  # 2816 bytes: 1392 + 1392 + 32
    got = d.messages(9, big)
    assert [m[:8] for m in got] == [
        bytes.fromhex("0009 0000 0003 0000"),
        bytes.fromhex("0009 0001 0003 0000"),
        bytes.fromhex("0009 0002 0003 0000"),
    ]
    assert b"".join(m[8:] for m in got) == big and [len(m) for m in got] == [1400, 1400, 40]


def test_transmit() -> None:
    # the head is sent even empty; skip ones at the head are dropped
    assert d.transmit([b"", b"V"]) == [b"", b"V"]
    assert d.transmit([None, b"", b"V"]) == [b"", b"V"]
    # after one sent, the empty and skip ones right behind it go unsent
    assert d.transmit([b"S", b"", None, b"", b"V"]) == [b"S", b"V"]
    assert d.transmit([b"", b"", b"V", b""]) == [b"", b"V"]
    assert d.transmit([None, None]) == []
    assert d.transmit([]) == []
