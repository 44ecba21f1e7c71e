"""The text protocol's replies: memcached 1.6's lines, and `TextReplies`, which writes them.

Handlers say what a command came to (`mcached.protocol.outcomes`); every text command
inherits `TextReplies`, which writes that the way memcached's ``proto_text.c`` does, into the
connection's output list (the server joins one batch of replies into one send). Every reply
line of the text protocol is written here, and nowhere else.

``noreply`` is memcached's ``out_string`` rule, applied here and only here (`reply`, and
`reply_number`, incr's reply, the one other line a noreply command could get): a command that
said noreply gets no reply line, errors included, except the few memcached writes whatever
noreply says (`ALWAYS_SENT`). Commands that cannot say noreply (get, stats...) have
``noreply`` False, so a line a handler asks for is always sent.

Hot path: `reply_one_value` (``get <key>``), `reply_value` (each key of a multiget) and
`reply` (every storage command) run per request, so they are written for speed: the VALUE
line's tail comes from a table, and a small value's whole reply is joined at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote_from_bytes

from mcached.protocol.outcomes import Error, Out, Outcome

CRLF = b"\r\n"
END = b"END\r\n"
VALUE_END = b"\r\nEND\r\n"  # what follows the value of a single-key get

# Lines the server writes itself, outside any command (memcached's words): to a connection
# over -c, before any request; to a UDP request spread over several datagrams.
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
UDP_MULTI_PACKET = b"SERVER_ERROR multi-packet request not supported\r\n"
CACHEDUMP_MAX = 2 * 1024 * 1024  # bytes of a stats cachedump reply (memcached's)

LINES: dict[Outcome | Error, bytes] = {
    Outcome.STORED: b"STORED\r\n",
    Outcome.NOT_STORED: b"NOT_STORED\r\n",
    Outcome.EXISTS: b"EXISTS\r\n",
    Outcome.NOT_FOUND: b"NOT_FOUND\r\n",
    Outcome.DELETED: b"DELETED\r\n",
    Outcome.TOUCHED: b"TOUCHED\r\n",
    Outcome.OK: b"OK\r\n",
    Outcome.RESET: b"RESET\r\n",
    Error.UNKNOWN_COMMAND: b"ERROR\r\n",
    Error.BAD_FORMAT: b"CLIENT_ERROR bad command line format\r\n",
    Error.BAD_DELETE_FORMAT: (
        b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    ),
    Error.BAD_DATA_CHUNK: b"CLIENT_ERROR bad data chunk\r\n",
    Error.BAD_DELTA: b"CLIENT_ERROR invalid numeric delta argument\r\n",
    Error.BAD_EXPTIME: b"CLIENT_ERROR invalid exptime argument\r\n",
    Error.NON_NUMERIC: b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    Error.TOO_LARGE: b"SERVER_ERROR object too large for cache\r\n",
    Error.NO_MEMORY_STORING: b"SERVER_ERROR out of memory storing object\r\n",
    Error.NO_MEMORY: b"SERVER_ERROR out of memory\r\n",
    Error.FLUSH_DISABLED: b"CLIENT_ERROR flush_all not allowed\r\n",
    Error.SHUTDOWN_DISABLED: b"ERROR: shutdown not enabled\r\n",
    Error.SHUTDOWN_MODE: b"CLIENT_ERROR invalid shutdown mode\r\n",
    Error.DETAIL_USAGE: b"CLIENT_ERROR usage: stats detail on|off|dump\r\n",
    Error.MEMLIMIT_TOO_SMALL: b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
    Error.MEMLIMIT_NOT_MB: b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n",
    Error.MEMLIMIT_FAILED: b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n",
    Error.BAD_CLASS: b"BADCLASS invalid class id\r\n",
    Error.CRAWLER_FAILED: b"ERROR an unknown error happened\r\n",
    Error.METADUMP_DISABLED: b"ERROR metadump not allowed\r\n",
    Error.CRAWLER_DISABLED: b"CLIENT_ERROR lru crawler disabled\r\n",
    Error.CRAWLER_NOT_STARTED: b"ERROR failed to start lru crawler thread\r\n",
    # stats cachedump (proto_text.c process_stat)
    Error.BAD_COMMAND_LINE: b"CLIENT_ERROR bad command line\r\n",
    Error.ILLEGAL_SLAB_ID: b"CLIENT_ERROR Illegal slab id\r\n",
    Error.CACHEDUMP_DISABLED: b"CLIENT_ERROR stats cachedump not allowed\r\n",
    # slabs reassign (proto_text.c process_slabs_reassign_command)
    Error.REASSIGN_DISABLED: b"CLIENT_ERROR slab reassignment disabled\r\n",
    Error.REASSIGN_BUSY: b"BUSY currently processing reassign request\r\n",
    Error.REASSIGN_BAD_CLASS: b"BADCLASS invalid src or dst class id\r\n",
    Error.REASSIGN_NO_SPARE: b"NOSPARE source class has no spare pages\r\n",
    Error.REASSIGN_SAME: b"SAME src and dst class are identical\r\n",
    # -Y, ASCII authentication (memcached 1.6's proto_text.c)
    Error.UNAUTHENTICATED: b"CLIENT_ERROR unauthenticated\r\n",
    Error.AUTH_FAILED: b"CLIENT_ERROR authentication failure\r\n",
    Error.AUTH_BAD_FORMAT: b"CLIENT_ERROR bad authentication token format\r\n",
    Error.AUTH_BAD_TERMINATION: b"CLIENT_ERROR bad command line termination\r\n",
    # refresh_certs (memcached's tls.c): the failure's line is its message
    Error.TLS_NOT_ENABLED: b"Error TLS not enabled\r\n",
    Error.WATCHER_TOO_MANY: b"WATCHER_TOO_MANY log watcher limit reached\r\n",
    # config set|delete cluster (mcached's: ElastiCache has no public wording for them)
    Error.CONFIG_SET_DISABLED: b"CLIENT_ERROR config set not allowed\r\n",
    Error.CONFIG_DELETE_DISABLED: b"CLIENT_ERROR config delete not allowed\r\n",
}

# Errors whose line carries a message (``reply(..., detail)``).
DETAILED: dict[Outcome | Error, bytes] = {
    Error.CERTS_NOT_LOADED: b"%b\r\n",  # tls.c: the failure's own words
    Error.BAD_CLUSTER_CONFIG: b"CLIENT_ERROR bad cluster configuration: %b\r\n",
}

# Sent whatever noreply says: memcached writes these with write_and_free (tls.c).
ALWAYS_SENT = frozenset((Error.TLS_NOT_ENABLED, Error.CERTS_NOT_LOADED))

# The " 0 <bytes>\r\n" end of a VALUE line without flags, by value length. Formatting
# the two numbers was a third of making a get reply, and a cache serves few distinct
# lengths: `value_suffix` fills this as lengths are seen, up to VALUE_SUFFIX_MAX of them.
# Readers look it up first (hot path): ``ZERO_FLAGS_SUFFIX.get(n) if not flags else None``.
ZERO_FLAGS_SUFFIX: dict[int, bytes] = {}
VALUE_SUFFIX_MAX = 4096

# A get reply of a value up to this size is joined into one piece; a larger value is sent
# as its own piece, never copied again.
INLINE_VALUE_MAX = 16 * 1024


def value_suffix(flags: int, length: int) -> bytes:
    """`` <flags> <bytes>\\r\\n``: the end of a VALUE line after its key (without CAS)."""
    suffix = b" %d %d\r\n" % (flags, length)
    if not flags and len(ZERO_FLAGS_SUFFIX) < VALUE_SUFFIX_MAX:
        ZERO_FLAGS_SUFFIX[length] = suffix
    return suffix


def value_header(key: bytes, flags: int, length: int, cas: int | None = None) -> bytes:
    """``VALUE <key> <flags> <bytes> [<cas unique>]\\r\\n``: the one VALUE-line builder."""
    if cas is not None:
        return b"VALUE %b %d %d %d\r\n" % (key, flags, length, cas)
    suffix = ZERO_FLAGS_SUFFIX.get(length) if not flags else None
    if suffix is None:
        suffix = value_suffix(flags, length)
    return b"VALUE " + key + suffix


def stat_line(name: str, value: object) -> bytes:
    return b"STAT %b %b\r\n" % (name.encode(), str(value).encode())


class TextReplies:
    """memcached's text protocol (`outcomes.Replies`): the replies every text command
    inherits. Stateless: ``self`` is the command answered."""

    __slots__ = ()
    noreply: bool  # the command's (False on commands that cannot say it)

    # ---- retrieval ----

    def reply_value(
        self,
        out: Out,
        key: bytes,
        value: bytes | bytearray | memoryview,
        flags: int,
        cas: int | None,
    ) -> None:
        # Hot path (once per key of a multiget): value_header() written out, and the reply
        # left in pieces, not joined: the connection joins a turn's replies, or sends a large
        # multiget's values as they are.
        n = len(value)
        if cas is None:
            suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
            if suffix is None:
                suffix = value_suffix(flags, n)
            out += (b"VALUE ", key, suffix, value, CRLF)
        else:
            out += (b"VALUE %b %d %d %d\r\n" % (key, flags, n, cas), value, CRLF)

    def reply_miss(self, out: Out, key: bytes) -> None:
        pass  # a key not found is simply not listed

    def reply_end(self, out: Out) -> None:
        out.append(END)

    def reply_one_value(
        self, out: Out, key: bytes, value: bytes | bytearray | memoryview, flags: int
    ) -> None:
        # Hot path: ``get <key>`` that hit. value_header() is written out here, and a small
        # value's reply is made as one piece (header, value, CRLF and END joined at once)
        # that the connection sends as it is: callgrind counted ~9 % fewer instructions per
        # get than the general path.
        n = len(value)
        suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
        if suffix is None:
            suffix = value_suffix(flags, n)
        if n <= INLINE_VALUE_MAX:
            out.append(b"".join((b"VALUE ", key, suffix, value, VALUE_END)))
        else:
            out += (b"VALUE " + key + suffix, value, VALUE_END)  # a large value: uncopied

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        out.append(END)

    # ---- lines noreply hides ----

    def reply(self, out: Out, outcome: Outcome | Error, detail: str = "") -> None:
        # memcached's out_string: noreply hides the line, errors included, except those
        # memcached writes whatever noreply says (ALWAYS_SENT). The test comes first, so a
        # noreply store pays one attribute read (hot path: every storage command).
        if self.noreply and outcome not in ALWAYS_SENT:
            return
        out.append(DETAILED[outcome] % detail.encode() if detail else LINES[outcome])

    def reply_number(self, out: Out, n: int) -> None:
        if not self.noreply:  # out_string, as reply()
            out.append(b"%d\r\n" % n)

    # ---- blocks (commands that cannot say noreply) ----

    def reply_version(self, out: Out, version: str) -> None:
        out.append(b"VERSION %b\r\n" % version.encode())

    def reply_stats(self, out: Out, rows: Iterable[tuple[str, object]]) -> None:
        out.append(b"".join([stat_line(n, v) for n, v in rows]) + END)

    def reply_prefix_stats(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, int]]
    ) -> None:
        lines = [b"PREFIX %b get %d hit %d set %d del %d\r\n" % row for row in rows]
        out.append(b"".join(lines) + END)

    def reply_metadump(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, bool, int, int]]
    ) -> None:
        # memcached-tool dump reads these lines; keys are URI-encoded as memcached does
        lines = [
            b"key=%b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\n"
            % (
                quote_from_bytes(key, safe="-._~").encode(),
                exptime,
                atime,
                cas,
                b"yes" if fetched else b"no",
                clsid,
                size,
            )
            for key, exptime, atime, cas, fetched, size, clsid in rows
        ]
        lines.append(END)
        out.append(b"".join(lines))

    def reply_cachedump(self, out: Out, rows: Iterable[tuple[bytes, int, int]]) -> None:
        # memcached's item_cachedump: at most 2 MB of lines (END included), then END
        lines = []
        size = 0
        for key, nbytes, exptime in rows:
            line = b"ITEM %b [%d b; %d s]\r\n" % (key, nbytes, exptime)
            size += len(line)
            if size + 6 > CACHEDUMP_MAX:
                break
            lines.append(line)
        lines.append(END)
        out.append(b"".join(lines))

    def reply_config(self, out: Out, key: bytes, data: bytes) -> None:
        # ElastiCache's CONFIG block: <n> counts the data, not the \r\n after it (VALUE
        # framing). One bytes object: clients that keep only their last read get it whole.
        out.append(b"CONFIG %b 0 %d\r\n%b\r\nEND\r\n" % (key, len(data), data))
