"""Settings declared once: each field's own parse, bounds and stat format, and the command
line, ``-o``, ``--help`` and ``stats settings`` generated from them with no per-name branch.
In process (`parse_settings`); tests/integration/test_lifecycle.py runs the real command."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
from pathlib import Path

import click
import pytest

from mcached import cli, settings
from mcached.cli import parse_settings
from mcached.settings import (
    KB,
    MB,
    OPTIONS,
    STATS_SETTINGS_ORDER,
    Settings,
    SettingsError,
    stats_settings,
)

pytestmark = pytest.mark.unit

FIELDS = {f.name for f in dataclasses.fields(Settings)}


def names_in(tree: ast.AST) -> list[str]:
    """String constants in `tree` that name a setting."""
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in FIELDS
    ]


def test_cli_names_no_setting() -> None:
    tree = ast.parse(Path(cli.__file__).read_text())
    assert names_in(tree) == []


@pytest.mark.parametrize(
    "function",
    [
        settings.convert,
        settings.apply_extended,
        settings.validate,
        settings.stats_settings,
        settings._option,
    ],
)
def test_the_generic_machinery_names_no_setting(function: object) -> None:
    tree = ast.parse(inspect.getsource(function))  # type: ignore[arg-type]
    assert names_in(tree) == []


def test_every_option_is_declared_whole() -> None:
    stats = [o.stat for o in OPTIONS.values() if o.stat]
    assert len(stats) == len(set(stats))
    for o in OPTIONS.values():
        assert callable(o.parse) and callable(o.show) and all(map(callable, o.checks))
        if o.extended:
            assert o.flag is None and o.long is None, o.name
        if o.flag or o.long or o.extended:
            assert o.help, o.name


def settle(argv: list[str]) -> Settings | tuple[str, int]:
    try:
        return parse_settings(argv)
    except SettingsError as exc:
        return str(exc), exc.code


VALUES = [
    (["-m", "64m"], "memory_limit", 64 * MB),
    (["-m", "8"], "memory_limit", 8 * MB),
    (["-M"], "evictions", False),
    (["-C"], "cas_enabled", False),
    (["-F"], "flush_enabled", False),
    (["-W"], "watch_enabled", False),
    (["--disable-watch"], "watch_enabled", False),
    (["-A"], "shutdown_command", True),
    (["-vv"], "verbose", 2),
    (["-I", "2m"], "item_size_max", 2 * MB),
    (["-I", "512k"], "item_size_max", 512 * 1024),
    (["-f", "1.5"], "growth_factor", 1.5),
    (["-l", "a,b", "-l", " c "], "listen", ("a", "b", "c")),
    (["-l", "a;b,c"], "listen", ("a", "b", "c")),  # memcached splits on both
    (["-D", "#"], "detail_enabled", True),  # -D turns prefix stats on
    (["--stall-timeout", "0"], "stall_timeout", 0.0),
    (["-o", "no_lru_crawler,idle_timeout=5"], "lru_crawler", False),
    (["-o", "idle_timeout=5"], "idle_timeout", 5),
    (["-o", "ssl_verify_mode=2"], "ssl_verify_mode", 2),
    (["-o", "ssl_session_cache=whatever"], "ssl_session_cache", True),  # memcached ignores it
    (["-o", "ssl_chain_cert=a.pem"], "ssl_chain_cert", "a.pem"),
    # issue 12: bytes, as memcached 1.6.18 reads it (kilobytes before)
    (["-o", "slab_chunk_max=16384"], "slab_chunk_max", 16384),
    (["-I", "1024", "-o", "slab_chunk_max=1024"], "slab_chunk_max", 1024),
    # memcached: -U without -p listens for TCP on the UDP port too
    (["-U", "12345"], "port", 12345),
    (["-U", "12345", "-p", "11300"], "port", 11300),
    (["-U", "0"], "port", 11211),
]


@pytest.mark.parametrize("argv,name,value", VALUES)
def test_values(argv: list[str], name: str, value: object) -> None:
    s = settle(argv)
    assert isinstance(s, Settings), s
    assert getattr(s, name) == value


ERRORS = [
    (["-p", "70000"], "ERROR: Invalid port number 70000.", 64),
    # memcached reads -m -c -t -n -R with atoi: text is 0, refused in its words
    (["-m", "x"], "Cannot set item size limit higher than 1/2 of memory max.", 64),
    (["-m", "1g"], "Cannot set item size limit higher than 1/2 of memory max.", 64),
    (["-c", "x"], "Maximum connections must be greater than 0", 1),
    (["-t", "x"], "Number of threads must be greater than 0", 1),
    (["-n", "x"], "Chunk size must be greater than 0", 1),
    (["-R", "x"], "Number of requests per event must be greater than 0", 1),
    (["-c", "0"], "Maximum connections must be greater than 0", 1),
    (["-t", "0"], "Number of threads must be greater than 0", 1),
    (["-t", "65"], "Number of threads must be 64 or fewer", 1),
    (["-f", "x"], "Factor must be greater than 1", 1),
    (["-f", "1"], "Factor must be greater than 1", 1),
    (["-f", "inf"], "Factor must be greater than 1", 1),
    (["-n", "0"], "Chunk size must be greater than 0", 1),
    (["-R", "0"], "Number of requests per event must be greater than 0", 1),
    (
        ["-B", "foo"],
        "Invalid value for binding protocol: foo\n -- should be one of auto, binary, or ascii",
        64,
    ),
    (["-I", "x"], "Item max size cannot be less than 1024 bytes.", 64),
    (["-I", "512"], "Item max size cannot be less than 1024 bytes.", 64),
    (["-I", "1025m"], "Cannot set item size limit higher than 1/2 of memory max.", 64),
    (["-m", "4096", "-I", "1025m"], "Cannot set item size limit higher than a gigabyte.", 64),
    (
        ["-m", "99999999"],
        "Cannot set memory limit higher than 1048576 megabytes (1 terabyte): mcached's item "
        "addresses hold 20 bits of page number",
        64,
    ),
    (["-m", "1", "-I", "1m"], "Cannot set item size limit higher than 1/2 of memory max.", 64),
    (["-D", ""], "No delimiter specified", 1),
    (["-l", ","], "-l needs at least one interface", 64),
    (["-l", "notls:127.0.0.1:5"], "'notls' option is valid only when SSL is enabled", 71),
    # a listener's proto[...] is held to -B's rule: memcached serves such a listener with no
    # authentication at all
    (
        ["-S", "-l", "127.0.0.1,proto[ascii]:127.0.0.1:5"],
        "ERROR: You cannot allow the ASCII protocol while using SASL.",
        64,
    ),
    (
        ["-S", "-l", "proto[negotiating]:127.0.0.1:5"],
        "ERROR: You cannot allow the ASCII protocol while using SASL.",
        64,
    ),
    (
        ["-Y", "f", "-U", "0", "-l", "proto[binary]:127.0.0.1:5"],
        "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.",
        64,
    ),
    (
        ["-Y", "f", "-U", "5"],
        "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
        64,
    ),
    (["--stall-timeout", "-1"], "--stall-timeout must be 0 (off) or a number of seconds", 64),
    (["--shutdown-timeout", "x"], "Invalid value for --shutdown-timeout: 'x' (a number)", 64),
    (
        ["--shutdown-timeout", "-1"],
        "--shutdown-timeout must be 0 (exit at once) or a number of seconds",
        64,
    ),
    (
        ["--shutdown-timeout", "inf"],
        "--shutdown-timeout must be 0 (exit at once) or a number of seconds",
        64,
    ),
    (["--cluster-dns", "svc"], "--cluster-dns wants name:port, got 'svc'", 64),
    (
        ["--cluster-dns-interval", "0"],
        "--cluster-dns-interval must be a positive number of seconds",
        64,
    ),
    (
        ["--cluster-file", "f", "--cluster-dns", "s:1"],
        "--cluster-file and --cluster-dns exclude each other: pick one source of membership",
        64,
    ),
    (["-o", "bogus"], 'Illegal suboption "bogus"', 1),
    (["-o", "bogus=1"], 'Illegal suboption "bogus=1"', 1),  # the piece as given
    (["-o", "idle_timeout=5,,track_sizes"], 'Illegal suboption ""', 1),
    # no_ only where memcached has it
    (["-o", "no_track_sizes"], 'Illegal suboption "no_track_sizes"', 1),
    (["-o", "no_idle_timeout=3"], 'Illegal suboption "no_idle_timeout=3"', 1),
    (["-o", "inline_ascii_response"], 'Illegal suboption "inline_ascii_response"', 1),
    (["-o", "idle_timeout"], "Missing numeric argument for idle_timeout", 1),
    (["-o", "idle_timeout=-1"], "idle_timeout must be 0 or more", 1),
    (["-o", "slab_automove=3"], "slab_automove must be between 0 and 2", 1),
    (["-o", "read_buf_mem_limit"], "Missing read_buf_mem_limit argument", 1),
    (["-o", "read_buf_mem_limit=x"], "could not parse argument to read_buf_mem_limit", 1),
    (["-o", "read_buf_mem_limit=-1"], "could not parse argument to read_buf_mem_limit", 1),
    # the start-up options of the run-time tunables (lru tune, slabs automove ratio)
    (["-o", "hot_lru_pct"], "Missing hot_lru_pct argument", 1),
    (["-o", "hot_lru_pct=x"], "hot_lru_pct must be > 1 and < 80", 1),
    (["-o", "hot_lru_pct=80"], "hot_lru_pct must be > 1 and < 80", 1),
    (["-o", "warm_lru_pct=0"], "warm_lru_pct must be > 1 and < 80", 1),
    (["-o", "hot_lru_pct=79"], "hot_lru_pct + warm_lru_pct cannot be more than 80% combined", 64),
    (["-o", "hot_max_factor"], "Missing hot_max_factor argument", 1),
    (["-o", "hot_max_factor=x"], "hot_max_factor must be > 0", 1),
    (["-o", "warm_max_factor=-1"], "warm_max_factor must be > 0", 1),
    (["-o", "temporary_ttl"], "Missing temporary_ttl argument", 1),
    (
        ["-o", "temporary_ttl=100,no_lru_maintainer"],
        "temporary_ttl requires lru_maintainer to be enabled",
        64,
    ),
    (["-o", "slab_automove_ratio"], "Missing slab_automove_ratio argument", 1),
    (["-o", "slab_automove_ratio=0"], "slab_automove_ratio must be > 0 and < 1", 1),
    (["-o", "slab_automove_ratio=1.5"], "slab_automove_ratio must be > 0 and < 1", 1),
    (["-o", "slab_automove_window"], "Missing slab_automove_window argument", 1),
    (["-o", "slab_automove_window=2"], "slab_automove_window must be > 2", 1),
    # memcached's tuning of machinery mcached does without: its checks and words
    (["-o", "hashpower"], "Missing numeric argument for hashpower", 1),
    (["-o", "hashpower=5"], "Initial hashtable multiplier of 5 is too low", 1),
    (
        ["-o", "hashpower=40"],
        "Initial hashtable multiplier of 40 is too high\n"
        'Choose a value based on "STAT hash_power_level" from a running instance',
        1,
    ),
    (["-o", "tail_repair_time"], "Missing numeric argument for tail_repair_time", 1),
    (["-o", "tail_repair_time=5"], "Cannot set tail_repair_time to less than 10 seconds", 1),
    (["-o", "hash_algorithm"], "Missing hash_algorithm argument", 1),
    (["-o", "hash_algorithm=foo"], "Unknown hash_algorithm option (jenkins, murmur3, xxh3)", 1),
    (["-o", "watcher_logbuf_size"], "Missing watcher_logbuf_size argument", 1),
    (["-o", "worker_logbuf_size=x"], "could not parse argument to worker_logbuf_size", 1),
    (["-o", "ext_item_size"], "Missing ext_item_size argument", 1),
    (["-o", "ext_max_frag=x"], "could not parse argument to ext_max_frag", 1),
    (["-o", "ssl_wbuf_size=x"], "could not parse argument to ssl_wbuf_size", 1),
    (["-o", "ssl_keyformat"], "Missing ssl_keyformat argument", 1),
    (["-o", "ssl_key"], "Missing ssl_key argument", 1),
    (["-o", "ssl_verify_mode=x"], "could not parse argument to ssl_verify_mode", 1),
    (["-o", "ssl_verify_mode=5"], "Invalid ssl_verify_mode. Use help to see valid options.", 1),
    (["-o", "ssl_min_version=4"], "Invalid ssl_min_version. Use help to see valid options.", 1),
    # the LRU crawler's tuning, in memcached's words (sleep: atoi; tocrawl: safe_strtoul)
    (["-o", "lru_crawler_sleep"], "Missing lru_crawler_sleep value", 1),
    (["-o", "lru_crawler_sleep=1000001"], "LRU crawler sleep must be between 0 and 1 second", 1),
    (["-o", "lru_crawler_sleep=-1"], "LRU crawler sleep must be between 0 and 1 second", 1),
    (["-o", "lru_crawler_tocrawl"], "Missing lru_crawler_tocrawl value", 1),
    (["-o", "lru_crawler_tocrawl=x"], "lru_crawler_tocrawl takes a numeric 32bit value", 1),
    (["-o", "lru_crawler_tocrawl=-1"], "lru_crawler_tocrawl takes a numeric 32bit value", 1),
    (
        ["-o", "lru_crawler_tocrawl=18446744073709551616"],
        "lru_crawler_tocrawl takes a numeric 32bit value",
        1,
    ),
    # issue 12: memcached's words for slab_chunk_max (it crashes on the first two)
    (["-o", "slab_chunk_max"], "Missing slab_chunk_max argument", 1),
    (["-o", "slab_chunk_max=16k"], "could not parse argument to slab_chunk_max", 1),
    (["-o", "slab_chunk_max=0"], "slab_chunk_max cannot be less than 1024 bytes.", 64),
    (
        ["-o", "slab_chunk_max=2097152"],
        "slab_chunk_max (bytes: 2097152) cannot be larger than -I (item_size_max 1048576)",
        64,
    ),
    (
        ["-o", "slab_chunk_max=3000"],
        "-I (item_size_max: 1048576) must be evenly divisible by slab_chunk_max (bytes: 3000)",
        64,
    ),
    (
        ["-I", "2m", "-o", "slab_chunk_max=2097152"],
        "slab_chunk_max (bytes: 2097152) must divide evenly into 1048576 (slab_page_size)",
        64,
    ),
]


@pytest.mark.parametrize("argv,message,code", ERRORS)
def test_errors_are_memcacheds(argv: list[str], message: str, code: int) -> None:
    assert settle(argv) == (message, code)


def test_ignored_memcached_options_warn(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(settle(["-o", "ext_path=/tmp/x:1G,hashpower=20,hot_lru_pct=30"]), Settings)
    err = capsys.readouterr().err
    assert err == "warning: -o ext_path: memcached-internal option, accepted and ignored\n"


def test_resp_obj_mem_limit_says_what_memcached_says(capsys: pytest.CaptureFixture[str]) -> None:
    assert isinstance(settle(["-o", "resp_obj_mem_limit=5"]), Settings)
    err = capsys.readouterr().err
    assert err == "DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,\n"


# start-up -o options and the stats settings rows they set, as memcached 1.6.18 shows them
# (each measured on memcached 1.6.18: before, hot_lru_pct and the others were accepted and
# ignored, and stats settings showed the defaults)
STARTUP_ROWS = [
    ("hot_lru_pct=30", {"hot_lru_pct": "30"}),
    ("hot_lru_pct=1", {"hot_lru_pct": "1"}),
    ("hot_lru_pct=10,hot_lru_pct=7", {"hot_lru_pct": "7"}),  # repeated: the last one
    ("warm_lru_pct=50", {"warm_lru_pct": "50"}),
    ("hot_max_factor=0.5", {"hot_max_factor": "0.50"}),
    ("warm_max_factor=3", {"warm_max_factor": "3.00"}),
    ("warm_max_factor=3x", {"warm_max_factor": "3.00"}),  # atof
    ("temporary_ttl=100", {"temp_lru": "yes", "temporary_ttl": "100"}),
    ("temporary_ttl=x", {"temp_lru": "yes", "temporary_ttl": "0"}),  # atoi
    ("temporary_ttl=-1", {"temp_lru": "yes", "temporary_ttl": "4294967295"}),  # printed %u
    ("slab_automove_ratio=0.5", {"slab_automove_ratio": "0.50"}),
    ("slab_automove_ratio=1", {"slab_automove_ratio": "1.00"}),
    ("slab_automove_window=10", {"slab_automove_window": "10"}),
    ("hashpower=20", {"hashpower_init": "20"}),
    ("tail_repair_time=30", {"tail_repair_time": "30"}),
    ("watcher_logbuf_size=512", {"watcher_logbuf_size": "524288"}),
    ("worker_logbuf_size=128", {"worker_logbuf_size": "131072"}),
    ("idle_timeout=5x", {"idle_timeout": "5"}),  # atoi
    ("slab_automove=x", {"slab_automove": "0"}),  # atoi
    ("no_slab_automove", {"slab_automove": "0"}),
    ("no_chunked_items", {"slab_chunk_max": "1048576"}),
    ("no_slab_reassign=1", {"slab_reassign": "no"}),  # a switch's value is ignored
    ("track_sizes=1", {"track_sizes": "yes"}),
    ("ext_item_size=1024,ext_max_frag=0.5", {"ext_item_size": "1024", "ext_max_frag": "0.50"}),
    ("ext_wbuf_size=8,ext_drop_unread", {"ext_wbuf_size": "8388608", "ext_drop_unread": "yes"}),
    ("slab_automove_freeratio=0.5", {"slab_automove_freeratio": "0.500"}),
    ("ssl_wbuf_size=32,ssl_kernel_tls", {"ssl_wbuf_size": "32768", "ssl_kernel_tls": "yes"}),
    ("ssl_keyformat=2", {"ssl_keyformat": "2"}),
    ("modern,no_hashexpand,inline_ascii_resp,no_inline_ascii_resp,drop_privileges", {}),
]


@pytest.mark.parametrize(("spec", "changed"), STARTUP_ROWS)
def test_startup_options_set_memcacheds_stats_settings_rows(
    spec: str, changed: dict[str, str]
) -> None:
    s = settle(["-o", spec])
    assert isinstance(s, Settings), s
    defaults = dict(stats_settings(Settings()))
    rows = dict(stats_settings(s))
    assert {k: v for k, v in rows.items() if v != defaults[k]} == changed


@pytest.mark.parametrize(
    ("argv", "chunk_max"),
    [
        (["-I", "2m", "-o", "no_chunked_items"], 512 * KB),
        (["-I", "2m", "-o", "no_modern"], 512 * KB),
        (["-o", "no_modern", "-I", "2m"], 512 * KB),
        (["-I", "2m", "-o", "no_chunked_items,slab_chunk_max=1048576"], MB),
        (["-o", "no_chunked_items"], MB),
        (["-o", "no_modern"], MB),
    ],
)
def test_bug_a_large_item_size_halves_the_chunk_max_presets_set(
    argv: list[str], chunk_max: int
) -> None:
    """A hunt: memcached makes slab_chunk_max half a page when -I is past 1 MB unless -o
    slab_chunk_max was given; no_chunked_items and no_modern, which set a whole page, do
    not count (memcached 1.6.18: 524288 for each of the first three, side by side).
    mcached kept a whole page there (42 slab classes against memcached's 39)."""
    s = settle(argv)
    assert isinstance(s, Settings), s
    assert s.slab_chunk_max == chunk_max


@pytest.mark.parametrize("argv", [["-Y", ""], ["--auth-file="], ["-Y", "", "-U", "0"]])
def test_bug_an_empty_auth_file_started_without_authentication(argv: list[str]) -> None:
    """A hunt: ``-Y ""`` (a unit file's ``-Y $AUTHFILE`` with the variable unset) read as
    "not given", and the daemon served everyone; memcached fails to open the file and
    does not start (exit 1)."""
    assert settle(argv) == (
        "Could not open authfile [] for reading, error No such file or directory",
        1,
    )


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    [
        (["-c", "5x"], "max_connections", 5),  # atoi, as memcached
        (["-t", "2x"], "threads", 2),
        (["-m", "64x"], "memory_limit", 64 * MB),
        (["-b", "0"], "tcp_backlog", 0),  # memcached takes any backlog
        (["-f", "1.5x"], "growth_factor", 1.5),  # atof
        (["-f", "0x2"], "growth_factor", 2.0),
        (["-I", "1.5m"], "item_size_max", MB),  # atoi("1.5") megabytes
        (["-D", "ab"], "stat_key_prefix", "a"),  # its first character
        (["-L"], "large_pages", True),
        (["--enable-largepages"], "large_pages", True),
    ],
)
def test_flags_read_as_memcached_reads_them(argv: list[str], name: str, value: object) -> None:
    s = settle(argv)
    assert isinstance(s, Settings), s
    assert getattr(s, name) == value


@pytest.mark.parametrize(
    ("spec", "sleep", "tocrawl"),
    [
        ("lru_crawler_sleep=0,lru_crawler_tocrawl=0", 0, 0),
        ("lru_crawler_sleep=1000000,lru_crawler_tocrawl=4294967295", 1_000_000, 2**32 - 1),
        ("lru_crawler_sleep=abc", 0, 0),  # atoi: no digits is 0
        ("lru_crawler_sleep=12ab", 12, 0),
        ("lru_crawler_tocrawl=4294967297", 100, 1),  # 64 bits kept in 32
        ("lru_crawler_tocrawl=+7", 100, 7),
    ],
)
def test_lru_crawler_tuning_reads_as_memcached_reads_it(
    spec: str, sleep: int, tocrawl: int
) -> None:
    s = settle(["-o", spec])
    assert isinstance(s, Settings)
    assert (s.lru_crawler_sleep, s.lru_crawler_tocrawl) == (sleep, tocrawl)


def test_no_modern_is_memcacheds_old_defaults() -> None:
    s = settle(["-o", "no_modern"])
    assert isinstance(s, Settings)
    assert (s.slab_chunk_max, s.slab_reassign, s.slab_automove, s.maxconns_fast) == (
        MB,
        False,
        0,
        False,
    )
    assert not (s.lru_crawler or s.lru_maintainer or s.lru_segmented)
    s = settle(["-o", "slab_chunk_max=16384,no_modern"])
    assert isinstance(s, Settings) and s.slab_chunk_max == 16384  # given first: kept


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-o", "slab_automove"], {"slab_automove": 1}),  # memcached: alone means 1
        (["-o", "no_lru_maintainer"], {"lru_maintainer": False, "lru_segmented": False}),
        (["-o", "no_lru_maintainer,lru_maintainer"], {"lru_segmented": True}),
        (["-a", "0766"], {"unix_mask": 0o766}),
        (["-a", "77x"], {"unix_mask": 0o77}),  # strtol(.., 8): the digits before the rest
        (["-a", "x"], {"unix_mask": 0}),
        (["-s", "/run/mc.sock", "-X"], {"unix_socket": "/run/mc.sock", "dump_enabled": False}),
    ],
)
def test_memcached_flags_issue_12(argv: list[str], expected: dict[str, object]) -> None:
    s = settle(argv)
    assert isinstance(s, Settings)
    assert {k: getattr(s, k) for k in expected} == expected


def test_stats_settings_formats() -> None:
    rows = dict(stats_settings(Settings()))
    assert rows["evictions"] == "on"
    assert rows["inter"] == "127.0.0.1"
    assert rows["growth_factor"] == "1.25"
    assert rows["cas_enabled"] == "yes"
    assert rows["auth_enabled_ascii"] == "no"
    assert rows["ssl_chain_cert"] == rows["ssl_key"] == "(null)"
    assert rows["ssl_ciphers"] == rows["ssl_ca_cert"] == "NULL"
    assert rows["ssl_verify_mode"] == "0"
    assert rows["ssl_min_version"] == "tlsv1.2"
    assert rows["slab_chunk_max"] == "524288"
    s = settle(["-M", "-Y", "users", "-l", "a,b", "-o", "ssl_verify_mode=2,ssl_min_version=3"])
    assert isinstance(s, Settings)
    rows = dict(stats_settings(s))
    assert (rows["evictions"], rows["auth_enabled_ascii"], rows["inter"]) == ("off", "users", "a,b")
    assert (rows["ssl_verify_mode"], rows["ssl_min_version"]) == ("3", "tlsv1.3")
    assert list(rows) == list(STATS_SETTINGS_ORDER)  # memcached's rows, in its order
    assert (rows["domain_socket"], rows["umask"], rows["auth_enabled_sasl"]) == (
        "NULL",
        "700",
        "no",
    )


@pytest.mark.parametrize(
    ("mask", "shown", "mode"),
    [
        ("-1", "37777777777", 0o777),
        ("100000000000", "0", 0),  # 2**33: an int keeps its low 32 bits
        ("777777777777777777777777", "37777777777", 0o777),  # past a long: clamped
        ("0644x", "644", 0o644),
    ],
)
def test_umask_is_kept_and_shown_as_memcacheds_int(mask: str, shown: str, mode: int) -> None:
    """``-a`` is strtol's long kept in an int and shown by %o, unsigned (memcached 1.6.18:
    ``-a -1`` shows 37777777777); mcached showed -1, and kept numbers past 32 bits whole."""
    s = settle(["-s", "/tmp/x.sock", "-a", mask])
    assert isinstance(s, Settings)
    assert dict(stats_settings(s))["umask"] == shown
    assert s.unix_mask & 0o777 == mode


def test_help_lists_every_flag_and_extended_option() -> None:
    command = cli._command()
    text = command.get_help(click.Context(command))
    for o in OPTIONS.values():
        for decl in (o.flag, o.long):
            if decl:
                assert decl in text, decl
        if o.extended:
            assert f"{o.name}:" in text.replace("\n", " ").replace("  ", " "), o.name


def test_help_states_the_default_worker_count_that_runs() -> None:
    # --help once said "1 under the GIL" long after the default became memcached's 4 capped
    # at the machine's cores: the text now shows the figure the daemon takes
    command = cli._command()
    text = " ".join(command.get_help(click.Context(command)).split())
    assert parse_settings([]).threads == settings.default_threads()
    assert f"1 on a single CPU: {settings.default_threads()} here" in text
    assert "1 under the GIL" not in text


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 4), (3, 4), (8, 4), (64, 4)])
def test_default_workers_are_memcacheds_four_but_one_on_a_single_cpu(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int
) -> None:
    """Measured on two CPUs, four workers served more than two, with a lower p99; on one
    CPU they only took turns (three times the p99 of one). What counts is the CPUs the
    daemon may run on (taskset, a cpuset), not the machine's."""
    monkeypatch.setattr(settings.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(settings.os, "cpu_count", lambda: 128)
    assert settings.usable_cpus() == cpus
    assert settings.default_threads() == workers
    assert parse_settings([]).threads == workers


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-t", "2", "junk", "-c", "5"], {"threads": 2, "max_connections": 5}),  # ignored
        (["-t", "2", "--", "-t", "3"], {"threads": 2}),  # the rest after -- too
        (["--thr=3", "--max-item=2m"], {"threads": 3, "item_size_max": 2 * MB}),  # abbreviated
        (["--verbose=2", "-v"], {"verbose": 2}),  # an optional value memcached ignores
        (["-vvv"], {"verbose": 3}),  # shown as given (the command caps at 2)
        (["-p", "27410x", "-U", "abc"], {"port": 27410, "udp_port": 0}),  # atoi
        (["-l", "127.0.0.1", "-l", "127.0.0.1,::1"], {"listen": ("127.0.0.1", "::1")}),
    ],
)
def test_the_command_line_reads_as_getopt_reads_it(
    argv: list[str], expected: dict[str, object]
) -> None:
    s = parse_settings(argv)
    assert {k: getattr(s, k) for k in expected} == expected


def test_a_config_file_skips_detach_and_help_lines_and_adds_up_lists(tmp_path: Path) -> None:
    """As Debian's start-memcached and systemd wrapper read /etc/memcached.conf: -d and -h
    lines skipped, the command line's flags joined after the file's (-o lists add up)."""
    conf = tmp_path / "memcached.conf"
    conf.write_text("-d\n-h\n-m 32\n-o idle_timeout=600\n-l 127.0.0.1\n")
    s = parse_settings(["--config", str(conf), "-o", "track_sizes", "-m", "48"])
    assert not s.daemonize
    assert (s.memory_limit, s.idle_timeout, s.track_sizes) == (48 * MB, 600, True)
    assert s.listen == ("127.0.0.1",)


def test_a_config_file_in_another_encoding_reads(tmp_path: Path) -> None:
    """A Latin-1 comment, a log path in bytes of no UTF-8: read as the file system's names
    hold them. Regression: a UnicodeDecodeError's traceback at the start."""
    conf = tmp_path / "memcached.conf"
    conf.write_bytes(b"# caf\xe9 cache\r\n-m 64\r\nlogfile /var/log/m\xe9.log\n")
    s = parse_settings(["--config", str(conf)])
    assert s.memory_limit == 64 * MB
    assert os.fsencode(s.log_file) == b"/var/log/m\xe9.log"


def test_decimal_reads_any_number_of_digits() -> None:
    """`cnum.decimal`: leading zeros of any length (int() refuses past 4,300 digits), and
    a number of more than 20 significant digits as 10**20, past every range, of its sign."""
    from mcached.cnum import decimal

    assert decimal(b"0" * 5000 + b"42") == 42 == decimal("+" + "0" * 5000 + "42")
    assert decimal("-" + "0" * 5000 + "7") == -7
    assert decimal(b"9" * 5000) == 10**20 == -decimal(b"-" + b"1" * 30)
    assert decimal(b"18446744073709551615") == 2**64 - 1
    assert decimal(b"0" * 30 + b"18446744073709551616") == 2**64
