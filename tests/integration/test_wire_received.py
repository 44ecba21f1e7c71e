"""Values received into place, on the wire, against mcached and memcached 1.6.18.

A storage command whose value (16 KB or more) is still arriving when its line or binary header
is parsed has that value received straight into chunks of the cache (``c.Incoming``; README
"Security"): the classic verbs, meta ``ms`` in every mode and the binary stores, appends and
prepends included. Each exchange here sends the command and the start of its value, waits a
moment, then sends the rest, so mcached takes that path; the bytes answered are memcached's.
A value cut short by a closed connection or ending in a bad terminator never damages the
item it was for, and (worker processes, ``-t 4``) leaves no chunk behind.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

import pytest

from mcached.protocol import binary as b
from tests.conftest import Server
from tests.integration.test_memory_bounds import stats, used_chunks
from tests.wire import wait_for

pytestmark = pytest.mark.integration

N = 20_000  # over RECEIVE_MIN
V = bytes(range(97, 123)) * (N // 26) + b"!" * (N % 26)
W = b"w" * (N - 1) + b"."
R = b.request
SE = struct.Struct(">II").pack


def slowly(server: Server, data: bytes, until: Callable[[bytes], bool], head: int) -> bytes:
    """Send the first `head` bytes, pause, send the rest; what came back once `until`."""
    with socket.create_connection(server.address, timeout=15) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data[:head])
        time.sleep(0.03)  # the server parses the line with the value still arriving
        s.sendall(data[head:])
        buf = b""
        while not until(buf):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return buf


def text(server: Server, *requests: bytes) -> bytes:
    """Each request sent slowly (its line and 1,000 bytes first), then ``mn``: the replies."""
    data = b"".join(requests) + b"mn\r\n"
    return slowly(server, data, lambda buf: buf.endswith(b"MN\r\n"), 1000)[: -len(b"MN\r\n")]


# ---- the text protocols ----

TEXT: list[tuple[str, list[bytes], bytes]] = [
    (
        "ms",
        [b"ms k %d T0 F5\r\n%b\r\n" % (N, V), b"mg k s f v\r\n"],
        b"HD\r\nVA %d s%d f5\r\n%b\r\n" % (N, N, V),
    ),
    (
        "ms-quiet-base64",
        [b"ms a2V5 %d b q\r\n%b\r\n" % (N, V), b"mg a2V5 b s k v\r\n"],
        b"VA %d s%d ka2V5 b\r\n%b\r\n" % (N, N, V),
    ),
    (
        "ms-modes",
        [
            b"ms k %d ME\r\n%b\r\n" % (N, V),  # add, missing: stored
            b"ms k %d ME\r\n%b\r\n" % (N, W),  # add, present: not stored
            b"ms nokey %d MR\r\n%b\r\n" % (N, V),  # replace, missing
            b"ms k %d MR\r\n%b\r\n" % (N, W),
            b"ms k %d C1\r\n%b\r\n" % (N, V),  # cas, wrong
            b"mg k v\r\n",
        ],
        b"HD\r\nNS\r\nNS\r\nHD\r\nEX\r\nVA %d\r\n%b\r\n" % (N, W),
    ),
    (
        "ms-append-prepend",
        [
            b"set k 3 0 5\r\nhello\r\n",
            b"ms k %d MA\r\n%b\r\n" % (N, V),
            b"ms k %d MP q\r\n%b\r\n" % (N, W),
            b"ms nokey %d MA\r\n%b\r\n" % (N, V),
            b"mg k s f\r\n",
            b"get k\r\n",
        ],
        b"STORED\r\nHD\r\nNS\r\nHD s%d f3\r\nVALUE k 3 %d\r\n%bhello%b\r\nEND\r\n"
        % (2 * N + 5, 2 * N + 5, W, V),
    ),
    (
        "append-prepend",
        [
            b"set k 7 0 3\r\nmid\r\n",
            b"append k 0 0 %d\r\n%b\r\n" % (N, V),
            b"prepend k 9 0 %d noreply\r\n%b\r\n" % (N, W),
            b"append nokey 0 0 %d\r\n%b\r\n" % (N, V),
            b"get k\r\n",
        ],
        b"STORED\r\nSTORED\r\nNOT_STORED\r\nVALUE k 7 %d\r\n%bmid%b\r\nEND\r\n" % (2 * N + 3, W, V),
    ),
    (
        "append-chained",
        [
            b"set k 0 0 %d\r\n%b\r\n" % (30 * N, V * 30),
            b"append k 0 0 %d\r\n%b\r\n" % (N, W),
            b"get k\r\n",
        ],
        b"STORED\r\nSTORED\r\nVALUE k 0 %d\r\n%b%b\r\nEND\r\n" % (31 * N, V * 30, W),
    ),
    (
        "bad-terminators-leave-the-item",
        [
            b"set k 1 0 3\r\nold\r\n",
            b"set k 0 0 %d\r\n%bXY" % (N, V),
            b"ms k %d\r\n%bXY" % (N, V),
            b"append k 0 0 %d\r\n%bXY" % (N, V),
            b"ms k %d MP\r\n%bXY" % (N, V),
            b"get k\r\n",
        ],
        b"STORED\r\n" + b"CLIENT_ERROR bad data chunk\r\n" * 4 + b"VALUE k 1 3\r\nold\r\nEND\r\n",
    ),
]


@pytest.mark.parametrize("name,requests,expected", TEXT, ids=[t[0] for t in TEXT])
def test_text_values_received_into_place(
    emptied_server: Server, name: str, requests: list[bytes], expected: bytes
) -> None:
    assert text(emptied_server, *requests) == expected


# ---- the binary protocol ----

END = 0xFEEDFACE


def binary(server: Server, data: bytes) -> list[tuple[int, int, int, bool, bytes]]:
    """`data` sent slowly (its first 1,000 bytes first), then a NOOP: each response before
    the NOOP's as (opcode, status, opaque, a CAS is set, body)."""
    marker = b.response(b.NOOP, END)
    got = slowly(server, data + R(b.NOOP, opaque=END), lambda buf: buf.endswith(marker), 1000)
    got = got[: -len(marker)]
    out = []
    i = 0
    while i < len(got):
        _, op, _, _, _, status, bodylen, opaque, cas = b.HEADER.unpack_from(got, i)
        out.append((op, status, opaque, cas != 0, got[i + 24 : i + 24 + bodylen]))
        i += 24 + bodylen
    return out


def test_binary_values_received_into_place(emptied_server: Server) -> None:
    flags = SE(7, 0)
    stored = [
        R(b.SET, b"k", V, flags, 1),
        R(b.ADD, b"k", W, flags, 2),  # present: exists
        R(b.REPLACE, b"nokey", W, flags, 3),  # missing: not found
        R(b.SET, b"k", W, flags, 4, cas=12345),  # a wrong CAS: exists
        R(b.SETQ, b"q", W, SE(1, 0), 5),  # quiet: nothing answered
        R(b.APPEND, b"k", W, opaque=6),
        R(b.PREPENDQ, b"k", V, opaque=7),
        R(b.APPEND, b"nokey", V, opaque=8),  # missing: not stored
        R(b.GET, b"k", opaque=9),
        R(b.GET, b"q", opaque=10),
    ]
    got = binary(emptied_server, b"".join(stored))
    assert got == [
        (b.SET, 0, 1, True, b""),
        (b.ADD, b.KEY_EEXISTS, 2, False, b.MESSAGES[b.KEY_EEXISTS]),
        (b.REPLACE, b.KEY_ENOENT, 3, False, b.MESSAGES[b.KEY_ENOENT]),
        (b.SET, b.KEY_EEXISTS, 4, False, b.MESSAGES[b.KEY_EEXISTS]),
        (b.APPEND, 0, 6, True, b""),
        (b.APPEND, b.NOT_STORED, 8, False, b.MESSAGES[b.NOT_STORED]),
        (b.GET, 0, 9, True, SE(7, 0)[:4] + V + V + W),
        (b.GET, 0, 10, True, SE(1, 0)[:4] + W),
    ]


# ---- cut short: the item is left whole, nothing is left behind ----

HALF: list[tuple[str, bytes]] = [
    ("set", b"set k 0 0 %d\r\n" % N),
    ("ms", b"ms k %d MS\r\n" % N),
    ("append", b"append k 0 0 %d\r\n" % N),
    ("ms-prepend", b"ms k %d MP\r\n" % N),
    ("binary-set", R(b.SET, b"k", V, SE(0, 0))[: 24 + 8 + 1]),
    ("binary-append", R(b.APPEND, b"k", V)[: 24 + 1]),
]


def cut_short(server: Server, line: bytes) -> None:
    """`line` and half its value, then the connection closes."""
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(line)
        time.sleep(0.03)
        s.sendall(V[: N // 2])
        time.sleep(0.03)


@pytest.mark.parametrize("name,line", HALF, ids=[h[0] for h in HALF])
def test_a_value_cut_short_leaves_the_item_whole(
    emptied_server: Server, name: str, line: bytes
) -> None:
    assert text(emptied_server, b"set k 2 0 %d\r\n%b\r\n" % (N, W)) == b"STORED\r\n"
    cut_short(emptied_server, line)
    assert text(emptied_server, b"get k\r\n") == b"VALUE k 2 %d\r\n%b\r\nEND\r\n" % (N, W)


@pytest.mark.parametrize("kind", ["memcached", "mcached", "mcached-procs"])
@pytest.mark.parametrize(
    "line,stored",
    [(b"append a 0 0 %d\r\n", b"STORED\r\n"), (b"ms a %d MP\r\n", b"HD\r\n")],
    ids=["append", "ms-prepend"],
)
def test_a_received_append_to_the_oldest_item_of_a_full_class_is_stored(
    kind: str, line: bytes, stored: bytes, server_factory: Callable[..., Server]
) -> None:
    """The class of the item appended to is full, and that item is its oldest: memcached
    holds it while it allocates the joined item, so another is evicted and the append
    stored. mcached evicted the item itself for the joined one's chunk, then found nothing
    to append to (NOT_STORED, NS): the item was lost."""
    srv = server_factory(kind, "-m", "2")
    keys = [b"a"] + [b"b%d" % i for i in range(7)]
    assert text(srv, *(b"set %b 0 0 105000\r\n%b\r\n" % (k, b"v" * 105_000) for k in keys)) == (
        b"STORED\r\n" * 8
    )
    assert text(srv, line % N + W + b"\r\n") == stored
    assert text(srv, b"mg a s\r\n") == b"HD s%d\r\n" % (105_000 + N)


@pytest.mark.parametrize("kind", ["memcached", "mcached", "mcached-procs"])
def test_a_relative_exptime_counts_from_the_command_line(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached converts a store's exptime when it parses the command line: a value that
    takes longer to arrive than its time to live is stored already expired. mcached counted
    it from the store, after the upload: the item lived 2 s past its end."""
    srv = server_factory(kind)
    for line in (b"set e 0 2 %d\r\n" % N, b"ms e %d T2\r\n" % N):
        with socket.create_connection(srv.address, timeout=15) as s:
            s.sendall(line + V[:1000])
            time.sleep(3)  # past the 2 s, counted from the line
            s.sendall(V[1000:] + b"\r\nmg e t\r\n")
            buf = b""
            while buf.count(b"\r\n") < 2:  # the store's reply and the mg's
                chunk = s.recv(4096)
                assert chunk, buf
                buf += chunk
        assert buf in (b"STORED\r\nEN\r\n", b"HD\r\nEN\r\n"), (line, buf)


def test_values_cut_short_leave_no_chunk_behind(server_factory: Callable[..., Server]) -> None:
    """Worker processes (``-t 4``): every kind of value cut short, on connections closed at
    once or after a bad terminator, and the chunks in use are the items' once they closed."""
    server = server_factory("mcached-procs", "-t", "4", "--stall-timeout", "0")
    assert text(server, b"set k 2 0 %d\r\n%b\r\n" % (N, W)) == b"STORED\r\n"
    for _ in range(2):  # on whichever workers the connections land
        for _, line in HALF:
            cut_short(server, line)
    bad = [b"set k 0 0 %d\r\n%bXY" % (N, V), b"ms k %d MA\r\n%bXY" % (N, V)]
    assert text(server, *bad) == b"CLIENT_ERROR bad data chunk\r\n" * 2
    deadline = time.monotonic() + 20  # the workers see the closes in their own time
    while used_chunks(server) != stats(server)["curr_items"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (used_chunks(server), stats(server)["curr_items"]) == (1, 1)
    assert text(server, b"get k\r\n") == b"VALUE k 2 %d\r\n%b\r\nEND\r\n" % (N, W)


def test_a_full_pin_row_refuses_large_stores_until_it_drains(
    server_factory: Callable[..., Server],
) -> None:
    """A worker's pin table row (values lent to replies, values being received) is full:
    a large store gets memcached's out-of-memory reply, its value swallowed, the connection
    kept; large values are still served (copied); once the half-sent values' connections
    close, their entries and chunks are back and large stores are stored again. (The
    in-process daemon, its cache given a row of 4 entries as a worker process has one of
    PIN_SLOTS.)"""
    server = server_factory("mcached", "-t", "1", "--stall-timeout", "0")
    cache = server.handle.cache
    cache.bind_holder(1, pin_slots=4)
    assert text(server, b"set big 0 0 %d\r\n%b\r\n" % (N, W)) == b"STORED\r\n"
    halves = []
    for i in range(4):
        s = socket.create_connection(server.address, timeout=5)
        s.sendall(b"set h%d 0 0 %d\r\n%b" % (i, N, V[:1000]))
        halves.append(s)
    wait_for(lambda: cache.pins_held() == 4)
    try:
        refused = b"SERVER_ERROR out of memory storing object\r\n"

        def refusals() -> int:  # a refused reservation counts in its class's outofmemory
            return sum(row["outofmemory"] for _, row in cache.items_stats())

        for line in (b"set x 0 0 %d\r\n" % N, b"ms x %d MA\r\n" % N):
            before = refusals()
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(line + V[:1000])
                wait_for(lambda n=before: refusals() > n)  # refused, the value still coming
                s.sendall(V[1000:] + b"\r\nget x\r\n")
                got = b""
                while not got.endswith(b"END\r\n"):
                    chunk = s.recv(65536)
                    assert chunk, got
                    got += chunk
            assert got == refused + b"END\r\n"
        # a value that came whole with its line needs no reservation
        whole = b"get big\r\nset y 0 0 %d\r\n%b\r\n" % (N, V)
        assert slowly(server, whole, lambda buf: buf.endswith(b"STORED\r\n"), len(whole)) == (
            b"VALUE big 0 %d\r\n%b\r\nEND\r\nSTORED\r\n" % (N, W)
        )
    finally:
        for s in halves:
            s.close()
    wait_for(lambda: cache.pins_held() == 0)
    assert (used_chunks(server), stats(server)["curr_items"]) == (2, 2)
    assert text(server, b"set x 0 0 %d\r\n%b\r\n" % (N, V)) == b"STORED\r\n"


def test_chained_values_are_sent_whole(emptied_server: Server) -> None:
    """Values past slab_chunk_max, sent from each of their chunks (mcached): get, a
    multiget, gets and the binary get answer memcached's bytes."""
    big = bytes(range(256)) * 3500 + b"end"  # 896,003 bytes: two chunks
    other = b"o" * 600_000
    assert text(emptied_server, b"set big 3 0 %d\r\n%b\r\n" % (len(big), big)) == b"STORED\r\n"
    assert text(emptied_server, b"set o 0 0 %d\r\n%b\r\n" % (len(other), other)) == b"STORED\r\n"
    one = b"VALUE big 3 %d\r\n%b\r\n" % (len(big), big)
    assert text(emptied_server, b"get big\r\n") == one + b"END\r\n"
    got = text(emptied_server, b"get o big o\r\n")
    two = b"VALUE o 0 %d\r\n%b\r\n" % (len(other), other)
    assert got == two + one + two + b"END\r\n"
    got = text(emptied_server, b"gets big\r\n")
    assert got.startswith(b"VALUE big 3 %d " % len(big)) and got.endswith(
        b"\r\n%b\r\nEND\r\n" % big
    )
    assert binary(emptied_server, R(b.GET, b"big", opaque=3)) == [
        (b.GET, 0, 3, True, SE(3, 0)[:4] + big)
    ]
