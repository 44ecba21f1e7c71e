"""Runs one of memcached's own ``t/*.t`` files against a server and reads its TAP output.

memcached's ``t/lib/MemcachedTest.pm`` starts ``./memcached-debug`` (its debug build) from
the current directory, through ``./timedrun <seconds>``, with memcached's flags; it decides
which features to test by grepping ``memcached-debug -h`` (``unix-socket``, ``enable-ssl``,
``sasl``, ``ext_path``, ``proxy_config``...), adds ``-u root`` when run as root, ``-p``/``-U``
with ports it picked, or ``-s /tmp/memcachetest.<pid>.<n>`` when the server advertises unix
sockets, and waits for the server by connecting to it. So a run directory holds:

- ``t``: a link to the ``t/`` directory of memcached's source, which
  ``scripts/install-system-deps.sh`` fetches with ``apt-get source memcached`` (the release of
  the reference binary) into ``/var/cache/mcached/memcached-src`` (``MEMCACHED_SRC_CACHE``);
  nothing of memcached's is kept in this repository;
- ``memcached-debug``: a shell script that execs the server under test with the suite's
  arguments, less ``-o relaxed_privileges``: an option of memcached's debug build only
  (``#ifdef MEMCACHED_DEBUG`` in ``memcached.c``), which release builds, Debian's memcached
  and mcached alike, refuse with ``Illegal suboption``. Its ``-h`` answer is the server's
  own, captured once with its exit status (the suite runs ``-h`` three times per server it
  starts, and a Python start-up costs a third of a second);
- ``timedrun``: memcached's ``timedrun`` kills the server after N seconds; here it execs the
  server directly, and `run_file` kills the file's whole process group when it ends or times
  out, which covers every server the file started.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mcached import MEMCACHED_VERSION

SRC_CACHE = Path(os.environ.get("MEMCACHED_SRC_CACHE", "/var/cache/mcached/memcached-src"))

WRAPPER = """\
#!/bin/sh
# memcached's t/lib/MemcachedTest.pm runs ./memcached-debug: this runs {name} instead.
# -h: the server's own answer, captured once (tests/memcached_suite/runner.py).
if [ "$#" -eq 1 ] && [ "$1" = "-h" ]; then
    cat {help_file}
    exit {help_status}
fi
# Drop "-o relaxed_privileges", which only memcached's debug build knows.
n=$#
skip=
for a do
    shift
    n=$((n - 1))
    if [ -n "$skip" ]; then skip=; continue; fi
    if [ "$a" = "-o" ] && [ "$n" -gt 0 ] && [ "$1" = "relaxed_privileges" ]; then
        skip=1
        continue
    fi
    set -- "$@" "$a"
done
exec {command} "$@"
"""

TIMEDRUN = """\
#!/bin/sh
# memcached's timedrun <seconds> <command...>: the harness kills the process group instead.
shift
exec "$@"
"""


def source_dir() -> Path:
    """memcached's unpacked source, as the install step left it."""
    return SRC_CACHE / f"memcached-{MEMCACHED_VERSION}"


def server_command(kind: str) -> list[str]:
    if kind == "mcached":
        return [sys.executable, "-m", "mcached"]
    binary = shutil.which("memcached")
    if binary is None:
        raise RuntimeError("memcached is not installed: run `make system-deps`")
    return [binary]


def make_run_dir(directory: Path, kind: str, source: Path, args: tuple[str, ...] = ()) -> Path:
    """A directory laid out as memcached's build directory, serving `kind`, started with
    `args` before the suite's own (which win where they give the same option)."""
    command = [*server_command(kind), *args]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "t").symlink_to(source / "t")
    help_run = subprocess.run([*command, "-h"], capture_output=True, timeout=60)
    help_file = directory / "help.out"
    help_file.write_bytes(help_run.stdout + help_run.stderr)
    wrapper = WRAPPER.format(
        name=kind,
        help_file=shlex.quote(str(help_file)),
        help_status=help_run.returncode,
        command=shlex.join(command),
    )
    for name, text in (("memcached-debug", wrapper), ("timedrun", TIMEDRUN)):
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    return directory


DESCRIPTION_MAX = 200  # lru.t names a subtest after a 1 MB value
TAP_TEST = re.compile(r"^(not )?ok (\d+)\b(?: - )?(.*)$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)")


@dataclass
class Result:
    """One file's run: its plan, the subtests that failed, exit status and output."""

    name: str
    status: int | None  # None: killed at the timeout
    seconds: float
    output: str
    planned: int | None = None
    ran: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # number -> description

    def problems(self, allowed: Mapping[str, str], unrun: int = 0) -> list[str]:
        """What makes this run a failure.

        `allowed`: subtests that may fail, by a part of their description; `unrun`: how many
        subtests of the plan may be missing because an allowed failure died part-way.
        """
        out: list[str] = []
        if self.status is None:
            out.append(f"timed out after {self.seconds:.0f}s")
        if self.planned is None:
            out.append("no TAP plan (the file died before its first test)")
        elif self.ran != list(range(1, self.planned - unrun + 1)):
            out.append(f"planned {self.planned} tests, ran {len(self.ran)}")
        unexpected = {n: d for n, d in self.failed.items() if not any(a in d for a in allowed)}
        if unexpected:
            listed = ", ".join(f"{n} ({d})" for n, d in sorted(unexpected.items()))
            out.append(f"failed subtests: {listed}")
        # Test::More exits with the number of failed tests; anything else is a death.
        if self.status is not None and self.status != min(len(self.failed), 254):
            out.append(f"exit status {self.status}")
        return out

    def report(self, limit: int = 12000) -> str:
        """The output worth reading: failures and diagnostics, long lines cut."""
        keep = [
            line[:400] + (" [...]" if len(line) > 400 else "")
            for line in self.output.splitlines()
            if not line.startswith("ok ") and " INFO " not in line and " DEBUG " not in line
        ]
        text = "\n".join(keep)
        return text if len(text) <= limit else text[:limit] + "\n[... cut]"


def parse(name: str, status: int | None, seconds: float, output: str) -> Result:
    result = Result(name, status, seconds, output)
    for line in output.splitlines():
        if m := TAP_PLAN.match(line):
            result.planned = int(m.group(1))
        elif m := TAP_TEST.match(line):
            number = int(m.group(2))
            result.ran.append(number)
            if m.group(1):
                result.failed[number] = m.group(3).strip()[:DESCRIPTION_MAX]
    return result


def run_file(run_dir: Path, name: str, timeout: float, tls: bool = False) -> Result:
    """`run_once`, and once more when it failed where a server it started could not listen
    because its port was taken meanwhile (MemcachedTest.pm picks a random port it checked
    free, and with the suite's processes starting servers side by side another one may bind
    it first: before the file's first test, or later, as shutdown.t starts a server for
    each of its parts), or when the file died where it races the server's clock
    (`CLOCK_RACES`)."""
    result = run_once(run_dir, name, timeout, tls)
    if result.status != 0 and PORT_TAKEN in result.output:
        result = run_once(run_dir, name, timeout, tls)
    elif lost_clock_race(result):
        result = run_once(run_dir, name, timeout, tls)
    return result


PORT_TAKEN = "Address already in use"

# Places where a file of memcached's races the server's clock, which memcached 1.6.18 loses
# as well (TRIAGE.md: binary.t): the message the file dies with there, and the descriptions
# of the subtests that pass just before it (one of them is among the last `RACE_WINDOW`
# passed). A run that died so is run once more; a second such death fails the test.
CLOCK_RACES = {
    # its "Touch commands": set(key, value, 0, exptime 1), then touch or gat of the key
    "binary.t": (
        "Memcache Error (1): Not found",
        ("Expected error state of 'exists' (2)", "toast = toast", "toast2 = toast2"),
    ),
}
RACE_WINDOW = 8


def lost_clock_race(result: Result) -> bool:
    """Whether `result` is a death at one of `CLOCK_RACES`, with every subtest before it
    passed."""
    race = CLOCK_RACES.get(result.name)
    if race is None or result.failed or result.status in (0, None):
        return False
    message, anchors = race
    if message not in result.output:
        return False
    if result.planned is not None and result.ran and result.ran[-1] >= result.planned:
        return False  # it died after its last test, elsewhere (binary.t plans at the end)
    passed = [m.group(3) for m in map(TAP_TEST.match, result.output.splitlines()) if m]
    return any(d in anchors for d in passed[-RACE_WINDOW:])


def run_once(run_dir: Path, name: str, timeout: float, tls: bool = False) -> Result:
    """``perl t/<name>`` in `run_dir`, in a process group of its own, killed when done.
    `tls`: with ``SSL_TEST=1``, which makes MemcachedTest.pm start every server with
    ``-Z`` and the certificates in memcached's ``t/`` (``server_crt.pem``, ``server_key.pem``)
    and connect every client over TLS (Perl's IO::Socket::SSL, ``client_crt.pem``); the
    ``ssl_*.t`` files run only so.

    The output goes to a file, not a pipe: the servers the file started inherit it, and one
    still on its way out must not hold the run open.
    """
    start = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("T_MEMD", "SSL_TEST"))}
    if tls:
        env["SSL_TEST"] = "1"
    # binary-sasl.t runs only when asked (it needs saslpasswd2, which the install step
    # brings); a password file in the environment would take SASL away from Cyrus's sasldb
    env["RUN_SASL_TESTS"] = "1"
    env.pop("MEMCACHED_SASL_PWDB", None)
    log = run_dir / f"{name}{'.tls' if tls else ''}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["perl", f"t/{name}"],
            cwd=run_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    with _running_lock:
        _running.add(proc)
    status: int | None
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        _kill_group(proc.pid)
        proc.wait()
        with _running_lock:
            _running.discard(proc)
    output = log.read_bytes().decode(errors="replace")
    return parse(name, status, time.monotonic() - start, output)


_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def kill_running() -> None:
    """Kill every file still running, with its servers (the session is over)."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc.pid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
