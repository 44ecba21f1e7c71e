"""Unit tests of the shared membership document (mcached/cluster/membership.py), the health
rule (mcached/cluster/health.py) and how Discovery writes both: the version rule with
health, lost updates written again, the majority rule in every shape of failure, hysteresis
and flapping. No sockets: checks are made up."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import pytest

from mcached.cluster import membership
from mcached.cluster.config import VERSION_MAX, Node
from mcached.cluster.discovery import Discovery
from mcached.cluster.health import (
    DISPUTED,
    DOWN,
    FAILING,
    UNCHECKED,
    UP,
    Rule,
    Track,
    decide,
    parse_view,
)
from mcached.cluster.membership import LocalDocs, Membership, decode, encode, settle
from mcached.cluster.prober import Prober, Result
from mcached.server.docs import SharedDocs
from mcached.settings import Settings

pytestmark = pytest.mark.unit

A, B, C, D, E = (Node("localhost", "127.0.0.1", 21001 + i) for i in range(5))
RULE = Rule(failures=3, rise=2, grace=0)


# ---- the version rule ----


def loaded(**kw: object) -> Membership:
    return settle(Membership(), Membership(self_node=A, **kw))  # type: ignore[arg-type]


def test_settle_lists_override_then_source_then_self() -> None:
    m = loaded()
    assert (m.listed, m.nodes, m.version) == ((A,), (A,), 1)
    m2 = settle(m, replace(m, source=(A, B, C)))
    assert (m2.nodes, m2.version) == ((A, B, C), 2)
    m3 = settle(m2, replace(m2, override=(None, (B,))))
    assert (m3.nodes, m3.version) == ((B,), 3)
    m4 = settle(m3, replace(m3, override=None))
    assert (m4.nodes, m4.version) == ((A, B, C), 4)
    assert settle(m4, m4).version == 4  # nothing changed: the same version


def test_health_hides_and_moves_the_version_even_under_a_pin() -> None:
    m = loaded(source=(A, B, C), source_pin=40)
    assert (m.nodes, m.version) == ((A, B, C), 40)
    hid = settle(m, replace(m, hidden=frozenset({C})))
    assert (hid.listed, hid.nodes, hid.version) == ((A, B, C), (A, B), 41)
    back = settle(hid, replace(hid, hidden=frozenset()))
    assert (back.nodes, back.version) == ((A, B, C), 42)
    # a new pin is the operator's word again
    pinned = settle(back, replace(back, source_pin=50))
    assert pinned.version == 50
    # a hidden node that is no longer listed changes nothing
    gone = settle(pinned, replace(pinned, source=(A, B), source_pin=51, hidden=frozenset({C})))
    assert (gone.nodes, gone.version) == ((A, B), 51)


def test_a_pin_uncovered_again_is_no_new_word() -> None:
    """A pinned source under a `config set` override: dropping the override lists the
    source's nodes again, one version on, not at the source's pin (which would take the
    version back below what was served, to a number already served for another list).
    Regression: 10, 11 (the override), then 10 again, and a second override 11 again."""
    m = loaded(source=(A, B), source_pin=10)
    assert m.version == 10
    over = settle(m, replace(m, override=(None, (A, C))))
    assert over.version == 11
    back = settle(over, replace(over, override=None))
    assert (back.nodes, back.version) == ((A, B), 12)
    again = settle(back, replace(back, override=(None, (A, D))))
    assert (again.nodes, again.version) == ((A, D), 13)
    # the same override again changes nothing; a source written anew is the operator's
    # word, but not a number already served (10 was (A, B)): one up instead
    assert settle(again, again).version == 13
    gone = settle(again, replace(again, override=None))
    assert gone.version == 14
    rewritten = settle(gone, replace(gone, source=(A, E), source_pin=10))
    assert (rewritten.nodes, rewritten.version) == ((A, E), 15)
    assert settle(rewritten, replace(rewritten, source_pin=20)).version == 20  # above: as written


def test_issue_cluster_hunt_a_pin_already_served_is_not_served_for_another_list() -> None:
    """The file pins 300 for A, B, C; health hides C (301); the operator then pins 301 and
    lists D in place of C. 301 was served for (A, B): the new list is served at 302, or a
    client that has seen 301 (emcache) would never take it. Regression (found by a cluster
    hunt): 301 served again, for (A, B, D)."""
    m = loaded(source=(A, B, C), source_pin=300)
    hid = settle(m, replace(m, hidden=frozenset({C})))
    assert (hid.nodes, hid.version) == ((A, B), 301)
    edited = settle(hid, replace(hid, source=(A, B, D), source_pin=301))
    assert (edited.nodes, edited.version) == ((A, B, D), 302)
    assert membership.pin_passed_over(hid, edited)
    # from then on the pin is no new word: health moves the version on from 302
    again = settle(edited, replace(edited, hidden=frozenset({C, D})))
    assert (again.nodes, again.version) == ((A, B), 303)
    assert not membership.pin_passed_over(edited, again)
    # the same pin, below, with the list already served: nothing changes, no number reused
    same = settle(hid, replace(hid, source=(A, B), source_pin=300))
    assert (same.nodes, same.version) == ((A, B), 301) and membership.pin_passed_over(hid, same)
    # two `config set` of one pin with different lists (two worker processes at once, the
    # second written on top of the first): the second is one up
    first = settle(m, replace(m, override=(400, (A, B))))
    second = settle(first, replace(first, override=(400, (A, C))))
    assert (first.version, second.version, second.nodes) == (400, 401, (A, C))
    # a pin above what is served is served as written, whatever moved the version before
    assert settle(hid, replace(hid, source=(A, B, D), source_pin=302)).version == 302
    assert not membership.pin_passed_over(hid, settle(hid, replace(hid, source_pin=302)))


def test_the_version_starts_again_at_one_past_the_most_clients_keep() -> None:
    """A version pinned at 2^63-1 (the most `config set` takes) then moved on by a change:
    1, not a number the daemon's own `config set` and clients that keep a signed 64-bit
    number refuse. Regression: 9223372036854775808 was served."""
    m = loaded(source=(A, B), source_pin=VERSION_MAX)
    assert m.version == VERSION_MAX
    hid = settle(m, replace(m, hidden=frozenset({B})))
    assert (hid.nodes, hid.version) == ((A,), 1)
    over = settle(m, replace(m, override=(None, (A, C))))
    assert over.version == 1


def test_health_never_hides_every_listed_node() -> None:
    m = loaded(source=(B, C))
    all_hidden = settle(m, replace(m, hidden=frozenset({B, C})))
    assert all_hidden.nodes == (B, C) and all_hidden.version == m.version


def test_document_round_trip() -> None:
    m = loaded(source=(A, B, Node("cache", "", 11211)), source_pin=3, hidden=frozenset({B}))
    m = replace(settle(m, replace(m, override=(9, (A, C)))), o_seq=4, k_seq=7, why="x")
    assert decode(encode(m)) == m
    assert decode(b"") == Membership()


# ---- Discovery's writes ----


def make(store: object = None, **settings: object) -> Discovery:
    s = Settings(listen=("127.0.0.1",), cluster_node_name="localhost", **settings)  # type: ignore[arg-type]
    return Discovery(
        s,
        local_port=lambda: 21001,
        resolve=lambda host, port: ["127.0.0.1"],
        docs=store,  # type: ignore[arg-type]
    )


class Racing(LocalDocs):
    """A store where another process's write lands between our read and our write, once."""

    def __init__(self, sneak: bytes) -> None:
        super().__init__()
        self.sneak: bytes | None = sneak

    def write(self, writer: int, data: bytes) -> int:
        if self.sneak is not None and self._key:
            sneak, self.sneak = self.sneak, None
            super().write(9, sneak)  # the other write comes first
            key = super().write(writer, data)
            # ...but ours was built on the older document: pretend theirs won the tie
            super().write(9, sneak)
            return key
        return super().write(writer, data)


def test_a_lost_override_is_written_again_on_top_of_the_winner() -> None:
    d = make(config_set_enabled=True)
    d.load()
    m = d.membership()
    # the keeper (another process) hides nothing but bumps its part at the same time
    keeper_write = encode(settle(m, replace(m, source=(A, B), k_seq=m.k_seq + 1, why="k")))
    store = Racing(keeper_write)
    store.write(0, encode(m))
    d.docs = store
    d._seen = (-1, Membership(), b"")
    d.override(None, (A, C))
    final = d.membership()
    assert final.override == (None, (A, C)) and final.source == (A, B)
    assert final.nodes == (A, C)


def test_two_discoveries_over_one_shared_store_serve_one_membership() -> None:
    store = SharedDocs(3, size=4096)
    keeper, worker = make(store), make(store, config_set_enabled=True)
    worker.writer = 1
    keeper.load()
    assert worker.data() == keeper.data() == b"1\nlocalhost|127.0.0.1|21001\n"
    worker.override(5, (A, B))
    assert keeper.current().version == 5 and keeper.data() == worker.data()
    keeper._hidden = frozenset({B})
    keeper._publish("health")
    assert worker.current().nodes == (A,) and worker.current().version == 6
    assert worker.drop_override() and not worker.drop_override()
    assert keeper.current().nodes == (A,) and keeper.current().version == 6


def test_bug_a_keeper_taking_over_gave_every_peer_the_start_up_grace_again() -> None:
    """A keeper forked in a dead one's place tracked every node not hidden as never
    reached: a peer that died with the old keeper was hidden past the 30 s grace (its
    siblings hid it in about a second), and a hidden node's recent hides were forgotten
    (it came back after `rise` passes, not the doubled rise of a node that flaps)."""
    s = Settings(listen=("127.0.0.1",), cluster_node_name="localhost", cluster_health_interval=1)
    store, health_store = LocalDocs(), LocalDocs()

    def discovery() -> Discovery:
        d = Discovery(
            s,
            lambda: 21001,
            resolve=lambda host, port: ["127.0.0.1"],
            docs=store,
            health_docs=health_store,
        )
        return d

    def answers(dead: set[Node]) -> Any:
        def check(members: list[Node], timeout: float) -> dict[Node, Result]:
            view = {n: (3 if n in dead else 0) for n in (A, B, C, D)}
            return {
                n: Result(False, None, "refused", None)
                if n in dead
                else Result(True, 0.001, "", view)
                for n in members
            }

        return check

    first, worker = discovery(), discovery()
    worker.keeper, worker.writer = False, 1
    first.load()
    worker.override(None, (A, B, C, D))
    first._check = answers(set())  # type: ignore[method-assign]
    first.health_round(1.0)
    first._check = answers({D})  # type: ignore[method-assign]
    for _ in range(3):
        first.health_round(1.0)
    assert first.tracks[D].state == DOWN and len(first.tracks[D].hides) == 1
    hid_at = first.tracks[D].hides[0]
    # the keeper dies; another takes over as `start` and its health thread do
    second = discovery()
    second._hidden = second._read()[1].hidden
    second.load()
    second._resume_health()
    assert second.tracks[D].hides == [hid_at] and second.tracks[C].reached
    second._check = answers({C, D})  # type: ignore[method-assign]
    for _ in range(3):
        second.health_round(1.0)
    assert second.tracks[C].state == DOWN  # not FAILING for the grace's 30 s
    assert set(worker.current().nodes) == {A, B}


def test_issue_cluster_hunt_a_node_listed_by_name_alone_knows_itself() -> None:
    """``config set`` data is stored as written: ``localhost:21001`` sent to the node on 21001
    is ``localhost||21001``, no ip. That node is this daemon when its name is the one the
    daemon lists itself by, or resolves (the keeper's health thread: never a worker) to its
    listening address on its port; a name that does not resolve, or that resolves elsewhere,
    or another port, is a peer. Regression (found by a cluster hunt): the node compared the
    empty ip alone, health-checked itself and showed ``up`` for itself in ``stats cluster``."""
    table = {"localhost": ["127.0.0.1"], "alias": ["10.9.9.9", "127.0.0.1"], "far": ["10.9.9.9"]}
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return list(table.get(host, []))

    s = Settings(listen=("127.0.0.1",), cluster_node_name="localhost", cluster_health_interval=1)
    store, health_store = LocalDocs(), LocalDocs()
    keeper, worker = (
        Discovery(s, lambda: 21001, resolve=resolve, docs=store, health_docs=health_store)
        for _ in range(2)
    )
    worker.keeper, worker.writer = False, 1
    keeper.load()
    me, alias, gone, far = (Node(h, "", 21001) for h in ("localhost", "alias", "gone", "far"))
    other_port = Node("alias", "", 21002)
    worker.override(None, (me, alias, gone, far, other_port, B))
    lookups.clear()

    def rows() -> dict[str, object]:
        return {k[5:]: v for k, v in worker.health_rows() if k.startswith("node:")}

    assert worker.is_self(me) and not worker.is_self(alias)  # no lookup yet: the name alone
    assert rows()[str(me)] == "self" and rows()[str(alias)] != "self"
    assert lookups == []  # a worker never looks a name up
    checked: list[Node] = []

    def check(members: list[Node], timeout: float) -> dict[Node, Result]:
        checked.extend(members)
        return {n: Result(True, 0.001, "", None) for n in members}

    keeper._check = check  # type: ignore[method-assign]
    keeper.health_round(1.0)
    assert set(checked) == {gone, far, other_port, B}  # never itself, by either name
    assert set(lookups) == {"localhost", "alias", "gone", "far"}  # (21002 is not its port)
    assert worker.is_self(alias) and keeper.is_self(alias)
    view = rows()
    assert [n for n, v in view.items() if v == "self"] == [str(me), str(alias)]
    assert all(str(view[str(n)]).startswith("up ") for n in (gone, far, other_port, B))
    # each name is looked up again only every --cluster-dns-interval seconds
    lookups.clear()
    checked.clear()
    keeper.health_round(1.0)
    assert lookups == [] and set(checked) == {gone, far, other_port, B}


# ---- the rule ----


def tracks(*nodes: Node) -> dict[Node, Track]:
    return {n: Track(n) for n in nodes}


def check(t: dict[Node, Track], node: Node, ok: bool, view: dict[Node, int] | None = None) -> None:
    t[node].record(ok, 0.001 if ok else None, "" if ok else "refused", view)


def round_of(
    t: dict[Node, Track],
    listed: tuple[Node, ...],
    dead: set[Node],
    views: dict[Node, dict[Node, int] | None],
    now: float = 0.0,
) -> tuple[list[Node], list[Node]]:
    for node in t:
        check(t, node, node not in dead, views.get(node))
    ev = decide(A, listed, t, RULE, now)
    return ev.hidden, ev.back


def test_a_dead_node_is_hidden_when_the_others_agree() -> None:
    listed = (A, B, C)
    t = tracks(B, C)
    b_sees = {A: 0, C: 1}
    assert round_of(t, listed, {C}, {B: b_sees}) == ([], [])
    assert t[C].state == FAILING and t[B].state == UP
    round_of(t, listed, {C}, {B: b_sees})
    assert round_of(t, listed, {C}, {B: b_sees}) == ([C], [])
    assert t[C].state == DOWN
    # it comes back after `rise` passes in a row
    assert round_of(t, listed, set(), {B: {A: 0, C: 0}}) == ([], [])
    assert round_of(t, listed, set(), {B: {A: 0, C: 0}}) == ([], [C])
    assert t[C].state == UP


def test_bug_a_dead_node_its_peers_name_otherwise_was_never_hidden() -> None:
    """B's file names the nodes by address where A's names them `localhost`: B's view of
    C was looked up by A's name for it, missed, and B counted as a voter against, for as
    long as C was dead (disputed on every node, served to clients)."""
    listed = (A, B, C)
    t = tracks(B, C)
    b_sees = {Node("127.0.0.1", "127.0.0.1", A.port): 0, Node("127.0.0.1", "127.0.0.1", C.port): 2}
    for _ in range(2):
        assert round_of(t, listed, {C}, {B: b_sees}) == ([], [])
    assert round_of(t, listed, {C}, {B: b_sees}) == ([C], [])
    # and a view of another node on the same address says nothing of C
    t = tracks(B, C)
    b_sees = {Node("localhost", "127.0.0.2", C.port): 2}
    for _ in range(4):
        assert round_of(t, listed, {C}, {B: b_sees}) == ([], [])
    assert t[C].state == DISPUTED


def test_a_partition_between_two_nodes_hides_nothing() -> None:
    """A cannot reach C; B reaches both: A alone is no majority of {A, B}, so C is kept
    (disputed), and every node serves the same list."""
    listed = (A, B, C)
    t = tracks(B, C)
    for _ in range(5):
        hidden, _ = round_of(t, listed, {C}, {B: {A: 0, C: 0}})
        assert hidden == []
    assert t[C].state == DISPUTED


def test_a_node_cut_off_from_every_peer_hides_no_one() -> None:
    """A firewall that lets clients in but not peers: every peer fails from here, and no
    peer can vote with us."""
    listed = (A, B, C, D)
    t = tracks(B, C, D)
    for _ in range(5):
        hidden, _ = round_of(t, listed, {B, C, D}, {})
        assert hidden == []
    assert {x.state for x in t.values()} == {DISPUTED}


def test_the_majority_side_of_a_split_hides_the_minority() -> None:
    listed = (A, B, C, D, E)
    # A is with B and C; D and E are on the other side
    t = tracks(B, C, D, E)
    side = {A: 0, B: 0, C: 0, D: 1, E: 1}
    for _ in range(3):
        hidden, _ = round_of(t, listed, {D, E}, {B: side, C: side})
    assert sorted(hidden) == [D, E]
    # D's view of the same split: D and E are 2 of the 4 voters about A: not a majority
    t2 = {n: Track(n) for n in (A, B, C, E)}
    for _ in range(3):
        for n in t2:
            t2[n].record(n == E, None, "", {A: 1, B: 1, C: 1, D: 0} if n == E else None)
        ev = decide(D, listed, t2, RULE, 0.0)
    assert ev.hidden == []


def test_issue_cluster_hunt_a_second_death_is_routed_around() -> None:
    """Three nodes: C dies, and A (with B's view agreeing) hides it; then B dies too. A member
    this node hides has no vote, so A is the only voter about B, as in a two-node cluster,
    and hides it. Regression (found by a cluster hunt): the hidden C still counted as a voter
    that did not agree, B stayed disputed, and A listed it for ever."""
    listed = (A, B, C)
    t = tracks(B, C)
    for _ in range(3):
        hidden, _ = round_of(t, listed, {C}, {B: {A: 0, C: 1}})
    assert hidden == [C]
    for _ in range(2):
        assert round_of(t, listed, {B, C}, {}) == ([], [])
    assert round_of(t, listed, {B, C}, {}) == ([B], [])
    assert t[B].state == t[C].state == DOWN


def test_a_hidden_member_has_no_vote_even_when_it_answers_again() -> None:
    """C was hidden and answers again, not back yet (`rise`): its view (B is up) is no vote
    until this node lists it again, so A, the one voter left, hides B when B fails. Once C
    is back, its view counts again: A alone is no majority of A and C."""
    listed = (A, B, C)
    t = tracks(B, C)
    t[C].set_state(DOWN, 0.0)
    t[C].hides += [0.0, 0.1, 0.2]  # hidden thrice lately: 8 passes to return (flapping)
    views = {C: {A: 0, B: 0}}
    for _ in range(2):
        assert round_of(t, listed, {B}, views, 1.0) == ([], [])
    assert round_of(t, listed, {B}, views, 1.0) == ([B], [])
    assert t[C].state == DOWN
    t2 = tracks(B, C)  # the same failure with C listed: disputed
    for _ in range(3):
        assert round_of(t2, listed, {B}, views, 1.0) == ([], [])
    assert t2[B].state == DISPUTED


def test_cut_off_after_a_death_still_hides_no_one() -> None:
    """E died and A hid it; then A loses its way to every other peer. B, C and D are three
    voters it does not reach, against its one: nothing more is hidden (README, "a node cut
    off from all its peers")."""
    listed = (A, B, C, D, E)
    t = tracks(B, C, D, E)
    side = {A: 0, B: 0, C: 0, D: 0, E: 1}
    for _ in range(3):
        hidden, _ = round_of(t, listed, {E}, {B: side, C: side, D: side})
    assert hidden == [E]
    for _ in range(5):
        assert round_of(t, listed, {B, C, D, E}, {}) == ([], [])
    assert {t[n].state for n in (B, C, D)} == {DISPUTED}


def test_two_nodes_each_decide_alone() -> None:
    t = tracks(B)
    for _ in range(3):
        hidden, _ = round_of(t, (A, B), {B}, {})
    assert hidden == [B]


def test_peers_without_a_view_do_not_vote() -> None:
    """memcached peers, or mcached under -Y, answer without a view: A decides with the
    voters it has."""
    listed = (A, B, C)
    t = tracks(B, C)
    for _ in range(3):
        hidden, _ = round_of(t, listed, {C}, {B: None})
    assert hidden == [C]


def test_flapping_needs_more_passes_each_time() -> None:
    t = tracks(B)
    listed = (A, B)
    now = 1000.0
    needed = []
    for _ in range(3):
        for _ in range(3):
            round_of(t, listed, {B}, {}, now)
        assert t[B].state == DOWN
        n = 0
        while t[B].state == DOWN:
            round_of(t, listed, set(), {}, now)
            n += 1
        needed.append(n)
        now += 60
    assert needed == [2, 4, 8]
    # ten quiet minutes later, the penalty is gone
    for _ in range(3):
        round_of(t, listed, {B}, {}, now + 700)
    n = 0
    while t[B].state == DOWN:
        round_of(t, listed, set(), {}, now + 700)
        n += 1
    assert n == 2


def test_a_member_never_reached_gets_a_start_up_grace() -> None:
    """Nodes of a fleet start together: one never reached is not hidden for `grace` seconds."""
    rule = Rule(failures=3, rise=2, grace=30)
    t = {B: Track(B, first=100.0)}
    for now in (101.0, 102.0, 103.0, 120.0):
        t[B].record(False, None, "refused", None)
        assert decide(A, (A, B), t, rule, now).hidden == []
        assert t[B].state == FAILING
    t[B].record(False, None, "refused", None)
    assert decide(A, (A, B), t, rule, 131.0).hidden == [B]
    # one that was reached once is hidden by the rule alone
    t2 = {B: Track(B, first=100.0)}
    t2[B].record(True, 0.001, "", None)
    for _ in range(3):
        t2[B].record(False, None, "refused", None)
    assert decide(A, (A, B), t2, rule, 101.0).hidden == [B]


def test_unchecked_until_the_first_check() -> None:
    t = tracks(B)
    decide(A, (A, B), t, RULE, 0.0)
    assert t[B].state == UNCHECKED


def test_parse_view() -> None:
    reply = (
        b"STAT health on\r\nSTAT version 3\r\n"
        b"STAT node:localhost|127.0.0.1|21001 self\r\n"
        b"STAT node:localhost|127.0.0.1|21002 up 0 4 0.31 12\r\n"
        b"STAT node:localhost|127.0.0.1|21003 down 7 0 - 3 connection refused\r\n"
        b"STAT node:bad|x|1 up 0\r\nEND\r\n"
    )
    assert parse_view(reply) == {A: 0, B: 0, C: 7}
    assert parse_view(b"END\r\n") is None
    assert parse_view(b"ERROR\r\n") is None


def test_bug_a_view_counting_thousands_of_digits_failed_every_round() -> None:
    """int() of a count of 5,000 digits raised ValueError (Python's limit on the digits of
    a conversion): the whole round of checks failed with it, every interval, and no dead
    peer was hidden while such a peer was listed. A row with garbage is no row."""
    reply = b"STAT node:localhost|127.0.0.1|21002 down " + b"9" * 5000 + b" 0\r\nEND\r\n"
    assert parse_view(reply) is None
    reply += b"STAT node:localhost|127.0.0.1|21003 down 12 0\r\nEND\r\n"
    assert parse_view(reply) == {C: 12}


def test_prober_against_no_one() -> None:
    """A refused port fails fast; the round reports it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nobody = Node("localhost", "127.0.0.1", port)

    async def go() -> dict[Node, Result]:
        p = Prober()
        try:
            return await p.round([nobody], 1.0)
        finally:
            await p.close()

    start = time.monotonic()
    res = asyncio.run(go())[nobody]
    assert not res.ok and res.error == "connection refused"
    assert time.monotonic() - start < 1.0


def test_rounds_start_an_interval_apart_even_after_a_late_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round that starts late (the keeper was not scheduled in time) does not make the next
    one early: `rise` passed checks in a row always span (rise - 1) intervals. The clock is
    made up; one sleep oversleeps by most of two intervals."""
    import types

    from mcached.cluster import discovery

    clock = [100.0]
    waits = [0]
    d = make(cluster_health_interval=1.0)
    starts: list[float] = []

    class Stop:  # the keeper's stop event, over the made-up clock
        is_stopped = False

        def is_set(self) -> bool:
            return self.is_stopped

        def wait(self, seconds: float) -> bool:
            waits[0] += 1
            clock[0] += seconds + (1.7 if waits[0] == 1 else 0.0)  # the first one oversleeps
            return self.is_stopped

    stop = Stop()
    fake_time = types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time)
    monkeypatch.setattr(discovery, "time", fake_time)
    monkeypatch.setattr(d, "_stop", stop)

    def round_(timeout: float, started: float | None = None) -> None:
        starts.append(clock[0])
        if len(starts) == 4:
            stop.is_stopped = True

    d.health_round = round_  # type: ignore[method-assign]
    d._health_main()
    assert starts[1] - starts[0] == pytest.approx(2.7)  # late: the interval, overslept by 1.7
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1.0 - 1e-9, gaps  # and the next one a whole interval after it


RESET_PEER_SCRIPT = """
import asyncio, socket, struct, sys, threading
from mcached.cluster.config import VERSION_MAX, Node
from mcached.cluster.prober import Prober

async def main():
    async def reset(reader, writer):
        await reader.readline()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    peer = Node("localhost", "127.0.0.1", server.sockets[0].getsockname()[1])
    prober = Prober()
    for _ in range(3):
        print((await prober.round([peer], 1.0))[peer].error)
    await prober.close()
    server.close()

# a thread of its own, as the keeper's health checks run
t = threading.Thread(target=lambda: asyncio.run(main()))
t.start()
t.join()
"""


def test_a_reset_connection_leaves_no_unretrieved_error_behind() -> None:
    """A peer that resets the kept-open connection fails the check, and the error the
    connection closed with is consumed there: nothing is reported when the connection's
    objects are collected, at exit here. (They form a cycle through the error's traceback,
    so which finalizer runs first is up to the collector; on 3.13t asyncio's own rescue, the
    protocol's ``__del__``, ran last, and each dropped connection printed "Future exception
    was never retrieved" to stderr: 3 of 3 here before the fix. The GIL's build happened to
    run them in the right order.)"""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-c", RESET_PEER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["connection", "reset"] * 3
    assert "never retrieved" not in run.stderr, run.stderr
    assert run.stderr == ""
