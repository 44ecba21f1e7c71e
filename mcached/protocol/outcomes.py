"""What a command came to, in no syntax: the seam between handlers and the wire.

Handlers decide what a command means (the cache call, the counters, which outcome); the
command's replies turn that outcome into bytes. This module is the vocabulary the two share:

* `Outcome`: the status a command ended with (``STORED``, ``NOT_FOUND``, ``DELETED``...).
* `Error`: why a command failed, one member per failure memcached tells apart.
* `Replies`: the reply methods every syntax implements. A command answers in the syntax it
  was asked in: each syntax's command classes inherit that syntax's replies (the text
  protocol's commands inherit `mcached.protocol.responses.TextReplies`), so a handler writes
  ``cmd.reply(s.out, Outcome.STORED)`` and the command, which knows its ``noreply``, quiet
  flag, opaque token or flags to echo, appends its syntax's bytes to the output list, or
  nothing. One connection can mix syntaxes, and one handler serves a verb in every syntax.

Why methods inherited by the command rather than a renderer object it names: on CPython 3.11
a method of the command's class is one specialised lookup, where ``cmd.renderer.reply(cmd,
...)`` adds a generic class-attribute lookup per reply. callgrind, per ``get`` miss: 24,071
instructions with the bytes written in the handlers, 24,619 through a renderer object (+2.3%),
24,452 through inherited replies (+1.6%). The text of every reply still lives in ``protocol/``.

The meta commands (``mg ms md ma mn me``) are a second text syntax: their command classes
inherit `mcached.protocol.responses.MetaReplies` first in their bases (so it overrides every
text reply): ``reply(out, Outcome.STORED)`` writes ``HD`` plus the flags the request asked to
echo (``O`` opaque, ``k`` key), or nothing under ``q`` for the codes memcached hides in quiet
mode; ``reply_item`` writes ``VA <size> <flags>`` from the `ItemView` a lookup returned,
``reply_one_miss`` ``EN``; an `Error` writes memcached's ``CLIENT_ERROR``/``SERVER_ERROR``
line, never hidden. The handlers serve them as the classic verbs of the same meaning (``ms``
is a store, ``mg`` a lookup, ``md`` a delete, ``ma`` a delta); a command whose syntax reports
more than the classic reply carries (a CAS, an item's state) says so with ``extended``, and
the handler then makes the richer storage call of the same meaning.

How the protocol still to come plugs in:

* The binary protocol parses frames into command classes carrying the opcode, the opaque
  and whether the opcode is quiet, with ``BinaryReplies``: one 24-byte response header per
  reply, ``reply`` mapping the outcome to a status (``STORED`` 0x0000, ``NOT_FOUND`` 0x0001,
  ``EXISTS`` 0x0002, ``Error.TOO_LARGE`` 0x0003, ``Error.NON_NUMERIC`` 0x0006,
  ``Error.NO_MEMORY`` 0x0082, ``Error.UNKNOWN_COMMAND`` 0x0081...), ``reply_stored`` the
  status with the new CAS in the header, ``reply_item`` an incr's 8-byte body and CAS,
  ``reply_stats`` one packet per row and an empty one to end; quiet opcodes drop the
  successes. Its commands are ``extended`` (they want the CAS back, and incr's create-on-miss
  is meta's ``N``/``J``), so they reach the same storage calls as the meta commands.
* A new syntax adds its command types to ``Handlers.dispatch_table()``, pointing at the
  handler of the same meaning: handlers never test which syntax a command came in.

Rules: nothing here knows bytes; members hash by identity (replies look one up per reply).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, Protocol


class Pieces:
    """A value in several buffers: a large value held in several chunks of the cache and lent
    to a reply (views of each chunk's data, under a pin), so that it is never copied whole.
    Its length is theirs in all. A reply carries it as one piece; the connection queues its
    buffers themselves (one is never joined: it is 64 KB or more, past the connection's
    JOIN_MAX, and so is the turn that holds it)."""

    __slots__ = ("views", "nbytes")

    def __init__(self, views: list[memoryview]) -> None:
        self.views = views
        self.nbytes = sum(map(len, views))

    def __len__(self) -> int:
        return self.nbytes

    def __bytes__(self) -> bytes:
        return b"".join(self.views)


#: a reply piece: a bytearray is a value copied out of the cache; a memoryview or `Pieces`,
#: a value lent by the cache
Piece = bytes | bytearray | memoryview | Pieces
#: A piece of a stream that is no output: its producer gave way (a bounded step of a long
#: walk found nothing to send). The connection pulls no more of the stream until the socket
#: is writable again, so its worker serves its other connections in between. Compared by
#: identity (an empty value is an empty piece too, and is sent as any other).
GIVE_WAY: Piece = memoryview(b"")
#: a handler's output: reply pieces in order
Out = list[Piece]


class _Member(enum.Enum):
    # Members are singletons compared by identity: hash them so too (object.__hash__ is C;
    # Enum's own __hash__ is a Python call, paid on every renderer's table lookup).
    __hash__ = object.__hash__


class Outcome(_Member):
    """A command's status when it did what was asked, or found nothing to do it to."""

    STORED = "stored"
    NOT_STORED = "not_stored"  # add of an existing key, replace/append of a missing one
    EXISTS = "exists"  # cas: the item changed since the client read it
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    TOUCHED = "touched"
    OK = "ok"
    RESET = "reset"  # stats reset
    NOOP = "noop"  # mn: nothing asked, everything before it answered


class Error(_Member):
    """Why a command failed. memcached's text protocol words each one differently; a
    renderer maps every member to its syntax (a line, a status code)."""

    UNKNOWN_COMMAND = "unknown_command"
    BAD_FORMAT = "bad_format"
    BAD_DELETE_FORMAT = "bad_delete_format"  # delete <key> <time>, which 1.6 refuses
    BAD_DATA_CHUNK = "bad_data_chunk"
    BAD_DELTA = "bad_delta"
    BAD_EXPTIME = "bad_exptime"
    NON_NUMERIC = "non_numeric"  # incr/decr of a value that is not a number
    TOO_LARGE = "too_large"
    NO_MEMORY_STORING = "no_memory_storing"  # a store with -M and no memory to evict
    NO_MEMORY = "no_memory"  # incr/decr could not allocate the new value
    FLUSH_DISABLED = "flush_disabled"  # -F
    SHUTDOWN_DISABLED = "shutdown_disabled"  # no -A
    SHUTDOWN_MODE = "shutdown_mode"
    DETAIL_USAGE = "detail_usage"  # stats detail <not on|off|dump>
    MEMLIMIT_TOO_SMALL = "memlimit_too_small"
    MEMLIMIT_NOT_MB = "memlimit_not_mb"
    MEMLIMIT_FAILED = "memlimit_failed"
    BAD_CLASS = "bad_class"  # lru_crawler with a class id not a number from 1 to 63
    CRAWLER_FAILED = "crawler_failed"  # lru_crawler crawl hash
    METADUMP_DISABLED = "metadump_disabled"  # lru_crawler metadump under -X
    METADUMP_PIPELINED = "metadump_pipelined"  # replies of earlier commands still unsent
    CRAWLER_BUSY = "crawler_busy"  # lru_crawler crawl while a pass runs or is asked for
    CRAWLER_NO_CLASS = "crawler_no_class"  # lru_crawler crawl|metadump of no class (",")
    CRAWLER_DISABLED = "crawler_disabled"  # lru_crawler crawl|metadump with the crawler off
    CRAWLER_NOT_STARTED = "crawler_not_started"  # lru_crawler enable when it runs already
    CRAWLER_SLEEP_RANGE = "crawler_sleep_range"  # lru_crawler sleep past 1000000 us
    LRU_PCTS = "lru_pcts"  # lru tune: hot and warm over 80 %
    LRU_FACTORS = "lru_factors"  # lru tune: an age factor of 0 or less
    BAD_COMMAND_LINE = "bad_command_line"  # stats cachedump without its two numbers
    ILLEGAL_SLAB_ID = "illegal_slab_id"  # stats cachedump past memcached's 63 classes
    CACHEDUMP_DISABLED = "cachedump_disabled"  # stats cachedump under -X
    REASSIGN_DISABLED = "reassign_disabled"  # -o no_slab_reassign
    REASSIGN_BUSY = "reassign_busy"
    REASSIGN_BAD_CLASS = "reassign_bad_class"
    REASSIGN_NO_SPARE = "reassign_no_spare"
    REASSIGN_SAME = "reassign_same"
    UNAUTHENTICATED = "unauthenticated"  # -Y, before the login
    AUTH_FAILED = "auth_failed"
    AUTH_BAD_FORMAT = "auth_bad_format"
    AUTH_BAD_TERMINATION = "auth_bad_termination"
    TLS_NOT_ENABLED = "tls_not_enabled"  # refresh_certs without -Z
    CERTS_NOT_LOADED = "certs_not_loaded"  # refresh_certs failed: `detail` says why
    CONFIG_SET_DISABLED = "config_set_disabled"  # config set without --enable-config-set
    CONFIG_DELETE_DISABLED = "config_delete_disabled"
    BAD_CLUSTER_CONFIG = "bad_cluster_config"  # config set data: `detail` says what is wrong
    WATCHER_TOO_MANY = "watcher_too_many"  # memcached's 20 watchers are attached
    WATCH_DISABLED = "watch_disabled"  # -W
    WATCH_PIPELINED = "watch_pipelined"  # replies of earlier commands still unsent
    # the meta commands' (memcached 1.6.18 proto_text.c words each)
    META_FLAG_INVALID = "meta_flag_invalid"  # a flag no meta command knows
    META_FLAG_DUPLICATE = "meta_flag_duplicate"  # a flag given twice (or not ASCII)
    META_FLAG_BAD = "meta_flag_bad"  # md and ma say this for any flag error
    META_BAD_TOKEN = "meta_bad_token"  # N, T, R or C with a token that is not a number
    META_KEY_DECODE = "meta_key_decode"  # b with a key that is not base64
    META_MODE_LENGTH = "meta_mode_length"  # M with other than one character
    META_BAD_INITIAL = "meta_bad_initial"  # J
    META_BAD_DELTA = "meta_bad_delta"  # D
    META_TOO_MANY_FLAGS = "meta_too_many_flags"  # mg (its wording)
    META_TOO_MANY_FLAGS_STORE = "meta_too_many_flags_store"  # ms, md, ma (theirs)
    META_OPAQUE_TOO_LONG = "meta_opaque_too_long"  # O over 32 bytes
    META_SET_MODE = "meta_set_mode"  # ms M with an unknown mode
    META_ARITH_MODE = "meta_arith_mode"  # ma M with an unknown mode
    META_NOT_CREATED = "meta_not_created"  # ma N: no memory for the new item
    # the binary protocol's (memcached 1.6.18's proto_bin.c)
    BIN_INVALID = "bin_invalid"  # lengths the opcode does not take: "Invalid arguments"
    BIN_NO_MEMORY = "bin_no_memory"  # a SASL exchange too long to hold: "Out of memory"
    # a store whose chained item's value chunk could not be had (memcached.c's conn_nread:
    # "Out of memory during read"). Last: members hash by address, and one added among the
    # others made the get path's table lookups cost 96 instructions more a get (callgrind)
    NO_MEMORY_READING = "no_memory_reading"


#: What a lookup saw of an item, for the replies that report it (meta's flags, a debug line):
#: a tuple of `ITEM_FIELDS`, in that order (`mcached.storage.results.ItemState` names them;
#: a reply on the hot path unpacks the tuple at once). A TTL is seconds left, None when the
#: item never expires; ttl, idle and fetched are from before the command changed the item,
#: touch_ttl and vivify_ttl what the command set.
ItemView = tuple[Any, ...]
ITEM_FIELDS = (
    "value",  # a copy, when asked for (ma: the new number), else None
    "flags",  # the client flags
    "cas",
    "size",  # value length
    "total",  # memcached's item size
    "clsid",  # slab class
    "ttl",
    "touch_ttl",
    "vivify_ttl",
    "idle",  # seconds since it was stored
    "fetched",
    "stale",
    "token_sent",  # another client won the recache before this command
    "won",  # this command won it
    "created",  # this command created the item
    "binary_key",  # stored under a base64 key
)


class Replies(Protocol):
    """One syntax's replies, as methods of the command being answered (``self``). Each
    appends to `out` whatever that syntax sends for this outcome of the command, possibly
    nothing (``noreply``, a quiet flag): handlers never decide whether a reply is sent, only
    what the command came to. Names start with ``reply`` so they never meet a command's own
    fields (a ``set`` has a ``value``)."""

    # ---- retrieval: reply_value() per item found, reply_miss() per key not, reply_end() ----

    def reply_value(
        self,
        out: Out,
        key: bytes,
        value: Piece,
        flags: int,
        cas: int | None,
    ) -> None:
        """An item found. `cas` is the item's CAS unique, or None when the command did not
        ask for it (``get`` and ``gat`` do not; ``gets`` and ``gats`` do)."""

    def reply_miss(self, out: Out, key: bytes) -> None:
        """A key not found."""

    def reply_values(self, out: Out, keys: list[bytes], hits: list[Any], with_cas: bool) -> None:
        """`reply_value` or `reply_miss` of each key in turn, as one call: `hits[i]` is
        ``(value, flags, cas, ...)`` for ``keys[i]``, or None when it was not found (keys
        past the end of `hits` are left for later); the CAS is given only `with_cas`.
        `reply_each` is the plain form."""

    def reply_end(self, out: Out) -> None:
        """After the last key of a retrieval (and the last row of a metadump)."""

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        """A retrieval of one key that was found, without its CAS: exactly `reply_value` then
        `reply_end`, in one call (``get <key>``, the commonest request there is)."""

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        """A retrieval of one key that was not found: exactly `reply_miss` then `reply_end`."""

    # ---- everything else ----

    def reply(self, out: Out, outcome: Outcome | Error, detail: str = "") -> None:
        """A status or an error; `detail` is the message some errors carry."""

    def reply_number(self, out: Out, n: int) -> None:
        """incr/decr: the new value."""

    def reply_stored(self, out: Out, outcome: Outcome | Error, cas: int) -> None:
        """A storage command's outcome, and the new item's CAS: 0 unless stored, and 0 for a
        command that is not ``extended`` (the classic text reply has no place for it, so the
        classic store does not look it up)."""

    def reply_item(self, out: Out, item: ItemView) -> None:
        """A keyed command found (or made) this item: report what the command asked of it
        (``mg``'s value and flags, ``ma``'s new number, ``me``'s debug line)."""

    def reply_version(self, out: Out, version: str) -> None: ...

    def reply_stats(self, out: Out, rows: Iterable[tuple[str, object]], end: bool = True) -> None:
        """A stats group: (name, value) rows, in order; then its end unless `end` is false
        (memcached ends ``stats sizes_enable|disable`` without one)."""

    def reply_prefix_stats(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, int]]
    ) -> None:
        """``stats detail dump``: (prefix, gets, hits, sets, deletes) rows."""

    def reply_metadump(
        self, out: Out, rows: Iterable[tuple[bytes, int, int, int, bool, int, int]]
    ) -> None:
        """``lru_crawler metadump``: (key, exptime or -1, last access, cas, fetched, size,
        class id) rows, times as Unix time: one batch of the dump (called once per batch,
        then `reply_end`)."""

    #: bytes of rows ``stats cachedump`` sends at most (memcached's cap): see below
    cachedump_room: int

    def reply_cachedump_size(self, nkey: int, nbytes: int, exptime: int) -> int:
        """What a row (its key's length, value length, exptime as Unix time or 0) takes of
        `cachedump_room`: the handler keeps only the newest rows that fit."""

    def reply_cachedump(self, out: Out, rows: Iterable[tuple[bytes, int, int]]) -> None:
        """``stats cachedump``: (key, value length, exptime as Unix time or 0) rows, newest
        first; those past `cachedump_room` are left out."""

    def reply_config(self, out: Out, key: bytes, data: bytes) -> None:
        """``config get <key>``: the auto-discovery data (ElastiCache's endpoint)."""


def reply_each(replies: Any, out: Out, keys: list[bytes], hits: list[Any], with_cas: bool) -> None:
    """`Replies.reply_values` in its plain form: one `reply_value` or `reply_miss` a key
    (what a syntax without a loop of its own answers a multiget's run of hits with)."""
    for key, hit in zip(keys, hits, strict=False):
        if hit is None:
            replies.reply_miss(out, key)
        else:
            replies.reply_value(out, key, hit[0], hit[1], hit[2] if with_cas else None)
