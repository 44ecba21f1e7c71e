"""Admin commands tools rely on (memcached-tool's dump reads ``lru_crawler metadump``),
checked against both servers."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

LINE = re.compile(
    rb"key=(\S+) exp=(-?\d+) la=(\d+) cas=(\d+) fetch=(yes|no) cls=(\d+) size=(\d+)\n"
)


@pytest.mark.parametrize("which", [b"all", b"hash"])
def test_metadump_lists_every_live_item(server: Server, which: bytes) -> None:
    with Conn(server.address) as conn:
        assert (
            conn.request(
                b"set foo 0 0 3\r\nbar\r\nset k%2 0 100 1\r\ny\r\nset gone 0 -1 1\r\nz\r\n"
                b"get foo\r\n"
            )
            == b"STORED\r\nSTORED\r\nSTORED\r\nVALUE foo 0 3\r\nbar\r\nEND\r\n"
        )
        conn.send(b"lru_crawler metadump %b\r\n" % which)
        dump = conn.read_until(b"END\r\n")
    body = dump[: -len(b"END\r\n")]
    rows = {m.group(1): m for m in LINE.finditer(body)}
    assert b"".join(m.group(0) for m in LINE.finditer(body)) == body  # nothing else in it
    assert set(rows) == {b"foo", b"k%252"}  # URL-encoded key; the expired item is not listed
    foo, k2 = rows[b"foo"], rows[b"k%252"]
    assert foo.group(2) == b"-1" and foo.group(5) == b"yes" and foo.group(7) == b"65"
    assert int(k2.group(2)) > int(k2.group(3))  # absolute expiry time after last access
    assert k2.group(5) == b"no" and k2.group(7) == b"63"
    assert foo.group(6) == b"1"


@pytest.mark.parametrize(
    "request_line,reply",
    [
        (b"lru_crawler metadump 99\r\n", b"BADCLASS invalid class id\r\n"),
        (b"lru_crawler metadump\r\n", b"ERROR\r\n"),
        (b"lru_crawler foo\r\n", b"ERROR\r\n"),
        (b"lru_crawler\r\n", b"ERROR\r\n"),
        (b"lru_crawler crawl all\r\n", b"OK\r\n"),
        (b"lru_crawler metadump 1\r\n", b"END\r\n"),
        (b"lru_crawler metadump hash\r\n", b"END\r\n"),
        (b"lru_crawler metadump hash,1\r\n", b"BADCLASS invalid class id\r\n"),
        (b"lru_crawler metadump HASH\r\n", b"BADCLASS invalid class id\r\n"),
        (b"lru_crawler crawl hash\r\n", b"ERROR an unknown error happened\r\n"),
    ],
)
def test_lru_crawler_replies(server: Server, request_line: bytes, reply: bytes) -> None:
    with Conn(server.address) as conn:
        conn.send(request_line)
        assert conn.read_until(b"\r\n") == reply
