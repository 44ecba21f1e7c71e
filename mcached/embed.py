"""A real cache inside a Python program: `serve()` one server, `serve_cluster()` several.

What lives here: `serve` and `EmbeddedServer` (one daemon in the calling process), and
`serve_cluster` and `EmbeddedCluster` (N of them serving one ``config get cluster`` list, the
local stand-in for an ElastiCache Memcached cluster); `ServerHandle`, what a handle asks a
server over the wire (``stats``, ``flush_all``), which the pytest plugin also points at an
external server (`mcached.pytest_plugin`).

Rules:

1. Threads, never processes. The ``mcached`` command forks worker processes; a server started
   here runs its workers (and the LRU crawler, the slab automover, the cluster file watcher)
   as threads of the calling process, over the same shared-memory arena and code. Forking a
   process that runs other threads (pytest's, a web server's, a driver's pool) copies their
   locks in whatever state they are in at that instant, and a child that takes one of them
   hangs: `os.fork` warns about it from Python 3.12 on. Under the GIL one worker thread is
   the fastest (more only take turns at it), so that is the default here; a free-threaded
   interpreter gets the command's default (memcached's 4; 1 where there is one CPU).
2. Settings are `mcached.settings.Settings` fields, by keyword, with the command's defaults
   except two: a free port (``port=0``; the handle tells which) and the thread count above.
   memcached flags may come first, as positional strings (``serve("-m", "16", "-c", "64")``);
   keywords override them. Sizes (``memory_limit``, ``item_size_max``, ``slab_chunk_max``)
   are bytes, or text with a ``k``/``m`` suffix (``memory_limit="16m"``). ``tls`` is a
   shorthand: True (``ssl_enabled``), a PEM file holding the chain and the key, or a
   (chain, key) pair. The settings that act on the whole process rather than on a server
   (``daemonize``, ``user``, ``pidfile``, ``log_file``, ``lock_memory``,
   ``enable_coredumps``) are refused: the program owns its process. ``verbose`` sets the
   level of the ``mcached`` logger, which every embedded server of the process shares; its
   records go wherever the program's `logging` sends them.
3. Stopping gives everything back. `EmbeddedServer.stop` joins every thread the server
   started, closes every socket (listening, connections, wake-up pairs, epoll), and unmaps
   the arena and the board at once (`Daemon.close`). What is left of a stopped daemon is
   Python objects in reference cycles, its ~60 POSIX semaphores (a page of shared memory
   each) among them: the garbage collector frees those at its next full pass, as it does
   any cyclic garbage. So a program may start and stop servers without end
   (``tests/test_embed.py`` starts 200 and checks threads, descriptors and RSS).
4. `EmbeddedServer.kill` is a crash, not a stop: the listening sockets close first (new
   connections are refused: ``ECONNREFUSED``), then every open connection is reset (an RST,
   ``SO_LINGER`` 0: the client's next read or write fails with ``ECONNRESET``) without
   another reply, and the cache's content is gone. In a cluster a killed node stays listed,
   as a crashed node stays in ElastiCache's list until it is replaced; `restart` brings it
   back, empty, on the same port.
5. A cluster's membership is a cluster file in a private temporary directory, with a pinned
   version line, so every node serves the same bytes. Each change (`add_node`,
   `remove_node`) writes it whole (``os.replace``), bumps the version by one, and makes
   every running node re-read it before returning, so the next ``config get cluster`` of
   any node answers the new list. A new node is serving before it is listed; a removed
   node is unlisted before it stops.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from mcached.addr import NO_PREFIX, format_address
from mcached.auth import load_auth_file
from mcached.cli import settings_of
from mcached.cluster.config import Node, format_data
from mcached.cluster.discovery import own_node
from mcached.daemon import Daemon, gil_enabled
from mcached.protocol import binary as b
from mcached.sasl import ENV as SASL_PWDB_ENV
from mcached.sasl import parse_pwdb
from mcached.settings import (
    Settings,
    SettingsError,
    default_threads,
    delimiter,
    parse_size,
    validate,
)

__all__ = [
    "EmbeddedCluster",
    "EmbeddedServer",
    "ServerError",
    "ServerHandle",
    "SettingsError",  # what a bad value raises, with memcached's message
    "serve",
    "serve_cluster",
]

#: settings that belong to the process, not to one server (rule 2)
PROCESS_SETTINGS = {
    "daemonize": "an embedded server cannot detach the program",
    "user": "an embedded server cannot change the program's user",
    "pidfile": "the pid file names the program's process, which the program owns",
    "log_file": "configure the 'mcached' logger with the logging module instead",
    "lock_memory": "mlockall would lock all of the program's memory",
    "enable_coredumps": "the core file limit is the program's",
}
SIZE_SETTINGS = ("memory_limit", "item_size_max", "slab_chunk_max")
FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
REQUEST_TIMEOUT = 5.0  # seconds a handle's own request (stats, flush_all) may take
T = TypeVar("T")


class ServerError(Exception):
    """The server answered a handle's request with an error line, or not at all."""


def _embedded_threads() -> int:
    return 1 if gil_enabled() else default_threads()


def _check_type(name: str, value: Any) -> Any:
    kind = FIELDS[name].type
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "str | None": value is None or isinstance(value, str),
    }.get(str(kind), True)
    if not ok:
        raise TypeError(f"{name} wants {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def _keyword(name: str, value: Any, out: dict[str, Any]) -> None:
    """One keyword of `serve` -> Settings fields in `out` (rule 2)."""
    if name == "tls":
        if isinstance(value, bool):
            out["ssl_enabled"] = value
        elif isinstance(value, str | os.PathLike):
            out.update(ssl_enabled=True, ssl_chain_cert=os.fspath(value))
        elif isinstance(value, tuple | list) and len(value) == 2:
            chain, key = value
            out.update(ssl_enabled=True, ssl_chain_cert=os.fspath(chain), ssl_key=os.fspath(key))
        else:
            raise TypeError(f"tls wants True, a PEM file or a (chain, key) pair, got {value!r}")
        return
    if name not in FIELDS:
        close = difflib.get_close_matches(name, [*FIELDS, "tls"], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TypeError(f"unknown mcached setting {name!r}{hint}")
    if name in PROCESS_SETTINGS:
        raise ValueError(f"{name}: {PROCESS_SETTINGS[name]}")
    if name in SIZE_SETTINGS and isinstance(value, str):
        text, value = value, parse_size(value, name)
        if name == "memory_limit" and 0 < value < 1 << 20:  # "64": bytes, as an int's
            raise ValueError(
                f"memory_limit is in bytes: {text!r} is under a megabyte "
                f"(memory_limit='{text}m' means {text} MB)"
            )
    elif name == "memory_limit" and isinstance(value, int) and 0 < value < 1 << 20:
        raise ValueError(
            f"memory_limit is in bytes: {value} is under a megabyte "
            f"(memory_limit='{value}m' means {value} MB)"
        )
    elif name == "listen":
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[1], int | str)
            and str(value[1]).isdigit()
        ):
            # (host, port), the shape `address` has; a port as text too: ("127.0.0.1",
            # "0") was two addresses, the second "0" (every interface)
            value = format_address((value[0], int(value[1])))
        if not isinstance(value, str | tuple | list):
            raise TypeError(
                f"listen wants 'host:port' text, a (host, port) pair or a list of "
                f"'host:port', got {value!r}"
            )
        value = (value,) if isinstance(value, str) else tuple(value)
        for spec in value:
            if not isinstance(spec, str):
                raise TypeError(
                    f"listen wants 'host:port' text, a (host, port) pair or a list of "
                    f"'host:port', got {spec!r}"
                )
    elif name in ("ssl_chain_cert", "ssl_key", "ssl_ca_cert", "auth_file", "cluster_file"):
        value = None if value is None else os.fspath(value)  # (None: the TLS files unset)
    elif name == "stat_key_prefix" and isinstance(value, str):
        if len(value) > 1:  # -D takes the first character: a keyword says what it means
            raise ValueError(f"stat_key_prefix is one character, got {value!r}")
        value = delimiter(value, name)  # "": memcached's "No delimiter specified"
    out[name] = _check_type(name, value)


def make_settings(flags: Sequence[str] = (), **keywords: Any) -> Settings:
    """memcached `flags`, then `keywords`, over the embedded defaults (rule 2); validated
    with memcached's messages (`SettingsError`)."""
    settings = settings_of(["-p", "0", "-t", str(_embedded_threads()), *flags])
    for name in PROCESS_SETTINGS:
        if getattr(settings, name) != FIELDS[name].default:
            raise ValueError(f"{name}: {PROCESS_SETTINGS[name]}")
    changes: dict[str, Any] = {}
    for name, value in keywords.items():
        _keyword(name, value, changes)
    if "stat_key_prefix" in changes and "detail_enabled" not in changes:
        changes["detail_enabled"] = True  # as -D does
    settings = settings.replace(**changes)
    validate(settings)
    return settings


def _value(text: str) -> int | float | str:
    """A stat's text as a number when it is one (``curr_items`` 3, ``rusage_user`` 0.01)."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return text


class ServerHandle:
    """A server, seen as its clients see it: where it is, and two requests a test needs
    (``stats``, ``flush_all``), each over a connection of its own: text, or with `binary`
    the binary protocol (a server that speaks only that: ``-B binary``, ``-S``)."""

    #: the unix domain socket's path of a server listening on one (``-s``), else None
    path: str | None = None
    binary = False

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @property
    def address(self) -> Any:
        """(host, port), what pymemcache's ``Client`` takes (on a unix socket: its path,
        which it takes too)."""
        return self.path if self.path is not None else (self.host, self.port)

    @property
    def endpoint(self) -> str:
        """``host:port`` (``[v6]:port``): Django's ``LOCATION``, and the configuration
        endpoint of a discovery client (a lone node lists itself); a unix socket's path."""
        return format_address(self.address)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.endpoint}>"

    # ---- requests (overridden for TLS and -Y by the embedded server) ----

    def _connect(self) -> socket.socket:
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(REQUEST_TIMEOUT)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(self.address, timeout=REQUEST_TIMEOUT)

    def _login(self, sock: socket.socket) -> None:
        """Before the request: nothing here (the embedded server logs in under ``-Y``,
        ``-S``)."""

    def _request(self, data: bytes, read: Callable[[socket.socket], T]) -> T:
        """Send `data`; the reply as `read` reads it."""
        try:
            with self._connect() as sock:
                self._login(sock)
                sock.sendall(data)
                return read(sock)
        except OSError as exc:
            raise ServerError(f"{self.endpoint}: {exc}") from exc

    def stats(self, sub: str = "") -> dict[str, int | float | str]:
        """``stats`` (or ``stats <sub>``: ``settings``, ``items``, ``slabs``...) as a dict;
        numbers as numbers (``reset``, ``detail on|off``: an empty dict)."""
        out: dict[str, int | float | str] = {}
        if self.binary:
            frames = self._request(b.request(b.STAT, sub.encode("ascii")), _read_stat_frames)
            for name, value in frames:
                out[name.decode("ascii", "replace")] = _value(value.decode("ascii", "replace"))
            return out
        # what ends the reply: END, but for the two that answer otherwise
        ends = (b"END\r\n",)
        if sub.strip() == "reset":
            ends = (b"RESET\r\n",)
        elif sub.split()[:1] == ["detail"] and sub.split()[1:2] != ["dump"]:
            ends = (b"OK\r\n",)
        request = b"stats " + sub.encode("ascii") if sub else b"stats"
        reply = self._request(request + b"\r\n", lambda sock: _read_reply(sock, ends))
        for line in reply.split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                out[parts[1].decode("ascii", "replace")] = _value(
                    parts[2].decode("ascii", "replace")
                )
        return out

    def flush(self) -> None:
        """``flush_all``: every item is gone."""
        if self.binary:
            self._request(b.request(b.FLUSH), _read_frame)
        else:
            self._request(b"flush_all\r\n", lambda sock: _read_reply(sock, (b"OK\r\n",)))


_ERROR_LINES = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServerError(f"no complete reply within {REQUEST_TIMEOUT}s")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ServerError(f"connection closed by the server after {buf[:200]!r}")
        buf += chunk
    return buf


def _read_frame(sock: socket.socket, deadline: float | None = None) -> tuple[bytes, bytes]:
    """One binary response: (key, value); ServerError for an error status."""
    if deadline is None:
        deadline = time.monotonic() + REQUEST_TIMEOUT
    header = _recv_exactly(sock, b.HEADER_SIZE, deadline)
    _, _, keylen, extlen, _, status, bodylen, _, _ = b.HEADER.unpack(header)
    body = _recv_exactly(sock, bodylen, deadline)
    if status != b.SUCCESS:
        raise ServerError(f"binary status {status:#x}: {body[extlen + keylen :]!r}")
    return body[extlen : extlen + keylen], body[extlen + keylen :]


def _read_stat_frames(sock: socket.socket) -> list[tuple[bytes, bytes]]:
    """A binary stat's responses, up to the one with no key and no value that ends them."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    out: list[tuple[bytes, bytes]] = []
    while True:
        key, value = _read_frame(sock, deadline)
        if not key and not value:
            return out
        out.append((key, value))


def _read_reply(sock: socket.socket, ends: tuple[bytes, ...]) -> bytes:
    buf = b""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while not buf.endswith(ends):
        if buf.startswith(_ERROR_LINES) and buf.endswith(b"\r\n"):
            raise ServerError(buf.strip().decode("ascii", "replace"))
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServerError(f"no complete reply within {REQUEST_TIMEOUT}s: {buf[:200]!r}")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise ServerError(f"connection closed by the server after {buf[:200]!r}")
        buf += chunk
    return buf


class EmbeddedServer(ServerHandle):
    """An mcached daemon running as threads of this process (see the module docstring).

    ``with serve() as server:`` stops it on the way out. `host`, `port`, `address` and
    `endpoint` say where it listens; `daemon` is the running `mcached.daemon.Daemon` (None
    once stopped) for what the handle does not cover.
    """

    def __init__(self, settings: Settings, *, start: bool = True) -> None:
        self._lock = threading.RLock()
        self._daemon: Daemon | None = None
        self.settings = settings
        self.killed = False
        #: with ``ssl_verify_mode`` 2 or 3: the (certificate, key) files `stats` and `flush`
        #: present, a client certificate the server's ``ssl_ca_cert`` accepts
        self.client_cert: tuple[str, str] | None = None
        self._plain = False
        host, port = self._bind(settings)
        super().__init__(host, port)
        if start:
            self._start()

    # ---- lifecycle ----

    def _bind(self, settings: Settings) -> tuple[str, int]:
        """A daemon whose sockets are bound (and listening: connections wait in the
        backlog) but not served yet; where to reach it."""
        daemon = Daemon(settings)
        try:
            daemon.server.bind()
        except BaseException:
            _discard(daemon)
            raise
        self._daemon = daemon
        server = daemon.server
        self.binary = settings.protocol == "binary" or settings.sasl
        if not server.tcp:  # -s: a unix domain socket alone
            self.path = settings.unix_socket
            self._plain = True
            return "", 0
        first = server.tcp[0]
        spec = server.listen_specs.get(first, NO_PREFIX)
        self._plain = spec.plain  # a notls: listener: the handle speaks plain
        if spec.protocol:  # a proto[...] listener: the handle speaks its protocol
            self.binary = spec.protocol == "binary"
        name = first.getsockname()
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(str(name[0]), str(name[0]))
        return host, int(name[1])

    def _start(self) -> None:
        daemon = self._daemon
        assert daemon is not None
        try:
            daemon.start()
        except BaseException:
            self._daemon = None
            _discard(daemon)
            raise
        _live.add(self)
        # with the port it got; and where each listener listens, for `restart` (a listen
        # address of port 0 got one of its own)
        settings = daemon.settings
        specs = daemon.server.listen_specs
        bound = [
            specs.get(sock, NO_PREFIX).at(format_address(sock.getsockname()))
            for sock in daemon.server.tcp
        ]
        self.settings = settings.replace(listen=tuple(dict.fromkeys(bound))) if bound else settings

    @property
    def daemon(self) -> Daemon | None:
        return self._daemon

    @property
    def running(self) -> bool:
        """Serving: started, and neither stopped, killed nor shut down by a client's
        ``shutdown`` (``shutdown_command``)."""
        daemon = self._daemon
        return daemon is not None and not daemon.stopped

    def stop(self, graceful: bool = True) -> None:
        """Stop and give everything back (rule 3). `graceful`: answer the requests already
        received first (within ``shutdown_timeout``); else drop them. Idempotent."""
        with self._lock:
            daemon, self._daemon = self._daemon, None
            if daemon is not None:
                _discard(daemon, graceful)

    def kill(self) -> None:
        """Stop as a crashed server does (rule 4): refuse new connections, reset the open
        ones, lose the content."""
        with self._lock:
            daemon, self._daemon = self._daemon, None
            if daemon is None:
                return
            self.killed = True
            daemon.server.close_sockets()
            for worker in daemon.server.workers:
                for conn in _snapshot(worker.conns):
                    try:
                        conn.sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    except OSError:
                        pass  # closed meanwhile
            _discard(daemon, graceful=False)

    def restart(self) -> None:
        """Start again, empty, on the same port (a crashed node that comes back). Raises
        OSError if another program took the port meanwhile."""
        with self._lock:
            if self.running:
                raise RuntimeError(f"{self} is running: stop() or kill() it first")
            self.stop()  # a server a client's ``shutdown`` stopped: given back first
            self._bind(self.settings.replace(port=self.port))
            self._start()
            self.killed = False

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "killed" if self.killed else "stopped"
        return f"<EmbeddedServer {self.endpoint} {state}>"

    # ---- requests: as a client of this server's own settings ----

    def _connect(self) -> socket.socket:
        if self._daemon is None:
            raise ServerError(f"{self} is not running")
        sock = super()._connect()
        s = self.settings
        if not s.ssl_enabled or self._plain:
            return sock
        # our own server: no need to check who it is; a client certificate when it wants one
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if s.ssl_verify_mode >= 2:
            if self.client_cert is None:
                sock.close()
                raise ServerError(
                    f"{self} requires client certificates (ssl_verify_mode="
                    f"{s.ssl_verify_mode}): set .client_cert = (cert, key) for its own requests"
                )
            ctx.load_cert_chain(*self.client_cert)
        return ctx.wrap_socket(sock)

    def _login(self, sock: socket.socket) -> None:
        if self.settings.sasl:
            self._sasl_login(sock)
        if not self.settings.auth_file:
            return
        entries = load_auth_file(self.settings.auth_file)
        if not entries:
            raise ServerError(f"{self.settings.auth_file} holds no credentials")
        user, password = entries[0]
        data = user + b" " + password
        sock.sendall(b"set _ 0 0 %d\r\n%b\r\n" % (len(data), data))
        _read_reply(sock, (b"STORED\r\n",))

    def _sasl_login(self, sock: socket.socket) -> None:
        """``-S``: PLAIN, as the password file's first user."""
        path = self.settings.sasl_pwdb or os.environ.get(SASL_PWDB_ENV, "")
        try:
            with open(path, "rb") as f:
                users = parse_pwdb(f.read())
        except OSError as exc:
            raise ServerError(f"{self}: SASL without a readable password file: {exc}") from None
        if not users:
            raise ServerError(f"{path} holds no credentials")
        user, password = next(iter(users.items()))
        sock.sendall(b.request(b.SASL_AUTH, b"PLAIN", b"\0" + user + b"\0" + password))
        _read_frame(sock)


def _snapshot(conns: set[Any]) -> list[Any]:
    """A copy of a worker's connections, which its thread may change meanwhile."""
    for _ in range(100):
        try:
            return list(conns)
        except RuntimeError:  # changed size during iteration
            continue
    return []


#: the servers started in this process, for `_after_fork_in_child`
_live: weakref.WeakSet[EmbeddedServer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A child forked from a program that runs embedded servers (``os.fork``,
    multiprocessing's "fork"): no thread of theirs runs here, so the child closes its copies
    of their sockets, which would otherwise keep accepting connections nobody answers once
    the parent's server stopped, and keep open the connections the parent closed. (Only the
    descriptors: the poller the parent shares is not touched.) Their handles say stopped."""
    for server in list(_live):
        daemon, server._daemon = server._daemon, None
        if daemon is None:
            continue
        daemon.server.close_sockets()
        socks = [conn.sock for w in daemon.server.workers for conn in _snapshot(w.conns)]
        if daemon.metrics_sock is not None:
            socks.append(daemon.metrics_sock)
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def _discard(daemon: Daemon, graceful: bool = False) -> None:
    try:
        daemon.stop(graceful)  # (returns at once if a client's ``shutdown`` is stopping it...)
        daemon.wait_stopped(daemon.settings.shutdown_timeout + 10)  # (... which we wait for)
    finally:  # (interrupted, Ctrl-C: the stop was cut short, and ends whole)
        daemon.close()


def serve(*flags: str, **settings: Any) -> EmbeddedServer:
    """Start an mcached server in this process's threads; the handle stops it.

    ``serve()`` listens on 127.0.0.1 and a free port; ``serve(memory_limit="16m",
    threads=2, tls=("chain.pem", "key.pem"))`` takes any setting of the ``mcached`` command
    (the module docstring, rule 2, says how). Raises `SettingsError` with memcached's message
    for a bad value, TypeError for an unknown name, OSError when it cannot listen.
    """
    return EmbeddedServer(make_settings(flags, **settings))


class EmbeddedCluster:
    """N embedded servers that serve one ``config get cluster`` list (module docstring,
    rules 4 and 5). ``with serve_cluster(3) as cluster:`` stops them all on the way out.

    `nodes` are the members, in the order they joined (a killed node stays a member);
    `endpoint` is the first running member's ``host:port``, as ElastiCache's configuration
    endpoint names one live node; `version` is the configuration version served.
    """

    def __init__(self, n: int, settings: Settings) -> None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n is the number of nodes, got {n!r} (flags come after it)")
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self._lock = threading.RLock()
        self._nodes: list[EmbeddedServer] = []
        self._first: list[EmbeddedServer] = []
        self._names: dict[int, Node] = {}  # id(node) -> how it is listed: host|ip|port
        self._dir: str | None = None
        self._dir_pid = 0  # the process that made it, the one to remove it
        self.cluster_file = ""
        self.settings = settings.replace(port=0)
        self._new_dir()
        self.version = 0
        try:
            fresh = [self._new_node() for _ in range(n)]
            self._nodes = list(fresh)
            self._first = list(fresh)
            self._write()
            for node in fresh:
                node._start()
        except BaseException:
            self.stop()
            raise

    def _new_dir(self) -> None:
        """A private directory for the cluster file (`mkdtemp`: made anew, never one that
        happens to be at a path), which the nodes' settings name."""
        self._dir = tempfile.mkdtemp(prefix="mcached-cluster-")
        self._dir_pid = os.getpid()
        self.cluster_file = os.path.join(self._dir, "cluster.conf")
        self.settings = self.settings.replace(cluster_file=self.cluster_file)
        for node in {*self._nodes, *self._first}:
            node.settings = node.settings.replace(cluster_file=self.cluster_file)

    def _new_node(self) -> EmbeddedServer:
        node = EmbeddedServer(self.settings, start=False)
        self._names[id(node)] = own_node(self.settings, node.port)
        return node

    def _write(self) -> None:
        """Rule 5: the whole file, a version up, then every running node re-reads it. Up
        from the highest any node serves: health checks that hid a dead node served a
        version more than the file's, which the next list must not reuse."""
        # the first file: the nodes list themselves alone until they read it (asked now,
        # before the file exists, each would load its membership and log it missing)
        served = []
        if self.version:
            served = [n.daemon.discovery.membership().version for n in self._nodes if n.daemon]
        self.version = max([self.version, *served]) + 1
        names = [self._names[id(node)] for node in self._nodes]
        data = format_data(self.version, names)  # the same text as the endpoint serves
        tmp = self.cluster_file + ".new"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.cluster_file)
        for node in self._nodes:
            daemon = node.daemon
            if daemon is not None:
                daemon.discovery.reload()

    # ---- the members ----

    @property
    def nodes(self) -> list[EmbeddedServer]:
        return list(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[EmbeddedServer]:
        return iter(self.nodes)

    def __getitem__(self, i: int) -> EmbeddedServer:
        return self._nodes[i]

    @property
    def endpoint(self) -> str:
        for node in self._nodes:
            if node.running:
                return node.endpoint
        raise ServerError("no node of the cluster is running")

    @property
    def running(self) -> list[EmbeddedServer]:
        return [node for node in self._nodes if node.running]

    # ---- changes ----

    def add_node(self) -> EmbeddedServer:
        """Scale out: a new node, serving before every node lists it."""
        with self._lock:
            node = self._new_node()
            self._nodes.append(node)
            try:
                node._start()
            except BaseException:
                self._nodes.remove(node)
                raise
            self._write()
            return node

    def remove_node(self, i: int = -1) -> EmbeddedServer:
        """Scale in: `nodes[i]` leaves the list, then stops (gracefully). Returns it."""
        with self._lock:
            if len(self._nodes) == 1:
                raise ValueError("the last node of a cluster cannot leave it: stop() the cluster")
            node = self._nodes.pop(i)
            self._write()
            node.stop()
            return node

    def kill(self, i: int) -> None:
        """`nodes[i]` crashes (rule 4); it stays a member."""
        self._nodes[i].kill()

    def restart(self, i: int) -> None:
        """`nodes[i]` comes back, empty, on its port."""
        self._nodes[i].restart()

    def flush(self) -> None:
        """``flush_all`` on every running node."""
        for node in self.running:
            node.flush()

    def reset(self) -> None:
        """Back to the nodes it started with, empty: the nodes added since stop, those
        removed, stopped or killed run again (restarted empty, on their ports), the first
        membership is served again (a version up, when it changed), every node is flushed."""
        with self._lock:
            if self._dir is None:  # gone with a `stop`
                self._new_dir()
            if self._nodes != self._first or not all(n.running for n in self._first):
                for node in self._nodes:
                    if node not in self._first:
                        node.stop()
                self._nodes = list(self._first)
                self._write()  # before the restarts: a node reads it as it starts
                for node in self._first:
                    if not node.running:
                        node.restart()
            self.flush()

    def stop(self) -> None:
        """Stop every node; the cluster file goes too. Idempotent. In a child forked from
        the program that started the cluster, its nodes' handles already say stopped
        (`_after_fork_in_child`), and the directory, the parent's, stays."""
        with self._lock:
            for node in self._nodes:
                node.stop()
            if self._dir is not None:
                if os.getpid() == self._dir_pid:
                    shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> EmbeddedCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        states = " ".join(repr(n) for n in self._nodes)
        return f"<EmbeddedCluster version {self.version}: {states}>"


def serve_cluster(n: int = 3, *flags: str, **settings: Any) -> EmbeddedCluster:
    """Start `n` embedded servers that serve one cluster list (see `EmbeddedCluster`); every
    node takes the same settings (`serve`'s; ``cluster_file`` and ``port`` are the
    cluster's own)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n is the number of nodes, got {n!r} (flags come after it)")
    for own in ("cluster_file", "cluster_dns", "port"):
        if own in settings:
            raise ValueError(f"{own}: the cluster sets it for each node")
    return EmbeddedCluster(n, make_settings(flags, **settings))
