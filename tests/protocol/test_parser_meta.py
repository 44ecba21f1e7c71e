"""The meta commands' parsing: cases from a table, each fed whole, byte by byte, and followed
by trailing bytes (as test_parser.py); then memcached's base64 decoder and flag rules."""

from __future__ import annotations

import base64

import pytest

from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error
from mcached.protocol.parser import NEED_DATA, Parser, base64_decode

pytestmark = pytest.mark.unit

ERR = c.Invalid(Error.UNKNOWN_COMMAND)
FMT = c.Invalid(Error.BAD_FORMAT)
K250 = b"k" * 250
K251 = b"k" * 251
O32 = b"O" + b"x" * 31  # the longest opaque token memcached takes
O33 = b"O" + b"x" * 32


def bad(error: Error) -> c.Invalid:
    return c.Invalid(error)


CASES: list[tuple[str, bytes, list[c.Command]]] = [
    # ---- mg ----
    ("mg-bare", b"mg k\r\n", [c.MetaGet(b"k", [])]),
    ("mg-v", b"mg k v\r\n", [c.MetaValue(b"k")]),
    (
        "mg-return-flags",
        b"mg k s f t c k Oabc q h l\r\n",
        [c.MetaGet(b"k", [b"s", b"f", b"t", b"c", b"k", b"Oabc", b"q", b"h", b"l"], quiet=True)],
    ),
    ("mg-u", b"mg k u v\r\n", [c.MetaGet(b"k", [b"u", b"v"], want_value=True, bump=False)]),
    (
        "mg-lease-flags",
        b"mg k N30 R10 T60\r\n",
        [
            c.MetaGet(
                b"k",
                [b"N30", b"R10", b"T60"],
                touch=60,
                vivify=30,
                recache=10,
                recache_after_touch=False,
                vivify_last=False,
            )
        ],
    ),
    (
        "mg-touch-before-recache",
        b"mg k T60 R10 N30\r\n",
        [
            c.MetaGet(
                b"k",
                [b"T60", b"R10", b"N30"],
                touch=60,
                vivify=30,
                recache=10,
                recache_after_touch=True,
                vivify_last=True,
            )
        ],
    ),
    ("mg-negative-ttl", b"mg k T-1\r\n", [c.MetaGet(b"k", [b"T-1"], touch=-1)]),
    ("mg-ttl-int32-wrap", b"mg k T4294967297\r\n", [c.MetaGet(b"k", [b"T4294967297"], touch=1)]),
    (
        "mg-flags-with-tails",
        b"mg k vxyz sx\r\n",
        [c.MetaGet(b"k", [b"vxyz", b"sx"], want_value=True)],
    ),
    # mg reads the other commands' flags too, and has no use for them
    (
        "mg-other-commands-flags",
        b"mg k MZ C5 F1 J2 D3 I P L\r\n",
        [c.MetaGet(b"k", [b"MZ", b"C5", b"F1", b"J2", b"D3", b"I", b"P", b"L"])],
    ),
    ("mg-extra-spaces", b"mg  k   v \r\n", [c.MetaValue(b"k")]),
    ("mg-bare-lf", b"mg k v\n", [c.MetaValue(b"k")]),
    ("mg-no-key", b"mg\r\n", [ERR]),
    ("mg-250", b"mg " + K250 + b"\r\n", [c.MetaGet(K250, [])]),
    ("mg-251", b"mg " + K251 + b" v\r\n", [FMT]),
    ("mg-invalid-flag", b"mg k x\r\n", [bad(Error.META_FLAG_INVALID)]),
    ("mg-digit-flag", b"mg k 1\r\n", [bad(Error.META_FLAG_INVALID)]),
    ("mg-duplicate", b"mg k v s v\r\n", [bad(Error.META_FLAG_DUPLICATE)]),
    ("mg-duplicate-token", b"mg k O1 O2\r\n", [bad(Error.META_FLAG_DUPLICATE)]),
    ("mg-high-byte", b"mg k \xc3\xa9\r\n", [bad(Error.META_FLAG_DUPLICATE)]),
    ("mg-del-byte", b"mg k \x7f\r\n", [bad(Error.META_FLAG_DUPLICATE)]),
    ("mg-bad-ttl", b"mg k Tx\r\n", [bad(Error.META_BAD_TOKEN)]),
    ("mg-empty-ttl", b"mg k N\r\n", [bad(Error.META_BAD_TOKEN)]),
    ("mg-bad-cas", b"mg k C-1\r\n", [bad(Error.META_BAD_TOKEN)]),
    ("mg-bad-flags-says-format", b"mg k Fx\r\n", [FMT]),
    ("mg-last-error-wins", b"mg k Nx D-1\r\n", [bad(Error.META_BAD_DELTA)]),
    ("mg-bad-f-keeps-earlier-words", b"mg k Nx Fx\r\n", [bad(Error.META_BAD_TOKEN)]),
    ("mg-invalid-after-bad", b"mg k Nx z\r\n", [bad(Error.META_FLAG_INVALID)]),
    ("mg-mode-length", b"mg k M\r\n", [bad(Error.META_MODE_LENGTH)]),
    ("mg-bad-initial", b"mg k Jx\r\n", [bad(Error.META_BAD_INITIAL)]),
    (
        "mg-19-tokens",
        b"mg k v s f t c k h l u q O1 P L T1 N1 R1 M1\r\n",
        [
            c.MetaGet(
                b"k",
                [b"v", b"s", b"f", b"t", b"c", b"k", b"h", b"l", b"u", b"q", b"O1", b"P"]
                + [b"L", b"T1", b"N1", b"R1", b"M1"],
                quiet=True,
                want_value=True,
                bump=False,
                touch=1,
                vivify=1,
                recache=1,
                recache_after_touch=True,
                vivify_last=True,
            )
        ],
    ),
    (
        "mg-20-tokens",
        b"mg k v s f t c k h l u q O1 P L T1 N1 R1 M1 C1\r\n",
        [bad(Error.META_TOO_MANY_FLAGS)],
    ),
    ("mg-opaque-32", b"mg k " + O32 + b"\r\n", [c.MetaGet(b"k", [O32])]),
    # an O too long: refused before the lookup (memcached finds it as it answers, having
    # applied only the flags before it: no hit, win, touch or bump here)
    ("mg-opaque-33", b"mg k " + O33 + b"\r\n", [bad(Error.META_OPAQUE_TOO_LONG)]),
    # ---- base64 keys ----
    ("mg-b64", b"mg Zm9v b v\r\n", [c.MetaGet(b"foo", [b"b", b"v"], True, want_value=True)]),
    ("mg-b64-bad", b"mg Zm9 b\r\n", [bad(Error.META_KEY_DECODE)]),
    (
        "mg-b64-long",
        b"mg " + base64.b64encode(b"x" * 186) + b" b\r\n",
        [c.MetaGet(b"x" * 186, [b"b"], True)],
    ),
    ("mg-b64-over-250-encoded", b"mg " + base64.b64encode(b"x" * 187) + b" b\r\n", [FMT]),
    # ---- ms ----
    ("ms", b"ms k 2\r\nhi\r\n", [c.MetaSet(b"k", 0, 0, b"hi", [])]),
    (
        "ms-flags",
        b"ms k 2 T30 F5 c k O1 q\r\nhi\r\n",
        [c.MetaSet(b"k", 5, 30, b"hi", [b"T30", b"F5", b"c", b"k", b"O1", b"q"], quiet=True)],
    ),
    ("ms-add", b"ms k 1 ME\r\nx\r\n", [c.MetaAdd(b"k", 0, 0, b"x", [b"ME"])]),
    ("ms-append", b"ms k 1 MA\r\nx\r\n", [c.MetaAppend(b"k", 0, 0, b"x", [b"MA"])]),
    ("ms-prepend", b"ms k 1 MP\r\nx\r\n", [c.MetaPrepend(b"k", 0, 0, b"x", [b"MP"])]),
    ("ms-replace", b"ms k 1 MR\r\nx\r\n", [c.MetaReplace(b"k", 0, 0, b"x", [b"MR"])]),
    ("ms-set", b"ms k 1 MS\r\nx\r\n", [c.MetaSet(b"k", 0, 0, b"x", [b"MS"])]),
    ("ms-cas", b"ms k 1 C7\r\nx\r\n", [c.MetaCas(b"k", 0, 0, b"x", [b"C7"], cas_unique=7)]),
    ("ms-cas-0", b"ms k 1 C0\r\nx\r\n", [c.MetaCas(b"k", 0, 0, b"x", [b"C0"])]),
    (
        "ms-replace-cas",
        b"ms k 1 MR C7\r\nx\r\n",
        [c.MetaCas(b"k", 0, 0, b"x", [b"MR", b"C7"], cas_unique=7)],
    ),
    (
        "ms-append-cas",
        b"ms k 1 MA C7\r\nx\r\n",
        [c.MetaAppend(b"k", 0, 0, b"x", [b"MA", b"C7"], cas_unique=7)],
    ),
    (
        "ms-invalidate",
        b"ms k 1 I C7\r\nx\r\n",
        [c.MetaCas(b"k", 0, 0, b"x", [b"I", b"C7"], cas_unique=7, invalidate=True)],
    ),
    ("ms-b64", b"ms Zm9v 1 b\r\nx\r\n", [c.MetaSet(b"foo", 0, 0, b"x", [b"b"], True)]),
    (
        "ms-flags-wrap",
        b"ms k 1 F4294967296\r\nx\r\n",
        [c.MetaSet(b"k", 0, 0, b"x", [b"F4294967296"])],
    ),
    ("ms-length-wraps", b"ms k 4294967297\r\nx\r\n", [c.MetaSet(b"k", 0, 0, b"x", [])]),
    ("ms-empty", b"ms k 0\r\n\r\n", [c.MetaSet(b"k", 0, 0, b"", [])]),
    ("ms-no-key", b"ms\r\n", [ERR]),
    ("ms-no-length", b"ms k\r\n", [FMT]),
    ("ms-bad-length", b"ms k x\r\nget a\r\n", [FMT, c.Get([b"a"])]),
    ("ms-negative-length", b"ms k -1\r\n", [FMT]),
    ("ms-length-int-max", b"ms k 2147483646\r\n", [FMT]),
    ("ms-251-not-swallowed", b"ms " + K251 + b" 1\r\nx\r\n", [FMT, ERR]),
    (
        "ms-20-tokens",
        b"ms k 1 a b c d e f g h i j k l m n o p q\r\nx\r\n",
        [bad(Error.META_TOO_MANY_FLAGS_STORE), ERR],
    ),
    # a flag error swallows the data block
    (
        "ms-invalid-flag",
        b"ms k 2 z\r\nhi\r\nget a\r\n",
        [bad(Error.META_FLAG_INVALID), c.Get([b"a"])],
    ),
    ("ms-duplicate", b"ms k 2 q q\r\nhi\r\n", [bad(Error.META_FLAG_DUPLICATE)]),
    ("ms-bad-ttl", b"ms k 2 Tx\r\nhi\r\n", [bad(Error.META_BAD_TOKEN)]),
    ("ms-bad-client-flags", b"ms k 2 F-1\r\nhi\r\n", [FMT]),
    ("ms-bad-mode", b"ms k 2 MZ\r\nhi\r\n", [bad(Error.META_SET_MODE)]),
    ("ms-mode-beats-opaque", b"ms k 2 " + O33 + b" MZ\r\nhi\r\n", [bad(Error.META_SET_MODE)]),
    ("ms-opaque-33", b"ms k 2 " + O33 + b"\r\nhi\r\n", [bad(Error.META_OPAQUE_TOO_LONG)]),
    ("ms-b64-bad", b"ms Zm9 2 b\r\nhi\r\n", [bad(Error.META_KEY_DECODE)]),
    ("ms-bad-chunk", b"ms k 1\r\nxy\r\n", [c.BadDataChunk(b"ms", b"k", False, 0, 1), ERR]),
    ("ms-bad-chunk-quiet", b"ms k 1 q\r\nxy\r\n", [c.BadDataChunk(b"ms", b"k", False, 0, 1), ERR]),
    # ---- md ----
    ("md", b"md k\r\n", [c.MetaDelete(b"k", [])]),
    (
        "md-flags",
        b"md k q C5 I T30 k O1\r\n",
        [c.MetaDelete(b"k", [b"q", b"C5", b"I", b"T30", b"k", b"O1"], False, True, 5, True, 30)],
    ),
    ("md-cas-0", b"md k C0\r\n", [c.MetaDelete(b"k", [b"C0"], cas=0)]),
    ("md-no-key", b"md\r\n", [ERR]),
    ("md-251", b"md " + K251 + b"\r\n", [FMT]),
    ("md-invalid-flag", b"md k x\r\n", [bad(Error.META_FLAG_BAD)]),
    ("md-bad-token", b"md k Cx\r\n", [bad(Error.META_FLAG_BAD)]),
    ("md-opaque-33", b"md k " + O33 + b"\r\n", [bad(Error.META_OPAQUE_TOO_LONG)]),
    (
        "md-20-tokens",
        b"md k a b c d e f g h i j k l m n o p q r\r\n",
        [bad(Error.META_TOO_MANY_FLAGS_STORE)],
    ),
    # ---- ma ----
    ("ma", b"ma k\r\n", [c.MetaArith(b"k", [])]),
    ("ma-decr", b"ma k MD D5\r\n", [c.MetaArith(b"k", [b"MD", b"D5"], incr=False, delta=5)]),
    ("ma-decr-minus", b"ma k M-\r\n", [c.MetaArith(b"k", [b"M-"], incr=False)]),
    ("ma-incr-plus", b"ma k M+\r\n", [c.MetaArith(b"k", [b"M+"])]),
    ("ma-incr-i", b"ma k MI\r\n", [c.MetaArith(b"k", [b"MI"])]),
    (
        "ma-vivify",
        b"ma k N0 J13 v t T5\r\n",
        [
            c.MetaArith(
                b"k",
                [b"N0", b"J13", b"v", b"t", b"T5"],
                vivify=0,
                initial=13,
                touch=5,
                vivify_last=False,
                want_value=True,
            )
        ],
    ),
    ("ma-cas", b"ma k C9 c\r\n", [c.MetaArith(b"k", [b"C9", b"c"], cas=9)]),
    (
        "ma-delta-max",
        b"ma k D18446744073709551615\r\n",
        [c.MetaArith(b"k", [b"D18446744073709551615"], delta=2**64 - 1)],
    ),
    # strtoull negates modulo 2^64: memcached takes "-18446744073709551615" as 1
    (
        "ma-delta-negative-wrap",
        b"ma k D-18446744073709551615\r\n",
        [c.MetaArith(b"k", [b"D-18446744073709551615"], delta=1)],
    ),
    ("ma-delta-negative", b"ma k D-1\r\n", [bad(Error.META_FLAG_BAD)]),
    ("ma-delta-over", b"ma k D18446744073709551616\r\n", [bad(Error.META_FLAG_BAD)]),
    ("ma-bad-mode", b"ma k MX\r\n", [bad(Error.META_ARITH_MODE)]),
    ("ma-mode-length", b"ma k MII\r\n", [bad(Error.META_FLAG_BAD)]),
    ("ma-no-key", b"ma\r\n", [ERR]),
    ("ma-251", b"ma " + K251 + b"\r\n", [FMT]),
    ("ma-opaque-33", b"ma k " + O33 + b"\r\n", [c.MetaArith(b"k", [O33])]),
    # ---- mn, me, and other m* ----
    ("mn", b"mn\r\n", [c.MetaNoop()]),
    ("mn-args", b"mn foo bar\r\n", [c.MetaNoop()]),
    ("me", b"me k\r\n", [c.MetaDebug(b"k")]),
    ("me-b64", b"me Zm9v b\r\n", [c.MetaDebug(b"foo", True)]),
    ("me-b64-bad", b"me Zm9 b\r\n", [FMT]),
    ("me-other-flag", b"me Zm9v x\r\n", [c.MetaDebug(b"Zm9v")]),
    ("me-no-key", b"me\r\n", [FMT]),
    ("me-251", b"me " + K251 + b"\r\n", [FMT]),
    ("mx", b"mx\r\n", [ERR]),
    ("m", b"m\r\n", [ERR]),
    ("mget", b"mget k\r\n", [ERR]),
    (
        "pipeline-mixed",
        b"mg a v q\r\nget b\r\nms c 1\r\nx\r\nset d 0 0 1\r\ny\r\nmn\r\n",
        [
            c.MetaGet(b"a", [b"v", b"q"], quiet=True, want_value=True),
            c.Get([b"b"]),
            c.MetaSet(b"c", 0, 0, b"x", []),
            c.Set(b"d", 0, 0, b"y"),
            c.MetaNoop(),
        ],
    ),
]


def drain(p: Parser) -> list[object]:
    out: list[object] = []
    while True:
        cmd = p.next_command()
        if cmd is NEED_DATA:
            return out
        out.append(cmd)


IDS = [n for n, _, _ in CASES]
ROWS = [(d, e) for _, d, e in CASES]


@pytest.mark.parametrize("data,expected", ROWS, ids=IDS)
def test_whole(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    p.feed(data)
    assert drain(p) == expected
    assert p.buffered == 0


@pytest.mark.parametrize("data,expected", ROWS, ids=IDS)
def test_byte_by_byte(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    got: list[object] = []
    for i in range(len(data)):
        p.feed(data[i : i + 1])
        got.extend(drain(p))
    assert got == expected


@pytest.mark.parametrize("data,expected", ROWS, ids=IDS)
def test_trailing_bytes(data: bytes, expected: list[c.Command]) -> None:
    p = Parser()
    p.feed(data + b"mg tail\r\nmg par")
    assert drain(p) == expected + [c.MetaGet(b"tail", [])]
    p.feed(b"tial v\r\n")
    assert drain(p) == [c.MetaValue(b"partial")]


def test_ms_too_large_is_swallowed_and_drops_the_key() -> None:
    p = Parser(item_size_max=1024)
    p.feed(b"ms k 5000 MA\r\n" + b"x" * 100)
    assert p.next_command() is NEED_DATA
    p.feed(b"x" * 4900 + b"\r\nmn\r\n")
    # named by its mode (a watcher's line says cmd=append); memcached drops the stored
    # item whatever the mode, which the handler does for any meta one; kept out of stats
    # detail
    assert drain(p) == [c.MetaTooLarge(b"append", b"k"), c.MetaNoop()]


def test_ms_flag_error_swallows_a_block_arriving_later() -> None:
    p = Parser()
    p.feed(b"ms k 10 zz\r\n")
    assert drain(p) == []
    p.feed(b"0123456789\r\nmn\r\n")
    assert drain(p) == [c.Invalid(Error.META_FLAG_INVALID), c.MetaNoop()]


def test_ms_key_too_long_as_sent_is_refused_before_decoding() -> None:
    # memcached checks the length as sent (250 base64 bytes decode to at most 187): a key
    # that would fit once decoded is refused, and its data block read as a command
    p = Parser()
    key = base64.b64encode(b"\xff" * 187)
    assert len(key) == 252
    p.feed(b"ms " + key + b" 1 b\r\nx\r\n")
    assert drain(p) == [FMT, ERR]


@pytest.mark.parametrize(
    "src,decoded",
    [
        (b"Zm9v", b"foo"),
        (b"Zm9vYg==", b"foob"),
        (b"Zm9vYmE=", b"fooba"),
        (b"Zm9v!", b"foo"),  # bytes outside the alphabet are skipped
        (b"Z m9v", b"foo"),
        (b"Zm9", None),  # not a multiple of four
        (b"", None),
        (b"!!!!", None),
        (b"====", None),  # three or four "=" in a group
        (b"A===", None),
        (b"AA==", b"\x00"),
        (b"Zm=v", b"f`"),  # a "=" ends the input at its group, wherever it stands
        (b"AA==Zm9v", b"\x00"),
        (base64.b64encode(bytes(range(256))), bytes(range(256))),
    ],
)
def test_base64_decode_is_memcacheds(src: bytes, decoded: bytes | None) -> None:
    assert base64_decode(src) == decoded


def test_every_flag_memcached_knows_is_accepted_by_every_meta_command() -> None:
    known = b"bNTRlOPLkstcfvhuqFCMJDI"
    for flag in known:
        tok = bytes([flag])
        if tok in b"NTRCJDF":
            tok += b"1"  # a number
        elif tok == b"M":
            tok += b"S"  # a mode every command... mg and md ignore
        key = b"Zm9v" if tok == b"b" else b"foo"
        p = Parser()
        p.feed(b"mg %b %b\r\nmd %b %b\r\nms %b 1 %b\r\nx\r\n" % (key, tok, key, tok, key, tok))
        cmds = drain(p)
        mg = c.MetaValue if tok == b"v" else c.MetaGet  # `mg <key> v` has a type of its own
        assert [type(x) for x in cmds][:2] == [mg, c.MetaDelete], (tok, cmds)
        assert isinstance(cmds[2], c.MetaStore), (tok, cmds)
    for flag in range(33, 127):
        if flag in known:
            continue
        p = Parser()
        p.feed(b"mg k %c\r\n" % flag)
        assert drain(p) == [bad(Error.META_FLAG_INVALID)], chr(flag)
