"""Moving items before clients move: what ``mcached-tool cluster add|remove NODE --warm`` does
before it announces the new membership.

What lives here: `warm`, which copies every item whose node changes from one ring to the
other (`mcached.client.hashing.Ring`: the rings of the clients' hashing) from the node that
owns it now to the node that will, with its flags and its expiry time, at a bounded rate; and
`Report`, what it did.

Rules:

1. Only items that *move*: an item is read from a source node only if the old ring gives it
   to that node (a node may still hold stale copies of keys it owned before an earlier
   change: those are left alone), and written only if the new ring gives it to another node.
   With rendezvous hashing, adding a node moves exactly the keys the new node wins (about
   1/N of them) and nothing else; removing one moves only its own keys.
2. An item keeps its flags (as the server stored them) and its expiry: the absolute time the
   server reports (``lru_crawler metadump``), which every server reads as such (past 30
   days); an item already expired is not copied.
3. Bounded: at most `rate` items a second over the whole run (batches of `BATCH`, a pause
   after each), so the live nodes keep serving; each request has the tool's timeout.
4. A snapshot: writes that reach the old owner after its item was copied, and before clients
   move to the new membership, are not carried over (the new node serves the copy's value
   until it is written again or expires). Run it when the clients' writes can tolerate that,
   or keep the window short (a short client poll interval).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mcached.client.hashing import Ring
from mcached.client.node import NodeClient
from mcached.cluster.config import Node

BATCH = 100


@dataclass
class Report:
    copied: int = 0
    bytes: int = 0
    expired: int = 0  # already expired: not copied
    stale: int = 0  # held by a node that does not own them (left alone)
    gone: int = 0  # deleted or evicted between the listing and the read
    failed: int = 0  # the destination refused the store
    untold: int = 0  # keys no text request can carry (`metadump`): not copied
    seconds: float = 0.0
    by_source: dict[Node, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.copied / self.seconds if self.seconds > 0 else 0.0
        out = (
            f"warm: copied {self.copied} items ({self.bytes} bytes) in {self.seconds:.2f}s "
            f"({rate:,.0f} items/s)"
        )
        extra = [
            f"{n} {what}"
            for n, what in (
                (self.expired, "expired"),
                (self.gone, "gone meanwhile"),
                (self.stale, "stale copies left alone"),
                (self.failed, "refused"),
                (self.untold, "keys with spaces or control bytes left out"),
            )
            if n
        ]
        return out + (f"; {', '.join(extra)}" if extra else "")


def warm(
    sources: Iterable[Node],
    old: Ring,
    new: Ring,
    connect: Callable[[Node], NodeClient],
    rate: float = 0.0,
    echo: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Report:
    """Copy every item of `sources` that `old` gives to its source and `new` to another node,
    to that node (rules 1-3). `connect(node)` opens a `NodeClient`; `rate` 0 is unbounded."""
    report = Report()
    start = time.monotonic()
    dests: dict[Node, NodeClient] = {}
    try:
        for source in sources:
            with connect(source) as src:
                moving: list[tuple[bytes, int, Node]] = []
                listed, untold = src.metadump()
                report.untold += untold
                for key, exp in listed:
                    dest = new.owner(key)
                    if dest is None or dest == source:
                        continue  # stays (or, if stale here, is not ours to move)
                    if old.owner(key) != source:  # asked only of the few that would move
                        report.stale += 1
                        continue
                    moving.append((key, exp, dest))
                if echo is not None:
                    echo(f"  {source}: {len(moving)} items move")
                copied = 0
                for i in range(0, len(moving), BATCH):
                    batch = moving[i : i + BATCH]
                    copied += _copy(src, batch, dests, connect, report, clock)
                    if rate > 0:
                        done = report.copied + report.gone + report.expired
                        ahead = done / rate - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
                report.by_source[source] = copied
    finally:
        for client in dests.values():
            client.close()
        report.seconds = time.monotonic() - start
    return report


def _copy(
    src: NodeClient,
    batch: list[tuple[bytes, int, Node]],
    dests: dict[Node, NodeClient],
    connect: Callable[[Node], NodeClient],
    report: Report,
    clock: Callable[[], float],
) -> int:
    now = clock()
    where = {key: (exp, dest) for key, exp, dest in batch}
    per_dest: dict[Node, list[tuple[bytes, bytes, int, bytes]]] = {}
    found = 0
    for key, flags, value in src.get_many([k for k, _, _ in batch]):
        found += 1
        exp, dest = where[key]
        if 0 < exp <= now:
            report.expired += 1
            continue
        per_dest.setdefault(dest, []).append((key, flags, exp if exp > 0 else 0, value))
    report.gone += len(batch) - found
    copied = 0
    for dest, items in per_dest.items():
        client = dests.get(dest)
        if client is None:
            client = dests[dest] = connect(dest)
        for (key, _, _, value), reply in zip(items, client.store_many(items), strict=True):
            if reply == b"STORED":
                copied += 1
                report.copied += 1
                report.bytes += len(key) + len(value)
            else:
                report.failed += 1
    return copied
