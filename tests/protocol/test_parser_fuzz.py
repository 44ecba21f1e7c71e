"""Property-based tests of the parser (hypothesis).

* Any bytes, cut anywhere: `next_command` returns commands or NEED_DATA and raises nothing
  but `CloseConnection`; the commands do not depend on where the bytes were cut (up to the
  point where one of the runs hung up: whether a line passes 2048 bytes before its newline
  arrives depends on the cut, in memcached too); and after the parser is drained it holds at
  most one partial line (2048 bytes, 1 MB for a multiget) or one partial data block.
* Valid commands, encoded as a client would, come back equal, however cut.
* The same for the ``-Y`` authentication phase.
* Whenever the parser says `at_end` (the server then stops asking), the next
  `next_command` would indeed have said NEED_DATA.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcached.errors import CloseConnection
from mcached.protocol import commands as c
from mcached.protocol.parser import (
    AUTH_BLOCK_MAX,
    MAX_LINE,
    MAX_MULTIGET_LINE,
    NEED_DATA,
    Parser,
)

pytestmark = pytest.mark.unit

FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ITEM_MAX = 2048  # a small -I, so that oversized values (swallowed) are generated too

# ---- strategies ----

keys = st.binary(min_size=1, max_size=40).filter(
    lambda k: not any(b in k for b in b" \r\n\0")
) | st.sampled_from([b"k", b"noreply", b"0", b"-1", b"HTTP/1.1", b"x" * 250])
values = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"a\r\nb", b"x" * 2100])
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
noreply = st.booleans()


def _nr(flag: bool) -> bytes:
    return b" noreply" if flag else b""


STORE = {
    b"set": c.Set,
    b"add": c.Add,
    b"replace": c.Replace,
    b"append": c.Append,
    b"prepend": c.Prepend,
}


@st.composite
def storage(draw: Any) -> tuple[bytes, c.Command]:
    verb = draw(st.sampled_from(sorted(STORE) + [b"cas"]))
    key, flags, exptime, value, nr = draw(keys), draw(u32), draw(i32), draw(values), draw(noreply)
    cas = draw(u64)
    head = b"%b %b %d %d %d" % (verb, key, flags, exptime, len(value))
    if verb == b"cas":
        head += b" %d" % cas
    data = head + _nr(nr) + b"\r\n" + value + b"\r\n"
    # what memcached charges against -I: header, key + NUL, value + CRLF, CAS, flags
    size = 48 + len(key) + 1 + len(value) + 2 + 8 + (4 if flags else 0)
    if size > ITEM_MAX:
        return data, c.TooLarge(verb, key, nr)
    if verb == b"cas":
        return data, c.Cas(key, flags, exptime, value, cas, nr)
    return data, STORE[verb](key, flags, exptime, value, nr)


@st.composite
def retrieval(draw: Any) -> tuple[bytes, c.Command]:
    verb = draw(st.sampled_from([b"get", b"gets", b"gat", b"gats"]))
    ks = draw(st.lists(keys, min_size=1, max_size=12))
    if verb in (b"get", b"gets"):
        cmd: c.Command = (c.Get if verb == b"get" else c.Gets)(ks)
        return b"%b %b\r\n" % (verb, b" ".join(ks)), cmd
    exptime = draw(i32)
    cmd = (c.Gat if verb == b"gat" else c.Gats)(exptime, ks)
    return b"%b %d %b\r\n" % (verb, exptime, b" ".join(ks)), cmd


@st.composite
def other(draw: Any) -> tuple[bytes, c.Command]:
    kind = draw(
        st.sampled_from(
            [
                "delete",
                "incr",
                "decr",
                "touch",
                "flush_all",
                "version",
                "verbosity",
                "quit",
                "stats",
            ]
        )
    )
    key, nr = draw(keys), draw(noreply)
    if kind == "delete":
        return b"delete %b%b\r\n" % (key, _nr(nr)), c.Delete(key, nr)
    if kind in ("incr", "decr"):
        delta = draw(u64)
        cls = c.Incr if kind == "incr" else c.Decr
        return b"%b %b %d%b\r\n" % (kind.encode(), key, delta, _nr(nr)), cls(key, delta, nr)
    if kind == "touch":
        exptime = draw(i32)
        return b"touch %b %d%b\r\n" % (key, exptime, _nr(nr)), c.Touch(key, exptime, nr)
    if kind == "flush_all":
        delay = draw(st.none() | st.integers(0, 2**31 - 1))
        text = b"flush_all" + (b"" if delay is None else b" %d" % delay) + _nr(nr)
        return text + b"\r\n", c.FlushAll(delay or 0, nr)
    if kind == "verbosity":
        level = draw(u32)
        return b"verbosity %d%b\r\n" % (level, _nr(nr)), c.Verbosity(level, nr)
    if kind == "stats":
        args = draw(st.lists(st.sampled_from([b"settings", b"items", b"slabs", b"x"]), max_size=2))
        return b" ".join([b"stats", *args]) + b"\r\n", c.Stats(args)
    return (b"version\r\n", c.Version()) if kind == "version" else (b"quit\r\n", c.Quit())


valid = storage() | retrieval() | other()


@st.composite
def cut(draw: Any, data: bytes) -> list[bytes]:
    """`data` in pieces: whole, byte by byte, or at random points."""
    how = draw(st.sampled_from(["whole", "bytes", "random"]))
    if how == "whole" or not data:
        return [data]
    if how == "bytes" and len(data) < 3000:
        return [data[i : i + 1] for i in range(len(data))]
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


hostile = st.lists(
    st.binary(max_size=600)
    | valid.map(lambda pair: pair[0])
    | st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\0",
            b" ",
            b"get " + b"k " * 1100,
            b"x" * 2100,
            b"set k 0 0 5000\r\n",
            b"set k 0 0 -1\r\n",
            b"GET / HTTP/1.1\r\n",
            b"set k 0 0 4294967296\r\n",
            b"set k 0 0 12\r\nalice s3cret\r\n",
        ]
    ),
    max_size=12,
).map(b"".join)


# ---- running the parser ----


def run(pieces: list[bytes], auth: bool = False, grant: bool = False) -> tuple[list[Any], bool]:
    """Feed the pieces, draining after each; the commands seen and whether it hung up.
    Checks the buffering bound after every drain."""
    parser = Parser(item_size_max=ITEM_MAX, auth=auth)
    seen: list[Any] = []
    try:
        for piece in pieces:
            parser.feed(piece)
            while (cmd := parser.next_command()) is not NEED_DATA:
                assert isinstance(cmd, c.Command)
                if isinstance(cmd, c.Auth):
                    seen.append(("auth", cmd.user, cmd.password))
                    if grant:
                        cmd.grant()
                else:
                    seen.append(cmd)
                if parser.at_end:
                    assert parser.next_command() is NEED_DATA
                    break
            check_bounded(parser)
    except CloseConnection:
        return seen, True
    return seen, False


def check_bounded(parser: Parser) -> None:
    """Drained: at most a partial line or a partial data block is held."""
    held = parser.buffered
    if parser.in_data_block:
        assert held < max(ITEM_MAX, AUTH_BLOCK_MAX) + 2
    elif held > MAX_LINE:
        head = bytes(parser._buf[parser._pos : parser._pos + 110]).lstrip(b" ")
        assert head.startswith((b"get ", b"gets ")) and held <= MAX_MULTIGET_LINE


def same_up_to_hangup(a: tuple[list[Any], bool], b: tuple[list[Any], bool]) -> None:
    (cmds_a, closed_a), (cmds_b, closed_b) = a, b
    if not closed_a and not closed_b:
        assert cmds_a == cmds_b
    elif closed_a and not closed_b:
        assert cmds_b[: len(cmds_a)] == cmds_a
    elif closed_b and not closed_a:
        assert cmds_a[: len(cmds_b)] == cmds_b
    else:
        n = min(len(cmds_a), len(cmds_b))
        assert cmds_a[:n] == cmds_b[:n]


# ---- properties ----


@FUZZ
@given(st.data(), st.binary(max_size=5000) | hostile)
def test_any_bytes_any_cut_only_hang_up(data: st.DataObject, raw: bytes) -> None:
    same_up_to_hangup(run([raw]), run(data.draw(cut(raw))))


@FUZZ
@given(st.data(), st.lists(valid, min_size=1, max_size=15))
def test_valid_commands_round_trip(data: st.DataObject, commands: list[tuple[bytes, Any]]) -> None:
    raw = b"".join(wire for wire, _ in commands)
    seen, closed = run(data.draw(cut(raw)))
    assert not closed
    assert seen == [cmd for _, cmd in commands]


@FUZZ
@given(st.data(), st.binary(max_size=3000) | hostile, st.booleans())
def test_auth_phase_any_bytes_any_cut(data: st.DataObject, raw: bytes, grant: bool) -> None:
    whole = run([raw], auth=True, grant=grant)
    same_up_to_hangup(whole, run(data.draw(cut(raw)), auth=True, grant=grant))
    if not grant:
        # unauthenticated, nothing but the exchange's answers ever comes out
        assert all(isinstance(x, tuple) or isinstance(x, c.Invalid) for x in whole[0])


token = st.binary(min_size=1, max_size=30).filter(lambda t: not any(b in t for b in b" \r\n\0"))


@FUZZ
@given(st.data(), token, token, st.lists(valid, max_size=5))
def test_auth_exchange_round_trips(
    data: st.DataObject, user: bytes, password: bytes, after: list[tuple[bytes, Any]]
) -> None:
    """The exchange yields Auth(user, password); once granted, the full protocol follows on
    the same buffer, however the bytes are cut."""
    block = user + b" " + password
    raw = b"set any 0 0 %d\r\n%b\r\n" % (len(block), block) + b"".join(w for w, _ in after)
    seen, closed = run(data.draw(cut(raw)), auth=True, grant=True)
    assert not closed
    assert seen == [("auth", user, password)] + [cmd for _, cmd in after]


reads = (
    st.binary(min_size=1, max_size=300)
    | st.builds(lambda k: b"get " + k + b"\r\n", keys | st.binary(max_size=260))
    | st.builds(
        lambda ks: b"get " + b" ".join(ks) + b"\r\n",
        st.lists(keys | st.binary(max_size=260), min_size=2, max_size=12),
    )
    | st.builds(lambda k: b"mg " + k + b" v\r\n", keys | st.binary(max_size=260))
)


@FUZZ
@given(reads)
def test_lone_is_next_command_or_nothing(raw: bytes) -> None:
    """Whatever one read brings, `lone` answers exactly what `next_command` would (all of
    it consumed, nothing after it), or leaves the bytes untouched."""
    p, q = Parser(), Parser()
    p.feed(raw)
    q.feed(raw)
    cmd = p.lone()
    if cmd is None:
        assert p.buffered == len(raw)
        return
    assert q.next_command() == cmd
    assert q.buffered == 0 and p.buffered == 0 and p.at_end
