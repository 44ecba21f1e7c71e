"""pytest fixtures for code that talks to memcached or to an ElastiCache Memcached cluster.

Installed with the package (the ``pytest11`` entry point), so a project that has mcached
installed has these fixtures without a line of configuration:

* ``mcached_server``: an `mcached.embed.EmbeddedServer` on 127.0.0.1 and a free port
  (``.address`` for pymemcache, ``.endpoint`` for Django's ``LOCATION``, ``.stats()``,
  ``.flush()``, ``.kill()``, ``.restart()``).
* ``mcached_cluster``: an `mcached.embed.EmbeddedCluster` of 3 nodes serving one ``config
  get cluster`` list (``.endpoint`` for discovery clients, ``.nodes``, ``.add_node()``,
  ``.remove_node(i)``, ``.kill(i)``).

Scope: one server per test by default. ``--mcached-scope=session`` (or ``mcached_scope =
session`` in the ini file) keeps one for the whole run: it is flushed before each test that
uses it, restarted if a test stopped or killed it or changed a run-time setting (``stats
settings`` no longer what it was at the start: ``cache_memlimit``, ``verbosity``...), and a
cluster a test changed gets its first nodes back (restarted empty, on their ports), its
added nodes stopped and its first membership served again. ``mcached_args`` in the ini file
gives memcached flags for the servers the fixtures start (``mcached_args = -m 16 -c 256``).

``--mcached-address=HOST:PORT`` points the same fixtures at a server that is already running
(a memcached, an mcached, a staging ElastiCache configuration endpoint), as pymemcache's own
test suite does with ``--server``: ``mcached_server`` is that server, flushed before each test
that uses it (point it only at a server you may empty); ``mcached_cluster`` treats it as a
configuration endpoint and lists the nodes it serves. A test that needs to stop, kill or
reconfigure that server is skipped: it is not ours to change.

This module is imported by every pytest run in an environment where mcached is installed;
it imports nothing of the daemon until a fixture is used.
"""

from __future__ import annotations

import shlex
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from mcached.embed import ServerHandle

SCOPES = ("function", "session")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mcached", "mcached fixtures (mcached_server, mcached_cluster)")
    group.addoption(
        "--mcached-address",
        metavar="HOST:PORT",
        default=None,
        help="run the mcached fixtures against this running server (memcached, mcached, or "
        "an ElastiCache configuration endpoint) instead of starting one in-process; it is "
        "flushed before each test that uses it",
    )
    group.addoption(
        "--mcached-scope",
        choices=SCOPES,
        default=None,
        help="one server per test (function, the default) or per run (session)",
    )
    parser.addini(
        "mcached_scope", "scope of the mcached fixtures: function or session", default="function"
    )
    parser.addini(
        "mcached_args",
        "memcached flags for the servers the mcached fixtures start (e.g. -m 16 -c 256)",
        default="",
    )


def pytest_configure(config: pytest.Config) -> None:
    """A bad scope or address is a usage error before any test runs (raised in a fixture's
    scope callable, pytest wraps it in an INTERNALERROR of its own words)."""
    _scope("", config)
    if _external(config) is not None and (
        config.getoption("numprocesses", None) or hasattr(config, "workerinput")
    ):
        # each xdist worker empties the one server before each of its tests, under the
        # other workers' tests: theirs would fail at random
        raise pytest.UsageError(
            "--mcached-address: one server cannot be shared by pytest-xdist's workers (each "
            "flushes it before its tests); run without -n, or leave the fixtures their own "
            "servers"
        )


def _scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = config.getoption("mcached_scope") or config.getini("mcached_scope") or "function"
    if scope not in SCOPES:
        raise pytest.UsageError(f"mcached_scope: {scope!r} is not one of {', '.join(SCOPES)}")
    return scope


def _args(config: pytest.Config) -> list[str]:
    return shlex.split(str(config.getini("mcached_args")))


def _external(config: pytest.Config) -> tuple[str, int] | None:
    text = config.getoption("mcached_address")
    if not text:
        return None
    from mcached.addr import parse_address

    try:
        return parse_address(str(text))
    except ValueError as exc:
        raise pytest.UsageError(f"--mcached-address: {exc}") from None


def _not_ours(what: str) -> NoReturn:
    pytest.skip(f"{what}: the server given by --mcached-address is not ours to change")


def _external_server(address: tuple[str, int]) -> ServerHandle:
    from mcached.embed import ServerHandle

    class ExternalServer(ServerHandle):
        """A running server the tests may read and flush, never stop."""

        running = True

        def stop(self, graceful: bool = True) -> None:
            _not_ours("stop()")

        def kill(self) -> None:
            _not_ours("kill()")

        def restart(self) -> None:
            _not_ours("restart()")

    try:
        host = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise pytest.UsageError(f"--mcached-address: {address[0]}: {exc}") from None
    return ExternalServer(str(host), address[1])


class ExternalCluster:
    """A running cluster behind a configuration endpoint: read and flushed, never changed."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.endpoint = f"{address[0]}:{address[1]}"

    @property
    def nodes(self) -> list[ServerHandle]:
        from mcached.client.node import NodeClient, NodeError

        try:
            with NodeClient(self.address) as client:
                config = client.config_get()
        except NodeError as exc:
            pytest.skip(f"--mcached-address {self.endpoint} serves no cluster: {exc}")
        return [_external_server(node.address) for node in config.nodes]

    @property
    def version(self) -> int:
        from mcached.client.node import NodeClient

        with NodeClient(self.address) as client:
            return client.config_get().version

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def reset(self) -> None:
        """Before a test: only emptied (its membership is not ours)."""
        self.flush()

    def add_node(self) -> NoReturn:
        _not_ours("add_node()")

    def remove_node(self, i: int = -1) -> NoReturn:
        _not_ours("remove_node()")

    def kill(self, i: int) -> NoReturn:
        _not_ours("kill()")

    def restart(self, i: int) -> NoReturn:
        _not_ours("restart()")


@pytest.fixture(scope=_scope)
def mcached_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A real memcached-compatible server for this test (or this run: ``--mcached-scope``),
    started in-process on a free port; or the one ``--mcached-address`` names."""
    config = request.config
    address = _external(config)
    if address is not None:
        yield _external_server(address)
        return
    from mcached.embed import serve

    with serve(*_args(config)) as embedded:
        _started_with[id(embedded)] = _run_time(embedded)
        yield embedded
        _started_with.pop(id(embedded), None)


@pytest.fixture(scope=_scope)
def mcached_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Three in-process nodes serving one ``config get cluster`` list, for discovery clients
    (``.endpoint``); or the configuration endpoint ``--mcached-address`` names."""
    config = request.config
    address = _external(config)
    if address is not None:
        cluster = ExternalCluster(address)
        cluster.nodes  # noqa: B018  (skips every test that needs it when it serves no cluster)
        yield cluster
        return
    from mcached.embed import serve_cluster

    with serve_cluster(3, *_args(config)) as embedded:
        for node in embedded.nodes:
            _started_with[id(node)] = _run_time(node)
        yield embedded
        for node in embedded.nodes:
            _started_with.pop(id(node), None)


#: ``stats settings`` of each embedded server the fixtures started, as it started (by id)
_started_with: dict[int, dict[str, object]] = {}


def _run_time(server: Any) -> dict[str, object]:
    """Its ``stats settings``, but for ``oldest`` (the age of its oldest item)."""
    settings = server.stats("settings")
    settings.pop("oldest", None)
    return dict(settings)


def _as_started(server: Any) -> None:
    """Restarted (empty, on its port) when it stopped, or when a test changed a run-time
    setting: the next test would otherwise run under it (a ``cache_memlimit 8``, TRACE
    logging for the rest of the run)."""
    start = _started_with.get(id(server))
    if not server.running:
        server.restart()
    elif start is not None and _run_time(server) != start:
        server.stop()
        server.restart()


@pytest.fixture(autouse=True)
def _mcached_fresh(request: pytest.FixtureRequest) -> None:
    """Before a test that uses a shared (session, or external) server or cluster: empty it,
    and undo what an earlier test did to it. Costs a name lookup for every other test."""
    names = request.fixturenames
    if "mcached_server" not in names and "mcached_cluster" not in names:
        return
    shared = _scope("", request.config) == "session" or _external(request.config) is not None
    if not shared:
        return
    if "mcached_server" in names:
        server = request.getfixturevalue("mcached_server")
        _as_started(server)
        server.flush()
    if "mcached_cluster" in names:
        cluster = request.getfixturevalue("mcached_cluster")
        cluster.reset()
        for node in getattr(cluster, "running", ()):  # (an external one's are not ours)
            if id(node) in _started_with:
                _as_started(node)
