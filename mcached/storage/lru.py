"""One LRU per slab class, approximated by a clock (second chance) over the class's chunks.

memcached's segmented LRU (HOT/WARM/COLD, ``items.c``) keeps a doubly linked list per class
and bumps an item only by setting ``ITEM_ACTIVE`` on read; the maintainer thread moves active
items out of COLD later. mcached keeps the cheap half of that and drops the list:

* A read sets the item's reference byte (`OFF_REF`): one byte store, no lock but the item's
  own partition lock, no list to relink.
* When a class needs memory and has none free, its *hand* walks the class's pages chunk by
  chunk. An item whose reference byte is set gets it cleared and is passed over (a second
  chance: memcached's ``moves_to_warm``); the first unreferenced item is the candidate.
* A new item goes where memory was free, or where the hand just evicted, so it waits a whole
  turn of the hand before it can be evicted (memcached's HOT protection); an item that was
  read since the hand last passed survives the turn. Items never read leave first, oldest
  first: what a cold scan writes is evicted before what clients keep reading.

The walk costs nothing per item and no memory: no prev/next pointers, no list updates on the
hot path. The price is precision: order among referenced items is not kept, and the hand
clears a reference byte without the item's partition lock, so a read racing with the hand may
lose its bump (the item then gets one turn less; never a wrong result).
"""

from __future__ import annotations

from collections.abc import Iterator

from mcached.storage.slabs import OFF_REF, ST_LINKED, Page, SlabClass


def sweep(cls: SlabClass, limit: int, second_chance: bool = True) -> Iterator[tuple[Page, int]]:
    """Candidates for eviction, in clock order: (page, offset) of linked, unreferenced items.

    The class lock must be held for the whole iteration. At most `limit` chunks are visited;
    the hand keeps its place between calls. Without `second_chance` (-M: only expired items
    may go, referenced or not) every linked item is a candidate and no byte is cleared.
    """
    pages = cls.pages
    npages = len(pages)
    if not npages:
        return
    size = cls.size
    per = cls.perslab
    pi = cls.hand_page
    ci = cls.hand_chunk
    if pi >= npages:
        pi = ci = 0
    page = pages[pi]
    buf = page.buf
    for _ in range(limit):
        if ci >= per:
            ci = 0
            pi += 1
            if pi >= npages:
                pi = 0
            page = pages[pi]
            buf = page.buf
        o = ci * size
        ci += 1
        if buf[o] & ST_LINKED:
            if second_chance and buf[o + OFF_REF]:
                buf[o + OFF_REF] = 0
                cls.moves_to_warm += 1
                continue
            cls.hand_page = pi
            cls.hand_chunk = ci
            yield page, o
    cls.hand_page = pi
    cls.hand_chunk = ci
