"""The cache facade: ``get/touch/store/delete/incr/decr/flush_all`` returning result enums.

This is memcached's ``thread.c`` (the locks around each operation) and the item semantics of
``memcached.c`` (``do_store_item``, ``do_add_delta``, lazy expiry, ``flush_all`` by sequence
marks) over the slab allocator of `items`, `slabs`, `lru` and `assoc`, all of it in the
shared-memory `arena`:

* items live in 1 MB pages of the arena, in the chunk of the slab class memcached would give
  them; the key -> item table of each partition is a window of int64 slots, so the only
  per-item memory outside the pages is its table slot (8 bytes at a load of 0.25 to 0.6);
* a store that finds no free chunk and no page to take evicts from its class's clock hand
  (`lru`); with ``-M`` it answers NO_MEMORY instead; a class with no page at all gets a new
  one even past the limit, as in memcached (one page per class at most: `PagePool.take`), so
  a new size never fails for want of pages (past that bound, a page moves from another
  class: `Items.steal_page`); a chained item's chunks are memcached's (its header in a small
  class, its value in chunks of the largest class and the last one's own class, see
  `items`), and when one of its value chunks cannot be had the store fails as memcached's
  does while it reads the value (NO_MEMORY_READING);
* expired items go when they are looked up, when the clock hand reaches them, or when the
  crawler (`maintainer.LruCrawler`) sweeps their class; ``flush_all`` only moves marks.

Processes. A `Cache` is a view: every figure it reads or writes is in the arena, so caches
built over one arena (`view`, or the same object in a forked process) are one cache. Keys
are hashed with Python's ``hash()``, which is the same in a forked process as in its parent
(the hash secret is chosen at interpreter start), so every worker finds every key; never
share an arena with a process that was not forked from the one that made it.

Memory. The arena reserves address space for ``max(-m, 1 GB)`` of pages at start-up, plus
a first page for every slab class (only what is written becomes resident): ``cache_memlimit``
can raise the limit, and pages then grow up to that reserve; a limit past it is accepted (as
memcached accepts one past the machine's memory) and pages stop at the reserve.

Concurrency. Keys are split into hash partitions (memcached's striped item locks), each with
its own lock, item table, flush mark and counters, so workers working on different keys do
not wait for each other. Every compound operation (check-then-store, read-modify-write) runs
entirely under its partition's lock: nothing relies on the GIL. The lock order is written in
`items`. Public methods take the partition lock; ``_name_locked`` helpers assume it is held.

Holders. Each public operation sets this view's holder word in the arena before it takes its
first lock and clears it after the last (see `arena`): a process killed in between is known
to have left the arena untrustworthy. `bind_holder` picks the word (one per process or
thread that may die alone).

Hot path. `get` and `store` run once per request, so they trade some clarity for speed, each
trade measured (scripts/bench_memory.py --micro, callgrind): they are closures over local
aliases built by `_bind_hot_paths` (about 20% faster than methods reading ``self.x``), with
the table probe, the header write and the common set written out inline; ``acquire()``/
``release()`` in ``try``/``finally`` rather than ``with``; one ``struct.unpack_from`` for
the header; the key compared and the value copied out with one slice of the page mapping;
and a set over an existing item of the same class rewritten in place (no chunk allocated or
freed).

Last access. An item's time (`OFF_TIME`, memcached's ``it->time``) is when it was stored or
last *bumped*, and reads bump it as memcached 1.6.18's ``do_item_bump`` does (its default,
segmented LRU; ``items.c``): the first read after a store only marks the item fetched (the
time stays the store's); a later read of an item not referenced (memcached's ``ITEM_ACTIVE``,
our reference byte) references it and sets its time to now; reads of a referenced item leave
it, unless it is `ITEM_UPDATE_INTERVAL` (60 s) old, when it is set again (memcached's LRU
maintainer keeps clearing ``ITEM_ACTIVE`` so later reads refresh it; memcached without the
segmented LRU refreshes on this same 60 s rule, which bounds how stale a hot item's time gets
here). ``add`` of an existing key and an ``incr``/``decr`` in place set it (``do_item_update``);
``mg`` with ``u``, ``me`` and a failed ``cas`` do not. A hot item's time is therefore written
at most once per 60 s: the read path pays one comparison (`G_ACCESS_BEFORE`, moved by `tick`).
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from heapq import heappop, heappush
from typing import Any

from mcached.clock import Clock
from mcached.cnum import decimal
from mcached.storage.arena import (
    C_CRAWLER_CHECKED,
    C_EVICTED_TIME,
    C_MOVES_TO_WARM,
    C_REFLOCKED,
    G_ACCESS_BEFORE,
    G_CAS,
    G_CHUNK_RESCUES,
    G_CRAWL_ASKED,
    G_CRAWLER_STARTS,
    G_CRAWLING,
    G_MALLOC_FAILS,
    G_MOVING,
    G_NSPARE,
    G_REASSIGN_BUSY,
    G_SLABS_MOVED,
    GET_HDR,
    HDR,
    HEADER,
    HOLE,
    I32,
    MF_BINKEY,
    MF_STALE,
    MF_WON,
    NSTAT,
    OFF_CAS,
    OFF_CLSID,
    OFF_EXPTIME,
    OFF_FETCHED,
    OFF_MFLAGS,
    OFF_PINS,
    OFF_REF,
    OFF_TIME,
    PIN_SLOTS,
    PIN_TAG,
    READ_HDR,
    RESERVE_TAG,
    S_CAS_BADVAL,
    S_CAS_HITS,
    S_CMD_SET,
    S_CRAWLER_RECLAIMED,
    S_DECR_HITS,
    S_DELETE_HITS,
    S_EVICTED,
    S_EVICTED_NONZERO,
    S_EVICTED_UNFETCHED,
    S_EXPIRED_UNFETCHED,
    S_GET_HITS,
    S_INCR_HITS,
    S_MEM,
    S_MOVE_EVICTED,
    S_MOVE_RESCUED,
    S_NUMBER,
    S_OUTOFMEMORY,
    S_RECLAIMED,
    S_SWEPT,
    S_TOTAL,
    S_TOUCH_HITS,
    S_TTL,
    SLAB_PAGE_SIZE,
    ST_CHAINED,
    ST_LINKED,
    ST_RESERVED,
    T_GEN,
    T_GET_EXPIRED,
    T_GET_FLUSHED,
    T_MASK,
    TAIL_HDR,
    U32,
    U64,
    Arena,
)
from mcached.storage.assoc import (
    ADDR_BITS,
    ADDR_MASK,
    EMPTY,
    HB_MASK,
    MARK,
    TAG_MASK,
    TOMB,
    make_entry,
)
from mcached.storage.items import (
    NEED_PAGE,
    NO_CHUNK,
    EvictHook,
    Items,
    ItemStats,
    Partition,
    copy_views,
    item_size,
)
from mcached.storage.results import (
    DeleteResult,
    DeltaResult,
    Item,
    ItemState,
    ReassignResult,
    StoreMode,
    StoreResult,
)

log = logging.getLogger("mcached.storage")

ITEM_UPDATE_INTERVAL = 60  # memcached's: a referenced item's time is refreshed this often

__all__ = [
    "NOT_PLAIN",
    "PIN_MIN",
    "Cache",
    "Hit",
    "ItemState",
    "ItemStats",
    "RefHit",
    "Reservation",
    "item_size",
    "parse_counter",
]

UINT64_MAX = 2**64 - 1
INT64_MAX = 2**63 - 1
_SPACE = b" \t\n\v\f\r"
# Hash partitions (each a lock, an item table and a row of per-class counters): 16, doubled
# up to 256 while a partition would hold more than PARTITION_ITEMS of the smallest items the
# memory limit holds (-m 1024: 32, -m 4096: 128). A table grows in one pass under its
# partition's lock (~0.2 us an entry, `assoc.Assoc.rebuild`): a -m 4096 -t 4 fill of 20
# million small items kept a get waiting up to 149 ms with 16 partitions, 17 ms with 128
# (scripts/bench_growth.py). More partitions are not free: 256 at -m 1024 ran the benchmarks'
# mix at 0.92x of 16 (each request touches a table and a row of counters among more pages),
# so a cache gets them only as its memory grows.
DEFAULT_PARTITIONS = 16
MAX_PARTITIONS = 256
PARTITION_ITEMS = 1 << 19


def partitions_for(memory_limit: int, chunk_size: int) -> int:
    """The partitions of a cache of `memory_limit` bytes whose smallest chunk holds
    `chunk_size` bytes of key and value (see PARTITION_ITEMS)."""
    most = memory_limit // (HEADER + chunk_size)
    partitions = DEFAULT_PARTITIONS
    while partitions < MAX_PARTITIONS and most > partitions * PARTITION_ITEMS:
        partitions *= 2
    return partitions


# A dump's batch (`Cache.metadump_batches`): at most this many rows, from at most this many
# table slots, per hold of a partition's lock. 256 rows of 250-byte keys are ~200 KB once
# rendered (a connection's STREAM_CAP); 4096 slots are a few ms of Python at most.
DUMP_BATCH_ROWS = 256
#: items of a partition whose addresses a metadump keeps, to pass them over if the table is
#: rebuilt under it (8 bytes each: a dump holds at most 1 MB of them, whatever the cache
#: holds; past that, an item may be listed again after a rebuild)
DUMP_LISTED_MAX = 1 << 17
DUMP_BATCH_SLOTS = 4096
KEY_MAX_LENGTH = 250  # memcached's KEY_MAX_LENGTH; the item header keeps it in one byte
_SET, _ADD, _CAS, _REPLACE, _APPEND = (
    StoreMode.SET,
    StoreMode.ADD,
    StoreMode.CAS,
    StoreMode.REPLACE,
    StoreMode.APPEND,
)
_PREPEND = StoreMode.PREPEND
_STORED = StoreResult.STORED
_NOT_STORED = StoreResult.NOT_STORED
_NO_MEMORY = StoreResult.NO_MEMORY
_NO_MEMORY_READING = StoreResult.NO_MEMORY_READING
#: a store that could not have its item (memcached counts no set for it)
_UNALLOCATED = (_NO_MEMORY, _NO_MEMORY_READING)

#: what `get` returns for a hit: (value, flags, cas unique); the value is the caller's own
#: copy (bytes out of the page mapping: it is only ever sent)
Hit = tuple[bytes | bytearray, int, int]
#: what `get_ref` returns for a hit: a `Hit`, or for a value of `PIN_MIN` bytes or more held
#: in one chunk, (value, flags, cas, token): the value is a view of the item's own memory,
#: valid until ``unpin(token)``, which the caller calls exactly once, when it has sent it; for
#: one of `CHAIN_PIN_MIN` bytes or more held in several chunks, the value is the list of the
#: views of each chunk's part, in order
RefHit = tuple[Any, ...]
PIN_MIN = 4096  # values from this size on are sent from their page (a pin), not copied
PIN_KEEP_DIV = 4  # pins leave 1/4 of a pin table row to reservations (see bind_holder)
#: a value held in several chunks (past slab_chunk_max) from this size on is lent as the
#: list of its chunks' views (RefHit's value), never copied whole; a smaller one (only with a
#: small -o slab_chunk_max) is copied. 64 KB: so a reply holding one is never joined (the
#: connection joins only turns up to its JOIN_MAX, 64 KB, and the header comes on top)
CHAIN_PIN_MIN = 64 * 1024


#: the seconds `Cache.reclaim_dead` may spend a run (about 18,000 items): memcached's
#: maintainer pulls up to 500 off a tail a pass, and runs its passes a millisecond apart
#: while it finds some, so thousands of items that expire at once are gone within a second
#: (with 1,000 a class a second, 3,000 took three, and stores meanwhile evicted live items
#: while dead ones waited: a hunt at -t 4 -m 8)
RECLAIM_BUDGET = 0.25


class _NotPlain:
    """What `Cache.get_value` answers for an item the meta protocol marks (stale, or its
    recache token won): a plain read cannot say so; `lookup` serves it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_PLAIN"


NOT_PLAIN = _NotPlain()


class Reservation:
    """Chunks reserved for an item whose value is being received (see `Cache.reserve`)."""

    __slots__ = (
        "head", "key", "h", "nbytes", "cid", "token", "views", "flags", "linked", "left", "last",
        "failed", "since",
    )  # fmt: skip

    def __init__(
        self,
        head: int,
        key: bytes,
        h: int,
        nbytes: int,
        cid: int,
        token: int,
        views: list[memoryview],
        flags: int = 0,
    ) -> None:
        self.head = head
        self.key = key
        self.h = h
        self.nbytes = nbytes
        self.cid = cid
        self.token = token  # its entry in the holder's pin table row (-1: none)
        self.views = views  # where the value goes, in order (so far: `Cache.grow`)
        self.flags = flags
        self.linked = False  # its chunks became an item (else `commit` gives them back)
        # A chained item's value chunks are taken as its bytes arrive (`Cache.grow`): what
        # of the value and its CRLF has no chunk yet, the chain's last chunk (or the head),
        # and whether one could not be had (memcached: "Out of memory during read").
        self.left = 0
        self.last = head
        self.failed = False
        self.since: int | None = None  # server time of its command (a relative exptime's 0)


class _Join:
    """What `Cache._store_locked` asks for to append or prepend a received value: chunks
    for the joined value (`nbytes`, the old item's `flags`), reserved with no lock held, for
    the item at `old` as it was at CAS `old_cas`."""

    __slots__ = ("nbytes", "flags", "old", "old_cas", "split")

    def __init__(self, nbytes: int, flags: int, old: int, old_cas: int, split: int) -> None:
        self.nbytes = nbytes
        self.flags = flags
        self.old = old
        self.old_cas = old_cas
        self.split = split  # the joined value's first part (`Items.chain_plan`)


class _Probe:
    """The chunks `Cache._store_locked` takes for a new item before it looks its key up, as
    memcached's stores allocate the item first (``item_alloc`` in ``process_update_command``,
    ``process_mset_command``, ``process_bin_update``): `addrs` as `Items.alloc` or
    `alloc_chain` tag them, of class `cid`; `used` once they became the item."""

    __slots__ = ("cid", "addrs", "plan", "used")

    def __init__(self, cid: int, addrs: list[int], plan: list[int] | None) -> None:
        self.cid = cid
        self.addrs = addrs
        self.plan = plan  # a chained item's (`Items.chain_plan`); None: one chunk
        self.used = False


def parse_counter(value: bytes) -> int | None:
    """The number an item holds, as memcached's ``safe_strtoull`` reads item data.

    As ``strtoull``: leading whitespace is skipped, a sign is allowed, and a minus negates
    the number modulo 2^64. The digits must be followed by whitespace, a NUL or the end of
    the value (the data is always followed by CRLF). Refused: no digits, over 2^64-1, and a
    number that reads as negative as a signed 64-bit one when a minus sign is anywhere in
    the value before its first NUL (memcached's ``strchr``: so "-5" is refused but
    "-18446744073709551615" is 1, and "18446744073709551615 -" is refused but
    "9223372036854775807 -" is not). memcached's scan goes on past the value's end, into
    whatever memory follows the item; mcached reads the value alone (TRIAGE.md).
    """
    s = value.lstrip(_SPACE)
    i = 0
    if s[:1] in (b"+", b"-"):
        i = 1
    j = i
    n = len(s)
    while j < n and 48 <= s[j] <= 57:
        j += 1
    if j == i:
        return None
    if j < n and s[j] and s[j] not in _SPACE:  # s[j] 0: a NUL ends the digits too
        return None
    number = decimal(s[i:j])  # any number of digits (int() refuses past 4,300)
    if number > UINT64_MAX:
        return None
    if s[:1] == b"-":
        number = -number & UINT64_MAX
    if number > INT64_MAX and b"-" in value.partition(b"\0")[0]:
        return None
    return number


class _Holding:
    """``with`` this around a public operation: the view's holder word is set inside."""

    __slots__ = ("words", "slot")

    def __init__(self, words: Any, slot: int) -> None:
        self.words = words
        self.slot = slot

    def __enter__(self) -> None:
        self.words[self.slot] = 1

    def __exit__(self, *exc: object) -> None:
        self.words[self.slot] = 0


class Cache:
    """Item store with memcached's semantics, safe across threads and processes. See the
    module docstring."""

    def __init__(
        self,
        *,
        memory_limit: int,
        item_size_max: int = 1024 * 1024,
        evictions: bool = True,
        cas_enabled: bool = True,
        clock: Clock | None = None,
        partitions: int | None = None,
        chunk_size: int = 48,
        growth_factor: float = 1.25,
        slab_chunk_max: int = SLAB_PAGE_SIZE // 2,
        slab_reassign: bool = True,
        slab_automove: int = 1,
        arena: Arena | None = None,
        reserve: int | None = None,
        window: int | None = None,
        holder: int = 0,
        table_slots: int = 0,
    ) -> None:
        self.clock = clock or Clock()
        self.item_size_max = item_size_max
        self.evictions = evictions
        self.cas_enabled = cas_enabled
        # what `view` needs to build another view of the same arena
        self._config: dict[str, Any] = dict(
            memory_limit=memory_limit,
            item_size_max=item_size_max,
            evictions=evictions,
            cas_enabled=cas_enabled,
            partitions=partitions or partitions_for(memory_limit, chunk_size),
            chunk_size=chunk_size,
            growth_factor=growth_factor,
            slab_chunk_max=slab_chunk_max,
            slab_reassign=slab_reassign,
            slab_automove=slab_automove,
        )
        self._items = items = Items(
            clock=self.clock,
            arena=arena,
            reserve=reserve,
            window=window,
            table_slots=table_slots,
            **self._config,
        )
        self.arena = items.arena
        # Hot-path aliases (see the module docstring).
        self._parts = items.parts
        self._pmask = items.pmask
        self._pshift = items.pshift
        self._pm = items.pm
        self._w = items.w
        self._lookup = items.lookup
        self._chunk_max = items.chunk_max
        self._largest = items.largest
        self._now = self.clock.now
        self._realtime = self.clock.realtime
        # memcached's item size without key and value: header, NUL, CRLF, CAS
        self._base_size = item_size(0, 0, 0, cas_enabled)
        self.bind_holder(holder)

    def view(self, holder: int = 0, clock: Clock | None = None) -> Cache:
        """Another view of this cache's arena, with holder word `holder` (a thread or a
        process that may die alone needs its own)."""
        return Cache(clock=clock or self.clock, arena=self.arena, holder=holder, **self._config)

    def bind_holder(self, slot: int, pin_slots: int = PIN_SLOTS) -> None:
        """Use holder word `slot` from now on (a forked worker calls this once). `pin_slots`:
        how many entries of its pin table row it uses (all of them; tests use fewer)."""
        if not 0 <= slot < len(self.arena.holders):
            raise ValueError(f"holder slots are 0..{len(self.arena.holders) - 1}")
        if not 0 < pin_slots <= PIN_SLOTS:
            raise ValueError(f"a pin table row has 1..{PIN_SLOTS} entries")
        self.holder = slot
        self._hold = _Holding(self.arena.holders, slot)
        # Pins and reservations are listed in the holder's row of the pin table, so the
        # supervisor can let a dead process's go. Slot 0 (threads, one process) needs no
        # list: a token is the item's address. A full row is never worked around: a value
        # that would be pinned is copied instead (bounded: see handlers and connection), and
        # a reservation is refused (NO_MEMORY, as when -m is full). Pins leave the last
        # `_pin_keep` entries to reservations, so replies that are not read cannot stop the
        # stores of other clients.
        self._pin_row: Any = None
        self._pin_free: array[int] | None = None  # a stack of free entries (2 bytes each)
        self._pin_slots = pin_slots
        self._pin_keep = pin_slots // PIN_KEEP_DIV
        if slot:
            self._pin_row = self.arena.pin_row(slot)
            row = self._pin_row
            self._pin_free = array("H", (k for k in range(pin_slots - 1, -1, -1) if not row[k]))
        self._bind_hot_paths()

    # ---- pins (see the arena's docstring) ----

    def _pin_locked(self, a: int) -> int | None:
        """Pin the item at `a` (its partition lock held): its token, or None (copy it)."""
        free = self._pin_free
        if free is None:
            return a if self._items.pin_locked(a) else None
        if len(free) <= self._pin_keep or not self._items.pin_locked(a):
            return None
        k = free.pop()
        self._pin_row[k] = a + PIN_TAG
        return k

    def unpin(self, token: int) -> None:
        """The value `get_ref` lent under `token` has been sent (or will never be)."""
        with self._hold:
            free = self._pin_free
            if free is None:
                self._items.unpin(token)
                return
            row = self._pin_row
            self._items.unpin(row[token] - PIN_TAG)
            row[token] = 0
            free.append(token)

    def pins_held(self) -> int:
        """Entries of this view's pin table row in use: pins and reservations (slot 0: not
        counted)."""
        return 0 if self._pin_free is None else self._pin_slots - len(self._pin_free)

    def release_holder(self, slot: int) -> int:
        """Let go of what the process of holder `slot` pinned or reserved (it died with its
        holder word clear). The number of pins and reservations released."""
        with self._hold:
            return self._items.release_holder(slot)

    @property
    def memory_limit(self) -> int:
        return self._items.pool.limit

    # ---- the hot path ----

    #: (value, flags, cas) of a live item, marked referenced; None on a miss.
    get: Callable[[bytes], Hit | None]
    #: `get` that lends values of PIN_MIN bytes or more (a `RefHit`; see `unpin`)
    get_ref: Callable[[bytes], RefHit | None]
    #: get_refs(keys, budget, floor): `get_ref` of each of `keys` in order, as one call:
    #: (hits, size, tokens). It stops after the key that brings `size` to `budget` (a hit
    #: counts its key's and value's bytes and `floor`, a miss `floor`), so `hits` may be
    #: shorter than `keys`; `tokens` are the pins of the values lent (each to be given back
    #: with `unpin` once sent, as `get_ref`'s)
    get_refs: Callable[[list[bytes], int, int], tuple[list[Any], int, list[int]]]
    #: `get_ref` for a plain ``mg <key> v``: NOT_PLAIN for an item that is stale or whose
    #: recache token was won, without touching it (`lookup` serves those)
    get_value: Callable[[bytes], Any]
    #: memcached's ``do_store_item``: store(mode, key, value, flags=0, exptime=0, cas=0)
    store: Callable[..., StoreResult]
    #: what the meta commands ask of an item (see `_lookup_slow`, the general path)
    lookup: Callable[..., Item | None]

    def _bind_hot_paths(self) -> None:
        """Build `get` and `store` as closures over local aliases.

        They run once per request, and in CPython every ``self.x`` or module global costs a
        dictionary lookup where a closure variable costs an array index: measured, the closure
        form of `get` is ~20% faster than the same code as a method. For the same reason the
        constants are literals here (their names are in the comments), and the common cases
        are written out inline: the table probe, a set over an item of the same class (the
        chunk is rewritten in place), a set of a new key that finds a free chunk. Anything
        else -- other modes, chained items, evictions, page moves -- takes the general path
        (`_store_slow`, `_link_locked`), which is the reference for what happens.
        """
        items = self._items
        parts = self._parts
        pmask = self._pmask
        pshift = self._pshift
        pm = self._pm
        w = self._w
        classes = items.classes
        lookup = self._lookup
        chunk_max = self._chunk_max
        base_size = self._base_size
        item_size_max = self.item_size_max
        evictions = self.evictions
        cas_on = self.cas_enabled
        now_fn = self._now
        realtime = self._realtime
        unpack = GET_HDR.unpack_from
        # the lookups' header read (get, get_refs, meta_lookup): no hash, so no 64-bit int
        # made a read; a 10-key get 193,645 -> 191,368 instructions, a get 35,944 -> 35,654
        read = READ_HDR.unpack_from
        pack = HDR.pack_into
        gone = self._gone_locked
        reclaimed = self._reclaimed_locked
        read_chained = items.read_chained
        link = self._link_locked
        slow = self._store_slow
        steal = items.steal_page
        held = self.arena.holders
        slot = self.holder
        hard_max = items.arena.window * 9 // 10  # assoc.FULL_NUM / FULL_DEN
        pin = self._pin_locked
        pages_view = items.arena.pages_view
        SET = StoreMode.SET
        STORED = StoreResult.STORED
        TOO_LARGE = StoreResult.TOO_LARGE
        NO_MEMORY = StoreResult.NO_MEMORY
        assert (MARK, TAG_MASK, ADDR_MASK, ADDR_BITS, HEADER, NSTAT) == (
            0x4000000000000000,
            0x7FFFFF0000000000,
            0xFFFFFFFFFF,
            40,
            48,
            22,
        )
        # the literals below stand for these names
        assert (OFF_REF, OFF_FETCHED, ST_CHAINED, ST_LINKED, ST_RESERVED, HOLE, TOMB) == (
            2,
            3,
            2,
            1,
            8,
            1,
            1,
        )
        assert (S_NUMBER, S_MEM, S_TTL, S_TOTAL, S_CMD_SET, S_GET_HITS) == (0, 1, 2, 3, 12, 11)
        assert (OFF_MFLAGS, MF_STALE, MF_WON, MF_BINKEY) == (21, 1, 2, 4)
        assert (HB_MASK, T_GEN, OFF_PINS) == (0x3FFFFF, 7, 22)
        assert (OFF_TIME, G_ACCESS_BEFORE) == (16, 15)
        put_time = U32.pack_into

        value_views = items.value_views
        # each class's S_GET_HITS word in a partition's counters, which every hit adds one to:
        # read from here, where `cid * 22 + 11` made two int objects a hit. With the T_GEN
        # word's index kept (`Assoc.gen_at`) and the key's offset reused for the value's, a
        # lookup makes three ints fewer: a 10-key get 191,329 -> 184,850 instructions, a get
        # 35,704 -> 35,208 (callgrind_request.py; an int past 256 is an allocation); the
        # key's end kept as the value's offset, one fewer: 183,067 and 34,852
        hit_at = [cid * NSTAT + S_GET_HITS for cid in range(len(classes))]

        def lend_or_copy(
            a: int, nk: int, nbytes: int, st: int, flags: int, cas: int, pin_min: int
        ) -> tuple[Any, ...]:
            # The value of a hit held in several chunks, or of `pin_min` bytes or more (the
            # partition's lock held): lent when it can be (a RefHit), else copied (a Hit).
            # The rarer branch of `get` and `get_refs`, written once for both.
            if not cas_on:
                cas = 0
            if st & 2:  # ST_CHAINED
                if nbytes >= max(pin_min, CHAIN_PIN_MIN):
                    token = pin(a)
                    if token is not None:
                        # each chunk's part sent from its page: views, kept valid by the pin
                        # (a whole copy would be held while it is sent)
                        return value_views(a, nk, nbytes, st), flags, cas, token
                return read_chained(a, nk, nbytes), flags, cas
            vo = a + 48 + nk
            token = pin(a)
            if token is not None:
                # sent from the page itself: a view, kept valid by the pin
                return pages_view()[vo : vo + nbytes], flags, cas, token
            return pm[vo : vo + nbytes], flags, cas  # the pin row is full: a copy

        def make_get(pin_min: int, meta: bool = False) -> Callable[[bytes], Any]:
            # `get`, `get_ref` and `get_value` are this one closure: `get` never pins
            # (pin_min is past any value), `get_ref` pins values of PIN_MIN bytes or more
            # held in one chunk (CHAIN_PIN_MIN in several); `get_value` (meta) is `get_ref`
            # that leaves a stale or won item alone and answers NOT_PLAIN, for
            # `meta_lookup` to serve
            def get(key: bytes) -> Any:
                h = hash(key)
                part = parts[h & pmask]
                s = h >> pshift
                # make_entry's MARK and tag bits, shifted down: `e >> 40` compares them as a
                # one-digit int, where `e & TAG_MASK` made a 63-bit one per probe
                want = (s & 0x3FFFFF) | 0x400000
                lock = part.lock
                held[slot] = 1
                lock.acquire()
                try:
                    if w[part.gen_at] != part.gen:  # T_GEN: the table moved, or a flush_all
                        part.sync()
                    tbl = part.tbl
                    m = part.mask
                    i = s & m
                    while True:
                        e = tbl[i]
                        if e >> 40 == want:  # ADDR_BITS
                            a = e & 0xFFFFFFFFFF
                            st, nk, ref, fetched, nbytes, flags, exptime, itime, cid, cas = read(
                                pm, a
                            )
                            ka = a + 48  # OFF_KEY
                            vo = ka + nk  # the value follows the key
                            if pm[ka:vo] == key:  # other lengths differ
                                break
                        elif not e:
                            return None
                        i = (i + 1) & m
                    if (exptime or part.flush_at or cas <= part.flush_seq) and gone(
                        part, i, a, exptime, itime, cas
                    ):
                        return None
                    if meta and pm[a + 21] & 3:  # OFF_MFLAGS: MF_STALE or MF_WON
                        return NOT_PLAIN
                    # the LRU bump, memcached's do_item_bump: the first read only marks the
                    # item fetched, a later one references it (a read right after a store
                    # does not protect it: lru.t) and sets its last access; one byte, written
                    # only when it changes. A referenced item (the common case) costs one
                    # comparison: its time is refreshed once it is 60 s old (module header)
                    if not fetched:
                        pm[a + 3] = 1  # OFF_FETCHED
                    elif not ref:
                        pm[a + 2] = 1  # OFF_REF
                        put_time(pm, a + 16, now_fn())  # OFF_TIME
                    elif itime < w[15]:  # G_ACCESS_BEFORE
                        put_time(pm, a + 16, now_fn())
                    part.cst[hit_at[cid]] += 1  # S_GET_HITS of the item's class
                    if st & 2 or nbytes >= pin_min:  # ST_CHAINED, or to be lent
                        return lend_or_copy(a, nk, nbytes, st, flags, cas, pin_min)
                    # one copy out of the page mapping, made under the lock
                    return pm[vo : vo + nbytes], flags, (cas if cas_on else 0)
                finally:
                    lock.release()
                    held[slot] = 0

            return get

        # `get_ref` over a run of keys, in one call. Hot path (every multiget): this is
        # get's lookup, bump and count written out again, as the loop's body, rather than a
        # call of `get_ref` a key; with the handler's loop over the hits that it allows (no
        # per-key size or lending tests there), a 10-key get took 215,576 -> 201,888
        # instructions (callgrind_request.py); each hit's size counted in its own branch,
        # 195,748 -> 194,037. The one copy of the lookup written twice, on purpose: keep the
        # two bodies the same, a change to one is a change to both
        # (tests/storage/test_get_refs.py checks them against each other). A value lent or
        # chained, the rarer branch, is `lend_or_copy`'s, written once for both.
        def get_refs(
            keys: list[bytes], budget: int, floor: int
        ) -> tuple[list[Any], int, list[int]]:
            pin_min = PIN_MIN
            hits: list[Any] = []
            lent: list[int] = []
            add = hits.append
            size = 0
            n = len(keys)
            try:
                for key in keys:
                    h = hash(key)
                    part = parts[h & pmask]
                    s = h >> pshift
                    want = (s & 0x3FFFFF) | 0x400000
                    lock = part.lock
                    # the holder word set for each key's lock alone, as get's: a worker killed
                    # between two keys holds no lock, and its death costs nothing (set for the
                    # whole run, it would cost the arena: see arena's "Holders"). Measured:
                    # a 10-key get 183,036 instructions with the word set once, 189,138 so
                    held[slot] = 1
                    lock.acquire()
                    try:
                        if w[part.gen_at] != part.gen:  # T_GEN
                            part.sync()
                        tbl = part.tbl
                        m = part.mask
                        i = s & m
                        while True:
                            e = tbl[i]
                            if e >> 40 == want:  # ADDR_BITS
                                a = e & 0xFFFFFFFFFF
                                st, nk, ref, fetched, nbytes, flags, exptime, itime, cid, cas = (
                                    read(pm, a)
                                )
                                ka = a + 48  # OFF_KEY
                                vo = ka + nk  # the value follows the key
                                if pm[ka:vo] == key:  # other lengths differ
                                    break
                            elif not e:
                                a = -1
                                break
                            i = (i + 1) & m
                        if a < 0 or (
                            (exptime or part.flush_at or cas <= part.flush_seq)
                            and gone(part, i, a, exptime, itime, cas)
                        ):
                            add(None)
                            size += floor
                        else:
                            if not fetched:  # the LRU bump: see get
                                pm[a + 3] = 1  # OFF_FETCHED
                            elif not ref:
                                pm[a + 2] = 1  # OFF_REF
                                put_time(pm, a + 16, now_fn())  # OFF_TIME
                            elif itime < w[15]:  # G_ACCESS_BEFORE
                                put_time(pm, a + 16, now_fn())
                            part.cst[hit_at[cid]] += 1  # S_GET_HITS of the item's class
                            size += nbytes + nk + floor
                            if st & 2 or nbytes >= pin_min:  # ST_CHAINED, or to be lent
                                hit = lend_or_copy(a, nk, nbytes, st, flags, cas, pin_min)
                                if len(hit) == 4:
                                    lent.append(hit[3])
                                add(hit)
                            else:
                                add((pm[vo : vo + nbytes], flags, (cas if cas_on else 0)))
                    finally:
                        lock.release()
                        held[slot] = 0
                    if size >= budget and len(hits) < n:
                        break
            except BaseException:
                for token in lent:  # lent to nobody: the caller never sees them
                    self.unpin(token)
                raise
            return hits, size, lent

        def store(
            mode: StoreMode,
            key: bytes,
            value: bytes,
            flags: int = 0,
            exptime: int = 0,
            cas: int = 0,
        ) -> StoreResult:
            nkey = len(key)
            nbytes = len(value)
            total = base_size + nkey + nbytes
            if flags:
                total += 4
            if total > item_size_max:
                return TOO_LARGE
            if mode is not SET or total > chunk_max or nkey > 250:
                return slow(mode, key, value, flags, exptime, cas)
            h = hash(key)
            part = parts[h & pmask]
            s = h >> pshift
            want = (s & 0x3FFFFF) << 40 | 0x4000000000000000
            cid = lookup[(total + 7) >> 3]
            base = cid * 22  # NSTAT
            lock = part.lock
            held[slot] = 1
            try:
                lock.acquire()
                try:
                    tb = part.tb
                    if w[tb + 7] != part.gen:  # T_GEN
                        part.sync()
                    tbl = part.tbl
                    m = part.mask
                    i = s & m
                    ins = -1
                    while True:
                        e = tbl[i]
                        if e & 0x7FFFFF0000000000 == want:
                            a = e & 0xFFFFFFFFFF
                            if pm[a + 1] == nkey and pm[a + 48 : a + 48 + nkey] == key:
                                break
                        elif not e:
                            a = -1
                            break
                        elif e == 1 and ins < 0:  # TOMB
                            ins = i
                        i = (i + 1) & m
                    now = now_fn()
                    exp = realtime(exptime) if exptime else 0
                    cst = part.cst
                    if a >= 0:
                        (
                            st,
                            _,
                            _,
                            _,
                            old_nbytes,
                            old_flags,
                            old_exp,
                            old_time,
                            old_cid,
                            old_cas,
                            _,
                        ) = unpack(pm, a)
                        if (old_exp or part.flush_at or old_cas <= part.flush_seq) and reclaimed(
                            part, i, a, old_exp, old_time, old_cas
                        ):
                            a = -1
                            if ins < 0:
                                ins = i
                        elif evictions and old_cid == cid and not st & 2 and not pm[a + 22]:
                            # The same class and one chunk: rewrite the item in place. (Not
                            # with -M: memcached must find room for the new item before it
                            # frees the old one, and answers NO_MEMORY when there is none.
                            # Not while a reply sends it: OFF_PINS.)
                            seq = part.next_cas()
                            pack(pm, a, 1, nkey, 1, 0, nbytes, flags, exp, now, cid, seq, h, -1)
                            vo = a + 48 + nkey
                            pm[vo : vo + nbytes] = value
                            old_total = base_size + nkey + old_nbytes
                            if old_flags:
                                old_total += 4
                            cst[base + 1] += total - old_total  # S_MEM
                            if bool(exp) != bool(old_exp):
                                cst[base + 2] += 1 if exp else -1  # S_TTL
                            cst[base + 3] += 1  # S_TOTAL
                            cst[base + 12] += 1  # S_CMD_SET
                            return STORED
                        else:
                            result = link(part, i, a, key, h, value, flags, exp, True, True)
                            if result is STORED:
                                cst[base + 12] += 1
                                return STORED
                    if a < 0:
                        i = ins if ins >= 0 else i
                        if w[tb + 2] >= hard_max:  # T_USED: the table cannot grow further
                            cst[base + 7] += 1  # S_OUTOFMEMORY
                            return NO_MEMORY
                        # a new key: take a free chunk of its class, if there is one
                        cls = classes[cid]
                        clock = cls.lock
                        clock.acquire()
                        try:
                            c = cls.chunk_pop_locked()
                            if c >= 0:
                                ref = c & 1  # HOLE: a reused hole starts referenced
                                c &= -2
                                pm[c] = 8  # ST_RESERVED
                                cls.count_used(1)
                        finally:
                            clock.release()
                        if c < 0:
                            # no free chunk: a new page, an eviction, or a page from another
                            # class
                            result = link(part, -1 - i, -1, key, h, value, flags, exp, True, True)
                            if result is STORED:
                                cst[base + 12] += 1
                        else:
                            seq = part.next_cas()
                            # ST_RESERVED (8) until it is whole, then ST_LINKED (1): the
                            # status last, as in Items.write
                            pack(pm, c, 8, nkey, ref, 0, nbytes, flags, exp, now, cid, seq, h, -1)
                            vo = c + 48
                            pm[vo : vo + nkey] = key
                            vo += nkey
                            pm[vo : vo + nbytes] = value
                            pm[c] = 1
                            part.insert_at(i, want | c)
                            cst[base] += 1  # S_NUMBER
                            cst[base + 1] += total  # S_MEM
                            if exp:
                                cst[base + 2] += 1
                            cst[base + 3] += 1
                            cst[base + 12] += 1
                            return STORED
                finally:
                    lock.release()
                if result.__class__ is int:
                    # no page for the class: move one from another class, with no lock held
                    steal(result)
                    with part:
                        result = self._store_locked(
                            part, h, mode, key, value, flags, exptime, cas, False
                        )
                        if result is STORED:
                            part.cst[base + 12] += 1
                return result  # type: ignore[return-value]
            finally:
                held[slot] = 0

        slow_lookup = self._lookup_slow

        def meta_lookup(
            key: bytes,
            value: bool = True,
            bump: bool = True,
            count: bool = True,
            touch: int | None = None,
            vivify: int | None = None,
            recache: int | None = None,
            recache_after_touch: bool = False,
            vivify_last: bool = True,
        ) -> Item | None:
            # Hot path (mg): a lookup that changes no exptime and creates nothing is written
            # out as `get` is; anything else takes `_lookup_slow`, the reference
            if touch is not None or vivify is not None or recache is not None:
                return slow_lookup(
                    key, value, bump, count, touch, vivify, recache, recache_after_touch,
                    vivify_last,
                )  # fmt: skip
            h = hash(key)
            part = parts[h & pmask]
            s = h >> pshift
            want = (s & 0x3FFFFF) | 0x400000
            lock = part.lock
            held[slot] = 1
            lock.acquire()
            try:
                if w[part.gen_at] != part.gen:  # T_GEN
                    part.sync()
                tbl = part.tbl
                m = part.mask
                i = s & m
                while True:
                    e = tbl[i]
                    if e >> 40 == want:  # ADDR_BITS
                        a = e & 0xFFFFFFFFFF
                        st, nk, ref, fetched, nbytes, flags, exptime, itime, cid, cas = read(pm, a)
                        ka = a + 48  # OFF_KEY
                        vo = ka + nk  # the value follows the key
                        if pm[ka:vo] == key:  # other lengths differ
                            break
                    elif not e:
                        return None
                    i = (i + 1) & m
                if (exptime or part.flush_at or cas <= part.flush_seq) and gone(
                    part, i, a, exptime, itime, cas
                ):
                    return None
                now = now_fn()
                mf = pm[a + 21]  # OFF_MFLAGS
                # MF_STALE without MF_WON: the first reader recaches (not `me`'s look)
                won = count and mf & 3 == 1
                if won:
                    pm[a + 21] = mf | 2
                if count:
                    part.cst[hit_at[cid]] += 1  # S_GET_HITS
                if bump:  # as get's: the first read marks it fetched, a later one referenced
                    if not fetched:
                        pm[a + 3] = 1  # OFF_FETCHED
                    elif not ref:
                        pm[a + 2] = 1  # OFF_REF
                        put_time(pm, a + 16, now)  # OFF_TIME
                    elif itime < w[15]:  # G_ACCESS_BEFORE
                        put_time(pm, a + 16, now)
                data = None
                if value:
                    if st & 2:  # ST_CHAINED
                        data = read_chained(a, nk, nbytes)
                    else:
                        data = pm[vo : vo + nbytes]
                return (
                    data,
                    flags,
                    cas if cas_on else 0,
                    nbytes,
                    base_size + nk + nbytes + (4 if flags else 0),  # item_size()
                    cid,
                    exptime - now if exptime else None,
                    None,
                    None,
                    now - itime,
                    fetched != 0,
                    mf & 1 != 0,  # MF_STALE
                    mf & 2 != 0,  # MF_WON, before this lookup
                    won,
                    False,
                    mf & 4 != 0,  # MF_BINKEY
                )
            finally:
                lock.release()
                held[slot] = 0

        self.get = make_get(1 << 62)
        self.get_ref = make_get(PIN_MIN)
        self.get_value = make_get(PIN_MIN, True)
        self.get_refs = get_refs
        self.store = store
        self.lookup = meta_lookup

    # ---- sizes and settings ----

    @property
    def slab_sizes(self) -> list[int]:
        """Chunk size of each slab class, class 1 first."""
        return self._items.sizes

    @property
    def slab_classes(self) -> list[tuple[int, int]]:
        """Each slab class's chunk size and chunks a page, class 1 first (what memcached's
        ``-vv`` prints at start)."""
        return [(cls.size, cls.perslab) for cls in self._items.classes[1:]]

    def class_of(self, total: int) -> int:
        """The class memcached puts an item of `total` bytes in."""
        return self._items.class_for(total)

    @property
    def flush_gen(self) -> int:
        """Bumped by every flush_all (the crawler sweeps again after one)."""
        return self._items.flush_gen

    @property
    def automove(self) -> int:
        return self._items.automove

    @automove.setter
    def automove(self, level: int) -> None:
        self._items.automove = level

    # ---- what a watcher is told (``watch``: the server's log, never seen from here) ----

    @property
    def on_evict(self) -> EvictHook | None:
        """Called, under the storage's locks, with each item a store evicts (see
        `EvictHook`): it must not block nor call back into the cache. None while nobody
        listens, which is all an eviction then pays for."""
        return self._items.on_evict

    @on_evict.setter
    def on_evict(self, hook: EvictHook | None) -> None:
        self._items.on_evict = hook

    def peek(self, key: bytes) -> tuple[int, int] | None:
        """(slab class, value length) of `key`'s live item, None if there is none; nothing
        is changed or counted (an expired item is left for the command that follows). What
        memcached logs of the lookup inside a store, delta, touch or delete."""
        part, h = self._part(key)
        with self._hold, part:
            i = self._raw_find_locked(part, key, h)
            if i < 0:
                return None
            a = part.tbl[i] & ADDR_MASK
            _, _, _, _, nbytes, _, exptime, itime, cid, cas, _ = GET_HDR.unpack_from(self._pm, a)
            now = self._now()
            if (exptime and exptime <= now) or self._items.is_flushed(part, cas, itime, now):
                return None
            return cid, nbytes

    # ---- lookups (partition lock held) ----

    def _find_locked(self, part: Partition, key: bytes, h: int, storing: bool = False) -> int:
        """The slot of `key`'s live item, or ``-1 - slot`` where it would be inserted. An
        expired or flushed item found on the way is unlinked and counted (memcached's
        ``do_item_get``: get_expired / get_flushed, whatever the command; when `storing`, its
        memory goes to the new item: reclaimed)."""
        i = self._raw_find_locked(part, key, h)
        if i < 0:
            return i
        a = part.tbl[i] & ADDR_MASK
        exptime, itime, _, cas, _ = TAIL_HDR.unpack_from(self._pm, a + OFF_EXPTIME)
        drop = self._reclaimed_locked if storing else self._gone_locked
        if (exptime or part.flush_at or cas <= part.flush_seq) and (
            drop(part, i, a, exptime, itime, cas)
        ):
            return -1 - i  # unlinked: its slot (now a tombstone) takes the new item
        return i

    def _raw_find_locked(self, part: Partition, key: bytes, h: int) -> int:
        """Like `_find_locked`, but whatever state the item is in (nothing is unlinked)."""
        s = h >> self._pshift
        want = MARK | (s & HB_MASK) << 40
        nkey = len(key)
        pm = self._pm
        tbl = part.tbl
        m = part.mask
        i = s & m
        ins = -1
        while True:
            e = tbl[i]
            if e & TAG_MASK == want:
                a = e & ADDR_MASK
                if pm[a + 1] == nkey and pm[a + HEADER : a + HEADER + nkey] == key:
                    return i
            elif e == EMPTY:
                return -1 - (ins if ins >= 0 else i)
            elif e == TOMB and ins < 0:
                ins = i
            i = (i + 1) & m

    def _gone_locked(
        self, part: Partition, i: int, a: int, exptime: int, itime: int, cas: int
    ) -> bool:
        """Unlink the item at `a` if it is flushed or expired (lazy expiry); True if so."""
        now = self._now()
        if self._items.is_flushed(part, cas, itime, now):
            part.count_get_gone(flushed=True)
        elif exptime and exptime <= now:
            part.count_get_gone(flushed=False)
        else:
            return False
        self._items.unlink_locked(part, i, a)
        return True

    def _reclaimed_locked(
        self, part: Partition, i: int, a: int, exptime: int, itime: int, cas: int
    ) -> bool:
        """A store found its key's item flushed or expired: unlink it, counted as reclaimed
        (and expired_unfetched), not as a get. memcached reuses that memory for the new item
        (its allocation pulls the expired item off the LRU tail first, issue_163/183);
        True if so."""
        now = self._now()
        if not (exptime and exptime <= now) and not self._items.is_flushed(part, cas, itime, now):
            return False
        pm = self._pm
        base = pm[a + OFF_CLSID] * NSTAT
        part.cst[base + S_RECLAIMED] += 1
        if not pm[a + OFF_FETCHED]:
            part.cst[base + S_EXPIRED_UNFETCHED] += 1
        self._items.unlink_locked(part, i, a)
        return True

    def _part(self, key: bytes) -> tuple[Partition, int]:
        h = hash(key)
        return self._parts[h & self._pmask], h

    # ---- reads ----

    def get_and_touch(self, key: bytes, exptime: int) -> Hit | None:
        """``gat``: a get that also sets a new exptime."""
        part, h = self._part(key)
        with self._hold, part:
            i = self._find_locked(part, key, h)
            if i < 0:
                return None
            a = part.tbl[i] & ADDR_MASK
            self._touch_locked(part, a, self._realtime(exptime))
            _, _, _, _, _, flags, _, _, _, cas, _ = GET_HDR.unpack_from(self._pm, a)
            return self._items.read_value(a), flags, (cas if self.cas_enabled else 0)

    def touch(self, key: bytes, exptime: int) -> bool:
        part, h = self._part(key)
        with self._hold, part:
            i = self._find_locked(part, key, h)
            if i < 0:
                return False
            self._touch_locked(part, part.tbl[i] & ADDR_MASK, self._realtime(exptime))
            return True

    def _touch_locked(self, part: Partition, a: int, exptime: int) -> None:
        """touch, gat: memcached's do_item_touch, a read (do_item_get bumps it) that sets a
        new exptime."""
        pm = self._pm
        base = pm[a + 20] * NSTAT  # OFF_CLSID
        old = I32.unpack_from(pm, a + OFF_EXPTIME)[0]
        if bool(old) != bool(exptime):
            part.cst[base + S_TTL] += 1 if exptime else -1
        I32.pack_into(pm, a + OFF_EXPTIME, exptime)
        itime = U32.unpack_from(pm, a + OFF_TIME)[0]
        self._bump_locked(a, pm[a + OFF_FETCHED], pm[a + OFF_REF], itime, self._now())
        part.cst[base + S_TOUCH_HITS] += 1

    def _bump_locked(self, a: int, fetched: int, ref: int, itime: int, now: int) -> None:
        """A read's bump (memcached's do_item_bump; module header: Last access), given the
        item's fetched and reference bytes and time as the read found them. `get` and
        `lookup` write the same out inline."""
        pm = self._pm
        if not fetched:
            pm[a + OFF_FETCHED] = 1
        elif not ref:
            pm[a + OFF_REF] = 1
            U32.pack_into(pm, a + OFF_TIME, now)
        elif itime < self._w[G_ACCESS_BEFORE]:
            U32.pack_into(pm, a + OFF_TIME, now)

    def _updated_locked(self, a: int) -> None:
        """memcached's do_item_update (``add`` of an existing key, an incr in place): the
        item is referenced and its time set to now."""
        pm = self._pm
        pm[a + OFF_REF] = 1
        U32.pack_into(pm, a + OFF_TIME, self._now())

    def tick(self) -> None:
        """Once a second (`maintainer.Ticker`): reads refresh the time of referenced items
        older than `ITEM_UPDATE_INTERVAL` from now on."""
        self._w[G_ACCESS_BEFORE] = self._now() - ITEM_UPDATE_INTERVAL

    def reclaim_dead(self, budget: float = RECLAIM_BUDGET) -> int:
        """Once a second with the LRU maintainer on (`maintainer.Ticker`): in each class, the
        dead items its clock hand comes to next, one after the other until it meets a live
        one (`Items.reclaim_at_hand`). How many. Items stored with a
        short exptime and never read again leave curr_items and give their chunks back
        within a second, as memcached's maintainer pulls them off its LRUs' tails (they
        waited for the crawler's next pass, a minute, or for an allocation to meet them);
        a dead item further on, past a live one, is left to those, as memcached leaves one
        deep in its LRU. The holder word is set around each item's locks alone. After
        `budget` seconds (checked every 256 items) the rest waits for the next run."""
        items = self._items
        now = self._now()
        deadline = time.monotonic() + budget
        n = 0
        for cls in items.classes[1:]:
            if not cls.npages:
                continue  # (read unlocked: a hint; the class lock decides)
            while True:
                with self._hold:
                    if not items.reclaim_at_hand(cls, now):
                        break
                n += 1
                if not n & 255 and time.monotonic() >= deadline:
                    return n
        return n

    # ---- the meta commands' operations (memcached's proto_text.c process_m*_command) ----

    def _lookup_slow(
        self,
        key: bytes,
        value: bool = True,
        bump: bool = True,
        count: bool = True,
        touch: int | None = None,
        vivify: int | None = None,
        recache: int | None = None,
        recache_after_touch: bool = False,
        vivify_last: bool = True,
    ) -> Item | None:
        """`lookup`: a lookup that tells everything about the item, and may change it:
        ``mg`` (and ``me``, which changes nothing). None on a miss that created nothing.

        * `value`: copy the value out; `bump`: mark it read (``mg`` without ``u``), after
          its state was taken; `count`: a client's read (``mg``): count the hit in its
          slab class (a touch hit when `touch` is given, a get hit otherwise) and take a
          stale item's recache; ``me`` and the watcher's looks change nothing.
        * `touch` (a client exptime): set the item's exptime (``T``).
        * `vivify` (a client exptime): on a miss, create an empty item with that exptime and
          win its recache (``N``); with `touch` too, the exptime of the two flags' later
          (`vivify_last`).
        * `recache` (a client exptime): win the recache when the item expires before that
          time (``R``), comparing the exptime set by `touch` when that flag came first
          (`recache_after_touch`).

        A stale item is won by the first lookup after it was invalidated; the win is
        recorded in the item (`MF_WON`), so the later lookups see ``token_sent``.
        """
        part, h = self._part(key)
        rt = self._realtime
        touch_exp = None if touch is None else rt(touch)
        vivify_exp = None if vivify is None else rt(vivify)
        recache_exp = None if recache is None else rt(recache)
        with self._hold:
            with part:
                got = self._lookup_locked(
                    part, h, key, value, bump, count, touch_exp, vivify_exp,
                    recache_exp, recache_after_touch, vivify_last, True,
                )  # fmt: skip
            if got.__class__ is int:
                self._items.steal_page(got)
                with part:
                    got = self._lookup_locked(
                        part, h, key, value, bump, count, touch_exp, vivify_exp,
                        recache_exp, recache_after_touch, vivify_last, False,
                    )  # fmt: skip
        return got  # type: ignore[return-value]

    def _lookup_locked(
        self,
        part: Partition,
        h: int,
        key: bytes,
        value: bool,
        bump: bool,
        count: bool,
        touch_exp: int | None,
        vivify_exp: int | None,
        recache_exp: int | None,
        recache_after_touch: bool,
        vivify_last: bool,
        steal_ok: bool,
    ) -> Item | None | int:
        """`lookup` under the partition lock, times in server time; an int (a class id) asks
        for a page first (to create the item)."""
        i = self._find_locked(part, key, h)
        pm = self._pm
        now = self._now()
        created = False
        if i < 0:
            if vivify_exp is None:
                return None
            # memcached: an item of 0 bytes, flags 0; the exptime is the later flag's
            exp = vivify_exp if touch_exp is None or vivify_last else touch_exp
            got = self._link_locked(part, i, -1, key, h, b"", 0, exp, steal_ok, False)
            if got.__class__ is int:
                return got
            if got is not _STORED:
                return None  # no memory: memcached's item_alloc failed, a miss
            i = self._raw_find_locked(part, key, h)
            created = True
        a = part.tbl[i] & ADDR_MASK
        st, nkey, ref, fetched, nbytes, flags, exptime, itime, cid, cas, _ = GET_HDR.unpack_from(
            pm, a
        )
        mf = pm[a + OFF_MFLAGS]
        sent = mf & MF_WON
        base = cid * NSTAT
        if created:
            ttl = None  # memcached creates it with exptime 0, then applies N (and T)
            won = True
        else:
            ttl = exptime - now if exptime else None
            won = False
            if recache_exp is not None and not sent:
                seen = touch_exp if touch_exp is not None and recache_after_touch else exptime
                won = bool(seen) and seen < recache_exp
            if touch_exp is not None:
                if bool(exptime) != bool(touch_exp):
                    part.cst[base + S_TTL] += 1 if touch_exp else -1
                I32.pack_into(pm, a + OFF_EXPTIME, touch_exp)
        if mf & MF_STALE and not sent and count:
            won = True  # the first reader of a stale item recaches it (`me` reads nothing)
        if won:
            pm[a + OFF_MFLAGS] = mf | MF_WON
        if count:
            part.cst[base + (S_GET_HITS if touch_exp is None else S_TOUCH_HITS)] += 1
        if bump:  # memcached's do_item_bump (module header: Last access)
            self._bump_locked(a, fetched, ref, itime, now)
        data: bytes | None = None
        if value:
            if st & ST_CHAINED:
                data = self._items.read_chained(a, nkey, nbytes)
            else:
                vo = a + HEADER + nkey
                data = pm[vo : vo + nbytes]
        cas_on = self.cas_enabled
        return (
            data,
            flags,
            cas if cas_on else 0,
            nbytes,
            item_size(nkey, flags, nbytes, cas_on),
            cid,
            ttl,
            touch_exp - now if touch_exp else None,
            vivify_exp - now if vivify_exp else None,
            now - itime,
            bool(fetched) and not created,
            bool(mf & MF_STALE),
            bool(sent),
            won,
            created,
            bool(mf & MF_BINKEY),
        )

    def store_ex(
        self,
        mode: StoreMode,
        key: bytes,
        value: bytes,
        flags: int = 0,
        exptime: int = 0,
        cas: int = 0,
        stale: bool = False,
        binary_key: bool = False,
    ) -> tuple[StoreResult, int]:
        """`store` with the meta commands' extras (``ms``): `stale` (``I``: a CAS older than
        the item's stores the value marked stale), `binary_key` (``b``: the item remembers
        its key came base64-encoded), and the new item's CAS returned with the result (0
        unless stored, or with -C). A CAS given with append or prepend must match."""
        if len(key) > KEY_MAX_LENGTH:
            raise ValueError(f"keys are at most {KEY_MAX_LENGTH} bytes (the parser says so)")
        total = self._base_size + len(key) + len(value)
        if flags:
            total += 4
        if total > self.item_size_max:
            return StoreResult.TOO_LARGE, 0
        part, h = self._part(key)
        mflags = MF_BINKEY if binary_key else 0
        counted = self._items.class_for(total) * NSTAT + S_CMD_SET
        steal_ok = True
        with self._hold:
            while True:
                with part:
                    result = self._store_locked(
                        part, h, mode, key, value, flags, exptime, cas, steal_ok, stale, mflags
                    )
                    if result.__class__ is not int:
                        if result not in _UNALLOCATED:
                            part.cst[counted] += 1
                        new_cas = 0
                        if result is _STORED and self.cas_enabled:
                            i = self._raw_find_locked(part, key, h)
                            new_cas = U64.unpack_from(
                                self._pm, (part.tbl[i] & ADDR_MASK) + OFF_CAS
                            )[0]
                        return result, new_cas  # type: ignore[return-value]
                # no page for the item's class: move one from another class, then once more
                self._items.steal_page(result)
                steal_ok = False

    def delete_ex(
        self, key: bytes, cas: int | None = None, invalidate: bool = False, touch: int | None = None
    ) -> DeleteResult:
        """``md``: delete, or with `invalidate` (``I``) keep the item, mark it stale (its
        recache token back up for grabs), give it a new CAS and, with `touch`, a new exptime.
        A `cas` (even 0) must match the item's (0 with -C)."""
        part, h = self._part(key)
        with self._hold, part:
            i = self._find_locked(part, key, h)
            if i < 0:
                return DeleteResult.NOT_FOUND
            a = part.tbl[i] & ADDR_MASK
            pm = self._pm
            if cas is not None:
                item_cas = U64.unpack_from(pm, a + OFF_CAS)[0] if self.cas_enabled else 0
                if cas != item_cas:
                    return DeleteResult.EXISTS
            if invalidate:
                if touch is not None:
                    exptime = self._realtime(touch)
                    old = I32.unpack_from(pm, a + OFF_EXPTIME)[0]
                    if bool(old) != bool(exptime):
                        part.cst[pm[a + 20] * NSTAT + S_TTL] += 1 if exptime else -1  # OFF_CLSID
                    I32.pack_into(pm, a + OFF_EXPTIME, exptime)
                pm[a + OFF_MFLAGS] = (pm[a + OFF_MFLAGS] | MF_STALE) & ~MF_WON
                U64.pack_into(pm, a + OFF_CAS, part.next_cas())
                return DeleteResult.INVALIDATED
            part.cst[pm[a + 20] * NSTAT + S_DELETE_HITS] += 1  # OFF_CLSID
            self._items.unlink_locked(part, i, a)
            return DeleteResult.DELETED

    def delta_ex(
        self,
        key: bytes,
        incr: bool,
        delta: int,
        cas: int = 0,
        vivify: int | None = None,
        initial: int = 0,
        touch: int | None = None,
        vivify_last: bool = True,
    ) -> tuple[DeltaResult, Item | None]:
        """``ma``: incr or decr (a non-zero `cas` must match), and the item as it is then.

        On a miss with `vivify` (a client exptime, ``N``) the item is created holding
        `initial` (``J``), with that exptime or, with `touch` too, the later flag's. `touch`
        (``T``) sets a found item's exptime, but only when the new number fit in the old
        value's length: memcached sets it on the item it modified, which is the old one (no
        longer stored) when the number grew past its length.
        """
        part, h = self._part(key)
        rt = self._realtime
        touch_exp = None if touch is None else rt(touch)
        vivify_exp = None if vivify is None else rt(vivify)
        steal_ok = True
        with self._hold:
            while True:
                with part:
                    got = self._delta_ex_locked(
                        part, h, key, incr, delta, cas, vivify_exp, initial, touch_exp,
                        vivify_last, steal_ok,
                    )  # fmt: skip
                    if got.__class__ is not int:
                        return got  # type: ignore[return-value]
                self._items.steal_page(got)
                steal_ok = False

    def _delta_ex_locked(
        self,
        part: Partition,
        h: int,
        key: bytes,
        incr: bool,
        delta: int,
        cas: int,
        vivify_exp: int | None,
        initial: int,
        touch_exp: int | None,
        vivify_last: bool,
        steal_ok: bool,
    ) -> tuple[DeltaResult, Item | None] | int:
        pm = self._pm
        i = self._find_locked(part, key, h)
        created = False
        if i >= 0:
            a = part.tbl[i] & ADDR_MASK
            old_nbytes = GET_HDR.unpack_from(pm, a)[4]
            result, number = self._delta_locked(part, h, key, delta, incr, steal_ok, cas)
            if result is None:
                return number  # a class id: steal a page first
            if result is not DeltaResult.OK:
                return result, None
            digits = b"%d" % number
            in_place = len(digits) <= old_nbytes
        elif vivify_exp is None:
            return DeltaResult.NOT_FOUND, None
        else:
            digits = b"%d" % initial
            exp = vivify_exp if touch_exp is None or vivify_last else touch_exp
            got = self._link_locked(part, i, -1, key, h, digits, 0, exp, steal_ok, False)
            if got.__class__ is int:
                return got
            if got is not _STORED:
                return DeltaResult.NOT_CREATED, None
            created = in_place = True
        i = self._raw_find_locked(part, key, h)
        a = part.tbl[i] & ADDR_MASK
        _, nkey, _, _, nbytes, flags, exptime, itime, cid, item_cas, _ = GET_HDR.unpack_from(pm, a)
        now = self._now()
        ttl = None if created or not exptime else exptime - now
        if touch_exp is not None and in_place and not created:
            if bool(exptime) != bool(touch_exp):
                part.cst[cid * NSTAT + S_TTL] += 1 if touch_exp else -1
            I32.pack_into(pm, a + OFF_EXPTIME, touch_exp)
        cas_on = self.cas_enabled
        mf = pm[a + OFF_MFLAGS]
        return DeltaResult.OK, (
            digits,
            flags,
            item_cas if cas_on else 0,
            nbytes,
            item_size(nkey, flags, nbytes, cas_on),
            cid,
            ttl,
            touch_exp - now if touch_exp else None,
            vivify_exp - now if vivify_exp else None,
            now - itime,
            False,
            bool(mf & MF_STALE),
            bool(mf & MF_WON),
            False,
            created,
            bool(mf & MF_BINKEY),
        )

    # ---- writes ----

    def _store_slow(
        self,
        mode: StoreMode,
        key: bytes,
        value: bytes,
        flags: int = 0,
        exptime: int = 0,
        cas: int = 0,
    ) -> StoreResult:
        """`store` for every mode and size (the closure in `_bind_hot_paths` takes the
        common set itself)."""
        if len(key) > KEY_MAX_LENGTH:
            raise ValueError(f"keys are at most {KEY_MAX_LENGTH} bytes (the parser says so)")
        total = self._base_size + len(key) + len(value)
        if flags:
            total += 4
        if total > self.item_size_max:
            return StoreResult.TOO_LARGE
        part, h = self._part(key)
        # memcached counts a set in its item's class whatever the outcome, unless the item
        # could not be allocated (slab_stats set_cmds, in complete_nread_ascii)
        counted = self._items.class_for(total) * NSTAT + S_CMD_SET
        with self._hold:
            with part:
                result = self._store_locked(part, h, mode, key, value, flags, exptime, cas, True)
                if result.__class__ is not int and result not in _UNALLOCATED:
                    part.cst[counted] += 1
            if result.__class__ is int:
                # The item's class has no page and the pool none to give: move one from
                # another class (no lock may be held for that), then try once more.
                self._items.steal_page(result)
                with part:
                    result = self._store_locked(
                        part, h, mode, key, value, flags, exptime, cas, False
                    )
                    if result not in _UNALLOCATED:
                        part.cst[counted] += 1
        return result  # type: ignore[return-value]

    def _store_locked(
        self,
        part: Partition,
        h: int,
        mode: StoreMode,
        key: bytes,
        value: bytes | Reservation,
        flags: int,
        exptime: int,
        cas: int,
        steal_ok: bool,
        stale: bool = False,
        mflags: int = 0,
        joined: tuple[Reservation, int, int] | None = None,
    ) -> StoreResult | int:
        """`store` under the partition lock; an int (a class id) asks for a page first.

        memcached's ``do_store_item``, with the meta commands' two extras: with `stale` (``ms
        ... I``) a CAS *older* than the item's is not refused but stores the value marked
        stale, keeping the item's exptime and its recache token (memcached's CAS_STALE); a
        CAS given with append or prepend must match. `mflags` (``MF_*``) are the new item's
        (a base64 key); append and prepend make an item of their own, without them.

        `value` may be a `Reservation` (a value received into place, see `commit`): a set,
        add, replace or cas links its chunks as the item; an append or prepend copies the
        old value and it into `joined`'s chunks (reserved for the item as it is now: a `_Join`
        asks for them) and links those, as memcached's ``_store_item_copy_data`` does.

        Any mode but set takes the new item's chunks first (a `_Probe`, unless `_must_probe`
        shows the allocation cannot fail), before the key is looked up, as memcached
        allocates the item before ``do_store_item`` (a `Reservation` was taken that way too):
        with no room, the store is NO_MEMORY whatever the key holds (an add of a key that
        exists, a cas that would not match), and an append or prepend holds its own bytes'
        chunks while it takes the joined item's (with no room for that one: NOT_STORED, as
        ``do_store_item`` answers). A set needs no probe: it stores whatever the key holds,
        and `_link_locked` allocates before it touches the old item. What the old item
        becomes when the store fails at that allocation is the caller's
        to say (it depends on the syntax: see `Handlers`); a set here drops it."""
        probe: _Probe | None = None
        if (
            mode is not _SET
            and not isinstance(value, Reservation)
            and self._must_probe(mode, len(key), len(value), flags)
        ):
            got = self._probe_locked(part, len(key), len(value), flags, steal_ok, -1)
            if not isinstance(got, _Probe):
                return got
            probe = got
        try:
            i = self._find_locked(part, key, h, storing=True)
            old = part.tbl[i] & ADDR_MASK if i >= 0 else -1
            pm = self._pm
            new_exptime = 0
            if exptime:
                # a value received into place: its time to live counts from its command
                # line, as memcached converts it there (a slow upload does not add to it)
                since = value.since if value.__class__ is Reservation else None
                new_exptime = self._realtime(exptime, since)
            if mode is _SET:
                pass
            elif mode is _ADD:
                if old >= 0:
                    # add promotes the existing item (memcached's do_item_update)
                    self._updated_locked(old)
                    return StoreResult.NOT_STORED
            elif mode is _CAS:
                if old < 0:
                    return StoreResult.NOT_FOUND
                base = pm[old + 20] * NSTAT  # OFF_CLSID
                old_cas = U64.unpack_from(pm, old + OFF_CAS)[0]
                if not self.cas_enabled or cas != old_cas:
                    # with -C memcached never matches a cas; a CAS of 0 never matches either
                    if not (stale and self.cas_enabled and 0 < cas < old_cas):
                        part.cst[base + S_CAS_BADVAL] += 1
                        return StoreResult.EXISTS
                    new_exptime = I32.unpack_from(pm, old + OFF_EXPTIME)[0]
                    mflags |= MF_STALE | (pm[old + OFF_MFLAGS] & MF_WON)
                part.cst[base + S_CAS_HITS] += 1
            else:  # REPLACE, APPEND, PREPEND
                if old < 0:
                    return StoreResult.NOT_STORED
                if mode is not _REPLACE:
                    if cas and self.cas_enabled and cas != U64.unpack_from(pm, old + OFF_CAS)[0]:
                        return StoreResult.EXISTS
                    # append/prepend keep the old item's flags and exptime
                    _, _, _, _, old_nbytes, flags, old_exptime, _, _, old_cas, _ = (
                        GET_HDR.unpack_from(pm, old)
                    )
                    if isinstance(value, Reservation):
                        return self._join_locked(  # type: ignore[return-value]
                            part, i, old, key, value, mode, flags, old_nbytes, old_exptime, old_cas,
                            joined,
                        )  # fmt: skip
                    current = self._items.read_value(old)
                    value = current + value if mode is _APPEND else value + current
                    if (
                        item_size(len(key), flags, len(value), self.cas_enabled)
                        > self.item_size_max
                    ):
                        return StoreResult.NOT_STORED
                    split = len(current) if mode is _APPEND else len(value) - len(current)
                    result = self._link_locked(
                        part, i, old, key, h, value, flags, old_exptime, steal_ok, False,
                        split=split,
                    )  # fmt: skip
                    # no room for the joined item: memcached's do_store_item answers NOT_STORED
                    # (its own bytes' item was allocated: the store did not fail for memory)
                    return _NOT_STORED if result in _UNALLOCATED else result
            if isinstance(value, Reservation):
                return self._link_reserved_locked(part, i, old, value, new_exptime, mflags)
            return self._link_locked(
                part, i, old, key, h, value, flags, new_exptime, steal_ok, mode is _SET, 0, mflags,
                probe,
            )  # fmt: skip
        finally:
            if probe is not None and not probe.used:
                self._unprobe_locked(probe)

    def _must_probe(self, mode: StoreMode, nkey: int, nbytes: int, flags: int) -> bool:
        """Whether the new item's chunks must be taken before the lookup. Not for an add,
        replace or cas of one chunk whose class has one free (`Items.has_free_chunk`): the
        allocation would succeed, with nothing evicted and no page taken, so its outcome
        cannot differ, and `_link_locked` takes the chunk only if the store happens (or
        rewrites the old item in place). An append or prepend always probes: memcached holds
        its own bytes' chunk while it allocates the joined item, which may need that chunk."""
        if mode is _APPEND or mode is _PREPEND:
            return True
        total = self._base_size + nkey + nbytes
        if flags:
            total += 4
        if total > self._chunk_max:
            return True
        return not self._items.has_free_chunk(self._lookup[(total + 7) >> 3])

    def _probe_locked(
        self,
        part: Partition,
        nkey: int,
        nbytes: int,
        flags: int,
        steal_ok: bool,
        split: int,
        whole: bool = True,
    ) -> _Probe | StoreResult | int:
        """The chunks of a new item of `nkey` + `nbytes` (`_Probe`; of a chained one, its
        head alone unless `whole`: `grow` takes the rest), or NO_MEMORY (counted in the
        class's outofmemory, as memcached's do_item_alloc counts it), or, when the class has
        no page and `steal_ok`, its id (the caller moves a page to it and tries again)."""
        total = self._base_size + nkey + nbytes
        if flags:
            total += 4
        items = self._items
        now = self._now()
        if total <= self._chunk_max:
            cid = self._lookup[(total + 7) >> 3]
            a = items.alloc(cid, part, now)
            if a >= 0:
                return _Probe(cid, [a], None)
            need = cid
        else:
            cid = self._largest
            shape = (nkey, nbytes, flags, split)
            plan = items.chain_plan(*shape) if whole else [items.head_class(nkey, flags)]
            got = items.alloc_chain(part, plan, now, shape)
            if isinstance(got, list):
                return _Probe(cid, got, plan)
            a, need = got
            if a == NO_CHUNK:
                return _NO_MEMORY_READING  # memcached counts no outofmemory for a chunk
        if a == NEED_PAGE and steal_ok:
            return need
        part.cst[cid * NSTAT + S_OUTOFMEMORY] += 1
        return _NO_MEMORY

    def _unprobe_locked(self, probe: _Probe) -> None:
        """Give back a `_Probe`'s chunks: the store did not make them its item."""
        self._items.free_chunks(probe.addrs)

    def _join_locked(
        self,
        part: Partition,
        i: int,
        old: int,
        key: bytes,
        res: Reservation,
        mode: StoreMode,
        flags: int,
        old_nbytes: int,
        old_exptime: int,
        old_cas: int,
        joined: tuple[Reservation, int, int] | None,
    ) -> StoreResult | _Join:
        """Append or prepend the value received into `res` to the item at `old` (slot `i`):
        both values are copied, chunk to chunk, into `joined`'s chunks, which become the
        item; the old item is left whole until then. A `_Join` if `joined` is missing or was
        reserved for another state of the item."""
        nbytes = old_nbytes + res.nbytes
        if item_size(len(key), flags, nbytes, self.cas_enabled) > self.item_size_max:
            return StoreResult.NOT_STORED
        if joined is None or joined[1] != old or joined[2] != old_cas:
            return _Join(nbytes, flags, old, old_cas, old_nbytes if mode is _APPEND else res.nbytes)
        into = joined[0]
        items = self._items
        old_views = items.value_views(old, len(key), old_nbytes, self._pm[old] & ST_CHAINED)
        data = res.views
        copy_views(into.views, old_views + data if mode is _APPEND else data + old_views)
        return self._link_reserved_locked(part, i, old, into, old_exptime, 0)

    def _link_reserved_locked(
        self, part: Partition, i: int, old: int, res: Reservation, exptime: int, mflags: int
    ) -> StoreResult:
        """The value is in `res`'s chunks: they become the item of its key (replacing `old`,
        the item in slot `i`, if >= 0), with server time `exptime` and `mflags`."""
        base = res.cid * NSTAT
        cst = part.cst
        if old < 0 and part.full():
            cst[base + S_OUTOFMEMORY] += 1
            return _NO_MEMORY
        items = self._items
        items.link_reserved(res.head, exptime, self._now(), part.next_cas())
        if mflags:
            self._pm[res.head + OFF_MFLAGS] = mflags
        entry = make_entry(res.h >> self._pshift, res.head)
        if old >= 0:
            part.tbl[i] = entry
            items.forget_locked(part, old)
        else:
            part.insert_at(-1 - i, entry)
        res.linked = True
        cst[base + S_NUMBER] += 1
        cst[base + S_MEM] += item_size(len(res.key), res.flags, res.nbytes, self.cas_enabled)
        if exptime:
            cst[base + S_TTL] += 1
        cst[base + S_TOTAL] += 1
        return _STORED

    def _link_locked(
        self,
        part: Partition,
        i: int,
        old: int,
        key: bytes,
        h: int,
        value: bytes,
        flags: int,
        exptime: int,
        steal_ok: bool,
        drop_old_on_failure: bool,
        fetched: int = 0,
        mflags: int = 0,
        probe: _Probe | None = None,
        split: int = -1,
    ) -> StoreResult | int:
        """Write a new item for `key` (replacing `old`, the item in slot `i`, if >= 0), with
        `mflags` in its `OFF_MFLAGS` byte, into `probe`'s chunks if given (taken for this
        item before `i` was found), else into chunks taken here (a chained one's as memcached
        takes them for an append or prepend when `split`, the first part's length, is given:
        `Items.chain_plan`)."""
        items = self._items
        pm = self._pm
        now = self._now()
        nkey = len(key)
        nbytes = len(value)
        total = self._base_size + nkey + nbytes
        if flags:
            total += 4
        chained = total > self._chunk_max
        cid = self._largest if chained else self._lookup[(total + 7) >> 3]
        cst = part.cst
        base = cid * NSTAT
        if old < 0 and part.full():
            cst[base + S_OUTOFMEMORY] += 1
            return _NO_MEMORY
        cas = part.next_cas()
        if old >= 0 and not chained and self.evictions and probe is None:
            st, _, _, _, old_nbytes, old_flags, old_exptime, _, old_cid, _, _ = GET_HDR.unpack_from(
                pm, old
            )
            if old_cid == cid and not st & ST_CHAINED and not pm[old + OFF_PINS]:
                # Same class, one chunk: rewrite in place. With -M this is not done: there
                # memcached must find room for the new item before it frees the old one.
                # Nor while a reply sends the old value from its page (pinned).
                HDR.pack_into(
                    pm,
                    old,
                    ST_LINKED,
                    nkey,
                    1,
                    fetched,
                    nbytes,
                    flags,
                    exptime,
                    now,
                    cid,
                    cas,
                    h,
                    -1,
                )
                vo = old + HEADER + nkey
                pm[vo : vo + nbytes] = value
                if mflags:
                    pm[old + OFF_MFLAGS] = mflags
                cst[base + S_MEM] += total - item_size(
                    nkey, old_flags, old_nbytes, self.cas_enabled
                )
                if bool(exptime) != bool(old_exptime):
                    cst[base + S_TTL] += 1 if exptime else -1
                cst[base + S_TOTAL] += 1
                return _STORED
        used = part.used
        chain: list[int] | None = None
        plan: list[int] = []
        if probe is not None:
            probe.used = True
            if probe.plan is not None:
                chain, a, plan = probe.addrs, 0, probe.plan
            else:
                a = probe.addrs[0]
        elif not chained:
            a = items.alloc(cid, part, now)
            need = cid
        else:
            shape = (nkey, nbytes, flags, split)
            plan = items.chain_plan(*shape)
            got = items.alloc_chain(part, plan, now, shape)
            if isinstance(got, list):
                chain = got
                a = 0
            else:
                a, need = got
                if a == NO_CHUNK:
                    # memcached read the value into the chunks it could get: the old item
                    # stays, nothing is counted (conn_nread's "Out of memory during read")
                    return _NO_MEMORY_READING
        if a < 0:
            if a == NEED_PAGE and steal_ok:
                return need
            cst[base + S_OUTOFMEMORY] += 1
            if drop_old_on_failure and old >= 0:
                # memcached drops the old value when a set fails: never serve stale data
                j = part.find_addr(h >> self._pshift, old)
                if j >= 0:
                    items.unlink_locked(part, j, old)
            return _NO_MEMORY
        if part.used != used:
            # The allocation evicted items of this partition: the table moved under `i`.
            i = self._raw_find_locked(part, key, h)
            old = part.tbl[i] & ADDR_MASK if i >= 0 else -1
        if chain is None:
            ref = a & HOLE
            a &= ~HOLE
            items.write(a, key, h, value, flags, exptime, now, cas, ref, cid)
        else:
            a = items.write_chain(chain, plan, key, h, value, flags, exptime, now, cas)
        if fetched:
            pm[a + OFF_FETCHED] = 1
        if mflags:
            pm[a + OFF_MFLAGS] = mflags
        entry = make_entry(h >> self._pshift, a)
        if old >= 0:
            part.tbl[i] = entry
            items.forget_locked(part, old)
        else:
            part.insert_at(-1 - i, entry)
        cst[base + S_NUMBER] += 1
        cst[base + S_MEM] += total
        if exptime:
            cst[base + S_TTL] += 1
        cst[base + S_TOTAL] += 1
        return _STORED

    # ---- values received into place (memcached's conn_nread into its new item) ----

    def reserve(
        self, key: bytes, nbytes: int, flags: int, split: int = -1
    ) -> Reservation | StoreResult:
        """Chunks for an item of `key` whose `nbytes` of value will be written straight into
        them (`Reservation.views`, received from a socket) before `commit` links it, or
        `abandon` frees them. Until then it is no item (no table entry, no count), but its
        memory is the cache's: -m bounds it. TOO_LARGE or NO_MEMORY if there is no room.
        A chained item's value chunks (unless `split`: a joined value, copied at once) are
        taken one at a time as its bytes arrive, by `grow`, as memcached takes them: so an
        item finished meanwhile can be evicted for them."""
        nkey = len(key)
        total = self._item_total(nkey, nbytes, flags)
        if total > self.item_size_max or nkey > KEY_MAX_LENGTH:
            return StoreResult.TOO_LARGE
        items = self._items
        part, h = self._part(key)
        with self._hold:
            for attempt in (0, 1):
                with part:
                    if self._pin_free is not None and not self._pin_free:
                        # The pin table row is full: a reservation it cannot list would be
                        # lost for good if this process died. Refused, before anything is
                        # evicted for it, as a store finding no memory is.
                        cid = self._largest
                        if total <= self._chunk_max:
                            cid = self._lookup[(total + 7) >> 3]
                        part.cst[cid * NSTAT + S_OUTOFMEMORY] += 1
                        return StoreResult.NO_MEMORY
                    whole = split >= 0
                    got = self._probe_locked(part, nkey, nbytes, flags, not attempt, split, whole)
                    if isinstance(got, _Probe):
                        head = items.write_reserved(
                            got.addrs, got.plan, key, h, nbytes, flags, got.cid
                        )
                        token = self._list_reservation(head)
                        st = ST_CHAINED if got.plan is not None else 0
                        views = items.value_views(head, nkey, nbytes, st)
                        res = Reservation(head, key, h, nbytes, got.cid, token, views, flags)
                        if got.plan is not None and not whole:
                            res.left = nbytes + 2
                        res.since = self._now()
                        return res
                    if not isinstance(got, int):
                        return got
                items.steal_page(got)  # no page for the class: move one, no lock held
        raise AssertionError("unreachable")

    def grow(self, res: Reservation) -> memoryview | None:
        """The next chunk of `res`'s chained item, taken now that its bytes arrive
        (`Items.chunk_for`): where the next of the value goes, or None if no chunk could be
        had (`res.failed`: its commit answers NO_MEMORY_READING; the rest of the value is
        dropped, as memcached swallows it). A chunk that the value fills is followed at once
        by one for what is left of its CRLF, if anything is (memcached takes it as the
        CRLF arrives)."""
        items = self._items
        part = self._parts[res.h & self._pmask]
        view = None
        with self._hold:
            for attempt in (0, 1):
                with part:
                    while res.left and (view is None or res.left <= 2):
                        # (its address and room, or what failed and the chunk's class)
                        c, got = items.chunk_for(part, res.head, res.last, res.left, self._now())
                        if c < 0:
                            break
                        used = min(got, max(res.left - 2, 0))
                        res.left = max(res.left - got, 0)
                        res.last = c
                        if used:
                            view = self.arena.pages_view()[c + HEADER : c + HEADER + used]
                            res.views.append(view)
                    else:
                        if view is not None:
                            return view
                        # asked with nothing left to take (a connection asks only while
                        # value bytes remain): failed, never a value stored short
                        break
                if c != NEED_PAGE or attempt:
                    break
                items.steal_page(got)  # no page for the chunk's class: move one, no lock held
        res.failed = True
        return None

    def _list_reservation(self, head: int) -> int:
        """List the reservation at `head` in the pin table row (checked not full, under the
        partition lock that `reserve` still holds): its entry, or -1 (slot 0: no row)."""
        row = self._pin_row
        if row is None:
            return -1  # threads: nothing to clean up after
        assert self._pin_free is not None
        k = self._pin_free.pop()
        row[k] = head + RESERVE_TAG
        return k

    def _unlist_reservation(self, token: int) -> None:
        if token >= 0:
            self._pin_row[token] = 0
            assert self._pin_free is not None
            self._pin_free.append(token)

    def commit(
        self, res: Reservation, mode: StoreMode, exptime: int = 0, cas: int = 0
    ) -> StoreResult:
        """Store the value written into `res` with `store`'s meaning (any mode: append and
        prepend join it to the old value); its chunks go back if they do not become the
        item."""
        return self._commit(res, mode, exptime, cas, False, 0)[0]

    def commit_ex(
        self,
        res: Reservation,
        mode: StoreMode,
        exptime: int = 0,
        cas: int = 0,
        stale: bool = False,
        binary_key: bool = False,
    ) -> tuple[StoreResult, int]:
        """`commit` with `store_ex`'s extras and result (the new item's CAS)."""
        return self._commit(res, mode, exptime, cas, stale, MF_BINKEY if binary_key else 0)

    def _commit(
        self, res: Reservation, mode: StoreMode, exptime: int, cas: int, stale: bool, mflags: int
    ) -> tuple[StoreResult, int]:
        """`store_ex` for a value received into `res`: the same `_store_locked`, counted the
        same way. An append or prepend first reserves the joined item's chunks, with no lock
        held (`_Join`), and tries again; if the item changed meanwhile, once more. The old
        item is pinned meanwhile, as memcached's do_store_item holds a reference to it while
        it allocates the joined one: the allocation's evictions pass it by (they took it,
        and the append found nothing to append to: NOT_STORED, the item lost)."""
        part = self._parts[res.h & self._pmask]
        if res.failed:  # a chunk could not be had as the value came (`grow`)
            with self._hold, part:
                self._release_locked(res)
            return _NO_MEMORY_READING, 0
        counted = res.cid * NSTAT + S_CMD_SET
        steal_ok = True
        joined: tuple[Reservation, int, int] | None = None
        pins: list[int] = []  # the old items held while a joined item's chunks are taken
        try:
            while True:
                with self._hold:
                    with part:
                        result: Any = self._store_locked(
                            part, res.h, mode, res.key, res, res.flags, exptime, cas,
                            steal_ok, stale, mflags, joined,
                        )  # fmt: skip
                        if result.__class__ is _Join:
                            token = self._pin_locked(result.old)
                            if token is not None:  # (else unheld: a full pin table row)
                                pins.append(token)
                        if result.__class__ is not int and result.__class__ is not _Join:
                            if result not in _UNALLOCATED:
                                part.cst[counted] += 1
                            new_cas = 0
                            if result is _STORED and self.cas_enabled:
                                j = self._raw_find_locked(part, res.key, res.h)
                                new_cas = U64.unpack_from(
                                    self._pm, (part.tbl[j] & ADDR_MASK) + OFF_CAS
                                )[0]
                            self._release_locked(res)
                            if joined is not None:
                                self._release_locked(joined[0])
                                joined = None
                            return result, new_cas
                    if result.__class__ is int:
                        self._items.steal_page(result)
                        steal_ok = False
                        continue
                need = result
                assert isinstance(need, _Join)
                if joined is not None:
                    self.abandon(joined[0])
                    joined = None
                got = self.reserve(res.key, need.nbytes, need.flags, need.split)
                if not isinstance(got, Reservation):
                    # no room for the joined item: memcached's do_store_item answers
                    # NOT_STORED (the received bytes had their item: counted as a set)
                    with self._hold, part:
                        part.cst[counted] += 1
                        self._release_locked(res)
                    return _NOT_STORED, 0
                joined = (got, need.old, need.old_cas)
        except BaseException:
            if joined is not None:
                self.abandon(joined[0])
            raise
        finally:
            for token in pins:  # (an old item replaced meanwhile goes with its last pin)
                self.unpin(token)

    def _release_locked(self, res: Reservation) -> None:
        """`res` is done with (its partition lock held): its chunks go back unless they
        became an item, and its pin table entry is cleared."""
        if not res.linked:
            self._items.free_reserved_locked(res.head)
        self._unlist_reservation(res.token)

    def abandon(self, res: Reservation, bad_chunk: bool = False) -> None:
        """The value never arrived whole: give `res`'s chunks back. `bad_chunk`: it came,
        but not ended by \\r\\n; memcached counts such a set in its item's class (its
        item was allocated: `count_bad_chunk`)."""
        part = self._parts[res.h & self._pmask]
        with self._hold, part:
            self._release_locked(res)
            if bad_chunk:
                part.cst[res.cid * NSTAT + S_CMD_SET] += 1

    def count_bad_chunk(self, key: bytes, flags: int, nbytes: int) -> None:
        """A set of `nbytes` whose data did not end in \\r\\n (nothing stored): memcached
        allocated its item before it looked, and counted it in the item's class (slab_stats
        set_cmds, in complete_nread_ascii); an item over -I had none to count in."""
        total = self._item_total(len(key), nbytes, flags)
        if total > self.item_size_max:
            return
        part, _ = self._part(key)
        with self._hold, part:  # a death inside is seen (holder word), as every operation's
            part.cst[self._items.class_for(total) * NSTAT + S_CMD_SET] += 1

    def _item_total(self, nkey: int, nbytes: int, flags: int) -> int:
        """An item's size in its chunks (header, key, value, the flags' 4 bytes if any)."""
        return self._base_size + nkey + nbytes + (4 if flags else 0)

    def delete(self, key: bytes) -> bool:
        """True if a live item was deleted."""
        part, h = self._part(key)
        with self._hold, part:
            i = self._find_locked(part, key, h)
            if i < 0:
                return False
            a = part.tbl[i] & ADDR_MASK
            part.cst[self._pm[a + 20] * NSTAT + S_DELETE_HITS] += 1  # OFF_CLSID
            self._items.unlink_locked(part, i, a)
            return True

    def incr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, True)

    def decr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, False)

    def _delta(self, key: bytes, delta: int, incr: bool) -> tuple[DeltaResult, int]:
        part, h = self._part(key)
        with self._hold:
            with part:
                result = self._delta_locked(part, h, key, delta, incr, True)
            if result[0] is None:
                self._items.steal_page(result[1])
                with part:
                    result = self._delta_locked(part, h, key, delta, incr, False)
        return result  # type: ignore[return-value]

    def _delta_locked(
        self,
        part: Partition,
        h: int,
        key: bytes,
        delta: int,
        incr: bool,
        steal_ok: bool,
        cas: int = 0,
    ) -> tuple[DeltaResult | None, int]:
        """memcached's ``do_add_delta``: wraps at 2^64 going up, stops at 0 going down; an
        empty or chained value is not a number (memcached: ``nbytes <= 2`` or chunked), and a
        non-zero `cas` must match the item's (checked after that, before the value is read).
        (None, class id) asks for a page first."""
        i = self._find_locked(part, key, h)
        if i < 0:
            return DeltaResult.NOT_FOUND, 0
        a = part.tbl[i] & ADDR_MASK
        pm = self._pm
        st, nkey, _, _, nbytes, flags, exptime, _, cid, item_cas, _ = GET_HDR.unpack_from(pm, a)
        if not nbytes or st & ST_CHAINED:
            return DeltaResult.NON_NUMERIC, 0
        if cas and cas != (item_cas if self.cas_enabled else 0):
            return DeltaResult.EXISTS, 0
        hits = cid * NSTAT + (S_INCR_HITS if incr else S_DECR_HITS)  # the old item's
        vo = a + HEADER + nkey
        number = parse_counter(pm[vo : vo + nbytes])
        if number is None:
            return DeltaResult.NON_NUMERIC, 0
        if incr:
            number = (number + delta) & UINT64_MAX
        else:
            number = max(number - delta, 0)
        digits = b"%d" % number
        if len(digits) <= nbytes and not pm[a + OFF_PINS]:
            # memcached rewrites in place and pads with spaces to the old length
            pm[vo : vo + nbytes] = digits.ljust(nbytes)
            U64.pack_into(pm, a + OFF_CAS, part.next_cas())
            self._updated_locked(a)  # do_add_delta in place: do_item_update
        else:
            # memcached's do_add_delta makes a new item, not yet fetched
            got = self._link_locked(
                part, i, a, key, h, digits, flags, exptime, steal_ok, False, False
            )
            if got.__class__ is int:
                return None, got
            if got is _NO_MEMORY:
                return DeltaResult.NO_MEMORY, 0
        part.cst[hits] += 1
        return DeltaResult.OK, number

    def unlink(self, key: bytes) -> None:
        """Drop `key` if present, without counting it as a delete (a failed ``set``)."""
        part, h = self._part(key)
        with self._hold, part:
            i = self._raw_find_locked(part, key, h)
            if i >= 0:
                self._items.unlink_locked(part, i, part.tbl[i] & ADDR_MASK)

    def flush_all(self, delay: int = 0) -> None:
        """Invalidate every item now, or those stored before `delay` seconds from now.

        Nothing is walked: each partition records the last CAS unique drawn as its flush mark
        (items at or below it are gone), every partition's lock held from the cut to the
        last mark (`Items.flush`); items are dropped when
        next looked up, reached by the clock hand, or swept by the crawler.
        """
        with self._hold:
            self._items.flush(self._realtime(delay) if delay > 0 else 0)

    # ---- limits, maintenance ----

    def set_memory_limit(self, memory_limit: int) -> bool:
        """``cache_memlimit``: new pages are taken up to the new limit; when it went down,
        spare pages are freed now and the automover gives back pages in use, one a tick. A
        limit past the arena's reserve is taken, as memcached takes one past the machine's
        memory, and logged: pages stop at the reserve (a client-set limit that the daemon
        met by evicting, with nothing said but malloc_fails, was found by a slabs hunt)."""
        pool = self._items.pool
        with self._hold:
            pool.set_limit(memory_limit)
        reserve = pool.max_pages * SLAB_PAGE_SIZE
        if memory_limit > reserve:
            log.warning(
                "cache_memlimit %d MB is past the %d MB this daemon reserved at its start "
                "(-m, at least 1 GB, and a page per class): it holds at most that; start it "
                "with -m at the largest limit it will be given",
                memory_limit >> 20,
                reserve >> 20,
            )
        return True

    def reassign(self, src: int, dst: int) -> ReassignResult:
        """``slabs reassign <src> <dst>``: ask the page mover to move a page from class `src`
        to `dst` (0: the global pool; src -1: any class with a page to spare), which
        `move_asked` does (`Items.reassign`)."""
        with self._hold:
            return self._items.reassign(src, dst)

    def move_asked(self) -> bool:
        """The page mover (the daemon's `SlabAutomover`): the move ``slabs reassign`` asked
        for, if one is waiting (`Items.move_asked`). True if a page moved."""
        with self._hold:
            return self._items.move_asked()

    @property
    def move_waiting(self) -> bool:
        """Whether a move asked for by ``slabs reassign`` is not done."""
        return self._items.move_waiting

    def await_move_ask(self, timeout: float) -> None:
        """Sleep until a page move is asked for, at most `timeout` seconds (no lock held)."""
        self._items.await_move_ask(timeout)

    def wake_mover(self) -> None:
        """End an `await_move_ask` now."""
        self._items.wake_mover()

    def automove_tick(self, ratio: float = 0.8, window: int = 30) -> bool:
        """One run of the slab automover (the daemon's `SlabAutomover` calls it); `ratio`
        and `window`: memcached's ``slab_automove_ratio`` and ``slab_automove_window``."""
        with self._hold:
            return self._items.automove_tick(ratio, window)

    def crawl(
        self,
        classes: set[int] | None = None,
        pause: Callable[[int], None] | None = None,
        limit: int = 0,
        sweep: bool = False,
    ) -> int:
        """Reclaim expired and flushed items now, without reads (the crawler's sweep; a
        ``lru_crawler crawl`` asks for one: `ask_crawl`), or, with `sweep`, the flushed
        ones alone (after a flush_all): `Items.crawl`. `pause` runs
        between two pages (the crawler's naps) with the holder word clear: no lock is held
        there but the pass's own crawl lock, so a process killed in a pause has left the
        arena whole, and costs no new one (its successor lets the crawl lock go:
        `release_holder`)."""
        with self._hold:
            return self._items.crawl(classes, self._unheld(pause), limit, self.holder + 1, sweep)

    def _unheld(self, pause: Callable[[int], None] | None) -> Callable[[int], None] | None:
        """`pause`, run with the holder word clear (a crawl pass's naps)."""
        if pause is None:
            return None
        hold = self._hold

        def nap(checked: int) -> None:
            hold.__exit__()
            try:
                pause(checked)
            finally:
                hold.__enter__()

        return nap

    def ask_crawl(self, classes: set[int] | None, limit: int = 0) -> bool:
        """``lru_crawler crawl``: ask the crawler for a pass (`Items.ask_crawl`), which
        `crawl_asked` runs; False if one runs or is asked for already (memcached's BUSY)."""
        with self._hold:
            return self._items.ask_crawl(classes, limit)

    @property
    def crawl_busy(self) -> bool:
        """Whether a pass runs or is asked for (memcached's crawler then answers BUSY to a
        metadump too: one crawler job at a time)."""
        return self._items.crawl_busy

    @property
    def crawl_waiting(self) -> bool:
        """Whether a pass asked for has not begun (`ask_crawl`)."""
        return self._items.crawl_waiting

    def await_crawl_ask(self, timeout: float) -> None:
        """The crawler, between sweeps: wait until a pass is asked for, or `timeout` s."""
        self._items.await_crawl_ask(timeout)

    def wake_crawler(self) -> None:
        """End the crawler's `await_crawl_ask` now (it is stopping)."""
        self._items.wake_crawler()

    def crawl_asked(self, pause: Callable[[int], None] | None = None) -> int:
        """The crawler: run the pass asked for, if any and none runs (as `crawl`, naps and
        all). How many items it reclaimed."""
        with self._hold:
            return self._items.crawl_asked(self._unheld(pause), self.holder + 1)

    # ---- stats ----

    def item_stats(self, rows: list[list[int]] | None = None) -> ItemStats:
        """The item figures of ``stats``, from `rows` (`Items.class_counters`, read now if
        not given)."""
        total = ItemStats()
        if rows is None:
            rows = self._items.class_counters()
        for row in rows[1:]:
            total.curr_items += row[S_NUMBER]
            total.total_items += row[S_TOTAL]
            total.bytes += row[S_MEM]
            total.evictions += row[S_EVICTED]
            total.evicted_unfetched += row[S_EVICTED_UNFETCHED]
            total.reclaimed += row[S_RECLAIMED]
            total.swept += row[S_SWEPT]
            total.expired_unfetched += row[S_EXPIRED_UNFETCHED]
            total.outofmemory += row[S_OUTOFMEMORY]
            total.crawler_reclaimed += row[S_CRAWLER_RECLAIMED]
        w = self._w
        for part in self._parts:
            total.get_expired += w[part.tb + T_GET_EXPIRED]
            total.get_flushed += w[part.tb + T_GET_FLUSHED]
        return total

    def stats(self) -> dict[str, Any]:
        """General ``stats`` figures owned by storage, under memcached's names."""
        items = self._items
        rows = items.class_counters()
        s = self.item_stats(rows)
        classes = items.classes[1:]
        # each table's size as the arena has it (a process's view learns a rebuild only
        # when it next takes the partition's lock: the figure was then the asking worker's)
        w = self._w
        slots = sum(int(w[p.tb + T_MASK]) + 1 for p in self._parts)
        checked = sum(c.field(C_CRAWLER_CHECKED) for c in classes)
        reflocked = sum(c.field(C_REFLOCKED) for c in classes)
        warm = sum(c.field(C_MOVES_TO_WARM) for c in classes)
        fig = items.figure
        return {
            "limit_maxbytes": self.memory_limit,
            "hash_power_level": int(math.log2(slots)),
            "hash_bytes": slots * 8,
            "hash_is_expanding": 0,
            "slab_reassign_rescues": sum(r[S_MOVE_RESCUED] for r in rows),
            "slab_reassign_chunk_rescues": fig(G_CHUNK_RESCUES),
            "slab_reassign_evictions_nomem": sum(r[S_MOVE_EVICTED] for r in rows),
            "slab_reassign_inline_reclaim": 0,
            "slab_reassign_busy_items": fig(G_REASSIGN_BUSY),
            "slab_reassign_busy_deletes": 0,
            "slab_reassign_running": fig(G_MOVING),
            "slabs_moved": fig(G_SLABS_MOVED),
            # running from the ask on, as memcached's lru_crawler_start sets it before its OK
            # (a client polls it until 0 to know the pass is done: lru-crawler.t); read
            # asked first: a pass marks itself running before it clears the ask
            "lru_crawler_running": 1 if fig(G_CRAWL_ASKED) or fig(G_CRAWLING) else 0,
            "lru_crawler_starts": fig(G_CRAWLER_STARTS),
            "malloc_fails": fig(G_MALLOC_FAILS),
            "bytes": s.bytes,
            "curr_items": s.curr_items,
            "total_items": s.total_items,
            "slab_global_page_pool": fig(G_NSPARE),
            "expired_unfetched": s.expired_unfetched,
            "evicted_unfetched": s.evicted_unfetched,
            "evicted_active": 0,
            "evictions": s.evictions,
            "reclaimed": s.reclaimed,
            "crawler_reclaimed": s.crawler_reclaimed,
            "crawler_items_checked": checked,
            "lrutail_reflocked": reflocked,
            "moves_to_cold": 0,
            "moves_to_warm": warm,
            "moves_within_lru": 0,
            "direct_reclaims": s.evictions + s.reclaimed - s.swept,
            "lru_bumps_dropped": 0,
            "get_expired": s.get_expired,
            "get_flushed": s.get_flushed,
        }

    def reset_stats(self, like: Cache | None = None) -> None:
        """``stats reset``: zero the counters (not the gauges curr_items and bytes); or set
        them to those of `like`, a cache of the same settings whose arena a dead process
        left untrustworthy: what it counted carries on in the empty cache that replaces it
        (total_items, evictions, get_expired... as the workers' own counters carry on)."""
        with self._hold:
            self._items.reset_counters(like._items if like is not None else None)

    def slabs_stats(self) -> tuple[list[tuple[int, dict[str, int]]], dict[str, int]]:
        """``stats slabs``: per class with pages, memcached's fields; then the totals."""
        items = self._items
        rows = items.class_counters()
        out = []
        # The holder word is set around each class lock alone: a process that dies between
        # two (a scrape of the metrics in the maintainer, a worker's ``stats slabs``) has
        # changed nothing, and its death costs nothing (the supervisor's `died_inside`).
        for cls in items.classes[1:]:
            with self._hold, cls.lock:
                pages = cls.npages
                if not pages:
                    continue
                total = pages * cls.perslab
                free = cls.nfree + cls.uncarved  # never-used chunks are free chunks too
            row = rows[cls.id]
            out.append(
                (
                    cls.id,
                    {
                        "chunk_size": cls.size,
                        "chunks_per_page": cls.perslab,
                        "total_pages": pages,
                        "total_chunks": total,
                        "used_chunks": total - free,
                        "free_chunks": free,
                        "free_chunks_end": 0,  # memcached 1.6: always 0 (pages cut whole)
                        "get_hits": row[S_GET_HITS],
                        "cmd_set": row[S_CMD_SET],
                        "delete_hits": row[S_DELETE_HITS],
                        "incr_hits": row[S_INCR_HITS],
                        "decr_hits": row[S_DECR_HITS],
                        "cas_hits": row[S_CAS_HITS],
                        "cas_badval": row[S_CAS_BADVAL],
                        "touch_hits": row[S_TOUCH_HITS],
                    },
                )
            )
        return out, {"active_slabs": len(out), "total_malloced": items.pool.malloced}

    def items_stats(self) -> list[tuple[int, dict[str, int]]]:
        """``stats items``: per class holding items, memcached's fields. The clock has one
        segment, reported as COLD (hot and warm are 0); moves_to_warm counts second chances."""
        items = self._items
        now = self._now()
        rows = items.class_counters()
        out = []
        for cls in items.classes[1:]:
            row = rows[cls.id]
            if not row[S_NUMBER]:
                continue
            # the holder word around each class lock alone, as in `slabs_stats` (the age is
            # read from the pages with no lock held: a page scan of up to 0.2 s)
            with self._hold, cls.lock:
                moves, reflocked = cls.field(C_MOVES_TO_WARM), cls.field(C_REFLOCKED)
                evicted_time = cls.field(C_EVICTED_TIME)
                checked = cls.field(C_CRAWLER_CHECKED)
            out.append(
                (
                    cls.id,
                    {
                        "number": row[S_NUMBER],
                        "number_hot": 0,
                        "number_warm": 0,
                        "number_cold": row[S_NUMBER],
                        "age_hot": 0,
                        "age_warm": 0,
                        "age": items.oldest_near_hand(cls, now, self._hold),
                        "mem_requested": row[S_MEM],
                        "evicted": row[S_EVICTED],
                        "evicted_nonzero": row[S_EVICTED_NONZERO],
                        "evicted_time": evicted_time,
                        "outofmemory": row[S_OUTOFMEMORY],
                        "tailrepairs": 0,
                        "reclaimed": row[S_RECLAIMED],
                        "expired_unfetched": row[S_EXPIRED_UNFETCHED],
                        "evicted_unfetched": row[S_EVICTED_UNFETCHED],
                        "evicted_active": 0,
                        "crawler_reclaimed": row[S_CRAWLER_RECLAIMED],
                        "crawler_items_checked": checked,
                        "lrutail_reflocked": reflocked,
                        "moves_to_cold": 0,
                        "moves_to_warm": moves,
                        "moves_within_lru": 0,
                        "direct_reclaims": row[S_EVICTED] + row[S_RECLAIMED] - row[S_SWEPT],
                        "hits_to_hot": 0,
                        "hits_to_warm": 0,
                        "hits_to_cold": row[S_GET_HITS],
                        "hits_to_temp": 0,
                    },
                )
            )
        return out

    def size_histogram(self, since: int = 0) -> dict[int, int]:
        """``stats sizes``: live items by total size, rounded up to 32 bytes (a walk); only
        those whose CAS is `since` or later (memcached counts the items stored since
        ``stats sizes_enable``)."""
        for step in self.size_histogram_steps(since):
            if step is not None:
                return step
        raise AssertionError("the walk ends with its histogram")

    def size_histogram_steps(self, since: int = 0) -> Iterator[dict[int, int] | None]:
        """`size_histogram`, a step at a time: None after each hold of a partition's lock
        (a worker serves its other clients between steps: the whole walk in one go held a
        worker 1.9 s over 1.5 million items, where memcached keeps the histogram as
        counters), then the histogram once."""
        out: dict[int, int] = {}
        for batch in self._batches(True):
            for _, _, _, cas, _, size, _ in batch:
                if cas >= since:
                    bucket = (size + 31) // 32 * 32
                    out[bucket] = out.get(bucket, 0) + 1
            yield None
        yield out

    def cas_mark(self) -> int:
        """The last CAS unique handed out: every item stored from now on has a larger one."""
        return int(self._w[G_CAS])

    def keys(self) -> Iterator[bytes]:
        """A snapshot of the keys, partition by partition (tools and tests)."""
        for key, *_ in self._walk(live_only=False):
            yield key

    def metadump(
        self, class_of: Any = None, classes: set[int] | None = None
    ) -> Iterator[tuple[bytes, int, int, int, bool, int, int]]:
        """Live items: (key, exptime, last access, cas, fetched, size, class id), times in
        server time (exptime 0: never). A batch at a time (`metadump_batches`)."""
        for batch in self._batches(True, classes):
            yield from batch

    def metadump_batches(
        self,
        classes: set[int] | None = None,
        rows: int = DUMP_BATCH_ROWS,
        slots: int = DUMP_BATCH_SLOTS,
    ) -> Iterator[list[tuple[bytes, int, int, int, bool, int, int]]]:
        """`metadump`'s rows (of the classes in `classes`; None: all), in batches: each is
        what one hold of one partition's lock found, at most `rows` rows from at most
        `slots` slots of its table, so a batch may be empty. Nothing is held between
        batches but the place the walk is at: a caller that renders each batch as the
        client reads holds a batch's worth of a dump of any size, and can serve others
        between batches (``lru_crawler metadump``)."""
        return self._batches(True, classes, rows, slots)

    def cachedump(
        self,
        clsid: int,
        limit: int = 0,
        room: int = 0,
        cost: Callable[[int, int, int], int] | None = None,
    ) -> list[tuple[bytes, int, int]]:
        """``stats cachedump``: (key, value length, exptime in server time, 0: never) of the
        live items of class `clsid`, newest first as memcached's LRU lists them (by last
        store or bump, then CAS): at most `limit` of them (0: any number), and no more than
        the newest whose ``cost(key length, value length, exptime)`` add up to `room` (0:
        no bound): the reply's cap. The whole walk of `cachedump_steps` at once."""
        rows: list[tuple[bytes, int, int]] = []
        for step in self.cachedump_steps(clsid, limit, room, cost):
            if step is not None:
                rows = step
        return rows

    def cachedump_steps(
        self,
        clsid: int,
        limit: int = 0,
        room: int = 0,
        cost: Callable[[int, int, int], int] | None = None,
        slots: int = DUMP_BATCH_SLOTS,
    ) -> Iterator[list[tuple[bytes, int, int]] | None]:
        """`cachedump`'s walk, a step at a time: None after each hold of a partition's lock
        (at most `slots` slots of its table: a worker serves its other clients between
        steps, and no lock is held for long, where a whole table of a million items was
        3.4 s of one worker and its partitions' locks held a fifth of a second each), then
        the rows once. A read-only walk of the item tables.

        Only what the reply can hold is kept while walking: a heap of the newest rows found
        so far, whose oldest goes once the rows pass `limit` or `room`; a row no newer than
        one that went can never be listed, so it is not even copied. Memory is bounded by
        the reply, not by the class (which may hold millions of items). A table rebuilt
        between two steps is walked again from its start (its items moved), and a row kept
        already is then not kept twice (its CAS, unique, says so)."""
        items = self._items
        pm = self._pm
        now = self._now()
        # (time, cas, the item's address then its key, key length, value length, exptime,
        # cost): a row's key is copied at the end of the step that found it, if still kept
        heap: list[tuple[int, int, Any, int, int, int, int]] = []
        kept: set[int] = set()  # after a rebuild, the CAS of each row in the heap then
        spent = 0
        # the newest (time, cas) that went: a row not newer is never listed
        floor_time = floor_cas = -1
        for part in self._parts:
            i = 0
            gen = -1
            while True:
                with self._hold, part:
                    if gen != part.gen:
                        if gen != -1:  # its table moved: again, from its start
                            kept = {row[1] for row in heap}
                        i, gen = 0, part.gen
                    stop = min(i + slots, part.capacity)
                    for _, a in items.iter_items(part, i, stop):
                        _, nkey, _, _, nbytes, _, exptime, itime, cid, cas, _ = GET_HDR.unpack_from(
                            pm, a
                        )
                        if cid != clsid or (exptime and exptime <= now):
                            continue
                        if pm[a + OFF_MFLAGS] & MF_BINKEY:
                            continue  # a binary key (meta's b flag): never printed, as memcached
                        if itime < floor_time or (itime == floor_time and cas <= floor_cas):
                            continue
                        if cas in kept or items.is_flushed(part, cas, itime, now):
                            continue
                        n = cost(nkey, nbytes, exptime) if cost is not None else 0
                        heappush(heap, (itime, cas, a, nkey, nbytes, exptime, n))
                        spent += n
                        while (limit and len(heap) > limit) or (room and spent > room):
                            gone = heappop(heap)
                            spent -= gone[6]
                            # the oldest kept, so newer than the last that went
                            floor_time, floor_cas = gone[0], gone[1]
                    # (time, cas) is unique (CAS numbers are): an address is never compared
                    for j, row in enumerate(heap):
                        if row[2].__class__ is int:
                            a, nkey = row[2], row[3]
                            heap[j] = (*row[:2], pm[a + HEADER : a + HEADER + nkey], *row[3:])
                    i = stop
                    done = i >= part.capacity
                yield None
                if done:
                    kept = set()
                    break
        heap.sort(reverse=True)
        yield [(key, nbytes, exptime) for _, _, key, _, nbytes, exptime, _ in heap]

    def _walk(
        self, live_only: bool = True
    ) -> Iterator[tuple[bytes, int, int, int, bool, int, int]]:
        for batch in self._batches(live_only):
            yield from batch

    def _batches(
        self,
        live_only: bool,
        classes: set[int] | None = None,
        rows: int = DUMP_BATCH_ROWS,
        slots: int = DUMP_BATCH_SLOTS,
    ) -> Iterator[list[tuple[bytes, int, int, int, bool, int, int]]]:
        """The items' rows (see `metadump`), a batch per hold of a partition's lock, walking
        each partition's table slot by slot. Within one table an item is where it was
        stored until it goes, so an item that lives through the walk is listed once. A
        rebuild of the table while the walk is in it moves items: the walk starts that
        partition over, once, passing over the items it listed already (by address: an
        item keeps its chunk; the first `DUMP_LISTED_MAX` of the partition's), so nothing
        that lived throughout is missed or listed twice,
        as memcached's ``metadump hash`` holds its table still for the walk (a hunt: 5,921
        of 100,000 keys were listed twice when sets grew the table during a dump); a
        second rebuild there and it goes on from its place (an item may then be missed or
        repeated, as memcached's crawler may skip or repeat items its LRUs reorder
        mid-walk)."""
        items = self._items
        pm = self._pm
        now = self._now()
        cas_on = self.cas_enabled
        unpack = GET_HDR.unpack_from
        for part in self._parts:
            i = 0
            gen = -1
            restarted = False
            listed = array("q")  # the addresses listed before a restart (sorted then)
            while True:
                batch: list[tuple[bytes, int, int, int, bool, int, int]] = []
                with self._hold, part:
                    if gen != part.gen:
                        if gen != -1 and not restarted:
                            i, restarted = 0, True
                            listed = array("q", sorted(listed))
                        gen = part.gen
                    capacity = part.capacity
                    stop = min(i + slots, capacity)
                    for slot, a in items.iter_items(part, i, stop):
                        if len(batch) == rows:
                            stop = slot  # the next batch starts here
                            break
                        st, nkey, _, fetched, nbytes, flags, exptime, itime, cid, cas, _ = unpack(
                            pm, a
                        )
                        if classes is not None and cid not in classes:
                            continue
                        if live_only and (
                            (exptime and exptime <= now) or items.is_flushed(part, cas, itime, now)
                        ):
                            continue
                        if restarted:
                            k = bisect_left(listed, a)
                            if k < len(listed) and listed[k] == a:
                                continue
                        elif len(listed) < DUMP_LISTED_MAX:
                            listed.append(a)
                        assert st & ST_LINKED
                        batch.append(
                            (
                                pm[a + HEADER : a + HEADER + nkey],
                                exptime,
                                itime,
                                cas if cas_on else 0,
                                bool(fetched),
                                item_size(nkey, flags, nbytes, cas_on),
                                cid,
                            )
                        )
                    i = stop
                yield batch
                if i >= capacity:
                    break
