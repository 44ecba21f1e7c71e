"""memcached's binary protocol: its frame, opcodes and statuses, its command types and
`BinaryReplies`, which writes every binary reply (memcached 1.6.18's ``proto_bin.c`` and
``protocol_binary.h``; the framing of requests is `mcached.protocol.binary_parser`'s).

A frame is a 24-byte header (`HEADER`: magic, opcode, key length, extras length, data type,
vbucket or status, total body length, opaque, CAS; big-endian), then the extras, the key and
the value. Requests carry magic 0x80, responses 0x81.

The binary commands are the text protocol's meanings in a third syntax: a ``get`` frame is a
`BinGet`, which is a `commands.Gets` (the handler that serves ``gets`` serves it: the binary
reply always carries the item's CAS), a ``set`` a `BinSet`, which is a `commands.Set`, and
so on. Each inherits `BinaryReplies` first, so the handler's ``cmd.reply(out, outcome)``
writes a binary response: the request's opcode and opaque echoed, the outcome as a status
(`STATUS`), memcached's words as the body of an error. They are ``extended`` (they want the
new CAS back, and incr's create-on-miss is meta's ``N``/``J``), so they reach the same storage
calls as the meta commands.

Quiet opcodes (``getq``, ``setq``...) hide what memcached hides: a miss of a get, the success
of everything else; errors are always sent, and a hit of ``getq`` too.

ElastiCache's ``config get|set|delete cluster`` have binary opcodes of their own (0x60, 0x64,
0x66: `CONFIG_GET`), which memcached does not know; they parse into the text ``config``
commands' types and are served by the same handlers, so a binary ``config get`` carries the
same data as the text one (a lone node lists itself). Where the handlers have no discovery,
the answer is memcached's own, "Unknown command".

Rules: pure (no sockets); replies append bytes to the output list and never decide what a
command means.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error, ItemView, Out, Outcome, Piece, reply_each

#: the 24-byte header: magic, opcode, key length, extras length, data type, vbucket (a
#: request's) or status (a response's), body length, opaque, CAS
HEADER = struct.Struct(">BBHBBHIIQ")
HEADER_SIZE = 24
REQUEST = 0x80
RESPONSE = 0x81

# ---- opcodes (protocol_binary.h) ----
GET = 0x00
SET = 0x01
ADD = 0x02
REPLACE = 0x03
DELETE = 0x04
INCREMENT = 0x05
DECREMENT = 0x06
QUIT = 0x07
FLUSH = 0x08
GETQ = 0x09
NOOP = 0x0A
VERSION = 0x0B
GETK = 0x0C
GETKQ = 0x0D
APPEND = 0x0E
PREPEND = 0x0F
STAT = 0x10
SETQ = 0x11
ADDQ = 0x12
REPLACEQ = 0x13
DELETEQ = 0x14
INCREMENTQ = 0x15
DECREMENTQ = 0x16
QUITQ = 0x17
FLUSHQ = 0x18
APPENDQ = 0x19
PREPENDQ = 0x1A
VERBOSITY = 0x1B  # in the spec; memcached 1.6.18 answers it "Unknown command"
TOUCH = 0x1C
GAT = 0x1D
GATQ = 0x1E
SASL_LIST_MECHS = 0x20
SASL_AUTH = 0x21
SASL_STEP = 0x22
GATK = 0x23
GATKQ = 0x24
# ElastiCache's auto-discovery verbs (``config get|set|delete cluster``) in binary. memcached
# has no such opcodes (it answers them "Unknown command"); these are the ones the AWS
# ElastiCache Cluster Client for Java sends (awslabs/aws-elasticache-cluster-client-memcached-
# for-java, src/main/java/net/spy/memcached/protocol/binary/: GetConfigOperationImpl.java
# CONFIG_GET_CMD = 0x60, SetConfigOperationImpl.java SET_CONFIG = 0x64,
# DeleteConfigOperationImpl.java CMD = 0x66). Each request's key is the configuration type
# ("cluster"); a set carries 4 bytes of extras (the flags) and the data as its value.
CONFIG_GET = 0x60
CONFIG_SET = 0x64
CONFIG_DELETE = 0x66

#: a quiet opcode -> the opcode it is the quiet form of (memcached's dispatch_bin_command)
QUIET = {
    SETQ: SET,
    ADDQ: ADD,
    REPLACEQ: REPLACE,
    DELETEQ: DELETE,
    INCREMENTQ: INCREMENT,
    DECREMENTQ: DECREMENT,
    QUITQ: QUIT,
    FLUSHQ: FLUSH,
    APPENDQ: APPEND,
    PREPENDQ: PREPEND,
    GETQ: GET,
    GETKQ: GETK,
    GATQ: GAT,
    GATKQ: GATK,
}

# ---- response statuses ----
SUCCESS = 0x00
KEY_ENOENT = 0x01
KEY_EEXISTS = 0x02
E2BIG = 0x03
EINVAL = 0x04
NOT_STORED = 0x05
DELTA_BADVAL = 0x06
AUTH_ERROR = 0x20
AUTH_CONTINUE = 0x21
UNKNOWN_COMMAND = 0x81
ENOMEM = 0x82

#: memcached's words for each status (write_bin_error), sent as the body of an error
MESSAGES = {
    ENOMEM: b"Out of memory",
    UNKNOWN_COMMAND: b"Unknown command",
    KEY_ENOENT: b"Not found",
    EINVAL: b"Invalid arguments",
    KEY_EEXISTS: b"Data exists for key.",
    E2BIG: b"Too large.",
    DELTA_BADVAL: b"Non-numeric server-side value for incr or decr",
    NOT_STORED: b"Not stored.",
    AUTH_ERROR: b"Auth failure.",
}

#: an outcome or error -> (status, body); a status 0 has no body
STATUS: dict[Outcome | Error, tuple[int, bytes]] = {
    Outcome.STORED: (SUCCESS, b""),
    Outcome.DELETED: (SUCCESS, b""),
    Outcome.TOUCHED: (SUCCESS, b""),
    Outcome.OK: (SUCCESS, b""),
    Outcome.RESET: (SUCCESS, b""),
    Outcome.NOOP: (SUCCESS, b""),
    Outcome.NOT_FOUND: (KEY_ENOENT, MESSAGES[KEY_ENOENT]),
    Outcome.EXISTS: (KEY_EEXISTS, MESSAGES[KEY_EEXISTS]),
    Outcome.NOT_STORED: (NOT_STORED, MESSAGES[NOT_STORED]),
    Error.UNKNOWN_COMMAND: (UNKNOWN_COMMAND, MESSAGES[UNKNOWN_COMMAND]),
    Error.BIN_INVALID: (EINVAL, MESSAGES[EINVAL]),
    Error.TOO_LARGE: (E2BIG, MESSAGES[E2BIG]),
    Error.NON_NUMERIC: (DELTA_BADVAL, MESSAGES[DELTA_BADVAL]),
    # memcached's out_of_memory(): the text error's words without "SERVER_ERROR "
    Error.NO_MEMORY_STORING: (ENOMEM, b"Out of memory allocating item"),
    Error.NO_MEMORY_READING: (ENOMEM, b"Out of memory during read"),
    Error.NO_MEMORY: (ENOMEM, b"Out of memory incrementing value"),
    Error.META_NOT_CREATED: (ENOMEM, b"Out of memory allocating new item"),
    Error.BIN_NO_MEMORY: (ENOMEM, MESSAGES[ENOMEM]),
    # process_bin_flush answers a disabled flush with the auth status
    Error.FLUSH_DISABLED: (AUTH_ERROR, MESSAGES[AUTH_ERROR]),
    Error.BAD_EXPTIME: (EINVAL, MESSAGES[EINVAL]),
    Error.UNAUTHENTICATED: (AUTH_ERROR, MESSAGES[AUTH_ERROR]),
    Error.AUTH_FAILED: (AUTH_ERROR, MESSAGES[AUTH_ERROR]),
    Error.DETAIL_USAGE: (KEY_ENOENT, MESSAGES[KEY_ENOENT]),
    # config set|delete cluster without --enable-config-set: what memcached answers a flush
    # it does not allow (-F), the binary word for "not allowed"
    Error.CONFIG_SET_DISABLED: (AUTH_ERROR, MESSAGES[AUTH_ERROR]),
    Error.CONFIG_DELETE_DISABLED: (AUTH_ERROR, MESSAGES[AUTH_ERROR]),
    Error.BAD_CLUSTER_CONFIG: (EINVAL, MESSAGES[EINVAL]),
}
_SUCCESSES = frozenset(o for o, (status, _) in STATUS.items() if status == SUCCESS)
_NOT_FOUND = b"Not found"


def response(
    opcode: int,
    opaque: int,
    status: int = SUCCESS,
    body: bytes = b"",
    extlen: int = 0,
    keylen: int = 0,
    cas: int = 0,
) -> bytes:
    """One response frame: the header, then `body` (extras, key and value, already joined)."""
    return HEADER.pack(RESPONSE, opcode, keylen, extlen, 0, status, len(body), opaque, cas) + body


def request(
    opcode: int,
    key: bytes = b"",
    value: bytes = b"",
    extras: bytes = b"",
    opaque: int = 0,
    cas: int = 0,
) -> bytes:
    """One request frame (for tests and clients: the server only reads them)."""
    body = extras + key + value
    return HEADER.pack(REQUEST, opcode, len(key), len(extras), 0, 0, len(body), opaque, cas) + body


class BinaryReplies:
    """memcached's binary responses (`outcomes.Replies`), inherited by every binary command
    before its text base. A command carries the request's `opcode` (echoed as it came, a
    quiet one too), `opaque` and `quiet`."""

    __slots__ = ()
    opcode: int
    opaque: int
    quiet: bool
    #: getk, gatk: a hit and a miss carry the key
    with_key = False
    #: touch: a hit carries the flags but not the value
    with_value = True
    #: the status of a store that did not happen (add: the key exists; replace: it does not)
    not_stored = (NOT_STORED, MESSAGES[NOT_STORED])

    def _frame(self, status: int, body: bytes = b"", extlen: int = 0, keylen: int = 0) -> bytes:
        return (
            HEADER.pack(RESPONSE, self.opcode, keylen, extlen, 0, status, len(body), self.opaque, 0)
            + body
        )

    # ---- retrieval ----

    def reply_value(
        self,
        out: Out,
        key: bytes,
        value: Piece,
        flags: int,
        cas: int | None,
    ) -> None:
        # a hit is sent, quiet or not (memcached writes it without asking noreply); the value
        # (perhaps lent from the cache: the handler gets it back once sent) is not copied
        key = key if self.with_key else b""
        if not self.with_value:
            value = b""
        n = len(key)
        header = HEADER.pack(
            RESPONSE, self.opcode, n, 4, 0, SUCCESS, 4 + n + len(value), self.opaque, cas or 0
        )
        out += (header + struct.pack(">I", flags) + key, value)

    def reply_values(self, out: Out, keys: list[bytes], hits: list[Any], with_cas: bool) -> None:
        reply_each(self, out, keys, hits, with_cas)

    def reply_miss(self, out: Out, key: bytes) -> None:
        if self.quiet:
            return
        if self.with_key:
            out.append(self._frame(KEY_ENOENT, key, keylen=len(key)))
        else:
            out.append(self._frame(KEY_ENOENT, _NOT_FOUND))

    def reply_end(self, out: Out) -> None:
        pass

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        self.reply_value(out, key, value, flags, 0)

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        self.reply_miss(out, key)

    # ---- statuses ----

    def reply(self, out: Out, outcome: Outcome | Error, detail: str = "") -> None:
        if outcome in _SUCCESSES:
            if not self.quiet:
                out.append(self._frame(SUCCESS))
            return
        if outcome is Outcome.NOT_STORED:
            status, body = self.not_stored
        else:
            status, body = STATUS[outcome]
        out.append(self._frame(status, body))

    def reply_stored(self, out: Out, outcome: Outcome | Error, cas: int) -> None:
        if outcome is Outcome.STORED:
            if not self.quiet:
                out.append(
                    HEADER.pack(RESPONSE, self.opcode, 0, 0, 0, SUCCESS, 0, self.opaque, cas)
                )
            return
        self.reply(out, outcome)

    def reply_number(self, out: Out, n: int) -> None:
        raise NotImplementedError("binary incr answers with reply_item")

    def reply_item(self, out: Out, item: ItemView) -> None:
        # incr/decr: the new number as 8 bytes, the item's CAS in the header
        if self.quiet:
            return
        digits, cas = item[0], item[2]
        out.append(
            HEADER.pack(RESPONSE, self.opcode, 0, 0, 0, SUCCESS, 8, self.opaque, cas)
            + struct.pack(">Q", int(digits or b"0"))
        )

    def reply_version(self, out: Out, version: str) -> None:
        out.append(self._frame(SUCCESS, version.encode()))

    # ---- stats: one response per row, then one with no key to end ----

    def reply_stats(self, out: Out, rows: Iterable[tuple[str, object]], end: bool = True) -> None:
        frames = [self._stat(name.encode(), str(value).encode()) for name, value in rows]
        if end:
            frames.append(self._stat(b"", b""))
        out.append(b"".join(frames))

    def _stat(self, key: bytes, value: bytes) -> bytes:
        # append_bin_stats: the STAT opcode whatever the request's, no status, no CAS
        return (
            HEADER.pack(
                RESPONSE, STAT, len(key), 0, 0, SUCCESS, len(key) + len(value), self.opaque, 0
            )
            + key
            + value
        )

    def reply_prefix_stats(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, int]]
    ) -> None:
        # ``stats detail dump``: the text dump as the value of one "detailed" row
        lines = [b"PREFIX %b get %d hit %d set %d del %d\r\n" % row for row in rows]
        lines.append(b"END\r\n")
        out.append(self._stat(b"detailed", b"".join(lines)) + self._stat(b"", b""))

    def reply_metadump(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, bool, int, int]]
    ) -> None:
        raise NotImplementedError("lru_crawler has no binary opcode")

    def reply_config(self, out: Out, key: bytes, data: bytes) -> None:
        # config get: a get's hit without the key (4 bytes of flags, 0, then the data), as
        # GetConfigOperationImpl.decodePayload reads it: flags from the body's first 4
        # bytes, the rest is the data (it ignores the key and extras lengths)
        out.append(
            HEADER.pack(RESPONSE, self.opcode, 0, 4, 0, SUCCESS, 4 + len(data), self.opaque, 0)
            + b"\0\0\0\0"
            + data
        )


# ---- the commands: each a text command's meaning, answered in binary ----


class BinGet(BinaryReplies, c.Gets):
    """get, getq: one key; served by the handler of ``gets`` (the reply carries the CAS)."""

    __slots__ = ("opcode", "opaque", "quiet")
    verb = b"get"

    def __init__(self, key: bytes, opcode: int = GET, opaque: int = 0, quiet: bool = False):
        super().__init__([key])
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet


class BinGetK(BinGet):
    """getk, getkq: a get whose reply carries the key."""

    __slots__ = ()
    with_key = True


class BinGat(BinaryReplies, c.Gats):
    """gat, gatq: a get that sets a new exptime (counted as a touch, as memcached does)."""

    __slots__ = ("opcode", "opaque", "quiet")
    verb = b"gat"

    def __init__(
        self, key: bytes, exptime: int, opcode: int = GAT, opaque: int = 0, quiet: bool = False
    ) -> None:
        super().__init__(exptime, [key])
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet


class BinGatK(BinGat):
    __slots__ = ()
    with_key = True


class BinTouch(BinGat):
    """touch: a gat whose reply carries the item's flags and CAS but not its value."""

    __slots__ = ()
    verb = b"touch"
    with_value = False


class _BinStore(BinaryReplies):
    __slots__ = ()
    extended = True
    invalidate = False  # meta's I: never in binary
    binary = False  # meta's b: never in binary


class BinSet(_BinStore, c.Set):
    """set, setq (with no CAS): extras are the flags and the exptime."""

    __slots__ = ("opcode", "opaque", "quiet", "cas_unique")

    def __init__(
        self,
        key: bytes,
        flags: int,
        exptime: int,
        value: bytes,
        opcode: int = SET,
        opaque: int = 0,
        quiet: bool = False,
        cas_unique: int = 0,
    ) -> None:
        super().__init__(key, flags, exptime, value, quiet)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet
        self.cas_unique = cas_unique


class BinAdd(BinSet):
    __slots__ = ()
    not_stored = (KEY_EEXISTS, MESSAGES[KEY_EEXISTS])


class BinReplace(BinSet):
    __slots__ = ()
    not_stored = (KEY_ENOENT, MESSAGES[KEY_ENOENT])


class BinCas(BinSet):
    """set, add or replace with a CAS: memcached makes any of them a cas (NREAD_CAS)."""

    __slots__ = ()


class BinAppend(BinSet):
    """append, appendq: no extras (the item keeps its flags); a CAS must match."""

    __slots__ = ()


class BinPrepend(BinSet):
    __slots__ = ()


class BinTooLarge(BinaryReplies, c.TooLarge):
    """A store whose value cannot fit in an item of -I bytes; its value is swallowed."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, mode: bytes, key: bytes, opcode: int, opaque: int = 0) -> None:
        super().__init__(mode, key, False)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = False  # an error is always sent


class BinDelete(BinaryReplies, c.Delete):
    """delete, deleteq; a CAS (not 0) must match the item's."""

    __slots__ = ("opcode", "opaque", "quiet", "cas")
    extended = True
    invalidate = False
    touch = None
    cas_miss_counts = False  # process_bin_delete counts only a missing key

    def __init__(
        self, key: bytes, opcode: int = DELETE, opaque: int = 0, quiet: bool = False, cas: int = 0
    ) -> None:
        super().__init__(key, quiet)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet
        self.cas = cas or None  # the storage call's "no CAS given"


class BinIncr(BinaryReplies, c.Incr):
    """increment/decrement (and quiet forms): by `delta`; on a miss, unless the exptime is
    0xffffffff, the counter is created holding `initial` (meta's ``N`` and ``J``); a CAS (not
    0) must match."""

    __slots__ = (
        "opcode",
        "opaque",
        "quiet",
        "incr",
        "cas",
        "vivify",
        "initial",
    )
    extended = True
    touch = None
    vivify_last = True

    def __init__(
        self,
        key: bytes,
        delta: int,
        initial: int,
        exptime: int | None,
        incr: bool = True,
        opcode: int = INCREMENT,
        opaque: int = 0,
        quiet: bool = False,
        cas: int = 0,
    ) -> None:
        super().__init__(key, delta, quiet)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet
        self.incr = incr
        self.cas = cas
        self.vivify = exptime
        self.initial = initial


class BinFlush(BinaryReplies, c.FlushAll):
    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(
        self, delay: int = 0, opcode: int = FLUSH, opaque: int = 0, quiet: bool = False
    ) -> None:
        super().__init__(delay, quiet)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = quiet


class _BinSimple(BinaryReplies):
    """A command with nothing but its opcode and opaque."""

    __slots__ = ()

    def _init(self, opcode: int, opaque: int, quiet: bool) -> None:
        self.opcode = opcode  # type: ignore[misc]
        self.opaque = opaque  # type: ignore[misc]
        self.quiet = quiet  # type: ignore[misc]


class BinNoop(_BinSimple, c.Command):
    __slots__ = ("opcode", "opaque", "quiet")
    verb = b"noop"

    def __init__(self, opaque: int = 0) -> None:
        self._init(NOOP, opaque, False)


class BinVersion(_BinSimple, c.Version):
    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, opaque: int = 0) -> None:
        self._init(VERSION, opaque, False)


class BinQuit(_BinSimple, c.Quit):
    """quit answers before the connection closes; quitq does not."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, opcode: int = QUIT, opaque: int = 0, quiet: bool = False) -> None:
        self._init(opcode, opaque, quiet)


class BinStats(BinaryReplies, c.Stats):
    """stat: the key names the group ("" for the general one, "items", "detail dump"...).
    A group memcached does not know is "Not found"."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, args: list[bytes], opaque: int = 0) -> None:
        super().__init__(args)
        self.opcode = STAT
        self.opaque = opaque
        self.quiet = False

    def reply(self, out: Out, outcome: Outcome | Error, detail: str = "") -> None:
        if outcome is Error.UNKNOWN_COMMAND:
            outcome = Error.DETAIL_USAGE  # memcached: KEY_ENOENT
        if outcome in _SUCCESSES:
            out.append(self._stat(b"", b""))  # reset, detail on|off: the end row alone
            return
        BinaryReplies.reply(self, out, outcome, detail)


class BinInvalid(BinaryReplies, c.Invalid):
    """A frame memcached answers with an error status (the parser decides whether the
    connection closes after it). `swallows`: memcached then swallows the frame's body
    rather than send what waits (it matters to UDP's messages alone)."""

    __slots__ = ("opcode", "opaque", "quiet", "swallows")

    def __init__(self, error: Error, opcode: int, opaque: int = 0, swallows: bool = False) -> None:
        super().__init__(error, False)
        self.opcode = opcode
        self.opaque = opaque
        self.quiet = False
        self.swallows = swallows


# ---- ElastiCache's configuration verbs: the text ``config`` commands' meanings ----


class BinConfigGet(BinaryReplies, c.ConfigGet):
    """config get (0x60): the key names the configuration ("cluster")."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, key: bytes, opaque: int = 0) -> None:
        super().__init__(key)
        self.opcode = CONFIG_GET
        self.opaque = opaque
        self.quiet = False


class BinConfigSet(BinaryReplies, c.ConfigSet):
    """config set (0x64): extras are the flags (ignored, as the text verb ignores them),
    the value is the data. Success is an empty response."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, key: bytes, flags: int, value: bytes, opaque: int = 0) -> None:
        super().__init__(key, flags, value)
        self.opcode = CONFIG_SET
        self.opaque = opaque
        self.quiet = False


class BinConfigDelete(BinaryReplies, c.ConfigDelete):
    """config delete (0x66): an empty response, or "Not found" with no override to drop."""

    __slots__ = ("opcode", "opaque", "quiet")

    def __init__(self, key: bytes, opaque: int = 0) -> None:
        super().__init__(key)
        self.opcode = CONFIG_DELETE
        self.opaque = opaque
        self.quiet = False


# ---- SASL ----


class SaslState:
    """One connection's SASL conversation: the mechanism started and what it sent (the
    CRAM-MD5 challenge), whether the connection is in, and whether an exchange has
    succeeded on it (`spent`: Cyrus SASL starts no other on the same connection). The
    parser owns it (it refuses every other opcode until `authenticated`); the handler
    moves it on."""

    __slots__ = ("mech", "challenge", "authenticated", "spent", "cyrus", "__weakref__")

    def __init__(self) -> None:
        self.mech = b""
        self.challenge = b""
        self.authenticated = False
        self.spent = False
        self.cyrus: Any = None  # Cyrus SASL's sasl_conn_t, when it serves SASL

    def __repr__(self) -> str:
        return f"SaslState(mech={self.mech!r}, authenticated={self.authenticated})"


class BinSaslList(_BinSimple, c.Command):
    """sasl list mechs: the mechanisms, space-separated."""

    __slots__ = ("opcode", "opaque", "quiet", "state")
    verb = b"sasl_list_mechs"

    def __init__(self, state: SaslState, opaque: int = 0) -> None:
        self._init(SASL_LIST_MECHS, opaque, False)
        self.state = state

    def reply_mechs(self, out: Out, mechs: bytes) -> None:
        out.append(self._frame(SUCCESS, mechs))


class BinSaslAuth(_BinSimple, c.Command):
    """sasl auth (a mechanism and its first data) and sasl step (the next data). The data
    (a password, with PLAIN) never appears in a repr, so the -vvv trace does not log it."""

    __slots__ = ("opcode", "opaque", "quiet", "mech", "data", "state")
    verb = b"sasl_auth"

    def __init__(
        self, mech: bytes, data: bytes, state: SaslState, opcode: int = SASL_AUTH, opaque: int = 0
    ) -> None:
        self._init(opcode, opaque, False)
        self.mech = mech
        self.data = data
        self.state = state

    @property
    def step(self) -> bool:
        return self.opcode == SASL_STEP

    def __repr__(self) -> str:
        n = len(self.data)
        return f"BinSaslAuth(opcode={self.opcode:#04x}, mech={self.mech!r}, data=<{n} bytes>)"

    def reply_authenticated(self, out: Out) -> None:
        out.append(self._frame(SUCCESS, b"Authenticated"))

    def reply_challenge(self, out: Out, data: bytes) -> None:
        out.append(self._frame(AUTH_CONTINUE, data))


def header_fields(frame: bytes) -> dict[str, Any]:
    """A frame's header by name (for tests and logs)."""
    names = (
        "magic",
        "opcode",
        "keylen",
        "extlen",
        "datatype",
        "status",
        "bodylen",
        "opaque",
        "cas",
    )
    return dict(zip(names, HEADER.unpack_from(frame), strict=True))
