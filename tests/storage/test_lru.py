"""The clock hand over a slab class (mcached/storage/lru.py)."""

from __future__ import annotations

import pytest

from mcached.storage.lru import sweep
from mcached.storage.slabs import OFF_REF, ST_CONT, ST_LINKED, PagePool, SlabClass

pytestmark = pytest.mark.unit

MB = 1024 * 1024


def full_class(pages: int = 2) -> tuple[SlabClass, list[int]]:
    """A class of 4 chunks a page, every chunk a linked, unreferenced item."""
    pool = PagePool(pages * MB, stat_width=1)
    cls = SlabClass(1, 256 * 1024)
    offsets = []
    for _ in range(pages):
        page = pool.take(1)
        assert page is not None
        cls.add_page_locked(page)
        for _ in range(cls.perslab):
            a = cls.chunk_pop_locked()
            page.buf[a & (MB - 1)] = ST_LINKED
            offsets.append(a)
    return cls, offsets


def names(cls: SlabClass, limit: int, take: int) -> list[tuple[int, int]]:
    out = []
    for page, o in sweep(cls, limit):
        out.append((page.pno, o // cls.size))
        if len(out) == take:
            break
    return out


def test_unreferenced_items_come_oldest_first_and_the_hand_keeps_its_place() -> None:
    cls, _ = full_class()
    assert names(cls, 100, 3) == [(0, 0), (0, 1), (0, 2)]
    # the caller took (0, 2): the hand resumes past it, and wraps around
    assert names(cls, 100, 6) == [(0, 3), (1, 0), (1, 1), (1, 2), (1, 3), (0, 0)]


def test_referenced_items_get_a_second_chance() -> None:
    cls, _ = full_class()
    for i in (0, 1, 5):
        page = cls.pages[i // 4]
        page.buf[(i % 4) * cls.size + OFF_REF] = 1
    assert names(cls, 100, 2) == [(0, 2), (0, 3)]
    assert cls.moves_to_warm == 2
    # the reference bytes passed were cleared: next turn they are candidates
    assert cls.pages[0].buf[OFF_REF] == 0
    got = names(cls, 100, 7)
    assert got == [(1, 0), (1, 2), (1, 3), (0, 0), (0, 1), (0, 2), (0, 3)]
    assert cls.moves_to_warm == 3  # chunk 5, (1, 1), on the way


def test_free_and_continuation_chunks_are_skipped_and_the_walk_is_bounded() -> None:
    cls, _ = full_class(1)
    buf = cls.pages[0].buf
    buf[0] = 0
    buf[cls.size] = ST_CONT
    buf[3 * cls.size + OFF_REF] = 1
    assert names(cls, 4, 10) == [(0, 2)]  # 4 chunks visited, one candidate
    assert names(cls, 0, 10) == []
    empty = SlabClass(2, 96)
    assert names(empty, 100, 10) == []
