"""mcached/handlers.py: a value lent to a multiget's streamed reply (sent from the cache's
own memory, pinned) is given back only once every piece of it has been queued.

The connection pulls a stream's pieces while little waits unsent and may stop between any two
of them, e.g. between a ``VALUE`` line and its value; the pin's release is tied to the bytes
queued when it is registered (`Session.after_sent`). Registered at the lookup, it was tied to
bytes that did not include the value: the value then went out from memory a store may be
rewriting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mcached.cli import parse_settings
from mcached.clock import FakeClock
from mcached.handlers import STREAM_AFTER, STREAM_KEYS, Handlers
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Pieces
from mcached.stats import Counters
from mcached.storage.arena import OFF_PINS
from mcached.storage.cache import PIN_MIN, Cache
from mcached.storage.results import StoreMode

pytestmark = pytest.mark.unit


def pins(cache: Cache) -> int:
    """Pins held on every item of the cache."""
    items = cache._items
    return sum(items.pm[a + OFF_PINS] for part in items.parts for _, a in items.iter_items(part))


class Pulling:
    """A session as a connection is one: a release registered (`after_sent`) is tied, at
    the next flush, to every byte queued by then; the stream is pulled a piece at a time,
    with a flush after each piece (a pull may stop after any of them)."""

    def __init__(self) -> None:
        self.out: list[Any] = []
        self.counters = Counters()
        self.stream: Any = None
        self.stream_held = 0
        self.stacked = 0
        self.datagram = False
        self.releases: list[list[Any]] = []  # [bytes queued it is tied to, callback]

    def after_sent(self, callback: Callable[[], None]) -> None:
        self.releases.append([None, callback])

    def flush(self) -> None:
        queued = sum(len(p) for p in self.out)
        for entry in self.releases:
            if entry[0] is None:
                entry[0] = queued

    def pull_all(self) -> bytes:
        self.flush()  # the turn that made the reply's start
        for piece in self.stream:
            if piece.__class__ is Pieces:
                self.out += piece.views
            else:
                self.out.append(piece)
            self.flush()
        self.stream = None
        self.flush()
        return b"".join(bytes(p) for p in self.out)


def test_a_lent_value_is_released_only_after_its_pieces_are_queued() -> None:
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    handlers = Handlers(cache, parse_settings([]), info=None)  # type: ignore[arg-type]
    # distinct values, lent (>= PIN_MIN), enough of them for the reply to be streamed
    values = {b"k%03d" % i: bytes([65 + i % 26]) * (PIN_MIN + 37 * i) for i in range(40)}
    assert sum(map(len, values.values())) > 2 * STREAM_AFTER
    for key, value in values.items():
        cache.store(StoreMode.SET, key, value)
    s = Pulling()
    handlers.gets(c.Gets(list(values)), s)  # type: ignore[arg-type]
    assert s.stream is not None  # the rest of the reply is a stream
    reply = s.pull_all()
    assert reply.endswith(b"END\r\n")
    assert len(s.releases) == len(values)  # every value was lent
    # the i-th release was registered once the i-th value's last byte was queued
    for (queued, _), (key, value) in zip(s.releases, values.items(), strict=True):
        head = reply.index(b"VALUE %b " % key)
        end = reply.index(value, head) + len(value)
        assert queued >= end, (key, queued, end)
    assert pins(cache) == len(values)
    for _, release in s.releases:
        release()
    assert pins(cache) == 0


def test_a_stream_closed_part_way_gives_back_what_it_had_looked_up() -> None:
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    handlers = Handlers(cache, parse_settings([]), info=None)  # type: ignore[arg-type]
    keys = [b"k%03d" % i for i in range(40)]
    for key in keys:
        cache.store(StoreMode.SET, key, b"v" * (2 * PIN_MIN))
    s = Pulling()
    handlers.gets(c.Gets(keys), s)  # type: ignore[arg-type]
    assert s.stream is not None
    s.flush()
    s.out.append(next(s.stream))  # a VALUE line: its value is looked up, not yet taken
    s.flush()
    assert pins(cache) == len(s.releases) + 1
    s.stream.close()  # the connection closed: the value looked up and never taken goes back
    assert pins(cache) == len(s.releases)
    for _, release in s.releases:
        release()  # what the turn had queued: sent (or dropped) and given back
    assert pins(cache) == 0


@pytest.mark.parametrize("miss", [False, True], ids=["small-values", "misses"])
def test_a_long_multiget_of_small_values_streams_after_stream_keys_lookups(miss: bool) -> None:
    """A get's first turn looks up at most STREAM_KEYS keys, whatever their size (each counts
    KEY_FLOOR bytes of the reply at least); the rest is looked up as the client reads.
    Regression (a hunt with a thousand clients each sending one such get, never read): the
    first turn was bounded by STREAM_AFTER bytes of keys and values alone, ~13,000 lookups
    of 2-byte values (and every key of misses), which held every other client of the worker
    for tens of seconds (memcached: a few)."""
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    handlers = Handlers(cache, parse_settings([]), info=None)  # type: ignore[arg-type]
    keys = [b"%05d" % i for i in range(3 * STREAM_KEYS)]
    if not miss:
        for key in keys:
            cache.store(StoreMode.SET, key, b"vv")
    looked: list[bytes] = []
    get_ref = cache.get_ref

    def counting(key: bytes) -> Any:
        looked.append(key)
        return get_ref(key)

    get_refs = cache.get_refs

    def counting_run(keys: list[bytes], budget: int, floor: int) -> Any:
        hits, size, lent = get_refs(keys, budget, floor)
        looked.extend(keys[: len(hits)])
        return hits, size, lent

    cache.get_ref = counting  # type: ignore[method-assign]
    cache.get_refs = counting_run  # type: ignore[method-assign]
    s = Pulling()
    handlers.get(c.Get(keys), s)  # type: ignore[arg-type]
    assert STREAM_KEYS * 0.8 < len(looked) <= STREAM_KEYS and s.stream is not None
    reply = s.pull_all()
    assert len(looked) == len(keys)
    assert reply.count(b"VALUE ") == (0 if miss else len(keys)) and reply.endswith(b"END\r\n")
    # a get of fewer keys is made whole in its turn
    looked.clear()
    s = Pulling()
    handlers.get(c.Get(keys[: STREAM_KEYS // 2]), s)  # type: ignore[arg-type]
    assert len(looked) == STREAM_KEYS // 2 and s.stream is None
