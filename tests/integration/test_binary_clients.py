"""The binary protocol's Python clients, their whole API, against mcached and memcached.

python-binary-memcached (``bmemcached``, pure Python, SASL PLAIN) and pylibmc
(``binary=True``: libmemcached, whose SASL goes through Cyrus SASL's client) run the same
script against both servers, with and without credentials; the results must be identical.
A wrong password is refused by both. mcached runs as its command does (worker processes),
and once with its workers as threads of the test's process (bmemcached only: libmemcached
keeps the GIL in some calls).

pylibmc's wheel bundles its own Cyrus SASL library, which looks for its mechanism plugins
where the wheel was built; `SASL_PATH` points it at the system's (Debian's libsasl2-modules),
before pylibmc is imported.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration.test_wire_binary import (
    SASL_PASSWORD,
    SASL_USER,
    _stop,
    sasl_files,  # noqa: F401 (a fixture)
    start_sasl,
)

_plugins = sorted(
    glob.glob("/usr/lib/*/sasl2/libplain.so*") + glob.glob("/usr/lib*/sasl2/libplain.so*")
)
if _plugins and "SASL_PATH" not in os.environ:
    os.environ["SASL_PATH"] = os.path.dirname(_plugins[0])

bmemcached = pytest.importorskip("bmemcached")
pylibmc = pytest.importorskip("pylibmc")

pytestmark = pytest.mark.integration

USER = SASL_USER.decode()
PASSWORD = SASL_PASSWORD.decode()


def bmemcached_script(
    srv: Server, user: str | None = None, password: str | None = None
) -> list[Any]:
    c = bmemcached.Client([f"{srv.host}:{srv.port}"], user, password, socket_timeout=2)
    out: list[Any] = []
    try:
        out.append(c.set("bm:a", "1"))
        out.append(c.get("bm:a"))
        out.append(c.get("bm:missing"))
        out.append(c.add("bm:a", "2"))
        out.append(c.add("bm:b", {"x": [1, 2]}))  # pickled, flags say so
        out.append(c.get("bm:b"))
        out.append(c.replace("bm:b", 3.5))
        out.append(c.get("bm:b"))
        out.append(c.replace("bm:nope", 1))
        out.append(c.set("bm:n", 5))
        out.append(c.incr("bm:n", 10))
        out.append(c.decr("bm:n", 100))
        out.append(c.set_multi({"bm:x": b"bytes", "bm:y": "text", "bm:z": 42}))
        out.append(sorted(c.get_multi(["bm:x", "bm:y", "bm:z", "bm:none"]).items()))
        value, cas = c.gets("bm:x")
        out.append(value)
        out.append(c.cas("bm:x", b"new", cas))
        out.append(c.cas("bm:x", b"newer", cas))
        out.append(c.get("bm:x"))
        out.append(c.delete("bm:a"))
        out.append(c.delete("bm:a"))
        out.append(c.delete_multi(["bm:x", "bm:y"]))
        out.append(c.get_multi(["bm:x", "bm:y"]))
        out.append(c.set("bm:big", "v" * 100_000))
        out.append(len(c.get("bm:big")))
        stats = c.stats()[f"{srv.host}:{srv.port}"]
        out.append(stats["version"])
        out.append(c.flush_all())
        out.append(c.get("bm:z"))
    finally:
        c.disconnect_all()
    return out


def pylibmc_script(
    srv: Server, user: str | None = None, password: str | None = None, binary: bool = True
) -> list[Any]:
    """pylibmc's whole API, in binary mode (SASL with `user`) or in its default text mode
    (``test_text_clients``)."""
    kw: dict[str, Any] = {"binary": binary, "behaviors": {"cas": True, "connect_timeout": 2000}}
    if user is not None:
        kw.update(username=user, password=password)
    c = pylibmc.Client([f"{srv.host}:{srv.port}"], **kw)
    cas: list[int] = []
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("set", lambda: c.set("pl:a", "1")),
        ("get", lambda: c.get("pl:a")),
        ("get missing", lambda: c.get("pl:missing")),
        ("add existing", lambda: c.add("pl:a", "2")),
        ("add", lambda: c.add("pl:b", [1, 2, 3])),
        ("get pickled", lambda: c.get("pl:b")),
        ("replace", lambda: c.replace("pl:b", "three")),
        ("replace missing", lambda: c.replace("pl:nope", 1)),
        ("set number", lambda: c.set("pl:n", 5)),
        ("incr", lambda: c.incr("pl:n", 3)),
        ("decr below 0", lambda: c.decr("pl:n", 100)),
        ("incr_multi", lambda: c.incr_multi(["pl:n"], delta=2)),
        ("get number", lambda: c.get("pl:n")),
        ("set bytes", lambda: c.set("pl:s", b"mid")),
        ("append", lambda: c.append("pl:s", b"-end")),
        ("prepend", lambda: c.prepend("pl:s", b"start-")),
        ("get appended", lambda: c.get("pl:s")),
        ("append missing", lambda: c.append("pl:nope", b"x")),
        ("set_multi", lambda: c.set_multi({"pl:x": 1, "pl:y": b"2", "pl:z": "3"}, time=100)),
        ("get_multi", lambda: sorted(c.get_multi(["pl:x", "pl:y", "pl:z", "pl:none"]).items())),
        ("add_multi", lambda: c.add_multi({"pl:x": 9, "pl:w": 8})),
        ("gets", lambda: cas.append(c.gets("pl:x")[1]) or c.gets("pl:x")[0]),
        ("cas", lambda: c.cas("pl:x", 10, cas[0])),
        ("cas stale", lambda: c.cas("pl:x", 11, cas[0])),
        ("get after cas", lambda: c.get("pl:x")),
        # (a touch of an existing key in binary mode: libmemcached 1.1.4 waits 5 s for more of
        # the answer, against memcached as against mcached; bmemcached has no touch)
        *([] if binary else [("touch", lambda: c.touch("pl:a", 100))]),
        ("touch missing", lambda: c.touch("pl:none", 100)),
        ("delete", lambda: c.delete("pl:a")),
        ("delete again", lambda: c.delete("pl:a")),
        ("delete_multi", lambda: c.delete_multi(["pl:x", "pl:y", "pl:none"])),
        ("set big", lambda: c.set("pl:big", "v" * 500_000)),
        ("get big", lambda: len(c.get("pl:big"))),
        ("stats", lambda: [st["version"] for _, st in c.get_stats()]),
        ("stats settings", lambda: len(c.get_stats("settings"))),
        ("incr missing", lambda: c.incr("pl:none", 1)),
        ("flush_all", lambda: c.flush_all()),
        ("get flushed", lambda: c.get("pl:z")),
        # libmemcached marks the server failed after this one (against memcached too)
        ("incr non-numeric", lambda: c.set("pl:t", "abc") and c.incr("pl:t", 1)),
    ]
    out: list[Any] = []
    for name, step in steps:
        try:
            out.append((name, step()))
        except pylibmc.Error as exc:
            out.append((name, type(exc).__name__))
    c.disconnect_all()
    return out


SCRIPTS: dict[str, Callable[..., list[Any]]] = {
    "bmemcached": bmemcached_script,
    "pylibmc": pylibmc_script,
}


@pytest.fixture(scope="module")
def plain_servers() -> Iterator[dict[str, Server]]:
    """mcached as its command runs it (worker processes): libmemcached keeps Python's GIL
    in some calls (add_multi, SASL authentication), so a daemon in the test's own process
    could not answer them."""
    from tests.conftest import _start_mcached_procs, _stop_mcached_procs
    from tests.integration.test_wire_binary import _start

    ours = _start_mcached_procs(["-t", "2"])
    servers = {"mcached": ours, "memcached": _start("memcached")}
    yield servers
    _stop_mcached_procs(ours)
    _stop(servers["memcached"])


@pytest.fixture(scope="module")
def sasl_servers(sasl_files: Path) -> Iterator[dict[str, Server]]:  # noqa: F811
    """mcached over worker processes, as `plain_servers`."""
    from tests.conftest import _start_mcached_procs, _stop_mcached_procs

    ours = _start_mcached_procs(["-t", "2", "-S", "--sasl-pwdb", str(sasl_files / "pwdb")])
    servers = {"mcached": ours, "memcached": start_sasl("memcached", sasl_files)}
    yield servers
    _stop_mcached_procs(ours)
    _stop(servers["memcached"])


def first_results(out: list[Any]) -> list[Any]:
    return [r[1] if isinstance(r, tuple) else r for r in out[:3]]


@pytest.mark.parametrize("client", list(SCRIPTS))
def test_whole_api_without_sasl(client: str, plain_servers: dict[str, Server]) -> None:
    ours = SCRIPTS[client](plain_servers["mcached"])
    theirs = SCRIPTS[client](plain_servers["memcached"])
    assert ours == theirs
    assert first_results(ours) == [True, "1", None]


@pytest.mark.parametrize("client", list(SCRIPTS))
def test_whole_api_with_sasl(client: str, sasl_servers: dict[str, Server]) -> None:
    ours = SCRIPTS[client](sasl_servers["mcached"], USER, PASSWORD)
    theirs = SCRIPTS[client](sasl_servers["memcached"], USER, PASSWORD)
    assert ours == theirs
    assert first_results(ours) == [True, "1", None]


def test_wrong_password_is_refused(sasl_servers: dict[str, Server]) -> None:
    for srv in sasl_servers.values():
        bm = bmemcached.Client([f"{srv.host}:{srv.port}"], USER, "wrong", socket_timeout=2)
        try:
            with pytest.raises(bmemcached.exceptions.MemcachedException, match="Auth failure"):
                bm.set("bm:refused", "v")
        finally:
            bm.disconnect_all()
        pl = pylibmc.Client([f"{srv.host}:{srv.port}"], binary=True, username=USER, password="x")
        with pytest.raises(pylibmc.Error):
            pl.set("pl:refused", "v")
        anonymous = pylibmc.Client([f"{srv.host}:{srv.port}"], binary=True)
        with pytest.raises(pylibmc.Error):
            anonymous.set("pl:refused", "v")


def test_bmemcached_against_threads(server_factory: Callable[..., Server]) -> None:
    """The pure-Python client against a daemon whose workers are threads of this process."""
    srv = server_factory("mcached")
    assert first_results(bmemcached_script(srv)) == [True, "1", None]
