"""Server time and memcached's exptime rules.

memcached keeps ``current_time``: whole seconds since the process started (plus a small
offset so that 0 never means "now"), and converts every client exptime with ``realtime()``:

* 0 means never expire;
* up to 30 days (2,592,000 s) is relative to now;
* larger values are a unix timestamp; one at or before the process start means "already gone";
* a negative exptime means already expired.

Storage stores the converted relative time and compares it with `Clock.now()`; an item
whose exptime is not 0 and is <= now has expired. Tests inject `FakeClock` and call
`advance()` instead of sleeping.
"""

from __future__ import annotations

import time

REALTIME_MAXDELTA = 60 * 60 * 24 * 30  # 30 days: memcached's cut between relative and absolute
# memcached starts current_time a little above zero (process_started = time(0) - 2 - 60) so that
# a relative time of 0 is never "now"; we start at the same offset.
START_OFFSET = 62
UPTIME_OFFSET = 60  # stats uptime is current_time less this (memcached's ITEM_UPDATE_INTERVAL)


class Clock:
    """Monotonic whole seconds since start, and the wall-clock time the process started."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic() - START_OFFSET
        self.process_started = int(time.time()) - START_OFFSET

    def now(self) -> int:
        return int(time.monotonic() - self._mono0)

    def realtime(self, exptime: int, now: int | None = None) -> int:
        """Convert a client exptime to server time (memcached's ``realtime()``); a relative
        one counts from `now` if given (when its command came), else from now."""
        if exptime == 0:
            return 0
        if exptime < 0:
            # memcached's EXPTIME_TO_POSITIVE_TIME: negative means already expired.
            return 1
        if exptime > REALTIME_MAXDELTA:
            if exptime <= self.process_started:
                return 1
            return exptime - self.process_started
        return exptime + (self.now() if now is None else now)

    def uptime(self) -> int:
        """``stats``' uptime: memcached's ``current_time - ITEM_UPDATE_INTERVAL`` (60), so a
        daemon just started says 2."""
        return max(0, self.now() - UPTIME_OFFSET)

    def unixtime(self) -> int:
        """The wall-clock time that server time `now()` stands for."""
        return self.process_started + self.now()


class FakeClock(Clock):
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: int = START_OFFSET, process_started: int = 1_700_000_000) -> None:
        self._now = start
        self.process_started = process_started

    def now(self) -> int:
        return self._now

    def advance(self, seconds: int) -> None:
        self._now += seconds
