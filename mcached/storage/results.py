"""Result enums: what a storage operation did (memcached's ``enum store_item_type`` and
``enum delta_result_type``), and `ItemState`, what a lookup saw of an item. Handlers map them
to outcomes; storage never writes wire text.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, TypeAlias


class _Result(enum.Enum):
    # Members are singletons that compare by identity, so they may hash by identity too:
    # object.__hash__ is C, Enum's own __hash__ a Python call, paid on every dict lookup
    # keyed by a member (the handlers do one per storage command).
    __hash__ = object.__hash__


class StoreMode(_Result):
    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"


class StoreResult(_Result):
    STORED = "stored"
    NOT_STORED = "not_stored"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    NO_MEMORY = "no_memory"
    #: a chained item's header was had, one of its value chunks not: memcached allocates
    #: those while it reads the value and answers "Out of memory during read"
    NO_MEMORY_READING = "no_memory_reading"


class DeltaResult(_Result):
    OK = "ok"
    NON_NUMERIC = "non_numeric"
    NOT_FOUND = "not_found"
    NO_MEMORY = "no_memory"
    EXISTS = "exists"  # a CAS was given and the item's differs (memcached's CAS_MISMATCH)
    NOT_CREATED = "not_created"  # a miss asked to create the item, and there was no memory


class DeleteResult(_Result):
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    EXISTS = "exists"  # a CAS was given and the item's differs
    INVALIDATED = "invalidated"  # kept, marked stale, given a new CAS


class ItemState(NamedTuple):
    """An item as a lookup saw it (``Cache.lookup``, ``Cache.delta_ex``): what memcached's
    meta commands report of it. Times are seconds; a TTL is ``exptime - now``, None when the
    item never expires, and may be negative when the command itself set a time already past.

    `ttl`, `idle` and `fetched` are as the item was *before* the command changed it (a
    created item: None, 0, False); `touch_ttl` and `vivify_ttl` are the TTLs the command set
    (None: never, or not set; a reply shows each from the point where its flag stands)."""

    value: bytes | bytearray | None  # a copy, when asked for (ma: the new number)
    flags: int  # the client flags
    cas: int  # 0 with -C
    size: int  # value length
    total: int  # memcached's item size (header, key, value, CAS)
    clsid: int  # slab class
    ttl: int | None
    touch_ttl: int | None  # the TTL a touch set
    vivify_ttl: int | None  # the TTL a created item was given
    idle: int  # seconds since it was stored
    fetched: bool  # read before (memcached's ITEM_FETCHED)
    stale: bool  # invalidated (MF_STALE)
    token_sent: bool  # another client had won the recache (MF_WON before this command)
    won: bool  # this command won the recache
    created: bool  # this command created the item (a miss with vivify)
    binary_key: bool  # stored under a base64 key (MF_BINKEY)


#: What the lookups return: `ItemState`'s fields in its order, as a plain tuple. Made per
#: ``mg``, so it is not the NamedTuple itself: that costs ~1,500 more instructions to build
#: (``tuple.__new__`` of a subclass) and to unpack (not a plain tuple, UNPACK_SEQUENCE takes its
#: slow path). ``ItemState(*item)`` names the fields where speed does not matter.
Item: TypeAlias = tuple[
    bytes | bytearray | None,
    int,
    int,
    int,
    int,
    int,
    int | None,
    int | None,
    int | None,
    int,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
]
# an Item's fields, for those who read one alone
SIZE = ItemState._fields.index("size")
CLSID = ItemState._fields.index("clsid")
CREATED = ItemState._fields.index("created")


class ReassignResult(_Result):
    """``slabs reassign`` outcomes (memcached's ``enum reassign_result_type``)."""

    OK = "ok"
    RUNNING = "running"
    BADCLASS = "badclass"
    NOSPARE = "nospare"
    SAME = "same"
