"""Background threads that keep the cache in shape: memcached's LRU crawler and slab automover.

Both are daemon services (``start()``/``stop()``, started after the server, stopped before
it) around one method of `Cache`, which tests call directly instead of waiting on a thread:

* `LruCrawler` runs `Cache.crawl` every `interval` seconds and within a second of a
  ``flush_all``, and at once the pass an ``lru_crawler crawl`` asked for
  (`Cache.crawl_asked`: the worker that read the command answers at once, as memcached's
  hands it to its crawler thread, and serves its other clients meanwhile): classes that
  hold items with an exptime, or that a ``flush_all`` touched since their last sweep, are
  walked page by page and their expired and flushed items unlinked, so their memory is
  reused without anyone reading them. It sleeps after each page, as long as memcached's
  ``lru_crawler_sleep`` says for the items the page held, so a sweep never holds the
  interpreter for long; asleep, it is outside any cache operation
  (`Cache.crawl`): a maintainer killed there is replaced alone, the cache kept.
* `SlabAutomover` makes the page move a ``slabs reassign`` asked for as soon as it is asked
  (`Cache.move_asked`: the worker answers at once, as memcached hands the move to its
  rebalancer thread), and runs `Cache.automove_tick` every `interval` seconds: pages go back
  to the pool after ``cache_memlimit`` lowered the limit, classes sitting on several pages
  of free chunks give them back (up to 16 a tick), and with ``slab_automove`` 1 (a class
  evicted in each of the last 3 ticks while another evicted nothing) or 2 (a class evicted
  more than another) a page moves from the quiet class to the evicting one -- the cure for
  slab calcification.
* `Ticker` runs `Cache.tick` every second: reads refresh the last access of an item that is
  referenced and 60 s old (memcached's ``ITEM_UPDATE_INTERVAL``), and the read path learns
  "60 s ago" from one word instead of reading the clock. With the LRU maintainer on (as
  memcached's is by default) it also runs `Cache.reclaim_dead`: the dead items at each
  class's clock hand are reclaimed within a second, as memcached's maintainer pulls them
  off its LRUs' tails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mcached.storage.cache import Cache

log = logging.getLogger("mcached.storage")

FLUSH_LOOK = 1.0  # seconds: how soon the crawler sweeps after a flush_all


class _Periodic:
    """A daemon thread calling `run()` every `interval` seconds until `stop()`."""

    name = "mcached-periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _step(self) -> float:
        """Seconds between two looks at `due`."""
        return self.interval

    def due(self, elapsed: float) -> bool:
        """Whether to run now, `elapsed` seconds after the last run began."""
        return True

    def _sleep(self, timeout: float) -> bool:
        """Wait `timeout` seconds between two looks; True once stopped."""
        return self._stop.wait(timeout)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._sleep(self._step()):
            if not self.due(time.monotonic() - last):
                continue
            last = time.monotonic()
            try:
                self.run()
                self.runs += 1
            except Exception:  # a bug here must not kill the thread silently
                log.exception("%s failed", self.name)

    def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class LruCrawler(_Periodic):
    """Reclaims expired items nobody reads (memcached's ``-o lru_crawler``)."""

    name = "mcached-lru-crawler"

    def __init__(
        self,
        cache: Cache,
        interval: float = 60.0,
        enabled: Callable[[], bool] | None = None,
        sleep: Callable[[], int] = lambda: 100,
        tocrawl: Callable[[], int] = lambda: 0,
    ) -> None:
        """60 s: memcached's autocrawl waits as long before a class's first sweep. (The
        clock hand reclaims expired items of a full class anyway; a sweep costs about a
        second of interpreter time per million items.) `enabled`: asked before each sweep
        (``lru_crawler enable|disable`` at run time); None is always. `sleep` and `tocrawl`
        are asked before each sweep too: memcached's ``lru_crawler_sleep`` (microseconds
        after each 1000 items checked) and ``lru_crawler_tocrawl`` (items of each class
        checked at most, 0 all)."""
        super().__init__(interval)
        self.cache = cache
        self.enabled = enabled
        self.sleep = sleep
        self.tocrawl = tocrawl
        self.reclaimed = 0
        self._flush_gen = cache.flush_gen
        self._sweep = False  # the next pass follows a flush_all

    def _step(self) -> float:
        return min(self.interval, FLUSH_LOOK)

    def _sleep(self, timeout: float) -> bool:
        # woken at once by a pass asked for (or by `stop`)
        self.cache.await_crawl_ask(timeout)
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self.cache.wake_crawler()
        super().stop()

    def due(self, elapsed: float) -> bool:
        """Every `interval`, within `FLUSH_LOOK` of a flush_all (memcached's maintainer
        frees flushed items from its LRU tails as it meets them, so their memory, and the
        pages the automover can then give back, is free within seconds), and as soon as a
        pass is asked for."""
        if self.cache.crawl_waiting:
            return True
        gen = self.cache.flush_gen
        if gen != self._flush_gen:
            self._flush_gen = gen
            self._sweep = True
        return self._sweep or elapsed + 0.001 >= self.interval

    def run(self) -> None:
        nap = self._napper()
        if self._sweep and not self.cache.crawl_waiting:
            # memcached's LRU maintainer's work, not its crawler's: even while the crawler
            # is disabled, and counted as no crawl (`Cache.crawl`). Owed until it has run:
            # a pass asked for goes first, and the crawl lock may be taken for a moment by
            # a worker asking for one (the sweep was dropped then, and flushed items waited
            # for the interval or the hand)
            self._sweep = False
            reclaimed = self.cache.crawl(pause=nap, sweep=True)
            if not reclaimed and self.cache.crawl_busy:
                self._sweep = True
            self.reclaimed += reclaimed
            return
        if self.enabled is not None and not self.enabled():
            return
        if self.cache.crawl_waiting:
            self.reclaimed += self.cache.crawl_asked(pause=nap)
        else:
            self.reclaimed += self.cache.crawl(pause=nap, limit=self.tocrawl())

    def _napper(self) -> Callable[[int], None]:
        """A pass's `pause`: memcached's ``lru_crawler_sleep`` after every 1000 items, the
        setting read as the pass goes (as memcached reads it), the naps cut short by `stop`."""
        sleep = self.sleep
        stop = self._stop
        since = 0  # items checked since the last sleep

        def nap(checked: int) -> None:
            # memcached sleeps after every 1000 items; a page is checked whole, so its
            # naps come after it, each as long as the setting says then (a sleep lowered
            # meanwhile shortens the rest). With no sleep, it still gives way (worker
            # threads).
            nonlocal since
            since += checked
            naps, since = divmod(since, 1000)
            slept = False
            for _ in range(naps):
                pause = sleep() / 1e6
                if pause:
                    slept = True
                    if stop.wait(pause):
                        return
            if not slept:
                time.sleep(0)

        return nap


class SlabAutomover(_Periodic):
    """Moves pages to the classes that need them (memcached's slab automover and rebalancer
    threads): the move a ``slabs reassign`` asked for at once (`Cache.move_asked`: the worker
    that read the command has answered already), and an automover tick every `interval`."""

    name = "mcached-slab-automover"

    def __init__(
        self,
        cache: Cache,
        interval: float = 1.0,
        ratio: Callable[[], float] = lambda: 0.8,
        window: int = 30,
    ) -> None:
        super().__init__(interval)
        self.cache = cache
        self.moved = 0
        self.ratio = ratio  # slab_automove_ratio, which `slabs automove ratio` changes
        self.window = window

    def _sleep(self, timeout: float) -> bool:
        """Between two ticks: make each move asked for as soon as it is asked (woken by
        `Cache.reassign`, or by `stop`)."""
        end = time.monotonic() + timeout
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.cache.await_move_ask(left)
            if self._stop.is_set() or not self.cache.move_waiting:
                continue
            try:
                if self.cache.move_asked():
                    self.moved += 1
            except Exception:  # a bug here must not kill the thread silently
                log.exception("%s failed", self.name)
        return True

    def stop(self) -> None:
        self._stop.set()
        self.cache.wake_mover()
        super().stop()

    def run(self) -> None:
        if self.cache.automove_tick(self.ratio(), self.window):
            self.moved += 1


class Ticker(_Periodic):
    """Moves the read path's "60 s ago" (`Cache.tick`) once a second, as memcached's clock
    event moves its ``current_time``."""

    name = "mcached-ticker"

    def __init__(
        self,
        cache: Cache,
        interval: float = 1.0,
        beat: Callable[[], None] | None = None,
        reclaim: bool = False,
    ) -> None:
        super().__init__(interval)
        self.cache = cache
        self.beat = beat  # told every run: whoever watches that the maintainer runs
        self.reclaim = reclaim  # -o lru_maintainer: dead items at the clock hands too
        self.reclaimed = 0

    def start(self) -> None:
        self.cache.tick()  # right away: a second's wait would leave it at 0 meanwhile
        super().start()

    def run(self) -> None:
        self.cache.tick()
        if self.reclaim:
            self.reclaimed += self.cache.reclaim_dead()
        if self.beat is not None:
            self.beat()
