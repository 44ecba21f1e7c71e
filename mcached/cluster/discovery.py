"""The served auto-discovery endpoint: the configuration this node serves, and its watcher.

What lives here: `Discovery`, one per daemon: the membership this node serves (built from
the override, the source, or this node alone: `own_node`), its data (`data`, what ``config
get cluster`` and the old ``get AmazonElastiCache:cluster`` carry), the ``config set``
override (`override`, `drop_override`), `reload` (SIGHUP) and the watcher thread
(`start`/`stop`) that follows the source. What the ``config`` verbs mean is in
`mcached.handlers`, their reply in `mcached.protocol.responses`; the data format lives in
`mcached.cluster.config`, the sources in `mcached.cluster.sources`.

Rules:

1. The data is built once per change, never per request. A worker reads one attribute holding
   immutable bytes (swapped whole under the GIL), so ``config get`` takes no lock, and its
   reply is one bytes object made from it: it goes out in one write, as clients that keep only
   their last read need.
2. Where membership comes from, highest first: a ``config set cluster`` override (only with
   ``--enable-config-set``; ``config delete cluster`` drops it); else the source,
   ``--cluster-file`` or ``--cluster-dns`` (exclusive); else this node alone. A source keeps
   being read while an override is in force; it is served again once the override is deleted.
3. The same membership gives the same bytes on every node: nodes are de-duplicated and sorted
   by (host, ip, port), whatever order the source listed them in.
4. The version is 1 for the first configuration a node serves and goes up by one each time the
   node list it serves changes (re-reading an unchanged list keeps it). A source may pin it:
   a cluster file or ``config set`` data whose first line is a bare number is served with that
   version as written, so nodes fed the same file or the same ``set`` agree byte for byte even
   after restarts (``mcached-tool cluster set|add|remove`` always pins max(seen) + 1).
   Unpinned (DNS, a plain file), nodes that saw the same changes agree; a node restarted alone
   starts again at 1. Clients compare versions per endpoint (emcache acts on any change, the
   pymemcache-based ones diff the node list), so a version that differs between two nodes
   serving the same list costs nothing. A pinned version lower than the one served is served
   too: the operator's word wins.
5. Names are resolved outside `_lock`, by the refreshing thread: SIGHUP's main thread or the
   watcher (the first load runs in `start`, or in a request that comes before it). After
   start a ``config get`` never waits on a lookup, and ``config set`` never resolves: a worker
   must not block on DNS. Its data is stored as given (``host||port`` keeps an empty ip); the
   tool resolves names before it sends.

Lock order: `_refresh_lock` (one refresher at a time) before `_lock` (the served state).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

from mcached.addr import parse_listen
from mcached.cluster.config import (
    ClusterConfig,
    Node,
    Resolver,
    is_ip,
)
from mcached.cluster.sources import DnsSource, FileSource, name_of, resolve_name
from mcached.settings import Settings

log = logging.getLogger("mcached.discovery")

FILE_POLL_INTERVAL = 1.0  # seconds between stat() calls on --cluster-file


def own_node(settings: Settings, port: int, resolve: Resolver = resolve_name) -> Node:
    """How this node lists itself: ``--cluster-node-name`` or a name derived from ``-l``."""
    listen = parse_listen(settings.listen[0], port)[0] if settings.listen else ""
    wildcard = listen in ("", "0.0.0.0", "::", "*")
    if settings.cluster_node_name:
        host = settings.cluster_node_name
    elif wildcard:
        host = socket.getfqdn()
    elif is_ip(listen):
        host = name_of(listen, resolve)
    else:
        host = listen
    if not wildcard and is_ip(listen):
        ip = listen
    else:
        ips = resolve(host, port)
        ip = ips[0] if ips else ""
    return Node(host, ip, port)


class Discovery:
    """The configuration one node serves; `handle` answers the ``config`` commands.

    Reloadable (SIGHUP: `reload`) and a service (`start`/`stop`: the watcher thread).
    """

    def __init__(
        self,
        settings: Settings,
        local_port: Callable[[], int],
        resolve: Resolver = resolve_name,
        reverse: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.local_port = local_port
        self.resolve = resolve
        self.reverse = reverse or (lambda ip: name_of(ip, resolve))
        self.file = FileSource(settings.cluster_file) if settings.cluster_file else None
        self.dns = DnsSource(settings.cluster_dns) if settings.cluster_dns else None
        self.file_poll_interval = FILE_POLL_INTERVAL
        self._refresh_lock = threading.Lock()  # one refresher at a time; taken before _lock
        self._lock = threading.Lock()  # the served state
        self._source: tuple[Node, ...] | None = None  # None: nothing usable, list ourselves
        self._source_version: int | None = None
        self._override: tuple[int | None, tuple[Node, ...]] | None = None
        self._self_node: Node | None = None
        self.config = ClusterConfig(0, ())
        self._data: bytes | None = None  # rule 1: built once per change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what is served ----

    def current(self) -> ClusterConfig:
        self._ensure_loaded()
        return self.config

    def data(self) -> bytes:
        """``<version>\\n<node> <node>...\\n``: what both reply forms carry (rule 1)."""
        data = self._data
        if data is None:
            self._ensure_loaded()
            data = self._data
            assert data is not None
        return data

    @property
    def overridden(self) -> bool:
        return self._override is not None

    def override(self, version: int | None, nodes: tuple[Node, ...]) -> None:
        """``config set cluster``: serve these nodes (and this version, when pinned) until
        `drop_override`, whatever the source says. Rule 5: the nodes are served as given,
        never resolved here."""
        self._ensure_loaded()
        with self._lock:
            self._override = (version, nodes)
            self._publish_locked("config set")

    def drop_override(self) -> bool:
        """``config delete cluster``: serve the source (or this node) again; False when no
        override was in force."""
        self._ensure_loaded()
        with self._lock:
            if self._override is None:
                return False
            self._override = None
            self._publish_locked("config delete")
        return True

    def _publish_locked(self, why: str) -> None:
        """Rules 2 and 4: pick what to serve; bump or pin the version; rebuild the data."""
        if self._override is not None:
            pinned, nodes = self._override
        elif self._source is not None:
            pinned, nodes = self._source_version, self._source
        else:
            assert self._self_node is not None  # set by _ensure_loaded, before any publish
            pinned, nodes = None, (self._self_node,)
        old = self.config
        if pinned is not None:
            version = pinned
        elif nodes != old.nodes:
            version = old.version + 1
        else:
            version = old.version
        if version == old.version and nodes == old.nodes and self._data is not None:
            return
        self.config = ClusterConfig(version, nodes)
        self._data = self.config.data()
        log.info("cluster configuration %d (%s): %s", version, why, " ".join(str(n) for n in nodes))

    # ---- sources ----

    def _ensure_loaded(self) -> None:
        """The first configuration: at start(), or at a request that comes before it."""
        if self._data is not None:
            return
        with self._refresh_lock:
            if self._data is not None:
                return
            self_node = own_node(self.settings, self.local_port(), self.resolve)
            source, version = self._collect(initial=True)
            with self._lock:
                self._self_node = self_node
                self._source, self._source_version = source, version
                self._publish_locked("start")

    def _collect(self, initial: bool = False) -> tuple[tuple[Node, ...] | None, int | None]:
        """Read the file or resolve the DNS name (no `_lock` held: rule 5).

        A failure keeps what was there, logged; None means nothing usable yet.
        """
        source, version = self._source, self._source_version
        if self.file is not None:
            if initial or self.file.changed():
                try:
                    self.file.read()
                except (OSError, ValueError) as exc:
                    keep = (
                        "keeping the previous membership"
                        if self.file.loaded
                        else "listing this node only"
                    )
                    log.error("cluster file: %s; %s", exc, keep)
            if self.file.loaded:
                source, version = self.file.nodes(self.resolve), self.file.version
        elif self.dns is not None:
            nodes = self.dns.nodes(self.resolve, self.reverse)
            if nodes is None:
                log.warning(
                    "cluster dns: %s does not resolve; %s",
                    self.dns.name,
                    "keeping the previous membership" if source else "listing this node only",
                )
            else:
                source = nodes
        return source, version

    def refresh(self, why: str = "refresh") -> None:
        """Re-read the sources now and publish any change (watcher thread, SIGHUP)."""
        if self._data is None:
            self._ensure_loaded()
            return
        if self.file is None and self.dns is None:
            return
        with self._refresh_lock:
            source, version = self._collect()
            with self._lock:
                self._source, self._source_version = source, version
                self._publish_locked(why)

    def reload(self) -> None:
        """SIGHUP: re-read the cluster file (or re-resolve the DNS name) at once."""
        if self.file is not None:
            self.file.stamp = None  # re-read even if stat() looks the same
        self.refresh("SIGHUP")

    # ---- the watcher (a service) ----

    def start(self) -> None:
        self._ensure_loaded()
        if self.file is None and self.dns is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="mcached-discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._thread = None

    def _watch(self) -> None:
        interval = self.settings.cluster_dns_interval
        tick = min(self.file_poll_interval, interval) if self.file else interval
        since_resolve = 0.0
        while not self._stop.wait(tick):
            since_resolve += tick
            try:
                if self.file is not None and self.file.changed():
                    self.refresh("cluster file changed")
                    since_resolve = 0.0
                elif since_resolve >= interval:
                    self.refresh("re-resolved")
                    since_resolve = 0.0
            except Exception:
                log.exception("cluster refresh failed; keeping the previous membership")

    def __repr__(self) -> str:
        src = self.settings.cluster_file or self.settings.cluster_dns or "self"
        return f"<Discovery {src} version {self.config.version}>"
