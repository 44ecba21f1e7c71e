"""ElastiCache's ``config get|set|delete cluster`` over the binary protocol, on the wire.

The opcodes and frames are the AWS ElastiCache Cluster Client for Java's
(awslabs/aws-elasticache-cluster-client-memcached-for-java, ``protocol/binary/``
GetConfigOperationImpl 0x60, SetConfigOperationImpl 0x64, DeleteConfigOperationImpl 0x66).
Each exchange is sent whole and byte by byte and its reply compared byte for byte; `java_read`
reads a reply the way that client does (``OperationImpl.readFromBuffer`` and
``finishedPayload``, ``GetConfigOperationImpl.decodePayload``, ``SerializingTranscoder``,
``AddrUtil.parseClusterTypeConfiguration``), so a reply it would misread fails here.

memcached does not know these opcodes: it answers "Unknown command" (status 0x81), which that
client takes as "no config API" and falls back to ``get AmazonElastiCache:cluster``. mcached
serves them wherever it serves the text ``config get cluster`` (every node, a lone one
listing itself), with the same data.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcached.cluster.config import format_data, parse_node
from mcached.protocol import binary as b
from tests.conftest import KINDS, Server
from tests.wire import Conn, config_reply

pytestmark = pytest.mark.integration

R = b.request
FLAGS = struct.Struct(">I").pack
GET, SET, DELETE = 0x60, 0x64, 0x66
STEPS = pytest.mark.parametrize("step", [None, 1], ids=["whole", "bytewise"])


def exchange(server: Server, frame: bytes, step: int | None = None) -> bytes:
    """Send one request frame (whole, or `step` bytes at a time); its one response frame."""
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if step is None:
            sock.sendall(frame)
        else:
            for i in range(0, len(frame), step):
                sock.sendall(frame[i : i + step])
        return read_frame(sock)


def read_frame(sock: socket.socket) -> bytes:
    buf = b""
    need = 24
    while len(buf) < need:
        chunk = sock.recv(need - len(buf))
        assert chunk, f"closed after {buf!r}"
        buf += chunk
        if len(buf) == 24:
            need = 24 + b.HEADER.unpack_from(buf)[6]
    return buf


def frame(opcode: int, status: int, body: bytes, opaque: int, extlen: int = 0) -> bytes:
    return b.HEADER.pack(0x81, opcode, 0, extlen, 0, status, len(body), opaque, 0) + body


# ---- the Java client's reading of a reply, step by step ----


class JavaOperationError(Exception):
    """``handleError``: the client throws instead of returning a status."""


@dataclass
class JavaStatus:
    success: bool
    message: str


def java_read(reply: bytes, cmd: int, opaque: int) -> tuple[JavaStatus, int, bytes | None]:
    """(status, flags, data): what the client's callback receives for `reply`."""
    # OperationImpl.parseHeaderFromBuffer
    header = reply[:24]
    assert header[0] == 0x81  # RES_MAGIC
    assert header[1] == cmd  # "Unexpected response command value"
    error_code = int.from_bytes(header[6:8], "big")
    payload = reply[24 : 24 + int.from_bytes(header[8:12], "big")]
    assert len(payload) == len(reply) - 24
    assert int.from_bytes(header[12:16], "big") == opaque  # opaqueIsValid
    # OperationImpl.finishedPayload / getStatusForErrorCode
    message = payload.decode()
    if error_code == 0x00:
        if cmd == GET:
            # GetConfigOperationImpl.decodePayload: flags = the first 4 bytes, data the rest
            flags = int.from_bytes(payload[0:4], "big")
            return JavaStatus(True, "OK"), flags, payload[4:]
        assert payload == b""  # decodePayload's "Payload has bytes, but decode isn't overridden"
        return JavaStatus(True, "OK"), 0, None
    if error_code in (0x01, 0x02, 0x05, 0x04, 0x06, 0x07, 0x81, 0x82, 0x83, 0x85, 0x86):
        return JavaStatus(False, message), 0, None
    raise JavaOperationError(message)  # 0x03, 0x84 and anything unlisted (0x20 too)


def java_cluster_configuration(flags: int, data: bytes) -> tuple[int, list[tuple[str, str, int]]]:
    """SerializingTranscoder.decode (flags 0: a UTF-8 string), then
    AddrUtil.parseClusterTypeConfiguration: (version, [(host, ip, port)])."""
    assert flags & 0xFF03 == 0, "flags the transcoder would not read as a string"
    text = data.decode("utf-8")
    lines = re.split(r"(?:\r?\n)", text.strip())
    assert len(lines) == 2, "Incorrect response format"
    version = int(lines[0].strip())
    nodes = []
    for details in re.split(r"(?:\s)+", lines[1].strip()):
        first, second = details.index("|"), details.rindex("|")
        assert first >= 1 and first != second, f"Invalid server {details!r}"
        nodes.append((details[:first].strip(), details[first + 1 : second].strip(),
                      int(details[second + 1 :].strip())))  # fmt: skip
    return version, nodes


# ---- servers ----


@pytest.fixture(scope="module")
def cluster_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    f = tmp_path_factory.mktemp("bincfg") / "cluster.conf"
    f.write_text("7\ncache-b.example|10.0.0.2|11211\ncache-a.example|10.0.0.1|11211\n")
    return f


@pytest.fixture(scope="module")
def clustered(module_server_factory: Callable[..., Server], cluster_file: Path) -> Server:
    return module_server_factory(
        "mcached", "--cluster-file", str(cluster_file), "--cluster-health-interval", "0"
    )


FILE_DATA = b"7\ncache-a.example|10.0.0.1|11211 cache-b.example|10.0.0.2|11211\n"


@pytest.fixture
def settable(server_factory: Callable[..., Server], cluster_file: Path) -> Iterator[Server]:
    yield server_factory(
        "mcached",
        "--cluster-file",
        str(cluster_file),
        "--cluster-health-interval",
        "0",
        "--enable-config-set",
    )


def text_config(server: Server) -> bytes:
    with Conn(server.address) as conn:
        conn.send(b"config get cluster\r\n")
        return conn.read_until(b"END\r\n")


# ---- config get ----


@STEPS
def test_config_get_exact_bytes(clustered: Server, step: int | None) -> None:
    got = exchange(clustered, R(GET, b"cluster", opaque=0x0A0B0C0D), step)
    assert got == (
        bytes.fromhex("81 60 0000 04 00 0000") + struct.pack(">I", 4 + len(FILE_DATA))
        + bytes.fromhex("0A0B0C0D 0000000000000000")
        + b"\0\0\0\0" + FILE_DATA
    )  # fmt: skip
    # the same data as the text verb's
    assert text_config(clustered) == config_reply(FILE_DATA)


@STEPS
def test_the_java_client_reads_the_nodes(clustered: Server, step: int | None) -> None:
    status, flags, data = java_read(exchange(clustered, R(GET, b"cluster", opaque=3), step), GET, 3)
    assert status.success and data is not None
    assert java_cluster_configuration(flags, data) == (
        7,
        [("cache-a.example", "10.0.0.1", 11211), ("cache-b.example", "10.0.0.2", 11211)],
    )


def test_a_lone_node_lists_itself_in_binary_too(mcached: Server) -> None:
    status, flags, data = java_read(exchange(mcached, R(GET, b"cluster", opaque=1)), GET, 1)
    assert status.success and data is not None
    assert text_config(mcached) == config_reply(data)
    version, nodes = java_cluster_configuration(flags, data)
    assert version == 1 and [(ip, port) for _, ip, port in nodes] == [("127.0.0.1", mcached.port)]


@pytest.mark.parametrize("kind", KINDS)
@STEPS
def test_another_key_is_an_unknown_command(
    kind: str, server_factory: Callable[..., Server], step: int | None
) -> None:
    """memcached answers every config opcode so (the client then falls back to the legacy
    key); mcached answers a key other than "cluster" so, as its text verb says ERROR.

    memcached sends that answer only once it has skipped a body's worth of bytes *past* the
    extras and key it already read (its unknown-opcode swallow), so to memcached the frame
    is followed by that many bytes; mcached reads the frame exactly."""
    srv = server_factory(kind)
    keys = [b"other"] if kind == "mcached" else [b"cluster", b"other"]
    ops = ((GET, b"", b""), (DELETE, b"", b""), (SET, FLAGS(0), b"1\nh||1\n"))
    for key in keys:
        for op, extras, value in ops:
            request = R(op, key, value, extras, opaque=9)
            if kind == "memcached":
                request += bytes(len(extras) + len(key) + len(value))
            got = exchange(srv, request, step)
            assert got == frame(op, 0x81, b"Unknown command", 9)
            status, _, _ = java_read(got, op, 9)
            assert status == JavaStatus(False, "Unknown command")


# ---- config set and delete ----


@STEPS
def test_config_set_then_delete(settable: Server, step: int | None) -> None:
    data = b"12\ncache-z.example|10.9.9.9|11311\n"
    # MemcachedClient.setConfig: the flags as 4 bytes of extras, the data as the value
    got = exchange(settable, R(SET, b"cluster", data, FLAGS(0), opaque=4), step)
    assert got == bytes.fromhex("81 64 0000 00 00 0000 00000000 00000004 0000000000000000")
    assert java_read(got, SET, 4)[0] == JavaStatus(True, "OK")
    reply = exchange(settable, R(GET, b"cluster", opaque=5), step)
    assert reply == frame(GET, 0, b"\0\0\0\0" + data, 5, extlen=4)
    assert text_config(settable) == config_reply(data)  # one override, both syntaxes
    got = exchange(settable, R(DELETE, b"cluster", opaque=6), step)
    assert got == frame(DELETE, 0, b"", 6)
    assert java_read(got, DELETE, 6)[0] == JavaStatus(True, "OK")
    got = exchange(settable, R(DELETE, b"cluster", opaque=7), step)
    assert got == frame(DELETE, 0x01, b"Not found", 7)
    assert java_read(got, DELETE, 7)[0] == JavaStatus(False, "Not found")
    # the file's nodes again, one version on from the override's 12 (the file's pin, 7,
    # is no new word: README "The version")
    uncovered = b"13\n" + FILE_DATA.split(b"\n", 1)[1]
    assert exchange(settable, R(GET, b"cluster", opaque=8), step) == frame(
        GET, 0, b"\0\0\0\0" + uncovered, 8, extlen=4
    )


def test_config_set_of_bad_data(settable: Server) -> None:
    got = exchange(settable, R(SET, b"cluster", b"1\nx:y\n", FLAGS(0), opaque=2))
    assert got == frame(SET, 0x04, b"Invalid arguments", 2)
    assert java_read(got, SET, 2)[0] == JavaStatus(False, "Invalid arguments")
    assert text_config(settable) == config_reply(FILE_DATA)  # nothing changed


def test_config_set_and_delete_refused_without_the_flag(clustered: Server) -> None:
    """What memcached answers a flush it does not allow (-F): "Auth failure." (the text
    verbs say CLIENT_ERROR ... not allowed)."""
    data = format_data(2, [parse_node("h|10.0.0.3|1")])
    got = exchange(clustered, R(SET, b"cluster", data, FLAGS(0), opaque=3))
    assert got == frame(SET, 0x20, b"Auth failure.", 3)
    with pytest.raises(JavaOperationError):
        java_read(got, SET, 3)
    assert exchange(clustered, R(DELETE, b"cluster", opaque=4)) == frame(
        DELETE, 0x20, b"Auth failure.", 4
    )
    assert text_config(clustered) == config_reply(FILE_DATA)


def test_pipelined_with_other_opcodes(clustered: Server) -> None:
    """Each frame is read exactly: the next request after a config verb is served (memcached
    eats the start of it after an opcode it does not know)."""
    with socket.create_connection(clustered.address, timeout=5) as sock:
        sock.sendall(
            R(GET, b"cluster", b"", FLAGS(1), opaque=1)  # extras are ignored
            + R(DELETE, b"cluster", opaque=2)
            + R(b.NOOP, opaque=3)
        )
        assert read_frame(sock) == frame(GET, 0, b"\0\0\0\0" + FILE_DATA, 1, extlen=4)
        assert read_frame(sock) == frame(DELETE, 0x20, b"Auth failure.", 2)
        assert read_frame(sock) == frame(b.NOOP, 0, b"", 3)
