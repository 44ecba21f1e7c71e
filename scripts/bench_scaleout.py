#!/usr/bin/env python3
"""Scale-out on one machine: what adding a 21st node to a 20-node cluster costs a client.

    python scripts/bench_scaleout.py                  # 20 nodes + 1, 20,000 keys
    python scripts/bench_scaleout.py -n 5 --keys 5000

Starts ``-n`` nodes and one spare (``python -m mcached -t 1`` each, one cluster file,
``--enable-config-set``), loads ``--keys`` keys through `ClusterClient`, then measures:

1. keys remapped when the spare joins: counted with the clients' hashing (pymemcache's
   rendezvous, `mcached.client.hashing`) over the loaded keys; rendezvous hashing moves only
   the keys the new node wins, about 1/(n+1) of them;
2. misses a reading client sees while ``mcached-tool cluster add`` runs, without and with
   ``--warm``: a read-through client (a miss is counted, then the key is set again, as an
   application does) reads every key in turn, polling the endpoint every ``--poll`` seconds,
   from before the add until it has read every key once after it moved to the new list.

Between the two runs every node is flushed, the spare removed and the keys loaded again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import servers

ROOT = servers.ROOT
sys.path.insert(0, str(ROOT))

from mcached.client.cluster import ClusterClient  # noqa: E402
from mcached.client.hashing import Ring  # noqa: E402
from mcached.cluster.config import Node  # noqa: E402


def ask(port: int, data: bytes, until: bytes = b"\r\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        buf = b""
        while not buf.endswith(until):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def tool(endpoint: int, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "mcached.client.tool", f"127.0.0.1:{endpoint}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mcached-tool {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def load(client: ClusterClient, keys: list[str]) -> None:
    for i in range(0, len(keys), 500):
        client.set_many({k: k.encode() for k in keys[i : i + 500]}, noreply=False)


def run_add(
    endpoint: int, spare: int, keys: list[str], poll: float, warm: bool
) -> dict[str, float]:
    """Misses seen by a read-through client while the spare is added."""
    client = ClusterClient(f"127.0.0.1:{endpoint}", poll_interval=poll, ignore_exc=True)
    before = len(client.servers)
    load(client, keys)
    misses = 0
    reads = 0
    switched_at: list[float] = []
    passes_after = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal misses, reads, passes_after
        while not stop.is_set():
            switched = bool(switched_at)
            for k in keys:
                reads += 1
                if client.get(k) is None:
                    misses += 1
                    client.set(k, k.encode())  # read-through: the application fills it
                if not switched_at and len(client.servers) > before:
                    switched_at.append(time.monotonic())
            if switched:
                passes_after += 1
                return

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    out = tool(endpoint, "cluster", "add", f"localhost:{spare}", *(["--warm"] if warm else []))
    announced = time.monotonic()
    t.join(600)
    stop.set()
    client.close()
    copied = 0.0
    seconds = 0.0
    if warm:
        lines = out.splitlines()
        print("\n".join(["  $ mcached-tool ... cluster add ... --warm", *lines[:3], "  ..."]))
        print("\n".join(line for line in lines if line.startswith(("warm: copied", "config"))))
    for line in out.splitlines():
        if line.startswith("warm: copied "):
            words = line.split()
            copied = float(words[2])
            seconds = float(words[7].rstrip("s"))
    return {
        "misses": misses,
        "reads": reads,
        "tool_s": announced - start,
        "switch_s": (switched_at[0] - start) if switched_at else float("nan"),
        "copied": copied,
        "copy_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--nodes", type=int, default=20)
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--poll", type=float, default=1.0, help="the client's poll interval")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="mcached-scaleout-"))
    ports: list[int] = []
    while len(ports) < args.nodes + 1:
        p = servers.free_port()
        if p not in ports:
            ports.append(p)
    nodes, spare = ports[:-1], ports[-1]
    cluster_file = workdir / "cluster.conf"
    cluster_file.write_text("".join(f"localhost:{p}\n" for p in nodes))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = []
    try:
        for port in ports:
            log = open(workdir / f"node-{port}.log", "ab")
            cmd = [sys.executable, "-m", "mcached", "-l", "127.0.0.1", "-p", str(port), "-t", "1"]
            cmd += ["--cluster-file", str(cluster_file), "--enable-config-set"]
            cmd += ["--cluster-node-name", "localhost", "-m", "64"]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=env))
            log.close()
        for port, proc in zip(ports, procs, strict=True):
            servers.wait_ready(proc, port, timeout=30 + 2 * len(ports))
        keys = [f"user:{i}" for i in range(args.keys)]
        listed = [Node("localhost", "127.0.0.1", p) for p in nodes]
        before, after = Ring(listed), Ring([*listed, Node("localhost", "127.0.0.1", spare)])
        moved = sum(1 for k in keys if before.owner(k) != after.owner(k))
        print(
            f"{args.nodes} nodes + 1, {args.keys} keys: {moved} keys remapped when node "
            f"{args.nodes + 1} joins ({moved / args.keys:.2%}; 1/{args.nodes + 1} = "
            f"{1 / (args.nodes + 1):.2%})",
            flush=True,
        )
        results = {}
        for warm in (False, True):
            for port in ports:
                ask(port, b"flush_all\r\n")
            tool(nodes[0], "cluster", "set", *(f"localhost:{p}" for p in nodes))
            time.sleep(0.2)
            r = run_add(nodes[0], spare, keys, args.poll, warm)
            results[warm] = r
            label = "with --warm" if warm else "without --warm"
            extra = f"; warm copied {r['copied']:.0f} items in {r['copy_s']:.2f}s" if warm else ""
            print(
                f"add {label}: {r['misses']:.0f} misses in {r['reads']:.0f} reads "
                f"(the tool ran {r['tool_s']:.2f}s; the client used {args.nodes + 1} nodes "
                f"{r['switch_s']:.2f}s after it started){extra}",
                flush=True,
            )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
