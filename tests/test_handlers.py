"""The wall between meaning and wire text, checked on the source: handlers decide what a
command came to and the cluster endpoint holds membership; neither writes reply bytes or
reads ``noreply`` (the replies in `mcached.protocol.responses` do both)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent / "mcached"


@pytest.mark.parametrize("module", ["handlers.py", "cluster/discovery.py"])
def test_no_wire_text_and_no_noreply(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            if b"\r\n" in node.value or b"\n" in node.value:
                problems.append(f"line {node.lineno}: reply bytes {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "noreply":
            problems.append(f"line {node.lineno}: reads noreply")
    assert problems == []
