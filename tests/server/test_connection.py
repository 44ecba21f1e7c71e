"""mcached/server/connection.py: one connection's state machine, over a socketpair, with a
fake owner in place of its worker and a small dispatch table in place of the handlers."""

from __future__ import annotations

import socket
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from mcached.errors import CloseConnection, Shutdown
from mcached.latency import ROW, count
from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.binary_parser import BinaryParser
from mcached.protocol.outcomes import GIVE_WAY
from mcached.protocol.parser import RECEIVE_MIN, Parser
from mcached.server.connection import (
    BLOCKED,
    CLOSED,
    CLOSING,
    OUTPUT_SOFT_CAP,
    PULL_PIECES,
    READING,
    STREAM_CAP,
    YIELDED,
    Connection,
)
from mcached.server.poller import READ, WRITE, Poller
from mcached.stats import Counters

pytestmark = pytest.mark.unit


class RecordingPoller(Poller):
    """A real epoll that also remembers each socket's interest, for the tests to read."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[int, int] = {}

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        super().register(sock, events, owner)
        self.events[sock.fileno()] = events

    def modify(self, sock: socket.socket, events: int, owner: Any) -> None:
        super().modify(sock, events, owner)
        self.events[sock.fileno()] = events

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        super().unregister(sock)
        del self.events[fd]


class FakeOwner:
    """What a worker gives its connections (`mcached.server.connection.Owner`)."""

    def __init__(self) -> None:
        self.counters = Counters()
        self.selector = RecordingPoller()
        self.ready: set[Connection] = set()
        self.now = 0.0
        self.now_ns = 0
        self.trace = False
        # per command type, its latency row (mcached.latency), made on first use
        self.latency_rows: defaultdict[type, list[int]] = defaultdict(lambda: [0] * ROW)
        self.closed: list[str] = []
        self.shutdowns: list[bool] = []
        self.pressed = 0

    def connection_closed(self, conn: Connection, reason: str) -> None:
        self.closed.append(reason)

    def request_shutdown(self, graceful: bool) -> None:
        self.shutdowns.append(graceful)

    def tls_handshake_failed(self) -> None:
        raise AssertionError("no TLS here")

    def tls_handshake_done(self, sock: Any) -> None:
        raise AssertionError("no TLS here")

    def memory_pressure(self, held: int) -> None:
        self.pressed += 1

    def interest(self, conn: Connection) -> int:
        """The events the connection asks the poller for (0: not registered)."""
        return self.selector.events.get(conn.fd, 0)


def get(cmd: c.Get, conn: Any) -> None:
    """``get <key>...``: ``<key>\\r\\n`` per key; ``big<N>`` answers N bytes of x."""
    for key in cmd.keys:
        if key.startswith(b"big"):
            conn.out.append(b"x" * int(key[3:]))
        else:
            conn.out.append(key + b"\r\n")


def quit_(cmd: c.Quit, conn: Any) -> None:
    raise CloseConnection("quit")


def shutdown(cmd: c.ShutdownCmd, conn: Any) -> None:
    raise Shutdown(graceful=cmd.mode == b"graceful")


RELEASED: list[str] = []


def gets(cmd: c.Gets, conn: Any) -> None:
    """``gets <key>...``: streamed, one ``<key>`` piece of 100 KB per key; each piece's
    "hold" is let go once it is sent (`after_sent`), or when the stream is dropped."""

    def pieces() -> Iterator[bytes]:
        try:
            for key in cmd.keys:
                conn.after_sent(lambda key=key: RELEASED.append(key.decode()))
                yield key * (100_000 // len(key))
            yield b"END\r\n"
        finally:
            RELEASED.append("stream closed")

    conn.out.append(b"begin\r\n")
    conn.stream = pieces()


def gat(cmd: c.Gat, conn: Any) -> None:
    """``gat <n> <key>``: a stream of one small piece, done within the turn that made it."""
    conn.stream = iter([b"short " + cmd.keys[0] + b"\r\n"])


RECEIVED: list[Any] = []


def incoming(cmd: c.Incoming, conn: Any) -> None:
    """A value received into place: into a buffer of its size, split in three views, or
    (key ``drop``) dropped; `RECEIVED` records what ``done`` or ``abort`` saw."""
    key = cmd.store.key
    if key == b"drop":
        views = None
    else:
        target = bytearray(cmd.vlen)
        mv = memoryview(target)
        third = cmd.vlen // 3
        views = [mv[:third], mv[third : 2 * third], mv[2 * third :]]

    def done(terminated: bool) -> None:
        value = None if views is None else bytes(target)
        RECEIVED.append((key, terminated, value))
        conn.out.append(b"STORED\r\n" if terminated else b"BAD\r\n")

    conn.receive(views, cmd.vlen, done, lambda: RECEIVED.append((key, "aborted")), cmd.tail)


DISPATCH = {
    c.Get: get,
    c.Gets: gets,
    c.Gat: gat,
    c.Incoming: incoming,
    b.BinNoop: lambda cmd, conn: conn.out.append(b"noop\r\n"),
    c.Quit: quit_,
    c.ShutdownCmd: shutdown,
}  # else KeyError


_OPEN: list[Any] = []  # sockets and pollers a test made, closed after it


@pytest.fixture(autouse=True)
def _close_what_tests_open() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def make(
    reqs_per_event: int = 20, sndbuf: int | None = None, parser: Any = None
) -> tuple[Connection, socket.socket, FakeOwner]:
    """A connection as a worker holds it after the hand-off, and the client's end."""
    ours, client = socket.socketpair()
    _OPEN.extend((ours, client))
    ours.setblocking(False)
    if sndbuf is not None:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    client.settimeout(5)
    owner = FakeOwner()
    _OPEN.append(owner.selector)
    parser = parser or Parser(receive_min=RECEIVE_MIN)
    conn = Connection(ours, "peer", "listen", owner, DISPATCH, parser, reqs_per_event)
    owner.selector.register(ours, READ, conn)  # as Worker._accept_handed_off does
    return conn, client, owner


def received(client: socket.socket) -> bytes:
    """What the client can read now, without waiting."""
    parts = []
    client.setblocking(False)
    try:
        while chunk := client.recv(1 << 20):
            parts.append(chunk)
    except BlockingIOError:
        pass
    finally:
        client.settimeout(5)
    return b"".join(parts)


def test_a_request_is_answered_and_counted() -> None:
    conn, client, owner = make()
    client.sendall(b"get a b\r\n")
    conn.on_readable()
    assert client.recv(100) == b"a\r\nb\r\n"
    assert conn.state == READING and owner.interest(conn) == READ
    assert owner.counters.bytes_read == 9 and owner.counters.bytes_written == 6
    assert not owner.ready and not owner.closed
    conn.close()


def test_each_answered_command_is_timed_from_its_read_to_its_send() -> None:
    """Latency (mcached.latency): one count per command answered, in its type's row, timed
    from the loop clock of the read that brought it (the owner's `now`) to the send."""
    conn, client, owner = make(reqs_per_event=2)
    owner.now_ns = time.monotonic_ns() - 2_000_000  # the read was 2 ms before the loop got here
    owner.now = owner.now_ns / 1e9
    client.sendall(b"get a\r\nget b\r\nget c\r\n")
    conn.on_readable()
    conn.process()  # the third, in the next turn: timed from the same read
    assert received(client) == b"a\r\nb\r\nc\r\n"
    row = owner.latency_rows[c.Get]
    assert count(row) == 3
    assert sum(row[:21]) == 0  # none took less than the 2 ms (bucket 21: 2^20..2^21 ns)
    assert 3 * 0.002 <= row[-1] / 1e9 < 3 * 1.0  # the sum, in nanoseconds
    conn.close()


@pytest.mark.parametrize(
    ("request_", "reply"), [(b"get a\r\n", b"a\r\n"), (b"get a b\r\n", b"a\r\nb\r\n")]
)
def test_a_lone_get_is_answered_counted_and_timed_as_a_turn_is(
    request_: bytes, reply: bytes
) -> None:
    """A read that is one plain get (of one key or more) takes the lone path (Parser.lone):
    the same reply, byte counts, latency row and state as process() gives the same get read
    in two parts."""
    whole = Parser()
    whole.feed(request_)
    assert whole.lone() is not None  # read at once, it takes the lone path
    for reads in ([request_], [request_[:4], request_[4:]]):
        conn, client, owner = make()
        assert conn.lone is not None
        owner.now_ns = time.monotonic_ns() - 2_000_000
        owner.now = owner.now_ns / 1e9
        for data in reads:
            client.sendall(data)
            conn.on_readable()
        assert client.recv(100) == reply
        assert owner.counters.bytes_read == len(request_)
        assert owner.counters.bytes_written == len(reply)
        assert conn.state == READING and owner.interest(conn) == READ and not owner.ready
        assert conn.last_cmd == owner.now
        row = owner.latency_rows[c.Get]
        assert count(row) == 1 and sum(row[:21]) == 0 and row[-1] >= 2_000_000
        conn.close()


def test_a_lone_get_whose_handler_fails_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn, client, owner = make()
    conn.dispatch = {}  # the get's handler lookup raises, on the lone path
    client.sendall(b"get a\r\n")
    conn.on_readable()
    assert conn.state == CLOSED and owner.closed == ["internal error"]
    assert "error handling a request from peer" in caplog.text
    assert client.recv(100) == b""


def test_no_lone_path_under_reqs_per_event_1() -> None:
    """-R 1: every turn yields after its command, lone get or not; conn_yields counts it
    unless the command sent its reply (a get) and nothing more is buffered, as memcached."""
    conn, client, owner = make(reqs_per_event=1)
    assert conn.lone is None
    client.sendall(b"get a\r\n")
    conn.on_readable()
    assert client.recv(100) == b"a\r\n"
    assert owner.counters.conn_yields == 0
    client.sendall(b"get a\r\nget b\r\n")
    conn.on_readable()
    assert owner.counters.conn_yields == 1  # the first get, with the second one buffered
    conn.close()


def test_pipelined_requests_yield_after_reqs_per_event_commands() -> None:
    """-R 2: five pipelined commands take three turns; between them the connection waits
    in the owner's ready set, not on the poller, and is not read."""
    conn, client, owner = make(reqs_per_event=2)
    client.sendall(b"".join(b"get k%d\r\n" % i for i in range(5)))
    conn.on_readable()
    assert received(client) == b"k0\r\nk1\r\n"
    assert conn.state == YIELDED and conn in owner.ready
    assert owner.interest(conn) == 0  # buffered input: served without a read
    assert owner.counters.conn_yields == 1
    conn.process()
    assert received(client) == b"k2\r\nk3\r\n"
    assert conn.state == YIELDED and owner.counters.conn_yields == 2
    conn.process()
    assert received(client) == b"k4\r\n"
    assert conn.state == READING and conn not in owner.ready
    assert owner.interest(conn) == READ
    assert owner.counters.conn_yields == 2
    conn.close()


def test_unread_output_past_the_cap_blocks_reading_then_resumes() -> None:
    """A client that pipelines without reading: past OUTPUT_SOFT_CAP unsent bytes the
    connection neither reads nor parses; once the client drains it, it goes on."""
    conn, client, owner = make(reqs_per_event=1)
    size = OUTPUT_SOFT_CAP + 1024 * 1024
    client.sendall(b"get big%d\r\nget after\r\n" % size)
    conn.on_readable()
    assert conn.state == BLOCKED and conn not in owner.ready
    assert conn.unsent >= OUTPUT_SOFT_CAP
    assert owner.interest(conn) == WRITE  # no READ: nothing more is taken in
    assert conn.parser.buffered == len(b"get after\r\n")  # and nothing more parsed
    got = b""
    while conn.state == BLOCKED:
        got += client.recv(1 << 20)
        conn.on_writable()
    assert conn.unsent < OUTPUT_SOFT_CAP
    assert conn.state == YIELDED and conn in owner.ready  # drained enough: parse again
    conn.process()
    assert conn.parser.buffered == 0
    while conn.unsent:
        got += received(client)
        conn.on_writable()
    got += received(client)
    assert got == b"x" * size + b"after\r\n"
    assert conn.state == YIELDED  # -R 1: the turn ended on its budget
    conn.process()  # the next turn finds nothing: back to reading
    assert conn.state == READING and owner.interest(conn) == READ
    conn.close()


def test_a_partial_send_keeps_the_rest_and_the_order() -> None:
    conn, client, owner = make(sndbuf=4096)
    client.sendall(b"get big100000\r\n")
    conn.on_readable()
    assert 0 < conn.unsent < 100000  # the socket took part of it
    assert owner.interest(conn) == READ | WRITE  # still reading, and waiting to write
    client.sendall(b"get next\r\n")  # its reply must wait behind the rest
    conn.on_readable()
    got = b""
    while conn.unsent:
        got += received(client)
        conn.on_writable()
    got += received(client)
    assert got == b"x" * 100000 + b"next\r\n"
    assert owner.interest(conn) == READ
    assert owner.counters.bytes_written == len(got)
    conn.close()


def test_eof_answers_what_came_before_then_closes() -> None:
    conn, client, owner = make()
    client.sendall(b"get a\r\nget b\r\n")
    client.shutdown(socket.SHUT_WR)
    conn.on_readable()
    assert received(client) == b"a\r\nb\r\n"
    conn.on_readable()  # reads the EOF
    assert conn.state == CLOSED and owner.closed == ["client closed"]
    assert client.recv(100) == b""  # and the client sees its close
    assert owner.interest(conn) == 0


def test_eof_with_replies_unsent_closes_once_they_are_sent() -> None:
    conn, client, owner = make(sndbuf=4096)
    client.sendall(b"get big100000\r\n")
    client.shutdown(socket.SHUT_WR)
    conn.on_readable()
    conn.on_readable()  # the EOF, while most of the reply waits
    assert conn.state == CLOSING and conn.eof
    assert owner.interest(conn) == WRITE  # only writing: a half-closed socket is readable
    got = b""
    while conn.state == CLOSING:
        got += received(client)
        conn.on_writable()
    got += received(client)
    assert got == b"x" * 100000
    assert conn.state == CLOSED and owner.closed == ["client closed"]


def test_quit_sends_what_came_before_and_nothing_after() -> None:
    conn, client, owner = make(sndbuf=4096)
    client.sendall(b"get big50000\r\nquit\r\nget never\r\n")
    conn.on_readable()
    assert conn.state == CLOSING  # the reply before quit is still going out
    got = b""
    while conn.state == CLOSING:
        got += received(client)
        conn.on_writable()
    got += received(client)
    assert got == b"x" * 50000
    assert conn.state == CLOSED and owner.closed == ["quit"]


def test_quit_with_nothing_owed_closes_at_once() -> None:
    conn, client, owner = make()
    client.sendall(b"get a\r\nquit\r\n")
    conn.on_readable()
    assert conn.state == CLOSED and owner.closed == ["quit"]
    assert client.recv(100) == b"a\r\n" and client.recv(100) == b""


@pytest.mark.parametrize(("line", "graceful"), [(b"shutdown", False), (b"shutdown graceful", True)])
def test_shutdown_command_closes_and_tells_the_owner(line: bytes, graceful: bool) -> None:
    conn, client, owner = make()
    client.sendall(b"get a\r\n" + line + b"\r\nget b\r\n")
    conn.on_readable()
    assert conn.state == CLOSED and owner.closed == ["shutdown command"]
    assert owner.shutdowns == [graceful]
    assert client.recv(100) == b"a\r\n"  # what came before, and nothing after
    assert client.recv(100) == b""


def test_a_failing_handler_closes_the_connection(caplog: pytest.LogCaptureFixture) -> None:
    conn, client, owner = make()
    client.sendall(b"version\r\n")  # not in DISPATCH: the lookup raises
    conn.on_readable()
    assert conn.state == CLOSED and owner.closed == ["internal error"]
    assert "error handling a request from peer" in caplog.text
    assert client.recv(100) == b""


def test_drain_step_answers_what_the_kernel_already_holds() -> None:
    """Stopping gracefully: requests that arrived but were never read are answered."""
    conn, client, owner = make()
    client.sendall(b"get a\r\nget b\r\n")  # the worker has not been woken for them
    conn.drain_step()
    assert received(client) == b"a\r\nb\r\n"
    assert conn.state == READING and not owner.closed


def test_close_is_once_and_unregisters() -> None:
    conn, client, owner = make()
    conn.close("first")
    conn.close("second")
    assert conn.state == CLOSED and owner.closed == ["first"]
    assert owner.interest(conn) == 0 and conn.fd not in owner.selector.owners
    assert client.recv(100) == b""


def test_a_long_line_part_way_in_tells_the_owner_and_is_let_go_at_close() -> None:
    """A request line growing past PRESSURE_AT asks the worker to check what its
    connections hold at once; closing the connection lets the line's bytes go at once (the
    connection's objects refer to each other, so they waited for the collector)."""
    conn, client, owner = make()
    line = b"get" + b" k" * 200_000  # 400 KB with no newline yet

    def feed(upto: int) -> None:
        sent = conn.parser.buffered
        while conn.parser.buffered < upto:
            if sent < upto:
                client.sendall(line[sent : min(upto, sent + 32_768)])
                sent = min(upto, sent + 32_768)
            conn.on_readable()

    feed(100_000)
    assert owner.pressed == 0
    feed(len(line))
    assert owner.pressed >= 1
    conn.close("out of buffer memory")
    assert conn.parser.buffered == 0


class ResetSocket:
    """A socket whose peer reset the connection: every read fails."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self, n: int) -> bytes:
        raise ConnectionResetError(104, "Connection reset by peer")

    def close(self) -> None:
        self.sock.close()


def test_a_read_error_closes_the_connection() -> None:
    ours, client = socket.socketpair()
    owner = FakeOwner()
    _OPEN.extend((ours, client, owner.selector))
    conn = Connection(
        ResetSocket(ours),  # type: ignore[arg-type]
        "peer",
        "listen",
        owner,
        DISPATCH,
        Parser(),
        20,
    )
    conn.on_readable()
    assert conn.state == CLOSED and owner.closed == ["read error"]
    assert ours.fileno() == -1


def test_a_lone_get_past_the_output_cap_blocks_reading() -> None:
    """The lone path ends its turn as process() does: a reply past OUTPUT_SOFT_CAP that
    the client has not read stops reading (a get of one key, and one of two)."""
    size = OUTPUT_SOFT_CAP + 1024 * 1024
    for request_ in (b"get big%d\r\n" % size, b"get a big%d\r\n" % size):
        conn, client, owner = make(sndbuf=4096)
        client.sendall(request_)
        conn.on_readable()
        assert conn.parser.buffered == 0  # the whole read was the one command
        assert conn.state == BLOCKED and owner.interest(conn) == WRITE
        conn.close()


def test_a_lone_multiget_streams_its_reply_as_process_does() -> None:
    """A read that is one multiget whose reply streams (the fake ``gets`` is a stream; a
    real get streams past STREAM_AFTER): reading stops until the stream is sent, then the
    connection reads again."""
    RELEASED.clear()
    conn, client, owner = make(sndbuf=4096)
    conn.dispatch = {**DISPATCH, c.Get: gets}
    keys = [b"k%02d" % i for i in range(20)]
    client.sendall(b"get " + b" ".join(keys) + b"\r\n")
    conn.on_readable()
    assert conn.parser.buffered == 0
    assert conn.stream is not None and conn.state == BLOCKED
    assert owner.interest(conn) == WRITE
    got = b""
    while conn.stream is not None or conn.unsent:
        got += client.recv(1 << 20)
        conn.on_writable()
    got += received(client)
    assert got == b"begin\r\n" + b"".join(k * (100_000 // 3) for k in keys) + b"END\r\n"
    assert conn.state == YIELDED  # then a turn finds nothing buffered and reads again
    conn.process()
    assert conn.state == READING and owner.interest(conn) == READ
    conn.close()


# ---- streamed replies ----


def test_a_stream_is_pulled_only_as_the_client_reads() -> None:
    """A reply given as a stream (gets of 40 keys x 100 KB here) is built only while less
    than STREAM_CAP waits unsent; commands after it wait until it is done."""
    RELEASED.clear()
    conn, client, owner = make(sndbuf=4096)
    keys = [b"k%02d" % i for i in range(40)]
    client.sendall(b"gets " + b" ".join(keys) + b"\r\nget after\r\n")
    conn.on_readable()
    assert conn.stream is not None and conn.state == BLOCKED
    assert owner.interest(conn) == WRITE  # the rest is not read or parsed meanwhile
    assert conn.unsent <= STREAM_CAP + 100_000  # one piece past the cap, at most
    assert conn.parser.buffered == len(b"get after\r\n")
    got = b""
    while conn.stream is not None or conn.unsent:
        assert conn.unsent <= STREAM_CAP + 100_000
        got += client.recv(1 << 20)
        conn.on_writable()
    got += received(client)
    expected = b"begin\r\n" + b"".join(k * (100_000 // 3) for k in keys) + b"END\r\n"
    assert got == expected
    # each hold let go once its bytes were sent, in order; the stream ended when its last
    # piece was pulled (before the last pieces were sent)
    assert [r for r in RELEASED if r != "stream closed"] == [k.decode() for k in keys]
    assert RELEASED.count("stream closed") == 1
    assert conn.state == YIELDED  # and the command after it runs now
    conn.process()
    assert received(client) == b"after\r\n"
    conn.close()


def test_a_stream_that_gives_way_is_pulled_on_at_the_next_writable_event() -> None:
    """A stream's producer walking something long (a metadump) yields GIVE_WAY after a
    step that found nothing: the pull stops there, so the worker serves its other
    connections, and goes on when the socket is next writable."""
    conn, client, owner = make()
    conn.stream = iter([b"a", GIVE_WAY, b"b", GIVE_WAY, GIVE_WAY, b"c\r\n"])
    conn.set_state(BLOCKED)
    got = []
    while conn.stream is not None:
        assert owner.interest(conn) == WRITE  # comes back without a read
        conn.on_writable()
        got.append(received(client))
    assert got == [b"a", b"b", b"", b"c\r\n"]
    assert conn.state == YIELDED
    conn.close()


def test_a_stream_of_many_small_pieces_is_pulled_a_few_thousand_at_a_time() -> None:
    """A multiget of small values streams ~5 pieces a key: a pull took up to STREAM_CAP
    bytes of them (~13,000 lookups, tens of ms) before the worker's other connections had a
    turn; 13 clients' long multigets held a new client's request up to 5.3 s. A pull now
    stops after PULL_PIECES pieces and goes on at the next writable event."""
    conn, client, owner = make()
    produced = 0

    def small() -> Iterator[bytes]:
        nonlocal produced
        for _ in range(3 * PULL_PIECES):
            produced += 1
            yield b"x"

    conn.stream = small()
    conn.set_state(BLOCKED)
    conn.on_writable()
    assert produced == PULL_PIECES and conn.stream is not None  # one pull's share
    assert owner.interest(conn) == WRITE  # pulled on when next writable
    got = received(client)
    while conn.stream is not None:
        conn.on_writable()
        got += received(client)
    assert got == b"x" * 3 * PULL_PIECES
    conn.close()


def test_closing_mid_stream_lets_go_of_everything() -> None:
    RELEASED.clear()
    conn, client, owner = make(sndbuf=4096)
    client.sendall(b"gets aaa bbb ccc ddd eee fff\r\n")
    conn.on_readable()
    assert conn.stream is not None
    conn.close("client gone")
    assert "stream closed" in RELEASED and conn.stream is None
    assert set(RELEASED) - {"stream closed"} <= {"aaa", "bbb", "ccc", "ddd", "eee", "fff"}
    # every hold taken was let go: none is still waiting for bytes that will never go
    assert not conn._after


def test_after_sent_waits_for_its_bytes() -> None:
    conn, client, owner = make(sndbuf=4096)
    done: list[int] = []
    conn.out.append(b"y" * 300_000)
    conn.after_sent(lambda: done.append(1))
    conn.flush()
    assert done == [] and conn.unsent  # not sent yet: the client has not read
    while conn.unsent:
        client.recv(1 << 20)
        conn.on_writable()
    assert done == [1]
    conn.after_sent(lambda: done.append(2))  # nothing queued: runs at the next flush
    conn.flush()
    assert done == [1, 2]
    conn.close()


def test_bug_commands_after_a_stream_done_in_its_turn_were_left_unserved() -> None:
    """A stream finished within the turn that made it, with commands pipelined after it:
    the connection went back to READING with those commands buffered, and as the client
    had sent everything, nothing woke it again (a pipeline of large gets hung)."""
    conn, client, owner = make()
    client.sendall(b"gat 0 a\r\nget b\r\ngat 0 c\r\nget d\r\n")
    conn.on_readable()
    while conn.state == YIELDED:
        conn.process()
    assert received(client) == b"short a\r\nb\r\nshort c\r\nd\r\n"
    assert conn.state == READING
    conn.close()


def test_a_large_value_is_received_into_its_views() -> None:
    RECEIVED.clear()
    conn, client, owner = make()
    value = bytes(range(256)) * 400  # 102,400 bytes: over RECEIVE_MIN
    client.sendall(b"set k 0 0 %d\r\n" % len(value) + value[:1000])
    conn.on_readable()
    assert conn.sink is not None and conn.parser.buffered == 0  # its start went in
    rest = value[1000:] + b"\r\nget after\r\n"
    for i in range(0, len(rest), 7000):  # in pieces, as a slow client sends it
        client.sendall(rest[i : i + 7000])
        while conn.sink is not None and conn.state != CLOSED:
            before = owner.counters.bytes_read
            conn.on_readable()
            if owner.counters.bytes_read == before:
                break  # read all there was
    assert RECEIVED == [(b"k", True, value)]
    assert received(client) == b"STORED\r\n"
    # the value was read to its last byte and no further: the next command is read as
    # usual (the poller reports the socket readable again)
    assert conn.state == READING and conn.sink is None
    conn.on_readable()
    assert received(client) == b"after\r\n"
    conn.close()


def test_a_value_without_its_crlf_is_a_bad_chunk_and_the_stream_goes_on() -> None:
    RECEIVED.clear()
    conn, client, owner = make()
    value = b"v" * 50_000
    client.sendall(b"set k 0 0 %d\r\n" % len(value))
    conn.on_readable()
    client.sendall(value + b"XYget after\r\n")
    while conn.sink is not None:
        conn.on_readable()
    conn.on_readable()
    assert RECEIVED == [(b"k", False, value)]
    assert received(client) == b"BAD\r\nafter\r\n"
    conn.close()


def test_dropped_value_is_read_and_discarded() -> None:
    RECEIVED.clear()
    conn, client, owner = make()
    client.sendall(b"set drop 0 0 200000\r\n")
    conn.on_readable()
    client.sendall(b"d" * 200_000 + b"\r\nget after\r\n")
    while conn.sink is not None:
        conn.on_readable()
    conn.on_readable()
    assert RECEIVED == [(b"drop", True, None)]
    assert received(client) == b"STORED\r\nafter\r\n"
    conn.close()


def test_closing_mid_value_aborts_it() -> None:
    RECEIVED.clear()
    conn, client, owner = make()
    client.sendall(b"set k 0 0 100000\r\n" + b"z" * 5000)
    conn.on_readable()
    assert conn.sink is not None
    client.close()
    conn.on_readable()  # EOF in the middle of the value
    assert conn.state == CLOSED and conn.sink is None
    assert RECEIVED == [(b"k", "aborted")]
    assert owner.closed == ["client closed in the middle of a value"]


def test_a_binary_value_is_received_with_nothing_after_it() -> None:
    """The binary protocol's value ends the frame: no CRLF is read after it, and the next
    frame's first bytes are left for the parser."""
    RECEIVED.clear()
    conn, client, owner = make(parser=BinaryParser(receive_min=RECEIVE_MIN))
    value = bytes(range(256)) * 100  # 25,600 bytes
    frame = b.request(b.SET, b"k", value, b"\0" * 8)
    client.sendall(frame[:-5000])
    conn.on_readable()
    assert conn.sink is not None and conn.sink.wanted == 5000
    client.sendall(frame[-5000:] + b.request(b.NOOP))
    while conn.sink is not None:
        conn.on_readable()
    assert RECEIVED == [(b"k", True, value)]
    conn.on_readable()
    assert received(client) == b"STORED\r\nnoop\r\n"
    assert conn.state == READING
    conn.close()
