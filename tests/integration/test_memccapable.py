"""libmemcached's own conformance checker, ``memccapable -a``, passes against the server.

``memccapable`` (Debian package libmemcached-tools 1.1.4; upstream calls it ``memcapable``) runs
27 ascii-protocol checks written by client-library authors: version, quit, verbosity, set / get
/ gets / multi-get, flush_all, add, replace, cas, delete, incr, decr, append, prepend (each also
with ``noreply``) and stats, including how malformed variants of those commands are refused.
This file runs it against the `server` fixture (mcached and Debian's memcached 1.6.18) and
proves that every one of the 27 ascii checks ran and reported ``[pass]``: none failed, none was
skipped, none went missing.

How the tool reports (src/bin/memcapable.cc): each test name is written to stdout padded to 40
columns, then ``[pass]`` on stdout or ``[FAIL]`` on stderr; the run ends with
``All tests passed`` or ``N of M tests failed`` and exit status 0 or 1.  ``-a`` selects the ascii
tests only, ``-t N`` sets the per-I/O timeout (default 2 s), ``-v`` prints the failed assertion.

No test needs excluding: all 27 pass against memcached 1.6.18 with the default flags.  One trap
for anyone re-running a single check by hand with ``-T``: ``memccapable -T "ascii quit"`` FAILS
even against memcached, because the tool only learns that the server is 1.6+ (which accepts
``quit foo bar`` by closing instead of answering ERROR) inside the "ascii version" check; that
check always runs first in a full run, so the full run below is the only meaningful one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Server

pytestmark = pytest.mark.integration

ASCII_TESTS = (
    "ascii version",
    "ascii quit",
    "ascii verbosity",
    "ascii set",
    "ascii set noreply",
    "ascii get",
    "ascii gets",
    "ascii mget",
    "ascii flush",
    "ascii flush noreply",
    "ascii add",
    "ascii add noreply",
    "ascii replace",
    "ascii replace noreply",
    "ascii cas",
    "ascii cas noreply",
    "ascii delete",
    "ascii delete noreply",
    "ascii incr",
    "ascii incr noreply",
    "ascii decr",
    "ascii decr noreply",
    "ascii append",
    "ascii append noreply",
    "ascii prepend",
    "ascii prepend noreply",
    "ascii stat",
)

# Known exclusions, by test name, each with the reason and memcached's own result. Empty:
# memcached 1.6.18 passes all 27 ascii tests.
EXCLUDED: dict[str, str] = {}

# A name (padded to 40 columns) or a status. Statuses are matched as tokens so that a stray
# stderr line between a name and its "[FAIL]" cannot shift the pairing.
TOKEN = re.compile(
    r"(?P<name>ascii [a-z]+(?: noreply)?)(?= {2,}|\[)"
    r"|\[(?P<status>pass|FAIL|skip)\]"
)

RUN_TIMEOUT = 60.0


def memccapable_binary() -> str:
    binary = shutil.which("memccapable") or shutil.which("memcapable")
    if binary is None:
        raise RuntimeError(
            "memccapable is not installed (Debian: libmemcached-tools): run `make test`"
        )
    return binary


def run_memccapable(server: Server, *extra: str) -> tuple[int, str]:
    host, port = server.address
    cmd = [memccapable_binary(), "-a", "-t", "5", "-h", host, "-p", str(port), *extra]
    proc = subprocess.run(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # "[FAIL]" goes to stderr; one pipe keeps the order
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace")


def parse_results(output: str) -> list[tuple[str, str]]:
    """[(test name, "pass" | "FAIL" | "skip" | "missing")] in the order the tool ran them."""
    results: list[tuple[str, str]] = []
    pending: str | None = None
    for m in TOKEN.finditer(output):
        if m.group("name"):
            if pending is not None:  # a name with no status: the tool lost track
                results.append((pending, "missing"))
            pending = m.group("name")
        elif pending is not None:
            results.append((pending, m.group("status")))
            pending = None
    if pending is not None:
        results.append((pending, "missing"))
    return results


def test_parse_results_pairs_names_with_statuses() -> None:
    # the shape of a run with one failure: "[FAIL]" arrives on stderr, after extra noise
    output = (
        "ascii version                           [pass]\n"
        "ascii quit                              Errno: 110 Connection timed out\n[FAIL]\n"
        "ascii set noreply                       [pass]\n"
        "ascii stat                              "
    )
    assert parse_results(output) == [
        ("ascii version", "pass"),
        ("ascii quit", "FAIL"),
        ("ascii set noreply", "pass"),
        ("ascii stat", "missing"),
    ]


def test_memccapable_ascii(server: Server) -> None:
    rc, output = run_memccapable(server)
    results = parse_results(output)
    statuses = dict(results)

    if rc != 0 or any(s != "pass" for s in statuses.values()):
        # re-run verbosely (on the same server) so the report names the failed assertion
        _, verbose = run_memccapable(server, "-v")
        detail = f"\n--- memccapable output ---\n{output}\n--- with -v ---\n{verbose}"
    else:
        detail = f"\n--- memccapable output ---\n{output}"

    failed = sorted(n for n, s in results if s != "pass" and n not in EXCLUDED)
    passed = [n for n, s in results if s == "pass"]
    assert failed == [], f"memccapable ascii tests not passing: {failed}{detail}"
    assert len(passed) > 0, detail
    # every ascii test ran, once, in the tool's order
    assert [n for n, _ in results] == list(ASCII_TESTS), detail
    assert len(passed) == len(ASCII_TESTS) - len(EXCLUDED), detail
    if not EXCLUDED:
        assert rc == 0, detail
        assert output.rstrip().endswith("All tests passed"), detail
