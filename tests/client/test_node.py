"""mcached/client/node.py: how replies are framed (by length, never by guessing), and the
one client's requests against a scripted server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from mcached.client.node import (
    NodeClient,
    NodeError,
    ReplyError,
    _until_end,
    _values,
)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("buf", "want"),
    [
        (b"", None),
        (b"END\r\n", 5),
        (b"STAT pid 1\r\nEND\r\n", 17),
        (b"STAT pid 1\r\nEN", None),
        (b"key=a exp=-1\nEND\r\n", 18),  # memcached ends metadump lines with a bare \n
        (b"STAT x FRIEND\r\n", None),  # END only as a whole line
        (b"ERROR\r\n", 7),
        (b"BADCLASS invalid class id\r\n", 27),
        (b"BUSY currently processing crawler request\r\n", 43),
        (b"CLIENT_ERROR", None),
    ],
)
def test_until_end(buf: bytes, want: int | None) -> None:
    assert _until_end(bytearray(buf)) == want


@pytest.mark.unit
@pytest.mark.parametrize(
    ("buf", "want"),
    [
        (b"END\r\n", 5),
        (b"VALUE a 0 3\r\nEND\r\nEND\r\n", 23),  # a value that reads END is data, not the end
        (b"VALUE a 0 3\r\nEND\r\n", None),
        (b"VALUE a 0 1\r\nx\r\nVALUE b 5 0\r\n\r\nEND\r\n", 36),
        (b"VALUE a 0 10\r\nxx", None),
        (b"SERVER_ERROR out of memory\r\n", 28),
    ],
)
def test_values_walks_by_length(buf: bytes, want: int | None) -> None:
    assert _values(bytearray(buf)) == want


@pytest.mark.unit
@pytest.mark.parametrize(
    "buf", [b"VALUE a 0 x\r\n", b"VALUE a 0\r\n", b"VALUE a 0 1\r\nx\r\nOK\r\n"]
)
def test_values_refuses_what_is_not_a_get_reply(buf: bytes) -> None:
    with pytest.raises(NodeError):
        _values(bytearray(buf))


@pytest.fixture
def scripted() -> Iterator[tuple[tuple[str, int], dict[bytes, bytes], list[bytes]]]:
    """A one-connection server that answers each request line from a table (ERROR if not
    in it); yields its address, the table to fill, and the lines it received."""
    listener = socket.create_server(("127.0.0.1", 0))
    replies: dict[bytes, bytes] = {}
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                seen.append(line.rstrip(b"\r\n"))
                conn.sendall(replies.get(seen[-1], b"ERROR\r\n"))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname(), replies, seen
    listener.close()
    thread.join(5)


@pytest.mark.integration
def test_one_connection_serves_every_request(
    scripted: tuple[tuple[str, int], dict[bytes, bytes], list[bytes]],
) -> None:
    address, replies, seen = scripted
    replies[b"stats"] = b"STAT pid 7\r\nSTAT version 1.6.18\r\nEND\r\n"
    replies[b"stats slabs"] = b"STAT 1:chunk_size 96\r\nSTAT active_slabs 1\r\nEND\r\n"
    replies[b"lru_crawler metadump all"] = b"key=a exp=-1 la=1\nkey=b exp=5 la=1\nEND\r\n"
    replies[b"get a b c"] = b"VALUE a 0 5\r\nEND\r\n\r\nVALUE b 3 0\r\n\r\nEND\r\n"
    replies[b"version"] = b"VERSION 1.6.18\r\n"
    with NodeClient(address, timeout=5) as node:
        assert node.stats() == {"pid": "7", "version": "1.6.18"}
        assert node.stats("slabs") == {"1:chunk_size": "96", "active_slabs": "1"}
        with pytest.raises(ReplyError) as refused:
            node.lines(b"lru_crawler metadump hash")
        assert refused.value.line == b"ERROR"
        # an error line leaves the connection open: the next request goes on it
        lines = node.lines(b"lru_crawler metadump all")
        assert lines == [b"key=a exp=-1 la=1", b"key=b exp=5 la=1"]
        assert node.get_many([b"a", b"b", b"c"]) == [(b"a", b"0", b"END\r\n"), (b"b", b"3", b"")]
        assert node.version() == "1.6.18"
    assert seen == [
        b"stats",
        b"stats slabs",
        b"lru_crawler metadump hash",
        b"lru_crawler metadump all",
        b"get a b c",
        b"version",
    ]


@pytest.mark.integration
def test_a_node_that_is_not_there() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    with NodeClient(address, timeout=1) as node, pytest.raises(NodeError) as exc:
        node.stats()
    assert f"127.0.0.1:{address[1]}" in str(exc.value)
    assert node.sock is None
