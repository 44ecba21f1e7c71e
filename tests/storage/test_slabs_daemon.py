"""Slab storage seen from the wire: ``slabs reassign|automove``, ``stats slabs|items``, and
memcached-tool's ``display``, each checked against mcached and the real memcached."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.wire import Conn, exchange

pytestmark = pytest.mark.integration

MEMCACHED_TOOL = "/usr/share/memcached/scripts/memcached-tool"


def stats(conn: Conn, sub: bytes = b"") -> dict[str, str]:
    conn.send(b"stats" + (b" " + sub if sub else b"") + b"\r\n")
    raw = conn.read_until(b"END\r\n")
    out = {}
    for line in raw.split(b"\r\n")[:-2]:
        m = re.fullmatch(rb"STAT (\S+) (.*)", line)
        assert m, line
        out[m.group(1).decode()] = m.group(2).decode()
    return out


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def fill_small(conn: Conn, n: int, start: int = 0) -> None:
    """`n` items of class 1 (95 bytes each), pipelined with noreply."""
    for base in range(start, start + n, 5000):
        batch = b"".join(
            b"set s%06d 0 0 27 noreply\r\n%s\r\n" % (i, b"x" * 27)
            for i in range(base, min(base + 5000, start + n))
        )
        conn.send(batch)
    conn.send(b"version\r\n")
    assert conn.read_until(b"\r\n", limit=60).startswith(b"VERSION")


# ---- slabs commands ----

REPLIES = [
    ("same", b"slabs reassign 1 1\r\n", b"SAME src and dst class are identical\r\n"),
    ("bad-dst", b"slabs reassign 1 40\r\n", b"BADCLASS invalid src or dst class id\r\n"),
    ("bad-src", b"slabs reassign -2 1\r\n", b"BADCLASS invalid src or dst class id\r\n"),
    ("no-pages", b"slabs reassign 1 39\r\n", b"NOSPARE source class has no spare pages\r\n"),
    ("from-pool", b"slabs reassign 0 1\r\n", b"NOSPARE source class has no spare pages\r\n"),
    ("to-pool", b"slabs reassign 1 0\r\n", b"NOSPARE source class has no spare pages\r\n"),
    ("any-none", b"slabs reassign -1 1\r\n", b"BADCLASS invalid src or dst class id\r\n"),
    ("bad-number", b"slabs reassign x 1\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    ("noreply-is-a-token", b"slabs reassign 1 2 noreply\r\n", b"ERROR\r\n"),
    ("short", b"slabs reassign 1\r\n", b"ERROR\r\n"),
    ("automove", b"slabs automove 2\r\nslabs automove 0\r\n", b"OK\r\nOK\r\n"),
    ("automove-3", b"slabs automove 3\r\n", b"ERROR\r\n"),
    ("automove-text", b"slabs automove x\r\n", b"CLIENT_ERROR bad command line format\r\n"),
    (
        "automove-noreply",
        b"slabs automove 1 noreply\r\nslabs automove 9 noreply\r\nversion\r\n",
        b"VERSION 1.6.18\r\n",
    ),
    ("automove-ratio", b"slabs automove ratio 0.5\r\n", b"OK\r\n"),
    ("automove-ratio-bad", b"slabs automove ratio x\r\n", b"ERROR\r\n"),
    ("slabs-alone", b"slabs\r\n", b"ERROR\r\n"),
    ("slabs-unknown", b"slabs foo bar\r\n", b"ERROR\r\n"),
]


@pytest.mark.parametrize("request_bytes,reply", [pytest.param(q, a, id=n) for n, q, a in REPLIES])
def test_slabs_command_replies(server: Server, request_bytes: bytes, reply: bytes) -> None:
    with Conn(server.address) as conn:
        exchange(conn, request_bytes, reply)  # the reply, and nothing more before the probe's


def test_reassign_disabled(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-o", "no_slab_reassign")
    with Conn(srv.address) as conn:
        assert conn.request(b"slabs reassign 1 2\r\nslabs reassign x 2\r\n") == (
            b"CLIENT_ERROR slab reassignment disabled\r\n" * 2
        )
        assert conn.request(b"slabs automove 1\r\n") == b"OK\r\n"


def test_automove_level_shows_in_stats_settings(server: Server) -> None:
    with Conn(server.address) as conn:
        assert stats(conn, b"settings")["slab_automove"] == "1"
        assert conn.request(b"slabs automove 2\r\n") == b"OK\r\n"
        assert stats(conn, b"settings")["slab_automove"] == "2"


def test_reassign_moves_a_page(server: Server) -> None:
    with Conn(server.address) as conn:
        fill_small(conn, 30_000)  # 3 pages of class 1 (10,922 a page)
        assert stats(conn, b"slabs")["1:total_pages"] == "3"
        # both answer at once and move the page in the background (a second move asked
        # for meanwhile is BUSY: test_processes' maintainer test; memcached's moves can be
        # over before the next command is read)
        assert conn.request(b"slabs reassign 1 5\r\n", expect_len=4) == b"OK\r\n"
        assert wait_for(lambda: stats(conn, b"slabs").get("5:total_pages") == "1")
        assert wait_for(lambda: stats(conn)["slabs_moved"] == "1")
        slabs = stats(conn, b"slabs")
        assert slabs["1:total_pages"] == "2" and slabs["total_malloced"] == str(3 * 1024 * 1024)
        st = stats(conn)
        moved_out = int(st["slab_reassign_rescues"]) + int(st["slab_reassign_evictions_nomem"])
        assert moved_out > 0
        assert int(st["curr_items"]) + int(st["slab_reassign_evictions_nomem"]) == 30_000


# ---- stats slabs / items: memcached's names and figures ----

SAME_ITEMS_FIELDS = (
    "number mem_requested evicted evicted_nonzero evicted_time outofmemory tailrepairs "
    "reclaimed expired_unfetched evicted_unfetched evicted_active crawler_reclaimed"
).split()
# how memcached splits these between its HOT, WARM and COLD queues depends on when its
# maintainer thread ran; mcached's one clock reports everything as COLD: compare the sums
SUMMED_ITEMS_FIELDS = {
    "number": ("number_hot", "number_warm", "number_cold"),
    "hits": ("hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp"),
}


def test_stats_slabs_and_items_match_memcached(server_factory: Callable[..., Server]) -> None:
    """The same requests on both servers: the same stat names, and the same figures for
    every one that does not depend on timing or on the LRU's internals."""
    workload = (
        b"set a 0 0 1\r\nx\r\nset bb 5 100 2000\r\n" + b"y" * 2000 + b"\r\n"
        b"get a\r\nget a bb\r\ndelete nope\r\nincr a 1\r\ntouch bb 10\r\n"
    )
    seen = {}
    for kind in ("mcached", "memcached"):
        srv = server_factory(kind)
        with Conn(srv.address) as conn:
            conn.request(workload)
            seen[kind] = (stats(conn, b"slabs"), stats(conn, b"items"), stats(conn))
    (ms, mi, mg), (rs, ri, rg) = seen["mcached"], seen["memcached"]
    assert ms == rs  # every field of stats slabs, values included
    assert set(mi) == set(ri)
    for cls in ("1", "15"):
        for field in SAME_ITEMS_FIELDS:
            name = f"items:{cls}:{field}"
            assert mi[name] == ri[name], name
        for parts in SUMMED_ITEMS_FIELDS.values():
            assert sum(int(mi[f"items:{cls}:{p}"]) for p in parts) == sum(
                int(ri[f"items:{cls}:{p}"]) for p in parts
            ), parts
    assert mi["items:1:hits_to_cold"] == "2" and mi["items:15:number_cold"] == "1"
    for name in (
        "bytes",
        "curr_items",
        "total_items",
        "evictions",
        "reclaimed",
        "expired_unfetched",
        "evicted_unfetched",
        "evicted_active",
        "slabs_moved",
        "slab_global_page_pool",
        "crawler_reclaimed",
        "get_expired",
        "get_flushed",
        "slab_reassign_rescues",
        "slab_reassign_evictions_nomem",
        "hash_is_expanding",
        "limit_maxbytes",
        "malloc_fails",
        "lru_bumps_dropped",
        "moves_within_lru",
    ):
        assert mg[name] == rg[name], name


# ---- memcached-tool ----


@pytest.mark.skipif(shutil.which("perl") is None, reason="memcached-tool needs perl")
def test_memcached_tool_display(server_factory: Callable[..., Server]) -> None:
    rows = {}
    for kind in ("mcached", "memcached"):
        srv = server_factory(kind, "-m", "8")
        with Conn(srv.address) as conn:
            fill_small(conn, 12_000)
            conn.request(
                b"".join(b"set m%d 0 0 900 noreply\r\n%s\r\n" % (i, b"z" * 900) for i in range(500))
                + b"version\r\n"
            )
        out = subprocess.run(
            ["perl", MEMCACHED_TOOL, f"{srv.host}:{srv.port}", "display"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        lines = out.splitlines()
        assert lines[0].split() == [
            "#",
            "Item_Size",
            "Max_age",
            "Pages",
            "Count",
            "Full?",
            "Evicted",
            "Evict_Time",
            "OOM",
        ]
        # class, size, pages, count, full?, evicted, evict time, oom (not the age)
        rows[kind] = [(f[0], f[1], *f[3:]) for f in (line.split() for line in lines[1:])]
    assert rows["mcached"] == rows["memcached"]
    assert rows["mcached"] == [
        ("1", "96B", "2", "12000", "no", "0", "0", "0"),
        ("12", "1.2K", "1", "500", "no", "0", "0", "0"),
    ]


# ---- the automover and the memory bound, in the daemon ----


@pytest.mark.parametrize("kind", ["memcached", "mcached-procs"])
def test_bug_automove_1_evicted_a_working_set_read_all_the_time(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A hunt (at -t 4): 4,000 1 KB keys read every round by a cache-aside client, while
    5 KB keys nobody reads evict in another class. memcached's automover leaves the read
    class alone; mcached's default automover took a page from it and evicted hundreds of
    its keys every round. Both with a window of 3 ticks (so a move could come in seconds)."""
    srv = server_factory(
        kind, "-m", "12", "-t", "4", "-o", "slab_automove=1,slab_automove_window=3"
    )
    hot = [b"hot%d" % i for i in range(4000)]
    with Conn(srv.address, timeout=30) as conn:
        conn.send(b"".join(b"set %s 0 0 1000 noreply\r\n%s\r\n" % (k, b"h" * 1000) for k in hot))
        exchange(conn, b"mn\r\n", b"MN\r\n")
        n = misses = 0
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            conn.send(
                b"".join(
                    b"set s%d 0 0 5000 noreply\r\n%s\r\n" % (n + i, b"s" * 5000) for i in range(600)
                )
            )
            n += 600
            exchange(conn, b"mn\r\n", b"MN\r\n")
            conn.send(b"".join(b"mg %s\r\n" % k for k in hot) + b"mn\r\n")
            replies = conn.read_until(b"MN\r\n", limit=30)
            misses += replies.count(b"EN\r\n")
            time.sleep(0.3)
        st = stats(conn)
    assert int(st["evictions"]) > 0
    assert misses == 0 and st["slabs_moved"] == "0", (misses, st["slabs_moved"])


def test_automove_follows_a_size_shift(server_factory: Callable[..., Server]) -> None:
    srv = server_factory("mcached", "-m", "8", "-o", "slab_automove=2")
    with Conn(srv.address) as conn:
        fill_small(conn, 90_000)  # all 8 pages to class 1
        assert stats(conn, b"slabs")["1:total_pages"] == "8"
        value = b"v" * 10_000
        # its class's first page, past -m as in memcached (wait for the reply, not for 0.3 s
        # of silence)
        large = conn.request(b"set probe 0 0 10000\r\n" + value + b"\r\n", expect_len=8)
        assert large == b"STORED\r\n"
        clsid = next(
            k.split(":")[0]
            for k, v in stats(conn, b"slabs").items()
            if k.endswith(":chunk_size") and v == "11104"
        )

        def moved() -> bool:
            conn.send(
                b"".join(b"set l%d 0 0 10000 noreply\r\n%s\r\n" % (i, value) for i in range(300))
            )
            return int(stats(conn, b"slabs").get(f"{clsid}:total_pages", "0")) >= 3

        assert wait_for(moved, timeout=30)
        st = stats(conn)
        assert int(st["slabs_moved"]) >= 2  # and the first page: 3
        assert int(stats(conn, b"slabs")["total_malloced"]) == 9 * 1024 * 1024
