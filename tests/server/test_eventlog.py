"""The watch rings (mcached/server/eventlog.py): a read delivers gids in order across rings."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from mcached import watch
from mcached.server.board import G_LOG_SEQ, Board
from mcached.server.eventlog import (
    PUMP_MAX,
    SLOTS,
    STREAM_BUF,
    EventLog,
    Watchers,
    WatchStream,
)

pytestmark = pytest.mark.unit


def emit_from(log: EventLog, slot: int, key: bytes) -> None:
    """One item_get written by a thread bound to worker `slot`'s ring."""

    def run() -> None:
        log.bind(slot)
        log.item_get(watch.FOUND, key, 1, 3, 7)

    t = threading.Thread(target=run)
    t.start()
    t.join()


def test_a_record_drawn_after_the_read_began_waits_for_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ring 0 was read before gid 1 was written to it, and gid 2 reached ring 1 before ring
    1 was read: the read that began before both takes neither, so the watcher never sees
    gid 2 before gid 1."""
    log = EventLog(Board(2, ["cmd_get"]))
    try:
        cursors = log.cursors()
        emit_from(log, 0, b"first")
        emit_from(log, 1, b"second")
        words = log.board.words
        # as a read that began before both gids were drawn sees the counter and the clock
        words[G_LOG_SEQ] = 0
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: 0.0)
            got, lost = log.read(cursors, watch.FETCHERS)
        assert got == [] and lost == 0 and cursors == [0, 0]
        words[G_LOG_SEQ] = 2
        got, lost = log.read(cursors, watch.FETCHERS)
        assert [(r[0], r[-1]) for r in got] == [(1, b"first"), (2, b"second")] and lost == 0
    finally:
        log.close()


def test_a_record_stamped_before_the_read_is_taken_whatever_its_gid() -> None:
    """Two processes bumping the unlocked counter at once can step it back: a record whose
    gid is past the counter but whose time is before the read is still delivered."""
    log = EventLog(Board(2, ["cmd_get"]))
    try:
        cursors = log.cursors()
        emit_from(log, 1, b"late")
        log.board.words[G_LOG_SEQ] = 0  # stepped back
        time.sleep(0.01)
        got, _ = log.read(cursors, watch.FETCHERS)
        assert [(r[0], r[-1]) for r in got] == [(1, b"late")]
    finally:
        log.close()


def test_a_rings_records_keep_their_order_when_the_counter_stepped_back() -> None:
    """Another process's bump can land between a writer's read of the counter and its
    write, so one ring's later record may carry a smaller gid than its earlier one: the
    read keeps each ring's records in the order written (a connection's lines in its
    requests' order), merging the rings by gid around them. Regression: a sort by gid put
    a connection's later line first (65-83 times in 80,000 gets at -t 4)."""
    log = EventLog(Board(2, ["cmd_get"]))
    try:
        cursors = log.cursors()
        words = log.board.words
        words[G_LOG_SEQ] = 4
        emit_from(log, 0, b"earlier")  # gid 5
        words[G_LOG_SEQ] = 2  # stepped back under ring 0's writer
        emit_from(log, 0, b"later")  # gid 3
        words[G_LOG_SEQ] = 3
        emit_from(log, 1, b"other")  # gid 4
        words[G_LOG_SEQ] = 10
        got, lost = log.read(cursors, watch.FETCHERS)
        assert [r[-1] for r in got] == [b"other", b"earlier", b"later"] and lost == 0
    finally:
        log.close()


class Stream(WatchStream):
    """A watcher on one end of a socket pair; the test holds the other end."""

    def __init__(self, flags: int, full: bool = False) -> None:
        self.peer, ours = socket.socketpair()
        ours.setblocking(False)
        self.counted = [0, 0]
        super().__init__(ours, flags, b"", lambda s, why: None, self._register, self._count)
        if full:  # a client that never reads: its socket and its buffer full
            while True:
                try:
                    ours.send(b"x" * 65536)
                except BlockingIOError:
                    break
            self.out += b"x" * STREAM_BUF

    def _register(self, sock: socket.socket, want_write: bool, owner: object) -> None:
        pass

    def _count(self, sent: int, skipped: int) -> None:
        self.counted[0] += sent
        self.counted[1] += skipped

    def received(self) -> bytes:
        self.peer.setblocking(False)
        out = b""
        while True:
            try:
                out += self.peer.recv(65536)
            except BlockingIOError:
                return out


def test_a_workers_watchers_are_read_for_once_and_each_gets_its_lines() -> None:
    """One read of the rings a pump, whatever the number of watchers; each watcher gets the
    lines its flags want; one whose output is full gets none rendered and counts each line
    it wanted as skipped, and once every watcher is full the rings are only counted.
    Regression: each watcher read and rendered every event itself (20 that never read took
    a node from 352,000 key lookups a second to 10,900)."""
    log = EventLog(Board(1, ["cmd_get"]))
    reads: list[int] = []
    read = log.read

    def counting_read(cursors: list[int], want: int, limit: int = PUMP_MAX) -> Any:
        reads.append(want)
        return read(cursors, want, limit)

    log.read = counting_read  # type: ignore[method-assign]
    fetchers, fetchers2 = Stream(watch.FETCHERS), Stream(watch.FETCHERS)
    mutations, full = Stream(watch.MUTATIONS), Stream(watch.FETCHERS, full=True)
    streams = [fetchers, fetchers2, mutations, full]
    hub = Watchers(log)
    try:
        for s in streams:
            hub.add(s)
        log.bind(0)
        for i in range(3):
            log.item_get(watch.FOUND, b"g%d" % i, 1, 3, 7)
        log.item_store(1, watch.CMD_SET, b"s", 0, 1, 3, 7)  # stored
        reads.clear()
        hub.pump()
        assert reads == [watch.FETCHERS | watch.MUTATIONS]  # one read for all
        for s in (fetchers, fetchers2):
            lines = s.received().splitlines()
            assert [line.split(b" ")[3] for line in lines] == [b"key=g0", b"key=g1", b"key=g2"]
            assert s.counted == [3, 0]
        assert b"key=s " in mutations.received() and mutations.counted == [1, 0]
        assert full.counted == [0, 3] and full.skipped == 3
        for s in (fetchers, fetchers2, mutations):
            s.out += b"x" * STREAM_BUF  # every watcher full now
        log.item_get(watch.FOUND, b"g3", 1, 3, 7)
        reads.clear()
        hub.pump()
        assert reads == []  # counted, not read
        assert fetchers.counted == [3, 1] and mutations.counted == [1, 0]
        assert full.skipped == 4
    finally:
        for s in streams:
            s.peer.close()
            s.sock.close()
        log.close()


@pytest.mark.parametrize("all_full", [False, True], ids=["read", "counted"])
def test_bug_records_lapped_under_two_workers_watchers_were_dropped_twice(all_full: bool) -> None:
    """Two workers serving watchers (a hub each) both found the same records lapped, and
    each added them to log_worker_dropped: a burst that lost 501 records counted 1,002.
    The first to find them gone counts them; a later burst is counted once more, by
    whichever reads first, from where the count stopped."""
    log = EventLog(Board(2, ["cmd_get"]))
    dropped: list[int] = []
    streams = [Stream(watch.FETCHERS, full=all_full) for _ in range(2)]
    hubs = [Watchers(log, dropped.append) for _ in range(2)]
    try:
        for hub, stream in zip(hubs, streams, strict=True):
            hub.add(stream)
        log.bind(0)
        for burst, first in ((SLOTS + 501, 0), (SLOTS + 20, 1)):
            for i in range(burst):
                log.item_get(watch.FOUND, b"g%d" % i, 1, 3, 7)
            hubs[first].pump()
            hubs[1 - first].pump()
        # 501 lapped by the first burst; after it each hub's cursor is at the head, so the
        # second burst laps the 20 oldest of its own
        assert sum(dropped) == 501 + 20
    finally:
        for s in streams:
            s.peer.close()
            s.sock.close()
        log.close()


@pytest.mark.parametrize("all_full", [False, True], ids=["read", "counted"])
def test_records_a_ring_lapped_are_dropped_not_told_to_every_watcher(all_full: bool) -> None:
    """Regression: records overwritten before a read (here a burst of gets) were told to
    every watcher as skipped, whatever it asked for: a `watch mutations` read ``skipped=``
    thousands of item_get records it never wanted. They are counted as dropped (stats
    log_worker_dropped), as memcached counts what its full worker buffers drop; a
    watcher is told only of lines of its own kinds it could not take."""
    log = EventLog(Board(1, ["cmd_get"]))
    dropped: list[int] = []
    mutations, fetchers = Stream(watch.MUTATIONS, full=all_full), Stream(watch.FETCHERS)
    hub = Watchers(log, dropped.append)
    try:
        hub.add(mutations)
        hub.add(fetchers)
        if all_full:
            fetchers.out += b"x" * STREAM_BUF
        log.bind(0)
        burst = SLOTS + 500
        for i in range(burst):
            log.item_get(watch.FOUND, b"g%d" % i, 1, 3, 7)
        log.item_store(1, watch.CMD_SET, b"s", 0, 1, 3, 7)
        hub.pump()
        assert sum(dropped) == 501  # the oldest of the burst, lapped by the newest
        if all_full:  # each is told what it wanted and could not take, and no more
            assert mutations.skipped == 1 and fetchers.skipped == SLOTS - 1
        else:
            assert mutations.counted == [1, 0]
            assert b"skipped=" not in mutations.received()
            assert fetchers.counted == [SLOTS - 1, 0]
    finally:
        for s in (mutations, fetchers):
            s.peer.close()
            s.sock.close()
        log.close()
