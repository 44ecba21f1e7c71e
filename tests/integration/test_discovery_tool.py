"""``mcached-tool HOST:PORT cluster [set|add|remove|revert]`` and ``scripts/cluster.py``.

The tool runs through click's CliRunner (in-process); the script as a real subprocess that
starts real ``python -m mcached`` nodes, checked and then stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mcached.client.tool import main
from mcached.cluster.config import Node, format_data
from tests.cluster_script import cluster_script, node_pids
from tests.conftest import Server, free_port
from tests.integration.test_discovery import Cluster, request, start_cluster, wait_until
from tests.wire import Conn, config_reply

pytestmark = pytest.mark.integration

GET = b"config get cluster\r\n"
ROOT = Path(__file__).resolve().parent.parent.parent


def run(server: Server, *args: str) -> Result:
    return CliRunner().invoke(main, ["--timeout", "2", f"127.0.0.1:{server.port}", *args])


def served(cluster: Cluster, server: Server) -> bytes:
    return request(server, GET)


def test_cluster_shows_nodes_and_health(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    fast = ("--cluster-health-interval", "0.2", "--cluster-health-failures", "2")
    cluster = start_cluster(server_factory, tmp_path, 3, *fast, "--cluster-health-rise", "2")
    a = cluster.servers[0]
    # every node's checks have seen every other node up (each row: a node, seen by the two
    # others; the nodes start one after another, so the first checks of a later one fail)
    assert wait_until(
        lambda: all(
            row.split()[-2:-1] == ["up:2"] for row in run(a, "cluster").output.split("\n")[2:5]
        ),
        10,
    )
    res = run(a, "cluster")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"127.0.0.1:{a.port}: configuration version 1, 3 nodes"
    assert lines[1].split() == [
        "NODE",
        "STATE",
        "LATENCY",
        "VERSION",
        "UPTIME",
        "ITEMS",
        "CONNS",
        "HEALTH",
        "CONFIG",
    ]
    for line, node in zip(lines[2:5], sorted(cluster.nodes), strict=True):
        fields = line.split()
        assert fields[0] == str(node)
        assert fields[1] == "up" and fields[3] == "1.6.18" and fields[-1] == "same"
        assert fields[-2] == "up:2"  # both other nodes' checks see it up
    assert lines[5].startswith("health as each node sees it (checks every 0.2s; 2 failed")
    assert lines[6:] == [f"  {n}: every other node up" for n in sorted(cluster.nodes)]
    # a node goes down: reported at once (exit status 1), hidden by the others soon after
    victim = cluster.servers[2]
    victim.handle.stop()
    gone = Node("localhost", "127.0.0.1", victim.port)
    b = cluster.servers[1]
    assert wait_until(lambda: all(f"{gone}" not in served(cluster, s).decode() for s in (a, b)), 5)
    res = run(a, "cluster")
    assert res.exit_code == 1
    lines = res.output.splitlines()
    assert lines[0] == (
        f"127.0.0.1:{a.port}: configuration version 2, 2 nodes "
        "(1 more listed, hidden by its health checks)"
    )
    down = [line for line in lines if " DOWN " in line]
    assert len(down) == 1 and down[0].startswith(str(gone)) and " down:2 " in down[0]
    assert f"  {gone}: unreachable (" in res.output
    seen = [line for line in lines if line.startswith(f"  {cluster.nodes[0]}: ")]
    assert seen and f"{gone} down, hidden for " in seen[0]
    assert "failed in a row (connection refused)" in seen[0]


def test_cluster_reports_a_node_with_another_configuration(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    data = format_data(9, sorted(cluster.nodes)[:1])
    odd = cluster.servers[2]
    with Conn(odd.address) as conn:
        conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data))
    res = run(cluster.servers[0], "cluster")
    assert res.exit_code == 1
    assert re.search(rf"\|{odd.port} .*DIFFERS: version 9, 1 nodes", res.output), res.output


def test_cluster_set_add_remove_revert(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    spare = server_factory("mcached", "--enable-config-set")
    a, b, c = cluster.servers
    spare_node = Node("localhost", "127.0.0.1", spare.port)

    res = run(a, "cluster", "add", f"localhost:{spare.port}")
    assert res.exit_code == 0, res.output
    four = tuple(sorted(cluster.nodes + (spare_node,)))
    expected = config_reply(format_data(2, four))
    assert res.output.splitlines()[0] == (
        "configuration version 2: " + " ".join(str(n) for n in four)
    )
    assert res.output.count(": STORED") == 4  # old and new nodes, each once
    for s in (a, b, c, spare):
        assert served(cluster, s) == expected

    res = run(b, "cluster", "remove", f"127.0.0.1:{a.port}", f"localhost|127.0.0.1|{c.port}")
    assert res.exit_code == 0, res.output
    two = tuple(sorted((Node("localhost", "127.0.0.1", b.port), spare_node)))
    for s in (a, b, c, spare):  # the removed nodes learn it too: their clients follow
        assert served(cluster, s) == config_reply(format_data(3, two))

    res = run(b, "cluster", "set", f"localhost:{a.port}", f"[::1]:{b.port}", "--endpoint-only")
    assert res.exit_code == 0, res.output
    assert served(cluster, b) == config_reply(
        format_data(4, sorted([Node("::1", "::1", b.port), Node("localhost", "127.0.0.1", a.port)]))
    )
    assert served(cluster, a) == config_reply(format_data(3, two))  # endpoint only

    res = run(a, "cluster", "revert")
    assert res.exit_code == 0, res.output
    assert served(cluster, a) == cluster.expected(4)  # the file again, one version on
    # every node the override was stored on, c too, which `remove` had left out of it (the
    # tool reverted only the nodes the endpoint served: found by a hunt)
    assert res.output.count(": DELETED") == 4
    assert served(cluster, c) == cluster.expected(4)
    assert served(cluster, b) == cluster.expected(5)
    assert b"|%d\n" % spare.port in served(cluster, spare)  # itself alone, as it starts


def test_cluster_changes_refused_and_bad_input(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    a = cluster.servers[0]
    res = run(a, "cluster", "add", "localhost:1")
    assert res.exit_code == 1
    assert "CLIENT_ERROR config set not allowed (start mcached with --enable-config-set)" in (
        res.output
    )
    assert served(cluster, a) == cluster.expected()
    res = run(a, "cluster", "remove", "localhost:1")
    assert res.exit_code == 2 and "localhost:1 is not in the cluster" in res.output
    res = run(a, "cluster", "add", "no-such-host.invalid:1")
    assert res.exit_code == 2 and "does not resolve" in res.output
    res = run(a, "cluster", "add", "a:b")
    assert res.exit_code == 2 and "bad port" in res.output
    res = run(a, "cluster", "remove", *[f"localhost:{s.port}" for s in cluster.servers])
    assert res.exit_code == 2 and "no node" in res.output
    res = CliRunner().invoke(main, [f"127.0.0.1:{free_port()}", "cluster"])
    assert res.exit_code == 2 and "cannot read the cluster configuration" in res.output
    res = CliRunner().invoke(main, ["nope:", "cluster"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output


def test_tool_as_a_command() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "mcached.client.tool", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "HOST:PORT" in out.stdout and "cluster" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "mcached.client.tool", "x:1", "cluster", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert all(word in out.stdout for word in ("set", "add", "remove", "revert"))


def test_tool_at_its_old_path() -> None:
    """``python -m mcached.tool`` (the tool's home before mcached/client/) still runs it."""
    out = subprocess.run(
        [sys.executable, "-m", "mcached.tool", "--help"],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "HOST:PORT" in out.stdout and "cluster" in out.stdout


def test_cluster_script_starts_and_stops_n_nodes(tmp_path: Path) -> None:
    """`python scripts/cluster.py -n 3`: three real processes, one node list, Ctrl-C stops all."""
    with cluster_script(tmp_path, 3, "-m", "16", spares=1) as (proc, ports, _):
        assert len(ports) == 4
        nodes = sorted(Node("localhost", "127.0.0.1", p) for p in ports[:3])
        expected = config_reply(format_data(1, nodes))
        for port in ports:  # the spare reads the same file: it serves the same list
            assert request(Server("mcached", "127.0.0.1", port), GET) == expected
        assert (tmp_path / "cluster.conf").read_text().count("localhost:") == 3
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
        for port in ports:
            with pytest.raises(OSError):
                request(Server("mcached", "127.0.0.1", port), GET)
        assert node_pids(tmp_path) == []


def test_a_test_that_fails_leaves_no_node_of_the_cluster_script(tmp_path: Path) -> None:
    """A test that fails while `cluster_script` runs still stops every node: before, such a
    test's cleanup killed the script with SIGKILL and its nodes, each in a session of its
    own, ran on (one failed run left 20 nodes, 60 processes, for the rest of the day)."""
    with pytest.raises(RuntimeError, match="the test failed here"):
        with cluster_script(tmp_path, 2, "-m", "8") as (_, ports, _):
            assert len(ports) == 2 and len(node_pids(tmp_path)) >= 2
            raise RuntimeError("the test failed here")
    assert node_pids(tmp_path) == []
    for port in ports:
        with pytest.raises(OSError):
            request(Server("mcached", "127.0.0.1", port), GET)
