"""The clock hand over a slab class (mcached/storage/lru.py)."""

from __future__ import annotations

import pytest

from mcached.storage.arena import (
    C_MOVES_TO_WARM,
    G_LIMIT,
    OFF_REF,
    PAGE_SHIFT,
    ST_CONT,
    ST_LINKED,
    Arena,
)
from mcached.storage.lru import sweep
from mcached.storage.slabs import PagePool, SlabClass

pytestmark = pytest.mark.unit

MB = 1024 * 1024


def full_class(pages: int = 2) -> SlabClass:
    """A class of 4 chunks a page, every chunk a linked, unreferenced item."""
    arena = Arena(max_pages=pages, nclasses=2, partitions=1, window=64)
    arena.words[G_LIMIT] = pages * MB
    pool = PagePool(arena)
    cls = SlabClass(arena, 1, 256 * 1024)
    for _ in range(pages):
        cls.add_page_locked(pool.take(1))
    for _ in range(pages * cls.perslab):
        a = cls.chunk_pop_locked() & ~1  # the carved rest of a page was listed as free
        arena.pages[a] = ST_LINKED
    return cls


def names(cls: SlabClass, limit: int, take: int) -> list[tuple[int, int]]:
    out = []
    for a in sweep(cls, limit):
        out.append((a >> PAGE_SHIFT, (a & (MB - 1)) // cls.size))
        if len(out) == take:
            break
    return out


def chunk(cls: SlabClass, pno: int, i: int) -> int:
    return (pno << PAGE_SHIFT) + i * cls.size


def test_unreferenced_items_come_oldest_first_and_the_hand_keeps_its_place() -> None:
    cls = full_class()
    assert names(cls, 100, 3) == [(0, 0), (0, 1), (0, 2)]
    # the caller took (0, 2): the hand resumes past it, and wraps around
    assert names(cls, 100, 6) == [(0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (0, 0)]


def test_referenced_items_get_a_second_chance() -> None:
    cls = full_class()
    pm = cls.pm
    for pno, i in ((0, 0), (0, 1), (1, 1)):
        pm[chunk(cls, pno, i) + OFF_REF] = 1
    assert names(cls, 100, 2) == [(0, 2), (0, 3)]
    assert cls.field(C_MOVES_TO_WARM) == 2
    # the reference bytes passed were cleared: next turn they are candidates
    assert pm[chunk(cls, 0, 0) + OFF_REF] == 0
    got = names(cls, 100, 7)
    assert got == [(1, 0), (1, 2), (1, 3), (0, 0), (0, 1), (0, 2), (0, 3)]
    assert cls.field(C_MOVES_TO_WARM) == 3  # (1, 1), on the way


def test_free_and_continuation_chunks_are_skipped_and_the_walk_is_bounded() -> None:
    cls = full_class(1)
    pm = cls.pm
    pm[chunk(cls, 0, 0)] = 0
    pm[chunk(cls, 0, 1)] = ST_CONT
    pm[chunk(cls, 0, 3) + OFF_REF] = 1
    assert names(cls, 4, 10) == [(0, 2)]  # 4 chunks visited, one candidate
    assert names(cls, 0, 10) == []
    empty = SlabClass(cls.arena, 2, 96)
    assert names(empty, 100, 10) == []


def test_another_view_moves_the_same_hand() -> None:
    cls = full_class()
    other = SlabClass(cls.arena, 1, 256 * 1024)
    assert names(cls, 100, 1) == [(0, 0)]
    assert names(other, 100, 1) == [(0, 1)]
    assert names(cls, 100, 1) == [(0, 2)]
