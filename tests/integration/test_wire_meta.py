"""Exact bytes of memcached 1.6.18's meta commands (mg ms md ma mn me), against both servers.

As test_wire.py: every expectation runs against ``mcached`` and the reference ``memcached``
(the ``server`` fixture), so a green run against memcached proves the bytes are memcached's.
Table cases go on a fresh connection as ``request + PROBE`` and expect ``reply + END``; each
is sent whole and again one byte at a time. A TTL that one command sets and a later one reads
back is written `later(ttl)`: the clock may tick between the two (one byte at a time, on a
loaded machine, the bytes take a while), so it matches the values that the time the exchange
took allows. Replies that carry a CAS (mcached's CAS uniques are its own, see README) or
other times are checked in the flows below, with the CAS read back first or the number
matched.

The module's tests share one server of each kind, emptied (``flush_all``) before each test;
those that need flags of their own (``-C``, ``-M``) or exact stats start theirs.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration.test_wire import stats
from tests.wire import PROBE, PROBE_REPLY, Conn, exchange, recv_exact

pytestmark = pytest.mark.integration


@pytest.fixture
def server(emptied_server: Server) -> Server:
    """Both kinds, shared by the module's tests and emptied before each (conftest)."""
    return emptied_server


K250 = b"k" * 250
K251 = b"k" * 251
O32 = b"O" + b"o" * 31  # the longest opaque memcached echoes
O33 = b"O" + b"o" * 32


def cases(*rows: tuple[str, bytes, bytes]) -> list[Any]:
    return [pytest.param(req, exp, id=name) for name, req, exp in rows]


def send(conn: Conn, request: bytes, split: str) -> None:
    if split == "whole":
        conn.send(request)
        return
    for i in range(len(request)):
        conn.send(request[i : i + 1])
        time.sleep(0.0005)


@pytest.fixture(params=["whole", "bytes"])
def split(request: pytest.FixtureRequest) -> str:
    return str(request.param)


LATER = re.compile(rb"<ttl-later (\d+)>")


def later(ttl: int) -> bytes:
    """In an expected reply: the TTL `ttl` that an earlier command of the request set, read
    back by a later one: `ttl` less the whole seconds the server's clock may have moved
    between the two while the request's bytes trickled in (`check` works them out from how
    long the exchange took)."""
    return b"<ttl-later %d>" % ttl


def ticked(expected: bytes, kind: str, elapsed: float) -> re.Pattern[bytes]:
    """`expected` as a pattern: each `later` TTL matches exactly the values the server's
    clock allows within `elapsed` s. mcached reads a monotonic clock at each command, so it
    moves at most ceil(elapsed) seconds; memcached's ``current_time`` is sampled by a timer
    once a second, so the sample the first command saw may already be up to a second old:
    one more."""
    moved = math.ceil(elapsed) + (1 if kind == "memcached" else 0)
    out, at = b"", 0
    for m in LATER.finditer(expected):
        ttl = int(m.group(1))
        values = b"|".join(b"%d" % (ttl - k) for k in range(moved + 1))
        out += re.escape(expected[at : m.start()]) + b"(?:" + values + b")"
        at = m.end()
    return re.compile(out + re.escape(expected[at:]), re.S)


def check(server: Server, request: bytes, expected: bytes, split: str) -> None:
    with Conn(server.address) as conn:
        started = time.monotonic()
        send(conn, request + PROBE, split)
        if not LATER.search(expected):
            got = recv_exact(conn, len(expected) + len(PROBE_REPLY))
            assert got == expected + PROBE_REPLY
            return
        # the reply's length depends on the TTLs: read until it matches (or 5 s pass)
        got = b""
        deadline = started + 5
        while True:
            elapsed = time.monotonic() - started
            want = ticked(expected + PROBE_REPLY, server.kind, elapsed)
            if want.fullmatch(got) or time.monotonic() > deadline:
                break
            conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            got += chunk
        assert want.fullmatch(got), f"{got!r} is not {want.pattern!r}"


# --- mg -----------------------------------------------------------------------------------

MG = cases(
    ("miss", b"mg k v\r\n", b"EN\r\n"),
    ("miss-bare", b"mg k\r\n", b"EN\r\n"),
    ("miss-echoes-opaque-and-key", b"mg k s v t Oabc k c\r\n", b"EN Oabc kk\r\n"),
    ("miss-quiet", b"mg k v q\r\nmg k v q Oa k\r\nmn\r\n", b"MN\r\n"),
    ("hit-value", b"set k 5 0 2\r\nhi\r\nmg k v\r\n", b"STORED\r\nVA 2\r\nhi\r\n"),
    ("hit-no-value", b"set k 5 0 2\r\nhi\r\nmg k\r\n", b"STORED\r\nHD\r\n"),
    (
        "hit-flags-in-order",
        b"set k 5 0 2\r\nhi\r\nmg k s v f t k Oabc\r\nmg k Oz t f s k\r\n",
        b"STORED\r\nVA 2 s2 f5 t-1 kk Oabc\r\nhi\r\nHD Oz t-1 f5 s2 kk\r\n",
    ),
    ("hit-quiet-still-answers", b"set k 0 0 2\r\nhi\r\nmg k v q\r\n", b"STORED\r\nVA 2\r\nhi\r\n"),
    (
        "flags-with-tails-and-ignored-ones",
        b"set k 4294967295 0 2\r\nhi\r\nmg k vxyz sxx fq P/path L/x MZ C1 F9 J2 D3 I\r\n",
        b"STORED\r\nVA 2 s2 f4294967295\r\nhi\r\n",
    ),
    ("empty-value", b"set k 0 0 0\r\n\r\nmg k s v\r\n", b"STORED\r\nVA 0 s0\r\n\r\n"),
    (
        "value-with-crlf",
        b"set k 0 0 4\r\na\r\nb\r\nmg k v\r\n",
        b"STORED\r\nVA 4\r\na\r\nb\r\n",
    ),
    (
        "key-250",
        b"set " + K250 + b" 0 0 1\r\nx\r\nmg " + K250 + b" v\r\n",
        b"STORED\r\nVA 1\r\nx\r\n",
    ),
    (
        "hit-before",
        b"set k 0 0 1\r\nx\r\nmg k h\r\nmg k h\r\n",
        b"STORED\r\nHD h0\r\nHD h1\r\n",
    ),
    (
        "no-bump",
        b"set k 0 0 1\r\nx\r\nmg k u h\r\nmg k h\r\nmg k u h\r\n",
        b"STORED\r\nHD h0\r\nHD h0\r\nHD h1\r\n",
    ),
    (
        "classic-get-is-a-hit-before",
        b"set k 0 0 1\r\nx\r\nget k\r\nmg k h\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\nHD h1\r\n",
    ),
    # T: the TTL t shows is the one in force where t stands
    (
        "touch",
        b"set k 0 0 1\r\nx\r\nmg k t T1000\r\nmg k T2000 t\r\nmg k T0 t\r\n",
        b"STORED\r\nHD t-1\r\nHD t2000\r\nHD t-1\r\n",
    ),
    (
        "touch-to-the-past",
        b"set k 0 0 1\r\nx\r\nmg k T-1 v\r\nmg k v\r\nget k\r\n",
        b"STORED\r\nVA 1\r\nx\r\nEN\r\nEND\r\n",
    ),
    ("touch-miss", b"mg k T30 t v\r\n", b"EN\r\n"),
    # N: vivify on miss, win once; the item is 0 bytes with flags 0
    (
        "vivify",
        b"mg k N30 s v\r\nmg k N30 s v\r\nmg k s v\r\nget k\r\n",
        b"VA 0 s0 W\r\n\r\nVA 0 s0 Z\r\n\r\nVA 0 s0 Z\r\n\r\nVALUE k 0 0\r\n\r\nEND\r\n",
    ),
    ("vivify-ttl-after-n", b"mg k N30 t\r\n", b"HD t30 W\r\n"),
    ("vivify-ttl-before-n", b"mg k t N30\r\n", b"HD t-1 W\r\n"),
    ("vivify-then-touch", b"mg k N30 T90 t\r\nmg k T0 t\r\n", b"HD t90 W\r\nHD t-1 Z\r\n"),
    ("vivify-quiet-answers", b"mg k s N30 t q\r\n", b"HD s0 t30 W\r\n"),
    ("vivify-hit-before", b"mg k N30 h\r\nmg k h\r\n", b"HD h0 W\r\nHD h1 Z\r\n"),
    (
        "vivify-key-answers-plain-in-a-hit",
        b"mg Zm9v b N30 k\r\nmg Zm9v b k\r\n",
        b"HD kfoo W\r\nHD kfoo Z\r\n",
    ),
    # R: win when the TTL left is below the token
    (
        "recache",
        b"set k 0 100 1\r\nx\r\nmg k R50 v\r\nmg k R130 v\r\nmg k R130 v\r\nmg k R50 v\r\n",
        b"STORED\r\nVA 1\r\nx\r\nVA 1 W\r\nx\r\nVA 1 Z\r\nx\r\nVA 1 Z\r\nx\r\n",
    ),
    (
        "recache-no-ttl-never-wins",
        b"set k 0 0 1\r\nx\r\nmg k R130\r\nmg k R0\r\n",
        b"STORED\r\nHD\r\nHD\r\n",
    ),
    (
        "recache-sees-a-touch-before-it",
        b"set k 0 100 1\r\nx\r\nset j 0 100 1\r\nx\r\nmg k T200 R130\r\nmg j R130 T200\r\n",
        b"STORED\r\nSTORED\r\nHD\r\nHD W\r\n",
    ),
    (
        "recache-won-again-after-a-store",
        b"set k 0 100 1\r\nx\r\nmg k R130\r\nset k 0 100 1\r\ny\r\nmg k R130\r\n",
        b"STORED\r\nHD W\r\nSTORED\r\nHD W\r\n",
    ),
    # base64 keys
    (
        "b64",
        b"ms Zm9v 2 b\r\nhi\r\nmg Zm9v v\r\nmg Zm9v b v k\r\nmg foo k v\r\nget foo\r\n",
        b"HD\r\nEN\r\nVA 2 kZm9v b\r\nhi\r\nVA 2 kZm9v b\r\nhi\r\nVALUE foo 0 2\r\nhi\r\nEND\r\n",
    ),
    (
        "b64-binary-key",
        b"ms 44OG44K544OI 2 b\r\npo\r\nmg 44OG44K544OI b v k\r\n",
        b"HD\r\nVA 2 k44OG44K544OI b\r\npo\r\n",
    ),
    (
        "b64-classic-store-plain-key",
        b"set foo 0 0 1\r\nx\r\nmg Zm9v b k\r\n",
        b"STORED\r\nHD kfoo\r\n",
    ),
    (
        "b64-reencoded",
        b"ms Zm9v! 1 b k\r\nx\r\nmg Zm9v!! b k\r\n",
        b"HD kZm9v b\r\nHD kZm9v b\r\n",
    ),
    ("b64-miss-echo", b"mg Zm9v b k v Ox\r\n", b"EN kZm9v b Ox\r\n"),
    (
        "b64-longest",
        b"mg " + base64.b64encode(b"\xff" * 186) + b" b k\r\n",
        b"EN k" + base64.b64encode(b"\xff" * 186) + b" b\r\n",
    ),
    ("opaque-32", b"mg k " + O32 + b"\r\n", b"EN " + O32 + b"\r\n"),
    # mixing with the classic verbs on one connection
    (
        "mixed",
        b"set a 1 0 1\r\nx\r\nmg a v f\r\nms b 1 F2\r\ny\r\nget a b\r\nmd a\r\nget a\r\n"
        b"incr n 1\r\nma n N0 J7 v\r\nincr n 1\r\ndelete n\r\nmg n v\r\nmn\r\n",
        b"STORED\r\nVA 1 f1\r\nx\r\nHD\r\nVALUE a 1 1\r\nx\r\nVALUE b 2 1\r\ny\r\nEND\r\n"
        b"HD\r\nEND\r\nNOT_FOUND\r\nVA 1\r\n7\r\n8\r\nDELETED\r\nEN\r\nMN\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), MG)
def test_mg(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


# --- ms -----------------------------------------------------------------------------------

MS = cases(
    ("set", b"ms k 2\r\nhi\r\nget k\r\n", b"HD\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"),
    ("empty", b"ms k 0\r\n\r\nmg k s v\r\n", b"HD\r\nVA 0 s0\r\n\r\n"),
    (
        "flags-ttl-echo",
        b"ms k 2 T0 F7 k Oxy\r\nhi\r\nget k\r\n",
        b"HD kk Oxy\r\nVALUE k 7 2\r\nhi\r\nEND\r\n",
    ),
    ("ttl", b"ms k 2 T1000\r\nhi\r\nmg k T1000 t\r\n", b"HD\r\nHD t1000\r\n"),
    ("ttl-past", b"ms k 2 T-1\r\nhi\r\nmg k v\r\n", b"HD\r\nEN\r\n"),
    ("flags-wrap", b"ms k 1 F4294967296\r\nx\r\nmg k f\r\n", b"HD\r\nHD f0\r\n"),
    (
        "flags-negative-wrap",
        b"ms k 1 F-18446744073709551615\r\nx\r\nmg k f\r\n",
        b"HD\r\nHD f1\r\n",
    ),
    ("length-wraps", b"ms k 4294967297\r\nx\r\nget k\r\n", b"HD\r\nVALUE k 0 1\r\nx\r\nEND\r\n"),
    ("quiet", b"ms k 2 q\r\nhi\r\nmn\r\nget k\r\n", b"MN\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"),
    ("set-mode", b"ms k 1 MS\r\nx\r\nget k\r\n", b"HD\r\nVALUE k 0 1\r\nx\r\nEND\r\n"),
    (
        "add",
        b"ms k 1 ME\r\na\r\nms k 1 ME\r\nb\r\nms k 1 ME q\r\nc\r\nget k\r\n",
        b"HD\r\nNS\r\nNS\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    (
        "append-prepend",
        b"ms k 1 MA\r\na\r\nset k 3 0 1\r\nb\r\nms k 1 MA F9\r\nc\r\nms k 1 MP T100\r\na\r\n"
        b"mg k f v t\r\n",
        b"NS\r\nSTORED\r\nHD\r\nHD\r\nVA 3 f3 t-1\r\nabc\r\n",
    ),
    (
        "replace",
        b"ms k 1 MR\r\na\r\nms k 1 MR q\r\na\r\nset k 0 0 1\r\nb\r\nms k 1 MR\r\nc\r\nget k\r\n",
        b"NS\r\nNS\r\nSTORED\r\nHD\r\nVALUE k 0 1\r\nc\r\nEND\r\n",
    ),
    ("cas-missing", b"ms k 1 C5 q c\r\nx\r\n", b"NF c0\r\n"),
    ("cas-missing-replace", b"ms k 1 C5 MR\r\nx\r\n", b"NF\r\n"),
    (
        "cas-add-ignores-cas",
        b"ms k 1 C5 ME\r\nx\r\nget k\r\n",
        b"HD\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    ("cas-append-missing", b"ms k 1 C5 MA\r\nx\r\n", b"NS\r\n"),
    (
        "cas-zero-mismatch",
        b"set k 0 0 1\r\nx\r\nms k 1 C0 c k\r\ny\r\nms k 1 C0 MA\r\ny\r\nget k\r\n",
        b"STORED\r\nEX c0 kk\r\nHD\r\nVALUE k 0 2\r\nxy\r\nEND\r\n",
    ),
    (
        "stale-store-with-an-older-cas",
        b"set k 0 0 1\r\na\r\nset k 0 0 1\r\nb\r\nms k 1 I C1\r\nc\r\nmg k v\r\nmg k v\r\n",
        b"STORED\r\nSTORED\r\nHD\r\nVA 1 X W\r\nc\r\nVA 1 Z X\r\nc\r\n",
    ),
    (
        "stale-needs-a-cas",
        b"set k 0 0 1\r\na\r\nms k 1 I\r\nc\r\nms k 1 I C0\r\nd\r\nmg k v\r\n",
        b"STORED\r\nHD\r\nEX\r\nVA 1\r\nc\r\n",
    ),
    (
        "store-clears-stale",
        b"set k 0 0 1\r\na\r\nmd k I\r\nms k 1\r\nb\r\nmg k v\r\n",
        b"STORED\r\nHD\r\nHD\r\nVA 1\r\nb\r\n",
    ),
    ("b64-echo", b"ms Zm9v 1 b k O1\r\nx\r\n", b"HD kZm9v b O1\r\n"),
    (
        "b64-append-loses-binary",
        b"ms Zm9v 1 b\r\na\r\nms Zm9v 1 b MA\r\nb\r\nmg foo k v\r\n",
        b"HD\r\nHD\r\nVA 2 kfoo\r\nab\r\n",
    ),
    (
        "bad-data-chunk",
        b"ms k 2\r\nabcd\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    ),
    (
        "bad-data-chunk-quiet",
        b"ms k 2 q\r\nabcd\r\nmn\r\n",
        b"CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), MS)
def test_ms(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


def test_ms_too_large_drops_the_item_whatever_the_mode(server: Server) -> None:
    big = b"x" * (1024 * 1024)
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set k 0 0 1\r\nx\r\nms k %d MA q\r\n%b\r\nget k\r\n" % (len(big), big),
            b"STORED\r\nSERVER_ERROR object too large for cache\r\nEND\r\n",
        )


@pytest.mark.parametrize("size", [20_000, 700_000])  # over one reply piece; chunked items
def test_large_values(server: Server, size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"\r\n" * 8
    n = len(value)
    more = value + b"xy"
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"ms k %d T0 F3\r\n%b\r\nmg k v\r\nmg k s f t v\r\nms k 2 MA\r\nxy\r\n"
            b"mg k s\r\nmg k v T100 q\r\nget k\r\n" % (n, value),
            b"HD\r\nVA %d\r\n%b\r\nVA %d s%d f3 t-1\r\n%b\r\nHD\r\nHD s%d\r\n"
            b"VA %d\r\n%b\r\nVALUE k 3 %d\r\n%b\r\nEND\r\n"
            % (n, value, n, n, value, n + 2, n + 2, more, n + 2, more),
        )


# --- md -----------------------------------------------------------------------------------

MD = cases(
    ("miss", b"md k\r\n", b"NF\r\n"),
    ("miss-quiet-answers", b"md k q k Oa\r\nmn\r\n", b"NF kk Oa\r\nMN\r\n"),
    ("hit", b"set k 0 0 1\r\nx\r\nmd k\r\nget k\r\n", b"STORED\r\nHD\r\nEND\r\n"),
    ("hit-quiet", b"set k 0 0 1\r\nx\r\nmd k q\r\nmn\r\n", b"STORED\r\nMN\r\n"),
    ("hit-echo", b"set k 0 0 1\r\nx\r\nmd k Oa k c\r\n", b"STORED\r\nHD Oa kk\r\n"),
    (
        "cas-zero-mismatch",
        b"set k 0 0 1\r\nx\r\nmd k C0 q\r\nget k\r\n",
        b"STORED\r\nEX\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "ttl-without-invalidate-ignored",
        b"set k 0 0 1\r\nx\r\nmd k T30\r\nget k\r\n",
        b"STORED\r\nHD\r\nEND\r\n",
    ),
    (
        "invalidate",
        b"set k 0 0 3\r\nmoo\r\nmd k I T1000\r\nmg k s t v\r\nmg k s v\r\nget k\r\n",
        b"STORED\r\nHD\r\nVA 3 s3 t" + later(1000) + b" X W\r\nmoo\r\nVA 3 s3 Z X\r\nmoo\r\n"
        b"VALUE k 0 3\r\nmoo\r\nEND\r\n",
    ),
    (
        "invalidate-again-hands-the-token-back",
        b"set k 0 0 1\r\nx\r\nmd k I\r\nmg k\r\nmd k I q\r\nmg k\r\n",
        b"STORED\r\nHD\r\nHD X W\r\nHD X W\r\n",
    ),
    ("invalidate-miss", b"md k I\r\n", b"NF\r\n"),
    (
        "b64",
        b"ms Zm9v 1 b\r\nx\r\nmd Zm9v b k\r\nmd Zm9v b k\r\n",
        b"HD\r\nHD kZm9v b\r\nNF kZm9v b\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), MD)
def test_md(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


# --- ma -----------------------------------------------------------------------------------

MA = cases(
    ("miss", b"ma n\r\nma n D5 v\r\n", b"NF\r\nNF\r\n"),
    ("miss-quiet-answers", b"ma n q Oa k\r\nmn\r\n", b"NF Oa kn\r\nMN\r\n"),
    (
        "incr",
        b"set n 0 0 1\r\n1\r\nma n\r\nma n v\r\nget n\r\n",
        b"STORED\r\nHD\r\nVA 1\r\n3\r\nVALUE n 0 1\r\n3\r\nEND\r\n",
    ),
    (
        "incr-quiet",
        b"set n 0 0 1\r\n1\r\nma n q\r\nma n q v\r\nmn\r\nget n\r\n",
        b"STORED\r\nMN\r\nVALUE n 0 1\r\n3\r\nEND\r\n",
    ),
    (
        "delta",
        b"set n 0 0 2\r\n10\r\nma n D30 v\r\nma n MD D22 v\r\nma n M- D9000 v\r\n"
        b"ma n M+ v\r\nma n MI v\r\n",
        b"STORED\r\nVA 2\r\n40\r\nVA 2\r\n18\r\nVA 1\r\n0\r\nVA 1\r\n1\r\nVA 1\r\n2\r\n",
    ),
    (
        "wraps-at-2-64",
        b"set n 0 0 20\r\n18446744073709551615\r\nma n v\r\nma n D18446744073709551615 v\r\n",
        b"STORED\r\nVA 1\r\n0\r\nVA 20\r\n18446744073709551615\r\n",
    ),
    (
        "delta-negative-wrap",
        b"set n 0 0 1\r\n5\r\nma n D-18446744073709551615 v\r\n",
        b"STORED\r\nVA 1\r\n6\r\n",
    ),
    (
        "pads-in-place",
        b"set n 0 0 3\r\n100\r\nma n MD v\r\nget n\r\n",
        b"STORED\r\nVA 2\r\n99\r\nVALUE n 0 3\r\n99 \r\nEND\r\n",
    ),
    (
        "vivify",
        b"ma n N0 J13 v t\r\nma n N0 J13 v t\r\nma n N0 J13 v MD D22\r\n",
        b"VA 2 t-1\r\n13\r\nVA 2 t-1\r\n14\r\nVA 1\r\n0\r\n",
    ),
    ("vivify-default-seed", b"ma n N90 t v\r\nmg n s v\r\n", b"VA 1 t90\r\n0\r\nVA 1 s1\r\n0\r\n"),
    ("vivify-ttl-before-n", b"ma n t N90\r\n", b"HD t-1\r\n"),
    ("vivify-quiet-answers", b"ma n N0 q\r\nma n q\r\nmn\r\n", b"HD\r\nMN\r\n"),
    (
        "touch",
        b"set n 0 0 1\r\n5\r\nma n T1000 t v\r\nmg n t v\r\n",
        b"STORED\r\nVA 1 t1000\r\n6\r\nVA 1 t" + later(1000) + b"\r\n6\r\n",
    ),
    # memcached sets T on the item it changed: the old one, when the number grew longer
    (
        "touch-lost-when-the-number-grows",
        b"set n 0 0 1\r\n9\r\nma n T1000 t v\r\nmg n t v\r\n",
        b"STORED\r\nVA 2 t1000\r\n10\r\nVA 2 t-1\r\n10\r\n",
    ),
    (
        "non-numeric",
        b"set n 0 0 1\r\nq\r\nma n q\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (
        "empty-is-non-numeric",
        b"set n 0 0 0\r\n\r\nma n C1\r\n",
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    (
        "cas-mismatch",
        b"set n 0 0 1\r\n1\r\nma n C99999999999 q\r\nma n C0 v\r\n",
        b"STORED\r\nEX\r\nVA 1\r\n2\r\n",
    ),
    ("cas-before-number", b"set n 0 0 1\r\nx\r\nma n C99999999999\r\n", b"STORED\r\nEX\r\n"),
    ("b64", b"ma bg== b N0 k v\r\nget n\r\n", b"VA 1 kbg== b\r\n0\r\nVALUE n 0 1\r\n0\r\nEND\r\n"),
    (
        "opaque-too-long-after-the-delta",
        b"set n 0 0 1\r\n1\r\nma n " + O33 + b"\r\nget n\r\n",
        b"STORED\r\nCLIENT_ERROR opaque token too long\r\nVALUE n 0 1\r\n2\r\nEND\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), MA)
def test_ma(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


def test_reads_that_take_no_recache_token(server: Server) -> None:
    """A stale item's recache token (W) goes to the first client read: not to ``me``,
    which reads nothing, nor to an ``mg`` refused for its opaque (mcached gave both the
    token, so no reader ever won it and the stale value was served until its TTL)."""
    with Conn(server.address) as conn:
        exchange(conn, b"ms rk1 1\r\nx\r\nmd rk1 I\r\n", b"HD\r\nHD\r\n")
        conn.send(b"me rk1\r\n")
        assert conn.read_until(b"\r\n").startswith(b"ME rk1 exp=-1 ")
        exchange(
            conn,
            b"mg rk1 " + O33 + b"\r\nmg rk1 v\r\nmg rk1 v\r\n",
            b"CLIENT_ERROR opaque token too long\r\nVA 1 X W\r\nx\r\nVA 1 Z X\r\nx\r\n",
        )


def test_a_number_that_grows_is_a_new_item_not_yet_fetched(server: Server) -> None:
    """memcached's do_add_delta makes a new item when the number no longer fits in place:
    it has not been fetched (mcached kept the old item's mark: h1)."""
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"ms rk7 2\r\n99\r\nmg rk7 v\r\nma rk7\r\nmg rk7 h v\r\nincr rk7 900\r\nmg rk7 h v\r\n",
            b"HD\r\nVA 2\r\n99\r\nHD\r\nVA 3 h0\r\n100\r\n1000\r\nVA 4 h0\r\n1000\r\n",
        )


def test_ma_of_a_chunked_value_is_non_numeric(server: Server) -> None:
    big = b"7" + b" " * 700_000  # past slab_chunk_max: memcached chunks it
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set n 0 0 %d\r\n%b\r\nincr n 1\r\nma n v\r\n" % (len(big), big),
            b"STORED\r\n" + b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n" * 2,
        )


# --- mn, me, other m* -----------------------------------------------------------------------

OTHER = cases(
    ("mn", b"mn\r\n", b"MN\r\n"),
    ("mn-args", b"mn foo bar\r\n", b"MN\r\n"),
    ("me-miss", b"me k\r\n", b"EN\r\n"),
    ("me-no-key", b"me\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("me-251", b"me " + K251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("me-bad-b64", b"me Zm9 b\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("mx", b"mx k\r\n", b"ERROR\r\n"),
    ("m", b"m k\r\n", b"ERROR\r\n"),
    ("mget", b"mget k\r\n", b"ERROR\r\n"),
    ("mg-alone", b"mg\r\n", b"ERROR\r\n"),
    ("ms-alone", b"ms\r\n", b"ERROR\r\n"),
    ("md-alone", b"md\r\n", b"ERROR\r\n"),
    ("ma-alone", b"ma\r\n", b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), OTHER)
def test_mn_me_and_others(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


def test_me(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"set k 1 0 2\r\nhi\r\nms Zm9v 1 b T1000\r\nx\r\n", b"STORED\r\nHD\r\n")
        cas = mg_cas(conn, b"k")
        conn.send(b"me k\r\n")
        line = conn.read_until(b"\r\n")
        assert re.fullmatch(rb"ME k exp=-1 la=[01] cas=%d fetch=no cls=1 size=66\r\n" % cas, line)
        # a base64 key comes back encoded, whichever way it was asked for
        foo = rb"ME Zm9v exp=-(1000|999) la=[01] cas=\d+ fetch=no cls=1 size=63\r\n"
        for request in (b"me Zm9v b\r\n", b"me foo\r\n"):
            conn.send(request)
            assert re.fullmatch(foo, conn.read_until(b"\r\n"))
        exchange(conn, b"mg k v\r\n", b"VA 2\r\nhi\r\n")
        conn.send(b"me k\r\n")
        assert b" fetch=yes " in conn.read_until(b"\r\n")


# --- errors: memcached's exact line, never hidden by q ------------------------------------

ERRORS = cases(
    ("key-251", b"mg " + K251 + b" v q\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("invalid-flag", b"mg k x q\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    ("digit-flag", b"mg k 1\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    ("duplicate-flag", b"mg k v q v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    ("duplicate-token-flag", b"mg k O1 O2\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    ("high-byte-flag", b"mg k \xc3\xa9\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    ("bad-ttl", b"mg k Tabc\r\n", b"CLIENT_ERROR bad token in command line format\r\n"),
    ("empty-ttl", b"mg k N\r\n", b"CLIENT_ERROR bad token in command line format\r\n"),
    (
        "huge-ttl",
        b"mg k R99999999999999999999\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    ("bad-cas", b"mg k C-1\r\n", b"CLIENT_ERROR bad token in command line format\r\n"),
    ("bad-client-flags", b"mg k F-1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("last-error-wins", b"mg k Nx D-1\r\n", b"CLIENT_ERROR invalid numeric delta value\r\n"),
    (
        "bad-f-keeps-earlier-words",
        b"mg k Nx Fx\r\n",
        b"CLIENT_ERROR bad token in command line format\r\n",
    ),
    ("mode-length", b"mg k M\r\n", b"CLIENT_ERROR incorrect length for M token\r\n"),
    ("bad-initial", b"mg k Jx\r\n", b"CLIENT_ERROR invalid numeric initial value\r\n"),
    ("bad-b64", b"mg Zm9 b v\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    (
        "b64-over-250-as-sent",
        b"mg " + base64.b64encode(b"\xff" * 187) + b" b\r\n",
        b"CLIENT_ERROR bad command line format\r\n",
    ),
    (
        "mg-19-tokens",
        b"mg k v s f t c k h l u O1 P L T1 R1 M1 I F1\r\n",
        b"EN kk O1\r\n",
    ),
    (
        "mg-20-tokens",
        b"mg k v s f t c k h l u q O1 P L T1 N1 R1 M1 C1\r\n",
        b"CLIENT_ERROR options flags are too long\r\n",
    ),
    ("mg-opaque-33", b"mg k q " + O33 + b"\r\n", b"CLIENT_ERROR opaque token too long\r\n"),
    (
        "mg-opaque-33-hit",
        b"set k 0 0 1\r\nx\r\nmg k v " + O33 + b"\r\n",
        b"STORED\r\nCLIENT_ERROR opaque token too long\r\n",
    ),
    ("ms-no-length", b"ms k\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("ms-bad-length", b"ms k x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("ms-negative-length", b"ms k -1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("ms-length-int-max", b"ms k 2147483646\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        "ms-key-251-not-swallowed",
        b"ms " + K251 + b" 1 q\r\nmn\r\n",
        b"CLIENT_ERROR bad command line format\r\nMN\r\n",
    ),
    (
        "ms-20-tokens",
        b"ms k 1 a b c d e f g h i j k l m n o p q\r\nmn\r\n",
        b"CLIENT_ERROR options flags too long\r\nMN\r\n",
    ),
    (
        "ms-invalid-flag-swallows",
        b"ms k 2 z q\r\nmn\r\nmn\r\n",
        b"CLIENT_ERROR invalid flag\r\nMN\r\n",
    ),
    ("ms-duplicate", b"ms k 2 q q\r\nhi\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
    ("ms-bad-ttl", b"ms k 2 Tx\r\nhi\r\n", b"CLIENT_ERROR bad token in command line format\r\n"),
    ("ms-bad-client-flags", b"ms k 2 Fx\r\nhi\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        "ms-bad-mode",
        b"ms k 2 MZ q\r\nhi\r\nget k\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\nEND\r\n",
    ),
    (
        "ms-mode-before-opaque",
        b"ms k 2 " + O33 + b" MZ\r\nhi\r\n",
        b"CLIENT_ERROR invalid mode for ms M token\r\n",
    ),
    (
        "ms-opaque-33",
        b"ms k 2 " + O33 + b"\r\nhi\r\nget k\r\n",
        b"CLIENT_ERROR opaque token too long\r\nEND\r\n",
    ),
    ("ms-bad-b64", b"ms Zm9 2 b\r\nhi\r\n", b"CLIENT_ERROR error decoding key\r\n"),
    ("ms-S-flag-not-in-1.6.18", b"ms k 1 S1\r\nx\r\n", b"CLIENT_ERROR invalid flag\r\n"),
    ("md-bad-flag", b"md k x q\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    ("md-x-flag-not-in-1.6.18", b"md k x\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    ("md-bad-token", b"md k Cx\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    ("md-opaque-33", b"md k q " + O33 + b"\r\n", b"CLIENT_ERROR opaque token too long\r\n"),
    ("md-key-251", b"md " + K251 + b" q\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        "md-20-tokens",
        b"md k a b c d e f g h i j k l m n o p q r\r\n",
        b"CLIENT_ERROR options flags too long\r\n",
    ),
    ("ma-bad-flag", b"ma n x\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    ("ma-negative-delta", b"ma n D-1\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (
        "ma-delta-over-64",
        b"ma n D18446744073709551616\r\n",
        b"CLIENT_ERROR invalid or duplicate flag\r\n",
    ),
    ("ma-bad-mode", b"ma n MX q\r\n", b"CLIENT_ERROR invalid mode for ma M token\r\n"),
    ("ma-mode-length", b"ma n MII\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    ("ma-key-251", b"ma " + K251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("ma-opaque-33-miss", b"ma n q " + O33 + b"\r\n", b"CLIENT_ERROR opaque token too long\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), ERRORS)
def test_errors(server: Server, split: str, request_: bytes, expected: bytes) -> None:
    check(server, request_, expected, split)


def test_hostile_lines_never_crash(server: Server) -> None:
    """Every meta verb with every flag byte, bare and with junk tokens: each gets a line,
    and the connection still answers afterwards."""
    answer = re.compile(rb"(EN|HD|NF|NS|EX|ME |CLIENT_ERROR |SERVER_ERROR |ERROR)[^\r\n]*")
    with Conn(server.address) as conn:
        for verb in (b"mg", b"md", b"ma", b"me"):
            for flag in range(33, 256):
                for tail in (b"", b"-1", b"99999999999999999999999", b"\xff" * 40):
                    conn.send(b"%b k %b%b\r\nmn\r\n" % (verb, bytes([flag]), tail))
                    lines = conn.read_until(b"MN\r\n").split(b"\r\n")[:-2]
                    while lines:
                        line = lines.pop(0)
                        if line.startswith(b"VA "):
                            lines.pop(0)  # its data
                        else:
                            assert answer.fullmatch(line), (verb, flag, tail, line)


# --- CAS flows: the CAS read back first ---------------------------------------------------


def mg_cas(conn: Conn, key: bytes) -> int:
    """The item's CAS, read without marking it fetched."""
    conn.send(b"mg " + key + b" u c\r\n")
    m = re.fullmatch(rb"HD c(\d+)(?: [ZXW])*\r\n", conn.read_until(b"\r\n"))
    assert m
    return int(m.group(1))


def test_ms_cas_flow(server: Server) -> None:
    """metaget.t's "basic mset CAS", with exact bytes."""
    with Conn(server.address) as conn:
        exchange(conn, b"ms k 2\r\nbo\r\n", b"HD\r\n")
        cas = mg_cas(conn, b"k")
        exchange(conn, b"ms k 2 c C%d\r\nio\r\n" % (cas + 10), b"EX c0\r\n")
        conn.send(b"ms k 2 c C%d\r\nio\r\n" % cas)
        m = re.fullmatch(rb"HD c(\d+)(?: [ZXW])*\r\n", conn.read_until(b"\r\n"))
        assert m and int(m.group(1)) == mg_cas(conn, b"k") != cas
        new = int(m.group(1))
        # append and prepend take a CAS too; replace with one is a cas
        exchange(conn, b"ms k 1 MA C%d\r\nx\r\n" % cas, b"EX\r\n")
        exchange(conn, b"ms k 1 MA C%d\r\nx\r\nmg k v\r\n" % new, b"HD\r\nVA 3\r\niox\r\n")
        exchange(conn, b"ms k 1 MR C%d q\r\ny\r\n" % new, b"EX\r\n")
        exchange(conn, b"ms k 1 MR C%d q\r\ny\r\nmg k v\r\n" % mg_cas(conn, b"k"), b"VA 1\r\ny\r\n")
        # the classic gets sees the same CAS
        cas = mg_cas(conn, b"k")
        exchange(conn, b"gets k\r\n", b"VALUE k 0 1 %d\r\ny\r\nEND\r\n" % cas)


def test_cas_uniques_rise_across_keys(server: Server) -> None:
    """memcached draws every CAS unique from one counter: a store gets a higher one than any
    store before it, whatever the keys. So a CAS read from one key is older than another
    key's stored after it, and ``ms I C<cas>`` (invalidate: store it as stale when the CAS
    given is older than the item's) compares as memcached does. A differential fuzzer
    found mcached drawing per hash partition: it answered EX here."""
    with Conn(server.address) as conn:
        keys = [b"rise%d" % i for i in range(40)]  # over every partition
        for key in keys:
            exchange(conn, b"ms " + key + b" 1\r\nv\r\n", b"HD\r\n")
        drawn = [mg_cas(conn, key) for key in keys]
        assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn), drawn
        for _ in range(3):
            exchange(conn, b"set x 0 0 1\r\na\r\n", b"STORED\r\n")
        exchange(conn, b"set y 0 0 1\r\nb\r\n", b"STORED\r\n")
        older = mg_cas(conn, b"x")
        exchange(conn, b"ms y 1 I C%d\r\nz\r\n" % older, b"HD\r\n")
        exchange(conn, b"mg y v\r\n", b"VA 1 X W\r\nz\r\n")  # stored, stale: the win is yours


def test_md_and_ma_cas_flows(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"ms k 2\r\nzo\r\n", b"HD\r\n")
        cas = mg_cas(conn, b"k")
        exchange(conn, b"md k C%d\r\n" % (cas + 10), b"EX\r\n")
        exchange(conn, b"md k C%d\r\nmg k\r\n" % cas, b"HD\r\nEN\r\n")
        # ma: c gives the new CAS, which changes with every modification
        conn.send(b"ma n N0 c v\r\n")
        m = re.fullmatch(rb"VA 1 c(\d+)\r\n0\r\n", conn.read_until(b"\r\n0\r\n"))
        assert m
        first = int(m.group(1))
        exchange(conn, b"ma n N0 C99999999999 v\r\n", b"EX\r\n")
        conn.send(b"ma n N0 C%d c v\r\n" % first)
        m = re.fullmatch(rb"VA 1 c(\d+)\r\n1\r\n", conn.read_until(b"\r\n1\r\n"))
        assert m and int(m.group(1)) != first
        assert int(m.group(1)) == mg_cas(conn, b"n")
        # md I bumps the CAS; an ms with the older one then stores stale (the token went
        # to the lookup right after the invalidation: mg_cas's)
        cas = mg_cas(conn, b"n")
        exchange(conn, b"md n I\r\n", b"HD\r\n")
        assert mg_cas(conn, b"n") not in (cas, 0)
        exchange(conn, b"ms n 1 I C%d\r\n5\r\nmg n v\r\n" % cas, b"HD\r\nVA 1 Z X\r\n5\r\n")


def test_mg_values_times_and_last_access(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"ms k 2 T100\r\nhi\r\n", b"HD\r\n")
        conn.send(b"mg k t l v c\r\n")
        line = conn.read_until(b"hi\r\n")
        m = re.fullmatch(rb"VA 2 t(100|99) l[01] c(\d+)\r\nhi\r\n", line)
        assert m and int(m.group(2)) == mg_cas(conn, b"k")


# --- -C and -M servers --------------------------------------------------------------------


def test_meta_with_cas_disabled(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-C")
    with Conn(srv.address) as conn:
        exchange(
            conn,
            b"ms k 1 c\r\nx\r\nmg k c v\r\nms k 1 C0 c\r\ny\r\nms k 1 MA C5\r\ny\r\n"
            b"md k C5\r\nma n N0 c v\r\nma n C5\r\nmd k C0 I\r\nmg k c s v\r\nmd k C0\r\nmg k\r\n",
            b"HD c0\r\nVA 1 c0\r\nx\r\nEX c0\r\nHD\r\nEX\r\nVA 1 c0\r\n0\r\nEX\r\nHD\r\n"
            b"VA 2 c0 s2 X W\r\nxy\r\nHD\r\nEN\r\n",
        )


def test_meta_with_evictions_disabled(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-M", "-m", "2")
    value = b"v" * 100_000
    with Conn(srv.address) as conn:
        for i in range(100):
            conn.send(b"ms k%d %d q\r\n%b\r\n" % (i, len(value), value))
        conn.send(b"mn\r\n")
        reply = conn.read_until(b"MN\r\n")
        assert reply.endswith(b"SERVER_ERROR out of memory storing object\r\nMN\r\n")
        assert set(reply.split(b"\r\n")[:-2]) == {b"SERVER_ERROR out of memory storing object"}


# --- UDP: the same commands, one datagram each --------------------------------------------

# one reply each (memcached sends each command's reply in a datagram of its own)
UDP = (
    (b"ms k 2 T0 c\r\nhi\r\n", rb"HD c\d+\r\n"),
    (b"mg k v s k Oa\r\n", rb"VA 2 s2 kk Oa\r\nhi\r\n"),
    (b"mg zz v\r\n", rb"EN\r\n"),
    (b"mg zz v q\r\nmn\r\n", rb"MN\r\n"),
    (b"ma n N0 J5 v\r\n", rb"VA 1\r\n5\r\n"),
    (b"ma n q\r\nmn\r\n", rb"MN\r\n"),
    (b"ma n v\r\n", rb"VA 1\r\n7\r\n"),
    (b"md k I\r\n", rb"HD\r\n"),
    (b"mg k v\r\n", rb"VA 2 X W\r\nhi\r\n"),
    (b"md k q\r\nmn\r\n", rb"MN\r\n"),
    (b"md k\r\n", rb"NF\r\n"),
    (b"me zz\r\n", rb"EN\r\n"),
    (b"mg k x\r\n", rb"CLIENT_ERROR invalid flag\r\n"),
)


def test_udp(kind: str, server_factory: Callable[..., Server]) -> None:
    from tests.integration.test_udp import HEADER, start, udp_request

    srv = start(kind, server_factory)
    for n, (request, expected) in enumerate(UDP):
        [reply] = udp_request(srv.udp_port, n, request)
        assert reply[:8] == HEADER.pack(n, 0, 1, 0)
        assert re.fullmatch(expected, reply[8:]), (request, reply)


# --- watch: the lines memcached logs for meta commands --------------------------------------

WATCHED_STORES = (
    b"ms a 3 T0\r\nabc\r\nms a 1 ME\r\nx\r\nms zz 1 MR\r\nx\r\nms zz 1 MP\r\nx\r\n"
    b"ms a 1 C999999\r\nx\r\nms e 2 T1000 F3\r\nxx\r\nms Zm9v 1 b\r\nx\r\nms a 1 MA q\r\nx\r\n"
    b"ms end 1\r\nx\r\nmn\r\n"
)
WATCHED_GETS = (
    b"mg a v\r\nmg missing v\r\nmg a s k\r\nmg Zm9v b v\r\nmg e T30\r\nmg viv N30\r\n"
    b"mg viv N30\r\nmg a u\r\nmg end\r\nmn\r\n"
)


def test_watch_lines(server: Server) -> None:
    """What a watcher sees: ms logs the mode it stored in (an append the item it made), mg a
    fetch (an item N creates is first a miss)."""
    from tests.integration.test_watch import attach, fields, lines_until

    got = []
    for words, requests, expected in (
        (b"mutations", WATCHED_STORES, b"HD\r\nNS\r\nNS\r\nNS\r\nEX\r\nHD\r\nHD\r\nHD\r\nMN\r\n"),
        (b"fetchers", WATCHED_GETS, None),
    ):
        w = attach(server, words)
        try:
            with Conn(server.address) as conn:
                conn.send(requests)
                reply = conn.read_until(b"MN\r\n")
                assert expected is None or reply == expected
            got += [fields(x) for x in lines_until(w, b"end")]
        finally:
            w.close()
    store, get = "type=item_store key=", "type=item_get key="
    assert got == [
        store + "a status=stored cmd=set ttl=0 clsid=1 size=3",
        store + "a status=not_stored cmd=add ttl=0 clsid=1 size=1",
        store + "zz status=not_stored cmd=replace ttl=0 clsid=1 size=1",
        store + "zz status=not_stored cmd=prepend ttl=0 clsid=1 size=1",
        store + "a status=exists cmd=cas ttl=0 clsid=1 size=1",
        store + "e status=stored cmd=set ttl=1000 clsid=1 size=2",
        store + "foo status=stored cmd=set ttl=0 clsid=1 size=1",
        store + "a status=stored cmd=append ttl=0 clsid=1 size=4",
        store + "end status=stored cmd=set ttl=0 clsid=1 size=1",
        get + "a status=found clsid=1 size=4",
        get + "missing status=not_found clsid=0 size=0",
        get + "a status=found clsid=1 size=4",
        get + "foo status=found clsid=1 size=1",
        get + "e status=found clsid=1 size=2",
        get + "viv status=not_found clsid=0 size=0",
        get + "viv status=found clsid=1 size=0",
        get + "a status=found clsid=1 size=4",
        get + "end status=found clsid=1 size=1",
    ]


# --- stats: what memcached counts for each meta command -------------------------------------

STAT_NAMES = (
    "cmd_get get_hits get_misses get_expired get_flushed cmd_set cmd_touch touch_hits "
    "touch_misses delete_hits delete_misses incr_hits incr_misses decr_hits decr_misses "
    "cas_hits cas_misses cas_badval cmd_meta curr_items total_items store_too_large"
).split()
SLAB_FIELDS = ("get_hits", "cmd_set", "delete_hits", "incr_hits", "decr_hits", "cas_hits")
SLAB_FIELDS += ("cas_badval", "touch_hits")

# each part goes on its own connection (after the one before it was answered)
STATS_SCRIPT = (
    b"ms a 1\r\n1\r\nms b 1 q\r\n2\r\nmg a v\r\nmg zz v\r\nmg zz v q\r\nmg a T100\r\n"
    b"mg zz T100\r\nmg v1 N30\r\nmg v1 N30 T30\r\nmg a u\r\nms a 1 ME\r\nx\r\nms c 1 MA\r\nx\r\n"
    b"ms a 1 C99999999999\r\nx\r\nms zz 1 C99999999999\r\nx\r\nms a 1 C0 I\r\nx\r\n"
    b"ms a 1 MA C99999999999\r\nx\r\nmn\r\n",
    b"ms a 3\r\nxyz\r\nms big 2000000\r\n" + b"x" * 2_000_000 + b"\r\n"
    b"ma b\r\nma zz\r\nma zz MD\r\nma b MD v\r\nma v2 N0 J5\r\nma b C99999999999\r\nma a q\r\n"
    b"md zz\r\nmd b C99999999999\r\nmd a I\r\nmd a\r\nmd b q\r\nme a\r\nme zz\r\nmn\r\n",
    b"ms e 1 T-1\r\nx\r\nmg e v\r\nmg e2 N-1\r\nmg e2\r\nmn\r\n",
)


def counters(conn: Conn) -> dict[str, str]:
    st = stats(conn)
    out = {n: st[n] for n in STAT_NAMES}
    slabs = stats(conn, b"slabs")
    for name, value in slabs.items():
        cls, _, field = name.partition(":")
        if field in SLAB_FIELDS:
            out[name] = value
    return out


def run_stats_script(srv: Server) -> dict[str, str]:
    conns = [Conn(srv.address) for _ in STATS_SCRIPT]
    try:
        for conn, part in zip(conns, STATS_SCRIPT, strict=True):
            conn.send(part)
            conn.read_until(b"MN\r\n")
        with Conn(srv.address) as conn:
            return counters(conn)
    finally:
        for conn in conns:
            conn.close()


def test_stats_count_meta_commands_as_memcached(server_factory: Callable[..., Server]) -> None:
    """The same commands, the same counters, field by field (general and per slab class)."""
    ours = run_stats_script(server_factory("mcached"))
    theirs = run_stats_script(server_factory("memcached"))
    assert ours == theirs
    assert theirs["cmd_meta"] == "2" and theirs["touch_hits"] == "2"  # the script is not idle


def test_stats_count_meta_commands_across_worker_processes(
    server_factory: Callable[..., Server],
) -> None:
    """As above, on the mcached command with worker processes (the kernel spreads the
    script's connections over them): the counters still add up to memcached's."""
    theirs = run_stats_script(server_factory("memcached"))
    ours = run_stats_script(server_factory("mcached-procs", "-t", "2"))
    assert ours == theirs
