"""The ``-Y`` authentication phase of the parser, case by case (the wire bytes of each reply
are checked against memcached in tests/integration/test_auth.py).

Each case is fed whole, byte by byte, and followed by more bytes (h11's ``tr()``)."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.errors import CloseConnection
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error
from mcached.protocol.parser import NEED_DATA, Parser

pytestmark = pytest.mark.unit

UNAUTH = c.Invalid(Error.UNAUTHENTICATED)
BAD_FORMAT = c.Invalid(Error.AUTH_BAD_FORMAT)
BAD_TERM = c.Invalid(Error.AUTH_BAD_TERMINATION)


def auth(user: bytes, password: bytes) -> tuple[str, bytes, bytes]:
    return ("auth", user, password)


CASES: list[tuple[str, bytes, list[Any]]] = [
    ("login", b"set k 0 0 12\r\nalice s3cret\r\n", [auth(b"alice", b"s3cret")]),
    ("any-key-flags-exptime", b"set \xff abc -5 5\r\na b c\r\n", [auth(b"a", b"b")]),
    ("noreply-and-extra-tokens", b"set k 0 0 3 noreply x\r\na b\r\n", [auth(b"a", b"b")]),
    ("size-plus", b"set k 0 0 +3\r\na b\r\n", [auth(b"a", b"b")]),
    ("size-wraps-at-2^32", b"set k 0 0 4294967299\r\na b\r\n", [auth(b"a", b"b")]),
    ("bare-lf", b"set k 0 0 3\na b\r\n", [auth(b"a", b"b")]),
    ("nul-ends-line", b"set k 0 0 3\0junk\r\na b\r\n", [auth(b"a", b"b")]),
    ("spaces", b"  set  k 0 0  7\r\n a  b  \r\n", [auth(b"a", b"b")]),
    ("one-token", b"set k 0 0 1\r\na\r\n", [BAD_FORMAT]),
    ("nul-in-block", b"set k 0 0 3\r\na\0b\r\n", [BAD_FORMAT]),
    ("no-crlf", b"set k 0 0 3\r\na bXY", [BAD_TERM]),
    ("get", b"get k\r\n", [UNAUTH]),
    ("empty", b"\r\n", [UNAUTH]),
    ("add", b"add k 0 0 3\r\na b\r\n", [UNAUTH, UNAUTH]),
    ("short-set", b"set k 0 0\r\n", [UNAUTH]),
    ("bad-size", b"set k 0 0 x\r\n", [UNAUTH]),
    ("negative-size", b"set k 0 0 -3\r\n", [UNAUTH]),
    ("size-over-64-bits", b"set k 0 0 18446744073709551616\r\n", [UNAUTH]),
    ("http", b"GET / HTTP/1.1\r\n", [UNAUTH]),
]


def drain(parser: Parser, pieces: list[bytes]) -> list[Any]:
    seen: list[Any] = []
    for piece in pieces:
        parser.feed(piece)
        while (cmd := parser.next_command()) is not NEED_DATA:
            seen.append(("auth", cmd.user, cmd.password) if isinstance(cmd, c.Auth) else cmd)
    return seen


@pytest.mark.parametrize(("data", "expected"), [x[1:] for x in CASES], ids=[x[0] for x in CASES])
@pytest.mark.parametrize("how", ["whole", "bytewise", "trailing"])
def test_auth_phase(data: bytes, expected: list[Any], how: str) -> None:
    parser = Parser(auth=True)
    if how == "whole":
        assert drain(parser, [data]) == expected
    elif how == "bytewise":
        assert drain(parser, [data[i : i + 1] for i in range(len(data))]) == expected
    else:
        assert drain(parser, [data + b"version\r\n"]) == expected + [UNAUTH]


def test_grant_switches_to_the_full_protocol_on_the_same_buffer() -> None:
    parser = Parser(auth=True)
    parser.feed(b"set k 0 0 12\r\nalice s3cret\r\nget k\r\nversion\r\n")
    login = parser.next_command()
    assert isinstance(login, c.Auth) and parser.authenticating
    login.grant()
    assert not parser.authenticating
    assert parser.next_command() == c.Get([b"k"])
    assert parser.next_command() == c.Version()
    assert "s3cret" not in repr(login)  # the -vvv trace never logs it


@pytest.mark.parametrize(
    "data",
    [b"x" * 2049, b"get " + b"k " * 1100, b"set k 0 0 16383\r\n", b"set k 0 0 4294967295\r\n"],
)
def test_auth_phase_hangs_up_rather_than_buffer(data: bytes) -> None:
    """Lines over 2048 bytes (multigets too) and blocks over memcached's 16 KB read buffer."""
    parser = Parser(auth=True)
    parser.feed(data)
    with pytest.raises(CloseConnection):
        parser.next_command()


def test_block_being_read_is_a_data_block() -> None:
    parser = Parser(auth=True)
    parser.feed(b"set k 0 0 100\r\nabc")
    assert parser.next_command() is NEED_DATA
    assert parser.in_data_block
