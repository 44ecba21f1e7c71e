"""`Cache.get_refs`: a multiget's run of `get_ref` calls made as one. Its loop body is
`get`'s lookup written out again (hot path: see `_bind_hot_paths`), so these check the two
against each other: the same hits, the same LRU bumps and counters, the same pins."""

from __future__ import annotations

from typing import Any

import pytest

from mcached.clock import FakeClock
from mcached.storage.cache import CHAIN_PIN_MIN, PIN_MIN, Cache
from mcached.storage.results import StoreMode

pytestmark = pytest.mark.unit

MB = 1024 * 1024
SET = StoreMode.SET
FLOOR = 64


@pytest.fixture(params=[0, 1], ids=["threads", "process-slot"])
def slot(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def plain(hit: Any) -> Any:
    """A hit's bytes, flags and CAS, whether copied, lent from a page or lent in chunks."""
    if hit is None:
        return None
    value = hit[0]
    if value.__class__ is list:
        value = b"".join(value)
    return bytes(value), hit[1], hit[2], len(hit) == 4


def two_caches(slot: int, **kw: Any) -> tuple[Cache, Cache, FakeClock]:
    """Two caches filled alike, on one clock: one read a key at a time, the other in runs."""
    clock = FakeClock()
    caches = [Cache(memory_limit=16 * MB, clock=clock, holder=slot, **kw) for _ in range(2)]
    for cache in caches:
        cache.store(SET, b"small", b"s" * 100, 7)
        cache.store(SET, b"lent", b"L" * PIN_MIN, 3)
        cache.store(SET, b"chained", b"C" * (CHAIN_PIN_MIN + 600_000))
        cache.store(SET, b"expires", b"e", 0, 10)
        cache.store(SET, b"flushed", b"f")
    return caches[0], caches[1], clock


def state(cache: Cache, keys: list[bytes]) -> Any:
    """What a read leaves behind: every class's counters, and each key's fetched flag and
    last access (the LRU bump)."""
    items = []
    for key in keys:
        view = cache.lookup(key, False, False, False)  # `me`'s look: changes nothing
        items.append(None if view is None else (view[9], view[10]))
    return cache.items_stats(), cache.slabs_stats(), items


def test_get_refs_is_get_ref_a_key_at_a_time(slot: int) -> None:
    one, run, clock = two_caches(slot)
    keys = [b"small", b"nothing", b"lent", b"chained", b"expires", b"flushed"]
    for _ in range(3):  # a first read marks fetched, a second references, a third neither
        clock.advance(70)  # past ITEM_UPDATE_INTERVAL: a referenced item's time moves too
        one.tick()
        run.tick()
        expected = [one.get_ref(key) for key in keys]
        hits, size, lent = run.get_refs(keys, 1 << 30, FLOOR)
        assert list(map(plain, hits)) == list(map(plain, expected))
        assert size == sum(
            FLOOR + (0 if hit is None else len(key) + len(plain(hit)[0]))
            for key, hit in zip(keys, hits, strict=True)
        )
        assert len(lent) == sum(1 for hit in hits if hit is not None and len(hit) == 4) == 2
        assert lent == [hit[3] for hit in hits if hit is not None and len(hit) == 4]
        assert one.pins_held() == run.pins_held()
        for hit in expected:
            if hit is not None and len(hit) == 4:
                one.unpin(hit[3])
        for token in lent:
            run.unpin(token)
        assert one.pins_held() == run.pins_held() == 0
        assert state(one, keys) == state(run, keys)
    assert run.arena.holders[slot] == 0


def test_many_keys_small_chains_and_a_full_pin_row() -> None:
    """Keys that meet in the table (probing on), a value chained under CHAIN_PIN_MIN (a
    copy), a value that would be lent while the pin row is full (a copy), and a table
    another view moved (its flush_all): hits, pins and counters as `get_ref`'s."""
    clock = FakeClock()
    caches = []
    for _ in range(2):
        cache = Cache(memory_limit=16 * MB, clock=clock, slab_chunk_max=16384)
        worker = cache.view(holder=1)
        worker.bind_holder(1, pin_slots=8)  # lends while more than 2 entries are free
        caches.append((cache, worker))
    keys = [b"key:%d" % i for i in range(3000)]
    held = []
    for _, worker in caches:
        for i, key in enumerate(keys):
            worker.store(SET, key, b"%d" % i, i)
        worker.store(SET, b"chain", b"c" * 20_000)  # in 16 KB chunks
        worker.store(SET, b"lend", b"l" * PIN_MIN)
        worker.store(SET, b"big", b"b" * CHAIN_PIN_MIN)  # lent as its chunks' views, or copied
        held.append([worker.get_ref(b"lend") for _ in range(5)])  # one entry left to lend
    (one_cache, one), (_, run) = caches
    asked = [b"chain", *keys, b"lend", b"lend", b"big", b"nothing"]
    expected = [one.get_ref(key) for key in asked]
    hits, _, lent = run.get_refs(asked, 1 << 30, FLOOR)
    assert list(map(plain, hits)) == list(map(plain, expected))
    assert len(hits[0]) == 3 and [len(hit) for hit in hits[-4:-1]] == [4, 3, 3]
    assert hits[-1] is None and len(lent) == 1 and one.pins_held() == run.pins_held() == 6
    for (_, worker), pins in zip(caches, held, strict=True):
        for hit in pins:
            worker.unpin(hit[3])
    one.unpin(expected[-4][3])
    run.unpin(lent[0])
    assert caches[0][0].items_stats() == caches[1][0].items_stats()
    for cache, _ in caches:
        cache.flush_all()  # by another view: each worker's view finds its tables moved
    assert run.get_refs(asked, 1 << 30, FLOOR)[0] == [one.get_ref(key) for key in asked]
    assert set(run.get_refs(asked, 1 << 30, FLOOR)[0]) == {None}
    assert caches[0][0].stats()["get_flushed"] == caches[1][0].stats()["get_flushed"] > 0


def test_an_expired_or_flushed_item_is_a_miss_counted_as_get_ref_counts_it(slot: int) -> None:
    one, run, clock = two_caches(slot)
    clock.advance(11)  # `expires` is past its exptime
    for cache in (one, run):
        cache.flush_all(0)
        cache.store(SET, b"after", b"a")  # stored after the flush: alive
    keys = [b"expires", b"flushed", b"after"]
    expected = [plain(one.get_ref(key)) for key in keys]
    assert expected[:2] == [None, None] and expected[2][:2] == (b"a", 0)
    hits, _, lent = run.get_refs(keys, 1 << 30, FLOOR)
    assert list(map(plain, hits)) == expected and lent == []
    assert one.items_stats() == run.items_stats()
    counted = [{k: v for k, v in c.stats().items() if k.startswith("get_")} for c in (one, run)]
    assert counted[0] == counted[1]
    assert counted[1]["get_expired"] + counted[1]["get_flushed"] == 2


def test_the_budget_stops_the_run_after_the_key_that_reaches_it() -> None:
    cache = Cache(memory_limit=16 * MB, clock=FakeClock())
    keys = [b"k%d" % i for i in range(10)]
    for key in keys[::2]:
        cache.store(SET, key, b"v" * 98)  # a hit counts 2 + 98 + FLOOR: 164
    # hit, miss, hit: 164 + 64 + 164 = 392
    hits, size, _ = cache.get_refs(keys, 392, FLOOR)
    assert len(hits) == 3 and size == 392 and hits[1] is None
    hits, size, _ = cache.get_refs(keys, 393, FLOOR)
    assert len(hits) == 4 and size == 456  # the miss that came next reached it
    # reached at the last key: that is no stop, every key is there
    hits, size, _ = cache.get_refs(keys[:3], 392, FLOOR)
    assert len(hits) == 3 and size == 392
    # a lookup past the stop was never made: the key is not marked fetched
    hits, _, _ = cache.get_refs([b"k0", b"k8"], 1, FLOOR)
    assert len(hits) == 1
    view = cache.lookup(b"k8", False, False, False)
    assert view is not None and not view[10]


def test_a_run_that_fails_gives_back_what_it_lent(slot: int) -> None:
    """Lent values the caller never sees (an exception part way) are given back, and the
    holder word is clear: the process did not die inside."""
    cache = Cache(memory_limit=16 * MB, clock=FakeClock(), holder=slot)
    cache.store(SET, b"lent", b"L" * PIN_MIN)
    with pytest.raises(TypeError):
        cache.get_refs([b"lent", [b"unhashable"]], 1 << 30, FLOOR)  # type: ignore[list-item]
    assert cache.pins_held() == 0 and cache.arena.holders[slot] == 0
    hits, _, lent = cache.get_refs([b"lent"], 1 << 30, FLOOR)
    assert len(lent) == 1 and plain(hits[0])[::3] == (b"L" * PIN_MIN, True)
    cache.unpin(lent[0])


def test_the_holder_word_is_clear_between_two_keys() -> None:
    """The holder word is set around each key's lock alone, as `get` sets it: a worker
    killed between two keys of a multiget held no lock, and the supervisor keeps the arena
    (set for the whole run, the death would have cost every item)."""
    cache = Cache(memory_limit=16 * MB, clock=FakeClock(), holder=1)
    cache.store(SET, b"a", b"1")
    cache.store(SET, b"b", b"2")
    seen: list[int] = []

    class Key(bytes):
        # hashed by the run before it takes the key's lock: what the word says then
        def __hash__(self) -> int:
            seen.append(cache.arena.holders[1])
            return bytes.__hash__(self)

    hits, _, _ = cache.get_refs([Key(b"a"), Key(b"b")], 1 << 30, FLOOR)
    assert [plain(h)[0] for h in hits] == [b"1", b"2"]
    assert seen == [0, 0] and cache.arena.holders[1] == 0
