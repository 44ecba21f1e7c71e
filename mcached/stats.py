"""Counters, declared once.

`Counters` holds the per-command counters memcached keeps per worker thread
(``THREAD_STATS_FIELDS``): one instance per worker, written only by its own thread. For
``stats`` each worker publishes its own on the board (`mcached.server.board`), and the
published rows are summed by iterating the dataclass fields (memcached's X-macro idea).
Names are memcached's: pymemcache and monitoring tools parse them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields


@dataclass
class Counters:
    cmd_get: int = 0
    cmd_set: int = 0
    cmd_flush: int = 0
    cmd_touch: int = 0
    cmd_meta: int = 0
    get_hits: int = 0
    get_misses: int = 0
    delete_misses: int = 0
    delete_hits: int = 0
    incr_misses: int = 0
    incr_hits: int = 0
    decr_misses: int = 0
    decr_hits: int = 0
    cas_misses: int = 0
    cas_hits: int = 0
    cas_badval: int = 0
    touch_hits: int = 0
    touch_misses: int = 0
    store_too_large: int = 0
    store_no_memory: int = 0
    auth_cmds: int = 0
    auth_errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    conn_yields: int = 0


def sum_counters(parts: list[Counters]) -> Counters:
    total = Counters()
    for f in fields(Counters):
        setattr(total, f.name, sum(getattr(p, f.name) for p in parts))
    return total


class PrefixStats:
    """``stats detail``: get/hit/set/del counts per key prefix (memcached's ``-D``, ':').

    Off by default; when on, handlers record each keyed command here, under one lock.
    Keys without the delimiter are not counted, as in memcached.
    """

    MAX_PREFIXES = 10_000  # bound the table: a client choosing keys cannot grow it forever

    def __init__(self, delimiter: bytes = b":", enabled: bool = False) -> None:
        self.delimiter = delimiter
        self.enabled = enabled
        self._lock = threading.Lock()
        self._table: dict[bytes, list[int]] = {}

    def clear(self) -> None:
        """``stats reset`` empties the table (memcached's ``stats_prefix_clear``)."""
        with self._lock:
            self._table.clear()

    def _row(self, key: bytes) -> list[int] | None:
        i = key.find(self.delimiter)
        if i < 0:
            return None
        prefix = key[:i]
        row = self._table.get(prefix)
        if row is None:
            if len(self._table) >= self.MAX_PREFIXES:
                return None
            row = self._table[prefix] = [0, 0, 0, 0]
        return row

    def record_get(self, key: bytes, hit: bool) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row[0] += 1
                row[1] += hit

    def record_set(self, key: bytes) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row[2] += 1

    def record_delete(self, key: bytes) -> None:
        with self._lock:
            row = self._row(key)
            if row is not None:
                row[3] += 1

    def snapshot(self) -> dict[bytes, list[int]]:
        """A copy of the table (a worker publishes it; `merge` sums several)."""
        with self._lock:
            return {p: list(v) for p, v in self._table.items()}

    @staticmethod
    def merge(tables: list[dict[bytes, list[int]]], limit: int = 0) -> dict[bytes, list[int]]:
        """The tables summed; with a `limit`, prefixes past that many are left out (as a
        full table leaves out new ones)."""
        out: dict[bytes, list[int]] = {}
        for table in tables:
            for prefix, row in table.items():
                got = out.get(prefix)
                if got is None:
                    if limit and len(out) >= limit:
                        continue
                    got = out[prefix] = [0, 0, 0, 0]
                for k in range(4):
                    got[k] += row[k]
        return out

    @staticmethod
    def rows(table: dict[bytes, list[int]]) -> list[tuple[bytes, int, int, int, int]]:
        """``stats detail dump``: (prefix, gets, hits, sets, deletes), by prefix."""
        return [(p, v[0], v[1], v[2], v[3]) for p, v in sorted(table.items())]


# The general ``stats`` reply: memcached 1.6.18's rows in its order (``server_stats`` in
# memcached.c, then the thread and slab figures), the TLS rows where it puts them.
GENERAL_ORDER = (
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
    "ssl_new_sessions ssl_handshake_errors time_since_server_cert_refresh "
    "unexpected_napi_ids round_robin_fallback "
    "bytes curr_items total_items slab_global_page_pool expired_unfetched evicted_unfetched "
    "evicted_active evictions reclaimed crawler_reclaimed crawler_items_checked "
    "lrutail_reflocked moves_to_cold moves_to_warm moves_within_lru direct_reclaims "
    "lru_bumps_dropped"
).split()

#: rows memcached prints only while a setting is on (``server_stats``): the `Settings`
#: field that decides each
ONLY_WITH = {
    "rejected_connections": "maxconns_fast",
    "idle_kicks": "idle_timeout",
    **dict.fromkeys(
        "slab_reassign_rescues slab_reassign_chunk_rescues slab_reassign_evictions_nomem "
        "slab_reassign_inline_reclaim slab_reassign_busy_items slab_reassign_busy_deletes "
        "slab_reassign_running slabs_moved".split(),
        "slab_reassign",
    ),
    "lru_crawler_running": "lru_crawler",
    "lru_crawler_starts": "lru_crawler",
    # memcached prints these while its LRU maintainer runs (items.c item_stats_totals),
    # whether its LRU is segmented or not (`lru mode flat` leaves them)
    **dict.fromkeys(
        "lru_maintainer_juggles evicted_active moves_to_cold moves_to_warm moves_within_lru "
        "direct_reclaims lru_bumps_dropped".split(),
        "lru_maintainer",
    ),
}

#: memcached's figures of machinery mcached does without, always 0 here: its response
#: objects and read buffers (mcached's connections own their buffers), the descriptors it
#: reserves, the LRU maintainer's juggles, the logger's (``watch``) buffers, NAPI ids and
#: the round-robin fallback of its connection dispatch
ABSENT_ROWS = (
    "response_obj_oom response_obj_count response_obj_bytes read_buf_count read_buf_bytes "
    "read_buf_bytes_free reserved_fds lru_maintainer_juggles "
    "log_worker_written unexpected_napi_ids round_robin_fallback"
).split()


def ordered(
    values: dict[str, object], hidden: frozenset[str] = frozenset()
) -> list[tuple[str, object]]:
    """`values` in memcached's order, less the `hidden` rows; names memcached does not have
    go last."""
    out = [(name, values[name]) for name in GENERAL_ORDER if name in values and name not in hidden]
    known = set(GENERAL_ORDER)
    out.extend((k, v) for k, v in values.items() if k not in known)
    return out
