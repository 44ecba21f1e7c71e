"""Checks of the arena's free lists and chains, where they change: on when the environment
variable ``MCACHED_STORAGE_CHECKS`` is set (not to 0) as the storage is imported.

A chunk freed twice, freed into a class its page does not belong to, a free list that hands
out a chunk still in use, or a chain that leads through a chunk not of its item: any of them
shows much later, if at all, as an item table entry pointing at another item's bytes. With
the checks on, each raises `ArenaDamaged` where it happens, so the traceback names the path
(the storage stress test, ``scripts/stress_storage.py``, runs with them on). Off, the
storage pays one test of a module constant at each place below.

A failed check raises through its callers, which let their locks go as on any exception;
what it found is damage already done, which nothing here mends.
"""

from __future__ import annotations

import mmap
import os
from typing import TYPE_CHECKING

from mcached.storage.arena import (
    OFF_HEAD,
    OFF_MASK,
    P_CLSID,
    P_FLAGS,
    PAGE_SHIFT,
    PF_MOVING,
    ST_CONT,
    ST_RESERVED,
    Q,
)

if TYPE_CHECKING:
    from mcached.storage.slabs import SlabClass

ENABLED = os.environ.get("MCACHED_STORAGE_CHECKS", "") not in ("", "0")
#: a chain longer than this is taken for a loop (the largest item, 1 GB, has 2,049 chunks)
CHAIN_MAX = 1 << 16


class ArenaDamaged(AssertionError):
    """The arena's free lists or chains are not what the storage keeps them as."""


def on_grid(cls: SlabClass, addr: int, what: str) -> None:
    """`addr` is a chunk of class `cls`: on a page of that class, at a multiple of its
    size, within the page's chunks."""
    pno = addr >> PAGE_SHIFT
    row = cls.row(pno)
    owner, flags = int(cls.w[row + P_CLSID]), int(cls.w[row + P_FLAGS])
    off = addr & OFF_MASK
    if owner != cls.id or off % cls.size or off // cls.size >= cls.perslab:
        raise ArenaDamaged(
            f"{what}: chunk {addr} is no chunk of class {cls.id} (size {cls.size}): "
            f"page {pno} is of class {owner} (flags {flags}), offset {off}"
        )


def popped(cls: SlabClass, pno: int, addr: int, nxt: int) -> None:
    """A chunk taken from page `pno`'s free list: free, of the page, which is of the class
    and not moving, and the list goes on within the page."""
    on_grid(cls, addr, "free list")
    if addr >> PAGE_SHIFT != pno or (nxt != -1 and nxt >> PAGE_SHIFT != pno):
        raise ArenaDamaged(f"free list of page {pno}: chunk {addr}, next {nxt}: off the page")
    if cls.pm[addr]:
        raise ArenaDamaged(
            f"free list of page {pno}: chunk {addr} is in use (status {cls.pm[addr]})"
        )
    if cls.w[cls.row(pno) + P_FLAGS] & PF_MOVING:
        raise ArenaDamaged(f"free list of page {pno}: the page is being moved")


def carved(cls: SlabClass, addr: int) -> None:
    """A chunk taken from the class's newest page, never used: of the class, and free."""
    on_grid(cls, addr, "bump pointer")
    if cls.pm[addr]:
        raise ArenaDamaged(f"bump pointer: chunk {addr} is in use (status {cls.pm[addr]})")


def pushed(cls: SlabClass, addr: int, fresh: bool) -> None:
    """A chunk about to be freed into class `cls`: of the class, and in use unless `fresh`
    (free already, on no list: `SlabClass.chunk_push_locked`)."""
    on_grid(cls, addr, "free")
    if not fresh and not cls.pm[addr]:
        raise ArenaDamaged(f"free: chunk {addr} of class {cls.id} is free already")


def reserved(pm: mmap.mmap, addr: int, what: str) -> None:
    """A chunk about to be written is one an allocation reserved."""
    if pm[addr] != ST_RESERVED:
        raise ArenaDamaged(f"{what}: chunk {addr} is not reserved (status {pm[addr]})")


def link(pm: mmap.mmap, head: int, nxt: int, at: int) -> None:
    """The chunk at `nxt`, the `at`-th after `head` in its chain, is a continuation of it."""
    back = Q.unpack_from(pm, nxt + OFF_HEAD)[0]
    if pm[nxt] != ST_CONT or back != head or at > CHAIN_MAX:
        raise ArenaDamaged(
            f"chain of {head} (status {pm[head]}): chunk {nxt}, number {at}, has status "
            f"{pm[nxt]} and head {back}"
        )
