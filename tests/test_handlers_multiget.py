"""mcached/handlers.py: a multiget's keys looked up in one call of the cache's
(`Cache.get_refs`) and rendered in one call of the protocol's (`reply_values`): what the loop
of one call a key did must all still happen (counters, the legacy discovery key, repeats,
lent values and chained ones, a large copy ending the turn)."""

from __future__ import annotations

import pytest

from mcached.cli import parse_settings
from mcached.clock import Clock, FakeClock
from mcached.cluster.config import LEGACY_KEY
from mcached.handlers import STREAM_AFTER, Handlers
from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Pieces
from mcached.storage.cache import CHAIN_PIN_MIN, PIN_MIN, Cache
from mcached.storage.results import StoreMode
from tests.test_discovery import make
from tests.test_handlers_lending import Pulling, pins

pytestmark = pytest.mark.unit

SET = StoreMode.SET


def setup(**kw: object) -> tuple[Cache, Handlers]:
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    return cache, Handlers(cache, parse_settings([]), info=None, **kw)  # type: ignore[arg-type]


def test_hits_and_misses_are_rendered_and_counted() -> None:
    cache, handlers = setup()
    cache.store(SET, b"a", b"1", 5)
    cache.store(SET, b"c", b"333")
    s = Pulling()
    handlers.get(c.Get([b"a", b"b", b"c", b"d"]), s)  # type: ignore[arg-type]
    assert s.stream is None and s.out == [b"VALUE a 5 1\r\n1\r\nVALUE c 0 3\r\n333\r\nEND\r\n"]
    ctr = s.counters
    assert (ctr.cmd_get, ctr.get_hits, ctr.get_misses) == (4, 2, 2)
    cas = [hit[2] for hit in (cache.get(b"a"), cache.get(b"c")) if hit is not None]
    s = Pulling()
    handlers.gets(c.Gets([b"c", b"x", b"a"]), s)  # type: ignore[arg-type]
    assert s.out == [b"VALUE c 0 3 %d\r\n333\r\nVALUE a 5 1 %d\r\n1\r\nEND\r\n" % (cas[1], cas[0])]


def test_a_repeated_key_is_served_each_time() -> None:
    cache, handlers = setup()
    cache.store(SET, b"a", b"1")
    cache.store(SET, b"big", b"B" * PIN_MIN)  # repeated: lent each time, as it comes
    s = Pulling()
    handlers.get(c.Get([b"a", b"big", b"a", b"nope", b"big"]), s)  # type: ignore[arg-type]
    assert s.stream is None  # (all of it in this turn)
    reply = b"".join(bytes(p) for p in s.out)
    big = b"VALUE big 0 %d\r\n%b\r\n" % (PIN_MIN, b"B" * PIN_MIN)
    assert reply == b"VALUE a 0 1\r\n1\r\n" + big + b"VALUE a 0 1\r\n1\r\n" + big + b"END\r\n"
    assert (s.counters.cmd_get, s.counters.get_hits, s.counters.get_misses) == (5, 4, 1)
    # nothing kept for the repeats: each occurrence of big was lent under its own pin,
    # given back once sent
    assert len(s.releases) == 2 and pins(cache) == 2
    for _, release in s.releases:
        release()
    assert pins(cache) == 0


def test_a_repeated_legacy_key_serves_the_cluster_each_time() -> None:
    """Keys that repeat take the one-call lookup too: each miss of the legacy key served."""
    d = make()
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    handlers = Handlers(cache, d.settings, None, Clock(), discovery=d)
    cache.store(SET, b"k", b"v")
    s = Pulling()
    handlers.get(c.Get([LEGACY_KEY, b"k", LEGACY_KEY]), s)  # type: ignore[arg-type]
    data = d.data()
    legacy = b"VALUE %b 0 %d\r\n%b\r\n" % (LEGACY_KEY, len(data), data)
    assert s.out == [legacy + b"VALUE k 0 1\r\nv\r\n" + legacy + b"END\r\n"]
    assert (s.counters.cmd_get, s.counters.get_hits, s.counters.get_misses) == (3, 3, 0)


def test_the_legacy_key_missed_among_others_serves_the_cluster() -> None:
    """Auto discovery before 1.4.14: the cluster's data as an item, on a miss of the legacy
    key, in a multiget too (a hit of it is a hit)."""
    d = make()
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    handlers = Handlers(cache, d.settings, None, Clock(), discovery=d)
    cache.store(SET, b"k", b"v")
    s = Pulling()
    handlers.get(c.Get([b"k", LEGACY_KEY, b"m"]), s)  # type: ignore[arg-type]
    data = d.data()
    assert s.out == [
        b"VALUE k 0 1\r\nv\r\nVALUE %b 0 %d\r\n%b\r\nEND\r\n" % (LEGACY_KEY, len(data), data)
    ]
    assert (s.counters.cmd_get, s.counters.get_hits, s.counters.get_misses) == (3, 2, 1)
    # gets asks for CAS uniques: the legacy key's form is a get's only
    s = Pulling()
    handlers.gets(c.Gets([b"k", LEGACY_KEY]), s)  # type: ignore[arg-type]
    assert LEGACY_KEY not in b"".join(s.out)


def test_lent_values_and_chained_ones_go_back_once_sent() -> None:
    cache, handlers = setup()
    lent = b"L" * PIN_MIN
    chained = bytes(range(256)) * ((CHAIN_PIN_MIN + 700_000) // 256)
    cache.store(SET, b"lent", lent)
    cache.store(SET, b"chained", chained, 9)
    cache.store(SET, b"small", b"s")
    s = Pulling()
    handlers.get(c.Get([b"small", b"chained", b"lent"]), s)  # type: ignore[arg-type]
    assert any(p.__class__ is Pieces for p in s.out)  # the chunks' views, never joined
    reply = s.pull_all() if s.stream is not None else b"".join(bytes(p) for p in s.out)
    assert reply == (
        b"VALUE small 0 1\r\ns\r\n"
        + b"VALUE chained 9 %d\r\n%b\r\n" % (len(chained), chained)
        + b"VALUE lent 0 %d\r\n%b\r\nEND\r\n" % (len(lent), lent)
    )
    assert len(s.releases) == 2 and pins(cache) == 2
    s.flush()
    assert all(queued is not None for queued, _ in s.releases)
    for _, release in s.releases:
        release()
    assert pins(cache) == 0


def test_a_large_copy_ends_the_turn() -> None:
    """A value of STREAM_AFTER bytes or more that could not be lent (its worker's pin row
    full) is a copy: the turn ends with its reply, as a one-key get's does."""
    cache = Cache(memory_limit=64 * 1024 * 1024, clock=FakeClock())
    worker = cache.view(holder=1)
    worker.bind_holder(1, pin_slots=4)  # lends while more than one entry is free
    handlers = Handlers(worker, parse_settings([]), info=None)  # type: ignore[arg-type]
    worker.store(SET, b"big", b"b" * STREAM_AFTER)
    held = [worker.get_ref(b"big") for _ in range(3)]
    assert all(hit is not None and len(hit) == 4 for hit in held)
    s = Pulling()
    handlers.get(c.Get([b"x", b"big"]), s)  # type: ignore[arg-type]
    assert s.stream is not None and list(s.stream) == []  # the turn ends here
    assert b"".join(bytes(p) for p in s.out).endswith(b"b" * STREAM_AFTER + b"\r\nEND\r\n")
    assert not s.releases  # a copy: nothing to give back
    # ... and not when the whole reply is small, or lent
    s = Pulling()
    handlers.get(c.Get([b"x", b"y"]), s)  # type: ignore[arg-type]
    assert s.stream is None
    for hit in held:
        assert hit is not None
        worker.unpin(hit[3])
    s = Pulling()
    handlers.get(c.Get([b"x", b"big"]), s)  # type: ignore[arg-type]
    assert s.stream is None and len(s.releases) == 1


def test_a_binary_get_renders_its_hit_and_miss_in_its_own_syntax() -> None:
    cache, handlers = setup()
    cache.store(SET, b"k", b"v", 1)
    for key, found in ((b"k", True), (b"none", False)):
        s = Pulling()
        handlers.gets(b.BinGetK(key, b.GETK, opaque=7), s)  # type: ignore[arg-type]
        out = b"".join(s.out)
        assert out[:2] == bytes([b.RESPONSE, b.GETK]) and out[12:16] == (7).to_bytes(4, "big")
        assert out.endswith(b"kv" if found else b"none")
        assert (s.counters.get_hits, s.counters.get_misses) == (found, not found)
