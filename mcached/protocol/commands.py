"""One small value type per verb.

A command is built for every request, so each is a plain ``__slots__`` class with a
positional constructor (no dataclass machinery on the hot path). Equality and repr compare
the slots, for tests. `noreply` is carried on every command that memcached lets take it
(False on the others).

A command answers in the syntax it was parsed from: the handler that serves it says what it
came to (``cmd.reply(out, Outcome.STORED)``) and the command's replies write the bytes.

The text protocol's commands inherit `responses.TextReplies`; the meta commands (``Meta*``,
at the end) are the same meanings in memcached's second text syntax and inherit
`responses.MetaReplies` first: ``ms`` is a `Store`, ``md`` a `Delete`, ``ma`` an `Incr`, so
the handler of each meaning serves both syntaxes (see `outcomes`).
"""

from __future__ import annotations

from typing import Any

from mcached.protocol.outcomes import Error, Out, Piece
from mcached.protocol.responses import (
    MetaArithReplies,
    MetaDebugReplies,
    MetaGetReplies,
    MetaReplies,
    MetaValueReplies,
    TextReplies,
)


class Command(TextReplies):
    __slots__: tuple[str, ...] = ()
    #: the verb as clients spell it, for logs and per-command counters
    verb = b""
    #: a command that memcached lets say noreply has it as a slot instead
    noreply: bool = False
    #: its syntax reports more than the classic reply does (a CAS, an item's state): the
    #: handler then makes the richer storage call of the same meaning
    extended = False
    #: counted by ``stats detail`` (memcached counts the classic verbs, not the meta ones)
    detailed = True
    #: every slot, base classes first (filled in by __init_subclass__)
    _fields: tuple[str, ...] = ()

    def __init_subclass__(cls) -> None:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names.extend(klass.__dict__.get("__slots__", ()))
        cls._fields = tuple(names)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self._fields)

    def __hash__(self) -> int:
        return hash((type(self),) + tuple(_hashable(getattr(self, s)) for s in self._fields))

    def __repr__(self) -> str:
        args = ", ".join(f"{s}={getattr(self, s)!r}" for s in self._fields)
        return f"{type(self).__name__}({args})"


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


# ---- retrieval ----


class Get(Command):
    __slots__ = ("keys",)
    verb = b"get"

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys


class Gets(Get):
    __slots__ = ()
    verb = b"gets"


class _Part:
    """Replies of a get line's part but its last (`GetPart`, `GetsPart`): its keys' values
    without the END that the line's last part sends."""

    __slots__ = ()
    reply_value: Any

    def reply_end(self, out: Out) -> None:
        pass

    def reply_one_value(self, out: Out, key: bytes, value: Piece, flags: int) -> None:
        self.reply_value(out, key, value, flags, None)

    def reply_one_miss(self, out: Out, key: bytes) -> None:
        pass


class GetPart(_Part, Get):
    """Keys of a get line over `parser.LINE_PART` bytes, which is parsed a part at a time
    (`Parser._line_part`): a get of these keys whose reply does not end the line's. The
    line's last part is a `Get`."""

    __slots__ = ()


class GetsPart(_Part, Gets):
    """`GetPart` of a gets line: the line's last part is a `Gets`."""

    __slots__ = ()


class Gat(Command):
    __slots__ = ("exptime", "keys")
    verb = b"gat"
    #: the reply carries each item's CAS (gats, and the binary protocol's gets and gats)
    with_cas = False

    def __init__(self, exptime: int, keys: list[bytes]) -> None:
        self.exptime = exptime
        self.keys = keys


class Gats(Gat):
    __slots__ = ()
    verb = b"gats"
    with_cas = True


# ---- storage ----


class Store(Command):
    """set/add/replace/append/prepend: the data block has been read in full."""

    __slots__ = ("key", "flags", "exptime", "value", "noreply")
    #: the CAS unique to compare (`Cas` and meta's C flag have it as a slot); 0: none
    cas_unique = 0

    def __init__(self, key: bytes, flags: int, exptime: int, value: bytes, noreply: bool = False):
        self.key = key
        self.flags = flags
        self.exptime = exptime
        self.value = value
        self.noreply = noreply


class Set(Store):
    __slots__ = ()
    verb = b"set"


class Add(Store):
    __slots__ = ()
    verb = b"add"


class Replace(Store):
    __slots__ = ()
    verb = b"replace"


class Append(Store):
    __slots__ = ()
    verb = b"append"


class Prepend(Store):
    __slots__ = ()
    verb = b"prepend"


class Cas(Store):
    __slots__ = ("cas_unique",)
    verb = b"cas"

    def __init__(
        self,
        key: bytes,
        flags: int,
        exptime: int,
        value: bytes,
        cas_unique: int,
        noreply: bool = False,
    ) -> None:
        super().__init__(key, flags, exptime, value, noreply)
        self.cas_unique = cas_unique


class Incoming(Command):
    """A storage command (text, meta ``ms`` or binary; any mode) whose value is large and
    still arriving (memcached's ``conn_nread``): the server receives the next `vlen` bytes,
    and the `tail` bytes after them (the text protocols' ``\r\n``; none in binary), straight
    into memory the handler reserves, then the handler finishes `store`, whose own `value`
    stays empty."""

    __slots__ = ("store", "vlen", "tail")
    verb = b"set"

    def __init__(self, store: Store, vlen: int, tail: int = 2) -> None:
        self.store = store
        self.vlen = vlen
        self.tail = tail


class TooLarge(Command):
    """A storage command whose value is over -I; its data block was swallowed."""

    __slots__ = ("mode", "key", "noreply")
    verb = b"set"

    def __init__(self, mode: bytes, key: bytes, noreply: bool = False) -> None:
        self.mode = mode
        self.key = key
        self.noreply = noreply


class MetaTooLarge(TooLarge):
    """An ``ms`` over -I: as a `TooLarge`, but kept out of ``stats detail`` (memcached's
    process_mset_command records no per-prefix set, where the classic stores record one
    before they allocate)."""

    __slots__ = ()
    detailed = False


class BadDataChunk(Command):
    """A storage command whose data block did not end with \\r\\n; nothing is stored.
    Its flags and length say which slab class memcached counts the set in."""

    __slots__ = ("mode", "key", "noreply", "flags", "vlen")
    verb = b"set"

    def __init__(
        self, mode: bytes, key: bytes, noreply: bool = False, flags: int = 0, vlen: int = 0
    ) -> None:
        self.mode = mode
        self.key = key
        self.noreply = noreply
        self.flags = flags
        self.vlen = vlen


# ---- other keyed commands ----


class Delete(Command):
    __slots__ = ("key", "noreply")
    verb = b"delete"
    cas_miss_counts = True  # a CAS that did not match is a delete_miss (md's; not binary's)

    def __init__(self, key: bytes, noreply: bool = False) -> None:
        self.key = key
        self.noreply = noreply


class Incr(Command):
    __slots__ = ("key", "delta", "noreply")
    verb = b"incr"
    incr = True  # False: decr (meta's ma has it as a slot)

    def __init__(self, key: bytes, delta: int, noreply: bool = False) -> None:
        self.key = key
        self.delta = delta
        self.noreply = noreply


class Decr(Incr):
    __slots__ = ()
    verb = b"decr"
    incr = False


class Touch(Command):
    __slots__ = ("key", "exptime", "noreply")
    verb = b"touch"

    def __init__(self, key: bytes, exptime: int, noreply: bool = False) -> None:
        self.key = key
        self.exptime = exptime
        self.noreply = noreply


# ---- server-wide commands ----


class FlushAll(Command):
    __slots__ = ("delay", "noreply")
    verb = b"flush_all"

    def __init__(self, delay: int | None = 0, noreply: bool = False) -> None:
        # delay None: the argument did not parse (the handler answers the error)
        self.delay = delay
        self.noreply = noreply


class Version(Command):
    __slots__ = ()
    verb = b"version"


class Verbosity(Command):
    __slots__ = ("level", "noreply")
    verb = b"verbosity"

    def __init__(self, level: int | None, noreply: bool = False) -> None:
        self.level = level
        self.noreply = noreply


class Quit(Command):
    __slots__ = ()
    verb = b"quit"
    # the text protocol's quit says nothing before the connection closes (the binary
    # protocol's answers): the handler's reply is hidden as noreply hides one
    noreply = True


class ShutdownCmd(Command):
    """``shutdown [graceful]``; `mode` is None when the argument was not understood."""

    __slots__ = ("mode",)
    verb = b"shutdown"

    def __init__(self, mode: bytes | None = b"") -> None:
        self.mode = mode


class Stats(Command):
    __slots__ = ("args",)
    verb = b"stats"

    def __init__(self, args: list[bytes]) -> None:
        self.args = args


class LruCrawler(Command):
    """``lru_crawler metadump|crawl <all|class ids>``, ``lru_crawler enable|disable`` (then
    the second argument is empty; other subcommands: ERROR)."""

    __slots__ = ("args",)
    verb = b"lru_crawler"

    def __init__(self, args: list[bytes]) -> None:
        self.args = args


class LruCrawlerTune(Command):
    """``lru_crawler sleep <us>`` or ``lru_crawler tocrawl <n>``: `name` is the setting
    (``lru_crawler_sleep``, ``lru_crawler_tocrawl``), `value` its new value."""

    __slots__ = ("name", "value")
    verb = b"lru_crawler"

    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value


class Lru(Command):
    """``lru tune <hot%> <warm%> <hot factor> <warm factor>``, ``lru mode flat|segmented``,
    ``lru temp_ttl <ttl>``: memcached's segmented LRU's tuning, for the whole daemon.
    `values`: the settings it sets (field name, value); `needs_maintainer`: memcached
    refuses it (ERROR) without its LRU maintainer thread (mode and temp_ttl)."""

    __slots__ = ("values", "needs_maintainer", "noreply")
    verb = b"lru"

    def __init__(
        self, values: tuple[tuple[str, Any], ...], needs_maintainer: bool, noreply: bool = False
    ) -> None:
        self.values = values
        self.needs_maintainer = needs_maintainer
        self.noreply = noreply


class SlabsReassign(Command):
    """``slabs reassign <src> <dst>``: move a page between slab classes (dst 0: the global
    page pool; src -1: any class with a page to spare). A number memcached's ``safe_strtol``
    refuses is None (the handler answers; with slab_reassign off, that comes first)."""

    __slots__ = ("src", "dst")
    verb = b"slabs"

    def __init__(self, src: int | None, dst: int | None) -> None:
        self.src = src
        self.dst = dst


class SlabsAutomove(Command):
    """``slabs automove <0|1|2>``, or (`level` None) ``slabs automove ratio <r>``, which
    sets the ``stats settings`` row and nothing else: mcached's automover has no use for
    it."""

    __slots__ = ("level", "noreply", "ratio")
    verb = b"slabs"

    def __init__(self, level: int | None, noreply: bool = False, ratio: float = 0.0) -> None:
        self.level = level
        self.noreply = noreply
        self.ratio = ratio


class CacheMemlimit(Command):
    __slots__ = ("megabytes", "noreply")
    verb = b"cache_memlimit"

    def __init__(self, megabytes: int | None, noreply: bool = False) -> None:
        self.megabytes = megabytes
        self.noreply = noreply


class ConfigGet(Command):
    """``config get <key>``: the ElastiCache auto-discovery endpoint (``cluster``)."""

    __slots__ = ("key",)
    verb = b"config"

    def __init__(self, key: bytes) -> None:
        self.key = key


class ConfigSet(Command):
    __slots__ = ("key", "flags", "value", "noreply")
    verb = b"config"

    def __init__(self, key: bytes, flags: int, value: bytes, noreply: bool = False) -> None:
        self.key = key
        self.flags = flags
        self.value = value
        self.noreply = noreply


class ConfigDelete(Command):
    __slots__ = ("key", "noreply")
    verb = b"config"

    def __init__(self, key: bytes, noreply: bool = False) -> None:
        self.key = key
        self.noreply = noreply


class RefreshCerts(Command):
    """``refresh_certs``: reload the TLS certificate, key and CA files."""

    __slots__ = ("noreply",)
    verb = b"refresh_certs"

    def __init__(self, noreply: bool = False) -> None:
        self.noreply = noreply


class Auth(Command):
    """``-Y``: the credentials of the ``set <key> 0 0 <n>`` + ``<user> <password>`` exchange.

    `grant` is the parser's switch to the full protocol, called by the handler when the
    credentials are right (the parser frames, the handler decides). The password never
    appears in a repr, so the -vvv trace does not log it.
    """

    __slots__ = ("user", "password", "grant")
    verb = b"set"

    def __init__(self, user: bytes, password: bytes, grant: Any = None) -> None:
        self.user = user
        self.password = password
        self.grant = grant

    def __repr__(self) -> str:
        return f"Auth(user={self.user!r}, password=<{len(self.password)} bytes>)"


class Watch(Command):
    """``watch [fetchers] [mutations] ...``: the connection becomes a stream of log lines
    (the words are the handler's to read: `mcached.watch`)."""

    __slots__ = ("args", "noreply")
    verb = b"watch"

    def __init__(self, args: list[bytes], noreply: bool = False) -> None:
        self.args = args
        self.noreply = noreply


class Invalid(Command):
    """A request that earns an error; `noreply` (when the parser had seen it) may hide it.

    Returned rather than raised so the parser keeps its place in the stream and the reply
    decides, as memcached's ``out_string`` does, whether ``noreply`` hides it.

    `before`: a get, gets, gat or gats of the keys its line held before one over 250 bytes.
    memcached looks those up one by one (they are counted, touched, marked fetched) before it
    meets the bad key, then sends the error alone.
    """

    __slots__ = ("error", "noreply", "before")
    verb = b""

    def __init__(
        self, error: Error, noreply: bool = False, before: Get | Gat | None = None
    ) -> None:
        self.error = error
        self.noreply = noreply
        self.before = before


# ---- the meta commands (memcached 1.6.18: mg ms md ma mn me) ----
#
# Each carries its flag tokens as sent (`tokens`: the reply echoes O and k, and writes the
# flags asked for, in their order), its key decoded when ``b`` said it was base64 (`binary`),
# `quiet` (``q``), and what the flags ask of the command, parsed once. Errors in the flags
# never reach a command: the parser answers them (`Invalid`).


class MetaGet(MetaGetReplies, Command):
    """``mg <key> <flags>*``: a lookup of one key. `touch` (T), `vivify` (N) and `recache`
    (R) are client exptimes or None; `recache_after_touch` and `vivify_last` say how the
    flags stood (memcached applies them in their order)."""

    __slots__ = (
        "key",
        "tokens",
        "binary",
        "quiet",
        "want_value",
        "bump",
        "touch",
        "vivify",
        "recache",
        "recache_after_touch",
        "vivify_last",
    )
    verb = b"mg"
    extended = True
    detailed = False

    def __init__(
        self,
        key: bytes,
        tokens: list[bytes],
        binary: bool = False,
        quiet: bool = False,
        want_value: bool = False,
        bump: bool = True,
        touch: int | None = None,
        vivify: int | None = None,
        recache: int | None = None,
        recache_after_touch: bool = False,
        vivify_last: bool = True,
    ) -> None:
        self.key = key
        self.tokens = tokens
        self.binary = binary
        self.quiet = quiet
        self.want_value = want_value
        self.bump = bump
        self.touch = touch
        self.vivify = vivify
        self.recache = recache
        self.recache_after_touch = recache_after_touch
        self.vivify_last = vivify_last


class MetaValue(MetaValueReplies, Command):
    """``mg <key> v``, flags otherwise none: served as a one-key `Get` is (the same storage
    read; the handler falls back to `general()` for an item a plain read cannot describe).
    Its own type so the commonest meta request pays for no flag it does not carry."""

    __slots__ = ("key",)
    verb = b"mg"
    extended = True
    detailed = False
    tokens = [b"v"]  # what the replies read of a MetaGet's slots, the same for every one
    binary = False
    quiet = False

    def __init__(self, key: bytes) -> None:
        self.key = key

    def general(self) -> MetaGet:
        """The same request as a `MetaGet`, every flag field filled in."""
        return MetaGet(self.key, [b"v"], want_value=True)


class MetaStore(MetaReplies, Store):
    """``ms <key> <datalen> <flags>*`` and its data block: a `Store` whose mode is its class
    (``M`` and ``C`` chose it: `MetaCas` for a set or replace with a CAS). `invalidate` (I)
    lets an older CAS store the value marked stale."""

    __slots__ = ("tokens", "binary", "quiet", "cas_unique", "invalidate")
    verb = b"ms"
    extended = True
    detailed = False

    def __init__(
        self,
        key: bytes,
        flags: int,
        exptime: int,
        value: bytes,
        tokens: list[bytes],
        binary: bool = False,
        quiet: bool = False,
        cas_unique: int = 0,
        invalidate: bool = False,
    ) -> None:
        super().__init__(key, flags, exptime, value)
        self.tokens = tokens
        self.binary = binary
        self.quiet = quiet
        self.cas_unique = cas_unique
        self.invalidate = invalidate


class MetaSet(MetaStore):
    __slots__ = ()


class MetaAdd(MetaStore):
    __slots__ = ()


class MetaReplace(MetaStore):
    __slots__ = ()


class MetaAppend(MetaStore):
    __slots__ = ()


class MetaPrepend(MetaStore):
    __slots__ = ()


class MetaCas(MetaStore):
    __slots__ = ()


class MetaDelete(MetaReplies, Delete):
    """``md <key> <flags>*``: a `Delete`; `cas` (C, None: not given) must match, and
    `invalidate` (I) keeps the item marked stale, with a new exptime when `touch` (T)."""

    __slots__ = ("tokens", "binary", "quiet", "cas", "invalidate", "touch")
    verb = b"md"
    extended = True
    detailed = False

    def __init__(
        self,
        key: bytes,
        tokens: list[bytes],
        binary: bool = False,
        quiet: bool = False,
        cas: int | None = None,
        invalidate: bool = False,
        touch: int | None = None,
    ) -> None:
        super().__init__(key)
        self.tokens = tokens
        self.binary = binary
        self.quiet = quiet
        self.cas = cas
        self.invalidate = invalidate
        self.touch = touch


class MetaArith(MetaArithReplies, Incr):
    """``ma <key> <flags>*``: an incr or decr (`incr`, from M) by `delta` (D, default 1); a
    non-zero `cas` (C) must match; on a miss `vivify` (N, a client exptime) creates the
    counter holding `initial` (J); `touch` (T) sets the exptime; `want_value` (v) asks for the
    new number."""

    __slots__ = (
        "tokens",
        "binary",
        "quiet",
        "incr",
        "cas",
        "vivify",
        "initial",
        "touch",
        "vivify_last",
        "want_value",
    )
    verb = b"ma"
    extended = True
    detailed = False

    def __init__(
        self,
        key: bytes,
        tokens: list[bytes],
        binary: bool = False,
        quiet: bool = False,
        incr: bool = True,
        delta: int = 1,
        cas: int = 0,
        vivify: int | None = None,
        initial: int = 0,
        touch: int | None = None,
        vivify_last: bool = True,
        want_value: bool = False,
    ) -> None:
        super().__init__(key, delta)
        self.tokens = tokens
        self.binary = binary
        self.quiet = quiet
        self.incr = incr
        self.cas = cas
        self.vivify = vivify
        self.initial = initial
        self.touch = touch
        self.vivify_last = vivify_last
        self.want_value = want_value


class MetaNoop(MetaReplies, Command):
    """``mn``: answers ``MN``, so a client knows every quiet command before it was served."""

    __slots__ = ()
    verb = b"mn"
    key = b""
    tokens: list[bytes] = []
    binary = False
    quiet = False


class MetaDebug(MetaDebugReplies, Command):
    """``me <key> [b]``: memcached's debug line of the item (nothing about it changes)."""

    __slots__ = ("key", "binary")
    verb = b"me"
    extended = True
    detailed = False
    tokens: list[bytes] = []
    quiet = False

    def __init__(self, key: bytes, binary: bool = False) -> None:
        self.key = key
        self.binary = binary


#: The text commands after which memcached transmits every reply it holds (a served get of
#: any kind, ``mn``); after the others their replies wait for the next transmission, which
#: a metadump and a watch must not find pending (its ``resp_has_stack``). Exact types: the
#: binary protocol's gets subclass these and follow their own rule.
TRANSMITTING: frozenset[type] = frozenset({Get, Gets, Gat, Gats, MetaNoop})
