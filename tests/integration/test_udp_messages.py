"""UDP datagrams of several commands, answered message by message as memcached 1.6.18 does,
against both servers: each response object its own message (sequence numbers from 0, its own
datagram count), a multi-key get one object per key, empty objects sent or dropped as
memcached's transmission does (`mcached.protocol.datagram` says how)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest

from mcached.protocol import binary as b
from tests.conftest import HOST, KINDS, Server, free_port
from tests.wire import Conn

pytestmark = pytest.mark.integration

HEADER = struct.Struct("!HHHH")
R = b.request
VA = b"VALUE a 0 1\r\nx\r\n"
VC = b"VALUE c 0 2\r\nzz\r\n"
END = b"END\r\n"
BIG = bytes(range(256)) * 11 + b"y" * 184  # 3000 bytes
VBIG = b"VALUE big 0 3000\r\n" + BIG + b"\r\n"
NOOP = b.response(b.NOOP, 1)
NOOP2 = b.response(b.NOOP, 2)
NF = b.response(b.GET, 2, 1, b"Not found")

Message = tuple[int, int, bytes]  # sequence number, count, payload

CASES: list[tuple[str, bytes, list[Message]]] = [
    (
        "a store and gets, one message each; get a b: VALUE, then END",
        b"set s 0 0 1\r\n1\r\nget a\r\nget a b\r\n",
        [(0, 1, b"STORED\r\n"), (0, 1, VA + END), (0, 1, VA), (0, 1, END)],
    ),
    (
        "meta",
        b"mg a v\r\nmg b v\r\nmn\r\n",
        [(0, 1, b"VA 1\r\nx\r\n"), (0, 1, b"EN\r\n"), (0, 1, b"MN\r\n")],
    ),
    ("a first key missing: an empty message", b"get b a\r\n", [(0, 0, b""), (0, 1, VA + END)]),
    ("a miss in the middle: nothing", b"get a b c\r\n", [(0, 1, VA), (0, 1, VC + END)]),
    ("two misses", b"get b b\r\n", [(0, 0, b""), (0, 1, END)]),
    ("gat", b"gat 0 b a\r\n", [(0, 0, b""), (0, 1, VA + END)]),
    (
        "a get transmits at once",
        b"get a\r\nget b a\r\n",
        [(0, 1, VA + END), (0, 0, b""), (0, 1, VA + END)],
    ),
    (
        "mn transmits at once",
        b"mn\r\nget b a\r\n",
        [(0, 1, b"MN\r\n"), (0, 0, b""), (0, 1, VA + END)],
    ),
    ("mg waits", b"mg a v\r\nget b a\r\n", [(0, 1, b"VA 1\r\nx\r\n"), (0, 1, VA + END)]),
    ("version waits", b"version\r\nget b a\r\n", [(0, 1, b"VERSION 1.6.18\r\n"), (0, 1, VA + END)]),
    ("an error waits", b"bogus\r\nget b a\r\n", [(0, 1, b"ERROR\r\n"), (0, 1, VA + END)]),
    (
        "noreply: skipped",
        b"set q 0 0 1 noreply\r\nz\r\nget b a\r\n",
        [(0, 0, b""), (0, 1, VA + END)],
    ),
    ("a quiet miss: skipped", b"mg zz v q\r\nmn\r\n", [(0, 1, b"MN\r\n")]),
    ("a quiet miss, then a get", b"mg zz v q\r\nget b a\r\n", [(0, 0, b""), (0, 1, VA + END)]),
    (
        "a large value: its own sequence of three",
        b"get big a\r\n",
        [(0, 3, VBIG[:1392]), (1, 3, VBIG[1392:2784]), (2, 3, VBIG[2784:]), (0, 1, VA + END)],
    ),
    (
        "the 21st command spends -R 20: it transmits",
        b"mg a v\r\n" * 21 + b"get b a\r\n",
        [(0, 1, b"VA 1\r\nx\r\n")] * 21 + [(0, 0, b""), (0, 1, VA + END)],
    ),
    (
        "the 22nd waits",
        b"mg a v\r\n" * 22 + b"get b a\r\n",
        [(0, 1, b"VA 1\r\nx\r\n")] * 22 + [(0, 1, VA + END)],
    ),
    (
        "then every 20th",
        b"get a\r\n" + b"mg a v\r\n" * 40 + b"get b a\r\n",
        [(0, 1, VA + END)] + [(0, 1, b"VA 1\r\nx\r\n")] * 40 + [(0, 0, b""), (0, 1, VA + END)],
    ),
    (
        "every command of a datagram is served (mcached stopped at 1,000)",
        b"mg zz v q\r\n" * 1200 + b"mn\r\n",
        [(0, 1, b"MN\r\n")],
    ),
    (
        "a watch behind a reply still held: refused",
        b"version\r\nwatch\r\n",
        [
            (0, 1, b"VERSION 1.6.18\r\n"),
            (0, 1, b"ERROR cannot pipeline other commands before watch\r\n"),
        ],
    ),
    (
        "a metadump behind a skipped reply: refused",
        b"mg zz v q\r\nlru_crawler metadump all\r\n",
        [(0, 1, b"ERROR cannot pipeline other commands before metadump\r\n")],
    ),
    (
        "binary: a quiet miss leaves an empty message",
        R(b.NOOP, opaque=1) + R(b.GET, b"zz", opaque=2) + R(b.GETQ, b"zz", opaque=3),
        [(0, 1, NOOP), (0, 1, NF), (0, 0, b"")],
    ),
    (
        "binary: quiet ones wait, the first of them is sent empty",
        R(b.NOOP, opaque=1) + R(b.GETQ, b"zz") + R(b.GETQ, b"zz") + R(b.NOOP, opaque=1),
        [(0, 1, NOOP), (0, 0, b""), (0, 1, NOOP)],
    ),
    (
        "binary: a success waits, so a quiet miss behind it is dropped",
        R(b.VERSION, opaque=1) + R(b.GETQ, b"zz") + R(b.NOOP, opaque=2),
        [(0, 1, b.response(b.VERSION, 1, body=b"1.6.18")), (0, 1, NOOP2)],
    ),
    (
        "binary: a getk miss carries its key and waits",
        R(b.GETK, b"zz", opaque=1) + R(b.GETQ, b"zz") + R(b.NOOP, opaque=2),
        [(0, 1, b.response(b.GETK, 1, 1, b"zz", keylen=2)), (0, 1, NOOP2)],
    ),
    (
        "binary: an error transmits at once",
        R(b.DELETEQ, b"zz", opaque=1) + R(b.GETQ, b"zz") + R(b.NOOP, opaque=2),
        [(0, 1, b.response(b.DELETEQ, 1, 1, b"Not found")), (0, 0, b""), (0, 1, NOOP2)],
    ),
    (
        "binary: a quiet set",
        R(b.SETQ, b"k", b"v", struct.pack(">II", 0, 0)) + R(b.GET, b"zz", opaque=2),
        [(0, 0, b""), (0, 1, NF)],
    ),
]


@pytest.fixture(scope="module", params=KINDS)
def udp_server(
    request: pytest.FixtureRequest, module_server_factory: Callable[..., Server]
) -> Server:
    srv = module_server_factory(str(request.param), "-U", str(free_port(socket.SOCK_DGRAM)))
    with Conn(srv.address) as conn:
        for key, value in ((b"a", b"x"), (b"c", b"zz"), (b"big", BIG)):
            request_ = b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value)
            assert conn.request(request_) == b"STORED\r\n"
    return srv


def exchange(port: int, payload: bytes, expect: int, request_id: int = 0x0A0B) -> list[bytes]:
    """Send one datagram; the datagrams answered: `expect` of them, then 0.1 s of quiet."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(HEADER.pack(request_id, 0, 1, 0) + payload, (HOST, port))
        got = [s.recvfrom(65536)[0] for _ in range(expect)]
        s.settimeout(0.1)
        try:
            got.append(s.recvfrom(65536)[0])
        except TimeoutError:
            pass
        return got


@pytest.mark.parametrize(("name", "payload", "expected"), CASES, ids=[c[0] for c in CASES])
def test_messages(udp_server: Server, name: str, payload: bytes, expected: list[Message]) -> None:
    got = exchange(udp_server.udp_port, payload, len(expected))
    assert got == [HEADER.pack(0x0A0B, seq, n, 0) + body for seq, n, body in expected]


QUIT_CASES: list[tuple[str, bytes, list[Message]]] = [
    ("quit alone: an empty message", b"quit\r\n", [(0, 0, b"")]),
    (
        "quit after mn, which transmitted: an empty message",
        b"mn\r\nquit\r\n",
        [(0, 1, b"MN\r\n"), (0, 0, b"")],
    ),
    ("quit after a get: an empty message", b"get a\r\nquit\r\n", [(0, 1, VA + END), (0, 0, b"")]),
    (
        "quit behind a reply that waits: dropped, and nothing after it served",
        b"mg a v\r\nquit\r\nget a\r\n",
        [(0, 1, b"VA 1\r\nx\r\n")],
    ),
    ("binary quitq: an empty message", R(b.QUITQ), [(0, 0, b"")]),
    ("binary quit: its reply", R(b.QUIT, opaque=5) + R(b.NOOP), [(0, 1, b.response(b.QUIT, 5))]),
]


@pytest.mark.parametrize(
    ("name", "payload", "expected"), QUIT_CASES, ids=[c[0] for c in QUIT_CASES]
)
def test_quit(
    kind: str,
    server_factory: Callable[..., Server],
    name: str,
    payload: bytes,
    expected: list[Message],
) -> None:
    """A quit ends the datagram: memcached transmits what waits, the quit's own (empty)
    object among it, and serves nothing after. A server of its own for each case: memcached
    1.6.18's UDP connection keeps its close-after-write flag after a quit, so each later
    datagram its thread serves stops after its first transmission (not copied)."""
    srv = server_factory(kind, "-U", str(free_port(socket.SOCK_DGRAM)), "-t", "1")
    with Conn(srv.address) as conn:
        assert conn.request(b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
    got = exchange(srv.udp_port, payload, len(expected))
    assert got == [HEADER.pack(0x0A0B, seq, n, 0) + body for seq, n, body in expected]
