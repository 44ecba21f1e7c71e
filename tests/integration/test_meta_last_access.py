"""The last access (``mg <key> l``, ``me``'s ``la=``) on the wire, against mcached and memcached.

memcached 1.6.18 reports seconds since ``it->time``, which a store sets and reads move as
``do_item_bump`` does (its default, segmented LRU): the first read after a store only marks
the item fetched; the next one sets the time; ``add`` of an existing key and an ``incr`` or
``ma`` in place set it too (``do_item_update``); ``mg`` with ``u``, ``me`` and a failed
``cas`` do not. ``mg`` reports the item as it was before its own read.

One wait of 2.1 s (the only one) separates "stored" from "read": an unchanged time then
shows ``la`` of 2 or more, a reset one 0 or 1 (whole seconds tick independently of the
test). memcached moves the time of an item in its COLD LRU asynchronously (its LRU
maintainer takes the bump within a moment), so the resets are polled for, up to 2 s.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

# key -> the requests made after the wait, each with its reply (None: ends with END, a CAS
# in it), and whether they reset the last access
V = b"VALUE %b 0 1\r\n1\r\nEND\r\n"
CASES: dict[bytes, tuple[list[tuple[bytes, bytes | None]], bool]] = {
    b"get1": ([(b"get get1\r\n", V % b"get1")], False),
    b"get2": ([(b"get get2 none\r\n", V % b"get2"), (b"get none get2\r\n", V % b"get2")], True),
    b"gets2": ([(b"gets gets2\r\n", None), (b"gets gets2\r\n", None)], True),
    b"mg2": ([(b"mg mg2 v\r\n", b"VA 1\r\n1\r\n")] * 2, True),
    b"mgT2": ([(b"mg mgT2 T0\r\n", b"HD\r\n")] * 2, True),
    b"mgu": ([(b"mg mgu u v\r\n", b"VA 1\r\n1\r\n")] * 2 + [(b"mg mgu u\r\n", b"HD\r\n")], False),
    b"touch1": ([(b"touch touch1 0\r\n", b"TOUCHED\r\n")], False),
    b"touch2": ([(b"touch touch2 0\r\n", b"TOUCHED\r\n")] * 2, True),
    b"gat2": ([(b"gat 0 gat2\r\n", V % b"gat2")] * 2, True),
    b"add": ([(b"add add 0 0 1\r\nx\r\n", b"NOT_STORED\r\n")], True),
    b"incr": ([(b"incr incr 1\r\n", b"2\r\n")], True),
    b"ma": ([(b"ma ma\r\n", b"HD\r\n")], True),
    b"casfail": ([(b"cas casfail 0 0 1 999999\r\nx\r\n", b"EXISTS\r\n")], False),
}
# whether `me` says fetch=yes afterwards (add and incr in place do not mark it fetched)
FETCHED = {b"get1", b"get2", b"gets2", b"mg2", b"mgT2", b"touch1", b"touch2", b"gat2"}

ME = re.compile(rb"ME (\S+) exp=-?\d+ la=(\d+) cas=\d+ fetch=(yes|no) cls=1 size=\d+\r\n")


def me(conn: Conn, key: bytes) -> tuple[int, bool]:
    conn.send(b"me %b\r\n" % key)
    m = ME.fullmatch(conn.read_until(b"\r\n"))
    assert m is not None and m.group(1) == key
    return int(m.group(2)), m.group(3) == b"yes"


def wait_reset(conn: Conn, keys: list[bytes]) -> dict[bytes, int]:
    """`la` of each key, polled until each is 0 or 1 (memcached's bump of an item in its COLD
    LRU lands a moment later), for at most 2 s."""
    deadline = time.monotonic() + 2.0
    while True:
        la = {k: me(conn, k)[0] for k in keys}
        if all(v <= 1 for v in la.values()) or time.monotonic() > deadline:
            return la
        time.sleep(0.05)


def test_reads_move_the_last_access_as_memcached_does(server: Server) -> None:
    with Conn(server.address) as conn:
        for key in [*CASES, b"mgl"]:
            conn.send(b"set %b 0 0 1\r\n1\r\n" % key)
            assert conn.read_until(b"\r\n") == b"STORED\r\n"
        time.sleep(2.1)
        # mg reports the item as it was before its own read: l and h are not yet bumped
        conn.send(b"mg mgl l h\r\nmg mgl l h\r\n")
        lines = conn.read_exact(20)
        assert re.fullmatch(rb"HD l[23] h0\r\nHD l[23] h1\r\n", lines), lines
        for requests, _ in CASES.values():
            for request, reply in requests:
                conn.send(request)
                if reply is None:
                    assert conn.read_until(b"END\r\n").endswith(b"\r\n1\r\nEND\r\n")
                else:
                    assert conn.read_exact(len(reply)) == reply, request
        resets = [k for k, (_, reset) in CASES.items() if reset] + [b"mgl"]
        assert all(v <= 1 for v in wait_reset(conn, resets).values())
        conn.send(b"mg mgl l h\r\n")
        assert re.fullmatch(rb"HD l[01] h1\r\n", conn.read_until(b"\r\n"))
        for key in CASES:
            seconds, fetched = me(conn, key)
            assert (seconds <= 1, fetched) == (CASES[key][1], key in FETCHED), (key, seconds)
