"""`serve_cluster` (mcached/embed.py): N in-process nodes serving one ``config get cluster``
list, and the discovery clients the suite installs driven through a node kill and a scale-out.

The scenario, for each client: it finds the 3 nodes from the endpoint and spreads keys over
them; node 1 crashes (`kill`: its keys are lost, every other key keeps working, the node stays
listed); a replacement joins (`add_node`: the client uses 4 nodes); the dead node leaves
(`remove_node`: 3 again, the new one among them) and every key can be written and read again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any

import pytest

from mcached.client.cluster import ClusterClient
from mcached.cluster.config import Node
from mcached.embed import EmbeddedCluster, ServerError, serve_cluster
from tests.wire import Conn

pytestmark = pytest.mark.integration

KEYS = [f"key{i}" for i in range(90)]
# The clients' timeouts. A killed node refuses and resets at once, so nothing here waits for
# them; they only have to outlast an embedded node starved of the CPU on a busy machine:
# with `ignore_exc`, a request that timed out is a silent miss (a CI run lost a third of
# the keys right after setting them, with 1 s, while other test sessions shared the cores).
TIMEOUTS = {"connect_timeout": 5.0, "timeout": 5.0}


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def ports(nodes: Any) -> list[int]:
    return sorted(n.port for n in nodes)


def config_get(address: tuple[str, int]) -> bytes:
    with Conn(address) as conn:
        conn.send(b"config get cluster\r\n")
        return conn.read_until(b"END\r\n")


# ---- the cluster itself ----


def test_every_node_serves_the_same_list_and_each_change_bumps_the_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "mcached"):
        cluster = serve_cluster(3)
    # regression: each node logged its cluster file missing, asked before it was written
    assert [r.getMessage() for r in caplog.records] == []
    with cluster:
        replies = {config_get(n.address) for n in cluster.nodes}
        assert len(replies) == 1
        (reply,) = replies
        assert b"\r\n1\n" in reply
        for n in cluster.nodes:
            assert f"|127.0.0.1|{n.port}".encode() in reply
        cluster.kill(2)  # a crash changes no membership
        assert cluster.version == 1
        assert {config_get(n.address) for n in cluster.running} == {reply}
        added = cluster.add_node()
        assert cluster.version == 2 and len(cluster) == 4
        replies = {config_get(n.address) for n in cluster.running}
        assert len(replies) == 1 and f"|{added.port}".encode() in replies.pop()
        removed = cluster.remove_node(2)
        assert not removed.running and cluster.version == 3
        for reply in {config_get(n.address) for n in cluster.nodes}:
            assert f"|{removed.port} ".encode() not in reply and b"\r\n3\n" in reply


def test_a_change_after_health_hid_a_node_takes_a_version_never_served() -> None:
    """Health checks that hide a killed node serve the file's version + 1; add_node then
    wrote the file's version + 1 too, so a new list came under a version clients had seen
    with another, and those that only act on a new version never saw the node added (found
    by a hunt)."""
    with serve_cluster(3, cluster_health_interval=0.3) as cluster:
        time.sleep(1.5)  # every node reached by the others
        cluster.kill(1)
        assert wait_until(lambda: b"\r\n2\n" in config_get(cluster[0].address))
        hid = config_get(cluster[0].address)
        added = cluster.add_node()
        now = config_get(cluster[0].address)
        assert f"|{added.port}".encode() in now and b"\r\n3\n" in now, (hid, now)
        assert cluster.version == 3


def test_bug_a_forked_child_leaving_the_with_block_removed_the_parents_cluster_file() -> None:
    """A child forked inside ``with serve_cluster()`` that leaves the block (`sys.exit`, an
    exception) stopped the cluster there too: its nodes' handles say stopped in a child, but
    the directory of the cluster file, the parent's, was removed, so the parent's next
    change failed (FileNotFoundError) and a node restarted listed only itself."""
    with serve_cluster(2) as cluster:
        directory = os.path.dirname(cluster.cluster_file)
        pid = os.fork()
        if pid == 0:  # the child leaves the block as `sys.exit` would make it
            code = 0
            try:
                cluster.__exit__(SystemExit, SystemExit(0), None)
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.path.isdir(directory)
        added = cluster.add_node()
        reply = config_get(cluster[0].address)
        assert f"|{added.port}".encode() in reply and b"\r\n2\n" in reply
    assert not os.path.exists(directory)  # the parent's stop removes it


def test_endpoint_is_the_first_running_node_and_restart_brings_a_node_back() -> None:
    with serve_cluster(2) as cluster:
        first, second = cluster.nodes
        assert cluster.endpoint == first.endpoint
        cluster.kill(0)
        assert cluster.endpoint == second.endpoint
        cluster.restart(0)
        assert first.running and cluster.endpoint == first.endpoint
        assert config_get(first.address) == config_get(second.address)
        cluster.kill(0)
        cluster.kill(1)
        with pytest.raises(ServerError, match="no node"):
            cluster.endpoint  # noqa: B018


def test_stats_cluster_while_the_listeners_close_answers_whole() -> None:
    """A node's listeners close first when it stops; a ``stats cluster`` served meanwhile on
    a connection already open tells which listed node is itself, by its own port. That was
    read from the closed socket (EBADF): the connection was closed, unanswered."""
    with serve_cluster(2) as cluster:
        node = cluster.nodes[0]
        daemon = node.daemon
        assert daemon is not None
        with Conn(node.address) as conn:
            conn.send(b"version\r\n")
            assert conn.read_until(b"\r\n").startswith(b"VERSION ")  # accepted: served
            daemon.server.close_sockets()  # as the stop's first step does
            conn.send(b"stats cluster\r\n")
            reply = conn.read_until(b"END\r\n")
        assert reply.startswith(b"STAT health ")
        assert f"|127.0.0.1|{node.port} self\r\n".encode() in reply, reply
        assert reply.count(b"STAT node:") == 2


def test_reset_undoes_what_a_test_did() -> None:
    with serve_cluster(3) as cluster:
        first = cluster.nodes
        cluster.nodes[0].stats()  # the handle works on each node
        for n in first:
            with Conn(n.address) as conn:
                assert conn.request(b"set k 0 0 1\r\nv\r\n", expect_len=8) == b"STORED\r\n"
        cluster.kill(0)
        cluster.remove_node(1)
        cluster.add_node()
        cluster.reset()
        assert cluster.nodes == first and all(n.running for n in first)
        assert [n.port for n in cluster.nodes] == [n.port for n in first]
        for n in first:  # restarted ones are new, the others flushed
            with Conn(n.address) as conn:
                assert conn.request(b"get k\r\n", expect_len=5) == b"END\r\n"
        assert len({config_get(n.address) for n in first}) == 1


def test_reset_after_stop_brings_the_first_nodes_back() -> None:
    """What the session-scoped fixture does after a test stopped the shared cluster."""
    with serve_cluster(2) as cluster:
        first = cluster.nodes
        cluster.stop()
        assert not cluster.running
        cluster.reset()
        assert cluster.nodes == first and all(n.running for n in first)
        lists = {config_get(n.address) for n in first}
        assert len(lists) == 1
        listed = lists.pop()
        assert all(b"|%d" % n.port in listed for n in first)


def test_reset_after_stop_takes_a_new_private_directory(tmp_path: Any) -> None:
    """The stopped cluster's directory name is known: someone may make it meanwhile, with
    a link where the cluster file is written. reset() takes a new one (mkdtemp)."""
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    with serve_cluster(1) as cluster:
        old = os.path.dirname(cluster.cluster_file)
        cluster.stop()
        os.mkdir(old, 0o777)
        os.symlink(victim, os.path.join(old, "cluster.conf.new"))
        try:
            cluster.reset()
            assert victim.read_text() == "keep me"
            assert os.path.dirname(cluster.cluster_file) != old
            assert os.stat(os.path.dirname(cluster.cluster_file)).st_mode & 0o077 == 0
            assert cluster.nodes[0].running and config_get(cluster.nodes[0].address)
        finally:
            shutil.rmtree(old)


def test_cluster_settings_and_refusals() -> None:
    with serve_cluster(1, "-c", "32", memory_limit="8m") as cluster:
        settings = cluster.nodes[0].stats("settings")
        assert (settings["maxbytes"], settings["maxconns"]) == (8 * 1024 * 1024, 32)
        with pytest.raises(ValueError, match="last node"):
            cluster.remove_node(0)
    with pytest.raises(ValueError, match="port"):
        serve_cluster(2, port=11211)
    with pytest.raises(TypeError, match="number of nodes"):
        serve_cluster("-m", "16")  # type: ignore[arg-type]


# ---- the discovery clients ----


def spread(cluster: EmbeddedCluster) -> None:
    assert all(int(n.stats()["curr_items"]) > 0 for n in cluster.running)


def test_cluster_client_through_a_kill_and_a_scale_out() -> None:
    with (
        serve_cluster(3) as cluster,
        ClusterClient(cluster.endpoint, poll_interval=0.1, ignore_exc=True, **TIMEOUTS) as client,
    ):
        assert client.servers == sorted(n.address for n in cluster.nodes)
        for k in KEYS:
            assert client.set(k, k.encode(), noreply=False)
        spread(cluster)
        victim = cluster.nodes[1]
        lost = {k for k in KEYS if client._get_client(k).server == victim.address}
        assert 0 < len(lost) < len(KEYS)

        cluster.kill(1)
        assert client.get_many(KEYS) == {k: k.encode() for k in KEYS if k not in lost}
        assert client.get(sorted(lost)[0]) is None  # a miss, not an exception

        new = cluster.add_node()
        assert wait_until(lambda: new.address in client.servers)
        assert len(client.servers) == 4
        cluster.remove_node(1)
        assert wait_until(lambda: client.servers == sorted(n.address for n in cluster.nodes))
        for k in KEYS:
            assert client.set(k, k.encode(), noreply=False)
        assert client.get_many(KEYS) == {k: k.encode() for k in KEYS}
        spread(cluster)


def test_emcache_through_a_kill_and_a_scale_out() -> None:
    emcache = import_module("emcache")

    async def scenario(cluster: EmbeddedCluster) -> None:
        client = await emcache.create_client(
            [emcache.MemcachedHostAddress("127.0.0.1", cluster.nodes[0].port)],
            autodiscovery=True,
            autodiscovery_poll_interval=0.1,
            autodiscovery_timeout=2.0,
            timeout=1.0,
            connection_timeout=1.0,
        )

        def nodes() -> list[int]:
            return sorted(a.port for a in client.cluster_managment().nodes())

        async def until(check: Callable[[], bool]) -> None:
            deadline = time.monotonic() + 10
            while not check() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert check()

        try:
            assert nodes() == ports(cluster.nodes)
            for k in KEYS:
                await client.set(k.encode(), k.encode())
            spread(cluster)
            cluster.kill(1)
            # at once: a dead node's keys each wait for emcache's timeout, then raise
            replies = await asyncio.gather(
                *(client.get(k.encode()) for k in KEYS), return_exceptions=True
            )
            got = {
                k: item.value if item else None
                for k, item in zip(KEYS, replies, strict=True)
                if not isinstance(item, BaseException)
            }
            assert 0 < len(got) < len(KEYS)
            assert all(v == k.encode() for k, v in got.items())

            cluster.add_node()
            await until(lambda: len(nodes()) == 4)
            cluster.remove_node(1)
            await until(lambda: nodes() == ports(cluster.nodes))
            for k in KEYS:
                await client.set(k.encode(), k.encode())
            for k in KEYS:
                item = await client.get(k.encode())
                assert item is not None and item.value == k.encode()
            spread(cluster)
        finally:
            await client.close()

    with serve_cluster(3) as cluster:
        asyncio.run(asyncio.wait_for(scenario(cluster), 60))


def test_django_elastipymemcache_through_a_kill_and_a_scale_out() -> None:
    backend = import_module("django_elastipymemcache.backend")
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    with serve_cluster(3) as cluster:
        cache = backend.ElastiPymemcache(
            cluster.endpoint,
            {"OPTIONS": {"discovery_interval": 0.1, "ignore_exc": True, **TIMEOUTS}},
        )
        try:
            for k in KEYS:
                cache.set(k, k, timeout=None)
            assert cache.get_many(KEYS) == {k: k for k in KEYS}
            spread(cluster)
            members = cache._cache.clients

            def listed() -> list[int]:
                cache.get("poke")  # it re-discovers at a request after discovery_interval
                return sorted(int(a.rsplit(":", 1)[1]) for a in members)

            cluster.kill(1)
            got = cache.get_many(KEYS)
            assert 0 < len(got) < len(KEYS) and all(got[k] == k for k in got)
            cluster.add_node()
            assert wait_until(lambda: len(listed()) == 4)
            cluster.remove_node(1)
            assert wait_until(lambda: listed() == ports(cluster.nodes))
            for k in KEYS:
                cache.set(k, k, timeout=None)
            assert cache.get_many(KEYS) == {k: k for k in KEYS}
            spread(cluster)
        finally:
            cache.close()


def test_elasticache_auto_discovery_sees_every_change() -> None:
    ead = import_module("elasticache_auto_discovery")

    def discovered(cluster: EmbeddedCluster) -> list[int]:
        nodes = ead.discover(cluster.endpoint, time_to_timeout=2)
        assert all(ip == b"127.0.0.1" for _, ip, _ in nodes)
        return sorted(int(port) for _, _, port in nodes)

    with serve_cluster(3) as cluster:
        assert discovered(cluster) == ports(cluster.nodes)
        cluster.kill(1)
        assert discovered(cluster) == ports(cluster.nodes)  # still listed
        cluster.add_node()
        assert len(discovered(cluster)) == 4
        cluster.remove_node(1)
        assert discovered(cluster) == ports(cluster.nodes)
        cluster.kill(0)  # the configuration endpoint moves to a live node
        assert discovered(cluster) == ports(cluster.nodes)


def test_nodes_list_themselves_as_a_lone_node_does() -> None:
    """The names in the list are the ones each node would give for itself."""
    from mcached.cluster.discovery import own_node
    from mcached.settings import Settings

    with serve_cluster(2) as cluster:
        reply = config_get(cluster.nodes[0].address)
        for n in cluster.nodes:
            node: Node = own_node(Settings(), n.port)
            assert str(node).encode() in reply
