"""The auto-discovery endpoint on the wire: three (or more) mcached nodes on loopback.

Every node, given the same cluster file, answers ``config get cluster`` (``\\r\\n`` and bare
``\\n``) and the legacy ``get AmazonElastiCache:cluster`` with the same exact bytes; a lone
node lists itself; polls on one reused connection keep working across changes; ``config set``
is refused unless enabled and, when enabled, overrides the file until ``config delete``; the
file is re-read on reload (SIGHUP's path) and when it changes; a DNS name becomes nodes.

`start_cluster` is shared with the other test_discovery_* files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcached.cluster.config import Node, format_data
from mcached.cluster.sources import name_of
from tests.conftest import Server, free_port, wait_ready
from tests.wire import Conn, config_reply

pytestmark = pytest.mark.integration

GET = b"config get cluster\r\n"
LEGACY = b"get AmazonElastiCache:cluster\r\n"


@dataclass
class Cluster:
    servers: list[Server]
    file: Path

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(Node("localhost", "127.0.0.1", s.port) for s in self.servers)

    def expected(self, version: int = 1, nodes: tuple[Node, ...] | None = None) -> bytes:
        return config_reply(format_data(version, sorted(self.nodes if nodes is None else nodes)))

    def write(self, nodes: tuple[Node, ...]) -> None:
        before = self.file.stat().st_mtime_ns
        self.file.write_text("".join(f"{n.host}:{n.port}\n" for n in nodes))
        if self.file.stat().st_mtime_ns == before:  # a coarse clock: make the change visible
            os.utime(self.file, ns=(before + 1_000_000, before + 1_000_000))


def start_cluster(
    server_factory: Callable[..., Server], tmp_path: Path, n: int = 3, *flags: str
) -> Cluster:
    """`n` in-process nodes sharing one cluster file that lists them by their real ports."""
    for _attempt in range(5):
        ports = []
        while len(ports) < n:
            p = free_port()
            if p not in ports:
                ports.append(p)
        f = tmp_path / "cluster.conf"
        f.write_text("".join(f"localhost:{p}\n" for p in reversed(ports)))  # any order
        servers: list[Server] = []
        try:
            for p in ports:
                servers.append(
                    server_factory("mcached", "-p", str(p), "--cluster-file", str(f), *flags)
                )
        except OSError:  # a port was taken between free_port() and bind: try other ports
            for s in servers:
                s.handle.stop()
            continue
        assert [s.port for s in servers] == ports
        return Cluster(servers, f)
    raise RuntimeError("could not find free ports for the cluster")


def request(server: Server, data: bytes, until: bytes = b"END\r\n") -> bytes:
    with Conn(server.address) as conn:
        conn.send(data)
        return conn.read_until(until)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_every_node_answers_byte_exactly(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    ports = tuple(sorted(s.port for s in cluster.servers))
    data = b"1\nlocalhost|127.0.0.1|%d localhost|127.0.0.1|%d localhost|127.0.0.1|%d\n" % ports
    expected = b"CONFIG cluster 0 %d\r\n%b\r\nEND\r\n" % (len(data), data)
    if all(p >= 10000 for p in ports):
        assert expected.startswith(b"CONFIG cluster 0 80\r\n")  # the reference's example
    assert cluster.expected() == expected
    for s in cluster.servers:
        with Conn(s.address) as conn:
            assert conn.request(GET, expect_len=len(expected)) == expected
            assert conn.request(b"config get cluster\n", expect_len=len(expected)) == expected
            assert conn.request(b"version\r\n") == b"VERSION 1.6.18\r\n"  # a plain number


def test_legacy_key_on_every_node(server_factory: Callable[..., Server], tmp_path: Path) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    data = format_data(1, sorted(cluster.nodes))
    value = b"VALUE AmazonElastiCache:cluster 0 %d\r\n%b\r\n" % (len(data), data)
    for s in cluster.servers:
        assert request(s, LEGACY) == value + b"END\r\n"
    s = cluster.servers[0]
    with Conn(s.address) as conn:
        assert conn.request(b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
        conn.send(b"get a AmazonElastiCache:cluster missing\r\n")
        assert conn.read_until(b"END\r\n") == b"VALUE a 0 1\r\nx\r\n" + value + b"END\r\n"


def test_a_node_without_a_cluster_lists_itself(mcached: Server) -> None:
    data = b"1\n%b|127.0.0.1|%d\n" % (name_of("127.0.0.1").encode(), mcached.port)
    assert request(mcached, GET) == config_reply(data)
    assert request(mcached, LEGACY) == (
        b"VALUE AmazonElastiCache:cluster 0 %d\r\n%b\r\nEND\r\n" % (len(data), data)
    )


def test_polls_on_one_connection_follow_every_change(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    node = cluster.servers[0]
    nodes = tuple(sorted(cluster.nodes))
    with Conn(node.address) as poller, Conn(node.address) as admin:
        for version in range(1, 21):
            expected = cluster.expected(version, nodes)
            assert poller.request(GET, expect_len=len(expected)) == expected
            nodes = nodes[:-1] if len(nodes) > 1 else tuple(sorted(cluster.nodes))
            data = format_data(version + 1, nodes)
            assert (
                admin.request(
                    b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data), expect_len=8
                )
                == b"STORED\r\n"
            )
        # pipelined polls: three whole replies, in order
        expected = cluster.expected(21, nodes)
        assert poller.request(GET * 3, expect_len=3 * len(expected)) == expected * 3


def test_config_set_is_refused_unless_enabled(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    s = cluster.servers[1]
    with Conn(s.address) as conn:
        assert conn.request(b"config set cluster 0 6\r\n9\na:1\n\r\n") == (
            b"CLIENT_ERROR config set not allowed\r\n"
        )
        assert conn.request(b"config set cluster 0 6 noreply\r\n9\na:1\n\r\nversion\r\n") == (
            b"VERSION 1.6.18\r\n"  # the data block was consumed, nothing was said
        )
        assert conn.request(b"config delete cluster\r\n") == (
            b"CLIENT_ERROR config delete not allowed\r\n"
        )
        assert conn.request(GET) == cluster.expected()


def test_config_set_overrides_the_file_until_deleted(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3, "--enable-config-set")
    s = cluster.servers[0]
    one = tuple(sorted(cluster.nodes))[:1]
    data = format_data(7, one)
    with Conn(s.address) as conn:
        assert conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data)) == (
            b"STORED\r\n"
        )
        assert conn.request(GET) == config_reply(data)
        assert conn.request(LEGACY) == (
            b"VALUE AmazonElastiCache:cluster 0 %d\r\n%b\r\nEND\r\n" % (len(data), data)
        )
        assert conn.request(b"config set cluster 0 3\r\nx:y\r\n") == (
            b"CLIENT_ERROR bad cluster configuration: bad port in 'x:y'\r\n"
        )
        assert conn.request(b"config delete cluster\r\n") == b"DELETED\r\n"
        assert conn.request(GET) == cluster.expected(8)  # the file again, one version on
        assert conn.request(b"config delete cluster\r\n") == b"NOT_FOUND\r\n"
        assert conn.request(b"config delete cluster noreply\r\nversion\r\n") == (
            b"VERSION 1.6.18\r\n"
        )
    # the other nodes never saw the set
    assert request(cluster.servers[1], GET) == cluster.expected()


HOSTILE_CONFIG_SETS = [
    # (data, the error line): a version line written wrong, names no DNS has, a huge word
    (b"-5\nlocalhost:1\n", b"the version must be 1 or more"),
    (b"+5\nlocalhost:1\n", b"bad version '+5': want a number from 1 to 9223372036854775807"),
    (b"1.5\nlocalhost:1\n", b"bad version '1.5': want a number from 1 to 9223372036854775807"),
    (b"---:1 _:2 -.:3\n", b"bad host in '---:1'"),
    (b"localhost:1 _:2\n", b"bad host in '_:2'"),
    (b"localhost:1 -.:3\n", b"bad host in '-.:3'"),
    (b"localhost:1 a..b:3\n", b"bad host in 'a..b:3'"),
    (b"localhost:" + b"9" * 60_000 + b"\n", b"bad port in 'localhost:" + b"9" * 30 + b"...'"),
]


def test_issue_cluster_hunt_config_set_of_malformed_entries(
    server_factory: Callable[..., Server],
) -> None:
    """Each is refused with a CLIENT_ERROR line (a short one: at most 40 characters of the
    token it names) and the list served stays as it was. Regression (found by a cluster
    hunt): ``-5\\nlocalhost:1`` was STORED and served as ``-5||11211 localhost||1``, and
    ``---:1 _:2 -.:3`` as three nodes."""
    s = server_factory("mcached", "--enable-config-set")
    before = request(s, GET)
    with Conn(s.address) as conn:
        for data, error in HOSTILE_CONFIG_SETS:
            reply = conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data))
            assert reply == b"CLIENT_ERROR bad cluster configuration: %b\r\n" % error, data[:40]
            assert conn.request(GET) == before
        assert conn.request(b"config set cluster 0 15\r\n-5\nlocalhost:1\n\r\n") == (
            b"CLIENT_ERROR bad cluster configuration: the version must be 1 or more\r\n"
        )


def test_issue_cluster_hunt_one_server_under_two_names_is_listed_once(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """A cluster file listing this node as ``localhost:P`` and ``127.0.0.1:P`` (one server once
    resolved) serves it once. Regression: twice, so a client counted two nodes."""
    port = free_port()
    f = tmp_path / "cluster.conf"
    f.write_text(f"localhost:{port}\n127.0.0.1:{port}\n")
    s = server_factory("mcached", "-p", str(port), "--cluster-file", str(f))
    assert request(s, GET) == config_reply(b"1\n127.0.0.1|127.0.0.1|%d\n" % port)


def test_file_is_reread_on_reload_and_on_change(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    cluster = start_cluster(server_factory, tmp_path, 3)
    two = tuple(sorted(cluster.nodes))[:2]
    cluster.write(two)
    for s in cluster.servers:
        s.handle.reload()  # what SIGHUP runs
    for s in cluster.servers:
        assert request(s, GET) == cluster.expected(2, two)
    # no signal: the watcher notices the file within about a second
    cluster.write(cluster.nodes)
    for s in cluster.servers:
        assert wait_until(lambda s=s: request(s, GET) == cluster.expected(3), 5.0)


def test_dns_name_becomes_nodes(server_factory: Callable[..., Server]) -> None:
    target = server_factory("mcached")
    node = server_factory(
        "mcached", "--cluster-dns", f"localhost:{target.port}", "--cluster-dns-interval", "0.2"
    )
    host = name_of("127.0.0.1").encode()
    assert request(node, GET) == config_reply(b"1\n%b|127.0.0.1|%d\n" % (host, target.port))
    # re-resolved every 0.2 s: an unchanged answer keeps the version
    time.sleep(0.5)
    assert request(node, GET) == config_reply(b"1\n%b|127.0.0.1|%d\n" % (host, target.port))


def test_big_cluster_reply_in_one_piece(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """200 nodes: a reply over 4 KB arrives whole and correct."""
    s = server_factory("mcached", "--enable-config-set")
    nodes = sorted(
        Node(f"cache-{i:03d}.example.internal", f"10.0.{i // 250}.{i % 250}", 11211)
        for i in range(200)
    )
    data = format_data(3, nodes)
    assert len(data) > 4096
    with Conn(s.address) as conn:
        assert conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data)) == (
            b"STORED\r\n"
        )
        assert conn.request(GET) == config_reply(data)


def test_a_membership_too_large_to_serve_is_an_error_not_a_crash(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """3,000 nodes outgrow the document the daemon shares its membership in: ``config set``
    closed the connection (a traceback in the log), and such a cluster file stopped the
    daemon at its start (found by a hunt). Now an error line, and the file is logged and
    passed over (this node alone, then the previous membership)."""
    nodes = [
        Node(f"host{i:05d}.example.com", f"10.0.{i // 256}.{i % 256}", 11211) for i in range(3000)
    ]
    big = format_data(5, nodes)
    s = server_factory("mcached", "--enable-config-set")
    with Conn(s.address) as conn:
        reply = conn.request(b"config set cluster 0 %d\r\n%b\r\n" % (len(big), big))
        assert reply.startswith(b"CLIENT_ERROR bad cluster configuration: 3000 nodes take ")
        assert conn.request(b"version\r\n").startswith(b"VERSION ")  # still served
    f = tmp_path / "cluster.conf"
    f.write_text(big.decode())
    s = server_factory("mcached", "--cluster-file", str(f))
    with Conn(s.address) as conn:
        alone = conn.request(GET)
        assert alone.count(b"|") == 2  # this node alone
        f.write_text("localhost:21001\n")
        assert wait_until(lambda: b"|21001" in conn.request(GET))
        f.write_text(big.decode())
        time.sleep(2.5)  # the watcher reads it within a second: passed over
        assert b"|21001" in conn.request(GET)


def test_sighup_rereads_the_file_in_a_real_process(tmp_path: Path) -> None:
    """SIGHUP to a real ``python -m mcached``: the file is re-read even when stat() cannot
    tell (same size, same inode, mtime put back), which the watcher alone would miss."""
    port, a, b = free_port(), free_port(), free_port()
    while len({port, a, b}) < 3 or min(a, b) < 10000:
        a, b = free_port(), free_port()
    f = tmp_path / "cluster.conf"
    f.write_text(f"localhost:{a}\n")
    stamp = f.stat()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcached",
            "-l",
            "127.0.0.1",
            "-p",
            str(port),
            "--cluster-file",
            str(f),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port)
        node = Server("mcached", "127.0.0.1", port)
        before = config_reply(b"1\nlocalhost|127.0.0.1|%d\n" % a)
        assert request(node, GET) == before
        with open(f, "r+") as fh:  # same inode, same size
            fh.write(f"localhost:{b}\n")
        os.utime(f, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        time.sleep(1.5)  # the watcher polls every second: it sees nothing
        assert request(node, GET) == before
        proc.send_signal(signal.SIGHUP)
        after = config_reply(b"2\nlocalhost|127.0.0.1|%d\n" % b)
        assert wait_until(lambda: request(node, GET) == after, 5.0)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
