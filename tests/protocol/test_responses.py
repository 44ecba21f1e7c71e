"""Reply building: the VALUE line suffix cache."""

from __future__ import annotations

import pytest

from mcached.protocol import responses as r

pytestmark = pytest.mark.unit


def test_value_suffix_bytes() -> None:
    assert r.value_suffix(0, 5) == b" 0 5\r\n"
    assert r.value_suffix(4294967295, 0) == b" 4294967295 0\r\n"
    assert r.value_header(b"k", 7, 3) == b"VALUE k" + r.value_suffix(7, 3)


def test_value_suffix_remembers_only_zero_flags_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table: dict[int, bytes] = {}
    monkeypatch.setattr(r, "ZERO_FLAGS_SUFFIX", table)
    r.value_suffix(3, 10)
    assert table == {}  # flags other than 0 are formatted each time
    r.value_suffix(0, 10)
    assert table == {10: b" 0 10\r\n"}
    for n in range(r.VALUE_SUFFIX_MAX + 100):
        assert r.value_suffix(0, n) == b" 0 %d\r\n" % n
    assert len(table) == r.VALUE_SUFFIX_MAX
