"""No client can push the daemon's memory past ``-m`` plus a small, stated overhead (README
"Security"): replies are sent from the cache's own memory and streamed as the client reads,
and large values are received straight into chunks of the cache.

The attacks are scripts/hostile_memory.py's, smaller: stored values read by multigets that
are never read, pipelines of large gets never read, and values half sent then abandoned
(text set, meta ms, binary set and append in turn).
The daemon runs as worker processes (``-t 4``); its memory is the PSS of its whole process
tree's heaps and arena (`pss`: the arena is shared, and summing RSS would count it once per
process). Each attack must
keep the daemon within ``start + -m + OVERHEAD``, serve other clients meanwhile, and leave
nothing behind once its connections close.
"""

from __future__ import annotations

import re
import socket
import sysconfig
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from mcached.protocol import binary as b
from tests.conftest import Server
from tests.wire import wait_for

pytestmark = pytest.mark.integration

MB = 1024 * 1024
LIMIT_MB = 32
#: what the daemon may hold past its start-up size and -m, whatever clients do (README
#: "Security": a few MB for the processes' own buffers, ~10 KB per open connection)
OVERHEAD = 12 * MB
#: what a free-threaded CPython's allocator (mimalloc, the workers threads of one process)
#: keeps of the memory its connections let go (shed buffers, replies made), past the GIL
#: build's: `make test-free-threaded` saw the half-sent lines below at +42 MB against +25
#: (+86 before the fix), the cachedumps at up to +42 against +17
#: (the build decides, not whether this process runs its GIL now: a free-threaded build
#: turns it on when it imports an extension not marked free-threaded, as these tests do)
FREED_KEPT = 20 * MB if sysconfig.get_config_var("Py_GIL_DISABLED") else 0
VALUE = bytes(range(256)) * 2000  # 512,000 bytes: one chunk each
LAST_LINE = re.compile(rb"(?:^|\n)(?:END|STORED|NOT_STORED|\S*ERROR[^\r\n]*)\r\n\Z")


def pss(server: Server) -> int:
    """The daemon's own memory: the PSS of its processes' anonymous and shared-memory pages
    (the heaps and the arena), what a client can make it hold. Their file pages (the
    interpreter, the libraries) are left out: their PSS is divided among every process on
    the machine that maps the same files, so it moved with other tests' daemons starting
    and stopping, by a few MB between two readings."""
    main = psutil.Process(server.handle.pid)
    total = 0
    for p in [main, *main.children(recursive=True)]:
        try:
            with open(f"/proc/{p.pid}/smaps_rollup") as f:
                rollup = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        # Pss_Anon and Pss_Shmem since Linux 5.0; before, the whole PSS
        keys = ("Pss_Anon", "Pss_Shmem") if "Pss_Anon" in rollup else ("Pss",)
        total += sum(int(rollup[k].split()[0]) * 1024 for k in keys)
    return total


def settled(server: Server, seconds: float = 1.5) -> int:
    """PSS once it stops moving (highest of the last readings: never flatter the daemon)."""
    time.sleep(seconds)
    readings = [pss(server)]
    for _ in range(3):
        time.sleep(0.2)
        readings.append(pss(server))
    return max(readings)


def command(server: Server, line: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=10) as s:
        s.sendall(line)
        buf = bytearray()
        while not LAST_LINE.search(buf):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        return bytes(buf)


def stats(server: Server, group: bytes = b"") -> dict[str, int]:
    reply = command(server, b"stats " + group + b"\r\n" if group else b"stats\r\n")
    out = {}
    for m in re.finditer(rb"STAT (\S+) (\d+)\r\n", reply):
        out[m.group(1).decode()] = int(m.group(2))
    return out


def used_chunks(server: Server) -> int:
    return sum(v for k, v in stats(server, b"slabs").items() if k.endswith(":used_chunks"))


def store(server: Server, keys: list[bytes], value: bytes = VALUE) -> None:
    with socket.create_connection(server.address, timeout=10) as s:
        for key in keys:
            s.sendall(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, len(value), value))
        s.sendall(b"version\r\n")
        assert s.recv(100).startswith(b"VERSION")


def check_served(server: Server) -> None:
    """Another client is served while the attack holds: its set is stored, or refused for
    want of memory when in-flight values fill the cache (memcached answers the same)."""
    reply = command(server, b"set probe 0 0 2\r\nok\r\n")
    if reply == b"STORED\r\n":
        assert command(server, b"get probe\r\n") == b"VALUE probe 0 2\r\nok\r\nEND\r\n"
    else:
        assert reply == b"SERVER_ERROR out of memory storing object\r\n"
        assert command(server, b"get probe\r\n") == b"END\r\n"


@pytest.fixture
def daemon(server_factory: Callable[..., Server]) -> Iterator[Server]:
    server = server_factory(
        "mcached-procs", "-t", "4", "-m", str(LIMIT_MB), "-c", "2048", "--stall-timeout", "0"
    )
    yield server


def idle_sockets(n: int, server: Server, rcvbuf: int = 4096) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        c.settimeout(10)
        c.connect(server.address)
        socks.append(c)
    return socks


def warmed(server: Server, request: bytes, n: int, rcvbuf: int = 4096) -> int:
    """The attack run once first (`n` connections that send `request` and never read),
    then the daemon's settled memory: the start to measure the attack's second run from.
    The first run of code a worker has not run yet copies pages of the interpreter that the
    supervisor's fork shares (reference counts, and CPython 3.11+ rewriting a function's
    bytecode in place as it specializes it): a one-time cost, not what clients hold, which
    put these attacks' first runs at +10 to +14 MB over their second ones here."""
    conns = idle_sockets(n, server, rcvbuf)
    try:
        for c in conns:
            try:
                c.sendall(request)
            except OSError:
                pass
        time.sleep(1.0)
    finally:
        for c in conns:
            c.close()
    return settled(server)


def test_multigets_never_read_hold_nothing_past_the_bound(daemon: Server) -> None:
    keys = [b"big%d" % i for i in range(40)]  # 20 MB stored
    store(daemon, keys)
    start = settled(daemon)
    line = b"get " + b" ".join(keys) + b"\r\n"
    conns = idle_sockets(20, daemon)
    try:
        for c in conns:
            c.sendall(line)  # 20 x 20 MB of replies, never read
        during = settled(daemon, 2.5)
        check_served(daemon)
        # the cache's own memory is already in `start`: the replies add next to nothing
        assert during - start <= OVERHEAD, (start / MB, during / MB)
        # one client reads its reply in full: it arrives whole while the others still hold
        want = b"".join(b"VALUE %b 0 %d\r\n%b\r\n" % (k, len(VALUE), VALUE) for k in keys)
        reader = conns.pop()
        got = bytearray()
        while len(got) < len(want) + 5:
            chunk = reader.recv(1 << 20)
            assert chunk, "closed before the reply was whole"
            got += chunk
        assert bytes(got) == want + b"END\r\n"
        reader.close()
    finally:
        for c in conns:
            c.close()
    after = settled(daemon)
    assert after - start <= OVERHEAD
    assert stats(daemon)["curr_connections"] <= 3  # listeners' + this one's, as memcached


def test_pipelined_large_gets_never_read_hold_nothing_past_the_bound(daemon: Server) -> None:
    store(daemon, [b"big"])
    chained = VALUE * 2  # over slab_chunk_max: held in several chunks
    store(daemon, [b"chained"], chained)
    start = settled(daemon)
    conns = idle_sockets(20, daemon)
    try:
        for i, c in enumerate(conns):
            key = b"chained" if i % 2 else b"big"
            c.sendall(b"get %b\r\n" % key * 200)  # 100-200 MB each, never read
        during = settled(daemon, 2.5)
        check_served(daemon)
        # chained values are sent from their chunks too: no copy is held for any of them
        assert during - start <= OVERHEAD, (start / MB, during / MB)
    finally:
        for c in conns:
            c.close()
    assert settled(daemon) - start <= OVERHEAD


@pytest.mark.parametrize("kind", ["gets", "binary-getk", "mg-flags"])
def test_gets_of_a_value_lent_to_every_reply_it_may_copy_one_at_a_time(
    daemon: Server, kind: str
) -> None:
    """An item lent to MAX_PINS replies at once is copied out for the next ones. A pipeline
    of single-key gets that reads slowly then held one copy at a time on the plain `get`
    path, but -R copies a turn (10 MB of these values a connection, each turn) on the path
    of gets, multigets and the binary gets: it ends the turn after such a copy now too. So
    does an ``mg`` with flags besides ``v`` (its path copies every value: 100 such
    connections took a -t 4 daemon from 92 MB to 833, found by a memory hunt)."""
    store(daemon, [b"big"])
    start = settled(daemon)
    if kind == "gets":
        one = b"gets big\r\n"
    elif kind == "mg-flags":
        one = b"mg big v f\r\n"
    else:
        one = b.HEADER.pack(b.REQUEST, b.GETK, 3, 0, 0, 0, 3, 0, 0) + b"big"
    conns = idle_sockets(40, daemon)
    try:
        for c in conns:
            c.sendall(one * 200)  # 200 values of 512 KB asked for, read a little at a time
        peak = start
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for c in conns:
                try:
                    c.recv(4096, socket.MSG_DONTWAIT)
                except OSError:
                    pass
            peak = max(peak, pss(daemon))
            time.sleep(0.1)
        check_served(daemon)
        # two copies of 512 KB a connection at most (the rest are lent): one part-sent, and
        # the next one its next turn makes (the old code: -R a turn, +214 MB)
        copies = 2 * 40 * len(VALUE)
        assert peak - start <= OVERHEAD + copies + FREED_KEPT, (start / MB, peak / MB)
    finally:
        for c in conns:
            c.close()
    # the copies are gone: the GIL build's allocator gives their memory back. A free-threaded
    # build's (mimalloc) keeps freed pages in the heap of the worker thread that freed them
    # until that thread allocates again, and these workers are idle now: +30, +37 and +54 MB
    # seen there. There the bound of the peak is checked: kept for reuse, never more.
    after = settled(daemon) - start
    if FREED_KEPT:
        assert after <= OVERHEAD + copies + FREED_KEPT, (start / MB, after / MB)
    else:
        assert after <= OVERHEAD + copies // 2, (start / MB, after / MB)


def test_long_multiget_lines_half_sent_are_let_go_when_shed(
    server_factory: Callable[..., Server],
) -> None:
    """Connections that each send a 1 MB ``get`` line with no end and go silent are closed
    past ``read_buf_mem_limit`` (16 MB here: 4 MB a worker). The lines of those closed went
    on holding their memory until the garbage collector ran, so the daemon grew by every
    line sent (+60 MB for these 60), not by the limit."""
    server = server_factory(
        "mcached-procs",
        "-t",
        "4",
        "-m",
        str(LIMIT_MB),
        "-c",
        "2048",
        "--stall-timeout",
        "0",
        "-o",
        "read_buf_mem_limit=16",
    )
    line = b"get" + b" k" * 500_000  # 1,000,003 bytes, no newline
    start = warmed(server, line, 60, rcvbuf=65536)
    conns = idle_sockets(60, server, rcvbuf=65536)
    try:
        for c in conns:
            try:
                c.sendall(line)
            except OSError:
                pass  # closed as it sent: what it held is what it held
        during = settled(server, 2.5)
        check_served(server)
        assert stats(server)["read_buf_oom"] >= 30
        # the limit, and a read buffer's worth for each line part-way in
        bound = 16 * MB + OVERHEAD + 8 * MB + FREED_KEPT
        assert during - start <= bound, (start / MB, during / MB)
    finally:
        for c in conns:
            c.close()


_ALNUM = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: 3,844 two-byte keys: a 1 MB ``get`` line of them names 333,331 keys
SHORT_KEYS = [bytes((a, b_)) for a in _ALNUM for b_ in _ALNUM]


def read_whole_replies(conns: list[socket.socket], want: bytes) -> int:
    """How many of `conns` still get `want` whole (the others were closed)."""
    whole = 0
    for c in conns:
        try:
            got = read_all(c, b"\r\nEND\r\n")
        except (AssertionError, OSError):
            continue  # closed: shed
        assert got == want
        whole += 1
    return whole


def test_bug_long_multigets_never_read_held_their_keys_uncounted(
    server_factory: Callable[..., Server],
) -> None:
    """A 1 MB ``get`` line of two-byte keys, all hits, whose ~6 MB reply the client does not
    read: while the reply waited, the request's 333,331 keys were Python objects (~19 MB, 19
    times the line), and the bound did not count them. Thirty such connections grew one
    worker by ~589 MB (100 of them on four workers: ~2 GB), none closed. Then they counted
    (`keys_held`), and the worker shed the largest holders past its share of
    ``read_buf_mem_limit`` (32 MB) as soon as such a reply started to wait: it kept one
    connection of the 30 (~19 MB), and held one line's keys while it parsed it before it
    could shed it. Now such a line is parsed a part at a time (`parser.LINE_PART`): a
    connection holds its line and one part's keys (~2.2 MB), so half of them are served."""
    server = server_factory(
        "mcached-procs", "-t", "1", "-m", str(LIMIT_MB), "--stall-timeout", "0"
    )  # fmt: skip
    with socket.create_connection(server.address, timeout=30) as s:
        s.sendall(b"".join(b"set %b 0 0 1 noreply\r\nx\r\n" % k for k in SHORT_KEYS))
        s.sendall(b"version\r\n")
        assert s.recv(100).startswith(b"VERSION")
    keys = (SHORT_KEYS * 87)[:333_331]
    line = b"get " + b" ".join(keys) + b"\r\n"
    start = warmed(server, line, 2)
    oom = stats(server)["read_buf_oom"]
    conns = idle_sockets(30, server)
    try:
        for c in conns:
            c.sendall(line)
        # While they are parsed and shed: the limit, and a connection or two past it before
        # the check sheds them (+199 MB at the peak when the check was timed by the loop's
        # clock, +51 MB when each line's keys were parsed at once)
        peak = peak_while(server, 5.0)
        print("peak", (peak - start) / MB)
        assert peak - start <= 32 * MB + 2 * 3 * MB + OVERHEAD + FREED_KEPT, (
            start / MB,
            peak / MB,
        )
        during = settled(server, 2.5)
        print("during", (during - start) / MB)
        shed = stats(server)["read_buf_oom"] - oom
        check_served(server)
        # the limit, and what the allocator kept of the shed connections' parts
        bound = 32 * MB + 3 * MB + OVERHEAD + FREED_KEPT
        assert during - start <= bound, (start / MB, during / MB)
        want = b"".join(b"VALUE %b 0 1\r\nx\r\n" % k for k in keys) + b"END\r\n"
        kept = read_whole_replies(conns, want)  # served in full
        print("kept", kept, "shed", shed)
        assert kept + shed == 30 and kept >= 10  # (one of 30 kept at 19 MB a connection)
    finally:
        for c in conns:
            c.close()


def test_a_long_multiget_whose_reply_waits_lets_its_line_go(
    server_factory: Callable[..., Server],
) -> None:
    """A connection's 1 MB ``get`` line stayed in its read buffer until its next read, and
    none comes while the reply waits to be sent: 10 clients slow to read replies to lines
    of 250-byte keys held ~1 MB each more than their keys. The line, consumed, is now let
    go as the reply starts to wait; the clients are served in full."""
    server = server_factory(
        "mcached-procs", "-t", "1", "-m", "64", "--stall-timeout", "0"
    )  # fmt: skip
    keys = [b"%04d" % i + b"." * 246 for i in range(3_990)]  # 250 bytes each
    value = b"v" * 1000
    store(server, keys, value)
    line = b"get " + b" ".join(keys) + b"\r\n"  # 998,504 bytes, a ~5 MB reply
    start = warmed(server, line, 2)
    conns = idle_sockets(10, server)
    try:
        for c in conns:
            c.sendall(line)
        during = settled(server, 2.5)
        # their keys (~1.2 MB each, counted, under the worker's 32 MB: none is shed), some
        # of their replies: measured +10 MB, and +24 MB with the lines kept
        assert stats(server)["read_buf_oom"] == 0
        bound = 10 * 1_300_000 + 3 * MB + FREED_KEPT
        assert during - start <= bound, (start / MB, during / MB)
        want = b"".join(b"VALUE %b 0 1000\r\n%b\r\n" % (k, value) for k in keys) + b"END\r\n"
        assert read_whole_replies(conns, want) == 10
    finally:
        for c in conns:
            c.close()


def half_sent(i: int) -> bytes:
    """The head of a 1,048,000-byte store, in turn each syntax and mode that receives its
    value into place: text set, meta ms, a binary set, text append."""
    key = b"part%d" % i
    n = 1_048_000
    kind = i % 4
    if kind == 0:
        return b"set %b 0 0 %d\r\n" % (key, n)
    if kind == 1:
        return b"ms %b %d T0\r\n" % (key, n)
    if kind == 2:
        body = 8 + len(key) + n
        return b.HEADER.pack(b.REQUEST, b.SET, len(key), 8, 0, 0, body, 0, 0) + bytes(8) + key
    return b"append %b 0 0 %d\r\n" % (key, n)


def test_half_sent_values_are_held_in_the_cache_and_given_back(daemon: Server) -> None:
    start = settled(daemon)
    base = stats(daemon)["curr_connections"]
    rounds = []
    for _ in range(2):
        conns = idle_sockets(120, daemon, rcvbuf=65536)
        try:
            for i, c in enumerate(conns):
                c.setblocking(False)
                data = half_sent(i) + b"h" * 700_000
                try:
                    sent = c.send(data)
                    c.settimeout(2)
                    c.sendall(data[sent:])
                except OSError:
                    pass  # the daemon stopped reading: what it holds is what it holds
            during = settled(daemon, 2.0)
            check_served(daemon)
            # 84 MB sent into a 32 MB cache: what is held is inside -m
            assert during - start <= LIMIT_MB * MB + OVERHEAD, (start / MB, during / MB)
        finally:
            for c in conns:
                c.close()
        # what they held is let go as their workers close them, which a loaded machine may
        # take seconds to come to (a clean-clone CI read the second round 8.4 MB over the
        # first, where 3.3-4.6 is usual: 120 connections' 64 KB read buffers not yet let go)
        wait_for(lambda: stats(daemon)["curr_connections"] <= base, 10)
        time.sleep(1.0)
        rounds.append(settled(daemon))
        assert command(daemon, b"get part0\r\n") == b"END\r\n"  # nothing half-stored
    # every reservation went back: only a stored probe holds a chunk
    assert used_chunks(daemon) == stats(daemon)["curr_items"] <= 1
    # and the second round took next to nothing more than the first (the processes' heaps
    # move by a few MB under load; a round that kept what it was sent would add ~84 MB)
    assert rounds[1] - rounds[0] <= 8 * MB, [m / MB for m in rounds]
    big = b"v" * 900_000
    store(daemon, [b"whole"], big)
    reply = command(daemon, b"get whole\r\n")
    assert reply == b"VALUE whole 0 %d\r\n%b\r\nEND\r\n" % (len(big), big)


@pytest.mark.parametrize("size", [400_000, 900_000], ids=["one-chunk", "chained"])
@pytest.mark.parametrize("kind_", ["mcached", "mcached-procs"])
def test_a_value_being_sent_is_not_torn_by_a_set(
    server_factory: Callable[..., Server], kind_: str, size: int
) -> None:
    """A reply sends a value from the cache's memory (one chunk's, or each of its chunks'):
    a set of the same key (same size, so it could be rewritten in place) while the reply is
    half read leaves the reply whole."""
    server = server_factory(kind_, "-t", "4", "--stall-timeout", "0")
    old, new = b"o" * (size - 1) + b".", b"n" * size
    store(server, [b"k"], old)
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(10)
        c.connect(server.address)
        c.sendall(b"get k\r\n" * 3)
        first = c.recv(1000)
        head = b"VALUE k 0 %d\r\n" % size
        assert first.startswith(head)
        store(server, [b"k"], new)
        assert command(server, b"get k\r\n") == head + new + b"\r\nEND\r\n"
        want = (head + old + b"\r\nEND\r\n") * 3
        got = bytearray(first)
        while len(got) < len(want):
            chunk = c.recv(1 << 20)
            assert chunk
            got += chunk
        # all three were looked up before the set: each is the old value, whole
        assert bytes(got) == want
    # the replaced item's memory went back once the reply was sent
    chunks = 1 if size < 500_000 else 3  # chained: a header, a 512 KB chunk, the rest's
    deadline = time.monotonic() + 5
    while used_chunks(server) != chunks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert used_chunks(server) == chunks


def test_a_large_value_sent_slowly_is_stored_whole(server_factory: Callable[..., Server]) -> None:
    server = server_factory("mcached-procs", "-t", "4")
    value = bytes(range(251)) * 3000  # 753,000 bytes: chained, and not a multiple of a view
    with socket.create_connection(server.address, timeout=10) as c:
        c.sendall(b"set slow 5 0 %d\r\n" % len(value))
        for i in range(0, len(value), 65_000):
            c.sendall(value[i : i + 65_000])
            time.sleep(0.01)
        c.sendall(b"\r\n")
        assert c.recv(100) == b"STORED\r\n"
        c.sendall(b"set bad 0 0 %d\r\n%bXY" % (len(value), value))
        assert c.recv(100) == b"CLIENT_ERROR bad data chunk\r\n"
    assert command(server, b"get slow\r\n") == b"VALUE slow 5 %d\r\n%b\r\nEND\r\n" % (
        len(value),
        value,
    )
    assert command(server, b"get bad\r\n") == b"END\r\n"
    # the stored item's chunks (a header, a 512 KB chunk, the rest's); the bad one's went back
    assert used_chunks(server) == 3


def test_past_read_buf_mem_limit_the_connections_holding_most_are_closed(
    server_factory: Callable[..., Server],
) -> None:
    # 20 connections each send 200 KB of a multiget's line and stop: 4 MB held, over the
    # 2 MB this one worker may hold in all. The daemon closes the largest holders until it
    # holds 1.5 MB at most, counts them in read_buf_oom, and serves the rest as before.
    # (Replies a client does not read mostly wait in the kernel's socket buffers, not in
    # the daemon: the received side is the one a test can fill.)
    server = server_factory(
        "mcached-procs", "-t", "1", "-m", str(LIMIT_MB), "-o", "read_buf_mem_limit=2",
        "--stall-timeout", "0",
    )  # fmt: skip
    line = b"get " + b" ".join(b"k%06d" % i for i in range(200 * 1024 // 8))
    conns = idle_sockets(20, server)
    try:
        for c in conns:
            c.sendall(line)
        # a deadline, not a wait: 2 s on a quiet machine, many times that on a loaded one
        deadline = time.monotonic() + 60
        while stats(server)["read_buf_oom"] < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stats(server)["read_buf_oom"] >= 12
        check_served(server)  # a client that reads is served meanwhile
        kept = 0
        for c in conns:
            try:
                c.sendall(b"\r\n")
                reply = c.recv(100)
            except (BrokenPipeError, ConnectionResetError):
                reply = b""
            assert reply in (b"", b"END\r\n")  # the line's end, or closed
            kept += reply == b"END\r\n"
        # counted once every line has ended (bytes still on their way when 12 were closed
        # may close a 13th)
        closed = stats(server)["read_buf_oom"]
        assert 12 <= closed <= 14, closed  # 13 when every byte has arrived
        assert kept == 20 - closed
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("kind_", ["mcached-procs", "mcached"])
def test_bug_a_reader_of_a_large_value_was_closed_as_if_it_held_a_copy(
    server_factory: Callable[..., Server], kind_: str
) -> None:
    """A large value is sent from the cache's own chunks (lent under a pin, never copied),
    yet the bytes of it not yet sent were counted as memory the connection held outside the
    cache: a client that read a 50 MB value a moment late (its reply past 32 MB, one
    worker's share of read_buf_mem_limit) was closed as an attacker, with ``read_buf_oom``
    counted (found by a hostile-client hunt; memcached serves it). Here the same at a
    smaller scale: a 12 MB value, a 2 MB share, the reply read two checks later."""
    server = server_factory(
        kind_, "-t", "1", "-m", "64", "-I", "16m", "-o", "read_buf_mem_limit=2",
        "--stall-timeout", "0",
    )  # fmt: skip
    value = bytes(range(251)) * (12 * 1024 * 1024 // 251)
    store(server, [b"big"], value)
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the rest waits in mcached
        c.settimeout(30)
        c.connect(server.address)
        c.sendall(b"get big\r\n")
        time.sleep(2.5)  # the workers check what connections hold every second
        got = read_all(c, b"\r\nEND\r\n")
    assert got == b"VALUE big 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)
    assert stats(server)["read_buf_oom"] == 0
    # what a copy holds is still counted: a gat's reply is a copy (its touch rewrites the
    # item), and a client that never reads it is closed
    with socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.settimeout(30)
        c.connect(server.address)
        c.sendall(b"gat 0 big\r\n")
        deadline = time.monotonic() + 30
        while stats(server)["read_buf_oom"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert stats(server)["read_buf_oom"] == 1
    check_served(server)


# ---- dumps: lru_crawler metadump, stats cachedump (the audit's metadump_mem.py, smaller) ----

DUMP_ITEMS = 50_000
#: 250 bytes (memcached's longest key), which metadump URI-encodes into 750
DUMP_KEY = b"%08d" + b"!" * 242


def store_many(server: Server, n: int) -> None:
    """`n` items of one-byte values under `DUMP_KEY` keys (all in one slab class)."""
    with socket.create_connection(server.address, timeout=60) as s:
        for start in range(0, n, 2000):
            lines = [
                b"set %b 0 0 1 noreply\r\nx\r\n" % (DUMP_KEY % i)
                for i in range(start, min(n, start + 2000))
            ]
            s.sendall(b"".join(lines))
        s.sendall(b"version\r\n")
        s.settimeout(60)
        assert s.recv(100).startswith(b"VERSION")


def peak_while(server: Server, seconds: float) -> int:
    """The highest PSS seen over `seconds` (a dump built whole may be let go later)."""
    peak = pss(server)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        peak = max(peak, pss(server))
    return peak


def read_all(conn: socket.socket, end: bytes) -> bytes:
    conn.settimeout(30)
    got = bytearray()
    while not got.endswith(end):
        chunk = conn.recv(1 << 20)
        assert chunk, "closed before the reply was whole"
        got += chunk
    return bytes(got)


def test_metadumps_never_read_hold_a_batch_each_and_others_are_served(daemon: Server) -> None:
    """Audit: 4 connections that sent ``lru_crawler metadump all`` into a full -m 32 and
    never read grew the daemon by ~450 MB (each built its whole dump, 750-byte keys, at
    once), and other clients waited seconds for the walks; memcached: +0.6 MB. A dump is
    rendered a batch at a time as the client reads: it holds what the connection's output
    cap does, and its worker serves other connections between batches."""
    store_many(daemon, DUMP_ITEMS)
    start = warmed(daemon, b"lru_crawler metadump all\r\n", 8)
    hogs = idle_sockets(8, daemon)  # on every worker, two each on average
    try:
        for h in hogs:
            h.sendall(b"lru_crawler metadump all\r\n")
        # others are served while every dump is unread (old: each walk took its worker
        # for seconds, and a probe queued behind it)
        probes = idle_sockets(8, daemon, rcvbuf=65536)
        for p in probes:
            p.sendall(b"version\r\n")
            assert p.recv(100) == b"VERSION 1.6.18\r\n"
            p.close()
        check_served(daemon)
        during = peak_while(daemon, 3.0)
        # 8 dumps of 50,000 lines of ~800 bytes: ~40 MB each if built whole (old: +260 MB)
        assert during - start <= OVERHEAD, (start / MB, during / MB)
        # one reads its dump while the others still hold theirs: every item, once, and END
        reader = hogs.pop()
        reply = read_all(reader, b"END\r\n")
        lines = reply.split(b"\n")
        assert lines[-1] == b"" and lines[-2] == b"END\r"
        keys = sorted(line.split(b" ", 1)[0] for line in lines[:-2])
        if b"key=probe" in keys:  # check_served's, stored as the walk ran: met or not
            keys.remove(b"key=probe")
        encoded = (DUMP_KEY % 0).replace(b"!", b"%21")
        assert len(keys) == DUMP_ITEMS == len(set(keys))
        assert keys[0] == b"key=" + encoded
        reader.close()
    finally:
        for h in hogs:
            h.close()
    assert settled(daemon) - start <= OVERHEAD
    assert b"END\r\n" in command(daemon, b"lru_crawler metadump 1,2,3\r\n")  # served still


def test_cachedumps_never_read_hold_what_their_replies_do(daemon: Server) -> None:
    """Audit: ``stats cachedump <class> <limit>`` listed every item of the class (then
    sorted it) to send at most 2 MB of it: 4 connections, +153 MB at the peak. Only the
    newest rows the 2 MB can hold are kept while walking: each connection holds its reply
    (memcached holds as much), not its class."""
    store_many(daemon, DUMP_ITEMS)
    items = stats(daemon, b"items")
    [clsid] = {int(k.split(":")[1]) for k in items if k.endswith(":number")}
    n = 4
    start = warmed(daemon, b"stats cachedump %d 0\r\n" % clsid, n)
    hogs = idle_sockets(n, daemon)
    try:
        for h in hogs:
            h.sendall(b"stats cachedump %d 0\r\n" % clsid)
        check_served(daemon)
        during = peak_while(daemon, 3.0)
        # each holds its 2 MB reply, and held about twice that more while it was made (the
        # newest rows that fit, keys copied); old: +90 MB, each class's 50,000 rows listed.
        # Since a walk gives way between its steps, the workers' allocators keep a little
        # more of what the walks let go: +23 to +27 MB here, +15 to +17 before
        assert during - start <= n * 5 * MB + OVERHEAD + FREED_KEPT, (start / MB, during / MB)
        reader = hogs.pop()
        reply = read_all(reader, b"END\r\n")
        assert 2 * MB - 300 < len(reply) <= 2 * MB - 1  # memcached's cap, END and a NUL
        rows = reply.split(b"\r\n")[:-2]
        assert rows[0] == b"ITEM %b [1 b; 0 s]" % (DUMP_KEY % (DUMP_ITEMS - 1))  # newest
        assert len(set(rows)) == len(rows) == (len(reply) - 5) // len(rows[0] + b"\r\n")
        reader.close()
    finally:
        for h in hogs:
            h.close()
    assert settled(daemon) - start <= n * 5 * MB + OVERHEAD + FREED_KEPT


def test_bug_detail_dumps_never_read_held_every_workers_table(daemon: Server) -> None:
    """``stats detail dump`` sums every worker's prefix table; each holds up to 10,000
    prefixes, so the dump of a -t 4 daemon whose clients chose their keys ran to 40,000
    lines (11 MB of 240-byte prefixes), built for each client that asked and never read
    (a memory hunt's 50 such clients took a daemon of 82 MB to 435). The dump now lists at
    most 10,000 prefixes, as one table holds, and those clients hold what their replies do,
    within the workers' share of read_buf_mem_limit."""
    from mcached.server.workers import CONN_MEMORY_DEFAULT
    from mcached.stats import PrefixStats

    conns = idle_sockets(16, daemon, rcvbuf=1 << 20)  # spread over the 4 workers
    conns[0].sendall(b"stats detail on\r\n")
    assert conns[0].recv(100) == b"OK\r\n"
    per_conn = 1500  # 24,000 prefixes in all
    try:
        for n, c in enumerate(conns):
            c.sendall(
                b"".join(b"get %03d-%04d%s:k\r\n" % (n, i, b"p" * 200) for i in range(per_conn))
            )
        for c in conns:
            got = b""
            while got.count(b"END\r\n") < per_conn:
                chunk = c.recv(1 << 20)
                assert chunk
                got += chunk
    finally:
        for c in conns:
            c.close()
    dump = command(daemon, b"stats detail dump\r\n")
    assert dump.endswith(b"END\r\n")
    assert dump.count(b"PREFIX ") == PrefixStats.MAX_PREFIXES  # (old: up to 24,000)
    start = settled(daemon)
    hogs = idle_sockets(30, daemon)
    try:
        for h in hogs:
            h.sendall(b"stats detail dump\r\n")
        during = peak_while(daemon, 3.0)
        check_served(daemon)
        assert during - start <= OVERHEAD + 4 * CONN_MEMORY_DEFAULT, (start / MB, during / MB)
    finally:
        for h in hogs:
            h.close()


def limited_daemon(server_factory: Callable[..., Server]) -> Server:
    """`daemon` whose workers may hold 32 MB in all (read_buf_mem_limit)."""
    return server_factory(
        "mcached-procs", "-t", "4", "-m", str(LIMIT_MB), "-c", "2048", "--stall-timeout", "0",
        "-o", "read_buf_mem_limit=32",
    )  # fmt: skip


def test_bug_gat_pipelines_never_read_held_uncounted_copies(
    server_factory: Callable[..., Server],
) -> None:
    """Binary GATKQ pipelines of large values, never read: a gat's reply is a copy (the
    touch rewrites the item), and the bound counted only the unsent rest of a copy the
    socket took part of, while the whole copy stays alive; and it was checked at the
    worker's next tick only, not as replies piled up. A memory hunt's 300 such clients
    took a -t 4 daemon up 255 MB. Here the workers may hold 32 MB in all."""
    server = limited_daemon(server_factory)
    keys = [b"big%d" % i for i in range(40)]  # 20 MB stored
    store(server, keys)
    pipeline = b"".join(
        b.HEADER.pack(b.REQUEST, b.GATKQ, len(k), 4, 0, 0, 4 + len(k), 0, 0) + bytes(4) + k
        for k in keys
    ) + b.HEADER.pack(b.REQUEST, b.NOOP, 0, 0, 0, 0, 0, 0, 0)
    start = warmed(server, pipeline, 20)
    conns = idle_sockets(200, server)
    try:
        for c in conns:
            c.sendall(pipeline)
        during = peak_while(server, 3.0)
        check_served(server)
        # past the 32 MB, what each of the 4 workers makes before its next check: an eighth
        # of its share claimed, and the copy under way (old: +196 MB)
        slack = 4 * (32 * MB // 4 // 8 + len(VALUE))
        assert during - start <= OVERHEAD + 32 * MB + slack + FREED_KEPT, (
            start / MB,
            during / MB,
        )
    finally:
        for c in conns:
            c.close()


@pytest.mark.parametrize("verb", [b"get", b"gets", b"gat 0"])
def test_bug_multigets_that_repeat_a_key_held_every_value_they_served(
    server_factory: Callable[..., Server], verb: bytes
) -> None:
    """``get k0 ... k24 k0``: a key that repeats made the multiget keep each key's first hit
    (a copy) for its repeats until its whole reply was sent: 25 copies of the values,
    outside -m and outside what the connection is counted to hold, for each client that
    paused part way through its reply (a memory hunt's 40 clients of 900 KB values: a -t 4
    daemon at 697 MB). Now every occurrence is looked up as the reply reaches it: a get's
    values are lent as any multiget's, a gat's copies (the touch rewrites the item) counted
    and bounded by read_buf_mem_limit as its pipelines' are."""
    server = limited_daemon(server_factory)
    keys = [b"big%d" % i for i in range(25)]  # 12.8 MB stored
    store(server, keys)
    line = verb + b" " + b" ".join(keys) + b" big0\r\n"
    start = warmed(server, line, 8)
    conns = idle_sockets(20, server)
    try:
        for c in conns:
            c.sendall(line)
            got = 0
            while got < 6 * MB:  # half its reply, then it pauses
                chunk = c.recv(1 << 20)
                assert chunk
                got += len(chunk)
        during = peak_while(server, 2.0)
        check_served(server)
        bound = OVERHEAD + FREED_KEPT
        if verb.startswith(b"gat"):
            # copies: up to read_buf_mem_limit, and what each of the 4 workers makes
            # before its next check (see the gat pipelines' test)
            bound += 32 * MB + 4 * (32 * MB // 4 // 8 + len(VALUE))
        assert during - start <= bound, (start / MB, during / MB)  # old: +250 MB
    finally:
        for c in conns:
            c.close()
