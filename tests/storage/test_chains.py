"""Chained items, whose chunks are in several classes as memcached's are (a head in the small
class of its header item, value chunks of the largest class and of the class fitting the
remainder): every path that frees, evicts, reclaims, moves, pins or lends one gives each
chunk back to its own class, and never holds two class locks (mcached/storage/items.py)."""

from __future__ import annotations

import random
import threading

import pytest

from mcached.clock import FakeClock
from mcached.storage import items as items_module
from mcached.storage.cache import Cache, Reservation
from mcached.storage.results import ReassignResult, StoreResult
from tests.storage.test_items import (
    APPEND,
    KB,
    MB,
    PREPEND,
    SET,
    check_consistent,
    class_pages,
    memcached_chunks,
    value_for,
)
from tests.storage.test_items import clock as clock  # the fixture
from tests.storage.test_items import move_page as move_page

pytestmark = pytest.mark.unit


def used(cache: Cache) -> dict[int, int]:
    return {cid: row["used_chunks"] for cid, row in cache.slabs_stats()[0] if row["used_chunks"]}


def chunks_of(cache: Cache, key: bytes, size: int, flags: int = 0) -> dict[int, int]:
    want = memcached_chunks(cache, len(key), size, flags)
    return {cid: want.count(cid) for cid in want}


def test_a_chained_item_takes_memcacheds_chunks_and_gives_each_back(clock: FakeClock) -> None:
    """600 KB: the header in class 2, a 512 KB chunk and an 88 KB one (class 32), where the
    head held the key and the start of the value in a 512 KB chunk, and a second one the
    rest; every chunk goes back to its own class."""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    value = value_for(b"k", 600 * KB)
    assert cache.store(SET, b"k", value) is StoreResult.STORED
    assert used(cache) == {2: 1, 39: 1, 32: 1} == chunks_of(cache, b"k", 600 * KB)
    rows = dict(cache.items_stats())
    assert list(rows) == [39] and rows[39]["number"] == 1  # counted in the largest class
    assert rows[39]["mem_requested"] == 48 + 2 + 600 * KB + 2 + 8
    assert cache.get(b"k")[0] == value  # type: ignore[index]
    assert [key for key, *_ in cache.cachedump(39)] == [b"k"] and not cache.cachedump(2)
    assert cache.delete(b"k")
    assert used(cache) == {}


def test_a_pinned_chained_item_is_a_zombie_until_its_last_unpin(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock, holder=1)
    value = value_for(b"k", 700 * KB)
    cache.store(SET, b"k", value)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    assert cache.delete(b"k")
    assert cache.stats()["curr_items"] == 0
    assert used(cache) == chunks_of(cache, b"k", 700 * KB)  # held for the reply
    assert b"".join(bytes(v) for v in hit[0]) == value
    cache.unpin(hit[3])
    assert used(cache) == {}


def test_a_dead_process_chained_reservation_goes_back_to_every_class(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock)
    worker = cache.view(holder=2)
    res = worker.reserve(b"k", 900_000, 5)
    assert isinstance(res, Reservation)
    while res.left:  # its value chunks, taken as the bytes come
        assert worker.grow(res) is not None
    assert used(cache) == chunks_of(cache, b"k", 900_000, 5)
    assert sum(len(v) for v in res.views) == 900_000
    assert cache.release_holder(2) == 1
    assert used(cache) == {}


def test_a_received_chained_items_chunks_are_taken_as_its_bytes_come(clock: FakeClock) -> None:
    """A chained reservation holds its head alone until its bytes come: each `grow` takes
    the next chunk (memcached's ``do_item_alloc_chunk`` in ``read_into_chunked_item``),
    the chunks end as memcached's, and one given up early gives each chunk back to its own
    class (the head to its small class, not to the largest, where it is counted)."""
    cache = Cache(memory_limit=64 * MB, clock=clock, item_size_max=2 * MB)
    value = value_for(b"k", 1_200 * KB)
    res = cache.reserve(b"k", len(value), 5)
    assert isinstance(res, Reservation)
    assert used(cache) == {2: 1} and res.views == []
    views = []
    while res.left:
        view = cache.grow(res)
        assert view is not None
        views.append(view)
    assert views == res.views and [len(v) for v in views] == [512 * KB - 48] * 2 + [
        1_200 * KB - 2 * (512 * KB - 48)
    ]
    assert used(cache) == chunks_of(cache, b"k", 1_200 * KB, 5)
    pos = 0
    for view in views:
        view[:] = value[pos : pos + len(view)]
        pos += len(view)
    assert cache.commit(res, SET) is StoreResult.STORED
    assert cache.get(b"k")[:2] == (value, 5)  # type: ignore[index]
    check_consistent(cache)
    for grown in (0, 1):  # given up with its head alone, and with one value chunk
        res = cache.reserve(b"j", len(value), 0)
        assert isinstance(res, Reservation)
        for _ in range(grown):
            assert cache.grow(res) is not None
        cache.abandon(res)
        assert used(cache) == chunks_of(cache, b"k", 1_200 * KB, 5)
        check_consistent(cache)


def test_growing_a_reservation_with_nothing_left_to_take_fails_it(clock: FakeClock) -> None:
    """`grow` asked when every chunk is had (a connection asks only while value bytes
    remain): the reservation fails, so its commit stores nothing short (it returned None
    and left it good: a caller that then dropped the rest would have stored a value with
    bytes missing)."""
    cache = Cache(memory_limit=16 * MB, clock=clock)
    res = cache.reserve(b"k", 20_000, 0)  # one chunk, had whole
    assert isinstance(res, Reservation) and not res.left
    assert cache.grow(res) is None and res.failed
    assert cache.commit(res, SET) is StoreResult.NO_MEMORY_READING
    assert cache.get(b"k") is None and used(cache) == {}


def test_a_chunk_not_had_as_the_bytes_come_is_out_of_memory_during_read(
    clock: FakeClock,
) -> None:
    """Under -M, a chunk that cannot be had while the value arrives: `grow` gives None,
    and the commit answers NO_MEMORY_READING (memcached's "Out of memory during read"),
    gives every chunk back, counts nothing and leaves the key's item as it was."""
    cache = Cache(memory_limit=8 * MB, clock=clock, evictions=False, item_size_max=4 * MB)
    old = value_for(b"k", 100)
    assert cache.store(SET, b"k", old) is StoreResult.STORED
    before = used(cache)
    res = cache.reserve(b"k", 3 * MB, 0)
    assert isinstance(res, Reservation)
    assert cache.grow(res) is not None
    n = 0  # the largest class's pages filled meanwhile by other stores
    while cache.store(SET, b"f%d" % n, value_for(b"f%d" % n, 400 * KB)) is StoreResult.STORED:
        n += 1
    assert n
    while res.left and cache.grow(res) is not None:
        pass
    assert res.failed and res.left
    sets = sum(row["cmd_set"] for _, row in cache.slabs_stats()[0])
    assert cache.commit(res, SET) is StoreResult.NO_MEMORY_READING
    assert sum(row["cmd_set"] for _, row in cache.slabs_stats()[0]) == sets
    assert cache.get(b"k")[:2] == (old, 0)  # type: ignore[index]
    for i in range(n):
        assert cache.delete(b"f%d" % i)
    assert used(cache) == before
    check_consistent(cache)


def test_the_crawler_reclaims_chained_items_from_the_largest_class(clock: FakeClock) -> None:
    cache = Cache(memory_limit=64 * MB, clock=clock)
    for i in range(5):
        key = b"c%d" % i
        cache.store(SET, key, value_for(key, 800 * KB), exptime=10 if i % 2 else 0)
    cache.store(SET, b"small", b"x" * 50, exptime=10)
    clock.advance(11)
    # the headers' class holds two of them and a small item of its own: only the latter
    # is its class's; the chained ones are the largest class's, as in memcached's LRUs
    assert cache.crawl({2}) == 1
    assert cache.crawl({39}) == 2
    rows = dict(cache.items_stats())
    assert rows[39]["crawler_reclaimed"] == 2 and rows[39]["number"] == 3
    check_consistent(cache)


def test_the_hand_evicts_chained_items_whole_at_their_first_value_chunk(
    clock: FakeClock,
) -> None:
    cache = Cache(memory_limit=8 * MB, item_size_max=2 * MB, clock=clock, slab_automove=0)
    for i in range(12):
        key = b"c%d" % i
        assert cache.store(SET, key, value_for(key, 1_200_000)) is StoreResult.STORED
    rows = dict(cache.items_stats())
    assert rows[39]["evicted"] > 0 and 2 not in rows
    assert cache.get(b"c11") is not None and cache.get(b"c0") is None
    check_consistent(cache)


def test_bug_a_prepended_chained_item_was_not_evicted_from_the_largest_class(
    clock: FakeClock,
) -> None:
    """A short prepend leaves a chained item's first value chunks small ones (a chunk for
    the prepended bytes, an empty one), then its 512 KB chunks. memcached keeps it in the
    largest class's LRU all the same, and so does the clock, which meets it at its first
    512 KB chunk. It used to meet it only at its first value chunk, so a largest class full
    of such items had nothing it could evict: a new large item got "Out of memory during
    read"."""
    cache = Cache(memory_limit=8 * MB, item_size_max=2 * MB, clock=clock, slab_automove=0)
    for i in range(12):
        key = b"p%d" % i
        assert cache.store(SET, key, value_for(key, 1_200_000)) is StoreResult.STORED
        # 100 bytes that keep the value `value_for`'s (check_consistent reads it so)
        assert cache.store(PREPEND, key, (key + b"|") * 25) is StoreResult.STORED
    rows = dict(cache.items_stats())
    assert rows[39]["evicted"] > 0 and rows[39]["outofmemory"] == 0
    assert cache.get(b"p11")[0] == value_for(b"p11", 1_200_100)  # type: ignore[index]
    assert cache.get(b"p0") is None
    check_consistent(cache, exact=False)  # (a prepend's copy is not a set's layout)


def test_the_hand_tries_again_when_busy_partitions_hold_every_candidate(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand only try-locks another partition: an item whose partition is held (another
    worker storing or copying a large value) is passed over. When nothing else could be
    evicted, `alloc` waits a moment and looks again (memcached pulls its LRU tail up to 10
    times) instead of failing the store at once."""
    cache = Cache(memory_limit=2 * MB, clock=clock, slab_automove=0, partitions=2)
    keys = [b"k%d" % i for i in range(400)]
    held = cache._part(keys[0])[0]
    mine = [k for k in keys if cache._part(k)[0] is held]
    other = next(k for k in keys if cache._part(k)[0] is not held)
    size = 400 * KB
    stored = 0
    for key in mine:
        if cache.store(SET, key, value_for(key, size)) is StoreResult.STORED:
            stored += 1
        if dict(cache.items_stats()).get(cache.class_of(size + 60), {}).get("evicted"):
            break
    assert stored > 1
    pauses: list[float] = []

    class Time:
        @staticmethod
        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if len(pauses) == 3:
                held.__exit__()  # the holder is done

    monkeypatch.setattr(items_module, "time", Time)
    held.__enter__()
    try:
        result = cache.store(SET, other, value_for(other, size))
    finally:
        if len(pauses) < 3:
            held.__exit__()
    assert len(pauses) == 3
    assert result is StoreResult.STORED
    assert cache.get(other)[0] == value_for(other, size)  # type: ignore[index]
    check_consistent(cache)


def test_a_prepend_to_a_chained_item_copies_it_into_memcacheds_chunks(
    clock: FakeClock,
) -> None:
    """A prepend of a few bytes makes memcached's layout of the copy: a small chunk for
    them, an empty one, then the old value's chunks and another empty one."""
    cache = Cache(memory_limit=64 * MB, clock=clock)
    value = value_for(b"k", 600 * KB)
    cache.store(SET, b"k", value)
    assert cache.store(PREPEND, b"k", b"<" * 600) is StoreResult.STORED
    assert cache.get(b"k")[0] == b"<" * 600 + value  # type: ignore[index]
    small = cache.class_of(600 + 48)
    # the header, 600 bytes, an empty chunk (48 bytes: class 1), 512 KB, 88 KB, empty again
    assert used(cache) == {2: 1, small: 1, 1: 2, 39: 1, 32: 1}
    assert cache.delete(b"k")
    assert used(cache) == {}


def test_a_fallback_chunk_takes_what_follows_as_memcacheds_does(clock: FakeClock) -> None:
    """A chunk that falls back to the largest class has that class's room (memcached's
    ``do_item_alloc_chunk``), so an append's copy goes on in it: no empty chunk after the
    old value's part, and the appended bytes in the same chunk (`wide`)."""
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_chunk_max=16 * KB)
    plan = cache._items.chain_plan
    tail, empty, added = cache.class_of(3664 + 48), cache.class_of(48), cache.class_of(102 + 48)
    # 20,000 bytes appended with 100 (and the CRLF): two parts, each followed by an empty chunk
    assert plan(1, 20_100, 0, 20_000) == [2, 23, 16336, tail, 3664, empty, 0, added, 102, empty, 0]
    # the first empty chunk fell back: the appended bytes go into it, and nothing follows
    assert plan(1, 20_100, 0, 20_000, frozenset({3})) == [2, 23, 16336, tail, 3664, 23, 102]
    # the old value's last chunk fell back: it takes the rest of the old value and the added
    assert plan(1, 20_100, 0, 20_000, frozenset({2})) == [2, 23, 16336, 23, 3766]
    # a set's last chunk holds what it would have held
    assert plan(1, 20_100, 0, -1, frozenset({2})) == [2, 23, 16336, 23, 3766]


def test_a_small_page_holding_a_pinned_chained_head_is_not_moved(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small classes hold chained items' heads, and so pinned items: the page mover leaves
    a page holding one alone (it used to skip the check below 1 KB chunks: no pinned value
    was ever that small), instead of waiting on it and giving up."""
    monkeypatch.setattr(items_module, "MOVE_PATIENCE", 2)
    cache = Cache(memory_limit=64 * MB, clock=clock, holder=1)
    value = value_for(b"big", 700 * KB)
    cache.store(SET, b"big", value)  # its head: the first chunk of class 2's first page
    small = [b"s%d" % i for i in range(20_000)]  # of class 2 too: three pages
    for key in small:
        cache.store(SET, key, value_for(key, 40))
    assert class_pages(cache)[2] == 3
    for key in small[:8_000]:
        cache.delete(key)  # the first page is the emptiest: the one the mover picks
    hit = cache.get_ref(b"big")
    assert hit is not None and len(hit) == 4
    assert move_page(cache, 2, 0) is ReassignResult.OK
    st = cache.stats()
    assert st["slabs_moved"] == 1 and st["slab_reassign_busy_items"] == 0
    assert class_pages(cache)[2] == 2
    assert b"".join(bytes(v) for v in hit[0]) == value
    cache.unpin(hit[3])
    assert cache.get(b"big")[0] == value  # type: ignore[index]
    # unpinned, it moves (its head is copied: a rescue)
    for key in small[8_000:]:
        cache.delete(key)
    while move_page(cache, 2, 0) is ReassignResult.OK:
        pass
    assert cache.get(b"big")[0] == value  # type: ignore[index]
    check_consistent(cache)


def test_chained_and_small_items_from_threads_with_page_moves_and_crawls(
    clock: FakeClock,
) -> None:
    """Stores, evictions, appends, deletes, page moves and crawls at once, over chained
    items whose chunks are in three classes: nothing deadlocks (no path holds two class
    locks), and the figures add up."""
    cache = Cache(memory_limit=12 * MB, item_size_max=2 * MB, clock=clock, slab_chunk_max=64 * KB)
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        view = cache.view(holder=seed)
        try:
            for _ in range(300):
                key = b"k%d" % rnd.randrange(60)
                size = rnd.choice((100, 5_000, 70_000, 300_000, 900_000))
                op = rnd.random()
                if op < 0.6:
                    view.store(SET, key, value_for(key, size), exptime=rnd.choice((0, 5)))
                elif op < 0.7:
                    view.store(APPEND, key, b"+" * rnd.randrange(1, 3000))
                elif op < 0.8:
                    view.delete(key)
                else:
                    hit = view.get_ref(key)
                    if hit is not None and len(hit) == 4:
                        view.unpin(hit[3])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def mover() -> None:
        rnd = random.Random(9)
        while not stop.is_set():
            cache.reassign(rnd.choice((-1, 2, len(cache.slab_sizes))), 0)
            cache.move_asked()
            clock.advance(1)
            cache.crawl()

    threads = [threading.Thread(target=worker, args=(i,)) for i in (1, 2, 3)]
    side = threading.Thread(target=mover)
    for t in [*threads, side]:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    side.join(60)
    assert not any(t.is_alive() for t in [*threads, side]), "a lock was never let go"
    assert not errors
    st = cache.stats()
    assert st["curr_items"] == len(list(cache.keys()))
    classes, _ = cache.slabs_stats()
    assert all(row["used_chunks"] + row["free_chunks"] == row["total_chunks"] for _, row in classes)
    for key in cache.keys():
        hit = cache.get(key)
        if hit is not None:
            assert hit[0].rstrip(b"+") == value_for(key, len(hit[0].rstrip(b"+")))
    for key in list(cache.keys()):
        cache.delete(key)
    assert used(cache) == {}


def test_bug_a_chained_item_in_a_hole_ahead_of_the_hand_went_with_the_next_stores(
    clock: FakeClock,
) -> None:
    """Batches of values of 10 B to 1 MB stored, then read back at once, as a client's
    set_many and get_many do, into -m 64 (a client-library hunt, whose seven clients
    stored 21 such batches). A chained item is met by the clock at its first 512 KB chunk,
    but whether it started referenced was read from its header's chunk: one whose 512 KB
    chunk was a hole just ahead of the hand went with the next evictions, while older
    items stayed (11 of the fifth client's values here; memcached: none)."""
    sizes = [10, 4095, 4096, 16383, 16384, 100000, 524287, 524288, 524289, 700000, 1048000]
    cache = Cache(memory_limit=64 * MB, clock=clock)
    missed = []
    for client in range(7):
        for _batch in range(3):
            keys = [
                (b"c%d-%d-%d" % (client, i, k), n) for i, n in enumerate(sizes) for k in range(4)
            ]
            values = {key: value_for(key, n) for key, n in keys}  # the same again each batch
            for key, value in values.items():
                assert cache.store(SET, key, value) is StoreResult.STORED
            for key, value in values.items():
                got = cache.get(key)
                if got is None:
                    missed.append(key)
                else:
                    assert bytes(got[0]) == value
    assert missed == []
    check_consistent(cache, exact=False)


def test_bug_items_in_holes_just_behind_the_hand_outlived_older_ones(clock: FakeClock) -> None:
    """Sets never read, with a delete of a recent key every third set (a slabs hunt): every
    item put in a freed chunk started referenced, also one the hand had just passed, so
    it outlived older unread items by a turn: 915 of the 7,079 survivors here were older
    than the newest 7,079 keys (memcached keeps exactly the newest). Only a hole the hand
    meets within half a turn gives that grace now: 197, the rest of the clock's
    approximation (README)."""
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_automove=0)
    rnd = random.Random(1)
    deleted = set()
    n = 30000
    for i in range(n):
        assert cache.store(SET, b"k%d" % i, b"x" * 1000) is StoreResult.STORED
        if i % 3 == 2:
            j = rnd.randrange(max(0, i - 2000), i)
            cache.delete(b"k%d" % j)
            deleted.add(j)
    alive = {i for i in range(n) if cache.lookup(b"k%d" % i, False, False, False) is not None}
    newest = [i for i in range(n - 1, -1, -1) if i not in deleted][: len(alive)]
    older = len(alive - set(newest))
    assert older < len(alive) * 5 // 100, older  # (old: 915 of 7,079, 12.9 %)
