"""A cluster configuration and its data: the auto-discovery format clients and server share.

What lives here: `Node` (``host|ip|port``), `ClusterConfig` (a version and its nodes), the
data both reply forms carry (`format_data`, and `parse_data` for it, a cluster file and
``config set`` data alike), node parsing (`parse_node`: ``host|ip|port``, ``host:port``,
``[v6]:port``).

The data is ``<version>\\n<node> <node>...\\n`` and a node is ``host|ip|port``;
``config get cluster`` answers ``CONFIG cluster 0 <n>\\r\\n<data>\\r\\nEND\\r\\n`` with
``<n> = len(data)`` (memcached's VALUE framing: the ``\\r\\n`` after the data is not counted),
and the old ``get AmazonElastiCache:cluster`` answers the same data as a ``VALUE`` block. The
server writes both in `mcached.protocol.responses`; `mcached.client.node` reads them.

Rules: pure values and functions, no sockets; a name is resolved only through a `Resolver`
the caller passes in. The same membership gives the same bytes (`canonical`: nodes
de-duplicated and sorted by (host, ip, port), whatever order they were listed in; one server
listed under two names that give the same ip and port is listed once). A host is an IP
address or a plausible DNS name (`check_host`), and an error message repeats at most the
first `mcached.addr.ECHO_MAX` characters of the token it refuses. Imported
by the server side (`mcached.cluster.discovery`) and the client side (`mcached.client`), so
it imports only `mcached.addr`.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mcached.addr import DEFAULT_PORT, clip, parse_port, split_host_port
from mcached.cnum import decimal

CLUSTER_KEY = b"cluster"
LEGACY_KEY = b"AmazonElastiCache:cluster"

Resolver = Callable[[str, int], list[str]]
"""(host, port) -> the host's addresses, IPv4 first ([] when it does not resolve)."""


VERSION_MAX = 2**63 - 1  # a config version: a signed 64-bit number, as clients keep it


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


def canonical(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """De-duplicated and sorted, so equal memberships give equal bytes on every node.

    Nodes with the same ip and port are one server listed under two names
    (``localhost:11211`` and ``127.0.0.1:11211`` once resolved): only the first in that order
    is kept, since a client given both counts two nodes (two pools, twice the server's share
    of the keys). The first in sorted order, not as listed, so that the same nodes listed in
    another order still give the same bytes. Nodes without an ip are compared by name only.
    """
    out: list[Node] = []
    seen: set[tuple[object, int]] = set()
    for node in sorted(set(nodes)):
        if node.ip:
            where = endpoint(node)
            if where in seen:
                continue
            seen.add(where)
        out.append(node)
    return tuple(out)


def endpoint(node: Node) -> tuple[object, int]:
    """What a node is whatever its name: its ip (as an address: fd00::1 is fd00:0::1) and
    port; a node without an ip, its name and port."""
    if node.ip:
        return (ipaddress.ip_address(node.ip), node.port)
    return (node.host, node.port)


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
_LETTERS = frozenset(string.ascii_letters)


def check_host(host: str, token: str) -> None:
    """A node's host: an IP literal, or a plausible DNS name: labels separated by dots, each
    of letters, digits, ``-`` and ``_`` (which some internal DNS uses), none empty, none
    starting or ending with ``-``, and a letter somewhere in the name; at most 63 characters
    a label and 253 the name, as DNS carries them. Anything else is no name a client could
    look up: a name of digits and dots alone is an address written wrong, or a version put
    on the nodes' line (``5 a:1`` is no node ``5``, ``-5`` no node ``-5``), and ``---`` or
    ``a..b`` are typing slips. Raises ValueError naming `token`."""
    if is_ip(host):
        return
    labels = host.split(".")
    if (
        len(host) > 253
        or _LETTERS.isdisjoint(host)
        or not all(len(label) <= 63 and _LABEL_CHARS.issuperset(label) for label in labels)
        or not all(label and label[0] != "-" and label[-1] != "-" for label in labels)
    ):
        raise ValueError(f"bad host in {clip(token)!r}")


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
            raise ValueError(f"bad node {clip(token)!r}: want host|ip|port")
        host, ip, port_text = parts
        check_host(host, token)
        if ip and not is_ip(ip):
            raise ValueError(f"bad ip in {clip(token)!r}")
        node = Node(host, ip, parse_port(port_text, token))
    else:
        try:
            host, port_part = split_host_port(token)
        except ValueError:
            raise ValueError(f"bad node {clip(token)!r}") from None
        if token.startswith("[") and not is_ip(host):
            raise ValueError(f"bad node {clip(token)!r}")
        if port_part is None and ":" in host and not token.startswith("["):
            raise ValueError(f"bad node {clip(token)!r}: write an IPv6 address as [addr]:port")
        port = default_port if port_part is None else parse_port(port_part, token)
        check_host(host, token)
        node = Node(host, host if is_ip(host) else "", port)
    if not node.ip and resolve is not None:
        ips = resolve(node.host, node.port)
        if ips:
            node = Node(node.host, ips[0], node.port)
    return node


# a first line that is one number, of any sign or form: a version (digits alone), or a
# version written wrong, never a host (``-5`` was served as the node ``-5||11211``)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _version(line: str) -> int:
    """The version a first line holding one number pins; ValueError when it is no whole
    number from 1 to `VERSION_MAX`."""
    if not line.isdigit():
        if line[0] == "-" and line[1:].isdigit():
            raise ValueError("the version must be 1 or more")
        raise ValueError(f"bad version {clip(line)!r}: want a number from 1 to {VERSION_MAX}")
    version = decimal(line)  # int() refuses more than 4,300 digits, in its words
    if version > VERSION_MAX:
        raise ValueError(f"the version must be at most {VERSION_MAX}")
    if version < 1:
        raise ValueError("the version must be 1 or more")
    return version


class TooManyNodes(ValueError):
    """A membership too large to serve: the daemon shares it in a document of a fixed size
    (`mcached.server.docs`), which thousands of nodes outgrow."""


def parse_data(
    text: bytes | str, resolve: Resolver | None = None, default_port: int = DEFAULT_PORT
) -> tuple[int | None, tuple[Node, ...]]:
    """A cluster file or ``config set`` data -> (pinned version or None, canonical nodes).

    Nodes are separated by spaces or newlines; ``#`` starts a comment; a first line that is a
    bare number is the version (the wire's own layout, so a ``config get`` payload is valid).
    Raises ValueError on a bad node, a first line that is a number but no version (below 1,
    signed, a fraction), or no node at all.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("not ASCII") from None
    version: int | None = None
    tokens: list[str] = []
    first = True
    for raw in text.split("\n"):  # not splitlines(): \x0b, \x1c... end no line here
        line = raw.split("#", 1)[0].strip(" \t\r")
        if not line:
            continue
        if first and _NUMBER.fullmatch(line):
            version = _version(line)
        else:
            tokens += [t for t in line.replace("\t", " ").split(" ") if t]  # (\x0b...: a bad host)
        first = False
    nodes = canonical(parse_node(t, default_port, resolve) for t in tokens)
    if not nodes:
        raise ValueError("no nodes")
    return version, nodes
