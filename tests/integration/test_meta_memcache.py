"""meta-memcache (PyPI, 4.x), the maintained Python client of the meta protocol, against a
daemon: its whole public API, run against mcached and against memcached (the ``server``
fixture), so every expectation is memcached's behaviour too; once more against the mcached
command with worker processes.

Every call goes through the client's own request builder and response parser: get, set,
delete, touch, the counters, CAS, leases (``N``: one client wins the miss, the others wait),
recache (``R``: one client wins the refresh, the others keep the old value), stale-while-
revalidate (``md I``: the value is served stale, one client wins its recache, a write with the
older CAS stores it stale again), pipelined gets, quiet writes (``q`` then ``mn``), and the
keys it base64-encodes (``b``: binary and over-long keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from meta_memcache import (
    CacheClient,
    Conflict,
    Key,
    LeasePolicy,
    MemcacheServerError,
    Miss,
    NotStored,
    RecachePolicy,
    RequestFlags,
    ServerAddress,
    SetMode,
    StalePolicy,
    Success,
    Value,
    connection_pool_factory_builder,
)

from tests.conftest import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def server(emptied_server: Server) -> Server:
    """Both kinds, shared by the module's tests and emptied before each (conftest)."""
    return emptied_server


NO_WAIT = LeasePolicy(ttl=30, miss_retries=3, miss_retry_wait=0.001, miss_max_retry_wait=0.001)


def client(server: Server) -> Any:
    pools = connection_pool_factory_builder(recv_timeout=5, connection_timeout=5)
    return CacheClient.cache_client_from_servers(
        [ServerAddress(server.host, server.port)], connection_pool_factory_fn=pools
    )


@pytest.fixture
def two(server: Server) -> Iterator[tuple[Any, Any]]:
    """Two clients of one server (two application processes, as far as the server knows)."""
    yield client(server), client(server)


def test_get_set_delete_touch(server: Server) -> None:
    cc = client(server)
    assert cc.get("k") is None
    assert cc.set("k", b"hello", ttl=100)
    assert cc.get("k") == b"hello"
    assert cc.set("s", "text", ttl=0) and cc.get("s") == "text"
    assert cc.set("i", 42, ttl=0) and cc.get("i") == 42
    assert cc.set("d", {"a": [1, 2]}, ttl=0) and cc.get("d") == {"a": [1, 2]}
    assert cc.get_typed("i", int) == 42 and cc.get_typed("i", str) is None
    with pytest.raises(ValueError):
        cc.get_typed("i", str, error_on_type_mismatch=True)
    assert cc.touch("k", 1000) and not cc.touch("nope", 10)
    assert cc.meta_get(Key("k"), flags=RequestFlags(return_ttl=True)).flags.ttl == 1000
    assert cc.get("k", touch_ttl=50) == b"hello"
    assert cc.meta_get(Key("k"), flags=RequestFlags(return_ttl=True)).flags.ttl in (49, 50)
    assert cc.delete("k") and not cc.delete("k")
    assert cc.get("k") is None
    assert cc.invalidate("k") and cc.invalidate("s") and cc.get("s") is None


def test_set_modes_and_refill(server: Server) -> None:
    cc = client(server)
    assert not cc.set("k", b"b", ttl=0, set_mode=SetMode.APPEND)
    assert not cc.set("k", b"b", ttl=0, set_mode=SetMode.REPLACE)
    assert cc.refill("k", b"b", ttl=0)  # add
    assert not cc.refill("k", b"x", ttl=0)
    assert cc.set("k", b"c", ttl=0, set_mode=SetMode.APPEND)
    assert cc.set("k", b"a", ttl=0, set_mode=SetMode.PREPEND)
    assert cc.get("k") == b"abc"
    assert cc.set("k", b"z", ttl=0, set_mode=SetMode.REPLACE) and cc.get("k") == b"z"
    assert not cc.set("k", b"y", ttl=0, set_mode=SetMode.ADD)


def test_counters(server: Server) -> None:
    cc = client(server)
    assert not cc.delta("n", 1)
    assert cc.delta_and_get("n", 1) is None
    assert cc.delta_initialize("n", 5, initial_value=10, initial_ttl=100)
    assert cc.delta_and_get("n", 2) == 12
    assert cc.delta_and_get("n", -20) == 0  # decrements stop at 0
    assert cc.delta("n", 7) and cc.delta_and_get("n", 0) == 7
    assert cc.meta_get(Key("n"), flags=RequestFlags(return_ttl=True)).flags.ttl in (99, 100)
    assert cc.delta_and_get("n", 2**64 - 7) == 0  # wraps at 2^64
    assert cc.set("w", b"word", ttl=0)
    with pytest.raises(MemcacheServerError):
        cc.delta("w", 1)  # CLIENT_ERROR cannot increment or decrement non-numeric value


def test_cas(server: Server) -> None:
    cc = client(server)
    assert cc.get_cas("k") == (None, None)
    cas = cc.set_cas("k", b"v1", ttl=0)
    assert cas and cc.get_cas("k") == (b"v1", cas)
    assert not cc.set("k", b"v2", ttl=0, cas_token=cas + 1)  # EX
    new = cc.set_cas("k", b"v2", ttl=0, cas_token=cas)
    assert new and new != cas and cc.get_cas_typed("k", bytes) == (b"v2", new)
    assert cc.set_cas("k", b"v3", ttl=0, cas_token=cas) is None
    assert not cc.delete("k", cas_token=cas)  # EX: still there
    assert cc.get("k") == b"v2"
    assert not cc.delta("k", 1, cas_token=1)
    assert cc.delete("k", cas_token=new) and cc.get("k") is None
    assert cc.set("c", b"5", ttl=0)
    _, cas = cc.get_cas("c")
    assert cc.delta("c", 1, cas_token=cas) and cc.get("c") == b"6"
    assert cc.multi_get_cas(["c", "none"])[Key("none")] == (None, None)
    # the raw responses the client maps these to
    r = cc.meta_set(Key("c"), b"x", flags=RequestFlags(cas_token=cas, return_cas_token=True))
    assert isinstance(r, Conflict)
    assert isinstance(
        cc.meta_set(Key("q"), b"x", RequestFlags(mode=SetMode.REPLACE.value)), NotStored
    )
    assert isinstance(cc.meta_delete(Key("q")), Miss)
    assert isinstance(cc.meta_delete(Key("c")), Success)


def test_lease_one_client_wins_the_miss(two: tuple[Any, Any]) -> None:
    a, b = two
    waits: list[float] = []
    value, cas = a.get_or_lease_cas("k", NO_WAIT, lease_wait_fn=waits.append)
    assert value is None and cas  # a won: an empty placeholder, W
    # b loses (Z on an empty placeholder): it waits and retries, then gives up as a miss
    assert b.get_or_lease("k", NO_WAIT, lease_wait_fn=waits.append) is None
    assert len(waits) == NO_WAIT.miss_retries - 1
    # a refills; b now gets the value, a second lease wins nothing
    assert a.set("k", b"db row", ttl=0, cas_token=cas)
    assert b.get_or_lease("k", NO_WAIT, lease_wait_fn=waits.append) == b"db row"
    assert len(waits) == NO_WAIT.miss_retries - 1


def test_recache_one_client_wins_the_refresh(two: tuple[Any, Any]) -> None:
    a, b = two
    assert a.set("k", b"old", ttl=100)
    policy = RecachePolicy(ttl=130)  # 100 s left is under 130: due for a refresh
    assert a.get("k", recache_policy=RecachePolicy(ttl=50)) == b"old"  # not due
    value, cas = a.get_cas("k", recache_policy=policy)
    assert value is None and cas  # a won (W): a miss for a, which recomputes
    assert b.get("k", recache_policy=policy) == b"old"  # b lost (Z): keeps the old value
    assert a.set("k", b"new", ttl=1000, cas_token=cas)
    assert b.get("k", recache_policy=policy) == b"new"  # no refresh due any more
    r = b.meta_get(Key("k"), flags=RequestFlags(return_value=True, recache_ttl=130))
    assert isinstance(r, Value) and r.flags.win is None and not r.flags.stale


def test_stale_while_revalidate(two: tuple[Any, Any]) -> None:
    a, b = two
    stale = StalePolicy(mark_stale_on_deletion_ttl=30, mark_stale_on_cas_mismatch=True)
    assert a.set("k", b"v1", ttl=0)
    _, old_cas = a.get_cas("k")
    assert a.delete("k", stale_policy=stale)  # md I T30: kept, marked stale
    r = a.meta_get(Key("k"), flags=RequestFlags(return_value=True, return_ttl=True))
    assert isinstance(r, Value) and r.flags.stale and r.flags.win and r.flags.ttl == 30
    # the winner recaches; everyone else is served the stale value meanwhile
    r = b.meta_get(Key("k"), flags=RequestFlags(return_value=True))
    assert isinstance(r, Value) and r.flags.stale and r.flags.win is False
    assert b.get("k") == b"v1"
    # a write with the CAS from before the invalidation stores, but stays stale (ms I)
    assert a.set("k", b"v2", ttl=0, cas_token=old_cas, stale_policy=stale)
    r = b.meta_get(Key("k"), flags=RequestFlags(return_value=True))
    assert isinstance(r, Value) and r.flags.stale and b.get("k") == b"v2"
    # a write with the current CAS ends it
    _, cas = a.get_cas("k")
    assert a.set("k", b"v3", ttl=0, cas_token=cas)
    r = b.meta_get(Key("k"), flags=RequestFlags(return_value=True))
    assert isinstance(r, Value) and not r.flags.stale and r.flags.win is None
    assert b.get("k") == b"v3"


def test_pipelined_gets_and_quiet_writes(server: Server) -> None:
    cc = client(server)
    keys = [f"key:{i}" for i in range(50)]
    for i, k in enumerate(keys[:40]):
        # q, then mn: the client reads only MN (an error would come before it)
        assert cc.set(k, b"v%d" % i, ttl=0, no_reply=True)
    got = cc.multi_get(keys)
    assert got == {Key(k): (b"v%d" % i if i < 40 else None) for i, k in enumerate(keys)}
    assert cc.delete("key:0", no_reply=True) and cc.delta("nope", 1, no_reply=True)
    assert cc.touch("key:1", 100, no_reply=True)
    assert cc.get("key:0") is None
    flags = RequestFlags(return_value=True, return_key=True, opaque=b"op1")
    r = cc.meta_multiget([Key("key:1"), Key("none")], flags=flags)
    assert r[Key("key:1")].flags.opaque == b"op1" and isinstance(r[Key("none")], Miss)


def test_keys_it_encodes(server: Server) -> None:
    cc = client(server)
    for key in ("binary\u00e9key", "x" * 300, "spaces are fine", "\u6771\u4eac"):
        assert cc.get(key) is None
        assert cc.set(key, b"v", ttl=0)
        assert cc.get(key) == b"v"
        assert cc.delta_initialize(key + "#n", 1, 0, 100) and cc.delta_and_get(key + "#n", 1) == 1
        assert cc.delete(key) and cc.get(key) is None
    routed = Key("k", routing_key="shard-1")
    assert cc.set(routed, b"r", ttl=0) and cc.get(routed) == b"r"


def test_routers(server: Server) -> None:
    pools = connection_pool_factory_builder(recv_timeout=5)
    addr = [ServerAddress(server.host, server.port)]
    ephemeral = CacheClient.ephemeral_cache_client_from_servers(
        addr, max_ttl=60, connection_pool_factory_fn=pools
    )
    assert ephemeral.set("k", b"v", ttl=0) and ephemeral.get("k") == b"v"
    r = ephemeral.meta_get(Key("k"), flags=RequestFlags(return_ttl=True))
    assert r.flags.ttl in (59, 60)  # the router capped the TTL
    gutter = CacheClient.cache_client_with_gutter_from_servers(
        addr, gutter_servers=addr, gutter_ttl=10, connection_pool_factory_fn=pools
    )
    assert gutter.get("k") == b"v" and gutter.set("g", b"w", ttl=0) and gutter.get("g") == b"w"


def test_against_worker_processes(server_factory: Callable[..., Server]) -> None:
    """Leases and stale-while-revalidate across two clients whose connections land on
    different worker processes: the item state lives in the shared arena."""
    srv = server_factory("mcached-procs", "-t", "2")
    clients = [client(srv) for _ in range(4)]
    a = clients[0]
    value, cas = a.get_or_lease_cas("k", NO_WAIT, lease_wait_fn=lambda _: None)
    assert value is None and cas
    for other in clients[1:]:
        assert other.get_or_lease("k", NO_WAIT, lease_wait_fn=lambda _: None) is None
    assert a.set("k", b"row", ttl=0, cas_token=cas)
    assert all(c.get("k") == b"row" for c in clients)
    assert a.delete("k", stale_policy=StalePolicy(mark_stale_on_deletion_ttl=30))
    wins = [c.meta_get(Key("k"), flags=RequestFlags(return_value=True)).flags.win for c in clients]
    assert wins == [True, False, False, False]
    assert clients[3].delta_initialize("n", 1, 0, 100)
    assert [c.delta_and_get("n", 1) for c in clients] == [1, 2, 3, 4]  # created at 0
