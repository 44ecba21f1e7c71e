"""Unit tests of mcached/cluster/ and the client side of its format (mcached/client/node.py):
the format, the version rules, the sources and their precedence. No sockets: names come from a
fake resolver."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from mcached.addr import parse_address
from mcached.cli import parse_settings
from mcached.client.node import NodeError, NotSupported, parse_config_reply
from mcached.clock import Clock
from mcached.cluster.config import (
    LEGACY_KEY,
    ClusterConfig,
    Node,
    format_data,
    parse_data,
    parse_node,
)
from mcached.cluster.discovery import Discovery
from mcached.handlers import Handlers
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Out
from mcached.protocol.parser import Parser
from mcached.settings import Settings, SettingsError, validate
from mcached.stats import Counters
from tests.wire import config_reply

pytestmark = pytest.mark.unit

# The reference's example (shared/reference/auto-discovery.md), byte for byte.
EXAMPLE = (
    b"CONFIG cluster 0 80\r\n1\nlocalhost|127.0.0.1|21001 localhost|127.0.0.1|21002 "
    b"localhost|127.0.0.1|21003\n\r\nEND\r\n"
)
THREE = tuple(Node("localhost", "127.0.0.1", p) for p in (21001, 21002, 21003))

HOSTS = {
    "localhost": ["127.0.0.1"],
    "node-a": ["10.0.0.1"],
    "node-b": ["10.0.0.2"],
    "dual": ["10.0.0.9", "fd00::9"],
}


class FakeDns:
    """A resolver whose answers the test changes; counts lookups."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = dict(HOSTS if table is None else table)
        self.lookups = 0

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        return list(self.table.get(host, []))

    @staticmethod
    def reverse(ip: str) -> str:
        return {"127.0.0.1": "localhost"}.get(ip, ip)


def make(dns: FakeDns | None = None, port: int = 21001, **settings: object) -> Discovery:
    s = Settings(listen=("127.0.0.1",), cluster_node_name="localhost", **settings)  # type: ignore[arg-type]
    dns = dns or FakeDns()
    return Discovery(s, local_port=lambda: port, resolve=dns.resolve, reverse=dns.reverse)


class NoItems:
    """The cache of a node that holds no item (the legacy key's form is served on a miss)."""

    @staticmethod
    def get(key: bytes) -> None:
        return None

    get_ref = get  # the lookup that may lend a value (none here)

    @staticmethod
    def get_refs(keys: list[bytes], budget: int, floor: int) -> tuple[list[None], int, list[int]]:
        return [None] * len(keys), floor * len(keys), []  # a multiget's lookups: all misses

    @staticmethod
    def unpin(token: int) -> None:
        raise AssertionError("nothing was lent")


class Session:
    def __init__(self) -> None:
        self.out: Out = []
        self.counters = Counters()
        self.stream = None
        self.stream_held = 0
        self.stacked = 0
        self.datagram = False

    def after_sent(self, callback: Any) -> None:
        raise AssertionError("nothing is lent by a cache of no items")


def ask(d: Discovery, cmd: c.Command, one_write: bool = True) -> bytes:
    """`cmd` served as a worker serves it: the handlers say what the config verbs mean, the
    discovery holds the membership, the command's replies write the bytes."""
    handlers = Handlers(NoItems(), d.settings, None, Clock(), discovery=d)  # type: ignore[arg-type]
    s = Session()
    handlers.dispatch_table()[type(cmd)](cmd, s)
    assert len(s.out) <= 1 or not one_write  # one reply, one bytes object: one write
    return b"".join(s.out)


def get(d: Discovery) -> bytes:
    return ask(d, c.ConfigGet(b"cluster"))


def config_set(data: bytes, noreply: bool = False) -> c.ConfigSet:
    return c.ConfigSet(b"cluster", 0, data, noreply)


def write(path: Path, text: str) -> None:
    """Write and make sure stat() sees a change even within one mtime tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


# ---- the format ----


def test_reference_example_bytes() -> None:
    data = format_data(1, THREE)
    assert len(data) == 80
    out: Out = []
    c.ConfigGet(b"cluster").reply_config(out, b"cluster", data)
    assert out == [EXAMPLE] == [config_reply(data)]
    out = []
    c.Get([LEGACY_KEY]).reply_one_value(out, LEGACY_KEY, data, 0)
    assert out == [b"VALUE AmazonElastiCache:cluster 0 80\r\n" + data + b"\r\nEND\r\n"]


def test_empty_ip_is_written_host_pipe_pipe_port() -> None:
    assert format_data(7, [Node("cache-1", "", 11211)]) == b"7\ncache-1||11211\n"


NODE_CASES = [
    ("localhost|127.0.0.1|21001", Node("localhost", "127.0.0.1", 21001)),
    ("cache-1||11211", Node("cache-1", "", 11211)),
    ("node-a:11311", Node("node-a", "", 11311)),
    ("node-a", Node("node-a", "", 11211)),
    ("10.1.2.3:5", Node("10.1.2.3", "10.1.2.3", 5)),
    ("[::1]:11211", Node("::1", "::1", 11211)),
    ("[fd00::1]", Node("fd00::1", "fd00::1", 11211)),
    ("h|fd00::1|1", Node("h", "fd00::1", 1)),
    ("my_host.example:1", Node("my_host.example", "", 1)),
    ("Cache-1A", Node("Cache-1A", "", 11211)),
    ("1cache.example-2.internal:1", Node("1cache.example-2.internal", "", 1)),
    ("_mc._tcp.example:1", Node("_mc._tcp.example", "", 1)),
    ("a" * 63 + ".example:1", Node("a" * 63 + ".example", "", 1)),
]


@pytest.mark.parametrize("token,node", NODE_CASES, ids=[t for t, _ in NODE_CASES])
def test_parse_node(token: str, node: Node) -> None:
    assert parse_node(token) == node


BAD_NODES = [
    "a|b",
    "a|1.2.3.4|0",
    "a|1.2.3.4|65536",
    "a|not-an-ip|1",
    "|1.2.3.4|1",
    "a:",
    "a:x",
    "::1:11211",
    "[::1",
    "[nope]:1",
    "h\x01:1",
    # regressions: hosts no name or address is written as (each was taken as one)
    "5",
    "+5",
    "1.2.3:4",
    "a\x0bb:1",
    "a\x1cb:1",
    "caf\u00e9:1",
    "a/b:1",
    # regressions: no DNS name either, each stored and served (found by a cluster hunt)
    "-5",
    "---:1",
    "_:2",
    "-.:3",
    "-a:1",
    "a-:1",
    "a.-b:1",
    "a..b:1",
    ".a:1",
    "a.:1",
    "1-2:1",
    "-5|127.0.0.1|1",
    "a" * 64 + ".example:1",
    ".".join(["a" * 63] * 4) + ":1",
]


@pytest.mark.parametrize("token", BAD_NODES)
def test_parse_node_refuses(token: str) -> None:
    with pytest.raises(ValueError):
        parse_node(token)


@pytest.mark.parametrize("name", ["cache a", "a|b", "caf\u00e9", "5"])
def test_a_node_name_no_client_could_parse_is_refused_at_the_start(name: str) -> None:
    """--cluster-node-name goes into the list every client parses: refused with the other
    settings' errors (SettingsError: a line and exit status 64). Regression: the daemon
    died with a traceback from the membership's decoding."""
    settings = Settings(listen=("127.0.0.1",), cluster_node_name=name)
    with pytest.raises(SettingsError, match="--cluster-node-name wants a hostname"):
        Discovery(settings, lambda: 21001)


def test_parse_node_resolves_names_only() -> None:
    dns = FakeDns()
    assert parse_node("node-a:1", resolve=dns.resolve) == Node("node-a", "10.0.0.1", 1)
    assert parse_node("dual:1", resolve=dns.resolve).ip == "10.0.0.9"  # IPv4 first
    assert parse_node("gone:1", resolve=dns.resolve) == Node("gone", "", 1)
    assert parse_node("h|10.9.9.9|1", resolve=dns.resolve).ip == "10.9.9.9"  # as written
    dns.lookups = 0
    parse_node("10.0.0.1:1", resolve=dns.resolve)
    assert dns.lookups == 0


def test_parse_data_version_comments_and_order() -> None:
    text = "# the cache\n  3 \nnode-b:2\tnode-a:1  # two on a line\r\n\nnode-a:1\n"
    assert parse_data(text) == (3, (Node("node-a", "", 1), Node("node-b", "", 2)))
    assert parse_data(format_data(1, THREE)) == (1, THREE)  # a config get payload is valid
    assert parse_data(b"localhost|127.0.0.1|21003\nlocalhost|127.0.0.1|21001") == (
        None,
        (THREE[0], THREE[2]),
    )


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"# nothing\n",
        b"5\n",
        b"0\na:1\n",
        b"\xff:1",
        b"a:0",
        # regressions: a version on the nodes' line (node 5||11211), a signed one, control
        # characters that splitlines() and split() took for line and word breaks
        b"5 a:1 b:2\n",
        b"+5\na:1\n",
        b"1\na:1\x1cb:2\n",
        b"1\na:1\x0bb:2\n",
        b"1\na:1\x0cb:2\n",
        # regressions (a cluster hunt): a signed or fractional version line taken as a host
        # (-5||11211 served), and names no DNS has
        b"-5\nlocalhost:1\n",
        b"-0\nlocalhost:1\n",
        b"5.0\nlocalhost:1\n",
        b".5\nlocalhost:1\n",
        b"1\n---:1 _:2 -.:3\n",
    ],
)
def test_parse_data_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        parse_data(text)


@pytest.mark.parametrize(
    "text,message",
    [
        (b"-5\nlocalhost:1\n", "the version must be 1 or more"),
        (b"0\nlocalhost:1\n", "the version must be 1 or more"),
        (b"+5\nlocalhost:1\n", "bad version '+5': want a number from 1 to 9223372036854775807"),
        (b"2.5\nlocalhost:1\n", "bad version '2.5': want a number from 1 to 9223372036854775807"),
        (b"1\n---:1 _:2 -.:3\n", "bad host in '---:1'"),
        (b"1\nlocalhost:1 _:2\n", "bad host in '_:2'"),
        (b"-5 localhost:1\n", "bad host in '-5'"),
    ],
)
def test_issue_cluster_hunt_a_version_written_wrong_is_no_host(text: bytes, message: str) -> None:
    """A first line holding a number that is no version is refused as a version, in the
    words of the other version errors; a host must be a DNS name or an address. Regression:
    ``-5\\nlocalhost:1`` was stored and served as the nodes ``-5||11211 localhost||1``, and
    ``---:1 _:2 -.:3`` as three nodes."""
    with pytest.raises(ValueError) as caught:
        parse_data(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "token",
    [
        "a:" + "9" * 100_000,
        "x" * 100_000 + ":1",
        "a|" + "b" * 100_000 + "|1",
        "[" + "f" * 100_000,
        "a:" + "\x00" * 100_000,
    ],
)
def test_issue_cluster_hunt_an_error_repeats_the_start_of_a_huge_token(token: str) -> None:
    """A refused token is repeated up to its 40th character, then ``...``: a `config set
    cluster` of one huge word answered an error line as long as the word."""
    with pytest.raises(ValueError) as caught:
        parse_data(b"1\n" + token.encode())
    message = str(caught.value)
    assert repr(token[:40] + "...") in message
    assert len(message) < 4 * 40 + 60, message  # (a control character is repeated as \\xNN)


def test_issue_cluster_hunt_one_server_listed_under_two_names_is_served_once(
    tmp_path: Path,
) -> None:
    """``localhost:21001`` and ``127.0.0.1:21001`` are one server: served once (under the
    first name in the served order, whatever order they were written in), not as two nodes
    a client would count twice. Nodes without an ip are compared by name (nothing resolves
    them here)."""
    one = Node("127.0.0.1", "127.0.0.1", 21001)
    assert parse_data("localhost|127.0.0.1|21001 127.0.0.1:21001\n")[1] == (one,)
    assert parse_data("127.0.0.1:21001\nlocalhost|127.0.0.1|21001\n")[1] == (one,)
    assert parse_data("h|fd00::1|1 g|fd00:0::1|1 g|fd00::1|2\n")[1] == (
        Node("g", "fd00:0::1", 1),
        Node("g", "fd00::1", 2),
    )
    assert parse_data("localhost:21001 127.0.0.1:21001 other:21001\n")[1] == (
        one,
        Node("localhost", "", 21001),
        Node("other", "", 21001),
    )
    f = tmp_path / "cluster"
    f.write_text("localhost:21001\n127.0.0.1:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f))  # the file's names are resolved: localhost is 127.0.0.1
    assert get(d) == config_reply(b"1\n127.0.0.1|127.0.0.1|21001 localhost|127.0.0.1|21002\n")


def test_issue_cluster_hunt_a_bad_version_line_keeps_the_previous_membership(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cluster file is read by the same code: a version line of -5 is an error there too,
    and the membership read before stays served."""
    f = tmp_path / "cluster"
    f.write_text("3\nlocalhost:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f))
    before = get(d)
    for text in ("-5\nlocalhost:21001\n", "4\nlocalhost:21001\n_:2\n"):
        write(f, text)
        with caplog.at_level(logging.ERROR, "mcached.discovery"):
            d.reload()
        assert get(d) == before
    assert "the version must be 1 or more; keeping the previous membership" in caplog.text
    assert "bad host in '_:2'; keeping the previous membership" in caplog.text


def test_parse_data_versions_of_any_number_of_digits() -> None:
    """A version's leading zeros of any length are read, and one past a signed 64-bit
    number is refused in our words: one of more than 4,300 digits was refused in int()'s
    ("use sys.set_int_max_str_digits()"), and a `config set cluster` reply showed it."""
    assert parse_data(b"0" * 5000 + b"7\na:1\n")[0] == 7
    assert parse_data(b"9223372036854775807\na:1\n")[0] == 2**63 - 1
    for version in (b"9223372036854775808", b"9" * 5000):
        with pytest.raises(ValueError, match="^the version must be at most 9223372036854775807$"):
            parse_data(version + b"\na:1\n")


# ---- serving ----


def test_no_cluster_lists_itself() -> None:
    d = make(port=33333)
    assert get(d) == b"CONFIG cluster 0 28\r\n1\nlocalhost|127.0.0.1|33333\n\r\nEND\r\n"
    assert ask(d, c.Get([LEGACY_KEY])) == (
        b"VALUE AmazonElastiCache:cluster 0 28\r\n1\nlocalhost|127.0.0.1|33333\n\r\nEND\r\n"
    )
    assert ask(d, c.Get([b"other", LEGACY_KEY]), one_write=False) == (
        b"VALUE AmazonElastiCache:cluster 0 28\r\n1\nlocalhost|127.0.0.1|33333\n\r\nEND\r\n"
    )


def test_data_is_built_once_per_change() -> None:
    d = make()
    assert d.data() is d.data()


def test_other_keys_and_commands_answer_error() -> None:
    d = make(config_set_enabled=True)
    assert ask(d, c.ConfigGet(b"foo")) == b"ERROR\r\n"
    assert ask(d, c.ConfigSet(b"foo", 0, b"1\na:1\n")) == b"ERROR\r\n"
    assert ask(d, c.ConfigDelete(b"foo")) == b"ERROR\r\n"


def test_parser_frames_config_requests() -> None:
    p = Parser()
    p.feed(b"config get cluster\nconfig set cluster 0 6 noreply\r\n1\na:1\n\r\n")
    assert p.next_command() == c.ConfigGet(b"cluster")
    assert p.next_command() == c.ConfigSet(b"cluster", 0, b"1\na:1\n", True)


# ---- the cluster file ----


def test_file_source_and_its_versions(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    f.write_text("localhost:21003\nlocalhost:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f))
    assert get(d) == EXAMPLE
    d.reload()  # same list: same version
    assert get(d) == EXAMPLE
    write(f, "localhost:21001\nlocalhost:21002\n")
    d.reload()
    assert d.current() == ClusterConfig(2, THREE[:2])
    write(f, "localhost:21001\nlocalhost:21002\nlocalhost:21003\n")
    d.refresh()  # what the watcher does on a change
    assert d.current().version == 3
    assert d.current().nodes == THREE


def test_same_membership_same_bytes_on_every_node(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("localhost:21001\nlocalhost:21002\nlocalhost:21003\n")
    b.write_text(
        "# another order, duplicates\n"
        "localhost:21003 localhost:21002\nlocalhost:21001\nlocalhost:21002\n"
    )
    nodes = [make(port=p, cluster_file=str(x)) for p, x in ((21001, a), (21002, b), (21003, a))]
    assert {get(n) for n in nodes} == {EXAMPLE}


def test_file_version_line_pins_the_version(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    f.write_text("41\nlocalhost:21001\n")
    d = make(cluster_file=str(f))
    assert d.current().version == 41
    write(f, "42\nlocalhost:21001\n")  # the same list, a new pin: served as written
    d.reload()
    assert d.current().version == 42
    write(f, "localhost:21001\nlocalhost:21002\n")  # unpinned change: one more
    d.reload()
    assert d.current().version == 43


def test_issue_cluster_hunt_a_pin_at_the_version_health_served_moves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file pins 300 for three nodes; health hides one (301); the operator pins 301 and
    lists a new node. The new list is served at 302, with a warning saying why, once; the
    same pin and list written again change nothing. Regression (found by a cluster hunt):
    301 was served again for another list, and clients that act on a changed version
    (emcache) never saw the new node."""
    f = tmp_path / "cluster"
    f.write_text("300\nlocalhost:21001\nlocalhost:21002\nlocalhost:21003\n")
    d = make(cluster_file=str(f))
    assert d.current() == ClusterConfig(300, THREE)
    d._hidden = frozenset({THREE[2]})  # what the health thread does
    d._publish("health")
    assert d.current() == ClusterConfig(301, THREE[:2])
    write(f, "301\nlocalhost:21001\nlocalhost:21002\nlocalhost:21004\n")
    with caplog.at_level(logging.WARNING, "mcached.discovery"):
        d.reload()
        assert d.current() == ClusterConfig(
            302, (*THREE[:2], Node("localhost", "127.0.0.1", 21004))
        )
        d.reload()  # read again, the same: no change, nothing more said
        assert d.current().version == 302
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cluster configuration: version 301 pinned (SIGHUP) is not above 301, served already:"
        " serving 302 instead, since a client that has seen a version takes no new list"
        " under it"
    ]
    write(f, "303\nlocalhost:21001\nlocalhost:21004\n")  # a pin above: as written
    d.reload()
    assert d.current().version == 303


def test_bad_file_keeps_the_previous_membership(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = tmp_path / "cluster"
    f.write_text("localhost:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f))
    before = get(d)
    write(f, "localhost:21001\nlocalhost:nope\n")
    with caplog.at_level(logging.ERROR, "mcached.discovery"):
        d.reload()
    assert get(d) == before
    assert "bad port" in caplog.text
    f.unlink()
    d.reload()
    assert get(d) == before


def test_missing_file_lists_itself_until_it_appears(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    d = make(port=21002, cluster_file=str(f))
    assert d.current() == ClusterConfig(1, (THREE[1],))
    f.write_text("localhost:21001 localhost:21002 localhost:21003\n")
    d.refresh()
    assert d.current() == ClusterConfig(2, THREE)


def test_a_file_gone_is_logged_once_until_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The watcher refreshes every second: a file gone (or unreadable) is one error line
    until it comes back, as a bad file is. Regression: one a second for as long as it was
    missing."""
    f = tmp_path / "cluster"
    f.write_text("localhost:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f))
    before = get(d)
    f.unlink()
    with caplog.at_level(logging.ERROR, "mcached.discovery"):
        for _ in range(5):
            d.refresh()
    assert get(d) == before
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        f"cluster file: [Errno 2] No such file or directory: '{f}'"
    ]
    caplog.clear()
    with caplog.at_level(logging.ERROR, "mcached.discovery"):
        d.reload()  # SIGHUP: read (and said) again, gone or not (regression: silent)
    assert "No such file or directory" in caplog.text and get(d) == before
    write(f, "localhost:21003\n")  # back: read at the next refresh
    d.refresh()
    assert [n.port for n in d.current().nodes] == [21003]


def test_file_names_are_resolved_and_re_resolved(tmp_path: Path) -> None:
    dns = FakeDns()
    f = tmp_path / "cluster"
    f.write_text("node-a:11211\nnode-b:11211\nunknown:11211\nfixed|10.5.5.5|11211\n")
    d = make(dns, cluster_file=str(f))
    assert [str(n) for n in d.current().nodes] == [
        "fixed|10.5.5.5|11211",
        "node-a|10.0.0.1|11211",
        "node-b|10.0.0.2|11211",
        "unknown||11211",
    ]
    dns.table["node-b"] = ["10.0.0.22"]  # a node came back elsewhere
    d.refresh()
    assert "node-b|10.0.0.22|11211" in get(d).decode()
    assert d.current().version == 2


def test_watcher_follows_the_file(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    f.write_text("localhost:21001\n")
    d = make(cluster_file=str(f), cluster_dns_interval=60.0)
    d.file_poll_interval = 0.02
    d.start()
    try:
        write(f, "localhost:21001\nlocalhost:21002\n")
        deadline = time.monotonic() + 5
        while d.current().version < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert d.current() == ClusterConfig(2, THREE[:2])
    finally:
        d.stop()
    assert not d.running


# ---- DNS ----


def test_dns_every_address_is_a_node() -> None:
    dns = FakeDns({"svc": ["10.0.0.3", "10.0.0.1", "127.0.0.1"]})
    d = make(dns, cluster_dns="svc:11211")
    assert get(d) == config_reply(
        b"1\n10.0.0.1|10.0.0.1|11211 10.0.0.3|10.0.0.3|11211 localhost|127.0.0.1|11211\n"
    )
    d.refresh()  # same answer: same version
    assert d.current().version == 1
    dns.table["svc"] = ["10.0.0.1"]
    d.refresh()
    assert d.current() == ClusterConfig(2, (Node("10.0.0.1", "10.0.0.1", 11211),))
    dns.table["svc"] = []  # resolution fails: keep what we had
    d.refresh()
    assert d.current().version == 2


def test_dns_that_never_resolved_lists_itself() -> None:
    d = make(FakeDns({}), port=21001, cluster_dns="svc:11211")
    assert get(d) == config_reply(b"1\nlocalhost|127.0.0.1|21001\n")


# ---- config set / delete ----


def test_config_set_refused_unless_enabled() -> None:
    d = make()
    assert ask(d, config_set(b"1\na:1\n")) == b"CLIENT_ERROR config set not allowed\r\n"
    assert ask(d, config_set(b"1\na:1\n", noreply=True)) == b""
    assert ask(d, c.ConfigDelete(b"cluster")) == b"CLIENT_ERROR config delete not allowed\r\n"
    assert d.current().version == 1


def test_config_set_and_delete() -> None:
    d = make(config_set_enabled=True)
    first = get(d)
    data = format_data(5, THREE)
    assert ask(d, config_set(data)) == b"STORED\r\n"
    assert get(d) == config_reply(data)  # the version as given
    assert ask(d, config_set(b"localhost|127.0.0.1|21002\n")) == b"STORED\r\n"  # unpinned: +1
    assert d.current() == ClusterConfig(6, (THREE[1],))
    assert ask(d, config_set(b"1\nbad|x|1\n")).startswith(
        b"CLIENT_ERROR bad cluster configuration: bad ip"
    )
    assert ask(d, config_set(b"\n")) == b"CLIENT_ERROR bad cluster configuration: no nodes\r\n"
    assert ask(d, config_set(b"1\nbad|x|1\n", noreply=True)) == b""
    assert ask(d, c.ConfigDelete(b"cluster")) == b"DELETED\r\n"
    assert d.current().nodes == parse_data(first[21:-7])[1]  # itself again
    assert d.current().version == 7
    assert ask(d, c.ConfigDelete(b"cluster")) == b"NOT_FOUND\r\n"
    assert ask(d, c.ConfigDelete(b"cluster", noreply=True)) == b""


def test_config_delete_over_a_pinned_file_moves_the_version_on(tmp_path: Path) -> None:
    """The file pins 10; a `config set` serves 11; `config delete cluster` lists the file's
    nodes again at 12, and the next `config set` serves 13: no version goes down, and none
    is served for two lists (emcache acts only on a changed version and kept the older
    list). Regression: 10, 11, then 10 and 11 again."""
    f = tmp_path / "cluster"
    f.write_text("10\nlocalhost:21001\nlocalhost:21002\n")
    d = make(cluster_file=str(f), config_set_enabled=True)
    assert d.current().version == 10
    assert ask(d, config_set(b"localhost|127.0.0.1|21003\n")) == b"STORED\r\n"
    assert d.current().version == 11
    assert ask(d, c.ConfigDelete(b"cluster")) == b"DELETED\r\n"
    assert [n.port for n in d.current().nodes] == [21001, 21002]
    assert d.current().version == 12
    assert ask(d, config_set(b"localhost|127.0.0.1|21004\n")) == b"STORED\r\n"
    assert d.current() == ClusterConfig(13, (Node("localhost", "127.0.0.1", 21004),))


def test_config_set_never_resolves() -> None:
    dns = FakeDns()
    d = make(dns, config_set_enabled=True)
    get(d)
    dns.lookups = 0
    assert ask(d, config_set(b"2\nnode-a:1\n")) == b"STORED\r\n"
    assert dns.lookups == 0
    assert get(d) == config_reply(b"2\nnode-a||1\n")


def test_config_set_overrides_the_file_until_deleted(tmp_path: Path) -> None:
    f = tmp_path / "cluster"
    f.write_text("localhost:21001\nlocalhost:21002\nlocalhost:21003\n")
    d = make(cluster_file=str(f), config_set_enabled=True)
    assert ask(d, config_set(format_data(10, THREE[:1]))) == b"STORED\r\n"
    write(f, "localhost:21002\n")  # the file changes while the override holds
    d.reload()
    assert d.current() == ClusterConfig(10, THREE[:1])
    assert d.overridden
    assert ask(d, c.ConfigDelete(b"cluster")) == b"DELETED\r\n"
    assert d.current() == ClusterConfig(11, (THREE[1],))  # the file as it is now


# ---- the client side of the format (mcached/client/node.py) ----

REPLY_CASES = [
    EXAMPLE,
    b"VALUE AmazonElastiCache:cluster 0 80\r\n" + format_data(1, THREE) + b"\r\nEND\r\n",
    b"CONFIG cluster 7 18\r\n12\ncache-1||11211\n\r\nEND\r\n",
]


@pytest.mark.parametrize("reply", REPLY_CASES)
def test_parse_config_reply_whole_and_byte_by_byte(reply: bytes) -> None:
    used, config = parse_config_reply(reply + b"trailing") or (0, None)
    assert used == len(reply)
    assert config is not None and config.nodes
    for i in range(len(reply)):
        assert parse_config_reply(reply[:i]) is None


def test_parse_config_reply_errors() -> None:
    assert parse_config_reply(b"END\r\n") == (5, None)
    with pytest.raises(NotSupported):
        parse_config_reply(b"ERROR\r\n")
    for bad in (
        b"CLIENT_ERROR x\r\n",
        b"CONFIG cluster 0 5\r\n1\na:1\r\nEND\r\n",  # wrong length
        b"CONFIG cluster 0 4\r\na:1\n\r\nEND\r\n",  # no version line
        b"CONFIG cluster 0 7\r\n1\na:1\nb\r\nEND\r\n",  # no final newline
        b"CONFIG cluster 0 8\r\n1\na:1\nb\n\r\nEND\r\n",  # three lines
        b"CONFIG cluster 0 6\r\n1\na:1\n\r\nEND!\r\n",  # not END
        b"CONFIG cluster 0 x\r\n",
        # regressions: int()'s ValueError past 4,300 digits, which the client's fallback to
        # the next endpoint (on NodeError) never caught; a length no cluster has, waited for
        b"CONFIG cluster 0 " + b"9" * 5000 + b"\r\n",
        b"CONFIG cluster 0 999999999\r\n",
    ):
        with pytest.raises(NodeError):
            parse_config_reply(bad)


ADDRESS_CASES = [
    ("127.0.0.1:21001", ("127.0.0.1", 21001)),
    ("cache.example.com", ("cache.example.com", 11211)),
    ("[::1]:5", ("::1", 5)),
    ("[::1]", ("::1", 11211)),
    ("::1", ("::1", 11211)),
]


@pytest.mark.parametrize("text,address", ADDRESS_CASES)
def test_parse_address(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "h:", "h:0", "h:x", "[::1]x", ":5"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


# ---- settings and layering ----


def test_cluster_options_from_the_command_line() -> None:
    s = parse_settings(
        [
            "--cluster-file",
            "/etc/c",
            "--cluster-dns-interval",
            "0.5",
            "--enable-config-set",
            "--cluster-node-name",
            "n1",
        ]
    )
    assert (s.cluster_file, s.cluster_dns_interval, s.config_set_enabled, s.cluster_node_name) == (
        "/etc/c",
        0.5,
        True,
        "n1",
    )
    assert parse_settings(["--cluster-dns", "svc.ns.svc:11211"]).cluster_dns == "svc.ns.svc:11211"


@pytest.mark.parametrize(
    "changes",
    [
        {"cluster_file": "f", "cluster_dns": "svc:1"},
        {"cluster_dns": "svc"},
        {"cluster_dns": "svc:0"},
        {"cluster_dns": ":11211"},
        {"cluster_dns_interval": 0.0},
    ],
)
def test_cluster_options_validated(changes: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        validate(Settings(**changes))  # type: ignore[arg-type]
