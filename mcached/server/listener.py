"""The server: the listening sockets, the board, and the workers that serve them.

`Server` binds the TCP (and UDP) sockets and holds what every worker shares: the dispatch
table, the parser factory, the TLS context, and the board (`mcached.server.board`). Workers
accept for themselves (`mcached.server.workers`). In one process the workers are threads
(`start`); the supervisor forks worker processes instead, and each builds its one worker with
`make_worker` (`mcached.server.supervisor`). Either way a worker finds the server's hooks
here: the daemon's answers to what the server cannot decide (a stop, run-time settings).

With ``-Z`` every TCP listener speaks TLS except those bound from a ``notls:<addr>:<port>``
spec; a worker wraps their accepted sockets (no I/O: the handshake runs on the worker).

UDP (``-U``): the sockets are bound here and served by the workers (`mcached.server.udp`).

A unix domain socket (``-s PATH``, memcached's) replaces the TCP and UDP listeners, as in
memcached ("disables network support"). It is bound after the daemon detached and gave up
root (`bind` with ``unix=True``), so the file belongs to the ``-u`` user, with the
permissions of ``-a`` (set on the file after the bind, before the listen). A socket file left
by an earlier run is removed first; a file that is not a socket is not. ``SO_REUSEPORT``
does not spread connections over copies of a unix socket, so there is one socket, which
every worker (thread or process) watches with ``EPOLLEXCLUSIVE``, as the sockets systemd
passes. The file is removed when the daemon stops, if it is still the one bound.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, Protocol

from mcached.addr import ListenSpec, parse_listen, split_listen
from mcached.errors import BindError
from mcached.latency import Latency, split
from mcached.protocol.binary_parser import AnyParser
from mcached.server.board import (
    CONNS,
    RUNNING,
    W_ACCEPTING,
    W_PID,
    W_STATE,
    Board,
)
from mcached.server.eventlog import EventLog
from mcached.server.supervisor import CRASH_LIMIT, CRASH_WINDOW
from mcached.server.tls import TLS
from mcached.server.udp import UdpServer
from mcached.server.workers import Worker, sock_name
from mcached.settings import Settings, threads_per_udp
from mcached.stats import Counters

log = logging.getLogger("mcached.server")

#: seconds a daemon waits for another one's binds on the same port (`port_gate`); a bind
#: takes microseconds, so only a daemon stopped in the middle of one holds the gate longer
GATE_WAIT = 2.0
#: what a negative -b asks of listen(): Linux reads memcached's negative backlog as a huge
#: unsigned one and caps it at net.core.somaxconn; Python's listen() makes it 0
_BACKLOG_MAX = 0x7FFFFFFF
ASKERS = 1  # board slots for processes that gather figures without serving (the metrics)


def kernel_backlog(backlog: int) -> int:
    """-b as memcached's listen() passes it: negative means the kernel's largest."""
    return backlog if backlog >= 0 else _BACKLOG_MAX


def bind_sockets(
    listen: tuple[str, ...],
    port: int,
    kind: int,
    backlog: int,
    specs: dict[socket.socket, ListenSpec] | None = None,
    copies: int = 1,
    claims: list[socket.socket] | None = None,
) -> list[list[socket.socket]]:
    """Bind every address of `listen`, `copies` sockets each (with ``SO_REUSEPORT`` when
    more than one: the kernel then spreads new connections, and datagrams, over them, and a
    worker serves its own copy). One list of copies per address; each socket's ``-l`` entry
    (its prefixes: `split_listen`) goes in `specs`, the claims of shared addresses
    (`claim_address`) in `claims`, to be closed with the copies."""
    groups: list[list[socket.socket]] = []
    taken: list[socket.socket] = []

    def close_all() -> None:
        for group in groups:
            for other in group:
                other.close()
        for claim in taken:
            claim.close()

    for spec in listen:
        try:
            read = split_listen(spec)
            host, p = parse_listen(spec, port)
        except ValueError as exc:  # reported as a failure to listen, as a bad host is
            close_all()
            raise OSError(errno.EINVAL, str(exc)) from None
        infos = socket.getaddrinfo(host or None, p, socket.AF_UNSPEC, kind, 0, socket.AI_PASSIVE)
        for family, stype, proto, _, addr in infos:
            group: list[socket.socket] = []
            groups.append(group)
            gate = None
            if copies > 1:
                try:
                    if addr[1] == 0:  # the port the kernel picks, then claimed as any other
                        addr = free_address(family, stype, proto, addr)
                    gate = port_gate(stype, int(addr[1]))
                    taken.append(claim_address(stype, addr))
                    addr = free_address(family, stype, proto, addr)
                except OSError:
                    if gate is not None:
                        gate.close()
                    close_all()
                    raise
            try:
                for _ in range(copies):
                    s = socket.socket(family, stype, proto)
                    group.append(s)
                    try:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        if copies > 1:
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                        if family == socket.AF_INET6:
                            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                        s.bind(addr)
                        if kind == socket.SOCK_STREAM:
                            s.listen(kernel_backlog(backlog))
                        s.setblocking(False)
                    except OSError:
                        close_all()
                        raise
                    addr = s.getsockname()  # port 0 asked for one: the copies take the same
                    if specs is not None:
                        specs[s] = read
            finally:
                if gate is not None:
                    gate.close()  # the copies are bound: a probe of the port now fails
    if claims is not None:
        claims.extend(taken)
    return groups


def claim_address(kind: int, addr: Any) -> socket.socket:
    """A claim on `addr` for one daemon's ``SO_REUSEPORT`` copies: a socket bound to a name
    made of the address in Linux's abstract unix namespace, which one socket at a time may
    hold (OSError ``EADDRINUSE`` otherwise) and which the kernel frees when its holder
    exits. `free_address` alone leaves a window: two daemons that probe the same free
    address before either binds it would both bind their copies, and share its clients
    unknowingly, each serving some connections meant for the other. The claim is taken
    before the probe and held for as long as the copies are bound."""
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    name = f"\0mcached-claim:{proto}:{addr[0]}:{addr[1]}"
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(name)  # EADDRINUSE ("Address already in use"), as the port itself says
    except OSError:
        claim.close()
        raise
    return claim


def port_gate(kind: int, port: int, wait: float = GATE_WAIT) -> socket.socket:
    """The right to probe and bind `port` (of `kind`), held by one daemon at a time, from
    its claim to its last copy bound; waits up to `wait` seconds for another daemon to let
    it go, then OSError ``EADDRINUSE``. `claim_address` keys a claim by the exact address,
    and a wildcard and a specific address share a port: two daemons starting at the same
    moment on ``0.0.0.0`` and ``127.0.0.1`` with the same port would both probe it free,
    then both bind their copies (the kernel lets ``SO_REUSEPORT`` sockets of one user
    overlap so), and the specific one would take the connections made to it. Under the
    gate, the second daemon's probe comes after the first one's copies are bound, and fails
    as it does for a daemon started later. Held for a few binds only (a name in Linux's
    abstract namespace, freed by the kernel when its holder exits), so daemons on the same
    port of different addresses only wait for each other's binds."""
    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
    name = f"\0mcached-bind:{proto}:{port}"
    deadline = time.monotonic() + wait
    while True:
        gate = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            gate.bind(name)
            return gate
        except OSError as exc:
            gate.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise
        time.sleep(0.002)


def free_address(family: int, kind: int, proto: int, addr: Any) -> Any:
    """`addr` (its port chosen, if it asked for port 0) once a socket without
    ``SO_REUSEPORT`` could bind it, or OSError (``EADDRINUSE``) if something holds it.

    Sockets that all set ``SO_REUSEPORT`` (the same user's) share a port: the copies of one
    daemon, but also those of a second daemon started on the port of the first, which would
    quietly take half its connections. A probe that does not set it fails on any socket bound
    there, as a lone socket would; it is closed before the copies bind (a daemon probing at
    the same moment is kept out by `claim_address`). It sets
    ``SO_REUSEADDR``, as memcached's sockets and the copies do: connections left in TIME_WAIT
    do not hold a TCP port, and a UDP port bound with it is shared, as memcached shares it."""
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(addr)
        return probe.getsockname()


def bind_unix(path: str, mask: int, backlog: int) -> socket.socket:
    """A listening unix domain socket at `path`, its file's mode `mask` (memcached's
    ``server_socket_unix``: a socket file left there is replaced). memcached sets the umask
    around the bind; here the file's mode is set after it, before the listen (no client can
    connect until then): the umask is the whole process's, and a program that starts
    servers from several threads (``serve()``) could be left with a server's for good."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        os.chmod(path, mask & 0o777)
        s.listen(kernel_backlog(backlog))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class Hooks(Protocol):
    """What the server asks of whoever runs it (the daemon): decisions that are not its own."""

    def request_shutdown(self, graceful: bool) -> None: ...

    def apply_settings(self) -> None: ...

    def extra_figures(self, kinds: int) -> dict[str, Any]: ...

    def keep_figures(self, kept: dict[str, Any], dead: dict[str, Any]) -> dict[str, Any]: ...

    def worker_tick(self) -> None: ...

    def worker_woken(self) -> None: ...

    def workers_failing(self, reason: str) -> None: ...


class Server:
    """Listening sockets, board and workers. Knows nothing of what commands mean."""

    def __init__(
        self,
        settings: Settings,
        dispatch: Mapping[type, Callable[[Any, Any], None]],
        make_parser: Callable[[str], AnyParser],
        hooks: Hooks,
        tcp_sockets: list[socket.socket] | None = None,
        slots: int | None = None,
    ) -> None:
        self.settings = settings
        self.dispatch = dispatch  # command type -> its handler(command, session)
        self.make_parser = make_parser
        self.hooks = hooks
        # The listening sockets, per address a group: one copy per worker (each serves its
        # own; SO_REUSEPORT spreads connections over them), or one that all share (sockets
        # systemd passes). `tcp` and `udp`: the first of each group.
        self.tcp_groups: list[list[socket.socket]] = [[t] for t in tcp_sockets or []]
        self.udp_groups: list[list[socket.socket]] = []
        # -s: the unix domain socket, one that every worker shares, and its file's identity
        # (device, inode) while bound, so that a stop removes only the file it made
        self.unix: socket.socket | None = None
        self._unix_file: tuple[int, int] | None = None
        self._listening_counted = False  # (`_count_listening`)
        self.started = time.monotonic()  # the listeners' secs_since_last_cmd in stats conns
        # -Z: every TCP listener speaks TLS except those bound from a notls: address
        self.tls = TLS(settings) if settings.ssl_enabled else None
        # each bound socket's -l entry: notls:, and proto[...]: the protocol its connections
        # speak where it is not the daemon's (sockets systemd passes have none)
        self.listen_specs: dict[socket.socket, ListenSpec] = {}
        self.claims: list[socket.socket] = []  # of the addresses the copies share
        self.udp_server = UdpServer(
            dispatch, make_parser, settings.reqs_per_event, hooks.request_shutdown
        )
        # every worker's latency histograms have this layout (the board sums them)
        self.latency_names = Latency(dispatch).names
        self.board = Board(
            slots or settings.threads,
            [f.name for f in fields(Counters)],
            vector=Latency(dispatch).size,
            askers=ASKERS,
            keep=hooks.keep_figures,
        )
        # watch: a log ring per worker (mcached.server.eventlog)
        self.events = EventLog(self.board)
        self.workers: list[Worker] = []
        self._local = threading.local()  # the worker this thread runs, if it runs one
        # worker threads that failed (Worker.run), as the supervisor counts dead processes
        self._failures: deque[float] = deque(maxlen=CRASH_LIMIT)
        self._workers_lock = threading.Lock()  # a failed worker's successor against stop()
        self._stopping = False

    # ---- lifecycle ----

    @property
    def tcp(self) -> list[socket.socket]:
        return [group[0] for group in self.tcp_groups]

    @property
    def udp(self) -> list[socket.socket]:
        return [group[0] for group in self.udp_groups]

    def listening(self, slot: int) -> list[socket.socket]:
        """The sockets worker `slot` accepts on: its copy of each TCP address's, and the
        unix socket (one for all)."""
        out = [group[slot % len(group)] for group in self.tcp_groups]
        if self.unix is not None:
            out.append(self.unix)
        return out

    def datagram_sockets(self, slot: int) -> list[socket.socket]:
        return [group[slot % len(group)] for group in self.udp_groups]

    def bind(self, unix: bool = True) -> None:
        """Bind what is not bound yet: the TCP and UDP sockets, or with ``-s`` (which
        replaces them) the unix socket when `unix` (the daemon binds that one after it
        detached and gave up root: `unix` false before)."""
        s = self.settings
        if s.unix_socket:
            if unix and self.unix is None:
                self.unix = bind_unix(s.unix_socket, s.unix_mask, s.tcp_backlog)
                st = os.stat(s.unix_socket)
                self._unix_file = (st.st_dev, st.st_ino)
            self._count_listening()
            return
        copies = self.board.slots
        if not self.tcp_groups:
            self.tcp_groups = bind_sockets(
                s.listen,
                s.port,
                socket.SOCK_STREAM,
                s.tcp_backlog,
                self.listen_specs,
                copies,
                self.claims,
            )
        if s.udp_port and not self.udp_groups:
            try:
                self.udp_groups = bind_sockets(
                    s.listen,
                    s.udp_port,
                    socket.SOCK_DGRAM,
                    0,
                    self.listen_specs,
                    copies,
                    self.claims,
                )
            except BindError:
                raise
            except OSError as exc:  # named as UDP: the message named the TCP port (-p)
                raise BindError(f"{','.join(s.listen)} UDP port {s.udp_port}", exc) from exc
        for group in self.tcp_groups:
            for t in group:
                t.setblocking(False)
        self._count_listening()

    def _count_listening(self) -> None:
        """Once everything is bound: memcached counts a connection for each listening socket
        in total_connections (`listening_conns`)."""
        if not self._listening_counted and (self.unix is not None or not self.settings.unix_socket):
            self._listening_counted = True
            self.board.add_retired("total_connections", self.listening_conns)

    @property
    def listening_conns(self) -> int:
        """The connections memcached makes for its listening sockets, which its
        curr_connections and total_connections count: one per TCP address and for the unix
        socket, one per worker for each UDP address (memcached's per-thread UDP ones)."""
        udp = len(self.udp_groups) * threads_per_udp(self.settings)
        return len(self.tcp_groups) + (self.unix is not None) + udp

    def start(self) -> None:
        """Thread mode: every worker a thread of this process (a connection handed to
        another worker goes as the socket itself: Board.threads)."""
        self.board.threads()
        self.bind()
        self.workers = [self.make_worker(i) for i in range(self.settings.threads)]
        for w in self.workers:
            w.start()

    def make_worker(self, slot: int) -> Worker:
        """The worker of board slot `slot` (a worker process builds its own with this)."""
        return Worker(self, slot)

    def stop(self, drain: float | None = None, timeout: float = 5.0) -> None:
        """Stop the workers (threads) in reverse start order. With `drain` seconds, they
        first answer the requests already received (graceful stop)."""
        with self._workers_lock:
            self._stopping = True  # a worker that fails from now on gets no successor
            workers = list(self.workers)
        self.close_sockets()  # new connections are refused from now on
        deadline = time.monotonic() + drain if drain else None
        for w in reversed(workers):
            w.stop(deadline)
        for w in reversed(workers):
            if threading.current_thread() is not w.thread:
                w.join((drain or 0) + timeout)

    def close_sockets(self) -> None:
        unix = [[self.unix]] if self.unix is not None else []
        for group in (*self.tcp_groups, *self.udp_groups, *unix, self.claims):
            for sock in group:
                try:
                    sock.close()
                except OSError:
                    pass

    def remove_unix_file(self) -> None:
        """The daemon stopped: remove the unix socket's file, if it is still the one bound
        (not one a newer daemon made meanwhile)."""
        path, made = self.settings.unix_socket, self._unix_file
        if not path or made is None:
            return
        self._unix_file = None
        try:
            st = os.lstat(path)
            if (st.st_dev, st.st_ino) == made:
                os.unlink(path)
        except OSError:
            pass  # gone already, or a directory we may no longer write to (after -u)

    @property
    def ports(self) -> list[int]:
        return [int(t.getsockname()[1]) for t in self.tcp]

    @property
    def udp_ports(self) -> list[int]:
        return [int(u.getsockname()[1]) for u in self.udp]

    # ---- from workers ----

    def worker_started(self, worker: Worker) -> None:
        self._local.worker = worker

    def worker_tick(self, worker: Worker) -> None:
        self.hooks.worker_tick()

    def worker_woken(self, worker: Worker) -> None:
        self.hooks.worker_woken()

    def worker_failed(self, worker: Worker) -> None:
        """Thread mode, from the thread of a worker that failed (it closed its connections
        and published its figures): another worker thread takes its slot, as the
        supervisor replaces a worker process that died; the listening sockets never
        closed. `CRASH_LIMIT` failures within `CRASH_WINDOW` seconds stop the daemon
        instead (a bug that every worker meets would otherwise be met for ever)."""
        now = time.monotonic()
        with self._workers_lock:
            if self._stopping:
                return
            self._failures.append(now)
            if len(self._failures) == CRASH_LIMIT and now - self._failures[0] < CRASH_WINDOW:
                self._stopping = True
                limit = True
            else:
                limit = False
                self.board.retire(worker.slot)  # its figures stay in the totals
                successor = self.make_worker(worker.slot)
                self.workers[self.workers.index(worker)] = successor
                successor.start()
        if limit:
            self.hooks.workers_failing(
                f"{CRASH_LIMIT} worker threads failed within {CRASH_WINDOW:.0f}s"
            )

    def apply_settings(self, worker: Worker) -> None:
        self.hooks.apply_settings()

    def extra_figures(self, kinds: int) -> dict[str, Any]:
        return self.hooks.extra_figures(kinds)

    def idle_kicked(self, worker: Worker) -> None:
        self.board.add_figure(worker.slot, "idle_kicks")

    def read_buf_oom(self, worker: Worker) -> None:
        self.board.add_figure(worker.slot, "read_buf_oom")

    def request_shutdown(self, graceful: bool) -> None:
        self.hooks.request_shutdown(graceful)

    def current(self) -> Worker | None:
        """The worker whose thread calls (a handler serving a request), if any."""
        return getattr(self._local, "worker", None)

    # ---- figures ----

    @property
    def curr_connections(self) -> int:
        """Open client connections."""
        return self.board.connections()

    @property
    def reported_connections(self) -> int:
        """``curr_connections`` as memcached reports it: its count of connections, the
        listening sockets' among them (`listening_conns`), less one."""
        return self.board.connections() + self.listening_conns - 1

    @property
    def accepting(self) -> bool:
        board = self.board

        return all(
            board.word(s, W_ACCEPTING) for s in board.live() if board.word(s, W_STATE) == RUNNING
        )

    def gather(self, kinds: int) -> None:
        """Every worker's figures of `kinds` published on the board, for the caller's use."""
        worker = self.current()
        if worker is not None:
            worker.gather(kinds)

    def latency_totals(self) -> dict[str, list[int]]:
        """Every worker's latency histograms, summed per verb (after a `gather` of COUNTERS)."""
        return split(self.latency_names, self.board.vector_totals())

    def totals(self) -> tuple[Counters, dict[str, int]]:
        """Every worker's `Counters`, summed (after a `gather`), and the server figures."""
        totals = self.board.totals()
        counters = Counters()
        for f in fields(Counters):
            setattr(counters, f.name, totals.pop(f.name))
        return counters, totals

    def _per_process(self, key: str) -> dict[int, Any]:
        """One published blob entry per process (threads of one process publish the same)."""
        board = self.board
        out: dict[int, Any] = {}
        for slot in board.live():
            entry = board.blob(slot).get(key)
            if entry is not None:
                out[board.word(slot, W_PID)] = entry
        return out

    def blob_entries(self, key: str) -> list[Any]:
        """Every worker's published `key` entry (after a `gather`)."""
        board = self.board
        entries = []
        for slot in board.live():
            entry = board.blob(slot).get(key)
            if entry is not None:
                entries.append(entry)
        return entries

    def per_process(self, key: str) -> list[Any]:
        return list(self._per_process(key).values())

    def kept(self, key: str) -> Any:
        """The `key` entry of what dead workers' blobs left in the totals (`Board.retire`
        with the owner's `keep_figures`), or None."""
        return self.board.kept().get(key)

    def conns_stats(self, asking: object = None) -> list[tuple[str, object]]:
        """``stats conns`` as memcached prints it: the listening sockets, the UDP sockets
        (one per worker, as memcached's per-thread UDP connections), then every worker's
        connections, oldest first (memcached lists them by descriptor, which is their age
        while none closes: its watcher_connid.t takes the last one for the newest); each
        keyed by its number (`Board.conn_number`: the listeners and the shared unix socket
        as worker 0's, a worker's UDP copy as its own); `asking` (the connection that
        asked) is in ``conn_parse_cmd``."""
        worker = self.current()
        if worker is not None:
            worker.asking = asking
        try:
            self.gather(CONNS)
        finally:
            if worker is not None:
                worker.asking = None
        out: list[tuple[str, object]] = []
        now = time.monotonic()
        since_start = int(now - self.started)
        listeners = [(t, False, 0) for t in self.tcp]
        if self.unix is not None:
            listeners.append((self.unix, False, 0))
        per = threads_per_udp(self.settings)  # the UDP connections memcached would have
        listeners += [(u, True, i) for group in self.udp_groups for i, u in enumerate(group[:per])]
        for sock, udp, slot in listeners:
            try:
                fd = sock.fileno()
                addr = sock_name(sock)
            except OSError:
                continue
            if fd < 0:
                continue
            fd = self.board.conn_number(slot, fd)
            if udp:
                out.append((f"{fd}:UDP", "UDP"))
            out.append((f"{fd}:addr", addr))
            out.append((f"{fd}:state", "conn_read" if udp else "conn_listening"))
            out.append((f"{fd}:secs_since_last_cmd", since_start))
        rows = [row for entry in self.blob_entries("conns") for row in entry]
        rows.sort(key=lambda row: (row[5], row[0]))  # by age
        for fd, peer, listen_addr, state, last_cmd, _ in rows:
            out.append((f"{fd}:addr", peer))
            out.append((f"{fd}:listen_addr", listen_addr))
            out.append((f"{fd}:state", state))
            out.append((f"{fd}:secs_since_last_cmd", int(now - last_cmd)))
        return out

    def reset_figures(self, during: Callable[[], None]) -> None:
        """``stats reset``: every worker's figures read 0 from now on; `during` runs while
        no worker serves a request (`Worker.reset_figures`), to zero what else is counted."""
        worker = self.current()
        if worker is not None:
            worker.reset_figures(during)
        else:  # not from a worker's thread: nobody to hold
            self.board.reset()
            during()
