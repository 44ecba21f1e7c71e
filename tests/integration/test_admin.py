"""Admin commands tools rely on (memcached-tool's dump reads ``lru_crawler metadump``),
checked against both servers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.wire import Conn, readable

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
        deadline = time.monotonic() + 10
        while True:
            conn.send(request_line)
            got = conn.read_until(b"\r\n")
            if not got.startswith(b"BUSY") or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # memcached's crawler was busy with a pass of its own
        assert got == reply


def walk_beside_another_client(srv: Server, request: bytes) -> bytes:
    """Store 100,000 keys, send `request` (a walk of them all) and, right after, another
    client's ``version``: that one is answered while the walk still goes on (the walk's
    reply, sent once it ends, has not come). The walk's reply. (Three tries: a loaded
    machine may hold this process back until the walk, a few tenths of a second, is done;
    a walk made in one go answers the other client after it every time.)"""
    with Conn(srv.address, timeout=60) as asker, Conn(srv.address) as other:
        for start in range(0, 100_000, 10_000):
            asker.send(
                b"".join(
                    b"set key%d 0 0 1 noreply\r\nx\r\n" % i for i in range(start, start + 10_000)
                )
            )
        assert asker.request(b"version\r\n").startswith(b"VERSION")
        for _ in range(3):
            asker.send(request)
            other.send(b"version\r\n")
            assert other.read_until(b"\r\n").startswith(b"VERSION")
            walking = not readable([asker.sock], 0)
            reply = asker.read_until(b"END\r\n")
            if walking:
                return reply
        raise AssertionError("the walk ended first, three times")


@pytest.mark.parametrize("kind", ["mcached", "mcached-procs"])
def test_a_cachedump_walk_lets_its_worker_serve_others(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """``stats cachedump`` walks every item table for its class's newest items: a step at a
    time, between which its worker serves its other connections (one worker here). It was
    one call: 3.4 s of one worker, none of its clients answered, for a million items."""
    srv = server_factory(kind, "-t", "1")
    reply = walk_beside_another_client(srv, b"stats cachedump 1 0\r\n")
    assert 2 * 1024 * 1024 - 300 < len(reply) < 2 * 1024 * 1024  # memcached's cap
    rows = reply.split(b"\r\n")[:-2]
    assert rows == [b"ITEM key%d [1 b; 0 s]" % (99_999 - i) for i in range(len(rows))]


# (worker processes only: with the daemon's worker a thread of this process, the client
# here shares its GIL, and a walk this short, 0.1 s, could be over before this thread got
# the GIL back to look; a client in another process is answered within 1 ms either way)
@pytest.mark.parametrize("kind", ["mcached-procs"])
def test_bug_stats_sizes_held_its_worker_for_the_whole_walk(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A hunt: ``stats sizes`` walked every item in one go (1.9 s of one worker for 1.5
    million items, none of its other clients answered; memcached keeps the histogram as
    counters). It walks a step at a time now, as cachedump does."""
    srv = server_factory(kind, "-t", "1", "-o", "track_sizes")
    reply = walk_beside_another_client(srv, b"stats sizes\r\n")
    rows = re.findall(rb"STAT (\d+) (\d+)\r\n", reply)
    assert sum(int(n) for _, n in rows) == 100_000


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


def settings_rows(address: tuple[str, int] | str, *names: str) -> dict[str, str]:
    """These rows of ``stats settings``, asked on a connection of its own (on a daemon of
    worker processes, maybe another worker's)."""
    with Conn(address) as conn:
        conn.send(b"stats settings\r\n")
        text = conn.read_until(b"END\r\n").decode()
    rows = dict(re.findall(r"STAT (\S+) (.*)\r\n", text))
    return {name: rows[name] for name in names}


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_slabs_automove_ratio_is_read_by_strtod_and_shown(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """``slabs automove ratio <r>`` sets stats settings' slab_automove_ratio (printf's
    %.2f, cut at 126 bytes as memcached's stat buffer cuts it), read as strtod reads it:
    hex floats and NaN(...) too, but nothing past the doubles or rounding to a subnormal
    (ERANGE). mcached always showed 0.80, refused hex and took 1e999."""
    srv = server_factory(which)
    cases = [
        (b"0.5", b"OK", "0.50"),
        (b"0x1p-2", b"OK", "0.25"),
        (b"1e999", b"ERROR", "0.25"),
        (b"1e-310", b"ERROR", "0.25"),
        (b"0x1p-1074", b"OK", "0.00"),  # a subnormal, but exact: no ERANGE
        (b"-nan", b"OK", "-nan"),
        (b"NaN(x1)", b"OK", "nan"),
        (b"-inf", b"OK", "-inf"),
        (b"1.7976931348623157e308", b"OK", "17976931348623157" + "0" * 109),
        (b"2 noreply", b"", "2.00"),
    ]
    for ratio, reply, row in cases:
        with Conn(srv.address) as conn:
            conn.send(b"slabs automove ratio %b\r\nmn\r\n" % ratio)
            assert conn.read_until(b"MN\r\n") == (reply + b"\r\n" if reply else b"") + b"MN\r\n"
        got = settings_rows(srv.address, "slab_automove_ratio")["slab_automove_ratio"]
        if row.startswith("1797"):
            assert len(got) == 126 and got.startswith("179769313486231570814"), ratio
        else:
            assert got == row, ratio


LRU_ROWS = (
    "hot_lru_pct",
    "warm_lru_pct",
    "hot_max_factor",
    "warm_max_factor",
    "temp_lru",
    "temporary_ttl",
    "lru_segmented",
)


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_lru_tune_mode_and_temp_ttl(which: str, server_factory: Callable[..., Server]) -> None:
    """memcached's ``lru`` command tunes its segmented LRU for the whole daemon: the
    values are stats settings rows (and mode says which stats rows are shown). mcached
    answered ERROR to every form."""
    srv = server_factory(which)
    steps = [
        (b"lru tune 10 30 0.5 3", b"OK\r\n", ("10", "30", "0.50", "3.00", "no", "61", "yes")),
        (b"lru tune 50 31 1 1", b"ERROR hot and warm pcts must not exceed 80\r\n", None),
        (b"lru tune 1 1 0 1", b"ERROR hot/warm age factors must be greater than 0\r\n", None),
        (b"lru tune 1 1 1 x", b"ERROR\r\n", None),
        (b"lru tune 1 1 1", b"ERROR\r\n", None),
        # the percentages are added as 32-bit unsigned numbers, and kept in C ints
        (b"lru tune 4294967295 2 0x1p1 nan", b"OK\r\n", ("-1", "2", "2.00", "nan")),
        (b"lru mode flat", b"OK\r\n", ("-1", "2", "2.00", "nan", "no", "61", "no")),
        (b"lru mode x", b"ERROR\r\n", None),
        (b"lru temp_ttl 30 noreply", b"", ("-1", "2", "2.00", "nan", "yes", "30", "no")),
        (b"lru temp_ttl -1", b"OK\r\n", ("-1", "2", "2.00", "nan", "no", "30", "no")),
        (b"lru temp_ttl x", b"ERROR\r\n", None),
        (b"lru mode segmented", b"OK\r\n", ("-1", "2", "2.00", "nan", "no", "30", "yes")),
        (b"lru", b"ERROR\r\n", None),
        (b"lru foo 1", b"ERROR\r\n", None),
    ]
    for line, reply, rows in steps:
        with Conn(srv.address) as conn:
            conn.send(line + b"\r\nmn\r\n")
            assert conn.read_until(b"MN\r\n") == reply + b"MN\r\n", line
        if rows is not None:
            got = settings_rows(srv.address, *LRU_ROWS)
            assert tuple(got.values())[: len(rows)] == rows, line


@pytest.mark.parametrize("which", ["mcached", "memcached"])
def test_lru_mode_and_temp_ttl_need_the_maintainer(
    which: str, server_factory: Callable[..., Server]
) -> None:
    srv = server_factory(which, "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        conn.send(b"lru mode flat\r\nlru temp_ttl 5\r\nlru tune 10 10 1 1\r\nmn\r\n")
        assert conn.read_until(b"MN\r\n") == b"ERROR\r\nERROR\r\nOK\r\nMN\r\n"


def uptime(conn: Conn) -> int:
    conn.send(b"stats\r\n")
    return int(re.findall(rb"STAT uptime (\d+)", conn.read_until(b"END\r\n"))[0])


@pytest.mark.parametrize("which", ["mcached", "memcached"])
def test_uptime_starts_at_2(which: str, server_factory: Callable[..., Server]) -> None:
    """memcached's uptime is its current_time less 60, and current_time starts at 62: a
    daemon just started says 2. mcached counted from 0."""
    started = time.monotonic()
    srv = server_factory(which)
    with Conn(srv.address) as conn:
        up = uptime(conn)
    assert 2 <= up <= 3 + time.monotonic() - started


@pytest.mark.parametrize(
    ("which", "flags"),
    [
        ("mcached", ()),
        ("mcached-procs", ()),
        ("memcached", ()),
        ("mcached", ("-C",)),
        ("memcached", ("-C",)),
    ],
)
def test_flush_all_sets_stats_settings_oldest(
    which: str, flags: tuple[str, ...], server_factory: Callable[..., Server]
) -> None:
    """stats settings' ``oldest`` is memcached's oldest_live, in server time (uptime + 60):
    what the last flush_all set, the second before its time with CAS uniques. mcached
    always showed 0."""
    srv = server_factory(which, *flags)
    cas = 0 if flags else 1  # -C: no CAS uniques
    assert settings_rows(srv.address, "oldest") == {"oldest": "0"}
    with Conn(srv.address) as conn:
        for line, ahead in [(b"flush_all", 0), (b"flush_all 100", 100), (b"flush_all -5", 0)]:
            before = uptime(conn)
            conn.send(line + b"\r\n")
            assert conn.read_until(b"\r\n") == b"OK\r\n"
            after = uptime(conn)
            oldest = int(settings_rows(srv.address, "oldest")["oldest"])
            assert before + 60 + ahead - cas <= oldest <= after + 60 + ahead - cas, line
        # a unix time before the start: memcached's realtime() says 1
        conn.send(b"flush_all 2592001\r\n")
        assert conn.read_until(b"\r\n") == b"OK\r\n"
    assert settings_rows(srv.address, "oldest") == {"oldest": str(1 - cas)}


def test_stats_extstore_is_empty(server: Server) -> None:
    """memcached (built with extstore, as Debian's is) answers ``stats extstore`` without
    -o ext_path with END alone; mcached answered ERROR."""
    with Conn(server.address) as conn:
        conn.send(b"stats extstore\r\nmn\r\n")
        assert conn.read_until(b"MN\r\n") == b"END\r\nMN\r\n"
