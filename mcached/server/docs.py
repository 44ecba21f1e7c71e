"""Shared documents: one small byte document that every process of a daemon reads and any of
them may replace, in one anonymous ``MAP_SHARED`` mapping made before the workers are forked.

What lives here: `SharedDocs`, a meaning-free store of *one* current document (bytes). The
daemon decides what goes in it (the cluster's membership, its health table); this module only
guarantees that every reader, in any process, reads the newest *complete* document, and that
no writer can leave the store unusable, whatever happens to it.

Layout: a *writer* is a process (a worker's slot, the maintainer, the supervisor) or, in one
process, its threads taken one at a time (`write` holds a per-process lock). Each writer owns
two *buffers* and alone writes them, alternating, so its previous document stays readable
while it writes the next one. A buffer is a header of four words and then the bytes:

* ``SEQ``: even when the buffer is complete, odd while its writer writes it;
* ``KEY``: ``stamp << 16 | buffer index``, where stamp is one more than the newest stamp the
  writer saw; the newest document is the complete buffer with the highest key (0: empty);
* ``LEN`` and ``CRC``: the document's length and CRC-32.

Rules:

1. No lock is shared between processes: a process killed at any point (``kill -9``) leaves at
   most its own half-written buffer, odd, which readers skip; its other buffer still holds its
   last complete document. A write that never finished never happened.
2. Two writers writing at once may pick the same stamp; their keys still differ (the buffer
   index is in the key), so every reader, in every process, sees the same winner. A writer
   that must know whether its write is the one that counts reads back (`newest`, `read`):
   the store keeps no read-modify-write promise of its own.
3. A reader copies the bytes, then checks ``SEQ`` and the CRC again; a buffer rewritten under
   it, or torn on a CPU that reorders stores, is read again (then skipped for the next
   newest). Words are aligned 8-byte stores, as in `mcached.server.board`.
4. A writer whose document is a change of the newest one (a read, then a write) may take
   `exclusive`: a POSIX record lock, which the kernel lets go when its holder dies however it
   dies, so rule 1 stands. A holder stopped or stuck past `EXCLUSIVE_WAIT` is passed over:
   the writer goes on without it, and rule 2's read-back is all it has.
5. Nothing here is on the request path: documents change when membership or health changes,
   and readers keep the decoded document until ``newest()`` moves.

Fork: the per-process lock is made anew in every child (`os.register_at_fork`), so a fork
taken while another thread wrote (the supervisor never writes after its children start, but
an embedding program might) cannot leave the child's lock held.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
import time
import weakref
import zlib
from collections.abc import Iterator

MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
DEFAULT_SIZE = 256 * 1024  # bytes of a document: 20 nodes take ~2 KB, 1,000 ~60 KB
HEADER = 32  # bytes: SEQ, KEY, LEN, CRC
SEQ, KEY, LEN, CRC = 0, 1, 2, 3
INDEX_BITS = 16
READ_TRIES = 5
EXCLUSIVE_WAIT = 2.0  # seconds `exclusive` waits for another holder before it goes on

_instances: weakref.WeakSet[SharedDocs] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for docs in list(_instances):
        docs._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SharedDocs:
    """One current document shared by `writers` writers (numbered 0..writers-1) and any
    number of readers. Made before the processes that use it are forked."""

    def __init__(self, writers: int, size: int = DEFAULT_SIZE) -> None:
        if writers < 1 or 2 * writers >= 1 << INDEX_BITS:
            raise ValueError(f"writers must be 1..{(1 << INDEX_BITS) // 2 - 1}")
        self.writers = writers
        self.size = size
        self.stride = HEADER + -(-size // 8) * 8
        total = max(mmap.PAGESIZE, 2 * writers * self.stride)
        total = -(-total // mmap.PAGESIZE) * mmap.PAGESIZE
        self._map = mmap.mmap(-1, total, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
        self._words = memoryview(self._map).cast("q")
        self._lock = threading.Lock()
        self._lockfile = os.memfd_create("mcached-docs", os.MFD_CLOEXEC)  # for `exclusive`
        # closed by `close`, or with the object (a daemon whose start failed)
        self._close_lockfile = weakref.finalize(self, os.close, self._lockfile)
        _instances.add(self)

    # ---- one buffer ----

    def _word(self, buf: int, w: int) -> int:
        return int(self._words[buf * self.stride // 8 + w])

    def _set(self, buf: int, w: int, value: int) -> None:
        self._words[buf * self.stride // 8 + w] = value

    def _keys(self) -> list[tuple[int, int]]:
        """(key, buffer) of every complete, non-empty buffer, newest first."""
        out = []
        for buf in range(2 * self.writers):
            if self._word(buf, SEQ) & 1:
                continue  # being written, or its writer died writing it (rule 1)
            key = self._word(buf, KEY)
            if key:
                out.append((key, buf))
        out.sort(reverse=True)
        return out

    def _copy(self, buf: int) -> bytes | None:
        """The buffer's document, or None when it changed (or tore) while read (rule 3)."""
        seq = self._word(buf, SEQ)
        if seq & 1:
            return None
        n = self._word(buf, LEN)
        crc = self._word(buf, CRC)
        if not 0 <= n <= self.size:
            return None
        start = buf * self.stride + HEADER
        data = self._map[start : start + n]
        if self._word(buf, SEQ) != seq or zlib.crc32(data) != crc:
            return None
        return data

    # ---- readers ----

    def newest(self) -> int:
        """The key of the newest complete document (0: nothing written yet). Cheap: a reader
        keeps what it decoded until this moves."""
        keys = self._keys()
        return keys[0][0] if keys else 0

    def read(self) -> tuple[int, bytes]:
        """(key, bytes) of the newest complete document; (0, b"") when there is none."""
        for _ in range(READ_TRIES):
            for key, buf in self._keys():
                data = self._copy(buf)
                if data is not None and self._word(buf, KEY) == key:
                    return key, data
                break  # the newest moved under us: look again
            else:
                return 0, b""
            time.sleep(0)
        # still moving after every try: settle for any complete buffer, newest first
        for key, buf in self._keys():
            data = self._copy(buf)
            if data is not None and self._word(buf, KEY) == key:
                return key, data
        return 0, b""

    def written_between(self, low: int, high: int) -> bool:
        """Whether a complete document has a key between `low` and `high` (both excluded):
        a writer that based its document `high` on `low` learns that another wrote in
        between, and its own lost that write (rule 2's read-back cannot tell)."""
        return any(low < key < high for key, _ in self._keys())

    # ---- writers ----

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One read-then-write at a time across the processes (rule 4); a process's threads
        take turns on a lock of their own first."""
        deadline = time.monotonic() + EXCLUSIVE_WAIT
        held = False
        while True:
            try:
                fcntl.lockf(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break  # its holder is stopped or stuck: without it (rule 4)
                time.sleep(0.001)
        try:
            yield
        finally:
            if held:
                fcntl.lockf(self._lockfile, fcntl.LOCK_UN)

    def write(self, writer: int, data: bytes) -> int:
        """Make `data` the newest document; returns its key. Only writer `writer` (one process,
        its threads one at a time) writes through that number."""
        if not 0 <= writer < self.writers:
            raise ValueError(f"no writer {writer}")
        if len(data) > self.size:
            raise ValueError(f"a document of {len(data)} bytes is over {self.size}")
        with self._lock:
            a, b = 2 * writer, 2 * writer + 1
            # the older of its two buffers (a replacement process does not know which it
            # wrote last): the newer one stays readable meanwhile
            if self._word(a, SEQ) & 1:  # left half-written by a dead process: garbage
                buf = a
            elif self._word(b, SEQ) & 1:
                buf = b
            else:
                buf = a if self._word(a, KEY) <= self._word(b, KEY) else b
            stamp = max((self._word(x, KEY) for x in range(2 * self.writers)), default=0)
            key = ((stamp >> INDEX_BITS) + 1) << INDEX_BITS | buf
            seq = self._word(buf, SEQ)
            self._set(buf, SEQ, seq | 1)  # odd: readers skip it
            start = buf * self.stride + HEADER
            self._map[start : start + len(data)] = data
            self._set(buf, LEN, len(data))
            self._set(buf, CRC, zlib.crc32(data))
            self._set(buf, KEY, key)
            self._set(buf, SEQ, (seq | 1) + 1)  # even: complete
            return key

    def close(self) -> None:
        self._words.release()
        self._map.close()
        self._close_lockfile()
