"""The background services: LRU crawler and slab automover threads (mcached/storage/
maintainer.py). Short intervals, bounded waits: a test fails only if nothing happens within
several seconds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from mcached.clock import FakeClock
from mcached.storage.arena import G_ACCESS_BEFORE, G_CRAWLING
from mcached.storage.cache import Cache
from mcached.storage.maintainer import LruCrawler, SlabAutomover, Ticker
from mcached.storage.results import ReassignResult, StoreMode

pytestmark = pytest.mark.unit

MB = 1024 * 1024


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_the_crawler_thread_reclaims_expired_items() -> None:
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(2000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 100, exptime=5 if i % 2 else 0)
    crawler = LruCrawler(cache, interval=0.01, sleep=lambda: 500)
    crawler.start()
    try:
        assert wait_for(lambda: crawler.runs >= 2)
        assert cache.stats()["curr_items"] == 2000  # nothing expired yet
        clock.advance(5)
        assert wait_for(lambda: cache.stats()["curr_items"] == 1000)
        assert wait_for(lambda: crawler.reclaimed == 1000)
        st = cache.stats()
        assert st["crawler_reclaimed"] == 1000 and st["get_expired"] == 0
        assert st["lru_crawler_starts"] >= 3
    finally:
        crawler.stop()
    assert not any(t.name == LruCrawler.name for t in threading.enumerate())


def test_the_crawler_sweeps_within_a_second_of_a_flush_all() -> None:
    """memcached's maintainer frees flushed items as it meets them at its LRU tails, so a
    flushed cache's pages can go back to the pool at once (slabs-reassign2.t): the crawler
    does not wait for its interval after a flush_all."""
    cache = Cache(memory_limit=16 * MB, clock=FakeClock())
    for i in range(2000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 100)
    crawler = LruCrawler(cache, interval=60.0, sleep=lambda: 0)
    crawler.start()
    try:
        time.sleep(0.05)
        assert crawler.runs == 0  # its interval is a minute
        cache.flush_all()
        assert wait_for(lambda: crawler.reclaimed == 2000, timeout=5)
        assert crawler.runs == 1
        classes, _ = cache.slabs_stats()
        assert sum(row["used_chunks"] for _, row in classes) == 0
        st = cache.stats()  # the maintainer's reclaims, not a crawl, not direct
        assert (st["reclaimed"], st["direct_reclaims"], st["lru_crawler_starts"]) == (2000, 0, 0)
        assert st["crawler_items_checked"] == 0
    finally:
        crawler.stop()


def test_the_sweep_after_a_flush_all_waits_for_a_crawl_asked_for_then_runs() -> None:
    """A crawl of one class asked for between the crawler's noticing a flush_all and its
    sweep runs first; the sweep the flush owes every class runs after it (it was dropped:
    the flushed items of the other classes then waited a minute for the crawler's
    interval, or for the hand). The crawler's steps are driven here as its thread takes
    them: `due`, then `run`."""
    cache = Cache(memory_limit=16 * MB, clock=FakeClock())
    for i in range(1000):
        cache.store(StoreMode.SET, b"s%d" % i, b"x" * 10)
        cache.store(StoreMode.SET, b"b%d" % i, b"x" * 1900)
    crawler = LruCrawler(cache, interval=60.0, sleep=lambda: 0)
    cache.flush_all()
    assert crawler.due(0.0)  # the flush noticed: a sweep is owed
    assert cache.ask_crawl({cache.class_of(2000)})  # the big items' class alone
    crawler.run()  # the pass asked for
    assert crawler.reclaimed == 1000
    assert crawler.due(0.0)  # the sweep still owed, not the interval's
    crawler.run()
    assert crawler.reclaimed == 2000
    assert not crawler.due(0.0)
    classes, _ = cache.slabs_stats()
    assert sum(row["used_chunks"] for _, row in classes) == 0


def test_the_crawler_sleeps_after_each_1000_items_and_reads_its_settings_each_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``lru_crawler sleep`` (microseconds after every 1000 items checked) and ``lru_crawler
    tocrawl`` (items of each class checked at most) are read at run time: the sleep as the
    pass goes, tocrawl before every sweep. A nap is a wait on the crawler's stop event, so
    stopping it cuts the nap short."""
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(5000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 100, exptime=5)
    clock.advance(5)
    slept: list[float] = []
    settings = {"sleep": 200_000, "tocrawl": 1500}
    crawler = LruCrawler(
        cache, sleep=lambda: settings["sleep"], tocrawl=lambda: settings["tocrawl"]
    )
    monkeypatch.setattr(crawler._stop, "wait", slept.append)
    crawler.run()
    assert crawler.reclaimed == 1500  # the first 1500 items checked of the one class
    assert sum(slept) == pytest.approx(0.2)  # one nap: 1000 items; the other 500 wait
    settings.update(sleep=0, tocrawl=0)
    crawler.run()
    assert crawler.reclaimed == 5000 and cache.stats()["curr_items"] == 0


def test_a_sleep_lowered_during_a_page_shortens_its_naps_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of 5000 items is checked whole, then napped after as five naps of 1000: each
    reads the setting, as memcached reads it before each nap (the whole page's five were
    taken at the first value: a crawl at sleep 1 s stayed BUSY ~10 s after sleep 0)."""
    cache = Cache(memory_limit=16 * MB, clock=FakeClock())
    values = iter([200_000])  # then 0: lowered after the first nap
    crawler = LruCrawler(cache, sleep=lambda: next(values, 0))
    slept: list[float] = []
    monkeypatch.setattr(crawler._stop, "wait", slept.append)
    crawler._napper()(5000)
    assert slept == [0.2]


def test_the_crawler_naps_outside_any_cache_operation() -> None:
    """Between pages a pass holds only its crawl lock: its holder word is clear there, so a
    process killed in a nap leaves the arena whole (tests/server/test_supervisor.py kills
    one there); its successor lets the pass go (`release_holder`), crawl lock included."""
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    crawler = cache.view(holder=3)  # a maintainer process's view
    for i in range(2000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 100, exptime=5)
    clock.advance(5)
    naps: list[tuple[bool, int]] = []

    def nap(checked: int) -> None:
        naps.append((cache.arena.holding(3), cache.stats()["lru_crawler_running"]))

    assert crawler.crawl(pause=nap) == 2000
    assert naps and set(naps) == {(False, 1)}  # not inside an operation, yet crawling
    assert not cache.arena.holding(3)
    # what a process killed in a nap leaves: the crawl lock taken, and itself named
    cache.arena.crawl_lock.acquire()
    cache.arena.words[G_CRAWLING] = 3 + 1
    starts = cache.stats()["lru_crawler_starts"]
    assert cache.crawl() == 0 and cache.stats()["lru_crawler_starts"] == starts  # busy
    cache.release_holder(2)  # another process's successor: not its pass
    assert cache.stats()["lru_crawler_running"] == 1
    cache.release_holder(3)  # its own
    assert cache.stats()["lru_crawler_running"] == 0
    cache.crawl()
    assert cache.stats()["lru_crawler_starts"] == starts + 1


def test_the_automover_thread_gives_pages_back_after_the_limit_drops() -> None:
    cache = Cache(memory_limit=8 * MB, clock=FakeClock())
    for i in range(80_000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 30)
    assert cache.slabs_stats()[1]["total_malloced"] == 8 * MB
    mover = SlabAutomover(cache, interval=0.01)
    mover.start()
    try:
        cache.set_memory_limit(5 * MB)
        assert wait_for(lambda: cache.slabs_stats()[1]["total_malloced"] == 5 * MB)
        # the third page is back before the thread has counted its move
        assert wait_for(lambda: mover.moved >= 3) and mover.moved == 3
    finally:
        mover.stop()


def test_the_mover_makes_a_move_asked_for_at_once() -> None:
    """``slabs reassign`` asks (`Cache.reassign`) and the thread moves the page within moments,
    not at its next tick (an hour away here); then it can be asked again."""
    cache = Cache(memory_limit=8 * MB, clock=FakeClock())
    for i in range(40_000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 30)  # 4 pages of class 1
    pages = lambda cid: dict(cache.slabs_stats()[0]).get(cid, {}).get("total_pages", 0)  # noqa: E731
    mover = SlabAutomover(cache, interval=3600)
    mover.start()
    try:
        for dst in (5, 7, 9):
            assert cache.reassign(1, dst) is ReassignResult.OK
            assert wait_for(lambda: not cache.move_waiting)  # noqa: B023
            assert pages(dst) == 1
        assert mover.moved == 3 and pages(1) == 1
        assert cache.stats()["slabs_moved"] == 3
    finally:
        mover.stop()


def test_a_reassign_during_an_automover_tick_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the automover's tick held the move lock while it only looked at the
    classes, so a ``slabs reassign`` that came meanwhile was BUSY with no page moving
    (memcached's automover decides without its rebalance lock). The tick's period, a second
    and the tick, is a ``reassign; sleep 1`` client's too: slabs-reassign-chunked.t's three
    reassigns could all meet it, and no page moved (4 of its 8 subtests failed)."""
    cache = Cache(memory_limit=8 * MB, clock=FakeClock())
    for i in range(40_000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 30)  # 4 pages of class 1
    items = cache._items
    looking, go_on = threading.Event(), threading.Event()
    counter = items.class_counter

    def slow_counter(f: int) -> list[int]:
        looking.set()
        go_on.wait(10)
        return counter(f)

    monkeypatch.setattr(items, "class_counter", slow_counter)
    tick = threading.Thread(target=cache.automove_tick)
    tick.start()
    try:
        assert looking.wait(10)  # the tick is looking at the classes
        assert cache.reassign(1, 5) is ReassignResult.OK
    finally:
        go_on.set()
        tick.join(10)
    assert cache.move_asked() and dict(cache.slabs_stats()[0])[5]["total_pages"] == 1


def test_a_failing_run_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    class Broken(SlabAutomover):
        def run(self) -> None:
            calls.append(1)
            raise RuntimeError("boom")

    mover = Broken(Cache(memory_limit=8 * MB), interval=0.01)
    with caplog.at_level(logging.ERROR, logger="mcached.storage"):
        mover.start()
        try:
            assert wait_for(lambda: len(calls) >= 3)
        finally:
            mover.stop()
    assert "failed" in caplog.text and "boom" in caplog.text
    mover.stop()  # stopping twice is harmless


def test_the_ticker_moves_the_read_paths_60_seconds_ago() -> None:
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    words = cache._w
    assert words[G_ACCESS_BEFORE] == 0  # no ticker: reads never refresh on age
    ticker = Ticker(cache, interval=0.01)
    ticker.start()
    try:
        assert words[G_ACCESS_BEFORE] == clock.now() - 60  # at once, not a second later
        clock.advance(100)
        assert wait_for(lambda: words[G_ACCESS_BEFORE] == clock.now() - 60)
    finally:
        ticker.stop()


def test_the_dead_items_at_the_clock_hands_are_reclaimed_as_memcacheds_maintainer_does() -> None:
    """Regression (a hunt against memcached -t 4): 2,000 items set with a 1 s exptime and
    never read stayed in curr_items, bytes and `stats items` for up to a minute (the
    crawler's next pass), where memcached's LRU maintainer pulls them off its tails within
    moments (reclaimed 2000, expired_unfetched 2000); with the crawler off, until an
    allocation met them. A run of dead items at the hand goes now, counted as memcached
    counts it (not a direct reclaim, nor the crawler's), and a live item ends the run."""
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(2000):
        cache.store(StoreMode.SET, b"k%d" % i, b"x" * 100, exptime=1)
    cache.store(StoreMode.SET, b"live", b"x" * 100)  # after them in the class's page
    for i in range(5):
        cache.store(StoreMode.SET, b"late%d" % i, b"x" * 100, exptime=1)
    assert cache.reclaim_dead() == 0  # nothing dead yet
    clock.advance(2)
    ticker = Ticker(cache, interval=0.01, reclaim=True)
    ticker.start()
    try:
        assert wait_for(lambda: cache.stats()["curr_items"] == 1)
    finally:
        ticker.stop()
    st = cache.stats()
    # the five dead ones just past the live item are within the hand's look ahead too
    assert ticker.reclaimed == 2005 and st["curr_items"] == 1
    assert (st["reclaimed"], st["expired_unfetched"], st["crawler_reclaimed"]) == (2005, 2005, 0)
    assert st["direct_reclaims"] == 0
    assert cache.get(b"live") is not None
    # without the flag (-o no_lru_maintainer) the ticker reclaims nothing
    for i in range(3):
        cache.store(StoreMode.SET, b"again%d" % i, b"x" * 100, exptime=1)
    clock.advance(2)
    quiet = Ticker(cache, interval=0.01)
    quiet.start()
    try:
        assert wait_for(lambda: quiet.runs >= 3)
    finally:
        quiet.stop()
    assert quiet.reclaimed == 0 and cache.stats()["curr_items"] == 4


def test_thousands_of_items_that_expire_at_once_go_in_one_run() -> None:
    """Regression (a hunt at -t 4 -m 8): `reclaim_dead` took at most 1,000 dead items a
    class a run (a second), so 3,000 that expired together took three, and stores in the
    meantime evicted live items while dead ones waited (36 extra evictions, curr_items too
    high for a minute); memcached's maintainer, its passes a millisecond apart while it
    finds some, had them all within the second. One run takes a run of any length now,
    within its time budget."""
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(5000):
        cache.store(StoreMode.SET, b"t%d" % i, b"x" * 1000, exptime=2)
    cache.store(StoreMode.SET, b"live", b"x" * 1000)
    clock.advance(3)
    # (a budget no loaded machine reaches: the test is of the count, not of the speed)
    assert cache.reclaim_dead(budget=60) == 5000
    assert cache.stats()["curr_items"] == 1 and cache.get(b"live") is not None
    # the budget ends a run: the rest is the next run's (checked every 256 items)
    cache = Cache(memory_limit=16 * MB, clock=clock)
    for i in range(600):
        cache.store(StoreMode.SET, b"u%d" % i, b"x" * 1000, exptime=2)
    clock.advance(3)
    assert cache.reclaim_dead(budget=0) == 256
    assert cache.reclaim_dead(budget=60) == 344


def test_a_crawl_asked_for_is_run_by_the_crawler_at_once_and_one_at_a_time() -> None:
    """``lru_crawler crawl`` leaves a pass for the crawler (`Cache.ask_crawl`): the crawler,
    asleep for its interval, wakes for it at once and runs it with the classes and tocrawl
    asked; while one is asked for or runs, another is refused (BUSY), never merged or lost."""
    clock = FakeClock()
    cache = Cache(memory_limit=16 * MB, clock=clock)
    big = cache.class_of(2000)
    for i in range(300):
        cache.store(StoreMode.SET, b"s%d" % i, b"x" * 10, exptime=5)
        cache.store(StoreMode.SET, b"b%d" % i, b"x" * 1900, exptime=5)
    clock.advance(5)
    assert cache.stats()["lru_crawler_running"] == 0
    assert cache.ask_crawl({big, 63}, limit=100)
    assert cache.crawl_waiting
    # running from the ask, as memcached's: a client that polls lru_crawler_running until
    # it is 0 must not take a pass not yet begun for one done (lru-crawler.t did, and found
    # the 30 expired items still there)
    assert cache.stats()["lru_crawler_running"] == 1
    assert not cache.ask_crawl(None)  # asked for already
    cache.arena.crawl_lock.acquire()  # as a pass that runs holds it
    try:
        assert cache.crawl_asked() == 0  # it waits for that pass
    finally:
        cache.arena.crawl_lock.release()
    crawler = LruCrawler(cache, interval=3600)  # its own sweeps: an hour away
    crawler.start()
    try:
        assert wait_for(lambda: not cache.crawl_waiting and crawler.reclaimed == 100)
        assert cache.stats()["curr_items"] == 500  # the small items' class was not asked
        assert cache.ask_crawl(None)  # the next one: every class, no limit
        assert wait_for(lambda: crawler.reclaimed == 600)
    finally:
        crawler.stop()
    assert cache.stats()["curr_items"] == 0
    assert cache.stats()["lru_crawler_running"] == 0
