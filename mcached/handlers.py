"""What each verb means: command -> cache call -> reply bytes, and the counters.

The server looks each parsed command's type up in `Handlers.dispatch_table()` and calls the
handler with the command and the connection's `Session` (its output list and its worker's
counters). Replies are appended as bytes; the server joins one batch into one send.
``noreply`` is honoured here, with memcached's rule: errors sent through its ``out_string``
are hidden by ``noreply``, while out-of-memory errors (``out_errstring``) are always sent.

Hot path: `get` and the storage verbs run once per request, so they bind attributes to
locals and build replies from bytes pieces (measured cheaper than building reply objects;
`get` has its own one-key path, see there).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote_from_bytes

import psutil

from mcached import MEMCACHED_VERSION
from mcached.clock import Clock
from mcached.cluster.config import LEGACY_KEY
from mcached.errors import CloseConnection, Shutdown
from mcached.protocol import commands as c
from mcached.protocol import responses as r
from mcached.protocol.responses import ZERO_FLAGS_SUFFIX
from mcached.settings import Settings, stats_settings
from mcached.stats import Counters, PrefixStats, ordered
from mcached.storage.cache import Cache, Hit
from mcached.storage.results import DeltaResult, ReassignResult, StoreMode, StoreResult
from mcached.storage.slabs import SlabClasses, slab_class_sizes


class Session(Protocol):
    """What a handler needs from a connection (the server's Connection provides it)."""

    out: list[bytes | bytearray]  # a bytearray: a value copied out of the cache
    counters: Counters


class ServerInfo(Protocol):
    """Figures and hooks only the server and daemon have."""

    def general_stats(self) -> dict[str, Any]: ...

    def conns_stats(self) -> list[tuple[str, object]]: ...

    def all_counters(self) -> list[Counters]: ...

    def reset_stats(self) -> None: ...

    def set_verbosity(self, level: int) -> None: ...


STORE_REPLY = {
    StoreResult.STORED: r.STORED,
    StoreResult.NOT_STORED: r.NOT_STORED,
    StoreResult.EXISTS: r.EXISTS,
    StoreResult.NOT_FOUND: r.NOT_FOUND,
    StoreResult.TOO_LARGE: r.SERVER_ERROR_TOO_LARGE,
    StoreResult.NO_MEMORY: r.SERVER_ERROR_OOM_STORE,
}

STORE_MODE = {
    c.Set: StoreMode.SET,
    c.Add: StoreMode.ADD,
    c.Replace: StoreMode.REPLACE,
    c.Append: StoreMode.APPEND,
    c.Prepend: StoreMode.PREPEND,
    c.Cas: StoreMode.CAS,
}

MB = 1024 * 1024

# ``slabs reassign`` replies, memcached's words (proto_text.c process_slabs_reassign_command)
SLABS_REASSIGN_DISABLED = b"CLIENT_ERROR slab reassignment disabled\r\n"
REASSIGN_REPLY = {
    ReassignResult.OK: r.OK,
    ReassignResult.RUNNING: b"BUSY currently processing reassign request\r\n",
    ReassignResult.BADCLASS: b"BADCLASS invalid src or dst class id\r\n",
    ReassignResult.NOSPARE: b"NOSPARE source class has no spare pages\r\n",
    ReassignResult.SAME: b"SAME src and dst class are identical\r\n",
}


# A get reply of a value up to this size is joined into one piece; a larger value is sent
# as its own piece, never copied again.
INLINE_VALUE_MAX = 16 * 1024
VALUE_END = b"\r\nEND\r\n"  # what follows the value of a single-key get


def once_per_key(lookup: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`lookup`, remembered per key for one multiget. The cache copies a value out on every
    hit, so ``get k k k ...`` (a 1 MB line can name a key 500,000 times) would otherwise
    build 500,000 copies of it before the first byte is sent. A repeated key is served the
    value it had at its first lookup; the reply is one the same get could have produced."""
    seen: dict[bytes, Any] = {}

    def get(key: bytes) -> Any:
        try:
            return seen[key]
        except KeyError:
            hit = seen[key] = lookup(key)
            return hit

    return get


def per_key(lookup: Callable[[bytes], Any], keys: list[bytes]) -> Callable[[bytes], Any]:
    """The lookup for a multiget of `keys`: `once_per_key(lookup)` when a key repeats,
    else `lookup` itself (no wrapper call per key on the common path)."""
    if len(keys) > 1 and len(set(keys)) < len(keys):
        return once_per_key(lookup)
    return lookup


class Handlers:
    def __init__(
        self,
        cache: Cache,
        settings: Settings,
        info: ServerInfo,
        clock: Clock | None = None,
        discovery: Any = None,
        authfile: Any = None,
        tls: Any = None,
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.info = info
        self.clock = clock or cache.clock
        self.discovery = discovery
        # -Y: an `mcached.auth.AuthFile` (check(user, password) -> bool); the parser only
        # sends `Auth` commands when it is set
        self.authfile = authfile
        # -Z: the server's TLS context holder (refresh() -> None, or an error line)
        self.tls = tls
        self.classes = SlabClasses(
            slab_class_sizes(settings.chunk_size, settings.growth_factor, settings.slab_chunk_max)
        )
        self._process = psutil.Process()
        self.detail = PrefixStats(settings.stat_key_prefix.encode(), settings.detail_enabled)
        self._table: dict[type[c.Command], Callable[[Any, Session], None]] = {
            c.Get: self.get,
            c.Gets: self.gets,
            c.Gat: self.gat,
            c.Gats: self.gat,
            c.Set: self.store,
            c.Add: self.store,
            c.Replace: self.store,
            c.Append: self.store,
            c.Prepend: self.store,
            c.Cas: self.store,
            c.TooLarge: self.too_large,
            c.BadDataChunk: self.bad_data_chunk,
            c.Delete: self.delete,
            c.Incr: self.delta,
            c.Decr: self.delta,
            c.Touch: self.touch,
            c.FlushAll: self.flush_all,
            c.Version: self.version,
            c.Verbosity: self.verbosity,
            c.Quit: self.quit,
            c.ShutdownCmd: self.shutdown,
            c.Stats: self.stats,
            c.CacheMemlimit: self.cache_memlimit,
            c.LruCrawler: self.lru_crawler,
            c.SlabsReassign: self.slabs_reassign,
            c.SlabsAutomove: self.slabs_automove,
            c.ConfigGet: self.config,
            c.ConfigSet: self.config,
            c.ConfigDelete: self.config,
            c.Invalid: self.invalid,
            c.Auth: self.auth,
            c.RefreshCerts: self.refresh_certs,
        }

    def dispatch_table(self) -> dict[type[c.Command], Callable[[Any, Session], None]]:
        """What serves each command type. The server looks a command's type up here and
        calls the handler itself (a wrapper that did the lookup cost a call per request)."""
        return self._table

    # ---- retrieval ----

    def get(self, cmd: c.Get, s: Session) -> None:
        keys = cmd.keys
        if len(keys) != 1 or self.detail.enabled:
            self._get_many(keys, s)
            return
        # Hot path: one key, the commonest request a cache serves. The reply of a small
        # value is made as one piece (header, value, CRLF and END joined at once), which the
        # connection then sends as it is; callgrind counts ~9% fewer instructions per get
        # than the general loop below.
        key = keys[0]
        hit = self.cache.get(key)
        ctr = s.counters
        ctr.cmd_get += 1
        if hit is None:
            if key == LEGACY_KEY and self.discovery is not None:
                s.out += (self.discovery.legacy_value(), r.END)
                ctr.get_hits += 1
            else:
                s.out.append(r.END)
                ctr.get_misses += 1
            return
        ctr.get_hits += 1
        value, flags, _ = hit
        n = len(value)
        suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
        if suffix is None:
            suffix = r.value_suffix(flags, n)
        if n <= INLINE_VALUE_MAX:
            s.out.append(b"".join((b"VALUE ", key, suffix, value, VALUE_END)))
        else:
            s.out += (b"VALUE " + key + suffix, value, VALUE_END)  # a large value: uncopied

    def _lookup(self, lookup: Callable[[bytes], Hit | None], keys: list[bytes]) -> Any:
        """What a multiget calls per key: `lookup`, once per key if keys repeat (`per_key`),
        and telling `stats detail` of each hit or miss while it is on."""
        lookup = per_key(lookup, keys)
        if not self.detail.enabled:
            return lookup
        record = self.detail.record_get

        def recorded(key: bytes) -> Hit | None:
            hit: Hit | None = lookup(key)
            record(key, hit is not None)
            return hit

        return recorded

    def _get_many(self, keys: list[bytes], s: Session) -> None:
        out = s.out
        cache_get = self._lookup(self.cache.get, keys)
        hits = 0
        for key in keys:
            hit = cache_get(key)
            if hit is not None:
                value, flags, _ = hit
                n = len(value)
                suffix = ZERO_FLAGS_SUFFIX.get(n) if not flags else None
                if suffix is None:
                    suffix = r.value_suffix(flags, n)
                out += (b"VALUE ", key, suffix, value, b"\r\n")
                hits += 1
            elif key == LEGACY_KEY and self.discovery is not None:
                # Auto discovery on engines before 1.4.14. Checked on a miss only, so a hit
                # pays nothing and a miss one bytes comparison.
                out.append(self.discovery.legacy_value())
                hits += 1
        out.append(r.END)
        ctr = s.counters
        n = len(keys)
        ctr.cmd_get += n
        ctr.get_hits += hits
        ctr.get_misses += n - hits

    def gets(self, cmd: c.Gets, s: Session) -> None:
        out = s.out
        cache_get = self._lookup(self.cache.get, cmd.keys)
        hits = 0
        for key in cmd.keys:
            hit = cache_get(key)
            if hit is not None:
                value, flags, cas = hit
                out += (b"VALUE %b %d %d %d\r\n" % (key, flags, len(value), cas), value, b"\r\n")
                hits += 1
        out.append(r.END)
        ctr = s.counters
        n = len(cmd.keys)
        ctr.cmd_get += n
        ctr.get_hits += hits
        ctr.get_misses += n - hits

    def gat(self, cmd: c.Gat, s: Session) -> None:
        append = s.out.append
        with_cas = type(cmd) is c.Gats
        exptime = cmd.exptime
        get_and_touch = self.cache.get_and_touch
        lookup = self._lookup(lambda key: get_and_touch(key, exptime), cmd.keys)
        hits = 0
        for key in cmd.keys:
            hit = lookup(key)
            if hit is not None:
                value, flags, cas = hit
                append(r.value_header(key, flags, len(value), cas if with_cas else None))
                append(value)
                append(b"\r\n")
                hits += 1
        append(r.END)
        ctr = s.counters
        n = len(cmd.keys)
        # memcached counts gat/gats as touches only (cmd_touch, touch_hits/misses)
        ctr.cmd_touch += n
        ctr.touch_hits += hits
        ctr.touch_misses += n - hits

    # ---- storage ----

    def store(self, cmd: c.Store, s: Session) -> None:
        mode = STORE_MODE[type(cmd)]
        cas = cmd.cas_unique if isinstance(cmd, c.Cas) else 0
        result = self.cache.store(mode, cmd.key, cmd.value, cmd.flags, cmd.exptime, cas)
        ctr = s.counters
        ctr.cmd_set += 1
        if mode is StoreMode.CAS:
            if result is StoreResult.STORED:
                ctr.cas_hits += 1
            elif result is StoreResult.EXISTS:
                ctr.cas_badval += 1
            elif result is StoreResult.NOT_FOUND:
                ctr.cas_misses += 1
        if result is StoreResult.NO_MEMORY:
            ctr.store_no_memory += 1
        elif result is StoreResult.TOO_LARGE:
            ctr.store_too_large += 1
        if self.detail.enabled:
            self.detail.record_set(cmd.key)
        if not cmd.noreply:  # memcached 1.6 hides every reply, errors too, under noreply
            s.out.append(STORE_REPLY[result])

    def too_large(self, cmd: c.TooLarge, s: Session) -> None:
        s.counters.store_too_large += 1
        if cmd.mode == b"set":
            # memcached drops the old value so a failed set never leaves stale data behind
            self.cache.unlink(cmd.key)
        if not cmd.noreply:
            s.out.append(r.SERVER_ERROR_TOO_LARGE)

    def bad_data_chunk(self, cmd: c.BadDataChunk, s: Session) -> None:
        s.counters.cmd_set += 1
        if not cmd.noreply:
            s.out.append(r.CLIENT_ERROR_BAD_CHUNK)

    # ---- other keyed commands ----

    def delete(self, cmd: c.Delete, s: Session) -> None:
        if self.detail.enabled:
            self.detail.record_delete(cmd.key)
        if self.cache.delete(cmd.key):
            s.counters.delete_hits += 1
            reply = r.DELETED
        else:
            s.counters.delete_misses += 1
            reply = r.NOT_FOUND
        if not cmd.noreply:
            s.out.append(reply)

    def delta(self, cmd: c.Incr, s: Session) -> None:
        incr = type(cmd) is c.Incr
        if incr:
            result, value = self.cache.incr(cmd.key, cmd.delta)
        else:
            result, value = self.cache.decr(cmd.key, cmd.delta)
        ctr = s.counters
        if result is DeltaResult.OK:
            if incr:
                ctr.incr_hits += 1
            else:
                ctr.decr_hits += 1
            reply = r.number(value)
        elif result is DeltaResult.NOT_FOUND:
            if incr:
                ctr.incr_misses += 1
            else:
                ctr.decr_misses += 1
            reply = r.NOT_FOUND
        elif result is DeltaResult.NON_NUMERIC:
            reply = r.CLIENT_ERROR_NON_NUMERIC
        else:
            reply = r.SERVER_ERROR_OOM
        if not cmd.noreply:
            s.out.append(reply)

    def touch(self, cmd: c.Touch, s: Session) -> None:
        s.counters.cmd_touch += 1
        if self.cache.touch(cmd.key, cmd.exptime):
            s.counters.touch_hits += 1
            reply = r.TOUCHED
        else:
            s.counters.touch_misses += 1
            reply = r.NOT_FOUND
        if not cmd.noreply:
            s.out.append(reply)

    # ---- server-wide ----

    def flush_all(self, cmd: c.FlushAll, s: Session) -> None:
        s.counters.cmd_flush += 1
        if not self.settings.flush_enabled:
            reply = r.CLIENT_ERROR_FLUSH_DISABLED
        elif cmd.delay is None:
            reply = r.CLIENT_ERROR_EXPTIME
        else:
            self.cache.flush_all(cmd.delay)
            reply = r.OK
        if not cmd.noreply:
            s.out.append(reply)

    def version(self, cmd: c.Version, s: Session) -> None:
        s.out.append(r.version(MEMCACHED_VERSION))

    def verbosity(self, cmd: c.Verbosity, s: Session) -> None:
        if cmd.level is not None:
            level = min(cmd.level, 2)  # memcached's MAX_VERBOSITY_LEVEL
            self.settings = self.settings.replace(verbose=level)
            self.info.set_verbosity(level)
        if not cmd.noreply:
            s.out.append(r.OK)

    def quit(self, cmd: c.Quit, s: Session) -> None:
        raise CloseConnection("quit")

    def shutdown(self, cmd: c.ShutdownCmd, s: Session) -> None:
        if not self.settings.shutdown_command:
            s.out.append(r.ERROR_SHUTDOWN_DISABLED)
        elif cmd.mode is None:
            s.out.append(r.CLIENT_ERROR_SHUTDOWN_MODE)
        else:
            raise Shutdown(graceful=cmd.mode == b"graceful")

    def cache_memlimit(self, cmd: c.CacheMemlimit, s: Session) -> None:
        mb = cmd.megabytes
        if mb is None:
            reply = r.ERROR
        elif mb < 8:
            reply = r.MEMLIMIT_TOO_SMALL
        elif mb > 1_000_000_000:
            reply = r.MEMLIMIT_NOT_MB
        elif self.cache.set_memory_limit(mb * MB):
            self.settings = self.settings.replace(memory_limit=mb * MB)
            reply = r.OK
        else:
            reply = r.MEMLIMIT_FAILED
        if not cmd.noreply:
            s.out.append(reply)

    def lru_crawler(self, cmd: c.LruCrawler, s: Session) -> None:
        """``lru_crawler metadump <all|hash|ids>``: one line per live item (memcached-tool
        dump reads it); ``lru_crawler crawl <all|ids>``: reclaim expired items now.

        ``hash`` asks memcached to walk its hash table rather than its LRUs, which can skip or
        repeat items they reorder mid-walk; mcached always walks its item tables, so it is
        ``all``. memcached only dumps that way: ``crawl hash`` is its "unknown error"."""
        sub, which = cmd.args
        classes: set[int] | None = None
        if which == b"hash":
            if sub == b"crawl":
                s.out.append(r.CRAWLER_ERROR)
                return
        elif which != b"all":
            try:
                classes = {int(x) for x in which.split(b",")}
            except ValueError:
                classes = {-1}
            if not all(1 <= i <= len(self.classes.sizes) for i in classes):
                s.out.append(r.BADCLASS)
                return
        if sub == b"crawl":
            self.cache.crawl(classes)
            s.out.append(r.OK)
            return
        base = self.clock.process_started
        out = []
        for key, exptime, atime, cas, fetched, size, clsid in self.cache.metadump(
            self.classes.class_of, classes
        ):
            out.append(
                b"key=%b exp=%d la=%d cas=%d fetch=%b cls=%d size=%d\n"
                % (
                    quote_from_bytes(key, safe="-._~").encode(),
                    exptime + base if exptime else -1,
                    atime + base,
                    cas,
                    b"yes" if fetched else b"no",
                    clsid,
                    size,
                )
            )
        out.append(r.END)
        s.out.append(b"".join(out))

    def config(self, cmd: c.Command, s: Session) -> None:
        if self.discovery is None:
            s.out.append(r.ERROR)
            return
        self.discovery.handle(cmd, s.out)

    def auth(self, cmd: c.Auth, s: Session) -> None:
        """-Y: the ``set`` exchange of an unauthenticated connection. STORED lets it in;
        a wrong user or password keeps it out and open, as memcached does."""
        ctr = s.counters
        ctr.auth_cmds += 1
        if self.authfile is not None and self.authfile.check(cmd.user, cmd.password):
            cmd.grant()
            s.out.append(r.STORED)  # even under noreply, as memcached
        else:
            ctr.auth_errors += 1
            s.out.append(r.CLIENT_ERROR_AUTH_FAILURE)

    def refresh_certs(self, cmd: c.RefreshCerts, s: Session) -> None:
        """Reload the TLS certificate, key and CA files for new connections. An error is
        sent whatever noreply says (memcached's write_and_free)."""
        if self.tls is None:
            s.out.append(r.ERROR_TLS_NOT_ENABLED)
            return
        error = self.tls.refresh()
        if error:
            s.out.append(error.encode() + b"\r\n")
        elif not cmd.noreply:
            s.out.append(r.OK)

    def invalid(self, cmd: c.Invalid, s: Session) -> None:
        if not cmd.noreply:
            s.out.append(cmd.reply)

    # ---- stats ----

    def stats(self, cmd: c.Stats, s: Session) -> None:
        args = cmd.args
        sub = args[0] if args else b""
        if sub == b"":
            s.out.append(r.stats_block(self.general_stats()))
        elif sub == b"reset" and len(args) == 1:
            self.reset_stats()
            s.out.append(r.RESET)
        elif sub == b"settings" and len(args) == 1:
            s.out.append(r.stats_block(list(stats_settings(self.settings))))
        elif sub == b"items" and len(args) == 1:
            s.out.append(r.stats_block(self.items_stats()))
        elif sub == b"slabs" and len(args) == 1:
            s.out.append(r.stats_block(self.slabs_stats()))
        elif sub == b"sizes" and len(args) == 1:
            s.out.append(r.stats_block(self.sizes_stats()))
        elif sub == b"conns" and len(args) == 1:
            s.out.append(r.stats_block(self.info.conns_stats()))
        elif sub == b"detail":
            s.out.append(self.stats_detail(args[1:]))
        else:
            s.out.append(r.ERROR)

    def stats_detail(self, args: list[bytes]) -> bytes:
        """``stats detail on|off|dump``: per-prefix counters (keys split at ``-D``)."""
        if len(args) != 1:
            return r.CLIENT_ERROR_DETAIL_USAGE
        if args[0] in (b"on", b"off"):
            self.detail.enabled = args[0] == b"on"
            self.settings = self.settings.replace(detail_enabled=self.detail.enabled)
            return r.OK
        if args[0] == b"dump":
            return self.detail.dump()
        return r.CLIENT_ERROR_DETAIL_USAGE

    def general_stats(self) -> list[tuple[str, object]]:
        from mcached.stats import sum_counters

        values: dict[str, object] = {}
        values["pid"] = os.getpid()
        values.update(self.info.general_stats())
        values["version"] = MEMCACHED_VERSION
        values["pointer_size"] = 64
        cpu = self._process.cpu_times()
        values["rusage_user"] = f"{cpu.user:.6f}"
        values["rusage_system"] = f"{cpu.system:.6f}"
        total = sum_counters(self.info.all_counters())
        for name, value in vars(total).items():
            values[name] = value
        values.update(self.cache.stats())
        values["time"] = int(time.time())
        return ordered(values)

    def reset_stats(self) -> None:
        for ctr in self.info.all_counters():
            ctr.reset()
        self.cache.reset_stats()
        self.info.reset_stats()

    def slabs_reassign(self, cmd: c.SlabsReassign, s: Session) -> None:
        """``slabs reassign <src> <dst>``: memcached moves the page in the background and
        answers OK at once; mcached moves it before answering (a few milliseconds)."""
        if not self.settings.slab_reassign:
            s.out.append(SLABS_REASSIGN_DISABLED)
        elif cmd.src is None or cmd.dst is None:
            s.out.append(r.CLIENT_ERROR_FORMAT)
        else:
            s.out.append(REASSIGN_REPLY[self.cache.reassign(cmd.src, cmd.dst)])

    def slabs_automove(self, cmd: c.SlabsAutomove, s: Session) -> None:
        if cmd.level is not None:
            self.cache.automove = cmd.level
            self.settings = self.settings.replace(slab_automove=cmd.level)
        if not cmd.noreply:
            s.out.append(r.OK)

    def items_stats(self) -> list[tuple[str, object]]:
        """``stats items``: memcached's per-class fields, for classes holding items."""
        out: list[tuple[str, object]] = []
        for clsid, fields in self.cache.items_stats():
            p = f"items:{clsid}:"
            out += [(p + name, value) for name, value in fields.items()]
        return out

    def slabs_stats(self) -> list[tuple[str, object]]:
        """``stats slabs``: memcached's per-class fields, for classes holding pages."""
        out: list[tuple[str, object]] = []
        classes, totals = self.cache.slabs_stats()
        for clsid, fields in classes:
            p = f"{clsid}:"
            out += [(p + name, value) for name, value in fields.items()]
        out += list(totals.items())
        return out

    def sizes_stats(self) -> list[tuple[str, object]]:
        if not self.settings.track_sizes:
            return [("sizes_status", "disabled")]
        # memcached's histogram: live items by total size, rounded up to 32-byte buckets
        return [(str(b), n) for b, n in sorted(self.cache.size_histogram().items())]
