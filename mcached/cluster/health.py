"""Cluster health: which listed nodes this node reaches, and which it hides.

What lives here: `Rule` (how many failed checks hide a node, how many passed ones bring it
back), `Track` (one member as this node sees it), `decide` (the rule, pure: tests drive it
with made-up checks) and `parse_view` (a peer's ``stats cluster`` rows). The checks
themselves are `mcached.cluster.prober`'s (asyncio, loaded only where there is a peer to
check). The keeper
(`mcached.cluster.discovery`) runs a round every interval and publishes what it decided.

The check: ``stats cluster`` on a kept-open connection, every ``--cluster-health-interval``
seconds, answered within the same time (at most `CHECK_TIMEOUT`). It is cheap (a few rows
from a shared document, no cache lock, no publishing round between workers) and it brings
back the peer's own view of every member, which the rule needs. A peer that answers anything
well-formed (``END``, or an error line: memcached's ``ERROR``, ``CLIENT_ERROR`` under ``-Y``)
passed; a refused or reset connection, silence past the timeout, or garbage failed.

The rule (the same on every node, so healthy nodes converge on the same list):

1. A member that fails `failures` checks in a row is hidden if a *majority* of the members
   that could vote agree: every listed member that this node does not hide votes, but the
   member itself, this node included; a peer this node reaches votes "failing" when its own
   last check of the member failed, "up" otherwise; a peer it cannot reach counts as a vote
   it does not have (so it never helps to hide); a peer that answers without a view
   (memcached, ``-Y``) does not vote. Otherwise the member is *disputed*: kept, and shown so.
   A member this node hides has no vote: it is gone from this node's list, and counted as a
   voter it would keep the next death from ever being a majority (three nodes, C dead and
   hidden, then B dead: A failed B alone, of A and C, for ever).
2. A hidden member comes back after `rise` checks passed in a row; each time it was hidden
   again within `FLAP_WINDOW` seconds doubles that (up to `MAX_PENALTY` times), so a flapping
   node does not churn the version.
3. A member this node has never reached is not hidden before `Rule.grace` seconds of
   tracking it: the nodes of a fleet start together, and one still starting is not dead.
4. This node never checks or hides itself.

What the majority buys: a node that loses its way to one peer (a partition between two nodes)
does not hide it while the others still reach it, so every node keeps serving the same list;
a node cut off from all its peers (or a firewall that lets clients in but not peers) hides no
one while two or more of them are still listed and not hidden. A dead node is hidden by every
node that has a majority on its side. A two-node cluster has one voter per member: each hides
the other if they lose sight of each other; so has a larger one once all but two of its
members are hidden (dead, or cut off, one after the other).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from mcached.cluster.config import Node, endpoint, parse_node

CHECK_TIMEOUT = 2.0  # seconds: the longest a check may take (and never past the interval)
FLAP_WINDOW = 600.0  # seconds during which another hide doubles the passes needed to return
MAX_PENALTY = 8
REPLY_MAX = 1 << 20  # bytes of a ``stats cluster`` reply we read before calling it garbage
COUNT_DIGITS_MAX = 18  # a view's failure count longer than this is garbage

SELF = "self"
UP = "up"
FAILING = "failing"  # the last check failed; not (yet) hidden
DISPUTED = "disputed"  # failed enough to hide, but most voters still reach it
DOWN = "down"  # hidden
UNCHECKED = "unchecked"  # no check yet (or health checks are off)
SERVED_STATES = (UP, FAILING, DISPUTED, UNCHECKED, SELF)


STARTUP_GRACE = 30.0  # seconds a member never reached may fail before it can be hidden


@dataclass(frozen=True)
class Rule:
    failures: int = 3
    rise: int = 5
    grace: float = STARTUP_GRACE


@dataclass
class Track:
    """One member as this node sees it."""

    node: Node
    state: str = UNCHECKED
    fails: int = 0  # checks failed in a row
    passes: int = 0  # checks passed in a row
    checks: int = 0
    failed: int = 0
    latency: float | None = None  # seconds, of the last check that passed
    error: str = ""
    since: float = field(default_factory=time.time)  # when `state` began
    first: float = field(default_factory=time.time)  # when this node began to track it
    reached: bool = False  # a check of it ever passed
    hides: list[float] = field(default_factory=list)  # when it was hidden, recent ones
    view: dict[Node, int] | None = None  # the member's own consecutive failures per node
    # when the round of the first check of the passes in a row began (time.monotonic(); the
    # keeper sets it): a hidden member's return is logged with how long it kept passing
    passing_since: float = 0.0

    def record(
        self, ok: bool, latency: float | None, error: str, view: dict[Node, int] | None
    ) -> None:
        self.checks += 1
        if ok:
            self.reached = True
            self.passes += 1
            self.fails = 0
            self.latency = latency
            self.error = ""
            self.view = view
        else:
            self.fails += 1
            self.passes = 0
            self.failed += 1
            self.error = error
            self.view = None

    def set_state(self, state: str, now: float) -> None:
        if state != self.state:
            self.state = state
            self.since = now

    def rise_needed(self, rule: Rule, now: float) -> int:
        recent = [t for t in self.hides if now - t < FLAP_WINDOW]
        self.hides = recent
        return rule.rise * min(MAX_PENALTY, 1 << max(0, len(recent) - 1))


@dataclass
class Events:
    hidden: list[Node] = field(default_factory=list)
    back: list[Node] = field(default_factory=list)


def decide(
    me: Node | None, listed: Iterable[Node], tracks: dict[Node, Track], rule: Rule, now: float
) -> Events:
    """Apply the rule to every tracked member after a round of checks; states change in
    `tracks`, and the members hidden and brought back are returned."""
    events = Events()
    members = set(listed)
    for node, t in tracks.items():
        if t.state == DOWN:
            if t.passes >= t.rise_needed(rule, now):
                t.set_state(UP, now)
                events.back.append(node)
            continue
        if t.fails == 0:
            t.set_state(UP if t.checks else UNCHECKED, now)
        elif t.fails < rule.failures or _starting(t, rule, now):
            t.set_state(FAILING, now)
        elif _majority_agrees(me, members, node, tracks):
            t.set_state(DOWN, now)
            t.hides.append(now)
            events.hidden.append(node)
        else:
            t.set_state(DISPUTED, now)
    return events


def _starting(t: Track, rule: Rule, now: float) -> bool:
    """Never reached, and tracked for less than the grace (rule 3)."""
    return not t.reached and rule.grace > 0 and now - t.first < rule.grace


def _majority_agrees(
    me: Node | None, members: set[Node], node: Node, tracks: dict[Node, Track]
) -> bool:
    voters = 1  # this node, which failed it
    agree = 1
    for peer in members:
        if peer == node or peer == me or peer not in tracks:
            continue
        t = tracks[peer]
        if t.state == DOWN:
            continue  # hidden by this node: no voter (rule 1)
        if t.fails == 0 and t.checks and t.view is None:
            continue  # reachable but shows no view: not a voter
        voters += 1
        if t.fails == 0 and t.view is not None and _fails_in(t.view, node) > 0:
            agree += 1
    return agree * 2 > voters


def _fails_in(view: dict[Node, int], node: Node) -> int:
    """The failures a peer's view counts for `node`: listed there under the same name, or
    under another for the same ip and port (each node names the others as its own file or
    DNS does: `localhost` here, `127.0.0.1` there; looked up by name alone, such a peer
    voted against every hide, and a dead node stayed served, disputed, for good)."""
    fails = view.get(node)
    if fails is None:
        at = endpoint(node)
        fails = next((f for n, f in view.items() if endpoint(n) == at), 0)
    return fails


# ---- a peer's view: its ``stats cluster`` rows ----


def parse_view(reply: bytes) -> dict[Node, int] | None:
    """``STAT node:<host|ip|port> <state> <fails> ...`` rows -> {node: consecutive failures};
    None when the reply holds no such row (not an mcached, or health off there)."""
    view: dict[Node, int] = {}
    any_row = False
    for line in reply.split(b"\r\n"):
        if not line.startswith(b"STAT node:"):
            continue
        parts = line[10:].split(b" ")
        if len(parts) < 2:
            continue
        try:
            node = parse_node(parts[0].decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            continue
        fails = parts[2] if len(parts) > 2 else b"0"
        if not (fails.isdigit() and len(fails) <= COUNT_DIGITS_MAX):
            # garbage (a count of thousands of digits was int()'s ValueError: every
            # round of this node's checks failed with it, and no peer was hidden)
            continue
        any_row = True
        view[node] = int(fails)
    return view if any_row else None
