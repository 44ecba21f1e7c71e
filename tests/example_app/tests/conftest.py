"""The project's own fixtures, on top of mcached's (`mcached_server`, `mcached_cluster`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from catalog.recommendations import Recommendations
from django.conf import settings
from django.test.utils import override_settings


def pytest_configure(config: pytest.Config) -> None:
    if not settings.configured:
        settings.configure(
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        )


@pytest.fixture
def memcached_cache(mcached_server: Any) -> Iterator[Any]:
    """Django's default cache is PyMemcacheCache on the test's memcached."""
    from django.core.cache import caches

    backend = "django.core.cache.backends.memcached.PyMemcacheCache"
    location = {"BACKEND": backend, "LOCATION": mcached_server.endpoint}
    with override_settings(CACHES={"default": location}):
        yield caches["default"]


@pytest.fixture
def recommendations(mcached_cluster: Any) -> Iterator[Recommendations]:
    recs = Recommendations(mcached_cluster.endpoint, poll_interval=0.1)
    yield recs
    recs.close()
