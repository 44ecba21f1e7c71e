"""memcached 1.6.18's own test suite (its ``t/*.t`` files) against mcached.

Every ``.t`` file of memcached's source is in exactly one table below (a test checks it):

* `IN_SCOPE`: the files that test what mcached claims (the text protocol, its flags, its
  stats, UDP): each runs as one test, ``perl t/<file>`` with a timeout, two files at a time
  (under pytest-xdist, one at a time in each worker).
  A file passes when it ran its whole plan and every subtest passed, except
  - ``known``: subtests (a part of their description) that fail today for a reason written
    up in ``TRIAGE.md``. They are strict: the run is reported as XFAIL while exactly they
    fail, and fails when one of them passes (remove it from the table then) or anything
    else fails. ``unrun`` counts the
    subtests a known failure keeps from running (an ``eval`` that dies part-way).
  - ``dies``: the file cannot run through today (the server refuses its flags, or the file
    hangs part-way: it then runs with a short ``timeout``): the whole test is
    ``xfail(strict=True)`` with the ``TRIAGE.md`` section.
  - ``flaky``: the file passes or fails with the machine's load, for a reason in
    ``TRIAGE.md``: ``xfail(strict=False)``, so neither outcome fails the run (and a failing
    run that then waits on a reply is cut at its ``timeout``).
  - ``vacuous``: output showing that the file took a branch that tests nothing (unixsocket.t
    when ``-h`` does not advertise unix sockets): reported as XFAIL until it stops appearing.
  - ``tls``: the file runs only over TLS (the ``ssl_*.t`` files: ``SSL_TEST=1``, see
    `runner.run_once`).

  The files named in `OVER_TLS` run a second time, over TLS, as memcached's ``make
  test_tls`` runs them; those in `OTHER_WORKERS` a second time with another worker count
  (`OTHER_T`).
* `PENDING`: files for protocols mcached does not serve yet (none now); skipped with the
  reason, they join `IN_SCOPE` when the protocol lands.
* `OUT_OF_SCOPE`: what mcached does not claim (extstore, the proxy, debug-build hooks,
  seccomp, persistence, memcached's own source checks...), each with the reason; skipped.

``MCACHED_SUITE_SERVER=memcached`` runs the same files against Debian's memcached instead
(the reference the expectations come from): there every in-scope file must pass outright.
Where the files come from and how the server is started: `runner`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import pytest

from mcached.settings import default_threads
from tests.memcached_suite import runner

pytestmark = pytest.mark.integration

SERVER = os.environ.get("MCACHED_SUITE_SERVER", "mcached")
TIMEOUT = 240.0  # seconds for one file; the slowest (chunked-items, maxconns) take ~30
PARALLEL = 2  # files at a time: the machine has 2 cores


def _frozen(d: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class InScope:
    known: Mapping[str, str] = field(default_factory=_frozen)
    unrun: int = 0
    dies: str = ""
    flaky: str = ""
    vacuous: tuple[str, str] | None = None
    timeout: float = TIMEOUT  # seconds; shorter for a file known to hang
    tls: bool = False  # runs only over TLS (SSL_TEST=1): the ssl_*.t files


def known(section: str, *subtests: str, unrun: int = 0) -> InScope:
    """`subtests` (a part of each description) fail today; `section` of TRIAGE.md says why."""
    return InScope(known=_frozen({s: section for s in subtests}), unrun=unrun)


PASSES = InScope()
PASSES_OVER_TLS = InScope(tls=True)

IN_SCOPE: dict[str, InScope] = {
    # issue 12's core group
    "bogus-commands.t": PASSES,
    "cas.t": PASSES,
    "chunked-items.t": PASSES,  # page moves rescue the item being appended (TRIAGE.md)
    "dash-M.t": PASSES,
    "flags.t": PASSES,
    "flush-all.t": PASSES,  # -C: an item set in flush_all's second goes, as memcached's
    "getandtouch.t": PASSES,
    "getset.t": PASSES,
    "incrdecr.t": PASSES,
    "issue_104.t": PASSES,
    "issue_108.t": PASSES,
    "issue_152.t": PASSES,
    "issue_192.t": PASSES,
    "issue_3.t": PASSES,
    "issue_41.t": PASSES,
    "issue_68.t": PASSES,
    "issue_70.t": PASSES,
    "item_size_max.t": PASSES,
    "malicious-commands.t": PASSES,
    "maxconns.t": PASSES,
    "multiversioning.t": PASSES,
    "noreply.t": PASSES,
    "quit.t": PASSES,
    "strtol-testing.t": PASSES,
    "touch.t": PASSES,
    # authentication, idle connections, shutdown
    "ascii-auth.t": PASSES,
    "idle-timeout.t": PASSES,
    "shutdown.t": PASSES,
    # unix domain sockets, stats conns
    "unixsocket.t": PASSES,
    "stats-conns.t": PASSES,
    # start-up, memory, stats
    "00-startup.t": PASSES,
    "evictions.t": PASSES,
    "issue_14.t": PASSES,
    "issue_163.t": PASSES,
    "issue_183.t": PASSES,
    "issue_22.t": PASSES,
    "issue_29.t": PASSES,
    "issue_42.t": PASSES,
    "issue_61.t": PASSES,
    "lru.t": PASSES,
    "stats.t": PASSES,
    "stats-detail.t": PASSES,
    # beyond issue 12's list: text protocol and flags mcached claims, passing
    "binary-get.t": PASSES,  # binary-safe values over the text protocol, despite its name
    # the binary protocol (issue 14)
    "binary.t": PASSES,
    "issue_50.t": PASSES,
    "binary-sasl.t": PASSES,  # through Cyrus SASL's library and sasldb, as memcached
    "daemonize.t": PASSES,
    "dyn-maxbytes.t": PASSES,
    "slabs_reassign.t": PASSES,
    # page moves: rescues of items and of chained items' chunks, free pages back to the pool
    "slabs-reassign2.t": PASSES,
    "lru-crawler.t": PASSES,
    "slabs-reassign-chunked.t": PASSES,
    "udp.t": PASSES,
    # the meta protocol (issue 13)
    "metaget.t": PASSES,
    # watch (issue 16): evictions, every lookup as memcached logs it, close reasons,
    # log_watchers, -W
    "watcher.t": PASSES,
    "watcher_connid.t": PASSES,
    # TLS: -Z, the certificate files and their refresh, verify modes, protocol versions,
    # session resumption, notls: listeners
    "ssl_cert_refresh.t": PASSES_OVER_TLS,
    "ssl_ports.t": PASSES_OVER_TLS,
    "ssl_proto_version.t": PASSES_OVER_TLS,
    "ssl_session_resumption.t": PASSES_OVER_TLS,
    "ssl_settings.t": PASSES_OVER_TLS,
    "ssl_verify_modes.t": PASSES_OVER_TLS,
}

# Files that run a second time over TLS (SSL_TEST=1: every server with -Z, every client
# over TLS), as memcached's own `make test_tls` runs its suite: the commands whose replies
# or values span reads and writes (large values, chunked items, pipelined and noreply
# requests, the binary and meta protocols), and the connections' life (idle timeouts,
# quit, shutdown, stats conns). The whole suite passes over TLS, but binary-sasl.t, which
# memcached fails over TLS too (it calls send(), which
# Perl's IO::Socket::SSL does not have); these few keep the suite's time within bounds.
OVER_TLS = (
    "binary.t",
    "chunked-items.t",
    "getset.t",
    "metaget.t",
    "cas.t",
    "incrdecr.t",
    "noreply.t",
    "multiversioning.t",
    "binary-get.t",
    "malicious-commands.t",
    "item_size_max.t",
    "idle-timeout.t",
    "quit.t",
    "shutdown.t",
    "stats-conns.t",
)

# Files that run a second time with another -t before their own flags: one worker process
# where the default is four (memcached's), four where it is one (a single CPU). What a
# worker count changes: the connection limit and stats conns, watchers, the crawler and page
# moves, chunked items, stats totals, cas and incr. Every in-scope file passed with -t 4 and
# with -t 1 when run by hand; these few keep the suite's time within bounds.
OTHER_T = "1" if default_threads() > 1 else "4"
OTHER_WORKERS = (
    "watcher.t",
    "lru-crawler.t",
    "slabs-reassign2.t",
    "chunked-items.t",
    "maxconns.t",
    "stats-conns.t",
    "stats.t",
    "getset.t",
    "cas.t",
    "incrdecr.t",
    "noreply.t",
    "metaget.t",
)

PENDING: dict[str, str] = {}

OUT_OF_SCOPE: dict[str, str] = {
    "64bit.t": "memcached's T_MEMD_INITIAL_MALLOC/T_MEMD_SLABS_ALLOC environment hooks fake "
    "total_malloced; mcached has no such hooks",
    "binary-extstore.t": "extstore (binary protocol over flash storage): mcached keeps nothing "
    "on disk, by design",
    "chunked-extstore.t": "extstore: mcached keeps nothing on disk, by design",
    "conn-limits.t": "memcached's read/response buffer memory accounting "
    "(-o read_buf_mem_limit, response_obj_oom), and meta commands",
    "error-extstore.t": "extstore: mcached keeps nothing on disk, by design",
    "expirations.t": "drives time with 'debugtime', a command of memcached's debug build "
    "only (Debian's memcached fails it too)",
    "extstore-buckets.t": "extstore: mcached keeps nothing on disk, by design",
    "extstore-jbod.t": "extstore: mcached keeps nothing on disk, by design",
    "extstore.t": "extstore: mcached keeps nothing on disk, by design",
    "issue_140.t": "skipped by memcached itself ('Fix for Issue 140 was only an illusion')",
    "issue_260.t": "skipped by memcached itself (needs a patched 1.4.15)",
    "issue_67.t": "memcached's MEMCACHED_PORT_FILENAME port file, and it binds the default "
    "port 11211; mcached does not write the port file (TRIAGE.md: beyond the list)",
    "line-lengths.t": "checks the line lengths of memcached's doc/protocol.txt, not a server",
    "lru-maintainer.t": "memcached's segmented LRU (HOT/WARM/COLD moves, which mcached's "
    "clock LRU does not have by design); TRIAGE.md: beyond the list",
    "misbehave.t": "seccomp (-o drop_privileges), which memcached's debug build tests",
    "proxy.t": "memcached's proxy (-o proxy_config, Lua routes)",
    "refhang.t": "skipped by memcached itself ('Test is flaky. Needs special hooks.')",
    "restart.t": "warm restart from a memory file (-e): mcached keeps nothing across a "
    "restart, by design",
    "slabhang.t": "skipped by memcached itself ('Test is flaky. Needs special hooks.')",
    "whitespace.t": "checks whitespace in memcached's git checkout, not a server",
}

# Slowest first, so the two lanes finish together (seconds on mcached, 2 at a time).
SLOW = (
    "getset.t",
    "maxconns.t",
    "chunked-items.t",
    "slabs-reassign2.t",
    "00-startup.t",
    "dash-M.t",
    "idle-timeout.t",
)


@dataclass(frozen=True)
class Run:
    """One run of a file: over TLS or not, with its server's default workers or `OTHER_T`."""

    name: str
    tls: bool = False
    other_workers: bool = False


class Suite:
    """The run directories (one per worker count) and the files' runs, two at a time,
    started at first use."""

    def __init__(self, run_dirs: dict[bool, Path], selected: list[Run]) -> None:
        self.run_dirs = run_dirs
        self.pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="memcached-suite")
        ordered = sorted(
            selected,
            key=lambda r: (r.name not in SLOW, SLOW.index(r.name) if r.name in SLOW else 0),
        )
        self.runs: dict[Run, Future[runner.Result]] = {}
        for run in ordered:
            self.result_future(run)

    def result_future(self, run: Run) -> Future[runner.Result]:
        future = self.runs.get(run)
        if future is None:  # not selected at start-up (a -k run, or under xdist): run it now
            run_dir = self.run_dirs[run.other_workers]
            timeout = IN_SCOPE[run.name].timeout
            future = self.runs[run] = self.pool.submit(
                runner.run_file, run_dir, run.name, timeout, run.tls
            )
        return future

    def result(self, run: Run) -> runner.Result:
        return self.result_future(run).result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        runner.kill_running()


def run_of(test: str, name: str) -> Run:
    """The run a test function of this module asks for."""
    return Run(
        name,
        tls=test == "test_memcached_suite_file_over_tls" or IN_SCOPE[name].tls,
        other_workers=test == "test_memcached_suite_file_other_workers",
    )


RUN_TESTS = (
    "test_memcached_suite_file",
    "test_memcached_suite_file_over_tls",
    "test_memcached_suite_file_other_workers",
)


@pytest.fixture(scope="session")
def suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Suite]:
    source = runner.source_dir()
    if not (source / "t" / "lib" / "MemcachedTest.pm").is_file():
        raise RuntimeError(
            f"memcached's source is not in {source}: run `make system-deps` "
            "(scripts/install-system-deps.sh fetches it with apt-get source)"
        )
    if shutil.which("perl") is None:
        raise RuntimeError("perl is not installed: run `make system-deps`")
    selected = [
        run_of(item.originalname, item.callspec.params["name"])
        for item in request.session.items
        if item.originalname in RUN_TESTS and hasattr(item, "callspec")
    ]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # under pytest-xdist every worker collects every file but runs only those it is
        # handed: each runs when its test asks for it, and the workers are the parallelism
        selected = []
    run_dirs = {
        other: runner.make_run_dir(
            tmp_path_factory.mktemp("memcached-suite"),
            SERVER,
            source,
            ("-t", OTHER_T) if other else (),
        )
        for other in (False, True)
    }
    s = Suite(run_dirs, selected)
    yield s
    s.close()


def _params() -> list[object]:
    out: list[object] = []
    for name, entry in IN_SCOPE.items():
        marks = []
        if entry.dies and SERVER == "mcached":
            marks.append(pytest.mark.xfail(strict=True, reason=entry.dies))
        if entry.flaky and SERVER == "mcached":
            marks.append(pytest.mark.xfail(strict=False, reason=entry.flaky))
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_memcached_suite_file(suite: Suite, name: str) -> None:
    check_file(suite, run_of("test_memcached_suite_file", name))


@pytest.mark.parametrize("name", OVER_TLS)
def test_memcached_suite_file_over_tls(suite: Suite, name: str) -> None:
    """The file again, over TLS (`OVER_TLS`)."""
    entry = IN_SCOPE[name]
    assert not entry.tls and not entry.known and not entry.dies and not entry.flaky, name
    check_file(suite, run_of("test_memcached_suite_file_over_tls", name))


@pytest.mark.parametrize("name", OTHER_WORKERS)
def test_memcached_suite_file_other_workers(suite: Suite, name: str) -> None:
    """The file again, its servers started with ``-t`` `OTHER_T` (`OTHER_WORKERS`)."""
    entry = IN_SCOPE[name]
    assert not entry.known and not entry.dies and not entry.flaky, name
    check_file(suite, run_of("test_memcached_suite_file_other_workers", name))


def check_file(suite: Suite, run: Run) -> None:
    name = run.name
    entry = IN_SCOPE[name]
    reference = SERVER != "mcached"
    expected = {} if reference else dict(entry.known)
    result = suite.result(run)
    problems = result.problems(expected, unrun=0 if reference else entry.unrun)
    assert not problems, f"{name}: {'; '.join(problems)}\n{result.report()}"
    failed = list(result.failed.values())
    passing = [k for k in expected if not any(k in d for d in failed)]
    assert not passing, f"{name}: known failures now pass, remove them from IN_SCOPE: {passing}"
    if entry.vacuous and not reference:
        pattern, reason = entry.vacuous
        assert pattern in result.output, f"{name}: no longer vacuous, drop `vacuous`: {reason}"
        pytest.xfail(reason)
    if expected:
        sections = sorted(set(expected.values()))
        pytest.xfail(f"known failures ({len(result.failed)} subtests): {'; '.join(sections)}")


@pytest.mark.parametrize("name", sorted(PENDING))
def test_memcached_suite_pending(name: str) -> None:
    pytest.skip(PENDING[name])


@pytest.mark.parametrize("name", sorted(OUT_OF_SCOPE))
def test_memcached_suite_out_of_scope(name: str) -> None:
    pytest.skip(OUT_OF_SCOPE[name])


def test_every_file_is_listed_once() -> None:
    """A new memcached release's files must be read and placed before they count."""
    tables = [set(IN_SCOPE), set(PENDING), set(OUT_OF_SCOPE)]
    assert not (tables[0] & tables[1] or tables[0] & tables[2] or tables[1] & tables[2])
    source = runner.source_dir() / "t"
    if not source.is_dir():
        pytest.fail(f"memcached's source is not in {source.parent}: run `make system-deps`")
    on_disk = {p.name for p in source.glob("*.t")}
    listed = set().union(*tables)
    assert on_disk - listed == set(), "files to read and place in a table"
    assert listed - on_disk == set(), "listed files memcached's source does not have"
