"""Slab classes, pages, free lists and the page pool (mcached/storage/slabs.py)."""

from __future__ import annotations

import logging

import pytest

from mcached.storage.arena import (
    C_HAND_CHUNK,
    C_HAND_PAGE,
    C_NPAGES,
    G_LIMIT,
    HOLE,
    PAGE_SHIFT,
    SLAB_PAGE_SIZE,
    ST_FREE,
    ST_LINKED,
    ST_RESERVED,
    Arena,
)
from mcached.storage.slabs import (
    PagePool,
    SlabClass,
    SlabClasses,
    class_lookup,
    slab_class_sizes,
)

pytestmark = pytest.mark.unit

MB = 1024 * 1024

# `memcached -vv` (1.6.18) prints these chunk sizes for the given flags.
MEMCACHED_TABLES = {
    (48, 1.25): [
        96,
        120,
        152,
        192,
        240,
        304,
        384,
        480,
        600,
        752,
        944,
        1184,
        1480,
        1856,
        2320,
        2904,
        3632,
        4544,
        5680,
        7104,
        8880,
        11104,
        13880,
        17352,
        21696,
        27120,
        33904,
        42384,
        52984,
        66232,
        82792,
        103496,
        129376,
        161720,
        202152,
        252696,
        315872,
        394840,
        524288,
    ],
    (100, 2.0): [152, 304, 608, 1216, 2432, 4864, 9728, 19456, 38912, 77824, 155648, 524288],
    (16, 1.5): [
        64,
        96,
        144,
        216,
        328,
        496,
        744,
        1120,
        1680,
        2520,
        3784,
        5680,
        8520,
        12784,
        19176,
        28768,
        43152,
        64728,
        97096,
        145648,
        218472,
        327712,
        524288,
    ],
}


@pytest.mark.parametrize("n,f", sorted(MEMCACHED_TABLES))
def test_class_table_is_memcacheds(n: int, f: float) -> None:
    assert slab_class_sizes(n, f) == MEMCACHED_TABLES[(n, f)]


def test_class_table_small_factor_stops_at_63_classes() -> None:
    sizes = slab_class_sizes(48, 1.08)  # memcached -f 1.08: 62 classes, then 512 KB
    assert len(sizes) == 63
    assert sizes[-3:] == [12776, 13800, 524288]


def test_class_table_smaller_chunk_max() -> None:
    sizes = slab_class_sizes(48, 1.25, 16 * 1024)
    assert sizes[-1] == 16 * 1024
    assert all(s % 8 == 0 for s in sizes) and sizes == sorted(sizes)


@pytest.mark.parametrize("n,f", sorted(MEMCACHED_TABLES) + [(48, 1.08)])
def test_class_lookup_agrees_with_bisect(n: int, f: float) -> None:
    sizes = slab_class_sizes(n, f)
    table = class_lookup(tuple(sizes))
    classes = SlabClasses(sizes)
    for total in list(range(1, 5000)) + list(range(5000, sizes[-1] + 1, 997)) + [sizes[-1]]:
        assert table[(total + 7) >> 3] == classes.class_of(total), total
    assert classes.class_of(sizes[-1] + 1) == len(sizes)  # chained: the largest class


def test_chunks_per_page() -> None:
    classes = SlabClasses(slab_class_sizes())
    assert classes.per_page(1) == 10922  # memcached's stats slabs: 1:chunks_per_page 10922
    assert classes.chunk_size(1) == 96


def pool_of(pages: int, reserve: int | None = None) -> PagePool:
    """A page pool of `pages` MB over an arena reserving `reserve` pages (default: as many)."""
    arena = Arena(max_pages=reserve or pages, nclasses=2, partitions=1, window=64)
    arena.words[G_LIMIT] = pages * MB
    return PagePool(arena)


def test_pool_never_exceeds_its_limit() -> None:
    pool = pool_of(3, reserve=8)
    pages = [pool.take(1) for _ in range(3)]
    assert sorted(pages) == [0, 1, 2]
    assert pool.take(2) == -1
    assert pool.malloced == 3 * MB
    pool.give(pages[0])  # back to the pool, kept: within the limit
    assert pool.spare_count() == 1 and pool.malloced == 3 * MB
    again = pool.take(5)
    assert again == pages[0] and pool.clsid(again) == 5


def test_a_first_page_may_pass_the_limit_by_one_page_per_class_holding_pages() -> None:
    """memcached's do_slabs_newslab: at the limit, only a class with no page gets one. The
    pages past the limit never outnumber the classes holding a page, so a class that keeps
    losing its page (moves) cannot grow the excess past one page per class."""
    pool = pool_of(1, reserve=8)  # two classes
    w = pool.arena.words
    npages = [0] + [pool.arena.class_block(cid) + C_NPAGES for cid in (1, 2)]
    assert pool.take(1) == 0
    w[npages[1]] = 1
    assert pool.take(1) == -1  # class 1 has a page: refused at the limit
    assert pool.take(2, first=True) == 1 and pool.malloced == 2 * MB
    # class 2's page moves to class 1: its next first page is still one per class
    w[npages[1]], w[npages[2]] = 2, 0
    assert pool.take(2, first=True) == 2 and pool.malloced == 3 * MB
    # and again: now that would be a third page past the limit for two classes
    w[npages[1]], w[npages[2]] = 3, 0
    assert pool.take(2, first=True) == -1 and pool.malloced == 3 * MB
    assert pool.field(2) == 0  # a refusal, not a failed malloc
    # the excess is not "over the limit" (the automover leaves it be), what passes it is
    assert pool.excess == 2 and pool.over_limit() is False
    pool.set_limit(0)
    assert pool.over_limit() is True
    # a page given back while past the limit is freed, and the excess is what is still past
    pool.set_limit(2 * MB)
    pool.give(2)
    assert pool.malloced == 2 * MB and pool.excess == 0 and pool.spare_count() == 0


def test_pool_stops_at_the_arenas_reserve_and_counts_a_failure() -> None:
    pool = pool_of(8, reserve=2)  # a limit past the reserve: pages stop at the reserve
    assert pool.take(1) == 0 and pool.take(1) == 1
    assert pool.take(1) == -1
    assert pool.field(2) == 1  # G_MALLOC_FAILS, as when memcached's malloc fails


def test_pool_frees_spare_pages_when_the_limit_drops() -> None:
    pool = pool_of(4)
    pages = [pool.take(1) for _ in range(4)]
    pool.arena.pages[pages[0] << PAGE_SHIFT] = 9  # old data in a page that goes back
    for p in pages[:3]:
        pool.give(p)
    pool.set_limit(2 * MB)
    assert pool.malloced == 2 * MB  # two spare pages freed, one kept, one in use by class 1
    assert pool.over_limit() is False
    assert pool.spare_count() == 1
    # a released page number is reused, and reads as zeros
    pool.set_limit(4 * MB)
    p = pool.take(2)
    assert p in pages[:3]
    released = [q for q in pages[:3] if pool.flags(q) == 0]
    assert pool.arena.pages[pages[0] << PAGE_SHIFT] in (0, 9)  # 9 only if still spare
    assert len(released) >= 1


def test_the_arena_refuses_more_than_a_terabyte() -> None:
    with pytest.raises(ValueError):
        Arena(max_pages=(1 << 20) + 1, nclasses=2, partitions=1, window=64)


def taken(cls: SlabClass) -> int:
    """A chunk popped and marked in use, as an allocation takes it (`Items._alloc_locked`):
    only a chunk in use is freed (the storage's checks, `MCACHED_STORAGE_CHECKS`, refuse a
    free chunk freed again)."""
    a = cls.chunk_pop_locked()
    if a >= 0:
        cls.pm[a & ~HOLE] = ST_RESERVED
    return a


def test_free_lists_and_bump_pointer() -> None:
    pool = pool_of(2)
    cls = SlabClass(pool.arena, 1, 96 * 1024)  # 10 chunks a page
    assert cls.perslab == 10
    assert cls.chunk_pop_locked() == -1
    page = pool.take(1)
    cls.add_page_locked(page)
    assert cls.uncarved == 10
    got = [taken(cls) for _ in range(10)]
    assert got == [page << PAGE_SHIFT | i * cls.size for i in range(10)]
    assert cls.chunk_pop_locked() == -1 and cls.uncarved == 0
    cls.chunk_push_locked(page << PAGE_SHIFT | 3 * cls.size)
    cls.chunk_push_locked(page << PAGE_SHIFT | 7 * cls.size)
    assert cls.nfree == 2
    # last freed, first reused; tagged as a hole
    assert cls.chunk_pop_locked() == (page << PAGE_SHIFT | 7 * cls.size) | HOLE
    assert cls.chunk_pop_locked() == (page << PAGE_SHIFT | 3 * cls.size) | HOLE
    assert cls.nfree == 0 and cls.chunk_pop_locked() == -1


def test_a_hole_is_tagged_only_when_the_hand_meets_it_within_half_a_turn() -> None:
    """An item put in a freed chunk starts referenced (`HOLE`) only if the clock hand
    reaches that chunk within half a turn: ahead of the hand on its page, or on a page
    less than half the class's pages on, counting round the end. Every hole was tagged:
    one the hand had just passed too, whose item then outlived older unread ones by a turn
    (a slabs hunt: 852 of 7,080 newest keys lost where memcached kept them)."""
    pool = pool_of(4)
    cls = SlabClass(pool.arena, 1, 256 * 1024)  # 4 a page
    pages = [pool.take(1) for _ in range(4)]
    for page in pages:
        cls.add_page_locked(page)
    for _ in range(16):
        taken(cls)  # every chunk in use
    w, b = cls.w, cls.b
    w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK] = pages[2], 1  # next to look at: page 2, chunk 1

    def popped(page: int, chunk: int) -> int:
        addr = page << PAGE_SHIFT | chunk * cls.size
        cls.chunk_push_locked(addr)
        got = taken(cls)
        assert got & ~HOLE == addr
        return got & HOLE

    assert popped(pages[2], 2) == HOLE  # ahead on the hand's page
    assert popped(pages[2], 1) == HOLE  # the hand's very next chunk
    assert popped(pages[2], 0) == 0  # just passed: a whole turn away
    assert popped(pages[3], 0) == HOLE  # the next page
    assert popped(pages[0], 3) == HOLE  # round the end: two pages on, half the turn
    assert popped(pages[1], 0) == 0  # three pages on: met late enough untagged
    # not started: the hand is at the first page's first chunk
    w[b + C_HAND_PAGE], w[b + C_HAND_CHUNK] = -1, 0
    assert popped(pages[0], 0) == HOLE and popped(pages[3], 3) == 0


def test_free_chunks_of_several_pages() -> None:
    pool = pool_of(3)
    cls = SlabClass(pool.arena, 1, 256 * 1024)  # 4 a page
    for _ in range(3):
        cls.add_page_locked(pool.take(1))
    # the first two pages' chunks went to the free list when the next page came
    chunks = [taken(cls) & ~HOLE for _ in range(12)]
    assert cls.chunk_pop_locked() == -1
    for c in (chunks[1], chunks[9], chunks[5], chunks[10]):
        cls.chunk_push_locked(c)
    assert cls.nfree == 4
    popped = {cls.chunk_pop_locked() & ~HOLE for _ in range(4)}
    assert popped == {chunks[1], chunks[9], chunks[5], chunks[10]}
    assert cls.chunk_pop_locked() == -1 and cls.nfree == 0


def test_a_page_from_another_class_is_zeroed() -> None:
    pool = pool_of(1)
    arena = pool.arena
    a = SlabClass(arena, 1, 1000 * 8)
    page = pool.take(1)
    a.add_page_locked(page)
    base = page << PAGE_SHIFT
    arena.pages[base] = ST_LINKED
    arena.pages[base + SLAB_PAGE_SIZE - 1] = 7
    a.remove_page_locked(page)
    assert a.pages_locked() == [] and pool.flags(page) & 1  # PF_MOVING
    b = SlabClass(arena, 2, 96)
    pool.set_owner(page, 2)
    b.add_page_locked(page)
    assert arena.pages[base] == ST_FREE and arena.pages[base + SLAB_PAGE_SIZE - 1] == 0
    assert pool.clsid(page) == 2 and not pool.flags(page) & 1


def test_removing_a_page_drops_its_free_chunks() -> None:
    pool = pool_of(2)
    arena = pool.arena
    cls = SlabClass(arena, 1, 128 * 1024)  # 8 a page
    p1, p2 = pool.take(1), pool.take(1)
    cls.add_page_locked(p1)
    first = [taken(cls) for _ in range(8)]
    cls.add_page_locked(p2)
    cls.chunk_push_locked(first[2])
    assert cls.nfree == 1
    cls.set_field(C_HAND_PAGE, p1)
    cls.remove_page_locked(p1)
    assert cls.nfree == 0 and cls.pages_locked() == [p2]
    assert cls.field(C_HAND_PAGE) == p2  # the hand moves on to the next page
    # a chunk freed in a page being moved is not listed
    cls.chunk_push_locked(first[5])
    assert cls.nfree == 0
    assert cls.free_in_page_locked(p2) == 8


def test_a_class_seen_from_another_view_is_the_same_class() -> None:
    """Views hold no state: what one writes, another reads (two processes do the same)."""
    pool = pool_of(2)
    arena = pool.arena
    one = SlabClass(arena, 1, 128 * 1024)
    other = SlabClass(arena, 1, 128 * 1024)
    one.add_page_locked(pool.take(1))
    c = other.chunk_pop_locked()
    assert c == 0 and one.uncarved == 7 and other.pages_locked() == one.pages_locked()


def test_a_memory_limit_past_the_reserve_is_taken_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``cache_memlimit`` past the address space the arena reserved at its start (at least
    1 GB): taken, as memcached takes any, but pages stop at the reserve, so it is logged
    (the daemon evicted under a limit a client had raised, nothing said but malloc_fails;
    found by a slabs hunt). A limit within it says nothing."""
    from mcached.storage.cache import Cache

    cache = Cache(memory_limit=8 * 1024 * 1024)
    with caplog.at_level(logging.WARNING, logger="mcached.storage"):
        assert cache.set_memory_limit(512 * 1024 * 1024)
        assert not caplog.records
        assert cache.set_memory_limit(1200 * 1024 * 1024)
    (record,) = caplog.records
    assert record.getMessage().startswith("cache_memlimit 1200 MB is past the 1063 MB")
    cache.arena.close()
