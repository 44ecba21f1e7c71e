"""Where membership comes from: the ``--cluster-file`` and ``--cluster-dns`` sources, and the
name lookups they (and ``mcached-tool``) need.

What lives here: `resolve_name` (forward, IPv4 first), `name_of` (reverse, checked forward),
`FileSource` (a cluster file, parsed when its stat() changes) and `DnsSource` (every
address of a name is a node).

Rules: every call here may block on DNS or on the disk, so the served endpoint
(`mcached.cluster.discovery`) calls them only from its refreshing thread (the watcher, or
SIGHUP's main thread), never from a worker. A source that fails keeps nothing half-read: it
raises, or returns None, and the caller keeps what it served.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

from mcached.addr import parse_address
from mcached.cluster.config import Node, Resolver, canonical, parse_data

log = logging.getLogger("mcached.discovery")


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


class FileSource:
    """``--cluster-file``: parsed on change (stat), its names resolved on each refresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamp: tuple[int, int, int] | None = None
        self.version: int | None = None
        self.specs: tuple[Node, ...] = ()  # as written; names not resolved yet
        self.loaded = False
        self._forced = False  # `forget`: read at the next look, whatever stat() says

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        return self._forced or self._stat() != self.stamp

    def forget(self) -> None:
        """SIGHUP: read the file at the next look even if stat() looks the same (an edit
        that kept size and time), or it is gone (a file gone was read last as gone: its
        stamp and a missing file's are both None)."""
        self._forced = True

    def read(self) -> None:
        """Parse the file; raises OSError/ValueError and then keeps what it had."""
        stamp = self._stat()
        self._forced = False
        try:
            with open(self.path, "rb") as f:
                text = f.read()
        except OSError:
            self.stamp = stamp  # nor a file gone or unreadable (logged every second)
            raise
        try:
            version, specs = parse_data(text)
        except ValueError as exc:
            self.stamp = stamp  # do not re-read a bad file until it changes again
            raise ValueError(f"{self.path}: {exc}") from None
        self.stamp, self.version, self.specs, self.loaded = stamp, version, specs, True

    def resume(self, nodes: tuple[Node, ...], version: int | None) -> None:
        """What the last keeper served from the file stands for its last good read (a
        keeper forked in place of a dead one: `Discovery.start`), its names resolved as
        they were. The stamp stays the one read at the start: a file changed since is read
        again at the next refresh."""
        self.specs, self.version, self.loaded = nodes, version, True

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
        self.name, self.port = parse_address(spec)

    def nodes(self, resolve: Resolver, reverse: Callable[[str], str]) -> tuple[Node, ...] | None:
        ips = resolve(self.name, self.port)
        if not ips:
            return None
        return canonical(Node(reverse(ip), ip, self.port) for ip in ips)
