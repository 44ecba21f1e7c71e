"""The key -> item table (memcached's ``assoc.c``): open addressing over 64-bit slots.

One table per partition, guarded by the partition's lock. Keys are not stored here: they live
in the item, in page memory, and a lookup compares them there. So the table costs 8 bytes a
slot and no Python object per item; at its load factor (kept between 0.25 and 0.6) that is
13 to 32 bytes an item, 16.8 measured with 1,000,000 items (memcached's own table: 8 bytes a
bucket plus the 8-byte ``h_next`` pointer in each item).

A slot holds an *entry*:

    bit 62: MARK (so no entry is 0) | bits 40..61: 22 hash bits | bits 0..39: item address

The hash bits are the low bits of ``s = hash(key) >> partition bits`` -- the same bits that
pick the home slot (``s & mask``). They make most non-matching slots fail on one integer
compare, without reading page memory, and let a table of up to 2^22 slots be rebuilt from the
entries alone. Larger tables read the full hash from the item header (`hash_at`).

0 is an empty slot and 1 a deleted one (a tombstone: linear probing must walk past it).
Tombstones are counted with the live entries against the load limit, and a rebuild drops them.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

ADDR_BITS = 40
ADDR_MASK = (1 << ADDR_BITS) - 1
HB_BITS = 22
HB_MASK = (1 << HB_BITS) - 1
MARK = 1 << 62
TAG_MASK = MARK | (HB_MASK << ADDR_BITS)
EMPTY = 0
TOMB = 1
MIN_CAPACITY = 64
LOAD_NUM, LOAD_DEN = 3, 5  # rebuild when live + tombstones exceed 0.6 of the slots


def make_entry(s: int, addr: int) -> int:
    return MARK | (s & HB_MASK) << ADDR_BITS | addr


class Assoc:
    """An open-addressing table of entries. Not thread-safe: the owner holds its lock."""

    __slots__ = ("tbl", "mask", "used", "tombs", "limit", "hash_at")

    def __init__(self, hash_at: Callable[[int], int], capacity: int = MIN_CAPACITY) -> None:
        """`hash_at(addr)` returns the ``s`` value of the item at `addr` (big tables)."""
        self.hash_at = hash_at
        self._alloc(capacity)
        self.used = 0

    def _alloc(self, capacity: int) -> None:
        self.tbl = array("q", bytes(8 * capacity))
        self.mask = capacity - 1
        self.tombs = 0
        self.limit = capacity * LOAD_NUM // LOAD_DEN

    @property
    def capacity(self) -> int:
        return self.mask + 1

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
        if tbl[i] == TOMB:
            self.tombs -= 1
        tbl[i] = entry
        self.used += 1
        if self.used + self.tombs > self.limit:
            self.rebuild()

    def remove_at(self, i: int) -> None:
        tbl = self.tbl
        if tbl[(i + 1) & self.mask] == EMPTY:
            tbl[i] = EMPTY  # nothing probes past here: no tombstone needed
        else:
            tbl[i] = TOMB
            self.tombs += 1
        self.used -= 1

    def rebuild(self) -> None:
        """Rehash into a table three times the live entries (dropping tombstones)."""
        capacity = MIN_CAPACITY
        while capacity < self.used * 3:
            capacity *= 2
        old = self.tbl
        self._alloc(capacity)
        tbl = self.tbl
        m = self.mask
        if m <= HB_MASK:
            # the entry carries the home-slot bits: no page memory is read
            for e in old:
                if e > TOMB:
                    i = (e >> ADDR_BITS) & m
                    while tbl[i]:
                        i = (i + 1) & m
                    tbl[i] = e
        else:
            hash_at = self.hash_at
            for e in old:
                if e > TOMB:
                    i = hash_at(e & ADDR_MASK) & m
                    while tbl[i]:
                        i = (i + 1) & m
                    tbl[i] = e

    def entries(self) -> list[int]:
        """The live entries (a snapshot)."""
        return [e for e in self.tbl if e > TOMB]
