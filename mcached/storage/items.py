"""Item lifecycle (memcached's ``items.c``): where an item lives, how it gets memory, how it
leaves. `Items` holds the views of the page pool, the slab classes and the partitions over one
`Arena`; `cache.Cache` decides what each command means.

An item is written into a chunk of page memory, header first (the layout is the arena's, see
`mcached.storage.arena`). An item of memcached's total size ``48 + nkey + 1 + nbytes + 2 (+ 8
CAS) (+ 4 flags)`` goes in the class memcached would put it in; our layout is never larger,
so it always fits.

Chained items. An item larger than the largest chunk takes the chunks memcached 1.6.18 takes
(``do_item_alloc``, ``do_item_alloc_chunk``; `chain_plan`): its *head* (header and key, no
value byte) is a chunk of the small class of memcached's header item, and its value is in
*value chunks* (`ST_CONT`: the head's address at `OFF_HEAD`, the next chunk at `OFF_NEXT`,
value bytes from 48), each full one of the largest class, the last of the smallest class
that holds what is left (or of the largest, when that class cannot give one: memcached's
fallback); an append or prepend makes memcached's layout of a copy, each part's chunks
then an empty one. The item is counted in the largest class (its `OFF_CLSID`, as memcached's
``it->slabs_clsid``), and it is in the largest class's clock, met there at its first chunk of
that class (`lru.clock_chunk`), as it is in memcached's LRU of that class; only an item with
no chunk of the largest class (an append or prepend of parts each smaller than a largest
chunk) is in its first value chunk's class's clock. The other classes of its chunks never
evict it, nor count it. A chunk's class is its
page's (``P_CLSID``), so each chunk goes back to its own class. A chained item's head is
freed last (`free_chunks`): so while a value chunk is held, the chunk at its `OFF_HEAD` is
its item's head (a page move may copy it elsewhere and rewrite `OFF_HEAD`, under the
item's partition lock: readers without that lock check again once they hold it).

Partitions. The key space is split by ``hash(key) & (partitions - 1)``; each `Partition` is an
item table (`assoc.Assoc`) with its lock, its flush mark, and counters per
slab class. An item, the chunks it occupies and its counters are only changed with its
partition lock held; chunks change hands (free <-> used) only with their class lock held too.

Locks, in the only order they are taken (the whole storage package, every process):

    move_lock or crawl_lock -> partition lock -> class lock -> pool lock

(``flush_lock`` and ``cas_lock`` are leaves, each held for one increment; the automover's
``_tick_lock``, a thread lock of the one process that runs it, comes before ``move_lock``.)
A holder of a class lock that needs another partition's lock (the clock hand evicting, in
``_evict_locked``) only try-acquires it and skips the item if it is busy, as memcached's
``lru_pull_tail`` does with item locks, and the next eviction looks at that item first
(``C_RETRY``); when busy items were all the hand found, `alloc` lets the class lock go,
pauses and looks again, ten times (as memcached's ``do_item_alloc_pull`` pulls its tail up
to 10 times), then on with longer pauses for up to ``ALLOC_BUSY_WAIT``. A store that needs
a page taken from another class releases its partition lock first (`steal_page`) and
retries. Two partition locks are held together only by the clock hand (the second one
tried, never waited for) and by `flush`, which takes every partition's in index order while
it holds no other lock.

A chained item's chunks are in several classes, yet no path holds two class locks: they are
taken one class lock at a time (`alloc_chain`: each `alloc` lets its lock go), and freed one
class lock at a time (`free_chunks`) by whoever holds the item's partition lock and no class
lock: `forget_locked`, `unpin`, `free_reserved_locked`, and the crawler (`_crawl_page`) and
the page mover (`_empty_page`), which let their class lock go first. The clock hand, which
finds a chained item from one class (`_evict_locked`, under `alloc`'s class lock), takes it
out of its table under its partition lock, marks its head a zombie with no pin (nothing else
touches such an item) and leaves its other chunks to `alloc`, which frees them once it has
let its class lock go.

Reads without locks. The page mover and the crawler first scan pages without any lock to
find candidates (a racy read is only a hint), then lock the candidate's partition and class
and check it again before they touch it.

Views and processes. A `Partition` keeps, in its own attributes, where its table lives and
the flush marks (``flush_seq``, ``flush_at``); they change only under its lock, and each
change bumps the partition's ``T_GEN``. So whoever takes a partition lock compares ``T_GEN``
with the view's `gen` and calls `sync` when they differ (`Partition.__enter__` does it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import chain

from mcached.clock import Clock
from mcached.storage import checks
from mcached.storage.arena import (
    C_CRAWLED_FLUSH_GEN,
    C_CRAWLED_TIME,
    C_CRAWLER_CHECKED,
    C_EVICTED_TIME,
    C_HAND_CHUNK,
    C_HAND_PAGE,
    C_MOVES_TO_WARM,
    C_REFLOCKED,
    C_RETRY,
    C_RETRY_CAS,
    CONT_HDR,
    CRAWL_ALL,
    G_AUTOMOVE,
    G_CAS,
    G_CHUNK_RESCUES,
    G_CRAWL_ASKED,
    G_CRAWL_LIMIT,
    G_CRAWLER_STARTS,
    G_CRAWLING,
    G_FLUSH_AT,
    G_FLUSH_GEN,
    G_LIMIT,
    G_MALLOC_FAILS,
    G_MOVE_ASKED,
    G_MOVING,
    G_PICK_CURSOR,
    G_REASSIGN_BUSY,
    G_SLABS_MOVED,
    GAUGES,
    GET_HDR,
    HDR,
    HEADER,
    HOLE,
    I32,
    MAX_PAGES,
    MAX_PINS,
    NSTAT,
    OFF_CAS,
    OFF_CLSID,
    OFF_EXPTIME,
    OFF_HASH,
    OFF_HEAD,
    OFF_NBYTES,
    OFF_NEXT,
    OFF_PINS,
    OFF_REF,
    OFF_TIME,
    P_CLSID,
    P_FLAGS,
    P_WORDS,
    PAGE_SHIFT,
    PF_MOVING,
    PIN_SLOTS,
    PIN_TAG,
    RESERVE_TAG,
    S_CRAWLER_RECLAIMED,
    S_EVICTED,
    S_EVICTED_NONZERO,
    S_EVICTED_UNFETCHED,
    S_EXPIRED_UNFETCHED,
    S_MEM,
    S_MOVE_EVICTED,
    S_MOVE_RESCUED,
    S_NUMBER,
    S_OUTOFMEMORY,
    S_RECLAIMED,
    S_SWEPT,
    S_TOTAL,
    S_TTL,
    SLAB_PAGE_SIZE,
    ST_CHAINED,
    ST_CONT,
    ST_FREE,
    ST_LINKED,
    ST_RESERVED,
    ST_ZOMBIE,
    T_FLUSH_SEQ,
    T_GEN,
    T_GET_EXPIRED,
    T_GET_FLUSHED,
    TAIL_HDR,
    U32,
    U64,
    Arena,
    Q,
    window_slots,
)
from mcached.storage.assoc import ADDR_MASK, Assoc, init_table, make_entry
from mcached.storage.lru import clock_chunk, sweep
from mcached.storage.results import ReassignResult
from mcached.storage.slabs import PagePool, SlabClass, class_lookup, slab_class_sizes

log = logging.getLogger("mcached.storage")
CHECKS = checks.ENABLED  # (a constant: one global test where the checks would be)

NO_ROOM = -1  # nothing could be evicted (or -M: nothing expired)
NEED_PAGE = -2  # the class has no page
NO_CHUNK = -3  # a chained item's value chunk could not be had (memcached: during read)
# (inside `alloc` only) nothing evicted, but items whose partition was busy were passed over
_BUSY_ROOM = -4
# `alloc` looks for a victim this many times while busy partitions are all that stop it
# (memcached's do_item_alloc_pull pulls the LRU tail up to 10 times), pausing between tries
# for their holders (another worker storing or copying a large value) to let them go
ALLOC_TRIES = 10
ALLOC_PAUSE = 0.0002
# ... and past those tries, pausing twice as long each time, until this long in all: a
# partition's lock is held across a whole store or a dump batch (memcached's item locks are
# not), and a worker process preempted under it holds it for a scheduler tick or more
ALLOC_BUSY_WAIT = 0.1
ALLOC_PAUSE_MAX = 0.005
NO_EVICT_SCAN = 200  # -M: chunks the hand looks at for an expired item before giving up
#: what `Items.on_evict` is called with: (key, fetched, ttl or -1 when it never expires,
#: seconds since its last access, slab class, value length), memcached's eviction log entry
EvictHook = Callable[[bytes, bool, int, int, int, int], None]

# chunks the hand looks at for an expired or flushed item before a class takes a new page
# (memcached's lru_pull_tail looks at 5 items of the tail before each allocation)
RECLAIM_SCAN = 5
# (memcached looks at 5 items of the LRU tail; the crawler reclaims what the hand misses)

#: `_move_one_locked`: a chained item was evicted, its chunks are the caller's to free
_DROP_CHAIN = object()
#: `_pinned_in`: a chunk's status -> b"B" (a zombie or a reservation: busy), b"C" (a
#: continuation: its head says), else 0
_BUSY_MARKS = bytes(
    ord("B") if st & (ST_ZOMBIE | ST_RESERVED) else ord("C") if st & ST_CONT else 0
    for st in range(256)
)
MOVE_PATIENCE = 5000  # passes of 1 ms the mover waits for a reserved chunk to be written
AUTOMOVE_WINDOW = 3  # automove 2: the ticks whose evictions tell which class evicts less
AUTOMOVE_FREE_PAGES = 2.5  # a class holding this many pages' worth of free chunks gives one
AUTOMOVE_GIVE_MAX = 16  # pages given back to the pool in one automover tick, at most
AUTOMOVE_SOURCE_PAGES = 2  # automove 1 takes a page only from a class with more than this
# automove 1 judges a class by the age of the oldest item of those the clock hand reaches
# next (memcached: the age of its COLD LRU's tail): it looks at this many items, ...
AUTOMOVE_SAMPLE = 64
AUTOMOVE_SCAN = 4096  # ... among this many chunks at most (a class of free chunks: age 0)
#: a referenced item read in the last minute has its time at most this old (reads refresh
#: it once it is: memcached's ITEM_UPDATE_INTERVAL, `Cache.tick`), so automove 1 counts it
#: this much younger: a class read all the time is never the oldest, as memcached's is not
#: (its items stay in HOT and WARM: its COLD LRU is empty, of age 0)
ACTIVE_GRACE = 60


@dataclass
class AutomoveTick:
    """One second of one class in automove 1's window (memcached's ``window_data``)."""

    age: int
    dirty: bool  # it evicted, ran out of memory or took a page
    evicted_ratio: float  # its share of the tick's evictions
    evicted: bool


RESERVE_MIN = 1024 * 1024 * 1024  # address space reserved for pages: at least 1 GB (see Cache)


def item_size(nkey: int, flags: int, nvalue: int, cas_enabled: bool) -> int:
    """Bytes memcached charges for an item: header, key + NUL, value + CRLF, flags, CAS."""
    size = HEADER + nkey + 1 + nvalue + 2
    if flags:
        size += 4
    if cas_enabled:
        size += 8
    return size


def copy_views(into: list[memoryview], pieces: list[memoryview]) -> None:
    """Copy `pieces`, in order, into the views `into` (as many bytes in all): chunk memory
    to chunk memory, with no copy in between."""
    k = 0
    dst = into[0] if into else memoryview(b"")
    at = 0
    for src in pieces:
        pos = 0
        n = len(src)
        while pos < n:
            if at == len(dst):
                k += 1
                dst = into[k]
                at = 0
            take = min(n - pos, len(dst) - at)
            dst[at : at + take] = src[pos : pos + take]
            at += take
            pos += take


class Partition(Assoc):
    """A slice of the key space: its item table, lock, flush marks, counters."""

    __slots__ = ("lock", "cas_lock", "cst", "flush_seq", "flush_at")

    def __init__(self, arena: Arena, index: int, hash_at: Callable[[int], int]):
        self.lock = arena.part_locks[index]
        self.cas_lock = arena.cas_lock
        self.cst = arena.counters(index)
        self.flush_seq = 0
        self.flush_at = 0
        super().__init__(arena, index, hash_at)

    def sync(self) -> None:
        super().sync()
        self.flush_seq = int(self.w[self.tb + T_FLUSH_SEQ])  # cas <= this: flushed
        self.flush_at = int(self.w[G_FLUSH_AT])  # stored before this time: flushed, once due

    def __enter__(self) -> Partition:
        self.lock.acquire()
        if self.w[self.tb + T_GEN] != self.gen:
            self.sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def try_enter(self) -> bool:
        """Take the lock if it is free (then leave with `__exit__`)."""
        if not self.lock.acquire(False):
            return False
        if self.w[self.tb + T_GEN] != self.gen:
            self.sync()
        return True

    def next_cas(self) -> int:
        """The next CAS unique (the partition's lock held): the cache's one counter
        (`G_CAS`), raised under its own lock, so that a store that follows another, whatever
        their keys, gets a higher number, as from memcached's one atomic counter; `flush`'s
        cut relies on it. The lock is a leaf (nothing is taken while it is held), held for
        one increment: 145 ns uncontended, where the maximum of every partition's last
        number, which this replaced, took 250 ns with 16 partitions and 2.1 us with 256."""
        lock = self.cas_lock
        w = self.w
        lock.acquire()
        try:
            seq = w[G_CAS] + 1
            w[G_CAS] = seq
        finally:
            lock.release()
        return seq

    def mark_flushed(self, cut: int) -> None:
        """flush_all now: every item whose CAS is `cut` or less is gone (lock held; a mark
        never goes back: a flush that cut later may have marked it first)."""
        w = self.w
        if cut > w[self.tb + T_FLUSH_SEQ]:
            w[self.tb + T_FLUSH_SEQ] = cut
        self.bump()

    def bump(self) -> None:
        """Tell every view to re-read this partition's marks (lock held)."""
        self.w[self.tb + T_GEN] += 1
        self.sync()

    def count_get_gone(self, flushed: bool) -> None:
        self.w[self.tb + (T_GET_FLUSHED if flushed else T_GET_EXPIRED)] += 1


@dataclass
class ItemStats:
    """Item counters summed over partitions; names are memcached's ``stats`` names."""

    curr_items: int = 0
    total_items: int = 0
    bytes: int = 0
    evictions: int = 0
    evicted_unfetched: int = 0
    reclaimed: int = 0
    expired_unfetched: int = 0
    get_expired: int = 0
    get_flushed: int = 0
    outofmemory: int = 0
    crawler_reclaimed: int = 0
    swept: int = 0  # (not memcached's: of reclaimed, the LRU maintainer's work: no allocation's)


class Items:
    """Pages, classes, partitions, and every operation that moves an item in or out of them.

    Without `arena` a new one is laid out for these settings (the memory for ``-m``, reserved
    as `reserve` bytes of address space, by default at least `RESERVE_MIN` plus one page per
    slab class, the first pages a class may take past the limit; table windows of `window`
    slots, by default sized from the reserve; tables of at least `table_slots` slots in all,
    rounded up to a power of two a partition, within the windows); with it, these are views
    of an arena another `Items` laid out with the same settings.

    Methods named ``*_locked`` expect the caller to hold the partition lock of the item (and
    say so when they expect a class lock too).
    """

    def __init__(
        self,
        *,
        memory_limit: int,
        item_size_max: int,
        evictions: bool,
        cas_enabled: bool,
        clock: Clock,
        partitions: int,
        chunk_size: int,
        growth_factor: float,
        slab_chunk_max: int,
        slab_reassign: bool,
        slab_automove: int,
        arena: Arena | None = None,
        reserve: int | None = None,
        window: int | None = None,
        table_slots: int = 0,
    ) -> None:
        if partitions < 1 or partitions & (partitions - 1):
            raise ValueError("partitions must be a power of two")
        self.clock = clock
        self.item_size_max = item_size_max
        self.evictions = evictions
        self.cas_enabled = cas_enabled
        self.slab_reassign = slab_reassign
        self.sizes = slab_class_sizes(chunk_size, growth_factor, slab_chunk_max)
        self.largest = len(self.sizes)
        self.chunk_max = self.sizes[-1]
        self.lookup = class_lookup(tuple(self.sizes))
        fresh = arena is None
        if arena is None:
            if reserve is None:
                # plus a first page for every class past the limit (`PagePool.take`)
                reserve = max(memory_limit, RESERVE_MIN) + self.largest * SLAB_PAGE_SIZE
            max_pages = min(MAX_PAGES, -(-reserve // SLAB_PAGE_SIZE))
            if memory_limit > MAX_PAGES * SLAB_PAGE_SIZE:
                raise ValueError("memory limit over 1 TB: addresses hold 20 bits of page number")
            arena = Arena(
                max_pages=max_pages,
                nclasses=self.largest,
                partitions=partitions,
                window=window or window_slots(max_pages, partitions, self.sizes[0]),
            )
        self.arena = arena
        self.w = arena.words
        self.pm = arena.pages
        self.classes: list[SlabClass] = [SlabClass(arena, 0, SLAB_PAGE_SIZE)]  # 0: the pool
        self.classes += [SlabClass(arena, i + 1, size) for i, size in enumerate(self.sizes)]
        self.pool = PagePool(arena)
        self.pshift = partitions.bit_length() - 1
        self.pmask = partitions - 1
        if fresh:
            w = self.w
            w[G_LIMIT] = memory_limit
            w[G_AUTOMOVE] = slab_automove
            # each partition's table starts at its share of `table_slots` (-o hashpower)
            floor = 1 << max(0, (table_slots // partitions - 1).bit_length())
            for i in range(partitions):
                init_table(arena, i, floor)
        self.parts = [Partition(arena, i, self.hash_at) for i in range(partitions)]
        # Page moves: one at a time (memcached's single rebalancer thread).
        self.move_lock = arena.move_lock
        # The crawler: one pass at a time.
        self.crawl_lock = arena.crawl_lock
        self.flush_lock = arena.flush_lock
        # The automover's memory of past ticks: only one automover runs (in one process);
        # its ticks one at a time (tests call `automove_tick` beside a running mover)
        self._tick_lock = threading.Lock()
        self._last_evictions = [0] * (self.largest + 1)
        self._window: deque[list[int]] = deque(maxlen=AUTOMOVE_WINDOW)
        # automove 1's (memcached's slab_automove.c): per tick, per class; each class's
        # (pages, free chunks, chunks a page, refused stores) at the last tick; the ticks
        # counted since the window was (re)started
        self._am_window: deque[list[AutomoveTick]] = deque()
        self._am_before: list[tuple[int, int, int, int]] = []
        self._am_ticks = 0
        self._am_ratio = -1.0
        # Told of each item the clock hand evicts (not of reclaims, nor of page moves), as
        # memcached logs LOGGER_EVICTION in lru_pull_tail; None (one test per eviction)
        # unless someone listens: ``watch evictions`` (see `Cache.on_evict`).
        self.on_evict: EvictHook | None = None

    # ---- shared figures ----

    @property
    def flush_at(self) -> int:
        return int(self.w[G_FLUSH_AT])

    @property
    def flush_gen(self) -> int:
        return int(self.w[G_FLUSH_GEN])

    @property
    def automove(self) -> int:
        return int(self.w[G_AUTOMOVE])

    @automove.setter
    def automove(self, level: int) -> None:
        self.w[G_AUTOMOVE] = level  # one word, read once per tick

    def figure(self, g: int) -> int:
        """A global word (``G_*``)."""
        return int(self.w[g])

    # ---- sizes ----

    def class_for(self, total: int) -> int:
        return self.lookup[(total + 7) >> 3] if total <= self.chunk_max else self.largest

    def head_class(self, nkey: int, flags: int) -> int:
        """The class of a chained item's head chunk: memcached's header item (``do_item_alloc``:
        ``slabs_clsid(htotal)``, the header, key, suffix, CAS and an ``item_chunk``)."""
        htotal = HEADER + nkey + 1 + (4 if flags else 0) + HEADER + (8 if self.cas_enabled else 0)
        return self.lookup[(htotal + 7) >> 3]

    def chain_plan(
        self,
        nkey: int,
        nbytes: int,
        flags: int,
        split: int = -1,
        wide: frozenset[int] = frozenset(),
    ) -> list[int]:
        """The chunks memcached 1.6.18 takes for a chained item: the header item's class
        (``do_item_alloc``: ``slabs_clsid(htotal)``, the header, key, suffix, CAS and an
        ``item_chunk``), then for each value chunk, in order, its class and how many bytes
        of the value and its CRLF it holds (``do_item_alloc_chunk``: what is left, plus a
        48-byte ``item_chunk``, capped at the largest chunk): ``[hdr, cid1, cap1, cid2,
        cap2...]``. Every full chunk is of the largest class, the last of the smallest class
        holding what is left. An append or prepend (`split`: the joined value's first part,
        the old value or the added bytes) makes memcached copy each part in turn
        (``_store_item_copy_chunks``): each part's chunks are sized from what is left of that
        part alone, and a part that fills its last chunk is followed by an empty chunk (the
        copy allocates the next chunk as soon as one is full, even with nothing left to put
        in it). `wide`: the value chunks (numbered from 1) that fell back to the largest
        class (`alloc_chain`); memcached's fallback chunk has the largest chunk's room, so it
        takes more than planned where a part goes on (the next part of a copy is copied
        into what is left of it), and the chunks after it are laid out from there."""
        plan = [self.head_class(nkey, flags)]
        cmax = self.chunk_max
        lookup = self.lookup
        largest = self.largest

        def next_chunk(remain: int) -> int:
            """Plan the next chunk for `remain` bytes of the part (0: an empty one); its room."""
            if (len(plan) + 1) // 2 in wide:  # this value chunk's number
                plan.extend((largest, 0))
                return cmax - HEADER
            size = min(remain + HEADER, cmax)
            plan.extend((lookup[(size + 7) >> 3], 0))
            return size - HEADER

        parts = (nbytes + 2,) if split < 0 else (split, nbytes - split + 2)
        room = 0  # what the current chunk can still take (the head holds no value byte)
        for remain in parts:
            if not remain:
                continue  # memcached copies nothing, and takes no chunk
            while remain:
                if not room:  # full: the next chunk, sized from what is left of this part
                    room = next_chunk(remain)
                took = min(room, remain)
                plan[-1] += took
                room -= took
                remain -= took
            if split >= 0 and not room:
                room = next_chunk(0)
        return plan

    def hash_at(self, addr: int) -> int:
        """The table hash bits (``hash >> partition bits``) of the item at `addr`."""
        return int(Q.unpack_from(self.pm, addr + OFF_HASH)[0] >> self.pshift)

    def is_flushed(self, part: Partition, cas: int, itime: int, now: int) -> bool:
        """At or below the partition's flush mark, or stored before a delayed flush's time
        `fa` once its second before has come: memcached's ``flush_all <n>`` sets its
        oldest_live to the second before `fa`, and from that second on drops what was
        stored up to then (a delay of 2 takes effect after 1 s, with the stores of that
        second)."""
        fa = part.flush_at
        return cas <= part.flush_seq or bool(fa and fa <= now + 1 and itime < fa)

    # ---- getting memory ----

    def has_free_chunk(self, cid: int) -> bool:
        """Whether class `cid` has a chunk `alloc` would take at once: a free one, or one of
        its newest page never used (no eviction, no new page). Read without the class lock:
        a hint, which another partition's store may make stale at once."""
        cls = self.classes[cid]
        return cls.nfree > 0 or cls.uncarved > 0

    def alloc(self, cid: int, part: Partition, now: int) -> int:
        """One reserved chunk of class `cid` (its address, tagged `HOLE` when it came from a
        free list), or NO_ROOM / NEED_PAGE. The caller holds `part`'s lock (evictions in
        `part` then need no trylock)."""
        cls = self.classes[cid]
        lock = cls.lock
        tries = 0
        pause = ALLOC_PAUSE
        deadline = 0.0
        while True:
            freed: list[int] = []
            lock.acquire()
            try:
                a = self._alloc_locked(cls, part, now, freed)
                if a < 0 and not cls.npages:
                    return NEED_PAGE
            finally:
                lock.release()
                if freed:  # an evicted chained item's other chunks: each to its class, now
                    self.free_chunks(freed)
            if a != _BUSY_ROOM:
                return a
            tries += 1
            if tries >= ALLOC_TRIES:
                now_m = time.monotonic()
                if not deadline:
                    deadline = now_m + ALLOC_BUSY_WAIT
                elif now_m >= deadline:
                    return NO_ROOM
                pause = min(pause * 2, ALLOC_PAUSE_MAX)
            time.sleep(pause)  # no class lock held; our partition's is the caller's

    def alloc_chain(
        self, part: Partition, plan: list[int], now: int, shape: tuple[int, int, int, int]
    ) -> list[int] | tuple[int, int]:
        """The reserved chunks of a chained item (`chain_plan` of `shape`: its nkey, nbytes,
        flags and split), head first, or what failed: (NO_ROOM or NEED_PAGE, the header's
        class) if its header chunk could not be had (memcached's ``do_item_alloc`` fails:
        out of memory storing object), (NO_CHUNK, the class) if a value chunk could not
        (memcached's ``do_item_alloc_chunk`` fails while the value is read: out of memory
        during read), or (NEED_PAGE, the class) if a value chunk's class has no page at all
        and could not take its first (memcached would have taken it: the caller moves one,
        `steal_page`). In memcached's order: the header, then each chunk, each evicting from
        its own class if it must; a chunk smaller than the largest falls back to one of the
        largest class when its own class cannot give one (memcached's fallback), and `plan`
        is then laid out again from it, in place (`chain_plan`'s `wide`). One class lock at
        a time. What was taken goes back on failure."""
        hdr = plan[0]
        a = self.alloc(hdr, part, now)
        if a < 0:
            return a, hdr
        got = [a]
        largest = self.largest
        wide: frozenset[int] = frozenset()
        k = 1
        while k < len(plan):
            cid = plan[k]
            c = self.alloc(cid, part, now)
            if c < 0 and cid != largest:
                cid = largest
                c = self.alloc(cid, part, now)
                if c >= 0:
                    wide |= {len(got)}
                    plan[:] = self.chain_plan(*shape, wide=wide)
            if c < 0:
                self.free_chunks(got)
                return (NEED_PAGE if c == NEED_PAGE else NO_CHUNK), cid
            got.append(c)
            k += 2
        return got

    def chunk_for(
        self, part: Partition, head: int, last: int, left: int, now: int
    ) -> tuple[int, int]:
        """The next value chunk of the chained item being received at `head`, taken as its
        bytes arrive (memcached's ``do_item_alloc_chunk`` in ``read_into_chunked_item``):
        sized from `left`, what is still without a chunk of the value and its CRLF, capped at
        the largest chunk, from the class that fits it, else from the largest class (its
        room then a largest chunk's). It is labelled (the value bytes it holds, its head) and
        linked after `last` (the head or the chain's last chunk); the first sets the head's
        referenced bit (`starts_referenced`: the first value chunk is the clock's, as it is of
        the largest class whenever a second follows). (its address, its room), or (NO_CHUNK
        or NEED_PAGE, the class) as `alloc_chain` fails. The caller holds `part`'s lock."""
        size = min(left + HEADER, self.chunk_max)
        cid = self.lookup[(size + 7) >> 3]
        c = self.alloc(cid, part, now)
        if c < 0 and cid != self.largest:
            cid, size = self.largest, self.chunk_max
            c = self.alloc(cid, part, now)
        if c < 0:
            return (NEED_PAGE if c == NEED_PAGE else NO_CHUNK), cid
        pm = self.pm
        if last == head:
            pm[head + OFF_REF] = c & HOLE
        c &= ~HOLE
        if CHECKS:
            checks.reserved(pm, c, "value chunk")
        CONT_HDR.pack_into(pm, c, ST_RESERVED, min(size - HEADER, max(left - 2, 0)), head, -1)
        pm[c] = ST_CONT  # once its header is whole (`write`), before it is reachable
        Q.pack_into(pm, last + OFF_NEXT, c)
        return c, size - HEADER

    def free_chunks(self, addrs: list[int]) -> None:
        """Give chunks back, each to its own class (its page's), in reverse order: a chained
        item's head, `addrs[0]`, goes last (see "Chained items" above). The caller holds the
        item's partition lock, if it has one, and no class lock: one is taken at a time."""
        w = self.w
        row = self.arena.page_row
        classes = self.classes
        cls: SlabClass | None = None
        n = 0
        try:
            for c in reversed(addrs):
                c &= ~HOLE
                nxt = classes[int(w[row(c >> PAGE_SHIFT) + P_CLSID])]
                if nxt is not cls:
                    if cls is not None:
                        cls.count_used(-n)
                        cls.lock.release()
                        cls = None
                    nxt.lock.acquire()
                    cls, n = nxt, 0
                cls.chunk_push_locked(c)
                n += 1
        finally:  # (a failed check raises in the push: its class lock is let go)
            if cls is not None:
                cls.count_used(-n)
                cls.lock.release()

    def chain_of(self, a: int) -> list[int]:
        """The chunks of the chained item at `a`, head first."""
        pm = self.pm
        out = [a]
        nxt = Q.unpack_from(pm, a + OFF_NEXT)[0]
        while nxt >= 0:
            if CHECKS:
                checks.link(pm, a, nxt, len(out))
            out.append(nxt)
            nxt = Q.unpack_from(pm, nxt + OFF_NEXT)[0]
        return out

    def _alloc_locked(self, cls: SlabClass, part: Partition, now: int, freed: list[int]) -> int:
        """Class lock held: free chunk, else an expired or flushed item's chunk near the
        clock hand (memcached reuses an expired item's memory before it takes more:
        ``do_item_alloc_pull``; counted in ``reclaimed``), else a new page, else evict from
        the clock hand."""
        a = cls.chunk_pop_locked()
        if a < 0 and cls.npages:
            pool = self.pool
            with pool.lock:
                room = pool.room()
            # Only while a new page would be taken: with memory full, the eviction below
            # reclaims what is dead at the hand anyway, and a look ahead here would move the
            # hand past live items it has not given their turn.
            if room:
                w, b = cls.w, cls.b
                hand = w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK]
                a = self._evict_locked(cls, part, now, freed, dead_only=True)
                if a >= 0:
                    self.pm[a] = ST_RESERVED
                    return a  # the dead item's chunk (the hand just passed it)
                # nothing dead: the hand goes back, so the look ahead moves it past no live
                # item (a class growing a page per item would otherwise spin it)
                w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK] = hand
        if a < 0:
            pno = self.pool.take(cls.id, first=not cls.npages)
            if pno >= 0:
                cls.add_page_locked(pno)
                a = cls.chunk_pop_locked()
            else:
                a = self._evict_locked(cls, part, now, freed)
                if a < 0:
                    return a
                self.pm[a] = ST_RESERVED
                return a  # the victim's chunk: `used` is unchanged
        self.pm[a & ~HOLE] = ST_RESERVED
        cls.count_used(1)
        return a

    def reclaim_at_hand(self, cls: SlabClass, now: int) -> bool:
        """memcached's LRU maintainer, as far as a clock has one: reclaim the next dead
        (expired or flushed) item among the `RECLAIM_SCAN` chunks the class's hand comes to
        next, as an allocation's look ahead does (counted the same: reclaimed,
        expired_unfetched), and free its chunks. Whether one was: if none was, the hand
        stays where it was, past no live item. memcached's maintainer pulls dead items off
        its LRUs' tails within moments, so they leave curr_items and free their memory with
        no read or allocation to meet them; called until it answers False, this takes a run
        of dead items at the hand the same way. No lock held by the caller: the class lock
        is taken here, then the items' partition locks by trylock."""
        w, b = cls.w, cls.b
        freed: list[int] = []
        with cls.lock:
            if not cls.npages:
                return False
            hand = w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK]
            a = self._evict_locked(cls, None, now, freed, dead_only=True, maintainer=True)
            if a < 0:
                w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK] = hand
            else:
                cls.chunk_push_locked(a)
                cls.count_used(-1)
        if freed:  # a chained item's other chunks: each to its class, with no class lock held
            self.free_chunks(freed)
        return a >= 0

    def _evict_locked(
        self,
        cls: SlabClass,
        part: Partition | None,
        now: int,
        freed: list[int],
        dead_only: bool = False,
        maintainer: bool = False,
    ) -> int:
        """Class lock held: free the chunk of the next clock candidate, reclaiming it if it is
        expired or flushed, evicting it otherwise (not with -M, nor `dead_only`: then only
        the next `RECLAIM_SCAN` chunks are looked at). Its address, or NO_ROOM. A chained
        item's candidate is its clock chunk (`lru.clock_chunk`): that chunk is the one
        returned; the item's other chunks, of other classes too, are added to `freed`, for
        the caller to free once it has let its class lock go (`alloc`): its head is marked a
        zombie with no pin first, which nothing but that caller touches. `part`: the
        partition whose lock the caller holds (None: none); `maintainer`: the LRU
        maintainer's reclaim, not an allocation's (`direct_reclaims` leaves it out). When
        evicting,
        `_BUSY_ROOM` instead of NO_ROOM if candidates were passed over because another
        process or thread held their partition lock (`alloc` then tries again)."""
        parts = self.parts
        pmask = self.pmask
        evict = self.evictions and not dead_only
        pm = self.pm
        if dead_only:
            limit = RECLAIM_SCAN
        elif evict:
            # two turns: the first may only clear reference bytes
            limit = (2 * cls.npages + 1) * cls.perslab
        else:
            limit = NO_EVICT_SCAN
        busy = False
        top = len(pm) - HEADER
        w, b = cls.w, cls.b
        # a candidate passed by (busy) is met first, as memcached's locked LRU tail item is
        # met again by its next pull; the hand itself only ever goes on
        first = self._retry_locked(cls) if evict else ()
        for a in chain(first, sweep(cls, limit, evict)):
            head = a if pm[a] != ST_CONT else Q.unpack_from(pm, a + OFF_HEAD)[0]
            if not 0 <= head < top:
                continue  # read again, torn: a page move is rewriting the pointer
            h = Q.unpack_from(pm, head + OFF_HASH)[0]
            owner = parts[h & pmask]
            if owner is not part and not owner.try_enter():
                cls.add_to(C_REFLOCKED, 1)
                if evict and not w[b + C_RETRY]:
                    # passed by for now, not for a whole turn of the hand: the next eviction
                    # looks at it first (a hint: its CAS, read unlocked, says it is the same)
                    w[b + C_RETRY] = a + 1
                    w[b + C_RETRY_CAS] = Q.unpack_from(pm, head + OFF_CAS)[0]
                busy = evict
                continue
            try:
                if head != a:
                    # read again under the item's partition lock: a page move may have
                    # rescued its head meanwhile (the same hash: the same partition)
                    head = Q.unpack_from(pm, a + OFF_HEAD)[0]
                    if (
                        clock_chunk(cls, head) != a  # first: it checks `head` is in the pages
                        or pm[head] != ST_LINKED | ST_CHAINED
                        or Q.unpack_from(pm, head + OFF_HASH)[0] != h
                    ):
                        continue
                st, nkey, ref, fetched, nbytes, flags, exptime, itime, cid, cas, _ = (
                    GET_HDR.unpack_from(pm, head)
                )
                if ref and evict:
                    # read since the hand looked: it keeps its second chance. A chained
                    # item's byte is the hand's to clear, here where no page move can take
                    # its head away (`lru.sweep`)
                    if head != a:
                        pm[head + OFF_REF] = 0
                        cls.add_to(C_MOVES_TO_WARM, 1)
                    continue
                if pm[head + OFF_PINS]:
                    continue  # a reply is sending it (memcached skips items with refs too)
                dead = (exptime and exptime <= now) or self.is_flushed(owner, cas, itime, now)
                if not dead and not evict:
                    continue
                slot = self._slot_locked(owner, head, h)
                if slot < 0:
                    continue  # no item yet: a store is writing it
                cst = owner.cst
                base = cid * NSTAT
                if dead:
                    cst[base + S_RECLAIMED] += 1
                    if maintainer:
                        cst[base + S_SWEPT] += 1
                    if not fetched:
                        cst[base + S_EXPIRED_UNFETCHED] += 1
                else:
                    cst[base + S_EVICTED] += 1
                    if exptime:
                        cst[base + S_EVICTED_NONZERO] += 1
                    if not fetched:
                        cst[base + S_EVICTED_UNFETCHED] += 1
                    cls.set_field(C_EVICTED_TIME, now - itime)
                    if self.slab_reassign and self.w[G_AUTOMOVE] == 2:
                        self.ask_move_for(cls.id)
                    if self.on_evict is not None:
                        key = bytes(pm[head + HEADER : head + HEADER + nkey])
                        ttl = exptime - now if exptime else -1
                        self.on_evict(key, bool(fetched), ttl, now - itime, cid, nbytes)
                self._drop_locked(owner, slot, nkey, nbytes, flags, exptime, cid)
                if head != a:
                    freed += [c for c in self.chain_of(head) if c != a]
                    pm[head] = ST_ZOMBIE | ST_CHAINED
                return a
            finally:
                if owner is not part:
                    owner.__exit__()
        return _BUSY_ROOM if busy else NO_ROOM

    def _retry_locked(self, cls: SlabClass) -> tuple[int, ...]:
        """Class lock held: the candidate an eviction passed by because its partition was
        locked (`C_RETRY`), if it is still that item and still a candidate, as a sweep would
        yield it; the word is cleared (a candidate still busy is recorded again). No chunk of
        this class is freed or taken without its lock, so a chunk that still holds an item
        with that CAS is that item."""
        w, b = cls.w, cls.b
        r = int(w[b + C_RETRY])
        if not r:
            return ()
        w[b + C_RETRY] = 0
        a = r - 1
        pm = self.pm
        row = cls.page_base + (a >> PAGE_SHIFT) * P_WORDS
        if (
            w[row + P_CLSID] != cls.id
            or w[row + P_FLAGS] & PF_MOVING
            or (a & (SLAB_PAGE_SIZE - 1)) % cls.size
        ):
            return ()  # its page moved (or is moving) meanwhile
        st = pm[a]
        if st == ST_CONT:
            head = Q.unpack_from(pm, a + OFF_HEAD)[0]
            if clock_chunk(cls, head) != a or pm[head] != ST_LINKED | ST_CHAINED:
                return ()
        elif st == ST_LINKED:
            head = a
        else:
            return ()
        if Q.unpack_from(pm, head + OFF_CAS)[0] != w[b + C_RETRY_CAS] or pm[head + OFF_REF]:
            return ()  # another item now, or read since: the hand meets it in its turn
        return (a,)

    def _slot_locked(self, part: Partition, a: int, h: int) -> int:
        """The slot of `part`'s table that holds the item at `a`, whose header says hash `h`
        (the partition lock held), or -1: then it is no item, whatever its header says.

        The page scans (the clock hand, the crawler, the page mover) read a chunk's status
        and hash before they hold any partition lock, to know which to take. A chunk that a
        store in another process is filling reads half written meanwhile (a header is
        packed field by field: its status may be there before its hash), so the lock they
        then take may be another partition's, under which the header proves nothing. An
        item is in its partition's table (put there under that partition's lock): a chunk
        that is not, in the table of the lock held, is left alone."""
        return part.find_addr(h >> self.pshift, a)

    def _drop_locked(
        self,
        part: Partition,
        slot: int,
        nkey: int,
        nbytes: int,
        flags: int,
        exptime: int,
        cid: int,
    ) -> None:
        """Partition lock held: take the item in table slot `slot` (`_slot_locked`; counted
        in class `cid`) out of the table and the counters; its chunks are left to the
        caller."""
        part.remove_at(slot)
        cst = part.cst
        base = cid * NSTAT
        cst[base + S_NUMBER] -= 1
        cst[base + S_MEM] -= item_size(nkey, flags, nbytes, self.cas_enabled)
        if exptime:
            cst[base + S_TTL] -= 1

    # ---- writing and reading items (partition lock held) ----

    def write(
        self,
        a: int,
        key: bytes,
        h: int,
        value: bytes,
        flags: int,
        exptime: int,
        now: int,
        cas: int,
        ref: int,
        cid: int,
    ) -> None:
        """Fill the reserved chunk at `a` with a single-chunk item (it is linked from here).
        Its status is written last, as everywhere a chunk becomes an item or part of one:
        page scans in other processes read chunks without their lock (`_slot_locked`)."""
        pm = self.pm
        nkey = len(key)
        if CHECKS:
            checks.reserved(pm, a, "write")
        HDR.pack_into(
            pm, a, ST_RESERVED, nkey, ref, 0, len(value), flags, exptime, now, cid, cas, h, -1
        )
        ko = a + HEADER
        pm[ko : ko + nkey] = key
        ko += nkey
        pm[ko : ko + len(value)] = value
        pm[a] = ST_LINKED

    def write_chain(
        self,
        addrs: list[int],
        plan: list[int],
        key: bytes,
        h: int,
        value: bytes,
        flags: int,
        exptime: int,
        now: int,
        cas: int,
    ) -> int:
        """Fill reserved chunks (as `alloc_chain` took them for `plan`) with a chained item:
        the head (header and key, no value byte, counted in the largest class as memcached
        counts its header item), then the value chunks. Returns the head's address."""
        head = self.write_reserved(addrs, plan, key, h, len(value), flags, self.largest)
        pm = self.pm
        HDR.pack_into(
            pm,
            head,
            ST_RESERVED,
            len(key),
            self.starts_referenced(addrs, plan),
            0,
            len(value),
            flags,
            exptime,
            now,
            self.largest,
            cas,
            h,
            addrs[1] & ~HOLE,
        )
        copy_views(self.value_views(head, len(key), len(value), ST_CHAINED), [memoryview(value)])
        pm[head] = ST_LINKED | ST_CHAINED  # last (`write`)
        return head

    def starts_referenced(self, addrs: list[int], plan: list[int] | None) -> int:
        """1 if the new item's clock chunk is a hole the hand meets soon (tagged `HOLE`:
        `SlabClass.chunk_pop_locked`): it starts referenced, to live a turn. A chained
        item's clock chunk is its first value chunk of the largest class, else its first
        (`lru.clock_chunk`), not its header, whose tag was read: a chained item put in a
        hole just ahead of the hand went with the next evictions while older items stayed
        (a client-library hunt: a 512 KB value read back at once after a set_many missed)."""
        if plan is None or len(addrs) == 1:
            return addrs[0] & HOLE
        largest = self.largest
        for k in range(1, len(addrs)):
            if plan[2 * k - 1] == largest:
                return addrs[k] & HOLE
        return addrs[1] & HOLE

    def write_reserved(
        self,
        addrs: list[int],
        plan: list[int] | None,
        key: bytes,
        h: int,
        nbytes: int,
        flags: int,
        cid: int,
    ) -> int:
        """Label reserved chunks (as `alloc` or `alloc_chain` took them, for `plan`) for an
        item of `key` whose value is still to be written: the head's header and key, each
        value chunk's byte count (what `plan` gives it of the value, less the CRLF at its
        end), head and next. Returns the head's address; `link_reserved` finishes it."""
        ref = self.starts_referenced(addrs, plan)
        addrs = [a & ~HOLE for a in addrs]
        head = addrs[0]
        pm = self.pm
        if CHECKS:
            for a in addrs:
                checks.reserved(pm, a, "reservation")
        nkey = len(key)
        nxt = addrs[1] if len(addrs) > 1 else -1
        HDR.pack_into(pm, head, ST_RESERVED, nkey, ref, 0, nbytes, flags, 0, 0, cid, 0, h, nxt)
        pm[head + HEADER : head + HEADER + nkey] = key
        left = nbytes
        for k in range(1, len(addrs)):
            nxt = addrs[k + 1] if k + 1 < len(addrs) else -1
            assert plan is not None
            used = min(plan[2 * k], left)
            left -= used
            CONT_HDR.pack_into(pm, addrs[k], ST_RESERVED, used, head, nxt)
        for c in addrs[1:]:
            pm[c] = ST_CONT  # each once its header is whole (`write`)
        return head

    def link_reserved(self, head: int, exptime: int, now: int, cas: int) -> None:
        """The value is in: the reserved item at `head` becomes a linked one (the caller puts
        it in the table, its partition lock held)."""
        pm = self.pm
        I32.pack_into(pm, head + OFF_EXPTIME, exptime)
        U32.pack_into(pm, head + OFF_TIME, now)
        U64.pack_into(pm, head + OFF_CAS, cas)
        chained = Q.unpack_from(pm, head + OFF_NEXT)[0] >= 0
        pm[head] = ST_LINKED | ST_CHAINED if chained else ST_LINKED

    def free_reserved_locked(self, head: int) -> None:
        """Give back the chunks reserved at `head` (its partition lock held), each to its
        page's class (a chained item's head is counted in the largest class, but lies in a
        small one, and may have no value chunk yet: `chunk_for`)."""
        self.free_chunks(self.chain_of(head))

    def unreserve(self, head: int) -> None:
        """`free_reserved_locked`, taking the partition lock (a dead process's reservation)."""
        part = self.parts[Q.unpack_from(self.pm, head + OFF_HASH)[0] & self.pmask]
        with part:
            if self.pm[head] == ST_RESERVED:
                self.free_reserved_locked(head)

    def read_chained(self, a: int, nkey: int, nbytes: int) -> bytes:
        """The value of a chained item, joined from its value chunks (the head holds none)."""
        pm = self.pm
        pieces = []
        nxt = Q.unpack_from(pm, a + OFF_NEXT)[0]
        while nxt >= 0:
            used = U32.unpack_from(pm, nxt + OFF_NBYTES)[0]
            pieces.append(pm[nxt + HEADER : nxt + HEADER + used])
            nxt = Q.unpack_from(pm, nxt + OFF_NEXT)[0]
        return b"".join(pieces)

    def read_value(self, a: int) -> bytes:
        pm = self.pm
        st, nkey, _, _, nbytes = GET_HDR.unpack_from(pm, a)[:5]
        if st & ST_CHAINED:
            return self.read_chained(a, nkey, nbytes)
        vo = a + HEADER + nkey
        return pm[vo : vo + nbytes]

    def read_key(self, a: int) -> bytes:
        nkey = self.pm[a + 1]
        return self.pm[a + HEADER : a + HEADER + nkey]

    def unlink_locked(self, part: Partition, slot: int, a: int) -> None:
        """Take the item at `a` (in table slot `slot`) out of the cache and free its memory."""
        part.remove_at(slot)
        self.forget_locked(part, a)

    def forget_locked(self, part: Partition, a: int) -> None:
        """Uncount and free the item at `a`, already out of the table (replaced or removed)."""
        st, nkey, _, _, nbytes, flags, exptime, _, cid, _, _ = GET_HDR.unpack_from(self.pm, a)
        cst = part.cst
        base = cid * NSTAT
        cst[base + S_NUMBER] -= 1
        cst[base + S_MEM] -= item_size(nkey, flags, nbytes, self.cas_enabled)
        if exptime:
            cst[base + S_TTL] -= 1
        if self.pm[a + OFF_PINS]:
            self.pm[a] = ST_ZOMBIE | (st & ST_CHAINED)  # the last unpin frees it
            return
        self._free_item_locked(cid, st, a)

    def _free_item_locked(self, cid: int, st: int, a: int) -> None:
        """Give the chunks of the item at `a` (class `cid`) back to their classes (no class
        lock held)."""
        if st & ST_CHAINED:
            self.free_chunks(self.chain_of(a))
            return
        cls = self.classes[cid]
        with cls.lock:
            cls.chunk_push_locked(a)
            cls.count_used(-1)

    # ---- pins (see the arena's docstring) ----

    def pin_locked(self, a: int) -> bool:
        """One more reply sends the value of the item at `a` from its page (its partition
        lock held). False if it cannot be pinned (too many pins, its page is being moved):
        copy it instead."""
        pm = self.pm
        n = pm[a + OFF_PINS]
        if n >= MAX_PINS or self.w[self.arena.page_row(a >> PAGE_SHIFT) + P_FLAGS] & PF_MOVING:
            return False
        pm[a + OFF_PINS] = n + 1
        return True

    def unpin(self, a: int) -> None:
        """A reply has sent the value at `a` (no lock held): one pin goes; the last pin of a
        zombie frees its chunks."""
        pm = self.pm
        part = self.parts[Q.unpack_from(pm, a + OFF_HASH)[0] & self.pmask]
        with part:
            n = pm[a + OFF_PINS] - 1
            pm[a + OFF_PINS] = n
            st = pm[a]
            if not n and st & ST_ZOMBIE:
                self._free_item_locked(pm[a + OFF_CLSID], st, a)

    def value_views(self, a: int, nkey: int, nbytes: int, st: int) -> list[memoryview]:
        """The value of the item at `a` as views of its chunks' memory (valid while pinned);
        a chained item's empty chunks give none."""
        pv = self.arena.pages_view()
        if not st & ST_CHAINED:
            vo = a + HEADER + nkey
            return [pv[vo : vo + nbytes]]
        pm = self.pm
        views = []
        nxt = Q.unpack_from(pm, a + OFF_NEXT)[0]
        while nxt >= 0:
            used = U32.unpack_from(pm, nxt + OFF_NBYTES)[0]
            if used:
                views.append(pv[nxt + HEADER : nxt + HEADER + used])
            nxt = Q.unpack_from(pm, nxt + OFF_NEXT)[0]
        return views

    def release_holder(self, slot: int) -> int:
        """What the process of holder `slot` pinned or reserved, let go (it died, with its
        holder word clear), and the crawl pass it was pausing in, if it was (`crawl`: its
        crawl lock, which nothing else would ever release). The number of pins and
        reservations released."""
        w = self.w
        if w[G_CRAWLING] == slot + 1:
            w[G_CRAWLING] = 0
            self.crawl_lock.release()
        row = self.arena.pin_row(slot)
        n = 0
        try:
            for k in range(PIN_SLOTS):
                e = row[k]
                if not e:
                    continue
                row[k] = 0
                n += 1
                if e & PIN_TAG:
                    self.unpin(e - PIN_TAG)
                elif e & RESERVE_TAG:
                    self.unreserve(e - RESERVE_TAG)
        finally:
            row.release()
        return n

    # ---- page moves (memcached's slab rebalancer) ----

    def steal_page(self, cid: int) -> None:
        """Give class `cid`, which has no page, one taken from another class. Called with no
        lock held, by a store that will retry. memcached gives a class its first page past
        the limit (``do_slabs_newslab``); mcached bounds those first pages
        (`PagePool.first_page_room_locked`), and moves a page where memcached would have
        made one. A class that has pages but no chunk to spare gets none: there memcached
        fails too (a chained item's chunks: out of memory during read)."""
        if not self.slab_reassign:
            return
        with self.move_lock:
            dst = self.classes[cid]
            with dst.lock:
                if dst.nfree or dst.uncarved:
                    return  # another worker got it memory meanwhile
            with self.pool.lock:
                if self.pool.room():
                    return  # the retry takes a page from the pool
            src = self._pick_source(cid)
            if src is not None:
                self._move_page_locked(src, cid)

    def _pick_source(self, dst: int, least: int = 1) -> int | None:
        """The class to take a page from for `dst`: the one with the most pages, `least` at
        least. With -M only a page holding no item may move."""
        best = None
        best_pages = least - 1
        for cls in self.classes[1:]:
            if cls.id == dst:
                continue
            with cls.lock:
                npages = cls.npages
                if not npages:
                    continue
                if not self.evictions and not any(
                    cls.free_in_page_locked(p) == cls.perslab for p in cls.pages_locked()
                ):
                    continue
            if npages > best_pages:
                best, best_pages = cls.id, npages
        return best

    def reassign(self, src: int, dst: int) -> ReassignResult:
        """``slabs reassign <src> <dst>``: ask the page mover (`move_asked`) to move a page,
        after memcached's checks, in its order; the move itself runs in the background, as
        memcached hands it to its rebalancer thread. RUNNING while a move runs (the mover
        holds the move lock) or one is asked for and not done: the word is written under
        the move lock, so no request is lost or merged into another."""
        if not self.move_lock.acquire(False):
            return ReassignResult.RUNNING
        try:
            w = self.w
            if w[G_MOVE_ASKED]:
                return ReassignResult.RUNNING
            if src == dst:
                return ReassignResult.SAME
            if src == -1:
                src = self._pick_any(dst)
            if not (0 <= src <= self.largest and 0 <= dst <= self.largest):
                return ReassignResult.BADCLASS
            if src == 0:
                if self.pool.spare_count() < 2:
                    return ReassignResult.NOSPARE
            else:
                with self.classes[src].lock:
                    if self.classes[src].npages < 2:
                        return ReassignResult.NOSPARE
            w[G_MOVE_ASKED] = (src + 1) << 8 | dst
        finally:
            self.move_lock.release()
        self.arena.move_wake.release()
        return ReassignResult.OK

    def ask_move_for(self, dst: int) -> None:
        """`slab_automove=2`: memcached's ``lru_pull_tail`` asks for a page from any class
        (``slabs_reassign(-1, class)``) at each eviction. Called by the clock hand, a class
        lock and a partition lock held: so the move lock is only tried, as memcached's
        ``slabs_reassign`` tries its rebalance lock, and the source is left to the mover to
        pick (`move_asked`, no lock held then). A move running or asked for already is left
        alone: the ask is dropped, as memcached's is."""
        w = self.w
        if w[G_MOVE_ASKED] or not self.move_lock.acquire(False):
            return
        try:
            if w[G_MOVE_ASKED]:
                return
            w[G_MOVE_ASKED] = dst  # (src + 1) << 8 | dst, with src -1: any class
        finally:
            self.move_lock.release()
        self.arena.move_wake.release()

    @property
    def move_waiting(self) -> bool:
        """Whether a move asked for (`reassign`) is not done."""
        return bool(self.w[G_MOVE_ASKED])

    def await_move_ask(self, timeout: float) -> None:
        """The page mover: sleep until a move is asked for (or `wake_mover`), at most
        `timeout` seconds."""
        self.arena.move_wake.acquire(timeout=timeout)

    def wake_mover(self) -> None:
        """End an `await_move_ask` now (the mover is stopping)."""
        self.arena.move_wake.release()

    def move_asked(self) -> bool:
        """The page mover: make the move `reassign` asked for, if one is waiting. The word
        is cleared once the move is over (memcached's rebalance signal), so asking again
        meanwhile is RUNNING. A move the class no longer allows (it gave its pages away
        meanwhile) is dropped, as memcached's rebalancer drops it; one whose pages are all
        busy (replies sending from them to clients that do not read) stays asked, and the
        mover tries it again (each second: `SlabAutomover`), as memcached's rebalancer goes
        over its page until the items are free: meanwhile a ``slabs reassign`` is BUSY and
        ``slab_reassign_busy_items`` climbs. (It answered OK and dropped the move.) True
        if a page moved."""
        w = self.w
        if not w[G_MOVE_ASKED] or not self.move_lock.acquire(timeout=1.0):
            return False
        keep = False
        try:
            asked = int(w[G_MOVE_ASKED])  # read again, under the lock
            if not asked:
                return False
            src, dst = (asked >> 8) - 1, asked & 0xFF
            if src == -1:  # asked at an eviction (ask_move_for): any class with two pages
                src = self._pick_any(dst)
                if src < 0:
                    return False
            if src == 0:
                if self.pool.spare_count() < 2:
                    return False
            else:
                with self.classes[src].lock:
                    if self.classes[src].npages < 2:
                        return False
            moved = self._move_page_locked(src, dst)
            keep = moved is None
            return bool(moved)
        finally:
            if not keep:
                w[G_MOVE_ASKED] = 0
            self.move_lock.release()

    def _pick_any(self, dst: int) -> int:
        """memcached's ``slabs_reassign_pick_any``: the next class (round robin) with 2 pages."""
        w = self.w
        for _ in range(self.largest):
            cursor = int(w[G_PICK_CURSOR]) % self.largest + 1
            w[G_PICK_CURSOR] = cursor
            cls = self.classes[cursor]
            if cls.id != dst and cls.npages > 1:
                return cls.id
        return -1

    def _move_page_locked(self, src: int, dst: int) -> bool | None:
        """move_lock held, nothing else: empty one page of `src` (or a spare one, src 0) and
        give it to `dst` (0: back to the pool, which frees it while over the limit). True if
        it moved; None if every page of `src` it could take is busy (pinned, or a value
        arriving into it; each such page counts a busy item): worth trying again later."""
        self.w[G_MOVING] = 1
        try:
            if src == 0:
                pno = self.pool.take_spare()
                if pno < 0:
                    return False
            else:
                cls = self.classes[src]
                with cls.lock:
                    pages = cls.pages_locked()
                    if not pages:
                        return False
                    # never a page a reply is sending from or a value is being received
                    # into: the move would wait for that client (pins are refused on a
                    # page once it is moving)
                    free = [p for p in pages if not self._pinned_in(cls, p)]
                    if not free:
                        self.w[G_REASSIGN_BUSY] += len(pages)
                        return None
                    pno = max(free, key=cls.free_in_page_locked)
                    cls.remove_page_locked(pno)
                if not self._empty_page(cls, pno):
                    with cls.lock:
                        cls.restore_page_locked(pno)
                    return None
            if dst == 0:
                self.pool.give(pno)
            else:
                dcls = self.classes[dst]
                with dcls.lock:
                    self.pool.set_owner(pno, dst)
                    dcls.add_page_locked(pno)
            self.w[G_SLABS_MOVED] += 1
            return True
        finally:
            self.w[G_MOVING] = 0

    def _pinned_in(self, cls: SlabClass, pno: int) -> bool:
        """Whether a chunk of page `pno` is pinned, a zombie or reserved for a value being
        received, or is a chained item's chunk whose head is (an unlocked hint). Read a
        byte in each chunk at a time (strided slices of the page: a small class's page
        holds thousands of chunks, and its chained items' heads and tails may be pinned)."""
        pm = self.pm
        base = pno << PAGE_SHIFT
        size = cls.size
        end = base + cls.perslab * size
        if pm[base + OFF_PINS : end : size].strip(b"\0"):
            return True  # a pinned head (a continuation's pins byte is a pad: 0)
        marks = pm[base:end:size].translate(_BUSY_MARKS)
        if b"B" in marks:
            return True  # a zombie or a reservation
        i = marks.find(b"C")
        while i >= 0:
            head = Q.unpack_from(pm, base + i * size + OFF_HEAD)[0]
            if not 0 <= head < len(pm) - HEADER:
                return True  # a pointer being written (unlocked): look again later
            if pm[head] & (ST_ZOMBIE | ST_RESERVED) or pm[head + OFF_PINS]:
                return True
            i = marks.find(b"C", i + 1)
        return False

    def _empty_page(self, cls: SlabClass, pno: int) -> bool:
        """Rescue (copy to a free chunk of the class) or evict every item in a detached page
        (memcached's ``slab_rebalance_move``). Busy chunks (an item a reply is sending from,
        a chunk reserved for a value being received or written) are waited for; False if
        one stays busy for `MOVE_PATIENCE` passes (the caller puts the page back)."""
        pm = self.pm
        base = pno << PAGE_SHIFT
        parts = self.parts
        waited = 0
        while True:
            busy = 0
            for o in range(0, cls.perslab * cls.size, cls.size):
                c = base | o
                st = pm[c]
                if not st:
                    continue
                if st & (ST_RESERVED | ST_ZOMBIE):
                    busy += 1
                    continue
                if st & ST_CONT:
                    head = Q.unpack_from(pm, c + OFF_HEAD)[0]
                    if not 0 <= head < len(pm) - HEADER:
                        busy += 1  # a pointer being written (unlocked): look again
                        continue
                    h = Q.unpack_from(pm, head + OFF_HASH)[0]
                else:
                    head = c
                    h = Q.unpack_from(pm, c + OFF_HASH)[0]
                part = parts[h & self.pmask]
                with part:
                    with cls.lock:
                        moved = self._move_one_locked(part, cls, c, st, head, h)
                    if moved is _DROP_CHAIN:
                        # evicted: its chunks go back to their classes, no class lock held
                        # (a page of any class may hold a chunk of a chained item)
                        self.free_chunks(self.chain_of(head))
                    elif not moved:
                        busy += 1
            if not busy:
                return True
            self.w[G_REASSIGN_BUSY] += busy
            waited += 1
            if waited > MOVE_PATIENCE:
                # a reply still sending from the page (a client that does not read), or a
                # value still arriving: give up on this page rather than hang the mover
                log.warning("page %d of class %d stays busy: not moved", pno, cls.id)
                return False
            time.sleep(0.001)

    def _move_one_locked(
        self, part: Partition, cls: SlabClass, c: int, st: int, head: int, h: int
    ) -> bool | object:
        """Partition and class locks held: free the chunk at `c` of a detached page. A live
        item's chunk is copied to a free chunk of the class (a rescue: the table, or the
        previous chunk of a chained item, then points at the copy); with no free chunk the
        whole item is evicted (``slab_reassign_evictions_nomem``); an expired or flushed
        item just goes, as memcached's mover does not save it. False if the chunk changed
        meanwhile, or its item is pinned (a reply is sending it from these chunks);
        `_DROP_CHAIN` for a chained item taken out of the table, whose chunks (in several
        classes) the caller frees once it has let the class lock go."""
        pm = self.pm
        if pm[c] != st:
            return False
        if st & ST_CONT and Q.unpack_from(pm, c + OFF_HEAD)[0] != head:
            return False
        if not pm[head] & ST_LINKED or Q.unpack_from(pm, head + OFF_HASH)[0] != h:
            return False
        if pm[head + OFF_PINS]:
            return False  # a reply is sending it from its chunks: wait for it
        slot = self._slot_locked(part, head, h)
        if slot < 0:
            return False  # no item yet: a store is writing it, wait for it
        hst, nkey, _, _, nbytes, flags, exptime, itime, cid, cas, _ = GET_HDR.unpack_from(pm, head)
        # the item is counted in `cid` (a chained one in the largest class); `c` is in `cls`
        base = cid * NSTAT
        now = self.clock.now()
        dead = (exptime and exptime <= now) or self.is_flushed(part, cas, itime, now)
        to = -1 if dead else cls.chunk_pop_locked()
        if to < 0:
            if not dead:
                part.cst[base + S_MOVE_EVICTED] += 1
            self._drop_locked(part, slot, nkey, nbytes, flags, exptime, cid)
            if hst & ST_CHAINED:
                return _DROP_CHAIN
            cls.chunk_push_locked(head)
            cls.count_used(-1)
            return True
        to &= ~HOLE
        size = cls.size
        pm[to + 1 : to + size] = pm[c + 1 : c + size]
        pm[to] = pm[c]  # the status last (`write`)
        if c == head:
            part.tbl[slot] = make_entry(h >> self.pshift, to)
            nxt = Q.unpack_from(pm, to + OFF_NEXT)[0] if hst & ST_CHAINED else -1
            while nxt >= 0:
                Q.pack_into(pm, nxt + OFF_HEAD, to)
                nxt = Q.unpack_from(pm, nxt + OFF_NEXT)[0]
            part.cst[base + S_MOVE_RESCUED] += 1
            part.cst[base + S_TOTAL] += 1  # memcached relinks the copy: total_items counts it
        else:
            prev = head
            at = 1
            while (nxt := Q.unpack_from(pm, prev + OFF_NEXT)[0]) != c:
                if CHECKS:
                    checks.link(pm, head, nxt, at)
                    at += 1
                prev = nxt
            Q.pack_into(pm, prev + OFF_NEXT, to)
            self.w[G_CHUNK_RESCUES] += 1  # move_lock held: one writer
        pm[c] = ST_FREE  # on no free list: the page is leaving the class
        return True

    def automove_tick(self, ratio: float = 0.8, window: int = 30) -> bool:
        """One look at the classes (memcached's automover, every second): move a page where
        it is needed. True if a page moved. `ratio` and `window`: memcached's
        ``slab_automove_ratio`` and ``slab_automove_window`` (automove 1). The move lock
        is taken around a move alone (`_automove_page`), not around the look: memcached's
        automover decides without its rebalance lock, so a ``slabs reassign`` is BUSY only
        while a page moves. (Held for the whole tick, it made a reassign that came during
        one BUSY with nothing moving; the tick's period, a second and the tick, is a
        client's ``reassign; sleep 1``'s too, so such a client met it again each second:
        slabs-reassign-chunked.t's three reassigns could all be BUSY, and no page moved.)"""
        if not self._tick_lock.acquire(False):
            return False
        try:
            if self.slab_reassign and self.pool.over_limit():
                # cache_memlimit went down: give pages back, fullest class first, never a
                # class's last page (the first pages past the limit stay, as in memcached)
                src = self._pick_source(0, least=2)
                if src is not None:
                    return self._automove_page(src, 0, 2)
            evictions = self.class_counter(S_EVICTED)
            delta = [n - last for n, last in zip(evictions, self._last_evictions, strict=True)]
            self._last_evictions = evictions
            self._window.append(delta)
            automove = self.automove
            if not automove or not self.slab_reassign:
                return False
            if automove == 1:
                return self._automove_1(delta, ratio, window)
            # classes sitting on free memory give pages back to the pool, several a tick
            # (memcached's automover looks again at once after a move to the pool)
            gave = 0
            for cls in self.classes[1:]:
                while gave < AUTOMOVE_GIVE_MAX:
                    with cls.lock:
                        free = cls.nfree + cls.uncarved
                        spare = cls.npages > 1 and free >= AUTOMOVE_FREE_PAGES * cls.perslab
                    if not spare or not self._automove_page(cls.id, 0, 2):
                        break
                    gave += 1
            if gave:
                return True
            dst = max(range(1, self.largest + 1), key=lambda i: delta[i])
            if delta[dst] <= 0:
                return False
            with self.pool.lock:
                if self.pool.room():
                    return False  # the class will take a page from the pool itself
            window_evictions = [sum(w[i] for w in self._window) for i in range(self.largest + 1)]
            src = None
            best = 1
            for cls in self.classes[1:]:
                if cls.id != dst and window_evictions[cls.id] < window_evictions[dst]:
                    if cls.npages > best:
                        src, best = cls.id, cls.npages
            if src is None:
                return False
            self._window.clear()  # judge the next move on fresh evictions
            return self._automove_page(src, dst, 2)
        finally:
            self._tick_lock.release()

    def _automove_page(self, src: int, dst: int, least: int) -> bool:
        """A move the automover decided on: made if the move lock is free (else a move runs,
        a reassign's or a store's `steal_page`: the next tick looks again) and `src` still
        has `least` pages under it (a store's `steal_page` may have taken one since the
        look). True if the page moved."""
        if not self.move_lock.acquire(False):
            return False
        try:
            cls = self.classes[src]
            with cls.lock:
                if cls.npages < least:
                    return False
            return bool(self._move_page_locked(src, dst))
        finally:
            self.move_lock.release()

    def _automove_1(self, evicted_delta: list[int], ratio: float, window: int) -> bool:
        """slab_automove=1, memcached's ``slab_automove_run`` (the tick's lock held): each tick
        each class's age (`_automove_age`), and whether it evicted, ran out of memory or
        took a page (dirty) go into a window of `window` ticks. A class with 2.5 pages'
        worth of free chunks and a clean window gives pages back to the pool; else, once
        the window has filled, a page moves from the oldest class of more than two pages to
        the youngest class that evicts in most ticks of the window (or takes a quarter of
        its evictions) and evicted this tick, if that one's age is under `ratio` times the
        oldest's. A class whose items are read all the time is never the oldest: its page
        is never taken to make room for items nobody reads."""
        if ratio != self._am_ratio:  # memcached starts its window again at a new ratio
            self._am_ratio = ratio
            self._am_window.clear()
            self._am_before = []
            self._am_ticks = 0
        now = self.clock.now()
        oom = self.class_counter(S_OUTOFMEMORY)
        classes = self.classes
        after = []
        for cls, refused in zip(classes, oom, strict=True):
            with cls.lock:
                after.append((cls.npages, cls.nfree + cls.uncarved, cls.perslab, refused))
        before = self._am_before or after
        self._am_before = after
        total = sum(evicted_delta)
        tick = [AutomoveTick(0, False, 0.0, False)]
        for cid in range(1, self.largest + 1):
            ev = evicted_delta[cid]
            tick.append(
                AutomoveTick(
                    age=self._automove_age(classes[cid], now),
                    dirty=ev > 0
                    or after[cid][3] > before[cid][3]
                    or after[cid][0] > before[cid][0],
                    evicted_ratio=ev / total if ev > 0 else 0.0,
                    evicted=ev > 0,
                )
            )
        self._am_window.append(tick)
        while len(self._am_window) > window:
            self._am_window.popleft()
        self._am_ticks += 1
        oldest = youngest = -1
        oldest_age = 0
        youngest_age = 1 << 64
        youngest_evicting = False
        gave = 0
        for cid in range(1, self.largest + 1):
            ticks = [t[cid] for t in self._am_window]
            age = sum(t.age for t in ticks) // window  # memcached divides by the window's size
            npages, free, perslab, _ = after[cid]
            if free > perslab * AUTOMOVE_FREE_PAGES and not any(t.dirty for t in ticks):
                # a clean class sitting on free memory: pages back to the pool, several a
                # tick (memcached's automover looks again at once after such a move)
                cls = classes[cid]
                while gave < AUTOMOVE_GIVE_MAX:
                    with cls.lock:
                        free = cls.nfree + cls.uncarved
                        spare = cls.npages > 1 and free > AUTOMOVE_FREE_PAGES * cls.perslab
                    if not spare or not self._automove_page(cid, 0, 2):
                        break
                    gave += 1
                if gave:
                    return True
            if age > oldest_age and npages > AUTOMOVE_SOURCE_PAGES:
                oldest, oldest_age = cid, age
            if age < youngest_age and (
                sum(t.evicted for t in ticks) > window // 2
                or sum(t.evicted_ratio for t in ticks) / window > 0.25
            ):
                youngest, youngest_age = cid, age
                youngest_evicting = ticks[-1].evicted
        if (
            youngest < 0
            or oldest < 0
            or youngest == oldest
            or self._am_ticks <= window
            or not youngest_evicting
            or youngest_age >= oldest_age * ratio
        ):
            return False
        with self.pool.lock:
            if self.pool.room():
                return False  # the class will take a page from the pool itself
        return self._automove_page(oldest, youngest, AUTOMOVE_SOURCE_PAGES + 1)

    def _automove_age(self, cls: SlabClass, now: int) -> int:
        """automove 1's age of a class: of the oldest of the next items the clock hand
        reaches (`AUTOMOVE_SAMPLE` of them, among `AUTOMOVE_SCAN` chunks), a referenced
        one counted `ACTIVE_GRACE` younger; 0 if there are none."""
        return self.oldest_near_hand(
            cls, now, sample=AUTOMOVE_SAMPLE, scan=AUTOMOVE_SCAN, grace=ACTIVE_GRACE
        )

    # ---- the LRU crawler ----

    def crawl(
        self,
        classes: set[int] | None = None,
        pause: Callable[[int], None] | None = None,
        limit: int = 0,
        owner: int = 1,
        sweep: bool = False,
    ) -> int:
        """Reclaim expired and flushed items of `classes` (all that may hold some if None),
        page by page, without reads (memcached's LRU crawler). Returns how many. `pause` is
        called after each page with the number of items it checked; `limit` (memcached's
        ``lru_crawler_tocrawl``), when not 0, is how many items of each class to check at
        most: memcached checks those at its LRU's tail, mcached the first in page order.
        `owner` (the crawling process's holder slot + 1) is written in G_CRAWLING while the
        pass holds the crawl lock, so that `release_holder` can let the pass of a process
        that died in a `pause` go. `sweep`: the pass that follows a flush_all, standing for
        memcached's LRU maintainer, which frees flushed items as it meets them at its LRUs'
        tails: it takes the flushed items alone and counts no crawl (lru_crawler_starts,
        crawler_items_checked), as memcached's crawler has not run."""
        if not self.crawl_lock.acquire(False):
            return 0  # a pass is running (the background crawler, or an asked one)
        try:
            return self._crawl_locked(classes, pause, limit, owner, sweep)
        finally:
            self.crawl_lock.release()

    def ask_crawl(self, classes: set[int] | None, limit: int) -> bool:
        """``lru_crawler crawl``: leave a pass of `classes` (None: all) checking at most
        `limit` items of each for the crawler to run (`crawl_asked`), as memcached's worker
        hands it to its crawler thread. False while a pass runs or one is asked for already
        (memcached's BUSY): the words are written under the crawl lock, which a pass holds
        throughout, so no request is lost or merged into another."""
        if not self.crawl_lock.acquire(False):
            return False
        try:
            w = self.w
            if w[G_CRAWL_ASKED]:
                return False
            w[G_CRAWL_LIMIT] = limit
            w[G_CRAWL_ASKED] = CRAWL_ALL if classes is None else sum(1 << (i - 1) for i in classes)
        finally:
            self.crawl_lock.release()
        self.arena.crawl_wake.release()
        return True

    @property
    def crawl_busy(self) -> bool:
        """A pass runs (G_CRAWLING names its process) or is asked for (read unlocked)."""
        return bool(self.w[G_CRAWLING] or self.w[G_CRAWL_ASKED])

    def await_crawl_ask(self, timeout: float) -> None:
        """The crawler: sleep until a pass is asked for (or `wake_crawler`), at most
        `timeout` seconds."""
        self.arena.crawl_wake.acquire(timeout=timeout)

    def wake_crawler(self) -> None:
        """End an `await_crawl_ask` now (the crawler is stopping)."""
        self.arena.crawl_wake.release()

    def crawl_asked(self, pause: Callable[[int], None] | None = None, owner: int = 1) -> int:
        """Run the pass `ask_crawl` left, if one is waiting and no other pass runs (the
        crawler, within its step): as `crawl`. How many items it reclaimed."""
        w = self.w
        if not w[G_CRAWL_ASKED] or not self.crawl_lock.acquire(False):
            return 0
        try:
            asked = int(w[G_CRAWL_ASKED])  # read again: another pass may have run it
            if not asked:
                return 0
            w[G_CRAWLING] = owner  # running before no longer asked: stats sees one or both
            w[G_CRAWL_ASKED] = 0
            if asked == CRAWL_ALL:
                # every class, as memcached's ``crawl all`` checks every item (the background
                # pass passes over classes where nothing can have expired: a hunt saw
                # crawler_items_checked stay 0 over 1.3 million items without a TTL)
                classes = set(range(1, self.largest + 1))
            else:
                classes = {i + 1 for i in range(asked.bit_length()) if asked >> i & 1}
            return self._crawl_locked(classes, pause, int(w[G_CRAWL_LIMIT]), owner)
        finally:
            self.crawl_lock.release()

    @property
    def crawl_waiting(self) -> bool:
        """Whether a pass asked for (`ask_crawl`) has not begun."""
        return bool(self.w[G_CRAWL_ASKED])

    def _crawl_locked(
        self,
        classes: set[int] | None,
        pause: Callable[[int], None] | None,
        limit: int,
        owner: int,
        sweep: bool = False,
    ) -> int:
        """`crawl`'s pass, the crawl lock held."""
        w = self.w
        w[G_CRAWLING] = owner
        try:
            if not sweep:
                w[G_CRAWLER_STARTS] += 1
            now = self.clock.now()
            gen = self.flush_gen
            flush_at = self.flush_at
            reclaimed = 0
            ttl = self.class_counter(S_TTL)
            for cls in self.classes[1:]:
                if classes is not None:
                    if cls.id not in classes:
                        continue
                elif (
                    not ttl[cls.id]
                    and cls.field(C_CRAWLED_FLUSH_GEN) == gen
                    and not (cls.field(C_CRAWLED_TIME) < flush_at - 1 <= now)
                ):
                    continue  # nothing here can have expired or been flushed
                with cls.lock:
                    pages = cls.pages_locked()
                left = limit or -1  # -1: no limit
                for pno in pages:
                    n, checked = self._crawl_page(cls, pno, now, left, sweep)
                    reclaimed += n
                    if pause is not None:
                        pause(checked)
                    if left > 0:
                        left -= checked
                        if not left:
                            break
                else:  # the whole class was checked: nothing it holds now is stale
                    with cls.lock:
                        cls.set_field(C_CRAWLED_FLUSH_GEN, gen)
                        cls.set_field(C_CRAWLED_TIME, now)
            return reclaimed
        finally:
            w[G_CRAWLING] = 0

    def _crawl_page(
        self, cls: SlabClass, pno: int, now: int, left: int, sweep: bool = False
    ) -> tuple[int, int]:
        """Reclaim what is stale in page `pno` of `cls`, checking at most `left` items of it
        (-1: all): (how many reclaimed, how many checked). The items of a class are those
        of its clock (`lru`): its single-chunk items, and the chained items whose clock
        chunk it holds (`lru.clock_chunk`; their heads, in smaller classes' pages, are not
        theirs)."""
        pm = self.pm
        parts = self.parts
        pmask = self.pmask
        base = pno << PAGE_SHIFT
        found = []
        checked = 0
        # unlocked: hints, checked again under the locks (the marks read fresh, not from
        # views another process may have moved since they last took their lock)
        w = self.w
        flush_at = int(w[G_FLUSH_AT])
        flush_seq = [int(w[p.tb + T_FLUSH_SEQ]) for p in parts]
        for o in range(0, cls.perslab * cls.size, cls.size):
            c = base | o
            st = pm[c]
            if st == ST_LINKED:
                head = c
            elif st == ST_CONT:
                head = Q.unpack_from(pm, c + OFF_HEAD)[0]
                if clock_chunk(cls, head) != c or pm[head] != ST_LINKED | ST_CHAINED:
                    continue  # (clock_chunk first: it checks the pointer is in the pages)
            else:
                continue
            if checked == left:
                break
            checked += 1
            exptime, itime, _, cas, h = TAIL_HDR.unpack_from(pm, head + OFF_EXPTIME)
            if (
                (exptime and exptime <= now)
                or cas <= flush_seq[h & pmask]
                or (flush_at and flush_at <= now + 1 and itime < flush_at)
            ):
                found.append((c, h))
        reclaimed = 0
        for c, h in found:
            part = parts[h & pmask]
            with part:
                with cls.lock:
                    if self.pool.clsid(pno) != cls.id or self.pool.flags(pno) & PF_MOVING:
                        break  # the page left the class
                    head = c
                    if pm[c] == ST_CONT:
                        head = Q.unpack_from(pm, c + OFF_HEAD)[0]
                        if clock_chunk(cls, head) != c:
                            continue
                    elif pm[c] != ST_LINKED:
                        continue
                    st, nkey, _, fetched, nbytes, flags, exptime, itime, cid, cas, hh = (
                        GET_HDR.unpack_from(pm, head)
                    )
                    if not st & ST_LINKED or hh != h or pm[head + OFF_PINS]:
                        continue  # another item now, or being sent: next pass
                    flushed = self.is_flushed(part, cas, itime, now)
                    if not (flushed or (exptime and exptime <= now and not sweep)):
                        continue
                    slot = self._slot_locked(part, head, h)
                    if slot < 0:
                        continue  # no item yet: a store is writing it
                    b = cid * NSTAT
                    # memcached's LRU maintainer meets flushed items at its tails within
                    # seconds of a flush_all, before its crawler, and counts them as its
                    # reclaims, the unfetched ones too (lru_pull_tail): so here
                    # reclaims (not, as memcached's allocations' are, direct_reclaims)
                    if flushed:
                        part.cst[b + S_RECLAIMED] += 1
                        part.cst[b + S_SWEPT] += 1
                    else:
                        part.cst[b + S_CRAWLER_RECLAIMED] += 1
                    if not fetched:
                        part.cst[b + S_EXPIRED_UNFETCHED] += 1
                    self._drop_locked(part, slot, nkey, nbytes, flags, exptime, cid)
                    if head == c:
                        cls.chunk_push_locked(c)
                        cls.count_used(-1)
                reclaimed += 1
                if head != c:  # its chunks, each to its class, the class lock let go
                    self.free_chunks(self.chain_of(head))
        if not sweep:
            with cls.lock:
                cls.add_to(C_CRAWLER_CHECKED, checked)
        return reclaimed, checked

    # ---- stats ----

    def class_counter(self, field: int) -> list[int]:
        """One counter summed over partitions, per class (index = class id). Each word is
        read once, without locks: a figure, not a transaction."""
        out = [0] * (self.largest + 1)
        for part in self.parts:
            cst = part.cst
            for cid in range(1, self.largest + 1):
                out[cid] += cst[cid * NSTAT + field]
        return out

    def class_counters(self) -> list[list[int]]:
        """Every per-class counter summed over partitions: ``rows[cid][S_*]``."""
        arena = self.arena
        width = arena.cst_width  # the partitions' counters lie one after another
        flat = arena.words[arena.cst_base : arena.cst_base + arena.partitions * width].tolist()
        # each counter's column summed in C: a Python loop over every partition's every
        # counter took 0.73 ms a call with 16 partitions, this 0.21 (17.2 and 2.0 with 256)
        totals = [sum(flat[k::width]) for k in range(NSTAT, width)]
        rows = [[0] * NSTAT]  # class 0, the page pool, counts nothing here
        rows += [totals[b : b + NSTAT] for b in range(0, width - NSTAT, NSTAT)]
        return rows

    def oldest_near_hand(
        self,
        cls: SlabClass,
        now: int,
        hold: AbstractContextManager[object] | None = None,
        sample: int = 64,
        scan: int = 0,
        grace: int = 0,
    ) -> int:
        """Age of the oldest of the next `sample` items the hand will reach: the age of what
        gets evicted next (memcached's ``age``: the time of the item at the LRU tail).
        `hold` is entered around the class lock alone (the caller's holder word), not
        around the walk, which reads the pages with no lock. `scan`: at most this many
        chunks looked at (0: the whole class); `grace`: seconds a referenced item's time
        counts later."""
        with hold or nullcontext(), cls.lock:
            pages = cls.pages_locked()
            hand, ci = cls.field(C_HAND_PAGE), cls.field(C_HAND_CHUNK)
        if not pages:
            return 0
        pi = pages.index(hand) if hand in pages else 0
        if hand not in pages:
            ci = 0
        pm = self.pm
        oldest = now
        seen = 0
        chunks = len(pages) * cls.perslab
        for _ in range(min(chunks, scan) if scan else chunks):
            if ci >= cls.perslab:
                ci = 0
                pi = (pi + 1) % len(pages)
            c = (pages[pi] << PAGE_SHIFT) + ci * cls.size
            ci += 1
            st = pm[c]
            if st == ST_CONT:  # a chained item's clock chunk stands for it (`lru`)
                head = Q.unpack_from(pm, c + OFF_HEAD)[0]
                if clock_chunk(cls, head) == c and pm[head] == ST_LINKED | ST_CHAINED:
                    st, c = ST_LINKED, head
            if st == ST_LINKED:
                t = I32.unpack_from(pm, c + OFF_TIME)[0]
                if grace and pm[c + OFF_REF]:
                    t += grace
                oldest = min(oldest, t)
                seen += 1
                if seen >= sample:
                    break
        return max(0, now - oldest) if seen else 0

    def iter_items(
        self, part: Partition, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, int]]:
        """(slot, address) of every item in the table, or in its slots `start` to `stop`
        (partition lock held)."""
        tbl = part.tbl
        for i in range(start, part.capacity if stop is None else min(stop, part.capacity)):
            e = tbl[i]
            if e > 1:
                yield i, e & ADDR_MASK

    def reset_counters(self, like: Items | None = None) -> None:
        """Zero the counters, not the gauges (``stats reset``), or set them to `like`'s, an
        arena of the same layout: a dead arena's counters carried into its replacement
        (`Cache.reset_stats`), read without its locks (whoever wrote them is dead)."""
        if like is not None:
            assert len(like.parts) == len(self.parts) and len(like.classes) == len(self.classes)

        def g(k: int) -> int:
            return int(like.w[k]) if like is not None else 0

        for p, part in enumerate(self.parts):
            src = like.parts[p] if like is not None else None
            with part:
                cst = part.cst
                for cid in range(self.largest + 1):
                    b = cid * NSTAT
                    for k in range(NSTAT):
                        if k not in GAUGES:
                            cst[b + k] = src.cst[b + k] if src is not None else 0
                for t in (T_GET_EXPIRED, T_GET_FLUSHED):
                    part.w[part.tb + t] = src.w[src.tb + t] if src is not None else 0
        for c, cls in enumerate(self.classes):
            with cls.lock:
                for f in (C_MOVES_TO_WARM, C_REFLOCKED, C_EVICTED_TIME, C_CRAWLER_CHECKED):
                    cls.set_field(f, like.classes[c].field(f) if like is not None else 0)
        with self.move_lock:
            for k in (G_SLABS_MOVED, G_REASSIGN_BUSY, G_CHUNK_RESCUES):
                self.w[k] = g(k)
        self.w[G_CRAWLER_STARTS] = g(G_CRAWLER_STARTS)
        with self.pool.lock:  # memcached's stats_reset zeroes its stats, malloc_fails too
            self.w[G_MALLOC_FAILS] = g(G_MALLOC_FAILS)

    def flush(self, realtime_at: int) -> None:
        """flush_all: every item now (`realtime_at` 0), or those stored before that server
        time once the second before it comes (`is_flushed`); when that is now already (a
        delay of 1, a time past), every item stored so far goes at once too, by its CAS
        (memcached's oldest_cas). Nothing is walked: marks move, under every partition's
        lock at once. A time at or before the daemon's start (`Clock.realtime` answers 1) flushes
        nothing and calls off a delayed flush still to come: memcached's oldest_live is then
        0, which its ``item_is_flushed`` reads as no flush.

        Without CAS (``-C``) memcached has no oldest_cas, and its oldest_live is the flush's
        time itself, not the second before: items whose time is at or before it go, from
        that second on. So a flush now takes what is stored in the rest of this second too,
        and a delayed one comes a second later than with CAS. The same here: the mark is
        the second after that time, read as with CAS, and no CAS cut is made."""
        w = self.w
        if realtime_at == 1:
            realtime_at = 0
            now_too = False
        elif not self.cas_enabled:
            realtime_at = (realtime_at or self.clock.now()) + 1
            now_too = False
        else:
            now_too = not realtime_at or realtime_at - 1 <= self.clock.now()
        w[G_FLUSH_AT] = realtime_at
        # One cut for every partition, memcached's oldest_cas: every store done before it
        # goes, whatever its partition, and none after it. (Each partition marked with its
        # own last CAS as its lock came free let a client's store in a partition marked
        # already live, and its next one, in a partition marked later, go.) CAS numbers come
        # from one counter (`Partition.next_cas`): a store that starts after this read gets
        # a higher one.
        #
        # Every partition lock is held from the cut to the last mark (in partition order;
        # no other path waits for a second partition lock, so this cannot deadlock): an
        # incr in place or an ``md I`` gives an item a new CAS, and one in a partition not
        # marked yet, after the cut was read, kept an item older than the flush past it.
        held: list[Partition] = []
        try:
            for part in self.parts:
                part.__enter__()
                held.append(part)
            cut = int(self.w[G_CAS])  # no store draws one now: every partition lock is held
            for part in held:
                if now_too:
                    part.mark_flushed(cut)
                else:
                    part.bump()
        finally:
            for part in reversed(held):
                part.__exit__()
        with self.flush_lock:  # not crawl_lock: a crawl pass holds that for seconds
            w[G_FLUSH_GEN] += 1

    def spare_pages(self) -> int:
        return self.pool.spare_count()


__all__ = [
    "ItemStats",
    "Items",
    "Partition",
    "item_size",
]
