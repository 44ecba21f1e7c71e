"""What each verb means: command -> cache call -> outcome, and the counters.

The server looks each parsed command's type up in `Handlers.dispatch_table()` and calls the
handler with the command and the connection's `Session` (its output list and its worker's
counters). A handler decides what the command means: which cache call, which counters, what
it came to (an `Outcome`, an `Error`, the items found, a number, stats rows). It never writes
wire text and never reads ``noreply``: it hands that result to the command's replies
(``cmd.reply(s.out, Outcome.STORED)``, ``cmd.reply_value(...)``), which write it in the
syntax the command was parsed from (`mcached.protocol.responses.TextReplies` for memcached's
text protocol) or, under ``noreply`` or a quiet flag, write nothing. So the same handler
serves a verb in every syntax (see `mcached.protocol.outcomes`).

The meta commands are served by the handlers of their meaning: ``ms`` by `store`, ``md`` by
`delete`, ``ma`` by `delta`, each counted as memcached counts the classic verb; a command
that is ``extended`` (its syntax reports a CAS or the item's state) gets the richer storage
call of the same meaning (``store_ex``, ``delete_ex``, ``delta_ex``). ``mg`` is `lookup`: one
key, counted as a get, or as a touch when it sets a TTL (as ``gat`` is).

Hot path: `get` and the storage verbs run once per request, so they bind attributes to
locals, and `get` has its own one-key path (see there).

Memory. A reply never holds more of the cache than it must: a value of `PIN_MIN` bytes or
more is sent from the cache's own memory (`Cache.get_ref` lends it, and ``Session.after_sent``
gives it back once the socket took it), and a multiget whose reply grows past `STREAM_AFTER`
hands the rest of its keys to the connection as a stream (``Session.stream``): they are looked
up and rendered only as the client reads, so ``get`` of a thousand large keys that is never
read costs what a few of them do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from mcached import MEMCACHED_VERSION, watch
from mcached.clock import Clock
from mcached.cluster.config import CLUSTER_KEY, LEGACY_KEY, TooManyNodes, parse_data
from mcached.errors import CloseConnection, Shutdown, StartWatch
from mcached.latency import stats_rows as latency_rows
from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.outcomes import GIVE_WAY, Error, Out, Outcome, Piece, Pieces
from mcached.protocol.parser import class_ids, item_total_size, strtoul32
from mcached.settings import Settings, stats_settings
from mcached.stats import ABSENT_ROWS, ONLY_WITH, Counters, PrefixStats, ordered
from mcached.storage.cache import NOT_PLAIN, Cache, Hit, RefHit, Reservation
from mcached.storage.results import (
    CLSID,
    CREATED,
    SIZE,
    DeleteResult,
    DeltaResult,
    ItemState,
    ReassignResult,
    StoreMode,
    StoreResult,
)

if TYPE_CHECKING:
    from mcached.cluster.discovery import Discovery


class Session(Protocol):
    """What a handler needs from a connection (the server's Connection provides it)."""

    out: Out  # reply pieces, appended by the commands' replies
    counters: Counters
    #: the rest of a reply, pulled piece by piece as the client reads; nothing after it runs
    stream: Iterator[Piece] | None
    #: bytes the request that `stream` serves holds until it ends (a multiget's keys: see
    #: `keys_held`), counted with what the connection holds outside the cache
    stream_held: int
    #: earlier commands whose replies memcached would still hold unsent (its resp_has_stack:
    #: it transmits after a get or mn, and when it needs more bytes)
    stacked: int
    #: a datagram's stand-in (UDP), not a connection: nothing can be handed over to it
    datagram: bool

    def after_sent(self, callback: Callable[[], None]) -> None:
        """Run `callback` once what is in `out` now (and before) is sent, or the connection
        closes."""

    def receive(
        self,
        views: list[memoryview] | None,
        nbytes: int,
        done: Callable[[bool], None],
        abort: Callable[[], None] | None,
        tail: int = 2,
        more: Callable[[], memoryview | None] | None = None,
    ) -> None:
        """Read the next `nbytes` bytes into `views` (None: drop them), then into what
        ``more()`` gives once they are full (None: drop the rest), then the `tail` after
        them; ``done(they were CRLF)``, or ``abort()`` if the connection closes first."""


class ServerInfo(Protocol):
    """Figures and hooks only the server and daemon have."""

    def general_stats(self) -> dict[str, Any]: ...

    def conns_stats(self, asking: object = None) -> list[tuple[str, object]]: ...

    def all_counters(self) -> list[Counters]: ...

    def reset_stats(self, during: Callable[[], None]) -> None: ...

    def set_verbosity(self, level: int) -> None: ...

    def set_detail(self, on: bool) -> None: ...

    def set_lru_crawler(self, on: bool) -> None: ...

    def tune_crawler(self, name: str, value: int) -> None: ...

    def set_sizes(self, on: bool) -> None: ...

    def tune_settings(self, values: dict[str, Any]) -> None: ...

    def sizes_since(self) -> int | None: ...

    def refresh_settings(self) -> None: ...

    def tls_refreshed(self) -> None: ...

    def detail_table(self) -> dict[bytes, list[int]]: ...

    def latency(self) -> dict[str, list[int]]: ...

    def watchers(self) -> int: ...


STORE_OUTCOME: dict[StoreResult, Outcome | Error] = {
    StoreResult.STORED: Outcome.STORED,
    StoreResult.NOT_STORED: Outcome.NOT_STORED,
    StoreResult.EXISTS: Outcome.EXISTS,
    StoreResult.NOT_FOUND: Outcome.NOT_FOUND,
    StoreResult.TOO_LARGE: Error.TOO_LARGE,
    StoreResult.NO_MEMORY: Error.NO_MEMORY_STORING,
    StoreResult.NO_MEMORY_READING: Error.NO_MEMORY_READING,
}

#: what a store whose item could not be had comes to (`Handlers._stored`)
UNALLOCATED = frozenset(
    (StoreResult.NO_MEMORY, StoreResult.TOO_LARGE, StoreResult.NO_MEMORY_READING)
)

STORE_MODE = {
    c.Set: StoreMode.SET,
    c.Add: StoreMode.ADD,
    c.Replace: StoreMode.REPLACE,
    c.Append: StoreMode.APPEND,
    c.Prepend: StoreMode.PREPEND,
    c.Cas: StoreMode.CAS,
    c.MetaSet: StoreMode.SET,
    c.MetaAdd: StoreMode.ADD,
    c.MetaReplace: StoreMode.REPLACE,
    c.MetaAppend: StoreMode.APPEND,
    c.MetaPrepend: StoreMode.PREPEND,
    c.MetaCas: StoreMode.CAS,
    b.BinSet: StoreMode.SET,
    b.BinAdd: StoreMode.ADD,
    b.BinReplace: StoreMode.REPLACE,
    b.BinAppend: StoreMode.APPEND,
    b.BinPrepend: StoreMode.PREPEND,
    b.BinCas: StoreMode.CAS,
}

DELETE_OUTCOME: dict[DeleteResult, Outcome | Error] = {
    DeleteResult.DELETED: Outcome.DELETED,
    DeleteResult.INVALIDATED: Outcome.DELETED,  # md I: memcached answers HD all the same
    DeleteResult.NOT_FOUND: Outcome.NOT_FOUND,
    DeleteResult.EXISTS: Outcome.EXISTS,
}

DELTA_OUTCOME: dict[DeltaResult, Outcome | Error] = {
    DeltaResult.NOT_FOUND: Outcome.NOT_FOUND,
    DeltaResult.EXISTS: Outcome.EXISTS,
    DeltaResult.NON_NUMERIC: Error.NON_NUMERIC,
    DeltaResult.NO_MEMORY: Error.NO_MEMORY,
    DeltaResult.NOT_CREATED: Error.META_NOT_CREATED,
}


def drops_old_item(cmd: c.Store) -> bool:
    """Whether a store refused at its allocation (no memory, or too large for -I) drops the
    key's item, so that the write it failed leaves no stale value behind. memcached's text
    ``set`` does (process_update_command: NREAD_SET only), every ``ms`` whatever its mode and
    CAS (process_mset_command), and the binary set and setq with a CAS or not
    (process_bin_update tests the opcode); the other verbs keep the item."""
    if isinstance(cmd, b.BinSet):
        return b.QUIET.get(cmd.opcode, cmd.opcode) == b.SET
    return type(cmd) is c.Set or isinstance(cmd, c.MetaStore)


MB = 1024 * 1024
MAX_SLAB_CLASSES = 64  # memcached's MAX_NUMBER_OF_SLAB_CLASSES: class ids 0..63


#: what memcached's do_item_get logs of a lookup: (status, slab class, value length); see
#: `Handlers._seen`
Seen = tuple[int, int, int]
NOT_SEEN: Seen = (watch.NOT_FOUND, 0, 0)

# watch's item_store codes (memcached's store_item_type and NREAD_* orders: mcached.watch)
STORE_STATUS_CODE = {
    StoreResult.NOT_STORED: 0,
    StoreResult.STORED: 1,
    StoreResult.EXISTS: 2,
    StoreResult.NOT_FOUND: 3,
    StoreResult.TOO_LARGE: 4,
    StoreResult.NO_MEMORY: 5,
}
STORE_CMD_CODE = {
    b"add": watch.CMD_ADD,
    b"set": watch.CMD_SET,
    b"replace": watch.CMD_REPLACE,
    b"append": watch.CMD_APPEND,
    b"prepend": watch.CMD_PREPEND,
    b"cas": watch.CMD_CAS,
}

MODE_CMD_CODE = {
    StoreMode.ADD: watch.CMD_ADD,
    StoreMode.SET: watch.CMD_SET,
    StoreMode.REPLACE: watch.CMD_REPLACE,
    StoreMode.APPEND: watch.CMD_APPEND,
    StoreMode.PREPEND: watch.CMD_PREPEND,
    StoreMode.CAS: watch.CMD_CAS,
}

REASSIGN_OUTCOME: dict[ReassignResult, Outcome | Error] = {
    ReassignResult.OK: Outcome.OK,
    ReassignResult.RUNNING: Error.REASSIGN_BUSY,
    ReassignResult.BADCLASS: Error.REASSIGN_BAD_CLASS,
    ReassignResult.NOSPARE: Error.REASSIGN_NO_SPARE,
    ReassignResult.SAME: Error.REASSIGN_SAME,
}


#: the ``stats items`` rows memcached prints only while its LRU maintainer thread runs
MAINTAINER_ROWS = frozenset(
    (
        "number_hot number_warm number_cold age_hot age_warm evicted_active moves_to_cold"
        " moves_to_warm moves_within_lru direct_reclaims hits_to_hot hits_to_warm"
        " hits_to_cold hits_to_temp"
    ).split()
)

#: the commands whose miss of `LEGACY_KEY` serves the cluster's data (a get's, not a gets')
LEGACY_GETS = (c.Get, c.GetPart)

STREAM_AFTER = 64 * 1024  # a multiget's reply past this size is streamed (see the docstring)
# ... or past this many keys (a few ms of lookups), whatever their size: with small values
# 64 KB of keys and values was ~13,000 lookups in one turn, and a thousand clients sending
# such gets at once held every other client of their workers for tens of seconds
STREAM_KEYS = 1024
KEY_FLOOR = STREAM_AFTER // STREAM_KEYS  # what a key counts towards STREAM_AFTER, at least
STREAM_PIECES = 4 * STREAM_KEYS  # the same for the generator's pieces (3 to 5 a key)
#: what one key of a multiget costs while its reply streams, past the key's own bytes: a
#: bytes object's header (33 bytes, in 8-byte blocks) and the pointers of the lists that
#: hold it (the command's, and a stream's rest)
KEY_COST = 56


def keys_held(keys: list[bytes]) -> int:
    """What a multiget's `keys` hold while its reply streams (`Session.stream_held`): up to
    ~1.2 MB for a part of a long line (`parser.LINE_PART`) of two-byte keys."""
    return sum(map(len, keys)) + KEY_COST * len(keys)


def _copied_large(hits: list[Any]) -> bool:
    """A hit of a multiget's whole reply is a copy of `STREAM_AFTER` bytes or more (a value
    whose item could not be pinned): its turn ends with it (see `_hit_one`)."""
    return any(hit is not None and len(hit) == 3 and len(hit[0]) >= STREAM_AFTER for hit in hits)


def _tally_get(ctr: Counters, looked: int, hits: int) -> None:
    ctr.cmd_get += looked
    ctr.get_hits += hits
    ctr.get_misses += looked - hits


def _tally_touch(ctr: Counters, looked: int, hits: int) -> None:
    # memcached counts gat/gats as touches only (cmd_touch, touch_hits/misses)
    ctr.cmd_touch += looked
    ctr.touch_hits += hits
    ctr.touch_misses += looked - hits


class Handlers:
    def __init__(
        self,
        cache: Cache,
        settings: Settings,
        info: ServerInfo,
        clock: Clock | None = None,
        discovery: Discovery | None = None,
        authfile: Any = None,
        tls: Any = None,
        sasl: Any = None,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.info = info
        self.clock = clock or cache.clock
        self.discovery = discovery
        # -Y: an `mcached.auth.AuthFile` (check(user, password) -> bool); the parser only
        # sends `Auth` commands when it is set
        self.authfile = authfile
        # -S: an `mcached.sasl.Sasl` (the mechanisms and the password file); the binary
        # parser refuses every other opcode until it authenticated the connection
        self.sasl = sasl
        # -Z: the server's TLS context holder (refresh() -> None, or an error line)
        self.tls = tls
        self.detail = PrefixStats(settings.stat_key_prefix.encode(), settings.detail_enabled)
        # watch: what the attached watchers want logged (`mcached.watch` flags; 0, the
        # request path's one test, while nobody watches), and where events go (the
        # server's `mcached.server.eventlog.EventLog`)
        self.watching = 0
        self.events: Any = None
        self._dumping = False  # a `stats cachedump` walks (one at a time: `_cachedump`)
        self._table: dict[type[c.Command], Callable[[Any, Session], None]] = {
            c.Get: self.get,
            c.GetPart: self.get,
            c.Gets: self.gets,
            c.GetsPart: self.gets,
            c.Gat: self.gat,
            c.Gats: self.gat,
            c.Set: self.store,
            c.Add: self.store,
            c.Replace: self.store,
            c.Append: self.store,
            c.Prepend: self.store,
            c.Cas: self.store,
            c.TooLarge: self.too_large,
            c.MetaTooLarge: self.too_large,
            c.Incoming: self.incoming,
            c.BadDataChunk: self.bad_data_chunk,
            c.Delete: self.delete,
            c.Incr: self.delta,
            c.Decr: self.delta,
            c.Touch: self.touch,
            c.FlushAll: self.flush_all,
            c.Version: self.version,
            c.Verbosity: self.verbosity,
            c.Quit: self.quit,
            c.ShutdownCmd: self.shutdown,
            c.MetaGet: self.lookup,
            c.MetaValue: self.lookup_value,
            c.MetaSet: self.store,
            c.MetaAdd: self.store,
            c.MetaReplace: self.store,
            c.MetaAppend: self.store,
            c.MetaPrepend: self.store,
            c.MetaCas: self.store,
            c.MetaDelete: self.delete,
            c.MetaArith: self.delta,
            c.MetaNoop: self.noop,
            c.MetaDebug: self.debug,
            c.Stats: self.stats,
            c.CacheMemlimit: self.cache_memlimit,
            c.LruCrawler: self.lru_crawler,
            c.LruCrawlerTune: self.lru_crawler_tune,
            c.SlabsReassign: self.slabs_reassign,
            c.SlabsAutomove: self.slabs_automove,
            c.Lru: self.lru,
            c.ConfigGet: self.config_get,
            c.ConfigSet: self.config_set,
            c.ConfigDelete: self.config_delete,
            c.Invalid: self.invalid,
            c.Auth: self.auth,
            c.RefreshCerts: self.refresh_certs,
            c.Watch: self.watch,
            # the binary protocol: the same meanings (see mcached.protocol.binary)
            b.BinGet: self.gets,
            b.BinGetK: self.gets,
            b.BinGat: self.gat,
            b.BinGatK: self.gat,
            b.BinTouch: self.gat,
            b.BinSet: self.store,
            b.BinAdd: self.store,
            b.BinReplace: self.store,
            b.BinCas: self.store,
            b.BinAppend: self.store,
            b.BinPrepend: self.store,
            b.BinTooLarge: self.too_large,
            b.BinDelete: self.delete,
            b.BinIncr: self.delta,
            b.BinFlush: self.flush_all,
            b.BinNoop: self.noop,
            b.BinVersion: self.version,
            b.BinQuit: self.quit,
            b.BinStats: self.stats,
            b.BinInvalid: self.invalid,
            b.BinSaslList: self.sasl_list_mechs,
            b.BinSaslAuth: self.sasl_auth,
            b.BinConfigGet: self.config_get,
            b.BinConfigSet: self.config_set,
            b.BinConfigDelete: self.config_delete,
        }

    def dispatch_table(self) -> dict[type[c.Command], Callable[[Any, Session], None]]:
        """What serves each command type. The server looks a command's type up here and
        calls the handler itself (a wrapper that did the lookup cost a call per request)."""
        return self._table

    # ---- retrieval ----

    def get(self, cmd: c.Get, s: Session) -> None:
        keys = cmd.keys
        if len(keys) != 1 or self.detail.enabled or self.watching:
            self._get_many(cmd, s)
            return
        # Hot path: one key, the commonest request a cache serves: no loop, and one reply
        # call writes the whole reply (reply_one_value, reply_one_miss).
        key = keys[0]
        hit = self.cache.get_ref(key)
        ctr = s.counters
        ctr.cmd_get += 1
        if hit is None:
            if key == LEGACY_KEY and self.discovery is not None:
                # Auto discovery on engines before 1.4.14: the cluster's data as an item.
                # Checked on a miss only, so a hit pays nothing, a miss one comparison.
                cmd.reply_one_value(s.out, key, self.discovery.data(), 0)
                ctr.get_hits += 1
            else:
                ctr.get_misses += 1
                cmd.reply_one_miss(s.out, key)
            return
        ctr.get_hits += 1
        self._hit_one(cmd, key, hit, s)

    def _hit_one(self, cmd: c.Get | c.MetaValue, key: bytes, hit: Any, s: Session) -> None:
        """A one-key hit's reply (get, mg <key> v): a lent value (a `RefHit` of four
        fields) is given back once it is sent, a value in several chunks goes as their
        views; a large copy ends the turn."""
        if len(hit) == 4:  # lent from the cache's memory: given back once it is sent
            value = hit[0]
            if value.__class__ is list:  # a value in several chunks: their views
                value = Pieces(value)
            cmd.reply_one_value(s.out, key, value, hit[1])
            s.after_sent(partial(self.cache.unpin, hit[3]))
            return
        cmd.reply_one_value(s.out, key, hit[0], hit[1])
        if len(hit[0]) >= STREAM_AFTER:
            # a large value copied out (one chained over several chunks): end the turn
            # here, so a pipeline of such gets holds one copy at a time, not a turn's worth
            s.stream = iter(())

    def lookup_value(self, cmd: c.MetaValue, s: Session) -> None:
        """``mg <key> v``: `get`'s one-key path in the meta syntax (the same read, bump and
        counting); an item the meta protocol marks (stale, won), or anyone watching, takes
        `lookup`, the general path."""
        key = cmd.key
        hit = self.cache.get_value(key) if not self.watching else None
        if hit is NOT_PLAIN or self.watching:
            self.lookup(cmd.general(), s)
            return
        ctr = s.counters
        ctr.cmd_get += 1
        if hit is None:
            ctr.get_misses += 1
            cmd.reply_one_miss(s.out, key)
            return
        ctr.get_hits += 1
        self._hit_one(cmd, key, hit, s)

    def _lookup(self, lookup: Callable[[bytes], Hit | None], s: Session | None = None) -> Any:
        """What a multiget calls per key: `lookup`, telling `stats detail` of each hit or
        miss while it is on, and the watchers of fetches while they watch. Every occurrence
        of a key that repeats is looked up as it comes, as memcached's are: a reply that
        streams holds the value of the key it is at, not every value it served. (Each
        key's first hit was kept for its repeats until the multiget ended: copies outside
        -m and outside what a connection is counted to hold, so 40 clients that paused
        part way through ``get k0 ... k24 k0`` of 900 KB values held 620 MB.)"""
        if self.watching & watch.FETCHERS and s is not None:
            lookup = self._watched_lookup(lookup, s)
        if not self.detail.enabled:
            return lookup
        record = self.detail.record_get

        def recorded(key: bytes) -> Hit | None:
            hit: Hit | None = lookup(key)
            record(key, hit is not None)
            return hit

        return recorded

    def _retrieve(
        self,
        cmd: c.Get | c.Gat,
        s: Session,
        lookup: Callable[[bytes], Hit | RefHit | None],
        with_cas: bool,
        tally: Callable[[int, int], None],
    ) -> None:
        """Every key of a get/gets/gat/gats looked up and rendered in order; `tally(looked,
        hits)` once they all were (or the connection closed first). Up to `STREAM_AFTER`
        bytes of reply are made now; the rest becomes the connection's stream. (A get or
        gets while nobody watches or details takes `_retrieve_lent`.)"""
        self._values_into(cmd, s, lookup, with_cas, tally, cmd.keys)

    def _retrieve_lent(self, cmd: c.Get, s: Session, with_cas: bool) -> None:
        """`_retrieve` of a get/gets when nobody watches or details: the keys up to the
        reply's first `STREAM_AFTER` bytes (or `STREAM_KEYS` keys) looked up in one call of
        the cache's (`Cache.get_refs`) and rendered in one call of the command's
        (`reply_values`), the rest of the keys handed to `_values` as the connection's
        stream. Hot path (every multiget): the generator alone costs a resume and an append
        per piece, three to five pieces a key; a plain loop cut callgrind's count for a
        10-key get by a fifth, and the two calls for the whole run instead of two a key
        by 9 % more (215,576 -> 196,544 instructions). A reply of copies under
        `STREAM_AFTER` goes out as one piece, joined here, where the connection would add
        up and join the turn's pieces (~1 us of a 10-key get's 18). A key that repeats is
        looked up (and lent) again at each occurrence, as any key is."""
        keys = cmd.keys
        # every key's lookup in one call of the cache's, up to STREAM_AFTER bytes (each key
        # counts KEY_FLOOR at least: at most STREAM_KEYS lookups a turn)
        hits, size, lent = self.cache.get_refs(keys, STREAM_AFTER, KEY_FLOOR)
        looked = len(hits)
        found = looked - hits.count(None)
        if found < looked and self.discovery is not None and type(cmd) in LEGACY_GETS:
            found += self._legacy_hits(keys, hits)
        if lent:
            unpin = self.cache.unpin
            for token in lent:  # lent: given back once sent
                s.after_sent(partial(unpin, token))
            for i, hit in enumerate(hits):
                if hit is not None and hit[0].__class__ is list:  # several chunks' views
                    hits[i] = (Pieces(hit[0]), *hit[1:])
        out: Out = []  # this reply's pieces (then the connection's: see the end)
        cmd.reply_values(out, keys, hits, with_cas)
        _tally_get(s.counters, looked, found)
        if looked == len(keys):
            # made whole (hot path: every multiget of a few keys ends here)
            cmd.reply_end(out)
            if lent or size >= STREAM_AFTER:
                s.out += out  # views sent from their pages, or a long reply: never a joined copy
            else:
                s.out.append(b"".join(out))  # type: ignore[arg-type]  # copies, no Pieces
            if size >= STREAM_AFTER and _copied_large(hits):
                # end the turn here, as `_hit_one` does: a pipeline of such gets (gets,
                # binary gets) holds one copy at a time, not a turn's worth (-R of them:
                # 20 MB of 1 MB values per connection)
                s.stream = iter(())
            return
        # the rest as the connection's stream, looked up as the client reads
        s.out += out
        rest = keys[looked:]
        tally = partial(_tally_get, s.counters)
        s.stream = self._values(cmd, s, self.cache.get_ref, with_cas, tally, rest)
        s.stream_held = keys_held(keys)

    def _legacy_hits(self, keys: list[bytes], hits: list[Any]) -> int:
        """A multiget's misses of `LEGACY_KEY` served the cluster's data, as in `get`: how
        many."""
        assert self.discovery is not None
        served = 0
        for i, hit in enumerate(hits):
            if hit is None and keys[i] == LEGACY_KEY:
                hits[i] = (self.discovery.data(), 0, None)
                served += 1
        return served

    def _values_into(
        self,
        cmd: c.Get | c.Gat,
        s: Session,
        lookup: Callable[[bytes], Hit | RefHit | None],
        with_cas: bool,
        tally: Callable[[int, int], None],
        keys: list[bytes],
    ) -> None:
        """`_values` drained into the output up to `STREAM_AFTER`, the rest streamed."""
        out = s.out
        size = 0
        values = self._values(cmd, s, lookup, with_cas, tally, keys)
        for taken, piece in enumerate(values, 1):
            out.append(piece)
            size += len(piece)
            if size >= STREAM_AFTER or taken >= STREAM_PIECES:
                s.stream = values
                s.stream_held = keys_held(keys)
                return

    def _values(
        self,
        cmd: c.Get | c.Gat,
        s: Session,
        lookup: Callable[[bytes], Hit | RefHit | None],
        with_cas: bool,
        tally: Callable[[int, int], None],
        keys: list[bytes],
    ) -> Iterator[Piece]:
        """The pieces of the reply for `keys` of a retrieval, key by key (a generator: see
        `_retrieve`)."""
        lent: list[int] = []  # the pin of the value whose pieces are being yielded
        if lookup == self.cache.get_ref:
            lookup = self._lending(lookup, lent)
        cache_get = self._lookup(lookup, s)
        reply_value = cmd.reply_value
        discovery = self.discovery
        unpin = self.cache.unpin
        buf: Out = []
        hits = looked = 0
        try:
            for key in keys:
                hit = cache_get(key)
                looked += 1
                if hit is not None:
                    reply_value(buf, key, hit[0], hit[1], hit[2] if with_cas else None)
                    hits += 1
                elif discovery is not None and key == LEGACY_KEY and type(cmd) in LEGACY_GETS:
                    reply_value(buf, key, discovery.data(), 0, None)  # as in get()
                    hits += 1
                else:
                    cmd.reply_miss(buf, key)
                if buf:
                    yield from buf
                    buf.clear()
                if lent:
                    # Only now is every piece of the lent value in the connection's output,
                    # so only now may its pin be tied to the bytes queued (after_sent). Tied
                    # at the lookup, it went once the VALUE line before it was sent, when a
                    # pull stopped between the two: the value was then sent from memory a
                    # store could already be rewriting.
                    s.after_sent(partial(unpin, lent.pop()))
            cmd.reply_end(buf)
            yield from buf
        finally:
            # also when the connection closes mid-stream: what was looked up is counted, and
            # a value looked up whose pieces were not all taken is given back (the
            # connection dropped what it had queued before it closed its stream)
            for token in lent:
                unpin(token)
            tally(looked, hits)

    def _lending(self, get_ref: Callable[[bytes], Any], lent: list[int]) -> Callable[[bytes], Any]:
        """`get_ref` that notes each value it lends in `lent` (`_values` gives it back once
        the value's pieces are all queued and sent)."""

        def lend(key: bytes) -> Any:
            hit = get_ref(key)
            if hit is not None and len(hit) == 4:
                lent.append(hit[3])
                if hit[0].__class__ is list:  # a value in several chunks: their views
                    return Pieces(hit[0]), hit[1], hit[2], hit[3]
            return hit

        return lend

    def _get_many(self, cmd: c.Get, s: Session) -> None:
        if self.detail.enabled or self.watching:
            self._retrieve(cmd, s, self.cache.get_ref, False, partial(_tally_get, s.counters))
        else:
            self._retrieve_lent(cmd, s, False)  # hot path (every multiget): no tally made

    def gets(self, cmd: c.Gets, s: Session) -> None:
        if self.detail.enabled or self.watching:
            self._retrieve(cmd, s, self.cache.get_ref, True, partial(_tally_get, s.counters))
        else:
            self._retrieve_lent(cmd, s, True)

    def gat(self, cmd: c.Gat, s: Session) -> None:
        tally = partial(_tally_touch, s.counters)
        self._retrieve(cmd, s, self._touching(cmd), cmd.with_cas, tally)

    def _touching(self, cmd: c.Gat) -> Callable[[bytes], Hit | None]:
        """gat's lookup: each key read and touched, each occurrence of a repeated key again
        (as memcached's: an exptime already past expires the item at the first, and the
        next ones miss)."""
        exptime = cmd.exptime
        cache = self.cache

        def get_and_touch(key: bytes) -> Hit | None:
            return cache.get_and_touch(key, exptime)

        return get_and_touch

    def lookup(self, cmd: c.MetaGet, s: Session) -> None:
        """``mg``: one key, looked up with what its flags ask (see `Cache.lookup`). Counted
        as a get, or as a touch hit when it set a TTL (``T``); a miss is a get miss, with
        ``T`` or not, and an item it creates (``N``) is a hit (memcached's counting)."""
        state = self.cache.lookup(
            cmd.key,
            cmd.want_value,
            cmd.bump,
            True,
            cmd.touch,
            cmd.vivify,
            cmd.recache,
            cmd.recache_after_touch,
            cmd.vivify_last,
        )
        if self.watching & watch.FETCHERS:
            self._watch_meta_get(cmd.key, state, s)
        ctr = s.counters
        if state is None:
            ctr.cmd_get += 1
            ctr.get_misses += 1
            cmd.reply_one_miss(s.out, cmd.key)
            return
        if cmd.touch is None:
            ctr.cmd_get += 1
            ctr.get_hits += 1
        else:
            ctr.cmd_touch += 1
            ctr.touch_hits += 1
        cmd.reply_item(s.out, state)
        if state[0] is not None and state[3] >= STREAM_AFTER:
            # a large value copied out: end the turn, as `_hit_one` does (a pipeline of
            # such mg held -R copies a connection: 10 MB of 500 KB values)
            s.stream = iter(())

    def debug(self, cmd: c.MetaDebug, s: Session) -> None:
        """``me``: the item's state, changed in nothing (memcached counts it as cmd_meta)."""
        s.counters.cmd_meta += 1
        state = self.cache.lookup(cmd.key, False, False, False)
        if self.watching & watch.FETCHERS:
            self._watch_meta_get(cmd.key, state, s)
        if state is None:
            cmd.reply_one_miss(s.out, cmd.key)
        else:
            cmd.reply_item(s.out, state)

    def noop(self, cmd: c.MetaNoop, s: Session) -> None:
        cmd.reply(s.out, Outcome.NOOP)

    # ---- storage ----

    def store(self, cmd: c.Store, s: Session) -> None:
        mode = STORE_MODE[type(cmd)]
        seen = self._seen(cmd.key) if self.watching else None
        if cmd.extended:
            result, cas = self.cache.store_ex(
                mode,
                cmd.key,
                cmd.value,
                cmd.flags,
                cmd.exptime,
                cmd.cas_unique,
                cmd.invalidate,  # type: ignore[attr-defined]
                cmd.binary,  # type: ignore[attr-defined]
            )
        else:
            result = self.cache.store(
                mode, cmd.key, cmd.value, cmd.flags, cmd.exptime, cmd.cas_unique
            )
            cas = 0
        self._stored(cmd, s, mode, result, cas, seen)

    def incoming(self, cmd: c.Incoming, s: Session) -> None:
        """A large value still arriving, of any storage command in any syntax: reserve its
        memory in the cache (an append's or prepend's own bytes, as memcached allocates an
        item for them) and have the session receive it there (see `Session.receive`); the
        store finishes in `_received`, through the same storage call as `store`'s."""
        store = cmd.store
        res = self.cache.reserve(store.key, cmd.vlen, store.flags)
        if isinstance(res, Reservation):
            s.receive(
                res.views,
                cmd.vlen,
                partial(self._received, store, s, res),
                partial(self.cache.abandon, res),
                cmd.tail,
                partial(self.cache.grow, res),
            )
        else:  # no room: the bytes are dropped as they come, then the error is answered
            s.receive(
                None, cmd.vlen, partial(self._not_received, store, s, res, cmd.vlen), None, cmd.tail
            )

    def _received(self, cmd: c.Store, s: Session, res: Reservation, terminated: bool) -> None:
        # With no chunk for the rest of the value (`res.failed`), memcached answered at once
        # and swallowed the rest, its end unchecked: the commit answers NO_MEMORY_READING.
        if not terminated and not res.failed:
            self.bad_data_chunk(cmd, s, res)
            return
        mode = STORE_MODE[type(cmd)]
        seen = self._seen(cmd.key) if self.watching else None
        if cmd.extended:
            result, cas = self.cache.commit_ex(
                res,
                mode,
                cmd.exptime,
                cmd.cas_unique,
                cmd.invalidate,  # type: ignore[attr-defined]
                cmd.binary,  # type: ignore[attr-defined]
            )
        else:
            result = self.cache.commit(res, mode, cmd.exptime, cmd.cas_unique)
            cas = 0
        self._stored(cmd, s, mode, result, cas, seen, res.nbytes)

    def _not_received(
        self, cmd: c.Store, s: Session, result: StoreResult, vlen: int, terminated: bool
    ) -> None:
        if not terminated:
            self.bad_data_chunk(cmd, s)
            return
        mode = STORE_MODE[type(cmd)]
        seen = self._seen(cmd.key) if self.watching else None
        self._stored(cmd, s, mode, result, 0, seen, vlen)

    def _stored(
        self,
        cmd: c.Store,
        s: Session,
        mode: StoreMode,
        result: StoreResult,
        cas: int = 0,
        seen: Seen | None = None,
        vlen: int = -1,
    ) -> None:
        """What a storage command came to: its counters and its reply (`cas`: the new
        item's, for the syntaxes that report it; `seen`: what `_seen` found before the
        store, when fetchers are watched; `vlen`: the value's length when it was received
        into the cache's memory, not into ``cmd.value``)."""
        if result in UNALLOCATED:  # one set lookup: the common outcomes pay no more
            if result is StoreResult.NO_MEMORY_READING:
                # memcached had the item's header, not a chunk for its value: it answers
                # while reading and swallows the rest (conn_nread); no store ran, so nothing
                # is counted or logged and the key's item stays
                cmd.reply_stored(s.out, Error.NO_MEMORY_READING, 0)
            else:
                self._refused(cmd, s, mode, result, seen, vlen)
            return
        ctr = s.counters
        ctr.cmd_set += 1
        if mode is StoreMode.CAS:
            if result is StoreResult.STORED:
                ctr.cas_hits += 1
            elif result is StoreResult.EXISTS:
                ctr.cas_badval += 1
            elif result is StoreResult.NOT_FOUND:
                ctr.cas_misses += 1
        if self.detail.enabled and cmd.detailed:
            self.detail.record_set(cmd.key)
        if self.watching:
            self._watch_store(cmd, mode, result, s, seen, vlen)
        cmd.reply_stored(s.out, STORE_OUTCOME[result], cas)

    def _refused(
        self,
        cmd: c.Store,
        s: Session,
        mode: StoreMode,
        result: StoreResult,
        seen: Seen | None,
        vlen: int,
    ) -> None:
        """A store refused at its allocation (NO_MEMORY; TOO_LARGE when the storage, not the
        parser, found it over -I), as memcached refuses it before reading its value: not a
        cmd_set (memcached counts a set once its item is allocated); store_no_memory or
        store_too_large in text and meta, neither in binary (process_bin_update counts
        nothing); and the key's item dropped when `drops_old_item` says so."""
        if not isinstance(cmd, b.BinaryReplies):
            if result is StoreResult.NO_MEMORY:
                s.counters.store_no_memory += 1
            else:
                s.counters.store_too_large += 1
        if self.detail.enabled and cmd.detailed:
            self.detail.record_set(cmd.key)
        if drops_old_item(cmd):
            self.cache.unlink(cmd.key)
        if self.watching:
            self._watch_store(cmd, mode, result, s, seen, vlen)
        cmd.reply_stored(s.out, STORE_OUTCOME[result], 0)

    def too_large(self, cmd: c.TooLarge, s: Session) -> None:
        if not isinstance(cmd, b.BinaryReplies):  # memcached's binary stores count nothing
            s.counters.store_too_large += 1
        if self.detail.enabled and cmd.detailed:  # recorded before the allocation fails
            self.detail.record_set(cmd.key)
        if self.watching & watch.MUTATIONS:
            cmd_code = STORE_CMD_CODE.get(cmd.mode, 0)
            self.events.item_store(4, cmd_code, cmd.key, 0, 0, 0, getattr(s, "fd", -1))
        if cmd.mode == b"set" or isinstance(cmd, c.MetaTooLarge):
            # memcached drops the old value so a failed set (an ms of any mode) never
            # leaves stale data behind (it looks the item up to do so: an item_get line
            # after the item_store one)
            if self.watching & watch.FETCHERS:
                self._log_seen(cmd.key, self._seen(cmd.key), s)
            self.cache.unlink(cmd.key)
        cmd.reply(s.out, Error.TOO_LARGE)

    def bad_data_chunk(
        self, cmd: c.BadDataChunk | c.Store, s: Session, res: Reservation | None = None
    ) -> None:
        """A data block not ended by \\r\\n: counted as a set, in the item's class too as
        memcached counts it (it allocated the item first), unless no room was had for it."""
        s.counters.cmd_set += 1
        if res is not None:  # received into place: its chunks go back, counted there
            self.cache.abandon(res, bad_chunk=True)
        elif isinstance(cmd, c.BadDataChunk):  # (a Store: its value was not received)
            self.cache.count_bad_chunk(cmd.key, cmd.flags, cmd.vlen)
        cmd.reply(s.out, Error.BAD_DATA_CHUNK)

    # ---- other keyed commands ----

    def delete(self, cmd: c.Delete, s: Session) -> None:
        if self.detail.enabled and cmd.detailed:
            self.detail.record_delete(cmd.key)
        if self.watching & watch.FETCHERS:  # memcached's delete looks the item up first
            self._log_seen(cmd.key, self._seen(cmd.key), s)
        if cmd.extended:
            result = self.cache.delete_ex(
                cmd.key,
                cmd.cas,  # type: ignore[attr-defined]
                cmd.invalidate,  # type: ignore[attr-defined]
                cmd.touch,  # type: ignore[attr-defined]
            )
        elif self.cache.delete(cmd.key):
            result = DeleteResult.DELETED
        else:
            result = DeleteResult.NOT_FOUND
        # memcached: a CAS that did not match is a miss in md (not in the binary delete);
        # an invalidation counts nothing
        if result is DeleteResult.DELETED:
            s.counters.delete_hits += 1
            if self.watching & watch.DELETIONS:
                self.events.deleted(2 if cmd.extended else 1, cmd.key, 0, 0)  # md or delete
        elif result is DeleteResult.NOT_FOUND or (
            result is DeleteResult.EXISTS and cmd.cas_miss_counts
        ):
            s.counters.delete_misses += 1
        cmd.reply(s.out, DELETE_OUTCOME[result])

    def delta(self, cmd: c.Incr, s: Session) -> None:
        incr = cmd.incr
        item = None
        if self.watching & watch.FETCHERS:  # memcached's do_add_delta looks the item up first
            self._log_seen(cmd.key, self._seen(cmd.key), s)
        if cmd.extended:
            m: Any = cmd  # a MetaArith
            result, item = self.cache.delta_ex(
                cmd.key, incr, cmd.delta, m.cas, m.vivify, m.initial, m.touch, m.vivify_last
            )
            value = 0
        elif incr:
            result, value = self.cache.incr(cmd.key, cmd.delta)
        else:
            result, value = self.cache.decr(cmd.key, cmd.delta)
        ctr = s.counters
        if result is DeltaResult.OK:
            if item is None:
                if incr:
                    ctr.incr_hits += 1
                else:
                    ctr.decr_hits += 1
                cmd.reply_number(s.out, value)
                return
            if not item[CREATED]:  # a counter created on a miss counts nothing
                if incr:
                    ctr.incr_hits += 1
                else:
                    ctr.decr_hits += 1
            elif self.watching:
                self._watch_created(cmd, item, s)
            cmd.reply_item(s.out, item)
            return
        if result is DeltaResult.NOT_FOUND:
            if incr:
                ctr.incr_misses += 1
            else:
                ctr.decr_misses += 1
        cmd.reply(s.out, DELTA_OUTCOME[result])

    def touch(self, cmd: c.Touch, s: Session) -> None:
        s.counters.cmd_touch += 1
        if self.watching & watch.FETCHERS:  # memcached's do_item_touch is a do_item_get
            self._log_seen(cmd.key, self._seen(cmd.key), s)
        if self.cache.touch(cmd.key, cmd.exptime):
            s.counters.touch_hits += 1
            outcome = Outcome.TOUCHED
        else:
            s.counters.touch_misses += 1
            outcome = Outcome.NOT_FOUND
        cmd.reply(s.out, outcome)

    # ---- server-wide ----

    def flush_all(self, cmd: c.FlushAll, s: Session) -> None:
        s.counters.cmd_flush += 1
        if not self.settings.flush_enabled:
            outcome: Outcome | Error = Error.FLUSH_DISABLED
        elif cmd.delay is None:
            outcome = Error.BAD_EXPTIME
        else:
            self.cache.flush_all(cmd.delay)
            # memcached's oldest_live (stats settings' oldest): the second before the
            # flush's time with CAS uniques, the flush's time without
            clock = self.clock
            oldest = clock.realtime(cmd.delay) if cmd.delay > 0 else clock.now()
            self._tune({"oldest_live": oldest - 1 if self.settings.cas_enabled else oldest})
            outcome = Outcome.OK
        cmd.reply(s.out, outcome)

    def version(self, cmd: c.Version, s: Session) -> None:
        cmd.reply_version(s.out, MEMCACHED_VERSION)

    def verbosity(self, cmd: c.Verbosity, s: Session) -> None:
        if cmd.level is not None:
            level = min(cmd.level, 2)  # memcached's MAX_VERBOSITY_LEVEL
            self.settings = self.settings.replace(verbose=level)
            self.info.set_verbosity(level)
        cmd.reply(s.out, Outcome.OK)

    def quit(self, cmd: c.Quit, s: Session) -> None:
        cmd.reply(s.out, Outcome.OK)  # the binary protocol's quit answers (quitq does not)
        raise CloseConnection("quit")

    def shutdown(self, cmd: c.ShutdownCmd, s: Session) -> None:
        if not self.settings.shutdown_command:
            cmd.reply(s.out, Error.SHUTDOWN_DISABLED)
        elif cmd.mode is None:
            cmd.reply(s.out, Error.SHUTDOWN_MODE)
        else:
            raise Shutdown(graceful=cmd.mode == b"graceful")

    def cache_memlimit(self, cmd: c.CacheMemlimit, s: Session) -> None:
        mb = cmd.megabytes
        if mb is None:
            outcome: Outcome | Error = Error.UNKNOWN_COMMAND
        elif mb < 8:
            outcome = Error.MEMLIMIT_TOO_SMALL
        elif mb > 1_000_000_000:
            outcome = Error.MEMLIMIT_NOT_MB
        elif self.settings.large_pages:
            # memcached with -L preallocates its memory and adjusts no limit (its mem_base):
            # refused as it refuses it, though mcached's arena could follow
            outcome = Error.MEMLIMIT_FAILED
        elif self.cache.set_memory_limit(mb * MB):
            self.settings = self.settings.replace(memory_limit=mb * MB)
            outcome = Outcome.OK
        else:
            outcome = Error.MEMLIMIT_FAILED
        cmd.reply(s.out, outcome)

    def lru_crawler(self, cmd: c.LruCrawler, s: Session) -> None:
        """``lru_crawler metadump <all|hash|ids>``: one line per live item (memcached-tool
        dump reads it); ``lru_crawler crawl <all|ids>``: reclaim expired items now.

        ``hash`` asks memcached to walk its hash table rather than its LRUs, which can skip or
        repeat items they reorder mid-walk; mcached always walks its item tables, so it is
        ``all``. memcached only dumps that way: ``crawl hash`` is its "unknown error".

        ``lru_crawler enable|disable`` turns the crawler on or off at run time, in every
        worker (memcached: enabling a running crawler is an error, disabling is always OK);
        while it is off, crawl and metadump are refused, as in memcached."""
        sub, which = cmd.args
        if sub in (b"enable", b"disable"):
            on = sub == b"enable"
            self.info.refresh_settings()
            if on and self.settings.lru_crawler:
                cmd.reply(s.out, Error.CRAWLER_NOT_STARTED)
                return
            self.settings = self.settings.replace(lru_crawler=on)
            self.info.set_lru_crawler(on)
            cmd.reply(s.out, Outcome.OK)
            return
        self.info.refresh_settings()
        if not self.settings.lru_crawler:
            cmd.reply(s.out, Error.CRAWLER_DISABLED)
            return
        if sub == b"metadump" and not self.settings.dump_enabled:
            cmd.reply(s.out, Error.METADUMP_DISABLED)
            return
        if sub == b"metadump" and s.stacked:
            # memcached's resp_has_stack: replies of earlier commands still unsent (it
            # transmits at once after a get or mn: a metadump right behind one is served)
            cmd.reply(s.out, Error.METADUMP_PIPELINED)
            return
        classes: set[int] | None = None
        if which == b"hash":
            if sub == b"crawl":
                cmd.reply(s.out, Error.CRAWLER_FAILED)
                return
        elif which != b"all":
            classes = class_ids(which)
            if classes is None:
                cmd.reply(s.out, Error.BAD_CLASS)
                return
            if not classes:
                cmd.reply(s.out, Error.CRAWLER_NO_CLASS)
                return
        if sub == b"crawl":
            # the crawler runs the pass (memcached's crawler thread), this worker answers
            asked = self.cache.ask_crawl(classes, limit=self.settings.lru_crawler_tocrawl)
            cmd.reply(s.out, Outcome.OK if asked else Error.CRAWLER_BUSY)
            return
        if self.cache.crawl_busy:  # memcached's crawler runs one job at a time
            cmd.reply(s.out, Error.CRAWLER_BUSY)
            return
        if s.datagram:
            # memcached hands the connection to its crawler, which cannot write to a UDP
            # socket: nothing is sent. (Served, a dump of any size was one datagram reply,
            # built whole and never giving way: a hunt, 29 MB a dump of 400,000 items.)
            return
        s.stream = self._metadump(cmd, classes)

    def lru_crawler_tune(self, cmd: c.LruCrawlerTune, s: Session) -> None:
        """``lru_crawler sleep|tocrawl <n>``: for the whole daemon (the crawler reads both
        before each sweep; ``tocrawl`` also bounds ``lru_crawler crawl``)."""
        self.settings = self.settings.replace(**{cmd.name: cmd.value})
        self.info.tune_crawler(cmd.name, cmd.value)
        cmd.reply(s.out, Outcome.OK)

    def _metadump(self, cmd: c.LruCrawler, classes: set[int] | None) -> Iterator[Piece]:
        """A metadump's reply, a batch of rows at a time (a generator: the connection's
        stream). A batch is rendered only when the client has read what came before it
        (the connection pulls while little is unsent), so a dump of any size held by a
        client that never reads costs a batch or two, as memcached's crawler writes into
        a fixed buffer; and a step that found nothing gives way, so the worker serves its
        other connections between steps however few items the dump lists."""
        base = self.clock.process_started  # server time -> Unix time
        buf: Out = []
        for batch in self.cache.metadump_batches(classes=classes):
            cmd.reply_metadump(
                buf,
                [
                    (key, exptime + base if exptime else -1, atime + base, cas, fetched, size, cid)
                    for key, exptime, atime, cas, fetched, size, cid in batch
                ],
            )
            if buf:
                yield from buf
                buf.clear()
            else:
                yield GIVE_WAY
        cmd.reply_end(buf)
        yield from buf

    # ---- the auto-discovery endpoint (ElastiCache's config verbs; only the key "cluster") ----

    def config_get(self, cmd: c.ConfigGet, s: Session) -> None:
        if self.discovery is None or cmd.key != CLUSTER_KEY:
            cmd.reply(s.out, Error.UNKNOWN_COMMAND)
        else:
            cmd.reply_config(s.out, cmd.key, self.discovery.data())

    def config_set(self, cmd: c.ConfigSet, s: Session) -> None:
        """Serve this data instead of the source's until ``config delete`` (only with
        --enable-config-set: anyone who reaches the port could otherwise repoint every
        client). The nodes are taken as written: a worker never waits on a name lookup."""
        if self.discovery is None or cmd.key != CLUSTER_KEY:
            outcome: Outcome | Error = Error.UNKNOWN_COMMAND
        elif not self.settings.config_set_enabled:
            outcome = Error.CONFIG_SET_DISABLED
        else:
            try:
                version, nodes = parse_data(cmd.value)
            except ValueError as exc:
                cmd.reply(s.out, Error.BAD_CLUSTER_CONFIG, str(exc))
                return
            try:
                self.discovery.override(version, nodes)
            except TooManyNodes as exc:
                cmd.reply(s.out, Error.BAD_CLUSTER_CONFIG, str(exc))
                return
            outcome = Outcome.STORED
        cmd.reply(s.out, outcome)

    def config_delete(self, cmd: c.ConfigDelete, s: Session) -> None:
        """Drop the ``config set`` override: the source (or this node alone) is served again."""
        if self.discovery is None or cmd.key != CLUSTER_KEY:
            outcome: Outcome | Error = Error.UNKNOWN_COMMAND
        elif not self.settings.config_set_enabled:
            outcome = Error.CONFIG_DELETE_DISABLED
        elif self.discovery.drop_override():
            outcome = Outcome.DELETED
        else:
            outcome = Outcome.NOT_FOUND
        cmd.reply(s.out, outcome)

    def auth(self, cmd: c.Auth, s: Session) -> None:
        """-Y: the ``set`` exchange of an unauthenticated connection. STORED lets it in;
        a wrong user or password keeps it out and open, as memcached does. The exchange
        cannot say noreply: its replies are always sent."""
        ctr = s.counters
        ctr.auth_cmds += 1
        if self.authfile is not None and self.authfile.check(cmd.user, cmd.password):
            cmd.grant()
            cmd.reply(s.out, Outcome.STORED)
        else:
            ctr.auth_errors += 1
            cmd.reply(s.out, Error.AUTH_FAILED)

    def sasl_list_mechs(self, cmd: b.BinSaslList, s: Session) -> None:
        """The mechanisms. As every SASL command in memcached (init_sasl_conn), it takes
        the connection's authentication away: only a new exchange lets it in again."""
        cmd.state.authenticated = False
        cmd.reply_mechs(s.out, self.sasl.mechs())

    def sasl_auth(self, cmd: b.BinSaslAuth, s: Session) -> None:
        """-S: SASL_AUTH starts a mechanism, SASL_STEP answers its challenge. A success lets
        the connection in; a failure keeps it out and open, whether it was in before or
        not (memcached's init_sasl_conn). memcached counts each ending (success or failure)
        in auth_cmds, each failure in auth_errors; a challenge sent counts nothing."""
        from mcached.sasl import Result

        state = cmd.state
        state.authenticated = False
        if cmd.step:
            result, data = self.sasl.step(state, cmd.data)
        else:
            result, data = self.sasl.start(state, cmd.mech, cmd.data)
        if result is Result.CONTINUE:
            cmd.reply_challenge(s.out, data)
            return
        ctr = s.counters
        ctr.auth_cmds += 1
        if result is Result.OK:
            state.authenticated = True
            cmd.reply_authenticated(s.out)
        else:
            ctr.auth_errors += 1
            cmd.reply(s.out, Error.AUTH_FAILED)

    def refresh_certs(self, cmd: c.RefreshCerts, s: Session) -> None:
        """Reload the TLS certificate, key and CA files for new connections."""
        if self.tls is None:
            cmd.reply(s.out, Error.TLS_NOT_ENABLED)
            return
        error = self.tls.refresh()
        if error:
            cmd.reply(s.out, Error.CERTS_NOT_LOADED, error)
        else:
            self.info.tls_refreshed()  # every worker loads them too
            cmd.reply(s.out, Outcome.OK)

    # ---- watch (memcached's logger.c: mcached.watch, mcached.server.eventlog) ----

    def watch(self, cmd: c.Watch, s: Session) -> None:
        """``watch [<word>...]``: answer OK, then the connection streams the log lines its
        words ask for (its worker takes it over: `StartWatch`)."""
        flags = watch.parse(cmd.args)
        if not self.settings.watch_enabled:
            cmd.reply(s.out, Error.WATCH_DISABLED)
        elif s.stacked:  # as a metadump (see there)
            cmd.reply(s.out, Error.WATCH_PIPELINED)
        elif flags is None:
            cmd.reply(s.out, Error.UNKNOWN_COMMAND)
        elif self.info.watchers() >= watch.WATCHER_LIMIT:
            cmd.reply(s.out, Error.WATCHER_TOO_MANY)
        else:
            cmd.reply(s.out, Outcome.OK)
            raise StartWatch(flags)

    def _watched_lookup(
        self, lookup: Callable[[bytes], Hit | None], s: Session
    ) -> Callable[[bytes], Hit | None]:
        """`lookup`, logging an item_get for each key (memcached logs in do_item_get)."""
        events = self.events
        cfd = getattr(s, "fd", -1)
        class_of = self.cache.class_of
        cas_on = self.settings.cas_enabled

        def logged(key: bytes) -> Hit | None:
            hit = lookup(key)
            if hit is None:
                events.item_get(watch.NOT_FOUND, key, 0, 0, cfd)
            else:
                value, flags = hit[0], hit[1]  # a Hit, or a RefHit (a lent value)
                n = len(value)
                clsid = class_of(item_total_size(len(key), flags, n, cas_on))
                events.item_get(watch.FOUND, key, clsid, n, cfd)
            return hit

        return logged

    def _watch_meta_get(self, key: bytes, item: Any, s: Session) -> None:
        """``mg``'s item_get line, as `_watched_lookup` writes a get's: memcached's
        do_item_get logs it, so an item ``N`` creates is first a miss."""
        cfd = getattr(s, "fd", -1)
        if item is None or item[CREATED]:
            self.events.item_get(watch.NOT_FOUND, key, 0, 0, cfd)
        else:
            self.events.item_get(watch.FOUND, key, item[CLSID], item[SIZE], cfd)

    def _seen(self, key: bytes) -> Seen | None:
        """While fetchers are watched, what memcached's ``do_item_get`` would log of `key` now:
        the lookup inside a store, a delta, a touch or a delete, which memcached logs as an
        item_get line as it logs a get's (an expired or flushed item: not_found, as
        `_watched_lookup` logs a get of one). None while they are not."""
        if not self.watching & watch.FETCHERS:
            return None
        got = self.cache.peek(key)
        return NOT_SEEN if got is None else (watch.FOUND, got[0], got[1])

    def _log_seen(self, key: bytes, seen: Seen | None, s: Session) -> None:
        if seen is not None:
            self.events.item_get(seen[0], key, seen[1], seen[2], getattr(s, "fd", -1))

    def _watch_created(self, cmd: c.Incr, item: Any, s: Session) -> None:
        """A counter a delta's miss created (``ma`` with ``N``, a binary incr with an initial
        value): memcached stores it through do_store_item as an add, which logs its own
        lookup (a miss) and an item_store line. ``ma`` gives it its TTL after the store (the
        line says 0), the binary incr when it allocates it."""
        cfd = getattr(s, "fd", -1)
        if self.watching & watch.FETCHERS:
            self.events.item_get(watch.NOT_FOUND, cmd.key, 0, 0, cfd)
        if self.watching & watch.MUTATIONS:
            made = ItemState(*item)
            ttl = 0
            if isinstance(cmd, b.BinIncr) and made.vivify_ttl is not None:
                ttl = made.vivify_ttl & 0xFFFFFFFF
            self.events.item_store(1, watch.CMD_ADD, cmd.key, ttl, made.clsid, made.size, cfd)

    def _watch_store(
        self,
        cmd: c.Store,
        mode: StoreMode,
        result: StoreResult,
        s: Session,
        seen: Seen | None,
        vlen: int,
    ) -> None:
        """A store's lines: the item_get of its lookup (when fetchers are watched: `seen`)
        and its item_store (when mutations are). A store that found no memory or no room
        fails in memcached at its allocation, before any lookup: its item_store comes
        first, then the lookup that drops the old value (`drops_old_item`)."""
        failed = result is StoreResult.TOO_LARGE or result is StoreResult.NO_MEMORY
        if not failed:
            self._log_seen(cmd.key, seen, s)
        if self.watching & watch.MUTATIONS:
            self._log_store(cmd, mode, result, s, vlen)
        if failed and drops_old_item(cmd):
            self._log_seen(cmd.key, seen, s)

    def _log_store(
        self, cmd: c.Store, mode: StoreMode, result: StoreResult, s: Session, vlen: int
    ) -> None:
        """An item_store line (memcached logs in do_store_item): the new item's class and
        size, and the seconds it has to live (memcached's unsigned ``exptime - now``)."""
        n = len(cmd.value) if vlen < 0 else vlen
        ttl = 0
        if result is StoreResult.TOO_LARGE or result is StoreResult.NO_MEMORY:
            clsid = n = 0  # memcached logs a failed allocation with no item
        elif result is StoreResult.STORED and (
            mode is StoreMode.APPEND or mode is StoreMode.PREPEND
        ):
            # the item it made: both values, the old item's exptime (a watcher's rare path)
            item = self.cache.lookup(cmd.key, False, False, False)
            if item is not None:
                made = ItemState(*item)
                n, clsid = made.size, made.clsid
                ttl = 0 if made.ttl is None else made.ttl & 0xFFFFFFFF
            else:  # already replaced by another client
                clsid = 0
        else:
            total = item_total_size(len(cmd.key), cmd.flags, n, self.settings.cas_enabled)
            clsid = self.cache.class_of(total)
            if cmd.exptime:
                ttl = (self.clock.realtime(cmd.exptime) - self.clock.now()) & 0xFFFFFFFF
        self.events.item_store(
            STORE_STATUS_CODE[result],
            MODE_CMD_CODE[mode],  # ms logs its mode, as memcached's comm
            cmd.key,
            ttl,
            clsid,
            n,
            getattr(s, "fd", -1),
        )

    def invalid(self, cmd: c.Invalid, s: Session) -> None:
        before = cmd.before
        if before is not None:
            # the keys before a bad one: looked up for their effects and counts, as
            # memcached does, their reply dropped (copies, never lent values)
            if isinstance(before, c.Gat):
                lookup = self._touching(before)
                tally = partial(_tally_touch, s.counters)
            else:
                lookup = self.cache.get
                tally = partial(_tally_get, s.counters)
            for _ in self._values(before, s, lookup, False, tally, before.keys):
                pass
        cmd.reply(s.out, cmd.error)

    # ---- stats ----

    def stats(self, cmd: c.Stats, s: Session) -> None:
        """``stats [group]``: memcached reads the group's name and nothing after it (``stats
        items foo`` is ``stats items``), but for ``detail`` and ``cachedump``."""
        args = cmd.args
        sub = args[0] if args else b""
        if sub == b"":
            cmd.reply_stats(s.out, self.general_stats())
        elif sub == b"reset":
            self.reset_stats()
            cmd.reply(s.out, Outcome.RESET)
        elif sub == b"settings":
            self.info.refresh_settings()  # what other workers changed at run time
            cmd.reply_stats(s.out, stats_settings(self.settings))
        elif sub == b"items":
            cmd.reply_stats(s.out, self.items_stats())
        elif sub == b"slabs":
            cmd.reply_stats(s.out, self.slabs_stats())
        elif sub == b"sizes":
            since = self.info.sizes_since()
            if since is None:
                cmd.reply_stats(s.out, [("sizes_status", "disabled")])
            else:
                s.stream = self._sizes(cmd, since)
        elif sub in (b"sizes_enable", b"sizes_disable"):
            # memcached's reply to these has no END (get_stats' groups end their own)
            cmd.reply_stats(s.out, self.sizes_switch(sub == b"sizes_enable"), end=False)
        elif sub == b"conns":
            cmd.reply_stats(s.out, self.info.conns_stats(s))  # s: in conn_parse_cmd
        elif sub == b"extstore" and not isinstance(cmd, b.BinStats):
            # memcached (built with extstore, as Debian's is) run without -o ext_path has
            # no figures to show: its END alone
            cmd.reply_stats(s.out, [])
        elif sub == b"detail":
            self.stats_detail(cmd, args[1:], s)
        elif sub == b"cachedump":
            self.stats_cachedump(cmd, args[1:], s)
        elif sub == b"cluster" and len(args) == 1 and self.discovery is not None:
            # mcached's own: the membership and each node's health as this node sees it
            cmd.reply_stats(s.out, self.discovery.health_rows())
        elif sub == b"latency" and len(args) == 1:
            # mcached's own: per verb, how many and how long (see mcached.latency)
            cmd.reply_stats(s.out, latency_rows(self.info.latency()))
        else:
            cmd.reply(s.out, Error.UNKNOWN_COMMAND)

    def stats_cachedump(self, cmd: c.Stats, args: list[bytes], s: Session) -> None:
        """``stats cachedump <class> <limit>``: the class's items, newest first (libmemcached's
        memcdump lists keys with it). memcached's checks, in its order: -X, two numbers
        (safe_strtoul: no sign), a class below its 64 (an empty class lists nothing)."""
        if not self.settings.dump_enabled:
            cmd.reply(s.out, Error.CACHEDUMP_DISABLED)
            return
        if len(args) < 2:
            cmd.reply(s.out, Error.BAD_COMMAND_LINE)
            return
        clsid, limit = (strtoul32(a) for a in args[:2])
        if clsid is None or limit is None:
            cmd.reply(s.out, Error.BAD_FORMAT)
        elif clsid >= MAX_SLAB_CLASSES:
            cmd.reply(s.out, Error.ILLEGAL_SLAB_ID)
        else:
            base = self.clock.process_started  # server time -> Unix time
            size = cmd.reply_cachedump_size

            def cost(nkey: int, nbytes: int, exptime: int) -> int:
                return size(nkey, nbytes, exptime + base if exptime else 0)

            s.stream = self._cachedump(cmd, clsid, limit, cost)

    def _cachedump(
        self, cmd: c.Stats, clsid: int, limit: int, cost: Callable[[int, int, int], int]
    ) -> Iterator[Piece]:
        """A cachedump's reply (the connection's stream): the walk gives way between its
        steps, so the worker serves its other connections while it walks a class of any
        size; only the newest rows the reply can hold are kept meanwhile. One walk at a
        time in a process (others wait their turn, giving way): a walk holds a few times
        its reply's rows, and clients that ask for many at once would hold that many."""
        while self._dumping:
            yield GIVE_WAY
        self._dumping = True
        try:
            rows: list[tuple[bytes, int, int]] = []
            for step in self.cache.cachedump_steps(clsid, limit, cmd.cachedump_room, cost):
                if step is None:
                    yield GIVE_WAY
                else:
                    rows = step
        finally:
            self._dumping = False  # before the reply, which a client may never read
        base = self.clock.process_started
        buf: Out = []
        cmd.reply_cachedump(
            buf, ((key, n, exptime + base if exptime else 0) for key, n, exptime in rows)
        )
        del rows, step  # the reply alone is held while a client that may never read has it
        yield from buf

    def stats_detail(self, cmd: c.Stats, args: list[bytes], s: Session) -> None:
        """``stats detail on|off|dump``: per-prefix counters (keys split at ``-D``)."""
        word = args[0] if args else b""  # memcached reads this one word, and no more
        if word in (b"on", b"off"):
            self.detail.enabled = word == b"on"
            self.settings = self.settings.replace(detail_enabled=self.detail.enabled)
            self.info.set_detail(self.detail.enabled)  # every worker
            cmd.reply(s.out, Outcome.OK)
        elif word == b"dump":
            cmd.reply_prefix_stats(s.out, self.detail.rows(self.info.detail_table()))
        else:
            cmd.reply(s.out, Error.DETAIL_USAGE)

    def general_stats(self) -> list[tuple[str, object]]:
        from mcached.stats import sum_counters

        values: dict[str, object] = dict.fromkeys(ABSENT_ROWS, 0)
        values.update(self.info.general_stats())  # pid, rusage, connections...
        values["version"] = MEMCACHED_VERSION
        values["pointer_size"] = 64
        total = sum_counters(self.info.all_counters())
        for name, value in vars(total).items():
            values[name] = value
        values.update(self.cache.stats())
        values["log_watchers"] = self.info.watchers()
        values["time"] = int(time.time())
        settings = self.settings
        hidden = frozenset(row for row, name in ONLY_WITH.items() if not getattr(settings, name))
        return ordered(values, hidden)

    def reset_stats(self) -> None:
        def still() -> None:  # while no other worker serves a request: all at one moment
            self.cache.reset_stats()
            self.detail.clear()  # memcached's stats_reset calls stats_prefix_clear

        self.info.reset_stats(still)

    def slabs_reassign(self, cmd: c.SlabsReassign, s: Session) -> None:
        """``slabs reassign <src> <dst>``: the page moves in the background (the cache's page
        mover), and the reply comes at once, as memcached's rebalancer thread does it."""
        if not self.settings.slab_reassign:
            outcome: Outcome | Error = Error.REASSIGN_DISABLED
        elif cmd.src is None or cmd.dst is None:
            outcome = Error.BAD_FORMAT
        else:
            outcome = REASSIGN_OUTCOME[self.cache.reassign(cmd.src, cmd.dst)]
        cmd.reply(s.out, outcome)

    def slabs_automove(self, cmd: c.SlabsAutomove, s: Session) -> None:
        if cmd.level is not None:
            self.cache.automove = cmd.level
            self.settings = self.settings.replace(slab_automove=cmd.level)
        else:
            self._tune({"slab_automove_ratio": cmd.ratio})
        cmd.reply(s.out, Outcome.OK)

    def lru(self, cmd: c.Lru, s: Session) -> None:
        """``lru tune|mode|temp_ttl``: memcached's segmented LRU's tuning. mcached's clock
        LRU has no segments to tune: the values are its stats settings rows (and ``mode``
        which stats rows are shown, as memcached's lru_segmented decides)."""
        if cmd.needs_maintainer and not self.settings.lru_maintainer:
            cmd.reply(s.out, Error.UNKNOWN_COMMAND)
            return
        self._tune(dict(cmd.values))
        cmd.reply(s.out, Outcome.OK)

    def _tune(self, values: dict[str, Any]) -> None:
        """Run-time settings for every worker (`ServerInfo.tune_settings`)."""
        self.settings = self.settings.replace(**values)
        self.info.tune_settings(values)

    def items_stats(self) -> list[tuple[str, object]]:
        """``stats items``: memcached's per-class fields, for classes holding items; those
        of its segmented LRU only while its LRU maintainer runs, and ``number_temp`` (0:
        the clock has no temporary LRU) only with one (items.c ``item_stats``)."""
        maintainer = self.settings.lru_maintainer
        temp = maintainer and self.settings.temp_lru
        out: list[tuple[str, object]] = []
        for clsid, fields in self.cache.items_stats():
            p = f"items:{clsid}:"
            for name, value in fields.items():
                if maintainer or name not in MAINTAINER_ROWS:
                    out.append((p + name, value))
                if temp and name == "number_cold":
                    out.append((p + "number_temp", 0))
        return out

    def slabs_stats(self) -> list[tuple[str, object]]:
        """``stats slabs``: memcached's per-class fields, for classes holding pages."""
        out: list[tuple[str, object]] = []
        classes, totals = self.cache.slabs_stats()
        for clsid, fields in classes:
            p = f"{clsid}:"
            out += [(p + name, value) for name, value in fields.items()]
        out += list(totals.items())
        return out

    def _sizes(self, cmd: c.Stats, since: int) -> Iterator[Piece]:
        """``stats sizes``' reply (the connection's stream): memcached's histogram, live
        items by total size in 32-byte buckets, of those stored since it was turned on. The
        walk gives way between its steps, so the worker serves its other connections
        meanwhile (a hunt: the walk of 1.5 million items held them 1.9 s)."""
        histogram: dict[int, int] = {}
        for step in self.cache.size_histogram_steps(since):
            if step is None:
                yield GIVE_WAY
            else:
                histogram = step
        buf: Out = []
        cmd.reply_stats(buf, [(str(b), n) for b, n in sorted(histogram.items())])
        yield from buf

    def sizes_switch(self, on: bool) -> list[tuple[str, object]]:
        """``stats sizes_enable|disable`` (-o track_sizes at start): the histogram counts
        the items stored from then on; it needs CAS uniques to tell them apart."""
        if on and not self.settings.cas_enabled:
            return [("sizes_status", "error"), ("sizes_error", "cas_support_disabled")]
        self.info.set_sizes(on)
        return [("sizes_status", "enabled" if on else "disabled")]
