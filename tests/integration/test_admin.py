"""Admin commands tools rely on (memcached-tool's dump reads ``lru_crawler metadump``),
checked against both servers."""

from __future__ import annotations

import re
import select
from collections.abc import Callable

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


@pytest.mark.parametrize("kind", ["mcached", "mcached-procs"])
def test_a_cachedump_walk_lets_its_worker_serve_others(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """``stats cachedump`` walks every item table for its class's newest items: a step at a
    time, between which its worker serves its other connections (one worker here). It was
    one call: 3.4 s of one worker, none of its clients answered, for a million items.
    Another client's ``version``, sent right after the dump, is answered while the dump
    still walks (its reply, sent once the walk ends, has not come); before, the whole walk
    came first."""
    srv = server_factory(kind, "-t", "1")
    with Conn(srv.address, timeout=60) as dumper, Conn(srv.address) as other:
        for start in range(0, 100_000, 10_000):
            dumper.send(
                b"".join(
                    b"set key%d 0 0 1 noreply\r\nx\r\n" % i for i in range(start, start + 10_000)
                )
            )
        assert dumper.request(b"version\r\n").startswith(b"VERSION")
        dumper.send(b"stats cachedump 1 0\r\n")
        other.send(b"version\r\n")
        assert other.read_until(b"\r\n").startswith(b"VERSION")
        assert not select.select([dumper.sock], [], [], 0)[0], "the dump ended first"
        reply = dumper.read_until(b"END\r\n")
        assert 2 * 1024 * 1024 - 300 < len(reply) < 2 * 1024 * 1024  # memcached's cap
        rows = reply.split(b"\r\n")[:-2]
        assert rows == [b"ITEM key%d [1 b; 0 s]" % (99_999 - i) for i in range(len(rows))]


# --- a review of the admin and control commands' arguments, side by side with memcached ---

MANY = b"".join(b" a%d" % i for i in range(19))  # 19 tokens: "slabs automove 1" + them is 22


@pytest.mark.parametrize(
    ("request_line", "reply"),
    [
        # the 23rd token is the last memcached reads: "noreply" there counts, after it not
        (b"slabs automove 1" + MANY + b" noreply a b c\r\n", b""),
        (b"slabs automove 1" + MANY + b" x noreply\r\n", b"OK\r\n"),
        # and it is the one memcached tests for "HTTP/" (None: hung up on)
        (b"foo" + MANY + b" a19 a20 HTTP/1.1 a b\r\n", None),
        (b"foo" + MANY + b" a19 a20 a21 HTTP/1.1\r\n", b"ERROR\r\n"),
    ],
    ids=["noreply-23rd", "noreply-24th", "http-23rd", "http-24th"],
)
def test_a_line_past_23_tokens_is_read_as_memcached_reads_it(
    server: Server, request_line: bytes, reply: bytes | None
) -> None:
    """memcached's tokenize_command reads 23 tokens and leaves the rest of the line unread
    (only a get reads on); mcached read every token, so a noreply or an "HTTP/" after the
    23rd counted, and one at the 23rd did not."""
    with Conn(server.address) as conn:
        assert conn.request(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        conn.send(request_line + b"mn\r\n")
        if reply is None:
            assert conn.closed()
        else:
            assert conn.read_until(b"MN\r\n") == reply + b"MN\r\n"


@pytest.mark.parametrize(
    "verb", [b"gx", b"sx", b"ax", b"cx", b"ix", b"dx", b"tx", b"mx", b"x", b"sets", b"dump"]
)
def test_http_lines_of_verbs_memcached_reads_as_its_own_are_errors(
    server: Server, verb: bytes
) -> None:
    """memcached hangs up on an unknown verb's line ending "HTTP/..." only in its last branch:
    a one-byte verb, a two-byte one starting "m", or one starting with a letter of its verbs
    "gsacidt" is answered ERROR (``dx / HTTP/1.1``); mcached hung up on all of them."""
    with Conn(server.address) as conn:
        conn.send(verb + b" / HTTP/1.1\r\nmn\r\n")
        assert conn.read_until(b"MN\r\n") == b"ERROR\r\nMN\r\n"
    with Conn(server.address) as conn:  # the others are still hung up on
        conn.send(b"e" + verb + b" / HTTP/1.1\r\nmn\r\n")
        assert conn.closed()


def test_bget_is_get(server: Server) -> None:
    """memcached keeps ``bget``, an ancient name of get; mcached answered ERROR."""
    with Conn(server.address) as conn:
        assert conn.request(b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        conn.send(b"bget k nokey k\r\nbget\r\n")
        assert (
            conn.read_until(b"ERROR\r\n")
            == b"VALUE k 0 1\r\nv\r\nVALUE k 0 1\r\nv\r\nEND\r\nERROR\r\n"
        )
