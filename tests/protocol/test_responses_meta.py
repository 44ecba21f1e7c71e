"""The meta commands' replies: exact bytes for each reply, its flags in order, and q."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.protocol import commands as c
from mcached.protocol.outcomes import ITEM_FIELDS, Error, Out, Outcome
from mcached.protocol.parser import NEED_DATA, Parser
from mcached.storage.results import ItemState

pytestmark = pytest.mark.unit


def item(**fields: Any) -> tuple[Any, ...]:
    base: dict[str, Any] = dict(
        value=None,
        flags=0,
        cas=7,
        size=2,
        total=66,
        clsid=1,
        ttl=None,
        touch_ttl=None,
        vivify_ttl=None,
        idle=3,
        fetched=False,
        stale=False,
        token_sent=False,
        won=False,
        created=False,
        binary_key=False,
    )
    base.update(fields)
    return tuple(ItemState(**base))  # what the cache returns: a plain tuple


def parse(line: bytes) -> Any:
    p = Parser()
    p.feed(line)
    cmd = p.next_command()
    assert cmd is not NEED_DATA
    return cmd


def hit(line: bytes, state: tuple[Any, ...]) -> bytes:
    out: Out = []
    parse(line).reply_item(out, state)
    return b"".join(out)


def miss(line: bytes) -> bytes:
    out: Out = []
    cmd = parse(line)
    cmd.reply_one_miss(out, cmd.key)
    return b"".join(out)


def status(line: bytes, outcome: Outcome | Error, cas: int | None = None) -> bytes:
    out: Out = []
    cmd = parse(line)
    if cas is None:
        cmd.reply(out, outcome)
    else:
        cmd.reply_stored(out, outcome, cas)
    return b"".join(out)


@pytest.mark.parametrize(
    "line,state,expected",
    [
        (b"mg k\r\n", item(), b"HD\r\n"),
        (b"mg k v\r\n", item(value=b"hi"), b"VA 2\r\nhi\r\n"),
        (b"mg k q v\r\n", item(value=b"hi"), b"VA 2\r\nhi\r\n"),  # q hides no hit
        (
            b"mg k s v f t c k Oabc h l\r\n",
            item(value=b"hi", flags=5, ttl=90, fetched=True),
            b"VA 2 s2 f5 t90 c7 kk Oabc h1 l3\r\nhi\r\n",
        ),
        (b"mg k c s\r\n", item(), b"HD c7 s2\r\n"),  # in the order asked
        (b"mg k t\r\n", item(ttl=-1), b"HD t4294967295\r\n"),  # itoa_u32
        # t shows the TTL in force where it stands: T and N change it from their place
        (b"mg k t T30\r\n", item(ttl=5, touch_ttl=30), b"HD t5\r\n"),
        (b"mg k T30 t\r\n", item(ttl=5, touch_ttl=30), b"HD t30\r\n"),
        (b"mg k T0 t\r\n", item(ttl=5, touch_ttl=None), b"HD t-1\r\n"),
        (
            b"mg k t N30\r\n",
            item(created=True, won=True, vivify_ttl=30),
            b"HD t-1 W\r\n",
        ),
        (
            b"mg k N30 t\r\n",
            item(created=True, won=True, vivify_ttl=30),
            b"HD t30 W\r\n",
        ),
        (b"mg k N30 t\r\n", item(ttl=10, vivify_ttl=30), b"HD t10\r\n"),  # found: N is idle
        (b"mg k v\r\n", item(value=b"", size=0, token_sent=True), b"VA 0 Z\r\n\r\n"),
        (b"mg k\r\n", item(stale=True, won=True), b"HD X W\r\n"),
        (b"mg k\r\n", item(stale=True, token_sent=True), b"HD Z X\r\n"),
        (b"mg k k\r\n", item(binary_key=True), b"HD kaw== b\r\n"),
        (b"mg Zm9v b k\r\n", item(), b"HD kfoo\r\n"),  # k follows the item, not the request
    ],
)
def test_mg_hit(line: bytes, state: tuple[Any, ...], expected: bytes | None) -> None:
    if expected is None:
        expected = b"CLIENT_ERROR opaque token too long\r\n"
    assert hit(line, state) == expected


def test_mg_large_value_is_not_copied() -> None:
    value = b"x" * 100_000
    out: Out = []
    parse(b"mg k v\r\n").reply_item(out, item(value=value, size=len(value)))
    assert out[1] is value and b"".join(out) == b"VA 100000\r\n" + value + b"\r\n"


def test_mg_miss() -> None:
    assert miss(b"mg k v\r\n") == b"EN\r\n"
    assert miss(b"mg k v q\r\n") == b""
    assert miss(b"mg k Oa k s t\r\n") == b"EN Oa kk\r\n"
    assert miss(b"mg Zm9v b k v\r\n") == b"EN kZm9v b\r\n"
    # an opaque too long is an error, q or not (memcached: out_errstring); mg's is refused
    # by the parser (test_parser_meta), ma's found as it answers
    assert miss(b"ma k q O" + b"x" * 32 + b"\r\n") == b"CLIENT_ERROR opaque token too long\r\n"


@pytest.mark.parametrize(
    "line,outcome,cas,expected",
    [
        (b"ms k 1\r\nx\r\n", Outcome.STORED, 9, b"HD\r\n"),
        (b"ms k 1 c k O1\r\nx\r\n", Outcome.STORED, 9, b"HD c9 kk O1\r\n"),
        (b"ms k 1 q\r\nx\r\n", Outcome.STORED, 9, b""),
        (b"ms k 1 q c\r\nx\r\n", Outcome.NOT_STORED, 0, b"NS c0\r\n"),
        (b"ms k 1 q\r\nx\r\n", Outcome.EXISTS, 0, b"EX\r\n"),
        (b"ms k 1 q\r\nx\r\n", Outcome.NOT_FOUND, 0, b"NF\r\n"),
        (b"ms Zm9v 1 b k\r\nx\r\n", Outcome.STORED, 0, b"HD kZm9v b\r\n"),
        (b"ms k 1 q\r\nx\r\n", Error.NO_MEMORY_STORING, 0, None),
    ],
)
def test_ms(line: bytes, outcome: Outcome | Error, cas: int, expected: bytes | None) -> None:
    if expected is None:
        expected = b"SERVER_ERROR out of memory storing object\r\n"
    assert status(line, outcome, cas) == expected


@pytest.mark.parametrize(
    "line,outcome,expected",
    [
        (b"md k\r\n", Outcome.DELETED, b"HD\r\n"),
        (b"md k q\r\n", Outcome.DELETED, b""),
        (b"md k q k Oz\r\n", Outcome.NOT_FOUND, b"NF kk Oz\r\n"),
        (b"md k q C1\r\n", Outcome.EXISTS, b"EX\r\n"),
        (b"md k c\r\n", Outcome.DELETED, b"HD\r\n"),  # md has no c to give
        (b"ma k q\r\n", Outcome.NOT_FOUND, b"NF\r\n"),
        (b"ma k q k\r\n", Error.NON_NUMERIC, None),
        (b"mn\r\n", Outcome.NOOP, b"MN\r\n"),
    ],
)
def test_status(line: bytes, outcome: Outcome | Error, expected: bytes | None) -> None:
    if expected is None:
        expected = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    assert status(line, outcome) == expected


@pytest.mark.parametrize(
    "line,state,expected",
    [
        (b"ma k\r\n", item(value=b"5"), b"HD\r\n"),
        (b"ma k q\r\n", item(value=b"5"), b""),
        (b"ma k q N0\r\n", item(value=b"0", created=True), b"HD\r\n"),  # q keeps a creation
        (b"ma k v\r\n", item(value=b"15"), b"VA 2\r\n15\r\n"),
        (b"ma k v c t k Oo\r\n", item(value=b"15", ttl=3), b"VA 2 c7 t3 kk Oo\r\n15\r\n"),
        (b"ma k T9 t\r\n", item(value=b"1", ttl=None, touch_ttl=9), b"HD t9\r\n"),
        (b"ma k t N9\r\n", item(value=b"0", created=True, vivify_ttl=9), b"HD t-1\r\n"),
        (b"ma k N9 t\r\n", item(value=b"0", created=True, vivify_ttl=9), b"HD t9\r\n"),
        (b"ma Zm9v b k\r\n", item(value=b"1", binary_key=False), b"HD kZm9v b\r\n"),
        (b"ma k q O" + b"x" * 32 + b"\r\n", item(value=b"1"), None),
    ],
)
def test_ma(line: bytes, state: tuple[Any, ...], expected: bytes | None) -> None:
    if expected is None:
        expected = b"CLIENT_ERROR opaque token too long\r\n"
    assert hit(line, state) == expected


def test_me() -> None:
    state = item(ttl=90, idle=4, cas=12, fetched=True, clsid=2, total=80)
    assert hit(b"me k\r\n", state) == b"ME k exp=-90 la=4 cas=12 fetch=yes cls=2 size=80\r\n"
    assert hit(b"me k\r\n", item()) == b"ME k exp=-1 la=3 cas=7 fetch=no cls=1 size=66\r\n"
    assert hit(b"me Zm9v b\r\n", item(binary_key=True)).startswith(b"ME Zm9v exp=")
    assert hit(b"me Zm9v b\r\n", item()).startswith(b"ME foo exp=")  # a plain key, as is
    assert miss(b"me k\r\n") == b"EN\r\n"


def test_the_item_tuples_fields_are_storages() -> None:
    assert ITEM_FIELDS == ItemState._fields


def test_text_commands_have_no_item_reply() -> None:
    with pytest.raises(NotImplementedError):
        c.Get([b"k"]).reply_item([], item())
    for cmd in (parse(b"mg k\r\n"), parse(b"ma k\r\n")):
        with pytest.raises(NotImplementedError):
            cmd.reply_value([], b"k", b"v", 0, None)
        with pytest.raises(NotImplementedError):
            cmd.reply_one_value([], b"k", b"v", 0)
        with pytest.raises(NotImplementedError):
            cmd.reply_number([], 1)
