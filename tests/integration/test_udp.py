"""UDP (-U): memcached's 8-byte frame header and replies split into datagrams, checked
against both servers."""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable

import pytest

from tests.conftest import HOST, Server, free_port
from tests.wire import Conn

pytestmark = pytest.mark.integration

HEADER = struct.Struct("!HHHH")


def udp_request(
    port: int, request_id: int, payload: bytes, seq: int = 0, total: int = 1
) -> list[bytes]:
    """Send one datagram; collect the reply datagrams until all `total` arrived."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(HEADER.pack(request_id, seq, total, 0) + payload, (HOST, port))
        got: list[bytes] = []
        while True:
            data, _ = s.recvfrom(65536)
            got.append(data)
            _, _, n, _ = HEADER.unpack_from(data)
            if len(got) == n:
                return got


def start(kind: str, server_factory: Callable[..., Server]) -> Server:
    port = free_port(socket.SOCK_DGRAM)
    return server_factory(kind, "-U", str(port))


def test_udp_get_and_set(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = start(kind, server_factory)
    with Conn(srv.address) as conn:
        assert conn.request(b"set k 5 0 3\r\nabc\r\n") == b"STORED\r\n"
    [reply] = udp_request(srv.udp_port, 0x1234, b"get k\r\n")
    assert reply == HEADER.pack(0x1234, 0, 1, 0) + b"VALUE k 5 3\r\nabc\r\nEND\r\n"
    [reply] = udp_request(srv.udp_port, 7, b"set u 0 0 2\r\nhi\r\n")
    assert reply == HEADER.pack(7, 0, 1, 0) + b"STORED\r\n"
    with Conn(srv.address) as conn:
        assert conn.request(b"get u\r\n") == b"VALUE u 0 2\r\nhi\r\nEND\r\n"


def test_udp_large_reply_is_split_into_datagrams(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv = start(kind, server_factory)
    value = bytes(range(256)) * 20  # 5120 bytes: several datagrams
    with Conn(srv.address) as conn:
        assert conn.request(b"set big 0 0 %d\r\n" % len(value) + value + b"\r\n") == b"STORED\r\n"
    parts = udp_request(srv.udp_port, 99, b"get big\r\n")
    headers = [HEADER.unpack_from(p) for p in parts]
    n = len(parts)
    assert n > 1
    assert sorted(h[1] for h in headers) == list(range(n))
    assert all(h[0] == 99 and h[2] == n and h[3] == 0 for h in headers)
    assert all(len(p) <= 1400 for p in parts)
    body = b"".join(p[8:] for p in sorted(parts, key=lambda p: HEADER.unpack_from(p)[1]))
    assert body == b"VALUE big 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n"


def test_udp_off_by_default(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind)
    with Conn(srv.address) as conn:
        assert b"STAT udpport 0\r\n" in conn.request(b"stats settings\r\n")


def test_udp_a_request_s_sequence_number_is_not_read(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached looks only at a request's datagram count; mcached refused a one-datagram
    request whose sequence number was not 0 (found by a hunt)."""
    srv = start(kind, server_factory)
    [reply] = udp_request(srv.udp_port, 9, b"version\r\n", seq=1)
    assert reply.startswith(HEADER.pack(9, 0, 1, 0) + b"VERSION ")


def test_udp_a_datagram_of_a_header_alone_is_not_counted(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached reads a datagram of 8 bytes or fewer as no data: no reply, and not in
    ``bytes_read`` (mcached counted the header's 8; found by a hunt)."""
    srv = start(kind, server_factory)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in (HEADER.pack(3, 0, 1, 0), b"", b"abc"):
            s.sendto(data, (HOST, srv.udp_port))
        [reply] = udp_request(srv.udp_port, 4, b"get nothing\r\n")  # after the others
        assert reply == HEADER.pack(4, 0, 1, 0) + b"END\r\n"
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recvfrom(65536)  # nothing came for them
    with Conn(srv.address) as conn:
        stats = conn.request(b"stats\r\n")
    counted = 8 + len(b"get nothing\r\n") + len(b"stats\r\n")
    assert b"STAT bytes_read %d\r\n" % counted in stats, stats


def test_udp_a_datagram_of_a_request_of_several_is_dropped_unanswered(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached 1.6 drops a datagram whose header counts more (or fewer) than one
    datagram: no reply, now or with a later request's, but its bytes are read. Regression:
    mcached answered SERVER_ERROR multi-packet request not supported (57 bytes for a
    15-byte datagram, to whatever address the datagram claimed; found by a hunt)."""
    srv = start(kind, server_factory)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for total in (2, 0):
            s.sendto(HEADER.pack(5, 0, total, 0) + b"get a\r\n", (HOST, srv.udp_port))
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recvfrom(65536)
        s.settimeout(3)
        s.sendto(HEADER.pack(6, 0, 1, 0) + b"get a\r\n", (HOST, srv.udp_port))
        assert s.recvfrom(65536)[0] == HEADER.pack(6, 0, 1, 0) + b"END\r\n"  # its own alone
    with Conn(srv.address) as conn:
        stats = conn.request(b"stats\r\n")
    assert b"STAT bytes_read %d\r\n" % (3 * 15 + len(b"stats\r\n")) in stats, stats
    assert b"STAT bytes_written 13\r\n" in stats, stats  # the END's datagram alone


def silent(port: int, payload: bytes, request_id: int = 1, wait: float = 0.5) -> bool:
    """Send one datagram: True if no reply came within `wait` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.sendto(HEADER.pack(request_id, 0, 1, 0) + payload, (HOST, port))
        try:
            s.recvfrom(65536)
        except TimeoutError:
            return True
        return False


def test_bug_watch_over_udp_logged_a_traceback_a_datagram(
    kind: str, server_factory: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    """A hunt: each datagram asking ``watch`` (which a datagram cannot become) logged an
    ERROR with a traceback: any sender could fill the log (1,029 tracebacks from 2,000
    datagrams). Nothing is sent for it, nor for what the datagram asked before or after
    (memcached's connection turns watcher), and nothing is logged."""
    srv = start(kind, server_factory)
    with caplog.at_level(logging.WARNING, "mcached"):
        assert silent(srv.udp_port, b"watch\r\n")
        # the get's reply goes as memcached's does (it transmits after a get), then nothing
        [reply] = udp_request(srv.udp_port, 3, b"get a\r\nwatch\r\nversion\r\n")
        assert reply == HEADER.pack(3, 0, 1, 0) + b"END\r\n"
        for i in range(20):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(HEADER.pack(i, 0, 1, 0) + b"watch\r\n", (HOST, srv.udp_port))
        [reply] = udp_request(srv.udp_port, 9, b"version\r\n")
    assert reply == HEADER.pack(9, 0, 1, 0) + b"VERSION 1.6.18\r\n"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_bug_a_metadump_over_udp_was_built_whole_in_one_reply(
    server_factory: Callable[..., Server],
) -> None:
    """A hunt: ``lru_crawler metadump all`` in a datagram built the whole dump as one
    reply (29 MB for 400,000 items, held while its datagrams went out, its worker serving
    nobody else meanwhile), where memcached hands the connection to its crawler, which
    cannot write to a UDP socket: nothing is sent. As memcached now; the refusals before it
    (crawler off, dumps off, a pipeline) are still answered."""
    port = free_port(socket.SOCK_DGRAM)
    srv = server_factory("mcached-procs", "-U", str(port))
    with Conn(srv.address, timeout=30) as conn:
        conn.send(b"".join(b"set key%d 0 0 1 noreply\r\nx\r\n" % i for i in range(2000)))
        assert conn.request(b"version\r\n").startswith(b"VERSION")
    assert silent(port, b"lru_crawler metadump all\r\n", wait=1.0)
    [reply] = udp_request(port, 5, b"mg zz v q\r\nlru_crawler metadump all\r\n")
    assert reply.endswith(b"ERROR cannot pipeline other commands before metadump\r\n")
    [reply] = udp_request(port, 9, b"version\r\n")
    assert reply == HEADER.pack(9, 0, 1, 0) + b"VERSION 1.6.18\r\n"
