"""Result enums: what a storage operation did (memcached's ``enum store_item_type`` and
``enum delta_result_type``). Handlers map them to reply lines; storage never writes wire text.
"""

from __future__ import annotations

import enum


class StoreMode(enum.Enum):
    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"
    CAS = "cas"


class StoreResult(enum.Enum):
    STORED = "stored"
    NOT_STORED = "not_stored"
    EXISTS = "exists"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    NO_MEMORY = "no_memory"


class DeltaResult(enum.Enum):
    OK = "ok"
    NON_NUMERIC = "non_numeric"
    NOT_FOUND = "not_found"
    NO_MEMORY = "no_memory"


class ReassignResult(enum.Enum):
    """``slabs reassign`` outcomes (memcached's ``enum reassign_result_type``)."""

    OK = "ok"
    RUNNING = "running"
    BADCLASS = "badclass"
    NOSPARE = "nospare"
    SAME = "same"
