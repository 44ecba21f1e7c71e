"""Slab classes, 1 MB pages, free chunks and the memory limit. Sizes and addresses, never keys.

This is memcached's ``slabs.c``, over the arena's ``pages`` mapping (`mcached.storage.arena`).
A page belongs to one slab class at a time and is cut into that class's fixed-size chunks; an
item lives in one chunk of the smallest class that holds it (items over the largest chunk are
chained across chunks of the largest class, see `items`). Pages move between classes (``slabs
reassign``, automove), so memory never fragments: a chunk is reused only by its own class.

The class table is memcached's ``slabs_init``: the first chunk holds memcached's item header
plus ``-n`` bytes, each next class is ``-f`` times larger, 8-byte aligned, until
``slab_chunk_max / -f``; the last class is exactly ``slab_chunk_max`` (half a page by default).

`SlabClass` and `PagePool` are views: every field they read or write is a word of the arena
(``C_``, ``P_`` and ``G_`` names), so another process's view sees the same class.

The limit. A class takes a new page only while the pages stay within ``-m`` (``G_LIMIT``),
except its first: memcached's ``do_slabs_newslab`` never refuses a class its first page, so a
new size is stored even when larger items fill the memory. The pages past the limit never
outnumber the classes holding a page (`PagePool.first_page_room_locked`): one page per class
at most. They stay, as in memcached (``G_EXCESS`` counts them, so that the automover, which
gives pages back after ``cache_memlimit`` lowers the limit, leaves them be); a page that goes
back to the pool is freed while the pages are past the limit.

Free chunks. Each page keeps its own free list, threaded through the free chunks themselves
(the next address sits at `OFF_NEXT`), and a class keeps the pages that have free chunks in
a list, plus a bump pointer into its newest page (chunks never used yet: memcached's old
``end_page_ptr``), so taking a page costs no loop over its chunks.

Locks (the whole order is written in `items`): a class lock guards its words and the rows
of its pages; the pool lock guards the global page words and the two page stacks. Methods
named ``*_locked`` here expect the class lock held.
"""

from __future__ import annotations

import bisect
import functools

from mcached.storage import checks
from mcached.storage.arena import (
    C_CARVE,
    C_CARVE_OFF,
    C_FREE_PAGES,
    C_HAND_CHUNK,
    C_HAND_PAGE,
    C_HEAD,
    C_NFREE,
    C_NPAGES,
    C_TAIL,
    C_USED,
    G_EXCESS,
    G_LIMIT,
    G_MALLOC_FAILS,
    G_MALLOCED,
    G_NEXT_PAGE,
    G_NRELEASED,
    G_NSPARE,
    HEADER,
    HOLE,
    OFF_MASK,
    OFF_NEXT,
    P_CLSID,
    P_FLAGS,
    P_FNEXT,
    P_FPREV,
    P_FREE_HEAD,
    P_NEXT,
    P_NFREE,
    P_PREV,
    P_SEQ,
    P_WORDS,
    PAGE_SHIFT,
    PF_DIRTY,
    PF_MOVING,
    SLAB_PAGE_SIZE,
    ST_FREE,
    Arena,
    Q,
)

CHUNK_ALIGN_BYTES = 8
MAX_NUMBER_OF_SLAB_CLASSES = 64

CHECKS = checks.ENABLED  # (a constant: one global test where the checks would be)


def slab_class_sizes(
    chunk_size: int = 48,
    factor: float = 1.25,
    slab_chunk_max: int = SLAB_PAGE_SIZE // 2,
) -> list[int]:
    """Chunk size of each class, class 1 first (memcached ``-vv`` prints the same table)."""
    sizes: list[int] = []
    size = HEADER + chunk_size
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


@functools.lru_cache(maxsize=8)
def class_lookup(sizes: tuple[int, ...]) -> bytes:
    """``table[(total + 7) >> 3]`` is the class of an item of `total` bytes (up to the largest
    chunk): one index instead of a bisect on the store path.

    Bytes, not a list (a class number is below `MAX_CLASSES`): 64 KB instead of 512 KB for
    memcached's 512 KB chunk limit, and one table for every view of a cache in a process, so
    a forked worker's views share the one its supervisor built instead of each copying one.
    """
    table = bytearray()
    # class c takes every eighth up to its chunk's size: one extend per class, not one append
    # per eighth (a cache is built in ~1 ms instead of ~100 ms: daemons start and stop often
    # inside a test run)
    for cls, size in enumerate(sizes, 1):
        table.extend(bytes([cls]) * ((size >> 3) + 1 - len(table)))
    return bytes(table)


class SlabClass:
    """One slab class: its pages, free chunks and clock hand, in arena words. Guarded by
    `lock` (the arena's class lock)."""

    __slots__ = ("arena", "id", "size", "perslab", "lock", "w", "b", "pm", "page_base")

    def __init__(self, arena: Arena, clsid: int, size: int) -> None:
        self.arena = arena
        self.id = clsid
        self.size = size
        self.perslab = SLAB_PAGE_SIZE // size
        self.lock = arena.class_locks[clsid]
        self.w = arena.words
        self.b = arena.class_block(clsid)
        self.pm = arena.pages
        self.page_base = arena.page_base

    def row(self, pno: int) -> int:
        """Word offset of page `pno`'s row."""
        return self.page_base + pno * P_WORDS

    # ---- figures (class lock held for a consistent answer) ----

    def field(self, f: int) -> int:
        return int(self.w[self.b + f])

    def set_field(self, f: int, value: int) -> None:
        self.w[self.b + f] = value

    def add_to(self, f: int, delta: int) -> None:
        self.w[self.b + f] += delta

    @property
    def npages(self) -> int:
        return int(self.w[self.b + C_NPAGES])

    @property
    def nfree(self) -> int:
        return int(self.w[self.b + C_NFREE])

    @property
    def used(self) -> int:
        return int(self.w[self.b + C_USED])

    @property
    def uncarved(self) -> int:
        """Chunks of the newest page never used yet (memcached's ``free_chunks_end``)."""
        if self.w[self.b + C_CARVE] < 0:
            return 0
        return (SLAB_PAGE_SIZE - int(self.w[self.b + C_CARVE_OFF])) // self.size

    def pages_locked(self) -> list[int]:
        """The class's page numbers, in clock order."""
        w = self.w
        out = []
        pno = int(w[self.b + C_HEAD])
        while pno >= 0:
            out.append(pno)
            pno = int(w[self.row(pno) + P_NEXT])
        return out

    def next_page_locked(self, pno: int) -> int:
        """The page after `pno` in clock order, wrapping to the first."""
        nxt = int(self.w[self.row(pno) + P_NEXT])
        return nxt if nxt >= 0 else int(self.w[self.b + C_HEAD])

    # ---- chunks ----

    def chunk_pop_locked(self) -> int:
        """A free chunk's address, from a free list or the bump pointer; -1 if none. An
        address from a free list is tagged with bit 0 (`HOLE`) when the clock hand reaches
        it within half a turn (`_soon_locked`): a hole left by a delete may lie just ahead of
        the hand, so the item put there starts referenced, to live a turn. (Every hole was
        so tagged: one just behind the hand too, whose item then outlived older unread
        ones by a turn, and under a churn of multi-chunk items, whose every chunk is such a
        hole, every item started referenced and the hand evicted in place order.)"""
        w = self.w
        b = self.b
        fp = w[b + C_FREE_PAGES]
        if fp >= 0:
            r = self.page_base + fp * P_WORDS
            addr = w[r + P_FREE_HEAD]
            nxt = Q.unpack_from(self.pm, addr + OFF_NEXT)[0]
            if CHECKS:
                checks.popped(self, int(fp), int(addr), nxt)
            w[r + P_FREE_HEAD] = nxt
            n = w[r + P_NFREE] - 1
            w[r + P_NFREE] = n
            w[b + C_NFREE] -= 1
            if not n:
                self._unlist_free_locked(fp)
            return int(addr) | HOLE if self._soon_locked(int(fp), int(addr)) else int(addr)
        carve = w[b + C_CARVE]
        if carve >= 0:
            o = w[b + C_CARVE_OFF]
            size = self.size
            w[b + C_CARVE_OFF] = o + size
            if o + 2 * size > SLAB_PAGE_SIZE:
                w[b + C_CARVE] = -1
            if CHECKS:
                checks.carved(self, int(carve) << PAGE_SHIFT | int(o))
            return int(carve) << PAGE_SHIFT | int(o)
        return -1

    def chunk_push_locked(self, addr: int, fresh: bool = False) -> None:
        """Free the chunk at `addr` (a page being moved keeps it unlisted). `fresh`: it is
        free already, on no list (a page's chunks as it joins the class, or as a move that
        could not finish gives it back)."""
        if CHECKS:
            checks.pushed(self, addr, fresh)
        w = self.w
        pm = self.pm
        pm[addr] = ST_FREE
        pno = addr >> PAGE_SHIFT
        r = self.page_base + pno * P_WORDS
        if w[r + P_FLAGS] & PF_MOVING:
            return
        Q.pack_into(pm, addr + OFF_NEXT, w[r + P_FREE_HEAD])
        w[r + P_FREE_HEAD] = addr
        n = w[r + P_NFREE] + 1
        w[r + P_NFREE] = n
        w[self.b + C_NFREE] += 1
        if n == 1:
            # list the page first: the next pop takes from it (memcached reuses the
            # most recently freed memory first)
            head = w[self.b + C_FREE_PAGES]
            w[r + P_FNEXT] = head
            w[r + P_FPREV] = -1
            if head >= 0:
                w[self.row(int(head)) + P_FPREV] = pno
            w[self.b + C_FREE_PAGES] = pno

    def _unlist_free_locked(self, pno: int) -> None:
        w = self.w
        r = self.row(pno)
        nxt, prev = w[r + P_FNEXT], w[r + P_FPREV]
        if prev >= 0:
            w[self.row(int(prev)) + P_FNEXT] = nxt
        else:
            w[self.b + C_FREE_PAGES] = nxt
        if nxt >= 0:
            w[self.row(int(nxt)) + P_FPREV] = prev
        w[r + P_FNEXT] = w[r + P_FPREV] = -1

    # ---- pages ----

    def _soon_locked(self, pno: int, addr: int) -> bool:
        """Whether the clock hand meets chunk `addr` of page `pno` within half a turn: the
        chunk lies ahead of the hand on its page, or on a page whose place (`P_SEQ`) is less
        than half the class's pages on from the hand's, counting round the end."""
        w = self.w
        b = self.b
        base = self.page_base
        head = int(w[b + C_HEAD])
        hand = int(w[b + C_HAND_PAGE])
        if hand < 0:  # not started: at the first page's first chunk
            hand, hand_chunk = head, 0
        else:
            hand_chunk = int(w[b + C_HAND_CHUNK])
        at = w[base + pno * P_WORDS + P_SEQ]
        from_hand = at - w[base + hand * P_WORDS + P_SEQ]
        if not from_hand and (addr & (SLAB_PAGE_SIZE - 1)) // self.size >= hand_chunk:
            return True  # ahead of the hand on its own page
        first = w[base + head * P_WORDS + P_SEQ]
        span = w[base + int(w[b + C_TAIL]) * P_WORDS + P_SEQ] - first + 1
        if from_hand <= 0:  # passed in this turn (or just now, on the hand's page)
            from_hand += span
        return 2 * from_hand <= span

    def add_page_locked(self, pno: int) -> None:
        """Take page `pno` (from the pool or another class): all of it becomes carvable."""
        w = self.w
        b = self.b
        r = self.row(pno)
        if w[r + P_FLAGS] & PF_DIRTY:
            # stale statuses must not look like items to the hand: the page reads as zeros
            # again (and its memory goes back to the OS until it is written)
            self.arena.release_pages(pno)
        w[r + P_FLAGS] = PF_DIRTY
        w[r + P_CLSID] = self.id
        w[r + P_FREE_HEAD] = -1
        w[r + P_NFREE] = 0
        self._link_last_locked(pno)
        carve = w[b + C_CARVE]
        if carve >= 0:
            # an older partly carved page keeps its bump pointer; list its rest as free
            base = int(carve) << PAGE_SHIFT
            for o in range(int(w[b + C_CARVE_OFF]), SLAB_PAGE_SIZE - self.size + 1, self.size):
                self.chunk_push_locked(base | o, fresh=True)
        w[b + C_CARVE] = pno
        w[b + C_CARVE_OFF] = 0

    def _link_last_locked(self, pno: int) -> None:
        """Put page `pno` last in the class's page list (clock order) and count it."""
        w = self.w
        b = self.b
        r = self.row(pno)
        tail = w[b + C_TAIL]
        w[r + P_NEXT] = -1
        w[r + P_PREV] = tail
        # pages only ever join last: their sequence numbers grow in clock order (a page
        # moved away leaves a gap), which `_soon_locked` reads as places
        w[r + P_SEQ] = w[self.row(int(tail)) + P_SEQ] + 1 if tail >= 0 else 0
        if tail >= 0:
            w[self.row(int(tail)) + P_NEXT] = pno
        else:
            w[b + C_HEAD] = pno
        w[b + C_TAIL] = pno
        w[b + C_NPAGES] += 1

    def remove_page_locked(self, pno: int) -> None:
        """Detach page `pno` for a move: no allocation or hand visit reaches it from now on.
        Its live items stay readable until the mover unlinks them."""
        w = self.w
        b = self.b
        r = self.row(pno)
        nxt, prev = w[r + P_NEXT], w[r + P_PREV]
        if w[b + C_HAND_PAGE] == pno:
            w[b + C_HAND_PAGE] = nxt  # -1: the hand starts again at the first page
            w[b + C_HAND_CHUNK] = 0
        if prev >= 0:
            w[self.row(int(prev)) + P_NEXT] = nxt
        else:
            w[b + C_HEAD] = nxt
        if nxt >= 0:
            w[self.row(int(nxt)) + P_PREV] = prev
        else:
            w[b + C_TAIL] = prev
        w[r + P_NEXT] = w[r + P_PREV] = -1
        w[b + C_NPAGES] -= 1
        if w[r + P_NFREE]:
            self._unlist_free_locked(pno)
            w[b + C_NFREE] -= w[r + P_NFREE]
        if w[b + C_CARVE] == pno:
            w[b + C_CARVE] = -1
        # chunks never carved or on the free list were free; what remains is in use
        w[r + P_FREE_HEAD] = -1
        w[r + P_NFREE] = 0
        w[r + P_FLAGS] |= PF_MOVING

    def restore_page_locked(self, pno: int) -> None:
        """Take back page `pno`, detached for a move that could not finish: it goes last in
        clock order, and its chunks that hold nothing (status 0: freed since, or never used)
        are free again."""
        self.w[self.row(pno) + P_FLAGS] &= ~PF_MOVING
        self._link_last_locked(pno)
        pm = self.pm
        base = pno << PAGE_SHIFT
        for o in range(0, self.perslab * self.size, self.size):
            if not pm[base | o]:
                self.chunk_push_locked(base | o, fresh=True)

    def free_in_page_locked(self, pno: int) -> int:
        """How many chunks of page `pno` hold nothing (the mover prefers the emptiest)."""
        w = self.w
        n = int(w[self.row(pno) + P_NFREE])
        if w[self.b + C_CARVE] == pno:
            n += (SLAB_PAGE_SIZE - int(w[self.b + C_CARVE_OFF])) // self.size
        return n

    def count_used(self, delta: int) -> None:
        """Chunks that became used (or, negative, free): the class lock is held."""
        self.w[self.b + C_USED] += delta


class PagePool:
    """Every page, and the limit: at most ``G_LIMIT`` bytes of pages exist at any time.

    A page is in one of four places: never handed out yet (from ``G_NEXT_PAGE`` on), in a
    class, on the spare stack (memory held, no owner: memcached's global page pool), or on
    the released stack (its memory given back to the OS).
    """

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.lock = arena.pool_lock
        self.w = arena.words
        self.max_pages = arena.max_pages
        self.spare_base = arena.spare_base
        self.released_base = arena.released_base
        #: the word of each class's page count (C_NPAGES)
        self.class_counts = [
            arena.class_block(cid) + C_NPAGES for cid in range(1, arena.nclasses + 1)
        ]

    def row(self, pno: int) -> int:
        return self.arena.page_row(pno)

    def field(self, g: int) -> int:
        return int(self.w[g])

    @property
    def limit(self) -> int:
        return int(self.w[G_LIMIT])

    @property
    def malloced(self) -> int:
        return int(self.w[G_MALLOCED])

    def room(self) -> bool:
        """Whether a new page may be made without going over the limit (lock held)."""
        w = self.w
        return bool(w[G_NSPARE]) or (
            w[G_MALLOCED] + SLAB_PAGE_SIZE <= w[G_LIMIT] and self._can_make_locked()
        )

    def _can_make_locked(self) -> bool:
        return bool(self.w[G_NRELEASED]) or self.w[G_NEXT_PAGE] < self.max_pages

    def take(self, clsid: int, first: bool = False) -> int:
        """A page for class `clsid` (its number): a spare one, else a new one within the
        limit, else, if it is the class's `first` page, a new one past the limit; -1 when
        there is none. memcached's ``do_slabs_newslab`` refuses a page at the limit only to
        a class that already has one, so every size can be stored (`first_page_room_locked`
        bounds what that costs)."""
        w = self.w
        with self.lock:
            n = w[G_NSPARE]
            if n:
                pno = int(w[self.spare_base + n - 1])
                w[G_NSPARE] = n - 1
            elif w[G_MALLOCED] + SLAB_PAGE_SIZE <= w[G_LIMIT]:
                pno = self._new_page_locked()
                if pno < 0:
                    w[G_MALLOC_FAILS] += 1
                    return -1
            elif first and self.first_page_room_locked():
                pno = self._new_page_locked()
                if pno < 0:
                    w[G_MALLOC_FAILS] += 1
                    return -1
                w[G_EXCESS] += 1
            else:
                return -1
            w[self.row(pno) + P_CLSID] = clsid
            return pno

    def first_page_room_locked(self) -> bool:
        """Whether a class's first page may be made past the limit (pool lock held): the
        first pages past it never outnumber the classes holding a page, the new one
        included. So the limit is exceeded by at most one page per slab class (memcached,
        where a class that lost its pages to moves takes another first page, has no bound),
        and a class that keeps losing its page cannot grow the excess. (Other classes' page
        counts are read without their locks: a hint, off by one while another class gains
        or loses its first page.)"""
        w = self.w
        holding = 1
        for b in self.class_counts:
            if w[b]:
                holding += 1
        return bool(w[G_EXCESS] < holding)

    def _new_page_locked(self) -> int:
        w = self.w
        n = w[G_NRELEASED]
        if n:
            pno = int(w[self.released_base + n - 1])
            w[G_NRELEASED] = n - 1
        else:
            pno = int(w[G_NEXT_PAGE])
            if pno >= self.max_pages:
                return -1  # the arena's reserve is used up (see Cache's docstring)
            w[G_NEXT_PAGE] = pno + 1
            r = self.row(pno)
            for f in (P_FREE_HEAD, P_NEXT, P_PREV, P_FNEXT, P_FPREV):
                w[r + f] = -1
        w[G_MALLOCED] += SLAB_PAGE_SIZE
        return pno

    def set_owner(self, pno: int, clsid: int) -> None:
        """Record that page `pno` now belongs to class `clsid` (before any item is written)."""
        self.w[self.row(pno) + P_CLSID] = clsid

    def give(self, pno: int) -> None:
        """Take back an empty page; its memory goes back to the OS while over the limit."""
        w = self.w
        with self.lock:
            r = self.row(pno)
            w[r + P_CLSID] = 0
            w[r + P_FLAGS] &= ~PF_MOVING
            n = w[G_NSPARE]
            w[self.spare_base + n] = pno
            w[G_NSPARE] = n + 1
            self._release_over_limit_locked()

    def set_limit(self, limit: int) -> None:
        with self.lock:
            self.w[G_LIMIT] = limit
            self._release_over_limit_locked()

    def over_limit(self) -> bool:
        """Whether the pages are past the limit by more than the classes' first pages (the
        limit went down: the automover gives pages back)."""
        with self.lock:
            w = self.w
            return bool(w[G_MALLOCED] > w[G_LIMIT] + w[G_EXCESS] * SLAB_PAGE_SIZE)

    @property
    def excess(self) -> int:
        """Pages past the limit that classes took as their first one."""
        return int(self.w[G_EXCESS])

    def _release_over_limit_locked(self) -> None:
        """Free spare pages while the pages are past the limit; the first pages' excess is
        then at most what is still past it."""
        w = self.w
        while w[G_MALLOCED] > w[G_LIMIT] and w[G_NSPARE]:
            n = w[G_NSPARE] - 1
            pno = int(w[self.spare_base + n])
            w[G_NSPARE] = n
            self.arena.release_pages(pno)
            w[self.row(pno) + P_FLAGS] = 0  # zeros now: no need to clear it again
            m = w[G_NRELEASED]
            w[self.released_base + m] = pno
            w[G_NRELEASED] = m + 1
            w[G_MALLOCED] -= SLAB_PAGE_SIZE
        past = max(0, -(-(w[G_MALLOCED] - w[G_LIMIT]) // SLAB_PAGE_SIZE))
        if w[G_EXCESS] > past:
            w[G_EXCESS] = past

    def spare_count(self) -> int:
        with self.lock:
            return int(self.w[G_NSPARE])

    def take_spare(self) -> int:
        """A spare page, for ``slabs reassign 0 <dst>``; -1 if none."""
        w = self.w
        with self.lock:
            n = w[G_NSPARE]
            if not n:
                return -1
            w[G_NSPARE] = n - 1
            return int(w[self.spare_base + n - 1])

    def clsid(self, pno: int) -> int:
        return int(self.w[self.row(pno) + P_CLSID])

    def flags(self, pno: int) -> int:
        return int(self.w[self.row(pno) + P_FLAGS])


__all__ = [
    "CHUNK_ALIGN_BYTES",
    "HOLE",
    "OFF_MASK",
    "PAGE_SHIFT",
    "SLAB_PAGE_SIZE",
    "PagePool",
    "SlabClass",
    "class_lookup",
    "SlabClasses",
    "slab_class_sizes",
]
