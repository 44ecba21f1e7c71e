"""Divergences memcached's own test suite found, one test each, in exact bytes, on both servers.

``tests/memcached_suite/TRIAGE.md`` gives each one's root cause and the module its fix
belongs in. Every test runs against memcached (where it passes: the expectation is
memcached's) and against mcached; `diverges` marks the mcached run ``xfail(strict=True)``
with its TRIAGE.md section while mcached still differs, so the fix that closes one has to
remove the mark in the same change.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Server, free_port
from tests.wire import Conn, exchange, roundtrip

pytestmark = pytest.mark.integration


def diverges(request: pytest.FixtureRequest, kind: str, section: str) -> None:
    """mcached still differs here: its run must fail, for the reason in TRIAGE.md."""
    if kind == "mcached":
        request.applymarker(pytest.mark.xfail(strict=True, reason=f"TRIAGE.md: {section}"))


def stats(conn: Conn, sub: bytes = b"") -> list[tuple[str, str]]:
    """`stats [sub]` rows in order, asserting every line is `STAT <name> <value>`."""
    conn.send(b"stats" + (b" " + sub if sub else b"") + b"\r\n")
    lines = conn.read_until(b"END\r\n").split(b"\r\n")
    assert lines[-2:] == [b"END", b""]
    rows = []
    for line in lines[:-2]:
        m = re.fullmatch(rb"STAT (\S+) (\S.*)", line)
        assert m, line
        rows.append((m.group(1).decode(), m.group(2).decode()))
    return rows


def conn_groups(text: str) -> list[dict[str, str]]:
    """``stats conns`` rows, one dict per socket, in order (a socket's rows are together,
    under one number)."""
    groups: list[dict[str, str]] = []
    last = None
    for fd, name, value in re.findall(r"STAT (\d+):(\S+) (.*)\r\n", text):
        if fd != last or name in groups[-1]:
            groups.append({})
            last = fd
        groups[-1][name] = value
    return groups


# --- -o slab_chunk_max (chunked-items.t, item_size_max.t, stats.t) ----------------------


@pytest.mark.parametrize(
    ("flags", "chunk_max", "item_max"),
    [
        (("-o", "slab_chunk_max=16384"), "16384", "1048576"),
        (("-I", "1024", "-o", "slab_chunk_max=1024"), "1024", "1024"),
        (("-I", "512k", "-o", "slab_chunk_max=16384"), "16384", "524288"),
    ],
)
def test_slab_chunk_max_is_in_bytes(
    kind: str,
    server_factory: Callable[..., Server],
    flags: tuple[str, ...],
    chunk_max: str,
    item_max: str,
) -> None:
    """memcached reads ``-o slab_chunk_max`` with safe_strtol: bytes, whatever -h says."""
    srv = server_factory(kind, *flags)
    with Conn(srv.address) as conn:
        settings = dict(stats(conn, b"settings"))
    assert (settings["slab_chunk_max"], settings["item_size_max"]) == (chunk_max, item_max)


def test_slab_automove_without_a_value_is_1(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """``-o slab_automove`` alone (slabs-reassign2.t) means slab_automove=1 to memcached."""
    srv = server_factory(kind, "-o", "slab_automove")
    with Conn(srv.address) as conn:
        assert dict(stats(conn, b"settings"))["slab_automove"] == "1"


def test_an_item_rescued_by_a_page_move_counts_in_total_items(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached's page mover links each rescued copy as an item (``do_item_replace``), and
    ``do_item_link`` counts it in total_items; mcached counted only the rescue."""
    srv = server_factory(kind, "-m", "8", "-o", "slab_reassign,slab_automove=0")
    with Conn(srv.address, timeout=30) as conn:
        value = b"v" * 100
        conn.send(
            b"".join(b"set a%d 0 0 100 noreply\r\n%s\r\n" % (i, value) for i in range(20_000))
        )
        conn.send(b"".join(b"delete a%d noreply\r\n" % i for i in range(0, 20_000, 3)))
        exchange(conn, b"mn\r\n", b"MN\r\n")
        cid = next(k.split(":")[0] for k, _ in stats(conn, b"slabs") if k.endswith(":total_pages"))
        exchange(conn, b"slabs reassign %s 0\r\n" % cid.encode(), b"OK\r\n")
        deadline = time.monotonic() + 20
        while (st := dict(stats(conn)))["slabs_moved"] == "0":
            assert time.monotonic() < deadline, "the page did not move"
            time.sleep(0.05)
        while dict(stats(conn))["slab_reassign_running"] != "0":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        st = dict(stats(conn))
    assert int(st["slab_reassign_rescues"]) > 0
    assert int(st["total_items"]) == 20_000 + int(st["slab_reassign_rescues"])


# --- general stats rows (stats.t, idle-timeout.t) ---------------------------------------

# memcached 1.6.18's `stats` rows in order (memcached.c server_stats, threadlocal and slab
# stats), and the settings that decide the conditional ones.
GENERAL_ROWS = (
    "pid uptime time version libevent pointer_size rusage_user rusage_system max_connections "
    "curr_connections total_connections rejected_connections connection_structures "
    "response_obj_oom response_obj_count response_obj_bytes read_buf_count read_buf_bytes "
    "read_buf_bytes_free read_buf_oom reserved_fds cmd_get cmd_set cmd_flush cmd_touch cmd_meta "
    "get_hits get_misses get_expired get_flushed delete_misses delete_hits incr_misses "
    "incr_hits decr_misses decr_hits cas_misses cas_hits cas_badval touch_hits touch_misses "
    "store_too_large store_no_memory auth_cmds auth_errors idle_kicks bytes_read bytes_written "
    "limit_maxbytes accepting_conns listen_disabled_num time_in_listen_disabled_us threads "
    "conn_yields hash_power_level hash_bytes hash_is_expanding slab_reassign_rescues "
    "slab_reassign_chunk_rescues slab_reassign_evictions_nomem slab_reassign_inline_reclaim "
    "slab_reassign_busy_items slab_reassign_busy_deletes slab_reassign_running slabs_moved "
    "lru_crawler_running lru_crawler_starts lru_maintainer_juggles malloc_fails "
    "log_worker_dropped log_worker_written log_watcher_skipped log_watcher_sent log_watchers "
    "unexpected_napi_ids round_robin_fallback bytes curr_items total_items "
    "slab_global_page_pool expired_unfetched evicted_unfetched evicted_active evictions "
    "reclaimed crawler_reclaimed crawler_items_checked lrutail_reflocked moves_to_cold "
    "moves_to_warm moves_within_lru direct_reclaims lru_bumps_dropped"
).split()
ONLY_WITH = {
    "maxconns_fast": {"rejected_connections"},
    "idle_timeout": {"idle_kicks"},
    "slab_reassign": {
        "slab_reassign_rescues",
        "slab_reassign_chunk_rescues",
        "slab_reassign_evictions_nomem",
        "slab_reassign_inline_reclaim",
        "slab_reassign_busy_items",
        "slab_reassign_busy_deletes",
        "slab_reassign_running",
        "slabs_moved",
    },
    "lru_crawler": {"lru_crawler_running", "lru_crawler_starts"},
    "lru_maintainer": {
        "lru_maintainer_juggles",
        "evicted_active",
        "moves_to_cold",
        "moves_to_warm",
        "moves_within_lru",
        "direct_reclaims",
        "lru_bumps_dropped",
    },
}


@pytest.mark.parametrize(
    ("flags", "off"),
    [
        ((), {"idle_timeout"}),
        (("-o", "idle_timeout=3"), set()),
        (("-o", "no_maxconns_fast"), {"idle_timeout", "maxconns_fast"}),
        (("-o", "no_slab_reassign"), {"idle_timeout", "slab_reassign"}),
        # stats.t's flags
        (
            ("-I", "1024", "-o", "slab_chunk_max=1024,no_lru_crawler,no_lru_maintainer"),
            {"idle_timeout", "lru_crawler", "lru_maintainer"},
        ),
        (
            ("-o", "no_modern"),
            {
                "idle_timeout",
                "maxconns_fast",
                "slab_reassign",
                "lru_crawler",
                "lru_maintainer",
            },
        ),
    ],
    ids=["default", "idle_timeout", "no_maxconns_fast", "no_slab_reassign", "stats.t", "no_modern"],
)
def test_stats_has_memcached_rows(
    kind: str,
    server_factory: Callable[..., Server],
    flags: tuple[str, ...],
    off: set[str],
) -> None:
    """Every row memcached prints, in its order, and the conditional ones only when on:
    pymemcache, memcached_exporter and stats.t (which counts them) read them."""
    srv = server_factory(kind, *flags)
    hidden = set().union(*(ONLY_WITH[name] for name in off))
    with Conn(srv.address) as conn:
        names = [name for name, _ in stats(conn)]
    assert names == [n for n in GENERAL_ROWS if n not in hidden]


def test_bug_lru_mode_flat_hid_the_maintainer_rows(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A hunt: after ``lru mode flat`` mcached's ``stats`` left out evicted_active,
    moves_to_cold, moves_to_warm, moves_within_lru, direct_reclaims and lru_bumps_dropped;
    memcached prints them while its LRU maintainer runs, segmented or not."""
    srv = server_factory(kind)
    with Conn(srv.address) as conn:
        exchange(conn, b"lru mode flat\r\n", b"OK\r\n")
        names = [name for name, _ in stats(conn)]
    assert names == [n for n in GENERAL_ROWS if n not in ONLY_WITH["idle_timeout"]]


def test_idle_timeout_counts_idle_kicks(
    request: pytest.FixtureRequest, kind: str, server_factory: Callable[..., Server]
) -> None:
    """idle-timeout.t: ``STAT idle_kicks`` (after auth_errors) counts idle connections closed."""
    srv = server_factory(kind, "-o", "idle_timeout=1")
    with Conn(srv.address) as conn:
        assert dict(stats(conn))["idle_kicks"] == "0"
    with Conn(srv.address) as idle:
        assert idle.closed(wait=5.0)
    with Conn(srv.address) as conn:
        assert dict(stats(conn))["idle_kicks"] == "1"


# --- stats settings (stats.t) -----------------------------------------------------------

SETTINGS_ROWS = (
    "maxbytes maxconns tcpport udpport inter verbosity oldest evictions domain_socket umask "
    "shutdown_command growth_factor chunk_size num_threads num_threads_per_udp "
    "stat_key_prefix detail_enabled reqs_per_event cas_enabled tcp_backlog binding_protocol "
    "auth_enabled_sasl auth_enabled_ascii item_size_max maxconns_fast hashpower_init "
    "slab_reassign slab_automove slab_automove_ratio slab_automove_window slab_chunk_max "
    "lru_crawler lru_crawler_sleep lru_crawler_tocrawl tail_repair_time flush_enabled "
    "dump_enabled hash_algorithm lru_maintainer_thread lru_segmented hot_lru_pct warm_lru_pct "
    "hot_max_factor warm_max_factor temp_lru temporary_ttl idle_timeout watcher_logbuf_size "
    "worker_logbuf_size read_buf_mem_limit track_sizes inline_ascii_response ext_item_size "
    "ext_item_age ext_low_ttl ext_recache_rate ext_wbuf_size ext_compact_under ext_drop_under "
    "ext_max_sleep ext_max_frag slab_automove_freeratio ext_drop_unread ssl_enabled "
    "ssl_chain_cert ssl_key ssl_verify_mode ssl_keyformat ssl_ciphers ssl_ca_cert ssl_wbuf_size "
    "ssl_session_cache ssl_kernel_tls ssl_min_version num_napi_ids memory_file"
).split()


def test_stats_settings_has_memcached_rows(server: Server) -> None:
    with Conn(server.address) as conn:
        rows = stats(conn, b"settings")
    assert [name for name, _ in rows] == SETTINGS_ROWS
    settings = dict(rows)
    assert (settings["domain_socket"], settings["auth_enabled_sasl"]) == ("NULL", "no")
    assert (settings["umask"], settings["dump_enabled"]) == ("700", "yes")


NO_MODERN = {
    "slab_reassign": "no",
    "slab_automove": "0",
    "maxconns_fast": "no",
    "lru_crawler": "no",
    "lru_maintainer_thread": "no",
    "lru_segmented": "no",
    "slab_chunk_max": "1048576",
}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("-o", "no_modern"), NO_MODERN),
        (("-o", "slab_chunk_max=16384,no_modern"), {**NO_MODERN, "slab_chunk_max": "16384"}),
        (
            ("-o", "no_lru_maintainer"),
            {"lru_maintainer_thread": "no", "lru_segmented": "no", "lru_crawler": "yes"},
        ),
        (("-X", "-a", "0755"), {"dump_enabled": "no", "umask": "755"}),
        (("-o", "read_buf_mem_limit=2"), {"read_buf_mem_limit": "2097152"}),  # set in MB
        (("-o", "read_buf_mem_limit=4097"), {"read_buf_mem_limit": "1048576"}),  # in 32 bits
    ],
    ids=[
        "no_modern",
        "no_modern-chunk-given",
        "no_lru_maintainer",
        "X-a",
        "read_buf_mem_limit",
        "read_buf_mem_limit-wraps",
    ],
)
def test_stats_settings_follow_flags(
    kind: str,
    server_factory: Callable[..., Server],
    flags: tuple[str, ...],
    expected: dict[str, str],
) -> None:
    """``-o no_modern`` is memcached's pre-1.5 defaults; no_lru_maintainer takes the
    segmented LRU with it; -X turns dumps off; -a is read in octal."""
    srv = server_factory(kind, *flags)
    with Conn(srv.address) as conn:
        settings = dict(stats(conn, b"settings"))
    assert {k: settings[k] for k in expected} == expected


# --- stats cachedump (stats.t; libmemcached's memcdump) ---------------------------------


def test_stats_cachedump_never_prints_a_binary_key(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """An item stored under a binary key (meta's ``b`` flag: the key sent in base64) is left
    out of the dump, as memcached leaves it out; mcached printed its raw bytes, so a key of
    ``x\r\nEND\r\nITEM`` ended the reply early for its reader (found by a protocol hunt)."""
    srv = server_factory(kind, "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        exchange(conn, b"ms eA0KRU5EDQpJVEVN 3 b\r\nbar\r\n", b"HD\r\n")
        exchange(conn, b"ms Zm9v 3 b\r\nbar\r\n", b"HD\r\n")  # foo, in base64
        exchange(conn, b"set plain 0 0 3\r\nbar\r\n", b"STORED\r\n")
        exchange(conn, b"stats cachedump 1 0\r\n", b"ITEM plain [3 b; 0 s]\r\nEND\r\n")
        exchange(conn, b"stats cachedump 1 1\r\n", b"ITEM plain [3 b; 0 s]\r\nEND\r\n")


def test_stats_cachedump(kind: str, server_factory: Callable[..., Server]) -> None:
    """``ITEM <key> [<bytes> b; <absolute exptime or 0> s]`` for a class, then END.
    Without the LRU maintainer every item is in memcached's COLD LRU, which it walks newest
    first; mcached lists by the second of the last store, newest first (items stored in
    the same second come in no particular order, so this test does not ask for one)."""
    srv = server_factory(kind, "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        exchange(conn, b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n")
        now = int(time.time())
        exchange(conn, b"set bar 0 100 2\r\nxy\r\n", b"STORED\r\n")
        conn.send(b"stats cachedump 1 100\r\n")
        dump = conn.read_until(b"END\r\n")
        assert dump.endswith(b"\r\nEND\r\n")
        lines = sorted(dump.split(b"\r\n")[:-2])
        assert lines[1] == b"ITEM foo [3 b; 0 s]", dump
        m = re.fullmatch(rb"ITEM bar \[2 b; (\d+) s\]", lines[0])
        assert m, dump
        assert abs(int(m.group(1)) - (now + 100)) <= 2
        conn.send(b"stats cachedump 1 1\r\n")
        assert re.fullmatch(rb"ITEM \S+ \[\d b; \d+ s\]\r\nEND\r\n", conn.read_until(b"END\r\n"))
        exchange(
            conn,
            b"stats cachedump 2 0\r\nstats cachedump 64 1\r\nstats cachedump -1 1\r\n"
            b"stats cachedump 1\r\n",
            b"END\r\nCLIENT_ERROR Illegal slab id\r\nCLIENT_ERROR bad command line format\r\n"
            b"CLIENT_ERROR bad command line\r\n",
        )
        # the class read as strtoul reads it, then kept in 32 bits: 2^32 is class 0 (empty),
        # 99999999999 a class past 63; past 64 bits, not a number
        exchange(
            conn,
            b"stats cachedump 4294967296 1\r\nstats cachedump 99999999999 1\r\n"
            b"stats cachedump 18446744073709551616 1\r\n",
            b"END\r\nCLIENT_ERROR Illegal slab id\r\nCLIENT_ERROR bad command line format\r\n",
        )


def test_stats_groups_read_no_word_past_their_name(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached reads a stats group's name and ignores what follows it (``stats items
    foo`` is ``stats items``; ``stats detail on foo`` is ``stats detail on``); mcached
    answered them ERROR and a usage error."""
    srv = server_factory(kind)
    with Conn(srv.address) as conn:
        exchange(conn, b"set k 0 0 1\r\nx\r\n", b"STORED\r\n")
        for group in (b"items", b"slabs", b"settings", b"conns", b"sizes"):
            conn.send(b"stats %b\r\n" % group)
            plain = conn.read_until(b"END\r\n")
            conn.send(b"stats %b extra words\r\n" % group)
            extra = conn.read_until(b"END\r\n")
            # the same rows (conns: its last-command times and states may move on)
            names = [line.split(b" ")[1] for line in plain.split(b"\r\n")[:-2]]
            assert [line.split(b" ")[1] for line in extra.split(b"\r\n")[:-2]] == names, group
        exchange(conn, b"stats reset extra\r\n", b"RESET\r\n")
        exchange(conn, b"stats detail on extra\r\nstats detail off x y\r\n", b"OK\r\nOK\r\n")
        exchange(conn, b"stats detail\r\n", b"CLIENT_ERROR usage: stats detail on|off|dump\r\n")


# --- a get line longer than LINE_PART (mcached parses it a part at a time) ---------------


END = b"END\r\n"


def counts(conn: Conn) -> tuple[int, int, int]:
    rows = dict(stats(conn))
    return int(rows["cmd_get"]), int(rows["get_hits"]), int(rows["get_misses"])


@pytest.mark.parametrize("verb", [b"get", b"gets"])
def test_a_long_get_line_is_answered_whole(server: Server, verb: bytes) -> None:
    """A get line of ~190 KB (mcached parses it in parts of LINE_PART bytes, each served as
    its own get): hits, misses, repeated keys, runs of spaces across the parts' ends; then
    such a line with a key over 250 bytes late in it. The replies, byte for byte, and the
    counts, as memcached's."""
    keys = [b"key%05d" % i for i in range(12_000)]
    with Conn(server.address) as conn:
        conn.send(
            b"".join(b"set %b 0 0 6 noreply\r\n%b\r\n" % (k, k[3:] + b"!") for k in keys[::3])
        )
        conn.send(b"version\r\n")
        conn.read_until(b"\r\n")
        asked = keys[:6_000] + keys[5_000:] + keys[:2_000]
        line = b" ".join(asked[:6_000]) + b" " * 70_000 + b"  ".join(asked[6_000:])
        before = counts(conn)
        conn.send(verb + b" " + line + b"\r\n")
        got = conn.read_until(b"END\r\n", limit=30)
        hits = [k for k in asked if int(k[3:]) % 3 == 0]
        if verb == b"get":
            assert got == b"".join(b"VALUE %b 0 6\r\n%b!\r\n" % (k, k[3:]) for k in hits) + END
        else:
            rows = re.findall(rb"VALUE (\S+) 0 6 \d+\r\n(\S+)\r\n", got)
            assert rows == [(k, k[3:] + b"!") for k in hits] and got.endswith(b"!\r\nEND\r\n")
        after = counts(conn)
        assert (after[0] - before[0], after[1] - before[1]) == (len(asked), len(hits))
        # a key over 250 bytes: the keys before it looked up, the error alone
        bad = line + b" " + b"k" * 251 + b" " + keys[0] + b"\r\n"
        exchange(conn, verb + b" " + bad, b"CLIENT_ERROR bad command line format\r\n")
        end = counts(conn)
        assert (end[0] - after[0], end[1] - after[1]) == (len(asked) + 1, len(hits))  # + probe


def test_a_key_repeated_in_a_get_is_a_hit_of_its_class_each_time(server: Server) -> None:
    """memcached reads every key of a multiget, a repeated one each time: its class's
    ``get_hits`` in ``stats slabs`` counts each (mcached served a repeat from its first read
    and counted the class once: found by two hunts)."""

    def hits(conn: Conn) -> tuple[int, int]:
        total = int(dict(stats(conn))["get_hits"])
        per_class = sum(int(v) for k, v in stats(conn, b"slabs") if k.endswith(":get_hits"))
        return total, per_class

    with Conn(server.address) as conn:
        conn.send(b"set k 0 0 1\r\nx\r\nget k k k\r\n")
        assert conn.read_until(b"END\r\n") == b"STORED\r\n" + b"VALUE k 0 1\r\nx\r\n" * 3 + END
        assert hits(conn) == (3, 3)
        conn.send(b"gets k nothing k\r\n")
        assert conn.read_until(b"END\r\n").count(b"VALUE k 0 1 ") == 2
        assert hits(conn) == (5, 5)


ITEMS_ROWS = (
    "number number_hot number_warm number_cold age_hot age_warm age mem_requested evicted"
    " evicted_nonzero evicted_time outofmemory tailrepairs reclaimed expired_unfetched"
    " evicted_unfetched evicted_active crawler_reclaimed crawler_items_checked"
    " lrutail_reflocked moves_to_cold moves_to_warm moves_within_lru direct_reclaims"
    " hits_to_hot hits_to_warm hits_to_cold hits_to_temp"
).split()
#: the rows memcached prints only while its LRU maintainer runs (items.c item_stats)
SEGMENTED_ROWS = set(ITEMS_ROWS[1:6]) | {"evicted_active"} | set(ITEMS_ROWS[20:])


@pytest.mark.parametrize(
    ("flags", "rows"),
    [
        ((), ITEMS_ROWS),
        (("-o", "no_modern"), [r for r in ITEMS_ROWS if r not in SEGMENTED_ROWS]),
        (("-o", "no_lru_maintainer"), [r for r in ITEMS_ROWS if r not in SEGMENTED_ROWS]),
        (("-o", "temporary_ttl=30"), [*ITEMS_ROWS[:4], "number_temp", *ITEMS_ROWS[4:]]),
    ],
    ids=["default", "no_modern", "no_lru_maintainer", "temporary_ttl"],
)
def test_stats_items_rows_follow_the_lru_settings(
    kind: str, server_factory: Callable[..., Server], flags: tuple[str, ...], rows: list[str]
) -> None:
    """memcached prints its segmented LRU's rows only while its LRU maintainer runs, and
    number_temp only with a temporary LRU; mcached printed the same rows always (found by a
    hunt)."""
    server = server_factory(kind, *flags)
    with Conn(server.address) as conn:
        exchange(conn, b"set k 0 0 1\r\nx\r\n", b"STORED\r\n")
        assert [name.split(":")[2] for name, _ in stats(conn, b"items")] == rows


# --- flush_all with a delay (a binary-protocol review) -------------------------------------


def test_flush_all_with_a_delay_of_one_second_flushes_at_once(server: Server) -> None:
    """memcached's oldest_live is the second before the flush's time, so a delay of 1 is
    now (by CAS, whatever the clock's phase); mcached waited the second out."""
    with Conn(server.address) as conn:
        exchange(conn, b"set a 0 0 1\r\nx\r\nflush_all 1\r\n", b"STORED\r\nOK\r\n")
        exchange(conn, b"get a\r\n", b"END\r\n")


def test_flush_all_with_a_time_before_the_start_flushes_nothing(server: Server) -> None:
    """An absolute time at or before the server's start (memcached's ``realtime()`` answers
    1) makes memcached's oldest_live 0, which flushes nothing and calls off a delayed flush
    still to come; mcached flushed everything at once (found by a protocol hunt)."""
    hit = b"VALUE a 0 1\r\nx\r\nEND\r\n"
    with Conn(server.address) as conn:
        exchange(conn, b"set a 0 0 1\r\nx\r\nflush_all 2592001\r\n", b"STORED\r\nOK\r\n")
        exchange(conn, b"get a\r\n", hit)
        exchange(conn, b"flush_all 1000000000 noreply\r\nget a\r\n", hit)
        exchange(conn, b"flush_all 2\r\nflush_all 1000000000\r\n", b"OK\r\nOK\r\n")
        time.sleep(2.2)  # past the delayed flush's time
        exchange(conn, b"get a\r\n", hit)
        exchange(conn, b"flush_all\r\nget a\r\n", b"OK\r\nEND\r\n")  # a real one still


def test_flush_all_without_cas_takes_the_stores_of_its_second_and_waits_its_delay(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """Under ``-C`` memcached's oldest_live is the flush's own second (no oldest_cas, no
    second before): a flush now also takes what is stored in the rest of that second, and
    ``flush_all 2`` leaves the items for at least a second. mcached flushed by CAS
    regardless, so the store right after a flush stayed, and a delay ended a second early
    (found by a protocol hunt)."""
    srv = server_factory(kind, "-C")
    with Conn(srv.address) as conn:
        # one packet: the flush and the store come within the same second (but for a
        # clock's tick falling between them, microseconds apart)
        exchange(
            conn,
            b"flush_all\r\nset foo 0 0 3\r\nbar\r\nget foo\r\n",
            b"OK\r\nSTORED\r\nEND\r\n",
        )
        time.sleep(1.1)  # a later second: stores live again
        for _ in range(3):
            exchange(conn, b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n")
            start = time.monotonic()
            exchange(conn, b"flush_all 2\r\n", b"OK\r\n")
            time.sleep(max(0.0, 0.9 - (time.monotonic() - start)))
            conn.send(b"get foo\r\n")
            if time.monotonic() - start < 1.0:
                break
            # a loaded machine held the test past the second the item is sure to live:
            # inconclusive, so once the flush is done, again
            conn.read_until(b"END\r\n")
            time.sleep(max(0.0, 2.2 - (time.monotonic() - start)))
        else:
            pytest.fail("the machine never let the get come within a second of the flush")
        assert conn.read_until(b"END\r\n") == b"VALUE foo 0 3\r\nbar\r\nEND\r\n"
        time.sleep(max(0.0, 2.2 - (time.monotonic() - start)))
        exchange(conn, b"get foo\r\n", b"END\r\n")


# --- start-up -o options and their stats settings rows (a start-up options audit) ---------

STARTUP_TUNING = (
    "hot_lru_pct=30,warm_lru_pct=45,hot_max_factor=0.5,warm_max_factor=3x,"
    "temporary_ttl=100,slab_automove_ratio=0.25,slab_automove_window=10,hashpower=20,"
    "tail_repair_time=30,watcher_logbuf_size=512,"
    "ext_item_size=1024,ext_max_frag=0.5,slab_automove_freeratio=0.5,no_chunked_items,"
    "modern,no_hashexpand,inline_ascii_resp,track_sizes=1"
)


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_startup_tuning_options_show_in_stats_settings(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """memcached's -o tuning of its segmented LRU, automover, hash table, logger and
    extstore sets the stats settings rows they name, read as memcached reads them (atoi,
    atof, safe_strtoul in kilobytes). mcached accepted them with a warning and stats
    settings showed the defaults (hot_lru_pct 20 after -o hot_lru_pct=30)."""
    srv = server_factory(which, "-o", STARTUP_TUNING)
    with Conn(srv.address) as conn:
        rows = dict(stats(conn, b"settings"))
    expected = {
        "hot_lru_pct": "30",
        "warm_lru_pct": "45",
        "hot_max_factor": "0.50",
        "warm_max_factor": "3.00",
        "temp_lru": "yes",
        "temporary_ttl": "100",
        "slab_automove_ratio": "0.25",
        "slab_automove_window": "10",
        "hashpower_init": "20",
        "tail_repair_time": "30",
        "watcher_logbuf_size": "524288",
        "ext_item_size": "1024",
        "ext_max_frag": "0.50",
        "slab_automove_freeratio": "0.500",
        "slab_chunk_max": "1048576",
        "track_sizes": "yes",
    }
    assert {k: rows[k] for k in expected} == expected


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_cas_uniques_count_from_one_whatever_the_key(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """CAS uniques come from one counter for the whole cache, as memcached's: a new
    server's first store gets 1 and each store after it the next number, whatever its key
    and worker. mcached's partitions drew numbers of their own residue (16 plus the
    partition's index, then steps of 16), past the highest any partition had drawn."""
    srv = server_factory(which, "-t", "4")
    conns = [Conn(srv.address) for _ in range(4)]  # with -t 4, spread over the workers
    try:
        got = [conns[i % 4].request_line(b"ms key%d 1 c\r\nx\r\n" % i) for i in range(40)]
        got.append(conns[0].request_line(b"mg key7 c\r\n"))
    finally:
        for conn in conns:
            conn.close()
    assert got == [b"HD c%d\r\n" % (i + 1) for i in range(40)] + [b"HD c8\r\n"]


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_the_tables_start_at_memcacheds_hash_table_size(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """Without -o hashpower the tables start at memcached's HASHPOWER_DEFAULT, 2^16 slots
    (mcached's started at 1,024: `stats` showed hash_power_level 10, hash_bytes 8192)."""
    srv = server_factory(which)
    with Conn(srv.address) as conn:
        rows = dict(stats(conn))
    assert (rows["hash_power_level"], rows["hash_bytes"]) == ("16", str(8 << 16))


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_hashpower_starts_the_tables_at_that_size(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """``-o hashpower=N`` starts the item tables at 2^N slots in all (``stats``
    hash_power_level and hash_bytes), and they keep that size as items come and go. mcached
    took the option and started its tables small, so a large cache of small items paused a
    share of its keys at each growth (~0.15 s at 20 million items) whatever the option
    said; memcached's advice for such caches is this option."""
    srv = server_factory(which, "-t", "4", "-o", "hashpower=20")
    with Conn(srv.address) as conn:
        rows = dict(stats(conn))
        assert (rows["hash_power_level"], rows["hash_bytes"]) == ("20", str(8 << 20))
        # items come and go (deletes leave tombstones behind): the size stays
        for i in range(3000):
            conn.send(b"set k%d 0 0 1 noreply\r\nx\r\ndelete k%d noreply\r\n" % (i, i // 2))
        rows = dict(stats(conn))
        assert rows["curr_items"] == "1500"
        assert (rows["hash_power_level"], rows["hash_bytes"]) == ("20", str(8 << 20))


# --- lru_crawler sleep|tocrawl, stats sizes_enable|disable (a hostile-input review) -----


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_lru_crawler_sleep_and_tocrawl(which: str, server_factory: Callable[..., Server]) -> None:
    """``lru_crawler sleep <us>`` and ``lru_crawler tocrawl <n>`` set the crawler's tuning
    for the whole daemon (``stats settings`` on every connection shows it), read as
    memcached's safe_strtoul reads them; mcached answered ERROR."""
    srv = server_factory(which, "-t", "4", "-o", "lru_crawler_sleep=77,lru_crawler_tocrawl=5")
    conns = [Conn(srv.address) for _ in range(4)]
    try:
        settings = dict(stats(conns[0], b"settings"))
        assert (settings["lru_crawler_sleep"], settings["lru_crawler_tocrawl"]) == ("77", "5")
        exchange(
            conns[0],
            b"lru_crawler sleep 1000001\r\nlru_crawler sleep -1\r\nlru_crawler sleep x\r\n"
            b"lru_crawler tocrawl 18446744073709551616\r\nlru_crawler tocrawl\r\n"
            b"lru_crawler sleep 5 6\r\nlru_crawler sleep 5 noreply\r\n",
            b"CLIENT_ERROR sleep must be one second or less\r\n"
            + b"CLIENT_ERROR bad command line format\r\n" * 3
            + b"ERROR\r\n" * 3,
        )
        exchange(
            conns[1],
            b"lru_crawler sleep 1000000\r\nlru_crawler tocrawl 4294967297\r\n",
            b"OK\r\nOK\r\n",
        )
        for conn in conns:  # each on whichever worker took it
            settings = dict(stats(conn, b"settings"))
            assert (settings["lru_crawler_sleep"], settings["lru_crawler_tocrawl"]) == (
                "1000000",
                "1",
            )
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_a_metadump_during_a_crawl_is_busy_and_a_lowered_sleep_ends_the_crawl_soon(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """One crawler job at a time: a metadump while a crawl runs is BUSY. The crawl naps
    1 s per 1000 items; ``lru_crawler sleep 0`` shortens the naps left, so it ends in a
    moment (mcached took the whole page's naps at the first setting: ~4 s here)."""
    srv = server_factory(which, "-t", "2")
    with Conn(srv.address) as conn:
        for i in range(4000):
            conn.send(b"set k%d 0 1000 1 noreply\r\nx\r\n" % i)
        assert conn.request(b"mn\r\n") == b"MN\r\n"
        exchange(conn, b"lru_crawler sleep 1000000\r\n", b"OK\r\n")
        assert crawl(conn, b"lru_crawler crawl all\r\n") == b"OK\r\n"
        time.sleep(0.3)
        exchange(
            conn, b"lru_crawler metadump all\r\n", b"BUSY currently processing crawler request\r\n"
        )
        exchange(conn, b"lru_crawler sleep 0\r\n", b"OK\r\n")
        time.sleep(2.5)  # a nap of 1 s may have begun before; the rest are none
        assert dict(stats(conn))["lru_crawler_running"] == "0"
        conn.send(b"lru_crawler metadump 1\r\n")
        assert conn.read_until(b"END\r\n").count(b"\n") == 4001


def crawl(conn: Conn, request: bytes) -> bytes:
    """The reply to `request` (an ``lru_crawler`` line), asked again while the crawler is
    BUSY with a pass of its own (memcached's autocrawler), for up to 10 s."""
    deadline = time.monotonic() + 10
    while True:
        conn.send(request)
        reply = conn.read_until(b"\r\n")
        if not reply.startswith(b"BUSY") or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def store_expired(conn: Conn, n: int) -> None:
    """`n` items of class 1 stored with a TTL of 1 s, then waited for until all expired."""
    conn.send(b"".join(b"set k%d 0 1 10 noreply\r\n0123456789\r\n" % i for i in range(n)))
    exchange(conn, b"", b"")
    time.sleep(2.2)


@pytest.mark.parametrize("which", ["mcached-procs", "memcached"])
def test_items_a_flush_all_frees_count_as_reclaimed(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """1,000 items, 250 of them read, then flush_all: within seconds the daemon frees them
    all and counts them reclaimed, 750 never fetched (memcached's LRU maintainer; mcached's
    sweep after a flush). Regression: mcached counted them crawler_reclaimed. Nor are they
    direct_reclaims (memcached's count of allocations that had to free an item), where
    mcached counted them too. (Nor is the sweep a crawl, but memcached's crawler starts on
    its own schedule, so its lru_crawler_starts here depends on the time: tests/storage.)"""
    srv = server_factory(which)
    with Conn(srv.address) as conn:
        conn.send(b"".join(b"set k%d 0 0 10 noreply\r\n0123456789\r\n" % i for i in range(1000)))
        conn.send(b"get %s\r\n" % b" ".join(b"k%d" % i for i in range(250)))
        assert conn.read_until(b"END\r\n").count(b"VALUE ") == 250
        exchange(conn, b"flush_all\r\n", b"OK\r\n")
        deadline = time.monotonic() + 15
        while (figures := dict(stats(conn)))["reclaimed"] != "1000":
            assert time.monotonic() < deadline, figures["reclaimed"]
            time.sleep(0.1)
        assert (figures["expired_unfetched"], figures["crawler_reclaimed"]) == ("750", "0")
        assert figures["direct_reclaims"] == "0"


@pytest.mark.parametrize("which", ["mcached", "memcached"])
def test_cache_memlimit_is_refused_under_large_pages(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """memcached with -L preallocates its memory and adjusts no limit: cache_memlimit is
    MEMLIMIT_ADJUST_FAILED and limit_maxbytes stays. Regression (a hunt at -t 4): mcached
    answered OK and took the new limit."""
    srv = server_factory(which, "-L")
    with Conn(srv.address) as conn:
        exchange(
            conn,
            b"cache_memlimit 32\r\n",
            b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n",
        )
        assert dict(stats(conn))["limit_maxbytes"] == str(64 * 1024 * 1024)
        exchange(
            conn,
            b"cache_memlimit 7\r\n",
            b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n",
        )


@pytest.mark.parametrize("which", ["mcached-procs", "memcached"])
def test_items_that_expire_unread_leave_within_seconds(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """2,000 items with a TTL of 1 s, never read: within seconds they leave curr_items and
    bytes, counted reclaimed and expired_unfetched, neither the crawler's nor direct
    reclaims (memcached's LRU maintainer pulls them off its tails). Regression (a hunt at
    -t 4): mcached counted them in curr_items until its crawler's next pass, a minute on."""
    srv = server_factory(which, "-t", "4", "-m", "8")
    with Conn(srv.address) as conn:
        conn.send(
            b"".join(b"set a%d 0 1 100 noreply\r\n%b\r\n" % (i, b"x" * 100) for i in range(2000))
        )
        exchange(conn, b"", b"")
        assert dict(stats(conn))["curr_items"] == "2000"
        deadline = time.monotonic() + 15
        while (figures := dict(stats(conn)))["curr_items"] != "0":
            assert time.monotonic() < deadline, figures["curr_items"]
            time.sleep(0.1)
        assert figures["bytes"] == "0"
        assert (figures["reclaimed"], figures["expired_unfetched"]) == ("2000", "2000")
        assert (figures["crawler_reclaimed"], figures["direct_reclaims"]) == ("0", "0")


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_lru_crawler_class_lists(which: str, server_factory: Callable[..., Server]) -> None:
    """``lru_crawler crawl|metadump`` take the ids memcached takes: any from 1 to 63, whether
    the class exists or not (mcached: only classes it has), the list split as strtok_r
    splits it (empty pieces skipped: mcached refused ``1,,2``), each id a safe_strtoul into
    32 bits; a list of no ids is NOTSTARTED (mcached: BADCLASS)."""
    srv = server_factory(which, "-t", "4")
    with Conn(srv.address) as conn:
        exchange(conn, b"set a 0 0 1\r\nx\r\n", b"STORED\r\n")
        for ids in (b"50", b"63", b"1,,2", b"1,", b",1", b"+1", b"01", b"4294967297"):
            assert crawl(conn, b"lru_crawler crawl %s\r\n" % ids) == b"OK\r\n", ids
        for ids in (b"0", b"64", b"-1", b"a", b"1,a", b"4294967296", b"18446744073709551616"):
            assert crawl(conn, b"lru_crawler crawl %s\r\n" % ids) == (
                b"BADCLASS invalid class id\r\n"
            ), ids
            assert crawl(conn, b"lru_crawler metadump %s\r\n" % ids) == (
                b"BADCLASS invalid class id\r\n"
            ), ids
        for ids in (b",", b",,"):
            assert crawl(conn, b"lru_crawler crawl %s\r\n" % ids) == (
                b"NOTSTARTED no items to crawl\r\n"
            )
        assert crawl(conn, b"lru_crawler metadump 50\r\n") == b"END\r\n"
        assert crawl(conn, b"lru_crawler metadump 1,,\r\n").startswith(b"key=a ")
        # last: memcached keeps this dump's client, and then fails every later metadump
        # ("ERROR an unknown error happened"); mcached does not copy that
        assert crawl(conn, b"lru_crawler metadump ,\r\n") == b"NOTSTARTED no items to crawl\r\n"


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_lru_crawler_crawl_runs_in_the_crawler(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """``lru_crawler crawl`` is handed to the crawler, and answered at once: the worker that
    read it serves on while the pass runs, and another crawl asked for meanwhile is BUSY.
    mcached crawled inside the worker before answering (every client of that worker waited;
    a crawl asked for while the crawler swept was dropped with an OK). The pass naps
    ``lru_crawler_sleep`` after every 1000 items, the setting read as it goes: 1 s here, then
    0 to let it end."""
    srv = server_factory(which, "-t", "4", "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        store_expired(conn, 3000)
        exchange(conn, b"lru_crawler sleep 1000000\r\n", b"OK\r\n")
        assert crawl(conn, b"lru_crawler crawl 1\r\n") == b"OK\r\n"
        deadline = time.monotonic() + 10
        while dict(stats(conn))["lru_crawler_running"] != "1":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        exchange(
            conn,
            b"lru_crawler crawl 1\r\nlru_crawler crawl all\r\nversion\r\n",
            b"BUSY currently processing crawler request\r\n" * 2 + b"VERSION 1.6.18\r\n",
        )
        exchange(conn, b"lru_crawler sleep 0\r\n", b"OK\r\n")
        deadline = time.monotonic() + 10
        while dict(stats(conn))["lru_crawler_running"] != "0":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        figures = dict(stats(conn))
        assert (figures["crawler_reclaimed"], figures["curr_items"]) == ("3000", "0")
        assert crawl(conn, b"lru_crawler crawl 1\r\n") == b"OK\r\n"


@pytest.mark.parametrize("which", ["mcached-procs", "memcached"])
def test_lru_crawler_crawl_all_checks_items_without_a_ttl_too(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """``lru_crawler crawl all`` checks every item, whether it may expire or not. Regression
    (a hunt): mcached passed over classes holding no item with a TTL, so crawler_items_checked
    stayed 0 over 1.3 million of them."""
    srv = server_factory(which, "-t", "4", "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        conn.send(b"".join(b"set k%d 0 0 10 noreply\r\n0123456789\r\n" % i for i in range(2000)))
        exchange(conn, b"", b"")
        before = int(dict(stats(conn))["crawler_items_checked"])
        assert crawl(conn, b"lru_crawler crawl all\r\n") == b"OK\r\n"
        deadline = time.monotonic() + 15
        while int((figures := dict(stats(conn)))["crawler_items_checked"]) < before + 2000:
            assert time.monotonic() < deadline, figures["crawler_items_checked"]
            time.sleep(0.05)
        assert figures["curr_items"] == "2000"


@pytest.mark.parametrize("which", ["mcached-procs", "memcached"])
def test_lru_crawler_tocrawl_bounds_a_crawl(
    which: str, server_factory: Callable[..., Server]
) -> None:
    """``lru_crawler crawl`` checks at most ``tocrawl`` items of a class (without the LRU
    maintainer memcached has one LRU a class, so the figure is exact on both)."""
    srv = server_factory(which, "-t", "4", "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        store_expired(conn, 500)
        exchange(conn, b"lru_crawler tocrawl 100\r\n", b"OK\r\n")
        for reclaimed in (100, 200):
            assert crawl(conn, b"lru_crawler crawl 1\r\n") == b"OK\r\n"
            deadline = time.monotonic() + 10  # memcached crawls in its own thread
            while True:
                items = dict(stats(conn, b"items"))
                if items["items:1:crawler_reclaimed"] == str(reclaimed):
                    break
                assert time.monotonic() < deadline, items
                time.sleep(0.05)
            assert items["items:1:number"] == str(500 - reclaimed)


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_stats_sizes_enable_and_disable(which: str, server_factory: Callable[..., Server]) -> None:
    """``stats sizes_enable`` turns the size histogram on at run time for the whole daemon,
    counting the items stored from then on; ``stats sizes_disable`` turns it off. Their
    replies have no END (memcached's get_stats groups end their own, these do not)."""
    srv = server_factory(which, "-t", "4")
    a, b = Conn(srv.address), Conn(srv.address)
    try:
        exchange(a, b"set a 0 0 1\r\nx\r\n", b"STORED\r\n")
        exchange(a, b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n")
        exchange(a, b"stats sizes_enable\r\n", b"STAT sizes_status enabled\r\n")
        exchange(b, b"set b 0 0 1\r\nx\r\n", b"STORED\r\n")
        exchange(b, b"stats sizes\r\n", b"STAT 64 1\r\nEND\r\n")  # not the one before
        assert dict(stats(b, b"settings"))["track_sizes"] == "yes"  # it follows the switch
        exchange(a, b"stats sizes_enable more\r\n", b"STAT sizes_status enabled\r\n")
        exchange(a, b"stats sizes\r\n", b"STAT 64 1\r\nEND\r\n")  # kept its start
        exchange(b, b"stats sizes_disable\r\n", b"STAT sizes_status disabled\r\n")
        exchange(a, b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n")
        settings = dict(stats(a, b"settings"))
        assert settings["track_sizes"] == "no"
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("which", ["mcached-procs", "memcached"])
def test_stats_sizes_enable_needs_cas(which: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(which, "-C")
    with Conn(srv.address) as conn:
        exchange(
            conn,
            b"stats sizes_enable\r\n",
            b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n",
        )
        exchange(conn, b"stats sizes\r\n", b"STAT sizes_status disabled\r\nEND\r\n")


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_memcdump_lists_every_key(which: str, server_factory: Callable[..., Server]) -> None:
    """libmemcached's ``memcdump`` (``stats items``, then ``stats cachedump`` per class)
    lists the keys of every class, from any worker process. memcached lists only items out
    of its HOT LRU, so it runs without the maintainer here (then every item is in COLD)."""
    binary = shutil.which("memcdump") or shutil.which("memdump")
    if binary is None:
        raise RuntimeError("memcdump is not installed (Debian: libmemcached-tools): make test")
    srv = server_factory(which, "-o", "no_lru_maintainer")
    keys = {f"k{i}:{'x' * (i % 7)}".encode(): b"v" * (10 * i) for i in range(40)}
    with Conn(srv.address) as conn:
        for key, value in keys.items():
            exchange(conn, b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value), b"STORED\r\n")
    proc = subprocess.run(
        [binary, "--servers", f"{srv.host}:{srv.port}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split()) == sorted(keys)


def test_dumps_not_allowed_under_X(kind: str, server_factory: Callable[..., Server]) -> None:
    srv = server_factory(kind, "-X")
    with Conn(srv.address) as conn:
        exchange(
            conn,
            b"stats cachedump 1 1\r\nlru_crawler metadump all\r\n",
            b"CLIENT_ERROR stats cachedump not allowed\r\nERROR metadump not allowed\r\n",
        )


def test_metadump_refuses_to_follow_other_commands(server: Server) -> None:
    """lru-crawler.t: memcached refuses a metadump behind replies of the same read still
    unsent (its resp_has_stack), and serves it alone."""
    roundtrip(
        server,
        b"mg foo v\r\nlru_crawler metadump all\r\nversion\r\nlru_crawler metadump all\r\n",
        b"EN\r\nERROR cannot pipeline other commands before metadump\r\nVERSION 1.6.18\r\n"
        b"ERROR cannot pipeline other commands before metadump\r\n",
    )
    with Conn(server.address) as conn:  # alone it is served (nothing may follow it: no probe)
        conn.send(b"lru_crawler metadump all\r\n")
        reply = conn.read_until(b"END\r\n")
    assert reply.endswith(b"END\r\n") and b"ERROR" not in reply


# What memcached has sent when a metadump or a watch arrives (its resp_has_stack): it
# transmits at once after a get, gets, gat, gats (served, not refused) or mn, and whenever
# it needs more bytes for a line; every other reply waits, a noreply's and a quiet miss's
# included. (bytes sent in one write before the command, the replies to them, whether
# memcached has sent them all by then.)
STACK_CASES = [
    (b"get foo\r\n", b"END\r\n", True),
    (b"gets foo bar\r\n", b"END\r\n", True),
    (b"gat 0 foo\r\n", b"END\r\n", True),
    (b"gats 0 foo\r\n", b"END\r\n", True),
    (b"mn\r\n", b"MN\r\n", True),
    (b"version\r\nget foo\r\n", b"VERSION 1.6.18\r\nEND\r\n", True),
    (b"get foo\r\nmn\r\n", b"END\r\nMN\r\n", True),
    (b"get foo\r\nversion\r\n", b"END\r\nVERSION 1.6.18\r\n", False),
    (b"mg foo v\r\n", b"EN\r\n", False),
    (b"mg foo v q\r\n", b"", False),
    (b"set stack 0 0 1 noreply\r\nx\r\n", b"", False),
    (b"delete foo\r\n", b"NOT_FOUND\r\n", False),
    (b"get " + b"k" * 251 + b"\r\n", b"CLIENT_ERROR bad command line format\r\n", False),
    (b"get\r\n", b"ERROR\r\n", False),
    (b"gat abc foo\r\n", b"CLIENT_ERROR invalid exptime argument\r\n", False),
]


def stack_checked(which: str) -> tuple[bytes, bytes]:
    """The metadump or watch line, and memcached's error refusing it behind held replies."""
    line = b"lru_crawler metadump all\r\n" if which == "metadump" else b"watch\r\n"
    return line, b"ERROR cannot pipeline other commands before %b\r\n" % which.encode()


@pytest.mark.parametrize(
    ("before", "replies", "sent"), STACK_CASES, ids=[repr(c[0])[2:40] for c in STACK_CASES]
)
@pytest.mark.parametrize("which", ["metadump", "watch"])
def test_metadump_and_watch_follow_only_replies_already_sent(
    emptied_server: Server, which: str, before: bytes, replies: bytes, sent: bool
) -> None:
    """Each case in one write with the command behind it: refused with memcached's error
    behind replies it still holds, served behind replies it has sent."""
    line, refused = stack_checked(which)
    with Conn(emptied_server.address) as conn:
        if not sent:
            exchange(conn, before + line, replies + refused)
            return
        conn.send(before + line)
        if which == "watch":
            assert conn.read_exact(len(replies) + 4) == replies + b"OK\r\n"
            return
        # served: the dump follows (nothing may follow it on the connection: no probe)
        assert conn.read_exact(len(replies)) == replies
        dump = conn.read_until(b"END\r\n")
        assert dump.endswith(b"END\r\n") and b"ERROR" not in dump, dump


@pytest.mark.parametrize("which", ["metadump", "watch"])
def test_under_R_memcached_transmits_after_R_plus_1_commands_then_every_R(
    kind: str, server_factory: Callable[..., Server], which: str
) -> None:
    """``-R 2``: behind 0..7 ``version`` lines in one write, a metadump or a watch finds
    replies held unless the last transmission (after commands 3, 5, 7) came right before it."""
    srv = server_factory(kind, "-R", "2")
    line, refused = stack_checked(which)
    for n in range(8):
        versions = b"VERSION 1.6.18\r\n" * n
        if n in (1, 2, 4, 6):
            with Conn(srv.address) as conn:
                exchange(conn, b"version\r\n" * n + line, versions + refused)
            continue
        served = b"OK\r\n" if which == "watch" else b"END\r\n"  # nothing stored
        for _ in range(50):
            with Conn(srv.address) as conn:
                conn.send(b"version\r\n" * n + line)
                assert conn.read_exact(len(versions)) == versions
                got = conn.read_until(b"\r\n")
            # memcached's crawler may still be ending the last dump (its thread's): again
            if got != b"BUSY currently processing crawler request\r\n":
                break
            time.sleep(0.1)
        assert got == served, n


@pytest.mark.parametrize(
    ("R", "pipeline", "yields"),
    [
        (2, b"get a\r\n" * 4, 1),  # memcached: (n - 1) // R after gets
        (2, b"get a\r\n" * 6, 2),
        (3, b"mn\r\n" * 6, 1),
        (20, b"get a\r\n" * 40, 1),
        (3, (b"set a 0 0 1\r\nx\r\nget a\r\n") * 3, 1),
        # (not a pipeline that ends on a set after a yield: memcached counted 2 or, on a
        # loaded machine, 1 for ``(get, set) * 3`` at -R 3 and for ``set * 4`` at -R 2)
    ],
)
def test_conn_yields_counts_as_memcached_at_a_turns_end(
    kind: str, server_factory: Callable[..., Server], R: int, pipeline: bytes, yields: int
) -> None:
    """Regression (a hunt at -t 4): a pipeline of gets (or mn) whose length is a multiple
    of -R counted one yield too many: memcached counts none when its turn ends on a command
    that sent its reply and nothing more is buffered."""
    srv = server_factory(kind, "-R", str(R))
    replies = pipeline.count(b"get") + pipeline.count(b"set") + pipeline.count(b"mn")
    with Conn(srv.address) as probe:
        before = int(dict(stats(probe))["conn_yields"])
        with Conn(srv.address) as conn:
            conn.send(pipeline)
            got = b""
            while sum(got.count(end) for end in (b"END\r\n", b"STORED\r\n", b"MN\r\n")) < replies:
                got += conn.read_until(b"\r\n")
        after = int(dict(stats(probe))["conn_yields"])
    assert after - before == yields


@pytest.mark.parametrize("which", ["metadump", "watch"])
def test_a_large_mg_value_still_waits_behind_a_metadump_or_watch(
    emptied_server: Server, which: str
) -> None:
    """An ``mg`` reply is held whatever its size (only gets and mn transmit), also when
    mcached sends a large value on its own before serving what follows it."""
    value = b"v" * 100_000
    line, refused = stack_checked(which)
    with Conn(emptied_server.address) as conn:
        exchange(conn, b"set big 0 0 %d\r\n%b\r\n" % (len(value), value), b"STORED\r\n")
        reply = b"VA %d\r\n%b\r\n" % (len(value), value)
        exchange(conn, b"mg big v\r\n" + line, reply + refused)


# --- stats detail (stats-detail.t) ------------------------------------------------------


def test_stats_reset_clears_stats_detail(server: Server) -> None:
    """memcached's stats_reset calls stats_prefix_clear."""
    roundtrip(
        server,
        b"stats detail on\r\nset foo:1 0 0 1\r\nx\r\nstats reset\r\nstats detail dump\r\n"
        b"get foo:1\r\nstats detail dump\r\nstats detail off\r\n",
        b"OK\r\nSTORED\r\nRESET\r\nEND\r\nVALUE foo:1 0 1\r\nx\r\nEND\r\n"
        b"PREFIX foo get 1 hit 1 set 0 del 0\r\nEND\r\nOK\r\n",
    )


def test_a_bad_data_chunk_counts_in_its_items_class(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """memcached allocates a set's item before it sees the data block's end, and counts the
    set in the item's class whatever follows: a bad data chunk too, so the classes' cmd_set
    add up to the daemon's. Regression: mcached left it out of the class (both a small value
    and one received into place)."""
    srv = server_factory(kind)
    with Conn(srv.address) as conn:
        for size in (1, 20_000):
            exchange(
                conn, b"set a%d 0 0 %d\r\n" % (size, size) + b"x" * size + b"\r\n", b"STORED\r\n"
            )
            exchange(
                conn,
                b"set b%d 0 0 %d\r\n" % (size, size) + b"x" * (size + 1) + b"\r\n",
                # (the block's last byte and line end, read as a command line: ERROR)
                b"CLIENT_ERROR bad data chunk\r\nERROR\r\n",
            )
        figures = dict(stats(conn))
        slabs = dict(stats(conn, b"slabs"))
    per_class = sorted(int(v) for k, v in slabs.items() if k.endswith(":cmd_set"))
    assert figures["cmd_set"] == "4" and per_class == [2, 2]


# --- stats conns (stats-conns.t) --------------------------------------------------------


@pytest.mark.parametrize("size", [6, 20_000], ids=["small", "received-into-place"])
def test_stats_conns_lists_udp_and_states(
    kind: str, server_factory: Callable[..., Server], size: int
) -> None:
    """A UDP socket is a `conn_read` connection per worker thread; a client part-way
    through a value is in `conn_nread` (a large one too, which mcached receives into place),
    the one asking in `conn_parse_cmd`; the listener has a `secs_since_last_cmd` row too."""
    udp = free_port(socket.SOCK_DGRAM)
    srv = server_factory(kind, "-U", str(udp))
    with Conn(srv.address) as writer, Conn(srv.address) as asker:
        writer.send(b"set foo 0 0 %d\r\n" % size + b"f" * (size // 2))
        time.sleep(0.2)
        asker.send(b"stats conns\r\n")
        text = asker.read_until(b"END\r\n").decode()
        writer.send(b"f" * (size - size // 2) + b"\r\n")
    groups = conn_groups(text)
    listener = [g for g in groups if g.get("state") == "conn_listening"]
    assert listener and all("secs_since_last_cmd" in g for g in listener)
    udp_groups = [g for g in groups if g.get("addr") == f"udp:127.0.0.1:{udp}"]
    assert udp_groups
    assert all(g["UDP"] == "UDP" and g["state"] == "conn_read" for g in udp_groups)
    states = sorted(g["state"] for g in groups if "listen_addr" in g)
    assert states == ["conn_nread", "conn_parse_cmd"]


def test_stats_conns_names_a_blocked_reply_and_a_swallow_as_memcached(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A reply the client does not read is `conn_mwrite`; a refused value being skipped
    `conn_swallow` (mcached said conn_write_blocked and conn_nread)."""
    srv = server_factory(kind)
    with Conn(srv.address) as setter:
        assert setter.request(b"set big 0 0 900000\r\n" + b"x" * 900000 + b"\r\n") == (
            b"STORED\r\n"
        )
    blocked = socket.socket()
    blocked.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    blocked.connect(srv.address)
    with blocked, Conn(srv.address) as swallower, Conn(srv.address) as asker:
        blocked.sendall(b"get" + b" big" * 10 + b"\r\n")  # ~9 MB never read
        swallower.send(b"set k 0 0 2000000\r\n" + b"x" * 1000)  # over -I: swallowed
        time.sleep(0.5)
        asker.send(b"stats conns\r\n")
        groups = conn_groups(asker.read_until(b"END\r\n").decode())
        by_port = {g["addr"].rsplit(":", 1)[1]: g["state"] for g in groups if "listen_addr" in g}
        assert by_port[str(blocked.getsockname()[1])] == "conn_mwrite"
        assert by_port[str(swallower.sock.getsockname()[1])] == "conn_swallow"


def test_stats_conns_names_a_connection_that_sent_nothing_as_memcached(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """A connection that has sent nothing yet is in `conn_new_cmd` (memcached's state for a
    new connection until its first read); one part-way through a line, or idle after a
    command, in `conn_read`. Regression: mcached said conn_read for the first."""
    srv = server_factory(kind)
    with (
        Conn(srv.address) as fresh,
        Conn(srv.address) as partial,
        Conn(srv.address) as served,
        Conn(srv.address) as asker,
    ):
        partial.send(b"get fo")
        assert served.request(b"version\r\n", expect_len=16) == b"VERSION 1.6.18\r\n"
        time.sleep(0.3)
        asker.send(b"stats conns\r\n")
        groups = conn_groups(asker.read_until(b"END\r\n").decode())
        by_port = {g["addr"].rsplit(":", 1)[1]: g["state"] for g in groups if "listen_addr" in g}
        port = {c: str(c.sock.getsockname()[1]) for c in (fresh, partial, served)}
        assert by_port[port[fresh]] == "conn_new_cmd"
        assert by_port[port[partial]] == "conn_read"
        assert by_port[port[served]] == "conn_read"


# --- gat with a past exptime and a repeated key (the issue) -----------------------------


def test_gat_with_a_past_exptime_expires_the_item_for_the_next_key(server: Server) -> None:
    """The touch makes the item expire at once, so the key's next lookup on the line misses
    (-1, or 2592001: an absolute time in 1970); a future exptime serves every repeat."""
    roundtrip(
        server,
        b"set k 0 0 1\r\n1\r\ngat -1 k k k\r\nset j 0 0 1\r\n2\r\ngat 2592001 j j\r\n"
        b"set f 0 0 1\r\n3\r\ngat 100 f f\r\nget f\r\n",
        b"STORED\r\nVALUE k 0 1\r\n1\r\nEND\r\nSTORED\r\nVALUE j 0 1\r\n2\r\nEND\r\n"
        b"STORED\r\nVALUE f 0 1\r\n3\r\nVALUE f 0 1\r\n3\r\nEND\r\nVALUE f 0 1\r\n3\r\nEND\r\n",
    )
    with Conn(server.address) as conn:
        conn.send(b"set g 0 0 1\r\n4\r\ngats -1 g x g\r\n")
        reply = conn.read_until(b"END\r\n")
        assert re.fullmatch(rb"STORED\r\nVALUE g 0 1 \d+\r\n4\r\nEND\r\n", reply)
        rows = dict(stats(conn))
    # every key of the four gat/gats lines is a touch: 3+2+2+3, hits 1+1+2+1, misses 2+1+0+2
    assert (rows["cmd_touch"], rows["touch_hits"], rows["touch_misses"]) == ("10", "5", "5")


# --- numbers with trailing whitespace (the issue's `\r\r\n`) ----------------------------


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"set k 0 0 5\r\r\nhello\r\r\n", b"CLIENT_ERROR bad data chunk\r\nERROR\r\n"),
        (b"set n 0 0 1\r\n1\r\nincr n 1\r\r\n", b"STORED\r\n2\r\n"),
        (b"set n 0 0 1\r\n1\r\ntouch n 10\r\r\n", b"STORED\r\nTOUCHED\r\n"),
        (b"set n 0 0 1\r\n1\r\ngat 10\r n\r\n", b"STORED\r\nVALUE n 0 1\r\n1\r\nEND\r\n"),
        (b"verbosity 0\r\r\n", b"OK\r\n"),
        (b"set n 0 5\t 1\r\n1\r\n", b"STORED\r\n"),
    ],
    ids=["bad-data-chunk", "incr", "touch", "gat", "verbosity", "set-exptime-tab"],
)
def test_numbers_may_end_in_whitespace(server: Server, request_bytes: bytes, reply: bytes) -> None:
    """memcached keeps a second `\\r` in the line and reads numbers with safe_strtol, which
    stops at any isspace character: `5\\r` is 5."""
    roundtrip(server, request_bytes, reply)


# --- unix domain sockets (unixsocket.t, stats-conns.t) ------------------------------------


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_unix_socket(which: str, server_factory: Callable[..., Server]) -> None:
    """``-s PATH -a MASK``: the socket file has the mask's permissions, serves instead of
    TCP (every worker process accepts on it), and ``stats conns`` and ``stats settings``
    name it as memcached does (a unix client has no address: ``?:<AF 0>``)."""
    # a short path: memcached's stats conns cuts a listener's path at 26 bytes (it asks
    # getsockname for a sockaddr_in6's worth), a quirk mcached does not copy
    short = tempfile.mkdtemp(prefix="mc", dir="/tmp")
    path = os.path.join(short, "s")
    server_factory(which, "-s", path, "-a", "0766", "-t", "2")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o766
    with Conn(path) as writer, Conn(path) as asker:
        exchange(asker, b"set foo 0 0 6\r\nfooval\r\n", b"STORED\r\n")
        exchange(asker, b"get foo\r\n", b"VALUE foo 0 6\r\nfooval\r\nEND\r\n")
        writer.send(b"set bar 0 0 6\r\n")
        time.sleep(0.2)
        asker.send(b"stats conns\r\n")
        text = asker.read_until(b"END\r\n").decode()
        writer.send(b"barval\r\n")
        assert writer.read_until(b"STORED\r\n") == b"STORED\r\n"
        settings = dict(stats(asker, b"settings"))
    groups = conn_groups(text)
    assert [g["addr"] for g in groups if g["state"] == "conn_listening"] == [f"unix:{path}"]
    clients = [g for g in groups if "listen_addr" in g]
    assert {g["addr"] for g in clients} == {"?:<AF 0>"}
    assert {g["listen_addr"] for g in clients} == {f"unix:{path}"}
    assert sorted(g["state"] for g in clients) == ["conn_nread", "conn_parse_cmd"]
    assert (settings["domain_socket"], settings["umask"]) == (path, "766")
    # with the unix socket there is no TCP listener (memcached: "disables network support")
    assert not any(g["addr"].startswith("tcp") for g in groups)
    shutil.rmtree(short, ignore_errors=True)


def test_unix_socket_file_goes_with_the_daemon(mcached_unix: tuple[Server, str]) -> None:
    """mcached removes the socket file it made when it stops (memcached leaves it; both
    replace one left behind at start)."""
    srv, path = mcached_unix
    assert os.path.exists(path)
    srv.handle.stop()
    assert not os.path.exists(path)


@pytest.fixture
def mcached_unix(server_factory: Callable[..., Server]) -> Iterator[tuple[Server, str]]:
    short = tempfile.mkdtemp(prefix="mc", dir="/tmp")
    path = os.path.join(short, "s")
    yield server_factory("mcached", "-s", path), path
    shutil.rmtree(short, ignore_errors=True)


# --- expired and flushed items' memory reused (issue_14.t, issue_163.t, issue_183.t, lru.t) --


@pytest.mark.parametrize(
    "first",
    [b"set k 0 -1 1\r\n1\r\n", b"set k 0 0 1\r\n1\r\nflush_all\r\n"],
    ids=["expired", "flushed"],
)
def test_a_store_reuses_a_dead_items_memory_as_reclaimed(
    kind: str, server_factory: Callable[..., Server], first: bytes
) -> None:
    """issue_163/issue_183: the memory of the key's expired (or flushed) item goes to the new
    one and counts as reclaimed, not as a get. Under no_modern memcached pulls it off the LRU
    tail as it allocates; with its maintainer that happens in the background, a second or
    so later (so there a store right away counts get_expired instead)."""
    srv = server_factory(kind, "-o", "no_modern")
    with Conn(srv.address) as conn:
        conn.send(first + b"set k 0 0 1\r\n2\r\nget k\r\n")
        assert conn.read_until(b"END\r\n").endswith(b"STORED\r\nVALUE k 0 1\r\n2\r\nEND\r\n")
        rows = dict(stats(conn))
    assert (rows["reclaimed"], rows["get_expired"], rows["get_flushed"]) == ("1", "0", "0")
    assert rows["curr_items"] == "1"


def test_a_read_right_after_a_store_does_not_protect_an_item(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """lru.t: read once after its store, an item is still the first to go (memcached bumps
    an item only when it is fetched again: do_item_bump), then the oldest ones."""
    srv = server_factory(kind, "-m", "8", "-o", "no_modern")
    big = b"x" * (1024 * 1024 - 250)
    with Conn(srv.address) as conn:
        exchange(conn, b"set big 0 0 %d\r\n%b\r\n" % (len(big), big), b"STORED\r\n")
        conn.send(b"get big\r\n")
        assert conn.read_until(b"END\r\n").startswith(b"VALUE big")
        for i in range(20):
            exchange(conn, b"set item_%d 0 0 %d\r\n%b\r\n" % (i, len(big), big), b"STORED\r\n")
        gone = []
        for key in [b"big"] + [b"item_%d" % i for i in range(20)]:
            conn.send(b"get %b\r\n" % key)
            if conn.read_until(b"END\r\n") == b"END\r\n":
                gone.append(key.decode())
        evictions = dict(stats(conn))["evictions"]
    assert gone == ["big"] + [f"item_{i}" for i in range(12)]
    assert evictions == "13"


# --- a class's first page past -m (binary.t) ---------------------------------------------


def test_binary_t_a_new_size_is_stored_after_large_items_fill_memory(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """binary.t died here: once ~600 KB items had taken every page of -m (no_modern: no page
    moves), a 2 KB item got SERVER_ERROR out of memory. memcached's do_slabs_newslab refuses a
    page at the limit only to a class that has one: a class's first page may exceed -m."""
    srv = server_factory(kind, "-m", "8", "-o", "no_modern")
    big = b"b" * (600 * 1024)
    small = b"s" * 2000
    with Conn(srv.address) as conn:
        for i in range(16):  # more than fit: the last ones evict the first
            exchange(conn, b"set big%d 0 0 %d\r\n%b\r\n" % (i, len(big), big), b"STORED\r\n")
        exchange(conn, b"set small 0 0 2000\r\n%b\r\n" % small, b"STORED\r\n")
        conn.send(b"get small big15\r\n")
        assert conn.read_until(b"END\r\n") == (
            b"VALUE small 0 2000\r\n%b\r\nVALUE big15 0 %d\r\n%b\r\nEND\r\n"
            % (small, len(big), big)
        )
        slabs = dict(stats(conn, b"slabs"))
        rows = dict(stats(conn))
    small_class = next(
        k.split(":")[0]
        for k, v in slabs.items()
        if k.endswith(":chunk_size") and 2000 < int(v) < 4000
    )
    assert slabs[f"{small_class}:total_pages"] == "1"
    # the small class's page is past the limit (memcached: 13 pages of one 613 KB chunk
    # each under no_modern, then 1 MB; mcached: 8 pages of 1 MB, then one)
    assert int(slabs["total_malloced"]) > int(rows["limit_maxbytes"]) == 8 * 1024 * 1024
    assert int(rows["evictions"]) > 0


# --- lru_crawler enable|disable (lru-crawler.t) -------------------------------------------


@pytest.mark.parametrize("which", ["mcached", "mcached-procs", "memcached"])
def test_lru_crawler_enable_and_disable(which: str, server_factory: Callable[..., Server]) -> None:
    """Off (-o no_lru_crawler), crawl and metadump are refused; enable turns the crawler on
    in every worker (again: an error), disable off (again: OK); stats settings follows."""
    srv = server_factory(which, "-o", "no_lru_crawler", "-t", "2")

    def crawler(conn: Conn) -> str:
        return dict(stats(conn, b"settings"))["lru_crawler"]

    with Conn(srv.address) as a, Conn(srv.address) as b:
        exchange(
            a,
            b"lru_crawler crawl all\r\nlru_crawler metadump all\r\n",
            b"CLIENT_ERROR lru crawler disabled\r\nCLIENT_ERROR lru crawler disabled\r\n",
        )
        assert crawler(a) == "no"
        exchange(a, b"lru_crawler enable\r\n", b"OK\r\n")
        exchange(b, b"lru_crawler enable\r\n", b"ERROR failed to start lru crawler thread\r\n")
        assert crawler(b) == "yes"
        b.send(b"lru_crawler crawl all\r\n")  # memcached may be busy with its first crawl
        assert b.read_until(b"\r\n") in (
            b"OK\r\n",
            b"BUSY currently processing crawler request\r\n",
        )
        exchange(b, b"lru_crawler disable\r\nlru_crawler disable\r\n", b"OK\r\nOK\r\n")
        deadline = time.monotonic() + 5
        while crawler(a) != "no":  # memcached: once its crawler thread has stopped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        exchange(a, b"lru_crawler crawl all\r\n", b"CLIENT_ERROR lru crawler disabled\r\n")
