from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from catalog import prices


def hits(server: Any) -> int:
    return int(server.stats()["get_hits"])


def test_a_price_is_asked_once_then_served_from_memcached(
    memcached_cache: Any, mcached_server: Any
) -> None:
    prices.WAREHOUSE_CALLS.clear()
    before = hits(mcached_server)
    assert prices.price("sku-1") == prices.price("sku-1") == prices.price("sku-1")
    assert prices.WAREHOUSE_CALLS == ["sku-1"]
    assert hits(mcached_server) - before >= 2  # (get_or_set also reads back what it added)


def test_each_test_starts_with_an_empty_cache(memcached_cache: Any) -> None:
    assert memcached_cache.get("price:sku-1") is None


def test_prices_survive_a_memcached_crash(memcached_cache: Any, mcached_server: Any) -> None:
    prices.WAREHOUSE_CALLS.clear()
    price = prices.price("sku-2")
    mcached_server.kill()  # refused and reset, as a crashed memcached
    assert [prices.price("sku-2") for _ in range(3)] == [price] * 3
    assert prices.WAREHOUSE_CALLS == ["sku-2"] * 4  # the shop kept selling
    mcached_server.restart()  # back, empty
    # Django's client (pymemcache's HashClient) tries a failed server again after its
    # retry_timeout (1 s); from then on prices are cached again
    assert eventually(lambda: cached("sku-2"))


def cached(sku: str) -> bool:
    prices.price(sku)
    calls = len(prices.WAREHOUSE_CALLS)
    prices.price(sku)
    return len(prices.WAREHOUSE_CALLS) == calls


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.1)
    return check()


def test_a_new_price_replaces_the_cached_one(memcached_cache: Any) -> None:
    prices.WAREHOUSE_CALLS.clear()
    prices.price("sku-3")
    prices.reprice("sku-3", 999)
    assert prices.price("sku-3") == 999
    assert prices.WAREHOUSE_CALLS == ["sku-3"]
