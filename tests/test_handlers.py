"""The wall between meaning and wire text, checked on the source: handlers decide what a
command came to and never write reply bytes or read ``noreply`` (the replies in
`mcached.protocol.responses` do both)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

HANDLERS = Path(__file__).resolve().parent.parent / "mcached" / "handlers.py"


def test_handlers_write_no_wire_text_and_never_read_noreply() -> None:
    tree = ast.parse(HANDLERS.read_text())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
            if b"\r\n" in node.value or b"\n" in node.value:
                problems.append(f"line {node.lineno}: reply bytes {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr == "noreply":
            problems.append(f"line {node.lineno}: reads noreply")
    assert problems == []
