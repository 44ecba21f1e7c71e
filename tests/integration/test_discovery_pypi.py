"""The auto-discovery clients Python users already have, from PyPI, against 3 mcached nodes.

Installed by the test setup (the ``test`` extra in setup.cfg), never vendored:

* emcache (asyncio): autodiscovery on one reused connection, acts when the version changes;
  connects by hostname (the ``host`` field).
* django-elastipymemcache (a pymemcache ``HashClient``): reads the nodes line, connects by ip,
  re-discovers every ``discovery_interval``; validates the endpoint as ``host.domain:port``
  (``127.0.0.1:port`` passes, ``localhost:port`` does not).
* elasticache-auto-discovery: one ``config get cluster``, split on ``\\n`` and ``|``.

Each reads our endpoint in its own way; each must find every node and use them. They are
imported, not skipped when missing: a missing install step must fail (``make test`` installs
the ``test`` extra).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_script import cluster_script, node_pids
from tests.conftest import Server
from tests.integration.test_discovery import start_cluster
from tests.integration.test_discovery_client import push

pytestmark = pytest.mark.integration

KEYS = [f"key{i}" for i in range(120)]


def items(server: Server) -> int:
    return int(server.handle.cache.stats()["curr_items"])


def test_emcache_discovers_uses_and_follows(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    emcache = import_module("emcache")
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    endpoint = cluster.servers[0]

    async def scenario() -> tuple[list[Any], list[Any], dict[str, bytes | None]]:
        client = await emcache.create_client(
            [emcache.MemcachedHostAddress("127.0.0.1", endpoint.port)],
            autodiscovery=True,
            autodiscovery_poll_interval=0.2,
            autodiscovery_timeout=2.0,
            timeout=2.0,
        )
        try:
            first = sorted(client.cluster_managment().nodes(), key=lambda a: a.port)
            for k in KEYS:
                await client.set(k.encode(), k.encode())
            got = {}
            for k in KEYS:
                item = await client.get(k.encode())
                got[k] = item.value if item else None
            # a membership change: emcache acts on the new version
            push(cluster.servers, list(cluster.nodes)[:2], 2)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if len(client.cluster_managment().nodes()) == 2:
                    break
                await asyncio.sleep(0.05)
            second = sorted(client.cluster_managment().nodes(), key=lambda a: a.port)
            return first, second, got
        finally:
            await client.close()

    first, second, got = asyncio.run(asyncio.wait_for(scenario(), 30))
    ports = sorted(s.port for s in cluster.servers)
    assert [(a.address, a.port) for a in first] == [("localhost", p) for p in ports]
    assert got == {k: k.encode() for k in KEYS}
    assert all(items(s) > 0 for s in cluster.servers)
    assert [a.port for a in second] == sorted(s.port for s in cluster.servers[:2])


def test_django_elastipymemcache(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    import_module("django")
    backend = import_module("django_elastipymemcache.backend")
    from django.conf import settings

    if not settings.configured:
        settings.configure()  # the backend is built directly below; no project needed
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    endpoint = cluster.servers[0]
    cache = backend.ElastiPymemcache(
        f"127.0.0.1:{endpoint.port}",
        {"OPTIONS": {"discovery_interval": 0.2, "connect_timeout": 2, "timeout": 2}},
    )
    try:
        for k in KEYS:
            cache.set(k, k, timeout=None)
        assert cache.get_many(KEYS) == {k: k for k in KEYS}
        assert all(items(s) > 0 for s in cluster.servers)
        client = cache._cache
        assert sorted(client.clients) == sorted(f"127.0.0.1:{s.port}" for s in cluster.servers)
        # a membership change: picked up at the first request after discovery_interval
        push(cluster.servers, list(cluster.nodes)[1:], 2)
        deadline = time.monotonic() + 5
        while len(client.clients) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            cache.get("poke")
        assert sorted(client.clients) == sorted(f"127.0.0.1:{s.port}" for s in cluster.servers[1:])
        cache.set("after", "yes")
        assert cache.get("after") == "yes"
    finally:
        cache.close()


def test_elasticache_auto_discovery(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    ead = import_module("elasticache_auto_discovery")
    cluster = start_cluster(server_factory, tmp_path, 3)
    for s in cluster.servers:
        nodes = ead.discover(f"127.0.0.1:{s.port}", time_to_timeout=2)
        assert nodes == [
            [b"localhost", b"127.0.0.1", str(p).encode()]
            for p in sorted(n.port for n in cluster.nodes)
        ]


def test_emcache_on_a_lone_node(mcached: Server) -> None:
    """No cluster configured: the node lists itself and emcache serves from it."""
    emcache = import_module("emcache")

    async def scenario() -> tuple[list[Any], bytes | None]:
        client = await emcache.create_client(
            [emcache.MemcachedHostAddress("127.0.0.1", mcached.port)],
            autodiscovery=True,
            autodiscovery_timeout=2.0,
            timeout=2.0,
        )
        try:
            await client.set(b"k", b"v")
            item = await client.get(b"k")
            return client.cluster_managment().nodes(), item.value if item else None
        finally:
            await client.close()

    nodes, value = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [(n.address, n.port) for n in nodes] == [("localhost", mcached.port)]
    assert value == b"v"


def test_every_client_discovers_the_twenty_nodes_of_scripts_cluster_py(tmp_path: Path) -> None:
    """ElastiCache's largest cluster, 20 nodes, on this machine: ``scripts/cluster.py -n 20``
    (real processes, one worker each) starts it, and every auto-discovery client the tests
    install finds all 20 nodes through one of them."""
    import signal

    from mcached.client.cluster import ClusterClient

    with cluster_script(tmp_path, 20, "-m", "8", timeout=120) as (proc, ports, _):
        ports.sort()
        assert len(ports) == 20
        endpoint = ports[7]
        # ClusterClient
        with ClusterClient(f"127.0.0.1:{endpoint}", poll_interval=0) as c:
            assert c.servers == [("127.0.0.1", p) for p in ports]
        # elasticache-auto-discovery
        ead = import_module("elasticache_auto_discovery")
        found = ead.discover(f"127.0.0.1:{endpoint}", time_to_timeout=5)
        assert sorted(int(n[2]) for n in found) == ports
        # emcache
        emcache = import_module("emcache")

        async def emcache_nodes() -> list[Any]:
            client = await emcache.create_client(
                [emcache.MemcachedHostAddress("127.0.0.1", endpoint)],
                autodiscovery=True,
                autodiscovery_timeout=5.0,
                timeout=5.0,
            )
            try:
                return list(client.cluster_managment().nodes())
            finally:
                await client.close()

        nodes = asyncio.run(asyncio.wait_for(emcache_nodes(), 60))
        assert sorted(n.port for n in nodes) == ports
        # django-elastipymemcache
        import_module("django")
        backend = import_module("django_elastipymemcache.backend")
        from django.conf import settings

        if not settings.configured:
            settings.configure()
        cache = backend.ElastiPymemcache(
            f"127.0.0.1:{endpoint}", {"OPTIONS": {"connect_timeout": 5, "timeout": 5}}
        )
        try:
            cache.set("twenty", "nodes")
            assert cache.get("twenty") == "nodes"
            assert sorted(cache._cache.clients) == [f"127.0.0.1:{p}" for p in ports]
        finally:
            cache.close()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        # no process of any node outlives the script (a node's workers included)
        assert node_pids(tmp_path) == []
