"""The discovery client (mcached.client.cluster.ClusterClient) against 3+ loopback nodes.

It spreads keys over every node; it follows a membership change within one poll; a killed node
costs only the keys it held while the others keep serving; it falls over to another node when
its endpoint dies; and on a server without ``config get cluster`` (Debian's memcached) it reads
the legacy ``AmazonElastiCache:cluster`` item.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcached.client.cluster import ClusterClient, DiscoveryError
from mcached.cluster.config import Node, format_data
from tests.conftest import Server, free_port
from tests.integration.test_discovery import start_cluster, wait_until
from tests.wire import Conn

pytestmark = pytest.mark.integration

KEYS = [f"key:{i}" for i in range(300)]
FAST = {"connect_timeout": 1.0, "timeout": 1.0}


def items(server: Server) -> int:
    return int(server.handle.cache.stats()["curr_items"])


def push(servers: list[Server], nodes: list[Node], version: int) -> None:
    """What ``mcached-tool cluster set`` does: the same data to every node."""
    data = format_data(version, sorted(nodes))
    for s in servers:
        with Conn(s.address) as conn:
            assert (
                conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data), expect_len=8)
                == b"STORED\r\n"
            )


def wait_for_polls(client: ClusterClient, n: int = 2, timeout: float = 5.0) -> None:
    """`n` more completed polls. Two: the first may have started before the change."""
    target = client.polls + n
    assert wait_until(lambda: client.polls >= target, timeout)


def test_keys_spread_over_every_node(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    cluster = start_cluster(server_factory, tmp_path, 4)
    with ClusterClient(f"127.0.0.1:{cluster.servers[0].port}", poll_interval=0, **FAST) as c:
        assert c.servers == sorted(("127.0.0.1", s.port) for s in cluster.servers)
        assert c.config is not None and c.config.version == 1
        for k in KEYS:
            assert c.set(k, k.encode(), noreply=False)
        counts = [items(s) for s in cluster.servers]
        assert sum(counts) == len(KEYS)
        assert min(counts) > 30  # rendezvous hashing: roughly 75 each
        assert c.get_many(KEYS) == {k: k.encode() for k in KEYS}
        c.set_many({"a": b"1", "b": b"2"}, noreply=False)
        assert c.get("a") == b"1" and c.delete("a", noreply=False) and c.get("a") is None
        assert c.incr("n", 1) is None and c.add("n", b"5", noreply=False)
        assert c.incr("n", 2) == 7


def test_follows_a_membership_change_within_one_poll(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    spare = server_factory("mcached", "--enable-config-set")
    everyone = cluster.servers + [spare]
    nodes = list(cluster.nodes)
    with ClusterClient([f"127.0.0.1:{cluster.servers[0].port}"], poll_interval=0.2, **FAST) as c:
        assert len(c.servers) == 3
        # add a node
        push(everyone, nodes + [Node("localhost", "127.0.0.1", spare.port)], 2)
        wait_for_polls(c)
        assert ("127.0.0.1", spare.port) in c.servers and len(c.servers) == 4
        for k in KEYS:
            c.set(k, b"v", noreply=False)
        assert items(spare) > 0
        # remove two
        push(everyone, nodes[:1] + [Node("localhost", "127.0.0.1", spare.port)], 3)
        wait_for_polls(c)
        assert c.servers == sorted(
            [("127.0.0.1", cluster.servers[0].port), ("127.0.0.1", spare.port)]
        )
        assert c.config is not None and c.config.version == 3
        for k in KEYS[:50]:
            assert c.set(k, b"w", noreply=False)
        assert set(c.get_many(KEYS[:50]).values()) == {b"w"}


def test_killed_node_costs_only_its_keys(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    victim = cluster.servers[1]
    with ClusterClient(
        f"127.0.0.1:{cluster.servers[0].port}", poll_interval=0.2, ignore_exc=True, **FAST
    ) as c:
        for k in KEYS:
            c.set(k, k.encode(), noreply=False)
        owner = {k: c._get_client(k).server[1] for k in KEYS}
        lost = {k for k in KEYS if owner[k] == victim.port}
        assert 0 < len(lost) < len(KEYS)
        victim.handle.stop()
        got = c.get_many(KEYS)
        assert set(got) == set(KEYS) - lost  # exactly the victim's keys are gone
        for k in sorted(lost)[:5]:
            assert c.get(k) is None  # a miss, not an exception
        survivors = [k for k in KEYS if k not in lost]
        assert all(c.get(k) == k.encode() for k in survivors[:50])
        assert c.set(survivors[0], b"new", noreply=False)
        assert c.get(survivors[0]) == b"new"
        wait_for_polls(c)  # the victim is still listed: polling carries on unharmed
        assert c.get_many(survivors[:20]) == {k: k.encode() for k in survivors[1:20]} | {
            survivors[0]: b"new"
        }


def test_endpoint_dies_client_polls_another_node(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    endpoint, *rest = cluster.servers
    with ClusterClient(
        f"127.0.0.1:{endpoint.port}", poll_interval=0.2, ignore_exc=True, **FAST
    ) as c:
        endpoint.handle.stop()
        push(rest, [n for n in cluster.nodes if n.port != endpoint.port], 2)
        wait_for_polls(c, 3)
        assert c.servers == sorted(("127.0.0.1", s.port) for s in rest)


def test_threads_share_a_client_while_it_changes(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    all_nodes = list(cluster.nodes)
    errors: list[BaseException] = []
    stop = threading.Event()
    with ClusterClient(
        f"127.0.0.1:{cluster.servers[0].port}",
        poll_interval=0.05,
        use_pooling=True,
        ignore_exc=False,
        **FAST,
    ) as c:

        def work(n: int) -> None:
            try:
                i = 0
                while not stop.is_set():
                    key = f"t{n}:{i % 50}"
                    c.set(key, b"x", noreply=False)
                    c.get(key)
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for version in range(2, 12):
            push(cluster.servers, all_nodes[: 1 + version % 3], version)
            wait_for_polls(c, 1)
        stop.set()
        for t in threads:
            t.join(10)
    assert errors == []


def test_a_request_on_a_removed_node_keeps_its_connection(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """A request that picked a node just before the node was removed finishes on its pooled
    connection, however many polls pass meanwhile; the connection is closed once it is given
    back. Before, the poll after the removal closed it under the request (a thread sharing
    the client then met EBADF; seen under a free-threaded CPython in
    `test_threads_share_a_client_while_it_changes`)."""
    cluster = start_cluster(server_factory, tmp_path, 2, "--enable-config-set")
    keep, gone = sorted(cluster.nodes)
    with ClusterClient(f"127.0.0.1:{keep.port}", poll_interval=0, use_pooling=True, **FAST) as c:
        key = next(k for k in KEYS if c._get_client(k).server == ("127.0.0.1", gone.port))
        removed = c._get_client(key)
        with removed.client_pool.get_and_release() as conn:  # the request in flight
            assert conn.set(key, b"v", noreply=False)
            push(cluster.servers, [keep], 2)
            c.refresh()  # the node leaves the ring
            assert c.servers == [("127.0.0.1", keep.port)]
            c.refresh()
            c.refresh()  # and its client leaves `clients`
            assert c.clients.get(c._make_client_key(("127.0.0.1", gone.port))) is not removed
            assert conn.sock is not None  # not closed under the request
            assert conn.get(key) == b"v"
        c.refresh()  # given back: closed at the next poll
        assert conn.sock is None
        assert not removed.client_pool.free and not removed.client_pool.used
        # the multi-key calls go to the clients they picked
        assert c.set_many({k: b"x" for k in KEYS[:20]}, noreply=False) == []
        assert c.get_many(KEYS[:20]) == {k: b"x" for k in KEYS[:20]}


def test_a_request_taking_the_last_idle_connection_mid_poll(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """The poll that closes a removed node's idle connections reads the pool's free list,
    then takes each idle connection to close it. A request that picked the node just before
    its removal may take the last idle one in between; with the pool at ``max_pool_size``
    the poll's take then raised RuntimeError ("Too many objects") and the poll failed. Now
    it leaves that connection to the request and closes it at a later poll, once idle."""
    cluster = start_cluster(server_factory, tmp_path, 2, "--enable-config-set")
    keep, gone = sorted(cluster.nodes)
    with ClusterClient(
        f"127.0.0.1:{keep.port}", poll_interval=0, use_pooling=True, max_pool_size=1, **FAST
    ) as c:
        key = next(k for k in KEYS if c._get_client(k).server == ("127.0.0.1", gone.port))
        removed = c._get_client(key)
        assert removed.set(key, b"v", noreply=False)  # its one connection, now idle
        pool = removed.client_pool
        assert len(pool.free) == 1
        push(cluster.servers, [keep], 2)
        c.refresh()  # the node leaves the ring; its client is retired
        assert c.servers == [("127.0.0.1", keep.port)]
        taken: list[Any] = []
        take = pool.get

        def request_first() -> Any:
            # the request's take lands between the poll's read of `free` and its own take
            if not taken:
                taken.append(take())
            return take()

        pool.get = request_first  # type: ignore[method-assign]
        c.refresh()  # raised RuntimeError before
        del pool.get
        (conn,) = taken
        assert pool.used == (conn,) and conn.sock is not None  # left to the request
        assert conn.get(key) == b"v"
        pool.release(conn)
        c.refresh()  # idle now: closed
        assert conn.sock is None
        assert not pool.free and not pool.used
        assert c.set("after", b"x", noreply=False) and c.get("after") == b"x"


def test_a_request_that_picked_a_node_before_polls_removed_it_leaves_no_connection(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """A get_many picks each node's client before it sends any batch; a later batch may run
    on a node two polls have since removed, whose pool the second poll found idle, closed
    and forgot. The batch opened a new connection on it, which nothing closed, not even the
    client's close() (found by a hunt). It is closed as the batch ends now."""
    cluster = start_cluster(server_factory, tmp_path, 2, "--enable-config-set")
    keep, gone = sorted(cluster.nodes)
    c = ClusterClient(f"127.0.0.1:{keep.port}", poll_interval=0, use_pooling=True, **FAST)
    with c:
        key = next(k for k in KEYS if c._get_client(k).server == ("127.0.0.1", gone.port))
        picked = c._get_client(key)  # as get_many picks its batches' clients, first
        push(cluster.servers, [keep], 2)
        c.refresh()
        c.refresh()  # removed, found idle, closed and forgotten
        assert picked not in c.clients.values() and not c._retired
        # the batch runs now, through the path every request takes
        assert c._safely_run_func(picked, picked.get_many, {}, [key]) == {}
        pool = picked.client_pool
        assert not pool.free and not pool.used  # its connection closed at once
        assert c.set("after", b"x", noreply=False) and c.get("after") == b"x"


def test_legacy_key_on_memcached(server_factory: Callable[..., Server]) -> None:
    """Debian's memcached answers ERROR to config get; the item holds the configuration."""
    ref = server_factory("memcached")
    data = format_data(4, [Node("localhost", "127.0.0.1", ref.port)])
    with Conn(ref.address) as conn:
        assert conn.request(b"config get cluster\r\n") == b"ERROR\r\n"
        assert (
            conn.request(b"set AmazonElastiCache:cluster 0 0 %d\r\n%b\r\n" % (len(data), data))
            == b"STORED\r\n"
        )
    with ClusterClient(("127.0.0.1", ref.port), poll_interval=0, **FAST) as c:
        assert c.servers == [("127.0.0.1", ref.port)]
        assert c.config is not None and c.config.version == 4
        assert c.set("k", b"v", noreply=False) and c.get("k") == b"v"


def test_no_endpoint_raises() -> None:
    with pytest.raises(DiscoveryError):
        ClusterClient(f"127.0.0.1:{free_port()}", discovery_timeout=0.5)


def test_old_import_path_still_works() -> None:
    """``from mcached.cluster_client import ClusterClient`` (its home before mcached/client/)."""
    from mcached import cluster_client

    assert cluster_client.ClusterClient is ClusterClient
    assert cluster_client.DiscoveryError is DiscoveryError


def test_issue_19_a_stopped_node_costs_a_miss_within_the_default_timeout(
    server_factory: Callable[..., Server],
) -> None:
    """Issue 19: a node that stops answering (SIGSTOP: its port still accepts, nothing
    replies) must not block the client for ever. With the defaults (no timeout given) a get
    for one of its keys is a miss after about `TIMEOUT`, and the other keys keep working."""
    import os
    import signal
    import time

    import psutil

    from mcached.client.cluster import CONNECT_TIMEOUT, TIMEOUT

    assert 0 < CONNECT_TIMEOUT <= 2 and 0 < TIMEOUT <= 2
    endpoint = server_factory("mcached", "--enable-config-set", "--cluster-health-interval", "0")
    victim = server_factory("mcached-procs", "-t", "1")
    nodes = [Node("localhost", "127.0.0.1", s.port) for s in (endpoint, victim)]
    push([endpoint], nodes, 2)
    with ClusterClient(f"127.0.0.1:{endpoint.port}", poll_interval=0, ignore_exc=True) as c:
        assert c.servers == sorted(("127.0.0.1", s.port) for s in (endpoint, victim))
        keys = [f"k{i}" for i in range(40)]
        for k in keys:
            assert c.set(k, b"v", noreply=False)
        theirs = [k for k in keys if c._get_client(k).server[1] == victim.port]
        ours = [k for k in keys if k not in theirs]
        assert theirs and ours
        procs = [psutil.Process(victim.handle.pid), *psutil.Process(victim.handle.pid).children()]
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP)
        try:
            # SIGSTOP takes effect a moment after kill() returns: until then a worker (a
            # thread still running on the other core) can answer
            deadline = time.monotonic() + 10
            while any(p.status() != psutil.STATUS_STOPPED for p in procs):
                assert time.monotonic() < deadline, [p.status() for p in procs]
                time.sleep(0.01)
            start = time.monotonic()
            assert c.get(theirs[0]) is None
            took = time.monotonic() - start
            assert TIMEOUT * 0.8 <= took < TIMEOUT + 1.0, took
            assert all(c.get(k) == b"v" for k in ours)
        finally:
            for p in procs:
                os.kill(p.pid, signal.SIGCONT)


def test_bytes_and_text_keys_land_on_the_same_node(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    with ClusterClient(f"127.0.0.1:{cluster.servers[0].port}", poll_interval=0, **FAST) as c:
        for i in range(60):
            k = f"key:{i}"
            assert c._get_client(k) is c._get_client(k.encode())
            c.set(k.encode(), b"bytes", noreply=False)
            assert c.get(k) == b"bytes"
