"""The walls between mcached's rooms: one table says what each module may import, and every
module's imports, walked with `ast`, are checked against it.

`LAYERS` has one row per module under mcached/ (a package's row is its ``__init__``). A row
lists the mcached modules the module may import (``"mcached.protocol.*"``: the package and
every module in it) and the third-party distributions it may use; the standard library is
free. The test fails when a module imports something its row does not list, when a module
has no row, and when a row (or an entry) names a module that does not exist. Imports are
counted wherever they sit: in a function, under ``if TYPE_CHECKING:``, relative or absolute.

Imports point down. From the bottom: the leaf modules (errors, addr, clock, settings, stats,
systemd, process); ``protocol/`` and ``storage/``, which know nothing above them; the cluster's
data format; ``server/`` (sockets and threads, meaning-free: never ``handlers`` or
``storage``) and the served discovery endpoint; ``handlers``; ``daemon``, which wires them;
``cli`` and ``__main__`` on top. ``client/`` is a side tower: clients of running nodes that
share the cluster's format and ``addr``, and never import the daemon's layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent / "mcached"

LEAF: set[str] = set()  # imports nothing from mcached
PROTOCOL = "mcached.protocol.*"

LAYERS: dict[str, set[str]] = {
    # ---- leaves: every layer may import them ----
    # the version constants; serve(), serve_cluster() (embed) and SettingsError, imported on
    # first use
    "mcached": {"mcached.embed", "mcached.settings"},
    "mcached.errors": LEAF,
    "mcached.addr": LEAF,
    "mcached.clock": LEAF,
    "mcached.cnum": LEAF,  # memcached's number readers (atoi, safe_strtoul...), on text
    "mcached.settings": {"mcached.addr", "mcached.cnum"},
    "mcached.stats": LEAF,
    "mcached.latency": LEAF,  # the histograms' buckets and figures, plain ints
    "mcached.watch": LEAF,  # watch's vocabulary and memcached's log lines
    "mcached.systemd": LEAF,
    "mcached.process": LEAF,
    "mcached.auth": {"mcached.settings"},  # raises SettingsError, as a bad flag does
    "mcached.sasl": LEAF,  # -S: the mechanisms and the password file
    # ---- protocol/: bytes in, commands out; outcomes in, reply bytes out; no sockets ----
    "mcached.protocol": LEAF,
    "mcached.protocol.outcomes": LEAF,  # the vocabulary: knows no bytes
    "mcached.protocol.responses": {"mcached.protocol.outcomes"},
    # a command inherits the replies of its syntax
    "mcached.protocol.commands": {"mcached.protocol.outcomes", "mcached.protocol.responses"},
    "mcached.protocol.parser": {
        "mcached.cnum",
        "mcached.errors",
        "mcached.protocol.commands",
        "mcached.protocol.outcomes",
    },
    # the binary protocol: its frames, commands and replies; its framing and -B's choice
    "mcached.protocol.binary": {"mcached.protocol.commands", "mcached.protocol.outcomes"},
    "mcached.protocol.binary_parser": {
        "mcached.errors",
        "mcached.protocol.binary",
        "mcached.protocol.commands",  # Incoming: a large value received into place
        "mcached.protocol.outcomes",
        "mcached.protocol.parser",
    },
    # UDP: how memcached cuts a datagram's replies into messages (a reply's pieces, as lent)
    "mcached.protocol.datagram": {
        "mcached.protocol.binary",
        "mcached.protocol.commands",
        "mcached.protocol.outcomes",
    },
    # ---- storage/: keys and bytes in, result enums out; settings arrive as plain values.
    # The arena owns the shared layout and every module reads it; items owns the allocator's
    # pieces (slabs, lru, assoc); lru walks slab classes; cache is the facade over items and
    # reads the index directly for its hot path and walks.
    "mcached.storage": LEAF,
    "mcached.storage.arena": LEAF,
    "mcached.storage.results": LEAF,
    # the checks of free lists and chains (on in tests) read the layout and the classes
    "mcached.storage.checks": {"mcached.storage.arena", "mcached.storage.slabs"},
    "mcached.storage.slabs": {"mcached.storage.arena", "mcached.storage.checks"},
    "mcached.storage.assoc": {"mcached.storage.arena"},
    "mcached.storage.lru": {"mcached.storage.arena", "mcached.storage.slabs"},
    "mcached.storage.items": {
        "mcached.clock",
        "mcached.storage.arena",
        "mcached.storage.assoc",
        "mcached.storage.checks",
        "mcached.storage.lru",
        "mcached.storage.results",
        "mcached.storage.slabs",
    },
    "mcached.storage.cache": {
        "mcached.clock",
        "mcached.cnum",
        "mcached.storage.arena",
        "mcached.storage.assoc",
        "mcached.storage.items",
        "mcached.storage.results",
    },
    "mcached.storage.maintainer": {"mcached.storage.cache"},
    # ---- cluster/: auto-discovery; config is the format clients and server share ----
    "mcached.cluster": LEAF,
    "mcached.cluster.config": {"mcached.addr", "mcached.cnum"},
    "mcached.cluster.sources": {"mcached.addr", "mcached.cluster.config"},
    # the membership it serves; what the config verbs mean is the handlers', their bytes the
    # protocol's
    # one daemon's membership as a document, its version rule, the store's interface
    "mcached.cluster.membership": {"mcached.cluster.config"},
    # the health rule (pure) and the checks (asyncio sockets; no settings, no server)
    "mcached.cluster.health": {"mcached.cluster.config"},
    "mcached.cluster.prober": {"mcached.cluster.config", "mcached.cluster.health"},
    "mcached.cluster.discovery": {
        "mcached.addr",
        "mcached.cluster.config",
        "mcached.cluster.health",
        "mcached.cluster.membership",
        "mcached.cluster.prober",
        "mcached.cluster.sources",
        "mcached.settings",
    },
    # ---- server/: sockets and threads; it is handed the dispatch table, never handlers ----
    "mcached.server": LEAF,
    "mcached.server.poller": LEAF,
    "mcached.server.tls": {"mcached.settings"},
    "mcached.server.udp": {"mcached.addr", "mcached.errors", "mcached.stats", PROTOCOL},
    "mcached.server.connection": {
        "mcached.errors",
        "mcached.latency",
        "mcached.stats",
        PROTOCOL,
        "mcached.server.poller",
    },
    # the board and the supervisor: words and processes, no meaning at all
    "mcached.server.board": LEAF,
    "mcached.server.supervisor": {"mcached.server.board"},
    # one shared document (bytes) for every process of a daemon: what it means is the
    # daemon's business (the cluster's membership and health)
    "mcached.server.docs": LEAF,
    # watch's rings in shared memory and the streams that read them
    "mcached.server.eventlog": {"mcached.watch", "mcached.server.board"},
    "mcached.server.workers": {
        "mcached.addr",
        "mcached.latency",
        "mcached.settings",
        "mcached.stats",
        PROTOCOL,
        "mcached.server.board",
        "mcached.server.connection",
        "mcached.server.eventlog",
        "mcached.server.poller",
        "mcached.server.tls",
        "mcached.server.udp",
        "mcached.watch",
    },
    "mcached.server.listener": {
        "mcached.addr",
        "mcached.errors",
        "mcached.latency",
        "mcached.settings",
        "mcached.stats",
        PROTOCOL,
        "mcached.server.board",
        "mcached.server.connection",
        "mcached.server.eventlog",
        "mcached.server.supervisor",  # its limit on workers that keep dying, for threads
        "mcached.server.tls",
        "mcached.server.udp",
        "mcached.server.workers",
    },
    # ---- what each verb means ----
    "mcached.handlers": {
        "mcached",
        "mcached.clock",
        "mcached.errors",
        "mcached.latency",
        "mcached.settings",
        "mcached.stats",
        PROTOCOL,
        "mcached.storage.cache",
        "mcached.storage.results",
        "mcached.cluster.config",
        "mcached.cluster.discovery",
        "mcached.watch",
        "mcached.sasl",  # -S: what a SASL exchange came to
        "psutil",  # rusage and memory figures for stats
    },
    # ---- the metrics endpoint: figures in, Prometheus' format out (prometheus_client) ----
    "mcached.metrics": {"mcached.addr", "mcached.errors", "mcached.latency", "prometheus_client"},
    # ---- wiring and the command line ----
    "mcached.daemon": {
        "mcached",
        "mcached.addr",
        "mcached.metrics",
        "mcached.auth",
        "mcached.sasl",
        "mcached.clock",
        "mcached.cluster.discovery",
        "mcached.handlers",
        "mcached.settings",
        "mcached.stats",
        "mcached.systemd",
        PROTOCOL,
        "mcached.server.*",
        "mcached.storage.cache",
        "mcached.storage.maintainer",
        "mcached.process",  # -k: each worker process locks its own memory
        "psutil",  # the daemon's processes' CPU, for stats
    },
    "mcached.cli": {
        "mcached",
        "mcached.daemon",
        "mcached.errors",  # BindError: which address a failed start names
        "mcached.process",
        "mcached.settings",
        "mcached.systemd",
        "click",
    },
    "mcached.__main__": {"mcached.cli"},
    # ---- inside a program: servers as threads of the caller, and the pytest fixtures ----
    "mcached.embed": {
        "mcached.addr",
        "mcached.auth",
        "mcached.cli",
        "mcached.cluster.config",
        "mcached.cluster.discovery",
        "mcached.daemon",
        "mcached.settings",
        "mcached.protocol.binary",  # the handle's requests to a binary-only server
        "mcached.sasl",  # ... and its SASL login
    },
    "mcached.pytest_plugin": {
        "mcached.addr",
        "mcached.client.node",  # the external cluster's node list
        "mcached.embed",
        "pytest",
    },
    # ---- client/: clients of running nodes; no daemon layer, pymemcache only for one ----
    "mcached.client": LEAF,
    "mcached.client.node": {"mcached.addr", "mcached.cluster.config"},
    "mcached.client.cluster": {
        "mcached.addr",
        "mcached.cluster.config",
        "mcached.client.hashing",
        "mcached.client.node",
        "pymemcache",  # the client extra: the tool and the daemon run without it
    },
    # pymemcache's rendezvous hashing, reproduced (the tool runs without pymemcache)
    "mcached.client.hashing": {"mcached.cluster.config"},
    "mcached.client.warm": {
        "mcached.cluster.config",
        "mcached.client.hashing",
        "mcached.client.node",
    },
    "mcached.client.tool_stats": {"mcached.client.node", "mcached.client.tool_watch", "click"},
    "mcached.client.tool_watch": {"mcached.client.node", "click"},
    "mcached.client.tool": {
        "mcached",
        "mcached.addr",
        "mcached.cluster.config",
        "mcached.cluster.sources",
        "mcached.client.hashing",
        "mcached.client.node",
        "mcached.client.tool_stats",
        "mcached.client.tool_watch",  # Seconds: --timeout's type
        "mcached.client.warm",
        "click",
    },
    # ---- old homes, kept for existing commands and imports ----
    "mcached.tool": {"mcached.client.tool"},
    "mcached.cluster_client": {"mcached.client.cluster"},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """What the module `name` at `path` imports: mcached modules by full name (``from
    mcached.x import y`` is ``mcached.x.y`` when that is a module, else ``mcached.x``), and
    other packages by their top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package up
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    out = set()
    for imp in found:
        top = imp.partition(".")[0]
        if top == "mcached":
            out.add(imp)
        elif top not in sys.stdlib_module_names and top != "__future__":
            out.add(top)
    return out


def allowed(imp: str, row: set[str]) -> bool:
    for entry in row:
        if entry.endswith(".*"):
            package = entry[:-2]
            if imp == package or imp.startswith(package + "."):
                return True
        elif imp == entry:
            return True
    return False


def problems(root: Path, table: dict[str, set[str]]) -> list[str]:
    """Every way the modules under `root` and `table` disagree, one line each."""
    found = modules(root)
    known = set(found)
    out = [f"{name} has no row in the table" for name in sorted(known - set(table))]
    out += [
        f"the table has a row for {name}, which does not exist"
        for name in sorted(table.keys() - known)
    ]
    for name, row in sorted(table.items()):
        for entry in sorted(row):
            target = entry.removesuffix(".*")
            if target.startswith("mcached") and target not in known:
                out.append(f"{name}'s row names {entry}, which does not exist")
    for name, path in found.items():
        row = table.get(name)
        if row is None:
            continue
        for imp in sorted(imports(path, name, known)):
            if imp != name and not allowed(imp, row):
                out.append(f"{name} imports {imp}")
    return out


def test_every_import_is_in_the_table() -> None:
    assert problems(ROOT, LAYERS) == []


# ---- the checker itself, on made-up trees: it must be able to fail ----


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "mcached"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "mcached": LEAF,
    "mcached.server": LEAF,
    "mcached.server.listener": {"mcached.errors"},
    "mcached.errors": LEAF,
    "mcached.handlers": {"mcached.errors"},
}


@pytest.mark.parametrize(
    ("handlers", "problem"),
    [
        (
            "from mcached.server import listener\n",
            "mcached.handlers imports mcached.server.listener",
        ),
        ("import mcached.server.listener\n", "mcached.handlers imports mcached.server.listener"),
        (
            "from mcached.server.listener import Server\n",
            "mcached.handlers imports mcached.server.listener",
        ),
        ("from .server import listener\n", "mcached.handlers imports mcached.server.listener"),
        ("from . import server\n", "mcached.handlers imports mcached.server"),
        (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from mcached.server import listener\n",
            "mcached.handlers imports mcached.server.listener",
        ),
        ("def f():\n    import mcached.server\n", "mcached.handlers imports mcached.server"),
        ("import pymemcache.client\n", "mcached.handlers imports pymemcache"),
    ],
)
def test_a_forbidden_import_fails(tmp_path: Path, handlers: str, problem: str) -> None:
    root = tree(
        tmp_path,
        {
            "errors.py": "",
            "server/__init__.py": "",
            "server/listener.py": "from ..errors import x\nimport socket\n",
            "handlers.py": "from mcached import errors\n" + handlers,
        },
    )
    assert problems(root, BASE) == [problem]


def test_a_module_without_a_row_fails(tmp_path: Path) -> None:
    root = tree(tmp_path, {"errors.py": "", "handlers.py": "", "server/listener.py": ""})
    root.joinpath("server", "__init__.py").write_text("")
    root.joinpath("newroom.py").write_text("")
    assert problems(root, BASE) == ["mcached.newroom has no row in the table"]


def test_a_stale_row_or_entry_fails(tmp_path: Path) -> None:
    root = tree(tmp_path, {"errors.py": "", "server/__init__.py": "", "server/listener.py": ""})
    table = {**BASE, "mcached.server": {"mcached.gone.*"}}
    assert problems(root, table) == [
        "the table has a row for mcached.handlers, which does not exist",
        "mcached.server's row names mcached.gone.*, which does not exist",
    ]


# Loaded only where they serve: every module the daemon imports before it forks sits in the
# heap of every one of its processes (asyncio ~4.5 MB, prometheus_client ~2.5 MB).
ON_DEMAND = {
    "asyncio": "the cluster health checks, with the first peer to check (cluster.prober)",
    "prometheus_client": "--metrics-listen (mcached.metrics)",
}


def test_what_a_daemon_imports_before_it_forks_leaves_out_the_on_demand_modules() -> None:
    import subprocess

    code = (
        "import sys, mcached.__main__, mcached.cli, mcached.daemon, mcached.server.workers; "
        f"print(' '.join(m for m in {sorted(ON_DEMAND)!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == [], {m: ON_DEMAND[m] for m in out.stdout.split()}
