"""Slab classes, 1 MB pages, free chunks and the memory limit. Sizes and addresses, never keys.

This is memcached's ``slabs.c``. Item memory is a set of 1 MB pages (``bytearray``), created
on demand from a pool that never holds more than ``-m`` bytes. A page belongs to one slab
class at a time and is cut into that class's fixed-size chunks; an item lives in one chunk of
the smallest class that holds it (items over the largest chunk are chained across chunks of
the largest class, see `items`). Pages move between classes (``slabs reassign``, automove),
so memory never fragments: a chunk is reused only by an item of its own class.

The class table is memcached's ``slabs_init``: the first chunk holds memcached's item header
plus ``-n`` bytes, each next class is ``-f`` times larger, 8-byte aligned, until
``slab_chunk_max / -f``; the last class is exactly ``slab_chunk_max`` (half a page by default).

Addresses. A chunk is named by one int, ``page number << 20 | offset``, so the item table can
hold it in a 64-bit slot. ``pool.bufs[address >> 20]`` is the page's bytearray.

Free chunks. Each page keeps its own free list, threaded through the free chunks themselves
(the next address sits at `OFF_NEXT`), so free memory costs no Python objects; a class keeps
the pages that have free chunks, plus a bump pointer into its newest page (chunks never yet
used: memcached's old ``end_page_ptr``), so taking a page costs no loop over its chunks.

Every chunk starts with a status byte (`OFF_STATUS`): free chunks are 0; `items` defines the
other states. The hand of the clock (`lru`) reads `ST_LINKED` and the reference byte.

Locks (the whole storage package; written once here, repeated in `cache`):
    partition lock (cache) -> class lock (SlabClass.lock) -> pool lock (PagePool.lock)
A class lock guards its pages list, free lists, bump pointer, clock hand and counters; the
pool lock guards the page list and the limit. Functions named ``*_locked`` here expect the
class lock held. Page moves take `Items.move_lock` first, before any of these.
"""

from __future__ import annotations

import bisect
import struct
import threading

ITEM_HEADER_SIZE = 48  # memcached's struct _stritem on 64-bit: the class table is built on it
CHUNK_ALIGN_BYTES = 8
MAX_NUMBER_OF_SLAB_CLASSES = 64
SLAB_PAGE_SIZE = 1024 * 1024  # memcached 1.6 keeps 1 MB pages; larger items are chunked
PAGE_SHIFT = 20
OFF_MASK = SLAB_PAGE_SIZE - 1
MAX_PAGES = 1 << 20  # 20 bits of page number in a 40-bit address: up to 1 TB of items

# The first bytes of every chunk (the rest of the layout is `items`').
OFF_STATUS = 0
OFF_REF = 2  # the clock's reference bit: set by reads, cleared by the hand
OFF_NEXT = 40  # free chunk: the next free chunk of its page (-1 ends the list)
ST_FREE = 0
ST_LINKED = 1  # the head chunk of an item reachable from the item table
ST_CHAINED = 2  # (with ST_LINKED) the item continues in other chunks
ST_CONT = 4  # a continuation chunk of a chained item
ST_RESERVED = 8  # allocated, not yet linked (a store is writing it)
HOLE = 1  # tag on an address popped from a free list (addresses are 8-byte aligned)

_ZERO_PAGE = bytes(SLAB_PAGE_SIZE)
_Q = struct.Struct("<q")


def slab_class_sizes(
    chunk_size: int = 48,
    factor: float = 1.25,
    slab_chunk_max: int = SLAB_PAGE_SIZE // 2,
) -> list[int]:
    """Chunk size of each class, class 1 first (memcached ``-vv`` prints the same table)."""
    sizes: list[int] = []
    size = ITEM_HEADER_SIZE + chunk_size
    while len(sizes) < MAX_NUMBER_OF_SLAB_CLASSES - 2:
        if size >= slab_chunk_max / factor:
            break
        if size % CHUNK_ALIGN_BYTES:
            size += CHUNK_ALIGN_BYTES - size % CHUNK_ALIGN_BYTES
        sizes.append(size)
        size = int(size * factor)
    sizes.append(slab_chunk_max)
    return sizes


class SlabClasses:
    """Lookup from an item's total size to its class id (1-based, as memcached numbers them)."""

    def __init__(self, sizes: list[int], page_size: int = SLAB_PAGE_SIZE) -> None:
        self.sizes = sizes
        self.page_size = page_size

    def class_of(self, total: int) -> int:
        """The smallest class whose chunk holds `total` bytes; the largest for chained items."""
        i = bisect.bisect_left(self.sizes, total)
        return min(i, len(self.sizes) - 1) + 1

    def chunk_size(self, clsid: int) -> int:
        return self.sizes[clsid - 1]

    def per_page(self, clsid: int) -> int:
        return self.page_size // self.sizes[clsid - 1]


def class_lookup(sizes: list[int]) -> list[int]:
    """``table[(total + 7) >> 3]`` is the class of an item of `total` bytes (up to the largest
    chunk): one list index instead of a bisect on the store path."""
    table = []
    cls = 0
    for eighth in range((sizes[-1] >> 3) + 1):
        while sizes[cls] < eighth << 3:
            cls += 1
        table.append(cls + 1)
    return table


class Page:
    """One 1 MB page: its memory, its owner and its free list."""

    __slots__ = ("pno", "buf", "mv", "clsid", "free_head", "nfree", "moving", "dirty")

    def __init__(self, pno: int) -> None:
        self.pno = pno
        self.buf = bytearray(SLAB_PAGE_SIZE)
        self.mv = memoryview(self.buf)
        self.clsid = 0  # 0: in the pool
        self.free_head = -1
        self.nfree = 0
        self.moving = False  # being emptied by a page move: frees do not list its chunks
        self.dirty = False  # holds old data: zeroed before a class uses it


class SlabClass:
    """One slab class: its pages, free chunks and clock hand. Guarded by `lock`."""

    __slots__ = (
        "id",
        "size",
        "perslab",
        "lock",
        "pages",
        "free_pages",
        "nfree",
        "carve",
        "carve_off",
        "hand_page",
        "hand_chunk",
        "used",
        "moves_to_warm",
        "reflocked",
        "evicted_time",
        "crawler_checked",
        "crawled_flush_gen",
        "crawled_time",
    )

    def __init__(self, clsid: int, size: int) -> None:
        self.id = clsid
        self.size = size
        self.perslab = SLAB_PAGE_SIZE // size
        self.lock = threading.Lock()
        self.pages: list[Page] = []
        self.free_pages: list[Page] = []  # pages whose free list is not empty
        self.nfree = 0  # chunks on free lists
        self.carve: Page | None = None  # newest page, cut from `carve_off` on
        self.carve_off = 0
        self.hand_page = 0  # the clock hand: index into `pages`, chunk index in that page
        self.hand_chunk = 0
        self.used = 0  # chunks holding (part of) an item, or reserved for one
        # counters, memcached's names in `stats items`
        self.moves_to_warm = 0  # second chances: the hand found the reference bit set
        self.reflocked = 0  # candidates skipped: their partition was locked (lrutail_reflocked)
        self.evicted_time = 0  # seconds since the last evicted item was stored
        self.crawler_checked = 0
        self.crawled_flush_gen = 0  # flush_all generation the crawler last swept for
        self.crawled_time = 0  # server time of the crawler's last sweep

    @property
    def uncarved(self) -> int:
        """Chunks of the newest page never used yet (memcached's ``free_chunks_end``)."""
        if self.carve is None:
            return 0
        return (SLAB_PAGE_SIZE - self.carve_off) // self.size

    def chunk_pop_locked(self) -> int:
        """A free chunk's address, from a free list or the bump pointer; -1 if none. An
        address from a free list is tagged with bit 0 (`HOLE`): a hole left by a delete may
        lie just ahead of the clock hand, so the item put there starts referenced."""
        fp = self.free_pages
        if fp:
            page = fp[-1]
            addr = page.free_head
            o = addr & OFF_MASK
            page.free_head = _Q.unpack_from(page.buf, o + OFF_NEXT)[0]
            page.nfree -= 1
            self.nfree -= 1
            if not page.nfree:
                fp.pop()
            return addr | HOLE
        carve = self.carve
        if carve is not None:
            o = self.carve_off
            self.carve_off = o + self.size
            if self.carve_off + self.size > SLAB_PAGE_SIZE:
                self.carve = None
            return carve.pno << PAGE_SHIFT | o
        return -1

    def chunk_push_locked(self, page: Page, o: int) -> None:
        """Free the chunk at offset `o` of `page` (a page being moved keeps it unlisted)."""
        buf = page.buf
        buf[o] = ST_FREE
        if page.moving:
            return
        _Q.pack_into(buf, o + OFF_NEXT, page.free_head)
        page.free_head = page.pno << PAGE_SHIFT | o
        page.nfree += 1
        self.nfree += 1
        if page.nfree == 1:
            self.free_pages.append(page)

    def add_page_locked(self, page: Page) -> None:
        """Take `page` (from the pool or another class): all of it becomes carvable."""
        if page.dirty:
            page.mv[:] = _ZERO_PAGE  # stale statuses must not look like items to the hand
        page.dirty = True
        page.clsid = self.id
        page.free_head = -1
        page.nfree = 0
        page.moving = False
        self.pages.append(page)
        if self.carve is not None and self.carve_off + self.size <= SLAB_PAGE_SIZE:
            # an older partly carved page keeps its bump pointer; list its rest as free
            old = self.carve
            for o in range(self.carve_off, SLAB_PAGE_SIZE - self.size + 1, self.size):
                self.chunk_push_locked(old, o)
        self.carve = page
        self.carve_off = 0

    def remove_page_locked(self, page: Page) -> None:
        """Detach `page` for a move: no allocation or hand visit reaches it from now on.
        Its live items stay readable until the mover unlinks them."""
        i = self.pages.index(page)
        del self.pages[i]
        if i < self.hand_page:
            self.hand_page -= 1
        elif i == self.hand_page:
            self.hand_chunk = 0
        if self.hand_page >= len(self.pages):
            self.hand_page = 0
        if page.nfree:
            self.free_pages.remove(page)
            self.nfree -= page.nfree
        if self.carve is page:
            self.carve = None
        # chunks never carved or on the free list were free; what remains is in use
        page.free_head = -1
        page.nfree = 0
        page.moving = True

    def free_in_page_locked(self, page: Page) -> int:
        """How many chunks of `page` hold nothing (the mover prefers the emptiest page)."""
        n = page.nfree
        if self.carve is page:
            n += (SLAB_PAGE_SIZE - self.carve_off) // self.size
        return n


class PagePool:
    """Every page, and the limit: at most `limit` bytes of pages exist at any time.

    `bufs[pno]` and `mvs[pno]` are each page's bytearray and memoryview, lists the hot path
    indexes directly; `base[pno]` is its class's offset in the per-class counters.
    """

    def __init__(self, limit: int, stat_width: int) -> None:
        if limit > MAX_PAGES * SLAB_PAGE_SIZE:
            raise ValueError("memory limit over 1 TB: addresses hold 20 bits of page number")
        self.lock = threading.Lock()
        self.limit = limit
        self.stat_width = stat_width
        self.pages: list[Page | None] = []
        self.bufs: list[bytearray] = []
        self.mvs: list[memoryview] = []
        self.base: list[int] = []
        self.spare: list[Page] = []  # allocated pages no class owns (the global page pool)
        self.released: list[int] = []  # page numbers whose memory was given back
        self.malloced = 0  # bytes of pages that exist (memcached's total_malloced)
        self.malloc_fails = 0

    def take(self, clsid: int) -> Page | None:
        """A page for class `clsid`: a spare one, else a new one within the limit."""
        with self.lock:
            if self.spare:
                page = self.spare.pop()
            elif self.malloced + SLAB_PAGE_SIZE <= self.limit:
                try:
                    page = self._new_page_locked()
                except MemoryError:
                    self.malloc_fails += 1
                    return None
            else:
                return None
            self.set_owner(page, clsid)
            return page

    def set_owner(self, page: Page, clsid: int) -> None:
        """Record that `page` now belongs to class `clsid` (before any item is written in it)."""
        self.base[page.pno] = clsid * self.stat_width
        page.clsid = clsid

    def _new_page_locked(self) -> Page:
        if self.released:
            pno = self.released.pop()
        else:
            pno = len(self.pages)
            self.pages.append(None)
            self.bufs.append(bytearray())
            self.mvs.append(memoryview(b""))
            self.base.append(0)
        page = Page(pno)
        self.pages[pno] = page
        self.bufs[pno] = page.buf
        self.mvs[pno] = page.mv
        self.malloced += SLAB_PAGE_SIZE
        return page

    def give(self, page: Page) -> None:
        """Take back an empty page; its memory goes back to the OS while over the limit."""
        with self.lock:
            page.clsid = 0
            page.moving = False
            self.spare.append(page)
            self._release_over_limit_locked()

    def set_limit(self, limit: int) -> None:
        with self.lock:
            self.limit = limit
            self._release_over_limit_locked()

    def over_limit(self) -> bool:
        with self.lock:
            return self.malloced > self.limit

    def _release_over_limit_locked(self) -> None:
        while self.malloced > self.limit and self.spare:
            page = self.spare.pop()
            pno = page.pno
            self.pages[pno] = None
            self.bufs[pno] = bytearray()
            self.mvs[pno] = memoryview(b"")
            page.mv.release()
            page.buf = bytearray()
            self.released.append(pno)
            self.malloced -= SLAB_PAGE_SIZE

    def spare_count(self) -> int:
        with self.lock:
            return len(self.spare)

    def take_spare(self) -> Page | None:
        """A spare page, for ``slabs reassign 0 <dst>``."""
        with self.lock:
            return self.spare.pop() if self.spare else None
