"""Item lifecycle (memcached's ``items.c``): where an item lives, how it gets memory, how it
leaves. `Items` owns the page pool, the slab classes and the partitions; `cache.Cache` holds
the locks around it and decides what each command means.

Layout. An item is written into a chunk of page memory, header first (48 bytes, no padding
beyond memcached's own item header, which is also 48):

    0  status   ST_* (slabs)        12 exptime  int32, server time; 0 = never
    1  nkey                         16 time     uint32, server time of the last store
    2  ref      clock reference     24 cas      uint64, also the flush_all sequence mark
    3  fetched  read since stored   32 hash     int64, hash(key): partition and table slot
    4  nbytes   value length        40 next     chained items: the next chunk (-1: none)
    8  flags    uint32              48 key, then the value (no CRLF, no NUL)

An item of memcached's total size ``48 + nkey + 1 + nbytes + 2 (+ 8 CAS) (+ 4 flags)`` goes
in the class memcached would put it in; our layout is never larger, so it always fits. Items
larger than the largest chunk are chained through chunks of the largest class: the head
holds the header, key and the start of the value, each continuation chunk (`ST_CONT`) holds
its head's address at 32, the next chunk at 40, and value bytes from 48.

Partitions. The key space is split by ``hash(key) & (partitions - 1)``; each `Partition` is an
item table (`assoc.Assoc`) with its lock, its CAS sequence and flush mark, and counters per
slab class. An item, the chunks it occupies and its counters are only changed with its
partition lock held; chunks change hands (free <-> used) only with their class lock held too.

Locks, in the only order they are taken:

    move_lock -> partition lock -> class lock -> pool lock

A thread that holds a class lock and needs another partition's lock (the clock hand evicting,
in ``_evict_locked``) only try-acquires it and skips the item if it is busy, as memcached's
``lru_pull_tail`` does with item locks. A store that needs a page taken from another class
releases its partition lock first (`steal_page`) and retries.

Reads without locks. The page mover and the crawler first scan pages without any lock to
find candidates (a racy read is only a hint), then lock the candidate's partition and class
and check it again before they touch it.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mcached.clock import Clock
from mcached.storage.assoc import ADDR_MASK, Assoc, make_entry
from mcached.storage.lru import sweep
from mcached.storage.results import ReassignResult
from mcached.storage.slabs import (
    HOLE,
    OFF_MASK,
    OFF_NEXT,
    PAGE_SHIFT,
    SLAB_PAGE_SIZE,
    ST_CHAINED,
    ST_CONT,
    ST_LINKED,
    ST_RESERVED,
    Page,
    PagePool,
    SlabClass,
    class_lookup,
    slab_class_sizes,
)

log = logging.getLogger("mcached.storage")

HEADER = 48
OFF_NKEY = 1
OFF_FETCHED = 3
OFF_EXPTIME = 12
OFF_CAS = 24
OFF_HASH = 32
OFF_HEAD = 32  # continuation chunk: its item's head address
OFF_KEY = HEADER

HDR = struct.Struct("<BBBBIIiIxxxxQqq")  # the whole header, for writing
GET_HDR = struct.Struct("<BBBBIIiIxxxxQ")  # up to cas: what a read needs
TAIL_HDR = struct.Struct("<iIxxxxQq")  # exptime, time, cas, hash: what the crawler needs
CONT_HDR = struct.Struct("<B31xqq")  # status, head, next
Q = struct.Struct("<q")
I32 = struct.Struct("<i")
U64 = struct.Struct("<Q")

NO_ROOM = -1  # nothing could be evicted (or -M: nothing expired)
NEED_PAGE = -2  # the class has no page (or too few chunks for a chained item)
UNLIMITED_SCAN = 0
NO_EVICT_SCAN = 200  # -M: chunks the hand looks at for an expired item before giving up
# (memcached looks at 5 items of the LRU tail; the crawler reclaims what the hand misses)

# Per-class counters, one row of NSTAT ints per class in each partition (`Partition.cst`,
# index ``clsid * NSTAT + S_*``): written under the partition lock, summed for `stats`.
S_NUMBER = 0  # gauge: items
S_MEM = 1  # gauge: bytes requested (memcached's total item size)
S_TTL = 2  # gauge: items with an exptime (the crawler skips classes without any)
S_TOTAL = 3
S_EVICTED = 4
S_EVICTED_NONZERO = 5
S_EVICTED_UNFETCHED = 6
S_OUTOFMEMORY = 7
S_RECLAIMED = 8
S_EXPIRED_UNFETCHED = 9
S_CRAWLER_RECLAIMED = 10
S_GET_HITS = 11
S_CMD_SET = 12
S_DELETE_HITS = 13
S_INCR_HITS = 14
S_DECR_HITS = 15
S_CAS_HITS = 16
S_CAS_BADVAL = 17
S_TOUCH_HITS = 18
S_MOVE_EVICTED = 19  # slab_reassign_evictions_nomem
S_MOVE_RESCUED = 20  # slab_reassign_rescues
NSTAT = 21
GAUGES = (S_NUMBER, S_MEM, S_TTL)

MOVE_PATIENCE = 5000  # passes of 1 ms the mover waits for a reserved chunk to be written
AUTOMOVE_WINDOW = 3  # automove 1: a class must evict in this many ticks in a row
AUTOMOVE_FREE_PAGES = 2.5  # a class holding this many pages' worth of free chunks gives one


def item_size(nkey: int, flags: int, nvalue: int, cas_enabled: bool) -> int:
    """Bytes memcached charges for an item: header, key + NUL, value + CRLF, flags, CAS."""
    size = HEADER + nkey + 1 + nvalue + 2
    if flags:
        size += 4
    if cas_enabled:
        size += 8
    return size


class Partition(Assoc):
    """A slice of the key space: its item table, lock, CAS sequence, flush mark, counters."""

    __slots__ = ("index", "lock", "seq", "stride", "flush_seq", "cst", "get_expired", "get_flushed")

    def __init__(self, index: int, count: int, nclasses: int, hash_at: Callable[[int], int]):
        super().__init__(hash_at)
        self.index = index
        self.lock = threading.Lock()
        # CAS numbers: partition i draws i + count, i + 2*count... so they are unique across
        # partitions without a shared lock, and increase within each.
        self.seq = index
        self.stride = count
        self.flush_seq = 0  # items with cas <= flush_seq are flushed
        self.cst = [0] * ((nclasses + 1) * NSTAT)
        self.get_expired = 0
        self.get_flushed = 0


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


class Items:
    """Pages, classes, partitions, and every operation that moves an item in or out of them.

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
    ) -> None:
        if partitions < 1 or partitions & (partitions - 1):
            raise ValueError("partitions must be a power of two")
        self.clock = clock
        self.item_size_max = item_size_max
        self.evictions = evictions
        self.cas_enabled = cas_enabled
        self.slab_reassign = slab_reassign
        self.automove = slab_automove
        self.sizes = slab_class_sizes(chunk_size, growth_factor, slab_chunk_max)
        self.largest = len(self.sizes)
        self.chunk_max = self.sizes[-1]
        self.lookup = class_lookup(self.sizes)
        self.classes: list[SlabClass] = [SlabClass(0, SLAB_PAGE_SIZE)]  # 0: the global pool
        self.classes += [SlabClass(i + 1, size) for i, size in enumerate(self.sizes)]
        self.pool = PagePool(memory_limit, NSTAT)
        self.bufs = self.pool.bufs
        self.mvs = self.pool.mvs
        self.pbase = self.pool.base
        self.pshift = partitions.bit_length() - 1
        self.pmask = partitions - 1
        self.parts = [
            Partition(i, partitions, self.largest, self.hash_at) for i in range(partitions)
        ]
        # flush_all with a delay: items stored before this server time are gone once it
        # passes. Written by flush_all only, read as one value.
        self.flush_at = 0
        self.flush_gen = 0  # bumped by every flush_all: the crawler sweeps all classes again
        self.flush_lock = threading.Lock()  # guards flush_gen's increments (held briefly)
        # Page moves: one at a time (memcached's single rebalancer thread).
        self.move_lock = threading.Lock()
        self.slabs_moved = 0  # these four: written with move_lock held
        self.reassign_busy = 0
        self.automove_runs = 0
        self._last_evictions = [0] * (self.largest + 1)
        self._window: deque[list[int]] = deque(maxlen=AUTOMOVE_WINDOW)
        self._pick_cursor = 0  # slabs_reassign_pick_any's round robin
        # The crawler: one pass at a time.
        self.crawl_lock = threading.Lock()
        self.crawler_starts = 0

    # ---- sizes ----

    def class_for(self, total: int) -> int:
        return self.lookup[(total + 7) >> 3] if total <= self.chunk_max else self.largest

    def chunks_for(self, nkey: int, nbytes: int) -> int:
        """Chunks of the largest class an item takes (1 unless it is chained)."""
        first = self.chunk_max - HEADER - nkey
        if nbytes <= first:
            return 1
        rest = self.chunk_max - HEADER
        return 1 + (nbytes - first + rest - 1) // rest

    def hash_at(self, addr: int) -> int:
        """The table hash bits (``hash >> partition bits``) of the item at `addr`."""
        return int(
            Q.unpack_from(self.bufs[addr >> PAGE_SHIFT], (addr & OFF_MASK) + OFF_HASH)[0]
            >> self.pshift
        )

    # ---- getting memory ----

    def alloc(self, cid: int, part: Partition, now: int) -> int:
        """One reserved chunk of class `cid` (its address, tagged `HOLE` when it came from a
        free list), or NO_ROOM / NEED_PAGE. The caller holds `part`'s lock (evictions in
        `part` then need no trylock)."""
        cls = self.classes[cid]
        lock = cls.lock
        lock.acquire()
        try:
            a = self._alloc_locked(cls, part, now)
            if a < 0 and not cls.pages:
                return NEED_PAGE
            return a
        finally:
            lock.release()

    def alloc_chain(self, part: Partition, n: int, now: int) -> list[int] | int:
        """`n` reserved chunks of the largest class for a chained item, or NO_ROOM/NEED_PAGE."""
        cls = self.classes[self.largest]
        got: list[int] = []
        with cls.lock:
            for _ in range(n):
                a = self._alloc_locked(cls, part, now)
                if a < 0:
                    for x in got:
                        cls.chunk_push_locked(self._page(x), x & OFF_MASK & ~HOLE)
                    cls.used -= len(got)
                    if len(cls.pages) * cls.perslab < n:
                        return NEED_PAGE
                    return a
                got.append(a)
        return got

    def _alloc_locked(self, cls: SlabClass, part: Partition, now: int) -> int:
        """Class lock held: free chunk, else a new page, else evict from the clock hand."""
        a = cls.chunk_pop_locked()
        if a < 0:
            page = self.pool.take(cls.id)
            if page is not None:
                cls.add_page_locked(page)
                a = cls.chunk_pop_locked()
            else:
                a = self._evict_locked(cls, part, now)
                if a < 0:
                    return a
                self.bufs[a >> PAGE_SHIFT][a & OFF_MASK] = ST_RESERVED
                return a  # the victim's chunk: `used` is unchanged
        self.bufs[a >> PAGE_SHIFT][a & OFF_MASK & ~HOLE] = ST_RESERVED
        cls.used += 1
        return a

    def _evict_locked(self, cls: SlabClass, part: Partition, now: int) -> int:
        """Class lock held: free the chunk of the next clock candidate, reclaiming it if it is
        expired or flushed, evicting it otherwise (not with -M). Its address, or NO_ROOM."""
        parts = self.parts
        pmask = self.pmask
        flush_at = self.flush_at
        evict = self.evictions
        if evict:
            # two turns: the first may only clear reference bytes
            limit = (2 * len(cls.pages) + 1) * cls.perslab
        else:
            limit = NO_EVICT_SCAN
        for page, o in sweep(cls, limit, evict):
            buf = page.buf
            h = Q.unpack_from(buf, o + OFF_HASH)[0]
            owner = parts[h & pmask]
            if owner is not part and not owner.lock.acquire(False):
                cls.reflocked += 1
                continue
            try:
                st, nkey, ref, fetched, nbytes, flags, exptime, itime, cas = GET_HDR.unpack_from(
                    buf, o
                )
                if ref and evict:
                    continue  # read since the hand looked: it keeps its second chance
                dead = (
                    (exptime and exptime <= now)
                    or cas <= owner.flush_seq
                    or (flush_at and flush_at <= now and itime < flush_at)
                )
                if not dead and not evict:
                    continue
                cst = owner.cst
                base = self.pbase[page.pno]
                if dead:
                    cst[base + S_RECLAIMED] += 1
                    if not fetched:
                        cst[base + S_EXPIRED_UNFETCHED] += 1
                else:
                    cst[base + S_EVICTED] += 1
                    if exptime:
                        cst[base + S_EVICTED_NONZERO] += 1
                    if not fetched:
                        cst[base + S_EVICTED_UNFETCHED] += 1
                    cls.evicted_time = now - itime
                addr = page.pno << PAGE_SHIFT | o
                self._drop_locked(owner, cls, page, o, h, st, nkey, nbytes, flags, exptime)
                return addr
            finally:
                if owner is not part:
                    owner.lock.release()
        return NO_ROOM

    def _drop_locked(
        self,
        part: Partition,
        cls: SlabClass,
        page: Page,
        o: int,
        h: int,
        st: int,
        nkey: int,
        nbytes: int,
        flags: int,
        exptime: int,
    ) -> None:
        """Partition and class locks held: take the item at `o` out of the table and the
        counters, free its continuation chunks; its head chunk is left to the caller."""
        addr = page.pno << PAGE_SHIFT | o
        slot = part.find_addr(h >> self.pshift, addr)
        assert slot >= 0, "a linked item is in its partition's table"
        part.remove_at(slot)
        cst = part.cst
        base = self.pbase[page.pno]
        cst[base + S_NUMBER] -= 1
        cst[base + S_MEM] -= item_size(nkey, flags, nbytes, self.cas_enabled)
        if exptime:
            cst[base + S_TTL] -= 1
        if st & ST_CHAINED:
            cls.used -= self._free_continuations_locked(cls, page.buf, o)

    def _free_continuations_locked(self, cls: SlabClass, buf: bytearray, o: int) -> int:
        nxt = Q.unpack_from(buf, o + OFF_NEXT)[0]
        n = 0
        while nxt >= 0:
            page = self._page(nxt)
            co = nxt & OFF_MASK
            nxt = Q.unpack_from(page.buf, co + OFF_NEXT)[0]
            cls.chunk_push_locked(page, co)
            n += 1
        return n

    def _page(self, addr: int) -> Page:
        page = self.pool.pages[addr >> PAGE_SHIFT]
        assert page is not None
        return page

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
    ) -> None:
        """Fill the reserved chunk at `a` with a single-chunk item (it is linked from here)."""
        mv = self.mvs[a >> PAGE_SHIFT]
        o = a & OFF_MASK
        nkey = len(key)
        HDR.pack_into(mv, o, ST_LINKED, nkey, ref, 0, len(value), flags, exptime, now, cas, h, -1)
        ko = o + HEADER
        mv[ko : ko + nkey] = key
        ko += nkey
        mv[ko : ko + len(value)] = value

    def write_chain(
        self,
        addrs: list[int],
        key: bytes,
        h: int,
        value: bytes,
        flags: int,
        exptime: int,
        now: int,
        cas: int,
    ) -> int:
        """Fill reserved chunks (as `alloc_chain` tags them) with a chained item: head first,
        then continuations. Returns the head's address."""
        ref = addrs[0] & HOLE
        addrs = [a & ~HOLE for a in addrs]
        head = addrs[0]
        mv = self.mvs[head >> PAGE_SHIFT]
        o = head & OFF_MASK
        nkey = len(key)
        nbytes = len(value)
        nxt = addrs[1] if len(addrs) > 1 else -1
        status = ST_LINKED | ST_CHAINED if nxt >= 0 else ST_LINKED
        HDR.pack_into(mv, o, status, nkey, ref, 0, nbytes, flags, exptime, now, cas, h, nxt)
        ko = o + HEADER
        mv[ko : ko + nkey] = key
        first = min(nbytes, self.chunk_max - HEADER - nkey)
        ko += nkey
        mv[ko : ko + first] = value[:first]
        pos = first
        rest = self.chunk_max - HEADER
        for k in range(1, len(addrs)):
            a = addrs[k]
            cmv = self.mvs[a >> PAGE_SHIFT]
            co = a & OFF_MASK
            nxt = addrs[k + 1] if k + 1 < len(addrs) else -1
            take = min(rest, nbytes - pos)
            cmv[co + HEADER : co + HEADER + take] = value[pos : pos + take]
            CONT_HDR.pack_into(cmv, co, ST_CONT, head, nxt)
            pos += take
        return head

    def read_chained(self, a: int, nkey: int, nbytes: int) -> bytes:
        """The value of a chained item, joined from its chunks."""
        mv = self.mvs[a >> PAGE_SHIFT]
        o = a & OFF_MASK
        first = min(nbytes, self.chunk_max - HEADER - nkey)
        vo = o + HEADER + nkey
        pieces = [mv[vo : vo + first]]
        left = nbytes - first
        rest = self.chunk_max - HEADER
        nxt = Q.unpack_from(mv, o + OFF_NEXT)[0]
        while left > 0:
            cmv = self.mvs[nxt >> PAGE_SHIFT]
            co = nxt & OFF_MASK
            take = min(left, rest)
            pieces.append(cmv[co + HEADER : co + HEADER + take])
            left -= take
            nxt = Q.unpack_from(cmv, co + OFF_NEXT)[0]
        return b"".join(pieces)

    def read_value(self, a: int) -> bytes:
        mv = self.mvs[a >> PAGE_SHIFT]
        o = a & OFF_MASK
        st, nkey, _, _, nbytes = GET_HDR.unpack_from(mv, o)[:5]
        if st & ST_CHAINED:
            return self.read_chained(a, nkey, nbytes)
        vo = o + HEADER + nkey
        return mv[vo : vo + nbytes].tobytes()

    def unlink_locked(self, part: Partition, slot: int, a: int) -> None:
        """Take the item at `a` (in table slot `slot`) out of the cache and free its memory."""
        part.remove_at(slot)
        self.forget_locked(part, a)

    def forget_locked(self, part: Partition, a: int) -> None:
        """Uncount and free the item at `a`, already out of the table (replaced or removed)."""
        pno = a >> PAGE_SHIFT
        buf = self.bufs[pno]
        o = a & OFF_MASK
        st, nkey, _, _, nbytes, flags, exptime = GET_HDR.unpack_from(buf, o)[:7]
        cst = part.cst
        base = self.pbase[pno]
        cst[base + S_NUMBER] -= 1
        cst[base + S_MEM] -= item_size(nkey, flags, nbytes, self.cas_enabled)
        if exptime:
            cst[base + S_TTL] -= 1
        page = self._page(a)
        cls = self.classes[page.clsid]
        with cls.lock:
            n = 1
            if st & ST_CHAINED:
                n += self._free_continuations_locked(cls, buf, o)
            cls.chunk_push_locked(page, o)
            cls.used -= n

    # ---- page moves (memcached's slab rebalancer) ----

    def steal_page(self, cid: int) -> None:
        """Give class `cid`, which has no page (or too few chunks), one taken from another
        class. Called with no lock held, by a store that will retry."""
        if not self.slab_reassign:
            return
        with self.move_lock:
            dst = self.classes[cid]
            with dst.lock:
                if dst.nfree or dst.carve is not None:
                    return  # another thread got it memory meanwhile
            with self.pool.lock:
                if self.pool.spare or self.pool.malloced + SLAB_PAGE_SIZE <= self.pool.limit:
                    return  # the retry takes a page from the pool
            src = self._pick_source(cid)
            if src is not None:
                self._move_page_locked(src, cid)

    def _pick_source(self, dst: int) -> int | None:
        """The class to take a page from for `dst`: the one with the most pages (two at
        least if any has two). With -M only a page holding no item may move."""
        best = None
        best_pages = 0
        for cls in self.classes[1:]:
            if cls.id == dst:
                continue
            with cls.lock:
                npages = len(cls.pages)
                if not npages:
                    continue
                if not self.evictions and not any(
                    cls.free_in_page_locked(p) == cls.perslab for p in cls.pages
                ):
                    continue
            if npages > best_pages:
                best, best_pages = cls.id, npages
        return best

    def reassign(self, src: int, dst: int) -> ReassignResult:
        """``slabs reassign <src> <dst>``: move one page now (memcached's checks and order;
        memcached moves it in the background, we move it before answering)."""
        if not self.move_lock.acquire(blocking=False):
            return ReassignResult.RUNNING
        try:
            if src == dst:
                return ReassignResult.SAME
            if src == -1:
                src = self._pick_any(dst)
            if not (0 <= src <= self.largest and 0 <= dst <= self.largest):
                return ReassignResult.BADCLASS
            if src == 0:
                spare = self.pool.spare_count()
                if spare < 2:
                    return ReassignResult.NOSPARE
            else:
                with self.classes[src].lock:
                    if len(self.classes[src].pages) < 2:
                        return ReassignResult.NOSPARE
            self._move_page_locked(src, dst)
            return ReassignResult.OK
        finally:
            self.move_lock.release()

    def _pick_any(self, dst: int) -> int:
        """memcached's ``slabs_reassign_pick_any``: the next class (round robin) with 2 pages."""
        for _ in range(self.largest):
            self._pick_cursor = self._pick_cursor % self.largest + 1
            cls = self.classes[self._pick_cursor]
            if cls.id != dst and len(cls.pages) > 1:
                return cls.id
        return -1

    def _move_page_locked(self, src: int, dst: int) -> bool:
        """move_lock held, nothing else: empty one page of `src` (or a spare one, src 0) and
        give it to `dst` (0: back to the pool, which frees it while over the limit)."""
        if src == 0:
            page = self.pool.take_spare()
            if page is None:
                return False
        else:
            cls = self.classes[src]
            with cls.lock:
                if not cls.pages:
                    return False
                page = max(cls.pages, key=cls.free_in_page_locked)
                cls.remove_page_locked(page)
            if not self._empty_page(cls, page):
                return False
        if dst == 0:
            self.pool.give(page)
        else:
            dcls = self.classes[dst]
            with dcls.lock:
                self.pool.set_owner(page, dst)
                dcls.add_page_locked(page)
        self.slabs_moved += 1
        return True

    def _empty_page(self, cls: SlabClass, page: Page) -> bool:
        """Rescue (copy to a free chunk of the class) or evict every item in a detached page.
        Items being written (reserved chunks) are waited for."""
        buf = page.buf
        base = page.pno << PAGE_SHIFT
        parts = self.parts
        waited = 0
        while True:
            busy = 0
            for o in range(0, cls.perslab * cls.size, cls.size):
                st = buf[o]
                if not st:
                    continue
                if st & ST_RESERVED:
                    busy += 1
                    continue
                if st & ST_CONT:
                    head = Q.unpack_from(buf, o + OFF_HEAD)[0]
                    h = Q.unpack_from(self.bufs[head >> PAGE_SHIFT], (head & OFF_MASK) + OFF_HASH)[
                        0
                    ]
                else:
                    head = base | o
                    h = Q.unpack_from(buf, o + OFF_HASH)[0]
                part = parts[h & self.pmask]
                with part.lock, cls.lock:
                    if not self._move_one_locked(part, cls, page, o, st, head, h):
                        busy += 1
            if not busy:
                return True
            self.reassign_busy += busy
            waited += 1
            if waited > MOVE_PATIENCE:
                # A store holds a reserved chunk for microseconds: this is a bug elsewhere.
                # Leave the page detached (1 MB lost) rather than hang the mover.
                log.error("page %d of class %d stays busy: not moved", page.pno, cls.id)
                return False
            time.sleep(0.001)

    def _move_one_locked(
        self, part: Partition, cls: SlabClass, page: Page, o: int, st: int, head: int, h: int
    ) -> bool:
        """Partition and class locks held: free the chunk at `o` of a detached page, by
        moving its item to another chunk or evicting it. False if it changed meanwhile."""
        buf = page.buf
        if buf[o] != st:
            return False
        hpage = self._page(head)
        hbuf = hpage.buf
        ho = head & OFF_MASK
        if st & ST_CONT:
            if Q.unpack_from(buf, o + OFF_HEAD)[0] != head:
                return False
        if not hbuf[ho] & ST_LINKED or Q.unpack_from(hbuf, ho + OFF_HASH)[0] != h:
            return False
        hst, nkey, _, fetched, nbytes, flags, exptime = GET_HDR.unpack_from(hbuf, ho)[:7]
        base = self.pbase[hpage.pno]
        if not hst & ST_CHAINED:
            to = cls.chunk_pop_locked() & ~HOLE
            if to >= 0:
                # rescue: copy the chunk and point the table at the copy
                size = cls.size
                self.mvs[to >> PAGE_SHIFT][to & OFF_MASK : (to & OFF_MASK) + size] = page.mv[
                    o : o + size
                ]
                i = part.find_addr(h >> self.pshift, head)
                assert i >= 0, "a linked item is in its partition's table"
                part.tbl[i] = make_entry(h >> self.pshift, to)
                buf[o] = 0
                part.cst[base + S_MOVE_RESCUED] += 1
                return True
        part.cst[base + S_MOVE_EVICTED] += 1
        self._drop_locked(part, cls, hpage, ho, h, hst, nkey, nbytes, flags, exptime)
        cls.chunk_push_locked(hpage, ho)
        cls.used -= 1
        return True

    def automove_tick(self) -> bool:
        """One look at the classes (memcached's automover, every second): move a page where
        it is needed. True if a page moved."""
        if not self.move_lock.acquire(blocking=False):
            return False
        try:
            self.automove_runs += 1
            if self.pool.over_limit():
                # cache_memlimit went down: give pages back, fullest class first
                src = self._pick_source(0)
                return src is not None and self._move_page_locked(src, 0)
            evictions = self._class_counter(S_EVICTED)
            delta = [n - last for n, last in zip(evictions, self._last_evictions, strict=True)]
            self._last_evictions = evictions
            self._window.append(delta)
            if not self.automove or not self.slab_reassign:
                return False
            # a class sitting on free memory gives a page back to the pool
            for cls in self.classes[1:]:
                with cls.lock:
                    free = cls.nfree + cls.uncarved
                    spare = len(cls.pages) > 1 and free >= AUTOMOVE_FREE_PAGES * cls.perslab
                if spare:
                    return self._move_page_locked(cls.id, 0)
            dst = max(range(1, self.largest + 1), key=lambda i: delta[i])
            if delta[dst] <= 0:
                return False
            if self.automove == 1 and (
                len(self._window) < AUTOMOVE_WINDOW or not all(w[dst] > 0 for w in self._window)
            ):
                return False
            with self.pool.lock:
                if self.pool.spare or self.pool.malloced + SLAB_PAGE_SIZE <= self.pool.limit:
                    return False  # the class will take a page from the pool itself
            window_evictions = [sum(w[i] for w in self._window) for i in range(self.largest + 1)]
            src = None
            best = 1
            for cls in self.classes[1:]:
                if cls.id == dst:
                    continue
                quiet = (
                    window_evictions[cls.id] == 0
                    if self.automove == 1
                    else window_evictions[cls.id] < window_evictions[dst]
                )
                if quiet and len(cls.pages) > best:
                    src, best = cls.id, len(cls.pages)
            if src is None:
                return False
            self._window.clear()  # judge the next move on fresh evictions
            return self._move_page_locked(src, dst)
        finally:
            self.move_lock.release()

    # ---- the LRU crawler ----

    def crawl(
        self, classes: set[int] | None = None, pause: Callable[[], None] | None = None
    ) -> int:
        """Reclaim expired and flushed items of `classes` (all that may hold some if None),
        page by page, without reads (memcached's LRU crawler). Returns how many."""
        if not self.crawl_lock.acquire(blocking=False):
            return 0  # a pass is running (the background crawler, or a crawl command)
        try:
            self.crawler_starts += 1
            now = self.clock.now()
            gen = self.flush_gen
            reclaimed = 0
            ttl = self._class_counter(S_TTL)
            for cls in self.classes[1:]:
                if classes is not None:
                    if cls.id not in classes:
                        continue
                elif (
                    not ttl[cls.id]
                    and cls.crawled_flush_gen == gen
                    and not (cls.crawled_time < self.flush_at <= now)
                ):
                    continue  # nothing here can have expired or been flushed
                with cls.lock:
                    pages = list(cls.pages)
                for page in pages:
                    reclaimed += self._crawl_page(cls, page, now)
                    if pause is not None:
                        pause()
                with cls.lock:
                    cls.crawled_flush_gen = gen
                    cls.crawled_time = now
            return reclaimed
        finally:
            self.crawl_lock.release()

    def _crawl_page(self, cls: SlabClass, page: Page, now: int) -> int:
        buf = page.buf
        parts = self.parts
        pmask = self.pmask
        flush_at = self.flush_at
        found = []
        checked = 0
        for o in range(0, cls.perslab * cls.size, cls.size):
            if buf[o] & ST_LINKED:  # unlocked: a hint, checked again under the locks
                checked += 1
                exptime, itime, cas, h = TAIL_HDR.unpack_from(buf, o + OFF_EXPTIME)
                if (
                    (exptime and exptime <= now)
                    or cas <= parts[h & pmask].flush_seq
                    or (flush_at and flush_at <= now and itime < flush_at)
                ):
                    found.append((o, h))
        reclaimed = 0
        for o, h in found:
            part = parts[h & pmask]
            with part.lock, cls.lock:
                if page.clsid != cls.id or page.moving:
                    break  # the page left the class
                if not buf[o] & ST_LINKED:
                    continue
                st, nkey, _, fetched, nbytes, flags, exptime, itime, cas = GET_HDR.unpack_from(
                    buf, o
                )
                if Q.unpack_from(buf, o + OFF_HASH)[0] != h:
                    continue
                flushed = cas <= part.flush_seq or (
                    flush_at and flush_at <= now and itime < flush_at
                )
                if not (flushed or (exptime and exptime <= now)):
                    continue
                base = self.pbase[page.pno]
                part.cst[base + S_CRAWLER_RECLAIMED] += 1
                if not fetched and not flushed:
                    part.cst[base + S_EXPIRED_UNFETCHED] += 1
                self._drop_locked(part, cls, page, o, h, st, nkey, nbytes, flags, exptime)
                cls.chunk_push_locked(page, o)
                cls.used -= 1
                reclaimed += 1
        with cls.lock:
            cls.crawler_checked += checked
        return reclaimed

    # ---- stats ----

    def _class_counter(self, field: int) -> list[int]:
        """One counter summed over partitions, per class (index = class id)."""
        out = [0] * (self.largest + 1)
        for part in self.parts:
            with part.lock:
                cst = part.cst
                for cid in range(1, self.largest + 1):
                    out[cid] += cst[cid * NSTAT + field]
        return out

    def class_counters(self) -> list[list[int]]:
        """Every per-class counter summed over partitions: ``rows[cid][S_*]``."""
        rows = [[0] * NSTAT for _ in range(self.largest + 1)]
        for part in self.parts:
            with part.lock:
                cst = part.cst[:]
            for cid in range(1, self.largest + 1):
                row = rows[cid]
                b = cid * NSTAT
                for k in range(NSTAT):
                    row[k] += cst[b + k]
        return rows

    def oldest_near_hand(self, cls: SlabClass, now: int, sample: int = 64) -> int:
        """Age of the oldest of the next `sample` items the hand will reach: the age of what
        gets evicted next (memcached's ``age``: the time of the item at the LRU tail)."""
        with cls.lock:
            pages = list(cls.pages)
            pi, ci = cls.hand_page, cls.hand_chunk
        oldest = now
        seen = 0
        if not pages:
            return 0
        if pi >= len(pages):
            pi = ci = 0
        for _ in range(len(pages) * cls.perslab):
            if ci >= cls.perslab:
                ci = 0
                pi = (pi + 1) % len(pages)
            buf = pages[pi].buf
            o = ci * cls.size
            ci += 1
            if len(buf) > o and buf[o] & ST_LINKED:
                t = I32.unpack_from(buf, o + 16)[0]
                oldest = min(oldest, t)
                seen += 1
                if seen >= sample:
                    break
        return max(0, now - oldest) if seen else 0

    def iter_items(self, part: Partition) -> Iterator[tuple[int, int]]:
        """(slot, address) of every item in the table (partition lock held)."""
        tbl = part.tbl
        for i in range(part.capacity):
            e = tbl[i]
            if e > 1:
                yield i, e & ADDR_MASK

    def reset_counters(self) -> None:
        for part in self.parts:
            with part.lock:
                cst = part.cst
                for cid in range(self.largest + 1):
                    b = cid * NSTAT
                    for k in range(NSTAT):
                        if k not in GAUGES:
                            cst[b + k] = 0
                part.get_expired = part.get_flushed = 0
        for cls in self.classes:
            with cls.lock:
                cls.moves_to_warm = cls.reflocked = cls.evicted_time = cls.crawler_checked = 0
        with self.move_lock:
            self.slabs_moved = self.reassign_busy = 0
        self.crawler_starts = 0
