"""The membership one daemon serves, as one document: what it is made of, the version rule,
and how it is kept in a store that every process of the daemon shares.

What lives here: `Membership` (a pure value: the override, the source, this node, the nodes
health hides, and what follows from them: the listed nodes, the served nodes and their
version), `settle` (the version rule), the document's encoding (`encode`, `decode`), and
`Docs`, the store's interface, with `LocalDocs` for a daemon that runs in one process (and
for tests). The daemon hands `mcached.cluster.discovery` a shared store instead
(`mcached.server.docs.SharedDocs`): same interface, one mapping for every worker process.

Rules:

1. Listed nodes, highest first: the ``config set`` override; else the source (cluster file
   or DNS); else this node alone. A source may pin the version (a first line holding a
   number), and so may ``config set`` data.
2. Health only hides: the served nodes are the listed ones minus those health hides, in the
   listed order, and never none (hiding every listed node would serve nothing: then every
   listed node is served).
3. The version: a new pin, or the same pin with a new list, above the version served is
   served as written (the operator's word); otherwise it goes up by one whenever the served
   nodes change, whatever changed them (a source, an override, health), and stays when they
   do not. So a node that health hides or brings back moves the version on, and clients
   notice it at their next poll, as they notice any change. A version is never served for
   two lists, since a client that has seen a version takes no new list under it (emcache:
   ``if version == self._autodiscover_config_version: return``): a new pin at or below the
   version served goes the same way, one up when the served nodes change (logged: health
   had moved a pinned 300 to 301, and a file pinned 301 with a new list would serve 301
   again), and staying when they do not (going back to it could serve a number already
   served for another list). A pin is new when the layer that lists the nodes wrote it: a
   pinned file that ``config delete cluster`` uncovers again is no new word, so the version
   goes on by one. Past `VERSION_MAX` (a signed 64-bit number, as clients keep it, and the
   most ``config set`` takes) it starts again at 1.
4. Lost updates: any process may write the document (a worker on ``config set``, the keeper
   for the source and health), each reading the newest, changing its part, and writing the
   whole. Each part carries a counter (`o_seq` for the override, `k_seq` for what the keeper
   owns) that its writer raises; a writer that reads back a document whose counter is below
   its own knows that a concurrent write built on an older document won, and writes again
   on top of it (`mcached.cluster.discovery`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from mcached.cluster.config import VERSION_MAX, ClusterConfig, Node, parse_node


class Docs(Protocol):
    """A store of one current document (bytes), newest wins (`mcached.server.docs`)."""

    size: int  # bytes a document may take (`write` refuses more)

    def write(self, writer: int, data: bytes) -> int: ...

    def newest(self) -> int: ...

    def written_between(self, low: int, high: int) -> bool: ...

    def exclusive(self) -> AbstractContextManager[None]: ...

    def read(self) -> tuple[int, bytes]: ...


class LocalDocs:
    """`Docs` for one process: the document is an attribute."""

    size = 1 << 62  # no store of a fixed size to fit

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key = 0
        self._data = b""

    def write(self, writer: int, data: bytes) -> int:
        with self._lock:
            self._key += 1
            self._data = data
            return self._key

    def newest(self) -> int:
        return self._key

    def written_between(self, low: int, high: int) -> bool:
        return False  # one process: writes take turns under its lock, each on the newest

    def exclusive(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # (its writers take turns on their own lock)

    def read(self) -> tuple[int, bytes]:
        with self._lock:
            return self._key, self._data


Override = tuple[int | None, tuple[Node, ...]]


@dataclass(frozen=True)
class Membership:
    """One daemon's membership. The first group is the inputs, the second what `settle`
    derives from them."""

    override: Override | None = None
    o_seq: int = 0  # raised by every override change (rule 4)
    source: tuple[Node, ...] | None = None  # None: no usable source (yet)
    source_pin: int | None = None
    self_node: Node | None = None
    hidden: frozenset[Node] = field(default_factory=frozenset)
    k_seq: int = 0  # raised by every change of source, self_node, hidden (rule 4)
    why: str = ""
    # derived
    listed: tuple[Node, ...] = ()
    pin: int | None = None
    version: int = 0
    nodes: tuple[Node, ...] = ()  # served

    @property
    def config(self) -> ClusterConfig:
        return ClusterConfig(self.version, self.nodes)

    @property
    def loaded(self) -> bool:
        return self.self_node is not None


def listed_of(m: Membership) -> tuple[tuple[Node, ...], int | None]:
    """Rule 1: the listed nodes and their pin."""
    if m.override is not None:
        pin, nodes = m.override
        return nodes, pin
    if m.source is not None:
        return m.source, m.source_pin
    assert m.self_node is not None, "settle() before this node is known"
    return (m.self_node,), None


def _new_pin(prev: Membership, new: Membership, listed: tuple[Node, ...], pin: int | None) -> bool:
    """Whether `pin` is the operator's word anew: written now by the layer that lists the
    nodes, and not the pin and list `prev` had already (rule 3)."""
    if pin is None or (pin, listed) == (prev.pin, prev.listed):
        return False
    if new.override is not None:
        return new.override != prev.override
    return (new.source_pin, new.source) != (prev.source_pin, prev.source)


def settle(prev: Membership, new: Membership) -> Membership:
    """`new`'s inputs with the listed and served nodes and the version that follow from them
    and from `prev`, the membership served until now (rules 1-3)."""
    listed, pin = listed_of(new)
    served = tuple(n for n in listed if n not in new.hidden) or listed
    if pin is not None and _new_pin(prev, new, listed, pin) and pin > prev.version:
        version = pin
    elif served != prev.nodes:
        version = prev.version + 1 if prev.version < VERSION_MAX else 1
    else:
        version = prev.version
    return replace(new, listed=listed, pin=pin, version=version, nodes=served)


def pin_passed_over(prev: Membership, m: Membership) -> bool:
    """Whether `m` (what `settle` made from `prev`) has a new pin that it does not serve:
    one not above the version `prev` served (rule 3; the caller logs it)."""
    return m.pin is not None and _new_pin(prev, m, m.listed, m.pin) and m.version != m.pin


# ---- the document ----


def _nodes(items: list[str]) -> tuple[Node, ...]:
    return tuple(parse_node(s) for s in items)


def encode(m: Membership) -> bytes:
    doc: dict[str, Any] = {
        "override": None
        if m.override is None
        else {"pin": m.override[0], "nodes": [str(n) for n in m.override[1]]},
        "o_seq": m.o_seq,
        "source": None if m.source is None else [str(n) for n in m.source],
        "source_pin": m.source_pin,
        "self": None if m.self_node is None else str(m.self_node),
        "hidden": sorted(str(n) for n in m.hidden),
        "k_seq": m.k_seq,
        "why": m.why,
        "listed": [str(n) for n in m.listed],
        "pin": m.pin,
        "version": m.version,
        "nodes": [str(n) for n in m.nodes],
    }
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def decode(data: bytes) -> Membership:
    """The document `encode` wrote; an empty `data` is the empty membership."""
    if not data:
        return Membership()
    d = json.loads(data)
    o = d["override"]
    return Membership(
        override=None if o is None else (o["pin"], _nodes(o["nodes"])),
        o_seq=d["o_seq"],
        source=None if d["source"] is None else _nodes(d["source"]),
        source_pin=d["source_pin"],
        self_node=None if d["self"] is None else parse_node(d["self"]),
        hidden=frozenset(_nodes(d["hidden"])),
        k_seq=d["k_seq"],
        why=d["why"],
        listed=_nodes(d["listed"]),
        pin=d["pin"],
        version=d["version"],
        nodes=_nodes(d["nodes"]),
    )
