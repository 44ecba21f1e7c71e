"""The slab allocator behind the Cache: the memory bound, eviction, chained items, the crawler,
page moves and their stats (mcached/storage/items.py, through the Cache facade)."""

from __future__ import annotations

import random
import threading
import tracemalloc
from functools import partial

import pytest

from mcached.clock import FakeClock
from mcached.storage import items as items_module
from mcached.storage.arena import G_MALLOC_FAILS
from mcached.storage.cache import Cache, Reservation
from mcached.storage.items import HEADER, NSTAT
from mcached.storage.results import DeltaResult, ReassignResult, StoreMode, StoreResult

pytestmark = pytest.mark.unit

KB = 1024
MB = 1024 * 1024
SET, APPEND, PREPEND = StoreMode.SET, StoreMode.APPEND, StoreMode.PREPEND


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def value_for(key: bytes, size: int) -> bytes:
    """A value that names its key, so a value served under the wrong key shows."""
    return (key + b"|") * (size // (len(key) + 1)) + b"." * (size % (len(key) + 1))


def class_pages(cache: Cache) -> dict[int, int]:
    classes, _ = cache.slabs_stats()
    return {cid: row["total_pages"] for cid, row in classes}


def move_page(cache: Cache, src: int, dst: int) -> ReassignResult:
    """``slabs reassign src dst`` and the move it asks for, done by the caller in place of the
    page mover (`Cache.move_asked`): the reply."""
    result = cache.reassign(src, dst)
    if result is ReassignResult.OK:
        assert cache.move_waiting
        cache.move_asked()
        assert not cache.move_waiting
    return result


def memcached_chunks(cache: Cache, nkey: int, nbytes: int, flags: int) -> list[int]:
    """The classes memcached 1.6.18 takes an item's chunks from, worked out here on their
    own: one class for an item within slab_chunk_max (``item_make_header``, ``slabs_clsid``);
    past it, the header item's class (``do_item_alloc``: header, key, NUL, suffix, CAS and a
    48-byte ``item_chunk``), then each value chunk's (``do_item_alloc_chunk``: what is left
    of the value and its CRLF plus an ``item_chunk``, at most slab_chunk_max)."""
    sizes = cache.slab_sizes

    def clsid(n: int) -> int:
        return next(i for i, size in enumerate(sizes, 1) if size >= n)

    cas = 8 if cache.cas_enabled else 0
    suffix = 4 if flags else 0
    ntotal = 48 + nkey + 1 + suffix + nbytes + 2 + cas
    if ntotal <= sizes[-1]:
        return [clsid(ntotal)]
    out = [clsid(48 + nkey + 1 + suffix + 48 + cas)]
    remain = nbytes + 2
    while remain > 0:
        size = min(remain + 48, sizes[-1])
        out.append(clsid(size))
        remain -= size - 48
    return out


def check_consistent(cache: Cache, exact: bool = True) -> None:
    """curr_items, bytes and the slab figures agree with the items actually held; with
    `exact`, each class's used chunks are those memcached would take for them (no chained
    item's last chunk fell back to the largest class)."""
    st = cache.stats()
    keys = list(cache.keys())
    assert st["curr_items"] == len(keys)
    classes, totals = cache.slabs_stats()
    # within -m, but for a first page per class (memcached's do_slabs_newslab)
    assert totals["total_malloced"] <= cache.memory_limit + len(classes) * MB
    assert sum(row["total_pages"] for _, row in classes) * MB <= totals["total_malloced"]
    want: dict[int, int] = {}
    for key in keys:
        hit = cache.get(key)
        if hit is not None:  # (a flushed or expired one is dropped by the get)
            assert hit[0] == value_for(key, len(hit[0]))
            for cid in memcached_chunks(cache, len(key), len(hit[0]), hit[1]):
                want[cid] = want.get(cid, 0) + 1
    if exact:
        used = {cid: row["used_chunks"] for cid, row in cache.slabs_stats()[0]}
        assert {cid: n for cid, n in used.items() if n} == want


# ---- the memory bound ----


def test_churn_of_ten_times_the_limit_stays_within_it(clock: FakeClock) -> None:
    """Write 10x -m of distinct items of mixed sizes: pages never exceed -m, the counters
    stay exact, and the process's Python allocations grow by no more than the pages plus the
    item table (tracemalloc sees every bytearray page and every index array)."""
    limit = 8 * MB  # 8 pages for 5 sizes (fewer pages than sizes: see the next test)
    cache = Cache(memory_limit=limit, clock=clock)
    rnd = random.Random(7)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        written = n = 0
        while written < 10 * limit:
            key = b"churn:%d" % n
            size = rnd.choice((10, 100, 700, 3000, 20_000))
            assert cache.store(SET, key, value_for(key, size)) is StoreResult.STORED
            written += size
            n += 1
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    st = cache.stats()
    assert st["evictions"] > 0
    assert st["bytes"] <= limit
    _, totals = cache.slabs_stats()
    assert totals["total_malloced"] <= limit
    # pages (4 MB) + item tables (8 bytes a slot) + small change; a dict of bytes would be
    # some 130 bytes for each of the ~20,000 items held
    slots = st["hash_bytes"]
    assert grown < limit + slots + 512 * KB, (grown, slots)
    check_consistent(cache)


def test_more_sizes_than_pages_still_stores(clock: FakeClock) -> None:
    """Two pages, five sizes: each class gets its first page past -m, as from memcached
    (``memcached -m 2``, the same five sets: five classes of one page, total_malloced
    5242880); no page moves, and the automover has none to give back (no class has two)."""
    cache = Cache(memory_limit=2 * MB, clock=clock)
    for rnd in range(3):
        for size in (10, 200, 2000, 20_000, 100_000):
            key = b"%d:%d" % (rnd, size)
            assert cache.store(SET, key, value_for(key, size)) is StoreResult.STORED
            assert cache.get(key) is not None
    assert sorted(class_pages(cache).values()) == [1] * 5
    assert cache.slabs_stats()[1]["total_malloced"] == 5 * MB
    assert cache.automove_tick() is False
    st = cache.stats()
    assert st["slabs_moved"] == 0 and st["curr_items"] == 15
    check_consistent(cache)


def test_lowering_the_limit_gives_pages_back(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock)
    for i in range(80_000):
        cache.store(SET, b"k%d" % i, b"x" * 50)
    assert cache.slabs_stats()[1]["total_malloced"] == 8 * MB
    assert cache.set_memory_limit(4 * MB)
    assert cache.stats()["limit_maxbytes"] == 4 * MB
    moves = 0
    while cache.slabs_stats()[1]["total_malloced"] > 4 * MB:
        assert cache.automove_tick()
        moves += 1
        assert moves <= 4
    assert cache.stats()["slab_reassign_evictions_nomem"] > 0
    for i in range(80_000):  # keeps working within the new limit
        cache.store(SET, b"n%d" % i, b"y" * 50)
    assert cache.slabs_stats()[1]["total_malloced"] == 4 * MB


# ---- eviction ----


def test_hot_keys_read_during_a_cold_scan_survive_it(clock: FakeClock) -> None:
    def scan(read_hot: bool) -> int:
        cache = Cache(memory_limit=4 * MB, clock=clock)
        hot = [b"hot:%d" % i for i in range(200)]
        for key in hot:
            cache.store(SET, key, value_for(key, 500))
        for i in range(30_000):  # ~5x the cache in items of the same class
            if read_hot and i % 500 == 0:
                for key in hot:
                    cache.get(key)
            cache.store(SET, b"cold:%d" % i, value_for(b"cold", 500))
        assert cache.stats()["evictions"] > 20_000
        return sum(cache.get(key) is not None for key in hot)

    assert scan(read_hot=True) == 200
    assert scan(read_hot=False) == 0  # the same scan evicts them when nobody reads them


def test_a_new_item_is_not_the_next_victim(clock: FakeClock) -> None:
    """An item stored in a hole left by a delete may sit right ahead of the clock hand: it
    still survives the next evictions."""
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=1)
    i = 0
    while cache.stats()["evictions"] == 0:
        cache.store(SET, b"fill:%d" % i, b"x" * 900)
        i += 1
    cache.delete(b"fill:%d" % (i // 2))
    cache.store(SET, b"new", b"x" * 900)
    for j in range(50):
        cache.store(SET, b"more:%d" % j, b"x" * 900)
    assert cache.get(b"new") is not None


def test_disabled_evictions_refuse_instead(clock: FakeClock) -> None:
    cache = Cache(memory_limit=2 * MB, clock=clock, evictions=False)
    stored = []
    for i in range(1000):
        key = b"k%d" % i
        result = cache.store(SET, key, value_for(key, 10_000))
        if result is StoreResult.NO_MEMORY:
            break
        assert result is StoreResult.STORED
        stored.append(key)
    else:
        pytest.fail("a 2 MB -M cache took 10 MB")
    st = cache.stats()
    assert st["evictions"] == 0 and st["curr_items"] == len(stored)
    assert all(cache.get(k) is not None for k in stored)
    items = dict(cache.items_stats())
    assert sum(row["outofmemory"] for row in items.values()) == 1
    # a delete frees a chunk the next store can use
    assert cache.delete(stored[0])
    assert cache.store(SET, b"again", value_for(b"again", 10_000)) is StoreResult.STORED
    # expired items are reclaimed (memory reused), never live ones
    assert cache.store(SET, stored[1], b"x" * 10_000) is StoreResult.NO_MEMORY  # full...
    assert cache.get(stored[1]) is None  # ...and a failed set drops the old value
    assert cache.store(SET, b"ttl", value_for(b"ttl", 10_000), exptime=5) is StoreResult.STORED
    clock.advance(6)
    assert cache.store(SET, b"late", value_for(b"late", 10_000)) is StoreResult.STORED
    assert cache.stats()["reclaimed"] == 1 and cache.stats()["evictions"] == 0


def test_a_class_without_pages_gets_one_past_the_limit(clock: FakeClock) -> None:
    """Memory full of class 1: a new size still gets its first page (memcached: ``-m 4``,
    43,688 items of class 1, then a 50 KB set: STORED, total_malloced 5242880, with or
    without -M). It keeps it: the automover gives pages back only when the limit went down
    past that excess."""
    cache = Cache(memory_limit=4 * MB, clock=clock)
    for i in range(60_000):
        key = b"s%d" % i
        cache.store(SET, key, value_for(key, 30))  # 95 bytes: class 1
    assert class_pages(cache) == {1: 4}
    assert cache.store(SET, b"big", value_for(b"big", 50_000)) is StoreResult.STORED
    assert cache.get(b"big")[0] == value_for(b"big", 50_000)  # type: ignore[index]
    big_class = cache.class_of(50_000 + 61)
    assert class_pages(cache) == {1: 4, big_class: 1}
    assert cache.slabs_stats()[1]["total_malloced"] == 5 * MB
    assert cache.automove_tick() is False
    assert cache.stats()["slabs_moved"] == 0
    check_consistent(cache)
    # cache_memlimit 3: pages go back until the pages are within it but for that first page
    assert cache.set_memory_limit(3 * MB)
    while cache.automove_tick():
        pass
    assert class_pages(cache) == {1: 3, big_class: 1}
    assert cache.slabs_stats()[1]["total_malloced"] == 4 * MB
    assert cache.get(b"big") is not None
    # raised past the pages, the excess is forgotten: another new size is within the limit
    assert cache.set_memory_limit(8 * MB)
    assert cache.store(SET, b"mid", value_for(b"mid", 5_000)) is StoreResult.STORED
    assert cache.slabs_stats()[1]["total_malloced"] == 5 * MB
    # with -M too (only an empty page may move, so the excess stays)
    strict = Cache(memory_limit=4 * MB, clock=clock, evictions=False)
    n = 0
    while strict.store(SET, b"s%d" % n, b"x" * 30) is StoreResult.STORED:
        n += 1
    assert n == 43_688 and class_pages(strict) == {1: 4}
    assert strict.store(SET, b"big", b"y" * 50_000) is StoreResult.STORED
    assert strict.automove_tick() is False
    assert strict.slabs_stats()[1]["total_malloced"] == 5 * MB
    assert strict.stats()["slabs_moved"] == 0


# ---- chained items ----


@pytest.mark.parametrize("chunk_max", [512 * KB, 16 * KB])
def test_items_spanning_chunks_round_trip_byte_exact(clock: FakeClock, chunk_max: int) -> None:
    cache = Cache(memory_limit=32 * MB, item_size_max=4 * MB, clock=clock, slab_chunk_max=chunk_max)
    rnd = random.Random(3)
    key = b"chained"
    rest = chunk_max - HEADER  # a value chunk's bytes (the head holds none)
    over = chunk_max - 48 - len(key) - 1 - 4 - 2 - 8 + 1  # the first chained size
    # around each chunk's end: memcached's last chunk may hold one or two bytes of the CRLF
    # alone (mcached's then holds no value byte)
    sizes = [over - 1, over, *(k * rest + d for k in (1, 2) for d in (-3, -2, -1, 0, 1))]
    sizes += [MB, 4 * MB - 200]
    for size in sizes:
        value = rnd.randbytes(size)
        assert cache.store(SET, key, value, flags=7) is StoreResult.STORED, size
        hit = cache.get(key)
        assert hit is not None and hit[0] == value and hit[1] == 7, size
        assert cache.get_and_touch(key, 100) == hit
        used = {cid: row["used_chunks"] for cid, row in cache.slabs_stats()[0]}
        want = memcached_chunks(cache, len(key), size, 7)
        assert {cid: n for cid, n in used.items() if n} == {c: want.count(c) for c in want}
    assert cache.store(APPEND, key, b"x" * 200) is StoreResult.NOT_STORED  # over -I
    value = rnd.randbytes(MB)
    assert cache.store(SET, key, value) is StoreResult.STORED
    tail = rnd.randbytes(3000)
    assert cache.store(APPEND, key, tail) is StoreResult.STORED
    assert cache.store(PREPEND, key, b"<") is StoreResult.STORED
    assert cache.get(key)[0] == b"<" + value + tail  # type: ignore[index]
    assert cache.delete(key)
    assert sum(row["used_chunks"] for _, row in cache.slabs_stats()[0]) == 0
    assert cache.stats()["bytes"] == 0


def test_chained_items_are_evicted_whole(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, item_size_max=2 * MB, clock=clock)
    for i in range(30):
        key = b"big:%d" % i
        assert cache.store(SET, key, value_for(key, 1_500_000)) is StoreResult.STORED
    st = cache.stats()
    assert st["evictions"] > 0
    check_consistent(cache)  # 1.5 MB: a header and three 512 KB chunks each


# ---- expiry and the crawler ----


def test_the_crawler_reclaims_expired_items_without_reads(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(3000):
        cache.store(SET, b"ttl:%d" % i, b"x" * 100, exptime=10)
        cache.store(SET, b"keep:%d" % i, b"x" * 100)
    clock.advance(5)
    assert cache.crawl() == 0
    clock.advance(5)
    used_before = sum(row["used_chunks"] for _, row in cache.slabs_stats()[0])
    assert cache.crawl() == 3000
    st = cache.stats()
    assert st["curr_items"] == 3000 and st["crawler_reclaimed"] == 3000
    assert st["expired_unfetched"] == 3000 and st["get_expired"] == 0  # nothing was read
    assert st["crawler_items_checked"] == 6000 + 6000
    used_after = sum(row["used_chunks"] for _, row in cache.slabs_stats()[0])
    assert used_before - used_after == 3000  # the chunks are free for reuse
    assert cache.crawl() == 0


def test_the_crawler_skips_classes_without_expiring_items(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(1000):
        cache.store(SET, b"keep:%d" % i, b"x" * 100)
    cache.crawl()
    assert cache.stats()["crawler_items_checked"] == 0
    cache.flush_all()  # a flush makes every class worth one sweep
    assert cache.crawl() == 1000
    assert cache.stats()["curr_items"] == 0
    assert cache.crawl(classes={1}) == 0  # a named class is always swept


def test_flushed_items_swept_count_as_the_lru_maintainers_reclaims(clock: FakeClock) -> None:
    """memcached's LRU maintainer frees flushed items at its tails before its crawler
    meets them: reclaimed, and expired_unfetched for those never read (lru_pull_tail).
    Expired ones the crawler finds stay its own. Regression: flushed ones counted as
    crawler_reclaimed, where memcached shows reclaimed."""
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(100):
        cache.store(SET, b"k%d" % i, b"x" * 100)
    for i in range(25):
        assert cache.get(b"k%d" % i) is not None
    cache.store(SET, b"ttl", b"x", exptime=5)
    clock.advance(6)
    assert cache.crawl() == 1
    st = cache.stats()
    assert (st["crawler_reclaimed"], st["reclaimed"], st["expired_unfetched"]) == (1, 0, 1)
    cache.flush_all()
    assert cache.crawl() == 100
    st = cache.stats()
    assert (st["crawler_reclaimed"], st["reclaimed"], st["expired_unfetched"]) == (1, 100, 76)


def test_a_delayed_flush_is_swept_once_due(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(100):
        cache.store(SET, b"k%d" % i, b"x")
    cache.flush_all(10)
    assert cache.crawl() == 0
    clock.advance(10)
    assert cache.crawl() == 100
    cache.store(SET, b"after", b"x")
    assert cache.crawl() == 0 and cache.get(b"after") is not None


def test_lazy_expiry_counts_like_memcached(clock: FakeClock) -> None:
    """do_item_get counts get_expired/get_flushed for any lookup (get, delete, touch...)."""
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for key in (b"a", b"b", b"c"):
        cache.store(SET, key, b"1", exptime=1)
    clock.advance(2)
    assert cache.get(b"a") is None
    assert not cache.delete(b"b")
    assert not cache.touch(b"c", 10)
    st = cache.stats()
    assert st["get_expired"] == 3 and st["curr_items"] == 0 and st["reclaimed"] == 0
    cache.store(SET, b"f", b"1")
    cache.flush_all()
    assert cache.incr(b"f", 1)[1] == 0
    assert cache.stats()["get_flushed"] == 1


def test_the_clock_hand_reclaims_expired_before_evicting(clock: FakeClock) -> None:
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=1)
    i = 0

    def full() -> bool:
        classes, totals = cache.slabs_stats()
        return totals["total_malloced"] == 2 * MB and classes[0][1]["free_chunks"] == 0

    while not full():
        cache.store(SET, b"t%d" % i, b"x" * 800, exptime=5)
        i += 1
    assert cache.stats()["evictions"] == 0
    clock.advance(6)
    for j in range(500):
        cache.store(SET, b"n%d" % j, b"x" * 800)
    st = cache.stats()
    assert st["reclaimed"] == 500 and st["expired_unfetched"] == 500
    assert st["evictions"] == 0


# ---- page moves ----


def fill_small_then_shift(cache: Cache, tick: bool, clock: FakeClock) -> int:
    """Fill the cache with 100-byte items nobody reads, then, a minute on, write 10 KB ones
    in batches a second apart (an automover tick after each, its window 3 ticks): how many
    10 KB items are held at the end."""
    for i in range(80_000):
        key = b"small:%d" % i
        cache.store(SET, key, value_for(key, 100))
    clock.advance(60)
    for batch in range(12):
        for i in range(200):
            key = b"large:%d:%d" % (batch, i)
            assert cache.store(SET, key, value_for(key, 10_000)) is StoreResult.STORED
        clock.advance(1)
        if tick:
            cache.automove_tick(window=3)
    return sum(1 for k in cache.keys() if k.startswith(b"large:"))


def test_automove_moves_pages_after_a_size_shift(clock: FakeClock) -> None:
    still = Cache(memory_limit=8 * MB, clock=clock, slab_automove=0)
    held_without = fill_small_then_shift(still, tick=True, clock=clock)
    assert still.stats()["slabs_moved"] == 0  # the 10 KB class's first page is past -m
    moving = Cache(memory_limit=8 * MB, clock=clock, slab_automove=1)
    held_with = fill_small_then_shift(moving, tick=True, clock=clock)
    large_class = moving.class_of(10_000 + 61)
    pages = class_pages(moving)
    assert moving.stats()["slabs_moved"] >= 2
    assert pages[large_class] >= 3 and class_pages(still)[large_class] == 1
    assert held_with >= 2 * held_without
    check_consistent(moving)


def test_automove_2_moves_on_any_eviction(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_automove=2)
    fill_small_then_shift(cache, tick=True, clock=clock)
    assert cache.stats()["slabs_moved"] >= 6


def test_bug_automove_2_asked_for_a_page_once_a_tick_not_at_each_eviction(
    clock: FakeClock,
) -> None:
    """memcached's slab_automove=2 asks for a page from any class with two
    (``slabs_reassign(-1, class)``) at each eviction, and its rebalancer makes the move at
    once; mcached's moved one page a tick, so a class whose items outgrew its pages
    (chained items, ~92 chunks each in a class of one page) failed stores for seconds. The
    hand now asks (`ask_move_for`): the first eviction leaves a move waiting, for a page
    of a class the mover picks then, and no tick is needed."""
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_automove=2)
    for i in range(80_000):
        key = b"small:%d" % i
        cache.store(SET, key, value_for(key, 100))
    # the small items' own evictions asked for a page for their class, from a class with
    # two: there is none, so the mover drops the ask
    assert cache.stats()["evictions"] and cache.move_waiting
    assert not cache.move_asked() and not cache.move_waiting
    large_class = cache.class_of(10_000 + 61)
    evicted = cache.stats()["evictions"]
    i = 0
    while cache.stats()["evictions"] == evicted or not cache.move_waiting:
        key = b"large:%d" % i
        assert cache.store(SET, key, value_for(key, 10_000)) is StoreResult.STORED
        i += 1
        assert i < 200, "no eviction asked for a move"
    assert class_pages(cache)[large_class] == 1
    assert cache.reassign(1, large_class) is ReassignResult.RUNNING  # one move at a time
    assert cache.move_asked()
    assert not cache.move_waiting
    assert class_pages(cache)[large_class] == 2 and cache.stats()["slabs_moved"] == 1
    check_consistent(cache)


def test_automove_gives_back_free_pages(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(80_000):
        key = b"k%d" % i
        cache.store(SET, key, value_for(key, 100))
    for i in range(0, 80_000):
        if i % 10:
            cache.delete(b"k%d" % i)
    pages = sum(class_pages(cache).values())
    assert cache.automove_tick()  # several pages in one tick, as memcached's automover
    st = cache.stats()
    assert st["slab_global_page_pool"] == 12 and st["slab_reassign_rescues"] > 0
    assert sum(class_pages(cache).values()) == pages - 12
    classes, _ = cache.slabs_stats()
    assert all(row["free_chunks"] < 2.5 * row["chunks_per_page"] for _, row in classes)
    assert cache.automove_tick() is False  # what is left is not worth a page
    assert st["slab_reassign_evictions_nomem"] == 0  # they fit elsewhere: all kept
    assert st["curr_items"] == 8000
    check_consistent(cache)


def test_reassign_replies(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock)
    for i in range(30_000):
        key = b"k%d" % i
        cache.store(SET, key, value_for(key, 30))  # 3 pages of class 1
    assert class_pages(cache) == {1: 3}
    assert move_page(cache, 1, 1) is ReassignResult.SAME
    assert move_page(cache, 1, 99) is ReassignResult.BADCLASS
    assert move_page(cache, -2, 5) is ReassignResult.BADCLASS
    assert move_page(cache, 5, 1) is ReassignResult.NOSPARE
    assert move_page(cache, 0, 1) is ReassignResult.NOSPARE  # the pool holds no spare page
    assert move_page(cache, 1, 5) is ReassignResult.OK
    assert move_page(cache, -1, 7) is ReassignResult.OK  # any class with two pages: class 1
    assert class_pages(cache) == {1: 1, 5: 1, 7: 1}
    assert move_page(cache, -1, 9) is ReassignResult.BADCLASS  # none has two pages now
    assert move_page(cache, 5, 0) is ReassignResult.NOSPARE
    st = cache.stats()
    assert st["slabs_moved"] == 2
    assert st["curr_items"] + st["slab_reassign_evictions_nomem"] == 30_000
    cache._items.move_lock.acquire()  # a move in progress
    try:
        assert move_page(cache, 1, 5) is ReassignResult.RUNNING
    finally:
        cache._items.move_lock.release()
    check_consistent(cache)


def test_reassign_asks_the_mover_and_answers_at_once(clock: FakeClock) -> None:
    """memcached's ``slabs reassign`` hands the move to its rebalancer thread and answers OK
    at once; until the move is done another is RUNNING (BUSY), whatever it asks. A move
    the source class can no longer make when the mover comes to it is dropped."""
    cache = Cache(memory_limit=8 * MB, clock=clock)
    for i in range(30_000):
        key = b"k%d" % i
        cache.store(SET, key, value_for(key, 30))  # 3 pages of class 1
    assert cache.reassign(1, 5) is ReassignResult.OK
    assert class_pages(cache) == {1: 3}  # not moved yet: asked for
    assert cache.stats()["slab_reassign_running"] == 0
    assert cache.reassign(1, 7) is ReassignResult.RUNNING
    assert cache.reassign(1, 1) is ReassignResult.RUNNING  # before any other check
    assert cache.move_asked() is True
    assert not cache.move_waiting and cache.move_asked() is False
    assert class_pages(cache) == {1: 2, 5: 1}
    assert cache.stats()["slabs_moved"] == 1
    assert move_page(cache, 1, 9) is ReassignResult.OK
    assert cache.reassign(1, 7) is ReassignResult.NOSPARE  # one page left
    # the same move, asked for while class 1 still had two pages: dropped
    cache._items.w[items_module.G_MOVE_ASKED] = (1 + 1) << 8 | 7
    assert cache.move_asked() is False
    assert not cache.move_waiting and class_pages(cache) == {1: 1, 5: 1, 9: 1}
    check_consistent(cache)


def test_reassign_to_the_pool_and_back(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock)
    for i in range(40_000):
        cache.store(SET, b"k%d" % i, b"x" * 30)
    assert move_page(cache, 1, 0) is ReassignResult.OK
    assert move_page(cache, 1, 0) is ReassignResult.OK
    assert cache.stats()["slab_global_page_pool"] == 2
    assert move_page(cache, 0, 3) is ReassignResult.OK
    assert class_pages(cache)[3] == 1 and cache.stats()["slab_global_page_pool"] == 1


# ---- stats ----


def test_stats_for_one_item_are_memcacheds(clock: FakeClock) -> None:
    """memcached 1.6.18 after ``set a 0 0 1`` / ``get a``: the figures of stats slabs/items."""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    cache.store(SET, b"a", b"x")
    cache.get(b"a")
    classes, totals = cache.slabs_stats()
    assert classes == [
        (
            1,
            {
                "chunk_size": 96,
                "chunks_per_page": 10922,
                "total_pages": 1,
                "total_chunks": 10922,
                "used_chunks": 1,
                "free_chunks": 10921,
                "free_chunks_end": 0,
                "get_hits": 1,
                "cmd_set": 1,
                "delete_hits": 0,
                "incr_hits": 0,
                "decr_hits": 0,
                "cas_hits": 0,
                "cas_badval": 0,
                "touch_hits": 0,
            },
        )
    ]
    assert totals == {"active_slabs": 1, "total_malloced": MB}
    items = dict(cache.items_stats())
    assert list(items) == [1]
    assert items[1]["number"] == 1 and items[1]["mem_requested"] == 61
    assert items[1]["hits_to_cold"] == 1
    st = cache.stats()
    assert st["bytes"] == 61 and st["curr_items"] == 1 and st["total_items"] == 1
    cache.reset_stats()
    st = cache.stats()
    assert st["total_items"] == 0 and st["curr_items"] == 1 and st["bytes"] == 61


def test_reset_zeroes_malloc_fails(clock: FakeClock) -> None:
    """memcached's stats_reset zeroes its struct stats, malloc_fails in it. (A page the
    address space had no room for: set by hand, as 1 GB of pages would be needed.)"""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    cache._items.w[G_MALLOC_FAILS] = 3
    assert cache.stats()["malloc_fails"] == 3
    cache.reset_stats()
    assert cache.stats()["malloc_fails"] == 0


def test_per_class_command_counters(clock: FakeClock) -> None:
    """The sequence below, on memcached 1.6.18, gives these ``stats slabs`` figures: a set
    counts in cmd_set whatever its outcome (EXISTS, NOT_STORED too)."""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    cache.store(SET, b"cn", b"5")
    cache.incr(b"cn", 1)
    cache.decr(b"cn", 1)
    cache.touch(b"cn", 0)
    cache.get(b"cn")
    unique = cache.get(b"cn")[2]  # type: ignore[index]
    assert cache.store(StoreMode.CAS, b"cn", b"7", cas=unique + 1) is StoreResult.EXISTS
    assert cache.store(StoreMode.CAS, b"cn", b"7", cas=unique) is StoreResult.STORED
    assert cache.store(StoreMode.ADD, b"cn", b"1") is StoreResult.NOT_STORED
    assert cache.store(APPEND, b"nope", b"1") is StoreResult.NOT_STORED
    cache.delete(b"cn")
    row = dict(cache.slabs_stats()[0])[1]
    assert {
        k: row[k]
        for k in (
            "get_hits",
            "cmd_set",
            "delete_hits",
            "incr_hits",
            "decr_hits",
            "cas_hits",
            "cas_badval",
            "touch_hits",
        )
    } == {
        "get_hits": 2,
        "cmd_set": 5,
        "delete_hits": 1,
        "incr_hits": 1,
        "decr_hits": 1,
        "cas_hits": 1,
        "cas_badval": 1,
        "touch_hits": 1,
    }
    assert row["used_chunks"] == 0


def test_sizes_and_metadump(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock)
    cache.store(SET, b"a", b"x")  # 61 bytes
    cache.store(SET, b"b", b"x" * 40, flags=1, exptime=100)  # 104
    cache.store(SET, b"c", b"x", exptime=-1)  # already expired: not listed
    assert cache.size_histogram() == {64: 1, 128: 1}
    rows = sorted(cache.metadump())
    assert [(r[0], r[5], r[6]) for r in rows] == [(b"a", 61, 1), (b"b", 104, 2)]
    assert rows[1][1] == clock.now() + 100 and rows[0][1] == 0
    assert sorted(cache.keys()) == [b"a", b"b", b"c"]  # keys() lists what the table holds
    assert list(cache.metadump(classes={2})) == [rows[1]]


def test_metadump_batches_are_bounded_and_list_every_item_once(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock, partitions=4)
    for i in range(1000):
        cache.store(SET, b"k%04d" % i, b"x" * (200 if i % 100 == 0 else 1))
    everything = sorted(cache.metadump())
    assert len(everything) == 1000
    batches = list(cache.metadump_batches(rows=10, slots=64))
    assert all(len(b) <= 10 for b in batches)
    assert sorted(r for b in batches for r in b) == everything
    # a class with few items: most steps find nothing, each after at most `slots` slots
    big = everything[0][6]
    assert big != everything[1][6]
    batches = list(cache.metadump_batches(classes={big}, rows=10, slots=64))
    assert [] in batches
    assert sum(map(len, batches)) == 10
    capacity = sum(p.mask + 1 for p in cache._parts)
    assert len(batches) >= capacity // 64


@pytest.mark.parametrize("rebuilds", [1, 2])
def test_metadump_starts_a_partition_over_once_when_its_table_is_rebuilt(
    clock: FakeClock, rebuilds: int
) -> None:
    """Items move when a partition's table is rebuilt mid-walk: the walk starts that
    partition over once, passing over what it listed (nothing that lived throughout is
    missed or listed twice: regression, a hunt saw 5,921 of 100,000 listed twice), and goes
    on from its place after a second rebuild (then an item may be missed or listed again,
    as memcached's crawler may miss one that moves ahead of it)."""
    cache = Cache(memory_limit=64 * MB, clock=clock, partitions=1)
    old = [b"old%d" % i for i in range(30)]
    for key in old:
        cache.store(SET, key, b"x")
    part = cache._parts[0]
    walk = cache.metadump_batches(rows=5, slots=1 << 20)
    seen = [r[0] for r in next(walk)]
    n = 0
    for _ in range(rebuilds):
        gen = part.gen
        while part.gen == gen:  # new items until the table is rebuilt
            cache.store(SET, b"new%d" % n, b"x")
            n += 1
        seen += [r[0] for r in next(walk)]
    for batch in walk:
        seen += [r[0] for r in batch]
    if rebuilds == 1:
        assert set(old) <= set(seen)  # every item that lived throughout
        assert len(seen) == len(set(seen))  # each once
    assert max(seen.count(k) for k in seen) <= rebuilds  # listed again after a second


def test_cachedump_keeps_the_newest_rows_the_reply_holds(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock, partitions=4)
    for i in range(50):
        cache.store(SET, b"k%d" % i, b"v")  # flushed: never listed
    cache.flush_all()
    rng = random.Random(7)
    keys = [b"k%d" % i + b"x" * rng.randrange(20) for i in range(400)]
    for i, key in enumerate(keys):
        cache.store(SET, key, b"v", exptime=rng.choice([0, 99]))
        if i % 7 == 0:
            clock.advance(1)
    cache.store(SET, b"other", b"v" * 500)  # another class: never listed
    cache.store(SET, b"gone", b"v", exptime=1)
    clock.advance(2)  # `gone` expired: never listed
    for key in keys[::3]:
        cache.get(key)  # marks fetched
        cache.get(key)  # bumps: its time is now
    clsid = next(r[6] for r in cache.metadump() if r[0] == keys[0])
    everything = cache.cachedump(clsid)
    assert len(everything) == 400
    times = {r[0]: (r[2], r[3]) for r in cache.metadump()}
    assert [times[k] for k, _, _ in everything] == sorted(times[k] for k, _, _ in everything)[::-1]

    def cost(nkey: int, nbytes: int, exptime: int) -> int:
        return nkey + nbytes + (3 if exptime else 1)

    for limit, room in ((0, 0), (1, 0), (50, 0), (0, 1), (0, 700), (30, 700), (400, 10**6)):
        want = []
        spent = 0
        for key, nbytes, exptime in everything:  # the reply's own rule: newest first
            spent += cost(len(key), nbytes, exptime)
            if (limit and len(want) == limit) or (room and spent > room):
                break
            want.append((key, nbytes, exptime))
        assert cache.cachedump(clsid, limit, room, cost) == want, (limit, room)


def test_partition_counters_are_per_class(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock, partitions=4)
    for i in range(100):
        cache.store(SET, b"k%d" % i, b"x" * (i * 10))
    total = sum(p.cst[c * NSTAT] for p in cache._parts for c in range(1, 40))
    assert total == 100 == cache.stats()["curr_items"]


# ---- concurrency ----


def test_threads_on_overlapping_keys_with_evictions_lose_nothing(clock: FakeClock) -> None:
    """Eight threads store, read and delete over the same keys in a cache small enough to
    evict all the time, and incr one counter: no exception, no value served under the wrong
    key, and no incr lost. (The counter is alone in slab class 1 -- every other value is
    larger -- and every class gets its page from the pool, so it is never evicted.)"""
    cache = Cache(memory_limit=16 * MB, clock=clock, partitions=4)
    cache.store(SET, b"counter", b"0")
    assert cache.class_of(61 + len(b"counter") + 5) == 1
    errors: list[BaseException] = []
    incrs = [0] * 8

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(4000):
                key = b"k%d" % rnd.randrange(400)
                op = rnd.random()
                if op < 0.4:
                    cache.store(SET, key, value_for(key, rnd.choice((50, 900, 9000, 200_000))))
                elif op < 0.8:
                    hit = cache.get(key)
                    if hit is not None:
                        assert hit[0] == value_for(key, len(hit[0]))
                elif op < 0.9:
                    cache.delete(key)
                else:
                    assert cache.incr(b"counter", 1)[0] is DeltaResult.OK
                    incrs[seed] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.stats()["evictions"] > 0
    assert cache.stats()["slabs_moved"] == 0
    hit = cache.get(b"counter")
    assert hit is not None and int(hit[0]) == sum(incrs) > 0
    cache.delete(b"counter")
    check_consistent(cache)


# ---- paths around the common ones ----


def test_overwrites_keep_the_counters_exact(clock: FakeClock) -> None:
    """A set over an item of the same class rewrites it in place: bytes, and the count of
    items with an exptime (what lets the crawler skip a class) follow the new item."""
    cache = Cache(memory_limit=16 * MB, clock=clock)
    cache.store(SET, b"k", b"x" * 20, flags=3, exptime=100)
    cache.store(SET, b"k", b"y" * 21)  # same class, no flags, no exptime
    assert cache.stats()["bytes"] == 61 + 21 - 1 + len(b"k") - 1
    assert cache.crawl() == 0 and cache.stats()["crawler_items_checked"] == 0
    cache.store(SET, b"k", b"z" * 20, exptime=10)
    clock.advance(10)
    assert cache.crawl() == 1 and cache.stats()["curr_items"] == 0
    # a set over an expired item: its memory reclaimed for the new one (memcached's
    # issue_163: its allocation pulls the expired item first), not counted as a get
    cache.store(SET, b"e", b"1", exptime=1)
    clock.advance(1)
    assert cache.store(SET, b"e", b"2") is StoreResult.STORED
    st = cache.stats()
    assert (st["get_expired"], st["reclaimed"], st["curr_items"]) == (0, 1, 1)
    assert cache.get(b"e") == (b"2", 0, cache.get(b"e")[2])  # type: ignore[index]


def test_too_large_and_unlink(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, item_size_max=64 * KB, clock=clock)
    for mode in (SET, StoreMode.ADD):
        assert cache.store(mode, b"k", b"x" * (64 * KB)) is StoreResult.TOO_LARGE
    assert cache.store(SET, b"k", b"x" * (64 * KB - 62)) is StoreResult.STORED  # 64 KB exactly
    cache.unlink(b"k")
    cache.unlink(b"k")
    st = cache.stats()
    assert cache.get(b"k") is None and st["curr_items"] == 0 and st["bytes"] == 0


def test_incr_that_outgrows_its_chunk_or_spans_chunks(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, item_size_max=2 * MB, clock=clock)
    cache.store(SET, b"n", b"99", flags=4, exptime=100)
    cache.get(b"n")
    assert cache.incr(b"n", 1)[1] == 100  # a new item, 3 bytes: flags, exptime, fetched kept
    hit = cache.get(b"n")
    assert hit is not None and hit[:2] == (b"100", 4)
    [(_, exptime, _, _, fetched, _, _)] = list(cache.metadump())
    assert fetched and exptime == clock.now() + 100
    # a value chained over two chunks is not a number, whatever it holds: memcached does not
    # read its chunked items as counters (do_add_delta)
    big = b"7" + b" " * 700_000
    cache.store(SET, b"big", big)
    assert cache.incr(b"big", 5) == (DeltaResult.NON_NUMERIC, 0)
    assert cache.get(b"big")[0] == big  # type: ignore[index]
    assert cache.stats()["curr_items"] == 2


def test_no_room_for_a_chained_item_leaks_no_chunk(clock: FakeClock) -> None:
    cache = Cache(memory_limit=4 * MB, item_size_max=2 * MB, clock=clock, evictions=False)
    n = 0
    while (result := cache.store(SET, b"c%d" % n, value_for(b"c%d" % n, 1_500_000))) is (
        StoreResult.STORED
    ):
        n += 1
    # a page of headers (a first page, past the limit) and four of two 512 KB chunks hold two
    # items of three chunks; the third one's header is had, then one of its chunks is not
    assert n == 2 and result is StoreResult.NO_MEMORY_READING
    assert cache.stats()["curr_items"] == n
    check_consistent(cache)


def test_moving_a_page_of_chained_items(clock: FakeClock) -> None:
    """The largest class's pages hold continuation chunks: moving one evicts (or keeps) the
    whole item each chunk belongs to, wherever its head is."""
    cache = Cache(memory_limit=8 * MB, item_size_max=2 * MB, clock=clock)
    for i in range(5):
        key = b"c%d" % i
        assert cache.store(SET, key, value_for(key, 1_500_000)) is StoreResult.STORED
    largest = len(cache.slab_sizes)
    # the headers' page; three 512 KB chunks an item (the last for 440 KB: no class between
    # 410 KB and 512 KB) in the rest
    assert memcached_chunks(cache, 2, 1_500_000, 0) == [2, largest, largest, largest]
    assert class_pages(cache) == {2: 1, largest: 7}
    assert move_page(cache, largest, 0) is ReassignResult.OK
    assert move_page(cache, largest, 3) is ReassignResult.OK
    st = cache.stats()
    assert st["slabs_moved"] == 2 and 2 <= st["curr_items"] < 5
    check_consistent(cache)


def test_a_page_move_rescues_live_items_whole(clock: FakeClock) -> None:
    """memcached's slab_rebalance_move: a live item of the page that moves is copied into a
    free chunk of its class, with its value, flags and CAS (slab_reassign_rescues)."""
    cache = Cache(memory_limit=8 * MB, clock=clock)
    keys = [b"k%d" % i for i in range(30_000)]  # three pages of class 1
    for i, key in enumerate(keys):
        cache.store(SET, key, value_for(key, 20), flags=i + 1)
    for key in keys[::2]:
        cache.delete(key)  # free chunks on every page
    before = {key: cache.get(key) for key in keys[1::2]}
    assert move_page(cache, 1, 5) is ReassignResult.OK
    assert class_pages(cache) == {1: 2, 5: 1}
    st = cache.stats()
    assert st["slab_reassign_rescues"] > 1000 and st["slab_reassign_evictions_nomem"] == 0
    assert st["slab_reassign_chunk_rescues"] == 0
    # memcached links each rescued copy as a new item (do_item_replace): total_items counts it
    assert st["total_items"] == 30_000 + st["slab_reassign_rescues"]
    assert {key: cache.get(key) for key in keys[1::2]} == before
    check_consistent(cache)


def test_a_page_move_rescues_chained_items_chunk_by_chunk(clock: FakeClock) -> None:
    """A chained item with chunks in the page that moves keeps them all: a value chunk is
    copied and its previous chunk points at the copy (slab_reassign_chunk_rescues), a head
    (in the small class of memcached's header items) is copied and the table and its value
    chunks point at it (slab_reassign_rescues)."""
    cache = Cache(memory_limit=16 * MB, clock=clock, slab_chunk_max=16 * KB)
    largest = len(cache.slab_sizes)
    keys = [b"c%d" % i for i in range(240)]  # 40 KB: a header, two 16 KB chunks, a 7 KB one
    for i, key in enumerate(keys):
        assert cache.store(SET, key, value_for(key, 40_000), flags=i + 1) is StoreResult.STORED
    hdr = memcached_chunks(cache, 3, 40_000, 1)[0]
    small = [b"s%d" % i for i in range(20_000)]  # items of the headers' class: three pages
    for key in small:
        cache.store(SET, key, value_for(key, 40))
    assert cache.class_of(48 + 7 + 40 + 2 + 8) == hdr and class_pages(cache)[hdr] == 3
    for key in keys[::2] + small[::2]:
        cache.delete(key)
    before = {key: cache.get(key) for key in keys[1::2]}
    pages = class_pages(cache)[largest]
    assert move_page(cache, largest, 0) is ReassignResult.OK
    assert class_pages(cache)[largest] == pages - 1
    st = cache.stats()
    assert st["slab_reassign_chunk_rescues"] > 0 and st["slab_reassign_evictions_nomem"] == 0
    assert move_page(cache, hdr, 0) is ReassignResult.OK
    st = cache.stats()
    assert st["slab_reassign_rescues"] > 0 and st["slab_reassign_evictions_nomem"] == 0
    assert st["curr_items"] == 120 + 10_000
    assert {key: cache.get(key) for key in keys[1::2]} == before
    check_consistent(cache)
    for key in small[1::2]:
        cache.delete(key)
    # and again, until the class has no free chunk left for them: then whole items go
    while move_page(cache, largest, 0) is ReassignResult.OK:
        pass
    st = cache.stats()
    assert st["slab_reassign_evictions_nomem"] > 0
    for key in cache.keys():
        assert cache.get(key) == before[key]
    check_consistent(cache)


def test_chunked_items_t_an_item_being_appended_survives_page_moves(clock: FakeClock) -> None:
    """chunked-items.t failed under load: an append got NOT_STORED because a page move had
    evicted the chained item it was appending to. Pages of its class move away between
    appends: the item (and every other one) is rescued, and each append finds it whole."""
    cache = Cache(memory_limit=16 * MB, clock=clock, slab_chunk_max=16 * KB)
    largest = len(cache.slab_sizes)
    fillers = [b"f%d" % i for i in range(150)]  # 40 KB: two 16 KB chunks each, five pages
    for key in fillers:
        cache.store(SET, key, value_for(key, 40_000))
    expected = b"seed" * 5000
    assert cache.store(SET, b"appender", expected) is StoreResult.STORED
    for key in fillers[1::2]:
        cache.delete(key)  # free chunks on every page: each move has items to rescue
    moved = 0
    for i in range(30):
        part = b"%d" % i + b"x" * 1000
        assert cache.store(APPEND, b"appender", part) is StoreResult.STORED
        expected += part
        assert cache.get(b"appender")[0] == expected  # type: ignore[index]
        if class_pages(cache)[largest] > 3 and move_page(cache, largest, 0) is ReassignResult.OK:
            moved += 1
    assert moved >= 2
    st = cache.stats()
    assert st["slab_reassign_evictions_nomem"] == 0 and st["slab_reassign_chunk_rescues"] > 0
    for key in fillers[::2]:
        assert cache.get(key)[0] == value_for(key, 40_000)  # type: ignore[index]


def test_a_page_move_drops_dead_items_without_counting_them(clock: FakeClock) -> None:
    """memcached's mover does not save an expired or flushed item: it is neither a rescue
    nor an eviction."""
    cache = Cache(memory_limit=8 * MB, clock=clock)
    for i in range(30_000):
        cache.store(SET, b"k%d" % i, b"x" * 30, exptime=10 if i % 2 else 0)
    clock.advance(11)
    for i in range(0, 30_000, 4):
        cache.delete(b"k%d" % i)  # free chunks: the live ones have somewhere to go
    assert move_page(cache, 1, 0) is ReassignResult.OK
    st = cache.stats()
    assert st["slab_reassign_evictions_nomem"] == 0
    assert 0 < st["slab_reassign_rescues"] < 30_000 // 4  # the live ones on the page only
    assert cache.get(b"k2") is not None and cache.get(b"k1") is None


def test_a_page_move_waits_for_a_pinned_item_then_gives_the_page_back(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pinned item (a reply sending its value from the page) is never moved or freed: the
    mover waits for it, and if it stays pinned the page goes back to its class, whole, and
    the move stays asked (a reassign meanwhile is RUNNING: memcached's BUSY) until the
    mover, trying again, finds the page free."""
    monkeypatch.setattr(items_module, "MOVE_PATIENCE", 2)
    cache = Cache(memory_limit=8 * MB, clock=clock)
    values = {b"k%d" % i: bytes([65 + i]) * 300_000 for i in range(4)}  # three to a page
    for key, value in values.items():
        cache.store(SET, key, value, flags=3)
    cid = cache.class_of(300_000 + 60)
    cache.delete(b"k0")  # a free chunk on the first page; k3 alone on the second
    hit = cache.get_ref(b"k3")
    assert hit is not None and len(hit) == 4
    # the pin came after the mover chose the page (its unlocked look missed it)
    monkeypatch.setattr(cache._items, "_pinned_in", lambda cls, pno: False)
    assert cache.reassign(cid, 0) is ReassignResult.OK
    assert not cache.move_asked() and cache.move_waiting  # busy: asked still
    assert cache.reassign(cid, 0) is ReassignResult.RUNNING
    assert class_pages(cache)[cid] == 2
    st = cache.stats()
    assert st["slabs_moved"] == 0 and st["slab_reassign_busy_items"] > 0
    assert st["slab_reassign_rescues"] == 0 and bytes(hit[0]) == values[b"k3"]
    # given back whole: its free chunks take items again, no new page
    assert cache.store(SET, b"k4", values[b"k0"]) is StoreResult.STORED
    assert cache.slabs_stats()[1]["total_malloced"] == 2 * MB
    cache.unpin(hit[3])
    cache.delete(b"k4")
    cas = cache.get(b"k3")[2]  # type: ignore[index]
    assert cache.move_asked() and not cache.move_waiting  # the same move, tried again
    assert class_pages(cache)[cid] == 1
    assert cache.stats()["slab_reassign_rescues"] == 1
    assert cache.get(b"k3") == (values[b"k3"], 3, cas)


def store_received(cache: Cache, key: bytes, value: bytes) -> StoreResult:
    """A set whose value is received into place (`Cache.reserve`), its chunks taken as its
    bytes come (`Cache.grow`), as a connection stores a large value still arriving."""
    res = cache.reserve(key, len(value), 0)
    if not isinstance(res, Reservation):
        return res
    pos = k = 0
    while pos < len(value):
        if k == len(res.views) and cache.grow(res) is None:
            break
        view = res.views[k]
        view[:] = value[pos : pos + len(view)]
        pos += len(view)
        k += 1
    return cache.commit(res, SET)


@pytest.mark.parametrize("how", ["whole", "received"])
def test_a_chained_item_wanting_more_chunks_than_memory_holds_fails_as_in_memcached(
    clock: FakeClock, how: str
) -> None:
    """memcached 1.6.18 (-m 8, cache_memlimit 9, -I 2m; 120,000 ten-byte items fill class
    1) stores 1.3 MB twice, its header in class 2, two 512 KB chunks in class 39 and the
    last 254 KB in class 36, each a first page; 1.9 MB then wants a third 512 KB chunk, and
    the largest class's one page holds two: it evicts the old item for the first two and
    fails at the third, "Out of memory during read". mcached moved a page from class 1 to
    the largest class for it (`steal_page`), and stored it in 2 x 512 KB + 512 KB + 512 KB
    (every chunk of the largest class): pages 1 (8) and 39 (2), where memcached's are 1 (9),
    2 (1), 36 (1) and 39 (1)."""
    cache = Cache(memory_limit=9 * MB, item_size_max=2 * MB, clock=clock, slab_automove=0)
    for i in range(120_000):
        key = b"w%d" % i
        cache.store(SET, key, value_for(key, 10))  # every page of class 1, and evictions
    assert cache.stats()["evictions"] > 0
    results = []
    store = (
        (lambda k, v: cache.store(SET, k, v)) if how == "whole" else partial(store_received, cache)
    )
    for size in (1_300_000, 1_300_000, 1_900_000):
        results.append(store(b"big", value_for(b"big", size)))
        if results[-1] is StoreResult.STORED:
            assert cache.get(b"big")[0] == value_for(b"big", size)  # type: ignore[index]
    assert results == [StoreResult.STORED, StoreResult.STORED, StoreResult.NO_MEMORY_READING]
    assert memcached_chunks(cache, 3, 1_300_000, 0) == [2, 39, 39, 36]
    assert class_pages(cache) == {1: 9, 2: 1, 36: 1, 39: 1}
    st = cache.stats()
    assert st["slabs_moved"] == 0 and cache.get(b"big") is None  # evicted for the third
    rows = dict(cache.items_stats())
    assert 39 not in rows and rows[1]["outofmemory"] == 0  # a chunk's failure is not counted
    check_consistent(cache)


def test_no_slab_reassign_means_no_page_moves(clock: FakeClock) -> None:
    """Without slab_reassign (-o no_modern) pages never move: a new size takes its first
    page past -m, keeps it, and evicts within it (binary.t's case)."""
    cache = Cache(memory_limit=2 * MB, clock=clock, slab_reassign=False)
    for i in range(30_000):
        key = b"s%d" % i
        cache.store(SET, key, value_for(key, 30))
    for i in range(40):
        key = b"big%d" % i
        assert cache.store(SET, key, value_for(key, 50_000)) is StoreResult.STORED
    assert cache.get(b"big39") is not None and cache.get(b"big0") is None
    assert cache.automove_tick() is False
    assert class_pages(cache) == {1: 2, cache.class_of(50_000 + 61): 1}
    assert cache.slabs_stats()[1]["total_malloced"] == 3 * MB
    assert cache.stats()["slabs_moved"] == 0
    check_consistent(cache)


def test_evictions_of_items_with_an_exptime_and_the_age_of_the_tail(clock: FakeClock) -> None:
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=1)
    for i in range(2220):  # two pages of 1,110 chunks
        cache.store(SET, b"k%d" % i, b"x" * 800, exptime=1000)
    assert cache.stats()["evictions"] == 0
    clock.advance(30)
    for i in range(10):
        cache.store(SET, b"n%d" % i, b"x" * 800)
    row = next(iter(dict(cache.items_stats()).values()))
    assert row["evicted"] == row["evicted_nonzero"] == 10
    assert row["evicted_time"] == 30  # the last one evicted was stored 30 s before
    assert row["age"] == 30  # and so were the next ones the hand will reach
    clock.advance(5)
    assert next(iter(dict(cache.items_stats()).values()))["age"] == 35


def test_automove_1_waits_for_its_window(clock: FakeClock) -> None:
    """memcached's automover moves nothing until its window (slab_automove_window) has
    filled: with a window of 3, the fourth tick is the first that may move."""
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_automove=1)
    for i in range(80_000):
        cache.store(SET, b"s%d" % i, b"x" * 30)  # class 1, 8 pages, nothing evicted
    assert class_pages(cache) == {1: 8} and cache.stats()["evictions"] == 0
    clock.advance(100)  # nobody reads them: old
    moved = []
    large = cache.class_of(10_000 + 59)
    for batch in range(4):
        for i in range(200):
            cache.store(SET, b"large:%d:%d" % (batch, i), b"y" * 10_000)
        if not batch:  # its first page, past -m (memcached's rule), then evictions in it
            assert class_pages(cache) == {1: 8, large: 1}
            assert cache.slabs_stats()[1]["total_malloced"] == 9 * MB
        clock.advance(1)
        moved.append(cache.automove_tick(window=3))
    assert moved == [False, False, False, True]
    assert class_pages(cache) == {1: 7, large: 2}
    cache.automove = 0
    assert cache.automove == 0
    for i in range(200):
        cache.store(SET, b"later:%d" % i, b"y" * 10_000)
    assert cache.automove_tick(window=3) is False


def test_bug_automove_1_took_pages_from_a_class_read_all_the_time(clock: FakeClock) -> None:
    """A hunt: 4,000 1 KB items read every second, while 5 KB items nobody reads evict in
    another class. memcached's automover never takes the read class's pages (its items
    stay in HOT and WARM, so its COLD LRU is empty, of age 0); mcached's took a page from
    the class with the most pages among those that had not evicted for three ticks, the
    read one, and evicted 460 of its items every round for good. A class is now judged by
    the age of what its clock hand reaches next, a referenced item counting a minute
    younger (reads refresh its time once a minute): the read class stays whole, and once
    nobody reads it its pages do go to the class that evicts."""
    cache = Cache(memory_limit=12 * MB, clock=clock, slab_automove=1)
    hot = [b"hot%d" % i for i in range(4000)]
    for key in hot:
        cache.store(SET, key, value_for(key, 1000))
    [(hot_class, pages)] = class_pages(cache).items()
    assert pages > 2
    n = 0
    for _ in range(40):  # 40 s: past the window of 30
        for _ in range(300):
            key = b"s%d" % n
            cache.store(SET, key, value_for(key, 5000))
            n += 1
        for key in hot:
            assert cache.get(key) is not None, key
        clock.advance(1)
        cache.automove_tick()
    assert cache.stats()["evictions"] > 0
    assert class_pages(cache)[hot_class] == pages
    assert cache.stats()["slabs_moved"] == 0
    # nobody reads them any more: two minutes on they are the oldest, and give pages
    for _ in range(120):
        for _ in range(300):
            key = b"s%d" % n
            cache.store(SET, key, value_for(key, 5000))
            n += 1
        clock.advance(1)
        cache.automove_tick()
    assert cache.stats()["slabs_moved"] > 0
    assert class_pages(cache)[hot_class] < pages
    check_consistent(cache)


def test_keys_over_250_bytes_are_a_caller_bug(clock: FakeClock) -> None:
    cache = Cache(memory_limit=16 * MB, clock=clock)
    with pytest.raises(ValueError):
        cache.store(SET, b"k" * 251, b"x")
    assert cache.store(SET, b"k" * 250, b"x") is StoreResult.STORED


def test_issue_14_expired_items_memory_is_reused_before_a_new_page(clock: FakeClock) -> None:
    """memcached's t/issue_14.t: ten 65 KB items expire; ten more of the same class take
    their chunks (counted as reclaimed), not a second page."""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    for i in range(10):
        cache.store(SET, b"key%d" % i, value_for(b"key%d" % i, 66560), exptime=2)
    malloced = cache.slabs_stats()[1]["total_malloced"]
    clock.advance(4)
    for i in range(10, 20):
        key = b"key%d" % i
        assert cache.store(SET, key, value_for(key, 66560), exptime=2) is StoreResult.STORED
    assert cache.slabs_stats()[1]["total_malloced"] == malloced
    st = cache.stats()
    # each new item took a free chunk or a dead item's (the rest wait to be found expired)
    assert st["reclaimed"] > 0 and st["evictions"] == 0
    assert st["curr_items"] == 20 - st["reclaimed"]
    check_consistent(cache)


def test_issue_14_the_look_ahead_leaves_live_items_their_turn(clock: FakeClock) -> None:
    """A class that takes a page per item looks ahead of its hand each time and finds
    nothing dead: the hand stays, and evictions go oldest first."""
    cache = Cache(memory_limit=16 * MB, clock=clock, slab_reassign=False, slab_automove=0)
    big = b"x" * (MB - 250)
    for i in range(30):
        cache.store(SET, b"item_%d" % i, big)
    alive = [i for i in range(30) if cache.get(b"item_%d" % i) is not None]
    assert alive == list(range(30 - len(alive), 30)) and len(alive) > 8


def test_lru_a_read_right_after_a_store_does_not_protect(clock: FakeClock) -> None:
    """memcached's t/lru.t: the first read only marks an item fetched; a second one gives
    it the second chance."""
    for reads, survives in ((1, False), (2, True)):
        cache = Cache(memory_limit=16 * MB, clock=clock, slab_reassign=False, slab_automove=0)
        big = b"x" * (MB - 250)
        cache.store(SET, b"big", big)
        for _ in range(reads):
            assert cache.get(b"big") is not None
        for i in range(16):
            cache.store(SET, b"item_%d" % i, big)
        assert (cache.get(b"big") is not None) is survives


def test_bug_the_page_scans_took_a_chunk_a_store_was_still_writing_for_an_item(
    clock: FakeClock,
) -> None:
    """The crawler, the clock hand and the page mover read a chunk's status and hash with no
    partition lock, to know which lock to take. A store in another process, holding its own
    key's partition lock, wrote a new item's header field by field, its status (linked)
    first: a scan could read it linked with its hash still zero, take partition 0's lock,
    find the header unchanged under it (hash 0, CAS 0: flushed) and drop it, and the
    storage assertion "a linked item is in its partition's table" killed that process
    (`scripts/stress_storage.py` found it). Here a chunk is left in exactly that state -- taken
    as a store takes one, its header zero but for a linked status and a key length -- and
    every scan must leave it alone: only what is in its partition's table is an item."""
    cache = Cache(memory_limit=2 * MB, clock=clock, partitions=4)
    items = cache._items
    pm = items.pm
    for i in range(300):
        cache.store(SET, b"ttl:%d" % i, b"x" * 800, exptime=5)
    key = b"ttl:0"
    part = items.parts[hash(key) & items.pmask]
    with part:
        cid = pm[
            (part.tbl[cache._raw_find_locked(part, key, hash(key))] & items_module.ADDR_MASK)
            + items_module.OFF_CLSID
        ]
        a = items.alloc(cid, part, clock.now()) & ~items_module.HOLE
    torn = bytes([items_module.ST_LINKED, 3]) + bytes(HEADER - 2)
    pm[a : a + HEADER] = torn  # as another process's store is seen halfway
    clock.advance(6)
    assert cache.crawl() == 300  # the expired items, not the chunk being written
    assert bytes(pm[a : a + HEADER]) == torn
    for i in range(3000):  # the hand goes round the class, evicting, past the chunk
        cache.store(SET, b"new:%d" % i, b"y" * 800)
    assert cache.stats()["evictions"] > 0
    assert bytes(pm[a : a + HEADER]) == torn


def test_the_hash_table_size_in_stats_is_the_arenas_whichever_view_asks(clock: FakeClock) -> None:
    """Regression (a hunt at -t 4): stats' hash_power_level and hash_bytes came from the
    asking process's view of each table, which learns of a rebuild only when it next takes
    that partition's lock: the same cache showed four different pairs over 20 connections."""
    cache = Cache(memory_limit=64 * MB, clock=clock, partitions=1)
    other = cache.view()
    before = other.stats()["hash_bytes"]
    part = cache._parts[0]
    gen, n = part.gen, 0
    while part.gen == gen:  # stored through the first view until its table is rebuilt
        cache.store(SET, b"k%d" % n, b"x")
        n += 1
    mine, theirs = cache.stats(), other.stats()
    assert theirs["hash_bytes"] == mine["hash_bytes"] > before
    assert theirs["hash_power_level"] == mine["hash_power_level"]


@pytest.mark.parametrize("partitions", [1, 4, 16])
def test_class_counters_sum_every_partitions_row(clock: FakeClock, partitions: int) -> None:
    """`class_counters` (the counters of stats, stats slabs and stats items) is each class's
    row summed over the partitions, as read one partition and counter at a time."""
    cache = Cache(memory_limit=8 << 20, clock=clock, partitions=partitions)
    rnd = random.Random(partitions)
    for _ in range(4000):
        key = b"k%d" % rnd.randrange(1500)
        if rnd.random() < 0.7:
            cache.store(StoreMode.SET, key, value_for(key, rnd.randrange(1, 20_000)))
        elif rnd.random() < 0.8:
            cache.get(key)
        else:
            cache.delete(key)
    items = cache._items
    expected = [[0] * NSTAT for _ in range(items.largest + 1)]
    for part in items.parts:
        cst = part.cst.tolist()
        for cid in range(1, items.largest + 1):
            for k in range(NSTAT):
                expected[cid][k] += cst[cid * NSTAT + k]
    rows = items.class_counters()
    assert rows == expected
    assert sum(row[0] for row in rows) == cache.stats()["curr_items"] > 0  # S_NUMBER
