"""Tunables: memcached's flags, defaults, bounds and ``stats settings`` names, declared once.

Each `Settings` field carries its command-line flag, help text, unit and the name
``stats settings`` reports it under in its `metadata`; `cli.py` builds the click options,
``--help`` and the ``-o`` table from it, and `stats_settings()` generates the stat lines, so
the three never drift (memcached keeps ``settings_init`` and ``process_stat_settings`` in step
by hand). Defaults are memcached 1.6's, except ``listen``: 127.0.0.1, as Debian ships it.

`validate()` applies memcached's bounds and answers with memcached's own messages.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class SettingsError(Exception):
    """A bad flag value: the message is printed and the daemon exits with `code`."""

    def __init__(self, message: str, code: int = 64) -> None:
        super().__init__(message)
        self.code = code


def opt(
    flag: str | None,
    help: str,
    *,
    long: str | None = None,
    stat: str | None = None,
    extended: bool = False,
    metavar: str | None = None,
) -> dict[str, Any]:
    """Field metadata: `flag`/`long` on the command line, or an ``-o`` key when `extended`."""
    return {
        "flag": flag,
        "long": long,
        "help": help,
        "stat": stat,
        "extended": extended,
        "metavar": metavar,
    }


def default_threads() -> int:
    """Workers when -t is not given: memcached's 4, but no more than the machine's cores.

    Each worker runs Python at the same time as the others (a process each under the GIL,
    a thread each on a free-threaded interpreter), so more workers than cores only adds
    switching between them.
    """
    return max(1, min(4, os.cpu_count() or 1))


KB = 1024
MB = 1024 * 1024


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
        ),
    )
    listen: tuple[str, ...] = field(
        default=("127.0.0.1",),
        metadata=opt(
            "-l",
            "interfaces to listen on, comma separated (default: 127.0.0.1)",
            long="--listen",
            stat="inter",
            metavar="<addr>",
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
        ),
    )
    evictions: bool = field(
        default=True,
        metadata=opt(
            "-M",
            "return error on memory exhausted instead of evicting",
            long="--disable-evictions",
            stat="evictions",
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
        ),
    )
    verbose: int = field(
        default=0,
        metadata=opt(
            "-v",
            "verbose: -v errors and warnings, -vv client connections and commands, -vvv everything",
            long="--verbose",
            stat="verbosity",
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
        ),
    )
    threads: int = field(
        default_factory=lambda: default_threads(),
        metadata=opt(
            "-t",
            "number of worker threads (default: 1 under the GIL, where more threads only "
            "fight over it and measured at half the throughput; 4, memcached's default, on a "
            "free-threaded Python)",
            long="--threads",
            stat="num_threads",
            metavar="<num>",
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
        ),
    )
    protocol: str = field(
        default="ascii",
        metadata=opt(
            "-B",
            "protocol: ascii (the only one served; binary and auto are refused)",
            long="--protocol",
            stat="binding_protocol",
            metavar="<name>",
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
        ),
    )
    detail_enabled: bool = field(default=False, metadata=opt(None, "", stat="detail_enabled"))
    flush_enabled: bool = field(
        default=True,
        metadata=opt(
            "-F", "disable flush_all command", long="--disable-flush-all", stat="flush_enabled"
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
        default="", metadata=opt("-P", "save PID in <file>", long="--pidfile", metavar="<file>")
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
        metadata=opt("-k", "lock down all paged memory (mlockall)", long="--lock-memory"),
    )
    log_file: str = field(
        default="",
        metadata=opt(
            None,
            "write the log here instead of stderr; reopened on SIGHUP (logrotate)",
            long="--log-file",
            metavar="<file>",
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
        ),
    )
    # ---- extended options (-o key=value, memcached's names) ----
    maxconns_fast: bool = field(
        default=True,
        metadata=opt(
            None,
            "immediately close new connections after limit (default: enabled)",
            stat="maxconns_fast",
            extended=True,
        ),
    )
    idle_timeout: int = field(
        default=0,
        metadata=opt(
            None,
            "timeout for idle connections in seconds (default: 0, no timeout)",
            stat="idle_timeout",
            extended=True,
        ),
    )
    slab_chunk_max: int = field(
        default=512 * KB,
        metadata=opt(
            None,
            "maximum slab chunk size in kilobytes (default: 512)",
            stat="slab_chunk_max",
            extended=True,
        ),
    )
    slab_reassign: bool = field(
        default=True,
        metadata=opt(
            None,
            "allow moving slab pages between classes (default: enabled)",
            stat="slab_reassign",
            extended=True,
        ),
    )
    slab_automove: int = field(
        default=1,
        metadata=opt(
            None,
            "0 off, 1 move pages slowly to where evictions are, 2 aggressively (default: 1)",
            stat="slab_automove",
            extended=True,
        ),
    )
    lru_crawler: bool = field(
        default=True,
        metadata=opt(
            None,
            "background thread that reclaims expired items (default: enabled)",
            stat="lru_crawler",
            extended=True,
        ),
    )
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
    ssl_chain_cert: str = field(
        default="",
        metadata=opt(
            None, "certificate chain file in PEM format", stat="ssl_chain_cert", extended=True
        ),
    )
    ssl_key: str = field(
        default="",
        metadata=opt(
            None, "private key, if not part of the ssl_chain_cert", stat="ssl_key", extended=True
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
        ),
    )
    ssl_ciphers: str = field(
        default="",
        metadata=opt(
            None, "OpenSSL cipher list for TLS 1.2 and older", stat="ssl_ciphers", extended=True
        ),
    )
    ssl_ca_cert: str = field(
        default="",
        metadata=opt(
            None,
            "PEM file of the CAs client certificates are verified against",
            stat="ssl_ca_cert",
            extended=True,
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
        ),
    )
    ssl_min_version: int = field(
        default=2,
        metadata=opt(
            None,
            "minimum protocol version: 0 tlsv1.0, 1 tlsv1.1, 2 tlsv1.2, 3 tlsv1.3 (default: 2)",
            stat="ssl_min_version",
            extended=True,
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
        ),
    )

    @property
    def slab_page_size(self) -> int:
        """1 MB: memcached 1.6 keeps 1 MB pages and chains larger items across chunks."""
        return MB

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# memcached-internal -o keys: tuning for machinery mcached does not have (extstore, the hash
# table's growth, the LRU maintainer's thresholds, log buffers). Accepted, with a warning, so
# that an existing memcached command line starts; they change nothing here.
IGNORED_EXTENDED = frozenset(
    """
    hashpower tail_repair_time hash_algorithm lru_crawler_sleep lru_crawler_tocrawl
    read_buf_mem_limit resp_obj_mem_limit lru_maintainer no_lru_maintainer hot_lru_pct
    warm_lru_pct hot_max_factor warm_max_factor temporary_ttl watcher_logbuf_size
    worker_logbuf_size no_hashexpand modern no_modern sock_cookie_id lru_segmented
    no_lru_segmented inline_ascii_response no_inline_ascii_response slab_automove_ratio
    slab_automove_window slab_automove_freeratio large_memory_pages
    ext_path ext_page_size ext_wbuf_size ext_threads ext_io_threadcount ext_item_size
    ext_item_age ext_low_ttl ext_drop_unread ext_recache_rate ext_compact_under ext_drop_under
    ext_max_frag ext_max_sleep ext_path_sync ssl_wbuf_size ssl_kernel_tls ssl_keyformat
    """.split()
)


def _bool_option(name: str) -> tuple[str, bool] | None:
    """``no_<name>`` turns an enabled-by-default boolean off (memcached's convention)."""
    if name.startswith("no_"):
        return name[3:], False
    return name, True


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


def _int(text: str, what: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise SettingsError(f"Invalid value for {what}: {text!r}") from None


def apply_extended(options: dict[str, Any], spec: str, warn: list[str]) -> None:
    """Parse one ``-o`` comma list into `options` (field name -> value); `warn` collects notes."""
    fields = {f.name: f for f in dataclasses.fields(Settings) if f.metadata.get("extended")}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        if name in IGNORED_EXTENDED:
            warn.append(f"-o {name}: memcached-internal option, accepted and ignored")
            continue
        key, enabled = _bool_option(name) or (name, True)
        f = fields.get(key) if key in fields else fields.get(name)
        if f is None:
            raise SettingsError(f'Illegal suboption "{name}"', code=1)
        if name.startswith("ssl_"):
            _apply_ssl(options, f, name, value)
        elif f.type in ("bool", bool):
            if value:
                raise SettingsError(f"-o {name} takes no value", code=1)
            options[f.name] = enabled if key == f.name else True
        elif name == "slab_chunk_max":
            # memcached takes kilobytes here (bytes in its 1.4 releases when larger than 1m).
            if not value:
                raise SettingsError("-o slab_chunk_max needs a value", code=1)
            n = parse_size(value, "slab_chunk_max")
            options[f.name] = n * KB if value.strip().isdigit() else n
        else:
            if not value or key != name:
                raise SettingsError(f"-o {name} needs a value: {name}=<num>", code=1)
            options[f.name] = _int(value, name)


# ssl_verify_mode -> the OpenSSL SSL_VERIFY_* flags memcached stores and reports: NONE,
# PEER, PEER|FAIL_IF_NO_PEER_CERT, PEER|FAIL_IF_NO_PEER_CERT|CLIENT_ONCE
SSL_VERIFY_FLAGS = (0, 1, 3, 7)
SSL_VERSIONS = ("tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3")


def _apply_ssl(options: dict[str, Any], f: dataclasses.Field[Any], name: str, value: str) -> None:
    """memcached's ssl_* suboptions, with its messages."""
    if f.type in ("bool", bool):
        options[f.name] = not name.startswith("no_")  # memcached ignores a value here
        return
    if not value:
        raise SettingsError(f"Missing {name} argument", code=1)
    if f.type in ("str", str):
        options[f.name] = value
        return
    try:
        n = int(value, 10)
    except ValueError:
        raise SettingsError(f"could not parse argument to {name}", code=1) from None
    if not 0 <= n <= 3:
        raise SettingsError(f"Invalid {name}. Use help to see valid options.", code=1)
    options[f.name] = n


def validate(s: Settings) -> None:
    """memcached's start-up checks, with its messages (``memcached.c`` ``main``)."""
    if not 0 <= s.port <= 65535:
        raise SettingsError(f"ERROR: Invalid port number {s.port}.")
    if not 0 <= s.udp_port <= 65535:
        raise SettingsError(f"ERROR: Invalid port number {s.udp_port}.")
    if s.threads <= 0:
        raise SettingsError("Number of threads must be greater than 0", code=1)
    if s.threads > 64:
        raise SettingsError("Number of threads must be 64 or fewer", code=1)
    if s.max_connections <= 0:
        raise SettingsError("Maximum connections must be greater than 0", code=1)
    if not s.growth_factor > 1.0 or math.isinf(s.growth_factor):
        raise SettingsError("Factor must be greater than 1", code=1)
    if s.chunk_size <= 0:
        raise SettingsError("Chunk size must be greater than 0", code=1)
    if s.reqs_per_event <= 0:
        raise SettingsError("Number of requests per event must be greater than 0", code=1)
    if s.tcp_backlog <= 0:
        raise SettingsError("Listen backlog must be greater than 0", code=1)
    if s.protocol not in ("ascii",):
        if s.protocol in ("binary", "auto"):
            raise SettingsError(
                f"Binding protocol {s.protocol!r} is not supported: mcached speaks the ascii "
                "protocol only (-B ascii)"
            )
        raise SettingsError(
            f"Invalid value for binding protocol: {s.protocol}\n"
            " -- should be one of auto, binary, or ascii"
        )
    if s.item_size_max < KB:
        raise SettingsError("Item max size cannot be less than 1024 bytes.")
    if s.item_size_max > 1024 * MB:
        raise SettingsError("Cannot set item size limit higher than 1 gigabytes.")
    if s.memory_limit <= 0 or s.item_size_max > s.memory_limit // 2:
        raise SettingsError("Cannot set item size limit higher than 1/2 of memory max.")
    if s.slab_chunk_max > s.item_size_max:
        raise SettingsError(
            f"slab_chunk_max (bytes: {s.slab_chunk_max}) cannot be larger than -I "
            f"(item_size_max {s.item_size_max})"
        )
    if s.slab_page_size % s.slab_chunk_max != 0:
        raise SettingsError(
            f"slab_chunk_max (bytes: {s.slab_chunk_max}) must be an even divisor of "
            f"slab_page_size (bytes: {s.slab_page_size})"
        )
    if s.slab_automove not in (0, 1, 2):
        raise SettingsError("slab_automove must be between 0 and 2", code=1)
    if s.idle_timeout < 0:
        raise SettingsError("idle_timeout must be 0 or more", code=1)
    if not s.listen:
        raise SettingsError("-l needs at least one interface")
    if s.auth_file and s.udp_port:
        raise SettingsError("Cannot use UDP with ascii authentication enabled (-U 0 to disable)")
    if not 0 <= s.ssl_verify_mode <= 3:
        raise SettingsError("Invalid ssl_verify_mode. Use help to see valid options.", code=1)
    if not 0 <= s.ssl_min_version <= 3:
        raise SettingsError("Invalid ssl_min_version. Use help to see valid options.", code=1)
    if not s.ssl_enabled and any(h.startswith("notls:") for h in s.listen):
        raise SettingsError("'notls' option is valid only when SSL is enabled", code=71)
    if not 0 <= s.stall_timeout < math.inf:
        raise SettingsError("--stall-timeout must be 0 (off) or a number of seconds")
    if s.cluster_file and s.cluster_dns:
        raise SettingsError(
            "--cluster-file and --cluster-dns exclude each other: pick one source of membership"
        )
    if s.cluster_dns:
        name, sep, port = s.cluster_dns.rpartition(":")
        if not sep or not name.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"--cluster-dns wants name:port, got {s.cluster_dns!r}")
    if not 0 < s.cluster_dns_interval < math.inf:
        raise SettingsError("--cluster-dns-interval must be a positive number of seconds")
    if not 0 <= s.cluster_health_interval < math.inf:
        raise SettingsError("--cluster-health-interval must be 0 (off) or a number of seconds")
    if s.cluster_health_failures < 1 or s.cluster_health_rise < 1:
        raise SettingsError("--cluster-health-failures and --cluster-health-rise must be 1 or more")


def _stat_value(f: dataclasses.Field[Any], value: Any) -> str:
    if f.name == "evictions":
        return "on" if value else "off"
    if f.name == "listen":
        return ",".join(value)
    if f.name == "protocol":
        return "ascii"
    if f.name == "auth_file":
        return value or "no"  # memcached prints the file's path when -Y is on
    if f.name in ("ssl_chain_cert", "ssl_key"):
        return value or "(null)"
    if f.name in ("ssl_ciphers", "ssl_ca_cert"):
        return value or "NULL"
    if f.name == "ssl_verify_mode":
        return str(SSL_VERIFY_FLAGS[value])
    if f.name == "ssl_min_version":
        return SSL_VERSIONS[value]
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def stats_settings(s: Settings) -> Iterator[tuple[str, str]]:
    """``stats settings`` lines: every field that names a stat, in declaration order."""
    for f in dataclasses.fields(Settings):
        name = f.metadata.get("stat")
        if name:
            yield name, _stat_value(f, getattr(s, f.name))
