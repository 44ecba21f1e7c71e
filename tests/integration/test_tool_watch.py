"""mcached-tool's ``watch`` and the hot keys of ``top``, against both servers."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from mcached.client.tool import main
from mcached.client.tool_watch import HotKeys
from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration


def keep_fetching(server: Server, stop: threading.Event, hot: bytes = b"hot:key") -> None:
    """Fetches until `stop`: `hot` ten times as often as any other key."""
    with Conn(server.address) as c:
        i = 0
        while not stop.is_set():
            i += 1
            c.send(b"get %b %b %b cold:%d\r\n" % (hot, hot, hot, i % 30))
            c.read_until(b"END\r\n")
            time.sleep(0.002)


@pytest.fixture
def load(server: Server) -> Iterator[None]:
    # the hot key is stored before any watcher attaches: memcached logs the lookup a store
    # makes as an item_get (status=not_found for a new key), which a watcher attached
    # before the set would count as a miss of the hot key
    with Conn(server.address) as c:
        c.send(b"set hot:key 0 0 1\r\nx\r\n")
        assert c.read_until(b"\r\n") == b"STORED\r\n"
    stop = threading.Event()
    t = threading.Thread(target=keep_fetching, args=(server, stop))
    t.start()
    yield
    stop.set()
    t.join()


def test_watch_prints_the_stream(server: Server, load: None) -> None:
    result = CliRunner().invoke(
        main, [f"{server.host}:{server.port}", "watch", "fetchers", "--count", "5"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5
    assert all(" type=item_get key=" in line and line.startswith("ts=") for line in lines)


def test_watch_stops_after_seconds_and_refuses_unknown_words(server: Server) -> None:
    t0 = time.monotonic()
    result = CliRunner().invoke(
        main, [f"{server.host}:{server.port}", "watch", "mutations", "--seconds", "0.5"]
    )
    assert result.exit_code == 0 and result.output == ""
    assert time.monotonic() - t0 < 5
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", "watch", "bogus"])
    assert result.exit_code != 0


def test_bad_counts_and_seconds_are_usage_errors(mcached: Server) -> None:
    """Exit 2 before watching: a negative count stopped after the first line, negative
    seconds at once, and inf seconds ended in settimeout's traceback."""
    for args in (
        ["--count", "-1", "--seconds", "1"],  # --seconds: were -1 taken, the idle watch ends
        ["--seconds", "-1"],
        ["--seconds", "inf"],
        ["--seconds", "nan"],
    ):
        result = CliRunner().invoke(main, [f"{mcached.host}:{mcached.port}", "watch", *args])
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "Error: Invalid value for '--" in result.stderr, args


def test_a_reset_mid_stream_is_a_one_line_error() -> None:
    """A watch whose connection is reset after its OK (a crashed host, a firewall) ends as
    every command's reset does, "Error: ..." and exit 1, not a ConnectionResetError
    traceback. A stand-in node: mcached and memcached only close a watch with a FIN."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(100)  # watch
        conn.sendall(b"OK\r\nts=1.1 gid=1 type=item_get key=a status=found clsid=1 cfd=1 size=1\n")
        time.sleep(0.5)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # an RST

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    try:
        result = CliRunner().invoke(main, [f"{host}:{port}", "watch", "--seconds", "5"])
    finally:
        listener.close()
        thread.join(5)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stdout.startswith("ts=1.1 ")
    assert result.stderr.startswith("Error: watch: ") and "Connection reset" in result.stderr
    assert result.stderr.count("\n") == 1


def test_top_shows_the_hot_keys(server: Server, load: None) -> None:
    args = ["top", "--interval", "1", "--count", "1", "--hot-keys", "3"]
    result = CliRunner().invoke(main, [f"{server.host}:{server.port}", *args])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = next(i for i, line in enumerate(lines) if "hot keys" in line)
    first = lines[at + 1].split()
    assert first[0] == "hot:key" and float(first[1].replace(",", "")) > 0
    assert first[2] == "100.0"  # always found
    assert len([x for x in lines[at + 1 :] if x.strip()]) <= 4


def test_hot_keys_count_fetches_and_hits() -> None:
    hot = HotKeys()
    hot.feed(
        [
            "ts=1.1 gid=1 type=item_get key=a%3Ab status=found clsid=1 cfd=5 size=3",
            "ts=1.2 gid=2 type=item_get key=a%3Ab status=not_found clsid=0 cfd=5 size=0",
            "skipped=4",
            "ts=1.3 gid=7 type=item_get key=c status=found clsid=1 cfd=5 size=3",
            "ts=1.4 gid=8 type=item_store key=c status=stored cmd=set ttl=0 clsid=1 cfd=5 size=3",
        ]
    )
    assert hot.top(5) == [("a:b", 2, 1), ("c", 1, 1)]
    assert hot.skipped == 4
