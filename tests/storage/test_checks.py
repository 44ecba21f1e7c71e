"""The storage's own checks (mcached/storage/checks.py, on with MCACHED_STORAGE_CHECKS): each
damage they watch for, made by hand in a real cache, is caught where it is made or met."""

from __future__ import annotations

import pytest

from mcached.clock import FakeClock
from mcached.storage import items as items_module
from mcached.storage import slabs as slabs_module
from mcached.storage.arena import OFF_CLSID, OFF_HEAD, OFF_NEXT, ST_LINKED, Q
from mcached.storage.assoc import ADDR_MASK
from mcached.storage.cache import Cache
from mcached.storage.checks import ArenaDamaged
from mcached.storage.results import StoreMode, StoreResult

pytestmark = pytest.mark.unit

MB = 1024 * 1024


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Cache:
    """A cache whose storage checks are on (as the stress test runs it)."""
    monkeypatch.setattr(slabs_module, "CHECKS", True)
    monkeypatch.setattr(items_module, "CHECKS", True)
    return Cache(memory_limit=8 * MB, clock=FakeClock())


def address(cache: Cache, key: bytes) -> int:
    part, h = cache._part(key)
    with part:
        i = cache._raw_find_locked(part, key, h)
        assert i >= 0
        return part.tbl[i] & ADDR_MASK


def store(cache: Cache, key: bytes, size: int) -> int:
    assert cache.store(StoreMode.SET, key, b"v" * size) is StoreResult.STORED
    return address(cache, key)


def test_a_chunk_freed_twice_is_caught_at_the_second_free(cache: Cache) -> None:
    a = store(cache, b"k", 100)
    items = cache._items
    cid = cache._pm[a + OFF_CLSID]
    items._free_item_locked(cid, ST_LINKED, a)  # its item's memory, given back by mistake
    with pytest.raises(ArenaDamaged, match="free already"):
        items._free_item_locked(cid, ST_LINKED, a)


def test_a_chain_freed_twice_is_caught_and_its_class_lock_let_go(cache: Cache) -> None:
    items = cache._items
    head = store(cache, b"chained", 900 * 1024)
    chunks = items.chain_of(head)
    part, _ = cache._part(b"chained")
    with part:
        i = cache._raw_find_locked(part, b"chained", hash(b"chained"))
        items.unlink_locked(part, i, head)
        with pytest.raises(ArenaDamaged, match="free already"):
            items.free_chunks(chunks)
    for cls in items.classes[1:]:  # none left taken by the free that failed
        assert cls.lock.acquire(False), cls.id
        cls.lock.release()


def test_a_free_list_that_hands_out_a_chunk_in_use_is_caught_when_it_does(cache: Cache) -> None:
    items = cache._items
    a = store(cache, b"k", 100)
    cls = items.classes[cache._pm[a + OFF_CLSID]]
    with cls.lock:
        cls.chunk_push_locked(a)  # freed while its item stays in the table
    # the next store of that class takes the chunk: on a damaged list, it is still in use
    cache._pm[a] = ST_LINKED
    with pytest.raises(ArenaDamaged, match="in use"):
        cache.store(StoreMode.SET, b"other", b"w" * 100)


def test_a_chunk_freed_into_another_class_is_caught(cache: Cache) -> None:
    items = cache._items
    small = store(cache, b"small", 100)
    large = store(cache, b"large", 5000)
    wrong = items.classes[cache._pm[large + OFF_CLSID]]
    assert wrong.id != cache._pm[small + OFF_CLSID]
    with wrong.lock, pytest.raises(ArenaDamaged, match="no chunk of class"):
        wrong.chunk_push_locked(small)


def test_a_chain_through_a_chunk_not_its_own_is_caught(cache: Cache) -> None:
    items = cache._items
    head = store(cache, b"chained", 900 * 1024)  # past the largest chunk (512 KB)
    first = Q.unpack_from(cache._pm, head + OFF_NEXT)[0]
    second = Q.unpack_from(cache._pm, first + OFF_NEXT)[0]
    assert second >= 0
    Q.pack_into(cache._pm, second + OFF_HEAD, first)  # names another head
    with pytest.raises(ArenaDamaged, match=f"chain of {head}"):
        items.chain_of(head)
    Q.pack_into(cache._pm, second + OFF_HEAD, head)
    assert items.chain_of(head)[:3] == [head, first, second]


def test_a_chunk_written_that_no_allocation_reserved_is_caught(cache: Cache) -> None:
    items = cache._items
    a = store(cache, b"k", 100)  # linked, not reserved
    with pytest.raises(ArenaDamaged, match="not reserved"):
        items.write(a, b"x", hash(b"x"), b"v", 0, 0, 0, 1, 0, cache._pm[a + OFF_CLSID])
