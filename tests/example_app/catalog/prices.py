"""Prices, cached for five minutes through Django's cache framework.

The warehouse is slow, so each price is asked of it once and then served from the cache. When
the cache is down the shop keeps selling: prices come from the warehouse, every time.
"""

from __future__ import annotations

import logging

from django.core.cache import cache
from pymemcache.exceptions import MemcacheError

log = logging.getLogger(__name__)

#: every call to the warehouse, so that tests can count them
WAREHOUSE_CALLS: list[str] = []


def from_warehouse(sku: str) -> int:
    """The slow source: a price in cents."""
    WAREHOUSE_CALLS.append(sku)
    return sum(map(ord, sku)) * 10


def price(sku: str) -> int:
    try:
        return int(cache.get_or_set(f"price:{sku}", lambda: from_warehouse(sku), timeout=300))
    except (OSError, MemcacheError) as exc:
        log.warning("cache unavailable (%s): asking the warehouse", exc)
        return from_warehouse(sku)


def reprice(sku: str, cents: int) -> None:
    """A new price: the cache holds it at once."""
    cache.set(f"price:{sku}", cents, timeout=300)
