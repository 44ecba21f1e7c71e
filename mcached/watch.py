"""``watch``: memcached's log stream, its vocabulary and its lines (memcached's ``logger.c``).

``watch [fetchers] [mutations] [evictions] [connevents] [deletions] ...`` turns a connection
into a stream of one line per event, as memcached 1.6.18 writes them::

    ts=1796168421.405784 gid=6 type=item_store key=a status=stored cmd=set ttl=0 clsid=1 ...
    ts=1796168421.456307 gid=7 type=item_get key=a status=found clsid=1 cfd=26 size=3
    ts=1796168421.177105 gid=2 type=conn_new rip=127.0.0.1 rport=40026 transport=tcp ...

with no argument meaning ``fetchers``. Keys are URI-encoded (memcached's ``uriencode``:
everything but letters, digits and ``-._~`` as ``%XX``); ``ts`` is the wall clock with its
microseconds printed as memcached prints them (``%d``, not zero-padded); ``gid`` orders the
events of the whole daemon. ``deletions`` (``type=deleted``) is a later memcached's; 1.6.18
refuses the word. memcached's other words (``rawcmds``, ``sysevents``, the proxy's) are
accepted, and nothing is logged for them.

This module is the vocabulary only: flags, event types, statuses, and `render`, which turns
a recorded event into its line. Events are recorded by whoever sees them (the handlers for
items, the workers for connections, the storage for evictions: its ``Cache.on_evict`` hook,
set only while a watcher wants them) into `mcached.server.eventlog`, and rendered by the
worker that serves the watcher.

As memcached's, ``fetchers`` covers every lookup its ``do_item_get`` makes, not only a get's:
the one inside each store (logged before the store's ``item_store`` line), delta, touch,
delete and ``me``; the handlers ask the storage what such a lookup would see
(``Cache.peek``) only while fetchers are watched.
"""

from __future__ import annotations

from urllib.parse import quote

# what a watcher asks for (memcached's LOG_* bits; DELETIONS is ours, after its later bit)
SYSEVENTS = 1 << 1
FETCHERS = 1 << 2
MUTATIONS = 1 << 3
CONNEVENTS = 1 << 5
EVICTIONS = 1 << 6
RAWCMDS = 1 << 9
PROXYREQS = 1 << 10
PROXYEVENTS = 1 << 11
PROXYUSER = 1 << 12
DELETIONS = 1 << 13

WORDS = {
    b"rawcmds": RAWCMDS,
    b"evictions": EVICTIONS,
    b"fetchers": FETCHERS,
    b"mutations": MUTATIONS,
    b"sysevents": SYSEVENTS,
    b"connevents": CONNEVENTS,
    b"proxyreqs": PROXYREQS,
    b"proxyevents": PROXYEVENTS,
    b"proxyuser": PROXYUSER,
    b"deletions": DELETIONS,
}

WATCHER_LIMIT = 20  # memcached's: more watchers get WATCHER_TOO_MANY

# event types, and the flag a watcher needs to see each
ITEM_GET = 1
ITEM_STORE = 2
EVICTION = 3
CONN_NEW = 4
CONN_CLOSE = 5
DELETED = 6
FLAG_OF = {
    ITEM_GET: FETCHERS,
    ITEM_STORE: MUTATIONS,
    EVICTION: EVICTIONS,
    CONN_NEW: CONNEVENTS,
    CONN_CLOSE: CONNEVENTS,
    DELETED: DELETIONS,
}

# item_get statuses (memcached's was_found)
NOT_FOUND, FOUND, FLUSHED, EXPIRED = 0, 1, 2, 3
GET_STATUS = ("not_found", "found", "flushed", "expired")
# item_store statuses (memcached's enum store_item_type) and commands (its NREAD_*)
STORE_STATUS = ("not_stored", "stored", "exists", "not_found", "too_large", "no_memory")
STORE_CMD = ("null", "add", "set", "replace", "append", "prepend", "cas")
CMD_ADD, CMD_SET, CMD_REPLACE, CMD_APPEND, CMD_PREPEND, CMD_CAS = 1, 2, 3, 4, 5, 6
DELETE_CMD = ("null", "delete", "md")
TRANSPORT = ("local", "tcp", "udp")
LOCAL, TCP = 0, 1  # local: a unix domain socket
CLOSE_REASON = ("error", "normal", "idle_timeout", "shutdown")
ERROR, NORMAL, IDLE_TIMEOUT, SHUTDOWN = 0, 1, 2, 3


def parse(words: list[bytes]) -> int | None:
    """The flags ``watch <words>`` asks for (none: fetchers); None for a word memcached does
    not know (it answers ERROR)."""
    if not words:
        return FETCHERS
    flags = 0
    for word in words:
        bit = WORDS.get(word)
        if bit is None:
            return None
        flags |= bit
    return flags


def uriencode(key: bytes) -> str:
    return quote(key, safe="")


def render(
    gid: int, kind: int, ts: float, a: int, b: int, i1: int, i2: int, i3: int, i4: int, key: bytes
) -> bytes:
    """One event's line, memcached's format for its type (the fields as `eventlog` records
    them: see each type's emitter there)."""
    sec = int(ts)
    head = f"ts={sec}.{int((ts - sec) * 1e6)} gid={gid} "
    if kind == ITEM_GET:
        line = (
            f"type=item_get key={uriencode(key)} status={GET_STATUS[a]} clsid={i1} cfd={i2} "
            f"size={i3}"
        )
    elif kind == ITEM_STORE:
        line = (
            f"type=item_store key={uriencode(key)} status={STORE_STATUS[a]} cmd={STORE_CMD[b]} "
            f"ttl={i4} clsid={i1} cfd={i2} size={i3}"
        )
    elif kind == CONN_NEW:
        line = f"type=conn_new rip={key.decode()} rport={i1} transport={TRANSPORT[a]} cfd={i2}"
    elif kind == CONN_CLOSE:
        line = (
            f"type=conn_close rip={key.decode()} rport={i1} transport={TRANSPORT[a]} "
            f"reason={CLOSE_REASON[b]} cfd={i2}"
        )
    elif kind == DELETED:
        line = f"type=deleted key={uriencode(key)} cmd={DELETE_CMD[b]} clsid={i1} size={i3}"
    else:  # EVICTION
        line = (
            f"type=eviction key={uriencode(key)} fetch={'yes' if a else 'no'} ttl={i4} "
            f"la={i2} clsid={i1} size={i3}"
        )
    return (head + line + "\n").encode()
