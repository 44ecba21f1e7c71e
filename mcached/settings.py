"""Tunables: memcached's flags, defaults, bounds and ``stats settings`` names, declared once.

Each `Settings` field says everything about itself in its metadata (`opt`): its command-line
flag or ``-o`` name, help text and metavar; how the command line gives it (`take`: a value, a
flag, a count, a list); how its text is read (`parse`, raising memcached's message and exit
code); its bounds (`check`, the same); how ``stats settings`` prints it (`show`); the other
settings it implies, and whether it names a file. `OPTIONS` resolves that metadata once, with
defaults by type, and everything else is generated from it with no per-name branch: `cli.py`
builds the click options, ``--help`` and the ``-o`` table, `apply_extended` reads ``-o``,
`validate` applies every field's checks and then `RULES` (the bounds between settings), and
`stats_settings` prints the stat lines, so none of them can drift (memcached keeps
``settings_init`` and ``process_stat_settings`` in step by hand). gunicorn's ``Setting``
carries its validator the same way.

Defaults are memcached 1.6's, except ``listen``: 127.0.0.1, as Debian ships it. Messages and
exit codes are memcached's where it has them (64, EX_USAGE, unless it says otherwise).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mcached.addr import split_listen
from mcached.cnum import c_atof, c_atoi, safe_strtod, safe_strtol, safe_strtoul


class SettingsError(Exception):
    """A bad flag value: the message is printed and the daemon exits with `code`."""

    def __init__(self, message: str, code: int = 64) -> None:
        super().__init__(message)
        self.code = code


KB = 1024
MB = 1024 * 1024
#: -m's bound: mcached's item addresses hold 20 bits of 1 MB page number (storage/items.py)
MAX_MEMORY_LIMIT = 2**20 * MB

#: text (as given) and how messages name the setting ("-m", "--stall-timeout", "idle_timeout")
Parse = Callable[[Any, str], Any]
Check = Callable[[Any], None]
Show = Callable[[Any], str]

# How the command line gives a setting.
VALUE = "value"  # -m 64
FLAG = "flag"  # -M: present means the opposite of the default
COUNT = "count"  # -v, -vv, -vvv
LIST = "list"  # -l a,b -l c
#: `path`: a file read again on SIGHUP, made absolute under -d only (``stats settings`` shows
#: it as given, as memcached does; after -d's change to /, a relative one named another)
REREAD = "reread"


def opt(
    flag: str | None,
    help: str,
    *,
    long: str | None = None,
    stat: str | None = None,
    extended: bool = False,
    metavar: str | None = None,
    take: str | None = None,
    parse: Parse | None = None,
    check: Check | tuple[Check, ...] = (),
    show: Show | None = None,
    implies: Mapping[str, Any] | None = None,
    path: bool | str = False,
    negatable: bool = False,
) -> dict[str, Any]:
    """Field metadata: `flag`/`long` on the command line, or an ``-o`` key when `extended`.
    What is left out defaults by the field's type (see `Option`)."""
    return {
        "flag": flag,
        "long": long,
        "help": help,
        "stat": stat,
        "extended": extended,
        "metavar": metavar,
        "take": take,
        "parse": parse,
        "check": check if isinstance(check, tuple) else (check,),
        "show": show,
        "implies": dict(implies or {}),
        "path": path,
        "negatable": negatable,
    }


# ---- parse: text -> value, or memcached's message ----


def text(raw: str, what: str) -> str:
    return raw


def integer(raw: str, what: str) -> int:
    try:
        return int(raw, 10)
    except ValueError:
        raise SettingsError(f"Invalid value for {what}: {raw!r} (a number)") from None


def decimal(raw: str, what: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"Invalid value for {what}: {raw!r} (a number)") from None


def parse_size(text: str, what: str = "size") -> int:
    """``-I`` style sizes: plain bytes, or a k/m suffix (memcached's ``-I`` parser)."""
    s = text.strip().lower()
    unit = 1
    if s.endswith("k"):
        unit, s = KB, s[:-1]
    elif s.endswith("m"):
        unit, s = MB, s[:-1]
    if not s.isdigit():
        raise SettingsError(f"Invalid {what}: {text!r}")
    return int(s) * unit


def addresses(raw: tuple[str, ...], what: str) -> tuple[str, ...]:
    """``-l`` given several times, each a list separated by commas or semicolons
    (memcached's strtok on ``;,``); an address given again is dropped, as memcached drops
    it (a second bind of it would fail)."""
    specs = (h.strip() for spec in raw for h in spec.replace(";", ",").split(","))
    return tuple(dict.fromkeys(h for h in specs if h))


def atoi_flag(raw: str, what: str) -> int:
    """A flag memcached reads with ``atoi`` (``-c``, ``-t``, ``-n``, ``-R``, ``-b``, ``-m``,
    ``-p``, ``-U``): ``x`` is 0, which its bound refuses in memcached's words; ``5x`` is
    5."""
    return c_atoi(raw)


def atof_flag(raw: str, what: str) -> float:
    return c_atof(raw)


def megabytes(raw: str, what: str) -> int:
    """``-m``: memcached's ``atoi(optarg) * 1024 * 1024`` (``-m 64m`` is 64 MB, ``-m 1g`` 1)."""
    return c_atoi(raw) * MB


def item_size(raw: str, what: str) -> int:
    """``-I``: memcached's reading: a last k/m (K/M) is the unit, ``atoi`` the rest."""
    unit = {"k": KB, "m": MB}.get(raw[-1:].lower(), 1)
    return c_atoi(raw[:-1] if unit > 1 else raw) * unit


def delimiter(raw: str, what: str) -> str:
    """``-D``: the first character (memcached's ``optarg[0]``)."""
    if not raw:
        raise SettingsError("No delimiter specified", code=1)
    return raw[0]


# -o values: the text after "=", None when there is none; memcached's suboption readers.
# (memcached reads a switch's value, if any, and ignores it.)


def switch(raw: str | None, what: str) -> bool:
    """An on/off ``-o`` key: a value given is ignored, as memcached's getsubopt does."""
    return True


def suboption(
    read: Callable[[str], Any],
    missing: str = "Missing {what} argument",
    bad: str = "could not parse argument to {what}",
    then: Callable[[Any], Any] | None = None,
) -> Parse:
    """An ``-o key=value`` read as memcached reads it: `read` (libc's or util.c's, None for
    text it refuses), memcached's words for no value and for a refused one (exit 1), and
    what memcached does to the number (kilobytes into bytes, in 32 bits)."""

    def parse(raw: str | None, what: str) -> Any:
        if raw is None:
            raise SettingsError(missing.format(what=what), code=1)
        value = read(raw)
        if value is None:
            raise SettingsError(bad.format(what=what), code=1)
        return then(value) if then else value

    return parse


def unsigned_32(value: int) -> str:
    """A C int as ``%u`` prints it (-1 is 4294967295)."""
    return str(value % 2**32)


def in_32_bits(scale: int) -> Callable[[int], int]:
    """memcached multiplies a uint32_t setting in place (``*= 1024``): the product wraps."""
    return lambda value: value * scale % 2**32


def number(raw: str | None, what: str) -> int:
    """A numeric ``-o`` key mcached adds, in mcached's words."""
    if not raw:
        raise SettingsError(f"-o {what} needs a value: {what}=<num>", code=1)
    try:
        return int(raw, 10)
    except ValueError:
        raise SettingsError(f"Invalid value for {what}: {raw!r}") from None


memcached_number = suboption(safe_strtol)  # memcached's safe_strtol suboptions
atoi = suboption(c_atoi, missing="Missing {what} value")  # lru_crawler_sleep
uint32 = suboption(
    safe_strtoul, missing="Missing {what} value", bad="{what} takes a numeric 32bit value"
)


HASH_NAMES = ("jenkins", "murmur3", "xxh3")


def hash_name(raw: str | None, what: str) -> str:
    if raw is None:
        raise SettingsError(f"Missing {what} argument", code=1)
    if raw not in HASH_NAMES:
        raise SettingsError("Unknown hash_algorithm option (jenkins, murmur3, xxh3)", code=1)
    return raw


def memcached_text(raw: str | None, what: str) -> str:
    if raw is None:
        raise SettingsError(f"Missing {what} argument", code=1)
    return raw


def octal(raw: str, what: str) -> int:
    """``-a``: memcached reads it with ``strtol(optarg, NULL, 8)``: leading blanks and a
    sign allowed, the octal digits up to the first other character, 0 when there are none,
    clamped to a long's range, then kept in an int (its low 32 bits, signed)."""
    t = raw.lstrip(" \t\n\v\f\r")
    sign = -1 if t[:1] == "-" else 1
    t = t[1:] if t[:1] in ("+", "-") else t
    digits = ""
    for ch in t:
        if ch not in "01234567":
            break
        digits += ch
    n = max(-(2**63), min(2**63 - 1, sign * int(digits or "0", 8)))
    return (n + 2**31) % 2**32 - 2**31


def automove_level(raw: str | None, what: str) -> int:
    """``-o slab_automove`` alone is ``slab_automove=1``, else ``atoi`` (memcached's)."""
    return 1 if raw is None else c_atoi(raw)


# ---- check: bounds, with memcached's messages ----


def at_least(low: float, message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if not value >= low:  # `not >=`: a NaN is refused too
            raise SettingsError(message.format(value=value), code)

    return check


def at_most(high: float, message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if not value <= high:
            raise SettingsError(message.format(value=value), code)

    return check


def between(low: float, high: float, message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if not low <= value <= high:
            raise SettingsError(message.format(value=value), code)

    return check


def one_of(values: tuple[Any, ...], message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if value not in values:
            raise SettingsError(message.format(value=value), code)

    return check


def above(low: float, message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if not value > low:
            raise SettingsError(message.format(value=value), code)

    return check


def outside(low: float, high: float, message: str, code: int = 64) -> Check:
    """memcached's ``if (v <= low || v > high)``: a NaN passes, as it does in C."""

    def check(value: Any) -> None:
        if value <= low or value > high:
            raise SettingsError(message.format(value=value), code)

    return check


def finite(message: str, code: int = 64) -> Check:
    def check(value: Any) -> None:
        if math.isinf(value):
            raise SettingsError(message.format(value=value), code)

    return check


def some_address(value: tuple[str, ...]) -> None:
    if not value:
        raise SettingsError("-l needs at least one interface")


def port_number(value: int) -> None:
    if not 0 <= value <= 65535:
        raise SettingsError(f"ERROR: Invalid port number {value}.")


PROTOCOLS = ("ascii", "binary", "auto")


def binding(value: str) -> None:
    """-B: one of memcached's three ("" when not given: see `binding_protocol`)."""
    if value and value not in PROTOCOLS:
        raise SettingsError(
            f"Invalid value for binding protocol: {value}\n"
            " -- should be one of auto, binary, or ascii"
        )


def show_binding(value: str) -> str:
    return "auto-negotiate" if value in ("", "auto") else value


def name_and_port(value: str) -> None:
    """``--cluster-dns``: ``name:port`` (``[v6]:port`` too); empty is off."""
    if not value:
        return
    name, sep, port = value.rpartition(":")
    if not sep or not name.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingsError(f"--cluster-dns wants name:port, got {value!r}")


def addr_and_port(value: str) -> None:
    """``--metrics-listen``: ``addr:port`` (``[v6]:port``), or a port alone; empty is off."""
    if not value:
        return
    _, _, port = value.rpartition(":")  # a port alone is all port: range-checked too
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise SettingsError(f"--metrics-listen wants addr:port or a port (0-65535), got {value!r}")


# ---- show: how stats settings prints a value ----


def on_off(value: bool) -> str:
    return "on" if value else "off"


def joined(value: tuple[str, ...]) -> str:
    return ",".join(value)


def c_float(value: float, places: int = 2) -> str:
    """printf's ``%.2f``, which (unlike Python's) keeps a NaN's sign: ``-nan``."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return f"{value:.{places}f}"


def unset_as(word: str) -> Show:
    """The value as given (an empty one too: memcached's ``STAT <name>`` with no value), or
    memcached's word for "never given" (a NULL pointer: ``NULL``, ``(null)``)."""
    return lambda value: word if value is None else value


def or_else(empty: str) -> Show:
    """The value, or memcached's word for "not set" (``no``, ``NULL``, ``(null)``)."""
    return lambda value: value or empty


def megabytes_in_32_bits(value: int) -> int:
    """Megabytes in bytes as memcached makes them, multiplying its uint32_t in place: the
    product wraps (``-o read_buf_mem_limit=4097`` is 1 MB)."""
    return value * 1024 * 1024 % 2**32


def megabytes_in_bytes(value: int) -> str:
    """A figure set in megabytes, shown in bytes (memcached's stats settings row)."""
    return str(megabytes_in_32_bits(value))


def in_octal(value: int) -> str:
    return f"{value & 0xFFFFFFFF:o}"  # memcached's %o of an int: unsigned


def looked_up(table: tuple[Any, ...]) -> Show:
    return lambda value: str(table[value])


def ext_opt(
    stat: str, help: str, *, parse: Parse | None = None, show: Show | None = None
) -> dict[str, Any]:
    """An extstore ``-o`` key (memcached's ``storage_read_config``): memcached built with
    extstore reads it whether ``ext_path`` is given or not, and shows it in stats settings;
    mcached has no extstore, and reads it, checks it and shows it the same way."""
    return opt(
        None,
        f"{help} (extstore: read and shown in stats settings; mcached has no extstore)",
        stat=stat,
        extended=True,
        parse=parse or suboption(safe_strtoul),
        show=show,
    )


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity on this platform
        return os.cpu_count() or 1


def default_threads() -> int:
    """Workers when -t is not given: memcached's 4, or 1 where there is one CPU to run on.

    Measured (README, "Where it stands"): on two CPUs shared with the load, four worker
    processes served more than two (1.15x under memaslap, 1.07x with multigets, 0.93x to
    1.02x in the get/set mix), with a lower p99 in every load: while one worker waits for
    a CPU, another serves. On one CPU, four served about as much as one at three to ten
    times its p99: there the workers can only take turns.
    """
    return 4 if usable_cpus() > 1 else 1


FACTOR = "Factor must be greater than 1"
DNS_INTERVAL = "--cluster-dns-interval must be a positive number of seconds"
STALL = "--stall-timeout must be 0 (off) or a number of seconds"
SHUTDOWN = "--shutdown-timeout must be 0 (exit at once) or a number of seconds"
HEALTH_INTERVAL = "--cluster-health-interval must be 0 (off) or a number of seconds"
HEALTH_COUNTS = "--cluster-health-failures and --cluster-health-rise must be 1 or more"

# ssl_verify_mode -> the OpenSSL SSL_VERIFY_* flags memcached stores and reports: NONE,
# PEER, PEER|FAIL_IF_NO_PEER_CERT, PEER|FAIL_IF_NO_PEER_CERT|CLIENT_ONCE
SSL_VERIFY_FLAGS = (0, 1, 3, 7)
SSL_VERSIONS = ("tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3")


@dataclass(frozen=True)
class Settings:
    port: int = field(
        default=11211,
        metadata=opt(
            "-p",
            "TCP port to listen on (0 picks a free one)",
            long="--port",
            stat="tcpport",
            metavar="<num>",
            parse=atoi_flag,
            check=port_number,
        ),
    )
    udp_port: int = field(
        default=0,
        metadata=opt(
            "-U",
            "UDP port to listen on (default: 0, off)",
            long="--udp-port",
            stat="udpport",
            metavar="<num>",
            parse=atoi_flag,
            check=port_number,
        ),
    )
    unix_socket: str = field(
        default="",
        metadata=opt(
            "-s",
            "UNIX socket to listen on (disables network support)",
            long="--unix-socket",
            stat="domain_socket",
            metavar="<file>",
            show=or_else("NULL"),
        ),
    )
    unix_mask: int = field(
        default=0o700,
        metadata=opt(
            "-a",
            "access mask for UNIX socket, in octal (default: 700)",
            long="--unix-mask",
            stat="umask",
            metavar="<mask>",
            parse=octal,
            show=in_octal,
        ),
    )
    listen: tuple[str, ...] = field(
        default=("127.0.0.1",),
        metadata=opt(
            "-l",
            "interfaces to listen on, comma or semicolon separated (default: 127.0.0.1); each "
            "may start with notls:, proto[ascii|binary|negotiating]: or tag[name]:",
            long="--listen",
            stat="inter",
            metavar="<addr>",
            take=LIST,
            parse=addresses,
            check=some_address,
            show=joined,
        ),
    )
    shutdown_command: bool = field(
        default=False,
        metadata=opt(
            "-A",
            'enable ascii "shutdown" command',
            long="--enable-shutdown",
            stat="shutdown_command",
        ),
    )
    memory_limit: int = field(
        default=64 * MB,
        metadata=opt(
            "-m",
            "item memory in megabytes (default: 64)",
            long="--memory-limit",
            stat="maxbytes",
            metavar="<num>",
            parse=megabytes,
            check=at_most(
                MAX_MEMORY_LIMIT,
                "Cannot set memory limit higher than 1048576 megabytes (1 terabyte): "
                "mcached's item addresses hold 20 bits of page number",
            ),
        ),
    )
    evictions: bool = field(
        default=True,
        metadata=opt(
            "-M",
            "return error on memory exhausted instead of evicting",
            long="--disable-evictions",
            stat="evictions",
            show=on_off,
        ),
    )
    max_connections: int = field(
        default=1024,
        metadata=opt(
            "-c",
            "max simultaneous connections (default: 1024)",
            long="--conn-limit",
            stat="maxconns",
            metavar="<num>",
            parse=atoi_flag,
            check=at_least(1, "Maximum connections must be greater than 0", 1),
        ),
    )
    verbose: int = field(
        default=0,
        metadata=opt(
            "-v",
            "verbose (warnings and errors are always logged): -v adds the listening sockets "
            "and why connections close, -vv (and -vvv) client connections, commands and "
            "replies",
            long="--verbose",
            stat="verbosity",
            take=COUNT,
            check=at_least(0, "verbose must be 0 or more"),
        ),
    )
    growth_factor: float = field(
        default=1.25,
        metadata=opt(
            "-f",
            "chunk size growth factor (default: 1.25)",
            long="--slab-growth-factor",
            stat="growth_factor",
            metavar="<num>",
            parse=atof_flag,
            check=(above(1.0, FACTOR, 1), finite(FACTOR, 1)),
        ),
    )
    chunk_size: int = field(
        default=48,
        metadata=opt(
            "-n",
            "min space used for key+value+flags (default: 48)",
            long="--slab-min-size",
            stat="chunk_size",
            metavar="<bytes>",
            parse=atoi_flag,
            check=at_least(1, "Chunk size must be greater than 0", 1),
        ),
    )
    threads: int = field(
        default_factory=lambda: default_threads(),
        metadata=opt(
            "-t",
            "number of workers, each serving its connections with its own share of the "
            "CPU: processes over one shared cache (threads on a free-threaded Python) "
            f"(default: memcached's 4, 1 on a single CPU: {default_threads()} here)",
            long="--threads",
            stat="num_threads",
            parse=atoi_flag,
            metavar="<num>",
            check=(
                at_least(1, "Number of threads must be greater than 0", 1),
                at_most(64, "Number of threads must be 64 or fewer", 1),
            ),
        ),
    )
    reqs_per_event: int = field(
        default=20,
        metadata=opt(
            "-R",
            "maximum number of requests per event, limits the requests processed per "
            "connection to prevent starvation (default: 20)",
            long="--max-reqs-per-event",
            stat="reqs_per_event",
            metavar="<num>",
            parse=atoi_flag,
            check=at_least(1, "Number of requests per event must be greater than 0", 1),
        ),
    )
    cas_enabled: bool = field(
        default=True,
        metadata=opt("-C", "disable use of CAS", long="--disable-cas", stat="cas_enabled"),
    )
    tcp_backlog: int = field(
        default=1024,
        metadata=opt(
            "-b",
            "set the backlog queue limit (default: 1024)",
            long="--listen-backlog",
            stat="tcp_backlog",
            metavar="<num>",
            parse=atoi_flag,
        ),
    )
    protocol: str = field(
        default="",
        metadata=opt(
            "-B",
            "protocol - one of ascii, binary, or auto (default: auto-negotiate; binary with "
            "-S, ascii with -Y)",
            long="--protocol",
            stat="binding_protocol",
            metavar="<name>",
            check=binding,
            show=show_binding,
        ),
    )
    sasl: bool = field(
        default=False,
        metadata=opt(
            "-S",
            "turn on SASL authentication (binary protocol only): PLAIN and CRAM-MD5 against "
            "the user:password lines of --sasl-pwdb or MEMCACHED_SASL_PWDB, else Cyrus SASL's "
            "configuration and sasldb, as memcached",
            long="--enable-sasl",
            stat="auth_enabled_sasl",
        ),
    )
    sasl_pwdb: str = field(
        default="",
        metadata=opt(
            None,
            "SASL password file: user:password lines, re-read on SIGHUP (default: the "
            "MEMCACHED_SASL_PWDB environment variable, as memcached reads it)",
            long="--sasl-pwdb",
            metavar="<file>",
            path=True,
        ),
    )
    auth_file: str = field(
        default="",
        metadata=opt(
            "-Y",
            "enable ASCII protocol authentication: a file of user:password lines, "
            "re-read on SIGHUP",
            long="--auth-file",
            stat="auth_enabled_ascii",
            metavar="<file>",
            path=REREAD,
            show=or_else("no"),
        ),
    )
    item_size_max: int = field(
        default=1 * MB,
        metadata=opt(
            "-I",
            "max item size, k/m suffixes (default: 1m, min: 1k, max: 1024m)",
            long="--max-item-size",
            stat="item_size_max",
            metavar="<num>",
            parse=item_size,
            # its upper bound is a rule: memcached checks it after the 1/2 of -m one
            check=at_least(KB, "Item max size cannot be less than 1024 bytes."),
        ),
    )
    stat_key_prefix: str = field(
        default=":",
        metadata=opt(
            "-D",
            "delimiter between key prefixes and IDs for per-prefix stats (`stats detail`);"
            " giving it turns the collection on",
            stat="stat_key_prefix",
            metavar="<char>",
            parse=delimiter,
            implies={"detail_enabled": True},
        ),
    )
    detail_enabled: bool = field(default=False, metadata=opt(None, "", stat="detail_enabled"))
    flush_enabled: bool = field(
        default=True,
        metadata=opt(
            "-F", "disable flush_all command", long="--disable-flush-all", stat="flush_enabled"
        ),
    )
    watch_enabled: bool = field(
        default=True,
        metadata=opt("-W", "disable watch commands (live logging)", long="--disable-watch"),
    )
    dump_enabled: bool = field(
        default=True,
        metadata=opt(
            "-X",
            "disable stats cachedump and lru_crawler metadump",
            long="--disable-dumping",
            stat="dump_enabled",
        ),
    )
    # ---- process lifecycle (memcached's letters; mcached-only ones have long names) ----
    daemonize: bool = field(
        default=False,
        metadata=opt(
            "-d",
            "run as a daemon (detach; ignored under systemd, which supervises us)",
            long="--daemon",
        ),
    )
    pidfile: str = field(
        default="",
        metadata=opt("-P", "save PID in <file>", long="--pidfile", metavar="<file>", path=True),
    )
    user: str = field(
        default="",
        metadata=opt(
            "-u",
            "assume identity of <username> after binding (only when run as root)",
            long="--user",
            metavar="<user>",
        ),
    )
    enable_coredumps: bool = field(
        default=False, metadata=opt("-r", "maximize core file limit", long="--enable-coredumps")
    )
    lock_memory: bool = field(
        default=False,
        metadata=opt(
            "-k", "lock down all paged memory (mlockall, as it is touched)", long="--lock-memory"
        ),
    )
    large_pages: bool = field(
        default=False,
        metadata=opt(
            "-L",
            "try to use large memory pages (if available): accepted, as memcached's on "
            "Linux; mcached leaves its arena's pages to the kernel (transparent huge pages)",
            long="--enable-largepages",
        ),
    )
    log_file: str = field(
        default="",
        metadata=opt(
            None,
            "write the log here instead of stderr; reopened on SIGHUP (logrotate)",
            long="--log-file",
            metavar="<file>",
            path=True,
        ),
    )
    shutdown_timeout: float = field(
        default=10.0,
        metadata=opt(
            None,
            "seconds SIGTERM waits for replies to requests already received before "
            "exiting anyway (default: 10)",
            long="--shutdown-timeout",
            metavar="<seconds>",
            check=(at_least(0, SHUTDOWN), finite(SHUTDOWN)),
        ),
    )
    # ---- cluster (auto discovery, `config get cluster`): mcached-only, long names only ----
    cluster_file: str = field(
        default="",
        metadata=opt(
            None,
            "cluster membership file, one node per line (host:port or host|ip|port); "
            "re-read on SIGHUP and when it changes",
            long="--cluster-file",
            metavar="<path>",
            path=REREAD,
        ),
    )
    cluster_dns: str = field(
        default="",
        metadata=opt(
            None,
            "DNS name whose every address is a cluster node, e.g. a Kubernetes headless "
            "Service; re-resolved periodically",
            long="--cluster-dns",
            metavar="<name:port>",
            check=name_and_port,
        ),
    )
    cluster_dns_interval: float = field(
        default=10.0,
        metadata=opt(
            None,
            "seconds between re-resolving --cluster-dns and the names in --cluster-file "
            "(default: 10)",
            long="--cluster-dns-interval",
            metavar="<seconds>",
            check=(above(0, DNS_INTERVAL), finite(DNS_INTERVAL)),
        ),
    )
    config_set_enabled: bool = field(
        default=False,
        metadata=opt(
            None,
            'allow "config set cluster" and "config delete cluster" (off: anyone who can '
            "reach the port could repoint every client)",
            long="--enable-config-set",
        ),
    )
    cluster_node_name: str = field(
        default="",
        metadata=opt(
            None,
            "hostname this node advertises when it lists itself (default: from -l; "
            "localhost on loopback, the FQDN on a wildcard address)",
            long="--cluster-node-name",
            metavar="<host>",
        ),
    )
    cluster_health_interval: float = field(
        default=2.0,
        metadata=opt(
            None,
            "seconds between health checks of the other cluster nodes; 0 turns them off "
            "(default: 2)",
            long="--cluster-health-interval",
            metavar="<seconds>",
            check=(at_least(0, HEALTH_INTERVAL), finite(HEALTH_INTERVAL)),
        ),
    )
    cluster_health_failures: int = field(
        default=3,
        metadata=opt(
            None,
            "health checks a node fails in a row before it leaves the list this node serves "
            "(default: 3)",
            long="--cluster-health-failures",
            metavar="<num>",
            check=at_least(1, HEALTH_COUNTS),
        ),
    )
    cluster_health_rise: int = field(
        default=5,
        metadata=opt(
            None,
            "health checks a hidden node passes in a row before it is listed again; doubled "
            "for each time it was hidden in the last 10 minutes (default: 5)",
            long="--cluster-health-rise",
            metavar="<num>",
            check=at_least(1, HEALTH_COUNTS),
        ),
    )
    # ---- monitoring: mcached-only ----
    metrics_listen: str = field(
        default="",
        metadata=opt(
            None,
            "serve Prometheus metrics at http://<addr:port>/metrics (memcached_exporter's "
            "names, latency histograms, host figures); off by default. No TLS or "
            "authentication: bind it to localhost or a private address (default: off)",
            long="--metrics-listen",
            metavar="<addr:port>",
            check=addr_and_port,
        ),
    )
    # ---- extended options (-o key=value, memcached's names) ----
    maxconns_fast: bool = field(
        default=True,
        metadata=opt(
            None,
            "immediately close new connections after limit (default: enabled; mcached "
            "always does, no_maxconns_fast only changes stats settings)",
            stat="maxconns_fast",
            extended=True,
            negatable=True,
        ),
    )
    read_buf_mem_limit: int = field(
        default=0,
        metadata=opt(
            None,
            "megabytes all connections may hold outside the cache: requests received and "
            "replies not yet read, split between the workers; past it, the connections "
            "holding the most are closed (default: 0, 32 MB per worker)",
            stat="read_buf_mem_limit",
            extended=True,
            parse=suboption(safe_strtoul),
            check=between(0, 2**32 - 1, "could not parse argument to read_buf_mem_limit", 1),
            show=megabytes_in_bytes,
        ),
    )
    idle_timeout: int = field(
        default=0,
        metadata=opt(
            None,
            "timeout for idle connections in seconds (default: 0, no timeout)",
            stat="idle_timeout",
            extended=True,
            # memcached's atoi takes a negative one, and then closes every connection that
            # waits a second: mcached refuses it
            parse=suboption(c_atoi, missing="Missing numeric argument for {what}"),
            check=at_least(0, "idle_timeout must be 0 or more", 1),
        ),
    )
    slab_chunk_max: int = field(
        default=512 * KB,
        metadata=opt(
            None,
            "largest slab chunk, in bytes: items above it are chained across chunks "
            "(default: 524288; memcached's help says kilobytes, its parser reads bytes)",
            stat="slab_chunk_max",
            extended=True,
            parse=memcached_number,
            # its floor is a rule (`_slab_chunk_max_fits`): checked after the list, as
            # memcached checks -I's
        ),
    )
    slab_reassign: bool = field(
        default=True,
        metadata=opt(
            None,
            "allow moving slab pages between classes (default: enabled)",
            stat="slab_reassign",
            extended=True,
            negatable=True,
        ),
    )
    slab_automove: int = field(
        default=1,
        metadata=opt(
            None,
            "0 off, 1 move pages slowly to where evictions are, 2 aggressively (default: 1)",
            stat="slab_automove",
            extended=True,
            parse=automove_level,
            check=one_of((0, 1, 2), "slab_automove must be between 0 and 2", 1),
        ),
    )
    lru_crawler: bool = field(
        default=True,
        metadata=opt(
            None,
            "background thread that reclaims expired items (default: enabled)",
            stat="lru_crawler",
            extended=True,
            negatable=True,
        ),
    )
    lru_crawler_sleep: int = field(
        default=100,
        metadata=opt(
            None,
            "microseconds the LRU crawler sleeps after each 1000 items it checks, 0 to "
            "1000000 (default: 100; `lru_crawler sleep <us>` at run time)",
            stat="lru_crawler_sleep",
            extended=True,
            parse=atoi,
            check=between(0, 1_000_000, "LRU crawler sleep must be between 0 and 1 second", 1),
        ),
    )
    lru_crawler_tocrawl: int = field(
        default=0,
        metadata=opt(
            None,
            "items of each slab class the LRU crawler checks at most per sweep, 0 for all "
            "(default: 0; `lru_crawler tocrawl <n>` at run time)",
            stat="lru_crawler_tocrawl",
            extended=True,
            parse=uint32,
            check=between(0, 2**32 - 1, "lru_crawler_tocrawl takes a numeric 32bit value", 1),
        ),
    )
    lru_maintainer: bool = field(
        default=True,
        metadata=opt(
            None,
            "memcached's LRU maintainer thread; with it (and lru_segmented), stats shows "
            "the segmented LRU's rows. mcached's clock LRU needs no maintainer and works the "
            "same either way (default: enabled; no_lru_maintainer also turns lru_segmented off)",
            stat="lru_maintainer_thread",
            extended=True,
            negatable=True,
            implies={"lru_segmented": True},
        ),
    )
    lru_segmented: bool = field(
        default=True,
        metadata=opt(
            None,
            "memcached's HOT/WARM/COLD LRU; mcached's clock gives reads a second chance "
            "either way, this decides which stats rows are shown (default: enabled; not an "
            "-o option in memcached 1.6.18: -o no_lru_maintainer, or `lru mode flat`)",
            stat="lru_segmented",
        ),
    )
    # the segmented LRU's and the automover's tuning, which mcached's clock LRU and
    # automover do without: read and checked as memcached reads them, at start (-o) and at
    # run time (``lru tune|mode|temp_ttl``, ``slabs automove ratio``), for the ``stats
    # settings`` rows they set
    slab_automove_ratio: float = field(
        default=0.8,
        metadata=opt(
            None,
            "ratio limit between young/old slab classes (default: 0.8; shown in stats "
            "settings, mcached's automover does without it)",
            stat="slab_automove_ratio",
            extended=True,
            parse=suboption(c_atof),
            check=outside(0, 1, "slab_automove_ratio must be > 0 and < 1", 1),
        ),
    )
    slab_automove_window: int = field(
        default=30,
        metadata=opt(
            None,
            "window size for mem limit ratio (default: 30; shown in stats settings)",
            stat="slab_automove_window",
            extended=True,
            parse=suboption(c_atoi),
            check=at_least(3, "slab_automove_window must be > 2", 1),
        ),
    )
    hot_lru_pct: int = field(
        default=20,
        metadata=opt(
            None,
            "pct of slab memory to reserve for hot lru (default: 20; shown in stats settings)",
            stat="hot_lru_pct",
            extended=True,
            parse=suboption(c_atoi),
            check=between(1, 79, "hot_lru_pct must be > 1 and < 80", 1),
        ),
    )
    warm_lru_pct: int = field(
        default=40,
        metadata=opt(
            None,
            "pct of slab memory to reserve for warm lru (default: 40; shown in stats settings)",
            stat="warm_lru_pct",
            extended=True,
            parse=suboption(c_atoi),
            check=between(1, 79, "warm_lru_pct must be > 1 and < 80", 1),
        ),
    )
    hot_max_factor: float = field(
        default=0.2,
        metadata=opt(
            None,
            "items idle > cold lru age * this are moved from hot lru (default: 0.2; shown "
            "in stats settings)",
            stat="hot_max_factor",
            extended=True,
            parse=suboption(c_atof),
            check=outside(0, math.inf, "hot_max_factor must be > 0", 1),
        ),
    )
    warm_max_factor: float = field(
        default=2.0,
        metadata=opt(
            None,
            "items idle > cold lru age * this are moved from warm lru (default: 2.0; shown "
            "in stats settings)",
            stat="warm_max_factor",
            extended=True,
            parse=suboption(c_atof),
            check=outside(0, math.inf, "warm_max_factor must be > 0", 1),
        ),
    )
    temp_lru: bool = field(default=False, metadata=opt(None, "", stat="temp_lru"))
    temporary_ttl: int = field(
        default=61,
        metadata=opt(
            None,
            "TTL's below this use separate LRU, cannot be evicted (default: off; shown in "
            "stats settings, with temp_lru yes; needs the LRU maintainer)",
            stat="temporary_ttl",
            extended=True,
            parse=suboption(c_atoi),
            show=unsigned_32,  # memcached prints its int with %u
            implies={"temp_lru": True},
        ),
    )
    # the item tables' starting size (memcached's hash table's), checked as memcached does
    hashpower: int = field(
        default=0,
        metadata=opt(
            None,
            "an int from 12 to 32: the item tables' starting size, 2^N slots in all "
            "(they grow by themselves, each pausing its share of the keys while it does: "
            "start large caches of small items at their running hash_power_level; shown "
            "in stats settings as hashpower_init)",
            stat="hashpower_init",
            extended=True,
            parse=suboption(c_atoi, missing="Missing numeric argument for {what}"),
            check=(
                at_least(12, "Initial hashtable multiplier of {value} is too low", 1),
                at_most(
                    32,
                    "Initial hashtable multiplier of {value} is too high\n"
                    'Choose a value based on "STAT hash_power_level" from a running instance',
                    1,
                ),
            ),
        ),
    )
    # memcached's tuning of machinery mcached does without (its logger's buffers, extstore
    # with no ext_path, TLS buffers): read and checked as memcached does, and shown in the
    # stats settings rows memcached has for them
    tail_repair_time: int = field(
        default=0,
        metadata=opt(
            None,
            "seconds before memcached frees a leaked item (10 or more; shown in stats settings)",
            stat="tail_repair_time",
            extended=True,
            parse=suboption(c_atoi, missing="Missing numeric argument for {what}"),
            check=at_least(10, "Cannot set tail_repair_time to less than 10 seconds", 1),
        ),
    )
    hash_algorithm: str = field(
        default="",
        metadata=opt(
            None,
            "jenkins, murmur3 or xxh3: memcached's key hash (mcached hashes with the "
            "interpreter's, which stats settings shows)",
            extended=True,
            parse=hash_name,
            check=one_of(HASH_NAMES, "Unknown hash_algorithm option (jenkins, murmur3, xxh3)", 1),
        ),
    )
    watcher_logbuf_size: int = field(
        default=256 * KB,
        metadata=opt(
            None,
            "size in kilobytes of per-watcher write buffer (default: 256; shown in stats settings)",
            stat="watcher_logbuf_size",
            extended=True,
            parse=suboption(safe_strtoul, then=in_32_bits(KB)),
        ),
    )
    worker_logbuf_size: int = field(
        default=64 * KB,
        metadata=opt(
            None,
            "size in kilobytes of per-worker-thread buffer read by background thread "
            "(default: 64; shown in stats settings)",
            stat="worker_logbuf_size",
            extended=True,
            parse=suboption(safe_strtoul, then=in_32_bits(KB)),
            check=between(0, 2**32 - 1, "could not parse argument to worker_logbuf_size", 1),
        ),
    )
    ext_item_size: int = field(
        default=512, metadata=ext_opt("ext_item_size", "store items larger than this (bytes)")
    )
    ext_item_age: int = field(
        default=2**32 - 1,
        metadata=ext_opt("ext_item_age", "store items idle at least this long (seconds)"),
    )
    ext_low_ttl: int = field(
        default=0, metadata=ext_opt("ext_low_ttl", "consider TTLs lower than this specially")
    )
    ext_recache_rate: int = field(
        default=2000, metadata=ext_opt("ext_recache_rate", "recache an item every N accesses")
    )
    ext_wbuf_size: int = field(
        default=4 * MB,
        metadata=ext_opt(
            "ext_wbuf_size",
            "size in megabytes of page write buffers",
            parse=suboption(safe_strtoul, then=in_32_bits(MB)),
        ),
    )
    ext_compact_under: int = field(
        default=0,
        metadata=ext_opt("ext_compact_under", "compact when fewer than this many free pages"),
    )
    ext_drop_under: int = field(
        default=0,
        metadata=ext_opt("ext_drop_under", "drop COLD items when fewer than this many free pages"),
    )
    ext_max_sleep: int = field(
        default=1_000_000,
        metadata=ext_opt("ext_max_sleep", "max sleep time of background threads in us"),
    )
    ext_max_frag: float = field(
        default=0.8,
        metadata=ext_opt(
            "ext_max_frag",
            "max page fragmentation to tolerate",
            parse=suboption(safe_strtod),
        ),
    )
    slab_automove_freeratio: float = field(
        default=0.01,
        metadata=ext_opt(
            "slab_automove_freeratio",
            "ratio of memory to hold free as buffer",
            parse=suboption(safe_strtod),
            show=lambda value: c_float(value, 3),
        ),
    )
    ext_drop_unread: bool = field(
        default=False,
        metadata=ext_opt(
            "ext_drop_unread",
            "don't re-write unread values during compaction",
            parse=switch,
        ),
    )
    # memcached's oldest_live: the server time (clock.py) before which items are flushed,
    # as the last flush_all set it (0: none yet)
    oldest_live: int = field(default=0, metadata=opt(None, "", stat="oldest"))
    track_sizes: bool = field(
        default=False,
        metadata=opt(
            None,
            "enable dynamic reports for 'stats sizes' command",
            stat="track_sizes",
            extended=True,
        ),
    )
    # ---- TLS (-Z and memcached's -o ssl_* options) ----
    ssl_enabled: bool = field(
        default=False,
        metadata=opt(
            "-Z",
            "enable TLS/SSL on every TCP listener (-l notls:<addr>:<port> for a plain one)",
            long="--enable-ssl",
            stat="ssl_enabled",
        ),
    )
    ssl_chain_cert: str | None = field(
        default=None,
        metadata=opt(
            None,
            "certificate chain file in PEM format",
            stat="ssl_chain_cert",
            extended=True,
            path=REREAD,
            parse=memcached_text,
            show=unset_as("(null)"),
        ),
    )
    ssl_key: str | None = field(
        default=None,
        metadata=opt(
            None,
            "private key, if not part of the ssl_chain_cert",
            stat="ssl_key",
            extended=True,
            path=REREAD,
            parse=memcached_text,
            show=unset_as("(null)"),
        ),
    )
    ssl_verify_mode: int = field(
        default=0,
        metadata=opt(
            None,
            "client certificate verification: 0 none, 1 request (verified if sent), "
            "2 require, 3 require once (default: 0)",
            stat="ssl_verify_mode",
            extended=True,
            parse=memcached_number,
            check=one_of(
                (0, 1, 2, 3), "Invalid ssl_verify_mode. Use help to see valid options.", 1
            ),
            show=looked_up(SSL_VERIFY_FLAGS),
        ),
    )
    ssl_ciphers: str | None = field(
        default=None,
        metadata=opt(
            None,
            "OpenSSL cipher list for TLS 1.2 and older",
            stat="ssl_ciphers",
            extended=True,
            parse=memcached_text,
            show=unset_as("NULL"),
        ),
    )
    ssl_ca_cert: str | None = field(
        default=None,
        metadata=opt(
            None,
            "PEM file of the CAs client certificates are verified against",
            stat="ssl_ca_cert",
            extended=True,
            path=REREAD,
            parse=memcached_text,
            show=unset_as("NULL"),
        ),
    )
    ssl_session_cache: bool = field(
        default=False,
        metadata=opt(
            None,
            "enable server-side SSL session cache (sessions resume by ticket either "
            "way; with it, stats counts ssl_new_sessions)",
            stat="ssl_session_cache",
            extended=True,
            parse=switch,
        ),
    )
    ssl_min_version: int = field(
        default=2,
        metadata=opt(
            None,
            "minimum protocol version: 0 tlsv1.0, 1 tlsv1.1, 2 tlsv1.2, 3 tlsv1.3 (default: 2)",
            stat="ssl_min_version",
            extended=True,
            parse=memcached_number,
            check=one_of(
                (0, 1, 2, 3), "Invalid ssl_min_version. Use help to see valid options.", 1
            ),
            show=looked_up(SSL_VERSIONS),
        ),
    )
    ssl_keyformat: int = field(
        default=1,
        metadata=opt(
            None,
            "private key format: PEM 1, DER 2 (default: PEM; ENGINE keys are not read)",
            stat="ssl_keyformat",
            extended=True,
            parse=memcached_number,
        ),
    )
    ssl_wbuf_size: int = field(
        default=16 * KB,
        metadata=opt(
            None,
            "size in kilobytes of per-connection SSL output buffer (default: 16; shown in "
            "stats settings)",
            stat="ssl_wbuf_size",
            extended=True,
            parse=suboption(safe_strtoul, then=in_32_bits(KB)),
        ),
    )
    ssl_kernel_tls: bool = field(
        default=False,
        metadata=opt(
            None,
            "enable kernel TLS offload (shown in stats settings; mcached's TLS is OpenSSL's "
            "through Python)",
            stat="ssl_kernel_tls",
            extended=True,
            parse=switch,
        ),
    )
    # ---- hostile clients: mcached-only ----
    stall_timeout: float = field(
        default=30.0,
        metadata=opt(
            None,
            "seconds a connection may sit part-way through a request (a half-sent line "
            "or value, a TLS handshake, a -Y login) or with replies it does not read, before it "
            "is closed; 0: never (memcached has no such limit) (default: 30)",
            long="--stall-timeout",
            metavar="<seconds>",
            check=(at_least(0, STALL), finite(STALL)),
        ),
    )

    @property
    def slab_page_size(self) -> int:
        """1 MB: memcached 1.6 keeps 1 MB pages and chains larger items across chunks."""
        return MB

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Option:
    """One setting as the command line, ``-o``, the checks and ``stats settings`` use it:
    its field's metadata, with what the declaration left out filled in by the field's type
    (a bool is a flag, or an ``-o`` switch; an int, a float, a str is read as such; shown as
    ``yes``/``no``, ``%.2f``, or as it is). ``take`` is FLAG for both kinds of switch: a
    flag given means the opposite of the default; an ``-o`` key turns it on, ``no_<key>``
    off."""

    name: str
    flag: str | None
    long: str | None
    help: str
    stat: str | None
    extended: bool
    metavar: str | None
    take: str
    parse: Parse
    checks: tuple[Check, ...]
    show: Show
    implies: Mapping[str, Any]
    path: bool | str  # True: made absolute at the start; REREAD: under -d only
    negatable: bool
    default: Any

    @property
    def what(self) -> str:
        """How messages name the setting: its flag, its long name, or its -o key."""
        return self.flag or self.long or self.name


def _show_yes_no(value: bool) -> str:
    return "yes" if value else "no"


_BY_TYPE: dict[Any, tuple[Parse, Parse, Show]] = {
    # type: (command-line parse, -o parse, stats settings format)
    bool: (text, switch, _show_yes_no),
    int: (integer, number, str),
    float: (decimal, number, c_float),
    str: (text, memcached_text, str),
}


def _option(f: dataclasses.Field[Any], kind: Any) -> Option:
    md = f.metadata
    cli_parse, ext_parse, show = _BY_TYPE.get(kind, (text, text, str))
    take = md["take"] or (FLAG if kind is bool else VALUE)
    default = f.default if f.default is not dataclasses.MISSING else None
    return Option(
        name=f.name,
        flag=md["flag"],
        long=md["long"],
        help=md["help"],
        stat=md["stat"],
        extended=md["extended"],
        metavar=md["metavar"],
        take=take,
        parse=md["parse"] or (ext_parse if md["extended"] else cli_parse),
        checks=md["check"],
        show=md["show"] or show,
        implies=md["implies"],
        path=md["path"],
        negatable=md["negatable"],
        default=default,
    )


_TYPES = typing.get_type_hints(Settings)
#: every setting, in declaration order
OPTIONS: dict[str, Option] = {
    f.name: _option(f, _TYPES[f.name]) for f in dataclasses.fields(Settings)
}


# memcached's -o keys for machinery mcached does not have and whose value no stats row shows
# (extstore's file and threads, custom slab sizes): read, with a warning, so that an existing
# memcached command line starts; they change nothing here
IGNORED_EXTENDED = frozenset("ext_path ext_page_size ext_threads ext_io_depth slab_sizes".split())
_EXTENDED = {o.name: o for o in OPTIONS.values() if o.extended}

#: ``-o`` keys that stand for several settings (or none): (what they set, what they set unless
#: given before them); memcached ignores a value given to any of them. ``no_modern``:
#: memcached's pre-1.5 defaults (``memcached.c``), in the settings mcached has:
#: slab_chunk_max becomes the page size, no page moves, no maxconns_fast, and no crawler,
#: maintainer or segmented LRU. The no-ops: ``modern`` ("currently no new defaults"), the
#: inline responses memcached 1.6 dropped, the hash table's growth (mcached's table grows
#: by itself), the seccomp privileges of memcached's threads, memcached's socket cookie
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "no_modern": (
        {
            "slab_reassign": False,
            "slab_automove": 0,
            "maxconns_fast": False,
            "lru_segmented": False,
            "lru_crawler": False,
            "lru_maintainer": False,
        },
        {"slab_chunk_max": MB},  # memcached's slab_page_size
    ),
    "no_slab_automove": ({"slab_automove": 0}, {}),
    "no_chunked_items": ({"slab_chunk_max": MB}, {}),
    **dict.fromkeys(
        "modern inline_ascii_resp no_inline_ascii_resp no_hashexpand drop_privileges "
        "no_drop_privileges sock_cookie_id".split(),
        ({}, {}),
    ),
}

#: ``-o`` keys memcached only prints a line for (stderr)
NOTICES = {
    "resp_obj_mem_limit": "DEPRECATED: resp_obj_mem_limit no longer used. See read_buf_mem_limit,"
}


def apply_extended(options: dict[str, Any], spec: str, warn: list[str]) -> None:
    """Parse one ``-o`` comma list into `options` (field name -> value); `warn` collects
    lines for stderr.

    As memcached's ``getsubopt`` loop: ``key=value`` or ``key`` (the value None), an empty
    piece refused (one trailing comma ends the list), each value read and checked as it
    comes. ``no_<key>`` turns a switch off where memcached has that form."""
    pieces = spec.split(",")
    if pieces[-1] == "":
        pieces.pop()
    for item in pieces:
        name, eq, given = item.partition("=")
        value = given if eq else None
        if name in PRESETS:
            sets, defaults = PRESETS[name]
            options.update(sets)
            options.update({k: v for k, v in defaults.items() if k not in options})
            continue
        if name in NOTICES:
            warn.append(NOTICES[name])
            continue
        if name in IGNORED_EXTENDED:
            warn.append(f"warning: -o {name}: memcached-internal option, accepted and ignored")
            continue
        off = name.startswith("no_") and name not in _EXTENDED
        o = _EXTENDED.get(name[3:] if off else name)
        if o is None or (off and not o.negatable):
            raise SettingsError(f'Illegal suboption "{item}"', code=1)
        if o.take == FLAG:
            o.parse(value, name)  # a switch: its value is ignored
            options[o.name] = not off
            # what a switch implies follows it both ways (no_lru_maintainer: not segmented)
            options.update({k: v if not off else not v for k, v in o.implies.items()})
        else:
            options[o.name] = o.parse(value, name)
            for check in o.checks:  # memcached checks each as it reads it
                check(options[o.name])
            options.update(o.implies)


def convert(
    raw: Mapping[str, Any], extended: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Command-line values (field name -> the text, flag, count or list given; None or ()
    when not given) and ``-o`` lists -> (field name -> value, warnings). Each value is read
    by its setting's own `parse`."""
    options: dict[str, Any] = {}
    warnings: list[str] = []
    for name, given in raw.items():
        if given is None or given == ():
            continue
        o = OPTIONS[name]
        if o.take == COUNT:
            if not given:
                continue
            options[name] = int(given)
        elif o.take == FLAG:
            if not given:
                continue
            options[name] = not o.default
        else:
            options[name] = o.parse(given, o.what)
        options.update(o.implies)
    for spec in extended:
        apply_extended(options, spec, warnings)
    for rule in GIVEN_RULES:
        rule(options, extended)
    return options, warnings


def _tcp_port_follows_udp(options: dict[str, Any], extended: tuple[str, ...]) -> None:
    """memcached: -U without -p listens for TCP on the UDP port too."""
    if options.get("udp_port") and "port" not in options:
        options["port"] = options["udp_port"]


def _large_items_halve_chunk_max(options: dict[str, Any], extended: tuple[str, ...]) -> None:
    """memcached: -I past 1 MB makes slab_chunk_max half a page unless ``-o
    slab_chunk_max`` itself was given (no_chunked_items and no_modern, which set a whole
    page, do not count)."""
    given = any(p.partition("=")[0] == "slab_chunk_max" for o in extended for p in o.split(","))
    if options.get("item_size_max", MB) > MB and not given and "slab_chunk_max" in options:
        options["slab_chunk_max"] = MB // 2


def authfile_unreadable(path: str, reason: str) -> str:
    """memcached's words for a -Y file it cannot open (`reason`: strerror's)."""
    return f"Could not open authfile [{path}] for reading, error {reason}"


def _auth_file_given_empty(options: dict[str, Any], extended: tuple[str, ...]) -> None:
    """``-Y ""`` (a unit file's ``-Y $AUTHFILE`` with the variable unset): memcached fails
    to open it and does not start; read as no -Y it served everyone."""
    if options.get("auth_file") == "":
        raise SettingsError(authfile_unreadable("", os.strerror(errno.ENOENT)), code=1)


#: rules on what was given, before the defaults fill the rest (memcached's, after getopt)
GIVEN_RULES: tuple[Callable[[dict[str, Any], tuple[str, ...]], None], ...] = (
    _tcp_port_follows_udp,
    _large_items_halve_chunk_max,
    _auth_file_given_empty,
)


# ---- rules between settings (memcached.c main, after the options are read) ----


def _item_size_within_memory(s: Settings) -> None:
    if s.memory_limit <= 0 or s.item_size_max > s.memory_limit // 2:
        raise SettingsError("Cannot set item size limit higher than 1/2 of memory max.")
    if s.item_size_max > 1024 * MB:
        raise SettingsError("Cannot set item size limit higher than a gigabyte.")


def _slab_chunk_max_fits(s: Settings) -> None:
    """memcached's three checks on -o slab_chunk_max, in its order and words."""
    chunk, item, page = s.slab_chunk_max, s.item_size_max, s.slab_page_size
    if chunk < KB:
        # memcached takes any size (and crashes on 0); mcached's chunks hold a 48-byte
        # item header, so it keeps the floor -I has, which the kilobytes it once read
        # here had too
        raise SettingsError("slab_chunk_max cannot be less than 1024 bytes.")
    if chunk > item:
        raise SettingsError(
            f"slab_chunk_max (bytes: {chunk}) cannot be larger than -I (item_size_max {item})"
        )
    if item % chunk != 0:
        raise SettingsError(
            f"-I (item_size_max: {item}) must be evenly divisible by slab_chunk_max "
            f"(bytes: {chunk})"
        )
    if page % chunk != 0:
        raise SettingsError(
            f"slab_chunk_max (bytes: {chunk}) must divide evenly into {page} (slab_page_size)"
        )


def _lru_shares(s: Settings) -> None:
    if s.hot_lru_pct + s.warm_lru_pct > 80:
        raise SettingsError("hot_lru_pct + warm_lru_pct cannot be more than 80% combined")


def _temp_lru_needs_maintainer(s: Settings) -> None:
    if s.temp_lru and not s.lru_maintainer:
        raise SettingsError("temporary_ttl requires lru_maintainer to be enabled")


def _no_udp_with_auth(s: Settings) -> None:
    if s.auth_file and s.udp_port:
        raise SettingsError("Cannot use UDP with ascii authentication enabled (-U 0 to disable)")


def _listener_protocols(s: Settings) -> set[str]:
    """The protocols -l's ``proto[...]:`` prefixes give listeners (a malformed prefix is
    refused when the daemon binds it, in memcached's words)."""
    protocols = set()
    for spec in s.listen:
        try:
            protocols.add(split_listen(spec).protocol)
        except ValueError:
            pass
    return protocols - {""}


def _sasl_is_binary(s: Settings) -> None:
    """memcached's words: SASL rides on the binary protocol alone, -Y on the ascii one. A
    listener's ``proto[...]:`` is held to the same rule as -B: memcached lets it through and
    serves that listener with no authentication at all (mcached refuses to start)."""
    given = _listener_protocols(s) | ({s.protocol} - {""})
    if s.sasl and given - {"binary"}:
        raise SettingsError("ERROR: You cannot allow the ASCII protocol while using SASL.")
    if s.sasl and s.udp_port:
        raise SettingsError("ERROR: Cannot enable UDP while using binary SASL authentication.")
    if s.sasl and s.auth_file:
        raise SettingsError(
            "-S (SASL, binary protocol) and -Y (ascii authentication) exclude each other"
        )
    if s.auth_file and given - {"ascii"}:
        raise SettingsError(
            "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens."
        )


def _notls_needs_ssl(s: Settings) -> None:
    if not s.ssl_enabled and any(h.startswith("notls:") for h in s.listen):
        raise SettingsError("'notls' option is valid only when SSL is enabled", code=71)


def _one_cluster_source(s: Settings) -> None:
    if s.cluster_file and s.cluster_dns:
        raise SettingsError(
            "--cluster-file and --cluster-dns exclude each other: pick one source of membership"
        )


RULES: tuple[Callable[[Settings], None], ...] = (
    _item_size_within_memory,
    _slab_chunk_max_fits,
    _lru_shares,
    _temp_lru_needs_maintainer,
    _no_udp_with_auth,
    _sasl_is_binary,
    _notls_needs_ssl,
    _one_cluster_source,
)


def validate(s: Settings) -> None:
    """memcached's start-up checks, with its messages (``memcached.c`` ``main``): every
    setting's own bounds, in declaration order, then the rules between settings. A default
    is not checked (memcached checks what it is given: hashpower's is 0, below its 12)."""
    for o in OPTIONS.values():
        value = getattr(s, o.name)
        if value == o.default and o.default is not None:
            continue
        for check in o.checks:
            check(value)
    for rule in RULES:
        rule(s)


#: memcached 1.6.18's ``stats settings`` rows, in its order (``process_stat_settings``)
STATS_SETTINGS_ORDER = tuple(
    """
    maxbytes maxconns tcpport udpport inter verbosity oldest evictions domain_socket umask
    shutdown_command growth_factor chunk_size num_threads num_threads_per_udp
    stat_key_prefix detail_enabled reqs_per_event cas_enabled tcp_backlog binding_protocol
    auth_enabled_sasl auth_enabled_ascii item_size_max maxconns_fast hashpower_init
    slab_reassign slab_automove slab_automove_ratio slab_automove_window slab_chunk_max
    lru_crawler lru_crawler_sleep lru_crawler_tocrawl tail_repair_time flush_enabled
    dump_enabled hash_algorithm lru_maintainer_thread lru_segmented hot_lru_pct warm_lru_pct
    hot_max_factor warm_max_factor temp_lru temporary_ttl idle_timeout watcher_logbuf_size
    worker_logbuf_size read_buf_mem_limit track_sizes inline_ascii_response ext_item_size
    ext_item_age ext_low_ttl ext_recache_rate ext_wbuf_size ext_compact_under ext_drop_under
    ext_max_sleep ext_max_frag slab_automove_freeratio ext_drop_unread ssl_enabled
    ssl_chain_cert ssl_key ssl_verify_mode ssl_keyformat ssl_ciphers ssl_ca_cert ssl_wbuf_size
    ssl_session_cache ssl_kernel_tls ssl_min_version num_napi_ids memory_file
    """.split()
)

#: rows for what mcached has no setting of: its value (the interpreter's hash, no
#: warm-restart file, no NAPI ids), or memcached's where the setting does nothing there
#: either (inline_ascii_response)
FIXED_SETTINGS_ROWS: dict[str, str] = {
    "hash_algorithm": sys.hash_info.algorithm,
    "inline_ascii_response": "no",
    "num_napi_ids": "(null)",
    "memory_file": "(null)",
}


def binding_protocol(s: Settings) -> str:
    """The protocol connections may speak: -B's, else memcached's choice (binary with -S,
    ascii with -Y, auto-negotiated from each connection's first byte otherwise). The daemon
    sets it in its settings, so ``stats settings`` says what it serves."""
    if s.protocol:
        return s.protocol
    if s.sasl:
        return "binary"
    if s.auth_file:
        return "ascii"
    return "auto"


STAT_VALUE_MAX = 126


def threads_per_udp(s: Settings) -> int:
    """memcached's num_threads_per_udp: a UDP connection for each worker thread on each UDP
    socket, but one when -l lists several addresses (mcached's every worker serves each
    socket either way: this is what stats counts and shows)."""
    return 1 if len(s.listen) > 1 else s.threads


def stats_settings(s: Settings) -> Iterator[tuple[str, str]]:
    """``stats settings`` lines: memcached's rows in its order, each setting's from its
    field, the others from `FIXED_SETTINGS_ROWS`; then any row memcached does not have."""
    rows = dict(FIXED_SETTINGS_ROWS)
    rows["num_threads_per_udp"] = str(threads_per_udp(s))
    for o in OPTIONS.values():
        if o.stat:
            rows[o.stat] = o.show(getattr(s, o.name))
    # memcached prints each row into a buffer of STAT_VAL_LEN (128) bytes, less one, and
    # the NUL: a longer value (a ratio of 1e126, a long -l list) is cut to 126 bytes
    for name in STATS_SETTINGS_ORDER:
        yield name, rows.pop(name)[:STAT_VALUE_MAX]
    for name, value in rows.items():
        yield name, value[:STAT_VALUE_MAX]
