"""Settings declared once: each field's own parse, bounds and stat format, and the command
line, ``-o``, ``--help`` and ``stats settings`` generated from them with no per-name branch.
In process (`parse_settings`); tests/integration/test_lifecycle.py runs the real command."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import click
import pytest

from mcached import cli, settings
from mcached.cli import parse_settings
from mcached.settings import (
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
]


@pytest.mark.parametrize("argv,name,value", VALUES)
def test_values(argv: list[str], name: str, value: object) -> None:
    s = settle(argv)
    assert isinstance(s, Settings), s
    assert getattr(s, name) == value


ERRORS = [
    (["-p", "70000"], "ERROR: Invalid port number 70000.", 64),
    (["-m", "x"], "Invalid value for -m: 'x' (megabytes)", 64),
    (["-c", "x"], "Invalid value for -c: 'x' (a number)", 64),
    (["-c", "0"], "Maximum connections must be greater than 0", 1),
    (["-t", "0"], "Number of threads must be greater than 0", 1),
    (["-t", "65"], "Number of threads must be 64 or fewer", 1),
    (["-f", "x"], "Factor must be greater than 1", 1),
    (["-f", "1"], "Factor must be greater than 1", 1),
    (["-f", "inf"], "Factor must be greater than 1", 1),
    (["-n", "0"], "Chunk size must be greater than 0", 1),
    (["-R", "0"], "Number of requests per event must be greater than 0", 1),
    (["-b", "0"], "Listen backlog must be greater than 0", 1),
    (
        ["-B", "foo"],
        "Invalid value for binding protocol: foo\n -- should be one of auto, binary, or ascii",
        64,
    ),
    (["-I", "x"], "Invalid -I value: 'x'", 64),
    (["-I", "512"], "Item max size cannot be less than 1024 bytes.", 64),
    (["-I", "1025m"], "Cannot set item size limit higher than 1 gigabytes.", 64),
    (["-m", "1", "-I", "1m"], "Cannot set item size limit higher than 1/2 of memory max.", 64),
    (["-D", "ab"], "-D takes one character", 1),
    (["-l", ","], "-l needs at least one interface", 64),
    (["-l", "notls:127.0.0.1:5"], "'notls' option is valid only when SSL is enabled", 71),
    (
        ["-Y", "f", "-U", "5"],
        "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
        64,
    ),
    (["--stall-timeout", "-1"], "--stall-timeout must be 0 (off) or a number of seconds", 64),
    (["--shutdown-timeout", "x"], "Invalid value for --shutdown-timeout: 'x' (a number)", 64),
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
    (["-o", "track_sizes=1"], "-o track_sizes takes no value", 1),
    (["-o", "idle_timeout"], "-o idle_timeout needs a value: idle_timeout=<num>", 1),
    (["-o", "no_idle_timeout=3"], "-o no_idle_timeout needs a value: no_idle_timeout=<num>", 1),
    (["-o", "idle_timeout=x"], "Invalid value for idle_timeout: 'x'", 64),
    (["-o", "idle_timeout=-1"], "idle_timeout must be 0 or more", 1),
    (["-o", "slab_automove=3"], "slab_automove must be between 0 and 2", 1),
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
    assert isinstance(settle(["-o", "hashpower=20,hot_lru_pct=30"]), Settings)
    err = capsys.readouterr().err
    assert "warning: -o hashpower: memcached-internal option, accepted and ignored" in err
    assert "warning: -o hot_lru_pct: memcached-internal option, accepted and ignored" in err


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
    assert f"at most the machine's cores: {settings.default_threads()} here" in text
    assert "1 under the GIL" not in text
