"""Slab classes, pages, free lists and the page pool (mcached/storage/slabs.py)."""

from __future__ import annotations

import pytest

from mcached.storage.slabs import (
    HOLE,
    PAGE_SHIFT,
    SLAB_PAGE_SIZE,
    ST_FREE,
    ST_LINKED,
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
    table = class_lookup(sizes)
    classes = SlabClasses(sizes)
    for total in list(range(1, 5000)) + list(range(5000, sizes[-1] + 1, 997)) + [sizes[-1]]:
        assert table[(total + 7) >> 3] == classes.class_of(total), total
    assert classes.class_of(sizes[-1] + 1) == len(sizes)  # chained: the largest class


def test_chunks_per_page() -> None:
    classes = SlabClasses(slab_class_sizes())
    assert classes.per_page(1) == 10922  # memcached's stats slabs: 1:chunks_per_page 10922
    assert classes.chunk_size(1) == 96


def test_pool_never_exceeds_its_limit() -> None:
    pool = PagePool(3 * MB, stat_width=1)
    pages = [pool.take(1) for _ in range(3)]
    assert all(p is not None for p in pages)
    assert pool.take(2) is None
    assert pool.malloced == 3 * MB
    pool.give(pages[0])  # back to the pool, kept: within the limit
    assert pool.spare_count() == 1 and pool.malloced == 3 * MB
    again = pool.take(5)
    assert again is pages[0] and again.clsid == 5 and pool.base[again.pno] == 5


def test_pool_frees_spare_pages_when_the_limit_drops() -> None:
    pool = PagePool(4 * MB, stat_width=1)
    pages = [pool.take(1) for _ in range(4)]
    for p in pages[:3]:
        assert p is not None
        pool.give(p)
    pool.set_limit(2 * MB)
    assert pool.malloced == 2 * MB  # one spare page freed, one still in use by class 1
    assert pool.over_limit() is False
    assert pool.spare_count() == 1
    # a released page number is reused
    pool.set_limit(4 * MB)
    p = pool.take(2)
    assert p is not None and p.pno in {q.pno for q in pages if q is not None}


def test_pool_refuses_more_than_a_terabyte() -> None:
    with pytest.raises(ValueError):
        PagePool(2 << 40, stat_width=1)


def test_free_lists_and_bump_pointer() -> None:
    pool = PagePool(2 * MB, stat_width=1)
    cls = SlabClass(1, 96 * 1024)  # 10 chunks a page
    assert cls.perslab == 10
    assert cls.chunk_pop_locked() == -1
    page = pool.take(1)
    assert page is not None
    cls.add_page_locked(page)
    assert cls.uncarved == 10
    got = [cls.chunk_pop_locked() for _ in range(10)]
    assert got == [page.pno << PAGE_SHIFT | i * cls.size for i in range(10)]
    assert cls.chunk_pop_locked() == -1 and cls.carve is None
    cls.chunk_push_locked(page, 3 * cls.size)
    cls.chunk_push_locked(page, 7 * cls.size)
    assert cls.nfree == 2 and cls.free_pages == [page]
    # last freed, first reused; tagged as a hole
    assert cls.chunk_pop_locked() == (page.pno << PAGE_SHIFT | 7 * cls.size) | HOLE
    assert cls.chunk_pop_locked() == (page.pno << PAGE_SHIFT | 3 * cls.size) | HOLE
    assert cls.free_pages == [] and cls.nfree == 0


def test_a_page_from_another_class_is_zeroed() -> None:
    pool = PagePool(1 * MB, stat_width=1)
    a = SlabClass(1, 1000 * 8)
    page = pool.take(1)
    assert page is not None
    a.add_page_locked(page)
    page.buf[0] = ST_LINKED
    page.buf[SLAB_PAGE_SIZE - 1] = 7
    a.remove_page_locked(page)
    assert a.pages == [] and page.moving
    b = SlabClass(2, 96)
    pool.set_owner(page, 2)
    b.add_page_locked(page)
    assert page.buf[0] == ST_FREE and page.buf[SLAB_PAGE_SIZE - 1] == 0
    assert page.clsid == 2 and not page.moving


def test_removing_a_page_drops_its_free_chunks() -> None:
    pool = PagePool(2 * MB, stat_width=1)
    cls = SlabClass(1, 128 * 1024)  # 8 a page
    p1, p2 = pool.take(1), pool.take(1)
    assert p1 is not None and p2 is not None
    cls.add_page_locked(p1)
    first = [cls.chunk_pop_locked() for _ in range(8)]
    cls.add_page_locked(p2)
    cls.chunk_push_locked(p1, first[2] & (SLAB_PAGE_SIZE - 1))
    assert cls.nfree == 1
    cls.hand_page = 1
    cls.remove_page_locked(p1)
    assert cls.nfree == 0 and cls.free_pages == [] and cls.pages == [p2]
    assert cls.hand_page == 0  # the hand follows its page
    # a chunk freed in a page being moved is not listed
    cls.chunk_push_locked(p1, first[5] & (SLAB_PAGE_SIZE - 1))
    assert cls.nfree == 0
    assert cls.free_in_page_locked(p2) == 8
