"""Exact bytes of memcached 1.6's text protocol: malformed input, limits and connections.

Companion of test_wire.py (same rules: every expectation was recorded from memcached 1.6.18
and runs against both servers).  It proves how bad numbers, bad keys, bad data blocks,
oversized values, odd line endings, over-long lines, HTTP requests and a full -M cache are
answered, which of those errors ``noreply`` suppresses, and what the server does with the
bytes that follow a rejected command line (they are parsed as commands unless memcached
decided to swallow them).

Table cases send ``request + PROBE`` on a fresh connection and expect ``reply + END``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration.test_wire import stats
from tests.wire import Conn, exchange, roundtrip

pytestmark = pytest.mark.integration


BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
KEY250 = b"a" * 250
KEY251 = b"b" * 251
ZEROS = b"0" * 4300  # with one more digit: past int()'s 4,300


def cases(*rows: tuple[str, bytes, bytes]) -> list[Any]:
    return [pytest.param(req, exp, id=name) for name, req, exp in rows]


def set_cmd(key: bytes, length: int, flags: int = 0, verb: bytes = b"set") -> bytes:
    extra = b" 1" if verb == b"cas" else b""
    return b"%s %s %d 0 %d%s\r\n" % (verb, key, flags, length, extra)


# --- numbers and token counts on storage command lines ----------------------------------
# A rejected storage line is not followed by a swallowed data block: the block is parsed
# as a command line of its own (here "x" -> ERROR).

FORMAT = cases(
    ("flags-0", b"set k 0 0 1\r\nx\r\nget k\r\n", b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n"),
    (
        "flags-2**32-1",
        b"set k 4294967295 0 1\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 4294967295 1\r\nx\r\nEND\r\n",
    ),
    # strtoul into 64 bits, then truncated to 32: 2**32 is stored as 0, 2**32+1 as 1.
    (
        "flags-2**32-truncated",
        b"set k 4294967296 0 1\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "flags-2**32+1-truncated",
        b"set k 4294967297 0 1\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 1 1\r\nx\r\nEND\r\n",
    ),
    (
        "flags-plus-sign",
        b"set k +5 0 1\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 5 1\r\nx\r\nEND\r\n",
    ),
    ("flags-2**64", b"set k 18446744073709551616 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("flags-negative", b"set k -1 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("flags-abc", b"set k abc 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    (
        "bad-line-keeps-old-value",
        b"set k 0 0 1\r\na\r\nset k -1 0 1\r\nx\r\nget k\r\n",
        b"STORED\r\n" + BAD_FORMAT + b"ERROR\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    ("exptime-abc", b"set k 0 abc 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("exptime-float", b"set k 0 1.5 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("exptime-negative-gone", b"set k 0 -1 1\r\nx\r\nget k\r\n", b"STORED\r\nEND\r\n"),
    ("length-abc", b"set k 0 0 abc\r\n", BAD_FORMAT),
    ("length-negative", b"set k 0 0 -1\r\n", BAD_FORMAT),
    ("length-trailing-garbage", b"set k 0 0 1x\r\n", BAD_FORMAT),
    ("length-2**31", b"set k 0 0 2147483648\r\n", BAD_FORMAT),
    ("length-2**31-1", b"set k 0 0 2147483647\r\n", BAD_FORMAT),
    ("length-2**32-1", b"set k 0 0 4294967295\r\n", BAD_FORMAT),
    ("length-2**64-1", b"set k 0 0 18446744073709551615\r\n", BAD_FORMAT),
    # strtol into 64 bits, then truncated to a 32-bit int: 2**32 is a 0-byte value.
    (
        "length-2**32-is-zero",
        b"set k 0 0 4294967296\r\n\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 0\r\n\r\nEND\r\n",
    ),
    (
        "length-plus-sign",
        b"set k 0 0 +1\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "length-leading-zero",
        b"set k 0 0 01\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    ("set-missing-length", b"set k 0 0\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    ("set-missing-length-trailing-space", b"set k 0 0 \r\n", b"ERROR\r\n"),
    ("set-key-only", b"set k\r\n", b"ERROR\r\n"),
    ("set-no-key", b"set\r\n", b"ERROR\r\n"),
    ("set-too-many-tokens", b"set k 0 0 1 2 3\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    ("set-noreply-not-last", b"set k 0 0 1 noreply extra\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    ("cas-missing-unique", b"cas k 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
    ("cas-unique-abc", b"cas k 0 0 1 abc\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("cas-unique-negative", b"cas k 0 0 1 -1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("cas-unique-2**64", b"cas k 0 0 1 18446744073709551616\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("touch-noreply-not-last", b"touch k 0 noreply extra\r\n", b"ERROR\r\n"),
    # numbers of more than 4,300 digits, which Python's int() refuses (the connection
    # closed, its earlier replies lost: a text and binary hunt); strtoul reads any number
    # of leading zeros, and finds a longer number out of range
    (
        "flags-4301-digits",
        b"set k %b1 0 1\r\nx\r\nget k\r\n" % ZEROS,
        b"STORED\r\nVALUE k 1 1\r\nx\r\nEND\r\n",
    ),
    ("incr-delta-4301-digits", b"set n 0 0 1\r\n5\r\nincr n %b1\r\n" % ZEROS, b"STORED\r\n6\r\n"),
    (
        "incr-value-4301-digits",
        b"set n 0 0 4301\r\n%b5\r\nincr n 1\r\n" % ZEROS,
        b"STORED\r\n6\r\n",
    ),
    (
        "touch-exptime-4301-digits",
        b"set n 0 0 1\r\n5\r\ntouch n %b1\r\n" % ZEROS,
        b"STORED\r\nTOUCHED\r\n",
    ),
    (
        "mg-T-4301-digits",
        b"set n 0 0 1\r\n5\r\nmg n T%b1 v\r\n" % ZEROS,
        b"STORED\r\nVA 1\r\n5\r\n",
    ),
    (
        "ma-D-4301-digits",
        b"set n 0 0 1\r\n5\r\nma n D%b1 v\r\n" % ZEROS,
        b"STORED\r\nVA 1\r\n6\r\n",
    ),
    (
        "incr-delta-5000-nines",
        b"set n 0 0 1\r\n5\r\nincr n %b\r\n" % (b"9" * 5000),
        b"STORED\r\nCLIENT_ERROR invalid numeric delta argument\r\n",
    ),
    (
        "incr-value-5000-nines",
        b"set n 0 0 5000\r\n%b\r\nincr n 1\r\n" % (b"9" * 5000),
        b"STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    ),
    ("cas-unique-5000-ones", b"cas n 0 0 1 %b\r\nx\r\n" % (b"1" * 5000), BAD_FORMAT + b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), FORMAT)
def test_command_line_format(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- keys ---------------------------------------------------------------------------------

KEYS = cases(
    (
        "250-byte-key",
        b"set " + KEY250 + b" 0 0 1\r\nx\r\nget " + KEY250 + b"\r\n",
        b"STORED\r\nVALUE " + KEY250 + b" 0 1\r\nx\r\nEND\r\n",
    ),
    ("set-251", b"set " + KEY251 + b" 0 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    (
        "set-251-data-block-runs-as-command",
        b"set a 0 0 1\r\n1\r\nset " + KEY251 + b" 0 0 5\r\nget a\r\n",
        b"STORED\r\n" + BAD_FORMAT + b"VALUE a 0 1\r\n1\r\nEND\r\n",
    ),
    ("set-251-noreply", b"set " + KEY251 + b" 0 0 1 noreply\r\nx\r\n", b"ERROR\r\n"),
    ("add-251", b"add " + KEY251 + b" 0 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("append-251", b"append " + KEY251 + b" 0 0 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("cas-251", b"cas " + KEY251 + b" 0 0 1 1\r\nx\r\n", BAD_FORMAT + b"ERROR\r\n"),
    ("get-251", b"get " + KEY251 + b"\r\n", BAD_FORMAT),
    ("gets-251", b"gets " + KEY251 + b"\r\n", BAD_FORMAT),
    ("gat-251", b"gat 0 " + KEY251 + b"\r\n", BAD_FORMAT),
    ("delete-251", b"delete " + KEY251 + b"\r\n", BAD_FORMAT),
    ("delete-251-noreply", b"delete " + KEY251 + b" noreply\r\n", b""),
    ("incr-251", b"incr " + KEY251 + b" 1\r\n", BAD_FORMAT),
    ("decr-251", b"decr " + KEY251 + b" 1\r\n", BAD_FORMAT),
    ("incr-251-noreply", b"incr " + KEY251 + b" 1 noreply\r\n", b""),
    ("touch-251", b"touch " + KEY251 + b" 1\r\n", BAD_FORMAT),
    ("touch-251-noreply", b"touch " + KEY251 + b" 1 noreply\r\n", b""),
    (
        "key-with-control-chars",
        b"set k\x01\x02\x7f 0 0 1\r\nx\r\nget k\x01\x02\x7f\r\n",
        b"STORED\r\nVALUE k\x01\x02\x7f 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "key-with-tab",
        b"set k\tz 0 0 1\r\nx\r\nget k\tz k\r\n",
        b"STORED\r\nVALUE k\tz 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "key-with-high-bytes",
        b"set \xc3\xa9 0 0 1\r\nx\r\nget \xc3\xa9\r\n",
        b"STORED\r\nVALUE \xc3\xa9 0 1\r\nx\r\nEND\r\n",
    ),
    # A NUL ends the command line: "set k" has too few tokens, then "x" is a command.
    ("key-with-nul", b"set k\x00z 0 0 1\r\nx\r\n", b"ERROR\r\nERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), KEYS)
def test_keys(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


@pytest.mark.parametrize("verb", [b"get", b"gets", b"gat 0"])
def test_too_long_key_drops_values_already_found_by_that_get(server: Server, verb: bytes) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"set a 0 0 1\r\n1\r\n", b"STORED\r\n")
        exchange(conn, verb + b" a " + KEY251 + b" a\r\n", BAD_FORMAT)


@pytest.mark.parametrize("verb", [b"get", b"gets", b"gat 100"])
def test_too_long_key_keeps_the_effects_of_the_keys_before_it(server: Server, verb: bytes) -> None:
    """memcached looks the keys before the bad one up (counted, marked fetched, touched)
    and drops only their reply; those after it are never looked at. A differential fuzzer
    found mcached refusing the whole line first: nothing counted, nothing touched."""
    with Conn(server.address) as conn:
        exchange(conn, b"set a 0 0 1\r\n1\r\nset c 0 0 1\r\n2\r\n", b"STORED\r\nSTORED\r\n")
        before = stats(conn)
        conn.send(verb + b" a zz " + KEY251 + b" c\r\n")
        assert conn.read_until(b"\r\n") == BAD_FORMAT
        after = stats(conn)
        names = ["cmd_get", "get_hits", "get_misses", "cmd_touch", "touch_hits", "touch_misses"]
        moved = {n: int(after[n]) - int(before[n]) for n in names}
        touched = verb.startswith(b"gat")
        # a and zz, one hit and one miss, as gets or as touches
        want = {"cmd_get": 2, "get_hits": 1, "get_misses": 1}
        if touched:
            want = {"cmd_touch": 2, "touch_hits": 1, "touch_misses": 1}
        assert {n: v for n, v in moved.items() if v} == want
        exchange(conn, b"mg a h\r\nmg c h\r\n", b"HD h1\r\nHD h0\r\n")  # c: never read
        conn.send(b"mg a t\r\n")
        ttl = conn.read_until(b"\r\n")
        assert ttl == b"HD t-1\r\n" if not touched else ttl in (b"HD t100\r\n", b"HD t99\r\n")


# --- data blocks --------------------------------------------------------------------------
# Exactly length+2 bytes are read as the block; when they do not end in \r\n the item is
# dropped with "bad data chunk" and parsing resumes right after those bytes.

DATA = cases(
    ("longer-by-2", b"set k 0 0 1\r\nxyz\r\nget k\r\n", BAD_CHUNK + b"ERROR\r\nEND\r\n"),
    ("longer-by-1", b"set k 0 0 3\r\nabcd\r\nget k\r\n", BAD_CHUNK + b"ERROR\r\nEND\r\n"),
    ("empty-declared-two-sent", b"set k 0 0 0\r\nab\r\n", BAD_CHUNK + b"ERROR\r\n"),
    # "x\r\nge" is the block, then "t k" is an unknown command.
    ("shorter-eats-next-line", b"set k 0 0 3\r\nx\r\nget k\r\n", BAD_CHUNK + b"ERROR\r\n"),
    ("bare-lf-terminator", b"set k 0 0 1\r\nx\nget k\r\n", BAD_CHUNK + b"ERROR\r\n"),
    (
        "set-keeps-old-value",
        b"set k 0 0 3\r\nabc\r\nset k 0 0 3\r\nabcd\r\nget k\r\n",
        b"STORED\r\n" + BAD_CHUNK + b"ERROR\r\nVALUE k 0 3\r\nabc\r\nEND\r\n",
    ),
    (
        "append-keeps-old-value",
        b"set k 0 0 3\r\nabc\r\nappend k 0 0 3\r\nabcd\r\nget k\r\n",
        b"STORED\r\n" + BAD_CHUNK + b"ERROR\r\nVALUE k 0 3\r\nabc\r\nEND\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), DATA)
def test_bad_data_chunk(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- which errors noreply suppresses ------------------------------------------------------
# Every error raised while handling a noreply command is suppressed (CLIENT_ERROR and
# SERVER_ERROR alike); what still arrives is the ERROR for a data block that gets parsed
# as a command, and ERROR for a line that is not a valid command at all.

NOREPLY_ERRORS = cases(
    ("set-length-abc", b"set k 0 0 abc noreply\r\nget k\r\n", b"END\r\n"),
    ("set-length-negative", b"set k 0 0 -1 noreply\r\n", b""),
    ("set-flags-abc-block-still-parsed", b"set k abc 0 1 noreply\r\nx\r\n", b"ERROR\r\n"),
    ("set-exptime-abc-block-still-parsed", b"set k 0 abc 1 noreply\r\nx\r\n", b"ERROR\r\n"),
    ("cas-unique-abc-block-still-parsed", b"cas k 0 0 1 abc noreply\r\nx\r\n", b"ERROR\r\n"),
    (
        "bad-data-chunk",
        b"set k 0 0 1 noreply\r\nxyz\r\nget k\r\n",
        b"ERROR\r\nEND\r\n",  # the chunk error is suppressed, the leftover "\r\n" is not
    ),
    ("incr-non-numeric", b"set n 0 0 1\r\na\r\nincr n 1 noreply\r\n", b"STORED\r\n"),
    ("incr-bad-delta", b"set n 0 0 1\r\n1\r\nincr n abc noreply\r\n", b"STORED\r\n"),
    ("delete-nonzero-time", b"delete k 1 noreply\r\n", b""),
    ("touch-bad-exptime", b"touch k abc noreply\r\n", b""),
    ("verbosity-abc", b"verbosity abc noreply\r\n", b""),
    ("unknown-command", b"foo noreply\r\n", b"ERROR\r\n"),
    ("missing-tokens", b"incr noreply\r\n", b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), NOREPLY_ERRORS)
def test_noreply_errors(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- line handling ------------------------------------------------------------------------

LINES = cases(
    (
        "lf-only-command-lines",
        b"set k 0 0 1\nx\r\nget k\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "multiple-spaces",
        b"set k  0   0 1\r\ny\r\nget   k\r\n",
        b"STORED\r\nVALUE k 0 1\r\ny\r\nEND\r\n",
    ),
    (
        "trailing-space",
        b"set k 0 0 1 \r\nz\r\nget k \r\n",
        b"STORED\r\nVALUE k 0 1\r\nz\r\nEND\r\n",
    ),
    (
        "leading-spaces",
        b"set k 0 0 1\r\nz\r\n  get k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nz\r\nEND\r\n",
    ),
    ("empty-line", b"\r\n", b"ERROR\r\n"),
    ("empty-lf-line", b"\n", b"ERROR\r\n"),
    ("spaces-only", b"   \r\n", b"ERROR\r\n"),
    ("empty-lines-then-command", b"\r\n\r\nget k\r\n", b"ERROR\r\nERROR\r\nEND\r\n"),
    ("unknown-command", b"foo\r\n", b"ERROR\r\n"),
    ("commands-are-case-sensitive", b"GET k\r\nGet k\r\nSTATS\r\n", b"ERROR\r\n" * 3),
    ("binary-garbage", b"\xff\xfe\xfd\x01\r\n", b"ERROR\r\n"),
    # C strings: the line ends at a NUL.
    (
        "nul-ends-the-line",
        b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a\x00 b\r\n",
        b"STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
    ),
    ("nul-inside-verb", b"ver\x00sion\r\n", b"ERROR\r\n"),
    ("nul-first", b"\x00get k\r\n", b"ERROR\r\n"),
    # A bare CR is an ordinary key byte: the keys are "a\rget" and "a".
    (
        "bare-cr-inside-line",
        b"set a 0 0 1\r\n1\r\nget a\rget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
    ),
    ("http-token-lowercase", b"foo http/1.1\r\n", b"ERROR\r\n"),
    ("http-token-not-last", b"foo HTTP/1.1 bar\r\n", b"ERROR\r\n"),
    ("http-token-as-key", b"get HTTP/1.1\r\n", b"END\r\n"),
    ("http-token-as-noreply-slot", b"set k 0 0 1 HTTP/1.1\r\nx\r\n", b"STORED\r\n"),
    ("long-line-with-newline-in-one-send", b"x" * 3000 + b"\r\n", b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), LINES)
def test_line_handling(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /x HTTP/1.0\r\n",
        b"foo HTTP/\r\n",
        b"HTTP/1.1\r\n",
    ],
    ids=["get", "post", "bare-prefix", "token-alone"],
)
def test_http_request_line_closes_silently(server: Server, request_: bytes) -> None:
    """An unknown command whose last token starts with "HTTP/" closes the connection."""
    with Conn(server.address) as conn:
        conn.send(request_)
        assert conn.read_for(1.0) == b""
        assert conn.closed()


@pytest.mark.parametrize(
    "data",
    [
        b"x" * 2049,
        b"x" * 8000,
        b"set k 0 0 1 " + b"x" * 3000,
        b"  " + b"x" * 3000,
        b"gat 0 " + b"k " * 1500,
    ],
    ids=["2049-bytes", "8000-bytes", "set-line", "leading-spaces", "gat-is-not-exempt"],
)
def test_over_2048_bytes_without_newline_closes(server: Server, data: bytes) -> None:
    with Conn(server.address) as conn:
        conn.send(data)
        assert conn.read_for(1.0) == b""
        assert conn.closed()


@pytest.mark.parametrize("verb", [b"", b"set ", b"gat 1 ", b"mg "])
def test_a_line_past_16k_closes_even_with_its_newline(server: Server, verb: bytes) -> None:
    """memcached reads into a 16 KB buffer: a line (but a get's) whose newline lies further
    than that never fits, so it hangs up whatever the reads, where a line 1 byte shorter
    sent the same way is answered. A differential fuzzer found mcached (reading 64 KB at a
    time) answering both."""
    for n, closes in ((16382, False), (16383, True)):
        with Conn(server.address) as conn:
            conn.send(verb + b"a" * (n - len(verb)) + b"\r\nmn\r\n")
            if closes:
                assert conn.closed(), n
            else:
                reply = conn.read_until(b"MN\r\n")
                assert reply in (b"ERROR\r\nMN\r\n", BAD_FORMAT + b"MN\r\n"), (n, reply[:80])


def test_a_get_line_past_16k_is_answered(server: Server) -> None:
    keys = b" ".join(b"key%05d" % i for i in range(2500))  # 22,499 bytes
    with Conn(server.address) as conn:
        exchange(conn, b"set key02499 0 0 1\r\nx\r\n", b"STORED\r\n")
        conn.send(b"get " + keys + b"\r\n")
        assert conn.read_until(b"END\r\n") == b"VALUE key02499 0 1\r\nx\r\nEND\r\n"


def test_2048_bytes_without_newline_waits(server: Server) -> None:
    with Conn(server.address) as conn:
        conn.send(b"x" * 2048)
        assert conn.read_for(0.5) == b""
        exchange(conn, b"\r\n", b"ERROR\r\n")


@pytest.mark.parametrize("verb", [b"get", b"gets"])
def test_long_get_line_arriving_in_pieces(server: Server, verb: bytes) -> None:
    """get/gets lines may exceed 2048 bytes before their newline arrives."""
    keys = b" ".join(b"key%d" % i for i in range(600))
    with Conn(server.address) as conn:
        exchange(conn, b"set key599 0 0 1\r\nx\r\n", b"STORED\r\n")
        conn.send(verb + b" " + keys)
        assert conn.read_for(0.5) == b""
        conn.send(b"\r\n")
        reply = conn.read_until(b"END\r\n")
    assert reply.startswith(b"VALUE key599 0 1") and reply.endswith(b"\r\nx\r\nEND\r\n")


# --- values over the item size limit ------------------------------------------------------
# memcached counts 48 (header) + 8 (cas) + key+1 + value+2, plus 4 when flags != 0,
# against -I: with the default 1m and key "k" the largest value is 1048516 bytes.

BIG = 1_100_000


def test_too_large_is_swallowed_and_connection_kept(server: Server) -> None:
    roundtrip(
        server,
        set_cmd(b"k", BIG) + b"x" * BIG + b"\r\nget k\r\nset k 0 0 1\r\ny\r\nget k\r\n",
        TOO_LARGE + b"END\r\nSTORED\r\nVALUE k 0 1\r\ny\r\nEND\r\n",
    )


def test_too_large_set_deletes_old_value(server: Server) -> None:
    roundtrip(
        server,
        b"set k 0 0 3\r\nold\r\n" + set_cmd(b"k", BIG) + b"x" * BIG + b"\r\nget k\r\n",
        b"STORED\r\n" + TOO_LARGE + b"END\r\n",
    )


@pytest.mark.parametrize("verb", [b"add", b"replace", b"append", b"prepend", b"cas"])
def test_too_large_other_verbs_keep_old_value(server: Server, verb: bytes) -> None:
    roundtrip(
        server,
        b"set k 0 0 3\r\nold\r\n" + set_cmd(b"k", BIG, verb=verb) + b"x" * BIG + b"\r\nget k\r\n",
        b"STORED\r\n" + TOO_LARGE + b"VALUE k 0 3\r\nold\r\nEND\r\n",
    )


def test_too_large_reply_comes_after_the_swallowed_block(server: Server) -> None:
    with Conn(server.address) as conn:
        conn.send(set_cmd(b"k", BIG))
        assert conn.read_for(0.5) == b""  # nothing until the block has been read
        conn.send(b"x" * BIG)
        assert conn.read_for(0.5) == b""  # still waiting for the final 2 bytes
        exchange(conn, b"\r\n", TOO_LARGE)


def test_too_large_swallows_exactly_length_plus_2(server: Server) -> None:
    """The swallowed block's last 2 bytes are not checked; what follows is parsed."""
    roundtrip(
        server,
        set_cmd(b"k", BIG) + b"x" * BIG + b"YY\r\nget k\r\n",
        TOO_LARGE + b"ERROR\r\nEND\r\n",
    )


def test_too_large_noreply_is_silent(server: Server) -> None:
    roundtrip(
        server,
        b"set k 0 0 3\r\nold\r\nset k 0 0 %d noreply\r\n" % BIG + b"x" * BIG + b"\r\nget k\r\n",
        b"STORED\r\nEND\r\n",
    )


@pytest.mark.parametrize(
    ("flags", "key", "item_flags", "largest"),
    [
        ((), b"k", 0, 1048516),
        ((), b"k", 1, 1048512),
        ((), b"k" * 10, 0, 1048507),
        (("-C",), b"k", 0, 1048524),
        (("-I", "2m"), b"k", 0, 2097092),
    ],
    ids=["default", "nonzero-flags", "10-byte-key", "cas-disabled", "I-2m"],
)
def test_item_size_boundary(
    kind: str,
    server_factory: Callable[..., Server],
    flags: tuple[str, ...],
    key: bytes,
    item_flags: int,
    largest: int,
) -> None:
    srv = server_factory(kind, *flags)
    with Conn(srv.address) as conn:
        exchange(
            conn,
            set_cmd(key, largest, item_flags) + b"v" * largest + b"\r\n",
            b"STORED\r\n",
        )
        exchange(
            conn,
            set_cmd(key, largest + 1, item_flags)
            + b"w" * (largest + 1)
            + b"\r\nget "
            + key
            + b"\r\n",
            TOO_LARGE + b"END\r\n",
        )


# --- -M: out of memory instead of evicting ------------------------------------------------


def test_no_evictions_out_of_memory(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-M", "-m", "2")
    value = b"x" * 100_000
    with Conn(srv.address) as conn:
        stored = 0
        while True:
            conn.send(set_cmd(b"k%d" % stored, len(value)) + value + b"\r\n")
            reply = conn.read_until(b"\r\n")
            if reply != b"STORED\r\n":
                break
            stored += 1
            assert stored < 200, "a 2 MB -M cache kept accepting 100 kB values"
        assert reply == NO_MEMORY
        assert stored >= 5
        # Suppressed by noreply; a failed set of an existing key deletes it; nothing was
        # evicted to make room.
        exchange(
            conn,
            set_cmd(b"new", len(value))[:-2] + b" noreply\r\n" + value + b"\r\n",
            b"",
        )
        exchange(
            conn,
            set_cmd(b"k1", len(value)) + value + b"\r\nget k1\r\n",
            NO_MEMORY + b"END\r\n",
        )
        exchange(conn, b"get k0\r\n", b"VALUE k0 0 100000\r\n" + value + b"\r\nEND\r\n")
        conn.send(b"stats settings\r\n")
        assert b"STAT evictions off\r\n" in conn.read_until(b"END\r\n")
