"""The arena: every byte of the cache in shared memory, laid out once and named once here.

memcached keeps its cache in one process's memory and runs worker *threads* over it; under
the GIL, threads cannot run Python at the same time, so mcached's workers are *processes*
(or, on a free-threaded interpreter, threads) over one arena. Nothing of the cache is a Python
object: the item memory, the item tables, the slab classes' and partitions' state, the clock
hands, the CAS counter, flush marks and counters are all words in memory that every worker maps.
Each process builds its own Python views (`Cache`, `Items`, `SlabClass`, `Partition`) over
the arena; the views hold no state of their own, so any worker sees what any other wrote.

Regions. Three anonymous ``MAP_SHARED`` mappings, created before any worker starts (a forked
process inherits them; threads share them), sized from ``-m`` at start-up. They are reserved
with ``MAP_NORESERVE``: a page of them costs memory only once it is written, so the reserve
can be generous while resident memory follows what is stored.

* ``pages``: `max_pages` slab pages of 1 MB (`SLAB_PAGE_SIZE`). An item's *address* is its
  byte offset in this mapping, ``page << 20 | offset``: the item tables hold it in 40 bits.
* ``tables``: the item tables, two windows of `window` int64 slots per partition. The live
  window holds the partition's table (its first ``mask + 1`` slots); a rebuild writes the
  other window and hands the old one's memory back (``MADV_REMOVE``).
* ``words``: int64 state, in blocks whose fields are the ``G_``, ``C_``, ``P_``, ``T_``
  names below: one global block, one block per slab class, one row per page, one block per
  partition, the per-class counters of each partition (``S_`` names), and the holder slots.

The item header (48 bytes, memcached's own header size), at the start of an item's chunk:

     0 status   ST_*               12 exptime  int32, server time; 0 = never
     1 nkey                        16 time     uint32, server time of the last access
     2 ref      clock reference    20 clsid    the slab class of the chunk
     3 fetched  read since stored  21 mflags   MF_*: the meta commands' item state
     4 nbytes   value length       22 pins     replies still sending the value from this chunk
     8 flags    uint32                         (see Pins below)
                                   24 cas      uint64, also the flush_all sequence mark
                                   32 hash     int64, hash(key): partition and table slot
                                   40 next     chained items: the next chunk (-1: none)
    48 key, then the value (no CRLF, no NUL)

`OFF_MFLAGS` is memcached's ``it_flags`` bits that only the meta commands read or set: stale
(``md <key> I``), a recache token handed out (``mg`` answered ``W``), a base64 key (``ms <key>
b``). The whole-header `HDR` writes it as a pad byte, that is 0: a store makes a new item,
which is not stale, has handed out no token and has a plain key, as in memcached, where every
store allocates a new item; what keeps an item (touch, an in-place incr) keeps its bits.
Byte 23 is spare.

`OFF_TIME` is memcached's ``it->time``, the last access: a store sets it, and reads move it
the way memcached 1.6.18's ``do_item_bump`` does (the rule is `mcached.storage.cache`'s), so
``mg <key> l``, ``me``'s ``la=``, ``stats items`` ``age`` and ``evicted_time`` read what
memcached's do.

A chunk on a free list keeps status 0 and the next free chunk at `OFF_NEXT`. A chained item
(one larger than the largest chunk) is laid out as memcached lays it out (see
`mcached.storage.items`, "Chained items"): its head chunk, of a small class, holds the header
and the key and no value byte (`OFF_CLSID` names the largest class, where it is counted, and
`OFF_NEXT` its first value chunk); each value chunk has status `ST_CONT`, the number of value
bytes it holds at `OFF_NBYTES` (from 48 on; memcached's ``item_chunk.used``, less the CRLF),
its head's address at `OFF_HEAD` and the next chunk at `OFF_NEXT`. The header is read and
written only through the `Struct`\\ s here.

Locks. POSIX semaphores (`multiprocessing.Lock`): one per partition, one per slab class, one
for the page pool, one each for page moves, crawls and flush generations. They work across
processes and threads alike, and cost less than a `threading.Lock` to take (~90 ns). The
order in which they are taken is written once, in `mcached.storage.items`. One more
semaphores wake the crawler (`crawl_wake`) and the page mover (`move_wake`); nothing holds
them.

Pins. A large value is sent from the page itself, not copied out: the reply holds a *pin*
on its item (the ``pins`` byte, changed under the item's partition lock) until the socket
has taken the last byte. A pinned item is never rewritten in place, evicted, reclaimed or
moved; deleting or replacing it takes it out of the table and the counters at once but leaves
its chunks as a *zombie* (`ST_ZOMBIE`) that the last unpin frees. Each worker process also
writes what it pins in its own row of the *pin table* (`PIN_SLOTS` words per holder slot), so
when it dies the supervisor can let its pins go. A chunk reserved for a value that a client
is still sending (`ST_RESERVED`, received straight into the page) is listed there too. Nothing
is ever pinned or reserved unlisted: with its row full a process copies a value instead of
pinning it, and refuses a reservation (the store is out of memory); pins leave the row's last
quarter to reservations (`Cache.bind_holder`).

Views and threads. The mappings are read and written through `memoryview`\\ s. A view that
is sliced while the daemon serves (the pages' view: values are sent from and received into
slices of it) is each thread's own (`Arena.pages_view`): on a free-threaded CPython, slicing
one memoryview from several threads at once can release it under all of them, since the
count of views cut from it is not kept atomically (CPython gh-155606). Views shared by
threads are only indexed, or sliced while one thread builds a cache's view.

Holders. A worker process that dies holding a lock leaves it taken for ever and the data it
guarded half written. So every public storage operation first writes a non-zero word into its
process's *holder slot* (`HOLDER_BASE`) and clears it after its last lock is released. A
supervisor that sees a worker die with its slot set knows the arena cannot be trusted and
builds a new one (`Arena.holding`); a worker that died with its slot clear left the arena
whole. (A crawl pass clears it while it naps between pages, holding only the crawl lock,
which G_CRAWLING names the owner of: the dead process's successor releases it.) In one
process (threads) every thread uses slot 0, which nobody reads.
"""

from __future__ import annotations

import mmap
import multiprocessing
import struct
import threading
import weakref
from collections.abc import Sequence
from typing import Any

SLAB_PAGE_SIZE = 1024 * 1024  # memcached 1.6 keeps 1 MB pages; larger items are chunked
PAGE_SHIFT = 20
OFF_MASK = SLAB_PAGE_SIZE - 1
MAX_PAGES = 1 << 20  # 20 bits of page number in a 40-bit address: up to 1 TB of items
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Linux's value (3.11 lacks the name)
OS_PAGE = mmap.PAGESIZE

# ---- the item header ----
HEADER = 48
OFF_STATUS = 0
OFF_NKEY = 1
OFF_REF = 2  # the clock's reference byte: set by reads, cleared by the hand
OFF_FETCHED = 3
OFF_NBYTES = 4
OFF_FLAGS = 8
OFF_EXPTIME = 12
OFF_TIME = 16
OFF_CLSID = 20
OFF_MFLAGS = 21  # MF_* bits, one byte; read and written alone (the Structs skip it as a pad)
OFF_PINS = 22  # uint8: replies sending from this item
OFF_CAS = 24
OFF_HASH = 32
OFF_HEAD = 32  # continuation chunk: its item's head address
OFF_NEXT = 40  # chained item or continuation: the next chunk; free chunk: the next free one
OFF_KEY = HEADER

ST_FREE = 0
ST_LINKED = 1  # the head chunk of an item reachable from an item table
ST_CHAINED = 2  # (with ST_LINKED) the item continues in other chunks
ST_CONT = 4  # a continuation chunk of a chained item
ST_RESERVED = 8  # allocated, not yet linked (a store is writing it)
ST_ZOMBIE = 16  # out of the table and uncounted, kept for its pins (with ST_CHAINED if so)
MAX_PINS = 255  # a value pinned this often is copied instead
HOLE = 1  # tag on an address popped from a free list (addresses are 8-byte aligned)

# OFF_MFLAGS bits (memcached's ITEM_STALE, ITEM_TOKEN_SENT, ITEM_KEY_BINARY)
MF_STALE = 1  # invalidated: served with X until a store replaces it
MF_WON = 2  # a client won the right to recache it (W); later readers see Z
MF_BINKEY = 4  # stored under a base64-decoded key: replies give the key back encoded

#: the whole header: status, nkey, ref, fetched, nbytes, flags, exptime, time, clsid, cas,
#: hash, next (OFF_MFLAGS, OFF_PINS and the spare byte are pads: written 0)
HDR = struct.Struct("<BBBBIIiIBxxxQqq")
#: what a read needs: the header up to the hash
GET_HDR = struct.Struct("<BBBBIIiIBxxxQq")
#: what a lookup of a key needs: the header up to the CAS (GET_HDR without the hash: the
#: lookup hashed the key itself)
READ_HDR = struct.Struct("<BBBBIIiIBxxxQ")
#: exptime, time, clsid, cas, hash: what the crawler and the clock hand need
TAIL_HDR = struct.Struct("<iIBxxxQq")
#: a value chunk of a chained item: status, the value bytes it holds (at OFF_NBYTES), head,
#: next
CONT_HDR = struct.Struct("<B3xI24xqq")
Q = struct.Struct("<q")
I32 = struct.Struct("<i")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
assert READ_HDR.size == OFF_HASH
assert HDR.size == HEADER and GET_HDR.size == OFF_NEXT and TAIL_HDR.size == OFF_NEXT - OFF_EXPTIME
assert HDR.size == OFF_NEXT + 8 and OFF_MFLAGS == OFF_CLSID + 1  # the pad after clsid
assert CONT_HDR.size == HEADER

# ---- the global block ----
G_LIMIT = 0  # the memory limit in bytes (-m, cache_memlimit)
G_MALLOCED = 1  # bytes of pages held by classes or spare (memcached's total_malloced)
G_MALLOC_FAILS = 2
G_NEXT_PAGE = 3  # pages from here on were never handed out
G_NSPARE = 4  # pages on the spare stack (memcached's global page pool)
G_NRELEASED = 5  # pages whose memory went back to the OS, on the released stack
G_FLUSH_AT = 6  # flush_all with a delay: items stored before this server time go (is_flushed)
G_FLUSH_GEN = 7  # bumped by every flush_all: the crawler sweeps every class again
G_SLABS_MOVED = 8
G_REASSIGN_BUSY = 9
G_PICK_CURSOR = 10  # slabs_reassign_pick_any's round robin
G_CRAWLER_STARTS = 11
G_AUTOMOVE = 12  # slab_automove level (changed at run time by `slabs automove`)
G_MOVING = 13  # 1 while a page move runs (stats: slab_reassign_running)
G_CRAWLING = 14  # while a crawl pass runs, its holder slot + 1 (stats: lru_crawler_running)
G_ACCESS_BEFORE = 15  # a read of a referenced item older than this server time sets its time
#                       (now - 60: memcached's ITEM_UPDATE_INTERVAL; `Cache.tick`; 0: never)
G_EXCESS = 16  # pages past G_LIMIT that classes took as their first one (PagePool.take)
G_CHUNK_RESCUES = 17  # page moves: chunks of chained items copied (slab_reassign_chunk_rescues)
G_CRAWL_ASKED = 18  # `lru_crawler crawl` asked for, not begun: CRAWL_ALL, or a mask of class ids
G_CRAWL_LIMIT = 19  # the items of each class it checks at most (its tocrawl; 0: all)
G_MOVE_ASKED = 20  # a move asked for, not done: (src + 1) << 8 | dst (0: none; src -1: any class,
#   asked at an eviction under slab_automove=2)
G_CAS = 21  # the last CAS unique drawn, by any partition (`Partition.next_cas`, under cas_lock)
G_WORDS = 24
CRAWL_ALL = -1  # G_CRAWL_ASKED for every class that may hold something stale (`crawl all`)

# ---- one block per slab class (0 is the page pool's, unused) ----
C_HEAD = 0  # the class's pages, in clock order: a list through P_NEXT/P_PREV (-1: none)
C_TAIL = 1
C_NPAGES = 2
C_FREE_PAGES = 3  # pages with free chunks: a list through P_FNEXT/P_FPREV
C_NFREE = 4  # chunks on free lists
C_CARVE = 5  # the newest page, cut from C_CARVE_OFF on (-1: none)
C_CARVE_OFF = 6
C_HAND_PAGE = 7  # the clock hand: a page of the class (-1: its first) and a chunk in it
C_HAND_CHUNK = 8
C_USED = 9  # chunks holding (part of) an item, or reserved for one
C_MOVES_TO_WARM = 10  # second chances: the hand found the reference byte set
C_REFLOCKED = 11  # candidates skipped: their partition was locked (lrutail_reflocked)
C_EVICTED_TIME = 12  # seconds since the last evicted item was stored
C_CRAWLER_CHECKED = 13
C_CRAWLED_FLUSH_GEN = 14  # flush_all generation the crawler last swept for
C_CRAWLED_TIME = 15  # server time of the crawler's last sweep
C_RETRY = 16  # a candidate the hand passed because its partition was locked: its clock chunk's
#   address + 1 (0: none), which the next eviction looks at first (`Items._retry_locked`)
C_RETRY_CAS = 17  # ... and its item's CAS then: a chunk that holds another item since is not it
C_WORDS = 18

# ---- one row per page ----
P_CLSID = 0  # 0: not in a class
P_FREE_HEAD = 1  # the page's free list, threaded through its free chunks (-1: empty)
P_NFREE = 2
P_FLAGS = 3  # PF_*
P_NEXT = 4  # the class's page list
P_PREV = 5
P_FNEXT = 6  # the class's list of pages with free chunks
P_FPREV = 7
P_SEQ = 8  # the page's place in its class's clock order: one more than the page before it
P_WORDS = 9
PF_MOVING = 1  # being emptied by a page move: frees do not list its chunks
PF_DIRTY = 2  # holds old data: zeroed before a class uses it

# ---- one block per partition ----
# (word 0 is free: it held the partition's last CAS unique before they came from G_CAS)
T_FLUSH_SEQ = 1  # items with cas <= this are flushed
T_USED = 2  # live entries in the table
T_TOMBS = 3  # deleted slots in the table
T_LIMIT = 4  # rebuild when used + tombs exceed this
T_MASK = 5  # table capacity - 1
T_WIN = 6  # the live window (0 or 1)
T_GEN = 7  # bumped by every rebuild: views re-read the table's place
T_GET_EXPIRED = 8
T_GET_FLUSHED = 9
T_FLOOR = 10  # the table's least capacity (-o hashpower's share): a rebuild never goes below
T_WORDS = 11

# ---- per-class counters, one row of NSTAT words per class in each partition ----
# index ``clsid * NSTAT + S_*`` in the partition's counter block; written under the
# partition lock, summed for `stats`
S_NUMBER = 0  # gauge: items
S_MEM = 1  # gauge: bytes requested (memcached's total item size)
S_TTL = 2  # gauge: items with an exptime (the crawler skips classes without any)
S_TOTAL = 3
S_EVICTED = 4
S_EVICTED_NONZERO = 5
S_EVICTED_UNFETCHED = 6
S_OUTOFMEMORY = 7
S_RECLAIMED = 8
S_EXPIRED_UNFETCHED = 9
S_CRAWLER_RECLAIMED = 10
S_GET_HITS = 11
S_CMD_SET = 12
S_DELETE_HITS = 13
S_INCR_HITS = 14
S_DECR_HITS = 15
S_CAS_HITS = 16
S_CAS_BADVAL = 17
S_TOUCH_HITS = 18
S_MOVE_EVICTED = 19  # slab_reassign_evictions_nomem
S_MOVE_RESCUED = 20  # slab_reassign_rescues
S_SWEPT = 21  # of S_RECLAIMED: by the LRU maintainer's work (not by an allocation)
NSTAT = 22
GAUGES = (S_NUMBER, S_MEM, S_TTL)

MAX_HOLDERS = 257  # holder slots: 0 for threads, 1.. for worker processes
PIN_SLOTS = 4096  # pin table entries per holder slot (past them, values are copied)
PIN_TAG = 1  # a pin table entry: address + PIN_TAG (a pin) or + RESERVE_TAG; 0 is free
RESERVE_TAG = 2
MAX_CLASSES = 64  # memcached's MAX_NUMBER_OF_SLAB_CLASSES

# ---- item tables ----
MIN_CAPACITY = 64
TABLE_HEADROOM = 2  # a window holds twice a partition's share of the most items there can be


def window_slots(max_pages: int, partitions: int, smallest_chunk: int) -> int:
    """Slots in each table window: room for a rebuild at three times the most items a
    partition can hold (every chunk of every page the smallest, spread evenly), twice over
    for an uneven spread; a power of two."""
    most = max_pages * (SLAB_PAGE_SIZE // smallest_chunk)
    share = most * TABLE_HEADROOM // partitions + MIN_CAPACITY
    slots = MIN_CAPACITY
    while slots < 3 * share:
        slots *= 2
    return slots


def _map(size: int) -> mmap.mmap:
    size = max(OS_PAGE, -(-size // OS_PAGE) * OS_PAGE)
    return mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | MAP_NORESERVE)


class Arena:
    """The three mappings, their word views and the locks. See the module docstring.

    `max_pages` bounds the item memory (``-m`` and any later ``cache_memlimit``);
    `nclasses` is the number of slab classes; `window` the slots of each table window.
    """

    def __init__(self, *, max_pages: int, nclasses: int, partitions: int, window: int) -> None:
        if max_pages > MAX_PAGES:
            raise ValueError("memory limit over 1 TB: addresses hold 20 bits of page number")
        if nclasses >= MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES - 1} slab classes")
        self.max_pages = max_pages
        self.nclasses = nclasses
        self.partitions = partitions
        self.window = window
        # word offsets of the blocks
        self.spare_base = G_WORDS
        self.released_base = self.spare_base + max_pages
        self.class_base = self.released_base + max_pages
        self.page_base = self.class_base + (nclasses + 1) * C_WORDS
        self.part_base = self.page_base + max_pages * P_WORDS
        self.cst_width = (nclasses + 1) * NSTAT
        self.cst_base = self.part_base + partitions * T_WORDS
        self.holder_base = self.cst_base + partitions * self.cst_width
        self.pin_base = self.holder_base + MAX_HOLDERS
        nwords = self.pin_base + MAX_HOLDERS * PIN_SLOTS

        # each window starts on an OS page, so that giving one back never touches another
        self.stride = -(-window * 8 // OS_PAGE) * OS_PAGE // 8
        self.pages = _map(max_pages * SLAB_PAGE_SIZE)
        self.tables = _map(partitions * 2 * self.stride * 8)
        self._words_map = _map(nwords * 8)
        self._local = threading.local()  # each thread's own view of the pages
        self.words = memoryview(self._words_map).cast("q")
        tables = memoryview(self.tables).cast("q")
        #: windows[partition][0 or 1]: int64 views of the two table windows
        stride = self.stride
        self.windows = [
            [tables[(2 * i + w) * stride : (2 * i + w) * stride + window] for w in range(2)]
            for i in range(partitions)
        ]
        self.holders = self.words[self.holder_base : self.holder_base + MAX_HOLDERS]
        # every lasting view cut from the mappings, so that `close` can release them all
        self._views: list[weakref.ref[memoryview]] = []

        ctx = multiprocessing.get_context("fork")
        self.part_locks = [ctx.Lock() for _ in range(partitions)]
        self.class_locks = [ctx.Lock() for _ in range(nclasses + 1)]
        self.pool_lock = ctx.Lock()
        self.move_lock = ctx.Lock()
        self.crawl_lock = ctx.Lock()
        self.flush_lock = ctx.Lock()
        #: CAS numbers: one counter (G_CAS) for the whole cache, drawn under this lock
        self.cas_lock = ctx.Lock()
        #: not a lock: released to wake the crawler for a pass asked for (`Items.ask_crawl`)
        self.crawl_wake = ctx.Semaphore(0)
        #: the same for the page mover, for a move asked for (`Items.reassign`)
        self.move_wake = ctx.Semaphore(0)

        w = self.words
        for cid in range(nclasses + 1):
            b = self.class_block(cid)
            for f in (C_HEAD, C_TAIL, C_FREE_PAGES, C_CARVE, C_HAND_PAGE):
                w[b + f] = -1
        for pno in range(max_pages):
            b = self.page_row(pno)
            for f in (P_FREE_HEAD, P_NEXT, P_PREV, P_FNEXT, P_FPREV):
                w[b + f] = -1

    # ---- where things are ----

    def class_block(self, cid: int) -> int:
        return self.class_base + cid * C_WORDS

    def page_row(self, pno: int) -> int:
        return self.page_base + pno * P_WORDS

    def part_block(self, index: int) -> int:
        return self.part_base + index * T_WORDS

    def counters(self, index: int) -> memoryview:
        """Partition `index`'s per-class counters: ``[clsid * NSTAT + S_*]``."""
        b = self.cst_base + index * self.cst_width
        view = self.words[b : b + self.cst_width]
        self._views.append(weakref.ref(view))
        return view

    def pages_view(self) -> memoryview:
        """The calling thread's view of the pages, made at its first call: values are sent
        from and received into slices of it (see "Views and threads" above)."""
        try:
            view: memoryview = self._local.pages
        except AttributeError:
            view = self._local.pages = memoryview(self.pages)
            self._views.append(weakref.ref(view))
        return view

    # ---- memory ----

    def release_pages(self, pno: int, count: int = 1) -> None:
        """Give pages' memory back to the OS; they read as zeros when next used."""
        self.pages.madvise(mmap.MADV_REMOVE, pno << PAGE_SHIFT, count << PAGE_SHIFT)

    def release_window(self, index: int, win: int, slots: int) -> None:
        """Give the first `slots` slots of a table window back (they read as zeros)."""
        start = (2 * index + win) * self.stride * 8
        size = -(-slots * 8 // OS_PAGE) * OS_PAGE  # within the window's own OS pages
        if size:
            self.tables.madvise(mmap.MADV_REMOVE, start, size)

    # ---- holders ----

    def holding(self, slot: int) -> bool:
        """Whether the process using holder `slot` was inside a storage operation (it may
        hold a lock, and the data under it may be half written)."""
        return bool(self.holders[slot])

    def clear_holder(self, slot: int) -> None:
        self.holders[slot] = 0

    def pin_row(self, slot: int) -> memoryview:
        """Holder `slot`'s row of the pin table: what that process pinned or reserved."""
        b = self.pin_base + slot * PIN_SLOTS
        view = self.words[b : b + PIN_SLOTS]
        self._views.append(weakref.ref(view))  # kept by its cache: `close` releases it
        return view

    def locks(self) -> Sequence[Any]:
        """Every lock of the arena (tests and the supervisor's diagnostics)."""
        return [
            *self.part_locks,
            *self.class_locks,
            self.pool_lock,
            self.move_lock,
            self.crawl_lock,
            self.flush_lock,
            self.cas_lock,
        ]

    def close(self) -> None:
        """Unmap now: every view this arena cut (`words`, `holders`, the
        threads' views of the pages, the table windows, the counter rows) is released
        first, so a later use of one raises ValueError instead of keeping the mappings alive
        until the garbage collector finds the views' owners (they sit in reference cycles).
        Call it once nothing uses the cache any more. A view in use at this very moment (a
        buffer taken from it) stops the release: the mappings then go with their last view,
        so an arena is never unmapped under a reader."""
        views = [self.holders, self.words]
        views += [w for pair in self.windows for w in pair]
        views += [v for v in (ref() for ref in self._views) if v is not None]
        for view in views:
            try:
                view.release()
            except BufferError:
                return
        self.windows = []
        self._views = []
        for region in (self._words_map, self.tables, self.pages):
            try:
                region.close()
            except BufferError:
                return
