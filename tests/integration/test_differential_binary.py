"""A bounded differential test of the binary protocol: the same seeded random sessions of
well-formed requests over three connections, sent to memcached 1.6.18 and to mcached (worker
processes, and threads); every response frame must be equal.

Each request goes on one of three connections chosen at random, followed by a NOOP on the
same connection, and its response frames are read up to the NOOP's before the next request is
sent, so the order is the same on both servers whatever their threads do. Six keys (one of
250 bytes, one with a NUL, CR and LF), so requests collide.

Frames are compared after two normalisations: CAS values are replaced by their order of first
appearance (each server counts its own; a request's CAS is that server's own, as its earlier
responses gave it, or one above 2^62 that no item has), and a value that is a number padded
with spaces reads as the number, its body length too (memcached's incr/decr rewrites a value
in place, padded, only when no other thread holds a reference to the item: a race; see
test_differential.py's ARITH_KEYS). Left out: malformed frames, whose differences
tests/memcached_suite/TRIAGE.md ("The binary protocol") records and keeps, and what depends
on the clock or the server (stat, version, flush with a delay).

The same sessions also go pipelined (`test_pipelined_binary_sessions_match_memcached`), as
test_differential.py's do: on one connection, in pieces cut at random bytes, without waiting.

A failure names the seed, the request that first differs, and both servers' frames:
``pytest tests/integration/test_differential_binary.py -k "<kind>-<seed>"`` runs it again.
"""

from __future__ import annotations

import random
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.conftest import Server
from tests.integration.test_differential import (
    CHUNKED_SEEDS,
    PIPELINED_SEEDS,
    SMALL_CHUNKS,
    assert_same_session,
    pipeline,
    seeds,
    shown,
)
from tests.wire import Conn

pytestmark = pytest.mark.integration

SEEDS = seeds(range(4))
REQUESTS = 200
CONNS = 3
KEYS = [b"a", b"k2", b"num", b"key with space", b"\x00\xffbin\r\n", b"x" * 250]
# incr/decr only on ARITH_KEYS, append/prepend only on the others: a number memcached padded
# in place would keep its spaces under an append (padded or not is a race in memcached).
ARITH_KEYS, BYTE_KEYS = KEYS[:3], KEYS[3:]
HEADER = struct.Struct(">BBHBBHIIQ")
REQUEST_MAGIC = 0x80
NOOP_OPAQUE = 0xFEED0000

GET, GETQ, GETK, GETKQ = 0x00, 0x09, 0x0C, 0x0D
SET, ADD, REPLACE, SETQ, ADDQ, REPLACEQ = 0x01, 0x02, 0x03, 0x11, 0x12, 0x13
DELETE, DELETEQ = 0x04, 0x14
INCR, DECR, INCRQ, DECRQ = 0x05, 0x06, 0x15, 0x16
APPEND, PREPEND, APPENDQ, PREPENDQ = 0x0E, 0x0F, 0x19, 0x1A
TOUCH, GAT, GATQ, GATK, GATKQ = 0x1C, 0x1D, 0x1E, 0x23, 0x24
FLUSH, NOOP = 0x08, 0x0A
NAMES = {
    GET: "GET", GETQ: "GETQ", GETK: "GETK", GETKQ: "GETKQ", SET: "SET", ADD: "ADD",
    REPLACE: "REPLACE", SETQ: "SETQ", ADDQ: "ADDQ", REPLACEQ: "REPLACEQ", DELETE: "DELETE",
    DELETEQ: "DELETEQ", INCR: "INCR", DECR: "DECR", INCRQ: "INCRQ", DECRQ: "DECRQ",
    APPEND: "APPEND", PREPEND: "PREPEND", APPENDQ: "APPENDQ", PREPENDQ: "PREPENDQ",
    TOUCH: "TOUCH", GAT: "GAT", GATQ: "GATQ", GATK: "GATK", GATKQ: "GATKQ", FLUSH: "FLUSH",
    NOOP: "NOOP",
}  # fmt: skip
GETS = (GET, GETQ, GETK, GETKQ)
STORES = (SET, ADD, REPLACE, SETQ, ADDQ, REPLACEQ)
ARITHS = (INCR, DECR, INCRQ, DECRQ)
CONCATS = (APPEND, PREPEND, APPENDQ, PREPENDQ)
GATS = (GAT, GATQ, GATK, GATKQ)
VALUED = GETS + GATS  # responses that carry the item's value
OPCODES = (
    GETS * 3 + (GET,) * 3
    + (SET,) * 6 + STORES * 2
    + (DELETE, DELETE, DELETEQ)
    + ARITHS * 3
    + CONCATS * 2
    + (TOUCH,) * 3 + GATS * 2
)  # fmt: skip

FLAGS = (0, 0, 0, 1, 2**32 - 1)
# relative, 30 days + 1 s (absolute: long past), absolute (2033), negative (int32), -1
EXPTIMES = (0, 0, 0, 3600, 100000, 2592001, 2000000000, 0x80000000, 0xFFFFFFFF)
# 0xffffffff: incr/decr of a missing key answers NOT_FOUND instead of creating it
ARITH_EXPTIMES = (0, 0, 0, 3600, 0xFFFFFFFF, 0xFFFFFFFF, 2000000000)
SIZES = (0, 1, 1, 100, 100, 20000, 200000)  # chained with SMALL_CHUNKS
# No value with a minus in it: memcached looks for a minus in a number of 2^63 or more
# past the value's end, into what an earlier item left in the chunk, so a minus stored
# anywhere can make its answer "non-numeric" or not from run to run (TRIAGE.md; seed 881
# of a sweep met it). The minus's own rules are tested against both servers in test_wire.py
NUMBERS = (
    b"0", b"7", b"99", b"100", b"18446744073709551615", b"18446744073709551610", b"abc",
    b"3\x00",
)  # fmt: skip
DELTAS = (0, 1, 1, 5, 100, 2**63, 2**64 - 1)
INITIALS = (0, 1, 42, 2**64 - 1)
WRONG_CASES = (2**62 + 7, 2**64 - 1)  # above 2^62: no item's CAS on a fresh server
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class CasOf:
    """A CAS as the server under test answered it: `key`'s last, or (None) the last of any
    key (so a request meets older and other keys' CAS values)."""

    key: bytes | None


@dataclass
class Request:
    conn: int
    opcode: int
    key: bytes
    extras: bytes = b""
    value: bytes = b""
    cas: int | CasOf = 0
    opaque: int = 0


@dataclass(frozen=True)
class Frame:
    magic: int
    opcode: int
    extras: bytes
    key: bytes
    value: bytes
    datatype: int
    status: int
    opaque: int
    cas: int

    def pack(self, cas: int | None = None, value: bytes | None = None) -> bytes:
        value = self.value if value is None else value
        body = self.extras + self.key + value
        return (
            HEADER.pack(
                self.magic,
                self.opcode,
                len(self.key),
                len(self.extras),
                self.datatype,
                self.status,
                len(body),
                self.opaque,
                self.cas if cas is None else cas,
            )
            + body
        )


def value(rng: random.Random) -> bytes:
    if rng.random() < 0.4:
        return rng.choice(NUMBERS)
    unit = bytes(rng.choice(ALPHABET) for _ in range(97))
    size = rng.choice(SIZES)
    return (unit * (size // 97 + 1))[:size]


def cas_ref(rng: random.Random, key: bytes) -> int | CasOf:
    choices: tuple[int | CasOf, ...] = (0, 0, 0, CasOf(key), CasOf(key), CasOf(key), CasOf(None))
    return rng.choice(choices + WRONG_CASES)


def request(rng: random.Random, conn: int, key: bytes) -> Request:
    if rng.random() < 0.005:
        return Request(conn, FLUSH, b"", extras=rng.choice((b"", b"\x00" * 4)))
    opcode, opaque = rng.choice(OPCODES), rng.getrandbits(32)
    if opcode in STORES:
        extras = struct.pack(">II", rng.choice(FLAGS), rng.choice(EXPTIMES))
        cas = cas_ref(rng, key) if rng.random() < 0.5 else 0
        return Request(conn, opcode, key, extras, value(rng), cas, opaque)
    if opcode in (DELETE, DELETEQ):
        return Request(conn, opcode, key, cas=cas_ref(rng, key), opaque=opaque)
    if opcode in ARITHS:
        key = ARITH_KEYS[KEYS.index(key) % len(ARITH_KEYS)]
        extras = struct.pack(
            ">QQI", rng.choice(DELTAS), rng.choice(INITIALS), rng.choice(ARITH_EXPTIMES)
        )
        return Request(conn, opcode, key, extras, cas=cas_ref(rng, key), opaque=opaque)
    if opcode in CONCATS:
        key = BYTE_KEYS[KEYS.index(key) % len(BYTE_KEYS)]
        return Request(conn, opcode, key, value=value(rng), cas=cas_ref(rng, key), opaque=opaque)
    if opcode == TOUCH or opcode in GATS:
        extras = struct.pack(">I", rng.choice(EXPTIMES))
        return Request(conn, opcode, key, extras, opaque=opaque)
    return Request(conn, opcode, key, opaque=opaque)


def session(seed: int) -> list[Request]:
    """`REQUESTS` requests, the same for every server given the same seed."""
    rng = random.Random(seed)
    return [request(rng, rng.randrange(CONNS), rng.choice(KEYS)) for _ in range(REQUESTS)]


PADDED = re.compile(rb"(\d+) +")
NOOP_FRAME = HEADER.pack(REQUEST_MAGIC, NOOP, 0, 0, 0, 0, 0, NOOP_OPAQUE, 0)


def packed(req: Request, cas: int) -> bytes:
    """The request's frame, with `cas`."""
    body = req.extras + req.key + req.value
    return (
        HEADER.pack(
            REQUEST_MAGIC,
            req.opcode,
            len(req.key),
            len(req.extras),
            0,
            0,
            len(body),
            req.opaque,
            cas,
        )
        + body
    )


def frame_at(data: bytes | bytearray, pos: int) -> tuple[Frame, int] | None:
    """The response frame at `pos` of `data` and where it ends; None if not all there."""
    if len(data) - pos < HEADER.size:
        return None
    magic, opcode, kl, el, dt, status, bl, opaque, unique = HEADER.unpack_from(data, pos)
    start = pos + HEADER.size
    if len(data) < start + bl:
        return None
    body = bytes(data[start : start + bl])
    frame = Frame(
        magic, opcode, body[:el], body[el : el + kl], body[el + kl :], dt, status, opaque, unique
    )
    return frame, start + bl


class Run:
    """One server's run of a session: its connections and the CAS values it answered."""

    def __init__(self, server: Server) -> None:
        self.conns = [Conn(server.address, timeout=20) for _ in range(CONNS)]
        self.order: dict[int, int] = {0: 0}  # CAS -> its order of first appearance
        self.last: dict[bytes | None, int] = {}  # key (None: any key) -> its last CAS

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def read(self, conn: Conn, n: int) -> bytes:
        data = conn.read_exact(n)
        if len(data) < n:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        return data

    def send(self, req: Request) -> tuple[bytes, list[Frame]]:
        """The request's frame as sent to this server, and its response frames."""
        sent = packed(req, req.cas if isinstance(req.cas, int) else self.last.get(req.cas.key, 0))
        conn = self.conns[req.conn]
        conn.send(sent + NOOP_FRAME)
        frames: list[Frame] = []
        while True:
            head = self.read(conn, HEADER.size)
            found = frame_at(head + self.read(conn, HEADER.unpack(head)[6]), 0)
            assert found is not None  # a whole frame, read to its body length
            frame = found[0]
            if frame.opcode == NOOP:
                return sent, frames
            frames.append(frame)

    def normalise(self, key: bytes, frames: list[Frame]) -> list[bytes]:
        out = []
        for f in frames:
            if f.cas:
                self.last[key] = self.last[None] = f.cas
            cas = self.order.setdefault(f.cas, len(self.order))
            padded = PADDED.fullmatch(f.value) if f.opcode in VALUED and f.status == 0 else None
            out.append(f.pack(cas, padded[1] if padded else None))
        return out


def described(frames: list[Frame]) -> str:
    if not frames:
        return "(no frames)"
    return "; ".join(
        f"{NAMES.get(f.opcode, hex(f.opcode))} status={f.status:#x} opaque={f.opaque:#x} "
        f"cas={f.cas} dt={f.datatype} extras={f.extras.hex()} key={shown(f.key, 60)} "
        f"value={shown(f.value)}"
        for f in frames
    )


def replies(server: Server, seed: int) -> list[tuple[bytes, list[Frame], list[bytes]]]:
    """(sent, response frames, normalised frames) for each request of the seed's session."""
    run = Run(server)
    try:
        out = []
        for req in session(seed):
            sent, frames = run.send(req)
            out.append((sent, frames, run.normalise(req.key, frames)))
        return out
    finally:
        run.close()


def pipelined(server: Server, seed: int) -> list[tuple[bytes, list[Frame], list[bytes]]]:
    """`replies`, for the seed's session written on one connection at once, in pieces cut at
    random (a CAS taken from an earlier response is one no item has: none is awaited)."""
    reqs = session(seed)
    sent = [packed(r, r.cas if isinstance(r.cas, int) else WRONG_CASES[0]) for r in reqs]
    answers: list[list[Frame]] = []

    def read(sock: socket.socket) -> None:  # each request's frames, up to its NOOP's
        buf, pos, frames = bytearray(), 0, []
        while len(answers) < len(reqs) and (chunk := sock.recv(1 << 20)):
            buf += chunk
            while (found := frame_at(buf, pos)) is not None:
                frame, pos = found
                if frame.opcode == NOOP:
                    answers.append(frames)
                    frames = []
                else:
                    frames.append(frame)

    pipeline(server, b"".join(s + NOOP_FRAME for s in sent), seed, read)
    run = Run.__new__(Run)  # its normalisation alone: no connections
    run.order, run.last = {0: 0}, {}
    answers += [[]] * (len(reqs) - len(answers))  # cut short: the comparison shows it
    return [
        (s, frames, run.normalise(r.key, frames))
        for r, s, frames in zip(reqs, sent, answers, strict=True)
    ]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_random_binary_sessions_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """Every response frame of the seed's session equal on memcached and mcached (``-t 4``)."""
    expected = replies(server_factory("memcached", "-t", "4"), seed)
    got = replies(server_factory(kind, "-t", "4"), seed)
    assert_same_session(kind, seed, "request", expected, got, described)


@pytest.mark.parametrize("seed", CHUNKED_SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_random_binary_sessions_over_small_chunks_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """The same, with 16 KB chunks: values of 20 KB and more are chained items."""
    expected = replies(server_factory("memcached", "-t", "4", *SMALL_CHUNKS), seed)
    got = replies(server_factory(kind, "-t", "4", *SMALL_CHUNKS), seed)
    assert_same_session(kind, seed, "request", expected, got, described)


@pytest.mark.parametrize("seed", PIPELINED_SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_pipelined_binary_sessions_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """The seed's session pipelined on one connection, cut at random bytes: every response
    frame equal on memcached and mcached (``-t 4``)."""
    expected = pipelined(server_factory("memcached", "-t", "4"), seed)
    got = pipelined(server_factory(kind, "-t", "4"), seed)
    assert_same_session(kind, seed, "request", expected, got, described)
