"""Reply lines, encoded once.

Every reply memcached sends is either a fixed line (below) or one of the few shapes built by
the functions here. Handlers append these bytes to the connection's output list; the server
joins a whole batch into one send.
"""

from __future__ import annotations

CRLF = b"\r\n"

STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
END = b"END\r\n"
OK = b"OK\r\n"
RESET = b"RESET\r\n"
ERROR = b"ERROR\r\n"

CLIENT_ERROR_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
CLIENT_ERROR_DELETE_FORMAT = (
    b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
)
CLIENT_ERROR_BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
CLIENT_ERROR_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
CLIENT_ERROR_NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
CLIENT_ERROR_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
CLIENT_ERROR_DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
CLIENT_ERROR_FLUSH_DISABLED = b"CLIENT_ERROR flush_all not allowed\r\n"
CLIENT_ERROR_SHUTDOWN_MODE = b"CLIENT_ERROR invalid shutdown mode\r\n"
SERVER_ERROR_TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
SERVER_ERROR_OOM_STORE = b"SERVER_ERROR out of memory storing object\r\n"
SERVER_ERROR_OOM = b"SERVER_ERROR out of memory\r\n"
ERROR_SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"
MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
MEMLIMIT_NOT_MB = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"
MEMLIMIT_FAILED = b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n"
BADCLASS = b"BADCLASS invalid class id\r\n"
CRAWLER_ERROR = b"ERROR an unknown error happened\r\n"  # lru_crawler crawl hash
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
# -Y, ASCII authentication (memcached 1.6's proto_text.c)
CLIENT_ERROR_UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
CLIENT_ERROR_AUTH_FAILURE = b"CLIENT_ERROR authentication failure\r\n"
CLIENT_ERROR_AUTH_FORMAT = b"CLIENT_ERROR bad authentication token format\r\n"
CLIENT_ERROR_BAD_TERMINATION = b"CLIENT_ERROR bad command line termination\r\n"
# refresh_certs without -Z (memcached's tls.c)
ERROR_TLS_NOT_ENABLED = b"Error TLS not enabled\r\n"


def value_header(key: bytes, flags: int, length: int, cas: int | None = None) -> bytes:
    """``VALUE <key> <flags> <bytes> [<cas unique>]\\r\\n``."""
    if cas is None:
        return b"VALUE " + key + value_suffix(flags, length)
    return b"VALUE %b %d %d %d\r\n" % (key, flags, length, cas)


# The " 0 <bytes>\r\n" end of a VALUE line without flags, by value length. Formatting
# the two numbers was a third of making a get reply, and a cache serves few distinct
# lengths: `value_suffix` fills this as lengths are seen, up to VALUE_SUFFIX_MAX of them.
# Readers look it up first (hot path): ``ZERO_FLAGS_SUFFIX.get(n) if not flags else None``.
ZERO_FLAGS_SUFFIX: dict[int, bytes] = {}
VALUE_SUFFIX_MAX = 4096


def value_suffix(flags: int, length: int) -> bytes:
    """`` <flags> <bytes>\r\n``: the end of a VALUE line after its key (without CAS)."""
    suffix = b" %d %d\r\n" % (flags, length)
    if not flags and len(ZERO_FLAGS_SUFFIX) < VALUE_SUFFIX_MAX:
        ZERO_FLAGS_SUFFIX[length] = suffix
    return suffix


def stat_line(name: str, value: object) -> bytes:
    return b"STAT %b %b\r\n" % (name.encode(), str(value).encode())


def stats_block(pairs: list[tuple[str, object]]) -> bytes:
    """A whole ``stats`` reply: one STAT line per pair, then END."""
    return b"".join([stat_line(n, v) for n, v in pairs]) + END


def number(value: int) -> bytes:
    """incr/decr reply: the new value."""
    return b"%d\r\n" % value


def version(text: str) -> bytes:
    return b"VERSION %b\r\n" % text.encode()
