"""Slab classes: chunk sizes and pages. Sizes only, never keys.

The class table is memcached's ``slabs_init``: the first chunk holds the item header plus
``-n`` bytes, each next class is ``-f`` times larger, 8-byte aligned, until ``slab_chunk_max``
/ ``-f``; the last class is exactly ``slab_chunk_max`` (half a 1 MB page by default). Items
larger than that are chained across chunks of the largest class.
"""

from __future__ import annotations

import bisect

ITEM_HEADER_SIZE = 48
CHUNK_ALIGN_BYTES = 8
MAX_NUMBER_OF_SLAB_CLASSES = 64
SLAB_PAGE_SIZE = 1024 * 1024  # memcached 1.6 keeps 1 MB pages; larger items are chunked


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
