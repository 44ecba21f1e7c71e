"""The open-addressing item table (mcached/storage/assoc.py)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mcached.storage.arena import MIN_CAPACITY, T_USED, Arena
from mcached.storage.assoc import (
    ADDR_MASK,
    EMPTY,
    HB_MASK,
    TOMB,
    Assoc,
    init_table,
    make_entry,
)

pytestmark = pytest.mark.unit


def table(hash_at: Callable[[int], int], window: int = 1 << 16) -> Assoc:
    """A one-partition table in an arena of its own, `window` slots a window."""
    arena = Arena(max_pages=1, nclasses=1, partitions=1, window=window)
    init_table(arena, 0)
    return Assoc(arena, 0, hash_at)


def probe(t: Assoc, s: int, addr: int) -> int:
    """find_addr, checked against a plain scan of the probe chain."""
    i = t.find_addr(s, addr)
    j = s & t.mask
    while t.tbl[j] != EMPTY:
        if t.tbl[j] > TOMB and t.tbl[j] & ADDR_MASK == addr:
            assert i == j
            return i
        j = (j + 1) & t.mask
    assert i == -1
    return -1


def insert(t: Assoc, s: int, addr: int) -> None:
    """Insert as the cache does: at the first deleted or empty slot of the chain."""
    m = t.mask
    i = s & m
    ins = -1
    while t.tbl[i] != EMPTY:
        if t.tbl[i] == TOMB and ins < 0:
            ins = i
        i = (i + 1) & m
    t.insert_at(ins if ins >= 0 else i, make_entry(s, addr))


def test_entry_layout() -> None:
    e = make_entry(0x123456789, 0xABCDE12345)
    assert e & ADDR_MASK == 0xABCDE12345
    assert (e >> 40) & HB_MASK == 0x123456789 & HB_MASK
    assert e > TOMB and make_entry(0, 0) > TOMB  # no entry is ever empty or a tombstone


def test_insert_find_remove_and_growth() -> None:
    hashes: dict[int, int] = {}
    t = table(lambda a: hashes[a])
    rnd = random.Random(1)
    live: dict[int, int] = {}
    for n in range(5000):
        addr = (n + 1) * 8
        s = rnd.getrandbits(40)
        hashes[addr] = s
        insert(t, s, addr)
        live[addr] = s
    assert t.used == 5000 and t.capacity >= 5000 / 0.6
    for addr, s in live.items():
        assert probe(t, s, addr) >= 0
    for addr in list(live)[::2]:
        t.remove_at(t.find_addr(live[addr], addr))
        del live[addr]
    assert t.used == 2500
    for addr, s in live.items():
        assert probe(t, s, addr) >= 0
    assert probe(t, 12345, 8 * 999_999) == -1
    # churn: tombstones never fill the table up
    for n in range(20000):
        addr = (100_000 + n) * 8
        s = rnd.getrandbits(40)
        hashes[addr] = s
        insert(t, s, addr)
        victim = next(iter(live))
        t.remove_at(t.find_addr(live.pop(victim), victim))
        live[addr] = s
        assert t.used + t.tombs <= t.limit
    assert t.used == len(live)
    assert sorted(e & ADDR_MASK for e in t.entries()) == sorted(live)


def test_a_table_started_large_keeps_its_size_and_grows_past_it() -> None:
    """init_table's floor (-o hashpower's share): the table starts at it, a rebuild that
    only drops tombstones keeps it (one sized from the live entries alone would shrink it,
    to grow again), and growth past it goes to three times the entries as usual; a floor
    past the window is the window."""
    arena = Arena(max_pages=1, nclasses=1, partitions=1, window=1 << 14)
    init_table(arena, 0, 1 << 12)
    hashes: dict[int, int] = {}
    t = Assoc(arena, 0, lambda a: hashes[a])
    assert (t.capacity, t.limit) == (1 << 12, (1 << 12) * 3 // 5)
    rnd = random.Random(2)
    live: dict[int, int] = {}
    gen = t.gen
    n = 0
    while t.gen == gen:  # churn of a few hundred items: tombstones until a rebuild
        n += 1
        addr = n * 8
        hashes[addr] = rnd.getrandbits(40)
        insert(t, hashes[addr], addr)
        live[addr] = hashes[addr]
        if len(live) > 300:
            victim = next(iter(live))
            t.remove_at(t.find_addr(live.pop(victim), victim))
    assert t.capacity == 1 << 12 and t.tombs == 0 and t.used == len(live)
    while t.capacity == 1 << 12:
        n += 1
        addr = n * 8
        hashes[addr] = rnd.getrandbits(40)
        insert(t, hashes[addr], addr)
        live[addr] = hashes[addr]
    assert t.capacity == 1 << 13 and t.used == len(live) > (1 << 12) * 3 // 5
    for addr, s in live.items():
        assert probe(t, s, addr) >= 0
    big = Arena(max_pages=1, nclasses=1, partitions=1, window=1 << 10)
    init_table(big, 0, 1 << 12)
    assert Assoc(big, 0, lambda a: 0).capacity == 1 << 10


def test_removing_before_an_empty_slot_leaves_no_tombstone() -> None:
    t = table(lambda a: 0)
    insert(t, 5, 8)
    insert(t, 5, 16)  # slot 6
    t.remove_at(t.find_addr(5, 16))  # the chain ends after it
    assert t.tombs == 0 and t.tbl[6] == EMPTY
    insert(t, 5, 16)
    t.remove_at(t.find_addr(5, 8))  # 16 still probes past slot 5
    assert t.tombs == 1 and t.tbl[5] == TOMB
    assert t.find_addr(5, 16) == 6


def test_rebuild_of_a_big_table_reads_the_item_hash() -> None:
    """Past 2^22 slots the entry no longer holds every home-slot bit: `hash_at` is used."""
    calls = []

    def hash_at(addr: int) -> int:
        calls.append(addr)
        return addr >> 3

    t = table(hash_at, window=1 << 23)
    for n in range(1, 200):
        insert(t, n, n * 8)
    t.w[t.tb + T_USED] = 1_500_000  # pretend: makes rebuild() pick a table of 2^23 slots
    t.rebuild()
    assert t.capacity == 1 << 23 and len(calls) == 199
    t.w[t.tb + T_USED] = 199
    for n in range(1, 200):
        assert t.find_addr(n, n * 8) == n  # home slot = hash_at(addr) & mask


def test_another_view_follows_a_rebuild() -> None:
    """A rebuild moves the table to the other window: a view made before it (as a forked
    process has) finds the entries again once it syncs."""
    t = table(lambda a: a >> 3)
    other = Assoc(t.arena, 0, t.hash_at)
    for n in range(1, 100):
        insert(t, n, n * 8)
    assert other.gen != t.gen and other.capacity == MIN_CAPACITY  # stale until it syncs
    other.sync()
    assert all(other.find_addr(n, n * 8) >= 0 for n in range(1, 100))
    assert other.capacity == t.capacity > MIN_CAPACITY


def test_a_table_at_its_window_size_refuses_before_it_fills() -> None:
    t = table(lambda a: a >> 3, window=128)
    n = 1
    while not t.full():
        insert(t, n, n * 8)
        n += 1
    assert t.capacity == 128 and t.used == 128 * 9 // 10
    assert all(t.find_addr(k, k * 8) >= 0 for k in range(1, n))
    assert t.tbl[: t.capacity].tolist().count(EMPTY) > 0  # probes always end


def test_min_capacity() -> None:
    t = table(lambda a: 0)
    assert t.capacity == MIN_CAPACITY
    t.rebuild()
    assert t.capacity == MIN_CAPACITY
