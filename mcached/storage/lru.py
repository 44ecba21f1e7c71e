"""One LRU per slab class, approximated by a clock (second chance) over the class's chunks.

memcached's segmented LRU (HOT/WARM/COLD, ``items.c``) keeps a doubly linked list per class
and bumps an item only by setting ``ITEM_ACTIVE`` on read; the maintainer thread moves active
items out of COLD later. mcached keeps the cheap half of that and drops the list:

* A read sets the item's reference byte (`OFF_REF`): one byte store, no lock but the item's
  own partition lock, no list to relink.
* When a class needs memory and has none free, its *hand* walks the class's pages chunk by
  chunk. An item whose reference byte is set gets it cleared and is passed over (a second
  chance: memcached's ``moves_to_warm``); the first unreferenced item is the candidate.
* A new item goes where the hand just evicted, so it waits a whole turn of the hand before it
  can be evicted (memcached's HOT protection), or where memory was free: a chunk freed by a
  delete or an overwrite may lie anywhere, so an item put in one the hand meets within half
  a turn starts referenced (`SlabClass.chunk_pop_locked`), and lives a turn or a little
  more; one put further on waits half a turn or more. An item that was read since the hand
  last passed survives the turn. Items never read leave first, oldest first (about: see the
  freed chunks above): what a cold scan writes is evicted before what clients keep reading.

The walk costs nothing per item and no memory: no prev/next pointers, no list updates on the
hot path. The price is precision: order among referenced items is not kept, and the hand
clears a reference byte without the item's partition lock, so a read racing with the hand may
lose its bump (the item then gets one turn less; never a wrong result). It clears only the
bytes of its own class's pages, which no page move takes while it holds the class lock: a
chained item's head lies in another class's page, and its byte is cleared under the item's
partition lock instead. The hand's place is two words of the class's arena block, so every
process's store moves the same hand.
"""

from __future__ import annotations

from collections.abc import Iterator

from mcached.storage.arena import (
    C_HAND_CHUNK,
    C_HAND_PAGE,
    C_HEAD,
    C_MOVES_TO_WARM,
    HEADER,
    OFF_CLSID,
    OFF_HEAD,
    OFF_NEXT,
    OFF_REF,
    P_CLSID,
    P_WORDS,
    PAGE_SHIFT,
    ST_CHAINED,
    ST_CONT,
    ST_LINKED,
    Q,
)
from mcached.storage.slabs import SlabClass


def clock_chunk(cls: SlabClass, head: int, walk: int = 1 << 20) -> int:
    """The chunk at which the clock meets the chained item at `head`: its first chunk of
    the class it is counted in (the largest, `OFF_CLSID`), as memcached keeps every chained
    item in the largest class's LRU, whatever classes its chunks are in. An append or
    prepend can make the first value chunks smaller ones (each part's chunks are sized from
    that part alone), so the walk may pass a few. An item with no chunk of the largest class
    (every part smaller than a largest chunk) is met at its first value chunk, in that
    chunk's class. -1 if the walk passes `walk` chunks or leaves the pages: a reader
    without the item's partition lock may meet a chain being rewritten (a chunk freed and
    its page given to another class, whose bytes there are no pointer), and must not follow
    it for ever, nor out of the pages."""
    pm = cls.pm
    w = cls.w
    base = cls.page_base + P_CLSID
    end = len(pm) - OFF_NEXT - 8
    if not 0 <= head < len(pm) - HEADER:
        return -1
    counted = pm[head + OFF_CLSID]
    first = c = int(Q.unpack_from(pm, head + OFF_NEXT)[0])
    while c >= 0:
        if c > end:
            return -1
        if w[base + (c >> PAGE_SHIFT) * P_WORDS] == counted:
            return c
        walk -= 1
        if not walk:
            return -1
        c = int(Q.unpack_from(pm, c + OFF_NEXT)[0])
    return first


def sweep(cls: SlabClass, limit: int, second_chance: bool = True) -> Iterator[int]:
    """Candidates for eviction, in clock order: addresses of linked, unreferenced items, or,
    for a chained item, of the chunk the clock meets it at (`clock_chunk`); its header item
    sits in a small class's page, as memcached's does, and its other chunks are skipped
    where they lie.

    The class lock must be held for the whole iteration. At most `limit` chunks are visited;
    the hand keeps its place between calls. Without `second_chance` (-M: only expired items
    may go, referenced or not) every linked item is a candidate and no byte is cleared.
    """
    w = cls.w
    b = cls.b
    pno = int(w[b + C_HAND_PAGE])
    ci = int(w[b + C_HAND_CHUNK])
    if pno < 0:
        pno = int(w[b + C_HEAD])
        ci = 0
        if pno < 0:
            return
    pm = cls.pm
    unpack = Q.unpack_from
    size = cls.size
    per = cls.perslab
    base = pno << PAGE_SHIFT
    warmed = 0
    for _ in range(limit):
        if ci >= per:
            ci = 0
            pno = cls.next_page_locked(pno)
            base = pno << PAGE_SHIFT
        a = base + ci * size
        ci += 1
        st = pm[a]
        if st == ST_LINKED:
            item = a
        elif st == ST_CONT:
            # a chained item's clock chunk stands for it (unlocked: a hint, see clock_chunk)
            item = unpack(pm, a + OFF_HEAD)[0]
            # clock_chunk first: it checks the pointer lies in the pages (a page move may
            # be rewriting it, and this read is not under the item's lock)
            if clock_chunk(cls, item) != a or pm[item] != ST_LINKED | ST_CHAINED:
                continue
        else:
            continue  # free, reserved, a zombie, a chained item's head or later chunk
        if second_chance and item == a and pm[a + OFF_REF]:
            pm[a + OFF_REF] = 0
            warmed += 1
            continue
        # a chained item's head lies in another class's page, which a page move may rescue
        # and give away under this very hand: its byte is cleared by the consumer, under the
        # item's partition lock (`Items._evict_locked`), never here
        # the consumer may stop here: everything is recorded before each yield
        w[b + C_HAND_PAGE] = pno
        w[b + C_HAND_CHUNK] = ci
        w[b + C_MOVES_TO_WARM] += warmed
        warmed = 0
        yield a
    w[b + C_HAND_PAGE] = pno
    w[b + C_HAND_CHUNK] = ci
    w[b + C_MOVES_TO_WARM] += warmed
