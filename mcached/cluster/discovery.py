"""The served auto-discovery endpoint: the membership this daemon serves, its keeper, and the
health checks that hide failed members.

What lives here: `Discovery`, one per daemon process. Every process of a daemon (its worker
processes, the maintainer, the supervisor before it forks) shares *one* membership: a
document (`mcached.cluster.membership`) in a store the daemon hands in, one ``MAP_SHARED``
mapping for all of them (`mcached.server.docs.SharedDocs`; `LocalDocs` when the daemon runs in
one process). So ``config set cluster`` on one connection is what ``config get cluster``
answers on every other one, whichever worker process serves it.

Two roles:

* every process *serves*: `data` (what ``config get cluster`` and the old
  ``get AmazonElastiCache:cluster`` carry), `override`/`drop_override` (``config set|delete``),
  `health_rows` (``stats cluster``) and `stat_rows` (rows of ``stats``);
* exactly one process *keeps* (`keeper` True, `start`): it reads the source (the cluster file
  or DNS name; the watcher thread, and SIGHUP's `reload`), runs the health checks (the health
  thread, `mcached.cluster.health`) and writes what they decide. In the ``mcached`` command
  that is the maintainer process (it never serves a request, so a check never waits behind
  one, and the supervisor stays free of threads); in a daemon run in one process, threads of
  it. A keeper that dies is replaced by the supervisor and resumes from the document: the
  version and the hidden nodes live there, not in the process.

Rules:

1. The data is built once per change of the document, never per request. A process reads the
   document again only when the store's newest key moves (a few words), and keeps the decoded
   membership and its bytes in one attribute swapped whole, so ``config get`` takes no lock;
   its reply is one bytes object: it goes out in one write, as clients that keep only their
   last read need.
2. Where membership comes from, and the version rule: `mcached.cluster.membership` (override,
   then source, then this node; a pin above the version served is served as written;
   otherwise one more per change of the served nodes). Health only hides listed nodes
   (`mcached.cluster.health`), never adds.
3. The same membership gives the same bytes on every node: nodes are de-duplicated and sorted
   by (host, ip, port), whatever order the source listed them in.
4. Writes: a writer reads the newest document, changes its own part, writes the whole, and
   reads back; if a concurrent write from another process built on an older document won,
   it writes again on top of it (membership rule 4). Threads of one process take `_lock`.
5. Names are resolved outside `_lock`, by the keeper's refreshing thread (the watcher, or
   SIGHUP's main thread), its health thread, or before the workers start. A worker never
   waits on a lookup: ``config set`` data is stored as given (``host||port`` keeps an empty
   ip); the tool resolves names before it sends; whether such a node is this daemon is
   resolved by the health thread, which publishes what it found (`is_self`).

Lock order: `_refresh_lock` (one refresher at a time) before `_lock` (this process's writes).
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from mcached.addr import parse_listen
from mcached.cluster.config import (
    ClusterConfig,
    Node,
    Resolver,
    TooManyNodes,
    check_host,
    is_ip,
    parse_node,
)
from mcached.cluster.health import (
    CHECK_TIMEOUT,
    DOWN,
    SELF,
    UNCHECKED,
    Rule,
    Track,
    decide,
)
from mcached.cluster.membership import (
    Docs,
    LocalDocs,
    Membership,
    decode,
    encode,
    pin_passed_over,
    settle,
)
from mcached.cluster.sources import DnsSource, FileSource, name_of, resolve_name
from mcached.settings import Settings, SettingsError

if TYPE_CHECKING:
    from mcached.cluster.prober import Checks, Result

log = logging.getLogger("mcached.discovery")

FILE_POLL_INTERVAL = 1.0  # seconds between stat() calls on --cluster-file
COMMIT_TRIES = 20  # writes lost to concurrent ones before giving up (logged)
# before a write lost to concurrent ones goes again: a random wait up to this many seconds,
# doubled each time, so that writers who met go one after another, not in step for ever
COMMIT_BACKOFF = 0.001
WILDCARDS = ("", "0.0.0.0", "::", "*")
COUNTERS = ("checks", "failed_checks", "hides", "returns")


def own_node(settings: Settings, port: int, resolve: Resolver = resolve_name) -> Node:
    """How this node lists itself: ``--cluster-node-name`` or a name derived from ``-l``."""
    listen = parse_listen(settings.listen[0], port)[0] if settings.listen else ""
    wildcard = listen in WILDCARDS
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
    try:
        check_host(host, host)  # (--cluster-node-name was checked with the settings)
    except ValueError:
        host = ip or "localhost"  # a machine's name no client could parse in the list
    return Node(host, ip, port)


def health_enabled(settings: Settings) -> bool:
    """Checks run unless --cluster-health-interval is 0; not under -Z (they speak plain TCP
    and a TLS port would fail them all)."""
    return settings.cluster_health_interval > 0 and not settings.ssl_enabled


def _keeper_inputs(m: Membership) -> tuple[object, ...]:
    """What the keeper's part of the document holds (`Discovery._publish`)."""
    return (m.source, m.source_pin, m.self_node, m.hidden)


class Discovery:
    """The membership one daemon serves; see the module's rules.

    Reloadable (SIGHUP: `reload`) and, in the keeper, a service (`start`/`stop`: the watcher
    and health threads).
    """

    def __init__(
        self,
        settings: Settings,
        local_port: Callable[[], int],
        resolve: Resolver = resolve_name,
        reverse: Callable[[str], str] | None = None,
        docs: Docs | None = None,
        health_docs: Docs | None = None,
    ) -> None:
        if settings.cluster_node_name:
            try:
                check_host(settings.cluster_node_name, settings.cluster_node_name)
            except ValueError:
                raise SettingsError(
                    "--cluster-node-name wants a hostname (letters, digits, '-', '.', '_') "
                    f"or an IP address, got {settings.cluster_node_name!r}"
                ) from None
        self.settings = settings
        self.local_port = local_port
        self.resolve = resolve
        self.reverse = reverse or (lambda ip: name_of(ip, resolve))
        self.file = FileSource(settings.cluster_file) if settings.cluster_file else None
        self.dns = DnsSource(settings.cluster_dns) if settings.cluster_dns else None
        self.file_poll_interval = FILE_POLL_INTERVAL
        self.docs: Docs = docs if docs is not None else LocalDocs()
        self.health_docs: Docs = health_docs if health_docs is not None else LocalDocs()
        self.writer = 0  # this process's writer number in both stores (the daemon sets it)
        self.keeper = True  # False in a worker process: it serves, never reads a source
        self.rule = Rule(settings.cluster_health_failures, settings.cluster_health_rise)
        self.health_interval = settings.cluster_health_interval if health_enabled(settings) else 0.0
        self._refresh_lock = threading.Lock()  # one refresher at a time; taken before _lock
        self._lock = threading.Lock()  # this process's writes
        # the keeper's own inputs (rule 4: it writes them again if a write of theirs was lost)
        self._source: tuple[Node, ...] | None = None
        self._source_version: int | None = None
        self._self_node: Node | None = None
        self._hidden: frozenset[Node] = frozenset()
        self._inputs = False  # the inputs above were read in this process
        # rule 1: (key, membership, data) as last read, swapped whole
        self._seen: tuple[int, Membership, bytes] = (-1, Membership(), b"")
        self._health_seen: tuple[int, dict[str, Any]] = (-1, {})
        # the keeper's health state (its health thread alone touches these)
        self.tracks: dict[Node, Track] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.rounds = 0
        self._checks: Checks | None = None  # the health checks, once there is a peer
        self._local_ips: set[str] | None = None
        # listed nodes without an ip whose name the health thread resolved to this daemon
        # (`is_self`), as ``host|ip|port`` text; swapped whole
        self._named_self: frozenset[str] = frozenset()
        self._self_lookups: dict[Node, tuple[float, bool]] = {}  # node -> (when, is self)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- reading the shared document (every process) ----

    def _read(self) -> tuple[int, Membership, bytes]:
        seen = self._seen
        if self.docs.newest() == seen[0]:
            return seen
        key, raw = self.docs.read()
        m = decode(raw)
        seen = (key, m, m.config.data() if m.loaded else b"")
        self._seen = seen
        return seen

    def membership(self) -> Membership:
        self._ensure_loaded()
        return self._read()[1]

    def current(self) -> ClusterConfig:
        return self.membership().config

    @property
    def config(self) -> ClusterConfig:
        return self._read()[1].config

    def data(self) -> bytes:
        """``<version>\\n<node> <node>...\\n``: what both reply forms carry (rule 1)."""
        data = self._read()[2]
        if not data:
            self._ensure_loaded()
            data = self._read()[2]
        return data

    @property
    def overridden(self) -> bool:
        return self.membership().override is not None

    def _ensure_loaded(self) -> None:
        """The first membership: the keeper's start (or the supervisor's, before it forks),
        or a request that comes before it."""
        if not self._read()[1].loaded:
            self.load("start")

    # ---- writing it (rule 4) ----

    def _commit(self, change: Callable[[Membership], Membership | None], part: str) -> Membership:
        """Write `change(newest)` (None: nothing to change), again on top of a concurrent
        write that lost ours. `part` is "o" (the override) or "k" (the keeper's inputs).
        Writers take turns across the processes (`exclusive`); the checks below are what
        is left when a stopped holder is passed over."""
        with self._lock, self.docs.exclusive():
            key, back, _ = self._read()
            for attempt in range(COMMIT_TRIES):
                if attempt:
                    time.sleep(random.uniform(0, COMMIT_BACKOFF * 2 ** min(attempt, 6)))
                    key, back, _ = self._read()
                prev, based = back, key
                inputs = change(prev)
                if inputs is None:
                    return prev
                if part == "o":
                    inputs = replace(inputs, o_seq=prev.o_seq + 1)
                else:
                    inputs = replace(inputs, k_seq=prev.k_seq + 1)
                m = settle(prev, inputs)
                data = encode(m)
                if len(data) > self.docs.size:
                    raise TooManyNodes(
                        f"{len(m.listed)} nodes take {len(data)} bytes of membership, over"
                        f" the {self.docs.size} it may"
                    )
                mine = self.docs.write(self.writer, data)
                key, back, _ = self._read()
                # Ours counts if the newest holds it (or a later change of the same part) and
                # no document came between the one ours was based on and ours. Two writers
                # of one part at once (config set on two worker processes) both wrote the
                # part's next sequence: the one whose document lost saw only an equal one;
                # the other had replaced its change unknowingly, under the same version.
                # Each goes again on top, a version up: no version stays served with two
                # lists.
                if part == "o":
                    held = back.o_seq > m.o_seq or (
                        back.o_seq == m.o_seq and back.override == m.override
                    )
                else:
                    held = back.k_seq > m.k_seq or (
                        back.k_seq == m.k_seq and _keeper_inputs(back) == _keeper_inputs(m)
                    )
                if held and not self.docs.written_between(based, mine):
                    if pin_passed_over(prev, m):
                        log.warning(
                            "cluster configuration: version %d pinned (%s) is not above %d,"
                            " served already: %s, since a client that has seen a version"
                            " takes no new list under it",
                            m.pin,
                            m.why,
                            prev.version,
                            f"serving {m.version} instead"
                            if m.nodes != prev.nodes
                            else f"{m.version} kept for the same nodes",
                        )
                    if m.config != prev.config:
                        log.info(
                            "cluster configuration %d (%s): %s",
                            m.version,
                            m.why,
                            " ".join(str(n) for n in m.nodes),
                        )
                    return back
            log.warning("cluster membership: %d writes lost to concurrent ones", COMMIT_TRIES)
            return back

    def override(self, version: int | None, nodes: tuple[Node, ...]) -> None:
        """``config set cluster``: serve these nodes (and this version, when pinned) until
        `drop_override`, whatever the source says. Rule 5: the nodes are served as given,
        never resolved here."""
        self._ensure_loaded()
        self._commit(lambda p: replace(p, override=(version, nodes), why="config set"), "o")

    def drop_override(self) -> bool:
        """``config delete cluster``: serve the source (or this node) again; False when no
        override was in force."""
        self._ensure_loaded()
        dropped = False

        def change(p: Membership) -> Membership | None:
            nonlocal dropped
            if p.override is None:
                return None
            dropped = True
            return replace(p, override=None, why="config delete")

        self._commit(change, "o")
        return dropped

    def _publish(self, why: str) -> Membership:
        """The keeper's inputs into the document, if it does not hold them already."""

        def change(p: Membership) -> Membership | None:
            mine = (self._source, self._source_version, self._self_node, self._hidden)
            if p.loaded and _keeper_inputs(p) == mine:
                return None
            return replace(
                p,
                source=self._source,
                source_pin=self._source_version,
                self_node=self._self_node,
                hidden=self._hidden,
                why=why,
            )

        return self._commit(change, "k")

    # ---- sources (the keeper) ----

    def load(self, why: str = "start") -> None:
        """Read this node's name and the source, and publish them: the keeper at its start,
        the supervisor before it forks the workers."""
        with self._refresh_lock:
            self_node = own_node(self.settings, self.local_port(), self.resolve)
            source, version = self._collect(initial=not self._inputs)
            if not self._inputs:
                self._hidden = self._read()[1].hidden  # resume what the last keeper hid
            old = self._source, self._source_version
            self._self_node, self._source, self._source_version = self_node, source, version
            self._inputs = True
            self._publish_or_keep(why, old)

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
        if not self._inputs:
            self.load(why)
            return
        with self._refresh_lock:
            old = self._source, self._source_version
            if self.file is not None or self.dns is not None:
                self._source, self._source_version = self._collect()
            self._publish_or_keep(why, old)

    def _publish_or_keep(self, why: str, old: tuple[tuple[Node, ...] | None, int | None]) -> None:
        """`_publish`; a source too large to serve is logged and `old` kept instead."""
        try:
            self._publish(why)
        except TooManyNodes as exc:
            log.error(
                "cluster membership: %s; %s",
                exc,
                "keeping the previous membership" if old[0] else "listing this node only",
            )
            self._source, self._source_version = old
            self._publish(why)

    def reload(self) -> None:
        """SIGHUP: re-read the cluster file (or re-resolve the DNS name) at once. Only the
        keeper reads sources; a worker process has nothing to re-read."""
        if not self.keeper:
            return
        if self.file is not None:
            self.file.forget()  # re-read even if stat() looks the same
        self.refresh("SIGHUP")

    # ---- the keeper's threads (a service) ----

    def start(self) -> None:
        """Become the keeper: publish the inputs, follow the source, check health."""
        self.keeper = True
        # resume the last keeper's inputs from the document: a keeper forked to replace a
        # dead one inherits the supervisor's, loaded at the start, before any node was
        # hidden (it would list them again, then hide them again only past the start-up
        # grace of a node never reached: 30 s) and before the source last changed (were
        # the file bad or gone now, or the name not resolving, it would serve the start's
        # list: the last good one is the last keeper's)
        doc = self._read()[1]
        self._hidden = doc.hidden
        if doc.loaded and doc.source is not None:
            self._source, self._source_version = doc.source, doc.source_pin
            if self.file is not None:
                self.file.resume(doc.source, doc.source_pin)
        self.load("start")
        self._stop.clear()
        if self.file is not None or self.dns is not None:
            self._spawn(self._watch, "mcached-discovery")
        if self.health_interval > 0:
            self._spawn(self._health_thread, "mcached-cluster-health")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)
        self._threads = []

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

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

    # ---- health (the keeper's health thread) ----

    def is_self(self, node: Node) -> bool:
        """Whether `node` is this daemon: its own node, or its port on one of its listening
        addresses. A node listed by name alone (``host||port``: ``config set`` data, a name
        in the file that did not resolve) is this daemon when the name is the one it lists
        itself by, or when the health thread resolved it to one of those addresses
        (`_resolve_self`; a name that does not resolve is not this daemon). Only the keeper
        resolves: a worker never waits on a lookup (rule 5) and reads what the keeper found
        from the health document; until then (or with checks off) it knows the name alone."""
        named = self._named_self if self.keeper else self._health_doc().get("self", ())
        return self._is_self(node, named)

    def _is_self(self, node: Node, named: frozenset[str] | list[str]) -> bool:
        me = self._self_node or self._read()[1].self_node
        if node == me:
            return True
        local = self._local_addresses()
        if local is None or node.port != local[0]:
            return False
        if node.ip:
            return node.ip in local[1]
        return (me is not None and node.host == me.host) or str(node) in named

    def _local_addresses(self) -> tuple[int, set[str]] | None:
        """(port, addresses) this daemon listens on; None before it listens."""
        try:
            port = self.local_port()
        except (IndexError, AttributeError):
            return None
        if self._local_ips is None:
            me = self._self_node or self._read()[1].self_node
            ips = {me.ip} if me is not None and me.ip else set()
            for spec in self.settings.listen:
                try:
                    host = parse_listen(spec, port)[0]
                except ValueError:
                    continue
                if host in WILDCARDS:
                    ips |= {"127.0.0.1", "::1"}
                elif is_ip(host):
                    ips.add(host)
            self._local_ips = ips
        return port, self._local_ips

    def _resolve_self(self, listed: tuple[Node, ...]) -> frozenset[str]:
        """The listed nodes without an ip, on this daemon's port, whose name resolves to one
        of its listening addresses. The health thread's, before each round (a lookup may
        take long: no worker waits on it); each name is looked up again every
        ``--cluster-dns-interval`` seconds, as the file's names are, since a name may come
        to point here or elsewhere. Without this, ``localhost:P`` in ``config set`` data
        sent to the node on P was checked by that node as a peer, and voted twice about
        every other member."""
        local = self._local_addresses()
        if local is None:
            return frozenset()
        port, ips = local
        now = time.monotonic()
        lookups = {}
        for node in listed:
            if node.ip or node.port != port:
                continue
            when, mine = self._self_lookups.get(node, (-1.0, False))
            if when < 0 or now - when >= self.settings.cluster_dns_interval:
                when = now
                mine = any(ip in ips for ip in self.resolve(node.host, node.port))
            lookups[node] = (when, mine)
        self._self_lookups = lookups  # (nodes no longer listed are forgotten)
        return frozenset(str(node) for node, (_, mine) in lookups.items() if mine)

    def _health_thread(self) -> None:
        try:
            self._health_main()
        except Exception:
            log.exception("cluster health checks stopped")

    def _health_main(self) -> None:
        interval = self.health_interval
        timeout = min(interval, CHECK_TIMEOUT)
        self._resume_health()
        try:
            while not self._stop.is_set():
                # a round starts an interval after the last one *started*, never sooner: a
                # round that starts late (this process was not scheduled) does not make the
                # next one early, so `rise` passed checks always span (rise - 1) intervals
                started = time.monotonic()
                next_at = started + interval
                try:
                    self.health_round(timeout, started)
                except Exception:
                    log.exception("cluster health round failed")
                left = next_at - time.monotonic()
                if left > 0:
                    self._stop.wait(left)
        finally:
            if self._checks is not None:
                self._checks.close()
                self._checks = None

    def _check(self, members: list[Node], timeout: float) -> dict[Node, Result]:
        if self._checks is None:
            # asyncio's: loaded with the first peer to check (a node alone never loads it)
            from mcached.cluster.prober import Checks

            self._checks = Checks()
        return self._checks.round(members, timeout)

    def _resume_health(self) -> None:
        """A keeper that replaces a dead one goes on with its counters, hidden nodes and
        every node's track as the last one published it: whether it was ever reached (one
        taken for never reached got the start-up grace again, and a peer that died with
        the keeper was hidden 30 s late) and when it was hidden lately (its next return
        needs the doubled rise)."""
        doc = self._health_doc()
        for name in COUNTERS:
            self.counters[name] = int(doc.get("counters", {}).get(name, 0))
        now = time.time()
        for e in doc.get("nodes", []):
            try:
                node = parse_node(e[0])
                state, fails, passes, _, since, error, reached, first, hides = e[1:10]
                t = Track(
                    node,
                    state=str(state),
                    fails=int(fails),
                    passes=int(passes),
                    checks=int(fails) + int(passes),
                    error=str(error),
                    since=float(since),
                    first=float(first),
                    reached=bool(reached),
                    hides=[float(h) for h in hides],
                )
            except (ValueError, TypeError):
                continue  # (a row of an older keeper, or damaged: tracked anew)
            if (t.state == DOWN) != (node in self._hidden):
                continue  # the membership's word is the one served
            self.tracks[node] = t
        for node in self._hidden:
            if node not in self.tracks:
                self.tracks[node] = Track(node, state=DOWN, reached=True, hides=[now])

    def health_round(self, timeout: float, started: float | None = None) -> None:
        """One round: check every listed member but this node, apply the rule, publish.
        `started`: when the round began (time.monotonic(); default now)."""
        m = self._read()[1]
        self._named_self = self._resolve_self(m.listed)
        members = [n for n in m.listed if not self.is_self(n)]
        for node in list(self.tracks):
            if node not in members:
                del self.tracks[node]
        for node in members:
            if node not in self.tracks:
                self.tracks[node] = Track(node)
        started = time.monotonic() if started is None else started
        results = self._check(members, timeout) if members else {}
        now = time.time()
        for node, r in results.items():
            t = self.tracks[node]
            t.record(r.ok, r.latency, r.error, r.view)
            self.counters["checks"] += 1
            if not r.ok:
                self.counters["failed_checks"] += 1
            elif t.passes == 1:
                t.passing_since = started
                if t.state == DOWN:
                    log.warning("cluster health: %s answers again (still hidden)", node)
        events = decide(self._self_node, m.listed, self.tracks, self.rule, now)
        for node in events.hidden:
            self.counters["hides"] += 1
            t = self.tracks[node]
            log.warning(
                "cluster health: %s hidden after %d failed checks (%s)", node, t.fails, t.error
            )
        for node in events.back:
            self.counters["returns"] += 1
            t = self.tracks[node]
            log.warning(
                "cluster health: %s is back after %d passed checks in %.2fs",
                node,
                t.passes,
                started - t.passing_since,
            )
        hidden = frozenset(n for n, t in self.tracks.items() if t.state == DOWN)
        if hidden != self._hidden:
            self._hidden = hidden
            names = ", ".join(str(n) for n in sorted(hidden)) or "none"
            self._publish(f"health: hidden {names}")
        elif events.hidden or events.back or m.hidden != hidden:
            self._publish("health")
        self._write_health(now)
        self.rounds += 1

    def _write_health(self, now: float) -> None:
        doc = {
            "on": self.health_interval > 0,
            "updated": now,
            "nodes": [
                [
                    str(t.node),
                    t.state,
                    t.fails,
                    t.passes,
                    None if t.latency is None else round(t.latency * 1000, 3),
                    t.since,
                    t.error,
                    t.reached,  # (these three for a keeper that takes over: `_resume_health`)
                    t.first,
                    t.hides,
                ]
                for t in self.tracks.values()
            ],
            "counters": self.counters,
            "self": sorted(self._named_self),  # (`is_self`, in the workers)
        }
        self.health_docs.write(self.writer, json.dumps(doc).encode("ascii"))

    def _health_doc(self) -> dict[str, Any]:
        seen = self._health_seen
        if self.health_docs.newest() == seen[0]:
            return seen[1]
        key, raw = self.health_docs.read()
        try:
            doc: dict[str, Any] = json.loads(raw) if raw else {}
        except ValueError:
            doc = {}
        self._health_seen = (key, doc)
        return doc

    # ---- figures (every process) ----

    def health_rows(self) -> list[tuple[str, object]]:
        """``stats cluster``: the membership and every listed node's health as this node sees
        it: ``node:<host|ip|port> <state> <failed in a row> <passed in a row> <latency ms|->
        <seconds in state> [<last error>]`` (``self`` for this node)."""
        m = self.membership()
        doc = self._health_doc()
        on = self.health_interval > 0
        rows: list[tuple[str, object]] = [
            ("health", "on" if on else "off"),
            ("health_interval", f"{self.health_interval:g}"),
            ("health_failures", self.rule.failures),
            ("health_rise", self.rule.rise),
            ("version", m.version),
            ("listed", len(m.listed)),
            ("served", len(m.nodes)),
        ]
        known = {e[0]: e for e in doc.get("nodes", [])}
        now = time.time()
        for node in m.listed:
            name = f"node:{node}"
            if self.is_self(node):
                rows.append((name, SELF))
                continue
            e = known.get(str(node))
            if e is None:
                state = DOWN if node in m.hidden else UNCHECKED
                rows.append((name, f"{state} 0 0 - 0"))
                continue
            _, state, fails, passes, latency, since, error = e[:7]
            lat = "-" if latency is None or fails else f"{latency:.2f}"  # of a passed check
            value = f"{state} {fails} {passes} {lat} {max(0, int(now - since))}"
            rows.append((name, value + (f" {error}" if error else "")))
        return rows

    def stat_rows(self) -> list[tuple[str, object]]:
        """Rows of ``stats`` (mcached's own names): the served configuration and the health
        checks' counters, summed over the keeper's lifetimes."""
        m = self.membership()
        counters = self._health_doc().get("counters", {})
        return [
            ("cluster_version", m.version),
            ("cluster_nodes", len(m.nodes)),
            ("cluster_nodes_hidden", len(m.listed) - len(m.nodes)),
            ("cluster_health_checks", int(counters.get("checks", 0))),
            ("cluster_health_failed_checks", int(counters.get("failed_checks", 0))),
            ("cluster_health_hides", int(counters.get("hides", 0))),
            ("cluster_health_returns", int(counters.get("returns", 0))),
        ]

    def __repr__(self) -> str:
        src = self.settings.cluster_file or self.settings.cluster_dns or "self"
        return f"<Discovery {src} version {self._read()[1].version}>"
