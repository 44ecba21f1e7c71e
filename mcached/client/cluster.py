"""The discovery client: a pymemcache `HashClient` that follows the configuration endpoint.

::

    from mcached.client.cluster import ClusterClient

    client = ClusterClient("cache.example.com:11211", poll_interval=60, ignore_exc=True)
    client.set("user:42", b"Ada")       # sharded over every node the endpoint lists
    client.get("user:42")

It asks the endpoint (``config get cluster``; the legacy ``get AmazonElastiCache:cluster``
on old engines) for the node list, builds the hash ring over it, and re-polls every
`poll_interval` seconds in a background thread, adding and removing nodes as the list
changes. pymemcache 4.0 has no such client; this needs the ``client`` extra
(``pip install mcached[client]``).

Rules:

1. What is compared is the node list, not only the version: a client that falls over to
   another endpoint whose version counter differs still sees exactly what changed. The
   version is kept for logs and `config`.
2. If the endpoint cannot be reached the client tries its other seeds, then the nodes it
   already knows (any node serves the configuration); if none answers it keeps the current
   membership. A node that dies but stays listed is pymemcache's business: its keys miss (or
   raise, without ``ignore_exc``) and the others keep serving.
3. `HashClient` is not written for a ring that changes under it, so the ring is read and
   changed under `_ring_lock`; a multi-key call keeps the node clients it picked, rather
   than looking them up again by address; and a removed node's client leaves ``clients`` at
   the next poll, its connections closed as they fall idle (with ``use_pooling``): a request
   that picked it before it was removed finishes on its connection, however long it takes.
   (Closing it at the next poll, as before, broke such a request's socket under it whenever
   it took longer than a poll interval.)
4. A node that stops answering never blocks a caller for long: unless given, the connect and
   I/O timeouts are `CONNECT_TIMEOUT` and `TIMEOUT` (pymemcache's own default is to wait for
   ever). With ``ignore_exc=True`` such a node's keys are then misses after at most that long,
   and pymemcache skips the node for ``retry_timeout`` seconds after a failure.
5. Keys are hashed as pymemcache's `HashClient` hashes them (rendezvous, murmur3, the ring
   naming nodes ``ip:port``), except that a ``bytes`` key is hashed as its text, so ``b"k"``
   and ``"k"`` land on the same node (`mcached.client.hashing`, which ``mcached-tool cluster
   add --warm`` uses to move exactly the keys that change node).

Lock order: `_poll_lock` (one poll at a time: the endpoint connection is not shared) before
`_ring_lock`. The poll's network I/O runs without `_ring_lock`, so requests never wait on it.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from pymemcache.client.base import check_key_helper  # type: ignore[import-untyped]
from pymemcache.client.hash import HashClient  # type: ignore[import-untyped]
from pymemcache.exceptions import MemcacheError  # type: ignore[import-untyped]

from mcached.addr import format_address, parse_address
from mcached.client.hashing import key_text
from mcached.client.node import NodeClient, NodeError
from mcached.cluster.config import ClusterConfig, Node

log = logging.getLogger("mcached.client.cluster")

Address = tuple[str, int]

CONNECT_TIMEOUT = 1.0  # seconds to connect to a node, unless `connect_timeout` is given
TIMEOUT = 1.0  # seconds any one send or receive on a node may take, unless `timeout` is given


class DiscoveryError(MemcacheError):  # type: ignore[misc]
    """No configuration endpoint answered."""


def _addresses(endpoints: str | Address | Sequence[str | Address]) -> list[Address]:
    if isinstance(endpoints, str) or (
        isinstance(endpoints, tuple) and len(endpoints) == 2 and isinstance(endpoints[1], int)
    ):
        endpoints = [endpoints]
    out: list[Address] = []
    for e in endpoints:
        out.append(parse_address(e) if isinstance(e, str) else (str(e[0]), int(e[1])))
    if not out:
        raise ValueError("at least one configuration endpoint is needed")
    return out


class ClusterClient(HashClient):  # type: ignore[misc]  # pymemcache's HashClient is untyped
    """A `HashClient` over the nodes a configuration endpoint lists, kept up to date.

    `endpoints`: ``"host:port"``, ``(host, port)`` or a list of them (seeds, tried in order).
    `poll_interval`: seconds between polls; 0 turns the background thread off (call
    `refresh()` yourself). `use_ip`: connect to each node's ip (no DNS lookup per node), else
    to its hostname. `discovery_timeout`: seconds for one poll. Other keyword arguments go to
    `HashClient` (``ignore_exc``, ``use_pooling``, ``serde``...); ``connect_timeout`` and
    ``timeout`` default to `CONNECT_TIMEOUT` and `TIMEOUT` (rule 4; ``None`` waits for ever).
    Raises `DiscoveryError` when no endpoint answers the first poll.
    """

    def __init__(
        self,
        endpoints: str | Address | Sequence[str | Address],
        poll_interval: float = 60.0,
        use_ip: bool = True,
        discovery_timeout: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self._poll_lock = threading.Lock()  # one poll at a time; taken before _ring_lock
        self._ring_lock = threading.RLock()
        self._seeds = _addresses(endpoints)
        self._members: set[Address] = set()
        self._retired: list[tuple[str, Any]] = []  # (ring key, client) removed, not yet idle
        # every client a poll removed, for as long as anything holds it: a request that
        # picked one before the poll may open a connection on it after the poll closed its
        # idle ones and forgot it (`_safely_run_func`)
        self._gone: weakref.WeakSet[Any] = weakref.WeakSet()
        self._endpoint: NodeClient | None = None
        self.poll_interval = poll_interval
        self.use_ip = use_ip
        self.discovery_timeout = discovery_timeout
        self.config: ClusterConfig | None = None
        self.polls = 0  # completed polls, answered or not (tests wait on it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("timeout", TIMEOUT)
        super().__init__(servers=[], **kwargs)
        self.refresh()
        if self.config is None:
            if self._endpoint is not None:
                self._endpoint.close()
            raise DiscoveryError(
                "no configuration endpoint answered: "
                + ", ".join(format_address(a) for a in self._seeds)
            )
        if poll_interval > 0:
            self._thread = threading.Thread(
                target=self._poll_loop, name="mcached-cluster-poll", daemon=True
            )
            self._thread.start()

    # ---- discovery ----

    @property
    def servers(self) -> list[Address]:
        """The current members, sorted (the nodes the ring is built from)."""
        with self._ring_lock:
            return sorted(self._members)

    def _node_address(self, node: Node) -> Address:
        return node.address if self.use_ip else (node.host, node.port)

    def _candidates(self) -> Iterable[Address]:
        seen: set[Address] = set()
        current = [self._endpoint.address] if self._endpoint else []
        for address in current + self._seeds + sorted(self._members):
            if address not in seen:
                seen.add(address)
                yield address

    def fetch(self) -> ClusterConfig | None:
        """Ask the endpoint (then the other seeds, then known nodes); None if none answers."""
        for address in self._candidates():
            if self._endpoint is None or self._endpoint.address != address:
                if self._endpoint is not None:
                    self._endpoint.close()
                self._endpoint = NodeClient(address, self.discovery_timeout)
            try:
                return self._endpoint.config_get()
            except NodeError as exc:
                log.warning("cluster discovery: %s: %s", format_address(address), exc)
        return None

    def refresh(self) -> bool:
        """Poll once; apply a changed node list. True if the membership changed."""
        with self._poll_lock:
            try:
                config = self.fetch()
            finally:
                self.polls += 1
            if config is None:
                return False
            return self._apply(config)

    def _apply(self, config: ClusterConfig) -> bool:
        wanted = {self._node_address(n) for n in config.nodes}
        with self._ring_lock:
            busy = []
            for key, client in self._retired:  # rule 3: removed a poll ago or more
                if self.clients.get(key) is client:
                    del self.clients[key]
                if not self._close_idle(client):
                    busy.append((key, client))
            self._retired = busy
            previous = self.config
            self.config = config
            added = wanted - self._members
            removed = self._members - wanted
            for server in sorted(added):
                self._failed_clients.pop(server, None)
                self._dead_clients.pop(server, None)
                self.add_server(server)
            for server in sorted(removed):
                key = self._make_client_key(server)
                self._drop_from_ring(key)
                self._failed_clients.pop(server, None)
                self._dead_clients.pop(server, None)
                client = self.clients.get(key)
                if client is not None:
                    self._retired.append((key, client))
                    self._gone.add(client)
            self._members = wanted
        if added or removed:
            log.info(
                "cluster configuration %d: %d nodes (+%d -%d)",
                config.version,
                len(wanted),
                len(added),
                len(removed),
            )
        elif previous is not None and previous.version != config.version:
            log.debug("cluster configuration %d: same nodes", config.version)
        return bool(added or removed)

    def _drop_from_ring(self, key: str) -> None:
        try:
            self.hasher.remove_node(key)
        except ValueError:
            pass  # pymemcache had already taken it out (marked dead)

    @classmethod
    def _close_idle(cls, client: Any) -> bool:
        """Close a removed node's idle connections; True once none is in use (rule 3). A
        client without a pool is one connection that threads do not share: closed now."""
        pool = getattr(client, "client_pool", None)
        if pool is None:
            cls._close_quietly(client)
            return True
        while pool.free:  # (only requests already running use a removed node's pool)
            try:
                conn = pool.get()  # an idle connection, now marked in use...
            except RuntimeError:
                # a request took the last idle one since `free` was read, and the pool is
                # at the user's max_pool_size: that one is in use now, closed once idle
                break
            pool.destroy(conn)  # ...and closed
        return not pool.used

    @staticmethod
    def _close_quietly(client: Any) -> None:
        try:
            client.close()
        except Exception:
            log.debug("closing a removed node's client failed", exc_info=True)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self.refresh()
            except Exception:
                log.exception("cluster discovery poll failed; keeping the current nodes")

    # ---- HashClient, made safe for a ring that changes (rule 3) ----

    def _get_client(self, key: Any) -> Any:
        """`HashClient._get_client` under the ring lock, a bytes key hashed as its text."""
        check_key_helper(key, self.allow_unicode_keys, self.key_prefix)
        with self._ring_lock:
            if self._dead_clients:
                self._retry_dead()
            server = self.hasher.get_node(key_text(key) if isinstance(key, bytes) else key)
            if server is None:
                if self.ignore_exc:
                    return None
                raise MemcacheError("All servers seem to be down right now")
            return self.clients[server]

    def get_many(self, keys: Iterable[Any], gets: bool = False, *args: Any, **kwargs: Any) -> Any:
        """`HashClient.get_many`, each node's keys sent to the client picked for them."""
        batches: dict[int, tuple[Any, list[Any]]] = {}
        for key in keys:
            client = self._get_client(key)
            if client is not None:
                batches.setdefault(id(client), (client, []))[1].append(key)
        found: dict[Any, Any] = {}
        for client, batch in batches.values():
            func = client.gets_many if gets else client.get_many
            found.update(self._safely_run_func(client, func, {}, batch, *args, **kwargs))
        return found

    get_multi = get_many

    def gets_many(self, keys: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        return self.get_many(keys, True, *args, **kwargs)

    gets_multi = gets_many

    def set_many(self, values: dict[Any, Any], *args: Any, **kwargs: Any) -> list[Any]:
        """`HashClient.set_many`, each node's values sent to the client picked for them."""
        batches: dict[int, tuple[Any, dict[Any, Any]]] = {}
        failed: list[Any] = []
        for key, value in values.items():
            client = self._get_client(key)
            if client is None:
                failed.append(key)
            else:
                batches.setdefault(id(client), (client, {}))[1][key] = value
        for client, batch in batches.values():
            failed += self._safely_run_set_many(client, batch, *args, **kwargs)
        return failed

    set_multi = set_many

    def _safely_run_func(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._safely_run_func(client, *args, **kwargs)
        finally:
            if client in self._gone:
                self._close_idle(client)  # a removed node's: its connection closed now

    def _safely_run_set_many(self, client: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._safely_run_set_many(client, *args, **kwargs)
        finally:
            if client in self._gone:
                self._close_idle(client)

    def _every_client(self) -> list[Any]:
        with self._ring_lock:
            return list(self.clients.values())

    def flush_all(self, *args: Any, **kwargs: Any) -> None:
        """`HashClient.flush_all` over the clients of the moment (the poll may change them)."""
        for client in self._every_client():
            self._safely_run_func(client, client.flush_all, False, *args, **kwargs)

    def quit(self) -> None:
        for client in self._every_client():
            self._safely_run_func(client, client.quit, False)

    def remove_server(self, server: Any, port: Any = None) -> None:
        """pymemcache marks a failing node dead through here; tolerate a node already gone."""
        if port is not None:
            server = (server, port)
        with self._ring_lock:
            self._failed_clients.pop(server, None)
            if server in self._members:
                self._dead_clients[server] = time.time()
            self._drop_from_ring(self._make_client_key(server))

    def close(self) -> None:
        """Stop polling and close every connection."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.discovery_timeout * 4 + 1)
        with self._ring_lock:
            if self._endpoint is not None:
                self._endpoint.close()
            for _, client in self._retired:
                self._close_quietly(client)
            self._retired = []
            super().close()

    disconnect_all = close

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
