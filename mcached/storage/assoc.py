"""The key -> item table (memcached's ``assoc.c``): open addressing over 64-bit slots.

One table per partition, guarded by the partition's lock, in the arena's ``tables`` mapping
(`mcached.storage.arena`). Keys are not stored here: they live in the item, in page memory,
and a lookup compares them there. So the table costs 8 bytes a slot and no Python object per
item; at its load factor (kept between 0.25 and 0.6) that is 13 to 32 bytes an item.

A slot holds an *entry*:

    bit 62: MARK (so no entry is 0) | bits 40..61: 22 hash bits | bits 0..39: item address

The hash bits are the low bits of ``s = hash(key) >> partition bits`` -- the same bits that
pick the home slot (``s & mask``). They make most non-matching slots fail on one integer
compare, without reading page memory, and let a table of up to 2^22 slots be rebuilt from the
entries alone. Larger tables read the full hash from the item header (`hash_at`).

0 is an empty slot and 1 a deleted one (a tombstone: linear probing must walk past it).
Tombstones are counted with the live entries against the load limit, and a rebuild drops them.

Windows. Each partition has two windows of the same size in the arena; its table lives in the
first ``mask + 1`` slots of one of them (``T_WIN``). A rebuild writes the other window, then
gives the old one's memory back, and bumps ``T_GEN``: a process's view (`Assoc`) keeps the
table's place in its own attributes and re-reads it (`sync`) whenever ``T_GEN`` moved, which
it checks each time it takes the partition lock. A window is sized at start-up for three
times twice a partition's share of the most items the memory could ever hold, so a table
always finds room; should it not (`full`), a store refuses rather than overfill it.
"""

from __future__ import annotations

from collections.abc import Callable

from mcached.storage.arena import (
    MIN_CAPACITY,
    T_FLOOR,
    T_GEN,
    T_LIMIT,
    T_MASK,
    T_TOMBS,
    T_USED,
    T_WIN,
    Arena,
)

ADDR_BITS = 40
ADDR_MASK = (1 << ADDR_BITS) - 1
HB_BITS = 22
HB_MASK = (1 << HB_BITS) - 1
MARK = 1 << 62
TAG_MASK = MARK | (HB_MASK << ADDR_BITS)
EMPTY = 0
TOMB = 1
LOAD_NUM, LOAD_DEN = 3, 5  # rebuild when live + tombstones exceed 0.6 of the slots
FULL_NUM, FULL_DEN = 9, 10  # a table at its window's size takes up to 0.9, then refuses


def make_entry(s: int, addr: int) -> int:
    return MARK | (s & HB_MASK) << ADDR_BITS | addr


def init_table(arena: Arena, index: int, floor: int = MIN_CAPACITY) -> None:
    """Lay out partition `index`'s empty table (once, when the arena is made): `floor`
    slots (a power of two, at most the window's), which it never shrinks below."""
    w = arena.words
    tb = arena.part_block(index)
    capacity = min(max(floor, MIN_CAPACITY), arena.window)
    w[tb + T_WIN] = 0
    w[tb + T_MASK] = capacity - 1
    w[tb + T_USED] = w[tb + T_TOMBS] = 0
    w[tb + T_LIMIT] = _limit(capacity, arena.window)
    w[tb + T_GEN] = 0
    w[tb + T_FLOOR] = capacity


def _limit(capacity: int, window: int) -> int:
    """Live entries and tombstones past which a table of `capacity` slots is rebuilt (at
    its window's size, a store refuses instead: `Assoc.full`)."""
    if capacity < window:
        return capacity * LOAD_NUM // LOAD_DEN
    return capacity * FULL_NUM // FULL_DEN


class Assoc:
    """A view of one partition's table. Not thread-safe: the caller holds the partition lock
    (and has called `sync` since taking it)."""

    __slots__ = (
        "arena",
        "index",
        "w",
        "tb",
        "gen_at",
        "wins",
        "tbl",
        "mask",
        "gen",
        "hash_at",
        "window",
    )

    def __init__(self, arena: Arena, index: int, hash_at: Callable[[int], int]) -> None:
        """`hash_at(addr)` returns the ``s`` value of the item at `addr` (big tables)."""
        self.arena = arena
        self.index = index
        self.w = arena.words
        self.tb = arena.part_block(index)
        # where the table's T_GEN word is: the lookups compare it each time (hot path), and
        # an index kept made no int object a read (`tb + T_GEN` was one)
        self.gen_at = self.tb + T_GEN
        self.wins = arena.windows[index]
        self.window = arena.window
        self.hash_at = hash_at
        self.sync()

    def sync(self) -> None:
        """Re-read where the table lives (another process may have rebuilt it)."""
        w = self.w
        tb = self.tb
        self.gen = w[tb + T_GEN]
        self.mask = int(w[tb + T_MASK])
        self.tbl = self.wins[w[tb + T_WIN]]

    @property
    def capacity(self) -> int:
        return self.mask + 1

    @property
    def used(self) -> int:
        return int(self.w[self.tb + T_USED])

    @property
    def limit(self) -> int:
        return int(self.w[self.tb + T_LIMIT])

    @property
    def tombs(self) -> int:
        return int(self.w[self.tb + T_TOMBS])

    def full(self) -> bool:
        """No room for one more entry (the table cannot grow past its window)."""
        return bool(self.w[self.tb + T_USED] >= self.window * FULL_NUM // FULL_DEN)

    def find_addr(self, s: int, addr: int) -> int:
        """The slot holding the item at `addr` (whose key hashes to `s`), or -1."""
        tbl = self.tbl
        m = self.mask
        i = s & m
        while True:
            e = tbl[i]
            if e & ADDR_MASK == addr and e > TOMB:
                return i
            if e == EMPTY:
                return -1
            i = (i + 1) & m

    def insert_at(self, i: int, entry: int) -> None:
        """Fill slot `i`, found empty or deleted by a lookup, and keep the load in bounds."""
        tbl = self.tbl
        w = self.w
        tb = self.tb
        if tbl[i] == TOMB:
            w[tb + T_TOMBS] -= 1
        tbl[i] = entry
        used = w[tb + T_USED] + 1
        w[tb + T_USED] = used
        if used + w[tb + T_TOMBS] > w[tb + T_LIMIT]:
            self.rebuild()

    def remove_at(self, i: int) -> None:
        tbl = self.tbl
        w = self.w
        tb = self.tb
        if tbl[(i + 1) & self.mask] == EMPTY:
            tbl[i] = EMPTY  # nothing probes past here: no tombstone needed
        else:
            tbl[i] = TOMB
            w[tb + T_TOMBS] += 1
        w[tb + T_USED] -= 1

    def rebuild(self) -> None:
        """Rehash into the other window, three times the live entries (dropping tombstones),
        and no fewer slots than the table's floor.

        One pass under the partition's lock, ~0.2 us a live entry: a partition of a million
        items holds its lock ~0.2 s while its table grows (memcached grows its table a few
        buckets at a time in a thread of its own); a table started large enough
        (``-o hashpower``) never has to."""
        w = self.w
        tb = self.tb
        used = int(w[tb + T_USED])
        window = self.window
        capacity = max(MIN_CAPACITY, int(w[tb + T_FLOOR]))
        while capacity < used * 3:
            capacity *= 2
        capacity = min(capacity, window)
        old = self.tbl
        old_capacity = self.mask + 1
        old_win = int(w[tb + T_WIN])
        win = 1 - old_win
        tbl = self.wins[win]  # all zeros: released when it was last left, or never used
        m = capacity - 1
        if m <= HB_MASK:
            # the entry carries the home-slot bits: no page memory is read
            for k in range(old_capacity):
                e = old[k]
                if e > TOMB:
                    i = (e >> ADDR_BITS) & m
                    while tbl[i]:
                        i = (i + 1) & m
                    tbl[i] = e
        else:
            hash_at = self.hash_at
            for k in range(old_capacity):
                e = old[k]
                if e > TOMB:
                    i = hash_at(e & ADDR_MASK) & m
                    while tbl[i]:
                        i = (i + 1) & m
                    tbl[i] = e
        w[tb + T_WIN] = win
        w[tb + T_MASK] = m
        w[tb + T_TOMBS] = 0
        w[tb + T_LIMIT] = _limit(capacity, window)
        w[tb + T_GEN] += 1
        self.arena.release_window(self.index, old_win, old_capacity)
        self.sync()

    def entries(self) -> list[int]:
        """The live entries (a snapshot)."""
        tbl = self.tbl
        return [e for e in tbl[: self.mask + 1] if e > TOMB]
