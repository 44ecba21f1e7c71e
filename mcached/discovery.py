"""The ElastiCache auto-discovery endpoint: the cluster's node list, its version, its sources.

What lives here:

* The wire format of a cluster configuration, shared by the server, the discovery client
  (`mcached.cluster_client`) and ``mcached-tool``: `Node`, `ClusterConfig`, `format_data`,
  `parse_node`, `parse_data`. The data is ``<version>\\n<node> <node>...\\n`` and a node is
  ``host|ip|port``; ``config get cluster`` answers
  ``CONFIG cluster 0 <n>\\r\\n<data>\\r\\nEND\\r\\n`` with ``<n> = len(data)`` (memcached's
  VALUE framing: the ``\\r\\n`` after the data is not counted).
* `Discovery`, one per daemon: the configuration this node serves, its sources, and
  `handle(cmd, out)` for ``config get|set|delete cluster`` (`legacy_value` for the old
  ``get AmazonElastiCache:cluster``).

Rules:

1. Replies are built once per change, never per request. A worker reads one attribute holding
   immutable bytes (swapped whole under the GIL), so ``config get`` takes no lock and appends
   the whole reply as one bytes object: it goes out in one write, as clients that keep only
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

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mcached.protocol import commands as c
from mcached.protocol import responses as r
from mcached.settings import Settings

log = logging.getLogger("mcached.discovery")

CLUSTER_KEY = b"cluster"
LEGACY_KEY = b"AmazonElastiCache:cluster"
DEFAULT_PORT = 11211
FILE_POLL_INTERVAL = 1.0  # seconds between stat() calls on --cluster-file

CLIENT_ERROR_SET_DISABLED = b"CLIENT_ERROR config set not allowed\r\n"
CLIENT_ERROR_DELETE_DISABLED = b"CLIENT_ERROR config delete not allowed\r\n"


# ---- the format ----


@dataclass(frozen=True, order=True)
class Node:
    """One cluster member as the endpoint lists it: ``host|ip|port`` (ip may be empty)."""

    host: str
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}|{self.ip}|{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        """Where to connect: the ip when known (no lookup), else the host."""
        return (self.ip or self.host, self.port)


@dataclass(frozen=True)
class ClusterConfig:
    version: int
    nodes: tuple[Node, ...]

    def data(self) -> bytes:
        return format_data(self.version, self.nodes)


def format_data(version: int, nodes: Iterable[Node]) -> bytes:
    """``<version>\\n<host>|<ip>|<port> ...\\n``: the payload of both reply forms."""
    return b"%d\n%s\n" % (version, " ".join(str(n) for n in nodes).encode("ascii"))


def config_reply(data: bytes) -> bytes:
    return b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(data), data)


def legacy_block(data: bytes) -> bytes:
    """The ``get AmazonElastiCache:cluster`` item, without the END line."""
    return b"VALUE %b 0 %d\r\n%b\r\n" % (LEGACY_KEY, len(data), data)


def canonical(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """Rule 3: de-duplicated and sorted, so equal memberships give equal bytes."""
    return tuple(sorted(set(nodes)))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_host(host: str, token: str) -> None:
    if not host or not host.isascii() or not host.isprintable() or "|" in host or " " in host:
        raise ValueError(f"bad host in {token!r}")


def _port(text: str, token: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {token!r}")
    return int(text)


Resolver = Callable[[str, int], list[str]]


def parse_node(
    token: str, default_port: int = DEFAULT_PORT, resolve: Resolver | None = None
) -> Node:
    """``host|ip|port``, ``host:port``, ``[v6]:port``, ``ip:port`` or ``host`` -> a `Node`.

    An IP literal is its own host and ip. A name gets its first address from `resolve` (IPv4
    first); without a resolver, or when it fails, the ip stays empty (``host||port``).
    Raises ValueError with a message fit for a CLIENT_ERROR line.
    """
    if "|" in token:
        parts = token.split("|")
        if len(parts) != 3:
            raise ValueError(f"bad node {token!r}: want host|ip|port")
        host, ip, port_text = parts
        _check_host(host, token)
        if ip and not is_ip(ip):
            raise ValueError(f"bad ip in {token!r}")
        node = Node(host, ip, _port(port_text, token))
    else:
        if token.startswith("["):
            host, sep, rest = token[1:].partition("]")
            if not sep or not is_ip(host) or (rest and not rest.startswith(":")):
                raise ValueError(f"bad node {token!r}")
            port = _port(rest[1:], token) if rest else default_port
        elif token.count(":") == 1:
            host, _, port_text = token.partition(":")
            port = _port(port_text, token)
        elif ":" in token:
            raise ValueError(f"bad node {token!r}: write an IPv6 address as [addr]:port")
        else:
            host, port = token, default_port
        _check_host(host, token)
        node = Node(host, host if is_ip(host) else "", port)
    if not node.ip and resolve is not None:
        ips = resolve(node.host, node.port)
        if ips:
            node = Node(node.host, ips[0], node.port)
    return node


def parse_data(
    text: bytes | str, resolve: Resolver | None = None, default_port: int = DEFAULT_PORT
) -> tuple[int | None, tuple[Node, ...]]:
    """A cluster file or ``config set`` data -> (pinned version or None, canonical nodes).

    Nodes are separated by spaces or newlines; ``#`` starts a comment; a first line that is a
    bare number is the version (the wire's own layout, so a ``config get`` payload is valid).
    Raises ValueError on a bad node, a version below 1, or no node at all.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not ASCII") from None
    version: int | None = None
    tokens: list[str] = []
    first = True
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if first and line.isdigit():
            version = int(line)
            if version < 1:
                raise ValueError("the version must be 1 or more")
        else:
            tokens += line.split()
        first = False
    nodes = canonical(parse_node(t, default_port, resolve) for t in tokens)
    if not nodes:
        raise ValueError("no nodes")
    return version, nodes


# ---- names ----


def resolve_name(host: str, port: int) -> list[str]:
    """Every address of `host`, IPv4 first, de-duplicated in resolver order ([] on failure)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    v4 = [str(i[4][0]) for i in infos if i[0] == socket.AF_INET]
    v6 = [str(i[4][0]).split("%", 1)[0] for i in infos if i[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 + v6))


def name_of(ip: str, resolve: Resolver = resolve_name) -> str:
    """A hostname for `ip` that resolves back to it (reverse lookup, checked), else the ip.

    DNS sources give addresses; clients that connect by host (emcache) need a name that
    reaches this very node, which the shared service name does not.
    """
    try:
        name = socket.gethostbyaddr(ip)[0]
    except (OSError, UnicodeError):
        return ip
    return name if ip in resolve(name, 0) else ip


def own_node(settings: Settings, port: int, resolve: Resolver = resolve_name) -> Node:
    """How this node lists itself: ``--cluster-node-name`` or a name derived from ``-l``."""
    listen = settings.listen[0] if settings.listen else ""
    if listen.startswith("["):
        listen = listen[1:].partition("]")[0]
    elif listen.count(":") == 1:
        listen = listen.partition(":")[0]
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


# ---- sources ----


class FileSource:
    """``--cluster-file``: parsed on change (stat), its names resolved on each refresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.version: int | None = None
        self.specs: tuple[Node, ...] = ()  # as written; names not resolved yet
        self.loaded = False

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        return self._stat() != self.stamp

    def read(self) -> None:
        """Parse the file; raises OSError/ValueError and then keeps what it had."""
        stamp = self._stat()
        with open(self.path, "rb") as f:
            text = f.read()
        try:
            version, specs = parse_data(text)
        except ValueError as exc:
            self.stamp = stamp  # do not re-read a bad file until it changes again
            raise ValueError(f"{self.path}: {exc}") from None
        self.stamp, self.version, self.specs, self.loaded = stamp, version, specs, True

    def nodes(self, resolve: Resolver) -> tuple[Node, ...]:
        """The nodes as written, each name without an ip resolved now (IPv4 first)."""
        out = []
        for n in self.specs:
            if not n.ip:
                ips = resolve(n.host, n.port)
                if ips:
                    n = Node(n.host, ips[0], n.port)
                else:
                    log.warning("cluster file: %s does not resolve; listed as %s", n.host, n)
            out.append(n)
        return canonical(out)


class DnsSource:
    """``--cluster-dns name:port``: every address of the name is a node on that port."""

    def __init__(self, spec: str) -> None:
        name, _, port = spec.rpartition(":")
        self.name = name.strip("[]")
        self.port = int(port)

    def nodes(self, resolve: Resolver, reverse: Callable[[str], str]) -> tuple[Node, ...] | None:
        ips = resolve(self.name, self.port)
        if not ips:
            return None
        return canonical(Node(reverse(ip), ip, self.port) for ip in ips)


# ---- the endpoint ----


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
        self._reply: bytes | None = None  # rule 1: built once per change
        self._legacy = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- what is served ----

    def current(self) -> ClusterConfig:
        self._ensure_loaded()
        return self.config

    def reply(self) -> bytes:
        reply = self._reply
        if reply is None:
            self._ensure_loaded()
            reply = self._reply
            assert reply is not None
        return reply

    def legacy_value(self) -> bytes:
        if self._reply is None:
            self._ensure_loaded()
        return self._legacy

    @property
    def overridden(self) -> bool:
        return self._override is not None

    def handle(self, cmd: c.Command, out: list[bytes]) -> None:
        """``config get|set|delete <key>`` -> reply bytes appended to `out`."""
        if type(cmd) is c.ConfigGet:
            out.append(self.reply() if cmd.key == CLUSTER_KEY else r.ERROR)
        elif type(cmd) is c.ConfigSet:
            reply = self._config_set(cmd)
            if not cmd.noreply:
                out.append(reply)
        elif type(cmd) is c.ConfigDelete:
            reply = self._config_delete(cmd)
            if not cmd.noreply:
                out.append(reply)
        else:
            out.append(r.ERROR)

    def _config_set(self, cmd: c.ConfigSet) -> bytes:
        if cmd.key != CLUSTER_KEY:
            return r.ERROR
        if not self.settings.config_set_enabled:
            return CLIENT_ERROR_SET_DISABLED
        try:
            version, nodes = parse_data(cmd.value)  # rule 5: no name lookups here
        except ValueError as exc:
            return b"CLIENT_ERROR bad cluster configuration: %s\r\n" % str(exc).encode()
        self._ensure_loaded()
        with self._lock:
            self._override = (version, nodes)
            self._publish_locked("config set")
        return r.STORED

    def _config_delete(self, cmd: c.ConfigDelete) -> bytes:
        if cmd.key != CLUSTER_KEY:
            return r.ERROR
        if not self.settings.config_set_enabled:
            return CLIENT_ERROR_DELETE_DISABLED
        self._ensure_loaded()
        with self._lock:
            if self._override is None:
                return r.NOT_FOUND
            self._override = None
            self._publish_locked("config delete")
        return r.DELETED

    def _publish_locked(self, why: str) -> None:
        """Rules 2 and 4: pick what to serve; bump or pin the version; rebuild the replies."""
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
        if version == old.version and nodes == old.nodes and self._reply is not None:
            return
        self.config = ClusterConfig(version, nodes)
        data = self.config.data()
        self._legacy = legacy_block(data)
        self._reply = config_reply(data)
        log.info("cluster configuration %d (%s): %s", version, why, " ".join(str(n) for n in nodes))

    # ---- sources ----

    def _ensure_loaded(self) -> None:
        """The first configuration: at start(), or at a request that comes before it."""
        if self._reply is not None:
            return
        with self._refresh_lock:
            if self._reply is not None:
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
        if self._reply is None:
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
