#!/usr/bin/env python3
"""Where a request's CPU goes on the whole machine: the server, the kernel, the client.

For each server (mcached, then memcached, or the commands given), this starts it on a free
loopback port, runs memaslap (``-T 2 -c 32``, 10 % set, 64-byte keys, 1 KB values, as
bench.py's ``memaslap`` load) and, in the middle of the run, ``perf record -a`` for a few
seconds. From the samples it prints, per request served (memaslap's own ops/s), the CPU of
the server's processes in user space and in the kernel, the client's, and the machine's,
and the share of a few kernel functions that tell wake-ups and context switches apart from
the network stack.

It needs ``perf`` (Debian's ``linux-perf``) and a ``kernel.perf_event_paranoid`` that lets
root sample every CPU. Sampling costs a little: read the figures side by side, in one run.

Usage: ``python scripts/perf_profile.py [--record 5] [--duration 12] [--threads 2]
[--keep DIR]``; ``--mcached-cmd`` / ``--memcached-cmd`` replace the commands (``{port}``
and ``{threads}`` placeholders).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import servers

ROOT = servers.ROOT
MEMASLAP_CONFIG = "key\n64 64 1\nvalue\n1024 1024 1\ncmd\n0 0.1\n1 0.9\n"
# kernel functions worth naming: a reply that wakes its client, and a switch of tasks
MACHINE = ("server user", "server kernel", "client", "other")  # the rows that add up
KERNEL_MARKS = {
    "_raw_spin_unlock_irqrestore": "wake-ups (interrupts back on: mostly try_to_wake_up)",
    "finish_task_switch.isra.0": "context switches",
}


def memaslap() -> str:
    for name in ("memaslap", "memcaslap"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("memaslap (Debian: memcaslap, in libmemcached-tools) is not installed")


def report(data: Path, *fields: str, comm: str | None = None) -> list[tuple[float, list[str]]]:
    """``perf report`` rows as (percent of all samples, the row's sort keys)."""
    cmd = ["perf", "report", "-i", str(data), "--no-children", "--stdio", "-g", "none"]
    cmd += ["--sort", ",".join(fields), "--field-separator", "\t"]
    if comm:
        cmd += ["--comm", comm]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split("\t")]
        rows.append((float(cols[0].rstrip("%")), cols[1:]))
    return rows


def profile(name: str, command: str, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    port = servers.free_port()
    argv = shlex.split(command.format(port=port, threads=args.threads))
    server = subprocess.Popen(argv, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        servers.wait_ready(server, port, timeout=30)
        config = workdir / "memaslap.cnf"
        config.write_text(MEMASLAP_CONFIG)
        load = subprocess.Popen(
            [memaslap(), "-s", f"127.0.0.1:{port}", "-T", "2", "-c", "32"]
            + ["-t", f"{args.duration}s", "-F", str(config), "-S", f"{args.duration}s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep((args.duration - args.record) / 2)
        data = workdir / f"{name}.perf.data"
        subprocess.run(
            ["perf", "record", "-a", "-g", "-o", str(data), "--", "sleep", str(args.record)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        out, _ = load.communicate()
    finally:
        servers.stop(server, 20)
    tps = re.findall(r"TPS: (\d+)", out)
    if not tps:
        sys.exit(f"{name}: memaslap printed no TPS:\n{out[-2000:]}")
    ops = int(tps[-1])
    rows = report(data, "comm", "dso")
    cpus = os.cpu_count() or 1
    per_request = cpus * 1e6 / ops / 100  # a percent of all samples -> us of CPU a request
    server_comms = set(comms_of(argv))
    figures = {"ops/s": float(ops), "server user": 0.0, "server kernel": 0.0}
    figures |= {"client": 0.0, "other": 0.0}
    for pct, (comm, dso) in rows:
        if comm in server_comms:
            key = "server kernel" if "kernel" in dso else "server user"
        elif comm.startswith("memcaslap") or comm.startswith("memaslap"):
            key = "client"
        else:
            key = "other"
        figures[key] += pct * per_request
    for pct, (comm, sym) in report(data, "comm", "sym"):
        mark = sym.split("] ", 1)[-1]
        if comm in server_comms and mark in KERNEL_MARKS:
            figures[KERNEL_MARKS[mark]] = figures.get(KERNEL_MARKS[mark], 0.0) + pct * per_request
    return figures


def comms_of(argv: list[str]) -> list[str]:
    """The names perf gives the server's processes and threads (their ``comm``)."""
    exe = os.path.basename(argv[0])
    if exe.startswith("python"):
        return [exe[:15], "python", "python3"]
    return [exe[:15], "mc-worker", "mc-lrumaint", "mc-lrucrawler"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=12, help="seconds of memaslap per server")
    ap.add_argument("--record", type=int, default=5, help="seconds sampled, mid-run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--mcached-cmd",
        default=f"{shlex.quote(sys.executable)} -m mcached -u root -l 127.0.0.1 -p {{port}} "
        "-t {threads}",
    )
    ap.add_argument(
        "--memcached-cmd", default="memcached -u root -l 127.0.0.1 -p {port} -t {threads}"
    )
    ap.add_argument("--keep", type=Path, help="keep perf.data files in this directory")
    args = ap.parse_args()
    if args.record >= args.duration:
        sys.exit("--record must be shorter than --duration")
    if not shutil.which("perf"):
        sys.exit("perf is not installed (Debian: linux-perf)")
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{ROOT}:{env_path}" if env_path else str(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = {
            "mcached": profile("mcached", args.mcached_cmd, args, workdir),
            "memcached": profile("memcached", args.memcached_cmd, args, workdir),
        }
    keys = list(dict.fromkeys(k for r in results.values() for k in r))
    print(f"{'us of CPU a request':<58}{'mcached':>12}{'memcached':>12}")
    for key in keys:
        vals = [results[n].get(key, 0.0) for n in results]
        fmt = "{:>12,.0f}" if key == "ops/s" else "{:>12.1f}"
        print(f"{key:<58}" + "".join(fmt.format(v) for v in vals))
    machine = [sum(v for k, v in r.items() if k in MACHINE) for r in results.values()]
    print(f"{'the machine (server, client, other)':<58}" + "".join(f"{v:>12.1f}" for v in machine))


if __name__ == "__main__":
    main()
