"""The metrics endpoint (``--metrics-listen``, mcached/metrics.py) and ``stats latency``.

Each test runs against the daemon in this process (worker threads) and as the ``mcached``
command (worker processes, the endpoint served by the maintainer process): it scrapes
``/metrics`` while clients load the daemon, parses the text with prometheus_client's own
parser, and checks memcached_exporter's names, labels and types, that the counters moved by
exactly the commands sent, and that the latency histogram counted every request served.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import HOST, ROOT, Server, free_port
from tests.wire import Conn, readable

pytestmark = pytest.mark.integration

KINDS = ("mcached", "mcached-procs")

# memcached_exporter's metrics, with their type and labels, that every scrape carries
EXPORTER = {
    "memcached_up": ("gauge", set()),
    "memcached_version": ("gauge", {"version"}),
    "memcached_uptime_seconds": ("gauge", set()),
    "memcached_time_seconds": ("gauge", set()),
    "memcached_process_user_cpu_seconds": ("counter", set()),
    "memcached_process_system_cpu_seconds": ("counter", set()),
    "memcached_read_bytes": ("counter", set()),
    "memcached_written_bytes": ("counter", set()),
    "memcached_current_connections": ("gauge", set()),
    "memcached_max_connections": ("gauge", set()),
    "memcached_connections": ("counter", set()),
    "memcached_connections_rejected": ("counter", set()),
    "memcached_connections_yielded": ("counter", set()),
    "memcached_connections_listener_disabled": ("counter", set()),
    "memcached_current_bytes": ("gauge", set()),
    "memcached_limit_bytes": ("gauge", set()),
    "memcached_commands": ("counter", {"command", "status"}),
    "memcached_current_items": ("gauge", set()),
    "memcached_items": ("counter", set()),
    "memcached_items_evicted": ("counter", set()),
    "memcached_items_reclaimed": ("counter", set()),
    "memcached_item_too_large": ("counter", set()),
    "memcached_item_no_memory": ("counter", set()),
    "memcached_malloced_bytes": ("gauge", set()),
    "memcached_accepting_connections": ("gauge", set()),
    "memcached_lru_crawler_enabled": ("gauge", set()),
    "memcached_slab_current_items": ("gauge", {"slab"}),
    "memcached_slab_items_evicted": ("counter", {"slab"}),
    "memcached_slab_lru_hits": ("counter", {"slab", "lru"}),
    "memcached_slab_chunk_size_bytes": ("gauge", {"slab"}),
    "memcached_slab_chunks_used": ("gauge", {"slab"}),
    "memcached_slab_commands": ("counter", {"slab", "command", "status"}),
    # mcached's own
    "mcached_command_duration_seconds": ("histogram", {"command"}),
    "mcached_process_cpu_seconds": ("counter", {"mode"}),
    "mcached_process_resident_memory_bytes": ("gauge", set()),
    "mcached_process_proportional_memory_bytes": ("gauge", set()),
    "mcached_process_swap_bytes": ("gauge", set()),
    "mcached_host_memory_available_bytes": ("gauge", set()),
    "mcached_host_swap_used_bytes": ("gauge", set()),
    "mcached_host_cpu_utilization_ratio": ("gauge", set()),
}


def start(server_factory: Callable[..., Server], kind: str, *args: str) -> tuple[Server, int]:
    port = free_port()
    srv = server_factory(kind, "--metrics-listen", f"{HOST}:{port}", *args)
    return srv, port


def ask(c: Conn, request: bytes, end: bytes = b"\r\n") -> bytes:
    """Send `request`; its reply, up to `end` (Conn.request waits for silence instead)."""
    c.send(request)
    return c.read_until(end)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


def served(text: str, verb: str) -> int:
    got = samples(text).get(
        ("mcached_command_duration_seconds_count", frozenset({("command", verb)}))
    )
    return int(got or 0)


@pytest.mark.parametrize("kind", KINDS)
def test_names_labels_and_types_are_memcached_exporters(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv, port = start(server_factory, kind, "-t", "2")
    with Conn(srv.address) as c:
        assert c.request(b"set k 0 0 1\r\nx\r\n", expect_len=8) == b"STORED\r\n"
        ask(c, b"get k\r\n", b"END\r\n")
    text = scrape(port)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind_, labels) in EXPORTER.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind_, (name, family.type)
        for s in family.samples:
            got = set(s.labels) - {"le"}
            assert got == labels, (name, s.labels)
    assert value(text, "memcached_up") == 1
    assert value(text, "memcached_version", version="1.6.18") == 1
    assert value(text, "memcached_max_connections") == 1024
    assert value(text, "memcached_limit_bytes") == 64 * 1024 * 1024
    assert value(text, "memcached_lru_crawler_enabled") == 1
    # every command/status pair the exporter makes
    pairs = {
        (dict(k[1])["command"], dict(k[1])["status"])
        for k in samples(text)
        if k[0] == "memcached_commands_total"
    }
    for op in ("get", "delete", "incr", "decr", "cas", "touch"):
        assert {(op, "hit"), (op, "miss")} <= pairs
    assert {("cas", "badval"), ("flush", "hit"), ("set", "hit")} <= pairs
    # the exposition's own lines, as Prometheus reads them
    assert re.search(r"^# TYPE memcached_commands_total counter$", text, re.M)
    assert re.search(r'^memcached_commands_total\{command="get",status="hit"\} 1\.0$', text, re.M)
    assert re.search(r"^# TYPE mcached_command_duration_seconds histogram$", text, re.M)
    assert re.search(
        r'^mcached_command_duration_seconds_bucket\{command="get",le="\+Inf"\} 1\.0$', text, re.M
    )
    # memory figures are real: the cache's arena is resident somewhere
    assert value(text, "mcached_process_resident_memory_bytes") > 10_000_000
    assert value(text, "mcached_host_memory_available_bytes") > 0
    assert 0 <= value(text, "mcached_host_cpu_utilization_ratio") <= 1


@pytest.mark.parametrize("kind", KINDS)
def test_counters_and_histograms_move_with_the_commands_sent_under_load(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """Clients on several connections (spread over the workers) send a known mix while
    the endpoint is scraped; at the end the counters moved by exactly what was sent, and the
    histogram counted every request, whichever worker served it."""
    srv, port = start(server_factory, kind, "-t", "3")
    before = scrape(port)
    clients, rounds = 6, 100
    errors: list[BaseException] = []
    # the scrapes start once every client is halfway: without it, a loaded machine once
    # ran all the clients to the end before the first scrape
    halfway = threading.Barrier(clients + 1, timeout=60)

    def client(n: int) -> None:
        try:
            with Conn(srv.address) as c:
                for i in range(rounds):
                    if i == rounds // 2:
                        halfway.wait()
                    key = b"c%d:%d" % (n, i)
                    assert c.request(b"set %b 0 0 2\r\nxy\r\n" % key, expect_len=8) == (
                        b"STORED\r\n"
                    )
                    assert ask(c, b"get %b\r\n" % key, b"END\r\n").startswith(b"VALUE")
                    assert ask(c, b"get nothing:%b\r\n" % key) == b"END\r\n"
                    assert ask(c, b"delete %b\r\n" % key) == b"DELETED\r\n"
        except BaseException as exc:  # reported below
            errors.append(exc)
            halfway.abort()  # no one waits for this client

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: shown below
        halfway.wait()
    scrapes = 0
    while True:
        text = scrape(port)  # scraping under load: every scrape parses and is up
        assert value(text, "memcached_up") == 1
        scrapes += 1
        if not any(t.is_alive() for t in threads):
            break
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert not errors, errors
    after = scrape(port)
    total = clients * rounds

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("memcached_commands_total", command="set", status="hit") == total
    assert moved("memcached_commands_total", command="get", status="hit") == total
    assert moved("memcached_commands_total", command="get", status="miss") == total
    assert moved("memcached_commands_total", command="delete", status="hit") == total
    assert moved("memcached_items_total") == total
    assert value(after, "memcached_current_items") == 0
    assert moved("memcached_connections_total") == clients
    assert moved("memcached_read_bytes_total") > 0
    # the histogram: one count per request served, per verb
    assert served(after, "set") - served(before, "set") == total
    assert served(after, "get") - served(before, "get") == 2 * total
    assert served(after, "delete") - served(before, "delete") == total
    # buckets are cumulative and end at the count
    s = samples(after)
    buckets = sorted(
        (float(dict(k[1])["le"]), v)
        for k, v in s.items()
        if k[0] == "mcached_command_duration_seconds_bucket" and ("command", "get") in k[1]
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == served(after, "get")
    assert s[("mcached_command_duration_seconds_sum", frozenset({("command", "get")}))] > 0


@pytest.mark.parametrize("kind", KINDS)
def test_stats_latency_counts_every_request_served(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    srv = server_factory(kind, "-t", "2")
    conns = [Conn(srv.address) for _ in range(4)]
    try:
        for n, c in enumerate(conns):
            for i in range(25):
                c.request(b"set k%d 0 0 1\r\nx\r\n" % i, expect_len=8)
                ask(c, b"get k%d\r\n" % i, b"END\r\n")
            ask(c, b"incr n%d 1\r\n" % n)
        with Conn(srv.address) as asker:
            asker.send(b"stats latency\r\n")
            reply = asker.read_until(b"END\r\n").decode()
        rows = dict(re.findall(r"^STAT (\S+) (\S+)\r$", reply, re.M))
        assert rows["get:count"] == "100" and rows["set:count"] == "100"
        assert rows["incr:count"] == "4"
        for verb in ("get", "set"):
            p50, p90, p99, p999 = (
                int(rows[f"{verb}:{p}_us"]) for p in ("p50", "p90", "p99", "p999")
            )
            assert 0 < p50 <= p90 <= p99 <= p999 < 10_000_000
            assert int(rows[f"{verb}:mean_us"]) > 0
        # stats reset starts them again
        with Conn(srv.address) as asker:
            assert ask(asker, b"stats reset\r\n") == b"RESET\r\n"
            asker.send(b"stats latency\r\n")
            reply = asker.read_until(b"END\r\n").decode()
        assert "get:count" not in reply and "stats:count 1" in reply
    finally:
        for c in conns:
            c.close()


def test_a_slow_scraper_does_not_stall_the_workers_or_other_scrapes(
    server_factory: Callable[..., Server],
) -> None:
    """A scraper that connects and sends half a request holds only its own thread: clients
    are served and a second scrape answers meanwhile."""
    srv, port = start(server_factory, "mcached-procs", "-t", "2")
    slow = socket.create_connection((HOST, port))
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
    try:
        with Conn(srv.address) as c:
            t0 = time.monotonic()
            for i in range(50):
                c.request(b"set k%d 0 0 1\r\nx\r\n" % i, expect_len=8)
            assert time.monotonic() - t0 < 5
        text = scrape(port)
        assert value(text, "memcached_commands_total", command="set", status="hit") == 50
    finally:
        slow.close()


@pytest.mark.parametrize("kind", KINDS)
def test_idle_and_dripping_clients_are_dropped_and_bounded(
    server_factory: Callable[..., Server], kind: str
) -> None:
    """A client that does not send its request whole within REQUEST_SECONDS is closed, idle
    or sending a byte at a time, and at most MAX_CONNECTIONS are held at once (each
    newcomer past them takes the slot of the one waiting longest, which is closed); then a
    scrape is answered while they sit there. Before, each held a thread and a descriptor for
    good: ~1,100 exhausted the maintainer's descriptors, its accept loop spun on EMFILE and
    scrapes timed out."""
    from mcached.metrics import MAX_CONNECTIONS, REQUEST_SECONDS

    srv, port = start(server_factory, kind)
    clients = [socket.create_connection((HOST, port)) for _ in range(MAX_CONNECTIONS + 20)]
    dripper = clients[-1]  # among the last, which keep their slots
    dripper.sendall(b"GET /metrics HTTP/1.1\r\n")
    t0 = time.monotonic()
    closed_at: dict[socket.socket, float] = {}
    try:
        while len(closed_at) < len(clients) and time.monotonic() - t0 < REQUEST_SECONDS + 3:
            with contextlib.suppress(OSError):
                dripper.send(b"X")  # a header that never ends
            open_ = [c for c in clients if c not in closed_at]
            for c in readable(open_, 0.5):
                with contextlib.suppress(OSError):  # a reset is a close too
                    assert c.recv(4096) == b""
                closed_at[c] = time.monotonic() - t0
        assert len(closed_at) == len(clients)
        # 20 went as newcomers took their slots, well before the other 8 (the dripper among
        # them), held until their time was up: a server that only timed them out would
        # close all 28 in the order they came, milliseconds apart. (Told by that gap, not
        # by "20 closed within 2 s": a loaded free-threaded run accepted late and counted
        # 13; nor by which 20: the in-process server's oldest was not always the first
        # client to connect.)
        times = sorted(closed_at.values())
        assert times[20] - times[19] > 0.5, times
        assert closed_at[dripper] >= times[20]
        assert closed_at[dripper] > REQUEST_SECONDS - 1
        assert value(scrape(port), "memcached_up") == 1
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_the_crawler_settings_are_the_exporters_and_follow_run_time_changes(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """While the crawler is enabled the exporter shows how it is set (``stats settings``:
    lru_crawler_sleep, lru_crawler_tocrawl, lru_maintainer_thread, hot_lru_pct,
    warm_lru_pct, hot_max_factor, warm_max_factor); mcached showed none of them. And
    ``memcached_lru_crawler_enabled`` stayed 1 after ``lru_crawler disable`` (the value the
    daemon started with), where the exporter reads ``stats settings`` at each scrape."""
    srv, port = start(server_factory, kind, "-t", "2", "-o", "lru_crawler_sleep=250")
    with Conn(srv.address) as c:
        settings = dict(
            line.split()[1:]
            for line in ask(c, b"stats settings\r\n", b"END\r\n").decode().splitlines()[:-1]
        )
    text = scrape(port)
    shown = {
        "memcached_lru_crawler_sleep": "lru_crawler_sleep",
        "memcached_lru_crawler_to_crawl": "lru_crawler_tocrawl",
        "memcached_lru_crawler_maintainer_thread": "lru_maintainer_thread",
        "memcached_lru_crawler_hot_percent": "hot_lru_pct",
        "memcached_lru_crawler_warm_percent": "warm_lru_pct",
        "memcached_lru_crawler_hot_max_factor": "hot_max_factor",
        "memcached_lru_crawler_warm_max_factor": "warm_max_factor",
    }
    for name, stat in shown.items():
        want = {"yes": 1.0, "no": 0.0}.get(settings[stat]) or float(settings[stat])
        assert value(text, name) == want, name
    assert value(text, "memcached_lru_crawler_sleep") == 250
    with Conn(srv.address) as c:
        assert ask(c, b"lru_crawler tocrawl 7\r\n") == b"OK\r\n"
    assert value(scrape(port), "memcached_lru_crawler_to_crawl") == 7
    with Conn(srv.address) as c:
        assert ask(c, b"lru_crawler disable\r\n") == b"OK\r\n"
    text = scrape(port)
    assert value(text, "memcached_lru_crawler_enabled") == 0
    assert "memcached_lru_crawler_sleep" not in text


def test_a_request_head_too_large_is_answered_431(server_factory: Callable[..., Server]) -> None:
    """A request head past MAX_HEAD (a 64 KB header) was closed with no answer; it is now
    told 431, as Go's promhttp tells it, and the next scrape is served."""
    from mcached.metrics import MAX_HEAD

    _, port = start(server_factory, "mcached")
    with socket.create_connection((HOST, port), timeout=10) as c:
        c.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"x" * (4 * MAX_HEAD) + b"\r\n\r\n")
        reply = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := c.recv(65536):
                reply += chunk
    assert reply.startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")
    assert value(scrape(port), "memcached_up") == 1


def test_head_is_answered_with_gets_headers_and_no_body(
    server_factory: Callable[..., Server],
) -> None:
    """HEAD /metrics (uptime checkers, load balancers) got ``501 Unsupported method``; it
    now has GET's status and headers, and no body."""
    _, port = start(server_factory, "mcached")
    with socket.create_connection((HOST, port), timeout=10) as c:
        c.sendall(b"HEAD /metrics HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := c.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Content-Type: text/plain" in head and body == b""


@pytest.mark.parametrize("kind", KINDS)
def test_idle_clients_holding_every_slot_do_not_keep_a_scraper_out(
    server_factory: Callable[..., Server], kind: str
) -> None:
    """MAX_CONNECTIONS clients that connect and send nothing took every slot, and each
    newcomer was closed as it was accepted, the scraper too, for REQUEST_SECONDS; clients
    that reconnect when dropped kept every scrape out (21 of 21 refused). The newcomer now
    takes the slot of the client that has waited longest for its request, which is closed."""
    from mcached.metrics import MAX_CONNECTIONS

    srv, port = start(server_factory, kind)
    idle = [socket.create_connection((HOST, port)) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # each accepted, its thread waiting for its request
        for _ in range(3):
            assert value(scrape(port), "memcached_up") == 1
        idle[0].settimeout(10)
        assert idle[0].recv(10) == b""  # the one waiting longest made room (closed)
    finally:
        for c in idle:
            c.close()


def test_a_bad_metrics_address_stops_the_start() -> None:
    from mcached.cli import parse_settings
    from mcached.settings import SettingsError

    # a port alone is range-checked as one after an address is (91808 wrapped to 26272)
    for bad in ("127.0.0.1", "127.0.0.1:99999", "91808", "65536"):
        with pytest.raises(SettingsError):
            parse_settings(["--metrics-listen", bad])


def test_a_metrics_address_that_cannot_be_bound_is_the_one_named() -> None:
    """The start fails with EX_OSERR naming the metrics address, not the cache's -l/-p
    (free), which sent an operator looking at the wrong port."""
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = free_port()
        for spec in (f"{HOST}:{taken.getsockname()[1]}", "nosuchhost.invalid:1"):
            result = subprocess.run(
                [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), "-U", "0"]
                + ["--metrics-listen", spec],
                capture_output=True,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                timeout=30,
            )
            assert result.returncode == 71, result.stderr
            assert f"failed to listen on --metrics-listen {spec}: ".encode() in result.stderr
            assert f"port {port}".encode() not in result.stderr
