"""The cache facade: memcached's store/delta/expiry/flush semantics, with a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from mcached.clock import REALTIME_MAXDELTA, FakeClock
from mcached.storage.arena import OFF_REF, T_GEN
from mcached.storage.assoc import ADDR_MASK, HB_MASK
from mcached.storage.cache import Cache, ItemState, item_size, parse_counter
from mcached.storage.results import DeltaResult, StoreMode, StoreResult

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
def cache(clock: FakeClock) -> Cache:
    return Cache(memory_limit=64 * MB, clock=clock)


def test_store_modes(cache: Cache) -> None:
    assert cache.store(ADD, b"k", b"a") is StoreResult.STORED
    assert cache.store(ADD, b"k", b"b") is StoreResult.NOT_STORED
    assert cache.store(REPLACE, b"x", b"b") is StoreResult.NOT_STORED
    assert cache.store(REPLACE, b"k", b"b", flags=3) is StoreResult.STORED
    assert cache.store(APPEND, b"k", b">", flags=9) is StoreResult.STORED
    assert cache.store(PREPEND, b"k", b"<") is StoreResult.STORED
    assert cache.get(b"k")[:2] == (b"<b>", 3)  # type: ignore[index]
    assert cache.store(APPEND, b"nope", b"x") is StoreResult.NOT_STORED


def test_a_hit_is_a_copy_that_later_writes_leave_alone(cache: Cache) -> None:
    """A reply may wait in a connection's queue while the item is rewritten in place (a set
    of the same size) or deleted and its chunk taken by another key: the value `get` gave
    must not change with it."""
    cache.store(SET, b"k", b"a" * 1000)
    first = cache.get(b"k")
    assert first is not None
    cache.store(SET, b"k", b"b" * 1000)  # same class: the chunk is rewritten in place
    second = cache.get(b"k")
    assert cache.delete(b"k")
    cache.store(SET, b"j", b"c" * 1000)  # takes the freed chunk
    assert first[0] == b"a" * 1000
    assert second is not None and second[0] == b"b" * 1000
    assert cache.get(b"j") == (b"c" * 1000, 0, cache.get(b"j")[2])  # type: ignore[index]


def test_cas(cache: Cache) -> None:
    assert cache.store(CAS, b"k", b"v", cas=1) is StoreResult.NOT_FOUND
    cache.store(SET, b"k", b"v")
    _, _, unique = cache.get(b"k")  # type: ignore[misc]
    assert cache.store(CAS, b"k", b"w", cas=unique + 100) is StoreResult.EXISTS
    assert cache.store(CAS, b"k", b"w", cas=unique) is StoreResult.STORED
    assert cache.store(CAS, b"k", b"z", cas=unique) is StoreResult.EXISTS
    assert cache.get(b"k")[0] == b"w"  # type: ignore[index]


def test_cas_unique_changes_on_every_write(cache: Cache) -> None:
    seen = set()
    cache.store(SET, b"n", b"1")
    for op in (
        lambda: cache.store(SET, b"n", b"2"),
        lambda: cache.incr(b"n", 1),
        lambda: cache.store(APPEND, b"n", b"0"),
        lambda: cache.decr(b"n", 1),
    ):
        op()
        seen.add(cache.get(b"n")[2])  # type: ignore[index]
    assert len(seen) == 4


def test_cas_disabled_reports_zero(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock, cas_enabled=False)
    cache.store(SET, b"k", b"v")
    assert cache.get(b"k") == (b"v", 0, 0)
    assert cache.store(CAS, b"k", b"w", cas=0) is StoreResult.EXISTS  # memcached -C


def test_relative_expiry(cache: Cache, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"v", exptime=10)
    clock.advance(9)
    assert cache.get(b"k") is not None
    clock.advance(1)
    assert cache.get(b"k") is None
    st = cache.stats()
    # memcached's do_item_get counts get_expired; "reclaimed" counts only memory reused from
    # an expired item by an allocation (checked against memcached 1.6.18)
    assert st["get_expired"] == 1 and st["curr_items"] == 0 and st["reclaimed"] == 0


def test_absolute_and_negative_expiry(cache: Cache, clock: FakeClock) -> None:
    now_unix = clock.unixtime()
    cache.store(SET, b"past", b"v", exptime=now_unix - 5)
    cache.store(SET, b"future", b"v", exptime=now_unix + 100)
    cache.store(SET, b"neg", b"v", exptime=-1)
    assert cache.get(b"past") is None
    assert cache.get(b"neg") is None
    assert cache.get(b"future") is not None
    clock.advance(100)
    assert cache.get(b"future") is None
    assert REALTIME_MAXDELTA == 2592000


def test_touch_and_gat(cache: Cache, clock: FakeClock) -> None:
    cache.store(SET, b"k", b"v", exptime=5)
    assert cache.touch(b"k", 100)
    assert not cache.touch(b"missing", 100)
    clock.advance(50)
    assert cache.get_and_touch(b"k", 10) is not None
    clock.advance(10)
    assert cache.get(b"k") is None


def test_incr_decr(cache: Cache) -> None:
    assert cache.incr(b"n", 1) == (DeltaResult.NOT_FOUND, 0)
    cache.store(SET, b"n", b"18446744073709551615")
    assert cache.incr(b"n", 1) == (DeltaResult.OK, 0)
    assert cache.get(b"n")[0] == b"0" + b" " * 19  # type: ignore[index]
    cache.store(SET, b"n", b"5")
    assert cache.decr(b"n", 10) == (DeltaResult.OK, 0)
    cache.store(SET, b"n", b"99")
    assert cache.incr(b"n", 1) == (DeltaResult.OK, 100)
    assert cache.get(b"n")[0] == b"100"  # type: ignore[index]
    cache.store(SET, b"t", b"abc")
    assert cache.incr(b"t", 1) == (DeltaResult.NON_NUMERIC, 0)
    cache.store(SET, b"e", b"")
    assert cache.incr(b"e", 1) == (DeltaResult.NON_NUMERIC, 0)


@pytest.mark.parametrize(
    "value,number",
    [
        (b"12", 12),
        (b" 12", 12),
        (b"12 ", 12),
        (b"12 34", 12),
        (b"+3", 3),
        (b"-0", 0),
        (b"-3", None),
        (b"12a", None),
        (b"", None),
        (b" ", None),
        (b"18446744073709551615", 2**64 - 1),
        (b"18446744073709551616", None),
        # strtoull's: a NUL ends the digits; a minus negates modulo 2^64, refused only when
        # the result reads as negative signed (a binary differential fuzzer found these)
        (b"3\0", 3),
        (b"5\0x", 5),
        (b"-18446744073709551615", 1),
        (b"-9223372036854775809", 2**63 - 1),
        (b"-9223372036854775808", None),
        (b"-18446744073709551616", None),
        # and a number negative as signed is refused for a minus anywhere before a NUL
        # (memcached's strchr over the value; a text differential sweep found these)
        (b"18446744073709551615 -", None),
        (b"9223372036854775808 x-y", None),
        (b"  18446744073709551615 a-b", None),
        (b"9223372036854775807 -", 2**63 - 1),
        (b"18446744073709551615\0-", 2**64 - 1),
        (b"18446744073709551615 \0-", 2**64 - 1),
        (b"-18446744073709551615 -", 1),
    ],
)
def test_parse_counter(value: bytes, number: int | None) -> None:
    assert parse_counter(value) == number


def test_flush_all_immediate_and_delayed(cache: Cache, clock: FakeClock) -> None:
    cache.store(SET, b"a", b"1")
    cache.flush_all()
    assert cache.get(b"a") is None
    cache.store(SET, b"b", b"1")  # stored after the flush: live
    assert cache.get(b"b") is not None
    cache.flush_all(10)
    clock.advance(5)
    assert cache.get(b"b") is not None
    clock.advance(5)
    assert cache.get(b"b") is None
    cache.store(SET, b"c", b"1")
    assert cache.get(b"c") is not None


def test_a_flush_all_is_one_cut_across_partitions(cache: Cache) -> None:
    """Found by a hunt (12 clients storing in order, a flush_all among them): flush_all
    marked the partitions one lock at a time, each with its own last CAS, so a store in a
    partition marked already lived on while a later store, in a partition marked after it,
    went. memcached cuts once (oldest_cas): a store that follows a surviving one survives.
    Here the flush is held at partition 2's lock, after it marked 0 and 1."""
    items = cache._items
    parts = items.parts

    def key_in(p: int, nth: int = 0) -> bytes:
        keys = (k for k in (b"k%d" % i for i in range(10_000)) if hash(k) & items.pmask == p)
        return [next(keys) for _ in range(nth + 1)][-1]

    old = key_in(3, 1)
    cache.store(SET, old, b"old")  # stored before the flush: goes
    marked = parts[1].w[parts[1].tb + T_GEN]
    with parts[2].lock:
        flush = threading.Thread(target=cache.flush_all)
        flush.start()
        for _ in range(2000):  # until the flush holds partitions 0 and 1
            if parts[1].lock.acquire(False):
                parts[1].lock.release()
                time.sleep(0.005)
            else:
                break
        # it takes every partition's lock before it cuts: nothing is marked yet, and no
        # store can come between its cut and its marks (an incr in place there kept an
        # item older than the flush: tests/storage/test_races.py)
        assert not parts[0].lock.acquire(False)
        assert parts[1].w[parts[1].tb + T_GEN] == marked
    flush.join(10)
    first, then = key_in(0), key_in(3)
    assert cache.store(SET, first, b"1") is StoreResult.STORED
    assert cache.store(SET, then, b"2") is StoreResult.STORED
    assert cache.get(first) is not None
    assert cache.get(then) is not None
    assert cache.get(old) is None


def test_a_delayed_flush_takes_effect_in_the_second_before_its_time(
    cache: Cache, clock: FakeClock
) -> None:
    """memcached sets oldest_live to the second before the flush's time: ``flush_all 2``
    drops the items after 1 s, with what is stored in that second; ``flush_all 1`` drops
    them at once (by CAS) and what is stored in the rest of this second. Measured against
    memcached 1.6.18; mcached took each a second later."""
    cache.store(SET, b"a", b"1")
    cache.flush_all(1)
    assert cache.get(b"a") is None
    cache.store(SET, b"b", b"1")
    assert cache.get(b"b") is None  # stored in the flush's second
    clock.advance(1)
    cache.store(SET, b"c", b"1")
    assert cache.get(b"c") is not None

    cache.store(SET, b"d", b"1")
    cache.flush_all(2)
    assert cache.get(b"d") is not None
    clock.advance(1)
    assert cache.get(b"d") is None
    cache.store(SET, b"e", b"1")
    assert cache.get(b"e") is None
    clock.advance(1)
    cache.store(SET, b"f", b"1")
    assert cache.get(b"f") is not None
    assert cache.get(b"c") is None  # stored before the second flush
    cache.crawl()  # the crawler agrees
    assert cache.get(b"f") is not None and cache.stats()["curr_items"] == 1


def test_lru_eviction_keeps_recently_read(clock: FakeClock) -> None:
    cache = Cache(memory_limit=2 * MB, item_size_max=64 * 1024, clock=clock, partitions=1)
    value = b"x" * 1000
    for i in range(100):
        cache.store(SET, b"hot%d" % i, value)
    for i in range(5000):
        for j in range(0, 100, 10):
            if i % 200 == 0:
                cache.get(b"hot%d" % j)
        cache.store(SET, b"cold%d" % i, value)
    st = cache.stats()
    assert st["bytes"] <= 2 * MB
    assert st["evictions"] > 0
    for j in range(0, 100, 10):
        assert cache.get(b"hot%d" % j) is not None, j


def test_no_evictions_refuses(clock: FakeClock) -> None:
    cache = Cache(memory_limit=2 * MB, clock=clock, evictions=False, partitions=1)
    results = [cache.store(SET, b"k%d" % i, b"x" * 10000) for i in range(400)]
    assert StoreResult.NO_MEMORY in results
    assert cache.stats()["evictions"] == 0
    assert cache.get(b"k0") is not None


def test_memory_accounting_matches_memcached(cache: Cache) -> None:
    cache.store(SET, b"a", b"x")
    assert cache.stats()["bytes"] == 61 == item_size(1, 0, 1, True)  # memcached: mem_requested 61


def test_concurrent_incr_loses_nothing(cache: Cache) -> None:
    cache.store(SET, b"n", b"0")

    def work() -> None:
        for _ in range(2000):
            cache.incr(b"n", 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get(b"n")[0].strip() == b"16000"  # type: ignore[index]


def test_concurrent_cas_loses_nothing(cache: Cache) -> None:
    cache.store(SET, b"c", b"0")

    def work() -> None:
        done = 0
        while done < 300:
            value, _, unique = cache.get(b"c")  # type: ignore[misc]
            new = b"%d" % (int(value) + 1)
            if cache.store(CAS, b"c", new, cas=unique) is StoreResult.STORED:
                done += 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get(b"c")[0] == b"1800"  # type: ignore[index]


def test_set_memory_limit(cache: Cache) -> None:
    assert cache.set_memory_limit(128 * MB)
    assert cache.stats()["limit_maxbytes"] == 128 * MB
    assert cache.set_memory_limit(8 * MB)  # memcached accepts cache_memlimit 8


def test_failed_set_drops_the_old_value(clock: FakeClock) -> None:
    """memcached allocates before unlinking, and a failed set deletes the old value."""
    cache = Cache(memory_limit=2 * MB, clock=clock, evictions=False, partitions=1)
    value = b"x" * 100_000
    stored = 0
    while cache.store(SET, b"k%d" % stored, value) is StoreResult.STORED:
        stored += 1
    assert stored >= 5
    assert cache.store(SET, b"k1", value) is StoreResult.NO_MEMORY
    assert cache.get(b"k1") is None
    assert cache.get(b"k0") is not None


def full_class(clock: FakeClock, value: bytes) -> tuple[Cache, list[bytes]]:
    """A -M cache whose class for `value` is full (one partition: the table never moves)."""
    cache = Cache(memory_limit=2 * MB, clock=clock, evictions=False, partitions=1)
    keys: list[bytes] = []
    while cache.store(SET, b"k%d" % len(keys), value) is StoreResult.STORED:
        keys.append(b"k%d" % len(keys))
    assert len(keys) >= 5
    return cache, keys


def chunks_used(cache: Cache) -> int:
    return sum(row["used_chunks"] for _, row in cache.slabs_stats()[0])


def test_a_store_allocates_before_it_looks_the_key_up(clock: FakeClock) -> None:
    """memcached allocates a store's item first: in a full class every mode is NO_MEMORY,
    whatever the key holds, and the key's item stays (which syntaxes drop it is the
    handlers' to say); no chunk is left taken."""
    value = b"x" * 100_000
    cache, keys = full_class(clock, value)
    used = chunks_used(cache)
    old = cache.get(keys[0])
    cas = old[2]  # type: ignore[index]
    for mode, key, unique in (
        (ADD, keys[0], 0),  # exists
        (ADD, b"new", 0),
        (REPLACE, keys[0], 0),
        (REPLACE, b"new", 0),  # missing
        (CAS, keys[0], cas),  # would match
        (CAS, keys[0], cas + 1),  # would not
        (CAS, b"new", 1),
        (APPEND, keys[0], 0),  # its own bytes find no room
        (PREPEND, b"new", 0),
    ):
        assert cache.store(mode, key, value, cas=unique) is StoreResult.NO_MEMORY, (mode, key)
        assert cache.store_ex(mode, key, value, cas=unique)[0] is StoreResult.NO_MEMORY
    assert cache.get(keys[0]) == old and cache.get(b"new") is None
    assert chunks_used(cache) == used
    assert cache.stats()["curr_items"] == len(keys)


def test_an_append_whose_joined_item_finds_no_room_is_not_stored(clock: FakeClock) -> None:
    """The appended bytes get their chunk (a class with room), the joined item none:
    memcached's do_store_item answers NOT_STORED and keeps the item, and the bytes' chunk
    goes back."""
    value = b"x" * 100_000
    cache, keys = full_class(clock, value)
    assert cache.store(SET, b"small", b"s") is StoreResult.STORED  # the 1-byte class has room
    used = chunks_used(cache)
    old = cache.get(keys[0])
    for mode in (APPEND, PREPEND):
        assert cache.store(mode, keys[0], b"y") is StoreResult.NOT_STORED
        assert cache.store_ex(mode, keys[0], b"y")[0] is StoreResult.NOT_STORED
    assert cache.get(keys[0]) == old
    assert chunks_used(cache) == used


def test_a_chained_store_takes_its_chunks_first_too(clock: FakeClock) -> None:
    """A value past slab_chunk_max: the early chunks are a chain of the largest class, which
    (it has too few pages) first gets a page moved from another class; an add of a key that
    exists gives them back, a replace makes them its item."""
    cache, keys = full_class(clock, b"x" * 100_000)
    big = b"z" * 1_000_000
    assert cache.store(ADD, keys[0], big) is StoreResult.NOT_STORED
    assert cache.get(keys[0])[0] == b"x" * 100_000  # type: ignore[index]
    assert cache.store(REPLACE, keys[1], big) is StoreResult.STORED
    assert cache.get(keys[1])[0] == big  # type: ignore[index]
    assert cache.stats()["curr_items"] == len(keys)


def test_a_store_with_room_in_its_class_needs_no_early_chunk(cache: Cache) -> None:
    """With a free chunk in the class, an add, replace or cas cannot fail for memory: it
    looks the key up first, and a replace of one chunk rewrites the item in place."""
    assert cache.store(SET, b"k", b"a" * 100) is StoreResult.STORED
    used = chunks_used(cache)
    assert cache.store(ADD, b"k", b"b" * 100) is StoreResult.NOT_STORED
    assert cache.store(REPLACE, b"k", b"c" * 100) is StoreResult.STORED
    assert cache.store(CAS, b"k", b"d" * 100, cas=1) is StoreResult.EXISTS
    assert chunks_used(cache) == used
    assert cache.get(b"k")[0] == b"c" * 100  # type: ignore[index]


def test_on_evict_tells_each_eviction_as_memcached_logs_it(clock: FakeClock) -> None:
    """`Cache.on_evict` (``watch evictions``): one call per evicted item with memcached's
    LOGGER_EVICTION fields; none once unset."""
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=1)
    assert cache.on_evict is None
    told: list[tuple[bytes, bool, int, int, int, int]] = []
    cache.on_evict = lambda *args: told.append(args)
    value = b"v" * 3000
    cache.store(SET, b"k0", value)
    cache.store(SET, b"k1", value, exptime=1000)
    assert cache.get(b"k1") is not None  # fetched once
    clock.advance(7)
    n = 2
    while len(told) < 2:
        cache.store(SET, b"k%d" % n, value)
        n += 1
    cid = cache.class_of(item_size(2, 0, 3000, True))
    assert told == [(b"k0", False, -1, 7, cid, 3000), (b"k1", True, 993, 7, cid, 3000)]
    assert cache.stats()["evictions"] == 2
    cache.on_evict = None
    for i in range(50):
        cache.store(SET, b"more%d" % i, value)
    assert cache.stats()["evictions"] > len(told) == 2


def test_an_item_passed_by_for_its_busy_partition_goes_at_the_next_eviction(
    clock: FakeClock,
) -> None:
    """The hand passes an item whose partition another worker holds (trylock, as memcached's
    lru_pull_tail skips a locked tail item) and evicts the next one; the item passed by is
    then the next eviction's, as memcached's locked item, still at its LRU's tail, is the
    next pull's. (It used to outlive a whole turn of newer, unread items: a never-read old
    value kept while values stored after it went.)"""
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=2)
    told: list[bytes] = []
    cache.on_evict = lambda key, *_: told.append(key)
    value = b"v" * 3000
    n = 0
    while not told:
        cache.store(SET, b"k%d" % n, value)
        n += 1
    assert told == [b"k0"]
    # the next in line, and a key of the other partition for the stores
    busy_part = cache._part(b"k1")[0]
    other = [b"x%d" % i for i in range(20) if cache._part(b"x%d" % i)[0] is not busy_part]
    busy_part.lock.acquire()  # another worker's store of a key of k1's partition
    try:
        cache.store(SET, other[0], value)
    finally:
        busy_part.lock.release()
    assert told[1] != b"k1" and cache.get(b"k1") is not None
    cid = cache.class_of(item_size(2, 0, 3000, True))
    assert dict(cache.items_stats())[cid]["lrutail_reflocked"]
    cache.store(SET, other[1], value)
    assert told[2] == b"k1"


def test_the_hand_leaves_a_chained_items_byte_to_a_holder_of_its_partition(
    clock: FakeClock,
) -> None:
    """A chained item's header lies in a small class's page, which a page move may rescue
    and give to a class of other chunk sizes while the largest class's hand walks: the hand
    cleared its reference byte holding no lock of the item, and so could zero a byte of
    another item's value. The byte is now cleared by the eviction, under the item's
    partition lock: with that lock held elsewhere, the hand passes the item untouched."""
    cache = Cache(memory_limit=8 * MB, clock=clock, partitions=2)
    told: list[bytes] = []
    cache.on_evict = lambda key, *_: told.append(key)
    value = b"c" * 600_000  # past slab_chunk_max: a chained item
    n = 0
    while not told:
        cache.store(SET, b"k%d" % n, value)
        n += 1
    assert told == [b"k0"]
    for _ in range(2):  # the first read marks it fetched, the second referenced
        assert cache.get(b"k1") is not None
    part, h = cache._part(b"k1")
    with part:
        head = part.tbl[cache._raw_find_locked(part, b"k1", h)] & ADDR_MASK
    assert cache._pm[head + OFF_REF] == 1
    other = [b"x%d" % i for i in range(20) if cache._part(b"x%d" % i)[0] is not part]
    part.lock.acquire()  # another worker's, as a page move holds it to rescue the header
    try:
        assert cache.store(SET, other[0], value) is StoreResult.STORED
        assert cache._pm[head + OFF_REF] == 1  # untouched: cleared by the old hand
    finally:
        part.lock.release()
    assert b"k1" not in told
    # with the lock free, the hand meets it again in its next turn: the eviction clears the
    # byte (k1's second chance) and takes another item
    i = 0
    while cache._pm[head + OFF_REF] and i < 100:
        assert cache.store(SET, b"y%d" % i, value) is StoreResult.STORED
        i += 1
    assert cache._pm[head + OFF_REF] == 0 and b"k1" not in told
    assert cache.get(b"k1") is not None


def test_on_evict_is_not_told_of_reclaimed_items(clock: FakeClock) -> None:
    """An expired item whose memory a store takes is reclaimed, not evicted (memcached
    logs no eviction for it either)."""
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=1)
    told: list[object] = []
    cache.on_evict = lambda *args: told.append(args)
    value = b"v" * 3000
    for i in range(700):
        cache.store(SET, b"old%d" % i, value, exptime=3)
    told.clear()
    clock.advance(7)
    for i in range(300):
        cache.store(SET, b"new%d" % i, value)
    st = cache.stats()
    assert told == [] and st["reclaimed"] > 0


def test_peek_sees_a_live_item_and_changes_nothing(cache: Cache, clock: FakeClock) -> None:
    """`Cache.peek`: what a watcher is told of the lookup inside a store, delta, touch or
    delete; an expired or flushed item is not seen, and left for the command to count."""
    assert cache.peek(b"nothing") is None
    cache.store(SET, b"k", b"abc")
    assert cache.peek(b"k") == (cache.class_of(item_size(1, 0, 3, True)), 3)
    cache.store(SET, b"gone", b"x", exptime=5)
    clock.advance(6)
    assert cache.peek(b"gone") is None
    assert cache.stats()["get_expired"] == 0  # not counted, not unlinked by the peek
    assert cache.get(b"gone") is None
    assert cache.stats()["get_expired"] == 1
    cache.flush_all()
    assert cache.peek(b"k") is None
    st = cache.stats()
    assert st["get_flushed"] == 0


def test_keys_whose_table_entries_carry_the_same_tag_are_told_apart(cache: Cache) -> None:
    """A table entry holds 22 bits of the key's hash: keys in one partition with the same
    bits share a first slot and a tag, and only the key compare tells them apart (of one
    length or of two). Pairs found by hashing keys of varied lengths (this process's hash)."""
    seen: dict[tuple[int, int], bytes] = {}
    pairs: list[tuple[bytes, bytes]] = []
    for i in range(200_000):
        key = b"k%d" % i + b"x" * (i % 5)
        h = hash(key)
        where = (h & cache._pmask, (h >> cache._pshift) & HB_MASK)  # as the table keeps it
        other = seen.setdefault(where, key)
        if other != key:
            pairs.append((other, key))
            if len(pairs) >= 6 and any(len(a) != len(b) for a, b in pairs):
                break
    assert any(len(a) != len(b) for a, b in pairs), "no pair of different lengths found"
    for first, second in pairs:
        missing = first + b"-"  # never stored
        assert cache.store(SET, first, b"1:" + first, 0, 0, 0) is StoreResult.STORED
        assert cache.get(second) is None  # a tag match of another key: a miss
        assert cache.get_refs([second], 1 << 20, 1)[0] == [None]
        assert cache.store(SET, second, b"2:" + second, 0, 0, 0) is StoreResult.STORED
        for key, value in ((first, b"1:" + first), (second, b"2:" + second)):
            for lookup in (cache.get, cache.get_ref, cache.get_value):
                hit = lookup(key)
                assert hit is not None and bytes(hit[0]) == value
            state = cache.lookup(key, True)
            assert state is not None and bytes(ItemState(*state).value) == value
        hits = cache.get_refs([second, first], 1 << 20, 1)[0]
        assert [bytes(hit[0]) for hit in hits] == [b"2:" + second, b"1:" + first]
        assert cache.get(missing) is None
        assert cache.delete(first)
        assert cache.get(first) is None and bytes(cache.get(second)[0]) == b"2:" + second


def test_partitions_double_with_the_items_the_memory_holds() -> None:
    """16 partitions up to about 8 million of the smallest items, then twice as many for
    each doubling (a table's growth holds its partition's keys for a time that grows with
    the partition), up to 256."""
    from mcached.storage.cache import partitions_for

    assert partitions_for(1 << 20, 48) == 16
    assert partitions_for(512 << 20, 48) == 16  # 5,592,405 items of 96 bytes at most
    assert partitions_for(1024 << 20, 48) == 32
    assert partitions_for(4096 << 20, 48) == 128
    assert partitions_for(1 << 40, 48) == 256
    assert partitions_for(4096 << 20, 1000) == 16  # -n 1000: 4,098,251 items at most
    assert len(Cache(memory_limit=1024 << 20)._parts) == 32
