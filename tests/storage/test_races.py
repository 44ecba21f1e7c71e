"""Races between workers over one cache, each forced by holding or gating one lock."""

from __future__ import annotations

import threading
import time

import pytest

from mcached.clock import FakeClock
from mcached.storage import items as items_module
from mcached.storage.cache import Cache
from mcached.storage.results import DeleteResult, DeltaResult, StoreMode, StoreResult

pytestmark = pytest.mark.unit
MB = 1024 * 1024


class GatedLock:
    """A partition lock whose next acquire (in the view that holds it) first waits for
    `gate`, and says it reached it (`waiting`)."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def acquire(self, *args: object, **kw: object) -> bool:
        self.waiting.set()
        self.gate.wait(5)
        return self.real.acquire(*args, **kw)  # type: ignore[attr-defined]

    def release(self) -> None:
        self.real.release()  # type: ignore[attr-defined]


def _flush_with_gate(cache: Cache, key: bytes) -> tuple[threading.Thread, GatedLock]:
    """A flush_all in another thread (its own view), stopped just before it takes `key`'s
    partition lock: it read its CAS cut and marked the partitions before that one."""
    flusher = cache.view()
    part = flusher._items.parts[hash(key) & flusher._pmask]
    gated = GatedLock(part.lock)
    part.lock = gated  # type: ignore[assignment]
    t = threading.Thread(target=flusher.flush_all)
    t.start()
    assert gated.waiting.wait(5)
    return t, gated


@pytest.mark.parametrize("op", ["incr", "md-invalidate"])
def test_an_item_older_than_a_flush_all_does_not_outlive_it(op: str) -> None:
    """flush_all read its CAS cut, then marked the partitions one lock at a time. An incr
    in place (or ``md I``) in between gave the item a CAS past the cut: the flush, once it
    marked the partition, kept an item stored before it, which the incr had found live. No
    order of the two explains that (memcached's flush is one word, its item_is_flushed
    also cuts by the item's time). The flush now holds every partition from its cut to its
    last mark."""
    cache = Cache(memory_limit=8 * MB, clock=FakeClock())
    key = b"counter"
    cache.store(StoreMode.SET, key, b"10")
    t, gated = _flush_with_gate(cache, key)
    if op == "incr":
        assert cache.incr(key, 1) == (DeltaResult.OK, 11)
    else:
        assert cache.delete_ex(key, invalidate=True) is DeleteResult.INVALIDATED
    gated.gate.set()
    t.join(5)
    assert cache.get(key) is None  # stored before the flush_all, read by an op before it


def _keys_in(cache: Cache, index: int, n: int, prefix: bytes) -> list[bytes]:
    out = []
    k = 0
    while len(out) < n:
        key = prefix + b"%d" % k
        k += 1
        if hash(key) & cache._pmask == index:
            out.append(key)
    return out


def test_a_store_evicts_while_another_worker_holds_the_victims_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A class whose items all hash to one partition (a few large items: the largest
    class holds a handful), and another worker holding that partition's lock for a few ms
    (a get copying a large value, a dump batch, a process preempted under load): a store
    of another key that must evict tried 10 times 0.2 ms, then answered NO_MEMORY, where
    memcached (whose item locks are not held across a store) evicts. It now tries on,
    pausing longer each time, for up to ALLOC_BUSY_WAIT. The other worker lets go during
    the store's 12th pause (counted by the store's own clock: no thread's timing)."""
    cache = Cache(memory_limit=2 * MB, clock=FakeClock(), slab_automove=0)
    value = b"v" * 200_000
    for key in _keys_in(cache, 2, 20, b"big"):
        assert cache.store(StoreMode.SET, key, value) is StoreResult.STORED
    assert cache.item_stats().evictions > 0
    part = cache._parts[2]
    pauses = 0

    class Clock:
        """The storage module's `time`, whose 12th sleep is when the holder lets go."""

        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        def sleep(self, seconds: float) -> None:
            nonlocal pauses
            pauses += 1
            if pauses == 12:
                part.lock.release()
            time.sleep(seconds)

    monkeypatch.setattr(items_module, "time", Clock())
    part.lock.acquire()  # another worker's hold on the partition of every candidate
    (key,) = _keys_in(cache, 1, 1, b"new")
    try:
        assert cache.store(StoreMode.SET, key, value) is StoreResult.STORED
    finally:
        if pauses < 12:
            part.lock.release()
    assert pauses >= 12
