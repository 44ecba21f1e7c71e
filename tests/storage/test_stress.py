"""`scripts/stress_storage.py`, bounded: the shared cache under forked workers, a page mover
and a crawler at once, then its invariant checked (every table entry a linked item of its
partition, every linked head in its table). It found a race between the page scans and a
store in another process that no daemon test had hit. On that code, 10 s runs of it failed
for 3 seeds of 4, and a run of these two tests failed in 3 tries of 4 (the failure is a
race's: found often, not every time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # processes, not sockets: seconds, not milliseconds

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stress_storage.py"


@pytest.mark.parametrize(
    "seed, flags",
    [(1, []), (2, ["--kill"])],
    ids=["workers-mover-crawler", "with-workers-killed"],
)
def test_the_shared_cache_keeps_its_invariant_under_every_process_at_once(
    seed: int, flags: list[str]
) -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--seed", str(seed), "--seconds", "10", *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert re.search(r"^seed \d+: \d+ workers killed, 0 children failed$", report, re.M), report
    checked = re.search(
        r"^checked: (\d+) table entries, (\d+) linked items, 0 faults$", report, re.M
    )
    assert checked, report
    assert int(checked[1]) == int(checked[2]) > 0, report  # it stored something, and kept it
