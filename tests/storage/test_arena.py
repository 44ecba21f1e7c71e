"""The shared-memory arena (mcached/storage/arena.py): one cache for several processes.

Worker processes are forked from the process that made the arena; these tests fork too, and
check that what one process writes another reads, that the locks exclude across processes,
that a process killed inside an operation is seen by its holder word, and that views hold no
state of their own.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from mcached.clock import FakeClock
from mcached.storage import items as items_module
from mcached.storage.arena import HDR, HEADER, MAX_HOLDERS
from mcached.storage.cache import Cache
from mcached.storage.results import DeltaResult, StoreMode, StoreResult

pytestmark = pytest.mark.unit

MB = 1024 * 1024
SET = StoreMode.SET


def in_child(fn: object) -> int:
    """Run `fn()` in a forked child; its exit status (0 when it returned)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()  # type: ignore[operator]
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_the_header_is_memcacheds_size() -> None:
    assert HDR.size == HEADER == 48


def test_a_forked_process_sees_and_changes_the_same_cache() -> None:
    cache = Cache(memory_limit=8 * MB)
    cache.store(SET, b"parent", b"p")

    def child() -> None:
        view = cache  # the object the fork copied: its views point at the shared arena
        view.bind_holder(1)
        assert view.get(b"parent") is not None
        assert view.store(SET, b"child", b"c" * 5000) is StoreResult.STORED
        assert view.incr(b"n", 1)[0] is DeltaResult.NOT_FOUND
        view.store(SET, b"n", b"41")
        assert view.incr(b"n", 1) == (DeltaResult.OK, 42)
        assert view.delete(b"parent")

    assert in_child(child) == 0
    hit = cache.get(b"child")
    assert hit is not None and hit[0] == b"c" * 5000
    assert cache.get(b"parent") is None
    assert cache.get(b"n") is not None and cache.get(b"n")[0] == b"42"  # type: ignore[index]
    st = cache.stats()
    assert st["curr_items"] == 2 and st["total_items"] == 3
    assert not cache.arena.holding(1)  # the child finished every operation it began


def test_tables_grown_in_one_process_are_found_by_another() -> None:
    cache = Cache(memory_limit=64 * MB)
    cache.store(SET, b"seed", b"x")

    def child() -> None:
        for i in range(20_000):  # every partition's table rebuilds several times
            assert cache.store(SET, b"k%d" % i, b"v%d" % i) is StoreResult.STORED

    assert in_child(child) == 0
    assert all(
        cache.get(b"k%d" % i) == (b"v%d" % i, 0, cache.get(b"k%d" % i)[2])  # type: ignore[index]
        for i in range(0, 20_000, 7)
    )
    assert cache.stats()["curr_items"] == 20_001
    assert cache.store(SET, b"k5", b"again") is StoreResult.STORED
    assert cache.get(b"k5")[0] == b"again"  # type: ignore[index]


def test_flush_all_in_one_process_hides_items_from_another() -> None:
    clock = FakeClock()
    cache = Cache(memory_limit=8 * MB, clock=clock)
    cache.store(SET, b"old", b"x")
    assert cache.get(b"old") is not None  # this view has synced the partition

    assert in_child(lambda: cache.flush_all()) == 0
    assert cache.get(b"old") is None
    cache.store(SET, b"new", b"y")
    assert cache.get(b"new") is not None


def test_cas_uniques_are_unique_across_processes() -> None:
    cache = Cache(memory_limit=8 * MB)
    r, w = os.pipe()

    def child() -> None:
        cache.bind_holder(2)
        seen = []
        for i in range(300):
            cache.store(SET, b"c%d" % i, b"v")
            seen.append(cache.get(b"c%d" % i)[2])  # type: ignore[index]
        os.write(w, (" ".join(map(str, seen))).encode())

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child()
        finally:
            os._exit(0)
    mine = []
    for i in range(300):
        cache.store(SET, b"p%d" % i, b"v")
        mine.append(cache.get(b"p%d" % i)[2])  # type: ignore[index]
    os.waitpid(pid, 0)
    os.close(w)
    theirs = [int(x) for x in os.read(r, 1 << 20).split()]
    os.close(r)
    assert len(set(mine + theirs)) == 600


def test_a_partition_lock_excludes_another_process() -> None:
    cache = Cache(memory_limit=8 * MB)
    part = cache._parts[hash(b"k") & cache._pmask]
    part.lock.acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        cache.store(SET, b"k", b"from the child")  # blocks until the parent releases
        os.write(w, b"done")
        os._exit(0)
    time.sleep(0.3)
    os.set_blocking(r, False)
    with pytest.raises(BlockingIOError):
        os.read(r, 4)  # still blocked on the lock
    part.lock.release()
    os.waitpid(pid, 0)
    os.set_blocking(r, True)
    assert os.read(r, 4) == b"done"
    assert cache.get(b"k")[0] == b"from the child"  # type: ignore[index]


def test_a_process_killed_inside_an_operation_leaves_its_holder_word_set() -> None:
    cache = Cache(memory_limit=8 * MB)
    part = cache._parts[hash(b"k") & cache._pmask]
    part.lock.acquire()  # the child's store will wait here, inside the operation
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        cache.bind_holder(3)
        cache.store(SET, b"k", b"v")
        os._exit(0)
    deadline = time.monotonic() + 5
    while not cache.arena.holding(3):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    part.lock.release()
    assert cache.arena.holding(3)  # a supervisor reading this knows the arena is suspect
    assert not cache.arena.holding(0)


def test_a_process_killed_outside_any_operation_leaves_it_clear() -> None:
    cache = Cache(memory_limit=8 * MB)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        cache.bind_holder(4)
        cache.store(SET, b"k", b"v")
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    assert os.read(r, 1) == b"x"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert not cache.arena.holding(4)
    assert cache.get(b"k") is not None


def test_the_stats_walks_hold_the_holder_word_only_around_their_locks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``stats items`` reads each class's age from its pages with no lock held, for up to
    0.2 s with many pages: a process killed there (the maintainer serving a metrics scrape)
    holds no lock and has changed nothing, yet its holder word was set for the whole walk,
    and the supervisor emptied the cache for that death. Every page read of the walk now
    sees the word clear; it is set only while a class lock is held."""
    cache = Cache(memory_limit=8 * MB).view(holder=6)
    for i in range(2000):
        cache.store(SET, b"k%d" % i, b"v" * (i % 700))
    seen = []
    real = items_module.I32

    class Watched:
        def unpack_from(self, buf: object, offset: int = 0) -> tuple[int, ...]:
            seen.append(cache.arena.holding(6))
            return real.unpack_from(buf, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(items_module, "I32", Watched())
    rows = dict(cache.items_stats())
    monkeypatch.undo()
    assert len(rows) > 5 and len(seen) > 100  # every class's walk ran
    assert not any(seen)
    cache.slabs_stats()
    assert not cache.arena.holding(6)


def test_stats_carried_into_a_new_arena() -> None:
    """A new arena laid out for one a dead process left untrustworthy takes its counters
    (the daemon's ``total_items``, ``evictions``, ``get_expired``... carry on), not its
    gauges: it holds no item."""
    clock = FakeClock()
    old = Cache(memory_limit=2 * MB, clock=clock)
    for i in range(30_000):  # evictions, expirations and a flush counted
        old.store(SET, b"k%d" % i, b"v" * 100, exptime=5 if i % 3 else 0)
    clock.advance(10)
    for i in range(29_700, 30_000):
        old.get(b"k%d" % i)
    new = Cache(memory_limit=2 * MB, clock=clock)  # the same settings: the same layout
    new.reset_stats(like=old)
    gauges = ("curr_items", "bytes", "hash_power_level", "hash_bytes", "slab_global_page_pool")
    want = {k: v for k, v in old.stats().items() if k not in gauges}
    got = new.stats()
    assert got["curr_items"] == got["bytes"] == 0
    assert {k: got[k] for k in want} == want
    assert want["evictions"] and want["get_expired"] and want["total_items"] == 30_000
    new.reset_stats()  # and ``stats reset`` zeroes them
    assert new.stats()["total_items"] == new.stats()["evictions"] == 0


def test_views_of_one_arena_are_one_cache() -> None:
    cache = Cache(memory_limit=8 * MB)
    other = cache.view(holder=5)
    assert other.arena is cache.arena and other.holder == 5
    other.store(SET, b"k", b"v")
    assert cache.get(b"k") is not None
    assert cache.stats()["curr_items"] == other.stats()["curr_items"] == 1
    with pytest.raises(ValueError):
        cache.bind_holder(MAX_HOLDERS)


def test_a_table_that_cannot_grow_refuses_new_keys() -> None:
    """Sized from the reserve, a window always has room; forced small, a store is refused
    cleanly (never a probe loop over a full table)."""
    tiny = Cache(memory_limit=8 * MB, partitions=1, window=128)
    results = [tiny.store(SET, b"k%d" % i, b"v") for i in range(200)]
    assert results.count(StoreResult.STORED) == 128 * 9 // 10
    assert set(results) == {StoreResult.STORED, StoreResult.NO_MEMORY}
    assert all(tiny.get(b"k%d" % i) is not None for i in range(10))
    assert tiny.stats()["curr_items"] == 128 * 9 // 10


def test_close_unmaps_at_once_though_views_still_point_in() -> None:
    """The views sit in reference cycles (bound methods kept for the hot path), so waiting for
    their last reference would keep the mappings until the garbage collector runs; close()
    releases every view the arena cut and unmaps now."""
    cache = Cache(memory_limit=8 * MB)
    other = cache.view(holder=1)  # a second view: its partitions cut counter rows too
    cache.store(SET, b"k", b"v")
    arena = cache.arena
    arena.close()
    assert arena.pages.closed and arena.tables.closed and arena._words_map.closed
    with pytest.raises(ValueError):  # a stale view fails loudly, it never reads freed memory
        other.get(b"k")


def test_close_leaves_a_view_in_use_mapped() -> None:
    cache = Cache(memory_limit=8 * MB)
    arena = cache.arena
    busy = memoryview(arena.words)  # a buffer taken from a view, as a reader holds one
    arena.close()
    assert not arena._words_map.closed
    busy.release()
