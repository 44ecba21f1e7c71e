#!/usr/bin/env python3
"""Start an N-node mcached cluster on this machine, for development, in one command.

    python scripts/cluster.py                 # 3 nodes on 127.0.0.1:21001-21003
    python scripts/cluster.py -n 5 --spares 1 -- -m 16 -vv
    python scripts/cluster.py -n 20           # ElastiCache's largest cluster, on one machine

Every node runs ``python -m mcached`` from this checkout (no install needed) with one shared
cluster file, so each answers ``config get cluster`` with the same node list, and with
``--enable-config-set``, so ``mcached-tool HOST:PORT cluster add|remove`` works. ``--spares``
starts extra nodes that are not in the file yet, ready to be added. Each node runs one
worker process (``--threads``; a node is the ``mcached`` command: its supervisor, workers
and maintainer), so 20 nodes fit one machine. Flags after ``--`` go to every node. The
cluster file and the nodes' logs live in ``--dir`` (default: a temporary directory, removed
at exit). Ctrl-C (or SIGTERM) stops every node.

Edit the printed cluster file and every node serves the new list within a second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import servers

ROOT = servers.ROOT


def wait_for(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the node accepts a connection (only that: `node_args` may turn on TLS or
    authentication, where a plain ``version`` would not be answered)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"node on port {port} exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"node on port {port} did not start in {timeout}s") from None
            time.sleep(0.05)


def config_get(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=2) as s:
        s.sendall(b"config get cluster\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n") and not buf.endswith(b"ERROR\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start an N-node local mcached cluster (Ctrl-C stops it).",
        epilog="Arguments after -- are passed to every node, e.g. -- -m 16 -vv",
    )
    parser.add_argument("-n", "--nodes", type=int, default=3, help="nodes in the cluster (3)")
    parser.add_argument(
        "--spares",
        type=int,
        default=0,
        help="extra nodes started but not listed, to try `cluster add` (0)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--name", default="localhost", help="hostname written in the cluster file (localhost)"
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=21001,
        help="first port, the next ones follow (21001); 0 picks free ports",
    )
    parser.add_argument(
        "-t",
        "--threads",
        type=int,
        default=1,
        help="worker processes per node (1: twenty nodes on one machine)",
    )
    parser.add_argument("--dir", help="where the cluster file and logs go (default: a temp dir)")
    parser.add_argument("node_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.spares < 0 or args.threads < 1:
        parser.error("--nodes and --threads must be 1 or more and --spares 0 or more")

    total = args.nodes + args.spares
    if args.base_port:
        ports = list(range(args.base_port, args.base_port + total))
    else:
        ports = []
        while len(ports) < total:
            port = servers.free_port(args.host)
            if port not in ports:
                ports.append(port)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="mcached-cluster-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster_file = workdir / "cluster.conf"
    cluster_file.write_text(
        "# one node per line: host:port or host|ip|port; nodes re-read this file on change\n"
        + "".join(f"{args.name}:{p}\n" for p in ports[: args.nodes])
    )

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs: list[tuple[int, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(signo: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        for port in ports:
            log = open(workdir / f"node-{port}.log", "ab")  # the child keeps its own copy
            cmd = [
                sys.executable,
                "-m",
                "mcached",
                "-l",
                args.host,
                "-p",
                str(port),
                "--cluster-file",
                str(cluster_file),
                "--enable-config-set",
                "--cluster-node-name",
                args.name,
                "-t",
                str(args.threads),
                *args.node_args,
            ]
            procs.append(
                (
                    port,
                    subprocess.Popen(
                        cmd,
                        stdout=log,
                        stderr=log,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        # its own process group: the stop below reaches the node's worker
                        # processes too, even if the node's supervisor is gone first
                        start_new_session=True,
                    ),
                )
            )
            log.close()
        # they start at once: on a small machine twenty interpreters take a while
        deadline = time.monotonic() + 15.0 + 2.0 * total
        for port, proc in procs:
            wait_for(args.host, port, proc, max(1.0, deadline - time.monotonic()))

        first = f"{args.host}:{ports[0]}"
        print(f"mcached cluster: {args.nodes} nodes, cluster file {cluster_file}")
        for i, (port, proc) in enumerate(procs):
            spare = "  (spare: not in the cluster file)" if i >= args.nodes else ""
            print(f"  {args.host}:{port}  pid {proc.pid}  log {workdir}/node-{port}.log{spare}")
        print(f"config get cluster on {first}:")
        for line in config_get(args.host, ports[0]).decode().splitlines():
            print(f"  {line}")
        # installed (make install, or the .venv of make test): mcached-tool; else this checkout
        tool = (
            "mcached-tool"
            if shutil.which("mcached-tool")
            else f"PYTHONPATH={ROOT} python -m mcached.client.tool"
        )
        python = "python" if shutil.which("mcached-tool") else f"PYTHONPATH={ROOT} python"
        print("try:")
        print(f"  {tool} {first} cluster")
        if args.spares:
            print(f"  {tool} {first} cluster add {args.name}:{ports[args.nodes]}")
        print(
            f'  {python} -c "from mcached.client.cluster import ClusterClient; '
            f"c = ClusterClient('{first}', poll_interval=5); "
            "c.set('k', b'v'); print(c.get('k'), c.servers)\""
        )
        print(f"  $EDITOR {cluster_file}   # the nodes follow within a second")
        print("ready; Ctrl-C stops every node", flush=True)

        while not stopping:
            for port, proc in procs:
                if proc.poll() is not None and proc.returncode is not None and not stopping:
                    print(
                        f"node {port} exited with status {proc.returncode}; see its log", flush=True
                    )
                    procs.remove((port, proc))
                    status = 1
                    break
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"cluster.py: {exc}", file=sys.stderr)
        status = 1
    finally:
        for _, proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for _, proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:  # whatever of the node is left (a worker whose supervisor was killed)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)
        print("stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
