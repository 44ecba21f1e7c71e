"""A bounded differential test: the same seeded random sessions, text and meta commands over
four connections, sent to memcached 1.6.18 and to mcached (worker processes, and threads);
every reply must be equal.

Each command goes on one of four connections chosen at random, followed by ``mn`` on the same
connection, and its reply is read up to that ``MN`` before the next command is sent, so the
order is the same on both servers whatever their threads do. Eight keys, so commands collide.

Replies are compared after two normalisations: CAS uniques are replaced by their order of
first appearance (each server counts its own; ``cas`` and ``C`` send the server's own
uniques, as its earlier replies gave them), and a number padded with spaces reads as the
number (memcached's incr/decr rewrites a value in place, padded, only when no other thread
holds a reference to the item: a race; ARITH_KEYS tells the rest of it). Left out, as
differences tests/memcached_suite/TRIAGE.md ("A differential fuzzer's findings") records and
keeps: opaques over 32 bytes, bad keys pipelined with other commands, absolute-time TTLs in
the past; and all that depends on the clock or the server (stats, version, the ``t``, ``h``
and ``l`` flags, verbosity).

The same sessions also go pipelined (`test_pipelined_sessions_match_memcached`): all on one
connection, written in pieces cut at random bytes (one byte to 64 KB) without waiting for a
reply, while a thread reads: requests and values meet read boundaries at random places, as a
client's pipeline or a slow network cuts them. A sample, not every cut: the parsers' unit
tables feed each case byte by byte; this is the whole server's side of it (connection,
values received into place, parser), against memcached.

A failure names the seed, the command that first differs, and both servers' replies:
``pytest tests/integration/test_differential.py -k "<kind>-<seed>"`` runs it again.
``MCACHED_DIFF_SEEDS=100-399`` runs other seeds (a longer sweep, by hand; this file's and
test_differential_binary.py's).
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

Reply = TypeVar("Reply")


def seeds(default: range, var: str = "MCACHED_DIFF_SEEDS") -> range:
    """`default`, or the range the environment variable `var` names (``FIRST-LAST``, both
    in)."""
    spec = os.environ.get(var)
    if not spec:
        return default
    first, _, last = spec.partition("-")
    return range(int(first), int(last or first) + 1)


SEEDS = seeds(range(6))
COMMANDS = 300
CONNS = 4
KEYS = [b"k%d" % i for i in range(8)]
# memcached's incr/decr (and ma) replaces its item rather than rewriting it in place when
# another reference to it is held (most likely the LRU maintainer's, which a fetch can queue
# for up to a second): a race. The new item has its number unpadded (normalised below), but
# neither the stale and win flags of the old one nor ma's T (set on the old item). So the
# commands that make those flags (ms and md with I, mg with N or R) use the last four keys,
# incr, decr and ma only the first four, and ma's T never expires the item (T-1). Nor is a
# number padded or not, and appends and prepends (append, prepend, ms with MA or MP) keep
# the padding inside the value, where later arithmetic reads it (a sweep of 300 seeds met
# "0" + 19 spaces + "7" incremented to 5 against memcached's "07" to 12): they use the last
# four keys too.
ARITH_KEYS, STALE_KEYS = KEYS[:4], KEYS[4:]
FLAGS = (b"0", b"0", b"1", b"4294967295")
EXPTIMES = (b"0", b"0", b"100000", b"2000000000", b"-1")  # relative, absolute (2033), past
TTLS = (b"0", b"1000", b"100000", b"-1")
# 200000, and 20000 with SMALL_CHUNKS: chained over several chunks
SIZES = (0, 0, 1, 1, 100, 100, 2000, 20000, 200000)
#: memcached's chunked-items.t layout: values past 16 KB are chained items (a header chunk,
#: 16 KB chunks, the last of the class that fits the rest), appended to and prepended to
SMALL_CHUNKS = ("-o", "slab_chunk_max=16384")
CHUNKED_SEEDS = seeds(range(1000, 1003))
# No minus: memcached looks for one after a number of 2^63 or more through the memory past
# the item's end, where an earlier value's bytes may hold one (TRIAGE.md); "+3" is the sign
NUMBERS = (b"0", b"7", b"99", b"18446744073709551615", b"18446744073709551610", b"abc", b"+3")
DELTAS = (b"1", b"1", b"5", b"100", b"18446744073709551615", b"abc", b"-1")
# O and 31 bytes, the longest opaque memcached takes; longer ones are a known difference
OPAQUES = (b"1", b"abc", b"x" * 31)
ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class CasOf:
    """A CAS unique as the server under test answered it: `key`'s last, or (None) the last
    of any key (so ``ms <key> I C<cas>`` meets older and newer uniques)."""

    key: bytes | None


@dataclass
class Command:
    conn: int
    key: bytes  # the key a meta reply's ``c`` token belongs to
    parts: list[bytes | CasOf]
    mns: int = 1  # ``MN`` lines that end its reply: the sentinel's, and its own if it is mn


def value(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return rng.choice(NUMBERS)
    unit = bytes(rng.choice(ALPHABET) for _ in range(97))
    size = rng.choice(SIZES)
    return (unit * (size // 97 + 1))[:size]


def noreply(rng: random.Random) -> bytes:
    return b" noreply" if rng.random() < 0.15 else b""


def cas_ref(rng: random.Random, key: bytes) -> bytes | CasOf:
    return rng.choice((CasOf(key), CasOf(key), CasOf(key), CasOf(None), b"0", b"99999999999"))


def meta_flags(rng: random.Random, pool: tuple[bytes, ...], **tokens: tuple[bytes, ...]) -> bytes:
    """Some of `pool`'s flags, and now and then a flag of `tokens` with one of its values."""
    flags = rng.sample(pool, rng.randrange(len(pool) + 1))
    for flag, values in tokens.items():
        if rng.random() < 0.25:
            flags.append(flag.encode() + rng.choice(values))
    rng.shuffle(flags)
    return b"".join(b" " + f for f in flags)


def arith_key(key: bytes) -> bytes:
    return ARITH_KEYS[KEYS.index(key) % len(ARITH_KEYS)]


def other_key(key: bytes) -> bytes:
    """A key no arithmetic touches (STALE_KEYS)."""
    return STALE_KEYS[KEYS.index(key) % len(STALE_KEYS)]


def text_command(rng: random.Random, key: bytes) -> list[bytes | CasOf]:
    verb = rng.choice((b"store", b"store", b"store", b"get", b"get", b"delete", b"arith", b"touch"))
    if verb == b"store":
        verb = rng.choice((b"set", b"set", b"add", b"replace", b"append", b"prepend", b"cas"))
        if verb in (b"append", b"prepend"):
            key = other_key(key)
        data = value(rng)
        head = b"%b %b %b %b %d" % (verb, key, rng.choice(FLAGS), rng.choice(EXPTIMES), len(data))
        cas = [b" ", cas_ref(rng, key)] if verb == b"cas" else []
        return [head, *cas, noreply(rng) + b"\r\n" + data + b"\r\n"]
    if verb == b"get":
        verb = rng.choice((b"get", b"gets", b"gat", b"gats"))
        keys = [key] + rng.choices(KEYS, k=rng.choice((0, 0, 1, 2, 4)))
        if len(keys) > 1 and rng.random() < 0.3:
            keys.append(key)
        if verb.startswith(b"gat"):
            verb += b" " + rng.choice(EXPTIMES)
        return [verb + b" " + b" ".join(keys) + b"\r\n"]
    if verb == b"delete":
        return [b"delete " + key + noreply(rng) + b"\r\n"]
    if verb == b"arith":
        verb, key = rng.choice((b"incr", b"decr")), arith_key(key)
        return [b"%b %b %b%b\r\n" % (verb, key, rng.choice(DELTAS), noreply(rng))]
    return [b"touch %b %b%b\r\n" % (key, rng.choice(EXPTIMES), noreply(rng))]


def meta_command(rng: random.Random, key: bytes) -> list[bytes | CasOf]:
    verb = rng.choice((b"mg", b"mg", b"ms", b"ms", b"md", b"ma"))
    if verb == b"mg":
        wins = {"N": TTLS, "R": (b"30", b"5000")} if key in STALE_KEYS else {}
        flags = meta_flags(rng, (b"v", b"k", b"c", b"f", b"s", b"q"), O=OPAQUES, T=TTLS, **wins)
        if b" s" in flags and b" v" not in flags:  # s of a padded number: normalised with v
            flags += b" v"
        if rng.random() < 0.03:  # E: not a flag of 1.6.18's meta commands yet, an error
            flags += b" E99999999999"
        return [b"mg " + key + flags + b"\r\n"]
    key = arith_key(key) if verb == b"ma" else key
    cas = [b" C", cas_ref(rng, key)] if rng.random() < 0.3 else []
    if verb == b"ms":
        data = value(rng)
        modes = (b"E", b"A", b"P", b"R", b"S") if key in STALE_KEYS else (b"E", b"R", b"S")
        pool: tuple[bytes, ...] = (
            (b"c", b"k", b"q", b"I") if key in STALE_KEYS else (b"c", b"k", b"q")
        )
        flags = meta_flags(rng, pool, O=OPAQUES, T=TTLS, F=FLAGS, M=modes)
        return [b"ms %b %d%b" % (key, len(data), flags), *cas, b"\r\n" + data + b"\r\n"]
    if verb == b"md":
        pool = (b"q", b"I", b"k") if key in STALE_KEYS else (b"q", b"k")
        flags = meta_flags(rng, pool, O=OPAQUES, T=TTLS)
        return [b"md " + key + flags, *cas, b"\r\n"]
    flags = meta_flags(
        rng,
        (b"q", b"v", b"k", b"c"),
        O=OPAQUES,
        N=TTLS,
        J=(b"0", b"5", b"18446744073709551615"),
        D=DELTAS,
        T=TTLS[:3],
        M=(b"I", b"D", b"+", b"-"),
    )
    return [b"ma " + key + flags, *cas, b"\r\n"]


def session(seed: int) -> list[Command]:
    """`COMMANDS` commands, the same for every server given the same seed."""
    rng = random.Random(seed)
    commands = []
    for _ in range(COMMANDS):
        conn, key, roll = rng.randrange(CONNS), rng.choice(KEYS), rng.random()
        if roll < 0.5:
            parts = text_command(rng, key)
        elif roll < 0.98:
            parts = meta_command(rng, key)
        elif roll < 0.995:
            parts = [b"mn\r\n"]
        else:
            parts = [b"flush_all\r\n"]
        head = parts[0]
        if isinstance(head, bytes) and head.startswith((b"mg ", b"ms ", b"md ", b"ma ")):
            # the key its c token belongs to (ma's is one of ARITH_KEYS)
            key = head.split(b" ")[1].rstrip(b"\r\n")
        commands.append(Command(conn, key, parts, mns=2 if parts == [b"mn\r\n"] else 1))
    return commands


META_REPLIES = {b"VA", b"HD", b"EN", b"NF", b"NS", b"EX"}
PADDED = re.compile(rb"(\d+) +")


class Run:
    """One server's run of a session: its connections and the CAS uniques it answered."""

    def __init__(self, server: Server) -> None:
        self.conns = [Conn(server.address, timeout=20) for _ in range(CONNS)]
        self.order: dict[bytes, int] = {}  # CAS unique -> its order of first appearance
        self.last: dict[bytes | None, bytes] = {}  # key (None: any key) -> its last CAS

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def send(self, command: Command) -> tuple[bytes, bytes]:
        """The command's bytes as sent to this server, and its whole reply."""
        sent = b"".join(
            p if isinstance(p, bytes) else self.last.get(p.key, b"88888888888")
            for p in command.parts
        )
        conn = self.conns[command.conn]
        conn.send(sent + b"mn\r\n")
        reply = conn.read_until(b"MN\r\n")
        while reply.count(b"MN\r\n") < command.mns:
            reply += conn.read_until(b"MN\r\n")
        return sent, reply

    def cas(self, key: bytes, unique: bytes) -> bytes:
        self.last[key] = self.last[None] = unique
        return b"<cas %d>" % self.order.setdefault(unique, len(self.order))

    def normalise(self, key: bytes, reply: bytes) -> bytes:
        lines = reply.split(b"\r\n")
        for i, line in enumerate(lines):
            words = line.split(b" ")
            if words[0] == b"VALUE" and len(words) in (4, 5):
                if len(words) == 5:
                    words[4] = self.cas(words[1], words[4])
                size = 3
            elif words[0] in META_REPLIES:
                for j, word in enumerate(words[1:], 1):
                    if word[:1] == b"c" and word[1:].isdigit():
                        words[j] = b"c" + self.cas(key, word[1:])
                size = 1
            else:
                continue
            padded = PADDED.fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
            if padded and words[0] in (b"VALUE", b"VA"):  # its length and mg's s: unpadded
                lines[i + 1], length = padded[1], b"%d" % len(padded[1])
                words = [b"s" + length if w == b"s" + words[size] else w for w in words]
                words[size] = length
            lines[i] = b" ".join(words)
        return b"\r\n".join(lines)


def replies(server: Server, seed: int) -> list[tuple[bytes, bytes, bytes]]:
    """(sent, reply, normalised reply) for each command of the seed's session."""
    run = Run(server)
    try:
        out = []
        for command in session(seed):
            sent, reply = run.send(command)
            out.append((sent, reply, run.normalise(command.key, reply)))
        return out
    finally:
        run.close()


PIPELINED_SEEDS = seeds(range(3))
PIECES = (1, 2, 3, 7, 50, 500, 4000, 65536)


def pipeline(server: Server, data: bytes, seed: int, read: Callable[[socket.socket], None]) -> None:
    """Write `data` on a new connection to `server` in pieces cut at random (by `seed`),
    without waiting, while `read(sock)` takes the replies in a thread (until it has them
    all, or the connection ends: an error ends it too)."""
    sock = socket.create_connection(server.address, timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reading() -> None:
        try:
            read(sock)
        except OSError:
            pass

    reader = threading.Thread(target=reading)
    reader.start()
    rng = random.Random(seed)
    try:
        pos = 0
        while pos < len(data):
            n = rng.choice(PIECES)
            sock.sendall(data[pos : pos + n])
            pos += n
            if rng.random() < 0.3:
                time.sleep(0.0003)  # let the server read what came so far on its own
        reader.join(30)
    finally:
        sock.close()
        reader.join()


def pipelined(server: Server, seed: int) -> list[tuple[bytes, bytes, bytes]]:
    """`replies`, for the seed's session written on one connection at once, in pieces cut at
    random (a ``cas`` or ``C`` sends a unique no item has: no reply is awaited)."""
    commands = session(seed)
    requests = [
        b"".join(p if isinstance(p, bytes) else b"99999999999" for p in c.parts) + b"mn\r\n"
        for c in commands
    ]
    want = sum(c.mns for c in commands)
    got = bytearray()

    def read(sock: socket.socket) -> None:  # every MN (no value holds one: lower case)
        while got.count(b"MN\r\n") < want and (chunk := sock.recv(1 << 20)):
            got.extend(chunk)

    pipeline(server, b"".join(requests), seed, read)
    run = Run.__new__(Run)  # its normalisation alone: no connections
    run.order, run.last = {}, {}
    out, pos = [], 0
    for command, sent in zip(commands, requests, strict=True):
        end = pos
        for _ in range(command.mns):
            found = got.find(b"MN\r\n", end)
            end = len(got) if found < 0 else found + 4  # short: the comparison shows it
        reply = bytes(got[pos:end])
        out.append((sent, reply, run.normalise(command.key, reply)))
        pos = end
    return out


def shown(data: bytes, limit: int = 300) -> str:
    if len(data) <= limit:
        return repr(data)
    return f"{data[: limit // 2]!r} ...({len(data)} bytes)... {data[-limit // 4 :]!r}"


def assert_same_session(
    kind: str,
    seed: int,
    what: str,
    expected: Sequence[tuple[bytes, Reply, object]],
    got: Sequence[tuple[bytes, Reply, object]],
    show: Callable[[Reply], str],
) -> None:
    """Each (sent, reply, normalised reply) of `kind`'s session equal to memcached's; a
    failure names the seed and the first `what` (command, request) that differs."""
    for i, ((sent, reply, norm), (our_sent, our_reply, our_norm)) in enumerate(
        zip(expected, got, strict=True)
    ):
        assert our_norm == norm, (
            f"seed {seed}, {what} {i} of {len(expected)} differs ({kind} vs memcached):\n"
            f"  sent to memcached: {shown(sent)}\n"
            f"  sent to {kind}: {shown(our_sent)}\n"
            f"  memcached: {show(reply)}\n"
            f"  {kind}: {show(our_reply)}"
        )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_random_sessions_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """Every reply of the seed's session equal on memcached and mcached (``-t 4``)."""
    expected = replies(server_factory("memcached", "-t", "4"), seed)
    got = replies(server_factory(kind, "-t", "4"), seed)
    assert_same_session(kind, seed, "command", expected, got, shown)


@pytest.mark.parametrize("seed", CHUNKED_SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_random_sessions_over_small_chunks_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """The same, with 16 KB chunks: most values of 20 KB and more are chained items."""
    expected = replies(server_factory("memcached", "-t", "4", *SMALL_CHUNKS), seed)
    got = replies(server_factory(kind, "-t", "4", *SMALL_CHUNKS), seed)
    assert_same_session(kind, seed, "command", expected, got, shown)


@pytest.mark.parametrize("seed", PIPELINED_SEEDS)
@pytest.mark.parametrize("kind", ["mcached-procs", "mcached"])
def test_pipelined_sessions_match_memcached(
    server_factory: Callable[..., Server], kind: str, seed: int
) -> None:
    """The seed's session pipelined on one connection, cut at random bytes: every reply equal
    on memcached and mcached (``-t 4``)."""
    expected = pipelined(server_factory("memcached", "-t", "4"), seed)
    got = pipelined(server_factory(kind, "-t", "4"), seed)
    assert_same_session(kind, seed, "command", expected, got, shown)
