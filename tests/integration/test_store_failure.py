"""A store refused at its allocation, against mcached and memcached 1.6.18.

memcached allocates a store's new item before it looks at the key (``item_alloc`` in
proto_text.c's process_update_command and process_mset_command, proto_bin.c's
process_bin_update and process_bin_append_prepend). When that fails, because the item would
pass -I or because a -M cache has no memory for it, the store is refused whatever the key
holds, and what becomes of the key's item depends on the syntax:

=================================  ===============================  ========================
command                            reply                            the key's item
=================================  ===============================  ========================
text set                           SERVER_ERROR object too large    dropped
                                   for cache / out of memory
                                   storing object
text add, replace, append,         the same                         kept
prepend, cas
ms, every mode (S E A P R), with   the same (never quiet)           dropped
or without C, q, I, b
binary set, setq (with a CAS too)  0x0003 Too large. /              dropped
                                   0x0082 Out of memory allocating
                                   item
binary add, replace, append,       the same                         kept
prepend and their quiet forms
=================================  ===============================  ========================

Counters: none of these is a ``cmd_set`` (memcached counts a set once its item is allocated);
text and meta count ``store_too_large`` / ``store_no_memory``, the binary protocol neither.

An append or prepend whose own bytes were allocated but whose joined value passes -I, or
finds no memory, is not refused: ``do_store_item`` answers NOT_STORED (``NS``, binary 0x0005)
and keeps the item; it counts as a set. Its watch lines are a lookup that found the item
and an item_store line ``status=not_stored`` of the appended bytes' item (their size and
class, the command's TTL).

Every expectation below was recorded from memcached 1.6.18 and passes against both servers.
"""

from __future__ import annotations

import re
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from mcached.protocol import binary as b
from tests.conftest import KINDS, Server
from tests.integration.test_watch import attach, fields, lines_until
from tests.integration.test_wire_binary import END, MARKER, Frame, frames, read_until
from tests.wire import Conn

pytestmark = pytest.mark.integration

R = b.request
SE = struct.Struct(">II").pack
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
COUNTERS = ("cmd_set", "store_too_large", "store_no_memory")
T = TypeVar("T")


def counters(c: Conn) -> dict[str, int]:
    c.send(b"stats\r\n")
    reply = c.read_until(b"END\r\n").decode()
    found = dict(re.findall(r"STAT (\S+) (\d+)\r\n", reply))
    return {k: int(found[k]) for k in COUNTERS}


def key_of(line: bytes) -> bytes:
    """A key of each case's own (the servers are shared by a module's tests)."""
    return b"k%08x" % zlib.crc32(line)


def counted(server: Server, run: Callable[[], T]) -> tuple[T, dict[str, int]]:
    """What `run` answered, and how much each of `COUNTERS` moved meanwhile."""
    with Conn(server.address) as c:
        before = counters(c)
        got = run()
        after = counters(c)
    return got, {k: after[k] - before[k] for k in COUNTERS}


def settle(s: socket.socket, request: bytes, reply: bytes) -> None:
    """One more round trip on `s` once its replies came: a server lets go of the items its
    replies held (memcached's resp_finish, mcached's unpin) only after it sent them, and a
    client may read them before; a chunk freed only then would let a store succeed that
    the -M tests below expect refused."""
    s.sendall(request)
    buf = b""
    while buf != reply:
        chunk = s.recv(len(reply) - len(buf))
        assert chunk, buf
        buf += chunk


def text(server: Server, data: bytes, pause_after: int = 0) -> bytes:
    """`data` then ``mn`` on a fresh connection: the replies before ``MN`` (then `settle`).
    With `pause_after`, the first that many bytes go first, then the rest a moment later
    (mcached then receives a large value into place: `c.Incoming`)."""
    data += b"mn\r\n"
    with socket.create_connection(server.address, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if pause_after:
            s.sendall(data[:pause_after])
            time.sleep(0.03)  # the server parses the line with the value still arriving
            data = data[pause_after:]
        s.sendall(data)
        buf = b""
        while not buf.endswith(b"MN\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, buf[-200:]
            buf += chunk
        settle(s, b"mn\r\n", b"MN\r\n")
    return buf[: -len(b"MN\r\n")]


def binary(server: Server, data: bytes) -> list[Frame]:
    """`data` on a fresh connection: the frames answered, up to a VERSION sent after it
    (then `settle`)."""
    with socket.create_connection(server.address, timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data + R(b.VERSION, opaque=END))
        got = read_until(s, lambda buf: buf.endswith(MARKER))
        settle(s, R(b.VERSION, opaque=END), MARKER)
    assert got.endswith(MARKER), got
    return frames(got[: -len(MARKER)])


def nothing(**moved: int) -> dict[str, int]:
    return {k: moved.get(k, 0) for k in COUNTERS}


# ---- too large for -I ----------------------------------------------------------------------
# -I 1k (and slab_chunk_max 1k, which -I 1k needs): a 2,000-byte value passes it.

BIG = 2000
X = b"x" * BIG
OLD = b"VA 3\r\nold\r\n"  # mg k v of the item before the store
GONE = b"EN\r\n"


@pytest.fixture(scope="module", params=KINDS)
def small(request: pytest.FixtureRequest, module_server_factory: Callable[..., Server]) -> Server:
    return module_server_factory(str(request.param), "-I", "1k", "-o", "slab_chunk_max=1024")


def too_large_case(name: str, line: bytes, reply: bytes, after: bytes) -> object:
    return pytest.param(line, reply, after, id=name)


TEXT_TOO_LARGE = [
    too_large_case("set", b"set %s 0 0 2000", TOO_LARGE, GONE),
    too_large_case("set-noreply", b"set %s 0 0 2000 noreply", b"", GONE),
    too_large_case("add", b"add %s 0 0 2000", TOO_LARGE, OLD),
    too_large_case("replace", b"replace %s 0 0 2000", TOO_LARGE, OLD),
    too_large_case("append", b"append %s 0 0 2000", TOO_LARGE, OLD),
    too_large_case("prepend", b"prepend %s 0 0 2000", TOO_LARGE, OLD),
    too_large_case("cas", b"cas %s 0 0 2000 1", TOO_LARGE, OLD),
    too_large_case("ms", b"ms %s 2000", TOO_LARGE, GONE),
    too_large_case("ms-MS", b"ms %s 2000 MS", TOO_LARGE, GONE),
    too_large_case("ms-ME", b"ms %s 2000 ME", TOO_LARGE, GONE),
    too_large_case("ms-MA", b"ms %s 2000 MA", TOO_LARGE, GONE),
    too_large_case("ms-MP", b"ms %s 2000 MP", TOO_LARGE, GONE),
    too_large_case("ms-MR", b"ms %s 2000 MR", TOO_LARGE, GONE),
    too_large_case("ms-MS-C", b"ms %s 2000 MS C1", TOO_LARGE, GONE),
    too_large_case("ms-ME-C", b"ms %s 2000 ME C1", TOO_LARGE, GONE),
    too_large_case("ms-MA-C", b"ms %s 2000 MA C1", TOO_LARGE, GONE),
    too_large_case("ms-MR-C", b"ms %s 2000 MR C1", TOO_LARGE, GONE),
    too_large_case("ms-I-C", b"ms %s 2000 I C1", TOO_LARGE, GONE),
    too_large_case("ms-q", b"ms %s 2000 q", TOO_LARGE, GONE),  # an error is never quiet
    too_large_case("ms-ME-q", b"ms %s 2000 ME q", TOO_LARGE, GONE),
]


@pytest.mark.parametrize(("line", "reply", "after"), TEXT_TOO_LARGE)
def test_text_too_large(small: Server, line: bytes, reply: bytes, after: bytes) -> None:
    key = key_of(line)
    assert text(small, b"set %s 0 0 3\r\nold\r\n" % key) == b"STORED\r\n"
    request = line % key + b"\r\n" + X + b"\r\nmg " + key + b" v\r\n"
    got = counted(small, lambda: text(small, request))
    assert got == (reply + after, nothing(store_too_large=1))


def test_ms_too_large_with_a_base64_key_drops_the_decoded_key(small: Server) -> None:
    assert text(small, b"set b64key 0 0 3\r\nold\r\n") == b"STORED\r\n"
    request = b"ms YjY0a2V5 2000 b\r\n" + X + b"\r\nmg b64key v\r\n"  # base64 of b64key
    assert counted(small, lambda: text(small, request)) == (
        TOO_LARGE + GONE,
        nothing(store_too_large=1),
    )


def test_too_large_stores_count_in_stats_detail_but_ms(small: Server) -> None:
    """The classic and binary stores record their prefix's set before they allocate
    (stats_prefix_record_set), so a store too large counts there; ms records nothing."""
    request = b"stats detail on\r\n"
    for line in (b"set dtl:a 0 0 2000", b"add dtl:b 0 0 2000", b"ms dtl:c 2000"):
        request += line + b"\r\n" + X + b"\r\n"
    try:
        assert text(small, request) == b"OK\r\n" + TOO_LARGE * 3
        got = binary(small, R(b.SET, b"dtl:d", X, SE(0, 0)) + R(b.APPEND, b"dtl:e", X))
        assert [f[1] for f in got] == [3, 3]
        dump = text(small, b"stats detail dump\r\n")
        assert b"PREFIX dtl get 0 hit 0 set 4 del 0\r\n" in dump
    finally:
        assert text(small, b"stats detail off\r\n") == b"OK\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"append %s 0 0 200", b"NOT_STORED\r\n"),
        (b"prepend %s 0 0 200", b"NOT_STORED\r\n"),
        (b"ms %s 200 MA", b"NS\r\n"),
        (b"ms %s 200 MP", b"NS\r\n"),
    ],
    ids=["append", "prepend", "ms-MA", "ms-MP"],
)
def test_text_joined_value_too_large_is_not_stored(
    small: Server, line: bytes, reply: bytes
) -> None:
    key = b"j-" + line.split()[0] + line.split()[-1]
    assert text(small, b"set %s 0 0 900\r\n%s\r\n" % (key, b"o" * 900)) == b"STORED\r\n"
    request = line % key + b"\r\n" + b"y" * 200 + b"\r\nmg " + key + b" s\r\n"
    assert counted(small, lambda: text(small, request)) == (
        reply + b"HD s900\r\n",
        nothing(cmd_set=1),
    )


BIN_STORES = {
    "set": (b.SET, True),
    "setq": (b.SETQ, True),
    "add": (b.ADD, True),
    "addq": (b.ADDQ, True),
    "replace": (b.REPLACE, True),
    "replaceq": (b.REPLACEQ, True),
    "append": (b.APPEND, False),
    "appendq": (b.APPENDQ, False),
    "prepend": (b.PREPEND, False),
    "prependq": (b.PREPENDQ, False),
}
DROPS = {b.SET, b.SETQ}


def bin_case(name: str, cas: int) -> object:
    opcode, extras = BIN_STORES[name]
    return pytest.param(opcode, extras, cas, id=f"{name}-cas{cas}")


BIN_CASES = [bin_case(name, cas) for name in BIN_STORES for cas in (0, 12345)]


def bin_hit(value: bytes, opaque: int) -> tuple[int, int, int, int, int, bool, bytes]:
    return (b.GET, 0, 0, 4, opaque, True, b"\0\0\0\0" + value)


BIN_MISS = (b.GET, 1, 0, 0, 3, False, b"Not found")


@pytest.mark.parametrize(("opcode", "extras", "cas"), BIN_CASES)
def test_binary_too_large(small: Server, opcode: int, extras: bool, cas: int) -> None:
    key = b"btl-%d-%d" % (opcode, cas)
    assert text(small, b"set %s 0 0 3\r\nold\r\n" % key) == b"STORED\r\n"
    data = R(opcode, key, X, SE(0, 0) if extras else b"", opaque=2, cas=cas) + R(
        b.GET, key, opaque=3
    )
    got, moved = counted(small, lambda: binary(small, data))
    after = BIN_MISS if opcode in DROPS else bin_hit(b"old", 3)
    assert got == [(opcode, 3, 0, 0, 2, False, b"Too large."), after]
    assert moved == nothing()  # the binary protocol counts no store_too_large


@pytest.mark.parametrize("opcode", [b.APPEND, b.PREPEND], ids=["append", "prepend"])
def test_binary_joined_value_too_large_is_not_stored(small: Server, opcode: int) -> None:
    key = b"bj-%d" % opcode
    assert text(small, b"set %s 0 0 900\r\n%s\r\n" % (key, b"o" * 900)) == b"STORED\r\n"
    data = R(opcode, key, b"y" * 200, opaque=2) + R(b.GET, key, opaque=3)
    got, moved = counted(small, lambda: binary(small, data))
    assert got == [(opcode, 5, 0, 0, 2, False, b"Not stored."), bin_hit(b"o" * 900, 3)]
    assert moved == nothing(cmd_set=1)


# ---- no memory (-M) ------------------------------------------------------------------------


class Full:
    """A ``-M -m 2`` server whose slab class for `size`-byte values is full: fillers are
    stored until one is refused. `room_for` frees one chunk (a filler's) and stores a case's
    item in it, so the class is full again with that item in it; `refill` deletes the case's
    keys and stores fillers until the class is full once more."""

    def __init__(self, server: Server, size: int) -> None:
        self.server = server
        self.size = size
        self.value = b"v" * size
        self.conn = Conn(server.address)
        self.fillers: list[bytes] = []
        self.serial = 0
        self.fill()
        assert len(self.fillers) >= 5

    def ask(self, request: bytes) -> bytes:
        self.conn.send(request)
        return self.conn.read_until(b"\r\n")

    def fill(self) -> None:
        while True:
            self.serial += 1
            key = b"fill%d-%d" % (self.size, self.serial)
            reply = self.ask(b"set %s 0 0 %d\r\n%s\r\n" % (key, self.size, self.value))
            if reply == NO_MEMORY:
                return
            assert reply == b"STORED\r\n"
            self.fillers.append(key)

    def room_for(self, key: bytes) -> None:
        assert self.ask(b"delete %s\r\n" % self.fillers.pop()) == b"DELETED\r\n"
        reply = self.ask(b"set %s 0 0 %d\r\n%s\r\n" % (key, self.size, self.value))
        assert reply == b"STORED\r\n"

    def refill(self, *keys: bytes) -> None:
        for key in keys:
            self.ask(b"delete %s\r\n" % key)
        self.fill()


SIZES = [5000, 100_000]  # buffered with its line; received into place (sent in two parts)
SIZE_IDS = ["buffered", "received"]


@pytest.fixture(scope="module", params=KINDS)
def full_classes(
    request: pytest.FixtureRequest, module_server_factory: Callable[..., Server]
) -> Iterator[dict[int, Full]]:
    """One ``-M -m 2`` server with the classes of both `SIZES` full (the second one's first
    page comes past the limit, as both servers give a class with no page one)."""
    # Nothing in the background: memcached's slab automover would move the page of a class
    # holding only free chunks (the 1-byte items of the appends below) to its global pool,
    # where a full class can take it; its LRU crawler and maintainer hold items for a
    # moment while they look at them, and a delete meanwhile frees the chunk only when
    # they let go, after a store may have been refused for want of it.
    server = module_server_factory(
        str(request.param),
        "-M",
        "-m",
        "2",
        "-o",
        "slab_automove=0,no_lru_crawler,no_lru_maintainer",
    )
    classes = {size: Full(server, size) for size in SIZES}
    yield classes
    for f in classes.values():
        f.conn.close()


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def full(request: pytest.FixtureRequest, full_classes: dict[int, Full]) -> Full:
    return full_classes[int(request.param)]


def no_memory_case(name: str, line: bytes, reply: bytes, after: bytes, **moved: int) -> object:
    return pytest.param(line, reply, after, moved, id=name)


HIT = b"HD s%d\r\n"  # mg k s of the item before the store: its size
MISS = b"EN\r\n"
TEXT_NO_MEMORY = [
    no_memory_case("set", b"set %s 0 0 %d", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("set-noreply", b"set %s 0 0 %d noreply", b"", MISS, store_no_memory=1),
    no_memory_case("add", b"add %s 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("add-missing", b"add %s-new 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("replace", b"replace %s 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("replace-missing", b"replace %s-new 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("append", b"append %s 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("prepend", b"prepend %s 0 0 %d", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("cas-mismatch", b"cas %s 0 0 %d 1", NO_MEMORY, HIT, store_no_memory=1),
    no_memory_case("ms", b"ms %s %d", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-ME", b"ms %s %d ME", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MA", b"ms %s %d MA", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MP", b"ms %s %d MP", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MR", b"ms %s %d MR", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MS-C", b"ms %s %d MS C1", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-ME-C", b"ms %s %d ME C1", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MA-C", b"ms %s %d MA C1", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MR-C", b"ms %s %d MR C1", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-I-C", b"ms %s %d I C1", NO_MEMORY, MISS, store_no_memory=1),
    no_memory_case("ms-MA-q", b"ms %s %d MA q", NO_MEMORY, MISS, store_no_memory=1),
]


@pytest.mark.parametrize(("line", "reply", "after", "moved"), TEXT_NO_MEMORY)
def test_text_no_memory(
    full: Full, line: bytes, reply: bytes, after: bytes, moved: dict[str, int]
) -> None:
    key = key_of(line)
    full.room_for(key)
    head = line % (key, full.size) + b"\r\n"
    request = head + full.value + b"\r\nmg " + key + b" s\r\n"
    pause = len(head) + 1000 if full.size > 16_384 else 0
    try:
        got = counted(full.server, lambda: text(full.server, request, pause))
        assert got == (reply + (after % full.size if after == HIT else after), nothing(**moved))
    finally:
        full.refill(key, key + b"-new")


def test_text_cas_that_would_match_finds_no_memory(full: Full) -> None:
    key = b"nm-cas-match"
    full.room_for(key)
    try:
        # through `text`, which settles: the gets reply holds the item until it is sent, and
        # an item the refill below deletes while a reply still holds it is freed only then,
        # after the refill has found the class full: the next case would find a free chunk
        unique = int(text(full.server, b"gets %s\r\n" % key).split(b"\r\n")[0].split()[-1])
        request = b"cas %s 0 0 %d %d\r\n%s\r\nmg %s s\r\n" % (
            key,
            full.size,
            unique,
            full.value,
            key,
        )
        assert counted(full.server, lambda: text(full.server, request)) == (
            NO_MEMORY + HIT % full.size,
            nothing(store_no_memory=1),
        )
    finally:
        full.refill(key)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"append %s 0 0 1", b"NOT_STORED\r\n"),
        (b"prepend %s 0 0 1", b"NOT_STORED\r\n"),
        (b"ms %s 1 MA", b"NS\r\n"),
        (b"ms %s 1 MP", b"NS\r\n"),
    ],
    ids=["append", "prepend", "ms-MA", "ms-MP"],
)
def test_text_joined_value_without_memory_is_not_stored(
    full: Full, line: bytes, reply: bytes
) -> None:
    """The appended byte's own item is allocated (a class with room); the joined value's
    class is full: NOT_STORED, the item kept, a set counted, no store_no_memory."""
    key = b"nmj-%s" % line.split()[-1]
    full.room_for(key)
    request = line % key + b"\r\nz\r\nmg " + key + b" s\r\n"
    try:
        assert counted(full.server, lambda: text(full.server, request)) == (
            reply + HIT % full.size,
            nothing(cmd_set=1),
        )
    finally:
        full.refill(key)


@pytest.mark.parametrize(("opcode", "extras", "cas"), BIN_CASES)
def test_binary_no_memory(full: Full, opcode: int, extras: bool, cas: int) -> None:
    key = b"bnm-%d-%d" % (opcode, cas)
    full.room_for(key)
    data = R(opcode, key, full.value, SE(0, 0) if extras else b"", opaque=2, cas=cas) + R(
        b.GET, key, opaque=3
    )
    try:
        got, moved = counted(full.server, lambda: binary(full.server, data))
        after = BIN_MISS if opcode in DROPS else bin_hit(full.value, 3)
        assert got == [(opcode, 0x82, 0, 0, 2, False, b"Out of memory allocating item"), after]
        assert moved == nothing()  # the binary protocol counts no store_no_memory
    finally:
        full.refill(key)


def test_binary_joined_value_without_memory_is_not_stored(full: Full) -> None:
    key = b"bnmj"
    full.room_for(key)
    data = R(b.APPEND, key, b"z", opaque=2) + R(b.GET, key, opaque=3)
    try:
        got, moved = counted(full.server, lambda: binary(full.server, data))
        assert got == [(b.APPEND, 5, 0, 0, 2, False, b"Not stored."), bin_hit(full.value, 3)]
        assert moved == nothing(cmd_set=1)
    finally:
        full.refill(key)


# ---- watch lines ---------------------------------------------------------------------------


def watched(server: Server, *phases: tuple[Callable[[], object], bytes]) -> list[str]:
    """The ``watch mutations fetchers`` lines of each phase: a callable sending requests
    on a connection of its own, the last a lookup of the phase's marker key. Each phase's
    lines are waited for before the next starts: memcached gathers its threads' log buffers
    in no set order, so two connections' lines could otherwise interleave."""
    w = attach(server, b"mutations", b"fetchers")
    lines: list[str] = []
    try:
        for run, marker in phases:
            run()
            lines += [fields(x) for x in lines_until(w, marker)]
        return lines
    finally:
        w.close()


def test_watch_lines_of_a_joined_value_too_large(small: Server) -> None:
    """memcached's do_store_item logs the lookup that found the item, then the appended
    bytes' item as not stored: their size and class, and the command's TTL."""
    for key in (b"wa", b"wp", b"wma", b"wmp", b"wba", b"wbp"):
        assert text(small, b"set %s 0 0 900\r\n%s\r\n" % (key, b"o" * 900)) == b"STORED\r\n"
    y = b"y" * 200

    def texts() -> None:
        assert (
            text(
                small,
                b"append wa 0 0 200\r\n%s\r\nprepend wp 5 100 200\r\n%s\r\n"
                b"ms wma 200 MA\r\n%s\r\nms wmp 200 MP T50\r\n%s\r\nget endtext\r\n" % (y, y, y, y),
            )
            == b"NOT_STORED\r\nNOT_STORED\r\nNS\r\nNS\r\nEND\r\n"
        )

    def bin_phase(opcode: int, key: bytes, marker: bytes) -> Callable[[], None]:
        def run() -> None:
            got = binary(small, R(opcode, key, y) + R(b.GET, marker, opaque=1))
            assert got == [
                (opcode, 5, 0, 0, 0, False, b"Not stored."),
                (b.GET, 1, 0, 0, 1, False, b"Not found"),
            ]

        return run

    lines = watched(
        small,
        (texts, b"endtext"),
        (bin_phase(b.APPEND, b"wba", b"endappend"), b"endappend"),
        (bin_phase(b.PREPEND, b"wbp", b"endprepend"), b"endprepend"),
    )
    expected = []
    for k, cmd, ttl, marker in (
        ("wa", "append", 0, None),
        ("wp", "prepend", 100, None),
        ("wma", "append", 0, None),
        ("wmp", "prepend", 50, "endtext"),
        ("wba", "append", 0, "endappend"),
        ("wbp", "prepend", 0, "endprepend"),
    ):
        expected += [
            f"type=item_get key={k} status=found clsid=11 size=900",
            f"type=item_store key={k} status=not_stored cmd={cmd} ttl={ttl} clsid=6 size=200",
        ]
        if marker:
            expected.append(f"type=item_get key={marker} status=not_found clsid=0 size=0")
    assert lines == expected


def test_watch_lines_of_a_joined_value_without_memory(full_classes: dict[int, Full]) -> None:
    full = full_classes[5000]
    full.room_for(b"wnm")
    try:
        lines = watched(
            full.server,
            (
                lambda: text(
                    full.server, b"append wnm 0 0 1\r\nz\r\nms wnm 1 MP\r\nz\r\nget endnm\r\n"
                ),
                b"endnm",
            ),
        )
    finally:
        full.refill(b"wnm")
    found = "type=item_get key=wnm status=found clsid=19 size=5000"
    assert lines == [
        found,
        "type=item_store key=wnm status=not_stored cmd=append ttl=0 clsid=1 size=1",
        found,
        "type=item_store key=wnm status=not_stored cmd=prepend ttl=0 clsid=1 size=1",
        "type=item_get key=endnm status=not_found clsid=0 size=0",
    ]
