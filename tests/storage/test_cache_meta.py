"""The meta commands' storage operations: `Cache.lookup`, `store_ex`, `delete_ex`,
`delta_ex`, and the item header's meta bits (stale, recache token, binary key)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcached.clock import FakeClock
from mcached.storage.arena import MF_BINKEY, MF_STALE, MF_WON, OFF_MFLAGS
from mcached.storage.assoc import ADDR_MASK
from mcached.storage.cache import Cache
from mcached.storage.results import (
    DeleteResult,
    DeltaResult,
    ItemState,
    StoreMode,
    StoreResult,
)

pytestmark = pytest.mark.unit

MB = 1024 * 1024
SET, ADD, REPLACE, APPEND, PREPEND, CAS = (
    StoreMode.SET,
    StoreMode.ADD,
    StoreMode.REPLACE,
    StoreMode.APPEND,
    StoreMode.PREPEND,
    StoreMode.CAS,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> Any:
    return Named(Cache(memory_limit=64 * MB, clock=clock))


class Named:
    """The cache with its lookups' tuples named (`ItemState`), for reading the tests."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def lookup(self, key: bytes, *args: Any, **kwargs: Any) -> ItemState | None:
        item = self.cache.lookup(key, *args, **kwargs)
        return None if item is None else ItemState(*item)

    def delta_ex(self, *args: Any, **kwargs: Any) -> tuple[DeltaResult, ItemState | None]:
        result, item = self.cache.delta_ex(*args, **kwargs)
        return result, None if item is None else ItemState(*item)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cache, name)


def mflags(cache: Any, key: bytes) -> int:
    """The OFF_MFLAGS byte of `key`'s item (the test reads the arena directly)."""
    part, h = cache._part(key)
    with part:
        i = cache._raw_find_locked(part, key, h)
        assert i >= 0
        return cache._pm[(part.tbl[i] & ADDR_MASK) + OFF_MFLAGS]


def cas_of(cache: Any, key: bytes) -> int:
    hit = cache.get(key)
    assert hit is not None
    return hit[2]


def slab_row(cache: Any, field: str) -> int:
    classes, _ = cache.slabs_stats()
    return sum(fields[field] for _, fields in classes)


def test_lookup_reports_the_item_before_the_command_changed_it(
    cache: Cache, clock: FakeClock
) -> None:
    cache.store(SET, b"k", b"hello", flags=5, exptime=100)
    clock.advance(3)
    st = cache.lookup(b"k")
    assert st is not None
    assert (st.value, st.flags, st.size, st.ttl, st.idle, st.fetched) == (
        b"hello",
        5,
        5,
        97,
        3,
        False,
    )
    assert st.cas == cas_of(cache, b"k") and st.clsid == 1 and st.total == 48 + 2 + 7 + 4 + 8
    assert not (st.stale or st.token_sent or st.won or st.created or st.binary_key)
    assert cache.lookup(b"k").fetched  # type: ignore[union-attr]  # bumped by the first
    assert cache.lookup(b"nope") is None


def test_lookup_without_bump_leaves_the_item_unread(cache: Any) -> None:
    cache.store(SET, b"k", b"v")
    assert not cache.lookup(b"k", bump=False).fetched  # type: ignore[union-attr]
    assert not cache.lookup(b"k", value=False).fetched  # type: ignore[union-attr]
    assert cache.lookup(b"k", value=False).fetched  # type: ignore[union-attr]
    assert cache.lookup(b"k", value=False).value is None  # type: ignore[union-attr]


def test_lookup_counts_a_get_or_a_touch_hit_in_the_class(cache: Any) -> None:
    cache.store(SET, b"k", b"v")
    cache.lookup(b"k")
    cache.lookup(b"k", count=False)
    cache.lookup(b"k", touch=10)
    assert slab_row(cache, "get_hits") == 1 and slab_row(cache, "touch_hits") == 1


def test_lookup_touch_sets_the_exptime(cache: Any, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"v", exptime=100)
    st = cache.lookup(b"k", touch=30)
    assert st is not None and (st.ttl, st.touch_ttl) == (100, 30)
    assert cache.lookup(b"k").ttl == 30  # type: ignore[union-attr]
    assert cache.lookup(b"k", touch=0).touch_ttl is None  # type: ignore[union-attr]
    assert cache.lookup(b"k").ttl is None  # type: ignore[union-attr]
    assert cache.stats()["curr_items"] == 1
    st = cache.lookup(b"k", touch=-1)  # already past: this lookup still sees it
    assert st is not None and st.touch_ttl is not None and st.touch_ttl < 0
    assert cache.lookup(b"k") is None


def test_vivify_creates_an_empty_item_and_wins_it(cache: Any, clock: FakeClock) -> None:
    st = cache.lookup(b"k", vivify=30)
    assert st is not None and st.created and st.won and not st.token_sent
    assert (st.value, st.size, st.ttl, st.vivify_ttl, st.fetched) == (b"", 0, None, 30, False)
    again = cache.lookup(b"k", vivify=30)
    assert again is not None and not again.created and not again.won and again.token_sent
    assert again.ttl == 30 and again.fetched  # the first lookup bumped what it made
    assert mflags(cache, b"k") == MF_WON
    st2 = cache.stats()
    assert st2["curr_items"] == 1 and st2["total_items"] == 1


def test_vivify_with_touch_takes_the_later_flags_exptime(cache: Any) -> None:
    cache.lookup(b"a", vivify=30, touch=60, vivify_last=True)
    cache.lookup(b"b", vivify=30, touch=60, vivify_last=False)
    assert cache.lookup(b"a").ttl == 30  # type: ignore[union-attr]
    assert cache.lookup(b"b").ttl == 60  # type: ignore[union-attr]


def test_recache_wins_when_the_item_expires_before_the_token(
    cache: Cache, clock: FakeClock
) -> None:
    cache.store(SET, b"k", b"v", exptime=100)
    assert not cache.lookup(b"k", recache=50).won  # type: ignore[union-attr]
    st = cache.lookup(b"k", recache=130)
    assert st is not None and st.won and not st.token_sent
    st = cache.lookup(b"k", recache=130)
    assert st is not None and not st.won and st.token_sent  # once
    cache.store(SET, b"k", b"v")  # a store makes a new item: token back up for grabs
    assert mflags(cache, b"k") == 0
    assert not cache.lookup(b"k", recache=130).won  # type: ignore[union-attr]  # no exptime
    assert not cache.lookup(b"k", recache=0).won  # type: ignore[union-attr]


def test_recache_compares_the_touched_exptime_only_after_the_touch(cache: Any) -> None:
    cache.store(SET, b"a", b"v", exptime=100)
    cache.store(SET, b"b", b"v", exptime=100)
    assert cache.lookup(b"a", touch=200, recache=130, recache_after_touch=False).won  # type: ignore[union-attr]
    assert not cache.lookup(b"b", touch=200, recache=130, recache_after_touch=True).won  # type: ignore[union-attr]


def test_invalidate_marks_stale_and_the_first_reader_wins(cache: Any, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"moo")
    old_cas = cas_of(cache, b"k")
    assert cache.delete_ex(b"k", invalidate=True, touch=30) is DeleteResult.INVALIDATED
    assert mflags(cache, b"k") == MF_STALE
    st = cache.lookup(b"k")
    assert st is not None and st.stale and st.won and st.ttl == 30 and st.value == b"moo"
    assert st.cas != old_cas
    st = cache.lookup(b"k")
    assert st is not None and st.stale and not st.won and st.token_sent
    # invalidating again hands the token back out
    cache.delete_ex(b"k", invalidate=True)
    assert mflags(cache, b"k") == MF_STALE and cache.lookup(b"k").won  # type: ignore[union-attr]
    assert cache.get(b"k")[0] == b"moo"  # type: ignore[index]  # a classic get serves it
    assert slab_row(cache, "delete_hits") == 0


def test_stale_store_keeps_the_ttl_and_the_token(cache: Any, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"moo")
    cache.delete_ex(b"k", invalidate=True, touch=30)
    cache.lookup(b"k")  # wins
    cur = cas_of(cache, b"k")
    assert cache.store_ex(CAS, b"k", b"f", exptime=90, cas=0, stale=True)[0] is StoreResult.EXISTS
    result, cas = cache.store_ex(CAS, b"k", b"f", exptime=90, cas=cur - 1, stale=True)
    assert result is StoreResult.STORED and cas > cur
    st = cache.lookup(b"k")
    assert st is not None and st.value == b"f" and st.stale and st.token_sent and st.ttl == 30
    # without I an older CAS is refused; the right one stores a fresh item
    assert cache.store_ex(CAS, b"k", b"g", cas=1)[0] is StoreResult.EXISTS
    result, cas = cache.store_ex(CAS, b"k", b"g", exptime=90, cas=st.cas)
    assert result is StoreResult.STORED and cas == cas_of(cache, b"k")
    st = cache.lookup(b"k")
    assert st is not None and not (st.stale or st.token_sent or st.won) and st.ttl == 90
    assert slab_row(cache, "cas_hits") == 2 and slab_row(cache, "cas_badval") == 2


def test_store_ex_modes_cas_and_binary_keys(cache: Any) -> None:
    assert cache.store_ex(ADD, b"k", b"a", binary_key=True)[0] is StoreResult.STORED
    assert mflags(cache, b"k") == MF_BINKEY
    assert cache.lookup(b"k").binary_key  # type: ignore[union-attr]
    assert cache.store_ex(ADD, b"k", b"b", cas=12345)[0] is StoreResult.NOT_STORED
    cur = cas_of(cache, b"k")
    assert cache.store_ex(APPEND, b"k", b"b", cas=cur + 1)[0] is StoreResult.EXISTS
    result, cas = cache.store_ex(APPEND, b"k", b"b", cas=cur, binary_key=True)
    assert result is StoreResult.STORED and cas == cas_of(cache, b"k")
    assert mflags(cache, b"k") == 0  # append makes an item of its own, as memcached
    assert cache.store_ex(PREPEND, b"k", b"<")[0] is StoreResult.STORED
    assert cache.get(b"k")[0] == b"<ab"  # type: ignore[index]
    assert cache.store_ex(CAS, b"nope", b"x", cas=1) == (StoreResult.NOT_FOUND, 0)
    assert cache.store_ex(REPLACE, b"nope", b"x") == (StoreResult.NOT_STORED, 0)
    assert cache.store_ex(SET, b"k", b"x" * (2 * MB)) == (StoreResult.TOO_LARGE, 0)
    # a plain store clears every meta bit (memcached makes a new item)
    cache.store_ex(SET, b"s", b"v", binary_key=True)
    cache.delete_ex(b"s", invalidate=True)
    cache.lookup(b"s")
    assert mflags(cache, b"s") == MF_STALE | MF_WON | MF_BINKEY
    cache.store(SET, b"s", b"w")
    assert mflags(cache, b"s") == 0


def test_touch_and_an_incr_in_place_keep_the_meta_bits(cache: Any) -> None:
    cache.store(SET, b"n", b"10")
    cache.delete_ex(b"n", invalidate=True)
    cache.touch(b"n", 100)
    assert cache.incr(b"n", 1) == (DeltaResult.OK, 11)
    assert mflags(cache, b"n") == MF_STALE
    assert cache.incr(b"n", 100) == (DeltaResult.OK, 111)  # longer: a new item
    assert mflags(cache, b"n") == 0


def test_delete_ex(cache: Any) -> None:
    assert cache.delete_ex(b"k") is DeleteResult.NOT_FOUND
    cache.store(SET, b"k", b"v")
    cur = cas_of(cache, b"k")
    assert cache.delete_ex(b"k", cas=0) is DeleteResult.EXISTS  # a CAS of 0 is compared too
    assert cache.delete_ex(b"k", cas=cur + 1) is DeleteResult.EXISTS
    assert cache.delete_ex(b"k", cas=cur) is DeleteResult.DELETED
    assert cache.get(b"k") is None and slab_row(cache, "delete_hits") == 1


def test_delta_ex(cache: Any, clock: FakeClock) -> None:
    assert cache.delta_ex(b"n", True, 1) == (DeltaResult.NOT_FOUND, None)
    result, st = cache.delta_ex(b"n", True, 1, vivify=0, initial=13)
    assert result is DeltaResult.OK and st is not None and st.created and st.value == b"13"
    assert st.ttl is None and cache.get(b"n")[0] == b"13"  # type: ignore[index]
    result, st = cache.delta_ex(b"n", True, 30, vivify=0, initial=13)
    assert st is not None and not st.created and st.value == b"43" and st.cas == cas_of(cache, b"n")
    assert cache.delta_ex(b"n", False, 22)[1].value == b"21"  # type: ignore[union-attr]
    assert cache.delta_ex(b"n", False, 9000)[1].value == b"0"  # type: ignore[union-attr]
    cur = cas_of(cache, b"n")
    assert cache.delta_ex(b"n", True, 1, cas=cur + 1) == (DeltaResult.EXISTS, None)
    assert cache.delta_ex(b"n", True, 1, cas=cur)[0] is DeltaResult.OK
    assert cache.delta_ex(b"n", True, 2**64 - 1)[1].value == b"0"  # type: ignore[union-attr]
    cache.store(SET, b"e", b"")
    assert cache.delta_ex(b"e", True, 1) == (DeltaResult.NON_NUMERIC, None)
    # the empty-value check comes before the CAS's, which comes before the number's
    assert cache.delta_ex(b"e", True, 1, cas=1) == (DeltaResult.NON_NUMERIC, None)
    cache.store(SET, b"w", b"word")
    assert cache.delta_ex(b"w", True, 1, cas=1) == (DeltaResult.EXISTS, None)
    assert cache.delta_ex(b"w", True, 1) == (DeltaResult.NON_NUMERIC, None)


def test_delta_ex_touch_applies_only_when_the_number_kept_its_length(cache: Any) -> None:
    cache.store(SET, b"a", b"5")
    _, st = cache.delta_ex(b"a", True, 1, touch=100)
    assert st is not None and st.ttl is None and st.touch_ttl == 100
    assert cache.lookup(b"a").ttl == 100  # type: ignore[union-attr]
    cache.store(SET, b"b", b"9")
    _, st = cache.delta_ex(b"b", True, 1, touch=100)  # 10: memcached touched the old item
    assert st is not None and st.value == b"10" and st.touch_ttl == 100
    assert cache.lookup(b"b").ttl is None  # type: ignore[union-attr]
    # a created counter takes the later of N and T
    cache.delta_ex(b"c", True, 1, vivify=30, touch=60, vivify_last=False)
    assert cache.lookup(b"c").ttl == 60  # type: ignore[union-attr]


def test_cas_disabled(clock: FakeClock) -> None:
    cache = Named(Cache(memory_limit=64 * MB, clock=clock, cas_enabled=False))
    cache.store(SET, b"k", b"1")
    assert cache.lookup(b"k").cas == 0  # type: ignore[union-attr]
    assert cache.store_ex(CAS, b"k", b"2", cas=1, stale=True)[0] is StoreResult.EXISTS
    assert cache.store_ex(SET, b"k", b"2") == (StoreResult.STORED, 0)
    assert cache.store_ex(APPEND, b"k", b"3", cas=99)[0] is StoreResult.STORED  # no CAS: none
    assert cache.delete_ex(b"k", cas=5) is DeleteResult.EXISTS
    assert cache.delete_ex(b"k", cas=0, invalidate=True) is DeleteResult.INVALIDATED
    assert cache.delta_ex(b"k", True, 1, cas=5) == (DeltaResult.EXISTS, None)


# ---- the last access (issue 13): memcached 1.6.18's do_item_bump and do_item_update ----


def idle(cache: Any, key: bytes) -> int:
    """`me`'s la=: seconds since the last access, read without bumping."""
    st = cache.lookup(key, value=False, bump=False, count=False)
    assert st is not None
    return int(st.idle)


READS: dict[str, Callable[[Any, bytes], object]] = {
    "get": lambda c, k: c.get(k),
    "get_ref": lambda c, k: c.get_ref(k),
    "mg": lambda c, k: c.lookup(k),
    "mg T": lambda c, k: c.lookup(k, touch=100),
    "touch": lambda c, k: c.touch(k, 100),
    "gat": lambda c, k: c.get_and_touch(k, 100),
}


@pytest.mark.parametrize("read", READS.values(), ids=READS.keys())
def test_the_second_read_sets_the_last_access(
    cache: Any, clock: FakeClock, read: Callable[[Any, bytes], object]
) -> None:
    """The first read after a store only marks the item fetched; the next one references it
    and sets its time; later reads leave it (until it is 60 s old)."""
    cache.store(SET, b"k", b"v")
    clock.advance(5)
    read(cache, b"k")
    assert idle(cache, b"k") == 5 and cache.lookup(b"k", bump=False).fetched
    clock.advance(2)
    read(cache, b"k")
    assert idle(cache, b"k") == 0
    clock.advance(3)
    read(cache, b"k")
    assert idle(cache, b"k") == 3


def test_mg_reports_the_last_access_before_its_bump(cache: Any, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"v")
    clock.advance(4)
    assert (cache.lookup(b"k").idle, cache.lookup(b"k").idle) == (4, 4)
    assert cache.lookup(b"k").idle == 0


def test_reads_that_do_not_bump(cache: Any, clock: FakeClock) -> None:
    """mg with u (bump=False), me, a failed cas, md I: the time stays the store's."""
    cache.store(SET, b"k", b"v")
    clock.advance(4)
    for _ in range(3):
        cache.lookup(b"k", bump=False)
    assert cache.store(StoreMode.CAS, b"k", b"w", cas=12345) is StoreResult.EXISTS
    assert idle(cache, b"k") == 4
    assert not cache.lookup(b"k", bump=False).fetched


def test_add_and_incr_in_place_set_the_last_access(cache: Any, clock: FakeClock) -> None:
    """memcached's do_item_update: add of an existing key, incr/decr rewriting in place."""
    cache.store(SET, b"a", b"v")
    cache.store(SET, b"n", b"10")
    clock.advance(6)
    assert cache.store(StoreMode.ADD, b"a", b"w") is StoreResult.NOT_STORED
    assert cache.incr(b"n", 1) == (DeltaResult.OK, 11)
    assert (idle(cache, b"a"), idle(cache, b"n")) == (0, 0)


def test_a_referenced_item_is_refreshed_every_60_seconds(cache: Any, clock: FakeClock) -> None:
    """memcached's ITEM_UPDATE_INTERVAL: reads of a referenced item set its time again once
    it is 60 s old; the read path learns "60 s ago" from `tick` (the ticker, every second)."""
    cache.store(SET, b"k", b"v")
    cache.get(b"k")
    cache.get(b"k")  # referenced, time = now
    clock.advance(61)
    cache.get(b"k")
    assert idle(cache, b"k") == 61  # no tick yet: nothing is older than "0"
    cache.tick()  # now - 60: the item is older (memcached: time < current_time - 60)
    cache.get(b"k")
    assert idle(cache, b"k") == 0
    clock.advance(60)
    cache.tick()
    cache.get(b"k")
    assert idle(cache, b"k") == 60  # 60 s old: not older than now - 60
    clock.advance(1)
    cache.tick()
    cache.lookup(b"k")  # mg's: the same rule
    assert idle(cache, b"k") == 0
    clock.advance(61)
    cache.tick()
    cache.lookup(b"k", touch=0)  # the slow lookup's bump: the same rule
    assert idle(cache, b"k") == 0
    clock.advance(61)
    cache.tick()
    cache.touch(b"k", 0)  # touch's too
    assert idle(cache, b"k") == 0


def test_a_flush_still_takes_items_read_before_it(cache: Any, clock: FakeClock) -> None:
    """flush_all <delay> drops items whose time is before its deadline: a read before the
    deadline moves the time, but never past it."""
    cache.store(SET, b"k", b"v")
    cache.flush_all(10)
    clock.advance(5)
    cache.get(b"k")
    cache.get(b"k")  # time = now, still before the deadline
    clock.advance(5)
    assert cache.get(b"k") is None
