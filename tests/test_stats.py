"""mcached/stats.py: the stats detail table's merge (several workers' tables, and those dead
workers left, summed)."""

from __future__ import annotations

import pytest

from mcached.stats import PrefixStats

pytestmark = pytest.mark.unit


def test_detail_tables_merge_by_prefix_and_a_limit_leaves_out_new_prefixes() -> None:
    a = {b"user": [1, 1, 2, 0], b"sess": [0, 0, 1, 1]}
    b = {b"user": [2, 0, 3, 1], b"cart": [1, 1, 1, 1]}
    assert PrefixStats.merge([a, b]) == {
        b"user": [3, 1, 5, 1],
        b"sess": [0, 0, 1, 1],
        b"cart": [1, 1, 1, 1],
    }
    # as a full table counts no new prefix, the prefixes it has still add up
    assert PrefixStats.merge([a, b], limit=2) == {b"user": [3, 1, 5, 1], b"sess": [0, 0, 1, 1]}
    assert a == {b"user": [1, 1, 2, 0], b"sess": [0, 0, 1, 1]}  # the inputs are left alone
