"""The cache facade: ``get/touch/store/delete/incr/decr/flush_all`` returning result enums.

This is memcached's ``items.c``/``thread.c`` behaviour (``do_store_item``, ``do_add_delta``,
lazy expiry, ``flush_all`` by ``oldest_live``/``oldest_cas``) over a simple memory model:
each item is charged the bytes memcached charges it (item header, key, value, CAS field) and
the memory limit is enforced with LRU eviction (or refusal, with ``-M``).

Concurrency. Keys are split into hash partitions (memcached's striped item locks), each with
its own lock, dictionary, LRU order and share of the memory limit, so worker threads working
on different keys do not wait for each other. Every compound operation (check-then-store,
read-modify-write) runs entirely under its partition's lock: nothing relies on the GIL.
Lock order: a partition lock, then `_seq_lock` (held only to draw a CAS number). No code path
holds two partition locks.

Public methods take the lock; ``_name_locked`` helpers assume it is held.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from mcached.clock import Clock
from mcached.storage.results import DeltaResult, StoreMode, StoreResult

ITEM_HEADER_SIZE = 48  # memcached's struct _stritem on 64-bit platforms
ITEM_CAS_SIZE = 8
ITEM_FLAGS_SIZE = 4
UINT64_MAX = 2**64 - 1
_SPACE = b" \t\n\v\f\r"

#: what `get` returns for a hit: (value, flags, cas unique)
Hit = tuple[bytes, int, int]


def item_size(nkey: int, flags: int, nvalue: int, cas_enabled: bool) -> int:
    """Bytes memcached charges for an item: header, key + NUL, value + CRLF, flags, CAS."""
    size = ITEM_HEADER_SIZE + nkey + 1 + nvalue + 2
    if flags:
        size += ITEM_FLAGS_SIZE
    if cas_enabled:
        size += ITEM_CAS_SIZE
    return size


class Item:
    __slots__ = ("value", "flags", "exptime", "cas", "time", "fetched", "size")

    def __init__(
        self, value: bytes, flags: int, exptime: int, cas: int, time: int, size: int
    ) -> None:
        self.value = value
        self.flags = flags
        self.exptime = exptime  # server time; 0 = never
        self.cas = cas  # internal sequence number; always set, reported only with CAS on
        self.time = time  # server time of the last store
        self.fetched = False
        self.size = size


@dataclass
class ItemStats:
    """Per-partition item counters; names are memcached's ``stats`` names."""

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

    def add(self, other: ItemStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class _Partition:
    __slots__ = ("lock", "items", "stats", "limit")

    def __init__(self, limit: int) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[bytes, Item] = OrderedDict()  # LRU order: oldest first
        self.stats = ItemStats()
        self.limit = limit


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
    ) -> None:
        self.clock = clock or Clock()
        self.item_size_max = item_size_max
        self.evictions = evictions
        self.cas_enabled = cas_enabled
        if partitions is None:
            # Each partition must hold at least two of the largest items.
            partitions = 16
            while partitions > 1 and memory_limit // partitions < 2 * item_size_max:
                partitions //= 2
        self._mask = partitions - 1
        assert partitions & self._mask == 0, "partitions must be a power of two"
        self._parts = [_Partition(memory_limit // partitions) for _ in range(partitions)]
        self.memory_limit = memory_limit
        self._seq = 0
        self._seq_lock = threading.Lock()
        # flush_all state: items stored at or before _flush_seq are gone; a delayed flush
        # takes effect at _flush_at (server time) for items stored before that second.
        self._flush_seq = 0
        self._flush_at = 0

    # ---- helpers ----

    def _part(self, key: bytes) -> _Partition:
        return self._parts[hash(key) & self._mask]

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _reported_cas(self, item: Item) -> int:
        return item.cas if self.cas_enabled else 0

    def _live_locked(self, part: _Partition, key: bytes, now: int, fetch: bool) -> Item | None:
        """The item under `key` if it is live; expired or flushed ones are unlinked here."""
        item = part.items.get(key)
        if item is None:
            return None
        if item.cas <= self._flush_seq or (self._flush_at and self._flush_at <= now
                                          and item.time < self._flush_at):
            self._unlink_locked(part, key, item)
            if fetch:
                part.stats.get_flushed += 1
            return None
        if item.exptime and item.exptime <= now:
            self._unlink_locked(part, key, item)
            part.stats.reclaimed += 1
            if not item.fetched:
                part.stats.expired_unfetched += 1
            if fetch:
                part.stats.get_expired += 1
            return None
        return item

    def _unlink_locked(self, part: _Partition, key: bytes, item: Item) -> None:
        del part.items[key]
        part.stats.curr_items -= 1
        part.stats.bytes -= item.size

    def _link_locked(self, part: _Partition, key: bytes, item: Item, now: int) -> bool:
        """Insert `item` (replacing any old one), evicting from the LRU tail as needed.

        Room is made while the old item still counts, as memcached allocates the new item
        before it unlinks the old one; on failure the old item stays (callers decide).
        """
        if not self._make_room_locked(part, item.size, now):
            return False
        old = part.items.get(key)
        if old is not None:
            self._unlink_locked(part, key, old)
        part.items[key] = item
        part.stats.curr_items += 1
        part.stats.total_items += 1
        part.stats.bytes += item.size
        return True

    def _make_room_locked(self, part: _Partition, size: int, now: int) -> bool:
        items = part.items
        while part.stats.bytes + size > part.limit:
            if not items:
                return False
            key, victim = next(iter(items.items()))
            expired = victim.exptime and victim.exptime <= now
            if not expired and not self.evictions:
                part.stats.outofmemory += 1
                return False
            self._unlink_locked(part, key, victim)
            if expired:
                part.stats.reclaimed += 1
                if not victim.fetched:
                    part.stats.expired_unfetched += 1
            else:
                part.stats.evictions += 1
                if not victim.fetched:
                    part.stats.evicted_unfetched += 1
        return True

    # ---- reads ----

    def get(self, key: bytes) -> Hit | None:
        """(value, flags, cas) of a live item, bumped in the LRU; None on a miss."""
        part = self._part(key)
        with part.lock:
            item = self._live_locked(part, key, self.clock.now(), True)
            if item is None:
                return None
            part.items.move_to_end(key)
            item.fetched = True
            return item.value, item.flags, (item.cas if self.cas_enabled else 0)

    def get_and_touch(self, key: bytes, exptime: int) -> Hit | None:
        """``gat``: a get that also sets a new exptime."""
        part = self._part(key)
        with part.lock:
            now = self.clock.now()
            item = self._live_locked(part, key, now, True)
            if item is None:
                return None
            item.exptime = self.clock.realtime(exptime)
            part.items.move_to_end(key)
            item.fetched = True
            return item.value, item.flags, (item.cas if self.cas_enabled else 0)

    def touch(self, key: bytes, exptime: int) -> bool:
        part = self._part(key)
        with part.lock:
            item = self._live_locked(part, key, self.clock.now(), False)
            if item is None:
                return False
            item.exptime = self.clock.realtime(exptime)
            part.items.move_to_end(key)
            return True

    # ---- writes ----

    def store(
        self,
        mode: StoreMode,
        key: bytes,
        value: bytes,
        flags: int = 0,
        exptime: int = 0,
        cas: int = 0,
    ) -> StoreResult:
        """memcached's ``do_store_item``: one of STORED/NOT_STORED/EXISTS/NOT_FOUND/..."""
        size = item_size(len(key), flags, len(value), self.cas_enabled)
        if size > self.item_size_max:
            return StoreResult.TOO_LARGE
        part = self._part(key)
        with part.lock:
            now = self.clock.now()
            old = self._live_locked(part, key, now, False)
            if mode is StoreMode.SET:
                pass
            elif mode is StoreMode.ADD:
                if old is not None:
                    part.items.move_to_end(key)  # add promotes the existing item
                    return StoreResult.NOT_STORED
            elif mode is StoreMode.CAS:
                if old is None:
                    return StoreResult.NOT_FOUND
                if not self.cas_enabled or cas != old.cas:
                    return StoreResult.EXISTS  # with -C memcached never matches a cas
            else:  # REPLACE, APPEND, PREPEND
                if old is None:
                    return StoreResult.NOT_STORED
                if mode is not StoreMode.REPLACE:
                    # append/prepend keep the old item's flags and exptime
                    if mode is StoreMode.APPEND:
                        value = old.value + value
                    else:
                        value = value + old.value
                    flags = old.flags
                    size = item_size(len(key), flags, len(value), self.cas_enabled)
                    if size > self.item_size_max:
                        return StoreResult.NOT_STORED
                    item = Item(value, flags, old.exptime, self._next_seq(), now, size)
                    return self._finish_store_locked(part, key, item, now)
            item = Item(value, flags, self.clock.realtime(exptime), self._next_seq(), now, size)
            result = self._finish_store_locked(part, key, item, now)
            if result is StoreResult.NO_MEMORY and mode is StoreMode.SET and old is not None:
                # memcached drops the old value when a set fails: never serve stale data
                self._unlink_locked(part, key, old)
            return result

    def _finish_store_locked(
        self, part: _Partition, key: bytes, item: Item, now: int
    ) -> StoreResult:
        if self._link_locked(part, key, item, now):
            return StoreResult.STORED
        return StoreResult.NO_MEMORY

    def delete(self, key: bytes) -> bool:
        """True if a live item was deleted."""
        part = self._part(key)
        with part.lock:
            item = self._live_locked(part, key, self.clock.now(), False)
            if item is None:
                return False
            self._unlink_locked(part, key, item)
            return True

    def incr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, True)

    def decr(self, key: bytes, delta: int) -> tuple[DeltaResult, int]:
        return self._delta(key, delta, False)

    def _delta(self, key: bytes, delta: int, incr: bool) -> tuple[DeltaResult, int]:
        """memcached's ``do_add_delta``: wraps at 2^64 going up, stops at 0 going down."""
        part = self._part(key)
        with part.lock:
            now = self.clock.now()
            item = self._live_locked(part, key, now, False)
            if item is None:
                return DeltaResult.NOT_FOUND, 0
            number = parse_counter(item.value) if item.value else None
            if number is None:
                return DeltaResult.NON_NUMERIC, 0
            if incr:
                number = (number + delta) & UINT64_MAX
            else:
                number = max(number - delta, 0)
            digits = b"%d" % number
            old_len = len(item.value)
            if len(digits) <= old_len:
                # memcached rewrites in place and pads with spaces to the old length
                item.value = digits + b" " * (old_len - len(digits))
                item.cas = self._next_seq()
                part.items.move_to_end(key)
                return DeltaResult.OK, number
            size = item_size(len(key), item.flags, len(digits), self.cas_enabled)
            new = Item(digits, item.flags, item.exptime, self._next_seq(), now, size)
            new.fetched = item.fetched
            if not self._link_locked(part, key, new, now):
                return DeltaResult.NO_MEMORY, 0
            return DeltaResult.OK, number

    def unlink(self, key: bytes) -> None:
        """Drop `key` if present, without counting it as a delete (a failed ``set``)."""
        part = self._part(key)
        with part.lock:
            item = part.items.get(key)
            if item is not None:
                self._unlink_locked(part, key, item)

    def flush_all(self, delay: int = 0) -> None:
        """Invalidate every item now, or those stored before `delay` seconds from now.

        Nothing is walked: items are checked lazily against the flush marks when touched,
        and evicted from the LRU tail like any other.
        """
        if delay > 0:
            self._flush_at = self.clock.realtime(delay)
            return
        with self._seq_lock:
            self._flush_seq = self._seq
            self._flush_at = 0

    # ---- limits and stats ----

    def set_memory_limit(self, memory_limit: int) -> bool:
        """``cache_memlimit``: the new limit applies from the next store in each partition."""
        share = memory_limit // len(self._parts)
        for part in self._parts:
            with part.lock:
                part.limit = share
        self.memory_limit = memory_limit
        return True

    def item_stats(self) -> ItemStats:
        total = ItemStats()
        for part in self._parts:
            with part.lock:
                total.add(part.stats)
        return total

    def stats(self) -> dict[str, Any]:
        """General ``stats`` figures owned by storage, under memcached's names."""
        s = self.item_stats()
        return {
            "limit_maxbytes": self.memory_limit,
            "bytes": s.bytes,
            "curr_items": s.curr_items,
            "total_items": s.total_items,
            "expired_unfetched": s.expired_unfetched,
            "evicted_unfetched": s.evicted_unfetched,
            "evictions": s.evictions,
            "reclaimed": s.reclaimed,
            "get_expired": s.get_expired,
            "get_flushed": s.get_flushed,
        }

    def reset_stats(self) -> None:
        """``stats reset``: zero the counters (not the gauges curr_items and bytes)."""
        for part in self._parts:
            with part.lock:
                st = part.stats
                part.stats = ItemStats(curr_items=st.curr_items, bytes=st.bytes)

    def class_stats(self, class_of: Any) -> dict[int, list[int]]:
        """Per slab class: [items, bytes charged, oldest store time] (``stats items``)."""
        return _class_walk(self, class_of)

    def metadump(
        self, class_of: Any, classes: set[int] | None = None
    ) -> Iterator[tuple[bytes, int, int, int, bool, int, int]]:
        """Live items: (key, exptime, last access, cas, fetched, size, class id), times in
        server time (exptime 0: never). Partition by partition, never one long lock."""
        now = self.clock.now()
        for part in self._parts:
            with part.lock:
                rows = []
                for key, it in part.items.items():
                    if it.exptime and it.exptime <= now:
                        continue
                    if it.cas <= self._flush_seq or (
                        self._flush_at and self._flush_at <= now and it.time < self._flush_at
                    ):
                        continue
                    clsid = class_of(it.size)
                    if classes is None or clsid in classes:
                        rows.append((key, it.exptime, it.time, self._reported_cas(it),
                                     it.fetched, it.size, clsid))
            yield from rows

    def crawl(self, classes: set[int] | None = None) -> int:
        """Reclaim expired items now (memcached's ``lru_crawler crawl``); returns how many."""
        reclaimed = 0
        for part in self._parts:
            with part.lock:
                now = self.clock.now()
                dead = [(k, it) for k, it in part.items.items() if it.exptime and it.exptime <= now]
                for key, it in dead:
                    self._unlink_locked(part, key, it)
                    part.stats.reclaimed += 1
                    if not it.fetched:
                        part.stats.expired_unfetched += 1
                reclaimed += len(dead)
        return reclaimed

    def keys(self) -> Iterator[bytes]:
        """A snapshot of the keys (for ``stats cachedump``-style tools and tests)."""
        for part in self._parts:
            with part.lock:
                snapshot = list(part.items)
            yield from snapshot


def _class_walk(cache: Cache, class_of: Any) -> dict[int, list[int]]:
    """clsid -> [items, bytes charged, oldest store time]; a walk, for ``stats items``."""
    out: dict[int, list[int]] = {}
    for part in cache._parts:
        with part.lock:
            snapshot = [(it.size, it.time) for it in part.items.values()]
        for size, t in snapshot:
            row = out.setdefault(class_of(size), [0, 0, t])
            row[0] += 1
            row[1] += size
            if t < row[2]:
                row[2] = t
    return out
