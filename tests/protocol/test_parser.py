"""Parser cases from a table, each fed whole, byte by byte, and followed by trailing bytes."""

from __future__ import annotations

import math

import pytest

from mcached.errors import CloseConnection
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error
from mcached.protocol.parser import (
    LINE_PART,
    MAX_LINE,
    MAX_MULTIGET_LINE,
    NEED_DATA,
    READ_BUFFER,
    Parser,
    item_total_size,
    parse_int32,
    parse_uint32,
    parse_uint64,
)

pytestmark = pytest.mark.unit

ERR = c.Invalid(Error.UNKNOWN_COMMAND)
FMT = c.Invalid(Error.BAD_FORMAT)
K250 = b"k" * 250
K251 = b"k" * 251

CASES: list[tuple[str, bytes, list[c.Command]]] = [
    ("get", b"get k\r\n", [c.Get([b"k"])]),
    ("get-bare-lf", b"get k\n", [c.Get([b"k"])]),
    ("get-many", b"get a b c\r\n", [c.Get([b"a", b"b", b"c"])]),
    ("get-extra-spaces", b"get  a   b \r\n", [c.Get([b"a", b"b"])]),
    ("get-leading-space", b"  get a\r\n", [c.Get([b"a"])]),
    ("get-no-key", b"get\r\n", [ERR]),
    ("gets", b"gets a b\r\n", [c.Gets([b"a", b"b"])]),
    ("get-250", b"get " + K250 + b"\r\n", [c.Get([K250])]),
    ("get-251", b"get " + K251 + b"\r\n", [FMT]),
    # the keys before a bad one are looked up first (their effects stay), the rest never
    (
        "get-251-later",
        b"get a b " + K251 + b" c\r\n",
        [c.Invalid(Error.BAD_FORMAT, before=c.Get([b"a", b"b"]))],
    ),
    (
        "gets-251-later",
        b"gets a " + K251 + b"\r\n",
        [c.Invalid(Error.BAD_FORMAT, before=c.Gets([b"a"]))],
    ),
    ("gat-251-first", b"gat 5 " + K251 + b" a\r\n", [FMT]),
    (
        "gats-251-later",
        b"gats 5 a " + K251 + b"\r\n",
        [c.Invalid(Error.BAD_FORMAT, before=c.Gats(5, [b"a"]))],
    ),
    ("gat", b"gat 10 a b\r\n", [c.Gat(10, [b"a", b"b"])]),
    ("gats", b"gats -1 a\r\n", [c.Gats(-1, [b"a"])]),
    ("gat-bad-exptime", b"gat x a\r\n", [c.Invalid(Error.BAD_EXPTIME)]),
    ("gat-no-key", b"gat 1\r\n", [c.Gat(1, [])]),
    ("gat-nothing", b"gat\r\n", [ERR]),
    ("set", b"set k 5 10 2\r\nhi\r\n", [c.Set(b"k", 5, 10, b"hi")]),
    ("set-noreply", b"set k 0 0 2 noreply\r\nhi\r\n", [c.Set(b"k", 0, 0, b"hi", True)]),
    ("set-other-6th", b"set k 0 0 2 foo\r\nhi\r\n", [c.Set(b"k", 0, 0, b"hi", False)]),
    ("set-empty", b"set k 0 0 0\r\n\r\n", [c.Set(b"k", 0, 0, b"")]),
    ("set-binary", b"set k 0 0 4\r\n\r\n\0\xff\r\n", [c.Set(b"k", 0, 0, b"\r\n\0\xff")]),
    ("set-bare-lf-line", b"set k 0 0 1\nx\r\n", [c.Set(b"k", 0, 0, b"x")]),
    ("add", b"add k 0 0 1\r\nx\r\n", [c.Add(b"k", 0, 0, b"x")]),
    ("replace", b"replace k 0 0 1\r\nx\r\n", [c.Replace(b"k", 0, 0, b"x")]),
    ("append", b"append k 0 0 1\r\nx\r\n", [c.Append(b"k", 0, 0, b"x")]),
    ("prepend", b"prepend k 0 0 1\r\nx\r\n", [c.Prepend(b"k", 0, 0, b"x")]),
    ("cas", b"cas k 1 2 1 99\r\nx\r\n", [c.Cas(b"k", 1, 2, b"x", 99)]),
    ("cas-noreply", b"cas k 1 2 1 99 noreply\r\nx\r\n", [c.Cas(b"k", 1, 2, b"x", 99, True)]),
    ("cas-bad-unique", b"cas k 0 0 1 x\r\n", [FMT]),
    ("cas-few-tokens", b"cas k 0 0 1\r\n", [ERR]),
    ("set-few-tokens", b"set k 0 0\r\n", [ERR]),
    ("set-many-tokens", b"set k 0 0 1 noreply x\r\n", [ERR]),
    ("set-bad-flags", b"set k x 0 1\r\n", [FMT]),
    ("set-neg-flags", b"set k -1 0 1\r\n", [FMT]),
    ("set-flags-max", b"set k 4294967295 0 1\r\nx\r\n", [c.Set(b"k", 2**32 - 1, 0, b"x")]),
    ("set-flags-wrap", b"set k 4294967297 0 1\r\nx\r\n", [c.Set(b"k", 1, 0, b"x")]),
    ("set-flags-over-64", b"set k 18446744073709551616 0 1\r\n", [FMT]),
    ("set-length-wraps-to-0", b"set k 0 0 4294967296\r\n\r\n", [c.Set(b"k", 0, 0, b"")]),
    ("set-length-int-max", b"set k 0 0 2147483647\r\n", [FMT]),
    ("set-length-2-31", b"set k 0 0 2147483648\r\n", [FMT]),
    ("set-bad-exptime", b"set k 0 x 1\r\n", [FMT]),
    ("set-neg-exptime", b"set k 0 -1 1\r\nx\r\n", [c.Set(b"k", 0, -1, b"x")]),
    ("set-bad-length", b"set k 0 0 x\r\n", [FMT]),
    ("set-neg-length", b"set k 0 0 -1\r\n", [FMT]),
    ("set-noreply-bad", b"set k 0 0 x noreply\r\n", [c.Invalid(Error.BAD_FORMAT, True)]),
    ("set-251", b"set " + K251 + b" 0 0 1\r\n", [FMT]),
    ("bad-chunk", b"set k 5 0 1\r\nxy\r\n", [c.BadDataChunk(b"set", b"k", False, 5, 1), ERR]),
    (
        "bad-chunk-noreply",
        b"set k 0 0 1 noreply\r\nxyz\r\n",
        [c.BadDataChunk(b"set", b"k", True, 0, 1), c.Invalid(Error.UNKNOWN_COMMAND)],
    ),
    ("delete", b"delete k\r\n", [c.Delete(b"k")]),
    ("delete-0", b"delete k 0\r\n", [c.Delete(b"k")]),
    ("delete-noreply", b"delete k noreply\r\n", [c.Delete(b"k", True)]),
    ("delete-0-noreply", b"delete k 0 noreply\r\n", [c.Delete(b"k", True)]),
    ("delete-1", b"delete k 1\r\n", [c.Invalid(Error.BAD_DELETE_FORMAT)]),
    ("delete-no-key", b"delete\r\n", [ERR]),
    ("incr", b"incr k 5\r\n", [c.Incr(b"k", 5)]),
    ("decr-noreply", b"decr k 5 noreply\r\n", [c.Decr(b"k", 5, True)]),
    ("incr-max", b"incr k 18446744073709551615\r\n", [c.Incr(b"k", 2**64 - 1)]),
    ("incr-over", b"incr k 18446744073709551616\r\n", [c.Invalid(Error.BAD_DELTA)]),
    ("incr-neg", b"incr k -1\r\n", [c.Invalid(Error.BAD_DELTA)]),
    ("incr-text", b"incr k abc\r\n", [c.Invalid(Error.BAD_DELTA)]),
    ("incr-no-delta", b"incr k\r\n", [ERR]),
    ("touch", b"touch k 10\r\n", [c.Touch(b"k", 10)]),
    ("touch-noreply", b"touch k 10 noreply\r\n", [c.Touch(b"k", 10, True)]),
    ("touch-bad", b"touch k x\r\n", [c.Invalid(Error.BAD_EXPTIME)]),
    ("flush", b"flush_all\r\n", [c.FlushAll(0)]),
    ("flush-delay", b"flush_all 10\r\n", [c.FlushAll(10)]),
    ("flush-noreply", b"flush_all noreply\r\n", [c.FlushAll(0, True)]),
    ("flush-delay-noreply", b"flush_all 5 noreply\r\n", [c.FlushAll(5, True)]),
    ("flush-bad", b"flush_all x\r\n", [c.FlushAll(None)]),
    ("flush-many", b"flush_all 1 2 3\r\n", [ERR]),
    ("version", b"version\r\n", [c.Version()]),
    ("verbosity", b"verbosity 1\r\n", [c.Verbosity(1)]),
    ("verbosity-noreply", b"verbosity 1 noreply\r\n", [c.Verbosity(1, True)]),
    ("verbosity-only-noreply", b"verbosity noreply\r\n", [c.Invalid(Error.BAD_FORMAT, True)]),
    ("verbosity-bad", b"verbosity foo\r\n", [FMT]),
    ("verbosity-extra", b"verbosity 1 2\r\n", [c.Verbosity(1)]),
    ("verbosity-too-many", b"verbosity 1 2 3\r\n", [ERR]),
    ("verbosity-none", b"verbosity\r\n", [ERR]),
    ("quit", b"quit\r\n", [c.Quit()]),
    ("shutdown", b"shutdown\r\n", [c.ShutdownCmd(b"")]),
    ("shutdown-graceful", b"shutdown graceful\r\n", [c.ShutdownCmd(b"graceful")]),
    ("shutdown-bad", b"shutdown now\r\n", [c.ShutdownCmd(None)]),
    ("stats", b"stats\r\n", [c.Stats([])]),
    ("stats-items", b"stats items\r\n", [c.Stats([b"items"])]),
    ("stats-cachedump", b"stats cachedump 1 0\r\n", [c.Stats([b"cachedump", b"1", b"0"])]),
    ("lru-crawler-crawl", b"lru_crawler crawl all\r\n", [c.LruCrawler([b"crawl", b"all"])]),
    ("lru-crawler-enable", b"lru_crawler enable\r\n", [c.LruCrawler([b"enable", b""])]),
    ("lru-crawler-disable", b"lru_crawler disable\r\n", [c.LruCrawler([b"disable", b""])]),
    ("slabs-reassign", b"slabs reassign 1 2\r\n", [c.SlabsReassign(1, 2)]),
    ("slabs-reassign-any-to-pool", b"slabs reassign -1 0\r\n", [c.SlabsReassign(-1, 0)]),
    ("slabs-reassign-bad-number", b"slabs reassign x 2\r\n", [c.SlabsReassign(None, 2)]),
    ("slabs-reassign-noreply", b"slabs reassign 1 2 noreply\r\n", [ERR]),  # exactly 4 tokens
    ("slabs-reassign-short", b"slabs reassign 1\r\n", [ERR]),
    ("slabs-automove", b"slabs automove 2\r\n", [c.SlabsAutomove(2)]),
    ("slabs-automove-noreply", b"slabs automove 0 noreply\r\n", [c.SlabsAutomove(0, True)]),
    ("slabs-automove-extra", b"slabs automove 1 2\r\n", [c.SlabsAutomove(1)]),
    ("slabs-automove-3", b"slabs automove 3\r\n", [ERR]),
    (
        "slabs-automove-3-noreply",
        b"slabs automove 3 noreply\r\n",
        [c.Invalid(Error.UNKNOWN_COMMAND, True)],
    ),
    ("slabs-automove-wraps", b"slabs automove 4294967297\r\n", [c.SlabsAutomove(1)]),
    ("slabs-automove-negative", b"slabs automove -1\r\n", [FMT]),
    ("slabs-automove-text", b"slabs automove x\r\n", [FMT]),
    ("slabs-automove-none", b"slabs automove\r\n", [ERR]),
    ("slabs-automove-ratio", b"slabs automove ratio 0.5\r\n", [c.SlabsAutomove(None, False, 0.5)]),
    (
        "slabs-automove-ratio-exp",
        b"slabs automove ratio 1e-2\r\n",
        [c.SlabsAutomove(None, False, 0.01)],
    ),
    ("slabs-automove-ratio-bad", b"slabs automove ratio x\r\n", [ERR]),
    ("slabs-automove-ratio-none", b"slabs automove ratio\r\n", [ERR]),
    (
        "slabs-automove-ratio-hex",
        b"slabs automove ratio 0x.8p1\r\n",
        [c.SlabsAutomove(None, False, 1.0)],
    ),
    ("slabs-automove-ratio-huge", b"slabs automove ratio 1e999\r\n", [ERR]),
    ("slabs-automove-ratio-hex-huge", b"slabs automove ratio 0x1p1024\r\n", [ERR]),
    ("slabs-automove-ratio-tiny", b"slabs automove ratio 1e-310\r\n", [ERR]),
    ("slabs-automove-ratio-hex-tiny", b"slabs automove ratio 0x3p-1075\r\n", [ERR]),
    ("slabs-automove-ratio-hex-zero", b"slabs automove ratio 0x1p-99999\r\n", [ERR]),
    (
        "slabs-automove-ratio-hex-exact",
        b"slabs automove ratio 0x1p-1074\r\n",
        [c.SlabsAutomove(None, False, 5e-324)],
    ),
    (
        "slabs-automove-ratio-hex-0",
        b"slabs automove ratio -0x0p-5\r\n",
        [c.SlabsAutomove(None, False, -0.0)],
    ),
    (
        "slabs-automove-ratio-inf",
        b"slabs automove ratio -Infinity\r\n",
        [c.SlabsAutomove(None, False, -math.inf)],
    ),
    (
        "slabs-automove-ratio-tab",
        b"slabs automove ratio 0.5\tx\r\n",
        [c.SlabsAutomove(None, False, 0.5)],
    ),
    ("slabs-automove-ratio-tail", b"slabs automove ratio 0.5x\r\n", [ERR]),
    ("lru-alone", b"lru\r\n", [ERR]),
    (
        "lru-tune",
        b"lru tune 10 20 0.5 2 noreply\r\n",
        [
            c.Lru(
                (
                    ("hot_lru_pct", 10),
                    ("warm_lru_pct", 20),
                    ("hot_max_factor", 0.5),
                    ("warm_max_factor", 2.0),
                ),
                False,
                True,
            )
        ],
    ),
    (
        "lru-tune-wraps",
        b"lru tune 4294967295 2 1 1\r\n",
        [
            c.Lru(
                (
                    ("hot_lru_pct", -1),
                    ("warm_lru_pct", 2),
                    ("hot_max_factor", 1.0),
                    ("warm_max_factor", 1.0),
                ),
                False,
            )
        ],
    ),
    ("lru-tune-short", b"lru tune 10 20 0.5\r\n", [ERR]),
    ("lru-tune-bad", b"lru tune 10 20 x 1 noreply\r\n", [c.Invalid(Error.UNKNOWN_COMMAND, True)]),
    ("lru-tune-pcts", b"lru tune 41 40 1 1\r\n", [c.Invalid(Error.LRU_PCTS)]),
    ("lru-tune-factors", b"lru tune 1 1 1 -0\r\n", [c.Invalid(Error.LRU_FACTORS)]),
    ("lru-mode", b"lru mode flat\r\n", [c.Lru((("lru_segmented", False),), True)]),
    ("lru-mode-bad", b"lru mode x\r\n", [ERR]),
    (
        "lru-temp-ttl",
        b"lru temp_ttl 5\r\n",
        [c.Lru((("temp_lru", True), ("temporary_ttl", 5)), True)],
    ),
    ("lru-temp-ttl-off", b"lru temp_ttl -5\r\n", [c.Lru((("temp_lru", False),), True)]),
    ("lru-temp-ttl-bad", b"lru temp_ttl x\r\n", [ERR]),
    ("slabs-alone", b"slabs\r\n", [ERR]),
    ("slabs-unknown", b"slabs foo bar\r\n", [ERR]),
    ("memlimit", b"cache_memlimit 100\r\n", [c.CacheMemlimit(100)]),
    ("memlimit-bad", b"cache_memlimit x\r\n", [c.CacheMemlimit(None)]),
    ("config-get", b"config get cluster\r\n", [c.ConfigGet(b"cluster")]),
    ("config-set", b"config set cluster 0 3\r\nabc\r\n", [c.ConfigSet(b"cluster", 0, b"abc")]),
    ("config-delete", b"config delete cluster\r\n", [c.ConfigDelete(b"cluster")]),
    # a length whose +2 overflows a C int is a bad line, as in a set (memcached's words);
    # it waited for 2 GB of data
    (
        "config-set-huge",
        b"config set cluster 0 2147483646\r\n",
        [c.Invalid(Error.BAD_FORMAT)],
    ),
    ("config-set-int-max", b"config set cluster 0 2147483647\r\n", [c.Invalid(Error.BAD_FORMAT)]),
    ("unknown", b"foo bar\r\n", [ERR]),
    ("empty-line", b"\r\n", [ERR]),
    ("spaces-line", b"   \r\n", [ERR]),
    ("nul-ends-line", b"get a\0b c\r\n", [c.Get([b"a"])]),
    (
        "pipeline",
        b"get a\r\nset b 0 0 1\r\nx\r\ndelete b\r\n",
        [c.Get([b"a"]), c.Set(b"b", 0, 0, b"x"), c.Delete(b"b")],
    ),
]


def drain(p: Parser) -> list[object]:
    out: list[object] = []
    while True:
        cmd = p.next_command()
        if cmd is NEED_DATA:
            return out
        out.append(cmd)


@pytest.mark.parametrize(
    "data,expected", [(d, e) for _, d, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_whole(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    p.feed(data)
    assert drain(p) == expected
    assert p.buffered == 0


@pytest.mark.parametrize(
    "data,expected", [(d, e) for _, d, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_byte_by_byte(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    got: list[object] = []
    for i in range(len(data)):
        p.feed(data[i : i + 1])
        got.extend(drain(p))
    assert got == expected


@pytest.mark.parametrize(
    "data,expected", [(d, e) for _, d, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_trailing_bytes(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    p.feed(data + b"get tail\r\nget par")
    assert drain(p) == expected + [c.Get([b"tail"])]
    p.feed(b"tial\r\n")
    assert drain(p) == [c.Get([b"partial"])]


def test_value_too_large_is_swallowed_without_buffering() -> None:
    p = Parser(item_size_max=1024)
    p.feed(b"set k 0 0 5000\r\n")
    assert p.next_command() is NEED_DATA
    for _ in range(5):
        p.feed(b"x" * 1000)
        assert p.buffered == 0
        assert p.next_command() is NEED_DATA
    p.feed(b"\r\nget k\r\n")
    # memcached answers once the whole block is swallowed
    assert drain(p) == [c.TooLarge(b"set", b"k"), c.Get([b"k"])]


def test_feed_tells_when_a_new_request_begins() -> None:
    """feed() is True only when the parser was at rest: the server times a slow request
    from the read that began it, not from later pieces of it."""
    p = Parser(item_size_max=1024)
    assert p.feed(b"get a\r\nge") is True  # at rest: a new request
    assert p.next_command() == c.Get([b"a"])
    assert p.next_command() is NEED_DATA
    assert p.feed(b"t b\r\n") is False  # the rest of a half-sent line
    assert p.next_command() == c.Get([b"b"])
    assert p.next_command() is NEED_DATA
    assert p.feed(b"set k 0 0 3\r\n") is True
    assert p.next_command() is NEED_DATA
    assert p.feed(b"abc") is False  # its data block
    assert p.feed(b"\r\n") is False
    assert p.next_command() == c.Set(b"k", 0, 0, b"abc", False)
    assert p.next_command() is NEED_DATA
    assert p.feed(b"set k 0 0 5000\r\n") is True
    assert p.next_command() is NEED_DATA
    assert p.feed(b"x" * 1000) is False  # an oversized block being swallowed
    assert p.feed(b"x" * 4000 + b"\r\n") is False
    assert p.next_command() == c.TooLarge(b"set", b"k")
    assert p.next_command() is NEED_DATA
    assert p.feed(b"get c\r\n") is True


def test_too_large_boundary_counts_memcached_item_header() -> None:
    limit = 1024 * 1024
    biggest = limit - item_total_size(1, 0, 0, True)
    assert biggest == 1048516  # -I 1m, key "k", no flags, CAS on: memcached's own boundary
    p = Parser(item_size_max=limit)
    p.feed(b"set k 0 0 %d\r\n" % biggest)
    assert p.next_command() is NEED_DATA  # waits for the data: it fits
    p2 = Parser(item_size_max=limit)
    p2.feed(b"set k 0 0 %d\r\n" % (biggest + 1) + b"x" * (biggest + 3))
    assert p2.next_command() == c.TooLarge(b"set", b"k")
    p3 = Parser(item_size_max=limit)
    p3.feed(b"set k 1 0 %d\r\n" % (biggest - 3) + b"x" * (biggest - 1))
    assert p3.next_command() == c.TooLarge(b"set", b"k")  # non-zero flags cost 4 bytes


def test_huge_declared_length_swallowed() -> None:
    p = Parser()
    p.feed(b"set k 0 0 2147483645\r\n")
    assert p.next_command() is NEED_DATA
    p.feed(b"x" * 100)
    assert p.buffered == 0


def test_length_over_int64_is_format_error() -> None:
    p = Parser()
    p.feed(b"set k 0 0 9223372036854775808\r\n")
    assert p.next_command() == FMT


def test_long_line_without_newline_closes() -> None:
    p = Parser()
    p.feed(b"set " + b"k" * MAX_LINE)
    with pytest.raises(CloseConnection):
        p.next_command()


def test_a_whole_line_past_memcacheds_read_buffer_closes_but_a_gets() -> None:
    for head, closes in ((b"set ", True), (b"  mg ", True), (b"gets ", False)):
        for n, past in ((READ_BUFFER - 2, False), (READ_BUFFER - 1, closes)):
            p = Parser()
            p.feed(head + b"k" * (n - len(head)) + b"\r\n")  # its "\n" at offset n + 1
            if past:
                with pytest.raises(CloseConnection):
                    p.next_command()
            else:
                p.next_command()  # answered (an error, or the multiget)


def test_long_get_line_is_allowed() -> None:
    keys = [b"key%05d" % i for i in range(1000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    assert len(line) > MAX_LINE
    p = Parser()
    for i in range(0, len(line), 1000):
        p.feed(line[i : i + 1000])
        got = drain(p)
    assert got == [c.Get(keys)]


@pytest.mark.parametrize(
    "data,expected", [(d, e) for _, d, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_compact_after_a_long_line_keeps_what_follows(
    data: bytes, expected: list[c.Command]
) -> None:
    """`compact` (a long multiget's reply streams: its consumed part is let go) keeps the
    parser where it was: the line's next part, and what follows the line, whole or part-way
    in, are parsed as before, whether the buffer was the bytes received or a bytearray they
    accumulated in."""
    keys = [b"key%05d" % i for i in range(10_000)]
    line = b"get " + b" ".join(keys) + b"\r\n"  # past BUFFER_SWITCH: a bytearray if split
    for pieces in ([line + data[:5]], [line[:1000], line[1000:] + data[:5]]):
        p = Parser()
        for piece in pieces:
            p.feed(piece)
        parts = []
        while not parts or type(parts[-1]) is c.GetPart:
            parts.append(p.next_command())
            held = p.buffered
            p.compact()  # as the server does while a part's reply waits
            assert p.buffered == held
            assert len(p._buf) == held  # what was consumed is gone
        assert len(parts) == 2 and type(parts[-1]) is c.Get
        assert [k for part in parts for k in part.keys] == keys  # type: ignore[attr-defined]
        assert p.buffered == min(5, len(data))
        p.feed(data[5:])
        assert drain(p) == expected
        assert p.buffered == 0
        p.compact()  # nothing consumed past the buffer's start: nothing to do
        assert p.buffered == 0


def parts_of(line: bytes, pieces: int = 1) -> list[object]:
    """What a parser makes of `line` then ``version``, fed in `pieces`, checking that it
    never holds more than what is left of the line (and the version line)."""
    p = Parser()
    size = -(-len(line) // pieces)
    for i in range(0, len(line), size):
        p.feed(line[i : i + size])
    p.feed(b"version\r\n")
    out: list[object] = []
    while (cmd := p.next_command()) is not NEED_DATA:
        out.append(cmd)
        assert p.buffered <= len(line) + 9
    assert out[-1] == c.Version()
    return out[:-1]


def test_a_long_get_line_is_parsed_a_part_at_a_time() -> None:
    """A get line over LINE_PART bytes: parts of at most LINE_PART bytes of keys, each cut
    at a space, all but the last a GetPart; together, the keys of the line read whole (a 1
    MB line of two-byte keys is 333,333 keys: ~19 MB as one list, ~1.2 MB as a part's)."""
    keys = [b"%02d" % (i % 100) for i in range(333_000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    for pieces in (1, 7):
        parts = parts_of(line, pieces)
        assert [type(x) for x in parts] == [c.GetPart] * (len(parts) - 1) + [c.Get]
        assert len(parts) == -(-(len(line) - 6) // LINE_PART)
        assert [k for x in parts for k in x.keys] == keys  # type: ignore[attr-defined]
        assert all(len(x.keys) * 3 <= LINE_PART + 1 for x in parts)  # type: ignore[attr-defined]


def test_a_long_gets_line_is_parsed_a_part_at_a_time() -> None:
    keys = [b"key%06d" % i for i in range(20_000)]
    parts = parts_of(b"  gets " + b" ".join(keys) + b"\n")
    assert [type(x) for x in parts] == [c.GetsPart] * (len(parts) - 1) + [c.Gets]
    assert [k for x in parts for k in x.keys] == keys  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("line", "keys"),
    [
        # spaces across a part's end, and a run of them longer than a part
        (b"get a" + b" " * 70_000 + b"b  c\r\n", [b"a", b"b", b"c"]),
        (b"get " + b"ab " * 30_000 + b" " * 70_000 + b"\r\n", [b"ab"] * 30_000),
        (b"get   " + b" " * 70_000 + b"zz\r\n", [b"zz"]),
        # a NUL ends the line: what follows it up to the newline is dropped
        (
            b"get " + b"ab " * 30_000 + b"cd\0ef" + b" gh" * 1000 + b"\r\n",
            [b"ab"] * 30_000 + [b"cd"],
        ),
    ],
    ids=["spaces-between", "spaces-after", "spaces-before", "nul"],
)
def test_a_long_get_line_s_parts_are_its_keys(line: bytes, keys: list[bytes]) -> None:
    parts = parts_of(line)
    assert [type(x) for x in parts] == [c.GetPart] * (len(parts) - 1) + [c.Get]
    assert [k for x in parts for k in x.keys] == keys  # type: ignore[attr-defined]


def test_a_long_get_line_of_no_key_is_an_error() -> None:
    assert parts_of(b"get" + b" " * 70_000 + b"\r\n") == [ERR]
    assert parts_of(b"get " + b"\0" + b"a " * 40_000 + b"\r\n") == [ERR]


@pytest.mark.parametrize("verb,whole", [(b"get", c.Get), (b"gets", c.Gets)])
def test_a_long_get_line_with_a_key_over_250_bytes(verb: bytes, whole: type[c.Get]) -> None:
    """The keys before the bad one are looked up (parts answered by nothing), then the
    error alone; the rest of the line is never read, as when the line is read whole."""
    keys = [b"k%05d" % i for i in range(30_000)]
    line = verb + b" " + b" ".join(keys) + b" " + K251 + b" more keys\r\n"
    parts = parts_of(line)
    assert len(parts) > 1
    assert all(isinstance(x, c.Invalid) and x.error is Error.BAD_FORMAT for x in parts)
    assert [x.noreply for x in parts] == [True] * (len(parts) - 1) + [False]  # type: ignore[attr-defined]
    assert all(type(x.before) is whole for x in parts)  # type: ignore[attr-defined]
    assert [k for x in parts for k in x.before.keys] == keys  # type: ignore[attr-defined]
    # a bad key right after a part's worth of keys, or after a part of spaces
    for pad in (b"", b" " * 70_000):
        line = verb + b" " + b"ab " * 21_845 + pad + K251 + b"\r\n"
        parts = parts_of(line)
        assert all(isinstance(x, c.Invalid) and x.error is Error.BAD_FORMAT for x in parts)
        assert [x.noreply for x in parts] == [True] * (len(parts) - 1) + [False]  # type: ignore[attr-defined]
        assert sum(len(x.before.keys) for x in parts if x.before) == 21_845  # type: ignore[attr-defined]


def test_multiget_line_is_capped() -> None:
    p = Parser()
    p.feed(b"get " + b"k " * (MAX_MULTIGET_LINE // 2 + 10))
    with pytest.raises(CloseConnection):
        p.next_command()


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1\r\n", b"HTTP/1.0\r\n", b"POST /x HTTP/2\n"])
def test_http_request_closes(line: bytes) -> None:
    p = Parser()
    p.feed(line)
    with pytest.raises(CloseConnection):
        p.next_command()


_MANY = b"".join(b" a%d" % i for i in range(20))  # "foo" + these: 21 tokens


@pytest.mark.parametrize(
    "line",
    [
        b"x HTTP/1.1\r\n",  # a verb of one byte
        b"mx / HTTP/1.1\r\n",  # of two starting "m" (the meta commands')
        b"dx / HTTP/1.1\r\n",  # starting with one of memcached's own verbs' letters
        b"foo" + _MANY + b" a21 a22 HTTP/1.1\r\n",  # "HTTP/" is the 24th token, never read
    ],
)
def test_http_line_memcached_answers_error(line: bytes) -> None:
    """memcached tests an unknown verb's line for "HTTP/" in its last branch only, and in
    its 23rd token at most (its MAX_TOKENS)."""
    p = Parser()
    p.feed(line)
    assert p.next_command() == c.Invalid(Error.UNKNOWN_COMMAND)


def test_only_the_first_23_tokens_are_read() -> None:
    """memcached's tokenizer leaves the rest of a line past 23 tokens unread: "noreply" is
    looked for in the 23rd (set_noreply_maybe)."""
    p = Parser()
    p.feed(b"slabs automove 1" + _MANY[:-4] + b" noreply x\r\n")
    assert p.next_command() == c.SlabsAutomove(1, True)
    p.feed(b"watch" + _MANY + b" a21 fetchers x\r\n")
    cmd = p.next_command()
    assert isinstance(cmd, c.Watch)
    assert cmd.args == [b"a%d" % i for i in range(20)] + [b"a21", b"fetchers"]


def test_cas_disabled_shrinks_item_size() -> None:
    limit = 1024 * 1024
    assert item_total_size(1, 0, 10, False) == item_total_size(1, 0, 10, True) - 8
    p = Parser(item_size_max=limit, cas_enabled=False)
    p.feed(b"set k 0 0 %d\r\n" % (1048516 + 8))
    assert p.next_command() is NEED_DATA


@pytest.mark.parametrize(
    "tok,u32,u64,i32",
    [
        (b"0", 0, 0, 0),
        (b"+7", 7, 7, 7),
        (b"-0", 0, 0, 0),
        (b"-5", None, None, -5),
        (b"4294967295", 4294967295, 4294967295, -1),
        (b"4294967296", 0, 4294967296, 0),
        (b"18446744073709551615", 4294967295, 2**64 - 1, None),
        (b"18446744073709551616", None, None, None),
        # strtoull negates a minus-signed number modulo 2^64; safe_strtoull refuses only a
        # result that reads as negative in 64 bits
        (b"-18446744073709551615", 1, 1, None),
        (b"-9223372036854775809", 2**32 - 1, 2**63 - 1, None),
        (b"-9223372036854775808", None, None, 0),
        (b"-18446744073709551616", None, None, None),
        (b"18446744073709551615\t-", None, None, None),  # strchr looks past the number
        (b"2147483647", 2147483647, 2147483647, 2147483647),
        (b"12a", None, None, None),
        (b"", None, None, None),
        (b"-", None, None, None),
        (b"1_000", None, None, None),
        # whitespace around the number, as strtol and safe_strtol take it
        (b"5\r", 5, 5, 5),
        (b"\t5", 5, 5, 5),
        (b"5\tx", 5, 5, 5),
        (b" \v-5\f", None, None, -5),
        (b"+7\n", 7, 7, 7),
        (b"5x\r", None, None, None),
        (b"\r", None, None, None),
        (b"+\r", None, None, None),
        (b"\r 5", 5, 5, 5),  # strtol skips any leading whitespace
    ],
)
def test_number_parsers(tok: bytes, u32: int | None, u64: int | None, i32: int | None) -> None:
    assert parse_uint32(tok) == u32
    assert parse_uint64(tok) == u64
    assert parse_int32(tok) == i32


# ---- values received into place (receive_min) ----

INCOMING_CASES: list[tuple[str, bytes, c.Store]] = [
    ("set", b"set k 1 2 %d\r\n", c.Set(b"k", 1, 2, b"")),
    ("add", b"add k 0 0 %d noreply\r\n", c.Add(b"k", 0, 0, b"", True)),
    ("replace", b"replace k 0 0 %d\r\n", c.Replace(b"k", 0, 0, b"")),
    ("cas", b"cas k 0 0 %d 77\r\n", c.Cas(b"k", 0, 0, b"", 77)),
    ("append", b"append k 5 0 %d\r\n", c.Append(b"k", 5, 0, b"")),
    ("prepend", b"prepend k 0 0 %d noreply\r\n", c.Prepend(b"k", 0, 0, b"", True)),
    ("ms", b"ms k %d T30 F9\r\n", c.MetaSet(b"k", 9, 30, b"", [b"T30", b"F9"])),
    ("ms-append", b"ms k %d MA q\r\n", c.MetaAppend(b"k", 0, 0, b"", [b"MA", b"q"], quiet=True)),
    ("ms-prepend", b"ms k %d MP\r\n", c.MetaPrepend(b"k", 0, 0, b"", [b"MP"])),
    (
        "ms-cas",
        b"ms k %d C5 I\r\n",
        c.MetaCas(b"k", 0, 0, b"", [b"C5", b"I"], False, False, 5, True),
    ),
    ("ms-b", b"ms a2V5 %d b\r\n", c.MetaSet(b"key", 0, 0, b"", [b"b"], True)),
]


@pytest.mark.parametrize("name,line,store", INCOMING_CASES, ids=[x[0] for x in INCOMING_CASES])
def test_a_large_value_still_arriving_is_incoming(name: str, line: bytes, store: c.Store) -> None:
    """Every storage command, in both text syntaxes: its value is left to the server, which
    takes what came with the line and receives the rest itself."""
    p = Parser(receive_min=16384)
    n = 20_000
    p.feed(line % n + b"v" * 1000)
    assert p.next_command() == c.Incoming(store, n)
    assert p.take(n + 2) == b"v" * 1000
    assert p.buffered == 0 and not p.in_data_block
    p.feed(b"get k\r\n")  # the server received the value: lines resume
    assert p.next_command() == c.Get([b"k"])


def test_a_large_value_that_came_whole_is_parsed_as_usual() -> None:
    p = Parser(receive_min=16384)
    value = b"w" * 20_000
    p.feed(b"append k 0 0 20000\r\n" + value + b"\r\nms k 20000 MP\r\n" + value + b"\r\n")
    assert p.next_command() == c.Append(b"k", 0, 0, value)
    assert p.next_command() == c.MetaPrepend(b"k", 0, 0, value, [b"MP"])


def test_small_values_and_bad_meta_flags_are_never_incoming() -> None:
    p = Parser(receive_min=16384)
    p.feed(b"ms k 1000\r\n" + b"s" * 10)
    assert p.next_command() is NEED_DATA  # under receive_min: buffered
    p.feed(b"s" * 990 + b"\r\nms k 20000 Zz\r\n" + b"x" * 100)
    assert p.next_command() == c.MetaSet(b"k", 0, 0, b"s" * 1000, [])
    # a flag in error: the block is swallowed, never received
    assert p.next_command() is NEED_DATA
    p.feed(b"x" * 19_900 + b"\r\n")
    assert p.next_command() == c.Invalid(Error.META_FLAG_INVALID)


# ---- Parser.lone: a read that is one plain get (of any number of keys) / mg <key> v ----


def _lone_agrees(data: bytes) -> c.Command | None:
    """lone() on `data` fed at rest: when it answers, the command next_command() gives for
    the same bytes, all of them consumed; when it does not, nothing consumed."""
    p, q = Parser(), Parser()
    assert p.feed(data) and q.feed(data)
    cmd = p.lone()
    if cmd is None:
        assert p.buffered == len(data) and drain(p) == drain(q)
        return None
    assert drain(q) == [cmd]
    assert p.at_end and p.buffered == 0 and p.next_command() is NEED_DATA
    return cmd


@pytest.mark.parametrize(
    "data,expected", [(d, e) for _, d, e in CASES], ids=[n for n, _, _ in CASES]
)
def test_lone_agrees_with_next_command(data: bytes, expected: list[c.Command]) -> None:
    _lone_agrees(data)


@pytest.mark.parametrize(
    "data,kind",
    [
        (b"get k\r\n", c.Get),
        (b"get " + K250 + b"\r\n", c.Get),
        (b"get a\rb\r\n", c.Get),  # a CR inside a key is part of it, as next_command has it
        (b"mg k v\r\n", c.MetaValue),
        (b"get a b\r\n", c.Get),  # a multiget
        (b"get " + b" ".join([K250] * 30) + b"\r\n", c.Get),  # past MAX_LINE, whole
        (b"set k 0 0 1\r\nx\r\n", c.Set),
        (b"set " + K250 + b" 4294967 999999999 5\r\nab\r\nc\r\n", c.Set),  # CRLF in a value
        (b"set k 007 0 0\r\n\r\n", c.Set),  # leading zeros, an empty value
        (b"set a\rb 1 2 3\r\nxyz\r\n", c.Set),
    ],
)
def test_lone_takes_one_plain_get_mg_v_or_set(data: bytes, kind: type) -> None:
    assert type(_lone_agrees(data)) is kind


@pytest.mark.parametrize(
    "data",
    [
        b"get k\n",  # a bare LF
        b"get  k\r\n",  # a doubled space
        b"get k \r\n",
        b"get a  b\r\n",
        b"get a b \r\n",
        b"get a " + K251 + b"\r\n",
        b"get a b\r\nget c\r\n",
        b"mg a b v\r\n",
        b"get k\0x\r\n",  # a NUL ends the line for memcached: next_command's business
        b"get \r\n",
        b"get " + K251 + b"\r\n",
        b"get k\r\nget j\r\n",  # two lines
        b"get k",  # still arriving
        b"gets k\r\n",
        b"mg k\r\n",
        b"mg k v t\r\n",
        b"mg  v\r\n",
        b"mg " + K251 + b" v\r\n",
        b"set k 0 0 1 noreply\r\nx\r\n",
        b"set k 0 0 1\nx\r\n",  # a bare LF ends the line
        b"set k 0 0 1\r\nx\n",  # a bad data chunk: next_command's error
        b"set k 0 0 1\r\nxy\r\n",
        b"set k 0 0 2\r\nx\r\n",  # the block still arriving
        b"set k 0 0 1\r\nx",
        b"set k 0 0 1\r\nx\r\nget k\r\n",  # more after the block
        b"set k  0 0 1\r\nx\r\n",
        b"set k 0 0 1 \r\nx\r\n",
        b"set  k 0 0 1\r\nx\r\n",
        b"set k 0 0\r\n\r\n",
        b"set k 0 -1 1\r\nx\r\n",  # a negative exptime: memcached's parser
        b"set k 1234567890 0 1\r\nx\r\n",  # ten digits
        b"set k 0 0 +1\r\nx\r\n",
        b"set k\0j 0 0 1\r\nx\r\n",
        b"set " + K251 + b" 0 0 1\r\nx\r\n",
        b"set \r\n",
        b"setx k 0 0 1\r\nx\r\n",
        b"stats\r\n",
        b"s",
        b"\r\n",
    ],
)
def test_lone_leaves_everything_else_to_next_command(data: bytes) -> None:
    assert _lone_agrees(data) is None


def test_lone_never_answers_before_the_login() -> None:
    p = Parser(auth=True)
    assert p.feed(b"get k\r\n")  # a fresh request, but the login comes first
    assert p.lone() is None
    assert p.next_command() == c.Invalid(Error.UNAUTHENTICATED)
    p = Parser(auth=True)
    assert p.feed(b"set k 0 0 3\r\na b\r\n")  # the ASCII login is a set
    assert p.lone() is None


@pytest.mark.parametrize("size", [100, 1024 * 1024])
def test_lone_set_leaves_an_item_near_the_limit_to_next_command(size: int) -> None:
    """What passes -I, or nearly, is sized by next_command() (it swallows what is too
    large); lone takes only what fits whatever its flags."""
    taken = 0
    for vlen in range(size - 80, size + 3):
        data = b"set k 1 0 %d\r\n%b\r\n" % (vlen, b"v" * vlen)
        p, q = Parser(item_size_max=size), Parser(item_size_max=size)
        assert p.feed(data) and q.feed(data)
        cmd = p.lone()
        if cmd is None:
            assert p.buffered == len(data) and drain(p) == drain(q)  # nothing consumed
        else:
            taken += 1
            assert drain(q) == [cmd] and type(cmd) is c.Set
    assert 0 < taken < 83  # some taken, and those nearest the limit left


def test_lone_never_takes_a_data_block_for_a_line() -> None:
    p = Parser()
    p.feed(b"set k 0 0 7\r\n")
    assert p.next_command() is NEED_DATA  # the value comes next
    p.feed(b"get k\r\n\r\n")  # seven bytes of value that look like a get
    assert p.lone() is None
    assert p.next_command() == c.Set(b"k", 0, 0, b"get k\r\n", False)
