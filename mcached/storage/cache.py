"""The cache facade: ``get/touch/store/delete/incr/decr/flush_all`` returning result enums.

This is memcached's ``thread.c`` (the locks around each operation) and the item semantics of
``memcached.c`` (``do_store_item``, ``do_add_delta``, lazy expiry, ``flush_all`` by sequence
marks) over the slab allocator of `items`, `slabs`, `lru` and `assoc`:

* items live in 1 MB pages (``bytearray``) taken from a pool of at most ``-m`` bytes, in the
  chunk of the slab class memcached would give them; the key -> item table of each partition
  is an ``array('q')`` of item addresses, so the only per-item memory outside the pages is
  its table slot (8 bytes at a load of 0.25 to 0.6: 16.8 bytes an item measured with
  1,000,000 items);
* a store that finds no free chunk and no page to take evicts from its class's clock hand
  (`lru`); with ``-M`` it answers NO_MEMORY instead; a class with no page at all gets one
  moved from another class (`Items.steal_page`), so a new size never fails for want of pages;
* expired items go when they are looked up, when the clock hand reaches them, or when the
  crawler (`maintainer.LruCrawler`) sweeps their class; ``flush_all`` only moves marks.

Concurrency. Keys are split into hash partitions (memcached's striped item locks), each with
its own lock, item table, CAS sequence and counters, so worker threads working on different
keys do not wait for each other. Every compound operation (check-then-store, read-modify-
write) runs entirely under its partition's lock: nothing relies on the GIL.

Lock order (the whole storage package):

    Items.move_lock or Items.crawl_lock -> partition lock -> SlabClass.lock -> PagePool.lock

(`Items.flush_lock` is a leaf, held for one increment.) Public methods take the partition
lock; ``_name_locked`` helpers assume it is held. No code path holds two partition locks
except the clock hand, which only try-acquires the second, nor two class locks.

Hot path. `get` and `store` run once per request, so they trade some clarity for speed, each
trade measured (scripts/bench_memory.py --micro): they are closures over local aliases built
by `_bind_hot_paths` (about 20% faster than methods reading ``self.x``), with the table probe,
the header write and the common set written out inline; ``lock.acquire()``/``release()`` in
``try``/``finally`` rather than ``with`` (about 100 ns cheaper in CPython 3.11); one
``struct.unpack_from`` for the header; the value copied out of the page with one bytearray
slice; and a set over an existing item of the same class rewritten in place (no chunk
allocated or freed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from mcached.clock import Clock
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
    GET_HDR,
    HDR,
    HEADER,
    I32,
    NEED_PAGE,
    NSTAT,
    OFF_CAS,
    OFF_EXPTIME,
    OFF_FETCHED,
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
    S_TOTAL,
    S_TOUCH_HITS,
    S_TTL,
    TAIL_HDR,
    U64,
    Items,
    ItemStats,
    Partition,
    item_size,
)
from mcached.storage.results import DeltaResult, ReassignResult, StoreMode, StoreResult
from mcached.storage.slabs import (
    HOLE,
    OFF_MASK,
    OFF_REF,
    PAGE_SHIFT,
    SLAB_PAGE_SIZE,
    ST_CHAINED,
    ST_LINKED,
    ST_RESERVED,
)

__all__ = ["Cache", "Hit", "ItemStats", "item_size", "parse_counter"]

UINT64_MAX = 2**64 - 1
_SPACE = b" \t\n\v\f\r"
DEFAULT_PARTITIONS = 16
KEY_MAX_LENGTH = 250  # memcached's KEY_MAX_LENGTH; the item header keeps it in one byte
_SET, _ADD, _CAS, _REPLACE, _APPEND = (
    StoreMode.SET,
    StoreMode.ADD,
    StoreMode.CAS,
    StoreMode.REPLACE,
    StoreMode.APPEND,
)
_STORED = StoreResult.STORED
_NO_MEMORY = StoreResult.NO_MEMORY

#: what `get` returns for a hit: (value, flags, cas unique); the value is the caller's own
#: copy (a bytearray from the hot path: it is only ever sent)
Hit = tuple[bytes | bytearray, int, int]


def parse_counter(value: bytes) -> int | None:
    """The number an item holds, as memcached's ``safe_strtoull`` reads item data.

    Leading whitespace is skipped, a sign is allowed, and the digits must be followed by
    whitespace or the end of the value (the data is always followed by CRLF). A minus sign
    on a non-zero number is refused; over 2^64-1 is refused.
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
    if j < n and s[j] not in _SPACE:
        return None
    number = int(s[i:j])
    if number > UINT64_MAX:
        return None
    if s[:1] == b"-" and number != 0:
        return None
    return number


class Cache:
    """Thread-safe item store with memcached's semantics. See the module docstring."""

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
    ) -> None:
        self.clock = clock or Clock()
        self.item_size_max = item_size_max
        self.evictions = evictions
        self.cas_enabled = cas_enabled
        self.memory_limit = memory_limit
        self._items = items = Items(
            memory_limit=memory_limit,
            item_size_max=item_size_max,
            evictions=evictions,
            cas_enabled=cas_enabled,
            clock=self.clock,
            partitions=partitions or DEFAULT_PARTITIONS,
            chunk_size=chunk_size,
            growth_factor=growth_factor,
            slab_chunk_max=slab_chunk_max,
            slab_reassign=slab_reassign,
            slab_automove=slab_automove,
        )
        # Hot-path aliases (see the module docstring).
        self._parts = items.parts
        self._pmask = items.pmask
        self._pshift = items.pshift
        self._bufs = items.bufs
        self._mvs = items.mvs
        self._pbase = items.pbase
        self._lookup = items.lookup
        self._chunk_max = items.chunk_max
        self._largest = items.largest
        self._now = self.clock.now
        self._realtime = self.clock.realtime
        # memcached's item size without key and value: header, NUL, CRLF, CAS
        self._base_size = item_size(0, 0, 0, cas_enabled)
        self._bind_hot_paths()

    # ---- the hot path ----

    #: (value, flags, cas) of a live item, marked referenced; None on a miss.
    get: Callable[[bytes], Hit | None]
    #: memcached's ``do_store_item``: store(mode, key, value, flags=0, exptime=0, cas=0)
    store: Callable[..., StoreResult]

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
        bufs = self._bufs
        mvs = self._mvs
        pbase = self._pbase
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
        pack = HDR.pack_into
        gone = self._gone_locked
        read_chained = items.read_chained
        link = self._link_locked
        slow = self._store_slow
        steal = items.steal_page
        SET = StoreMode.SET
        STORED = StoreResult.STORED
        TOO_LARGE = StoreResult.TOO_LARGE
        assert (MARK, TAG_MASK, ADDR_MASK, ADDR_BITS, HEADER, NSTAT) == (
            0x4000000000000000,
            0x7FFFFF0000000000,
            0xFFFFFFFFFF,
            40,
            48,
            21,
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
        assert (PAGE_SHIFT, OFF_MASK, HB_MASK) == (20, 0xFFFFF, 0x3FFFFF)

        def get(key: bytes) -> Hit | None:
            h = hash(key)
            part = parts[h & pmask]
            s = h >> pshift
            # make_entry's MARK and tag bits, shifted down: `e >> 40` compares them as a
            # one-digit int, where `e & TAG_MASK` made a 63-bit one per probe
            want = (s & 0x3FFFFF) | 0x400000
            lock = part.lock
            lock.acquire()
            try:
                tbl = part.tbl
                m = part.mask
                i = s & m
                while True:
                    e = tbl[i]
                    if e >> 40 == want:  # ADDR_BITS
                        pno = (e >> 20) & 0xFFFFF
                        o = e & 0xFFFFF
                        buf = bufs[pno]
                        st, nk, ref, fetched, nbytes, flags, exptime, itime, cas = unpack(buf, o)
                        if nk == len(key) and buf.startswith(key, o + 48):  # OFF_KEY
                            break
                    elif not e:
                        return None
                    i = (i + 1) & m
                if (exptime or items.flush_at or cas <= part.flush_seq) and gone(
                    part, i, pno << 20 | o, exptime, itime, cas
                ):
                    return None
                # the LRU bump: one byte each, written only when it changes
                if not ref:
                    buf[o + 2] = 1  # OFF_REF
                if not fetched:
                    buf[o + 3] = 1  # OFF_FETCHED
                part.cst[pbase[pno] + 11] += 1  # S_GET_HITS of the item's class
                value: bytes | bytearray
                if st & 2:  # ST_CHAINED
                    value = read_chained(pno << 20 | o, nk, nbytes)
                else:
                    # a bytearray slice: one copy, made under the lock, without the memoryview
                    # that `.tobytes()` needs (callgrind: ~700 instructions fewer a hit)
                    vo = o + 48 + nk
                    value = buf[vo : vo + nbytes]
                return value, flags, (cas if cas_on else 0)
            finally:
                lock.release()

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
            base = cid * 21  # NSTAT
            lock = part.lock
            lock.acquire()
            try:
                tbl = part.tbl
                m = part.mask
                i = s & m
                ins = -1
                while True:
                    e = tbl[i]
                    if e & 0x7FFFFF0000000000 == want:
                        pno = (e >> 20) & 0xFFFFF
                        o = e & 0xFFFFF
                        buf = bufs[pno]
                        if buf[o + 1] == nkey and buf.startswith(key, o + 48):
                            break
                    elif not e:
                        pno = -1
                        break
                    elif e == 1 and ins < 0:  # TOMB
                        ins = i
                    i = (i + 1) & m
                now = now_fn()
                exp = realtime(exptime) if exptime else 0
                cst = part.cst
                if pno >= 0:
                    st, _, _, _, old_nbytes, old_flags, old_exp, old_time, old_cas = unpack(buf, o)
                    if (old_exp or items.flush_at or old_cas <= part.flush_seq) and gone(
                        part, i, pno << 20 | o, old_exp, old_time, old_cas
                    ):
                        pno = -1
                        if ins < 0:
                            ins = i
                    elif evictions and pbase[pno] == base and not st & 2:
                        # The same class and one chunk: rewrite the item in place. (Not with
                        # -M: memcached must find room for the new item before it frees the
                        # old one, and answers NO_MEMORY when there is none.)
                        part.seq = seq = part.seq + part.stride
                        mv = mvs[pno]
                        pack(mv, o, 1, nkey, 1, 0, nbytes, flags, exp, now, seq, h, -1)
                        vo = o + 48 + nkey
                        mv[vo : vo + nbytes] = value
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
                        result = link(part, i, pno << 20 | o, key, h, value, flags, exp, True, True)
                        if result is STORED:
                            cst[base + 12] += 1
                            return STORED
                if pno < 0:
                    i = ins if ins >= 0 else i
                    # a new key: take a free chunk of its class, if there is one
                    cls = classes[cid]
                    clock = cls.lock
                    clock.acquire()
                    try:
                        a = cls.chunk_pop_locked()
                        if a >= 0:
                            ref = a & 1  # HOLE: a reused hole starts referenced
                            a &= -2
                            bufs[a >> 20][a & 0xFFFFF] = 8  # ST_RESERVED
                            cls.used += 1
                    finally:
                        clock.release()
                    if a < 0:
                        # no free chunk: a new page, an eviction, or a page from another class
                        result = link(part, -1 - i, -1, key, h, value, flags, exp, True, True)
                        if result is STORED:
                            cst[base + 12] += 1
                    else:
                        part.seq = seq = part.seq + part.stride
                        o = a & 0xFFFFF
                        mv = mvs[a >> 20]
                        pack(mv, o, 1, nkey, ref, 0, nbytes, flags, exp, now, seq, h, -1)
                        vo = o + 48
                        mv[vo : vo + nkey] = key
                        vo += nkey
                        mv[vo : vo + nbytes] = value
                        # assoc.insert_at, inline
                        if tbl[i] == 1:
                            part.tombs -= 1
                        tbl[i] = want | a
                        part.used += 1
                        if part.used + part.tombs > part.limit:
                            part.rebuild()
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
                with lock:
                    result = self._store_locked(
                        part, h, mode, key, value, flags, exptime, cas, False
                    )
                    if result is STORED:
                        part.cst[base + 12] += 1
            return result  # type: ignore[return-value]

        self.get = get
        self.store = store

    # ---- sizes and settings ----

    @property
    def slab_sizes(self) -> list[int]:
        """Chunk size of each slab class, class 1 first."""
        return self._items.sizes

    def class_of(self, total: int) -> int:
        """The class memcached puts an item of `total` bytes in."""
        return self._items.class_for(total)

    @property
    def automove(self) -> int:
        return self._items.automove

    @automove.setter
    def automove(self, level: int) -> None:
        self._items.automove = level  # one value, read once per tick

    # ---- lookups (partition lock held) ----

    def _find_locked(self, part: Partition, key: bytes, h: int) -> int:
        """The slot of `key`'s live item, or ``-1 - slot`` where it would be inserted. An
        expired or flushed item found on the way is unlinked and counted (memcached's
        ``do_item_get``: get_expired / get_flushed, whatever the command)."""
        i = self._raw_find_locked(part, key, h)
        if i < 0:
            return i
        a = part.tbl[i] & ADDR_MASK
        buf = self._bufs[a >> PAGE_SHIFT]
        exptime, itime, cas, _ = TAIL_HDR.unpack_from(buf, (a & OFF_MASK) + OFF_EXPTIME)
        if (exptime or self._items.flush_at or cas <= part.flush_seq) and (
            self._gone_locked(part, i, a, exptime, itime, cas)
        ):
            return -1 - i  # unlinked: its slot (now a tombstone) takes the new item
        return i

    def _raw_find_locked(self, part: Partition, key: bytes, h: int) -> int:
        """Like `_find_locked`, but whatever state the item is in (nothing is unlinked)."""
        s = h >> self._pshift
        want = MARK | (s & HB_MASK) << 40
        nkey = len(key)
        bufs = self._bufs
        tbl = part.tbl
        m = part.mask
        i = s & m
        ins = -1
        while True:
            e = tbl[i]
            if e & TAG_MASK == want:
                a = e & ADDR_MASK
                buf = bufs[a >> PAGE_SHIFT]
                o = a & OFF_MASK
                if buf[o + 1] == nkey and buf.startswith(key, o + HEADER):
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
        fa = self._items.flush_at
        if cas <= part.flush_seq or (fa and fa <= now and itime < fa):
            part.get_flushed += 1
        elif exptime and exptime <= now:
            part.get_expired += 1
        else:
            return False
        self._items.unlink_locked(part, i, a)
        return True

    # ---- reads ----

    def get_and_touch(self, key: bytes, exptime: int) -> Hit | None:
        """``gat``: a get that also sets a new exptime."""
        h = hash(key)
        part = self._parts[h & self._pmask]
        with part.lock:
            i = self._find_locked(part, key, h)
            if i < 0:
                return None
            a = part.tbl[i] & ADDR_MASK
            self._touch_locked(part, a, self._realtime(exptime))
            buf = self._bufs[a >> PAGE_SHIFT]
            buf[(a & OFF_MASK) + OFF_FETCHED] = 1
            _, _, _, _, _, flags, _, _, cas = GET_HDR.unpack_from(buf, a & OFF_MASK)
            return self._items.read_value(a), flags, (cas if self.cas_enabled else 0)

    def touch(self, key: bytes, exptime: int) -> bool:
        h = hash(key)
        part = self._parts[h & self._pmask]
        with part.lock:
            i = self._find_locked(part, key, h)
            if i < 0:
                return False
            self._touch_locked(part, part.tbl[i] & ADDR_MASK, self._realtime(exptime))
            return True

    def _touch_locked(self, part: Partition, a: int, exptime: int) -> None:
        buf = self._bufs[a >> PAGE_SHIFT]
        o = a & OFF_MASK
        base = self._pbase[a >> PAGE_SHIFT]
        old = I32.unpack_from(buf, o + OFF_EXPTIME)[0]
        if bool(old) != bool(exptime):
            part.cst[base + S_TTL] += 1 if exptime else -1
        I32.pack_into(buf, o + OFF_EXPTIME, exptime)
        buf[o + OFF_REF] = 1
        part.cst[base + S_TOUCH_HITS] += 1

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
        h = hash(key)
        part = self._parts[h & self._pmask]
        # memcached counts a set in its item's class whatever the outcome, unless the item
        # could not be allocated (slab_stats set_cmds, in complete_nread_ascii)
        counted = self._items.class_for(total) * NSTAT + S_CMD_SET
        with part.lock:
            result = self._store_locked(part, h, mode, key, value, flags, exptime, cas, True)
            if result.__class__ is not int and result is not _NO_MEMORY:
                part.cst[counted] += 1
        if result.__class__ is int:
            # The item's class has no page and the pool none to give: move one from another
            # class (no lock may be held for that), then try once more.
            self._items.steal_page(result)
            with part.lock:
                result = self._store_locked(part, h, mode, key, value, flags, exptime, cas, False)
                if result is not _NO_MEMORY:
                    part.cst[counted] += 1
        return result  # type: ignore[return-value]

    def _store_locked(
        self,
        part: Partition,
        h: int,
        mode: StoreMode,
        key: bytes,
        value: bytes,
        flags: int,
        exptime: int,
        cas: int,
        steal_ok: bool,
    ) -> StoreResult | int:
        """`store` under the partition lock; an int (a class id) asks for a page first."""
        i = self._find_locked(part, key, h)
        old = part.tbl[i] & ADDR_MASK if i >= 0 else -1
        if mode is _SET:
            pass
        elif mode is _ADD:
            if old >= 0:
                # add promotes the existing item (memcached's do_item_update)
                self._bufs[old >> PAGE_SHIFT][(old & OFF_MASK) + OFF_REF] = 1
                return StoreResult.NOT_STORED
        elif mode is _CAS:
            if old < 0:
                return StoreResult.NOT_FOUND
            base = self._pbase[old >> PAGE_SHIFT]
            old_cas = U64.unpack_from(self._bufs[old >> PAGE_SHIFT], (old & OFF_MASK) + OFF_CAS)[0]
            if not self.cas_enabled or cas != old_cas:
                part.cst[base + S_CAS_BADVAL] += 1
                return StoreResult.EXISTS  # with -C memcached never matches a cas
            part.cst[base + S_CAS_HITS] += 1
        else:  # REPLACE, APPEND, PREPEND
            if old < 0:
                return StoreResult.NOT_STORED
            if mode is not _REPLACE:
                # append/prepend keep the old item's flags and exptime
                buf = self._bufs[old >> PAGE_SHIFT]
                o = old & OFF_MASK
                _, _, _, _, _, flags, old_exptime, _, _ = GET_HDR.unpack_from(buf, o)
                current = self._items.read_value(old)
                value = current + value if mode is _APPEND else value + current
                if item_size(len(key), flags, len(value), self.cas_enabled) > self.item_size_max:
                    return StoreResult.NOT_STORED
                return self._link_locked(
                    part, i, old, key, h, value, flags, old_exptime, steal_ok, False
                )
        return self._link_locked(
            part,
            i,
            old,
            key,
            h,
            value,
            flags,
            self._realtime(exptime) if exptime else 0,
            steal_ok,
            mode is _SET,
        )

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
    ) -> StoreResult | int:
        """Write a new item for `key` (replacing `old`, the item in slot `i`, if >= 0)."""
        items = self._items
        now = self._now()
        nkey = len(key)
        nbytes = len(value)
        total = self._base_size + nkey + nbytes
        if flags:
            total += 4
        if total <= self._chunk_max:
            cid = self._lookup[(total + 7) >> 3]
            n = 1
        else:
            cid = self._largest
            n = items.chunks_for(nkey, nbytes)
        part.seq += part.stride
        cas = part.seq
        cst = part.cst
        base = cid * NSTAT
        if old >= 0 and n == 1 and self.evictions:
            pno = old >> PAGE_SHIFT
            if self._pbase[pno] == base:
                mv = self._mvs[pno]
                o = old & OFF_MASK
                st, _, _, _, old_nbytes, old_flags, old_exptime = GET_HDR.unpack_from(mv, o)[:7]
                if not st & ST_CHAINED:
                    # Same class, one chunk: rewrite in place. With -M this is not done: there
                    # memcached must find room for the new item before it frees the old one.
                    HDR.pack_into(
                        mv, o, ST_LINKED, nkey, 1, fetched, nbytes, flags, exptime, now, cas, h, -1
                    )
                    vo = o + HEADER + nkey
                    mv[vo : vo + nbytes] = value
                    cst[base + S_MEM] += total - item_size(
                        nkey, old_flags, old_nbytes, self.cas_enabled
                    )
                    if bool(exptime) != bool(old_exptime):
                        cst[base + S_TTL] += 1 if exptime else -1
                    cst[base + S_TOTAL] += 1
                    return _STORED
        used = part.used
        chain: list[int] | None = None
        if n == 1:
            a = items.alloc(cid, part, now)
        else:
            got = items.alloc_chain(part, n, now)
            if isinstance(got, int):
                a = got
            else:
                chain = got
                a = 0
        if a < 0:
            if a == NEED_PAGE and steal_ok:
                return cid
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
            items.write(a, key, h, value, flags, exptime, now, cas, ref)
        else:
            a = items.write_chain(chain, key, h, value, flags, exptime, now, cas)
        if fetched:
            self._bufs[a >> PAGE_SHIFT][(a & OFF_MASK) + OFF_FETCHED] = 1
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

    def delete(self, key: bytes) -> bool:
        """True if a live item was deleted."""
        h = hash(key)
        part = self._parts[h & self._pmask]
        with part.lock:
            i = self._find_locked(part, key, h)
            if i < 0:
                return False
            a = part.tbl[i] & ADDR_MASK
            part.cst[self._pbase[a >> PAGE_SHIFT] + S_DELETE_HITS] += 1
            self._items.unlink_locked(part, i, a)
            return True

    def incr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, True)

    def decr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, False)

    def _delta(self, key: bytes, delta: int, incr: bool) -> tuple[DeltaResult, int]:
        h = hash(key)
        part = self._parts[h & self._pmask]
        with part.lock:
            result = self._delta_locked(part, h, key, delta, incr, True)
        if result[0] is None:
            self._items.steal_page(result[1])
            with part.lock:
                result = self._delta_locked(part, h, key, delta, incr, False)
        return result  # type: ignore[return-value]

    def _delta_locked(
        self, part: Partition, h: int, key: bytes, delta: int, incr: bool, steal_ok: bool
    ) -> tuple[DeltaResult | None, int]:
        """memcached's ``do_add_delta``: wraps at 2^64 going up, stops at 0 going down.
        (None, class id) asks for a page first."""
        i = self._find_locked(part, key, h)
        if i < 0:
            return DeltaResult.NOT_FOUND, 0
        a = part.tbl[i] & ADDR_MASK
        pno = a >> PAGE_SHIFT
        mv = self._mvs[pno]
        o = a & OFF_MASK
        st, nkey, _, fetched, nbytes, flags, exptime, _, _ = GET_HDR.unpack_from(mv, o)
        hits = self._pbase[pno] + (S_INCR_HITS if incr else S_DECR_HITS)  # the old item's
        value = self._items.read_value(a)
        number = parse_counter(value) if value else None
        if number is None:
            return DeltaResult.NON_NUMERIC, 0
        if incr:
            number = (number + delta) & UINT64_MAX
        else:
            number = max(number - delta, 0)
        digits = b"%d" % number
        if len(digits) <= nbytes and not st & ST_CHAINED:
            # memcached rewrites in place and pads with spaces to the old length
            vo = o + HEADER + nkey
            mv[vo : vo + nbytes] = digits.ljust(nbytes)
            part.seq += part.stride
            U64.pack_into(mv, o + OFF_CAS, part.seq)
            mv[o + OFF_REF] = 1
        else:
            if len(digits) <= nbytes:
                digits = digits.ljust(nbytes)
            got = self._link_locked(
                part, i, a, key, h, digits, flags, exptime, steal_ok, False, fetched
            )
            if got.__class__ is int:
                return None, got
            if got is _NO_MEMORY:
                return DeltaResult.NO_MEMORY, 0
        part.cst[hits] += 1
        return DeltaResult.OK, number

    def unlink(self, key: bytes) -> None:
        """Drop `key` if present, without counting it as a delete (a failed ``set``)."""
        h = hash(key)
        part = self._parts[h & self._pmask]
        with part.lock:
            i = self._raw_find_locked(part, key, h)
            if i >= 0:
                self._items.unlink_locked(part, i, part.tbl[i] & ADDR_MASK)

    def flush_all(self, delay: int = 0) -> None:
        """Invalidate every item now, or those stored before `delay` seconds from now.

        Nothing is walked: each partition records its current CAS sequence as its flush mark
        (items at or below it are gone), one partition lock at a time; items are dropped when
        next looked up, reached by the clock hand, or swept by the crawler.
        """
        items = self._items
        if delay > 0:
            items.flush_at = self._realtime(delay)
        else:
            for part in self._parts:
                with part.lock:
                    part.flush_seq = part.seq
            items.flush_at = 0
        with items.flush_lock:  # not crawl_lock: a crawl pass holds that for seconds
            items.flush_gen += 1

    # ---- limits, maintenance ----

    def set_memory_limit(self, memory_limit: int) -> bool:
        """``cache_memlimit``: new pages are taken up to the new limit; when it went down,
        spare pages are freed now and the automover gives back pages in use, one a tick."""
        self._items.pool.set_limit(memory_limit)
        self.memory_limit = memory_limit
        return True

    def reassign(self, src: int, dst: int) -> ReassignResult:
        """``slabs reassign <src> <dst>``: move a page from class `src` to `dst` (0: the
        global pool; src -1: any class with a page to spare)."""
        return self._items.reassign(src, dst)

    def automove_tick(self) -> bool:
        """One run of the slab automover (the daemon's `SlabAutomover` calls it)."""
        return self._items.automove_tick()

    def crawl(self, classes: set[int] | None = None, pause: Any = None) -> int:
        """Reclaim expired and flushed items now, without reads (``lru_crawler crawl``)."""
        return self._items.crawl(classes, pause)

    # ---- stats ----

    def item_stats(self) -> ItemStats:
        total = ItemStats()
        rows = self._items.class_counters()
        for row in rows[1:]:
            total.curr_items += row[S_NUMBER]
            total.total_items += row[S_TOTAL]
            total.bytes += row[S_MEM]
            total.evictions += row[S_EVICTED]
            total.evicted_unfetched += row[S_EVICTED_UNFETCHED]
            total.reclaimed += row[S_RECLAIMED]
            total.expired_unfetched += row[S_EXPIRED_UNFETCHED]
            total.outofmemory += row[S_OUTOFMEMORY]
            total.crawler_reclaimed += row[S_CRAWLER_RECLAIMED]
        for part in self._parts:
            with part.lock:
                total.get_expired += part.get_expired
                total.get_flushed += part.get_flushed
        return total

    def stats(self) -> dict[str, Any]:
        """General ``stats`` figures owned by storage, under memcached's names."""
        items = self._items
        rows = items.class_counters()
        s = self.item_stats()
        classes = items.classes[1:]
        slots = sum(p.capacity for p in self._parts)
        with items.pool.lock:
            spare = len(items.pool.spare)
            malloc_fails = items.pool.malloc_fails
        return {
            "limit_maxbytes": self.memory_limit,
            "hash_power_level": int(math.log2(slots)),
            "hash_bytes": slots * 8,
            "hash_is_expanding": 0,
            "slab_reassign_rescues": sum(r[S_MOVE_RESCUED] for r in rows),
            "slab_reassign_chunk_rescues": 0,
            "slab_reassign_evictions_nomem": sum(r[S_MOVE_EVICTED] for r in rows),
            "slab_reassign_inline_reclaim": 0,
            "slab_reassign_busy_items": items.reassign_busy,
            "slab_reassign_busy_deletes": 0,
            "slab_reassign_running": 1 if items.move_lock.locked() else 0,
            "slabs_moved": items.slabs_moved,
            "lru_crawler_running": 1 if items.crawl_lock.locked() else 0,
            "lru_crawler_starts": items.crawler_starts,
            "malloc_fails": malloc_fails,
            "bytes": s.bytes,
            "curr_items": s.curr_items,
            "total_items": s.total_items,
            "slab_global_page_pool": spare,
            "expired_unfetched": s.expired_unfetched,
            "evicted_unfetched": s.evicted_unfetched,
            "evicted_active": 0,
            "evictions": s.evictions,
            "reclaimed": s.reclaimed,
            "crawler_reclaimed": s.crawler_reclaimed,
            "crawler_items_checked": sum(c.crawler_checked for c in classes),
            "lrutail_reflocked": sum(c.reflocked for c in classes),
            "moves_to_cold": 0,
            "moves_to_warm": sum(c.moves_to_warm for c in classes),
            "moves_within_lru": 0,
            "direct_reclaims": s.evictions + s.reclaimed,
            "lru_bumps_dropped": 0,
            "get_expired": s.get_expired,
            "get_flushed": s.get_flushed,
        }

    def reset_stats(self) -> None:
        """``stats reset``: zero the counters (not the gauges curr_items and bytes)."""
        self._items.reset_counters()

    def slabs_stats(self) -> tuple[list[tuple[int, dict[str, int]]], dict[str, int]]:
        """``stats slabs``: per class with pages, memcached's fields; then the totals."""
        items = self._items
        rows = items.class_counters()
        out = []
        for cls in items.classes[1:]:
            with cls.lock:
                pages = len(cls.pages)
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
                        "free_chunks_end": 0,  # memcached 1.6: always 0 (pages are cut up whole)
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
        with items.pool.lock:
            malloced = items.pool.malloced
        return out, {"active_slabs": len(out), "total_malloced": malloced}

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
            with cls.lock:
                moves, reflocked = cls.moves_to_warm, cls.reflocked
                evicted_time, checked = cls.evicted_time, cls.crawler_checked
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
                        "age": items.oldest_near_hand(cls, now),
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
                        "direct_reclaims": row[S_EVICTED] + row[S_RECLAIMED],
                        "hits_to_hot": 0,
                        "hits_to_warm": 0,
                        "hits_to_cold": row[S_GET_HITS],
                        "hits_to_temp": 0,
                    },
                )
            )
        return out

    def class_stats(self, class_of: Any = None) -> dict[int, list[int]]:
        """Per slab class holding items: [items, bytes requested, oldest store time]."""
        now = self._now()
        out: dict[int, list[int]] = {}
        for cid, st in self.items_stats():
            out[cid] = [st["number"], st["mem_requested"], now - st["age"]]
        return out

    def size_histogram(self) -> dict[int, int]:
        """``stats sizes``: live items by total size, rounded up to 32 bytes (a walk)."""
        out: dict[int, int] = {}
        for _, _, _, _, _, size, _ in self._walk():
            bucket = (size + 31) // 32 * 32
            out[bucket] = out.get(bucket, 0) + 1
        return out

    def keys(self) -> Iterator[bytes]:
        """A snapshot of the keys, partition by partition (tools and tests)."""
        for key, *_ in self._walk(live_only=False):
            yield key

    def metadump(
        self, class_of: Any = None, classes: set[int] | None = None
    ) -> Iterator[tuple[bytes, int, int, int, bool, int, int]]:
        """Live items: (key, exptime, last access, cas, fetched, size, class id), times in
        server time (exptime 0: never). Partition by partition, never one long lock."""
        for row in self._walk():
            if classes is None or row[6] in classes:
                yield row

    def _walk(
        self, live_only: bool = True
    ) -> Iterator[tuple[bytes, int, int, int, bool, int, int]]:
        items = self._items
        now = self._now()
        for part in self._parts:
            rows = []
            with part.lock:
                fa = items.flush_at
                for _, a in items.iter_items(part):
                    buf = self._bufs[a >> PAGE_SHIFT]
                    o = a & OFF_MASK
                    st, nkey, _, fetched, nbytes, flags, exptime, itime, cas = GET_HDR.unpack_from(
                        buf, o
                    )
                    if live_only and (
                        (exptime and exptime <= now)
                        or cas <= part.flush_seq
                        or (fa and fa <= now and itime < fa)
                    ):
                        continue
                    assert st & ST_LINKED
                    rows.append(
                        (
                            bytes(buf[o + HEADER : o + HEADER + nkey]),
                            exptime,
                            itime,
                            cas if self.cas_enabled else 0,
                            bool(fetched),
                            item_size(nkey, flags, nbytes, self.cas_enabled),
                            self._pbase[a >> PAGE_SHIFT] // NSTAT,
                        )
                    )
            yield from rows
