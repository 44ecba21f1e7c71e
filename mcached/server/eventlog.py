"""The event log behind ``watch``: a ring per worker in shared memory, read by the watchers.

memcached gives each worker thread a buffer its events go into and a logger thread that
drains every buffer into every watcher's. Here the workers may be processes, so each
worker slot has a *ring* in one ``MAP_SHARED`` mapping made before the workers start: its
worker is the only writer of its records and head, and any worker serving a watcher reads
it (and moves its *counted* word, a tally of lapped records, without a lock: `_window`).

Rules that keep the request path free:

* Nothing is recorded while no watcher wants it: the emitters check `flags` (a plain int,
  the OR of what every attached watcher asked for, copied from the board's ``G_WATCH``
  when it changes); a handler checks its own copy first, so a request pays one attribute
  test when nobody watches. The storage tells of evictions through a hook (`eviction`)
  the daemon sets only while a watcher asks for ``evictions``: an eviction otherwise pays
  one test of None.
* A writer never waits: a ring has fixed slots (`SLOT` bytes: a key of up to 250 bytes
  fits) and the writer overwrites the oldest. A record is written as a seqlock: its
  sequence word is cleared, the fields written, then the sequence set, then the ring's
  head moved on; a reader copies a record and keeps it only if its sequence word is still
  the one it expected, so a record overwritten under it is counted as skipped, never read
  torn.
* A reader never blocks a writer: it has its own cursor per ring. Records a ring lapped
  before they were read (of any type: who wanted them is not known once overwritten) are
  counted as memcached counts the lines its full worker buffers drop, in
  ``log_worker_dropped`` (once each, by the first reader to find them gone: the ring's
  *counted* word), and no watcher is told of them; the lines a watcher wanted and
  could not take (its output full) are told as memcached tells them, a ``skipped=N`` line
  before the next line sent.

Each record carries a *gid* from the board's ``G_LOG_SEQ`` word, bumped by each writer
without a lock: it orders the events of the whole daemon, and two events written at the
same instant by two worker processes may rarely share one (memcached's is an atomic add)
or come in the other order; a ring's own records keep the order they were written in.

`WatchStream` is one watcher: a connection handed over by its worker after ``watch``
answered OK. `Watchers` are a worker's: every `WATCH_INTERVAL` seconds the worker reads
what every ring holds since it last looked, once for all of them, renders each record
once (`mcached.watch.render`), and hands each watcher the lines it wants; a watcher sends
what the socket takes, keeping at most `STREAM_BUF` bytes unsent; past that, lines are
skipped and counted. The stream reads nothing but the client's EOF (memcached's watcher
takes no more commands).
"""

from __future__ import annotations

import heapq
import mmap
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from mcached import watch
from mcached.server.board import G_LOG_SEQ, Board

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
SLOT = 320  # bytes per record: the header and a key of up to 270 bytes
SLOTS = 2048  # records per ring (640 KB; memcached's worker buffer is 64 KB)
# bytes before the slots: the head word (the next record's sequence), then the *counted*
# word (every record before it that a reader found lapped is counted in log_worker_dropped)
RING_HEAD = 64
RING = RING_HEAD + SLOTS * SLOT
# seq, gid, ts, type, a, b, (pad), i1, i2, i3, i4, key length; i4 is a TTL, which memcached
# prints as an unsigned 32-bit number for a store (a past exptime: 4294967235) and as -1 for
# an eviction's item that never expires, so it takes 64 bits
RECORD = struct.Struct("<qqdBBBxiiiqH")
KEY_AT = RECORD.size
TYPE_AT = struct.calcsize("<qqd")  # RECORD's type byte: after seq, gid and ts
KEY_MAX = SLOT - KEY_AT
SEQ = struct.Struct("<q")
STREAM_BUF = 256 * 1024  # unsent bytes a watcher may hold (memcached's watcher buffer)
WATCH_INTERVAL = 0.02  # seconds between a worker's pumps of its watchers
PUMP_MAX = 4 * SLOTS  # records one pump reads at most (the rest: next pump, or skipped)

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _gid(record: tuple[Any, ...]) -> int:
    return int(record[0])


def _map(size: int) -> mmap.mmap:
    size = max(mmap.PAGESIZE, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | MAP_NORESERVE)


class EventLog:
    """The rings of `board.slots` workers. Made before the workers start; a worker binds
    its slot (`bind`) in the thread that runs it."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.rings = board.slots
        self.map = _map(self.rings * RING)
        self.flags = 0  # what the watchers want (the board's G_WATCH, copied)
        self._slot_of: dict[int, int] = {}  # thread ident -> its worker slot
        self._pack = RECORD.pack_into
        self._seqs = memoryview(self.map).cast("q")  # the head words live here too

    def bind(self, slot: int) -> None:
        """The calling thread writes into worker `slot`'s ring from now on."""
        self._slot_of[threading.get_ident()] = slot

    def head(self, ring: int) -> int:
        return int(self._seqs[ring * RING // 8])

    # ---- writing (the worker whose ring it is) ----

    def emit(
        self, kind: int, a: int, b: int, i1: int, i2: int, i3: int, i4: int, key: bytes
    ) -> None:
        ring = self._slot_of.get(threading.get_ident())
        if ring is None:
            return  # not a worker's thread (nothing of a watcher's concern)
        words = self._seqs
        base = ring * RING
        seq = int(words[base // 8])
        at = base + RING_HEAD + (seq % SLOTS) * SLOT
        g = self.board.words
        gid = g[G_LOG_SEQ] + 1
        g[G_LOG_SEQ] = gid
        key = key[:KEY_MAX]
        words[at // 8] = -1  # being written
        self._pack(self.map, at, -1, gid, time.time(), kind, a, b, i1, i2, i3, i4, len(key))
        self.map[at + KEY_AT : at + KEY_AT + len(key)] = key
        words[at // 8] = seq
        words[base // 8] = seq + 1

    def item_get(self, status: int, key: bytes, clsid: int, size: int, cfd: int) -> None:
        self.emit(watch.ITEM_GET, status, 0, clsid, cfd, size, 0, key)

    def item_store(
        self, status: int, cmd: int, key: bytes, ttl: int, clsid: int, size: int, cfd: int
    ) -> None:
        self.emit(watch.ITEM_STORE, status, cmd, clsid, cfd, size, ttl, key)

    def eviction_hook(self) -> Callable[[bytes, bool, int, int, int, int], None] | None:
        """What the storage's ``on_evict`` should be now: `eviction` while a watcher wants
        evictions (`flags`), else None."""
        return self.eviction if self.flags & watch.EVICTIONS else None

    def eviction(
        self, key: bytes, fetched: bool, ttl: int, idle: int, clsid: int, size: int
    ) -> None:
        """An item the storage evicted (its `Cache.on_evict` hook, in the storing thread)."""
        self.emit(watch.EVICTION, fetched, 0, clsid, idle, size, ttl, key)

    def deleted(self, cmd: int, key: bytes, clsid: int, size: int) -> None:
        self.emit(watch.DELETED, 0, cmd, clsid, 0, size, 0, key)

    def conn_event(
        self, kind: int, rip: str, rport: int, transport: int, reason: int, cfd: int
    ) -> None:
        self.emit(kind, transport, reason, rport, cfd, 0, 0, rip.encode())

    # ---- reading (a watcher's worker) ----

    def read(
        self, cursors: list[int], want: int, limit: int = PUMP_MAX
    ) -> tuple[list[tuple[Any, ...]], int]:
        """The records of every ring since `cursors` (advanced) whose type `want` covers,
        in gid order, and how many were lost (overwritten before they were read).

        Only records whose gid was drawn before this read began are taken; later ones wait
        for the next read. The rings are read one after the other, so without that bound a
        record written to a ring already read (gid 50) could be missed while a later one
        (gid 51, of a request that followed the first's reply) is taken from a ring read
        after it: the watcher would see 51 before 50. (A record stamped before the read
        began is taken whatever its gid: the unlocked counter can step back when two
        processes bump it at once, and its records must not wait for the next event.)"""
        per_ring: list[list[tuple[Any, ...]]] = []
        lost = 0
        began = time.time()
        last_gid = self.board.words[G_LOG_SEQ]
        unpack = RECORD.unpack_from
        m = self.map
        words = self._seqs
        flag_of = watch.FLAG_OF
        for ring in range(self.rings):
            out: list[tuple[Any, ...]] = []
            per_ring.append(out)
            base, seq, stop, lapped = self._window(ring, cursors[ring], limit)
            lost += lapped
            while seq < stop:
                at = base + RING_HEAD + (seq % SLOTS) * SLOT
                rec = unpack(m, at)
                key = bytes(m[at + KEY_AT : at + KEY_AT + rec[-1]])
                if rec[0] != seq or words[at // 8] != seq:
                    lost += 1  # overwritten (or being written) under us
                elif rec[1] > last_gid and rec[2] >= began:
                    break  # drawn after this read began: the next read takes it
                elif flag_of.get(rec[3], 0) & want:
                    # (gid, type, ts, a, b, i1, i2, i3, i4, key): `watch.render`'s order
                    out.append((rec[1], rec[3], rec[2], *rec[4:-1], key))
                seq += 1
            cursors[ring] = seq
        # in gid order, each ring's own records in the order written: the unlocked counter
        # can step back under one ring's writer (another process's bump lands between its
        # read and its write), and a sort by gid alone put a connection's later line first
        return list(heapq.merge(*per_ring, key=_gid)), lost

    def _window(self, ring: int, seq: int, limit: int) -> tuple[int, int, int, int]:
        """`ring`'s offset, and the records a reader at `seq` looks at now: from (past
        those overwritten since, the lapped) to at most `limit` of them; and how many of
        the lapped no reader has counted yet. Two workers serving watchers both miss a
        record lapped under both; the ring's counted word makes it one drop, as memcached
        counts a line its worker buffer drops once (two readers in the same microseconds
        can still both count the records between their two reads of the word)."""
        base = ring * RING
        words = self._seqs
        head = int(words[base // 8])
        lapped = 0
        if head - seq > SLOTS:
            gone = head - SLOTS  # the oldest record the ring still holds
            counted = int(words[base // 8 + 1])
            if gone > counted:
                lapped = gone - max(seq, counted)
                words[base // 8 + 1] = gone
            seq = gone
        return base, seq, min(head, seq + limit), lapped

    def tally(self, cursors: list[int], limit: int = PUMP_MAX) -> tuple[dict[int, int], int]:
        """What `read` would pass over, counted by type and not read: for watchers that
        take no line now (their output full). Each record's type byte alone is looked at;
        records written after the tally began are counted too (the lines are skipped all
        the same)."""
        kinds: dict[int, int] = {}
        lost = 0
        m = self.map
        get = kinds.get
        for ring in range(self.rings):
            base, seq, stop, lapped = self._window(ring, cursors[ring], limit)
            lost += lapped
            for n in range(seq, stop):
                kind = m[base + RING_HEAD + (n % SLOTS) * SLOT + TYPE_AT]
                kinds[kind] = get(kind, 0) + 1
            cursors[ring] = stop
        return kinds, lost

    def cursors(self) -> list[int]:
        """A new reader's cursors: from now on (memcached's watcher sees nothing older)."""
        return [self.head(r) for r in range(self.rings)]

    def close(self) -> None:
        self._seqs.release()
        self.map.close()


class WatchStream:
    """One watcher: the socket of a connection that asked ``watch``, its flags and its
    unsent lines. Registered on its worker's poller in the connection's place (the
    poller calls it on any event: EOF, or room to send)."""

    def __init__(
        self,
        sock: socket.socket,
        flags: int,
        pending: bytes,
        on_close: Callable[[WatchStream, str], None],
        register: Callable[[socket.socket, bool, Any], None],
        count: Callable[[int, int], None],
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.flags = flags
        self.out = bytearray(pending)  # unsent, oldest first (the OK first)
        self.skipped = 0
        self.count = count  # (lines sent, lines skipped): stats log_watcher_sent, _skipped
        self.on_close = on_close
        self.register = register  # (sock, want_write, owner): the worker's poller
        self.closed = False
        self._writing = False
        self.register(sock, False, self)

    def __call__(self) -> None:
        """The poller saw an event: the client closed (or sent something), or the socket
        has room again."""
        try:
            data = self.sock.recv(4096)
        except _WOULD_BLOCK:
            data = None
        except OSError:
            data = b""
        if data == b"":
            self.close("watcher closed")
            return
        self.send()

    def take(self, lines: list[bytes], blob: bytes, lost: int) -> None:
        """Queue `lines` (the lines it wants of a read, `blob` all of them joined), after
        the `lost` records the read missed; past `STREAM_BUF` unsent, lines are skipped
        and counted. Then send what the socket takes."""
        if self.closed:
            return
        self.skipped += lost
        out = self.out
        sent = 0
        if len(out) >= STREAM_BUF:  # full: a watcher that does not read costs a sum
            self.skipped += len(lines)
            lost += len(lines)
        elif len(out) + len(blob) <= STREAM_BUF:  # room for every line: one append
            if lines and self.skipped:
                out += b"skipped=%d\n" % self.skipped
                self.skipped = 0
            out += blob
            sent = len(lines)
        else:
            for line in lines:
                if len(out) >= STREAM_BUF:
                    self.skipped += 1
                    lost += 1
                    continue
                if self.skipped:
                    out += b"skipped=%d\n" % self.skipped
                    self.skipped = 0
                out += line
                sent += 1
        if sent or lost:
            self.count(sent, lost)
        self.send()

    def send(self) -> None:
        """Send what the socket takes now (the poller says when it takes more)."""
        out = self.out
        while out:
            try:
                n = self.sock.send(out)
            except _WOULD_BLOCK:
                break
            except OSError:
                self.close("write error")
                return
            if n <= 0:
                break
            del out[:n]
        want_write = bool(out)
        if want_write != self._writing:
            self._writing = want_write
            self.register(self.sock, want_write, self)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.out.clear()
        self.on_close(self, reason)


class Watchers:
    """A worker's watchers, read for together: each pump reads the rings once, for what
    any of them wants, renders each record once, and hands each watcher the lines it
    wants (watchers that want the same get the same list, joined once). Read one by one,
    each watcher cost its worker a read and a render of every event (20 watchers that never
    read took a node from 352,000 keys a second to 10,900)."""

    def __init__(self, log: EventLog, dropped: Callable[[int], None] = lambda n: None) -> None:
        self.log = log
        self.streams: list[WatchStream] = []
        self._cursors: list[int] = []
        # records lapped before any worker read them (stats log_worker_dropped), counted
        # by the first worker serving watchers to find them gone
        self.dropped = dropped

    def add(self, stream: WatchStream) -> None:
        """From now on `stream` is handed what is logged (what was logged before goes to
        the others first: memcached's watcher sees nothing older than itself)."""
        if self.streams:
            self.pump()
        else:
            self._cursors = self.log.cursors()
        self.streams.append(stream)

    def remove(self, stream: WatchStream) -> None:
        if stream in self.streams:
            self.streams.remove(stream)

    def pump(self) -> None:
        """Read what the rings hold since the last pump; hand it out."""
        streams = [s for s in self.streams if not s.closed]
        if not streams:
            return
        want = 0
        for stream in streams:
            if len(stream.out) < STREAM_BUF:
                want |= stream.flags
        if not want:  # none takes a line now: count what each skips, render nothing
            kinds, lost = self.log.tally(self._cursors)
            if lost:
                self.dropped(lost)
            flag_of = watch.FLAG_OF
            for stream in streams:
                n = sum(c for k, c in kinds.items() if flag_of.get(k, 0) & stream.flags)
                stream.take([], b"", n)
            return
        for stream in streams:
            want |= stream.flags
        records, lost = self.log.read(self._cursors, want)
        if lost:
            # Not told to the watchers: a `watch mutations` was told of thousands of
            # lapped `fetchers` records another watcher's gets made (memcached tells a
            # watcher only of lines of its own kinds it could not take)
            self.dropped(lost)
        render = watch.render
        flag_of = watch.FLAG_OF
        rendered = [render(*rec) for rec in records]
        wanted_by = [flag_of.get(rec[1], 0) for rec in records]
        chosen: dict[int, tuple[list[bytes], bytes]] = {}
        for stream in streams:
            flags = stream.flags
            if flags not in chosen:
                lines = [line for line, k in zip(rendered, wanted_by, strict=True) if k & flags]
                chosen[flags] = (lines, b"".join(lines))
            lines, blob = chosen[flags]
            stream.take(lines, blob, 0)
