"""pymemcache 4.0 against the server, through every public call of its three clients.

What this file proves, once against mcached and once against Debian's memcached 1.6.18 (the
`server` fixture), is that an unmodified, widely used Python client works against us exactly as
it works against the reference:

* ``Client``: set / set_many / set_multi, add, replace, append, prepend, cas (STORED → True,
  EXISTS → False, NOT_FOUND → None), get / get_many / get_multi, gets / gets_many, delete /
  delete_many / delete_multi, incr / decr (wrap at 2**64, clamp at 0, missing key → None), touch,
  stats (plain, ``settings``, ``items``, ``slabs``, an unknown group), flush_all (now, delayed,
  noreply), version, quit, close, cache_memlimit, shutdown (off by default, on with ``-A``),
  raw_command, the dict interface, key_prefix, the pickle serde and explicit flags; every call
  that takes ``noreply`` with ``noreply=True`` (its effect checked by a later read on the same
  connection) and with ``noreply=False``.  pymemcache 4.0 has no ``gat``/``gats``/``verbosity``
  methods, so those commands go through ``raw_command`` and are checked by their replies and by
  ``stats settings``.
* expiry with a 1 s expire (set, set_many, add, touch, gat), values just under the 1 MiB item
  limit (and 1.5 MiB under ``-I 2m``), all 256 byte values, keys pymemcache refuses itself
  (``MemcacheIllegalInputError``) and the errors the server reports (``MemcacheClientError``,
  ``MemcacheServerError``, ``MemcacheUnknownCommandError``, ``MemcacheUnknownError``).
* ``PooledClient``: the same surface through a pool, then threads: 8 × 200 mixed ops, 8 × 500
  ``incr`` on one key (every value 1..4000 handed out exactly once) and 4 gets/cas retry loops
  that must not lose a single append.
* ``HashClient`` over two servers of the same kind (plain and ``use_pooling``): 100 keys land on
  both servers and all come back from ``get_many``; every HashClient call works across the pair.

Tests are deliberately few and long: each one costs a fresh server, and memcached needs up to a
second to exit on SIGTERM.  Only pymemcache drives the commands under test; exact protocol bytes
are the business of tests/protocol.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheIllegalInputError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
    MemcacheUnknownError,
)
from pymemcache.serde import pickle_serde

if TYPE_CHECKING:
    from tests.conftest import Server

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
MiB = 1024 * 1024
ALL_BYTES = bytes(range(256))


def make_client(server: Server, **kwargs: Any) -> Client:
    kwargs.setdefault("default_noreply", False)
    return Client(server.address, connect_timeout=TIMEOUT, timeout=TIMEOUT, no_delay=True, **kwargs)


def make_pool(server: Server, **kwargs: Any) -> PooledClient:
    kwargs.setdefault("default_noreply", False)
    kwargs.setdefault("max_pool_size", 16)
    return PooledClient(
        server.address, connect_timeout=TIMEOUT, timeout=TIMEOUT, no_delay=True, **kwargs
    )


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    c = make_client(server)
    yield c
    c.close()


@pytest.fixture
def pooled(server: Server) -> Iterator[PooledClient]:
    p = make_pool(server)
    yield p
    p.close()


def raw_get(c: Client | PooledClient, key: str) -> bytes:
    """The whole ``get`` reply minus its END, to see the flags the server keeps."""
    result: bytes = c.raw_command(f"get {key}", "END\r\n")
    return result


def refuses_connections(address: tuple[str, int], limit: float) -> bool:
    """True once nothing accepts on `address` (polled for up to `limit` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            with socket.create_connection(address, timeout=0.5):
                pass
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def twice(check: Callable[[], bool]) -> bool:
    """Run `check` a second time if it failed once.

    A 1 s expiry ends at the server's next whole-second tick, which can fall between two
    back-to-back commands (a set with expire=1, then touch/gat on it). Two ticks never come
    within a few milliseconds, so a second attempt removes that race without hiding a server
    that always fails the check.
    """
    return check() or check()


# --------------------------------------------------------------------------- storage commands


def test_set_get_and_flags(client: Client) -> None:
    assert client.get("k") is None
    assert client.get("k", default=b"dflt") == b"dflt"
    assert client.set("k", b"v1") is True
    assert client.get("k") == b"v1"
    assert client.set("k", "v2") is True  # str values are encoded (ascii)
    assert client.get("k") == b"v2"
    assert client.set("k", 12345) is True  # without a serde: str(value)
    assert client.get("k") == b"12345"
    assert client.set("empty", b"") is True
    assert client.get("empty") == b""
    assert client.get("empty", default=b"dflt") == b""

    # explicit flags are stored and returned verbatim, up to 32 bits
    assert client.set("f", b"v", flags=7) is True
    assert raw_get(client, "f") == b"VALUE f 7 1\r\nv\r\n"
    assert client.set("f", b"v", flags=2**32 - 1) is True
    assert raw_get(client, "f") == b"VALUE f 4294967295 1\r\nv\r\n"
    assert client.set("f", b"v", flags=0) is True
    assert raw_get(client, "f") == b"VALUE f 0 1\r\nv\r\n"


def test_multi_key_calls(client: Client) -> None:
    values = {f"key{i}": f"value{i}".encode() for i in range(20)}
    assert client.set_many(values) == []
    assert client.get_many(list(values)) == values
    assert client.set_multi({"m1": b"a", "m2": b"b"}) == []
    assert client.get_multi(["m1", "m2", "nope"]) == {"m1": b"a", "m2": b"b"}
    assert client.get_many(["nope1", "nope2"]) == {}
    assert client.get_many([]) == {}
    # the same key twice in one request: both replies land on one dict entry
    assert client.get_many(["m1", "m1"]) == {"m1": b"a"}

    assert client.delete_many([f"key{i}" for i in range(10)] + ["never-set"]) is True
    assert client.get_many(list(values)) == {f"key{i}": values[f"key{i}"] for i in range(10, 20)}
    assert client.delete_multi([f"key{i}" for i in range(10, 20)]) is True
    assert client.get_many(list(values)) == {}
    assert client.delete_many([]) is True
    assert client.delete("m1") is True
    assert client.delete("m1") is False
    assert client.get_many(["m1", "m2"]) == {"m2": b"b"}


def test_add_replace_append_prepend(client: Client) -> None:
    assert client.add("k", b"first") is True
    assert client.add("k", b"second") is False
    assert client.get("k") == b"first"
    assert client.replace("missing", b"x") is False
    assert client.get("missing") is None
    assert client.replace("k", b"third") is True
    assert client.get("k") == b"third"
    assert client.delete("k") is True
    assert client.add("k", b"again") is True
    assert client.get("k") == b"again"

    assert client.append("missing", b"x") is False
    assert client.prepend("missing", b"x") is False
    assert client.get("missing") is None
    assert client.set("c", b"middle", flags=5) is True
    assert client.append("c", b">>") is True
    assert client.prepend("c", b"<<") is True
    assert client.get("c") == b"<<middle>>"
    # append/prepend keep the item's flags; the flags they send are ignored
    assert client.append("c", b"!", flags=9) is True
    assert client.prepend("c", b"!", flags=11) is True
    assert raw_get(client, "c") == b"VALUE c 5 12\r\n!<<middle>>!\r\n"


def test_gets_and_cas(client: Client) -> None:
    assert client.gets("k") == (None, None)
    assert client.gets("k", default=b"d", cas_default=b"c") == (b"d", b"c")
    assert client.cas("k", b"v", 1) is None  # NOT_FOUND

    assert client.set("k", b"v1") is True
    value, token = client.gets("k")
    assert value == b"v1"
    assert isinstance(token, bytes) and token.isdigit()

    assert client.cas("k", b"v2", int(token) + 1000) is False  # EXISTS
    assert client.get("k") == b"v1"
    assert client.cas("k", b"v2", token) is True  # STORED
    assert client.get("k") == b"v2"
    assert client.cas("k", b"v3", token) is False  # that token is used up
    assert client.get("k") == b"v2"

    value2, token2 = client.gets("k")
    assert value2 == b"v2"
    assert token2 != token
    # int, str and bytes tokens are all accepted
    assert client.cas("k", b"v3", int(token2)) is True
    _, token3 = client.gets("k")
    assert client.cas("k", b"v4", token3.decode()) is True
    assert client.get("k") == b"v4"

    # any other write changes the token
    _, before = client.gets("k")
    assert client.append("k", b"+") is True
    _, after = client.gets("k")
    assert before != after
    assert client.cas("k", b"x", before) is False
    assert client.delete("k") is True
    assert client.cas("k", b"v", after) is None

    assert client.gets_many([]) == {}
    assert client.gets_many(["a", "b"]) == {}
    assert client.set_many({"a": b"1", "b": b"2"}) == []
    got = client.gets_many(["a", "b", "c"])
    assert set(got) == {"a", "b"}
    assert got["a"][0] == b"1" and got["b"][0] == b"2"
    assert got["a"][1] != got["b"][1]
    assert got["a"] == client.gets("a")
    assert client.cas("a", b"11", got["a"][1]) is True
    assert client.cas("b", b"22", got["a"][1]) is False
    assert client.get_many(["a", "b"]) == {"a": b"11", "b": b"2"}


# --------------------------------------------------------------------------- arithmetic


def test_incr_and_decr(client: Client) -> None:
    assert client.incr("missing", 1) is None
    assert client.decr("missing", 1) is None
    assert client.get("missing") is None  # incr does not create the key

    assert client.set("n", b"10") is True
    assert client.incr("n", 5) == 15
    assert client.incr("n", 0) == 15
    assert client.decr("n", 3) == 12
    assert client.get("n") == b"12"
    assert client.decr("n", 100) == 0  # clamps at 0, never negative
    # a number that shrinks may stay space-padded in place (protocol.txt allows it; memcached
    # does it)
    assert client.get("n") in (b"0", b"0 ")
    assert client.decr("n", 1) == 0

    assert client.set("n", b"99") is True
    assert client.incr("n", 1) == 100
    assert client.get("n") == b"100"  # growing past the old length is never padded
    assert client.set("n", b"100") is True
    assert client.decr("n", 95) == 5
    assert client.get("n") in (b"5", b"5  ")

    assert client.set("big", str(2**64 - 2).encode()) is True
    assert client.incr("big", 1) == 2**64 - 1
    assert client.incr("big", 1) == 0  # 64-bit wrap-around
    assert client.incr("big", 2**64 - 1) == 2**64 - 1  # the largest delta

    # arithmetic keeps the flags
    assert client.set("fl", b"1", flags=3) is True
    assert client.incr("fl", 1) == 2
    assert raw_get(client, "fl") == b"VALUE fl 3 1\r\n2\r\n"

    # errors: the server's
    assert client.set("text", b"abc") is True
    for call in (client.incr, client.decr):
        with pytest.raises(MemcacheClientError) as err:
            call("text", 1)
        assert err.value.args == (b"cannot increment or decrement non-numeric value",)
    assert client.get("text") == b"abc"
    assert client.set("one", b"1") is True
    for delta in (-1, 2**64):  # pymemcache passes any int through; the server refuses
        with pytest.raises(MemcacheClientError) as err:
            client.incr("one", delta)
        assert err.value.args == (b"invalid numeric delta argument",)
    assert client.get("one") == b"1"  # the client reconnects after an error
    # ... and pymemcache's own
    with pytest.raises(MemcacheIllegalInputError):
        client.incr("one", "1")  # type: ignore[arg-type]
    with pytest.raises(MemcacheIllegalInputError):
        client.decr("one", 1.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- noreply


def test_noreply(server: Server, client: Client) -> None:
    # noreply=True: each call returns without reading; the later read on the same connection
    # proves that the command ran and that the server sent nothing back for it
    assert client.set("k", b"v", noreply=True) is True
    assert client.get("k") == b"v"
    assert client.set_many({"a": b"1", "b": b"2"}, noreply=True) == []
    assert client.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    assert client.add("k", b"other", noreply=True) is True  # NOT_STORED, but nobody hears
    assert client.get("k") == b"v"
    assert client.add("new", b"n", noreply=True) is True
    assert client.get("new") == b"n"
    assert client.replace("k", b"v2", noreply=True) is True
    assert client.replace("nope", b"x", noreply=True) is True
    assert client.get_many(["k", "nope"]) == {"k": b"v2"}
    assert client.append("k", b"-end", noreply=True) is True
    assert client.prepend("k", b"start-", noreply=True) is True
    assert client.get("k") == b"start-v2-end"

    _, token = client.gets("k")
    assert client.cas("k", b"stale", int(token) + 1, noreply=True) is True
    assert client.get("k") == b"start-v2-end"
    assert client.cas("k", b"casd", token, noreply=True) is True
    assert client.get("k") == b"casd"

    assert client.set("n", b"5") is True
    assert client.incr("n", 10, noreply=True) is None
    assert client.get("n") == b"15"
    assert client.decr("n", 4, noreply=True) is None
    assert client.get("n") == b"11"

    assert client.touch("k", 100, noreply=True) is True
    assert client.touch("missing", 100, noreply=True) is True
    assert client.get("k") == b"casd"

    assert client.delete("k", noreply=True) is True
    assert client.get("k") is None
    assert client.delete_many(["a", "b"], noreply=True) is True
    assert client.get_many(["a", "b", "new"]) == {"new": b"n"}
    assert client.flush_all(noreply=True) is True
    assert client.get_many(["new", "n"]) == {}

    # noreply=False: every outcome is reported
    assert client.set("k", b"v", noreply=False) is True
    assert client.add("k", b"v", noreply=False) is False
    assert client.replace("nope", b"v", noreply=False) is False
    assert client.append("nope", b"v", noreply=False) is False
    assert client.prepend("nope", b"v", noreply=False) is False
    assert client.set_many({"k": b"v", "j": b"w"}, noreply=False) == []
    assert client.touch("nope", 0, noreply=False) is False
    assert client.touch("k", 0, noreply=False) is True
    assert client.delete("nope", noreply=False) is False
    assert client.delete("k", noreply=False) is True
    assert client.delete_many(["j"], noreply=False) is True
    assert client.get("j") is None
    assert client.flush_all(noreply=False) is True

    # pymemcache's own default (default_noreply=True) never waits for storage replies
    dflt = Client(server.address, connect_timeout=TIMEOUT, timeout=TIMEOUT)
    try:
        assert dflt.set("k", b"v") is True
        assert dflt.add("k", b"w") is True
        assert dflt.get("k") == b"v"
        assert dflt.replace("k", b"r") is True
        assert dflt.append("k", b"+") is True
        assert dflt.touch("nope") is True
        assert dflt.delete("nope") is True
        assert dflt.get("k") == b"r+"
        # cas, incr and decr still wait by default
        _, token = dflt.gets("k")
        assert dflt.cas("k", b"x", int(token) + 1) is False
        assert dflt.set("n", b"1") is True
        assert dflt.incr("n", 1) == 2
        assert dflt.decr("n", 2) == 0
    finally:
        dflt.close()


# --------------------------------------------------------------------------- touch / gat / expiry


def test_touch_gat_gats(client: Client) -> None:
    assert client.touch("missing", 10) is False
    assert client.set("k", b"v") is True
    assert client.touch("k", 10) is True
    assert client.touch("k") is True  # expire=0: never
    assert client.get("k") == b"v"

    # pymemcache 4.0 has no gat/gats methods: drive them through raw_command
    assert client.raw_command("gat 0 missing", "END\r\n") == b""
    assert client.set("g", b"value", flags=4) is True
    assert client.raw_command("gat 100 g", "END\r\n") == b"VALUE g 4 5\r\nvalue\r\n"
    _, token = client.gets("g")
    assert client.raw_command("gats 0 g missing", "END\r\n") == (
        b"VALUE g 4 5 " + token + b"\r\nvalue\r\n"
    )
    assert client.set("h", b"x") is True
    assert client.raw_command("gat 0 g h", "END\r\n") == (
        b"VALUE g 4 5\r\nvalue\r\nVALUE h 0 1\r\nx\r\n"
    )
    assert client.gets("g") == (b"value", token)  # gat/touch leave the cas token alone
    assert client.touch("g", 5) is True
    assert client.gets("g") == (b"value", token)


def test_expiry(client: Client) -> None:
    # keys given a 1 s expiry by set/set_many/add/touch/gat, keys whose 1 s expiry was lifted
    # again by touch 0 / gat 0, and keys that do not expire soon; one sleep checks them all
    assert client.set("set1", b"v", expire=1) is True
    assert client.set_many({"many1": b"v", "many2": b"v"}, expire=1) == []
    assert client.add("add1", b"v", expire=1) is True
    assert client.set("touch1", b"v") is True
    assert client.touch("touch1", 1) is True
    assert client.set("gat1", b"v") is True
    assert client.raw_command("gat 1 gat1", "END\r\n") == b"VALUE gat1 0 1\r\nv\r\n"

    assert twice(lambda: client.set("touch0", b"v", expire=1) and client.touch("touch0", 0))
    assert twice(
        lambda: (
            client.set("gat0", b"v", expire=1) is True
            and client.raw_command("gat 0 gat0", "END\r\n") == b"VALUE gat0 0 1\r\nv\r\n"
        )
    )
    assert client.set("long", b"v", expire=100) is True
    assert client.set("forever", b"v") is True

    # a negative expire is already in the past
    assert client.set("neg", b"v", expire=-1) is True
    assert client.get("neg") is None
    assert client.get("long") == b"v"

    # 1 s expiry, + up to 1 s for a server clock that ticks once a second, + margin
    time.sleep(2.4)
    keys = ["set1", "many1", "many2", "add1", "touch1", "gat1", "touch0", "gat0", "long", "forever"]
    assert client.get_many(keys) == {"touch0": b"v", "gat0": b"v", "long": b"v", "forever": b"v"}
    assert client.touch("set1", 100) is False
    assert client.raw_command("gat 100 many1", "END\r\n") == b""
    assert client.add("set1", b"again") is True  # an expired key is free again
    assert client.get("set1") == b"again"


# --------------------------------------------------------------------------- flush_all


def test_flush_all(client: Client) -> None:
    assert client.set_many({"a": b"1", "b": b"2"}) == []
    assert client.flush_all() is True
    assert client.get_many(["a", "b"]) == {}
    assert client.add("a", b"3") is True  # a flushed key can be added again at once
    assert client.get("a") == b"3"

    assert client.flush_all(delay=100, noreply=True) is True
    assert client.get("a") == b"3"  # not yet
    assert client.flush_all(delay=0, noreply=True) is True
    assert client.get("a") is None


def test_flush_all_with_delay(client: Client) -> None:
    # (memcached: `flush_all 1` takes effect at once, its deadline being rounded down to the
    # current second; 3 s leaves at least one clock tick of margin, 3.4 s of sleep passes it)
    assert client.set("before", b"v") is True
    assert client.flush_all(delay=3) is True
    assert client.get("before") == b"v"
    assert client.set("between", b"v") is True
    assert client.get("between") == b"v"
    time.sleep(3.4)
    # everything stored before the deadline is gone, even what was stored after the command
    assert client.get_many(["before", "between"]) == {}
    assert client.set("after", b"v") is True
    assert client.get("after") == b"v"


# --------------------------------------------------------------------------- misc commands


def test_stats(client: Client, server: Server) -> None:
    assert client.set_many({"a": b"1", "b": b"2", "c": b"3"}) == []
    assert client.get_many(["a", "b", "zzz"]) == {"a": b"1", "b": b"2"}
    stats = client.stats()
    assert stats[b"curr_items"] == 3
    assert stats[b"total_items"] == 3
    assert stats[b"cmd_set"] == 3
    assert stats[b"cmd_get"] == 3
    assert stats[b"get_hits"] == 2
    assert stats[b"get_misses"] == 1
    assert stats[b"limit_maxbytes"] == 64 * MiB
    assert stats[b"version"] == client.version()
    assert isinstance(stats[b"pid"], int) and stats[b"pid"] > 0
    assert isinstance(stats[b"uptime"], int) and stats[b"uptime"] >= 0
    assert abs(stats[b"time"] - time.time()) < 5
    assert stats[b"curr_connections"] >= 1
    assert isinstance(stats[b"rusage_user"], float)

    settings = client.stats("settings")
    assert settings[b"item_size_max"] == MiB
    assert settings[b"maxbytes"] == 64 * MiB
    assert settings[b"tcpport"] == server.port
    assert settings[b"cas_enabled"] == b"yes"
    assert settings[b"evictions"] == b"on"
    assert settings[b"growth_factor"] == 1.25

    items = client.stats("items")
    numbers = [v for k, v in items.items() if re.fullmatch(rb"items:\d+:number", k)]
    assert sum(numbers) == 3, items

    slabs = client.stats("slabs")
    assert slabs[b"active_slabs"] >= 1
    assert slabs[b"total_malloced"] > 0
    used = [v for k, v in slabs.items() if re.fullmatch(rb"\d+:used_chunks", k)]
    assert sum(used) == 3, slabs

    with pytest.raises(MemcacheUnknownCommandError):
        client.stats("no-such-group")
    assert client.get("a") == b"1"


def test_version_verbosity_and_memlimit(client: Client) -> None:
    version = client.version()
    assert isinstance(version, bytes)
    assert re.fullmatch(rb"\d+\.\d+\.\d+", version), version

    # pymemcache 4.0 has no verbosity method
    assert client.stats("settings")[b"verbosity"] == 0
    assert client.raw_command("verbosity 1") == b"OK"
    assert client.stats("settings")[b"verbosity"] == 1
    # with noreply the only reply on the wire is the version's
    assert client.raw_command("verbosity 0 noreply\r\nversion") == b"VERSION " + version
    assert client.stats("settings")[b"verbosity"] == 0

    assert client.cache_memlimit(100) is True
    assert client.stats("settings")[b"maxbytes"] == 100 * MiB
    assert client.stats()[b"limit_maxbytes"] == 100 * MiB
    # below 8 MB memcached answers MEMLIMIT_TOO_SMALL, a reply pymemcache cannot classify
    with pytest.raises(MemcacheUnknownError) as err:
        client.cache_memlimit(1)
    assert err.value.args[0].startswith(b"MEMLIMIT_TOO_SMALL")
    assert client.stats("settings")[b"maxbytes"] == 100 * MiB
    with pytest.raises(MemcacheIllegalInputError):
        client.cache_memlimit("100")


def test_raw_command(client: Client) -> None:
    assert client.raw_command("version") == b"VERSION " + client.version()
    assert client.set("k", b"v") is True
    assert client.raw_command("get k", "END\r\n") == b"VALUE k 0 1\r\nv\r\n"
    assert client.raw_command(b"get k", b"END\r\n") == b"VALUE k 0 1\r\nv\r\n"
    assert client.raw_command("get missing", "END\r\n") == b""
    assert client.raw_command("delete k") == b"DELETED"
    assert client.raw_command("delete k") == b"NOT_FOUND"
    with pytest.raises(MemcacheUnknownCommandError):
        client.raw_command("no_such_command")
    with pytest.raises(MemcacheClientError) as err:
        client.raw_command("get " + "a" * 251)  # the server's own key-length check
    assert err.value.args == (b"bad command line format",)
    # the server hangs up on quit: raw_command, which waits for a reply, sees the close
    with pytest.raises(MemcacheUnexpectedCloseError):
        client.raw_command("quit")
    assert client.sock is None
    assert client.raw_command("version").startswith(b"VERSION ")


def test_connection_lifecycle_dict_interface_and_key_prefix(server: Server, client: Client) -> None:
    assert client.set("k", b"v") is True
    client.quit()
    assert client.sock is None
    assert client.get("k") == b"v"  # reconnected
    client.close()
    assert client.sock is None
    client.close()  # closing twice is harmless
    assert client.get("k") == b"v"
    client.disconnect_all()
    assert client.sock is None

    client["d"] = b"v"  # a noreply set
    assert client["d"] == b"v"
    del client["d"]  # a noreply delete
    with pytest.raises(KeyError):
        client["d"]
    assert client.get("d") is None

    ns = make_client(server, key_prefix=b"ns:")
    try:
        assert ns.set("a", b"1") is True
        assert ns.set_many({"b": b"2"}) == []
        assert client.get_many(["a", "b", "ns:a", "ns:b"]) == {"ns:a": b"1", "ns:b": b"2"}
        assert ns.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
        assert ns.gets("a")[0] == b"1"
        assert ns.incr("a", 1) == 2
        assert ns.delete("a") is True
        assert client.get("ns:a") is None
        with pytest.raises(MemcacheIllegalInputError):
            ns.get("x" * 248)  # 3 + 248 > 250 once prefixed
    finally:
        ns.close()


def test_shutdown(kind: str, server: Server, server_factory: Callable[..., Server]) -> None:
    c = make_client(server)
    try:
        with pytest.raises(MemcacheUnknownCommandError):
            c.shutdown()  # not enabled without -A
        assert c.get("x") is None  # still serving
    finally:
        c.close()
    assert not refuses_connections(server.address, limit=0)

    for graceful in (False, True):
        srv = server_factory(kind, "-A")
        c = make_client(srv)
        assert c.set("k", b"v") is True
        assert c.shutdown(graceful=graceful) is None
        c.close()
        assert refuses_connections(srv.address, limit=5), f"still up ({graceful=})"


# --------------------------------------------------------------------------- values


def test_binary_values(client: Client) -> None:
    assert client.set("bin", ALL_BYTES) is True
    assert client.get("bin") == ALL_BYTES
    assert client.gets("bin")[0] == ALL_BYTES
    tricky = b"\r\nEND\r\nVALUE x 0 1\r\n\x00\xff"
    assert client.set_many({"t1": tricky, "t2": ALL_BYTES[::-1]}) == []
    assert client.get_many(["t1", "t2", "bin"]) == {
        "t1": tricky,
        "t2": ALL_BYTES[::-1],
        "bin": ALL_BYTES,
    }
    assert client.append("bin", b"\r\n") is True
    assert client.prepend("bin", b"\x00") is True
    assert client.get("bin") == b"\x00" + ALL_BYTES + b"\r\n"


def test_large_values(kind: str, client: Client, server_factory: Callable[..., Server]) -> None:
    big = (ALL_BYTES * (MiB // 256))[: MiB - 1024]
    assert client.set("big", big) is True
    assert client.get("big") == big
    assert client.get_many(["big", "small"]) == {"big": big}

    assert client.set("small", b"s") is True
    for size in (MiB + 1, 2 * MiB):
        with pytest.raises(MemcacheServerError) as err:
            client.set("big", b"x" * size)
        assert err.value.args == (b"object too large for cache",)
    # a refused set also drops the old value (memcached: no stale data after a failed SET)
    assert client.get("big") is None
    # pymemcache dropped the connection after the error and makes a new one
    assert client.get("small") == b"s"

    with pytest.raises(MemcacheServerError) as err:
        client.set_many({"a": b"a", "too-big": b"x" * (MiB + 1)})
    assert err.value.args == (b"object too large for cache",)
    assert client.get_many(["a", "too-big"]) == {"a": b"a"}

    # -I raises the limit
    srv = server_factory(kind, "-I", "2m")
    c = make_client(srv)
    try:
        assert c.stats("settings")[b"item_size_max"] == 2 * MiB
        value = (ALL_BYTES * (2 * MiB // 256))[: MiB + MiB // 2]
        assert c.set("k", value) is True
        assert c.get("k") == value
        with pytest.raises(MemcacheServerError) as err:
            c.set("k2", b"x" * (2 * MiB + 1))
        assert err.value.args == (b"object too large for cache",)
    finally:
        c.close()


# --------------------------------------------------------------------------- keys, input, errors


def test_input_refused_by_pymemcache(client: Client) -> None:
    # allow_unicode_keys is off: non-ASCII str keys never reach the server
    for call in (
        lambda: client.set("ключ", b"v"),
        lambda: client.get("ключ"),
        lambda: client.get_many(["ok", "ключ"]),
        lambda: client.gets("ключ"),
        lambda: client.delete("ключ"),
        lambda: client.incr("ключ", 1),
        lambda: client.touch("ключ", 1),
        lambda: client.set("has space", b"v"),
        lambda: client.set("has\nnewline", b"v"),
        lambda: client.set(" leading", b"v"),
        lambda: client.set("nul\x00", b"v"),
        lambda: client.set("k" * 251, b"v"),
        lambda: client.gets("k" * 251),
        lambda: client.set("k", "ünïcode value"),  # ascii encoding and no serde
        lambda: client.set("k", b"v", expire="1"),
        lambda: client.touch("k", 1.5),
        lambda: client.cas("k", b"v", "12a"),
        lambda: client.cas("k", b"v", 1.0),
        lambda: client.flush_all(delay="1"),
    ):
        with pytest.raises(MemcacheIllegalInputError):
            call()
    assert client.set("k" * 250, b"v") is True  # the longest legal key
    assert client.get("k" * 250) == b"v"
    assert client.stats()[b"curr_items"] == 1  # nothing refused reached the server


def test_unicode_and_binary_keys_when_allowed(server: Server, client: Client) -> None:
    uc = make_client(server, allow_unicode_keys=True)
    try:
        assert uc.set("ключ", b"v") is True
        assert uc.get("ключ") == b"v"
        assert uc.get_many(["ключ", "キー"]) == {"ключ": b"v"}
        # on the wire the key is its UTF-8 bytes
        assert client.get("ключ".encode()) == b"v"
        assert client.set(b"\xff\xfe\x01", b"raw") is True
        assert client.get(b"\xff\xfe\x01") == b"raw"
        assert client.get_many([b"\xff\xfe\x01"]) == {b"\xff\xfe\x01": b"raw"}
        # the 250 limit counts bytes: 125 two-byte characters fit, 126 do not
        assert uc.set("й" * 125, b"long") is True
        assert uc.get("й" * 125) == b"long"
        with pytest.raises(MemcacheIllegalInputError):
            uc.set("й" * 126, b"v")
    finally:
        uc.close()


def test_errors_reported_by_the_server(client: Client) -> None:
    for flags in (-1, 2**64):
        with pytest.raises(MemcacheClientError) as err:
            client.set("k", b"v", flags=flags)
        assert err.value.args == (b"bad command line format",)
    assert client.get("k") is None
    assert issubclass(MemcacheUnknownCommandError, MemcacheClientError)
    with pytest.raises(MemcacheUnknownCommandError):
        client.raw_command("bogus_command arg")
    assert client.set("k", b"v") is True
    assert client.get("k") == b"v"


# --------------------------------------------------------------------------- serde


def test_pickle_serde_round_trip(server: Server, client: Client) -> None:
    sc = make_client(server, serde=pickle_serde)
    try:
        values: dict[str, Any] = {
            "int": 42,
            "neg": -7,
            "huge": 2**100,
            "str": "ünïcode ✓",
            "bytes": ALL_BYTES,
            "dict": {"a": 1, "b": [1, 2, {"c": (3, 4)}], 5: None},
            "list": [1, "two", 3.0, b"four"],
            "float": 1.5,
            "true": True,
            "set": {1, 2, 3},
        }
        assert sc.set_many(values) == []
        got = sc.get_many(list(values))
        assert got == values
        assert type(got["true"]) is bool
        assert type(got["set"]) is set
        for key, value in values.items():
            assert sc.get(key) == value
        assert sc.gets("dict")[0] == values["dict"]

        # the flags the serde chose are stored and returned verbatim
        assert raw_get(client, "int") == b"VALUE int 2 2\r\n42\r\n"
        text = "ünïcode ✓".encode()
        assert raw_get(client, "str") == b"VALUE str 16 %d\r\n%s\r\n" % (len(text), text)
        assert raw_get(client, "bytes") == b"VALUE bytes 0 256\r\n" + ALL_BYTES + b"\r\n"
        assert raw_get(client, "dict").startswith(b"VALUE dict 1 ")

        # server-side arithmetic on a serde int keeps the int flag
        assert sc.incr("int", 8) == 50
        assert sc.get("int") == 50
        assert sc.add("int", 0) is False
        assert sc.replace("int", {"x": 1}) is True
        assert sc.get("int") == {"x": 1}
    finally:
        sc.close()


# --------------------------------------------------------------------------- PooledClient


def test_pooled_client_api(pooled: PooledClient, server: Server) -> None:
    p = pooled
    assert p.get("k") is None
    assert p.get("k", b"d") == b"d"
    assert p.set("k", b"v") is True
    assert p.get("k") == b"v"
    assert p.set_many({"a": b"1", "b": b"2"}) == []
    assert p.set_multi({"c": b"3"}) == []
    assert p.get_many(["a", "b", "c", "x"]) == {"a": b"1", "b": b"2", "c": b"3"}
    assert p.get_multi(["a"]) == {"a": b"1"}
    assert p.add("k", b"x") is False
    assert p.add("new", b"n") is True
    assert p.replace("nope", b"x") is False
    assert p.replace("k", b"v2") is True
    assert p.append("k", b">") is True
    assert p.prepend("k", b"<") is True
    assert p.get("k") == b"<v2>"

    value, token = p.gets("k")
    assert value == b"<v2>"
    assert p.gets("missing") == (None, None)
    many = p.gets_many(["k", "a", "missing"])
    assert set(many) == {"k", "a"} and many["k"] == (value, token)
    assert p.cas("k", b"c1", int(token) + 1) is False
    assert p.cas("k", b"c1", token) is True
    assert p.cas("missing", b"c1", token) is None
    assert p.get("k") == b"c1"

    assert p.set("n", b"10") is True
    assert p.incr("n", 5) == 15
    assert p.decr("n", 20) == 0
    assert p.incr("missing", 1) is None
    assert p.decr("missing", 1) is None
    assert p.touch("k", 100) is True
    assert p.touch("missing", 100) is False

    assert p.delete("new") is True
    assert p.delete("new") is False
    assert p.delete_many(["a", "b"]) is True
    assert p.delete_multi(["c"]) is True
    assert p.get_many(["a", "b", "c", "new"]) == {}

    stats = p.stats()
    assert stats[b"curr_items"] == 2  # k, n
    assert p.stats("settings")[b"tcpport"] == server.port
    assert p.version() == stats[b"version"]
    assert p.raw_command("get k", "END\r\n") == b"VALUE k 0 2\r\nc1\r\n"

    p["d"] = b"dict"
    assert p["d"] == b"dict"
    del p["d"]
    with pytest.raises(KeyError):
        p["d"]

    p.quit()  # destroys the pooled connection; the pool makes a new one
    assert p.get("k") == b"c1"
    p.close()
    assert p.get("k") == b"c1"
    p.disconnect_all()
    assert p.flush_all() is True
    assert p.get_many(["k", "n"]) == {}

    sp = make_pool(server, serde=pickle_serde)
    try:
        assert sp.set("d", {"x": [1, 2]}) is True
        assert sp.set("i", 7) is True
        assert sp.get_many(["d", "i"]) == {"d": {"x": [1, 2]}, "i": 7}
        assert sp.incr("i", 3) == 10
        assert sp.get("i") == 10
    finally:
        sp.close()


def test_pooled_client_noreply_and_errors(pooled: PooledClient) -> None:
    p = pooled
    assert p.set("k", b"v", noreply=True) is True
    assert p.add("k", b"x", noreply=True) is True
    assert p.replace("k", b"r", noreply=True) is True
    assert p.append("k", b"+", noreply=True) is True
    assert p.prepend("k", b"-", noreply=True) is True
    assert p.set_many({"a": b"1", "n": b"1"}, noreply=True) == []
    assert p.incr("n", 4, noreply=True) is None
    assert p.decr("n", 2, noreply=True) is None
    assert p.touch("k", 0, noreply=True) is True
    # used from one thread, the pool hands out one connection, so reads follow the writes
    assert p.get_many(["k", "a", "n", "nope"]) == {"k": b"-r+", "a": b"1", "n": b"3"}
    _, token = p.gets("k")
    assert p.cas("k", b"cas", token, noreply=True) is True
    assert p.get("k") == b"cas"
    assert p.delete("a", noreply=True) is True
    assert p.delete_many(["k"], noreply=True) is True
    assert p.get_many(["k", "a"]) == {}
    assert p.flush_all(noreply=True) is True
    assert p.get("n") is None

    assert p.set("t", b"text") is True
    with pytest.raises(MemcacheClientError):
        p.incr("t", 1)
    with pytest.raises(MemcacheServerError):
        p.set("big", b"x" * (MiB + 1))
    with pytest.raises(MemcacheIllegalInputError):
        p.get("bad key")
    with pytest.raises(MemcacheIllegalInputError):
        p.set("ключ", b"v")
    with pytest.raises(MemcacheUnknownCommandError):
        p.shutdown()
    assert p.get("t") == b"text"  # failed connections were dropped from the pool


def _run_threads(n: int, target: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(TIMEOUT)
            target(i)
        except BaseException as exc:  # noqa: B036 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


def test_pooled_client_threads(pooled: PooledClient) -> None:
    # 8 threads x 200 operations (50 rounds of set, get, append, get) through one PooledClient
    def mixed(i: int) -> None:
        for j in range(50):
            key = f"t{i}-{j}"
            value = f"{i}:{j}:".encode() + ALL_BYTES[j * 5 : j * 5 + 16]
            assert pooled.set(key, value) is True
            assert pooled.get(key) == value
            assert pooled.append(key, b"|tail") is True
            assert pooled.get(key) == value + b"|tail"

    assert _run_threads(8, mixed) == []
    expected = {
        f"t{i}-{j}": f"{i}:{j}:".encode() + ALL_BYTES[j * 5 : j * 5 + 16] + b"|tail"
        for i in range(8)
        for j in range(50)
    }
    assert pooled.get_many(list(expected)) == expected
    assert pooled.stats()[b"curr_items"] == 400

    # 8 threads x 500 incr on one key
    assert pooled.set("counter", b"0") is True
    seen: list[list[int]] = [[] for _ in range(8)]

    def incr(i: int) -> None:
        for _ in range(500):
            seen[i].append(pooled.incr("counter", 1))

    assert _run_threads(8, incr) == []
    assert pooled.get("counter") == b"4000"
    for values in seen:  # each thread saw the counter only go up
        assert values == sorted(values)
    # every incr returned a distinct value: 1..4000 handed out exactly once
    assert sorted(v for values in seen for v in values) == list(range(1, 4001))


def test_pooled_client_cas_retry_loops_lose_nothing(pooled: PooledClient) -> None:
    assert pooled.set("log", b"") is True
    rounds = 50

    def work(i: int) -> None:
        for j in range(rounds):
            for _ in range(10_000):
                value, token = pooled.gets("log")
                if pooled.cas("log", value + f"{i}.{j};".encode(), token) is True:
                    break
            else:
                raise AssertionError(f"thread {i} never won a cas for entry {j}")

    assert _run_threads(4, work) == []
    log = pooled.get("log").decode()
    assert log.endswith(";")
    entries = log[:-1].split(";")
    assert sorted(entries) == sorted(f"{i}.{j}" for i in range(4) for j in range(rounds))
    for i in range(4):  # each thread's own appends stay in order
        assert [e for e in entries if e.startswith(f"{i}.")] == [f"{i}.{j}" for j in range(rounds)]


# --------------------------------------------------------------------------- HashClient


@pytest.fixture
def two_servers(kind: str, server_factory: Callable[..., Server]) -> tuple[Server, Server]:
    return server_factory(kind), server_factory(kind)


def curr_items(srv: Server) -> int:
    c = make_client(srv)
    try:
        return int(c.stats()[b"curr_items"])
    finally:
        c.close()


def make_hash(servers: list[tuple[str, int]], **kwargs: Any) -> HashClient:
    return HashClient(
        servers, connect_timeout=TIMEOUT, timeout=TIMEOUT, default_noreply=False, **kwargs
    )


def test_hash_client_spreads_keys(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    values = {f"key{i}": f"value{i}".encode() for i in range(100)}
    for use_pooling in (False, True):
        h = make_hash([a.address, b.address], use_pooling=use_pooling)
        try:
            assert h.set_many(values) == []
            on_a, on_b = curr_items(a), curr_items(b)
            assert on_a > 0 and on_b > 0, (on_a, on_b)
            assert on_a + on_b == 100
            assert h.get_many(list(values)) == values
            assert h.get_multi(list(values) + ["missing"]) == values
            assert h.set_multi({"key0": b"again"}) == []
            assert h.get("key0") == b"again"
            assert h.set("key0", b"value0") is True

            gm = h.gets_many(list(values))
            assert {k: v for k, (v, _) in gm.items()} == values
            assert h.gets_multi(["key0"]) == {"key0": gm["key0"]}

            assert h.delete_many([f"key{i}" for i in range(50)]) is True
            assert h.get_many(list(values)) == {
                f"key{i}": values[f"key{i}"] for i in range(50, 100)
            }
            assert curr_items(a) + curr_items(b) == 50
            assert h.delete_multi([f"key{i}" for i in range(50, 100)]) is True
            assert h.get_many(list(values)) == {}
            assert curr_items(a) + curr_items(b) == 0
        finally:
            h.close()


def test_hash_client_api(two_servers: tuple[Server, Server]) -> None:
    a, b = two_servers
    # start with one server and add the other: exercises add_server(host, port)
    h = make_hash([a.address])
    h.add_server(b.host, b.port)
    try:
        assert h.get("k") is None
        assert h.get("k", default=b"d") == b"d"
        assert h.set("k", b"v") is True
        assert h.get("k") == b"v"
        assert h.add("k", b"x") is False
        assert h.add("k2", b"x") is True
        assert h.replace("nope", b"x") is False
        assert h.replace("k", b"v2") is True
        assert h.append("k", b">") is True
        assert h.prepend("k", b"<") is True
        assert h.get("k") == b"<v2>"
        value, token = h.gets("k")
        assert value == b"<v2>"
        assert h.cas("k", b"c", int(token) + 1) is False
        assert h.cas("k", b"c", token) is True
        assert h.cas("nope", b"c", token) is None
        assert h.get("k") == b"c"
        assert h.set("n", b"1") is True
        assert h.incr("n", 9) == 10
        assert h.decr("n", 20) == 0
        assert h.incr("nope", 1) is None
        assert h.decr("nope", 1) is None
        assert h.touch("k", 100) is True
        assert h.touch("nope", 100) is False
        assert h.delete("k2") is True
        assert h.delete("k2") is False
        # noreply through the hash client
        assert h.set("q", b"quiet", noreply=True) is True
        assert h.get("q") == b"quiet"
        assert h.delete("q", noreply=True) is True
        assert h.get("q") is None
        # errors pass through (ignore_exc is off)
        assert h.set("t", b"text") is True
        with pytest.raises(MemcacheClientError):
            h.incr("t", 1)
        with pytest.raises(MemcacheIllegalInputError):
            h.get("ключ")
        with pytest.raises(MemcacheServerError):
            h.set("big", b"x" * (MiB + 1))
        assert h.get("t") == b"text"

        h.quit()
        assert h.get("k") == b"c"  # reconnected
        h.disconnect_all()
        h.flush_all()
        assert h.get_many(["k", "n", "t"]) == {}
    finally:
        h.close()

    hs = make_hash([a.address, b.address], serde=pickle_serde)
    try:
        objects: dict[str, Any] = {f"obj{i}": {"i": i, "sq": [i, i * i]} for i in range(30)}
        assert hs.set_many(objects) == []
        assert hs.get_many(list(objects)) == objects
        assert hs.set("count", 5) is True
        assert hs.incr("count", 2) == 7
        assert hs.get("count") == 7
    finally:
        hs.close()
