"""mcached/addr.py: the one host:port grammar, read the way each caller needs it."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.addr import (
    format_address,
    parse_address,
    parse_listen,
    split_host_port,
    split_notls,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("host:11211", ("host", "11211")),
        ("host", ("host", None)),
        ("[::1]:21001", ("::1", "21001")),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),  # a bare IPv6 address: all host
        ("fe80::1:11211", ("fe80::1:11211", None)),
        ("host:", ("host", "")),
        (":11211", ("", "11211")),
    ],
)
def test_split_host_port(text: str, want: tuple[str, str | None]) -> None:
    assert split_host_port(text) == want


@pytest.mark.parametrize("text", ["[::1", "[::1]x", "[::1]11211"])
def test_split_host_port_refuses_a_broken_bracket(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("127.0.0.1:21001", ("127.0.0.1", 21001)),
        (" host:1 ", ("host", 1)),
        ("host", ("host", 11211)),
        ("[::1]:5", ("::1", 5)),
        ("::1", ("::1", 11211)),
        ("[::1]", ("::1", 11211)),
    ],
)
def test_parse_address(text: str, want: tuple[str, int]) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["", ":1", "host:", "host:0", "host:65536", "host:x", "[::1"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("127.0.0.1", ("127.0.0.1", 11211)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),  # port 0: a free one
        ("notls:127.0.0.1:5", ("127.0.0.1", 5)),
        ("[::1]:5", ("::1", 5)),
        ("[::1]", ("::1", 11211)),
        ("::1", ("::1", 11211)),
        ("", ("", 11211)),  # the wildcard
    ],
)
def test_parse_listen(spec: str, want: tuple[str, int]) -> None:
    assert parse_listen(spec, 11211) == want


@pytest.mark.parametrize("spec", ["host:x", "host:70000", "[::1", "notls:[::1]x"])
def test_parse_listen_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec, 11211)


def test_split_notls() -> None:
    assert split_notls("notls:127.0.0.1:1") == (True, "127.0.0.1:1")
    assert split_notls("127.0.0.1:1") == (False, "127.0.0.1:1")


@pytest.mark.parametrize(
    ("address", "want"),
    [
        (("127.0.0.1", 1), "127.0.0.1:1"),
        (("::1", 2, 0, 0), "[::1]:2"),  # getsockname's IPv6 4-tuple
        (("host", 3), "host:3"),
        ("/run/mcached.sock", "/run/mcached.sock"),
        ("", ""),  # an AF_UNIX peer without a name
    ],
)
def test_format_address(address: tuple[Any, ...] | str, want: str) -> None:
    assert format_address(address) == want


@pytest.mark.parametrize("text", ["127.0.0.1:21001", "[::1]:5", "host:7"])
def test_format_reads_back(text: str) -> None:
    assert format_address(parse_address(text)) == text


def test_ports_of_any_number_of_digits() -> None:
    """Leading zeros of any length are read, and a port of more than 4,300 digits is
    refused in our words, not int()'s ("Exceeds the limit ... use sys.set_int_max_str_digits",
    which a `config set cluster` reply showed a client)."""
    from mcached.addr import parse_address, parse_listen, parse_port

    zeros = "0" * 5000
    assert parse_port(zeros + "80", "x") == 80
    assert parse_address("h:" + zeros + "80") == ("h", 80)
    assert parse_listen("h:" + zeros + "80", 11211) == ("h", 80)
    for bad in ("9" * 5000, zeros, "65536", zeros + "65536"):
        with pytest.raises(ValueError, match="^bad port in"):
            parse_port(bad, "x")
        with pytest.raises(ValueError, match="^bad address"):
            parse_address("h:" + bad)
    with pytest.raises(ValueError, match="^bad port in"):
        parse_listen("h:" + "9" * 5000, 11211)
    assert parse_listen("h:" + zeros, 11211) == ("h", 0)  # port 0: a free one


def test_an_error_repeats_the_start_of_a_huge_address() -> None:
    """Each error names what it refused up to its 40th character, then ``...``: a huge word
    (a `config set cluster` value, a command line) makes no huge error line."""
    from mcached.addr import parse_address, parse_listen, parse_port

    huge = "h:" + "x" * 100_000
    for call in (
        lambda: parse_port("x" * 100_000, huge),
        lambda: parse_address(huge),
        lambda: parse_listen(huge, 11211),
        lambda: parse_address("[" + huge),
    ):
        with pytest.raises(ValueError) as caught:
            call()
        assert "x" * 37 + "...'" in str(caught.value) and len(str(caught.value)) < 80
