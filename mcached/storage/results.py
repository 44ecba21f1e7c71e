"""Result enums: what a storage operation did (memcached's ``enum store_item_type`` and
``enum delta_result_type``). Handlers map them to reply lines; storage never writes wire text.
"""

from __future__ import annotations

import enum


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


class DeltaResult(_Result):
    OK = "ok"
    NON_NUMERIC = "non_numeric"
    NOT_FOUND = "not_found"
    NO_MEMORY = "no_memory"


class ReassignResult(_Result):
    """``slabs reassign`` outcomes (memcached's ``enum reassign_result_type``)."""

    OK = "ok"
    RUNNING = "running"
    BADCLASS = "badclass"
    NOSPARE = "nospare"
    SAME = "same"
