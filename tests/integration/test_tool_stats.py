"""mcached-tool's display/stats/settings/dump/top against both servers."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from mcached.client.tool import main
from mcached.client.tool_stats import render_top
from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration


def run(server: Server, *args: str) -> str:
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", *args])
    assert result.exit_code == 0, result.output
    return result.output


def load(server: Server) -> None:
    with Conn(server.address) as conn:
        conn.send(
            b"".join(
                b"set key%d %d 0 %d\r\n%b\r\n" % (i, i, 10 + i, b"v" * (10 + i)) for i in range(20)
            )
            + b"set bin 7 0 4\r\n\x00\r\n\xff\r\n"
            + b"get key1 nope\r\n"
        )
        conn.read_until(b"END\r\n")


def dump_keys(server: Server) -> list[bytes]:
    with Conn(server.address) as conn:
        conn.send(b"lru_crawler metadump all\r\n")
        lines = conn.read_until(b"END\r\n").splitlines()
    return [line.split(b" ")[0] for line in lines if line.startswith(b"key=")]


def test_stats_and_settings(server: Server) -> None:
    load(server)
    out = run(server, "stats")
    assert out.startswith(f"#{server.host}:{server.port}")
    assert any(line.split() == ["curr_items", "21"] for line in out.splitlines())
    assert any(line.split() == ["get_hits", "1"] for line in out.splitlines())
    settings = run(server, "settings")
    assert any(line.split() == ["maxbytes", "67108864"] for line in settings.splitlines())


def test_display_shows_the_slab_table(server: Server) -> None:
    load(server)
    out = run(server, "display").splitlines()
    assert out[0].split()[:4] == ["#", "Item_Size", "Max_age", "Pages"]
    rows = [line.split() for line in out[1:]]
    assert rows and all(r[0].isdigit() for r in rows)
    count = sum(int(r[4]) for r in rows)
    # the Count column adds up to curr_items (once 23 under a loaded CI run, not since
    # reproduced: the keys then say whether the extra items were real, and whose)
    assert count == 21, (count, dump_keys(server))


def test_display_is_the_default_and_keys_and_sizes_are_memcached_tools(server: Server) -> None:
    """memcached-tool's ``keys [limit]`` (a metadump line a key), ``sizes`` (stats sizes)
    and ``display`` when no command is given. Regression (a hunt): mcached-tool had neither
    command and wanted one."""
    load(server)
    assert run(server) == run(server, "display")
    lines = run(server, "keys").splitlines()
    assert lines[0] == "Dumping memcache keys"
    assert sorted(line.split(" ")[0] for line in lines[1:]) == sorted(
        k.decode() for k in dump_keys(server)
    )
    assert all(" exp=" in line and " cls=" in line for line in lines[1:])
    limited = run(server, "keys", "5").splitlines()
    assert limited[0] == "Dumping memcache keys (limiting to 5 keys)" and len(limited) == 6
    assert run(server, "sizes").startswith(f"#{server.host}:{server.port}   Size   Count")


def test_dump_replays_into_an_empty_server(server: Server, server_factory: object) -> None:
    load(server)
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", "dump"])
    assert result.exit_code == 0
    stream = result.stdout_bytes
    assert stream.count(b"add ") == 21
    other = server_factory(server.kind)  # type: ignore[operator]
    with Conn(other.address) as conn:
        conn.send(stream)
        replies = b""
        while replies.count(b"STORED\r\n") < 21:
            replies += conn.sock.recv(65536)
        assert replies == b"STORED\r\n" * 21
        assert conn.request(b"get bin key19\r\n") == (
            b"VALUE bin 7 4\r\n\x00\r\n\xff\r\nVALUE key19 19 29\r\n" + b"v" * 29 + b"\r\nEND\r\n"
        )


def binary_set(key: bytes, value: bytes) -> bytes:
    """A binary protocol set of `key` (which may hold any byte) with flags 0, no expiry."""
    extras = struct.pack(">II", 0, 0)
    body = len(extras) + len(key) + len(value)
    head = struct.pack(">BBHBBHIIQ", 0x80, 0x01, len(key), len(extras), 0, 0, body, 0, 0)
    return head + extras + key + value


def test_dump_leaves_out_keys_no_text_command_can_carry(server: Server) -> None:
    """Binary protocol keys with a line end or a space: a dump that sent them in its ``get``
    ran a flush_all hidden in one (memcached's own memcached-tool does too) or broke on the
    other. They are left out and counted; everything else is dumped, nothing is changed.
    A limit below 1 is refused, as memcached-tool refuses it."""
    load(server)
    with Conn(server.address) as conn:
        for key in (b"z\r\nflush_all\r\nget", b"two words"):
            conn.send(binary_set(key, b"v"))
            assert conn.read_exact(24)[6:8] == b"\x00\x00"  # stored
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", "dump"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.count(b"add ") == 21
    assert "left out 2 keys with spaces or control bytes" in result.stderr
    with Conn(server.address) as conn:
        conn.send(b"stats\r\n")
        st = conn.read_until(b"END\r\n")
    assert b"STAT cmd_flush 0\r\n" in st and b"STAT curr_items 23\r\n" in st
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", "dump", "--", "-5"])
    assert result.exit_code == 2 and "invalid limit -5" in result.output


def test_the_node_client_refuses_to_send_such_a_key() -> None:
    from mcached.client.node import NodeClient

    node = NodeClient(("127.0.0.1", 1))  # never connected: refused before
    with pytest.raises(ValueError, match="cannot carry"):
        node.get_many([b"a", b"b\r\nflush_all"])
    with pytest.raises(ValueError, match="cannot carry"):
        node.store_many([(b"a b", b"0", 0, b"v")])


@pytest.fixture
def lru_walk_server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that knows no ``metadump hash`` (as memcached before it had one) and whose
    LRU walk met key ``a`` twice: what a real memcached does only when its LRU moves an item
    mid-walk. Yields its address and the request lines it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []
    replies = {
        b"lru_crawler metadump hash": b"BADCLASS invalid class id\r\n",
        b"lru_crawler metadump all": b"key=a exp=-1 la=1 cas=1 fetch=no cls=1 size=60\n"
        b"key=b exp=-1 la=1 cas=2 fetch=no cls=1 size=60\n"
        b"key=a exp=-1 la=1 cas=1 fetch=no cls=1 size=60\nEND\r\n",
        b"get a b": b"VALUE a 0 1\r\nx\r\nVALUE b 3 2\r\nyy\r\nEND\r\n",
    }

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                seen.append(line.rstrip(b"\r\n"))
                conn.sendall(replies.get(seen[-1], b"ERROR\r\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    yield f"{host}:{port}", seen
    listener.close()
    thread.join(5)


def test_bug_dump_repeated_a_key_the_lru_walk_met_twice(
    lru_walk_server: tuple[str, list[bytes]],
) -> None:
    """memcached's ``metadump all`` lists an item twice when its LRU moves it during the walk
    (seen in CI against memcached 1.6.18: the replay then answered NOT_STORED once). The dump
    asks for the hash walk first, falls back to the LRU walk, and lists every key once."""
    address, seen = lru_walk_server
    result = CliRunner().invoke(main, [address, "dump"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"add a 0 0 1\r\nx\r\nadd b 3 0 2\r\nyy\r\n"
    assert seen == [b"lru_crawler metadump hash", b"lru_crawler metadump all", b"get a b"]


def test_top_refreshes(server: Server) -> None:
    load(server)
    out = run(server, "top", "--interval", "0.2", "--count", "2")
    assert out.count("hit ratio:") == 2
    assert "ops:  get " in out and "connections:" in out and "class  chunk_size" in out


def test_bad_seconds_and_counts_are_usage_errors(mcached: Server) -> None:
    """Exit 2 with click's one-line message, before any request: -1, nan or inf seconds
    ended in settimeout's or sleep's traceback, 0 made the socket non-blocking, and a
    negative count stopped top at once."""
    address = f"{mcached.host}:{mcached.port}"
    for args in (
        ["--timeout", "-1", address, "stats"],
        ["--timeout", "nan", address, "stats"],
        ["--timeout", "inf", address, "display"],
        ["--timeout", "0", address, "stats"],
        [address, "top", "--interval", "-1", "--hot-keys", "0", "--count", "1"],
        [address, "top", "--interval", "nan", "--count", "1"],
        [address, "top", "--count", "-1"],
        [address, "top", "--hot-keys", "-1", "--count", "1"],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "Error: Invalid value for '--" in result.stderr, args


def test_render_top_rates() -> None:
    prev = {"cmd_get": "100", "get_hits": "50", "cmd_set": "10", "evictions": "0"}
    cur = {
        "cmd_get": "300",
        "get_hits": "200",
        "cmd_set": "30",
        "evictions": "4",
        "bytes": "2048",
        "limit_maxbytes": "67108864",
        "curr_items": "7",
    }
    screen = render_top("h:1", prev, cur, {"1:chunk_size": "96", "1:used_chunks": "7"}, 2.0)
    assert "get 100/s" in screen and "set 10/s" in screen
    assert "hit ratio: 75.0% now, 66.7% since start" in screen
    assert "evictions 4 (2/s)" in screen
    assert "      1          96             7   672B" in screen
