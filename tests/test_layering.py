"""The one-way imports of the style guide, checked by walking every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent / "mcached"

# package prefix -> the mcached modules it may import (prefix match)
ALLOWED = {
    "mcached.protocol": ("mcached.errors", "mcached.protocol"),
    "mcached.storage": ("mcached.errors", "mcached.clock", "mcached.storage"),
    "mcached.server": (
        "mcached.addr",
        "mcached.errors",
        "mcached.protocol",
        "mcached.stats",
        "mcached.settings",
        "mcached.server",
    ),
    "mcached.stats": (),
    "mcached.settings": (),
    "mcached.clock": (),
    "mcached.errors": (),
    "mcached.addr": (),
    # the -Y credentials: read by handlers, loaded by the daemon; raises a SettingsError
    "mcached.auth": ("mcached.settings",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m == "mcached" or m.startswith("mcached.")}


def test_imports_point_down() -> None:
    problems = []
    for path in sorted(ROOT.rglob("*.py")):
        name = module_name(path)
        for prefix, allowed in ALLOWED.items():
            if name == prefix or name.startswith(prefix + "."):
                for imp in imports(path):
                    if imp == "mcached":
                        continue  # the package's version constants
                    if not any(imp == a or imp.startswith(a + ".") for a in allowed):
                        problems.append(f"{name} imports {imp}")
    assert problems == []


def test_only_items_touches_slab_internals() -> None:
    """In storage/, the allocator's pieces are reached only through items (and cache)."""
    for path in sorted((ROOT / "storage").glob("*.py")):
        name = module_name(path)
        if name in ("mcached.storage.items", "mcached.storage.cache"):
            continue
        for imp in imports(path):
            assert not imp.startswith("mcached.storage.lru"), f"{name} imports {imp}"
            assert not imp.startswith("mcached.storage.assoc"), f"{name} imports {imp}"
