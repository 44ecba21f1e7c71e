"""The binary protocol on the wire, frame by frame, against mcached and memcached 1.6.18.

Every exchange is sent whole and byte by byte, and the responses are compared field by field
with what memcached answers (the same expectations pass against both servers): magic, opcode,
status, key and extras lengths, opaque, body, and whether a CAS is set (the two servers
number CAS values differently). A VERSION with a marker opaque ends each exchange that keeps
the connection open, so a test reads exactly what was answered, without waiting.

One server of each kind serves a whole module (each test its own keys); the tests that
flush, count or restart have their own.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mcached.protocol import binary as b
from tests.conftest import (
    HOST,
    KINDS,
    Server,
    _start_mcached,
    _start_mcached_procs,
    _start_memcached,
    _stop_mcached,
    _stop_mcached_procs,
    _stop_memcached,
    free_port,
)

pytestmark = pytest.mark.integration

R = b.request
SE = struct.Struct(">II").pack
INCR = struct.Struct(">QQI").pack
EXP = struct.Struct(">I").pack
END = 0xFEEDFACE  # the opaque of the NOOP that closes an exchange


def _start(kind: str, *args: str) -> Server:
    return _start_mcached(list(args)) if kind == "mcached" else _start_memcached(list(args))


def _stop(srv: Server) -> None:
    if srv.kind == "mcached":
        _stop_mcached(srv)
    else:
        _stop_memcached(srv)


@pytest.fixture(scope="module", params=KINDS)
def srv(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = _start(request.param)
    yield s
    _stop(s)


Frame = tuple[
    int, int, int, int, int, bool, bytes
]  # opcode, status, keylen, extlen, opaque, cas set, body


def frames(data: bytes) -> list[Frame]:
    out: list[Frame] = []
    i = 0
    while i + 24 <= len(data):
        magic, op, keylen, extlen, _, status, bodylen, opaque, cas = b.HEADER.unpack_from(data, i)
        assert magic == 0x81, data[i:]
        out.append((op, status, keylen, extlen, opaque, cas != 0, data[i + 24 : i + 24 + bodylen]))
        i += 24 + bodylen
    assert i == len(data), f"trailing bytes {data[i:]!r}"
    return out


def send(sock: socket.socket, data: bytes, step: int | None) -> None:
    if step is None:
        sock.sendall(data)
        return
    for i in range(0, len(data), step):
        sock.sendall(data[i : i + step])


def read_until(sock: socket.socket, done: Callable[[bytes], bool], timeout: float = 5.0) -> bytes:
    buf = b""
    sock.settimeout(timeout)
    while not done(buf):
        chunk = sock.recv(65536)
        if not chunk:
            buf += b"<EOF>"
            break
        buf += chunk
    return buf


MARKER = b.response(b.VERSION, END, body=b"1.6.18")


def _ends_with_marker(buf: bytes) -> bool:
    return buf.endswith(MARKER)


def exchange(address: tuple[str, int], data: bytes, step: int | None = None) -> list[Frame]:
    """Send `data` then the marker (a VERSION, which SASL lets through too); the frames
    answered before the marker's."""
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send(sock, data + R(b.VERSION, opaque=END), step)
        got = read_until(sock, _ends_with_marker)
    assert _ends_with_marker(got), got
    return frames(got[: -len(MARKER)])


def hangup(address: tuple[str, int], data: bytes, step: int | None = None) -> list[Frame]:
    """Send `data`; the frames answered before the server closed the connection.

    The server may close before the last of `data` has reached it (sent one byte at a time,
    on a loaded machine): then its close is a reset, not a FIN (TCP resets a connection
    closed with bytes unread, and answers bytes that reach a closed one with a reset), and
    sending the rest may fail. The connection has ended either way, after the frames it
    answered, which came before in order and are still read from the socket first. A server
    that does not close within the deadline fails the test (TimeoutError)."""
    with socket.create_connection(address) as sock:
        try:
            send(sock, data, step)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed already: what it answered is still to be read
        got = b""
        sock.settimeout(30.0)  # a deadline for a loaded machine: a closed socket reads at once
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    return frames(got)


STEPS = pytest.mark.parametrize("step", [None, 1], ids=["whole", "bytewise"])


def ok(op: int, opaque: int = 0, body: bytes = b"", cas: bool = False, extlen: int = 0) -> Frame:
    return (op, 0, 0, extlen, opaque, cas, body)


def err(op: int, status: int, opaque: int = 0) -> Frame:
    return (op, status, 0, 0, opaque, False, b.MESSAGES[status])


def hit(op: int, flags: int, value: bytes, key: bytes = b"", opaque: int = 0) -> Frame:
    return (op, 0, len(key), 4, opaque, True, struct.pack(">I", flags) + key + value)


# ---- retrieval and storage ----


@STEPS
def test_version_and_noop_echo_the_opaque(srv: Server, step: int | None) -> None:
    got = exchange(srv.address, R(b.VERSION, opaque=7) + R(b.NOOP, opaque=8), step)
    assert got == [ok(b.VERSION, 7, b"1.6.18"), ok(b.NOOP, 8)]


@STEPS
def test_set_then_every_get(srv: Server, step: int | None) -> None:
    k = f"g{step}".encode()
    got = exchange(
        srv.address,
        R(b.SET, k, b"hello", SE(19, 0), opaque=1)
        + R(b.GET, k, opaque=2)
        + R(b.GETK, k, opaque=3)
        + R(b.GETQ, k, opaque=4)
        + R(b.GETKQ, k, opaque=5),
        step,
    )
    assert got == [
        ok(b.SET, 1, cas=True),
        hit(b.GET, 19, b"hello", opaque=2),
        hit(b.GETK, 19, b"hello", k, 3),
        hit(b.GETQ, 19, b"hello", opaque=4),
        hit(b.GETKQ, 19, b"hello", k, 5),
    ]


@STEPS
def test_misses(srv: Server, step: int | None) -> None:
    k = b"missing-key"
    got = exchange(
        srv.address,
        R(b.GET, k, opaque=1) + R(b.GETK, k, opaque=2) + R(b.GETQ, k) + R(b.GETKQ, k),
        step,
    )
    assert got == [err(b.GET, 1, 1), (b.GETK, 1, len(k), 0, 2, False, k)]


@STEPS
def test_store_outcomes(srv: Server, step: int | None) -> None:
    k = f"s{step}".encode()
    nope = f"nope{step}".encode()
    got = exchange(
        srv.address,
        R(b.ADD, k, b"1", SE(0, 0))
        + R(b.ADD, k, b"2", SE(0, 0))
        + R(b.ADDQ, k, b"2", SE(0, 0))
        + R(b.REPLACE, nope, b"2", SE(0, 0))
        + R(b.REPLACEQ, k, b"3", SE(0, 0))
        + R(b.APPEND, k, b"4")
        + R(b.PREPENDQ, k, b"0")
        + R(b.APPEND, nope, b"x")
        + R(b.GET, k),
        step,
    )
    assert got == [
        ok(b.ADD, cas=True),
        err(b.ADD, 2),
        err(b.ADDQ, 2),
        err(b.REPLACE, 1),
        ok(b.APPEND, cas=True),
        err(b.APPEND, 5),
        hit(b.GET, 0, b"034"),
    ]


def test_cas(srv: Server) -> None:
    k = b"casbin"
    first = exchange(srv.address, R(b.SET, k, b"v1", SE(0, 0)) + R(b.GET, k))
    with socket.create_connection(srv.address) as sock:
        sock.sendall(R(b.GET, k))
        cas = b.HEADER.unpack(read_until(sock, lambda buf: len(buf) >= 30)[:24])[-1]
    got = exchange(
        srv.address,
        R(b.SET, k, b"v2", SE(0, 0), cas=cas + 1000)
        + R(b.SET, k, b"v2", SE(0, 0), cas=cas)
        + R(b.SET, k, b"v3", SE(0, 0), cas=cas)
        + R(b.ADD, b"cas-missing", b"v", SE(0, 0), cas=5)
        + R(b.DELETE, k, cas=cas)
        + R(b.GET, k),
    )
    assert first[0][:2] == (b.SET, 0)
    assert got == [
        err(b.SET, 2),
        ok(b.SET, cas=True),
        err(b.SET, 2),
        err(b.ADD, 1),
        err(b.DELETE, 2),
        hit(b.GET, 0, b"v2"),
    ]


@STEPS
def test_incr_decr(srv: Server, step: int | None) -> None:
    n = f"n{step}".encode()
    m = f"m{step}".encode()
    got = exchange(
        srv.address,
        R(b.INCREMENT, n, extras=INCR(5, 10, 0))  # created holding 10
        + R(b.INCREMENT, n, extras=INCR(5, 10, 0))
        + R(b.DECREMENT, n, extras=INCR(100, 0, 0))  # never below 0
        + R(b.INCREMENTQ, n, extras=INCR(7, 0, 0))
        + R(b.INCREMENT, m, extras=INCR(1, 0, 0xFFFFFFFF))  # not created
        + R(b.SET, m, b"abc", SE(0, 0))
        + R(b.INCREMENT, m, extras=INCR(1, 0, 0))
        + R(b.INCREMENT, n, extras=INCR(1, 0, 0), cas=1)
        + R(b.GET, n),
        step,
    )
    q = struct.Struct(">Q").pack
    assert got == [
        ok(b.INCREMENT, body=q(10), cas=True),
        ok(b.INCREMENT, body=q(15), cas=True),
        ok(b.DECREMENT, body=q(0), cas=True),
        err(b.INCREMENT, 1),
        ok(b.SET, cas=True),
        err(b.INCREMENT, 6),
        err(b.INCREMENT, 2),
        hit(b.GET, 0, b"7 "),  # in place, padded: memcached's add_delta
    ]


@STEPS
def test_delete(srv: Server, step: int | None) -> None:
    k = f"d{step}".encode()
    got = exchange(
        srv.address,
        R(b.SET, k, b"1", SE(0, 0)) + R(b.DELETE, k) + R(b.DELETE, k) + R(b.DELETEQ, k),
        step,
    )
    assert got == [ok(b.SET, cas=True), ok(b.DELETE), err(b.DELETE, 1), err(b.DELETEQ, 1)]


@STEPS
def test_touch_and_gat(srv: Server, step: int | None) -> None:
    k = f"t{step}".encode()
    nope = b"t-missing"
    got = exchange(
        srv.address,
        R(b.SET, k, b"val", SE(3, 0))
        + R(b.TOUCH, k, extras=EXP(100))
        + R(b.GAT, k, extras=EXP(100))
        + R(b.GATK, k, extras=EXP(100))
        + R(b.GATQ, k, extras=EXP(100))
        + R(b.GATQ, nope, extras=EXP(100))
        + R(b.GATKQ, nope, extras=EXP(100))
        + R(b.TOUCH, nope, extras=EXP(100))
        + R(b.GAT, k, extras=EXP(2**32 - 1))  # a Unix time far ahead: still there
        + R(b.GET, k),
        step,
    )
    assert got == [
        ok(b.SET, cas=True),
        (b.TOUCH, 0, 0, 4, 0, True, struct.pack(">I", 3)),
        hit(b.GAT, 3, b"val"),
        hit(b.GATK, 3, b"val", k),
        hit(b.GATQ, 3, b"val"),
        err(b.TOUCH, 1),
        hit(b.GAT, 3, b"val"),
        hit(b.GET, 3, b"val"),
    ]


@STEPS
def test_unknown_opcodes_and_too_large_values_are_skipped(srv: Server, step: int | None) -> None:
    data = (
        R(0x50, opaque=3)
        + R(b.VERBOSITY)  # memcached 1.6.18 does not serve it
        + R(b.SASL_LIST_MECHS)  # nor SASL without -S
        + R(b.SET, b"big", b"x" * (1024 * 1024 + 1), SE(0, 0), opaque=4)
        + R(b.GET, b"big")
    )
    got = exchange(srv.address, data, None if step is None else 4096)
    assert got == [
        err(0x50, 0x81, 3),
        err(b.VERBOSITY, 0x81),
        err(b.SASL_LIST_MECHS, 0x81),
        err(b.SET, 3, 4),
        err(b.GET, 1),
    ]


@pytest.mark.parametrize(
    ("what", "frame"),
    [
        ("set over -I", R(b.SET, b"big", b"x" * (1024 * 1024 + 100), SE(0, 0), opaque=9)),
        ("unknown opcode", R(0x50, b"", b"x" * 200_000, opaque=9)),
    ],
)
def test_a_refused_frame_is_answered_once_its_body_is_in(
    srv: Server, what: str, frame: bytes
) -> None:
    """Regression (a hunt with pylibmc): a binary set over -I got its "Too large." as soon
    as its header, extras and key were in, while the client was still sending the value;
    memcached answers a refused frame after it swallowed the body (its write_bin_error
    with a swallow). A client can tell: pylibmc's buffered binary set then read the early
    reply as the next command's."""
    with socket.create_connection(srv.address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(frame[:-5000])
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)  # nothing yet: 5,000 bytes of its body still to come
        sock.sendall(frame[-5000:] + R(b.VERSION, opaque=END))
        got = read_until(sock, _ends_with_marker)
    assert frames(got[: -len(MARKER)]) == [err(frame[1], 3 if frame[1] == b.SET else 0x81, 9)]


def test_stats_groups(srv: Server) -> None:
    got = exchange(
        srv.address,
        R(b.STAT, opaque=1)
        + R(b.STAT, b"settings", opaque=2)
        + R(b.STAT, b"no-such-group", opaque=3)
        + R(b.STAT, b"detail dump", opaque=4),
    )
    general = [f for f in got if f[4] == 1]
    rows = {f[6][: f[2]]: f[6][f[2] :] for f in general if f[2]}
    assert general[-1] == (b.STAT, 0, 0, 0, 1, False, b"")
    assert rows[b"version"] == b"1.6.18" and int(rows[b"pid"]) > 0
    settings = {f[6][: f[2]]: f[6][f[2] :] for f in got if f[4] == 2 and f[2]}
    assert settings[b"binding_protocol"] == b"auto-negotiate"
    assert settings[b"auth_enabled_sasl"] == b"no"
    assert [f for f in got if f[4] == 3] == [err(b.STAT, 1, 3)]
    assert [f for f in got if f[4] == 4] == [
        (b.STAT, 0, 8, 0, 4, False, b"detailedEND\r\n"),
        (b.STAT, 0, 0, 0, 4, False, b""),
    ]


def test_a_delete_whose_cas_differs_is_no_miss(srv: Server) -> None:
    """process_bin_delete counts delete_misses only for a missing key (md counts a CAS
    that differs too); mcached counted both."""

    def misses() -> bytes:
        rows = exchange(srv.address, R(b.STAT, opaque=3))
        return {f[6][: f[2]]: f[6][f[2] :] for f in rows if f[2]}[b"delete_misses"]

    before = misses()
    got = exchange(
        srv.address,
        R(b.SET, b"dcas", b"v", SE(0, 0), opaque=1) + R(b.DELETE, b"dcas", opaque=2, cas=2**63),
    )
    assert got == [ok(b.SET, 1, cas=True), err(b.DELETE, 2, 2)]
    assert misses() == before
    assert exchange(srv.address, R(b.DELETE, b"dcas") + R(b.DELETE, b"dcas")) == [
        ok(b.DELETE),
        err(b.DELETE, 1),
    ]
    assert int(misses()) == int(before) + 1


@pytest.mark.parametrize("kind", KINDS)
def test_stores_ignore_a_cas_under_minus_C(kind: str) -> None:
    """-C: memcached's ITEM_set_cas does nothing, so a set, add or replace that carries a
    CAS is a plain one; mcached compared it (EEXISTS, or ENOENT for a missing key)."""
    s = _start(kind, "-C")
    try:
        got = exchange(
            s.address,
            R(b.SET, b"c1", b"v", SE(0, 0))
            + R(b.SET, b"c1", b"w", SE(0, 0), cas=12345)
            + R(b.SET, b"c2", b"x", SE(0, 0), cas=9)
            + R(b.ADD, b"c3", b"y", SE(0, 0), cas=9)
            + R(b.REPLACE, b"c1", b"z", SE(0, 0), cas=9)
            + R(b.APPEND, b"c1", b"!", cas=9)
            + R(b.GETK, b"c1")
            + R(b.GETK, b"c2")
            + R(b.GETK, b"c3"),
        )
        assert got == [ok(op) for op in (b.SET, b.SET, b.SET, b.ADD, b.REPLACE, b.APPEND)] + [
            (b.GETK, 0, 2, 4, 0, False, bytes(4) + b"c1z!"),
            (b.GETK, 0, 2, 4, 0, False, bytes(4) + b"c2x"),
            (b.GETK, 0, 2, 4, 0, False, bytes(4) + b"c3y"),
        ]
    finally:
        _stop(s)


def test_stats_group_names_match_as_memcached_matches_them(srv: Server) -> None:
    """memcached's process_bin_stat matches reset, settings and detail by their first bytes
    and get_stats its groups whole; conns and cachedump are text-only there. mcached split
    the key at spaces: it answered conns, and cachedump with text bytes (or a closed
    connection)."""
    not_found = [
        b"conns",
        b"cachedump 1 1",
        b"cachedump",
        b"cachedump 1 x",
        b"items ",
        b" items",
        b"slabs x",
        b" ",
        b"detail  dump",
        b"detail",
    ]
    got = exchange(
        srv.address,
        b"".join(R(b.STAT, key, opaque=n) for n, key in enumerate(not_found, 1))
        + R(b.STAT, b"resetting", opaque=50)
        + R(b.STAT, b"settingsx", opaque=51)
        + R(b.STAT, b"detail offx", opaque=52)
        + R(b.STAT, b"detail dumpx", opaque=53),
    )
    assert [f for f in got if f[4] < 50] == [
        err(b.STAT, 1, n) for n in range(1, len(not_found) + 1)
    ]
    assert [f for f in got if f[4] == 50] == [(b.STAT, 0, 0, 0, 50, False, b"")]
    settings = {f[6][: f[2]] for f in got if f[4] == 51 and f[2]}
    assert b"maxbytes" in settings and b"binding_protocol" in settings
    assert [f for f in got if f[4] == 52] == [(b.STAT, 0, 0, 0, 52, False, b"")]
    assert [f[6][: f[2]] for f in got if f[4] == 53] == [b"detailed", b""]


def test_stats_sizes_switches_have_no_terminator(srv: Server) -> None:
    """``sizes_enable`` and ``sizes_disable``: one STAT frame each, no empty one after it
    (memcached's get_stats groups end their own; these two do not). Turned off again
    at the end: the module's servers are shared."""
    got = exchange(
        srv.address,
        R(b.STAT, b"sizes_enable", opaque=1)
        + R(b.STAT, b"sizes", opaque=2)
        + R(b.STAT, b"sizes_disable", opaque=3),
    )
    assert got == [
        (b.STAT, 0, 12, 0, 1, False, b"sizes_statusenabled"),
        (b.STAT, 0, 0, 0, 2, False, b""),
        (b.STAT, 0, 12, 0, 3, False, b"sizes_statusdisabled"),
    ]


# ---- what closes the connection ----


HANGUPS = {
    "bad magic": (R(b.NOOP, opaque=1) + b"\x81" + bytes(23), [ok(b.NOOP, 1)]),
    "key over 250 bytes": (R(b.GET, b"k" * 251), [err(b.GET, 4)]),
    "get with extras": (R(b.GET, b"k", extras=b"1234"), [err(b.GET, 4)]),
    "set without extras": (R(b.SETQ, b"k", b"v"), [err(b.SETQ, 4)]),
    "key past the body": (
        b.HEADER.pack(0x80, b.GET, 10, 0, 0, 0, 5, 9, 0) + b"0123456789",
        [err(b.GET, 0x81, 9)],
    ),
    "quit": (R(b.QUIT, opaque=3), [ok(b.QUIT, 3)]),
    "quitq": (R(b.QUITQ, opaque=3), []),
}


@pytest.mark.parametrize("name", list(HANGUPS))
@STEPS
def test_hangups(srv: Server, name: str, step: int | None) -> None:
    data, expected = HANGUPS[name]
    if step is None:
        data += R(b.NOOP, opaque=7)  # sent with it: never answered
    assert hangup(srv.address, data, step) == expected


# ---- a server of its own ----


@pytest.mark.parametrize("kind", KINDS)
def test_flush_and_its_delay(kind: str) -> None:
    s = _start(kind)
    try:
        got = exchange(
            s.address,
            R(b.SET, b"x", b"1", SE(0, 0))
            + R(b.FLUSHQ, extras=EXP(3600))  # an hour from now: nothing goes yet
            + R(b.GET, b"x")
            + R(b.FLUSH, opaque=5)
            + R(b.GET, b"x"),
        )
        assert got == [
            ok(b.SET, cas=True),
            hit(b.GET, 0, b"1"),
            ok(b.FLUSH, 5),
            err(b.GET, 1),
        ]
        rows = exchange(s.address, R(b.STAT, opaque=1))
        stats = {f[6][: f[2]]: f[6][f[2] :] for f in rows if f[2]}
        assert stats[b"cmd_flush"] == b"2"
    finally:
        _stop(s)
    s = _start(kind, "-F")
    try:
        assert exchange(s.address, R(b.FLUSH)) == [err(b.FLUSH, 0x20)]
    finally:
        _stop(s)


def test_ascii_only_refuses_binary_at_once() -> None:
    """memcached -B ascii reads a binary header as a text line and leaves the client
    waiting; mcached hangs up at once and says why at -v."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    conn_log = logging.getLogger("mcached.conn")
    conn_log.addHandler(handler)
    level = conn_log.level
    conn_log.setLevel(logging.INFO)  # what -v turns on in the daemon's own logging
    s = _start("mcached", "-B", "ascii", "-v")
    try:
        started = time.monotonic()
        assert hangup(s.address, R(b.GET, b"k")) == []
        assert time.monotonic() - started < 2
        with socket.create_connection(s.address) as sock:
            sock.sendall(b"version\r\n")
            assert read_until(sock, lambda buf: buf.endswith(b"\r\n")) == b"VERSION 1.6.18\r\n"
    finally:
        _stop(s)
        conn_log.removeHandler(handler)
        conn_log.setLevel(level)
    assert any("-B ascii" in r.getMessage() for r in records)


@pytest.mark.parametrize("kind", KINDS)
def test_binary_only_refuses_text(kind: str) -> None:
    s = _start(kind, "-B", "binary")
    try:
        assert hangup(s.address, b"version\r\n" + bytes(16)) == []
        assert exchange(s.address, R(b.VERSION)) == [ok(b.VERSION, body=b"1.6.18")]
    finally:
        _stop(s)


def _first_reply(address: tuple[str, int], data: bytes) -> bytes:
    """What a new connection that sent `data` reads within a second: b"" when the server
    waits for more (or hung up)."""
    with socket.create_connection(address) as sock:
        sock.sendall(data)
        sock.settimeout(1.0)
        try:
            return sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return b""


@pytest.mark.parametrize("kind", ["mcached-procs", "memcached"])
def test_a_listener_speaks_the_protocol_its_proto_prefix_names(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached 1.6's -l prefixes: ``proto[ascii]:`` and ``proto[binary]:`` fix a
    listener's protocol, ``tag[...]:`` names it (for memcached's proxy: no other effect);
    entries are separated by ``;`` as well as ``,``. Each listener serves its protocol, the
    others -B's (here negotiated), at -t 4. mcached failed to start (exit 71)."""
    text_port, binary_port, tagged_port = free_port(), free_port(), free_port()
    spec = (
        f"proto[ascii]:{HOST}:{text_port};proto[binary]:{HOST}:{binary_port},"
        f"tag[app]:{HOST}:{tagged_port}"
    )
    srv = server_factory(kind, "-t", "4", "-l", spec)
    version_text = b"VERSION 1.6.18\r\n"
    version_binary = R(b.VERSION, opaque=7)
    for port in (srv.port, tagged_port):  # negotiated: either protocol
        assert _first_reply((HOST, port), b"version\r\n") == version_text
        assert exchange((HOST, port), version_binary) == [ok(b.VERSION, 7, b"1.6.18")]
    assert _first_reply((HOST, text_port), b"version\r\n") == version_text
    # a binary request on the text listener is no request (memcached waits for a line's
    # end, mcached hangs up at once, as with -B ascii: `test_ascii_only_refuses_binary_at_once`)
    assert _first_reply((HOST, text_port), version_binary) == b""
    assert exchange((HOST, binary_port), version_binary) == [ok(b.VERSION, 7, b"1.6.18")]
    assert _first_reply((HOST, binary_port), b"version\r\n") == b""


# ---- SASL ----

SASL_USER = b"alice"
SASL_PASSWORD = b"s3cret"


@pytest.fixture(scope="module")
def sasl_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A password file for mcached, and for memcached (Cyrus SASL) a sasldb holding the same
    user, with a configuration that offers PLAIN and CRAM-MD5 (memcached's t/sasl)."""
    d = tmp_path_factory.mktemp("sasl")
    (d / "pwdb").write_bytes(SASL_USER + b":" + SASL_PASSWORD + b"\n")
    saslpasswd2 = shutil.which("saslpasswd2")
    if saslpasswd2 is None:
        pytest.skip("saslpasswd2 missing: scripts/install-system-deps.sh installs sasl2-bin")
    subprocess.run(
        [saslpasswd2, "-a", "memcached", "-c", "-p", "-f", str(d / "sasldb"), SASL_USER],
        input=SASL_PASSWORD,
        check=True,
    )
    (d / "memcached.conf").write_text(f"mech_list: plain cram-md5\nsasldb_path: {d}/sasldb\n")
    return d


def start_sasl(kind: str, files: Path, *args: str) -> Server:
    """mcached with the password file; memcached, and mcached without a password file
    (``mcached-cyrus``: its worker processes), through Cyrus SASL's sasldb."""
    if kind == "mcached":
        return _start_mcached(["-S", "--sasl-pwdb", str(files / "pwdb"), *args])
    old = os.environ.get("SASL_CONF_PATH")
    os.environ["SASL_CONF_PATH"] = str(files)  # what the server's process inherits
    try:
        if kind == "mcached-cyrus":
            return _start_mcached_procs(["-S", "-t", "1", *args])
        return _start_memcached(["-S", *args])
    finally:
        if old is None:
            del os.environ["SASL_CONF_PATH"]
        else:
            os.environ["SASL_CONF_PATH"] = old


def stop_sasl(srv: Server) -> None:
    if srv.kind == "mcached-procs":
        _stop_mcached_procs(srv)
    else:
        _stop(srv)


SASL_KINDS = [*KINDS, "mcached-cyrus"]


@pytest.fixture(scope="module", params=SASL_KINDS)
def sasl_srv(request: pytest.FixtureRequest, sasl_files: Path) -> Iterator[Server]:
    s = start_sasl(request.param, sasl_files)
    yield s
    stop_sasl(s)


def plain(user: bytes = SASL_USER, password: bytes = SASL_PASSWORD, opaque: int = 0) -> bytes:
    return R(b.SASL_AUTH, b"PLAIN", b"\0" + user + b"\0" + password, opaque=opaque)


AUTHENTICATED = ok(b.SASL_AUTH, body=b"Authenticated")


@STEPS
def test_sasl_plain(sasl_srv: Server, step: int | None) -> None:
    got = exchange(
        sasl_srv.address,
        R(b.VERSION)
        + R(b.SASL_LIST_MECHS)
        + plain(password=b"wrong")
        + R(b.SASL_AUTH, b"X" * 40, b"data")
        + plain()
        + R(b.SET, b"sasl-k", b"v", SE(0, 0))
        + R(b.GET, b"sasl-k"),
        step,
    )
    assert got[0] == ok(b.VERSION, body=b"1.6.18")
    assert sorted(got[1][6].split()) == [b"CRAM-MD5", b"PLAIN"]
    assert got[2:] == [
        err(b.SASL_AUTH, 0x20),
        err(b.SASL_AUTH, 4),
        AUTHENTICATED,
        ok(b.SET, cas=True),
        hit(b.GET, 0, b"v"),
    ]


def test_sasl_cram_md5(sasl_srv: Server) -> None:
    import hmac

    with socket.create_connection(sasl_srv.address) as sock:
        sock.sendall(R(b.SASL_AUTH, b"CRAM-MD5", b""))
        reply = frames(read_until(sock, lambda buf: len(buf) >= 24 + (buf[11] if buf else 0)))
        op, status, _, _, _, _, challenge = reply[0]
        assert (op, status) == (b.SASL_AUTH, 0x21) and challenge.startswith(b"<")
        digest = hmac.new(SASL_PASSWORD, challenge, "md5").hexdigest().encode()
        sock.sendall(R(b.SASL_STEP, b"CRAM-MD5", SASL_USER + b" " + digest) + R(b.NOOP, opaque=1))
        got = frames(read_until(sock, _ends_with_noop(1)))
    assert got == [ok(b.SASL_STEP, body=b"Authenticated"), ok(b.NOOP, 1)]


def _ends_with_noop(opaque: int) -> Callable[[bytes], bool]:
    return lambda buf: buf.endswith(b.response(b.NOOP, opaque))


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (R(b.SASL_LIST_MECHS), "mechs"),  # the mechanisms, and the connection is out
        (plain(password=b"wrong"), "failure"),
        (plain(), "failure"),  # Cyrus starts no second exchange on a connection
    ],
    ids=["list", "bad-password", "again"],
)
def test_sasl_commands_take_the_authentication_away(
    sasl_srv: Server, first: bytes, then: str
) -> None:
    """Every SASL command resets the connection's authentication (memcached's
    init_sasl_conn): after it, the next command is refused and the connection closed.
    mcached let the connection stay in."""
    got = hangup(sasl_srv.address, plain() + first + R(b.NOOP, opaque=4))
    assert got[0] == AUTHENTICATED
    if then == "mechs":
        assert got[1][:2] == (b.SASL_LIST_MECHS, 0)
    else:
        assert got[1] == err(b.SASL_AUTH, 0x20)
    assert got[2:] == [err(b.NOOP, 0x20, 4)]


def test_sasl_a_failure_may_be_followed_by_a_success(sasl_srv: Server) -> None:
    assert exchange(sasl_srv.address, plain(password=b"wrong") + plain() + R(b.NOOP)) == [
        err(b.SASL_AUTH, 0x20),
        AUTHENTICATED,
        ok(b.NOOP),
    ]


@pytest.mark.parametrize(
    ("second", "results"),
    [
        (plain(password=b"wrong"), [0x20, 0]),
        (plain(), [0x20, 0]),
        (R(b.SASL_AUTH, b"NOPE", b""), [0x20, 0]),
        (R(b.SASL_AUTH, b"CRAM-MD5", b""), [0x20, 0]),
        (R(b.SASL_STEP, b"PLAIN", b"\0a\0b") + plain(), [0x20, 0x20, 0]),
        (R(b.SASL_LIST_MECHS) + plain(), [0, 0x20, 0]),
    ],
    ids=["bad-password", "again", "no-such-mech", "cram-start", "step", "list"],
)
def test_sasl_after_a_success_the_next_login_fails_and_the_one_after_is_checked(
    sasl_srv: Server, second: bytes, results: list[int]
) -> None:
    """Cyrus's doneflag: on a connection an exchange let in, the next login fails whatever
    it sends, and a start that fails clears the flag (a step does not). Regression: with a
    password file, mcached refused every later login on that connection, for good."""
    got = exchange(sasl_srv.address, plain() + second + plain())
    assert got[0] == AUTHENTICATED
    assert [f[1] for f in got[1:]] == results
    assert got[-1] == AUTHENTICATED


@pytest.mark.parametrize("kind", SASL_KINDS)
def test_sasl_a_relogin_on_an_old_connection_is_not_cut_short(kind: str, sasl_files: Path) -> None:
    """A SASL command takes the login away; the connection may log in again, as memcached
    lets it. Regression: mcached closed a connection without a login once it had been open
    --stall-timeout, timed from its opening, so one older than that was closed within a
    second of a failed re-login (its retry found it gone)."""
    s = start_sasl(kind, sasl_files, *(["--stall-timeout", "2"] if kind != "memcached" else []))
    try:
        with socket.create_connection(s.address) as sock:
            sock.sendall(plain())
            assert frames(read_until(sock, lambda buf: len(buf) >= 37)) == [AUTHENTICATED]
            time.sleep(2.5)  # older than its --stall-timeout
            sock.sendall(plain(password=b"wrong"))
            assert frames(read_until(sock, lambda buf: len(buf) >= 37))[0][1] == 0x20
            # a client's pause before its retry: past the check's next round (each second),
            # within the stall timeout of its last command
            time.sleep(1.2)
            sock.sendall(plain() + R(b.NOOP, opaque=1))
            got = frames(read_until(sock, _ends_with_noop(1)))
        assert got == [AUTHENTICATED, ok(b.NOOP, 1)]
    finally:
        stop_sasl(s)


@pytest.mark.parametrize("name", ["set", "delete", "flush", "noop", "stat"])
def test_sasl_unauthenticated_is_refused_and_closed(sasl_srv: Server, name: str) -> None:
    op = {"set": b.SET, "delete": b.DELETE, "flush": b.FLUSH, "noop": b.NOOP, "stat": b.STAT}
    frame = {
        "set": R(b.SET, b"x", b"v", SE(0, 0)),
        "delete": R(b.DELETE, b"x"),
        "flush": R(b.FLUSH),
        "noop": R(b.NOOP),
        "stat": R(b.STAT),
    }[name]
    assert hangup(sasl_srv.address, frame + plain()) == [err(op[name], 0x20)]


@pytest.mark.parametrize("kind", SASL_KINDS)
def test_sasl_counters_and_text_refused(kind: str, sasl_files: Path) -> None:
    """binary-sasl.t's count: every ending exchange is an auth_cmd, every failure an
    auth_error; a step that started nothing fails. The text protocol is hung up on."""
    s = start_sasl(kind, sasl_files)
    try:
        assert hangup(s.address, b"version\r\n" + bytes(16)) == []
        exchange(s.address, plain(password=b"wrong") + plain())
        exchange(s.address, plain(password=b"wrong"))
        exchange(s.address, R(b.SASL_STEP, b"PLAIN", b"\0a\0b"))
        rows = exchange(s.address, plain() + R(b.STAT, opaque=9))
        stats = {f[6][: f[2]]: f[6][f[2] :] for f in rows if f[4] == 9 and f[2]}
        assert (stats[b"auth_cmds"], stats[b"auth_errors"]) == (b"5", b"3")
    finally:
        stop_sasl(s)


def test_sasl_file_reloads_on_sighup_in_every_worker(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """Worker processes: each one re-reads the password file on SIGHUP."""
    pwdb = tmp_path / "pwdb"
    pwdb.write_bytes(b"alice:old\n")
    s = server_factory("mcached-procs", "-S", "--sasl-pwdb", str(pwdb), "-t", "2")
    new = R(b.SASL_AUTH, b"PLAIN", b"\0alice\0new")
    assert exchange(s.address, new) == [err(b.SASL_AUTH, 0x20)]
    pwdb.write_bytes(b"alice:new\n")
    s.handle.send_signal(1)  # SIGHUP
    deadline = time.monotonic() + 10
    # every connection (spread over both workers by the kernel) must see the new file
    while True:
        results = [exchange(s.address, new) for _ in range(8)]
        if all(r == [AUTHENTICATED] for r in results):
            break
        assert time.monotonic() < deadline, results
        time.sleep(0.1)


def test_binary_over_worker_processes(server_factory: Callable[..., Server]) -> None:
    s = server_factory("mcached-procs", "-t", "2")
    for i in range(6):  # connections land on either worker: one cache
        k = b"procs"
        got = exchange(s.address, R(b.INCREMENT, k, extras=INCR(1, 0, 0), opaque=i) + R(b.GETK, k))
        assert got == [
            ok(b.INCREMENT, i, struct.pack(">Q", i), cas=True),
            hit(b.GETK, 0, str(i).encode(), k),
        ]
