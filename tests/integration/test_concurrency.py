"""Many threads on shared keys over raw sockets: no update is lost, none is applied twice.

``test_pymemcache.py`` covers incr and gets/cas loops through pymemcache's PooledClient; this
file drives the protocol directly, with pipelining and noreply, and covers append, prepend,
add races and cas from raw sockets. Against both servers: these are memcached's atomicity
guarantees (every compound operation runs under its key's lock).

mcached runs each test with one worker thread, with four (``-t 4``: each worker accepts its
own connections, so the threads' connections sit on different workers and their requests
interleave at any bytecode, not only at socket calls), and as the ``mcached`` command runs in
production: four worker processes over one shared cache. memcached runs them with its default
four.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.conftest import Server
from tests.wire import Conn

pytestmark = pytest.mark.integration

THREADS = 8


@pytest.fixture(
    params=[("mcached", 1), ("mcached", 4), ("mcached-procs", 4), ("memcached", 4)],
    ids=["mcached-t1", "mcached-t4", "mcached-procs-t4", "memcached-t4"],
)
def server(request: pytest.FixtureRequest, server_factory: Callable[..., Server]) -> Server:
    """conftest's `server`, with the number of worker threads as a parameter too."""
    kind, workers = request.param
    srv = server_factory(kind, "-t", str(workers))
    with Conn(srv.address) as c:
        c.send(b"stats\r\n")
        assert b"STAT threads %d\r\n" % workers in c.read_until(b"END\r\n")
    return srv


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            target(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]


def get_value(server: Server, key: bytes) -> bytes:
    with Conn(server.address, timeout=10) as c:
        c.send(b"get %b\r\n" % key)
        reply = c.read_until(b"END\r\n")
    header, _, rest = reply.partition(b"\r\n")
    assert header.startswith(b"VALUE " + key + b" ")
    length = int(header.split()[3])
    return rest[:length]


def test_append_and_prepend_from_many_threads_lose_nothing(server: Server) -> None:
    """Half the threads append, half prepend, 200 tokens each, pipelined 20 at a time: every
    token is there exactly once, each thread's in its order."""
    with Conn(server.address) as c:
        assert c.request(b"set log 0 0 1\r\n|\r\n", expect_len=8) == b"STORED\r\n"
    per_thread, batch = 200, 20

    def work(t: int) -> None:
        verb = b"append" if t % 2 == 0 else b"prepend"
        with Conn(server.address, timeout=10) as c:
            for start in range(0, per_thread, batch):
                tokens = [b"%d.%d," % (t, i) for i in range(start, start + batch)]
                c.send(
                    b"".join(b"%b log 0 0 %d\r\n%b\r\n" % (verb, len(tok), tok) for tok in tokens)
                )
                assert c.read_exact(8 * batch) == b"STORED\r\n" * batch

    run_threads(THREADS, work)
    before, bar, after = get_value(server, b"log").partition(b"|")
    assert bar == b"|"
    for t in range(THREADS):
        side = after if t % 2 == 0 else before
        mine = [tok for tok in side.split(b",") if tok.startswith(b"%d." % t)]
        order = range(per_thread) if t % 2 == 0 else reversed(range(per_thread))
        assert mine == [b"%d.%d" % (t, i) for i in order]
    assert len(before.split(b",")) + len(after.split(b",")) - 2 == THREADS * per_thread


def test_pipelined_noreply_incr_and_decr_from_many_threads(server: Server) -> None:
    """1,500 ``incr n 2 noreply`` and 1,000 ``decr n 1 noreply`` per thread in one send each;
    a final ``incr n 0`` on the same connection waits for them."""
    with Conn(server.address) as c:
        assert c.request(b"set n 0 0 1\r\n0\r\n", expect_len=8) == b"STORED\r\n"

    def work(t: int) -> None:
        with Conn(server.address, timeout=20) as c:
            c.send(b"incr n 2 noreply\r\n" * 1500 + b"decr n 1 noreply\r\n" * 1000)
            c.send(b"incr n 0\r\n")
            assert c.read_until(b"\r\n").strip().isdigit()

    run_threads(THREADS, work)
    assert get_value(server, b"n") == b"%d" % (THREADS * 2000)


def test_cas_loops_from_raw_sockets(server: Server) -> None:
    """Each thread adds 1 to a counter 40 times with gets + cas, retrying on EXISTS: the
    counter ends at exactly threads x 40."""
    with Conn(server.address) as c:
        assert c.request(b"set counter 0 0 1\r\n0\r\n", expect_len=8) == b"STORED\r\n"
    retries = [0] * THREADS

    def work(t: int) -> None:
        with Conn(server.address, timeout=10) as c:
            done = 0
            while done < 40:
                c.send(b"gets counter\r\n")
                line, _, rest = c.read_until(b"END\r\n").partition(b"\r\n")
                header = line.split()
                value = rest[: int(header[3])]
                new = b"%d" % (int(value) + 1)
                c.send(b"cas counter 0 0 %d %b\r\n%b\r\n" % (len(new), header[4], new))
                reply = c.read_until(b"\r\n")
                if reply == b"STORED\r\n":
                    done += 1
                else:
                    assert reply == b"EXISTS\r\n"
                    retries[t] += 1

    run_threads(THREADS, work)
    assert get_value(server, b"counter") == b"%d" % (THREADS * 40)


def test_add_races_have_exactly_one_winner(server: Server) -> None:
    """30 rounds; in each, every thread tries ``add`` on the same new key at once."""
    rounds = 30
    barrier = threading.Barrier(THREADS)
    wins = [[0] * rounds for _ in range(THREADS)]

    def work(t: int) -> None:
        with Conn(server.address, timeout=10) as c:
            for r in range(rounds):
                barrier.wait(10)
                c.send(b"add lock:%d 0 0 1\r\n%d\r\n" % (r, t % 10))
                reply = c.read_until(b"\r\n")
                assert reply in (b"STORED\r\n", b"NOT_STORED\r\n")
                wins[t][r] = reply == b"STORED\r\n"

    run_threads(THREADS, work)
    assert [sum(wins[t][r] for t in range(THREADS)) for r in range(rounds)] == [1] * rounds


def test_a_flush_all_is_one_point_in_time(server: Server) -> None:
    """Clients storing fresh keys one after another while a flush_all runs: once one of a
    client's keys outlives the flush, every key it stored after that does too. mcached
    marked its partitions one lock at a time, each with its own last CAS, so a key stored
    in a partition marked already lived on while a later one, in a partition marked after
    it, went (found by a hunt: within a few rounds on ``-t 4``)."""
    writers, pipeline = 8, 4
    outlived = 0
    with Conn(server.address) as control:
        for rnd in range(10):
            stop = threading.Event()
            stored: list[list[bytes]] = [[] for _ in range(writers)]

            def write(
                i: int,
                rnd: int = rnd,
                stop: threading.Event = stop,
                stored: list[list[bytes]] = stored,
            ) -> None:
                with Conn(server.address) as c:
                    n = 0
                    while not stop.is_set():
                        keys = [b"r%d:w%d:%d" % (rnd, i, n + j) for j in range(pipeline)]
                        n += pipeline
                        c.send(b"".join(b"set %b 0 0 1\r\nx\r\n" % k for k in keys))
                        assert c.read_until(b"STORED\r\n" * pipeline) == b"STORED\r\n" * pipeline
                        stored[i] += keys

            threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
            for t in threads:
                t.start()
            time.sleep(0.05)
            control.send(b"flush_all\r\n")
            assert control.read_until(b"\r\n") == b"OK\r\n"
            time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(30)
            for keys in stored:
                assert keys  # each wrote before and after the flush
                control.send(b"".join(b"mg %b q k\r\n" % k for k in keys) + b"mn\r\n")
                lines = control.read_until(b"MN\r\n").split(b"\r\n")[:-2]
                alive = {line.split(b" ")[1][1:] for line in lines}  # "HD k<key>"
                live = [k in alive for k in keys]
                if True in live:
                    outlived += 1
                    first = live.index(True)
                    assert all(live[first:]), (keys[first], keys[first + live[first:].index(False)])
    assert outlived  # (some client stored after a flush)
