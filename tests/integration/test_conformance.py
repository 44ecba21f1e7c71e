"""Divergences memcached's own test suite found, one test each, in exact bytes, on both servers.

``tests/memcached_suite/TRIAGE.md`` gives each one's root cause and the module its fix
belongs in. Every test runs against memcached (where it passes: the expectation is
memcached's) and against mcached; `diverges` marks the mcached run ``xfail(strict=True)``
with its TRIAGE.md section while mcached still differs, so the fix that closes one has to
remove the mark in the same change.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable

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
    request: pytest.FixtureRequest, kind: str, server_factory: Callable[..., Server]
) -> None:
    """``-o slab_automove`` alone (slabs-reassign2.t) means slab_automove=1 to memcached."""
    diverges(request, kind, "Beyond issue 12's list")
    srv = server_factory(kind, "-o", "slab_automove")
    with Conn(srv.address) as conn:
        assert dict(stats(conn, b"settings"))["slab_automove"] == "1"


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
    "lru_maintainer": {"lru_maintainer_juggles"},
    "lru_segmented": {
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
            {"idle_timeout", "lru_crawler", "lru_maintainer", "lru_segmented"},
        ),
        (
            ("-o", "no_modern"),
            {
                "idle_timeout",
                "maxconns_fast",
                "slab_reassign",
                "lru_crawler",
                "lru_maintainer",
                "lru_segmented",
            },
        ),
    ],
    ids=["default", "idle_timeout", "no_maxconns_fast", "no_slab_reassign", "stats.t", "no_modern"],
)
def test_stats_has_memcached_rows(
    request: pytest.FixtureRequest,
    kind: str,
    server_factory: Callable[..., Server],
    flags: tuple[str, ...],
    off: set[str],
) -> None:
    """Every row memcached prints, in its order, and the conditional ones only when on:
    pymemcache, memcached_exporter and stats.t (which counts them) read them."""
    diverges(request, kind, "stats.t")
    srv = server_factory(kind, *flags)
    hidden = set().union(*(ONLY_WITH[name] for name in off))
    with Conn(srv.address) as conn:
        names = [name for name, _ in stats(conn)]
    assert names == [n for n in GENERAL_ROWS if n not in hidden]


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


def test_stats_settings_has_memcached_rows(
    request: pytest.FixtureRequest, kind: str, server: Server
) -> None:
    diverges(request, kind, "stats.t")
    with Conn(server.address) as conn:
        rows = stats(conn, b"settings")
    assert [name for name, _ in rows] == SETTINGS_ROWS
    settings = dict(rows)
    assert (settings["domain_socket"], settings["auth_enabled_sasl"]) == ("NULL", "no")


# --- stats cachedump (stats.t; libmemcached's memcdump) ---------------------------------


def test_stats_cachedump(
    request: pytest.FixtureRequest, kind: str, server_factory: Callable[..., Server]
) -> None:
    """``ITEM <key> [<bytes> b; <absolute exptime or 0> s]`` for a class, newest first.
    Without the LRU maintainer every item is in memcached's COLD LRU, which it walks."""
    diverges(request, kind, "stats.t")
    srv = server_factory(kind, "-o", "no_lru_maintainer")
    with Conn(srv.address) as conn:
        exchange(conn, b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n")
        now = int(time.time())
        exchange(conn, b"set bar 0 100 2\r\nxy\r\n", b"STORED\r\n")
        conn.send(b"stats cachedump 1 100\r\n")
        dump = conn.read_until(b"END\r\n")
        m = re.fullmatch(rb"ITEM bar \[2 b; (\d+) s\]\r\nITEM foo \[3 b; 0 s\]\r\nEND\r\n", dump)
        assert m, dump
        assert abs(int(m.group(1)) - (now + 100)) <= 2
        conn.send(b"stats cachedump 1 1\r\n")
        assert re.fullmatch(rb"ITEM bar \[2 b; \d+ s\]\r\nEND\r\n", conn.read_until(b"END\r\n"))
        exchange(
            conn,
            b"stats cachedump 2 0\r\nstats cachedump 64 1\r\nstats cachedump -1 1\r\n"
            b"stats cachedump 1\r\n",
            b"END\r\nCLIENT_ERROR Illegal slab id\r\nCLIENT_ERROR bad command line format\r\n"
            b"CLIENT_ERROR bad command line\r\n",
        )


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


# --- stats conns (stats-conns.t) --------------------------------------------------------


def test_stats_conns_lists_udp_and_states(
    request: pytest.FixtureRequest, kind: str, server_factory: Callable[..., Server]
) -> None:
    """A UDP socket is a `conn_read` connection per worker thread; a client part-way
    through a value is in `conn_nread`, the one asking in `conn_parse_cmd`; the listener
    has a `secs_since_last_cmd` row too."""
    diverges(request, kind, "stats-conns.t")
    udp = free_port(socket.SOCK_DGRAM)
    srv = server_factory(kind, "-U", str(udp))
    with Conn(srv.address) as writer, Conn(srv.address) as asker:
        writer.send(b"set foo 0 0 6\r\n")
        time.sleep(0.2)
        asker.send(b"stats conns\r\n")
        text = asker.read_until(b"END\r\n").decode()
        writer.send(b"fooval\r\n")
    rows: dict[str, dict[str, str]] = {}
    for fd, name, value in re.findall(r"STAT (\d+):(\S+) (.*)\r\n", text):
        rows.setdefault(fd, {})[name] = value
    groups = list(rows.values())
    listener = [g for g in groups if g.get("state") == "conn_listening"]
    assert listener and all("secs_since_last_cmd" in g for g in listener)
    udp_groups = [g for g in groups if g.get("addr") == f"udp:127.0.0.1:{udp}"]
    assert udp_groups
    assert all(g["UDP"] == "UDP" and g["state"] == "conn_read" for g in udp_groups)
    states = sorted(g["state"] for g in groups if "listen_addr" in g)
    assert states == ["conn_nread", "conn_parse_cmd"]


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
