"""mcached/protocol/binary.py and binary_parser.py: frames in, commands out; replies' bytes.

Parser cases live in a table, and each is fed whole, byte by byte, and with trailing bytes
(a NOOP after it), as the text parser's are.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from mcached.errors import CloseConnection
from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.binary_parser import (
    ASCII,
    AUTO,
    BINARY,
    SASL_DATA_MAX,
    BinaryParser,
    Negotiator,
)
from mcached.protocol.outcomes import Error, Outcome
from mcached.protocol.parser import NEED_DATA, Parser

pytestmark = pytest.mark.unit

R = b.request
SE = struct.Struct(">II").pack  # set's extras: flags, exptime
INCR = struct.Struct(">QQI").pack  # incr's extras: delta, initial, exptime
EXP = struct.Struct(">I").pack


def parse_all(data: bytes, step: int | None = None, **kw: Any) -> list[Any]:
    p = BinaryParser(**kw)
    out: list[Any] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        p.feed(chunk)
        while (cmd := p.next_command()) is not NEED_DATA:
            out.append(cmd)
    return out


CASES: list[tuple[str, bytes, Any]] = [
    ("get", R(b.GET, b"k", opaque=7), b.BinGet(b"k", b.GET, 7)),
    ("getq", R(b.GETQ, b"k"), b.BinGet(b"k", b.GETQ, 0, True)),
    ("getk", R(b.GETK, b"k"), b.BinGetK(b"k", b.GETK)),
    ("getkq", R(b.GETKQ, b"k"), b.BinGetK(b"k", b.GETKQ, 0, True)),
    (
        "set",
        R(b.SET, b"k", b"v", SE(5, 10), opaque=3),
        b.BinSet(b"k", 5, 10, b"v", b.SET, 3),
    ),
    ("setq", R(b.SETQ, b"k", b"v", SE(0, 0)), b.BinSet(b"k", 0, 0, b"v", b.SETQ, 0, True)),
    ("add", R(b.ADD, b"k", b"", SE(0, 0)), b.BinAdd(b"k", 0, 0, b"", b.ADD)),
    ("replace", R(b.REPLACE, b"k", b"v", SE(0, 0)), b.BinReplace(b"k", 0, 0, b"v", b.REPLACE)),
    (
        "set with a cas is a cas",
        R(b.SET, b"k", b"v", SE(0, 0), cas=9),
        b.BinCas(b"k", 0, 0, b"v", b.SET, 0, False, 9),
    ),
    (
        "add with a cas is a cas",
        R(b.ADD, b"k", b"v", SE(0, 0), cas=9),
        b.BinCas(b"k", 0, 0, b"v", b.ADD, 0, False, 9),
    ),
    (
        "an exptime past 2^31 is the farthest one",
        R(b.SET, b"k", b"v", SE(0, 0xFFFFFFFF)),
        b.BinSet(b"k", 0, 2**31 - 1, b"v", b.SET),
    ),
    ("append", R(b.APPEND, b"k", b"v"), b.BinAppend(b"k", 0, 0, b"v", b.APPEND)),
    (
        "prependq",
        R(b.PREPENDQ, b"k", b"v", cas=4),
        b.BinPrepend(b"k", 0, 0, b"v", b.PREPENDQ, 0, True, 4),
    ),
    ("delete", R(b.DELETE, b"k", cas=3), b.BinDelete(b"k", b.DELETE, 0, False, 3)),
    ("deleteq", R(b.DELETEQ, b"k"), b.BinDelete(b"k", b.DELETEQ, 0, True)),
    (
        "incr",
        R(b.INCREMENT, b"n", extras=INCR(2, 10, 60)),
        b.BinIncr(b"n", 2, 10, 60, True, b.INCREMENT),
    ),
    (
        "decrq that must not create",
        R(b.DECREMENTQ, b"n", extras=INCR(2, 10, 0xFFFFFFFF)),
        b.BinIncr(b"n", 2, 10, None, False, b.DECREMENTQ, 0, True),
    ),
    ("flush", R(b.FLUSH), b.BinFlush(0)),
    ("flushq with a delay", R(b.FLUSHQ, extras=EXP(5)), b.BinFlush(5, b.FLUSHQ, 0, True)),
    ("noop", R(b.NOOP, opaque=1), b.BinNoop(1)),
    ("version", R(b.VERSION), b.BinVersion()),
    ("quit", R(b.QUIT), b.BinQuit()),
    ("quitq", R(b.QUITQ), b.BinQuit(b.QUITQ, 0, True)),
    ("stat", R(b.STAT), b.BinStats([])),
    ("stat detail dump", R(b.STAT, b"detail dump"), b.BinStats([b"detail", b"dump"])),
    ("touch", R(b.TOUCH, b"k", extras=EXP(9)), b.BinTouch(b"k", 9, b.TOUCH)),
    ("gat", R(b.GAT, b"k", extras=EXP(9)), b.BinGat(b"k", 9, b.GAT)),
    ("gatq", R(b.GATQ, b"k", extras=EXP(9)), b.BinGat(b"k", 9, b.GATQ, 0, True)),
    ("gatk", R(b.GATK, b"k", extras=EXP(9)), b.BinGatK(b"k", 9, b.GATK)),
    ("gatkq", R(b.GATKQ, b"k", extras=EXP(9)), b.BinGatK(b"k", 9, b.GATKQ, 0, True)),
    (
        "unknown opcode: its body skipped",
        R(0x50, b"key", b"value", b"ext"),
        b.BinInvalid(Error.UNKNOWN_COMMAND, 0x50, 0, True),
    ),
    (
        "unknown opcode without a body: nothing to swallow",
        R(0x50),
        b.BinInvalid(Error.UNKNOWN_COMMAND, 0x50),
    ),
    (
        "verbosity: unknown, as in memcached 1.6.18",
        R(b.VERBOSITY, extras=EXP(1)),
        b.BinInvalid(Error.UNKNOWN_COMMAND, b.VERBOSITY, 0, True),
    ),
    (
        "sasl without -S: unknown",
        R(b.SASL_AUTH, b"PLAIN", b"\0u\0p"),
        b.BinInvalid(Error.UNKNOWN_COMMAND, b.SASL_AUTH, 0, True),
    ),
    # ElastiCache's config verbs (the AWS ElastiCache Cluster Client for Java's frames)
    ("config get", R(0x60, b"cluster", opaque=7), b.BinConfigGet(b"cluster", 7)),
    (
        "config get: extras and a value are skipped",
        R(0x60, b"cluster", b"junk", EXP(1)),
        b.BinConfigGet(b"cluster"),
    ),
    ("config get without a key", R(0x60), b.BinConfigGet(b"")),
    (
        "config set: the flags, then the data",
        R(0x64, b"cluster", b"2\nh|10.0.0.1|11211\n", EXP(9), opaque=3),
        b.BinConfigSet(b"cluster", 9, b"2\nh|10.0.0.1|11211\n", 3),
    ),
    (
        "config set without extras: flags 0",
        R(0x64, b"cluster", b"1\nh||1\n"),
        b.BinConfigSet(b"cluster", 0, b"1\nh||1\n"),
    ),
    (
        "config set over -I: too large, the data skipped",
        R(0x64, b"cluster", b"x" * 1025, EXP(0), opaque=4),
        b.BinInvalid(Error.TOO_LARGE, 0x64, 4, True),
    ),
    ("config delete", R(0x66, b"cluster", opaque=5), b.BinConfigDelete(b"cluster", 5)),
    (
        "a value over -I: too large, the value skipped",
        R(b.SET, b"big", b"x" * 2000, SE(0, 0)),
        b.BinTooLarge(b"set", b"big", b.SET),
    ),
]


@pytest.mark.parametrize(("name", "frame", "command"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("step", [None, 1])
def test_parse(name: str, frame: bytes, command: Any, step: int | None) -> None:
    assert parse_all(frame, step, item_size_max=1024) == [command]
    # with trailing bytes: the next request is read where this one ended
    assert parse_all(frame + R(b.NOOP, opaque=5), step, item_size_max=1024) == [
        command,
        b.BinNoop(5),
    ]


def test_sasl_frames_carry_the_connection_state() -> None:
    p = BinaryParser(sasl=True)
    p.feed(R(b.SASL_LIST_MECHS) + R(b.SASL_AUTH, b"PLAIN", b"\0u\0p") + R(b.SASL_STEP, b"X", b"d"))
    mechs, auth, step = p.next_command(), p.next_command(), p.next_command()
    assert mechs == b.BinSaslList(p.sasl_state)
    assert (auth.mech, auth.data, auth.state, auth.step) == (
        b"PLAIN",
        b"\0u\0p",
        p.sasl_state,
        False,
    )
    assert (step.mech, step.step) == (b"X", True)
    assert "\\0p" not in repr(auth) and "<4 bytes>" in repr(auth)  # -vvv never logs it


# ---- what memcached closes the connection behind, in its order ----

HANGUPS: list[tuple[str, bytes, Error | None]] = [
    ("wrong magic", b"\x81" + bytes(23), None),
    ("text on a binary port", b"get foo\r\n" + bytes(20), None),
    (
        "key and extras past the body",
        b.HEADER.pack(0x80, b.GET, 10, 0, 0, 0, 5, 0, 0) + b"hello",
        Error.UNKNOWN_COMMAND,
    ),
    ("a key over 250 bytes", R(b.GET, b"k" * 251), Error.BIN_INVALID),
    ("get with extras", R(b.GET, b"k", extras=b"1234"), Error.BIN_INVALID),
    ("set without its extras", R(b.SET, b"k", b"v"), Error.BIN_INVALID),
    ("noop with a body", R(b.NOOP, b"k"), Error.BIN_INVALID),
    ("incr with short extras", R(b.INCREMENT, b"k", extras=bytes(8)), Error.BIN_INVALID),
    ("flush with a key", R(b.FLUSH, b"k"), Error.BIN_INVALID),
    ("gat without extras", R(b.GAT, b"k"), Error.BIN_INVALID),
]


@pytest.mark.parametrize(("name", "frame", "error"), HANGUPS, ids=[h[0] for h in HANGUPS])
def test_protocol_errors_answer_then_hang_up(name: str, frame: bytes, error: Error | None) -> None:
    p = BinaryParser()
    p.feed(frame + R(b.NOOP))
    if error is not None:
        cmd = p.next_command()
        assert isinstance(cmd, b.BinInvalid) and cmd.error is error
    with pytest.raises(CloseConnection) as exc:
        p.next_command()
    assert exc.value.notice  # logged at -v, as memcached does
    with pytest.raises(CloseConnection):
        p.next_command()  # and it stays closed


def test_unauthenticated_opcodes_are_refused_then_hung_up() -> None:
    p = BinaryParser(sasl=True)
    p.feed(R(b.VERSION) + R(b.SET, b"k", b"v", SE(0, 0)) + R(b.NOOP))
    assert p.authenticating
    assert p.next_command() == b.BinVersion()  # version is allowed before authentication
    cmd = p.next_command()
    assert isinstance(cmd, b.BinInvalid) and cmd.error is Error.UNAUTHENTICATED
    with pytest.raises(CloseConnection):
        p.next_command()


def test_authenticated_connection_serves_everything() -> None:
    p = BinaryParser(sasl=True)
    p.sasl_state.authenticated = True
    p.feed(R(b.GET, b"k"))
    assert p.next_command() == b.BinGet(b"k")
    assert not p.authenticating


def test_sasl_mechanism_names_and_data_are_bounded() -> None:
    p = BinaryParser(sasl=True)
    p.feed(R(b.SASL_AUTH, b"X" * 40, b"data") + R(b.VERSION))
    cmd = p.next_command()
    assert isinstance(cmd, b.BinInvalid) and cmd.error is Error.BIN_INVALID  # not a hang-up
    assert p.next_command() == b.BinVersion()
    big = b.HEADER.pack(0x80, b.SASL_AUTH, 5, 0, 0, 0, 5 + SASL_DATA_MAX + 1, 0, 0) + b"PLAIN"
    p.feed(big)
    assert p.next_command() is NEED_DATA  # refused once the data is skipped (memcached's)
    assert p.in_data_block  # the data is being skipped, not buffered
    p.feed(bytes(SASL_DATA_MAX + 1) + R(b.VERSION))
    cmd = p.next_command()
    assert isinstance(cmd, b.BinInvalid) and cmd.error is Error.BIN_NO_MEMORY
    assert p.next_command() == b.BinVersion()


# ---- hostile input: nothing grows without bound ----


def test_a_4gb_body_is_skipped_as_it_arrives() -> None:
    p = BinaryParser(item_size_max=1024 * 1024)
    header = b.HEADER.pack(0x80, b.SET, 1, 8, 0, 0, 2**32 - 1, 0, 0) + SE(0, 0) + b"k"
    p.feed(header)
    assert p.next_command() is NEED_DATA  # refused once the body is skipped
    for _ in range(64):
        p.feed(bytes(65536))
        assert p.buffered == 0
        assert p.next_command() is NEED_DATA
    assert p.in_data_block


def test_a_huge_unknown_body_is_skipped() -> None:
    p = BinaryParser()
    p.feed(b.HEADER.pack(0x80, 0x50, 0, 0, 0, 0, 2**32 - 1, 0, 0))
    assert p.next_command() is NEED_DATA  # refused once the body is skipped
    p.feed(bytes(1 << 20))
    assert p.buffered == 0 and p.next_command() is NEED_DATA


@pytest.mark.parametrize("opcode", [0x60, 0x64, 0x66])
def test_a_huge_config_body_is_skipped(opcode: int) -> None:
    p = BinaryParser(item_size_max=1024)
    p.feed(b.HEADER.pack(0x80, opcode, 7, 0, 0, 0, 2**32 - 1, 0, 0) + b"cluster")
    # config set's refusal comes once the body is skipped; config get and delete are served
    # at once, what follows their key skipped
    assert (p.next_command() is NEED_DATA) == (opcode == b.CONFIG_SET)
    p.feed(bytes(1 << 20))
    assert p.buffered == 0 and p.next_command() is NEED_DATA


def test_a_long_key_is_refused_once_it_is_in() -> None:
    p = BinaryParser()
    p.feed(b.HEADER.pack(0x80, b.GET, 60000, 0, 0, 0, 60000, 0, 0))
    assert p.next_command() is NEED_DATA  # as memcached: the key first (64 KB at most)
    p.feed(bytes(60000))
    assert isinstance(p.next_command(), b.BinInvalid)


def test_truncated_frames_wait() -> None:
    p = BinaryParser()
    frame = R(b.SET, b"k", b"value", SE(0, 0))
    for n in range(len(frame) - 1):
        p = BinaryParser()
        assert p.feed(frame[:n]) is True
        assert p.next_command() is NEED_DATA
    assert p.in_data_block


def test_large_values_accumulate_linearly() -> None:
    value = bytes(200_000)
    frame = R(b.SET, b"k", value, SE(0, 0))
    cmds = parse_all(frame, 4096)
    assert cmds == [b.BinSet(b"k", 0, 0, value)]


# ---- replies: the exact bytes ----


def replies(cmd: Any, method: str, *args: Any) -> bytes:
    out: list[Any] = []
    getattr(cmd, method)(out, *args)
    return b"".join(bytes(x) for x in out)


def test_get_hit_and_miss_bytes() -> None:
    hit = replies(b.BinGet(b"k", b.GET, 7), "reply_value", b"k", b"val", 5, 99)
    assert hit == b.response(b.GET, 7, body=struct.pack(">I", 5) + b"val", extlen=4, cas=99)
    hitk = replies(b.BinGetK(b"k", b.GETKQ, 7, True), "reply_value", b"k", b"val", 5, 99)
    assert hitk == b.response(
        b.GETKQ, 7, body=struct.pack(">I", 5) + b"k" + b"val", extlen=4, keylen=1, cas=99
    )
    assert replies(b.BinGet(b"k"), "reply_miss", b"k") == b.response(b.GET, 0, 1, b"Not found")
    assert replies(b.BinGetK(b"k", b.GETK), "reply_miss", b"k") == b.response(
        b.GETK, 0, 1, b"k", keylen=1
    )
    assert replies(b.BinGet(b"k", b.GETQ, 0, True), "reply_miss", b"k") == b""
    touch = replies(b.BinTouch(b"k", 5, b.TOUCH), "reply_value", b"k", b"val", 3, 8)
    assert touch == b.response(b.TOUCH, 0, body=struct.pack(">I", 3), extlen=4, cas=8)


def test_status_bytes() -> None:
    cmd = b.BinSet(b"k", 0, 0, b"v", b.SET, 3)
    assert replies(cmd, "reply_stored", Outcome.STORED, 77) == b.response(b.SET, 3, cas=77)
    assert replies(cmd, "reply_stored", Outcome.EXISTS, 0) == b.response(
        b.SET, 3, 2, b"Data exists for key."
    )
    quiet = b.BinSet(b"k", 0, 0, b"v", b.SETQ, 3, True)
    assert replies(quiet, "reply_stored", Outcome.STORED, 77) == b""
    assert replies(quiet, "reply_stored", Error.TOO_LARGE, 0) == b.response(
        b.SETQ, 3, 3, b"Too large."
    )
    add = b.BinAdd(b"k", 0, 0, b"v", b.ADD)
    assert replies(add, "reply_stored", Outcome.NOT_STORED, 0) == b.response(
        b.ADD, 0, 2, b"Data exists for key."
    )
    rep = b.BinReplace(b"k", 0, 0, b"v", b.REPLACE)
    assert replies(rep, "reply", Outcome.NOT_STORED) == b.response(b.REPLACE, 0, 1, b"Not found")
    app = b.BinAppend(b"k", 0, 0, b"v", b.APPEND)
    assert replies(app, "reply", Outcome.NOT_STORED) == b.response(b.APPEND, 0, 5, b"Not stored.")
    inc = b.BinIncr(b"n", 1, 0, None)
    assert replies(inc, "reply", Error.NON_NUMERIC) == b.response(
        b.INCREMENT, 0, 6, b"Non-numeric server-side value for incr or decr"
    )
    item = (b"42", 0, 5) + (0,) * 13
    assert replies(inc, "reply_item", item) == b.response(
        b.INCREMENT, 0, body=struct.pack(">Q", 42), cas=5
    )
    assert replies(b.BinFlush(0), "reply", Error.FLUSH_DISABLED) == b.response(
        b.FLUSH, 0, 0x20, b"Auth failure."
    )
    assert replies(b.BinVersion(4), "reply_version", "1.6.18") == b.response(
        b.VERSION, 4, body=b"1.6.18"
    )
    assert replies(b.BinQuit(b.QUITQ, 0, True), "reply", Outcome.OK) == b""


def test_stats_bytes() -> None:
    st = b.BinStats([], 9)
    got = replies(st, "reply_stats", [("pid", 12), ("version", "1.6.18")])
    assert got == (
        b.response(b.STAT, 9, body=b"pid12", keylen=3)
        + b.response(b.STAT, 9, body=b"version1.6.18", keylen=7)
        + b.response(b.STAT, 9)
    )
    assert replies(st, "reply", Outcome.RESET) == b.response(b.STAT, 9)
    assert replies(st, "reply", Error.UNKNOWN_COMMAND) == b.response(b.STAT, 9, 1, b"Not found")
    dump = replies(st, "reply_prefix_stats", [(b"a", 1, 2, 3, 4)])
    text = b"PREFIX a get 1 hit 2 set 3 del 4\r\nEND\r\n"
    assert dump == b.response(b.STAT, 9, body=b"detailed" + text, keylen=8) + b.response(b.STAT, 9)


def test_sasl_reply_bytes() -> None:
    auth = b.BinSaslAuth(b"CRAM-MD5", b"", b.SaslState(), b.SASL_AUTH, 2)
    assert replies(auth, "reply_challenge", b"<1.2@h>") == b.response(
        b.SASL_AUTH, 2, 0x21, b"<1.2@h>"
    )
    assert replies(auth, "reply_authenticated") == b.response(b.SASL_AUTH, 2, body=b"Authenticated")
    assert replies(b.BinSaslList(b.SaslState()), "reply_mechs", b"PLAIN") == b.response(
        b.SASL_LIST_MECHS, 0, body=b"PLAIN"
    )


def test_config_reply_bytes() -> None:
    data = b"1\nlocalhost|127.0.0.1|11211\n"
    got = replies(b.BinConfigGet(b"cluster", 0x01020304), "reply_config", b"cluster", data)
    # magic, opcode 0x60, no key, 4 bytes of extras, status 0, body 4 + 28, the opaque, CAS 0;
    # then the flags (0) and the data, the key left out
    assert got == (
        bytes.fromhex("81 60 0000 04 00 0000 00000020 01020304 0000000000000000")
        + b"\0\0\0\0"
        + data
    )
    cset = b.BinConfigSet(b"cluster", 0, data, 6)
    assert replies(cset, "reply", Outcome.STORED) == bytes.fromhex(
        "81 64 0000 00 00 0000 00000000 00000006 0000000000000000"
    )
    assert replies(cset, "reply", Error.CONFIG_SET_DISABLED) == (
        bytes.fromhex("81 64 0000 00 00 0020 0000000d 00000006 0000000000000000") + b"Auth failure."
    )
    assert replies(cset, "reply", Error.BAD_CLUSTER_CONFIG, "no nodes") == (
        bytes.fromhex("81 64 0000 00 00 0004 00000011 00000006 0000000000000000")
        + b"Invalid arguments"
    )
    cdel = b.BinConfigDelete(b"cluster", 2)
    assert replies(cdel, "reply", Outcome.DELETED) == b.response(0x66, 2)
    assert replies(cdel, "reply", Outcome.NOT_FOUND) == b.response(0x66, 2, 1, b"Not found")
    assert replies(cdel, "reply", Error.CONFIG_DELETE_DISABLED) == b.response(
        0x66, 2, 0x20, b"Auth failure."
    )
    # no discovery (or another key): memcached's answer to an opcode it does not know
    assert replies(b.BinConfigGet(b"x", 9), "reply", Error.UNKNOWN_COMMAND) == (
        bytes.fromhex("81 60 0000 00 00 0081 0000000f 00000009 0000000000000000")
        + b"Unknown command"
    )


def test_header_fields() -> None:
    f = b.header_fields(b.response(b.GET, 5, 1, b"Not found"))
    assert (f["magic"], f["status"], f["bodylen"], f["opaque"]) == (0x81, 1, 9, 5)


# ---- -B: the first byte picks the protocol ----


def _negotiator(mode: str, auth: bool = False) -> Negotiator:
    return Negotiator(mode, Parser, BinaryParser, auth)


@pytest.mark.parametrize("mode", [AUTO, BINARY])
def test_negotiator_picks_binary_on_0x80(mode: str) -> None:
    n = _negotiator(mode)
    adopted: list[Any] = []
    n.adopt = adopted.append
    assert (n.buffered, n.in_data_block, n.at_end) == (0, False, False)
    assert n.next_command() is NEED_DATA
    n.feed(R(b.NOOP))
    assert isinstance(adopted[0], BinaryParser)
    assert n.next_command() == b.BinNoop()


def test_negotiator_picks_text_otherwise() -> None:
    n = _negotiator(AUTO)
    assert n.feed(b"") is True  # nothing yet: still undecided
    n.feed(b"version\r\n")
    assert isinstance(n.chosen, Parser)
    assert type(n.next_command()).__name__ == "Version"
    assert not n.authenticating


def test_ascii_only_refuses_binary_at_once() -> None:
    n = _negotiator(ASCII)
    n.feed(R(b.GET, b"k"))
    n.feed(b"more")
    with pytest.raises(CloseConnection) as exc:
        n.next_command()
    assert exc.value.notice and "-B ascii" in exc.value.reason


def test_binary_only_hangs_up_on_text() -> None:
    n = _negotiator(BINARY)
    n.feed(b"get foo\r\n" + bytes(24))
    with pytest.raises(CloseConnection):
        n.next_command()


def test_negotiator_reports_authentication_to_come() -> None:
    assert _negotiator(ASCII, auth=True).authenticating


def test_the_rest_of_the_replies() -> None:
    get = b.BinGet(b"k", b.GET, 1)
    assert replies(get, "reply_end") == b""
    assert replies(get, "reply_one_value", b"k", b"v", 0) == b.response(
        b.GET, 1, body=bytes(4) + b"v", extlen=4
    )
    assert replies(get, "reply_one_miss", b"k") == b.response(b.GET, 1, 1, b"Not found")
    assert replies(b.BinDelete(b"k"), "reply", Outcome.DELETED) == b.response(b.DELETE, 0)
    assert replies(b.BinDelete(b"k", b.DELETEQ, 0, True), "reply", Outcome.DELETED) == b""
    quiet_incr = b.BinIncr(b"n", 1, 0, None, True, b.INCREMENTQ, 0, True)
    assert replies(quiet_incr, "reply_item", (b"1", 0, 5) + (0,) * 13) == b""
    for method, args in (
        ("reply_number", (1,)),
        ("reply_metadump", ([],)),
    ):
        with pytest.raises(NotImplementedError):
            replies(get, method, *args)
    assert "authenticated=False" in repr(b.SaslState())


def test_partial_frames_in_a_growing_buffer() -> None:
    value = bytes(100_000)
    frame = R(b.SET, b"k", value, SE(0, 0)) + R(b.NOOP)
    p = BinaryParser()
    p.feed(frame[:70_000])  # past BUFFER_SWITCH: the buffer becomes a bytearray
    assert p.next_command() is NEED_DATA
    p.feed(frame[70_000:])
    assert p.next_command() == b.BinSet(b"k", 0, 0, value)
    p.feed(R(b.NOOP, opaque=2))  # the bytearray keeps its unread tail
    assert p.next_command() == b.BinNoop()
    assert p.next_command() == b.BinNoop(2)


def test_a_skip_that_spans_feeds_and_commands() -> None:
    p = BinaryParser(item_size_max=1024)
    big = R(b.SET, b"k", bytes(5000), SE(0, 0))
    p.feed(big[:2000])
    assert p.next_command() is NEED_DATA  # still skipping what is buffered
    p.feed(big[2000:] + R(b.NOOP))
    # refused once its value is all in and skipped, as memcached answers after its swallow
    assert isinstance(p.next_command(), b.BinTooLarge)
    assert p.next_command() == b.BinNoop()


def test_sasl_data_arrives_in_pieces() -> None:
    p = BinaryParser(sasl=True)
    frame = R(b.SASL_AUTH, b"PLAIN", b"\0alice\0secret")
    p.feed(frame[:-3])
    assert p.next_command() is NEED_DATA
    p.feed(frame[-3:])
    assert p.next_command().data == b"\0alice\0secret"


def test_take_is_the_text_parsers() -> None:
    p = BinaryParser()
    assert p.take(1) == b""
    p.feed(b"abcdef")
    assert p.take(2) == b"ab" and p.buffered == 4
    assert p.take(10) == b"cdef" and p.buffered == 0
    n = _negotiator(AUTO)
    assert n.take(1) == b""
    n.feed(b"set k 0 0 1\r\n")
    assert n.take(0) == b""


BIG = 20_000
INCOMING: list[tuple[str, bytes, Any]] = [
    ("set", R(b.SET, b"k", b"v" * BIG, SE(3, 60), 5), b.BinSet(b"k", 3, 60, b"", b.SET, 5)),
    ("setq", R(b.SETQ, b"k", b"v" * BIG, SE(0, 0)), b.BinSet(b"k", 0, 0, b"", b.SETQ, 0, True)),
    ("add", R(b.ADD, b"k", b"v" * BIG, SE(0, 0)), b.BinAdd(b"k", 0, 0, b"", b.ADD)),
    (
        "replace-cas",
        R(b.REPLACE, b"k", b"v" * BIG, SE(0, 0), cas=9),
        b.BinCas(b"k", 0, 0, b"", b.REPLACE, 0, False, 9),
    ),
    ("append", R(b.APPEND, b"k", b"v" * BIG), b.BinAppend(b"k", 0, 0, b"", b.APPEND)),
    (
        "prependq",
        R(b.PREPENDQ, b"k", b"v" * BIG, cas=4),
        b.BinPrepend(b"k", 0, 0, b"", b.PREPENDQ, 0, True, 4),
    ),
]


@pytest.mark.parametrize("name,frame,store", INCOMING, ids=[x[0] for x in INCOMING])
def test_a_large_value_still_arriving_is_incoming(name: str, frame: bytes, store: Any) -> None:
    """A store's value of receive_min bytes or more that has not all arrived: the server
    receives it into place, with no CRLF after it (as the text parser's `Incoming`)."""
    p = BinaryParser(receive_min=16384)
    head = len(frame) - BIG
    p.feed(frame[: head + 100])
    assert p.next_command() == c.Incoming(store, BIG, 0)
    assert p.take(BIG) == b"v" * 100
    assert p.buffered == 0 and not p.in_data_block
    p.feed(R(b.NOOP))
    assert p.next_command() == b.BinNoop(0)
    # whole, or under receive_min: read by the parser as before
    assert parse_all(frame, receive_min=16384) == [
        type(store)(b"k", store.flags, store.exptime, b"v" * BIG, *_bin_tail(store))
    ]
    p = BinaryParser(receive_min=BIG + 1)
    p.feed(frame[:-1])
    assert p.next_command() is NEED_DATA


def _bin_tail(store: Any) -> tuple[Any, ...]:
    return (store.opcode, store.opaque, store.quiet, store.cas_unique)
