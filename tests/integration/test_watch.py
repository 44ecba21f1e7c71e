"""``watch`` (mcached/watch.py, mcached/server/eventlog.py) against memcached 1.6.18's.

The same commands go to mcached and to Debian's memcached, each with a watcher attached;
the lines' fields are compared, all but those that differ by nature (``ts``, ``gid``, the
connection's ``cfd``). Then what only a daemon of several processes shows: a watcher on one
worker sees the events of every worker; and a watcher that never reads costs the clients
nothing but its skipped lines.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

VARIES = re.compile(r"^ts=\d+\.\d+ gid=\d+ |\bcfd=-?\d+ ?")


def attach(srv: Server, *words: bytes) -> socket.socket:
    w = socket.create_connection(srv.address)
    w.sendall(b"watch" + b"".join(b" " + x for x in words) + b"\r\n")
    w.settimeout(5)
    assert w.recv(4) == b"OK\r\n"
    return w


def lines_until(w: socket.socket, marker: bytes, timeout: float = 10.0) -> list[str]:
    """The watcher's lines up to the one naming `marker` (a key sent last)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"key=" + marker + b" " not in buf:
        left = deadline - time.monotonic()
        assert left > 0, f"no line for {marker!r} after {buf[-500:]!r}"
        w.settimeout(left)
        chunk = w.recv(65536)
        assert chunk, "the watcher was closed"
        buf += chunk
    out = buf.decode().splitlines()
    return [line for line in out if not line.startswith("skipped=")]


def fields(line: str) -> str:
    return VARIES.sub("", line).strip()


def ask(c: Conn, request: bytes, end: bytes = b"\r\n") -> bytes:
    c.send(request)
    return c.read_until(end)


MUTATIONS = [
    b"set a 5 0 3\r\nabc\r\n",
    b"add a 0 0 1\r\nx\r\n",
    b"replace zz 0 0 1\r\nx\r\n",
    b"prepend zz 0 0 1\r\nx\r\n",
    b"cas a 0 0 1 999999\r\nx\r\n",
    b"cas nothing 0 0 1 1\r\nx\r\n",
    b"set e 0 1000 2\r\nxx\r\n",
    b"set medium 7 0 500\r\n" + b"m" * 500 + b"\r\n",
    b"set k%01x:\xc3\xa9 0 0 1\r\nx\r\n",
    b"add b 0 0 1\r\ny\r\n",
    b"set endmutations 0 0 1\r\nx\r\n",
]

FETCHES = [
    b"get a\r\n",
    b"get missing\r\n",
    b"gets a missing medium\r\n",
    b"gat 100 e\r\n",
    b"gats 100 missing b\r\n",
    b"get k%01x:\xc3\xa9\r\n",
    b"get endfetches\r\n",
]


def watched(srv: Server) -> tuple[list[str], list[str], list[str], int]:
    """Run the commands with a mutations watcher, then the fetches with a fetchers watcher
    (attached after the stores: memcached also logs the lookup each store makes), then one
    connection with a connevents watcher."""
    w = attach(srv, b"mutations")
    with Conn(srv.address) as c:
        for request in MUTATIONS:
            c.send(request)
            c.read_until(b"\r\n")
    mutations = lines_until(w, b"endmutations")
    w.close()
    w = attach(srv, b"fetchers")
    with Conn(srv.address) as c:
        for request in FETCHES:
            c.send(request)
            c.read_until(b"END\r\n")
    fetches = lines_until(w, b"endfetches")
    w.close()
    w = attach(srv, b"connevents")
    c = Conn(srv.address)
    port = c.sock.getsockname()[1]
    assert ask(c, b"version\r\n").startswith(b"VERSION")
    c.close()
    # until this connection's two lines (a server may still log the close of an earlier
    # connection after the watcher attached: memcached does when the machine is busy)
    buf = b""
    mine = b"rport=%d " % port
    deadline = time.monotonic() + 10
    while buf.count(mine) < 2 and time.monotonic() < deadline:
        buf += w.recv(4096)
    w.close()
    conns = [line for line in buf.decode().splitlines() if f"rport={port} " in line]
    return mutations, fetches, conns, port


def test_lines_and_fields_are_memcacheds(server_factory: Callable[..., Server]) -> None:
    ours = watched(server_factory("mcached"))
    theirs = watched(server_factory("memcached"))
    for mine, reference in zip(ours[:2], theirs[:2], strict=True):
        assert [fields(x) for x in mine] == [fields(x) for x in reference]
    # connection events: the client's port is each run's own
    assert [fields(x).replace(f"rport={ours[3]}", "rport=P") for x in ours[2]] == [
        fields(x).replace(f"rport={theirs[3]}", "rport=P") for x in theirs[2]
    ]
    # and what a line is made of, on ours
    mutations, fetches, conns, port = ours
    assert re.fullmatch(
        r"ts=\d+\.\d+ gid=\d+ type=item_store key=a status=stored cmd=set ttl=0 clsid=1 "
        r"cfd=\d+ size=3",
        mutations[0],
    )
    assert "key=k%2501x%3A%C3%A9 " in mutations[-3]  # memcached's uriencode
    assert fields(conns[0]) == f"type=conn_new rip=127.0.0.1 rport={port} transport=tcp"
    assert fields(conns[1]) == (
        f"type=conn_close rip=127.0.0.1 rport={port} transport=tcp reason=normal"
    )
    gids = [int(re.search(r"gid=(\d+)", x).group(1)) for x in fetches]  # type: ignore[union-attr]
    assert gids == sorted(gids) and len(set(gids)) == len(gids)


# memcached logs the lookup inside each of these (do_store_item, do_add_delta, do_item_touch,
# the deletes' item_get_locked, me's) as an item_get line, before the store's item_store line;
# a store refused at its allocation logs its item_store first, then (a set, any ms) the
# lookup that drops the old value. (request, the end of its reply)
INTERNAL = [
    (b"set a 0 0 1\r\nx\r\n", b"\r\n"),
    (b"set a 0 0 2\r\nxy\r\n", b"\r\n"),
    (b"add a 0 0 1\r\nx\r\n", b"\r\n"),
    (b"add b 0 0 1\r\nx\r\n", b"\r\n"),
    (b"replace c 0 0 1\r\nx\r\n", b"\r\n"),
    (b"append a 0 0 1\r\nz\r\n", b"\r\n"),
    (b"prepend c 0 0 1\r\nz\r\n", b"\r\n"),
    (b"cas a 0 0 1 1\r\nq\r\n", b"\r\n"),
    (b"cas c 0 0 1 1\r\nq\r\n", b"\r\n"),
    (b"set n 0 0 1\r\n5\r\n", b"\r\n"),
    (b"incr n 3\r\n", b"\r\n"),
    (b"decr n 1\r\n", b"\r\n"),
    (b"incr a 1\r\n", b"\r\n"),  # non-numeric: found all the same
    (b"incr c 1\r\n", b"\r\n"),
    (b"touch a 100\r\n", b"\r\n"),
    (b"touch c 100\r\n", b"\r\n"),
    (b"delete a\r\n", b"\r\n"),
    (b"delete c\r\n", b"\r\n"),
    (b"set past 0 -1 1\r\nx\r\n", b"\r\n"),  # a TTL past 2^31: an unsigned 32-bit number
    (b"ms m 2 T0\r\nhi\r\n", b"\r\n"),
    (b"ms m 2 MA\r\nho\r\n", b"\r\n"),
    (b"ms m2 2 MR\r\nho\r\n", b"\r\n"),
    (b"md m\r\n", b"\r\n"),
    (b"md m\r\n", b"\r\n"),
    (b"ma cnt\r\n", b"\r\n"),
    (b"ma cnt N0 J5\r\n", b"\r\n"),  # a miss that creates: do_store_item's add
    (b"ma cnt\r\n", b"\r\n"),
    (b"me cnt\r\n", b"\r\n"),
    (b"set big 0 0 100000\r\n" + b"x" * 100000 + b"\r\n", b"\r\n"),  # received in place
    (b"set big 0 0 200000\r\n" + b"x" * 200000 + b"\r\n", b"\r\n"),
    (b"set huge 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n", b"\r\n"),  # over -I
    (b"add huge 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n", b"\r\n"),
    # an ms over -I in each mode: memcached's line names the mode (mcached said cmd=set),
    # and drops the item whatever the mode
    *(
        step
        for mode in (b"MA", b"MP", b"ME", b"MR", b"C1", b"MR C1", b"MS")
        for step in (
            (b"set hms 0 0 1\r\nx\r\n", b"\r\n"),
            (b"ms hms 1100000 %s\r\n" % mode + b"x" * 1100000 + b"\r\n", b"\r\n"),
        )
    ),
]


def binary(op: int, key: bytes, extras: bytes = b"", value: bytes = b"") -> bytes:
    body = len(extras) + len(key) + len(value)
    return struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, body, 0, 0) + (
        extras + key + value
    )


# the binary protocol's: set, incr creating its counter (twice), get, touch, delete, append
BINARY = [
    binary(0x01, b"bk", struct.pack(">II", 0, 0), b"v"),
    binary(0x05, b"bn", struct.pack(">QQI", 1, 7, 0)),
    binary(0x05, b"bn", struct.pack(">QQI", 1, 7, 0)),
    binary(0x00, b"bk"),
    binary(0x1C, b"bk", struct.pack(">I", 10)),
    binary(0x04, b"bk"),
    binary(0x0E, b"bn", b"", b"x"),
]

# memcached logs a store refused at its allocation with its arguments shifted by one
# (proto_text.c passes no TTL): the connection's fd lands in clsid, cfd is whatever follows
SLIPPED = re.compile(r"(status=(?:too_large|no_memory) .*)clsid=\d+")
PAST = re.compile(r"ttl=42949\d{5}")  # 2^32 - (seconds since start): the start differs


def internal(srv: Server) -> list[str]:
    # Each connection's lines are waited for before the next connection starts: memcached
    # gathers its worker threads' log buffers in no set order, so the lines of two
    # connections served by two of its threads may come in either order.
    w = attach(srv, b"fetchers", b"mutations")
    with Conn(srv.address) as c:
        for request, end in INTERNAL:
            c.send(request)
            c.read_until(end)
        assert ask(c, b"get endtext\r\n") == b"END\r\n"
    got = lines_until(w, b"endtext")
    with Conn(srv.address) as c:
        for frame in [*BINARY, binary(0x00, b"endbinary")]:
            c.send(frame)
            head = c.read_exact(24)
            c.read_exact(struct.unpack(">I", head[8:12])[0])
    got += lines_until(w, b"endbinary")
    w.close()
    return [PAST.sub("ttl=PAST", SLIPPED.sub(r"\1clsid=?", fields(x))) for x in got]


def test_internal_lookups_are_memcacheds(server_factory: Callable[..., Server]) -> None:
    ours = internal(server_factory("mcached"))
    assert ours == internal(server_factory("memcached"))
    # what the lines say, on ours: a store's lookup comes before its item_store
    assert ours[:4] == [
        "type=item_get key=a status=not_found clsid=0 size=0",
        "type=item_store key=a status=stored cmd=set ttl=0 clsid=1 size=1",
        "type=item_get key=a status=found clsid=1 size=1",
        "type=item_store key=a status=stored cmd=set ttl=0 clsid=1 size=2",
    ]
    assert "type=item_store key=past status=stored cmd=set ttl=PAST clsid=1 size=1" in ours
    huge = [x for x in ours if "key=huge " in x]
    assert huge == [
        "type=item_store key=huge status=too_large cmd=set ttl=0 clsid=? size=0",
        "type=item_get key=huge status=not_found clsid=0 size=0",
        "type=item_store key=huge status=too_large cmd=add ttl=0 clsid=? size=0",
    ]
    refused = [x.split(" cmd=")[1].split(" ")[0] for x in ours if "key=hms status=too" in x]
    assert refused == ["append", "prepend", "add", "replace", "cas", "cas", "set"]
    assert ours.count("type=item_get key=hms status=found clsid=1 size=1") == 7  # dropped


def evictions(srv: Server) -> list[str]:
    """Stores of 3 KB items into 2 MB until 64 were evicted; k1 read once, the odd keys with
    a TTL of 1000 s. The eviction lines, as many as ``stats`` counts."""
    w = attach(srv, b"evictions")
    value = b"v" * 3000
    with Conn(srv.address) as c:
        for i in range(640):
            exptime = 1000 if i % 2 else 0
            assert ask(c, b"set k%d 0 %d 3000\r\n%s\r\n" % (i, exptime, value)) == b"STORED\r\n"
            if i == 1:
                ask(c, b"get k1\r\n", b"END\r\n")
        stats = ask(c, b"stats\r\n", b"END\r\n")
    m = re.search(rb"STAT evictions (\d+)", stats)
    assert m is not None
    evicted = int(m.group(1))
    buf = b""
    deadline = time.monotonic() + 10
    while buf.count(b"\n") < evicted:
        left = deadline - time.monotonic()
        assert left > 0, f"{len(buf.splitlines())} eviction lines of {evicted}"
        w.settimeout(left)
        buf += w.recv(65536)
    w.close()
    # Seconds may tick between a store and its eviction (more under load), so a line's la
    # varies by run; its ttl is the 1000 s less that same la (both from the eviction's now)
    out = []
    for line in buf.decode().splitlines():
        m = re.search(r" ttl=(-?\d+) la=(\d+) ", line)
        assert m is not None, line
        ttl, la = int(m.group(1)), int(m.group(2))
        assert la < 60 and ttl in (-1, 1000 - la), line
        out.append(
            fields(line).replace(m.group(0), " ttl=%s la=? " % ("-1" if ttl < 0 else "1000-la"))
        )
    return out


@pytest.mark.parametrize("kind", ["mcached", "mcached-procs"])
def test_evictions_are_memcacheds(kind: str, server_factory: Callable[..., Server]) -> None:
    ours = evictions(server_factory(kind, "-m", "2"))
    reference = evictions(server_factory("memcached", "-m", "2"))
    if ours != reference:
        # memcached's LRU maintainer thread moves items between its queues while the stores
        # run, so under load its order can differ from run to run (one CI run evicted k17
        # before k16, where mcached and memcached's other runs kept key order): a second
        # run of memcached says whether that was the case
        reference = evictions(server_factory("memcached", "-m", "2"))
    assert ours == reference
    assert len(ours) == 64
    assert ours[:2] == [
        "type=eviction key=k0 fetch=no ttl=-1 la=? clsid=17 size=3000",
        "type=eviction key=k1 fetch=yes ttl=1000-la la=? clsid=17 size=3000",
    ]


@pytest.mark.parametrize("kind", ["mcached", "memcached"])
def test_watch_words_and_limits(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind)
    watchers = [attach(srv) for _ in range(20)]
    try:
        with Conn(srv.address) as c:
            assert ask(c, b"watch\r\n") == b"WATCHER_TOO_MANY log watcher limit reached\r\n"
    finally:
        for w in watchers:
            w.close()
    with Conn(srv.address) as c:
        assert ask(c, b"watch bogus\r\n") == b"ERROR\r\n"
        assert ask(c, b"watch noreply\r\nversion\r\n").startswith(b"VERSION")  # hidden
    time.sleep(1.5)  # memcached notices closed watchers within a second
    with Conn(srv.address) as c:  # a command before watch in the same read is answered
        c.send(b"get a\r\nwatch\r\n")
        assert c.read_until(b"OK\r\n") == b"END\r\nOK\r\n"


def close_reasons(srv: Server) -> list[str]:
    """conn_close lines of a client that closes, one that quits and one that sends an HTTP
    request line (hung up on)."""
    w = attach(srv, b"connevents")
    ports = []
    for request in (b"version\r\n", b"quit\r\n", b"GET / HTTP/1.1\r\n"):
        c = socket.create_connection(srv.address)
        c.settimeout(5)
        ports.append(c.getsockname()[1])
        c.sendall(request)
        if request.startswith(b"version"):
            assert c.recv(100).startswith(b"VERSION")
        else:
            assert c.recv(100) == b""  # the server closed it
        c.close()
    buf = b""
    deadline = time.monotonic() + 10
    while True:
        whole = buf[: buf.rfind(b"\n") + 1].decode()  # complete lines only
        lines = [x for x in whole.splitlines() if "type=conn_close" in x]
        if all(any(f"rport={port} " in x for x in lines) for port in ports):
            break
        assert time.monotonic() < deadline, buf
        buf += w.recv(4096)
    w.close()
    out = []
    for n, port in enumerate(ports):
        out += [
            fields(x).replace(f"rport={port} ", f"rport=P{n} ")
            for x in lines
            if f"rport={port} " in x
        ]
    return out


@pytest.mark.parametrize("kind", ["mcached", "memcached"])
def test_close_reasons_are_memcacheds(kind: str, server_factory: Callable[..., Server]) -> None:
    """memcached's close_reason: normal for an EOF or quit, error (its zero value) for a
    hang-up such as an HTTP request line (watcher.t)."""
    expected = [
        "type=conn_close rip=127.0.0.1 rport=P0 transport=tcp reason=normal",
        "type=conn_close rip=127.0.0.1 rport=P1 transport=tcp reason=normal",
        "type=conn_close rip=127.0.0.1 rport=P2 transport=tcp reason=error",
    ]
    got = close_reasons(server_factory(kind))
    if kind == "memcached" and got != expected:
        # memcached once said reason=normal for the hang-up, in a CI run under load (its
        # code sets no reason there, and zeroes the field at each close; what raced, I
        # did not find): a second server says whether it was that
        got = close_reasons(server_factory(kind))
    assert got == expected


def log_watchers(c: Conn, want: int) -> None:
    """Wait until ``stats`` counts `want` watchers (memcached's logger thread updates the
    figure on its rounds)."""
    deadline = time.monotonic() + 5
    while True:
        m = re.search(rb"STAT log_watchers (\d+)", ask(c, b"stats\r\n", b"END\r\n"))
        assert m is not None
        if int(m.group(1)) == want:
            return
        assert time.monotonic() < deadline, f"log_watchers {int(m.group(1))}, not {want}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["mcached", "memcached"])
def test_watchers_are_counted_and_W_refuses_watch(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv = server_factory(kind)
    with Conn(srv.address) as c:
        log_watchers(c, 0)
        watchers = [attach(srv), attach(srv, b"mutations")]
        log_watchers(c, 2)
        watchers.pop().close()
        log_watchers(c, 1)
        watchers.pop().close()
        log_watchers(c, 0)
    srv = server_factory(kind, "-W")
    with Conn(srv.address) as c:
        refused = b"CLIENT_ERROR watch commands not allowed\r\n"
        assert ask(c, b"watch\r\n") == refused
        assert ask(c, b"watch bogus\r\n") == refused  # before the words are read
        assert ask(c, b"version\r\n").startswith(b"VERSION")


@pytest.mark.parametrize("kind", ["mcached", "mcached-procs", "memcached"])
def test_lines_sent_to_watchers_are_counted(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """``stats`` log_watcher_sent counts the lines sent to watchers (each watcher's)."""
    srv = server_factory(kind)
    w = attach(srv, b"mutations")
    with Conn(srv.address) as c:
        for i in range(20):
            assert ask(c, b"set k%d 0 0 1\r\nx\r\n" % i) == b"STORED\r\n"
        lines_until(w, b"k19")
        deadline = time.monotonic() + 5  # (memcached's logger thread counts on its rounds)
        while True:
            m = re.search(rb"STAT log_watcher_sent (\d+)", ask(c, b"stats\r\n", b"END\r\n"))
            assert m is not None
            if int(m.group(1)) == 20:
                break
            assert time.monotonic() < deadline, f"log_watcher_sent {int(m.group(1))}"
            time.sleep(0.05)
        assert b"STAT log_watcher_skipped 0\r\n" in ask(c, b"stats\r\n", b"END\r\n")
        assert ask(c, b"stats reset\r\n") == b"RESET\r\n"
        assert b"STAT log_watcher_sent 0\r\n" in ask(c, b"stats\r\n", b"END\r\n")
    w.close()


@pytest.mark.parametrize("kind", ["mcached", "mcached-procs", "memcached"])
def test_bug_a_watcher_was_told_it_skipped_lines_of_kinds_it_never_asked_for(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A ``watch mutations`` beside a ``watch fetchers``: a get of 5,000 keys writes more
    fetchers records than a worker's ring holds before the watchers' next read. The lapped
    records were told to every watcher as skipped (``skipped=2341`` to the mutations one,
    every record an item_get); memcached tells a watcher only of lines of its own kinds it
    could not take, and counts what its full worker buffers drop in log_worker_dropped."""
    srv = server_factory(kind)
    mutations = attach(srv, b"mutations")
    fetchers = attach(srv, b"fetchers")
    try:
        with Conn(srv.address) as c:
            c.send(b"get " + b" ".join(b"k%d" % i for i in range(5000)) + b"\r\n")
            assert c.read_until(b"END\r\n") == b"END\r\n"
            time.sleep(0.1)
            assert ask(c, b"set after 0 0 1\r\nx\r\n") == b"STORED\r\n"
            buf = b""
            deadline = time.monotonic() + 10
            while b"key=after " not in buf and time.monotonic() < deadline:
                mutations.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = mutations.recv(65536)
                except TimeoutError:
                    break
                assert chunk, "the watcher was closed"
                buf += chunk
            assert b"skipped=" not in buf, buf[:200]
            if kind != "memcached":  # (memcached's own full buffer may drop the set's line)
                assert b"key=after " in buf, buf[:200]
    finally:
        mutations.close()
        fetchers.close()


def test_deletions_is_the_later_memcacheds(mcached: Server) -> None:
    w = attach(mcached, b"deletions")
    with Conn(mcached.address) as c:
        ask(c, b"set gone 0 0 1\r\nx\r\n")
        assert ask(c, b"delete gone\r\n") == b"DELETED\r\n"
        assert ask(c, b"delete gone\r\n") == b"NOT_FOUND\r\n"  # nothing deleted: no line
        ask(c, b"set x 0 0 1\r\nx\r\n")
        ask(c, b"delete x\r\n")
    got = lines_until(w, b"x")
    w.close()
    assert [fields(x) for x in got] == [
        "type=deleted key=gone cmd=delete clsid=0 size=0",
        "type=deleted key=x cmd=delete clsid=0 size=0",
    ]


def test_a_watcher_on_one_worker_sees_every_workers_events(
    server_factory: Callable[..., Server],
) -> None:
    srv = server_factory("mcached-procs", "-t", "4")
    w = attach(srv, b"fetchers", b"mutations")
    conns = [Conn(srv.address) for _ in range(12)]
    try:
        for n, c in enumerate(conns):
            ask(c, b"set k%d 0 0 1\r\nx\r\n" % n)
            ask(c, b"get k%d\r\n" % n, b"END\r\n")
        ask(conns[0], b"get last\r\n", b"END\r\n")
        got = lines_until(w, b"last")
    finally:
        for c in conns:
            c.close()
        w.close()
    stored = {m.group(1) for x in got if (m := re.search(r"type=item_store key=(\S+) ", x))}
    found = {
        m.group(1) for x in got if (m := re.search(r"type=item_get key=(\S+) status=found", x))
    }
    want = {f"k{n}" for n in range(12)}
    assert stored == want and found == want
    cfds = {m.group(1) for x in got if (m := re.search(r"cfd=(\d+)", x))}
    assert len(cfds) > 1  # the lines came from several connections (and workers)


def test_a_watcher_that_never_reads_does_not_slow_a_client(
    server_factory: Callable[..., Server],
) -> None:
    """One worker serves both: the watcher's socket fills, its lines are skipped (and told
    as skipped=N once it reads again), and the client's requests are not held up."""
    srv = server_factory("mcached-procs", "-t", "1")
    # more lines than the kernel's socket buffers (up to 4 MB) and the stream's 256 KB hold
    n = 2000
    keys = b" ".join(b"key:%d" % k for k in range(25))

    def run() -> float:
        with Conn(srv.address) as c:
            t0 = time.monotonic()
            for i in range(n):
                # 26 lines a round: a store and 25 fetches
                c.send(b"set key:%d 0 0 10\r\n0123456789\r\nget %b\r\n" % (i, keys))
                c.read_until(b"END\r\n")
            return time.monotonic() - t0

    # each timing is the better of two runs: on a busy machine one run can lose a second or
    # more to other processes, which is not what is measured here
    alone = min(run(), run())
    w = socket.socket()
    w.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    w.connect(srv.address)
    w.sendall(b"watch fetchers mutations\r\n")
    time.sleep(0.2)  # attached; from now on it reads nothing
    watched_run = min(run(), run())
    assert watched_run < 3 * alone + 2.0, (alone, watched_run)
    # it reads again: what did not fit was skipped, and said so
    buf = b""
    w.settimeout(1.0)
    try:
        while chunk := w.recv(1 << 20):  # what the buffers held, until a second of quiet
            buf += chunk
    except TimeoutError:
        pass
    with Conn(srv.address) as c:
        ask(c, b"get tailmarker\r\n", b"END\r\n")
    w.settimeout(10)
    deadline = time.monotonic() + 10
    while b"key=tailmarker " not in buf and time.monotonic() < deadline:
        buf += w.recv(1 << 20)
    w.close()
    assert b"key=tailmarker " in buf
    skipped = [int(x) for x in re.findall(rb"^skipped=(\d+)$", buf, re.M)]
    assert skipped and sum(skipped) > 0
    # the daemon counted its sent and skipped lines nowhere it should not: still serving
    with Conn(srv.address) as c:
        assert ask(c, b"version\r\n").startswith(b"VERSION")
