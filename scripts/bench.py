#!/usr/bin/env python3
"""Throughput/latency comparison of mcached against the reference memcached.

What it measures
----------------
For each *load* below, and for each *server* (mcached, then memcached, or the
other way round), the script starts a fresh server on a free loopback port,
waits until it answers ``version``, runs the load, and stops the server
(SIGTERM, then SIGKILL).  Only one server runs at a time.  It reports, per load
and server: operations per second, p50 and p99 latency (ms), mean latency,
errors, and the CPU used by the server and by the load generator; then the ratio
mcached/memcached of the throughputs: of their medians, and with --repeat, round by
round (each round's two runs back to back), the median and range of those ratios.

Loads
-----
``memaslap``
    libmemcached's ``memaslap`` (Debian ships it as ``memcaslap``) with
    ``-T 2 -c 32``: 64-byte keys, 1024-byte values, 10 % set / 90 % get, task
    window 10k objects per concurrency.  The key/value/mix distribution is
    pinned with a generated ``-F`` config file so a stray ``~/.memaslap.cnf``
    cannot change it.  memaslap prints latency figures only when asked for
    periodic statistics, so it runs with ``-S <duration>``; its final report
    then has, for Get/Set/Total: event count, Min/Max/Avg/Geo/Std in
    microseconds and a power-of-two histogram ("Log2 Dist", bucket ``i`` =
    latencies in (2**(i-1), 2**i] us).  memaslap gives no percentiles: p50 and
    p99 are *estimated* from that histogram by geometric interpolation inside
    the bucket (factor-2 resolution); they are marked ``~`` in the table.
    ``ops/s`` is memaslap's own TPS (= (cmd_get + cmd_set) / run time).
``multiget``
    The same with ``-d 10``: gets are sent as 10-key ``get k1 .. k10``.
    memaslap still picks get/set 9:1 *per key*, so about half of the round
    trips are sets.  Its TPS (and the table's ops/s) counts each fetched key as
    one op; the detail line adds get keys/s (cmd_get / run time) and round
    trips/s (Get events + Set events) / run time.  Latencies are per round trip.
``mix``
    A Python closed-loop load: 90 % ``get`` / 10 % ``set`` of 100-byte values
    over 10,000 preloaded keys, 50 connections split over 2 worker processes,
    each driving its 25 non-blocking sockets with a ``selectors`` loop and one
    outstanding request per connection, raw memcached text protocol.  Every
    reply is checked byte for byte (a get must return exactly the value that
    was stored for that key, a set must answer ``STORED``); error replies,
    malformed or wrong replies, unexpected misses and disconnects are counted
    as errors, never as ops, and the first ones are printed.  The latency of
    each request is measured from just before ``send`` to the parsed reply.
``meta``
    The ``mix`` again, the same keys, values, connections and sequence of
    operations, in the meta protocol: ``mg <key> v`` for each get (the reply
    ``VA <size>`` and the value), ``ms <key> <size>`` for each set (``HD``).
    Read against ``mix``, it tells what the meta commands cost next to the
    classic ones on the same server (the summary prints meta/mix per server).
    The ``--ceiling`` servers know no meta command and sit it out.

Caveats
-------
* The machine may have only 2 cores, shared by the load generator and the
  server (and anything else running): figures are relative, not absolute.
  Compare the ratio, not the ops/s, and look at the "cpu" columns: a load
  generator at ~100 % of a core per process is the bottleneck, not the server.
* The Python load generator is much slower than memaslap; against memcached it,
  not the server, is usually the limit, so its ratio is an upper bound.
  Its latencies include client-side queueing when several replies arrive at
  once.
* Runs are noisy: use ``--repeat N`` (servers alternate order each round, ABBA)
  and read the medians, which is what the table shows.

Usage: ``.venv/bin/python scripts/bench.py [--duration 10] [--repeat 3]``.
The exit status is 1 if any run failed or counted errors (but the dict yardstick's misses
in ``mix``, which it cannot help), 130 if interrupted.
``--mcached-cmd`` replaces the mcached command (with ``{port}`` and
``{threads}`` placeholders); e.g. pass a memcached command to check the script
itself with memcached on both sides.
``--ceiling`` adds two more servers to every load: ``scripts/bench_ceiling.py``, a
bare Python server that knows get/set/version over a dict (the most CPython gets out
of this machine: mcached cannot beat it), and the same over mcached's slab cache
(what the storage costs without the daemon around it); each runs as many processes
as mcached has workers, on one listening socket.
Their ratios to memcached, from the same run, are the yardstick for mcached's.
``--metrics`` adds ``mcached+metrics`` to every load: mcached's command with
``--metrics-listen 127.0.0.1:<a free port>``, its ``/metrics`` read over HTTP every
``--scrape-every`` seconds (default 1: harsher than Prometheus's usual 15 s) while each
load runs, as an endpoint costs nothing until something reads it. Its run's detail line
adds the scrapes made and their mean time; a failed scrape counts as an error. The
summary then prints it over mcached (endpoint on over off). The issue's on/off figures::

    .venv/bin/python scripts/bench.py --servers mcached --metrics --repeat 3

(add ``--servers both`` to see both against memcached too). ``--mcached-cmd`` changes
both mcached commands (the endpoint's flag is appended to it).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import psutil
import servers
from servers import HOST, free_port

REPO_ROOT = servers.ROOT
sys.path.insert(0, str(REPO_ROOT))
from mcached.settings import default_threads  # noqa: E402  (mcached's -t when not given)

MEMCACHED_BIN = "/usr/bin/memcached"
LOADS = ("memaslap", "multiget", "mix", "meta")
TEXT_ONLY = ("ceiling", "ceiling-cache")  # servers that know get/set/version alone
SERVERS = ("mcached", "memcached")
# --ceiling: scripts/bench_ceiling.py, a bare Python server, over a dict and over mcached's cache
CEILINGS = ("ceiling", "ceiling-cache")
# what a server's runs may count without failing the benchmark: the dict yardstick's processes
# each keep their own dict, so a key preloaded through one is a miss in the other
EXPECTED_ERRORS = {"ceiling": {"miss"}}
# --metrics: mcached with its Prometheus endpoint on, scraped while the load runs
METRICS_SERVER = "mcached+metrics"
START_TIMEOUT = 20.0  # seconds for a server to answer "version"
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------


def memcached_cmd(threads: int) -> list[str]:
    cmd = [MEMCACHED_BIN]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    cmd += ["-l", HOST, "-p", "{port}", "-U", "0", "-t", str(threads), "-m", "1024"]
    return cmd + ["-c", "4096"]  # room for --idle-conns beside the load's own connections


def open_idle(port: int, n: int) -> list[socket.socket]:
    """`n` connections that stay open and silent during the load (--idle-conns)."""
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection((HOST, port), timeout=5))
    if socks:  # make sure the server accepted them all before the load starts
        probe = socks[-1]
        probe.sendall(b"version\r\n")
        if not probe.recv(100).startswith(b"VERSION"):
            raise RuntimeError("idle connection probe failed")
    return socks


def mcached_cmd(threads: int | None) -> list[str]:
    # None: mcached's own default worker count (settings.default_threads)
    t = ["-t", str(threads)] if threads else []
    cmd = [sys.executable, "-m", "mcached", "-l", HOST, "-p", "{port}", *t]
    return cmd + ["-m", "1024", "-c", "4096"]  # as memcached's command


def ceiling_cmd(store: str, procs: int) -> list[str]:
    script = str(REPO_ROOT / "scripts" / "bench_ceiling.py")
    cmd = [sys.executable, script, "--port", "{port}", "--store", store, "-m", "1024"]
    return cmd + ["--procs", str(procs)]


class Server:
    """One server process on a free loopback port."""

    def __init__(self, name: str, template: list[str], threads: int) -> None:
        self.name = name
        self.template = template
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0  # the endpoint's, when the command has {metrics_port}
        self.version = ""
        self.argv: list[str] = []
        self._log = tempfile.TemporaryFile()

    def start(self) -> None:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            if any("{metrics_port}" in a for a in self.template):
                self.metrics_port = free_port()
            self.argv = [
                a.format(port=self.port, threads=self.threads, metrics_port=self.metrics_port)
                for a in self.template
            ]
            self._log.seek(0)
            self._log.truncate()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
            try:
                self.version = self._wait_ready()
                return
            except RuntimeError as e:
                last_error = str(e)
                self.stop()
        raise RuntimeError(f"{self.name} did not start: {last_error}")

    def _wait_ready(self) -> str:
        assert self.proc is not None
        try:
            version = servers.wait_ready(self.proc, self.port, HOST, START_TIMEOUT)
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {' '.join(self.argv)}\n{self.log_tail()}") from None
        self._check_owner()
        return version

    def _check_owner(self) -> None:
        """The server that answered is this one, not another process that took the port
        between probe and bind while this one, failing to bind, is still on its way out:
        the ``pid`` of its ``stats`` (where it says one) is its process's."""
        assert self.proc is not None
        with socket.create_connection((HOST, self.port), timeout=5.0) as s:
            s.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith((b"END\r\n", b"ERROR\r\n")) and len(reply) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        found = re.search(rb"^STAT pid (\d+)\r$", reply, re.M)
        if found is None:
            return  # a yardstick: no stats
        pid = int(found.group(1))
        try:  # the command itself, or what a wrapper of it started
            ours = [self.proc.pid] + [p.pid for p in psutil.Process(self.proc.pid).children(True)]
        except psutil.Error:
            ours = [self.proc.pid]
        if pid not in ours:
            raise RuntimeError(f"port {self.port} answered by pid {pid}, not this server")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_sample(self) -> tuple[float, float, int, int]:
        """The server's processes and threads so far: user and system CPU seconds, voluntary
        and involuntary context switches (NaN and 0 once it died). The switches are read
        from each thread's /proc status: a process's own counts only its first thread."""
        if not self.alive():
            return float("nan"), float("nan"), 0, 0
        assert self.proc is not None
        user = system = 0.0
        vol = invol = 0
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return float("nan"), float("nan"), 0, 0
        for p in procs:
            try:
                t = p.cpu_times()
                user += t.user
                system += t.system
            except psutil.Error:
                continue
            for status in Path(f"/proc/{p.pid}/task").glob("*/status"):
                try:
                    text = status.read_text()
                except OSError:
                    continue  # a thread that ended
                for line in text.splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol += int(line.split()[1])
        return user, system, vol, invol

    def log_tail(self, n: int = 2000) -> str:
        self._log.seek(0)
        data: bytes = self._log.read()
        return data[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self.proc = None


class Scraper:
    """Reads ``http://127.0.0.1:<port>/metrics`` every `every` seconds in a thread, from
    ``with`` until its end (--metrics): what a Prometheus server does to the daemon."""

    def __init__(self, port: int, every: float) -> None:
        self.url = f"http://{HOST}:{port}/metrics"
        self.every = every
        self.scrapes = 0
        self.failures = 0
        self.seconds = 0.0
        self.first_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    body: bytes = reply.read()
                if b"memcached_up" not in body:
                    raise ValueError(f"no memcached_up in {len(body)} bytes")
                self.scrapes += 1
            except (OSError, ValueError) as e:
                self.failures += 1
                self.first_error = self.first_error or f"{self.url}: {e}"
            took = time.monotonic() - t0
            self.seconds += took
            if self._stop.wait(max(0.0, self.every - took)):
                return

    def record(self, result: dict[str, Any]) -> None:
        """Add the scrapes to a load's result (a failed scrape is an error of the run)."""
        done = self.scrapes + self.failures
        extra = result.setdefault("extra", {})
        extra["scrapes"] = self.scrapes
        extra["scrape_ms"] = 1000 * self.seconds / done if done else None
        if self.failures:
            result["errors"] = result.get("errors", 0) + self.failures
            kinds = result.setdefault("error_kinds", {})
            kinds["metrics scrape failed"] = kinds.get("metrics scrape failed", 0) + self.failures
            result.setdefault("error_samples", []).append(self.first_error)


# ---------------------------------------------------------------------------
# memaslap
# ---------------------------------------------------------------------------

MEMASLAP_CONFIG = """\
# written by scripts/bench.py: memaslap's documented defaults, pinned
key
64 64 1
value
1024 1024 1
cmd
0 0.1
1 0.9
"""
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BLOCK_RE = re.compile(r"^\s*(Get|Set|Total) Statistics \((\d+) events\)\s*$")
FIELD_RE = re.compile(r"^(Min|Max|Avg|Geo|Std):\s+([-\d.]+)")
DIST_RE = re.compile(r"^(\d+):\s+([\d\s]+)$")
RUN_RE = re.compile(
    r"^Run time:\s*([\d.]+)s\s+Ops:\s*(\d+)\s+TPS:\s*(\d+)\s+Net_rate:\s*([\d.]+)M/s"
)
COUNTERS = {
    "cmd_get",
    "cmd_set",
    "get_misses",
    "verify_misses",
    "verify_failed",
    "expired_get",
    "unexpired_unget",
    "written_bytes",
    "read_bytes",
    "object_bytes",
    "packet_disorder",
    "packet_drop",
    "udp_timeout",
}


def find_memaslap() -> str | None:
    for name in ("memcaslap", "memaslap"):
        path = shutil.which(name)
        if path:
            return path
    return None


def parse_memaslap(text: str) -> dict[str, Any]:
    """Parse memaslap's final report (the part printed after the run).

    Returns {"blocks": {"get"|"set"|"total": {events, min, max, avg, geo, std,
    log2_dist: {bucket: count}}}, "counters": {...}, "run_time", "ops", "tps",
    "net_mb_s"}.  Times are in microseconds.
    """
    out: dict[str, Any] = {"blocks": {}, "counters": {}}
    lines = ANSI_RE.sub("", text).splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = BLOCK_RE.match(line)
        if m:
            block: dict[str, Any] = {"events": int(m.group(2))}
            dist: dict[int, int] = {}
            i += 1
            while i < len(lines) and lines[i].strip():
                s = lines[i].strip()
                fm = FIELD_RE.match(s)
                dm = DIST_RE.match(s)
                if fm:
                    block[fm.group(1).lower()] = float(fm.group(2))
                elif dm:
                    base = int(dm.group(1))
                    for j, count in enumerate(dm.group(2).split()):
                        dist[base + j] = int(count)
                i += 1
            block["log2_dist"] = dist
            out["blocks"][m.group(1).lower()] = block
            continue
        m = RUN_RE.match(line)
        if m:
            out["run_time"] = float(m.group(1))
            out["ops"] = int(m.group(2))
            out["tps"] = int(m.group(3))
            out["net_mb_s"] = float(m.group(4))
        elif ":" in line:
            name, _, value = line.partition(":")
            if name in COUNTERS and value.strip().isdigit():
                out["counters"][name] = int(value)
        i += 1
    return out


def log2_percentile(block: dict[str, Any], q: float) -> float | None:
    """Estimate the q-quantile (us) from memaslap's log2 histogram.

    memaslap files a latency v (us) in bucket ceil(log2(v)), i.e. bucket i holds
    (2**(i-1), 2**i].  The estimate interpolates geometrically inside the
    bucket and is clamped to the reported Min/Max.
    """
    dist: dict[int, int] = block.get("log2_dist") or {}
    total = sum(dist.values())
    if total == 0:
        return None
    target = q * total
    cum = 0
    est = None
    for i in sorted(dist):
        c = dist[i]
        if c == 0:
            continue
        if cum + c >= target:
            hi = float(2**i)
            lo = hi / 2 if i > 0 else 0.0
            frac = (target - cum) / c
            est = lo * (hi / lo) ** frac if lo > 0 else hi * frac
            break
        cum += c
    if est is None:
        return None
    if "min" in block:
        est = max(est, block["min"])
    if "max" in block:
        est = min(est, block["max"])
    return est


def server_cpu(
    before: tuple[float, float, int, int],
    after: tuple[float, float, int, int],
    wall: float,
    ops: float,
) -> dict[str, float | None]:
    """The server's CPU over a run: % of one core, and per request served: microseconds of
    user and of system time, involuntary context switches (preempted) and voluntary ones
    (slept: waited for a socket or a lock)."""
    user, system = after[0] - before[0], after[1] - before[1]
    if not ops or math.isnan(user + system):
        return {"server_cpu_pct": None}
    return {
        "server_cpu_pct": 100 * (user + system) / wall if wall > 0 else None,
        "server_user_us_per_op": 1e6 * user / ops,
        "server_sys_us_per_op": 1e6 * system / ops,
        "server_preempted_per_op": (after[3] - before[3]) / ops,
        "server_sleeps_per_op": (after[2] - before[2]) / ops,
    }


# /proc/stat's first line, in its order (Linux): the machine's CPU time by kind
MACHINE_CPU = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_ticks() -> list[int]:
    """The whole machine's CPU time so far, in clock ticks, by MACHINE_CPU's kinds."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return []
    return [int(v) for v in fields[1 : 1 + len(MACHINE_CPU)]]


def machine_cpu(before: list[int], after: list[int]) -> dict[str, Any]:
    """How the machine's CPUs spent a run, in % of all their time: what no process is
    charged with shows here (softirq: the network stack's own work; idle: neither the
    server nor the load generator had work to run)."""
    spent = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(spent)
    if not total or len(spent) != len(MACHINE_CPU):
        return {}
    return {"machine_pct": {k: 100 * v / total for k, v in zip(MACHINE_CPU, spent, strict=True)}}


def run_memaslap(server: Server, args: argparse.Namespace, division: int) -> dict[str, Any]:
    exe = find_memaslap()
    if exe is None:
        raise RuntimeError("memaslap/memcaslap not found (install libmemcached-tools)")
    secs = max(1, math.ceil(args.duration))
    with tempfile.TemporaryDirectory(prefix="bench-memaslap-") as tmp:
        cfg = Path(tmp) / "memaslap.cnf"
        cfg.write_text(MEMASLAP_CONFIG)
        cmd = [exe, "-s", f"{HOST}:{server.port}", "-F", str(cfg)]
        cmd += ["-T", str(args.memaslap_threads), "-c", str(args.memaslap_concurrency)]
        cmd += ["-t", f"{secs}s", "-S", f"{secs}s"]  # -S: needed for the latency report
        if division > 1:
            cmd += ["-d", str(division)]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu0, wall0, machine0 = server.cpu_sample(), time.monotonic(), machine_ticks()
        try:
            proc = subprocess.run(
                cmd,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=secs + 60,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"memaslap did not finish within {secs + 60}s") from e
        cpu1, wall1, machine1 = server.cpu_sample(), time.monotonic(), machine_ticks()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    parsed = parse_memaslap(proc.stdout)
    if "run_time" not in parsed or not parsed["run_time"]:
        raise RuntimeError(
            f"memaslap exited with {proc.returncode} and no final report:\n"
            f"{proc.stdout[-1500:]}{proc.stderr[-1500:]}"
        )
    counters = parsed["counters"]
    run_time = parsed["run_time"]
    total = parsed["blocks"].get("total", {})
    p50 = log2_percentile(total, 0.50)
    p99 = log2_percentile(total, 0.99)
    errors: dict[str, int] = {}
    for name in ("get_misses", "verify_misses", "verify_failed"):
        if counters.get(name):
            errors[name] = counters[name]
    if proc.returncode != 0:
        errors["memaslap_exit_status"] = proc.returncode
    wall = wall1 - wall0
    result: dict[str, Any] = {
        "ops_per_s": parsed["ops"] / run_time,
        "p50_ms": None if p50 is None else p50 / 1000,
        "p99_ms": None if p99 is None else p99 / 1000,
        "avg_ms": total["avg"] / 1000 if "avg" in total else None,
        "latency_approx": True,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_samples": [proc.stderr.strip()[-500:]] if proc.stderr.strip() else [],
        **server_cpu(cpu0, cpu1, wall, parsed["ops"]),
        **machine_cpu(machine0, machine1),
        "client_cpu_pct": 100
        * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
        / run_time,
        "command": shlex.join(cmd),
        "memaslap": parsed,
    }
    cmd_get, cmd_set = counters.get("cmd_get", 0), counters.get("cmd_set", 0)
    extra: dict[str, Any] = {"get/s": cmd_get / run_time, "set/s": cmd_set / run_time}
    if division > 1:
        # memaslap counts each key of a multiget in cmd_get (and in TPS), and one
        # event per multiget round trip in the Get Statistics block.
        gets = parsed["blocks"].get("get", {}).get("events", 0)
        sets = parsed["blocks"].get("set", {}).get("events", 0)
        extra = {
            "get_keys/s": cmd_get / run_time,
            "set/s": cmd_set / run_time,
            "multigets/s": gets / run_time,
            "round_trips/s": (gets + sets) / run_time,
            "keys_per_multiget": cmd_get / gets if gets else None,
        }
    result["extra"] = extra
    return result


# ---------------------------------------------------------------------------
# Python get/set mix
# ---------------------------------------------------------------------------

STORED = b"STORED\r\n"
END = b"END\r\n"
HD = b"HD\r\n"
EN = b"EN\r\n"


def mix_key(k: int) -> bytes:
    return b"mix:%06d" % k


def mix_value(k: int, size: int) -> bytes:
    unit = b"%08d." % k
    return (unit * (size // len(unit) + 1))[:size]


def preload(port: int, nkeys: int, value_size: int, batch: int = 200) -> None:
    """Store every key of the mix once, pipelined, checking each reply."""
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for first in range(0, nkeys, batch):
            ks = range(first, min(first + batch, nkeys))
            payload = b"".join(
                b"set %s 0 0 %d\r\n%s\r\n" % (mix_key(k), value_size, mix_value(k, value_size))
                for k in ks
            )
            s.sendall(payload)
            want = STORED * len(ks)
            got = b""
            while len(got) < len(want):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed the connection during preload")
                got += chunk
            if got != want:
                bad = next((x for x in got.split(b"\r\n") if x != b"STORED"), got)
                raise RuntimeError(f"preload: unexpected reply {bad[:200]!r} to a set")


class _Conn:
    __slots__ = ("sock", "buf", "t0", "op", "expected")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.t0 = 0
        self.op = 0
        self.expected = b""


def _classify_get(buf: bytes, key: bytes) -> tuple[str, str, int]:
    """Classify an (unexpected) reply to ``get key``.

    Returns (state, message, consumed); state is "incomplete", "miss",
    "wrong" (well-formed VALUE reply with the wrong key, flags or data),
    "error" (an error line) or "desync" (malformed).
    """
    if buf.startswith(END):
        return "miss", "unexpected miss (key was preloaded)", len(END)
    if END.startswith(buf):
        return "incomplete", "", 0
    nl = buf.find(b"\r\n")
    if nl < 0:
        if len(buf) > 4096:
            return "desync", f"no line end in {buf[:80]!r}", len(buf)
        return "incomplete", "", 0
    line = buf[:nl]
    if line.startswith(b"VALUE "):
        parts = line.split()
        if len(parts) not in (4, 5) or not parts[3].isdigit():
            return "desync", f"malformed VALUE line {line[:80]!r}", len(buf)
        n = int(parts[3])
        need = nl + 2 + n + 2 + len(END)
        if len(buf) < need:
            return "incomplete", "", 0
        if buf[nl + 2 + n : need] != b"\r\n" + END:
            return "desync", f"bad data block/terminator in {buf[:80]!r}...", len(buf)
        if parts[1] != key:
            return "wrong", f"asked {key!r}, got {parts[1]!r}", need
        return "wrong", f"wrong value/flags for {key!r}: {buf[: min(need, 80)]!r}", need
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        return "error", f"error reply to get: {line[:80]!r}", nl + 2
    return "desync", f"unexpected reply to get: {line[:80]!r}", len(buf)


def _classify_set(buf: bytes) -> tuple[str, str, int]:
    nl = buf.find(b"\r\n")
    if nl < 0:
        if STORED.startswith(buf) or len(buf) < 1024:
            return "incomplete", "", 0
        return "desync", f"no line end in {buf[:80]!r}", len(buf)
    line = buf[:nl]
    if line == b"STORED":
        return "error", "", nl + 2  # only reached with trailing bytes: caller sees desync
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        return "error", f"error reply to set: {line[:80]!r}", nl + 2
    return "desync", f"unexpected reply to set: {line[:80]!r}", len(buf)


def _classify_mg(buf: bytes, key: bytes) -> tuple[str, str, int]:
    """`_classify_get` for ``mg <key> v``: ``VA <size>`` and the value, or ``EN``."""
    if buf.startswith(EN):
        return "miss", "unexpected miss (key was preloaded)", len(EN)
    if EN.startswith(buf):
        return "incomplete", "", 0
    nl = buf.find(b"\r\n")
    if nl < 0:
        if len(buf) > 4096:
            return "desync", f"no line end in {buf[:80]!r}", len(buf)
        return "incomplete", "", 0
    line = buf[:nl]
    if line.startswith(b"VA "):
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return "desync", f"malformed VA line {line[:80]!r}", len(buf)
        need = nl + 2 + int(parts[1]) + 2
        if len(buf) < need:
            return "incomplete", "", 0
        if buf[need - 2 : need] != b"\r\n":
            return "desync", f"bad data block in {buf[:80]!r}...", len(buf)
        return "wrong", f"wrong value for {key!r}: {buf[: min(need, 80)]!r}", need
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        return "error", f"error reply to mg: {line[:80]!r}", nl + 2
    return "desync", f"unexpected reply to mg: {line[:80]!r}", len(buf)


def _classify_ms(buf: bytes) -> tuple[str, str, int]:
    nl = buf.find(b"\r\n")
    if nl < 0:
        if HD.startswith(buf) or len(buf) < 1024:
            return "incomplete", "", 0
        return "desync", f"no line end in {buf[:80]!r}", len(buf)
    line = buf[:nl]
    if line == b"HD":
        return "error", "", nl + 2  # only reached with trailing bytes: caller sees desync
    if line == b"ERROR" or line.startswith((b"CLIENT_ERROR", b"SERVER_ERROR")):
        return "error", f"error reply to ms: {line[:80]!r}", nl + 2
    return "desync", f"unexpected reply to ms: {line[:80]!r}", len(buf)


def mix_worker(
    idx: int,
    port: int,
    nconns: int,
    cfg: dict[str, Any],
    ready_q: Any,
    result_q: Any,
    go: Any,
    go_at: Any,
) -> None:
    """One load-generator process: nconns closed-loop connections."""
    nkeys: int = cfg["keys"]
    vsize: int = cfg["value_size"]
    duration: float = cfg["duration"]
    max_ops: int = cfg["max_ops"]
    errors: dict[str, int] = {}
    samples: list[str] = []
    lat = array("q")
    counts = {"get": 0, "set": 0, "reconnects": 0, "dropped_conns": 0}

    def error(kind: str, msg: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1
        if errors[kind] <= 2 and len(samples) < 10 and msg:  # a few of each kind
            samples.append(f"[worker {idx}] {kind}: {msg}")

    try:
        if cfg.get("meta"):  # the same operations in the meta protocol
            get_reqs = [b"mg %s v\r\n" % mix_key(k) for k in range(nkeys)]
            set_reqs = [
                b"ms %s %d\r\n%s\r\n" % (mix_key(k), vsize, mix_value(k, vsize))
                for k in range(nkeys)
            ]
            hits = [b"VA %d\r\n%s\r\n" % (vsize, mix_value(k, vsize)) for k in range(nkeys)]
            stored = HD
            classify_get, classify_set = _classify_mg, _classify_ms
        else:
            get_reqs = [b"get %s\r\n" % mix_key(k) for k in range(nkeys)]
            set_reqs = [
                b"set %s 0 0 %d\r\n%s\r\n" % (mix_key(k), vsize, mix_value(k, vsize))
                for k in range(nkeys)
            ]
            hits = [
                b"VALUE %s 0 %d\r\n%s\r\n" % (mix_key(k), vsize, mix_value(k, vsize)) + END
                for k in range(nkeys)
            ]
            stored = STORED
            classify_get, classify_set = _classify_get, _classify_set
        rng = random.Random(cfg["seed"] * 1009 + idx)
        plan_mask = (1 << 16) - 1
        set_ratio = 1.0 - cfg["get_ratio"]
        plan = [
            (rng.randrange(nkeys) << 1) | (rng.random() < set_ratio) for _ in range(plan_mask + 1)
        ]
        pos = rng.randrange(plan_mask + 1)

        def connect() -> socket.socket:
            s = socket.create_connection((HOST, port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            return s

        sel = selectors.DefaultSelector()
        conns = []
        for _ in range(nconns):
            c = _Conn(connect())
            sel.register(c.sock, selectors.EVENT_READ, c)
            conns.append(c)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        ready_q.put((idx, f"setup failed: {e!r}"))
        return
    ready_q.put((idx, None))
    if not go.wait(60):
        result_q.put({"idx": idx, "fatal": "no start signal"})
        return
    while time.monotonic() < go_at.value:
        time.sleep(0.001)

    perf = time.perf_counter_ns
    live = len(conns)

    def issue(c: _Conn) -> bool:
        nonlocal pos
        op = plan[pos]
        pos = (pos + 1) & plan_mask
        c.op = op
        if op & 1:
            req = set_reqs[op >> 1]
            c.expected = stored
        else:
            req = get_reqs[op >> 1]
            c.expected = hits[op >> 1]
        c.buf = b""
        c.t0 = perf()
        try:
            n = c.sock.send(req)
            if n != len(req):  # rare: fall back to a blocking send of the rest
                c.sock.setblocking(True)
                c.sock.sendall(req[n:])
                c.sock.setblocking(False)
        except OSError as e:
            error("send", repr(e))
            return reconnect(c)
        return True

    def reconnect(c: _Conn) -> bool:
        nonlocal live
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        try:
            c.sock = connect()
        except OSError as e:
            error("reconnect_failed", repr(e))
            counts["dropped_conns"] += 1
            live -= 1
            return False
        counts["reconnects"] += 1
        sel.register(c.sock, selectors.EVENT_READ, c)
        return issue(c)

    cpu0 = time.process_time()
    start = perf()
    deadline = start + int(duration * 1e9)
    for c in conns:
        issue(c)
    ops = 0
    now = start
    while ops < max_ops and live > 0:
        now = perf()
        if now >= deadline:
            break
        for skey, _ in sel.select((deadline - now) / 1e9):
            c = skey.data
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                error("recv", repr(e))
                reconnect(c)
                continue
            if not data:
                error("disconnect", "server closed the connection")
                reconnect(c)
                continue
            buf = c.buf + data if c.buf else data
            expected = c.expected
            if buf == expected:  # fast path: exactly the right reply
                t = perf()
                if t > deadline:
                    continue
                lat.append(t - c.t0)
                ops += 1
                counts["set" if c.op & 1 else "get"] += 1
                issue(c)
                continue
            if len(buf) < len(expected) and expected.startswith(buf):
                c.buf = buf
                continue
            if c.op & 1:
                state, msg, used = classify_set(buf)
            else:
                state, msg, used = classify_get(buf, mix_key(c.op >> 1))
            if state == "incomplete":
                c.buf = buf
                continue
            if state == "desync" or used != len(buf):
                error("malformed", msg or f"trailing bytes after reply: {buf[:80]!r}")
                reconnect(c)
            elif state == "miss":
                error("miss", msg)
                issue(c)
            elif state == "wrong":
                error("wrong_value", msg)
                reconnect(c)  # may be the reply to another request: start clean
            else:
                error("error_reply", msg)
                reconnect(c)  # error replies can come in pairs; start clean
    elapsed = (min(perf(), deadline) - start) / 1e9
    cpu = time.process_time() - cpu0
    for c in conns:
        try:
            c.sock.close()
        except OSError:
            pass
    result_q.put(
        {
            "idx": idx,
            "ops": ops,
            "elapsed": elapsed,
            "cpu": cpu,
            "counts": counts,
            "errors": errors,
            "samples": samples,
            "lat": lat.tobytes(),
        }
    )


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of a sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[rank - 1])


def run_mix(server: Server, args: argparse.Namespace, meta: bool = False) -> dict[str, Any]:
    preload(server.port, args.mix_keys, args.mix_value_size)
    procs = args.mix_procs
    per_proc = [args.mix_conns // procs + (i < args.mix_conns % procs) for i in range(procs)]
    cfg = {
        "keys": args.mix_keys,
        "value_size": args.mix_value_size,
        "duration": args.duration,
        "max_ops": max(1, args.max_ops // procs),
        "get_ratio": 0.9,
        "seed": args.seed,
        "meta": meta,
    }
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else None)
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    go, go_at = ctx.Event(), ctx.Value("d", 0.0)
    workers = [
        ctx.Process(
            target=mix_worker,
            args=(i, server.port, n, cfg, ready_q, result_q, go, go_at),
            daemon=True,
        )
        for i, n in enumerate(per_proc)
        if n > 0
    ]
    results: list[dict[str, Any]] = []
    try:
        for w in workers:
            w.start()
        for _ in workers:
            idx, problem = ready_q.get(timeout=60)
            if problem:
                raise RuntimeError(f"mix worker {idx}: {problem}")
        cpu0, wall0, machine0 = server.cpu_sample(), time.monotonic(), machine_ticks()
        go_at.value = time.monotonic() + 0.1
        go.set()
        for _ in workers:
            results.append(result_q.get(timeout=args.duration + 60))
        cpu1, wall1, machine1 = server.cpu_sample(), time.monotonic(), machine_ticks()
        for w in workers:
            w.join(10)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
                w.join(5)
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise RuntimeError(f"mix worker failed: {fatal}")
    lat: list[int] = []
    errors: dict[str, int] = {}
    samples: list[str] = []
    counts: dict[str, int] = {}
    for r in results:
        a = array("q")
        a.frombytes(r["lat"])
        lat.extend(a)
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
        samples += r["samples"]
    lat.sort()
    elapsed = max(r["elapsed"] for r in results)
    ops = sum(r["ops"] for r in results)
    ms = 1e-6
    wall = wall1 - wall0
    return {
        "ops_per_s": sum(r["ops"] / r["elapsed"] for r in results if r["elapsed"] > 0),
        "p50_ms": percentile(lat, 0.50) * ms if lat else None,
        "p99_ms": percentile(lat, 0.99) * ms if lat else None,
        "avg_ms": statistics.fmean(lat) * ms if lat else None,
        "latency_approx": False,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "error_samples": samples[:10],
        **server_cpu(cpu0, cpu1, wall, ops),
        **machine_cpu(machine0, machine1),
        "client_cpu_pct": 100 * sum(r["cpu"] for r in results) / elapsed if elapsed else None,
        "client_cpu_pct_per_proc": [
            100 * r["cpu"] / r["elapsed"] for r in results if r["elapsed"] > 0
        ],
        "extra": {
            "ops": ops,
            "get/s": counts.get("get", 0) / elapsed if elapsed else 0,
            "set/s": counts.get("set", 0) / elapsed if elapsed else 0,
            "p90_ms": percentile(lat, 0.90) * ms if lat else None,
            "p999_ms": percentile(lat, 0.999) * ms if lat else None,
            "max_ms": lat[-1] * ms if lat else None,
            "reconnects": counts.get("reconnects", 0),
            "dropped_conns": counts.get("dropped_conns", 0),
        },
        "config": {**cfg, "procs": procs, "conns": args.mix_conns},
    }


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def run_load(load: str, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    if load == "memaslap":
        return run_memaslap(server, args, 1)
    if load == "multiget":
        return run_memaslap(server, args, args.multiget_keys)
    return run_mix(server, args, meta=load == "meta")


def fmt_num(v: float | None, digits: int = 3, approx: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{'~' if approx else ''}{v:.{digits}f}"


def ratio_of(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt_ops(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


# server_cpu()'s figures
SERVER_CPU = (
    "server_cpu_pct",
    "server_user_us_per_op",
    "server_sys_us_per_op",
    "server_preempted_per_op",
    "server_sleeps_per_op",
)


def cpu_per_op(r: dict[str, Any]) -> str:
    """server_cpu()'s per-request figures of a run or a summary, and machine_cpu()'s split,
    for a line of output."""
    if r.get("server_user_us_per_op") is None:
        return ""
    line = (
        f"srv us/op {r['server_user_us_per_op']:.1f} user + {r['server_sys_us_per_op']:.1f} sys,"
        f" preempted {r['server_preempted_per_op']:.2f}/op,"
        f" slept {r['server_sleeps_per_op']:.2f}/op"
    )
    machine = r.get("machine_pct")
    if machine:
        shown = ("user", "system", "softirq", "idle")
        line += "; machine " + ", ".join(f"{k} {machine[k]:.0f}%" for k in shown)
    return line


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def pair_ratios(runs: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[float]:
    """ops/s of each round of `runs` over the same round of `ref` (the two servers ran one
    after the other, alternating which went first), rounds where either failed left out.
    On a noisy machine the median of these pairs moves less than the ratio of the two
    medians, which takes each from a different round."""
    by_round = {r["round"]: r for r in ref if "failed" not in r and r.get("ops_per_s")}
    pairs = []
    for r in runs:
        other = by_round.get(r.get("round"))
        if other is not None and "failed" not in r and r.get("ops_per_s") is not None:
            pairs.append(r["ops_per_s"] / other["ops_per_s"])
    return pairs


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "failed" not in r]
    s: dict[str, Any] = {"runs": len(runs), "ok_runs": len(ok)}
    for key in ("ops_per_s", "p50_ms", "p99_ms", "avg_ms", "client_cpu_pct", *SERVER_CPU):
        s[key] = median_of(ok, key)
    machine = [r["machine_pct"] for r in ok if r.get("machine_pct")]
    if machine:
        s["machine_pct"] = {k: statistics.median(m[k] for m in machine) for k in machine[0]}
    s["errors"] = sum(r.get("errors", 0) for r in ok)
    kinds: dict[str, int] = {}
    for r in ok:
        for k, v in r.get("error_kinds", {}).items():
            kinds[k] = kinds.get(k, 0) + v
    s["error_kinds"] = kinds
    s["latency_approx"] = any(r.get("latency_approx") for r in ok)
    extras: dict[str, list[float]] = {}
    for r in ok:
        for k, v in r.get("extra", {}).items():
            if isinstance(v, int | float):
                extras.setdefault(k, []).append(v)
    s["extra"] = {k: statistics.median(v) for k, v in extras.items()}
    return s


def progress_line(load: str, rnd: int, name: str, r: dict[str, Any]) -> str:
    if "failed" in r:
        return f"  [{load} #{rnd}] {name:<9} FAILED: {r['failed']}"
    approx = bool(r.get("latency_approx"))
    return (
        f"  [{load} #{rnd}] {name:<9} {fmt_ops(r['ops_per_s']):>11} ops/s"
        f"  p50 {fmt_num(r['p50_ms'], approx=approx)} ms  p99 {fmt_num(r['p99_ms'], approx=approx)}"
        f" ms  errors {r['errors']}  srv cpu {fmt_num(r['server_cpu_pct'], 0)}%"
        f"  cli cpu {fmt_num(r['client_cpu_pct'], 0)}%  {cpu_per_op(r)}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare mcached with memcached under memaslap and a Python get/set mix "
        "(in the classic and in the meta protocol).",
        epilog="See the module docstring for what is measured and the caveats.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    p.add_argument("--threads", type=int, default=2, help="memcached worker threads (default 2)")
    p.add_argument(
        "--idle-conns",
        type=int,
        default=0,
        help="extra connections held open and idle during every load (default 0)",
    )
    p.add_argument(
        "--mcached-threads",
        type=int,
        default=None,
        help="mcached worker threads (default: mcached's own default)",
    )
    p.add_argument(
        "--only",
        choices=LOADS,
        action="append",
        help="run only this load (repeatable; default: all)",
    )
    p.add_argument("--servers", choices=("both", *SERVERS), default="both")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also run scripts/bench_ceiling.py over a dict and over mcached's cache: the "
        "most a Python server gets out of this machine, measured in the same run",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help=f"also run {METRICS_SERVER}: mcached with --metrics-listen on a free port, its "
        "/metrics read every --scrape-every seconds during each load",
    )
    p.add_argument(
        "--scrape-every",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="--metrics: seconds between two scrapes (default 1)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per load and server, servers alternating; the table shows medians",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also dump raw figures as JSON to PATH (default: stdout)",
    )
    g = p.add_argument_group("load parameters")
    g.add_argument("--memaslap-threads", type=int, default=2, help="memaslap -T (default 2)")
    g.add_argument("--memaslap-concurrency", type=int, default=32, help="memaslap -c (default 32)")
    g.add_argument("--multiget-keys", type=int, default=10, help="memaslap -d (default 10)")
    g.add_argument("--mix-procs", type=int, default=2, help="mix worker processes (default 2)")
    g.add_argument("--mix-conns", type=int, default=50, help="mix connections in all (default 50)")
    g.add_argument("--mix-keys", type=int, default=10_000, help="mix keyspace (default 10000)")
    g.add_argument("--mix-value-size", type=int, default=100, help="mix value bytes (default 100)")
    g.add_argument(
        "--max-ops",
        type=int,
        default=20_000_000,
        help="upper bound on mix requests per run, over all workers (default 20M)",
    )
    g.add_argument("--seed", type=int, default=1, help="seed of the mix's key/op sequence")
    d = p.add_argument_group("debugging")
    d.add_argument(
        "--mcached-cmd",
        help="command line replacing mcached's ({port} and {threads} are substituted); "
        "e.g. a memcached command to test this script against memcached on both sides",
    )
    d.add_argument("--memcached-cmd", help="command line replacing memcached's (same placeholders)")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.repeat < 1 or args.threads < 1 or args.scrape_every <= 0:
        p.error("--duration, --repeat, --threads and --scrape-every must be positive")
    if args.mix_procs < 1 or args.mix_conns < args.mix_procs or args.mix_keys < 1:
        p.error("need --mix-procs >= 1, --mix-conns >= --mix-procs, --mix-keys >= 1")
    return args


def server_templates(args: argparse.Namespace) -> dict[str, list[str]]:
    templates = {
        "mcached": mcached_cmd(args.mcached_threads),
        "memcached": memcached_cmd(args.threads),
        # as many processes as mcached has workers
        "ceiling": ceiling_cmd("dict", args.mcached_threads or default_threads()),
        "ceiling-cache": ceiling_cmd("cache", args.mcached_threads or default_threads()),
    }
    for name, override in (("mcached", args.mcached_cmd), ("memcached", args.memcached_cmd)):
        if override:
            if "{port}" not in override:
                raise SystemExit(f"--{name}-cmd must contain {{port}}")
            templates[name] = shlex.split(override)
    templates[METRICS_SERVER] = [
        *templates["mcached"],
        "--metrics-listen",
        HOST + ":{metrics_port}",
    ]
    return templates


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loads = [name for name in LOADS if not args.only or name in args.only]
    servers = list(SERVERS) if args.servers == "both" else [args.servers]
    if args.ceiling:
        servers += CEILINGS
    if args.metrics:
        servers.insert(servers.index("mcached") + 1 if "mcached" in servers else 0, METRICS_SERVER)
    templates = server_templates(args)
    if any(name in loads for name in ("memaslap", "multiget")) and find_memaslap() is None:
        print("memaslap (memcaslap) not found: install libmemcached-tools", file=sys.stderr)
        return 2

    load1, load5, load15 = os.getloadavg()
    print(f"mcached benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(
        f"cpus: {os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical; "
        f"load average {load1:.2f} {load5:.2f} {load15:.2f}"
    )
    print(f"python {platform.python_version()} ({sys.executable}); {platform.platform()}")
    print(
        f"duration {args.duration:g}s, repeat {args.repeat}, memcached threads {args.threads}, "
        f"mcached threads {args.mcached_threads or 'default'}, idle conns {args.idle_conns}, "
        f"memaslap: {find_memaslap() or '-'}"
    )
    for name in servers:
        print(f"{name:<9} command: {' '.join(templates[name])}")
    print(flush=True)

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        ld: {s: [] for s in servers} for ld in loads
    }
    versions: dict[str, str] = {}
    interrupted = False
    try:
        for load in loads:
            print(f"{load}:", flush=True)
            for rnd in range(1, args.repeat + 1):
                here = [s for s in servers if not (load == "meta" and s in TEXT_ONLY)]
                order = here if rnd % 2 == 1 else here[::-1]
                for name in order:
                    server = Server(name, templates[name], args.threads)
                    idle: list[socket.socket] = []
                    try:
                        server.start()
                        versions[name] = server.version
                        idle = open_idle(server.port, args.idle_conns)
                        scraper = None
                        if server.metrics_port:
                            scraper = Scraper(server.metrics_port, args.scrape_every)
                        with scraper or nullcontext():
                            result = run_load(load, server, args)
                        if scraper is not None:
                            scraper.record(result)
                        if not server.alive():
                            result["failed"] = "server died during the load:\n" + server.log_tail()
                    except (RuntimeError, OSError, ValueError) as e:
                        result = {"failed": str(e)}
                    finally:
                        for sock in idle:
                            sock.close()
                        server.stop()
                    result["round"] = rnd
                    runs[load][name].append(result)
                    print(progress_line(load, rnd, name, result), flush=True)
                    for sample in result.get("error_samples", [])[:10]:
                        print(f"      {sample}", flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: reporting what ran", flush=True)

    for load in ("meta",):
        if load in runs:
            for s in TEXT_ONLY:
                runs[load].pop(s, None)
    summary = {ld: {s: summarize(runs[ld][s]) for s in runs[ld]} for ld in loads}
    # each server's figures over memcached's, when memcached ran
    ratios: dict[str, dict[str, dict[str, Any]]] = {}
    for ld in loads:
        if "memcached" not in servers:
            continue
        ref = summary[ld]["memcached"]
        ratios[ld] = {}
        for s in summary[ld]:
            if s != "memcached":
                sm = summary[ld][s]
                ratios[ld][s] = {
                    k: (sm[k] / ref[k] if sm[k] is not None and ref[k] else None)
                    for k in ("ops_per_s", "p50_ms", "p99_ms")
                }
                ratios[ld][s]["ops_per_s_pairs"] = pair_ratios(runs[ld][s], runs[ld]["memcached"])

    print()
    title = f"medians of {args.repeat} run(s)" if args.repeat > 1 else "1 run each"
    print(f"Results ({title}; latency in ms; cpu in % of one core)")
    header = (
        f"{'load':<10} {'server':<15} {'ops/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'avg ms':>8}"
        f" {'errors':>7} {'srv cpu':>8} {'cli cpu':>8} {'ratio(ops)':>11}"
    )
    print(header)
    print("-" * len(header))
    for ld in loads:
        for s in summary[ld]:
            sm = summary[ld][s]
            approx = sm["latency_approx"]
            ratio = ratios.get(ld, {}).get(s, {}).get("ops_per_s")
            print(
                f"{ld:<10} {s:<15} {fmt_ops(sm['ops_per_s']):>11}"
                f" {fmt_num(sm['p50_ms'], approx=approx):>9}"
                f" {fmt_num(sm['p99_ms'], approx=approx):>9} {fmt_num(sm['avg_ms']):>8}"
                f" {sm['errors'] if sm['ok_runs'] else '-':>7}"
                f" {fmt_num(sm['server_cpu_pct'], 0):>8} {fmt_num(sm['client_cpu_pct'], 0):>8}"
                f" {fmt_num(ratio, 2):>11}"
            )
            if cpu_per_op(sm):
                print(f"{'':<26} {cpu_per_op(sm)}")
            extra = {k: v for k, v in sm["extra"].items() if v is not None}
            if extra:
                shown = ", ".join(
                    f"{k} {v:,.0f}" if v >= 100 else f"{k} {v:.3g}" for k, v in extra.items()
                )
                print(f"{'':<26} {shown}")
            if sm["error_kinds"]:
                kinds = ", ".join(f"{k} {v}" for k, v in sm["error_kinds"].items())
                print(f"{'':<26} ERRORS (all runs): {kinds}")
            if sm["ok_runs"] < sm["runs"]:
                print(f"{'':<26} {sm['runs'] - sm['ok_runs']} of {sm['runs']} run(s) FAILED")
    print()
    if any(summary[ld][s]["latency_approx"] for ld in loads for s in summary[ld]):
        print(
            "~ memaslap reports no percentiles, only a log2 histogram: its p50/p99 are estimates"
            " (factor-2 buckets, interpolated); avg ms is exact."
        )
    print(
        "errors: mix, meta = error/malformed/wrong replies, unexpected misses, disconnects (not"
        " counted as ops); memaslap = get_misses (+ verify failures, nonzero exit)."
    )
    print(
        "srv/cli cpu: CPU used by the server / load generator during the run, % of one core;"
        f" this machine has {os.cpu_count()} logical CPUs for both. srv us/op: the server's"
        " user and system CPU per request served; preempted/op and slept/op: its involuntary"
        " and voluntary context switches per request (all its processes and threads);"
        " machine: how all the CPUs spent the run (/proc/stat; softirq is the network"
        " stack's work, charged to no process)."
    )
    for ld in loads:
        for s in summary[ld]:
            per_proc = [
                p for r in runs[ld][s] for p in r.get("client_cpu_pct_per_proc", []) if p > 90
            ]
            if per_proc:
                print(
                    f"note: {ld}/{s}: a load-generator process used >90 % of a core; the client"
                    " may be the bottleneck"
                )
                break
    if ratios:
        print()
        print("ratio to memcached (ops/s: higher is better; latency: lower is better)")
        for ld, per_server in ratios.items():
            for s, r in per_server.items():
                pairs = r["ops_per_s_pairs"]
                by_pair = (
                    f"   (round by round: median {statistics.median(pairs):.2f}x,"
                    f" {min(pairs):.2f}x-{max(pairs):.2f}x over {len(pairs)})"
                    if len(pairs) > 1
                    else ""
                )
                print(
                    f"  {ld:<10} {s:<15} ops/s {fmt_num(r['ops_per_s'], 2)}x"
                    f"   p50 {fmt_num(r['p50_ms'], 2)}x   p99 {fmt_num(r['p99_ms'], 2)}x" + by_pair
                )
        if args.ceiling:
            print(
                "  ceiling: scripts/bench_ceiling.py, get/set/version over a dict and nothing"
                " else;\n  ceiling-cache: the same over mcached's slab cache (no daemon around it)"
            )
    if args.metrics:
        print()
        print(
            f"metrics endpoint on over off ({METRICS_SERVER} over mcached; scraped every"
            f" {args.scrape_every:g} s)"
        )
        for ld in loads:
            on, off = summary[ld].get(METRICS_SERVER), summary[ld].get("mcached")
            if on and off:
                print(
                    f"  {ld:<10} ops/s {fmt_num(ratio_of(on['ops_per_s'], off['ops_per_s']), 3)}x"
                    f"   p50 {fmt_num(ratio_of(on['p50_ms'], off['p50_ms']), 2)}x"
                    f"   p99 {fmt_num(ratio_of(on['p99_ms'], off['p99_ms']), 2)}x"
                )
    if "mix" in summary and "meta" in summary:
        print()
        print("meta over mix, per server (mg <key> v against get, ms against set)")
        for s in summary["meta"]:
            meta, mix = summary["meta"][s], summary["mix"].get(s)
            if mix and meta["ops_per_s"] and mix["ops_per_s"]:
                print(
                    f"  {s:<15} ops/s {fmt_num(meta['ops_per_s'] / mix['ops_per_s'], 2)}x"
                    f"   p50 {fmt_num(ratio_of(meta['p50_ms'], mix['p50_ms']), 2)}x"
                    f"   p99 {fmt_num(ratio_of(meta['p99_ms'], mix['p99_ms']), 2)}x"
                )

    if args.json:
        doc = {
            "meta": {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "cpu_count": os.cpu_count(),
                "python": sys.version,
                "platform": platform.platform(),
                "loadavg_at_start": [load1, load5, load15],
                "server_versions": versions,
                "server_commands": {s: templates[s] for s in servers},
                "interrupted": interrupted,
            },
            "args": vars(args),
            "runs": runs,
            "summary": summary,
            "ratios": ratios,
        }
        text = json.dumps(doc, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"\nraw figures written to {args.json}")
    bad = any(
        run_failed(r, EXPECTED_ERRORS.get(s, set()))
        for ld in loads
        for s, rs in runs[ld].items()
        for r in rs
    )
    return 130 if interrupted else (1 if bad else 0)


def run_failed(run: dict[str, Any], expected: set[str]) -> bool:
    """A run that failed, or counted errors other than the `expected` kinds."""
    if "failed" in run:
        return True
    kinds = run.get("error_kinds") or {}
    if not kinds:
        return bool(run.get("errors"))
    return any(n for kind, n in kinds.items() if kind not in expected)


if __name__ == "__main__":
    sys.exit(main())
