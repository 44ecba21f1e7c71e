"""mcached/addr.py: the one host:port grammar, read the way each caller needs it."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.addr import (
    format_address,
    parse_address,
    parse_listen,
    split_host_port,
    split_listen,
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
        ("notls:proto[ascii]:tag[a]:127.0.0.1:5", ("127.0.0.1", 5)),
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


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("127.0.0.1:1", ("127.0.0.1:1", False, "", "")),
        ("notls:127.0.0.1:1", ("127.0.0.1:1", True, "", "")),
        ("proto[binary]:127.0.0.1:1", ("127.0.0.1:1", False, "binary", "")),
        ("notls:proto[ascii]:tag[app]:[::1]:1", ("[::1]:1", True, "ascii", "app")),
        ("proto[negotiating]:h", ("h", False, "negotiating", "")),
        ("tag[12345678]:h", ("h", False, "", "12345678")),
        # memcached compares a name over its own length: a name that begins one is that one
        # (the empty name begins "ascii"), any other name changes nothing
        ("proto[bin]:h", ("h", False, "binary", "")),
        ("proto[]:h", ("h", False, "ascii", "")),
        ("proto[utf8]:h", ("h", False, "", "")),
        ("proto[binaryx]:h", ("h", False, "", "")),
        # the character after "]" is skipped, a ':' or not (memcached's)
        ("proto[ascii]xh:1", ("h:1", False, "ascii", "")),
        # only "proto[" and "tag[" are prefixes: a host whose name begins so is a host
        ("protocols.example:1", ("protocols.example:1", False, "", "")),
        ("tagged:1", ("tagged:1", False, "", "")),
    ],
)
def test_split_listen(spec: str, want: tuple[str, bool, str, str]) -> None:
    assert tuple(split_listen(spec)) == want


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("proto[binary:127.0.0.1:1", 'Invalid protocol spec: "[binary:127.0.0.1:1"'),
        ("tag[app:1", 'Invalid tag in socket config: "[app:1"'),
        ("tag[]:h", 'Listener tags must be between 1 and 8 characters: ""'),
        ("tag[123456789]:h", 'Listener tags must be between 1 and 8 characters: "123456789"'),
        ("proto[proxy]:h", 'Server not built with proxy: "proto[proxy"'),
        ("proto[pro]:h", 'Server not built with proxy: "proto[pro"'),
    ],
)
def test_split_listen_refuses_in_memcacheds_words(spec: str, words: str) -> None:
    with pytest.raises(ValueError) as exc:
        split_listen(spec)
    assert str(exc.value) == words
    with pytest.raises(ValueError):
        parse_listen(spec, 11211)


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
