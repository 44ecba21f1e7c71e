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
    characters' low bytes (`hash_input`)."""
    raw = hash_input(data)
    return _finish(_blocks(seed, raw, len(raw) & ~3), raw[len(raw) & ~3 :], len(raw))


def hash_input(text: str) -> bytes:
    """The bytes pymemcache's murmur3 reads from `text`: each character's low byte."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return bytes(ord(ch) & 0xFF for ch in text)


def _blocks(h1: int, raw: bytes, end: int) -> int:
    """Mix the 4-byte blocks of raw[:end] into h1."""
    for (k1,) in _BLOCK.iter_unpack(raw[:end]):
        k1 = (k1 * C1) & M32
        k1 = ((k1 << 15) | (k1 >> 17)) & M32
        h1 ^= (k1 * C2) & M32
        h1 = ((h1 << 13) | (h1 >> 19)) & M32
        h1 = (h1 * 5 + 0xE6546B64) & M32
    return h1


def _finish(h1: int, tail: bytes, length: int) -> int:
    if tail:
        k1 = int.from_bytes(tail, "little")
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


_BLOCK = struct.Struct("<I")


def ring_name(node: Node, by: str = "ip") -> str:
    """The node's name in a `HashClient` ring: ``"%s:%s" % (host, port)`` of the address the
    client connects to (`by` "ip": the node's ip, or its host when it has none; "host")."""
    host = (node.ip or node.host) if by == "ip" else node.host
    return f"{host}:{node.port}"


def key_text(key: bytes) -> str:
    """A key as stored -> the text the client hashed (ASCII, or UTF-8 with unicode keys)."""
    return key.decode("utf-8", "surrogateescape")


class Ring:
    """Rendezvous hashing over `nodes`, named as the client names them.

    Every score hashes ``f"{name}-{key}"``: the whole 4-byte blocks of ``f"{name}-"`` are
    mixed once per node (their state is kept), so a score costs only the key's blocks.
    """

    def __init__(self, nodes: Iterable[Node], by: str = "ip") -> None:
        self.names = {node: ring_name(node, by) for node in nodes}
        self._mid: list[tuple[Node, str, int, bytes, int]] = []
        for node, name in self.names.items():
            prefix = hash_input(f"{name}-")
            cut = len(prefix) & ~3
            self._mid.append((node, name, _blocks(0, prefix, cut), prefix[cut:], cut))

    def owner(self, key: str | bytes) -> Node | None:
        """The node `key` goes to (a bytes key is hashed as its text)."""
        raw = key if isinstance(key, bytes) and key.isascii() else hash_input(_text(key))
        best: Node | None = None
        best_name = ""
        high = -1
        for node, name, h1, rest, skipped in self._mid:
            score = _score(h1, rest, skipped, raw)
            if score > high or (score == high and name > best_name):
                high, best, best_name = score, node, name
        return best


def _text(key: str | bytes) -> str:
    return key_text(key) if isinstance(key, bytes) else key


def _score(h1: int, rest: bytes, skipped: int, raw: bytes) -> int:
    """murmur3 of prefix + raw, the prefix's first `skipped` bytes already mixed into h1."""
    data = rest + raw
    cut = len(data) & ~3
    return _finish(_blocks(h1, data, cut), data[cut:], skipped + len(data))
