"""The text replies: exact bytes for every outcome, and memcached's noreply rule."""

from __future__ import annotations

import pytest

from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol import responses as r
from mcached.protocol.outcomes import Error, Out, Outcome, Pieces

pytestmark = pytest.mark.unit

QUIET = c.Set(b"k", 0, 0, b"v", noreply=True)
LOUD = c.Set(b"k", 0, 0, b"v")


def test_value_suffix_bytes() -> None:
    assert r.value_suffix(0, 5) == b" 0 5\r\n"
    assert r.value_suffix(4294967295, 0) == b" 4294967295 0\r\n"
    assert r.value_header(b"k", 7, 3) == b"VALUE k" + r.value_suffix(7, 3)
    assert r.value_header(b"k", 0, 3) == b"VALUE k 0 3\r\n"
    assert r.value_header(b"k", 7, 3, 99) == b"VALUE k 7 3 99\r\n"


def test_value_suffix_remembers_only_zero_flags_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table: dict[int, bytes] = {}
    monkeypatch.setattr(r, "ZERO_FLAGS_SUFFIX", table)
    r.value_suffix(3, 10)
    assert table == {}  # flags other than 0 are formatted each time
    r.value_suffix(0, 10)
    assert table == {10: b" 0 10\r\n"}
    for n in range(r.VALUE_SUFFIX_MAX + 100):
        assert r.value_suffix(0, n) == b" 0 %d\r\n" % n
    assert len(table) == r.VALUE_SUFFIX_MAX


def test_every_outcome_and_error_has_a_line() -> None:
    for member in [*Outcome, *Error]:
        line = r.DETAILED[member] % b"why" if member in r.DETAILED else r.LINES[member]
        assert line.endswith(b"\r\n") and b"\r\n" not in line[:-2]
    out: Out = []
    c.ConfigSet(b"cluster", 0, b"x").reply(out, Error.BAD_CLUSTER_CONFIG, "no nodes")
    assert out == [b"CLIENT_ERROR bad cluster configuration: no nodes\r\n"]


@pytest.mark.parametrize(
    "outcome,line",
    [
        (Outcome.STORED, b"STORED\r\n"),
        (Outcome.NOT_STORED, b"NOT_STORED\r\n"),
        (Outcome.EXISTS, b"EXISTS\r\n"),
        (Outcome.NOT_FOUND, b"NOT_FOUND\r\n"),
        (Outcome.DELETED, b"DELETED\r\n"),
        (Outcome.TOUCHED, b"TOUCHED\r\n"),
        (Outcome.OK, b"OK\r\n"),
        (Error.UNKNOWN_COMMAND, b"ERROR\r\n"),
        (Error.TOO_LARGE, b"SERVER_ERROR object too large for cache\r\n"),
        (Error.NO_MEMORY_STORING, b"SERVER_ERROR out of memory storing object\r\n"),
    ],
)
def test_reply_lines_and_noreply_hides_them(outcome: Outcome | Error, line: bytes) -> None:
    out: Out = []
    LOUD.reply(out, outcome)
    assert out == [line]
    QUIET.reply(out, outcome)  # memcached 1.6 hides errors too under noreply
    assert out == [line]


def test_errors_memcached_always_sends_ignore_noreply() -> None:
    cmd = c.RefreshCerts(noreply=True)
    out: Out = []
    cmd.reply(out, Error.TLS_NOT_ENABLED)
    cmd.reply(out, Error.CERTS_NOT_LOADED, "Error loading the key: no such file")
    cmd.reply(out, Outcome.OK)
    assert out == [b"Error TLS not enabled\r\n", b"Error loading the key: no such file\r\n"]


def test_commands_without_noreply_are_always_answered() -> None:
    for cmd in (c.Get([b"k"]), c.Stats([]), c.ShutdownCmd(None), c.Auth(b"u", b"p")):
        assert cmd.noreply is False
        out: Out = []
        cmd.reply(out, Error.UNKNOWN_COMMAND)
        assert out == [b"ERROR\r\n"]


def test_number() -> None:
    out: Out = []
    c.Incr(b"n", 1).reply_number(out, 18446744073709551615)
    c.Incr(b"n", 1, noreply=True).reply_number(out, 5)
    assert out == [b"18446744073709551615\r\n"]


def test_retrieval_bytes() -> None:
    cmd = c.Gets([b"a", b"b", b"c"])
    out: Out = []
    cmd.reply_value(out, b"a", b"xy", 0, None)
    cmd.reply_miss(out, b"b")
    cmd.reply_value(out, b"c", bytearray(b"z"), 7, 42)
    cmd.reply_end(out)
    assert b"".join(out) == b"VALUE a 0 2\r\nxy\r\nVALUE c 7 1 42\r\nz\r\nEND\r\n"


@pytest.mark.parametrize(
    "cmd",
    [c.Get([]), c.Gets([]), c.GetPart([]), b.BinGet(b"k", b.GETQ, 9, True), b.BinGetK(b"k")],
    ids=["get", "gets", "get-part", "binary-getq", "binary-getk"],
)
@pytest.mark.parametrize("with_cas", [False, True])
def test_values_are_each_key_value_or_miss(cmd: c.Get, with_cas: bool) -> None:
    """`reply_values`, a multiget's run of hits in one call: exactly `reply_value` of each
    hit and `reply_miss` of each miss, in order; keys past the hits are left for later."""
    keys = [b"a", b"b", b"c", b"d", b"e", b"f"]
    big = b"L" * 5000
    hits = [
        (b"xy", 0, 5),
        None,
        (bytearray(b"z"), 7, 42),
        (memoryview(big), 0, 6, 1234),  # lent: a fourth field, the pin's token
        (Pieces([memoryview(b"ab"), memoryview(b"cd")]), 2**32 - 1, 7, 99),
    ]
    out: Out = []
    cmd.reply_values(out, keys, hits, with_cas)
    each: Out = []
    for key, hit in zip(keys, hits, strict=False):
        if hit is None:
            cmd.reply_miss(each, key)
        else:
            cmd.reply_value(each, key, hit[0], hit[1], hit[2] if with_cas else None)
    assert out == each and b"f" not in b"".join(bytes(p) for p in out if p.__class__ is bytes)
    # lent values are queued as they are, never copied
    assert any(p is hits[3][0] for p in out) and any(p is hits[4][0] for p in out)  # type: ignore[index]


def test_text_values_bytes() -> None:
    out: Out = []
    c.Gets([]).reply_values(out, [b"a", b"b", b"c"], [(b"xy", 0, 5), None, (b"z", 7, 42)], True)
    assert b"".join(out) == b"VALUE a 0 2 5\r\nxy\r\nVALUE c 7 1 42\r\nz\r\n"
    out = []
    c.Get([]).reply_values(out, [b"a", b"b", b"c"], [(b"xy", 0, 5), None, (b"z", 7, 42)], False)
    assert b"".join(out) == b"VALUE a 0 2\r\nxy\r\nVALUE c 7 1\r\nz\r\n"


def test_meta_commands_have_no_run_of_values() -> None:
    with pytest.raises(NotImplementedError):
        c.MetaGet(b"k", []).reply_values([], [b"k"], [None], False)


@pytest.mark.parametrize("size", [0, 5, r.INLINE_VALUE_MAX, r.INLINE_VALUE_MAX + 1])
@pytest.mark.parametrize("flags", [0, 3])
def test_single_value_is_value_then_end(size: int, flags: int) -> None:
    cmd = c.Get([b"k"])
    data = b"v" * size
    one: Out = []
    cmd.reply_one_value(one, b"k", data, flags)
    two: Out = []
    cmd.reply_value(two, b"k", data, flags, None)
    cmd.reply_end(two)
    assert b"".join(one) == b"".join(two) == b"VALUE k %d %d\r\n%b\r\nEND\r\n" % (flags, size, data)
    # a small reply is one piece; a large value is sent as it is, never copied
    assert len(one) == 1 if size <= r.INLINE_VALUE_MAX else one[1] is data


def test_one_miss_is_miss_then_end() -> None:
    cmd = c.Get([b"k"])
    one: Out = []
    cmd.reply_one_miss(one, b"k")
    two: Out = []
    cmd.reply_miss(two, b"k")
    cmd.reply_end(two)
    assert one == two == [b"END\r\n"]


def test_blocks() -> None:
    out: Out = []
    cmd = c.Stats([])
    cmd.reply_stats(out, [("pid", 12), ("version", "1.6.18"), ("rusage_user", "0.100000")])
    cmd.reply_stats(out, [])
    cmd.reply_prefix_stats(out, [(b"user", 3, 2, 1, 0)])
    c.Version().reply_version(out, "1.6.18")
    assert out == [
        b"STAT pid 12\r\nSTAT version 1.6.18\r\nSTAT rusage_user 0.100000\r\nEND\r\n",
        b"END\r\n",
        b"PREFIX user get 3 hit 2 set 1 del 0\r\nEND\r\n",
        b"VERSION 1.6.18\r\n",
    ]


def test_metadump_lines() -> None:
    out: Out = []
    rows = [
        (b"a b/\xff", -1, 1700000000, 7, False, 96, 1),
        (b"k", 1700000100, 1700000001, 8, True, 100, 2),
    ]
    cmd = c.LruCrawler([b"metadump", b"all"])
    # one piece per batch of rows (a dump is streamed batch by batch), none for no rows,
    # then END
    cmd.reply_metadump(out, rows)
    cmd.reply_metadump(out, [])
    cmd.reply_metadump(out, rows[:1])
    cmd.reply_end(out)
    assert out == [
        b"key=a%20b%2F%FF exp=-1 la=1700000000 cas=7 fetch=no cls=1 size=96\n"
        b"key=k exp=1700000100 la=1700000001 cas=8 fetch=yes cls=2 size=100\n",
        b"key=a%20b%2F%FF exp=-1 la=1700000000 cas=7 fetch=no cls=1 size=96\n",
        b"END\r\n",
    ]


def test_cachedump_row_size_is_its_line() -> None:
    cmd = c.Stats([b"cachedump", b"1", b"0"])
    for key, nbytes, exptime in ((b"k", 0, 0), (b"a" * 250, 1_000_000, 1_700_000_000)):
        out: Out = []
        cmd.reply_cachedump(out, [(key, nbytes, exptime)])
        assert cmd.reply_cachedump_size(len(key), nbytes, exptime) == len(out[0]) - len(b"END\r\n")
    assert cmd.cachedump_room == 2 * 1024 * 1024 - 6  # memcached: its END and a NUL fit
    # the rows up to the cap, not one byte past it
    key = b"k" * 238  # a line of 256 bytes: 8192 of them would be 2 MB
    out = []
    cmd.reply_cachedump(out, [(key, 1, 0)] * 9000)
    line = b"ITEM %b [1 b; 0 s]\r\n" % key
    assert bytes(out[0]) == line * 8191 + b"END\r\n"
