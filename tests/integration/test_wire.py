"""Exact bytes of memcached 1.6's text protocol: each command and its own replies.

Every expectation below was recorded from the reference memcached 1.6.18 binary and runs
against both servers (``mcached`` and ``memcached``) through the ``server`` fixture, so a
green run against memcached proves the bytes are memcached's, and a green run against
mcached proves we send the same ones.  This file covers the normal behaviour of each
command (storage, retrieval, delete, incr/decr, touch/gat, noreply, flush_all, stats,
pipelining); malformed input, limits and connection handling live in test_wire_errors.py.

Table cases send ``request + PROBE`` on a fresh connection and expect ``reply + END``: the
probe (a ``get`` of a key no case uses) proves no byte arrives after the expected reply
without waiting for the connection to go quiet.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from mcached.settings import default_threads
from tests.conftest import Server
from tests.wire import PROBE, Conn, exchange, roundtrip

pytestmark = pytest.mark.integration


def stats(conn: Conn, sub: bytes = b"") -> dict[str, str]:
    """`stats [sub]` as a dict, asserting every line is `STAT <name> <value>`."""
    conn.send(b"stats" + (b" " + sub if sub else b"") + b"\r\n")
    raw = conn.read_until(b"END\r\n")
    lines = raw.split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    out: dict[str, str] = {}
    for line in lines[:-2]:
        m = re.fullmatch(rb"STAT (\S+) (.*)", line)
        assert m, line
        out[m.group(1).decode()] = m.group(2).decode()
    return out


def gets_cas(conn: Conn, key: bytes) -> int:
    conn.send(b"gets " + key + b"\r\n")
    header = conn.read_until(b"END\r\n").split(b"\r\n")[0]
    m = re.fullmatch(rb"VALUE \S+ \d+ \d+ (\d+)", header)
    assert m, header
    return int(m.group(1))


def cases(*rows: tuple[str, bytes, bytes]) -> list[Any]:
    return [pytest.param(req, exp, id=name) for name, req, exp in rows]


# --- storage commands -------------------------------------------------------------------

STORAGE = cases(
    (
        "set-stored",
        b"set k 0 0 5\r\nhello\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n",
    ),
    ("set-empty-value", b"set k 0 0 0\r\n\r\nget k\r\n", b"STORED\r\nVALUE k 0 0\r\n\r\nEND\r\n"),
    (
        "set-value-containing-crlf",
        b"set k 0 0 4\r\na\r\nb\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 4\r\na\r\nb\r\nEND\r\n",
    ),
    (
        "set-overwrites-value-and-flags",
        b"set k 1 0 1\r\na\r\nset k 2 0 2\r\nbb\r\nget k\r\n",
        b"STORED\r\nSTORED\r\nVALUE k 2 2\r\nbb\r\nEND\r\n",
    ),
    ("add-new", b"add k 3 0 1\r\nx\r\nget k\r\n", b"STORED\r\nVALUE k 3 1\r\nx\r\nEND\r\n"),
    (
        "add-existing",
        b"set k 0 0 1\r\na\r\nadd k 0 0 1\r\nb\r\nget k\r\n",
        b"STORED\r\nNOT_STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    ("replace-missing", b"replace k 0 0 1\r\nx\r\nget k\r\n", b"NOT_STORED\r\nEND\r\n"),
    (
        "replace-existing",
        b"set k 1 0 1\r\na\r\nreplace k 7 0 2\r\nxy\r\nget k\r\n",
        b"STORED\r\nSTORED\r\nVALUE k 7 2\r\nxy\r\nEND\r\n",
    ),
    ("append-missing", b"append k 0 0 1\r\nx\r\nget k\r\n", b"NOT_STORED\r\nEND\r\n"),
    ("prepend-missing", b"prepend k 0 0 1\r\nx\r\nget k\r\n", b"NOT_STORED\r\nEND\r\n"),
    (
        "append-prepend-keep-original-flags",
        b"set k 5 0 1\r\na\r\nappend k 9 0 1\r\nb\r\nprepend k 7 0 1\r\nc\r\nget k\r\n",
        b"STORED\r\nSTORED\r\nSTORED\r\nVALUE k 5 3\r\ncab\r\nEND\r\n",
    ),
    (
        "append-empty-value",
        b"set k 0 0 1\r\na\r\nappend k 0 0 0\r\n\r\nget k\r\n",
        b"STORED\r\nSTORED\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    ("cas-missing", b"cas k 0 0 1 1\r\nx\r\nget k\r\n", b"NOT_FOUND\r\nEND\r\n"),
    (
        "cas-wrong-unique",
        b"set k 0 0 1\r\na\r\ncas k 0 0 1 999\r\nx\r\nget k\r\n",
        b"STORED\r\nEXISTS\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    (
        "cas-zero-unique",
        b"set k 0 0 1\r\na\r\ncas k 0 0 1 0\r\nx\r\nget k\r\n",
        b"STORED\r\nEXISTS\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    # The optional 6th token of set is only special when it is exactly "noreply".
    (
        "set-sixth-token-not-noreply-ignored",
        b"set k 0 0 1 garbage\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "add-sixth-token-not-noreply-ignored",
        b"set k 0 0 1\r\na\r\nadd k 0 0 1 1\r\nx\r\n",
        b"STORED\r\nNOT_STORED\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), STORAGE)
def test_storage(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- retrieval, touch, delete -----------------------------------------------------------

RETRIEVAL = cases(
    ("get-miss", b"get k\r\n", b"END\r\n"),
    ("get-no-key", b"get\r\n", b"ERROR\r\n"),
    ("get-no-key-trailing-spaces", b"get  \r\n", b"ERROR\r\n"),
    ("gets-no-key", b"gets\r\n", b"ERROR\r\n"),
    (
        "get-hits-misses-duplicates",
        b"set a 1 0 1\r\nx\r\nset b 2 0 2\r\nyy\r\nget a nope b a nope2 a\r\n",
        b"STORED\r\nSTORED\r\nVALUE a 1 1\r\nx\r\nVALUE b 2 2\r\nyy\r\n"
        b"VALUE a 1 1\r\nx\r\nVALUE a 1 1\r\nx\r\nEND\r\n",
    ),
    ("gets-miss", b"gets a b\r\n", b"END\r\n"),
    ("gat-no-exptime", b"gat\r\n", b"ERROR\r\n"),
    ("gats-no-exptime", b"gats\r\n", b"ERROR\r\n"),
    ("gat-no-key", b"gat 0\r\n", b"END\r\n"),
    ("gats-no-key", b"gats 0\r\n", b"END\r\n"),
    ("gat-bad-exptime", b"gat abc k\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    (
        "gat-hits-misses-duplicates",
        b"set a 3 0 1\r\n1\r\ngat 100 a nope a\r\n",
        b"STORED\r\nVALUE a 3 1\r\n1\r\nVALUE a 3 1\r\n1\r\nEND\r\n",
    ),
    (
        "gat-negative-exptime-returns-then-expires",
        b"set a 0 0 1\r\n1\r\ngat -1 a\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nEND\r\n",
    ),
    ("touch-hit", b"set a 0 0 1\r\n1\r\ntouch a 10\r\n", b"STORED\r\nTOUCHED\r\n"),
    ("touch-miss", b"touch a 10\r\n", b"NOT_FOUND\r\n"),
    (
        "touch-bad-exptime",
        b"set a 0 0 1\r\n1\r\ntouch a abc\r\n",
        b"STORED\r\nCLIENT_ERROR invalid exptime argument\r\n",
    ),
    ("touch-no-exptime", b"touch a\r\n", b"ERROR\r\n"),
    ("touch-no-key", b"touch\r\n", b"ERROR\r\n"),
    ("touch-extra-token-ignored", b"set a 0 0 1\r\n1\r\ntouch a 1 2\r\n", b"STORED\r\nTOUCHED\r\n"),
    (
        "touch-negative-expires",
        b"set a 0 0 1\r\n1\r\ntouch a -1\r\nget a\r\n",
        b"STORED\r\nTOUCHED\r\nEND\r\n",
    ),
    ("delete-hit", b"set a 0 0 1\r\n1\r\ndelete a\r\nget a\r\n", b"STORED\r\nDELETED\r\nEND\r\n"),
    ("delete-miss", b"delete a\r\n", b"NOT_FOUND\r\n"),
    ("delete-zero-time", b"set a 0 0 1\r\n1\r\ndelete a 0\r\n", b"STORED\r\nDELETED\r\n"),
    (
        "delete-zero-time-noreply",
        b"set a 0 0 1\r\n1\r\ndelete a 0 noreply\r\nget a\r\n",
        b"STORED\r\nEND\r\n",
    ),
    (
        "delete-nonzero-time",
        b"set a 0 0 1\r\n1\r\ndelete a 1\r\nget a\r\n",
        b"STORED\r\nCLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
        b"VALUE a 0 1\r\n1\r\nEND\r\n",
    ),
    (
        "delete-bad-third-token",
        b"delete a foo\r\n",
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    ),
    (
        "delete-noreply-not-last",
        b"delete a noreply extra\r\n",
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    ),
    ("delete-no-key", b"delete\r\n", b"ERROR\r\n"),
    ("delete-too-many-tokens", b"delete a 0 noreply x\r\n", b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), RETRIEVAL)
def test_retrieval_touch_delete(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- noreply ----------------------------------------------------------------------------

NOREPLY = cases(
    ("set", b"set k 1 0 1 noreply\r\nx\r\nget k\r\n", b"VALUE k 1 1\r\nx\r\nEND\r\n"),
    ("add-stored", b"add k 0 0 1 noreply\r\nx\r\nget k\r\n", b"VALUE k 0 1\r\nx\r\nEND\r\n"),
    (
        "add-not-stored",
        b"set k 0 0 1\r\na\r\nadd k 0 0 1 noreply\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    ("replace-not-stored", b"replace k 0 0 1 noreply\r\nx\r\nget k\r\n", b"END\r\n"),
    (
        "replace-stored",
        b"set k 0 0 1\r\na\r\nreplace k 0 0 1 noreply\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n",
    ),
    (
        "append-prepend",
        b"set k 0 0 1\r\na\r\nappend k 0 0 1 noreply\r\nb\r\n"
        b"prepend k 0 0 1 noreply\r\nc\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 3\r\ncab\r\nEND\r\n",
    ),
    ("append-not-stored", b"append k 0 0 1 noreply\r\nb\r\nget k\r\n", b"END\r\n"),
    (
        "cas-exists",
        b"set k 0 0 1\r\na\r\ncas k 0 0 1 999 noreply\r\nx\r\nget k\r\n",
        b"STORED\r\nVALUE k 0 1\r\na\r\nEND\r\n",
    ),
    ("cas-not-found", b"cas k 0 0 1 1 noreply\r\nx\r\nget k\r\n", b"END\r\n"),
    ("delete-hit", b"set k 0 0 1\r\na\r\ndelete k noreply\r\nget k\r\n", b"STORED\r\nEND\r\n"),
    ("delete-miss", b"delete k noreply\r\n", b""),
    (
        "incr-decr",
        b"set n 0 0 1\r\n5\r\nincr n 3 noreply\r\ndecr n 1 noreply\r\nget n\r\n",
        b"STORED\r\nVALUE n 0 1\r\n7\r\nEND\r\n",
    ),
    ("incr-miss", b"incr n 1 noreply\r\ndecr n 1 noreply\r\n", b""),
    ("touch-hit", b"set k 0 0 1\r\na\r\ntouch k 100 noreply\r\n", b"STORED\r\n"),
    ("touch-miss", b"touch k 100 noreply\r\n", b""),
    ("flush_all", b"set k 0 0 1\r\na\r\nflush_all noreply\r\nget k\r\n", b"STORED\r\nEND\r\n"),
    ("flush_all-0", b"set k 0 0 1\r\na\r\nflush_all 0 noreply\r\nget k\r\n", b"STORED\r\nEND\r\n"),
    ("verbosity-1", b"verbosity 1 noreply\r\n", b""),
    ("verbosity-without-level", b"verbosity noreply\r\n", b""),
    ("cache_memlimit", b"cache_memlimit 100 noreply\r\n", b""),
)


@pytest.mark.parametrize(("request_", "expected"), NOREPLY)
def test_noreply_sends_nothing(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- incr / decr ------------------------------------------------------------------------

NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"


def _num(value: bytes, flags: int = 0) -> bytes:
    return b"set n %d 0 %d\r\n%s\r\n" % (flags, len(value), value)


INCR = cases(
    ("incr", _num(b"5") + b"incr n 3\r\nget n\r\n", b"STORED\r\n8\r\nVALUE n 0 1\r\n8\r\nEND\r\n"),
    ("decr", _num(b"5") + b"decr n 3\r\nget n\r\n", b"STORED\r\n2\r\nVALUE n 0 1\r\n2\r\nEND\r\n"),
    ("incr-miss", b"incr n 1\r\n", b"NOT_FOUND\r\n"),
    ("decr-miss", b"decr n 1\r\n", b"NOT_FOUND\r\n"),
    (
        "incr-wraps-at-2**64-pads-with-spaces",
        _num(b"18446744073709551615") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n0\r\nVALUE n 0 20\r\n0" + b" " * 19 + b"\r\nEND\r\n",
    ),
    (
        "incr-to-max",
        _num(b"18446744073709551614") + b"incr n 1\r\n",
        b"STORED\r\n18446744073709551615\r\n",
    ),
    ("incr-max-delta-wraps", _num(b"5") + b"incr n 18446744073709551615\r\n", b"STORED\r\n4\r\n"),
    (
        "decr-stops-at-zero",
        _num(b"5") + b"decr n 10\r\nget n\r\n",
        b"STORED\r\n0\r\nVALUE n 0 1\r\n0\r\nEND\r\n",
    ),
    (
        "decr-shortens-pads-with-spaces",
        _num(b"10") + b"decr n 1\r\nget n\r\n",
        b"STORED\r\n9\r\nVALUE n 0 2\r\n9 \r\nEND\r\n",
    ),
    (
        "decr-then-incr-keeps-padded-length",
        _num(b"1000") + b"decr n 999\r\nget n\r\nincr n 5\r\nget n\r\n",
        b"STORED\r\n1\r\nVALUE n 0 4\r\n1   \r\nEND\r\n6\r\nVALUE n 0 4\r\n6   \r\nEND\r\n",
    ),
    (
        "incr-lengthens-keeps-flags",
        _num(b"99", flags=3) + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n100\r\nVALUE n 3 3\r\n100\r\nEND\r\n",
    ),
    ("incr-non-numeric", _num(b"abc") + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("decr-non-numeric", _num(b"abc") + b"decr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("incr-empty-value", _num(b"") + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("incr-negative-value", _num(b"-1") + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("incr-trailing-garbage", _num(b"12abc") + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("incr-value-2**64", _num(b"18446744073709551616") + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    ("incr-value-22-digits", _num(b"1" + b"0" * 21) + b"incr n 1\r\n", b"STORED\r\n" + NUMERIC),
    (
        "incr-value-leading-spaces",
        _num(b"  5") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n6\r\nVALUE n 0 3\r\n6  \r\nEND\r\n",
    ),
    (
        "incr-value-trailing-spaces",
        _num(b"5  ") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n6\r\nVALUE n 0 3\r\n6  \r\nEND\r\n",
    ),
    (
        "incr-value-space-then-digits",
        _num(b"12 3") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n13\r\nVALUE n 0 4\r\n13  \r\nEND\r\n",
    ),
    (
        "incr-value-plus-sign",
        _num(b"+1") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n2\r\nVALUE n 0 2\r\n2 \r\nEND\r\n",
    ),
    (
        "incr-value-25-chars-leading-zeros",
        _num(b"0" * 24 + b"1") + b"incr n 1\r\nget n\r\n",
        b"STORED\r\n2\r\nVALUE n 0 25\r\n2" + b" " * 24 + b"\r\nEND\r\n",
    ),
    ("incr-delta-abc", _num(b"1") + b"incr n abc\r\n", b"STORED\r\n" + DELTA),
    ("decr-delta-abc", _num(b"1") + b"decr n abc\r\n", b"STORED\r\n" + DELTA),
    ("incr-delta-negative", _num(b"1") + b"incr n -1\r\n", b"STORED\r\n" + DELTA),
    ("incr-delta-2**64", _num(b"1") + b"incr n 18446744073709551616\r\n", b"STORED\r\n" + DELTA),
    ("incr-delta-float", _num(b"1") + b"incr n 1.5\r\n", b"STORED\r\n" + DELTA),
    ("incr-delta-checked-before-lookup", b"incr nope abc\r\n", DELTA),
    (
        "incr-delta-leading-zero-and-plus",
        _num(b"12") + b"incr n 01\r\nincr n +1\r\n",
        b"STORED\r\n13\r\n14\r\n",
    ),
    # the value read as strtoull reads it: a NUL ends the digits, and a minus negates
    # modulo 2^64 (refused only when that reads as negative signed)
    (
        "decr-digits-then-nul",
        _num(b"3\0") + b"decr n 1\r\nget n\r\n",
        b"STORED\r\n2\r\nVALUE n 0 2\r\n2 \r\nEND\r\n",
    ),
    ("incr-minus-wraps", _num(b"-18446744073709551615") + b"incr n 1\r\n", b"STORED\r\n2\r\n"),
    ("incr-minus-negative", _num(b"-5") + b"incr n 1\r\n", b"STORED\r\n" + NON_NUMERIC),
    # a number negative as signed, and a minus anywhere in the value before a NUL: refused
    (
        "incr-big-then-minus",
        _num(b"18446744073709551615 -") + b"incr n 1\r\n",
        b"STORED\r\n" + NON_NUMERIC,
    ),
    (
        "incr-big-then-nul-then-minus",
        _num(b"18446744073709551615\0-") + b"incr n 1\r\n",
        b"STORED\r\n0\r\n",
    ),
    (
        "incr-small-then-minus",
        _num(b"9223372036854775807 -") + b"incr n 1\r\n",
        b"STORED\r\n9223372036854775808\r\n",
    ),
    ("incr-no-delta", b"incr n\r\n", b"ERROR\r\n"),
    ("decr-no-delta", b"decr n\r\n", b"ERROR\r\n"),
    ("incr-no-key", b"incr\r\n", b"ERROR\r\n"),
    ("incr-too-many-tokens", b"incr n 1 noreply x\r\n", b"ERROR\r\n"),
)


@pytest.mark.parametrize(("request_", "expected"), INCR)
def test_incr_decr(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- flush_all, verbosity, shutdown, cache_memlimit, stats sub-commands -----------------

MISC = cases(
    ("flush_all", b"set k 0 0 1\r\na\r\nflush_all\r\nget k\r\n", b"STORED\r\nOK\r\nEND\r\n"),
    ("flush_all-0", b"set k 0 0 1\r\na\r\nflush_all 0\r\nget k\r\n", b"STORED\r\nOK\r\nEND\r\n"),
    (
        "flush_all-negative",
        b"set k 0 0 1\r\na\r\nflush_all -1\r\nget k\r\n",
        b"STORED\r\nOK\r\nEND\r\n",
    ),
    ("flush_all-abc", b"flush_all abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n"),
    ("flush_all-abc-noreply", b"flush_all abc noreply\r\n", b""),
    (
        "flush_all-noreply-not-last",
        b"flush_all noreply x\r\n",
        b"CLIENT_ERROR invalid exptime argument\r\n",
    ),
    ("flush_all-extra-token", b"flush_all 0 0\r\n", b"OK\r\n"),
    ("flush_all-too-many-tokens", b"flush_all 0 noreply x\r\n", b"ERROR\r\n"),
    (
        "flush_all-then-set-works",
        b"set k 0 0 1\r\na\r\nflush_all\r\nset k 0 0 1\r\nb\r\nget k\r\n",
        b"STORED\r\nOK\r\nSTORED\r\nVALUE k 0 1\r\nb\r\nEND\r\n",
    ),
    ("verbosity", b"verbosity\r\n", b"ERROR\r\n"),
    ("verbosity-1", b"verbosity 1\r\n", b"OK\r\n"),
    ("verbosity-0", b"verbosity 0\r\n", b"OK\r\n"),
    ("verbosity-abc", b"verbosity abc\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("verbosity-extra-token", b"verbosity 1 2\r\n", b"OK\r\n"),
    ("verbosity-too-many-tokens", b"verbosity 1 2 3\r\n", b"ERROR\r\n"),
    ("shutdown-not-enabled", b"shutdown\r\n", b"ERROR: shutdown not enabled\r\n"),
    ("shutdown-mode-not-enabled", b"shutdown foo\r\n", b"ERROR: shutdown not enabled\r\n"),
    ("shutdown-noreply-not-enabled", b"shutdown noreply\r\n", b"ERROR: shutdown not enabled\r\n"),
    ("cache_memlimit-100", b"cache_memlimit 100\r\n", b"OK\r\n"),
    ("cache_memlimit-8", b"cache_memlimit 8\r\n", b"OK\r\n"),
    (
        "cache_memlimit-7",
        b"cache_memlimit 7\r\n",
        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
    ),
    (
        "cache_memlimit-2",
        b"cache_memlimit 2\r\n",
        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
    ),
    (
        "cache_memlimit-0",
        b"cache_memlimit 0\r\n",
        b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
    ),
    (
        "cache_memlimit-megabytes-not-bytes",
        b"cache_memlimit 1000000001\r\n",
        b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
    ),
    ("cache_memlimit-abc", b"cache_memlimit abc\r\n", b"ERROR\r\n"),
    ("cache_memlimit-negative", b"cache_memlimit -1\r\n", b"ERROR\r\n"),
    ("cache_memlimit-no-arg", b"cache_memlimit\r\n", b"ERROR\r\n"),
    ("cache_memlimit-too-small-noreply", b"cache_memlimit 2 noreply\r\n", b""),
    ("stats-unknown", b"stats foo\r\n", b"ERROR\r\n"),
    ("stats-reset", b"stats reset\r\n", b"RESET\r\n"),
    ("stats-sizes", b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n"),
    ("stats-items-empty", b"stats items\r\n", b"END\r\n"),
    (
        "stats-slabs-empty",
        b"stats slabs\r\n",
        b"STAT active_slabs 0\r\nSTAT total_malloced 0\r\nEND\r\n",
    ),
    ("stats-detail-dump-empty", b"stats detail dump\r\n", b"END\r\n"),
    ("stats-detail-on-off", b"stats detail on\r\nstats detail off\r\n", b"OK\r\nOK\r\n"),
    (
        "stats-detail-usage",
        b"stats detail\r\n",
        b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
    ),
    (
        "stats-detail-bad",
        b"stats detail foo\r\n",
        b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
    ),
)


@pytest.mark.parametrize(("request_", "expected"), MISC)
def test_misc_commands(server: Server, request_: bytes, expected: bytes) -> None:
    roundtrip(server, request_, expected)


# --- cas uniques ------------------------------------------------------------------------


def test_gets_returns_cas_that_changes_on_every_modification(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"set k 0 0 1\r\n1\r\n", b"STORED\r\n")
        seen = [gets_cas(conn, b"k")]
        steps = [
            (b"set k 0 0 1\r\n2\r\n", b"STORED\r\n"),
            (b"append k 0 0 1\r\n0\r\n", b"STORED\r\n"),
            (b"prepend k 0 0 1\r\n1\r\n", b"STORED\r\n"),
            (b"replace k 0 0 1\r\n5\r\n", b"STORED\r\n"),
            (b"incr k 1\r\n", b"6\r\n"),
            (b"decr k 1\r\n", b"5\r\n"),
        ]
        for request, reply in steps:
            exchange(conn, request, reply)
            seen.append(gets_cas(conn, b"k"))
        assert len(set(seen)) == len(seen), seen
        # Reading, touching and gat do not change the unique.
        before = seen[-1]
        exchange(conn, b"touch k 100\r\n", b"TOUCHED\r\n")
        exchange(conn, b"gat 100 k\r\n", b"VALUE k 0 1\r\n5\r\nEND\r\n")
        exchange(conn, b"get k\r\n", b"VALUE k 0 1\r\n5\r\nEND\r\n")
        assert gets_cas(conn, b"k") == before
        # gets and gats report it; duplicates report the same one.
        exchange(
            conn,
            b"gets k nope k\r\ngats 100 k\r\n",
            b"VALUE k 0 1 %d\r\n5\r\nVALUE k 0 1 %d\r\n5\r\nEND\r\n"
            b"VALUE k 0 1 %d\r\n5\r\nEND\r\n" % (before, before, before),
        )


def test_cas_flow(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"set k 4 0 1\r\na\r\n", b"STORED\r\n")
        unique = gets_cas(conn, b"k")
        exchange(conn, b"cas k 6 0 1 %d\r\nb\r\n" % unique, b"STORED\r\n")
        exchange(conn, b"get k\r\n", b"VALUE k 6 1\r\nb\r\nEND\r\n")
        # The same unique again: the item changed since.
        exchange(conn, b"cas k 0 0 1 %d\r\nc\r\n" % unique, b"EXISTS\r\n")
        unique = gets_cas(conn, b"k")
        with Conn(server.address) as other:
            exchange(other, b"set k 0 0 1\r\nd\r\n", b"STORED\r\n")
        exchange(conn, b"cas k 0 0 1 %d\r\ne\r\n" % unique, b"EXISTS\r\n")
        exchange(conn, b"get k\r\n", b"VALUE k 0 1\r\nd\r\nEND\r\n")
        unique = gets_cas(conn, b"k")
        exchange(conn, b"delete k\r\n", b"DELETED\r\n")
        exchange(conn, b"cas k 0 0 1 %d\r\nf\r\n" % unique, b"NOT_FOUND\r\n")


# --- many keys --------------------------------------------------------------------------


def test_get_150_keys_with_hits_misses_and_duplicates(server: Server) -> None:
    keys = [b"key%d" % i for i in range(150)]
    stored = keys[::3]
    with Conn(server.address) as conn:
        setup = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k) for k in stored)
        exchange(conn, setup, b"STORED\r\n" * len(stored))
        asked = keys + keys[:10]
        expected = b"".join(
            b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(k), k) for k in asked if k in stored
        )
        exchange(conn, b"get " + b" ".join(asked) + b"\r\n", expected + b"END\r\n")
        expected_gets = re.compile(
            b"".join(b"VALUE %s 0 %d \\d+\r\n%s\r\n" % (k, len(k), k) for k in asked if k in stored)
            + b"END\r\n"
        )
        conn.send(b"gets " + b" ".join(asked) + b"\r\n")
        assert expected_gets.fullmatch(conn.read_until(b"\r\nEND\r\n"))


def test_get_500_keys_line_over_2048_bytes(server: Server) -> None:
    keys = [b"key%05d" % i for i in range(500)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    assert len(line) > 4096
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set key00007 0 0 1\r\nx\r\nset key00499 0 0 1\r\ny\r\n" + line,
            b"STORED\r\nSTORED\r\nVALUE key00007 0 1\r\nx\r\nVALUE key00499 0 1\r\ny\r\nEND\r\n",
        )


# --- expiry -----------------------------------------------------------------------------


def test_exptime_absolute_and_over_30_days(server: Server) -> None:
    now = int(time.time())
    roundtrip(
        server,
        b"set past 0 %d 1\r\na\r\nset future 0 %d 1\r\nb\r\n"
        b"set thirty 0 2592000 1\r\nc\r\nset thirtyone 0 2592001 1\r\nd\r\n"
        b"set neg 0 -1 1\r\ne\r\nget past future thirty thirtyone neg\r\n" % (now - 100, now + 100),
        b"STORED\r\n" * 5 + b"VALUE future 0 1\r\nb\r\nVALUE thirty 0 1\r\nc\r\nEND\r\n",
    )


def test_relative_exptime_expires_set_touch_gat(server: Server) -> None:
    """One real wait covers set, touch and gat with a 2 s relative exptime."""
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set s 0 2 1\r\na\r\nset t 0 0 1\r\nb\r\nset g 0 0 1\r\nc\r\nset keep 0 100 1\r\nd\r\n"
            b"touch t 2\r\ngat 2 g\r\nget s t g keep\r\n",
            b"STORED\r\n" * 4 + b"TOUCHED\r\nVALUE g 0 1\r\nc\r\nEND\r\n"
            b"VALUE s 0 1\r\na\r\nVALUE t 0 1\r\nb\r\nVALUE g 0 1\r\nc\r\n"
            b"VALUE keep 0 1\r\nd\r\nEND\r\n",
        )
        time.sleep(3.1)
        exchange(conn, b"get s t g keep\r\n", b"VALUE keep 0 1\r\nd\r\nEND\r\n")


def test_flush_all_delayed(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set k 0 0 1\r\na\r\nflush_all 2\r\nget k\r\n",
            b"STORED\r\nOK\r\nVALUE k 0 1\r\na\r\nEND\r\n",
        )
        time.sleep(2.5)
        exchange(conn, b"get k\r\n", b"END\r\n")


# --- version, quit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [b"version\r\n", b"version extra\r\n", b"version\x00junk\r\n", b"version HTTP/1.1\r\n"],
    ids=["plain", "extra-token", "nul-ends-line", "http-token-on-known-command"],
)
def test_version(server: Server, request_: bytes) -> None:
    with Conn(server.address) as conn:
        conn.send(request_ + PROBE)
        reply = conn.read_until(b"\r\nEND\r\n")
    assert re.fullmatch(rb"VERSION \d+\.\d+\.\d+\r\nEND\r\n", reply), reply


@pytest.mark.parametrize(
    "request_",
    [b"quit\r\n", b"quit extra\r\n", b"quit\r\nversion\r\n"],
    ids=["plain", "extra-token", "pipelined-command-dropped"],
)
def test_quit_closes_silently(server: Server, request_: bytes) -> None:
    with Conn(server.address) as conn:
        conn.send(request_)
        assert conn.read_for(1.0) == b""
        assert conn.closed()


def test_quit_after_pipelined_set(server: Server) -> None:
    with Conn(server.address) as conn:
        conn.send(b"set a 0 0 1\r\n1\r\nquit\r\nget a\r\n")
        assert conn.read_for(1.0) == b"STORED\r\n"
        assert conn.closed()
    roundtrip(server, b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n")


# --- stats ------------------------------------------------------------------------------

STATS_NAMES = (
    "pid uptime time version pointer_size rusage_user rusage_system curr_connections "
    "total_connections cmd_get cmd_set cmd_flush cmd_touch get_hits get_misses get_expired "
    "get_flushed delete_misses delete_hits incr_misses incr_hits decr_misses decr_hits "
    "cas_misses cas_hits cas_badval touch_hits touch_misses bytes_read bytes_written "
    "limit_maxbytes threads bytes curr_items total_items evictions reclaimed "
    "expired_unfetched evicted_unfetched"
).split()


def test_stats_general(server: Server) -> None:
    with Conn(server.address) as conn:
        st = stats(conn)
    missing = [n for n in STATS_NAMES if n not in st]
    assert not missing
    assert int(st["pid"]) > 0
    assert abs(int(st["time"]) - time.time()) < 5
    assert re.fullmatch(r"\d+\.\d+\.\d+", st["version"])
    assert st["pointer_size"] in ("32", "64")
    assert re.fullmatch(r"\d+\.\d{6}", st["rusage_user"])
    assert re.fullmatch(r"\d+\.\d{6}", st["rusage_system"])
    assert st["limit_maxbytes"] == str(64 * 1024 * 1024)
    # memcached's default is 4; mcached's is 4 too, or 1 on a single CPU (default_threads)
    assert st["threads"] == ("4" if server.kind == "memcached" else str(default_threads()))
    zero = "cmd_get cmd_set cmd_flush cmd_touch get_hits get_misses curr_items total_items"
    assert {n: st[n] for n in zero.split()} == {n: "0" for n in zero.split()}


def test_stats_trailing_space_is_general_stats(server: Server) -> None:
    with Conn(server.address) as conn:
        conn.send(b"stats  \r\n")
        assert b"STAT cmd_get 0\r\n" in conn.read_until(b"END\r\n")


def test_stats_counters_and_reset(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\nget a\r\nget b\r\nget c\r\n",
            b"STORED\r\nSTORED\r\nVALUE a 0 1\r\n1\r\nEND\r\nVALUE b 0 1\r\n2\r\nEND\r\nEND\r\n",
        )
        st = stats(conn)
        got = {
            n: st[n]
            for n in "cmd_get get_hits get_misses cmd_set curr_items total_items bytes".split()
        }
        # bytes: memcached's item size, 48 header + 8 cas + key+1 + value+2 = 61 each.
        assert got == {
            "cmd_get": "4",  # the probe `get` in exchange() counts too
            "get_hits": "2",
            "get_misses": "2",
            "cmd_set": "2",
            "curr_items": "2",
            "total_items": "2",
            "bytes": "122",
        }
        exchange(conn, b"stats reset\r\n", b"RESET\r\n")
        st = stats(conn)
        got = {
            n: st[n]
            for n in "cmd_get get_hits get_misses cmd_set total_items curr_items bytes".split()
        }
        assert got == {
            "cmd_get": "1",  # the probe after RESET
            "get_hits": "0",
            "get_misses": "1",
            "cmd_set": "0",
            "total_items": "0",
            "curr_items": "2",  # reset does not touch what is stored
            "bytes": "122",
        }


def test_stats_counters_per_command(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n"
            b"get a b c a\r\ndelete a\r\ndelete zz\r\nincr b 1\r\nincr zz 1\r\n"
            b"decr b 1\r\ndecr zz 1\r\ntouch b 0\r\ntouch zz 0\r\n"
            b"cas b 0 0 1 999\r\nx\r\ncas zz 0 0 1 1\r\nx\r\nflush_all 100\r\n",
            b"STORED\r\nSTORED\r\n"
            b"VALUE a 0 1\r\n1\r\nVALUE b 0 1\r\n2\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
            b"DELETED\r\nNOT_FOUND\r\n3\r\nNOT_FOUND\r\n2\r\nNOT_FOUND\r\nTOUCHED\r\nNOT_FOUND\r\n"
            b"EXISTS\r\nNOT_FOUND\r\nOK\r\n",
        )
        unique = gets_cas(conn, b"b")
        conn.send(b"cas b 0 0 1 %d\r\nx\r\ngat 0 b zz\r\ngats 0 b\r\n" % unique + PROBE)
        reply = conn.read_until(b"END\r\nEND\r\n")
        assert re.fullmatch(
            rb"STORED\r\nVALUE b 0 1\r\nx\r\nEND\r\nVALUE b 0 1 \d+\r\nx\r\nEND\r\nEND\r\n", reply
        )
        st = stats(conn)
    names = (
        "cmd_get get_hits get_misses cmd_set cmd_touch touch_hits touch_misses cmd_flush "
        "delete_hits delete_misses incr_hits incr_misses decr_hits decr_misses "
        "cas_hits cas_misses cas_badval curr_items"
    ).split()
    assert {n: st[n] for n in names} == {
        # 4 (get a b c a) + 1 (gets b) + 2 probes; gat/gats count as touches, not gets
        "cmd_get": "7",
        "get_hits": "4",
        "get_misses": "3",
        "cmd_set": "5",  # both sets and all three cas, even the ones that store nothing
        "cmd_touch": "5",  # touch b, touch zz, gat b, gat zz, gats b
        "touch_hits": "3",
        "touch_misses": "2",
        "cmd_flush": "1",
        "delete_hits": "1",
        "delete_misses": "1",
        "incr_hits": "1",
        "incr_misses": "1",
        "decr_hits": "1",
        "decr_misses": "1",
        "cas_hits": "1",
        "cas_misses": "1",
        "cas_badval": "1",
        "curr_items": "1",
    }


def test_stats_settings(server: Server) -> None:
    with Conn(server.address) as conn:
        st = stats(conn, b"settings")
    assert {
        n: st[n] for n in "maxbytes maxconns tcpport item_size_max cas_enabled evictions".split()
    } == {
        "maxbytes": str(64 * 1024 * 1024),
        "maxconns": "1024",
        "tcpport": str(server.port),
        "item_size_max": "1048576",
        "cas_enabled": "yes",
        "evictions": "on",
    }


def test_stats_items_and_slabs_after_a_set(server: Server) -> None:
    with Conn(server.address) as conn:
        exchange(conn, b"set a 0 0 1\r\n1\r\n", b"STORED\r\n")
        items = stats(conn, b"items")
        slabs = stats(conn, b"slabs")
    assert items["items:1:number"] == "1"
    assert slabs["active_slabs"] == "1"
    assert slabs["1:used_chunks"] == "1"


def test_stats_detail_dump_counts_by_prefix(server: Server) -> None:
    roundtrip(
        server,
        b"stats detail on\r\nset a:b 0 0 1\r\nx\r\nget a:b a:c\r\ndelete a:b\r\n"
        b"set c 0 0 1\r\nx\r\nget c\r\nstats detail dump\r\n",
        b"OK\r\nSTORED\r\nVALUE a:b 0 1\r\nx\r\nEND\r\nDELETED\r\nSTORED\r\n"
        b"VALUE c 0 1\r\nx\r\nEND\r\nPREFIX a get 2 hit 1 set 1 del 1\r\nEND\r\n",
    )


def test_bug_stats_detail_counted_gat_misses_as_hits_and_gets_twice(server: Server) -> None:
    """With ``stats detail on`` a get looked every key up a second time to record it (the
    slab class's get_hits counted each hit twice), and gat recorded every key as a hit."""
    with Conn(server.address) as conn:
        exchange(conn, b"stats detail on\r\nset a:x 0 0 1\r\nx\r\n", b"OK\r\nSTORED\r\n")
        exchange(conn, b"gat 0 a:x a:y\r\n", b"VALUE a:x 0 1\r\nx\r\nEND\r\n")
        exchange(conn, b"get a:x\r\n", b"VALUE a:x 0 1\r\nx\r\nEND\r\n")
        conn.send(b"stats detail dump\r\n")
        dump = conn.read_until(b"END\r\n").split(b"\r\n")
        slabs = stats(conn, b"slabs")
    # the exchanges' probe gets are counted too, under their own prefix
    assert b"PREFIX a get 3 hit 2 set 1 del 0" in dump
    assert slabs["1:get_hits"] == "1"


# --- pipelining -------------------------------------------------------------------------


def test_pipelined_commands_answered_in_order(server: Server) -> None:
    roundtrip(
        server,
        b"set a 0 0 1\r\n1\r\nget a\r\nincr a 41\r\nappend a 0 0 1\r\n!\r\nget a b\r\n"
        b"delete a\r\ndelete a\r\nadd b 0 0 1\r\nz\r\nfoo\r\ntouch b 0\r\ngets nope\r\n"
        b"decr b 1\r\nflush_all\r\nget b\r\n",
        b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n42\r\nSTORED\r\nVALUE a 0 3\r\n42!\r\nEND\r\n"
        b"DELETED\r\nNOT_FOUND\r\nSTORED\r\nERROR\r\nTOUCHED\r\nEND\r\n"
        + NUMERIC
        + b"OK\r\nEND\r\n",
    )


def test_pipelined_sets_in_one_send(server: Server) -> None:
    n = 300
    with Conn(server.address) as conn:
        exchange(
            conn,
            b"".join(b"set k%d 0 0 3\r\nv%02d\r\n" % (i, i % 100) for i in range(n)),
            b"STORED\r\n" * n,
        )
        exchange(
            conn, b"get k0 k299\r\n", b"VALUE k0 0 3\r\nv00\r\nVALUE k299 0 3\r\nv99\r\nEND\r\n"
        )


def test_request_split_byte_by_byte(server: Server) -> None:
    request = b"set k 0 0 5\r\nhello\r\nget k\r\n"
    with Conn(server.address) as conn:
        for i in range(len(request)):
            conn.send(request[i : i + 1])
            time.sleep(0.005)
        exchange(conn, b"", b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\n")


# --- flag-specific servers --------------------------------------------------------------


def test_cas_disabled(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-C")
    roundtrip(
        srv,
        b"set a 0 0 1\r\nx\r\ngets a\r\ngats 0 a\r\ncas a 0 0 1 0\r\ny\r\ncas a 0 0 1 1\r\ny\r\n"
        b"cas nope 0 0 1 0\r\ny\r\nset n 0 0 1\r\n1\r\nincr n 1\r\ngets n\r\nget a\r\n",
        b"STORED\r\nVALUE a 0 1 0\r\nx\r\nEND\r\nVALUE a 0 1 0\r\nx\r\nEND\r\nEXISTS\r\nEXISTS\r\n"
        b"NOT_FOUND\r\nSTORED\r\n2\r\nVALUE n 0 1 0\r\n2\r\nEND\r\nVALUE a 0 1\r\nx\r\nEND\r\n",
    )
    with Conn(srv.address) as conn:
        assert stats(conn, b"settings")["cas_enabled"] == "no"


def test_flush_all_disabled(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-F")
    not_allowed = b"CLIENT_ERROR flush_all not allowed\r\n"
    roundtrip(
        srv,
        b"set a 0 0 1\r\nx\r\nflush_all\r\nflush_all 0\r\nflush_all abc\r\n"
        b"flush_all noreply\r\nget a\r\n",
        b"STORED\r\n" + not_allowed * 3 + b"VALUE a 0 1\r\nx\r\nEND\r\n",
    )
    with Conn(srv.address) as conn:
        st = stats(conn)
        assert st["cmd_flush"] == "4"  # refused flushes are still counted
        assert stats(conn, b"settings")["flush_enabled"] == "no"


def test_shutdown_enabled_bad_mode(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-A")
    bad = b"CLIENT_ERROR invalid shutdown mode\r\n"
    roundtrip(srv, b"shutdown foo\r\nshutdown graceful x\r\nshutdown noreply\r\n", bad * 3)


def test_shutdown_enabled_closes_and_stops(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv = server_factory(kind, "-A")
    with Conn(srv.address) as conn:
        conn.send(b"shutdown\r\n")
        assert conn.read_for(1.0) == b""
        assert conn.closed()
    deadline = time.monotonic() + 5
    while True:
        try:
            Conn(srv.address, timeout=0.5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, "server still accepting after shutdown"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("flags", "listening"),
    [
        ((), 1),
        (("-l", "127.0.0.2"), 2),  # a second address: its listener counts too
        (("-U", "udp", "-t", "4"), 5),  # a UDP address: a connection per worker
        # several addresses: one UDP connection a socket (memcached's num_threads_per_udp)
        (("-l", "127.0.0.2", "-U", "udp", "-t", "2"), 4),
    ],
    ids=["one listener", "two addresses", "udp at -t 4", "udp on two addresses"],
)
def test_connection_counts_include_the_listeners_as_memcached_counts(
    kind: str, server_factory: Callable[..., Server], flags: tuple[str, ...], listening: int
) -> None:
    """memcached counts a connection for each listening socket (conn_new) in total_ and
    curr_connections, and shows curr_connections less one."""
    from tests.conftest import free_port

    flags = tuple(str(free_port(socket.SOCK_DGRAM)) if f == "udp" else f for f in flags)
    srv = server_factory(kind, *flags)
    clients = [Conn(srv.address) for _ in range(3)]
    try:
        for c in clients:
            assert c.request(b"version\r\n").startswith(b"VERSION")
        with Conn(srv.address) as asker:
            got = stats(asker)
            assert int(got["curr_connections"]) == 4 + listening - 1
            probes = 1 if kind == "memcached" else 0  # the fixture's connect until it listens
            assert int(got["total_connections"]) == 4 + listening + probes
            structures = int(got["connection_structures"])
            assert structures >= 4 + listening
            for c in clients:
                c.close()
            # each close is counted when its worker reads it (memcached's threads too)
            deadline = time.monotonic() + 5
            after = stats(asker)
            while int(after["curr_connections"]) > listening and time.monotonic() < deadline:
                time.sleep(0.1)
                after = stats(asker)
            assert int(after["curr_connections"]) == 1 + listening - 1
            assert int(after["connection_structures"]) == structures  # made, never freed
            assert asker.request(b"stats reset\r\n") == b"RESET\r\n"
            assert int(stats(asker)["total_connections"]) == 0
    finally:
        for c in clients:
            c.close()


def test_vvv_shows_verbosity_3_and_the_command_caps_at_2(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv = server_factory(kind, "-vvv")
    with Conn(srv.address) as conn:
        assert stats(conn, b"settings")["verbosity"] == "3"
        assert conn.request(b"verbosity 5\r\n") == b"OK\r\n"
        assert stats(conn, b"settings")["verbosity"] == "2"
        assert conn.request(b"verbosity 0\r\n") == b"OK\r\n"
