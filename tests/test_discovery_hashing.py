"""mcached/client/hashing.py is pymemcache's hashing, exactly: the same murmur3 for every
string, the same owner for every key, and ClusterClient hashes a bytes key as its text."""

from __future__ import annotations

import random

import pytest
from pymemcache.client.murmur3 import murmur3_32 as pymemcache_murmur3  # type: ignore[import-untyped]
from pymemcache.client.rendezvous import RendezvousHash  # type: ignore[import-untyped]

from mcached.client.hashing import Ring, key_text, murmur3_32, ring_name
from mcached.cluster.config import Node

pytestmark = pytest.mark.unit


def words(n: int, alphabet: str, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["".join(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 40))) for _ in range(n)]


@pytest.mark.parametrize(
    "alphabet",
    [
        "abcdefghijklmnopqrstuvwxyz0123456789:_-.",
        "".join(chr(c) for c in range(33, 256)),
        "aé€漢字😀",
    ],
)
def test_murmur3_is_pymemcaches(alphabet: str) -> None:
    for w in words(2000, alphabet, seed=len(alphabet)):
        assert murmur3_32(w) == pymemcache_murmur3(w), w


def test_owner_is_pymemcaches_for_every_key() -> None:
    nodes = [Node("localhost", "127.0.0.1", 21001 + i) for i in range(21)]
    ring = Ring(nodes)
    theirs = RendezvousHash()
    for n in nodes:
        theirs.add_node(ring_name(n))
    for key in words(1000, "abcdefghijklmnopqrstuvwxyz0123456789:", seed=7):
        owner = ring.owner(key)
        assert owner is not None and ring_name(owner) == theirs.get_node(key)
        assert ring.owner(key.encode()) == owner  # a key as stored: hashed as its text


def test_non_ascii_keys_as_pymemcache_hashes_their_text() -> None:
    nodes = [Node("localhost", "127.0.0.1", 21001 + i) for i in range(5)]
    ring = Ring(nodes)
    theirs = RendezvousHash()
    for n in nodes:
        theirs.add_node(ring_name(n))
    for key in words(300, "aé€漢字😀:", seed=3):
        owner = ring.owner(key.encode("utf-8"))
        assert owner is not None and ring_name(owner) == theirs.get_node(key)


def test_ring_names() -> None:
    n = Node("cache-1", "10.0.0.1", 11211)
    assert ring_name(n) == "10.0.0.1:11211" and ring_name(n, "host") == "cache-1:11211"
    assert ring_name(Node("cache-2", "", 11211)) == "cache-2:11211"
    assert ring_name(Node("::1", "::1", 5)) == "::1:5"  # as pymemcache writes a v6 tuple
    assert key_text(b"user:42") == "user:42"


def test_adding_a_21st_node_moves_about_one_key_in_21() -> None:
    nodes = [Node("localhost", "127.0.0.1", 21001 + i) for i in range(21)]
    before, after = Ring(nodes[:20]), Ring(nodes)
    keys = [f"key:{i}" for i in range(4200)]
    moved = [k for k in keys if before.owner(k) != after.owner(k)]
    assert all(after.owner(k) == nodes[20] for k in moved)  # only to the new node
    assert 0.7 / 21 < len(moved) / len(keys) < 1.3 / 21  # 200 expected, sd 14
