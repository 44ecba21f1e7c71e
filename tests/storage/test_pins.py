"""Pins and reservations: a value lent to a reply (`Cache.get_ref`) stays whole until it is
given back; a value received into reserved chunks (`Cache.reserve`) is the cache's memory
from the start and becomes an item only at `commit`."""

from __future__ import annotations

import threading

import pytest

from mcached.clock import FakeClock
from mcached.storage.arena import OFF_PINS, ST_ZOMBIE
from mcached.storage.cache import CHAIN_PIN_MIN, PIN_MIN, Cache, Reservation
from mcached.storage.results import ReassignResult, StoreMode, StoreResult
from tests.storage.test_items import move_page

pytestmark = pytest.mark.unit

MB = 1024 * 1024
SET, ADD, REPLACE, APPEND, CAS = (
    StoreMode.SET,
    StoreMode.ADD,
    StoreMode.REPLACE,
    StoreMode.APPEND,
    StoreMode.CAS,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[0, 1], ids=["threads", "process-slot"])
def cache(request: pytest.FixtureRequest, clock: FakeClock) -> Cache:
    # slot 0: a token is the item's address; slot 1: an entry of the pin table
    return Cache(memory_limit=8 * MB, clock=clock, holder=request.param)


def used_chunks(cache: Cache) -> int:
    return sum(row["used_chunks"] for _, row in cache.slabs_stats()[0])


def test_small_values_are_copies(cache: Cache) -> None:
    cache.store(SET, b"k", b"x" * (PIN_MIN - 1))
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 3 and isinstance(hit[0], bytes)
    assert cache.pins_held() == 0


def test_each_thread_lends_from_a_view_of_its_own(cache: Cache) -> None:
    """Lent values are slices of the calling thread's own view of the pages, never of one
    view that threads share: on a free-threaded CPython, slicing one memoryview from several
    threads at once can release it under all of them (gh-155606; the daemon's worker
    threads died of it: tests/integration/test_free_threaded.py)."""
    cache.store(SET, b"one", b"a" * PIN_MIN)
    cache.store(SET, b"many", b"b" * 600_000)  # in several chunks
    views: dict[str, list[memoryview]] = {}

    def lend(name: str) -> None:
        one = cache.get_ref(b"one")
        many = cache.get_ref(b"many")
        assert one is not None and len(one) == 4 and many is not None and len(many) == 4
        assert isinstance(one[0], memoryview) and isinstance(many[0], list)
        views[name] = [one[0], *many[0], cache.arena.pages_view(), cache.arena.pages_view()]
        cache.unpin(one[3])
        cache.unpin(many[3])

    lend("main")
    other = threading.Thread(target=lend, args=("other",))
    other.start()
    other.join(10)
    for *lent, own, again in views.values():
        assert own is again  # one view a thread, made once
        assert all(v.obj is own.obj for v in lent)  # each lent view is cut from it
        assert all(bytes(v) in (b"a" * len(v), b"b" * len(v)) for v in lent)
    assert views["main"][-1] is not views["other"][-1]


def test_a_lent_value_survives_overwrite_delete_and_eviction(cache: Cache) -> None:
    old = b"a" * 100_000
    cache.store(SET, b"k", old, flags=7)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    view, flags, _, token = hit
    assert isinstance(view, memoryview) and flags == 7 and bytes(view) == old
    if cache.holder:
        assert cache.pins_held() == 1
    # the same size again would be rewritten in place: not while it is lent
    assert cache.store(SET, b"k", b"b" * 100_000) is StoreResult.STORED
    assert bytes(view) == old
    got = cache.get(b"k")
    assert got is not None and got[0] == b"b" * 100_000
    # the replaced item is out of the counts, its chunk kept for the reply
    assert cache.stats()["curr_items"] == 1
    # fill the cache: the zombie's chunk is never handed out
    for i in range(200):
        cache.store(SET, b"fill%d" % i, b"c" * 100_000)
    assert bytes(view) == old
    before = used_chunks(cache)
    cache.unpin(token)
    assert used_chunks(cache) == before - 1  # the last pin freed the zombie
    assert cache.pins_held() == 0


def test_pinned_item_is_not_evicted_and_stays_readable(cache: Cache) -> None:
    value = b"p" * 200_000
    cache.store(SET, b"keep", value)
    hit = cache.get_ref(b"keep")
    assert hit is not None and len(hit) == 4
    for i in range(300):  # far more than 8 MB of the same class
        cache.store(SET, b"f%d" % i, b"q" * 200_000)
    assert bytes(hit[0]) == value
    got = cache.get(b"keep")
    assert got is not None and got[0] == value  # pinned: the clock hand passed it by
    cache.unpin(hit[3])


def test_delete_then_unpin_frees_once(cache: Cache) -> None:
    cache.store(SET, b"k", b"d" * 50_000)
    a = cache.get_ref(b"k")
    b = cache.get_ref(b"k")  # two replies lend the same item
    assert a is not None and b is not None and len(a) == 4 and len(b) == 4
    used = used_chunks(cache)
    assert cache.delete(b"k")
    assert cache.get(b"k") is None
    assert used_chunks(cache) == used  # zombie: held for the two replies
    cache.unpin(a[3])
    assert used_chunks(cache) == used
    cache.unpin(b[3])
    assert used_chunks(cache) == used - 1


def test_append_to_a_lent_value_leaves_the_lent_bytes_alone(cache: Cache) -> None:
    cache.store(SET, b"k", b"1" * 10_000)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    assert cache.store(APPEND, b"k", b"2") is StoreResult.STORED
    assert bytes(hit[0]) == b"1" * 10_000
    cache.unpin(hit[3])
    got = cache.get(b"k")
    assert got is not None and got[0] == b"1" * 10_000 + b"2"


def test_page_moves_skip_pages_with_pinned_items(cache: Cache) -> None:
    # 300 KB items: three to a 1 MB page, so four of them take two pages
    values = {b"k%d" % i: bytes([65 + i]) * 300_000 for i in range(4)}
    for key, value in values.items():
        cache.store(SET, key, value)
    cid = cache.class_of(300_000 + 60)
    pages = lambda: dict(cache.slabs_stats()[0])[cid]["total_pages"]  # noqa: E731
    assert pages() == 2
    lent = {key: cache.get_ref(key) for key in (b"k0", b"k1", b"k2")}
    assert all(hit is not None and len(hit) == 4 for hit in lent.values())
    # the page of k0..k2 is pinned all over: the move takes the other one
    assert move_page(cache, cid, 0) is ReassignResult.OK
    assert pages() == 1
    for key, hit in lent.items():
        assert hit is not None and bytes(hit[0]) == values[key]
    # nothing left to move without waiting for a reply: no page moves
    cache.store(SET, b"k3", values[b"k3"])
    move_page(cache, cid, 0)
    assert pages() >= 1
    for key, hit in lent.items():
        assert hit is not None and bytes(hit[0]) == values[key]
        cache.unpin(hit[3])
        got = cache.get(key)
        assert got is not None and got[0] == values[key]


def test_release_holder_lets_a_dead_process_pins_go(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock)
    worker = cache.view(holder=3)  # a worker process's view
    cache.store(SET, b"k", b"z" * 20_000)
    hit = worker.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    cache.delete(b"k")
    used = used_chunks(cache)
    # the worker dies without unpinning: the supervisor lets its pins go
    assert cache.release_holder(3) == 1
    assert used_chunks(cache) == used - 1
    assert cache.release_holder(3) == 0
    # a new process in the same slot starts with an empty row
    again = cache.view(holder=3)
    assert again.pins_held() == 0


def test_pin_byte_is_cleared_by_every_new_item(cache: Cache) -> None:
    cache.store(SET, b"k", b"v" * 8000)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    cache.unpin(hit[3])
    for i in range(50):
        cache.store(SET, b"n%d" % i, b"w" * 8000)
    items = cache._items
    for part in items.parts:
        for _, addr in items.iter_items(part):
            assert items.pm[addr + OFF_PINS] == 0
            assert not items.pm[addr] & ST_ZOMBIE


# ---- values received into place ----


def fill(cache: Cache, res: Reservation, value: bytes) -> None:
    """Write `value` where a client's bytes would go, taking a chained item's chunks as
    they are needed (`Cache.grow`)."""
    while res.left:
        assert cache.grow(res) is not None
    pos = 0
    for view in res.views:
        view[:] = value[pos : pos + len(view)]
        pos += len(view)
    assert pos == len(value)


@pytest.mark.parametrize("size", [20_000, 800_000], ids=["one-chunk", "chained"])
def test_reserve_fill_commit(cache: Cache, size: int) -> None:
    value = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
    used = used_chunks(cache)
    res = cache.reserve(b"k", len(value), 5)
    assert isinstance(res, Reservation)
    assert used_chunks(cache) > used  # the memory is the cache's from the start
    assert cache.get(b"k") is None  # not an item yet
    assert cache.stats()["curr_items"] == 0
    fill(cache, res, value)
    assert cache.commit(res, SET, exptime=0) is StoreResult.STORED
    got = cache.get(b"k")
    assert got is not None and got[0] == value and got[1] == 5
    assert cache.stats()["curr_items"] == 1
    assert cache.pins_held() == 0


def test_abandon_gives_the_chunks_back(cache: Cache) -> None:
    used = used_chunks(cache)
    res = cache.reserve(b"k", 700_000, 0)
    assert isinstance(res, Reservation)
    cache.abandon(res)
    assert used_chunks(cache) == used
    assert cache.get(b"k") is None
    assert cache.pins_held() == 0


def test_commit_modes(cache: Cache) -> None:
    def received(key: bytes, value: bytes) -> Reservation:
        res = cache.reserve(key, len(value), 0)
        assert isinstance(res, Reservation)
        fill(cache, res, value)
        return res

    big = b"x" * 30_000
    used = used_chunks(cache)
    assert cache.commit(received(b"k", big), REPLACE) is StoreResult.NOT_STORED
    assert cache.commit(received(b"k", big), CAS, cas=1) is StoreResult.NOT_FOUND
    assert used_chunks(cache) == used  # not stored: nothing kept
    assert cache.commit(received(b"k", big), ADD) is StoreResult.STORED
    assert cache.commit(received(b"k", b"y" * 30_000), ADD) is StoreResult.NOT_STORED
    hit = cache.get(b"k")
    assert hit is not None and hit[0] == big
    assert cache.commit(received(b"k", b"z" * 30_000), CAS, cas=hit[2] + 1) is (StoreResult.EXISTS)
    assert cache.commit(received(b"k", b"z" * 30_000), CAS, cas=hit[2]) is StoreResult.STORED
    assert cache.commit(received(b"k", b"w" * 30_000), REPLACE) is StoreResult.STORED
    got = cache.get(b"k")
    assert got is not None and got[0] == b"w" * 30_000
    assert cache.stats()["curr_items"] == 1


def test_reservations_count_against_the_limit(clock: FakeClock) -> None:
    cache = Cache(memory_limit=4 * MB, clock=clock, evictions=False)
    held = []
    while True:
        res = cache.reserve(b"r%d" % len(held), 500_000, 0)
        if not isinstance(res, Reservation):
            assert res is StoreResult.NO_MEMORY
            break
        held.append(res)
        assert len(held) < 20, "reservations went past -m"
    assert 4 <= len(held) <= 8
    for res in held:
        cache.abandon(res)
    assert cache.store(SET, b"after", b"a" * 500_000) is StoreResult.STORED


def test_release_holder_frees_a_dead_process_reservation(clock: FakeClock) -> None:
    cache = Cache(memory_limit=8 * MB, clock=clock)
    worker = cache.view(holder=2)
    used = used_chunks(cache)
    res = worker.reserve(b"k", 100_000, 0)
    assert isinstance(res, Reservation)
    assert used_chunks(cache) > used
    assert cache.release_holder(2) == 1
    assert used_chunks(cache) == used
    assert cache.get(b"k") is None


def received(cache: Cache, key: bytes, value: bytes, flags: int = 0) -> Reservation:
    res = cache.reserve(key, len(value), flags)
    assert isinstance(res, Reservation)
    fill(cache, res, value)
    return res


def items_and_chunks(cache: Cache) -> tuple[int, int]:
    return cache.stats()["curr_items"], used_chunks(cache)


@pytest.mark.parametrize(
    "old_size,size", [(100, 30_000), (600_000, 30_000), (30_000, 400_000), (0, 20_000)]
)
def test_commit_appends_and_prepends_chunk_to_chunk(cache: Cache, old_size: int, size: int) -> None:
    """The received bytes join the old value (one chunk or chained, either side) in a new
    item that keeps the old one's flags and exptime, as memcached's append makes one."""
    old = bytes(range(256)) * (old_size // 256) + b"o" * (old_size % 256)
    data = b"d" * (size - 7) + b"1234567"
    cache.store(SET, b"k", old, flags=3, exptime=100)
    assert cache.commit(received(cache, b"k", data, 9), APPEND) is StoreResult.STORED
    got = cache.get(b"k")
    assert got is not None and got[0] == old + data and got[1] == 3
    assert cache.commit(received(cache, b"k", data), StoreMode.PREPEND) is StoreResult.STORED
    got = cache.get(b"k")
    assert got is not None and got[0] == data + old + data and got[1] == 3
    state = cache.lookup(b"k", False, False, False)
    assert state is not None and state[6] is not None and 0 < state[6] <= 100  # its ttl
    assert cache.stats()["curr_items"] == 1
    # the old items and the received bytes' chunks all went back
    cache.delete(b"k")
    assert used_chunks(cache) == 0
    assert cache.pins_held() == 0


def test_commit_append_outcomes_leave_the_item_alone(cache: Cache) -> None:
    data = b"a" * 30_000
    before = items_and_chunks(cache)
    assert cache.commit(received(cache, b"k", data), APPEND) is StoreResult.NOT_STORED
    assert items_and_chunks(cache) == before
    cache.store(SET, b"k", b"v" * 1000)
    hit = cache.get(b"k")
    assert hit is not None
    before = items_and_chunks(cache)
    # a CAS given with append must match
    res = received(cache, b"k", data)
    assert cache.commit(res, APPEND, cas=hit[2] + 1) is StoreResult.EXISTS
    # joined, it would be over -I (1 MB): not stored
    res = received(cache, b"k", b"b" * 1_048_000)
    assert cache.commit(res, StoreMode.PREPEND) is StoreResult.NOT_STORED
    assert items_and_chunks(cache) == before
    got = cache.get(b"k")
    assert got is not None and got[0] == b"v" * 1000 and got[2] == hit[2]
    assert cache.commit(received(cache, b"k", data), APPEND, cas=hit[2]) is StoreResult.STORED
    assert cache.pins_held() == 0


def test_commit_append_when_the_item_changes_meanwhile(
    cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The joined item's chunks are reserved with no lock held: if another store changed the
    item meanwhile, they are given back and reserved again for the item as it is now."""
    cache.store(SET, b"k", b"1" * 5000)
    reserve = cache.reserve
    calls = []

    def racing(key: bytes, nbytes: int, flags: int, split: int) -> Reservation | StoreResult:
        calls.append(nbytes)
        if len(calls) == 1:
            cache.store(SET, b"k", b"2" * 9000)  # another client, between the two steps
        return reserve(key, nbytes, flags, split)

    data = b"d" * 20_000
    res = received(cache, b"k", data)
    monkeypatch.setattr(cache, "reserve", racing)
    assert cache.commit(res, APPEND) is StoreResult.STORED
    assert calls == [25_000, 29_000]
    got = cache.get(b"k")
    assert got is not None and got[0] == b"2" * 9000 + data
    assert cache.stats()["curr_items"] == 1
    used = used_chunks(cache)
    cache.delete(b"k")
    assert used_chunks(cache) == used - 1
    assert cache.pins_held() == 0


@pytest.mark.parametrize("mode", [StoreMode.APPEND, StoreMode.PREPEND])
def test_a_received_append_never_evicts_the_item_it_joins(
    clock: FakeClock, mode: StoreMode
) -> None:
    """The joined item's chunks are taken with no lock held, and, the class full, they were
    taken by evicting the oldest item: the one appended to. The append then found nothing:
    NOT_STORED, and the item was gone. memcached holds the old item while it allocates
    (do_store_item): another item is evicted and the append is stored."""
    cache = Cache(memory_limit=2 * MB, clock=clock)
    keys = [b"a"] + [b"b%d" % i for i in range(7)]  # one page of the 105 KB items' class
    for key in keys:
        assert cache.store(SET, key, b"v" * 105_000) is StoreResult.STORED
    data = b"X" * 17_000
    res = received(cache, b"a", data)
    assert cache.commit(res, mode) is StoreResult.STORED
    got = cache.get(b"a")
    assert got is not None
    assert got[0] == (b"v" * 105_000 + data if mode is StoreMode.APPEND else data + b"v" * 105_000)
    assert sum(cache.get(k) is None for k in keys[1:]) == 1  # another was evicted instead
    assert cache.pins_held() == 0


def test_commit_append_without_room_for_the_joined_item(clock: FakeClock) -> None:
    cache = Cache(memory_limit=4 * MB, clock=clock, evictions=False)
    cache.store(SET, b"k", b"o" * 400_000)
    held = []
    res = received(cache, b"k", b"d" * 400_000)
    while True:  # fill what is left
        r = cache.reserve(b"f%d" % len(held), 400_000, 0)
        if not isinstance(r, Reservation):
            break
        held.append(r)

    def sets() -> int:
        return sum(row["cmd_set"] for _, row in cache.slabs_stats()[0])

    # memcached's do_store_item answers NOT_STORED when the joined item cannot be allocated
    # (the appended bytes had their item), and keeps the old one; counted as a set
    before = sets()
    assert cache.commit(res, APPEND) is StoreResult.NOT_STORED
    assert sets() == before + 1
    got = cache.get(b"k")
    assert got is not None and got[0] == b"o" * 400_000
    for r in held:
        cache.abandon(r)
    assert items_and_chunks(cache) == (1, 1)


def test_commit_ex_is_store_ex(cache: Cache) -> None:
    """ms's extras: the new CAS returned, a base64 key remembered, I's stale store."""
    value = b"m" * 30_000
    cache.store(SET, b"before", b"x")  # so that `cas - 1` below is an older CAS, not 0
    result, cas = cache.commit_ex(received(cache, b"k", value), SET, binary_key=True)
    assert result is StoreResult.STORED and cas > 0
    item = cache.lookup(b"k", False, False, False)
    assert item is not None and item[2] == cas and item[15]  # its CAS; a binary key
    result, cas2 = cache.commit_ex(received(cache, b"k", value), CAS, cas=cas - 1, stale=True)
    assert result is StoreResult.STORED and cas2 > cas
    item = cache.lookup(b"k", False, False, False)
    assert item is not None and item[11]  # stale
    result, cas3 = cache.commit_ex(received(cache, b"k", value), ADD)
    assert result is StoreResult.NOT_STORED and cas3 == 0
    assert items_and_chunks(cache)[0] == 2  # "before" and "k"


# ---- a full pin table row ----


def test_a_full_pin_row_refuses_reservations_and_copies_values(clock: FakeClock) -> None:
    """A worker process lists what it pins and reserves in its row of the pin table. When
    the row is full, a reservation is refused (NO_MEMORY: a store gets memcached's out of
    memory reply) before anything is allocated or evicted for it, never left unlisted; a
    lent value is copied instead once only the row's last quarter is free (kept for
    reservations). Everything goes back when given back."""
    cache = Cache(memory_limit=16 * MB, clock=clock)
    worker = cache.view(holder=1)
    worker.bind_holder(1, pin_slots=8)  # keeps 2 for reservations
    worker.store(SET, b"lent", b"l" * 50_000)
    pins = []
    for _ in range(6):
        hit = worker.get_ref(b"lent")
        assert hit is not None and len(hit) == 4
        pins.append(hit[3])
    hit = worker.get_ref(b"lent")
    assert hit is not None and len(hit) == 3 and hit[0] == b"l" * 50_000  # a copy
    held = []
    for i in range(2):
        res = worker.reserve(b"r%d" % i, 50_000, 0)
        assert isinstance(res, Reservation) and res.token >= 0
        held.append(res)
    assert worker.pins_held() == 8
    used = used_chunks(cache)
    # counted in the class's outofmemory (shown for classes holding items: lent's is)
    outofmemory = sum(row["outofmemory"] for _, row in cache.items_stats())
    assert worker.reserve(b"r9", 50_000, 0) is StoreResult.NO_MEMORY
    assert used_chunks(cache) == used
    assert sum(row["outofmemory"] for _, row in cache.items_stats()) == outofmemory + 1
    worker.abandon(held.pop())
    res = worker.reserve(b"r9", 50_000, 0)  # a free entry again
    assert isinstance(res, Reservation)
    worker.abandon(res)
    for res in held:
        worker.abandon(res)
    for token in pins:
        worker.unpin(token)
    assert worker.pins_held() == 0
    assert used_chunks(cache) == 1
    with pytest.raises(ValueError):
        worker.bind_holder(1, pin_slots=0)


# ---- values held in several chunks ----


def test_a_chained_value_is_lent_as_its_chunks_views(cache: Cache) -> None:
    """A value past slab_chunk_max is lent as the views of its chunks' parts, in order, under
    one pin of its head: never copied whole; it stays whole through an overwrite and a
    delete, and its chunks go back at the last unpin."""
    value = bytes(range(251)) * 3600  # 903,600 bytes: two chunks
    cache.store(SET, b"k", value, flags=4)
    used = used_chunks(cache)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4
    views, flags, _, token = hit
    assert isinstance(views, list) and len(views) == 2 and flags == 4
    assert all(isinstance(v, memoryview) for v in views)
    assert b"".join(views) == value
    assert cache.store(SET, b"k", b"n" * len(value)) is StoreResult.STORED
    assert cache.delete(b"k")
    assert b"".join(views) == value
    assert used_chunks(cache) == used  # the zombie's two chunks, nothing else
    cache.unpin(token)
    assert used_chunks(cache) == 0
    assert cache.pins_held() == 0
    # get() never lends
    cache.store(SET, b"k", value)
    got = cache.get(b"k")
    assert got is not None and len(got) == 3 and got[0] == value


def test_a_small_chained_value_is_copied(clock: FakeClock) -> None:
    """With a small slab_chunk_max a value of a few KB is chained: under CHAIN_PIN_MIN it is
    copied (a reply holding one could be joined with others)."""
    cache = Cache(memory_limit=8 * MB, clock=clock, slab_chunk_max=4096)
    value = b"s" * (CHAIN_PIN_MIN - 1)
    cache.store(SET, b"k", value)
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 3 and hit[0] == value
    cache.store(SET, b"k", value + b"!")
    hit = cache.get_ref(b"k")
    assert hit is not None and len(hit) == 4 and len(hit[0]) == 17  # 4 KB chunks
    assert b"".join(hit[0]) == value + b"!"
    cache.unpin(hit[3])
