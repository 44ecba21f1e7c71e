"""What watchers cost the requests: get throughput with 0, 1 and 20 ``watch fetchers``
connections attached that never read, mcached against memcached, one server at a time.

    python scripts/bench_watch.py                    # -t 4 each, 4 clients, 4 s a run
    python scripts/bench_watch.py --watchers 0,5 --seconds 8 --rounds 3

Each client pipelines 50 five-key gets at a time (``get k1 ... k5``, every key a miss, so
the figure is lookups, not bytes) and waits for the 50 replies; the figure is key lookups a
second, the median of the rounds. A watcher that never reads fills its socket and then its
256 KB of unsent lines: from then on the daemon only counts what it skips.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time

import servers

BATCH = b"get k1 k2 k3 k4 k5\r\n" * 50


def lookups_per_second(port: int, clients: int, seconds: float) -> float:
    counts = [0] * clients

    def client(i: int) -> None:
        with socket.create_connection((servers.HOST, port)) as c:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                c.sendall(BATCH)
                got = b""
                while got.count(b"END\r\n") < 50:
                    got += c.recv(65536)
                counts[i] += 250

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def attach_watchers(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection((servers.HOST, port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"watch fetchers\r\n")
        s.settimeout(5)
        assert s.recv(4) == b"OK\r\n"
        socks.append(s)  # never read again
    return socks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--watchers", default="0,1,20", help="watcher counts to measure")
    ap.add_argument("--threads", type=int, default=4, help="-t of both servers")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    counts = [int(n) for n in args.watchers.split(",")]
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for kind in ("mcached", "memcached"):
            proc, port = servers.start(kind, "-t", str(args.threads), "-m", "64")
            try:
                for n in counts:
                    watchers = attach_watchers(port, n)
                    time.sleep(1.0)  # their sockets and buffers fill
                    rate = lookups_per_second(port, args.clients, args.seconds)
                    results.setdefault((kind, n), []).append(rate)
                    for w in watchers:
                        w.close()
                    time.sleep(0.5)
            finally:
                servers.stop(proc)
    print(f"{'watchers':>8} {'mcached':>12} {'memcached':>12} {'ratio':>6}  (key lookups/s)")
    for n in counts:
        ours = statistics.median(results[("mcached", n)])
        theirs = statistics.median(results[("memcached", n)])
        print(f"{n:>8} {ours:>12,.0f} {theirs:>12,.0f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
