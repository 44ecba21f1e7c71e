"""How memcached 1.6.18 cuts a UDP datagram's replies into messages: its response objects.

memcached writes each reply into *response objects* (``mc_resp``) and sends each object as a
message of its own over UDP (``memcached.c`` ``transmit_udp``): datagrams of at most 1,400
bytes, each with the request id, the message's own sequence number (from 0) and its own
datagram count. So a datagram of several commands is answered with several messages, and
some commands make several objects:

* ``get``/``gets``/``gat``/``gats`` start one object per key (``proto_text.c``
  ``process_get_command``): a hit's ``VALUE`` block in its key's object, nothing in a miss's,
  ``END`` in the last key's. ``get a b`` with ``b`` missing is two messages, ``VALUE ...``
  and ``END``;
* a text command with nothing to say (``noreply``, a meta command's ``q``) has its object
  marked *skip*; a quiet binary command with nothing to say (a ``getq`` miss, a ``setq``)
  leaves an *empty* object.

What is sent of them depends on when memcached transmits. A get (any of the four) and ``mn``
transmit at once, as does a binary command that answered; so does the command that spends a
turn's ``-R`` requests (the 21st of a datagram with ``-R 20``, then every 20th: the server
counts); the rest wait for the next transmission. An object at the head of what waits is
sent even when empty (a message of just the header, count 0), while a skip object there is
dropped; once a message has gone, the empty and skip objects right behind it are dropped
unsent (``_transmit_post``). Hence ``get b a`` (``b`` missing) answers an empty message,
then ``VALUE a ... END``; but ``set ...`` then ``get b a`` answers ``STORED``, then
``VALUE a ... END``.

`units` gives a command's objects from its reply; `flushes` tells whether memcached
transmits after it. `mcached.server.udp` sends them.

Rules: pure, no sockets.
"""

from __future__ import annotations

from typing import Any

from mcached.protocol import commands as c
from mcached.protocol.binary import BinaryReplies

#: memcached's UDP_MAX_PAYLOAD_SIZE (header included) and what is left for the reply
MAX_PAYLOAD = 1400
HEADER_SIZE = 8
DATA_SIZE = MAX_PAYLOAD - HEADER_SIZE

#: a response object memcached marks skip (nothing is ever sent for it)
SKIP = None

Unit = bytes | None

_GETS = (c.Get, c.Gat)  # Gets and Gats are their subclasses


def _is_text_get(cmd: Any) -> bool:
    return isinstance(cmd, _GETS) and not isinstance(cmd, BinaryReplies)


def units(cmd: Any, reply: bytes) -> list[Unit]:
    """The response objects memcached makes for `cmd`, which answered `reply`."""
    if isinstance(cmd, BinaryReplies):
        return [reply]  # one per command, empty when quiet and nothing to say
    if not reply:
        return [SKIP]
    if _is_text_get(cmd) and len(cmd.keys) > 1:
        split = _split_values(cmd.keys, reply)
        if split is not None:
            return list(split)
    return [reply]


def flushes(cmd: Any, reply: bytes) -> bool:
    """Whether memcached transmits what waits once `cmd` is served."""
    if isinstance(cmd, BinaryReplies):
        return bool(reply)
    return type(cmd) in c.TRANSMITTING


def _split_values(keys: list[bytes], reply: bytes) -> list[bytes] | None:
    """A multi-key get's reply, one object per key; None when it is not VALUE blocks then
    END (an error line: one object)."""
    out: list[bytes] = []
    pos = 0
    for key in keys:
        head = b"VALUE " + key + b" "
        if reply.startswith(head, pos):
            eol = reply.find(b"\r\n", pos)
            if eol < 0:
                return None
            fields = reply[pos:eol].split(b" ")
            try:
                nbytes = int(fields[3])
            except (IndexError, ValueError):
                return None
            end = eol + 2 + nbytes + 2
            out.append(reply[pos:end])
            pos = end
        else:
            out.append(b"")
    if reply[pos:] != b"END\r\n":
        return None
    out[-1] += b"END\r\n"
    return out


def messages(request_id: int, unit: bytes) -> list[bytes]:
    """One object's datagrams: the 8-byte header (request id, sequence number, count, 0)
    then up to `DATA_SIZE` bytes each; an empty object is the header alone, count 0. The
    count stops at 65,535 (memcached's), the sequence number wraps as its 16 bits do."""
    n = -(-len(unit) // DATA_SIZE)
    total = min(n, 0xFFFF)
    rid = request_id.to_bytes(2, "big")
    tail = total.to_bytes(2, "big") + b"\0\0"
    if not n:
        return [rid + b"\0\0" + tail]
    return [
        rid + (i & 0xFFFF).to_bytes(2, "big") + tail + unit[i * DATA_SIZE : (i + 1) * DATA_SIZE]
        for i in range(n)
    ]


def transmit(pending: list[Unit]) -> list[bytes]:
    """The objects of `pending` that memcached sends when it transmits them all: the head
    one, empty or not (skip ones at the head are dropped); then, after each one sent, the
    empty and skip ones right behind it are dropped."""
    sent: list[bytes] = []
    i = 0
    n = len(pending)
    while i < n:
        unit = pending[i]
        i += 1
        if unit is SKIP:
            continue
        sent.append(unit)
        while i < n and not pending[i]:  # empty or skip
            i += 1
    return sent
