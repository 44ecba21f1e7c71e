"""The text protocol's replies: memcached 1.6's lines, and `TextReplies`, which writes them;
the meta commands' replies (`MetaReplies` and its kin) after them.

Handlers say what a command came to (`mcached.protocol.outcomes`); every text command
inherits `TextReplies`, which writes that the way memcached's ``proto_text.c`` does, into the
connection's output list (the server joins one batch of replies into one send). Every reply
line of the text protocol is written here, and nowhere else.

``noreply`` is memcached's ``out_string`` rule, applied here and only here (`reply`, and
`reply_number`, incr's reply, the one other line a noreply command could get): a command that
said noreply gets no reply line, errors included, except the few memcached writes whatever
noreply says (`ALWAYS_SENT`). Commands that cannot say noreply (get, stats...) have
``noreply`` False, so a line a handler asks for is always sent.

Hot path: `reply_one_value` (``get <key>``), `reply_values` (a multiget's keys, one call
for the run the handler looked up at once), `reply_value` (each key of a multiget's streamed
rest) and `reply` (every storage command) run per request, so they are written for speed:
the VALUE line's tail comes from a table, and a small value's whole reply is joined at once.
"""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_from_bytes

from mcached.protocol.outcomes import Error, ItemView, Out, Outcome, Piece

CRLF = b"\r\n"
END = b"END\r\n"
VALUE_END = b"\r\nEND\r\n"  # what follows the value of a single-key get
EN = b"EN\r\n"  # a meta get's miss

# Lines the server writes itself, outside any command (memcached's words): to a connection
# over -c, before any request; to a UDP request spread over several datagrams.
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
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
    Outcome.NOOP: b"MN\r\n",  # mn (memcached's out_string "MN")
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
    Error.NO_MEMORY_READING: b"SERVER_ERROR Out of memory during read\r\n",
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
    Error.METADUMP_PIPELINED: b"ERROR cannot pipeline other commands before metadump\r\n",
    Error.CRAWLER_BUSY: b"BUSY currently processing crawler request\r\n",
    Error.CRAWLER_NO_CLASS: b"NOTSTARTED no items to crawl\r\n",
    Error.CRAWLER_DISABLED: b"CLIENT_ERROR lru crawler disabled\r\n",
    Error.CRAWLER_NOT_STARTED: b"ERROR failed to start lru crawler thread\r\n",
    Error.CRAWLER_SLEEP_RANGE: b"CLIENT_ERROR sleep must be one second or less\r\n",
    # lru tune (proto_text.c process_lru_command)
    Error.LRU_PCTS: b"ERROR hot and warm pcts must not exceed 80\r\n",
    Error.LRU_FACTORS: b"ERROR hot/warm age factors must be greater than 0\r\n",
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
    Error.WATCH_DISABLED: b"CLIENT_ERROR watch commands not allowed\r\n",
    Error.WATCH_PIPELINED: b"ERROR cannot pipeline other commands before watch\r\n",
    # config set|delete cluster (mcached's: ElastiCache has no public wording for them)
    Error.CONFIG_SET_DISABLED: b"CLIENT_ERROR config set not allowed\r\n",
    Error.CONFIG_DELETE_DISABLED: b"CLIENT_ERROR config delete not allowed\r\n",
    # the meta commands (memcached 1.6.18's proto_text.c, _meta_flag_preparse and process_m*)
    Error.META_FLAG_INVALID: b"CLIENT_ERROR invalid flag\r\n",
    Error.META_FLAG_DUPLICATE: b"CLIENT_ERROR duplicate flag\r\n",
    Error.META_FLAG_BAD: b"CLIENT_ERROR invalid or duplicate flag\r\n",
    Error.META_BAD_TOKEN: b"CLIENT_ERROR bad token in command line format\r\n",
    Error.META_KEY_DECODE: b"CLIENT_ERROR error decoding key\r\n",
    Error.META_MODE_LENGTH: b"CLIENT_ERROR incorrect length for M token\r\n",
    Error.META_BAD_INITIAL: b"CLIENT_ERROR invalid numeric initial value\r\n",
    Error.META_BAD_DELTA: b"CLIENT_ERROR invalid numeric delta value\r\n",
    Error.META_TOO_MANY_FLAGS: b"CLIENT_ERROR options flags are too long\r\n",
    Error.META_TOO_MANY_FLAGS_STORE: b"CLIENT_ERROR options flags too long\r\n",
    Error.META_OPAQUE_TOO_LONG: b"CLIENT_ERROR opaque token too long\r\n",
    Error.META_SET_MODE: b"CLIENT_ERROR invalid mode for ms M token\r\n",
    Error.META_ARITH_MODE: b"CLIENT_ERROR invalid mode for ma M token\r\n",
    Error.META_NOT_CREATED: b"SERVER_ERROR Out of memory allocating new item\r\n",
    # the binary protocol's own (its statuses): their nearest text lines
    Error.BIN_INVALID: b"CLIENT_ERROR bad command line format\r\n",
    Error.BIN_NO_MEMORY: b"SERVER_ERROR out of memory\r\n",
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
    """``STAT <name> <value>``; an empty value, ``STAT <name>`` (memcached's)."""
    text = str(value)
    if not text:
        return b"STAT %b\r\n" % name.encode()
    return b"STAT %b %b\r\n" % (name.encode(), text.encode())


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
        value: Piece,
        flags: int,
        cas: int | None,
    ) -> None:
        # Hot path (once per key of a multiget's streamed rest; `reply_values` is this, a run
        # of hits at a time): value_header() written out, and the reply left in pieces, not
        # joined: the connection joins a turn's replies, or sends a large multiget's values
        # as they are.
        n = len(value)
        if cas is None:
            suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
            if suffix is None:
                suffix = value_suffix(flags, n)
            out += (b"VALUE ", key, suffix, value, CRLF)
        else:
            out += (b"VALUE %b %d %d %d\r\n" % (key, flags, n, cas), value, CRLF)

    def reply_values(
        self,
        out: Out,
        keys: list[bytes],
        hits: list[Any],
        with_cas: bool,
    ) -> None:
        # Hot path (a multiget's keys, looked up in one call): `reply_value` of each hit
        # written out in one loop (a key not found is not listed), rather than a call a key:
        # a 10-key get 201,888 -> 196,544 instructions (callgrind_request.py); the suffix
        # table's get and CRLF as locals, 194,037 -> 193,645
        suffixes = ZERO_FLAGS_SUFFIX.get
        crlf = CRLF
        for key, hit in zip(keys, hits, strict=False):
            if hit is not None:
                value = hit[0]
                n = len(value)
                flags = hit[1]
                if with_cas:
                    out += (b"VALUE %b %d %d %d\r\n" % (key, flags, n, hit[2]), value, crlf)
                    continue
                suffix = suffixes(n) if not flags else None
                if suffix is None:
                    suffix = value_suffix(flags, n)
                out += (b"VALUE ", key, suffix, value, crlf)

    def reply_miss(self, out: Out, key: bytes) -> None:
        pass  # a key not found is simply not listed

    def reply_end(self, out: Out) -> None:
        out.append(END)

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        # Hot path: ``get <key>`` that hit. value_header() is written out here, and a small
        # value's reply is made as one piece (header, value, CRLF and END joined at once)
        # that the connection sends as it is: callgrind counted ~9 % fewer instructions per
        # get than the general path.
        n = len(value)
        suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
        if suffix is None:
            suffix = value_suffix(flags, n)
        if n <= INLINE_VALUE_MAX:  # never `Pieces` (64 KB or more)
            out.append(b"".join((b"VALUE ", key, suffix, value, VALUE_END)))  # type: ignore[arg-type]
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

    def reply_stored(self, out: Out, outcome: Outcome | Error, cas: int) -> None:
        # reply() again rather than a call to it (hot path: every storage command); the
        # text protocol's storage replies carry no CAS
        if self.noreply and outcome not in ALWAYS_SENT:
            return
        out.append(LINES[outcome])

    def reply_item(self, out: Out, item: ItemView) -> None:
        raise NotImplementedError("no text command reports an item's state")

    # ---- blocks (commands that cannot say noreply) ----

    def reply_version(self, out: Out, version: str) -> None:
        out.append(b"VERSION %b\r\n" % version.encode())

    def reply_stats(self, out: Out, rows: Iterable[tuple[str, object]], end: bool = True) -> None:
        out.append(b"".join([stat_line(n, v) for n, v in rows]) + (END if end else b""))

    def reply_prefix_stats(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, int]]
    ) -> None:
        lines = [b"PREFIX %b get %d hit %d set %d del %d\r\n" % row for row in rows]
        out.append(b"".join(lines) + END)

    def reply_metadump(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, bool, int, int]]
    ) -> None:
        # memcached-tool dump reads these lines; keys are URI-encoded as memcached does.
        # One piece per batch of rows (the handler streams a dump batch by batch), nothing
        # for none; reply_end() ends the dump.
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
        if lines:
            out.append(b"".join(lines))

    #: bytes of rows a ``stats cachedump`` reply holds (memcached's item_cachedump: 2 MB in
    #: all, with room for its END and a NUL); rows past them are not sent, so the handler
    #: keeps no more
    cachedump_room = CACHEDUMP_MAX - len(END) - 1

    def reply_cachedump_size(self, nkey: int, nbytes: int, exptime: int) -> int:
        """What `reply_cachedump` spends of `cachedump_room` on a row (its line's bytes)."""
        return 5 + nkey + len(b" [%d b; %d s]\r\n" % (nbytes, exptime))

    def reply_cachedump(self, out: Out, rows: Iterable[tuple[bytes, int, int]]) -> None:
        # memcached's item_cachedump: at most 2 MB of lines (END included), then END. Built
        # in place: a list of the lines, then their join, would hold the reply twice.
        reply = bytearray()
        room = self.cachedump_room
        for key, nbytes, exptime in rows:
            line = b"ITEM %b [%d b; %d s]\r\n" % (key, nbytes, exptime)
            if len(reply) + len(line) > room:
                break
            reply += line
        reply += END
        out.append(reply)

    def reply_config(self, out: Out, key: bytes, data: bytes) -> None:
        # ElastiCache's CONFIG block: <n> counts the data, not the \r\n after it (VALUE
        # framing). One bytes object: clients that keep only their last read get it whole.
        out.append(b"CONFIG %b 0 %d\r\n%b\r\nEND\r\n" % (key, len(data), data))


# ---- the meta commands: mg, ms, md, ma, mn, me (memcached 1.6.18's proto_text.c) ----
#
# A meta reply is a two-letter code and the flags the request asked for, in the order it
# asked: ``HD c5 Oabc k<key>``. Flags are told apart by their first byte (memcached reads
# ``tokens[i].value[0]``), which these replies compare as ints.

META_CODE: dict[Outcome | Error, bytes] = {
    Outcome.STORED: b"HD",
    Outcome.DELETED: b"HD",
    Outcome.TOUCHED: b"HD",
    Outcome.NOT_STORED: b"NS",
    Outcome.EXISTS: b"EX",
    Outcome.NOT_FOUND: b"NF",
    Outcome.NOOP: b"MN",
}
# What ``q`` hides: the nominal answers (memcached's resp->skip); NS, EX, NF and errors are
# always sent, and a miss's EN is hidden by reply_one_miss.
QUIET_HIDES = frozenset((Outcome.STORED, Outcome.DELETED, Outcome.TOUCHED))
OPAQUE_MAX = 32  # MFLAG_MAX_OPAQUE_LENGTH: an O token, its O included, up to 32 bytes
U32 = 0xFFFFFFFF  # itoa_u32: times print as unsigned 32-bit numbers

_O, _k, _c, _s, _t, _f, _l, _h, _T, _N = b"OkcstflhTN"
_SILENT = frozenset(b"vqubRPLMCFJDI")  # mg flags that add nothing to a hit's line


def meta_key(key: bytes, binary: bool) -> bytes:
    """The ``k`` flag of a reply: the key, or when it is a binary key (``b``) its base64
    encoding and a ``b`` flag (memcached's META_KEY)."""
    if binary:
        return b" k" + b64encode(key) + b" b"
    return b" k" + key


def _ttl(ttl: int | None) -> bytes:
    return b" t-1" if ttl is None else b" t%d" % (ttl & U32)


class MetaReplies:
    """The meta commands' replies (`outcomes.Replies`), inherited by every meta command
    before its text base. A command carries the flag tokens of its request (`tokens`), its
    key (decoded, for ``b``), `binary` (it came base64-encoded) and `quiet` (``q``).

    Every error is sent, ``q`` or not; an ``O`` token over `OPAQUE_MAX` bytes, when the
    parser left it for the reply to find (mg and ma check it as they write their answer, after
    the command took effect), turns the answer into memcached's error line."""

    __slots__ = ()
    key: bytes
    tokens: list[bytes]
    binary: bool
    quiet: bool

    def _echo(self, head: bytes, cas: int | None = None) -> bytes | None:
        """`head`, then the O and k flags (and c with `cas`) in the order asked, and CRLF;
        None when an O token is too long."""
        parts = [head]
        for t in self.tokens:
            f = t[0]
            if f == _O:
                if len(t) > OPAQUE_MAX:
                    return None
                parts += (b" ", t)
            elif f == _k:
                parts.append(meta_key(self.key, self.binary))
            elif f == _c and cas is not None:
                parts.append(b" c%d" % cas)
        parts.append(CRLF)
        return b"".join(parts)

    def _status(self, out: Out, outcome: Outcome | Error, cas: int | None) -> None:
        if outcome.__class__ is Error:
            out.append(LINES[outcome])
            return
        line = self._echo(META_CODE[outcome], cas)
        if line is None:
            out.append(LINES[Error.META_OPAQUE_TOO_LONG])
        elif not (self.quiet and outcome in QUIET_HIDES):
            out.append(line)

    def reply(self, out: Out, outcome: Outcome | Error, detail: str = "") -> None:
        if detail:
            out.append(DETAILED[outcome] % detail.encode())
            return
        self._status(out, outcome, None)

    def reply_stored(self, out: Out, outcome: Outcome | Error, cas: int) -> None:
        # ms: its c flag gives the new CAS, 0 when nothing was stored (memcached's c->cas);
        # q hides "Out of memory during read" too (memcached's ms sets c->noreply, which
        # out_string obeys for that error alone: the others go through out_errstring)
        if outcome is Error.NO_MEMORY_READING and self.quiet:
            return
        self._status(out, outcome, cas)

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        line = self._echo(b"EN")
        if line is None:
            out.append(LINES[Error.META_OPAQUE_TOO_LONG])
        elif not self.quiet:
            out.append(line)

    def reply_miss(self, out: Out, key: bytes) -> None:
        self.reply_one_miss(out, key)

    def reply_values(self, out: Out, keys: list[bytes], hits: list[Any], with_cas: bool) -> None:
        raise NotImplementedError("meta commands answer with reply_item")

    def reply_end(self, out: Out) -> None:
        pass

    def reply_value(
        self,
        out: Out,
        key: bytes,
        value: Piece,
        flags: int,
        cas: int | None,
    ) -> None:
        raise NotImplementedError("meta commands answer with reply_item")

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        raise NotImplementedError("meta commands answer with reply_item")

    def reply_number(self, out: Out, n: int) -> None:
        raise NotImplementedError("ma answers with reply_item")

    def reply_item(self, out: Out, item: ItemView) -> None:
        raise NotImplementedError


class MetaGetReplies(MetaReplies):
    """``mg``: ``VA <size> <flags>`` and the value, or ``HD <flags>`` without ``v``; ``EN``
    on a miss (hidden by ``q``). The flags are written in the order asked, and the TTL ``t``
    shows is the one in force at its place: after a ``T`` the new one, after an ``N`` that
    created the item the one it was given (memcached writes them as it walks the flags).
    Then ``Z`` (another client holds the recache token), ``X`` (stale), ``W`` (won)."""

    __slots__ = ()

    def reply_item(self, out: Out, item: ItemView) -> None:
        # Hot path (mg <key> v): the item's fields unpacked at once (a plain tuple: see
        # outcomes.ItemView), flags that write nothing skipped first, the line and a small
        # value joined.
        (value, flags, cas, size, _, _, ttl, touch_ttl, vivify_ttl, idle, fetched, stale, sent,
         won, created, binary_key) = item  # fmt: skip
        parts: list[bytes | bytearray] = [b"HD" if value is None else b"VA %d" % size]
        for t in self.tokens:
            f = t[0]
            if f in _SILENT:
                continue
            if f == _s:
                parts.append(b" s%d" % size)
            elif f == _t:
                parts.append(_ttl(ttl))
            elif f == _c:
                parts.append(b" c%d" % cas)
            elif f == _f:
                parts.append(b" f%d" % flags)
            elif f == _O:  # at most OPAQUE_MAX: the parser refuses a longer one
                parts += (b" ", t)
            elif f == _k:
                parts.append(meta_key(self.key, binary_key))
            elif f == _T:
                ttl = touch_ttl
            elif f == _N:
                if created:
                    ttl = vivify_ttl
            elif f == _l:
                parts.append(b" l%d" % (idle & U32))
            elif f == _h:
                parts.append(b" h1" if fetched else b" h0")
        if sent:
            parts.append(b" Z")
        if stale:
            parts.append(b" X")
        if won:
            parts.append(b" W")
        if value is None:
            parts.append(CRLF)
        elif len(value) <= INLINE_VALUE_MAX:
            parts += (CRLF, value, CRLF)
        else:
            parts.append(CRLF)
            out += (b"".join(parts), value, CRLF)  # a large value: uncopied
            return
        out.append(b"".join(parts))


class MetaValueReplies(MetaGetReplies):
    """``mg <key> v`` and nothing else: ``VA <size>``, the value; ``EN`` on a miss. The
    replies `get`'s hot path makes (reply_one_value, reply_one_miss), in the meta syntax;
    the item's other states (stale, won) as any ``mg`` writes them (reply_item)."""

    __slots__ = ()

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        # Hot path: as TextReplies.reply_one_value, a small value's reply made one piece
        n = len(value)
        if n <= INLINE_VALUE_MAX:  # never `Pieces` (64 KB or more)
            out.append(b"".join((b"VA %d\r\n" % n, value, CRLF)))  # type: ignore[arg-type]
        else:
            out += (b"VA %d\r\n" % n, value, CRLF)  # a large value: uncopied

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        out.append(EN)


class MetaArithReplies(MetaReplies):
    """``ma``: ``HD <flags>``, or ``VA <size> <flags>`` and the new number with ``v``;
    ``NF`` / ``EX`` with the O and k flags. ``q`` hides the answer of a counter that
    existed, not of one the command created (memcached skips only its OK)."""

    __slots__ = ()
    want_value: bool

    def reply_item(self, out: Out, item: ItemView) -> None:
        digits, _, cas, _, _, _, ttl, touch_ttl, vivify_ttl, _, _, _, _, _, created, _ = item
        digits = digits or b""
        parts: list[bytes | bytearray] = [b"VA %d" % len(digits) if self.want_value else b"HD"]
        for t in self.tokens:
            f = t[0]
            if f == _c:
                parts.append(b" c%d" % cas)
            elif f == _t:
                parts.append(_ttl(ttl))
            elif f == _T:
                ttl = touch_ttl
            elif f == _N:
                if created:
                    ttl = vivify_ttl
            elif f == _O:
                if len(t) > OPAQUE_MAX:
                    out.append(LINES[Error.META_OPAQUE_TOO_LONG])
                    return
                parts += (b" ", t)
            elif f == _k:
                parts.append(meta_key(self.key, self.binary))
        if self.quiet and not created:
            return
        parts.append(CRLF)
        if self.want_value:
            parts += (digits, CRLF)
        out.append(b"".join(parts))


class MetaDebugReplies(MetaReplies):
    """``me``: memcached's debug line of an item, or ``EN``. ``exp`` is memcached's
    ``current_time - exptime`` (so minus the TTL; -1: never), ``la`` the seconds since the
    item was stored, ``size`` its total size, ``cls`` its slab class."""

    __slots__ = ()

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        out.append(b"EN\r\n")

    def reply_item(self, out: Out, item: ItemView) -> None:
        _, _, cas, _, total, clsid, ttl, _, _, idle, fetched, _, _, _, _, binary_key = item
        key = b64encode(self.key) if binary_key else self.key
        # %d of an unsigned difference: a 32-bit signed number
        exp = -1 if ttl is None else ((-ttl + 2**31) & U32) - 2**31
        out.append(
            b"ME %b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\r\n"
            % (key, exp, idle & U32, cas, b"yes" if fetched else b"no", clsid, total)
        )
