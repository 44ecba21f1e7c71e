"""The metrics endpoint: Prometheus' text format at ``/metrics`` (``--metrics-listen``).

Names and labels are prometheus/memcached_exporter's, so dashboards and alerts written for a
memcached behind that exporter work unchanged (``memcached_up``,
``memcached_commands_total{command,status}``, ``memcached_current_items``,
``memcached_slab_*{slab}``...); beside them, what neither memcached nor the exporter has:

* ``mcached_command_duration_seconds{command}``: a histogram per verb of the time from a
  request's bytes arriving to its reply handed to the kernel (`mcached.latency`);
* the host figures ElastiCache reports for a node: the daemon's CPU, resident and
  proportional memory and swap (every process of it), the host's available memory
  (FreeableMemory), swap in use (SwapUsage) and CPU use (CPUUtilization).

Where it runs. The socket is bound by the daemon's first process, before it forks (a bad
address stops the start, port 0 picks a free one); it is served by a thread of the
maintainer process (worker processes: a scraper never takes a worker's time, and the
supervisor runs no thread because it forks), or of the daemon's process when the workers
are threads. A scrape asks every worker for its figures through the board
(`mcached.server.board`, an asker slot: exact, as ``stats`` is) and reads the cache's figures
from the arena. Scrapes are served one at a time (a lock), each connection in its own
thread, so a slow scraper holds only its own thread. Connections are bounded so that
hostile or broken clients cannot take the process's descriptors (~1,100 idle ones did, and
its accept loop then spun on EMFILE): at most `MAX_CONNECTIONS` at once, and each must
send its request whole within `REQUEST_SECONDS` (an idle or dripping client is dropped),
which also bounds each send of the reply. When all are taken, the one that has waited
longest for its request makes room for a newcomer; only when every one has sent its
request (eight scrapes at once) is the newcomer closed as it is accepted.

prometheus_client formats and serves (`MetricsHandler`, gzip and OpenMetrics when asked);
nothing of it is on the request path. The exporter types a few counters whose names lack
``_total`` (``memcached_uptime_seconds``, ``memcached_slab_items_moves_to_cold``...); the
Prometheus text format (and prometheus_client) only lets a counter's samples end in
``_total``, so those keep their names and are typed gauges here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import CollectorRegistry

from mcached import latency
from mcached.addr import parse_listen
from mcached.errors import BindError

log = logging.getLogger("mcached.metrics")

# Prometheus scrapes one connection at a time per server (an HA pair: two), and its request
# is a few hundred bytes sent at once: room for those, a person's curl, and a little more.
MAX_CONNECTIONS = 8
REQUEST_SECONDS = 3.0
MAX_HEAD = 16384  # bytes of request line and headers
SLOT_WAIT = 0.5  # how long a newcomer waits for the slot of a connection dropped for it
# how often the accept loop looks for a stop: what a stop waits at most (an embedded server's
# fixture stops one per test; it was 0.5 s)
STOP_POLL = 0.05

#: A snapshot of the daemon's figures (see `Daemon.metrics_snapshot`):
#: "stats": general stats by memcached's names; "settings": the crawler's (`CRAWLER_SETTINGS`
#: and "lru_crawler") as ``stats settings`` names them; "items" and "slabs": per class id,
#: memcached's fields; "latency": per verb a `mcached.latency` row; "host": the host figures.
Snapshot = dict[str, Any]

# ---- the exporter's metrics, from memcached's stat names ----

# the crawler's ``stats settings``, shown while it is enabled -> (metric, help)
CRAWLER_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("lru_crawler_sleep", "memcached_lru_crawler_sleep", "Microseconds to sleep between items."),
    ("lru_crawler_tocrawl", "memcached_lru_crawler_to_crawl", "Max items to crawl per slab."),
    (
        "lru_maintainer_thread",
        "memcached_lru_crawler_maintainer_thread",
        "Split LRU mode and background threads.",
    ),
    ("hot_lru_pct", "memcached_lru_crawler_hot_percent", "Percent of slab memory for HOT LRU."),
    ("warm_lru_pct", "memcached_lru_crawler_warm_percent", "Percent of slab memory for WARM LRU."),
    (
        "hot_max_factor",
        "memcached_lru_crawler_hot_max_factor",
        "Set idle age of HOT LRU to COLD age * this.",
    ),
    (
        "warm_max_factor",
        "memcached_lru_crawler_warm_max_factor",
        "Set idle age of WARM LRU to COLD age * this.",
    ),
)

# general stats -> (metric, type, help)
GENERAL: tuple[tuple[str, str, str, str], ...] = (
    ("uptime", "memcached_uptime_seconds", "gauge", "Seconds since the server started."),
    ("time", "memcached_time_seconds", "gauge", "The server's current UNIX time."),
    (
        "rusage_user",
        "memcached_process_user_cpu_seconds_total",
        "counter",
        "User CPU seconds of the daemon (all its processes).",
    ),
    (
        "rusage_system",
        "memcached_process_system_cpu_seconds_total",
        "counter",
        "System CPU seconds of the daemon (all its processes).",
    ),
    ("bytes_read", "memcached_read_bytes_total", "counter", "Bytes read from the network."),
    ("bytes_written", "memcached_written_bytes_total", "counter", "Bytes sent to the network."),
    ("curr_connections", "memcached_current_connections", "gauge", "Open connections."),
    ("max_connections", "memcached_max_connections", "gauge", "Connections allowed (-c)."),
    (
        "total_connections",
        "memcached_connections_total",
        "counter",
        "Connections opened since the start.",
    ),
    (
        "rejected_connections",
        "memcached_connections_rejected_total",
        "counter",
        "Connections refused at the -c limit.",
    ),
    (
        "conn_yields",
        "memcached_connections_yielded_total",
        "counter",
        "Times a connection used its -R turn with requests left.",
    ),
    (
        "listen_disabled_num",
        "memcached_connections_listener_disabled_total",
        "counter",
        "Times accepting paused (out of file descriptors).",
    ),
    ("bytes", "memcached_current_bytes", "gauge", "Bytes used by items."),
    ("limit_maxbytes", "memcached_limit_bytes", "gauge", "Bytes items may use (-m)."),
    ("curr_items", "memcached_current_items", "gauge", "Items stored now."),
    ("total_items", "memcached_items_total", "counter", "Items stored since the start."),
    (
        "evictions",
        "memcached_items_evicted_total",
        "counter",
        "Live items evicted to make room.",
    ),
    (
        "reclaimed",
        "memcached_items_reclaimed_total",
        "counter",
        "Stores that reused an expired item's memory.",
    ),
    (
        "store_too_large",
        "memcached_item_too_large_total",
        "counter",
        "Stores refused: larger than -I.",
    ),
    (
        "store_no_memory",
        "memcached_item_no_memory_total",
        "counter",
        "Stores refused: out of memory.",
    ),
    (
        "direct_reclaims",
        "memcached_direct_reclaims_total",
        "counter",
        "Times a worker evicted or reclaimed to store.",
    ),
    (
        "lru_crawler_starts",
        "memcached_lru_crawler_starts_total",
        "counter",
        "LRU crawler runs.",
    ),
    (
        "crawler_reclaimed",
        "memcached_lru_crawler_reclaimed_total",
        "counter",
        "Items the LRU crawler freed.",
    ),
    (
        "crawler_items_checked",
        "memcached_lru_crawler_items_checked_total",
        "counter",
        "Items the LRU crawler examined.",
    ),
    (
        "moves_to_cold",
        "memcached_lru_crawler_moves_to_cold_total",
        "counter",
        "Items moved to the COLD LRU.",
    ),
    (
        "moves_to_warm",
        "memcached_lru_crawler_moves_to_warm_total",
        "counter",
        "Items moved to the WARM LRU (second chances).",
    ),
    (
        "moves_within_lru",
        "memcached_lru_crawler_moves_within_lru_total",
        "counter",
        "Items moved within the HOT or WARM LRU.",
    ),
    ("total_malloced", "memcached_malloced_bytes", "gauge", "Bytes of slab pages."),
    (
        "accepting_conns",
        "memcached_accepting_connections",
        "gauge",
        "1 while the server accepts connections.",
    ),
)

# `stats items` fields -> (metric, type, help); labelled {slab}
ITEMS: tuple[tuple[str, str, str, str], ...] = (
    ("number", "memcached_slab_current_items", "gauge", "Items in the slab class."),
    ("age", "memcached_slab_items_age_seconds", "gauge", "Age of the class's oldest item."),
    (
        "crawler_reclaimed",
        "memcached_slab_items_crawler_reclaimed_total",
        "counter",
        "Items the LRU crawler freed.",
    ),
    ("evicted", "memcached_slab_items_evicted_total", "counter", "Items evicted."),
    (
        "evicted_nonzero",
        "memcached_slab_items_evicted_nonzero_total",
        "counter",
        "Items with an exptime evicted.",
    ),
    (
        "evicted_time",
        "memcached_slab_items_evicted_time_seconds",
        "gauge",
        "Seconds since the last evicted item was read.",
    ),
    (
        "evicted_unfetched",
        "memcached_slab_items_evicted_unfetched_total",
        "counter",
        "Items evicted never read.",
    ),
    (
        "expired_unfetched",
        "memcached_slab_items_expired_unfetched_total",
        "counter",
        "Items expired never read.",
    ),
    (
        "outofmemory",
        "memcached_slab_items_outofmemory_total",
        "counter",
        "Stores that found no memory in the class.",
    ),
    ("reclaimed", "memcached_slab_items_reclaimed_total", "counter", "Expired items reused."),
    (
        "tailrepairs",
        "memcached_slab_items_tailrepairs_total",
        "counter",
        "LRU tail repairs (always 0).",
    ),
    (
        "mem_requested",
        "memcached_slab_mem_requested_bytes",
        "gauge",
        "Bytes the class's items take.",
    ),
    (
        "moves_to_cold",
        "memcached_slab_items_moves_to_cold",
        "gauge",
        "Items moved to COLD.",
    ),
    ("moves_to_warm", "memcached_slab_items_moves_to_warm", "gauge", "Items moved to WARM."),
    (
        "moves_within_lru",
        "memcached_slab_items_moves_within_lru",
        "gauge",
        "Items moved within HOT or WARM.",
    ),
    ("number_hot", "memcached_slab_hot_items", "gauge", "Items in the HOT LRU."),
    ("number_warm", "memcached_slab_warm_items", "gauge", "Items in the WARM LRU."),
    ("number_cold", "memcached_slab_cold_items", "gauge", "Items in the COLD LRU."),
    ("age_hot", "memcached_slab_hot_age_seconds", "gauge", "Age of the oldest HOT item."),
    ("age_warm", "memcached_slab_warm_age_seconds", "gauge", "Age of the oldest WARM item."),
)

# `stats slabs` fields -> (metric, help); gauges labelled {slab}
SLABS: tuple[tuple[str, str, str], ...] = (
    ("chunk_size", "memcached_slab_chunk_size_bytes", "Bytes of each chunk of the class."),
    ("chunks_per_page", "memcached_slab_chunks_per_page", "Chunks in one page."),
    ("total_pages", "memcached_slab_current_pages", "Pages of the class."),
    ("total_chunks", "memcached_slab_current_chunks", "Chunks of the class."),
    ("used_chunks", "memcached_slab_chunks_used", "Chunks holding an item."),
    ("free_chunks", "memcached_slab_chunks_free", "Chunks free."),
    ("free_chunks_end", "memcached_slab_chunks_free_end", "Free chunks at the last page's end."),
)

HIT_MISS_OPS = ("get", "delete", "incr", "decr", "cas", "touch")
SLAB_OPS = ("get", "delete", "incr", "decr", "cas", "touch")


def _metric(
    name: str, kind: str, doc: str, labels: list[str] | None = None
) -> CounterMetricFamily | GaugeMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class Collector:
    """A prometheus_client collector over `snapshot()` (one call per scrape)."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # no check at registration: the metrics depend on the live daemon

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self.snapshot()
        except Exception:
            log.exception("collecting the metrics failed")
            up = GaugeMetricFamily("memcached_up", "Could the server's figures be read.")
            up.add_metric([], 0)
            yield up
            return
        yield from self._general(snap["stats"])
        yield from self._crawler(snap["settings"])
        yield from self._items(snap.get("items", {}))
        yield from self._slabs(snap.get("slabs", {}))
        yield from self._latency(snap.get("latency", {}))
        yield from self._host(snap.get("host", {}))
        up = GaugeMetricFamily("memcached_up", "Could the server's figures be read.")
        up.add_metric([], 1)
        yield up

    def _general(self, s: dict[str, Any]) -> Iterator[Metric]:
        version = GaugeMetricFamily(
            "memcached_version", "The version of the server.", labels=["version"]
        )
        version.add_metric([str(s["version"])], 1)
        yield version
        for stat, name, kind, doc in GENERAL:
            if stat in s:
                m = _metric(name, kind, doc)
                m.add_metric([], float(s[stat]))
                yield m
        commands = CounterMetricFamily(
            "memcached_commands",
            "Requests by command (get, set, etc.) and status.",
            labels=["command", "status"],
        )
        for op in HIT_MISS_OPS:
            commands.add_metric([op, "hit"], s[f"{op}_hits"])
            commands.add_metric([op, "miss"], s[f"{op}_misses"])
        commands.add_metric(["cas", "badval"], s["cas_badval"])
        commands.add_metric(["flush", "hit"], s["cmd_flush"])
        # memcached counts cas in cmd_set too
        cas = s["cas_misses"] + s["cas_hits"] + s["cas_badval"]
        commands.add_metric(["set", "hit"], s["cmd_set"] - cas)
        yield commands

    def _crawler(self, settings: dict[str, Any]) -> Iterator[Metric]:
        """The exporter's crawler settings: whether it is enabled, and, when it is, how."""
        enabled = GaugeMetricFamily("memcached_lru_crawler_enabled", "Whether the crawler runs.")
        enabled.add_metric([], 1 if settings["lru_crawler"] else 0)
        yield enabled
        if not settings["lru_crawler"]:
            return
        for setting, name, doc in CRAWLER_SETTINGS:
            m = GaugeMetricFamily(name, doc)
            m.add_metric([], float(settings[setting]))
            yield m

    def _items(self, items: dict[int, dict[str, int]]) -> Iterator[Metric]:
        for stat, name, kind, doc in ITEMS:
            m = _metric(name, kind, doc, ["slab"])
            for clsid, row in sorted(items.items()):
                if stat in row:
                    m.add_metric([str(clsid)], row[stat])
            yield m
        hits = CounterMetricFamily(
            "memcached_slab_lru_hits", "Hits by LRU of the class.", labels=["slab", "lru"]
        )
        for clsid, row in sorted(items.items()):
            for field, lru in (
                ("hits_to_hot", "hot"),
                ("hits_to_warm", "warm"),
                ("hits_to_cold", "cold"),
                ("hits_to_temp", "temporary"),
            ):
                hits.add_metric([str(clsid), lru], row.get(field, 0))
        yield hits

    def _slabs(self, slabs: dict[int, dict[str, int]]) -> Iterator[Metric]:
        for stat, name, doc in SLABS:
            m = GaugeMetricFamily(name, doc, labels=["slab"])
            for clsid, row in sorted(slabs.items()):
                m.add_metric([str(clsid)], row[stat])
            yield m
        commands = CounterMetricFamily(
            "memcached_slab_commands",
            "Requests by class, command and status.",
            labels=["slab", "command", "status"],
        )
        for clsid, row in sorted(slabs.items()):
            slab = str(clsid)
            for op in SLAB_OPS:
                commands.add_metric([slab, op, "hit"], row[f"{op}_hits"])
            commands.add_metric([slab, "cas", "badval"], row["cas_badval"])
            commands.add_metric(
                [slab, "set", "hit"], row["cmd_set"] - row["cas_hits"] - row["cas_badval"]
            )
        yield commands

    def _latency(self, rows: dict[str, list[int]]) -> Iterator[Metric]:
        hist = HistogramMetricFamily(
            "mcached_command_duration_seconds",
            "Time from a request's bytes arriving to its reply handed to the kernel, by command.",
            labels=["command"],
        )
        for verb, row in sorted(rows.items()):
            n = latency.count(row)
            if not n:
                continue
            buckets = [(_le(le), float(c)) for le, c in latency.cumulative(row)]
            hist.add_metric([verb], buckets, row[latency.SUM] / 1e9)
        yield hist

    def _host(self, h: dict[str, float]) -> Iterator[Metric]:
        table = (
            ("cpu_user", "mcached_process_cpu_seconds_total", "counter", "User CPU seconds."),
            ("rss", "mcached_process_resident_memory_bytes", "gauge", "Resident memory."),
            (
                "pss",
                "mcached_process_proportional_memory_bytes",
                "gauge",
                "Proportional set size: shared memory (the cache) counted once.",
            ),
            ("swap", "mcached_process_swap_bytes", "gauge", "Memory of the daemon swapped out."),
            (
                "host_available",
                "mcached_host_memory_available_bytes",
                "gauge",
                "Memory the host can give without swapping (ElastiCache's FreeableMemory).",
            ),
            (
                "host_swap_used",
                "mcached_host_swap_used_bytes",
                "gauge",
                "Swap in use on the host (ElastiCache's SwapUsage).",
            ),
            (
                "host_cpu",
                "mcached_host_cpu_utilization_ratio",
                "gauge",
                "Host CPU in use since the last scrape, 0 to 1 (ElastiCache's CPUUtilization).",
            ),
            ("processes", "mcached_processes", "gauge", "Processes of the daemon."),
        )
        for key, name, kind, doc in table:
            if key == "cpu_user":
                cpu = CounterMetricFamily(
                    "mcached_process_cpu_seconds",
                    "CPU seconds of the daemon's processes, by mode.",
                    labels=["mode"],
                )
                if "cpu_user" in h:
                    cpu.add_metric(["user"], h["cpu_user"])
                    cpu.add_metric(["system"], h["cpu_system"])
                yield cpu
                continue
            if key in h:
                m = _metric(name, kind, doc)
                m.add_metric([], h[key])
                yield m


def _le(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return repr(bound)


def bind(spec: str) -> socket.socket:
    """The listening socket for ``--metrics-listen ADDR:PORT`` (``[v6]:port`` too; a bare
    port listens on 127.0.0.1)."""
    if spec.isdigit():
        host, port = "127.0.0.1", int(spec)
    else:
        host, port = parse_listen(spec, 0)
    try:
        return _listen(host, port)
    except OSError as exc:  # named, or the start's message would name -l/-p's address
        raise BindError(f"--metrics-listen {spec}", exc) from exc


def _listen(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    family, stype, proto, _, addr = infos[0]
    sock = socket.socket(family, stype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class _HeadTooLarge(Exception):
    """A request head past `MAX_HEAD` bytes."""


#: the answer to a request head past `MAX_HEAD` (as Go's net/http answers one)
TOO_LARGE_REPLY = (
    b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\n\r\n431 Request Header Fields Too Large"
)


def _read_head(sock: socket.socket) -> bytes:
    """The request line and headers, whole within `REQUEST_SECONDS` (else TimeoutError: a
    per-read timeout alone would keep a client sending a byte a second) and `MAX_HEAD`
    bytes (else `_HeadTooLarge`)."""
    deadline = time.monotonic() + REQUEST_SECONDS
    head = b""
    while b"\n\n" not in head and b"\n\r\n" not in head:
        if len(head) > MAX_HEAD:
            raise _HeadTooLarge(head[-3:])
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no whole request head in time")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            break  # closed: http.server answers what came, as it would have
        head += chunk
    sock.settimeout(REQUEST_SECONDS)
    return head


def _drain_head(sock: socket.socket, tail: bytes, limit: int = 64 * MAX_HEAD) -> None:
    """Read what is left of a request head too large to serve (`tail`: the last bytes read
    of it), up to its end, `limit` bytes or `REQUEST_SECONDS`: a close with the client's
    bytes unread would reset the connection, and the client could lose the answer."""
    deadline = time.monotonic() + REQUEST_SECONDS
    while limit > 0 and b"\n\r\n" not in tail and b"\n\n" not in tail:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            return
        limit -= len(chunk)
        tail = tail[-3:] + chunk


class _Handler(MetricsHandler):
    timeout = REQUEST_SECONDS  # for each send too: a scraper that stops reading is dropped
    server: _HTTPServer

    def handle(self) -> None:
        waiting = self.server.waiting
        with self.server.waiting_lock:
            waiting[self.connection] = time.monotonic()
        try:
            head = _read_head(self.connection)
        except _HeadTooLarge as e:
            with contextlib.suppress(OSError):
                _drain_head(self.connection, e.args[0])  # read: the close resets nothing
                self.connection.sendall(TOO_LARGE_REPLY)
            return
        finally:
            with self.server.waiting_lock:
                waiting.pop(self.connection, None)
        self.rfile.close()  # a GET has no body: http.server reads the head from memory
        self.rfile = io.BytesIO(head)
        super().handle()

    def do_HEAD(self) -> None:
        """GET's status line and headers, without its body (as Go's promhttp answers HEAD,
        which uptime checkers send; http.server answered 501)."""
        self.do_GET()

    def end_headers(self) -> None:
        super().end_headers()
        if self.command == "HEAD":
            self.wfile = io.BytesIO()  # the body GET writes next goes nowhere


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        # connections whose request head has not come whole yet, and since when
        self.waiting: dict[socket.socket, float] = {}
        self.waiting_lock = threading.Lock()

    def _drop_longest_waiting(self) -> bool:
        """Close the connection that has waited longest for its request head (a client that
        connects and sends nothing): its slot goes to a newcomer. Else a few such clients,
        reconnecting as they are dropped, kept every scraper out (8 kept 21 scrapes in 21
        out). A scraper sends its request at once, so it is seldom the one dropped."""
        with self.waiting_lock:
            if not self.waiting:
                return False
            sock = min(self.waiting, key=self.waiting.__getitem__)
            del self.waiting[sock]
        try:
            sock.shutdown(socket.SHUT_RDWR)  # its thread's read ends: the thread frees its slot
        except OSError:
            pass  # closed meanwhile: its slot is free or about to be
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False) and not (
            self._drop_longest_waiting() and self.slots.acquire(timeout=SLOT_WAIT)
        ):
            log.debug("metrics: %s refused: %d connections open", client_address, MAX_CONNECTIONS)
            self.shutdown_request(request)  # closed at once: no thread, no descriptor kept
            return
        try:
            super().process_request(request, client_address)  # a thread serves it
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: a scrape from %s failed", client_address, exc_info=True)


class MetricsServer:
    """Serves `collector` over the bound `sock` from a thread of this process."""

    def __init__(self, sock: socket.socket, collector: Collector) -> None:
        self.sock = sock
        registry = CollectorRegistry(auto_describe=False)
        lock = threading.Lock()
        inner = collector.collect

        def collect() -> Iterator[Metric]:
            with lock:  # one scrape at a time: each asks every worker
                return iter(list(inner()))

        collector.collect = collect  # type: ignore[method-assign]
        registry.register(collector)
        self.httpd = _HTTPServer(sock.getsockname()[:2], _Handler.factory(registry), False)
        self.httpd.socket.close()
        self.httpd.socket = sock
        self.httpd.server_address = sock.getsockname()
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, args=(STOP_POLL,), name="mcached-metrics", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(5)
            self.thread = None
        self.httpd.server_close()
