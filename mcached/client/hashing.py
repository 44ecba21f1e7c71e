"""Which node a client sends a key to: pymemcache's rendezvous hashing, reproduced exactly.

What lives here: `murmur3_32` (pymemcache's, over the key's characters), `ring_name` (the name
a node has in the client's ring) and `Ring` (rendezvous, or highest random weight: a key goes
to the node whose ``murmur3_32(f"{name}-{key}")`` is highest, ties to the greater name).

Whose hashing this is: pymemcache's `HashClient` with its default hasher (`RendezvousHash`,
seed 0), which `mcached.client.cluster.ClusterClient` is, and which django-elastipymemcache
uses too; its ring names nodes ``"<ip>:<port>"`` when it connects by ip (ClusterClient's
default, django-elastipymemcache's) and ``"<host>:<port>"`` when it connects by name. Keys are
hashed as the text the application passed (`HashClient` hashes a ``str`` key as is;
ClusterClient hashes a ``bytes`` key as its text too, so both forms of one key agree).
Clients with other hashing (ketama in pylibmc and libmemcached, emcache's own rendezvous,
modulo in python-memcached) map keys differently: ``cluster add --warm`` does not help them.

`mcached-tool cluster add|remove --warm` uses it to know which items move; the tests check
it against pymemcache itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from mcached.cluster.config import Node

C1 = 0xCC9E2D51
C2 = 0x1B873593
M32 = 0xFFFFFFFF


def murmur3_32(data: str, seed: int = 0) -> int:
    """pymemcache's `murmur3_32`: MurmurHash3 (x86, 32-bit) over ``ord()`` of each character.
    pymemcache keeps only the low byte of each character but the last of a block's four,
    whose high bits fall off the 32-bit result anyway: so it is MurmurHash3 of the
    characters' low bytes (here through ``latin-1`` bytes when they fit, the fast way)."""
    try:
        raw = data.encode("latin-1")
    except UnicodeEncodeError:
        raw = bytes(ord(ch) & 0xFF for ch in data)
    return _murmur3_bytes(raw, seed)


def _murmur3_bytes(raw: bytes, seed: int) -> int:
    length = len(raw)
    h1 = seed
    rounded = length & ~3
    for (k1,) in _BLOCKS.iter_unpack(raw[:rounded]):
        k1 = (k1 * C1) & M32
        k1 = ((k1 << 15) | (k1 >> 17)) & M32
        h1 ^= (k1 * C2) & M32
        h1 = ((h1 << 13) | (h1 >> 19)) & M32
        h1 = (h1 * 5 + 0xE6546B64) & M32
    tail = length & 3
    if tail:
        k1 = int.from_bytes(raw[rounded:], "little")
        k1 = (k1 * C1) & M32
        k1 = ((k1 << 15) | (k1 >> 17)) & M32
        h1 ^= (k1 * C2) & M32
    h1 ^= length
    h1 ^= h1 >> 16
    h1 = (h1 * 0x85EBCA6B) & M32
    h1 ^= h1 >> 13
    h1 = (h1 * 0xC2B2AE35) & M32
    h1 ^= h1 >> 16
    return h1


_BLOCKS = struct.Struct("<I")


def ring_name(node: Node, by: str = "ip") -> str:
    """The node's name in a `HashClient` ring: ``"%s:%s" % (host, port)`` of the address the
    client connects to (`by` "ip": the node's ip, or its host when it has none; "host")."""
    host = (node.ip or node.host) if by == "ip" else node.host
    return f"{host}:{node.port}"


def key_text(key: bytes) -> str:
    """A key as stored -> the text the client hashed (ASCII, or UTF-8 with unicode keys)."""
    return key.decode("utf-8", "surrogateescape")


class Ring:
    """Rendezvous hashing over `nodes`, named as the client names them."""

    def __init__(self, nodes: Iterable[Node], by: str = "ip") -> None:
        self.names = {node: ring_name(node, by) for node in nodes}

    def owner(self, key: str) -> Node | None:
        best: Node | None = None
        best_name = ""
        high = -1
        for node, name in self.names.items():
            score = murmur3_32(f"{name}-{key}")
            if score > high or (score == high and name > best_name):
                high, best, best_name = score, node, name
        return best
