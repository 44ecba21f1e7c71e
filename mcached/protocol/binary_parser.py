"""The binary protocol's framing: ``feed(bytes)``, then ``next_command()`` until `NEED_DATA`;
and `Negotiator`, which picks a connection's protocol from its first byte (``-B``).

`BinaryParser` reads memcached 1.6.18's request frames (``proto_bin.c``
``try_read_command_binary`` and ``dispatch_bin_command``) into the command types of
`mcached.protocol.binary`, checking what memcached checks, in its order:

1. a magic other than 0x80: the connection is closed (memcached: "Invalid magic");
   then, as memcached, nothing more is decided until the extras and the key are in;
2. a key or extras longer than the body: ``Unknown command``, then the connection closes;
3. with SASL on and the connection not authenticated, any opcode but the SASL ones and
   ``version``: ``Auth failure.``, then the connection closes;
4. a key over 250 bytes, or lengths the opcode does not take (a get with extras, a set
   without its 8 bytes of extras...): ``Invalid arguments``, then the connection closes;
5. an opcode memcached does not serve (``verbosity`` among them): ``Unknown command``, and
   the body is skipped; a value too large for ``-I``: ``Too large.``, and the value is skipped.

ElastiCache's config opcodes (0x60, 0x64, 0x66, which memcached does not know) pass step 4
whatever their extras and key lengths (memcached would answer them "Unknown command" without
judging the lengths, so a frame never closes a connection here that memcached keeps open); a
``config set`` value is bounded by ``-I`` like a store's.

What it holds is bounded whatever a client sends: one header and its extras and key (at most
24 + 255 + 65,535 bytes, as memcached), or one value that fits in an item (``-I``; with
``receive_min``, as the daemon has it, one under that size: a larger one still arriving is
`Incoming`, received by the server into the cache's memory), or one SASL exchange (at most
`SASL_DATA_MAX`). Every body it does not
serve is skipped as it arrives, never buffered, so a 4 GB body length costs nothing.

One difference from memcached, on purpose: an unknown opcode's body is skipped exactly;
memcached skips ``bodylen`` bytes *after* the extras and key it already read, so it eats the
start of the next request when the unknown frame had a key or extras.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from mcached.errors import CloseConnection
from mcached.protocol import binary as b
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error
from mcached.protocol.parser import (
    BUFFER_SWITCH,
    INT32_MAX,
    KEY_MAX_LENGTH,
    NEED_DATA,
    Buffered,
    Parser,
    item_total_size,
)

SASL_MECH_MAX = 32  # MAX_SASL_MECH_LEN: a longer mechanism name is "Invalid arguments"
SASL_DATA_MAX = 64 * 1024  # a SASL exchange this long is out of memory (memcached: -I)
NO_CREATE = 0xFFFFFFFF  # incr/decr's exptime that means "do not create on a miss"

_HEADER = b.HEADER.unpack_from
_FLAGS_EXPTIME = struct.Struct(">II").unpack_from
_EXPTIME = struct.Struct(">I").unpack_from
_INCR = struct.Struct(">QQI").unpack_from

_STORE_CLASS = {b.SET: b.BinSet, b.ADD: b.BinAdd, b.REPLACE: b.BinReplace}
_STORE_MODE = {b.SET: b"set", b.ADD: b"add", b.REPLACE: b"replace"}
_GET_CLASS = {b.GET: b.BinGet, b.GETK: b.BinGetK}
_GAT_CLASS = {b.GAT: b.BinGat, b.GATK: b.BinGatK, b.TOUCH: b.BinTouch}
_SASL_OPCODES = frozenset((b.SASL_LIST_MECHS, b.SASL_AUTH, b.SASL_STEP))


def _exptime(v: int) -> int:
    """A binary exptime is unsigned: past 2^31 it is a Unix time past 2038, kept as the
    farthest time mcached's items can hold."""
    return v if v <= INT32_MAX else INT32_MAX


def _lengths_ok(base: int, keylen: int, extlen: int, bodylen: int) -> bool:
    """What dispatch_bin_command accepts for each opcode; anything else is a protocol error."""
    if base in (b.VERSION, b.NOOP, b.QUIT, b.SASL_LIST_MECHS):
        return extlen == 0 and keylen == 0 and bodylen == 0
    if base == b.FLUSH:
        return keylen == 0 and bodylen == extlen and extlen in (0, 4)
    if base in (b.SET, b.ADD, b.REPLACE):
        return extlen == 8 and keylen != 0 and bodylen >= keylen + 8
    if base in (b.GET, b.GETK, b.DELETE):
        return extlen == 0 and keylen > 0 and bodylen == keylen
    if base in (b.INCREMENT, b.DECREMENT):
        return keylen > 0 and extlen == 20 and bodylen == keylen + extlen
    if base in (b.APPEND, b.PREPEND):
        return keylen > 0 and extlen == 0
    if base == b.STAT:
        return extlen == 0
    if base in (b.SASL_AUTH, b.SASL_STEP):
        return extlen == 0 and keylen != 0
    if base in (b.TOUCH, b.GAT, b.GATK):
        return extlen == 4 and keylen != 0
    return True  # unknown opcodes: answered "Unknown command" later


KNOWN = frozenset(
    (
        b.GET, b.GETK, b.SET, b.ADD, b.REPLACE, b.DELETE, b.INCREMENT, b.DECREMENT, b.QUIT,
        b.FLUSH, b.NOOP, b.VERSION, b.APPEND, b.PREPEND, b.STAT, b.TOUCH, b.GAT, b.GATK,
        b.SASL_LIST_MECHS, b.SASL_AUTH, b.SASL_STEP,
        b.CONFIG_GET, b.CONFIG_SET, b.CONFIG_DELETE,
    )
)  # fmt: skip


class BinaryParser(Buffered):
    """One per binary connection. Not thread-safe: a connection lives on one worker."""

    __slots__ = (
        "_swallow",
        "_after_swallow",
        "_hangup",
        "item_size_max",
        "cas_enabled",
        "sasl",
        "sasl_state",
        "at_end",
        "receive_min",
    )

    def __init__(
        self,
        item_size_max: int = 1024 * 1024,
        cas_enabled: bool = True,
        sasl: bool = False,
        receive_min: int | None = None,
    ) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._swallow = 0  # body bytes still to skip
        self._after_swallow: Any = None  # the refusal to answer once they are skipped
        self._hangup = ""  # set: the last command was the connection's last (why)
        self.item_size_max = item_size_max
        self.cas_enabled = cas_enabled
        self.sasl = sasl  # -S: only SASL and version until authenticated
        self.sasl_state = b.SaslState()
        self.at_end = False  # never a promise here: the server always asks next_command()
        # a store's value from this size on that is still arriving becomes `c.Incoming`, as
        # in the text parser (None: never; the daemon's parsers use RECEIVE_MIN)
        self.receive_min = receive_min if receive_min is not None else INT32_MAX

    # ---- buffer ----

    def feed(self, data: bytes) -> bool:
        """Add received bytes; True when nothing was under way before them (a new request
        begins: the server times slow requests from there)."""
        fresh = self._pos >= len(self._buf) and not self._swallow
        if self._swallow:
            n = min(self._swallow, len(data))
            self._swallow -= n
            data = data[n:]
            if not data:
                return False
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
        elif type(buf) is bytearray:
            if pos:
                del buf[:pos]
            buf += data
        else:
            rest = buf[pos:]
            if len(rest) + len(data) > BUFFER_SWITCH:
                grown = bytearray(rest)
                grown += data
                self._buf = grown
            else:
                self._buf = rest + data
        self._pos = 0
        return fresh

    @property
    def authenticating(self) -> bool:
        """-S: the connection has not authenticated yet."""
        return self.sasl and not self.sasl_state.authenticated

    @property
    def in_data_block(self) -> bool:
        """A frame's header has arrived and its body has not (or is being skipped)."""
        return self._swallow > 0 or len(self._buf) - self._pos >= b.HEADER_SIZE

    @property
    def swallowing(self) -> bool:
        """A refused frame's body is being skipped (memcached's ``conn_swallow``)."""
        return self._swallow > 0

    # ---- frames ----

    def _skip(self, start: int, n: int) -> None:
        """Consume everything up to `start`, then skip `n` more bytes as they come."""
        avail = len(self._buf) - start
        take = min(n, avail)
        self._pos = start + take
        self._swallow = n - take

    def _refuse(self, start: int, n: int, cmd: Any) -> Any:
        """`_skip`, then `cmd` (a refusal): at once if the skipped bytes are all in, else
        once they are, as memcached answers a refused frame after its swallow (a client
        still sending a value over -I gets "Too large." when it has sent it all)."""
        self._skip(start, n)
        if self._swallow:
            self._after_swallow = cmd
            return NEED_DATA
        return cmd

    def _last(self, cmd: Any, reason: str) -> Any:
        self._hangup = reason
        return cmd

    def next_command(self) -> Any:
        """The next complete request as a command, or NEED_DATA. Raises CloseConnection
        after a command that memcached closes the connection behind, and on a bad magic."""
        if self._hangup:
            raise CloseConnection(self._hangup, notice=True)
        if self._swallow:
            return NEED_DATA  # a skip is pending only once the buffer is spent (feed skips)
        if self._after_swallow is not None:
            done, self._after_swallow = self._after_swallow, None
            return done
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < b.HEADER_SIZE:
            return NEED_DATA
        magic, opcode, keylen, extlen, _, _, bodylen, opaque, cas = _HEADER(buf, pos)
        if magic != b.REQUEST:
            raise CloseConnection(
                f"invalid magic {magic:#04x} (not a binary protocol request)", notice=True
            )
        body = pos + b.HEADER_SIZE
        if avail < b.HEADER_SIZE + extlen + keylen:
            # memcached judges a frame once its extras and key are in (at most 64 KB): a
            # client is never hung up on while it is still sending them
            return NEED_DATA
        if keylen > bodylen or keylen + extlen > bodylen:
            self._pos = body
            return self._last(
                b.BinInvalid(Error.UNKNOWN_COMMAND, opcode, opaque),
                f"binary frame with key and extras ({keylen}+{extlen}) past its body ({bodylen})",
            )
        base = b.QUIET.get(opcode, opcode)
        quiet = base != opcode
        if self.sasl and not self.sasl_state.authenticated:
            if base not in _SASL_OPCODES and base != b.VERSION:
                self._pos = body
                return self._last(
                    b.BinInvalid(Error.UNAUTHENTICATED, opcode, opaque),
                    f"binary opcode {opcode:#04x} before SASL authentication",
                )
        if keylen > KEY_MAX_LENGTH or not _lengths_ok(base, keylen, extlen, bodylen):
            self._pos = body
            return self._last(
                b.BinInvalid(Error.BIN_INVALID, opcode, opaque),
                f"binary protocol error (opcode {opcode:#04x})",
            )
        if base not in KNOWN:
            return self._refuse(
                body, bodylen, b.BinInvalid(Error.UNKNOWN_COMMAND, opcode, opaque, bodylen > 0)
            )
        if base in _SASL_OPCODES and not self.sasl:
            # memcached swallows what follows the key
            refusal = b.BinInvalid(Error.UNKNOWN_COMMAND, opcode, opaque, bodylen > keylen)
            return self._refuse(body, bodylen, refusal)
        # the extras and the key are in
        kstart = body + extlen
        vstart = kstart + keylen
        key = bytes(buf[kstart:vstart])
        vlen = bodylen - extlen - keylen
        if base in (b.SET, b.ADD, b.REPLACE, b.APPEND, b.PREPEND):
            if extlen:
                flags, exptime = _FLAGS_EXPTIME(buf, body)
            else:
                flags = exptime = 0
            if item_total_size(keylen, flags, vlen, self.cas_enabled) > self.item_size_max:
                mode = _STORE_MODE.get(base, b"append")
                return self._refuse(vstart, vlen, b.BinTooLarge(mode, key, opcode, opaque))
            end = vstart + vlen
            if not self.cas_enabled:
                cas = 0  # -C: memcached's ITEM_set_cas does nothing, the store is plain
            klass: type[b.BinSet]
            if base == b.APPEND or base == b.PREPEND:
                klass = b.BinAppend if base == b.APPEND else b.BinPrepend
                exptime = 0
            else:
                klass = b.BinCas if cas else _STORE_CLASS[base]
            if len(buf) < end:
                if vlen < self.receive_min:
                    return NEED_DATA
                # a large value still arriving: the server receives it into place (`take`)
                self._pos = vstart
                store = klass(key, flags, _exptime(exptime), b"", opcode, opaque, quiet, cas)
                return c.Incoming(store, vlen, 0)
            value = bytes(buf[vstart:end])
            self._pos = end
            return klass(key, flags, _exptime(exptime), value, opcode, opaque, quiet, cas)
        if base == b.CONFIG_SET:
            if vlen > self.item_size_max:
                refusal = b.BinInvalid(Error.TOO_LARGE, opcode, opaque, True)
                return self._refuse(vstart, vlen, refusal)
            end = vstart + vlen
            if len(buf) < end:
                return NEED_DATA
            data = bytes(buf[vstart:end])
            self._pos = end
            flags = _EXPTIME(buf, body)[0] if extlen == 4 else 0
            return b.BinConfigSet(key, flags, data, opaque)
        if base in (b.SASL_AUTH, b.SASL_STEP):
            if keylen > SASL_MECH_MAX:
                refusal = b.BinInvalid(Error.BIN_INVALID, opcode, opaque, True)
                return self._refuse(vstart, vlen, refusal)
            if vlen > SASL_DATA_MAX:
                refusal = b.BinInvalid(Error.BIN_NO_MEMORY, opcode, opaque, True)
                return self._refuse(vstart, vlen, refusal)
            end = vstart + vlen
            if len(buf) < end:
                return NEED_DATA
            data = bytes(buf[vstart:end])
            self._pos = end
            return b.BinSaslAuth(key, data, self.sasl_state, opcode, opaque)
        # the rest have no value: whatever body follows the key is skipped
        self._skip(vstart, vlen)
        if base == b.GET or base == b.GETK:
            return _GET_CLASS[base](key, opcode, opaque, quiet)
        if base in (b.GAT, b.GATK, b.TOUCH):
            (exptime,) = _EXPTIME(buf, body)
            return _GAT_CLASS[base](key, _exptime(exptime), opcode, opaque, quiet)
        if base == b.DELETE:
            return b.BinDelete(key, opcode, opaque, quiet, cas)
        if base == b.INCREMENT or base == b.DECREMENT:
            delta, initial, exptime = _INCR(buf, body)
            vivify = None if exptime == NO_CREATE else _exptime(exptime)
            return b.BinIncr(
                key, delta, initial, vivify, base == b.INCREMENT, opcode, opaque, quiet, cas
            )
        if base == b.FLUSH:
            delay = _exptime(_EXPTIME(buf, body)[0]) if extlen else 0
            return b.BinFlush(delay, opcode, opaque, quiet)
        if base == b.NOOP:
            return b.BinNoop(opaque)
        if base == b.VERSION:
            return b.BinVersion(opaque)
        if base == b.QUIT:
            return b.BinQuit(opcode, opaque, quiet)
        if base == b.STAT:
            group = _stats_group(key)
            if group is None:
                return b.BinInvalid(Error.DETAIL_USAGE, b.STAT, opaque)  # "Not found"
            return b.BinStats(group, opaque)
        if base == b.CONFIG_GET:
            return b.BinConfigGet(key, opaque)
        if base == b.CONFIG_DELETE:
            return b.BinConfigDelete(key, opaque)
        return b.BinSaslList(self.sasl_state, opaque)  # SASL_LIST_MECHS: the last one KNOWN leaves


def _stats_group(key: bytes) -> list[bytes] | None:
    """The stats group a STAT key names, matched as memcached's process_bin_stat and
    get_stats match it: ``reset``, ``settings`` and ``detail <dump|on|off>`` by their first
    bytes (``resetx`` is ``reset``), the others whole; None for a key it does not know
    ("Not found": ``conns`` and ``cachedump`` are text-only in memcached). mcached's own
    ``latency`` and ``cluster`` are served too."""
    if not key:
        return []
    for word in (b"reset", b"settings"):
        if key.startswith(word):
            return [word]
    if key.startswith(b"detail"):
        for sub in (b" dump", b" on", b" off"):
            if key.startswith(sub, 6):
                return [b"detail", sub[1:]]
        return None
    if key in _BIN_STATS_GROUPS:
        return [key]
    return None


_BIN_STATS_GROUPS = frozenset(
    (b"items", b"slabs", b"sizes", b"sizes_enable", b"sizes_disable", b"latency", b"cluster")
)


# ---- protocol selection (memcached.c try_read_command_negotiate) ----

AUTO = "auto"
ASCII = "ascii"
BINARY = "binary"


class Negotiator:
    """A connection's parser until its first byte arrives: 0x80 (a binary request's magic)
    picks the binary parser, anything else the text one (``-B auto``, memcached's default).
    ``-B ascii`` hangs up on a binary request at once, saying why, rather than read its
    header as a text line and leave the client waiting; ``-B binary`` (and ``-S``) hangs up
    on anything but a binary request.

    The chosen parser is handed to `adopt` (the connection then talks to it directly, so the
    choice costs nothing per request); without one (a UDP datagram), the negotiator passes
    every call on."""

    __slots__ = ("mode", "make_text", "make_binary", "chosen", "adopt", "_refused", "_auth")

    def __init__(
        self,
        mode: str,
        make_text: Callable[[], Parser],
        make_binary: Callable[[], BinaryParser],
        auth: bool = False,
    ) -> None:
        self.mode = mode
        self.make_text = make_text
        self.make_binary = make_binary
        self.chosen: Parser | BinaryParser | None = None
        self.adopt: Callable[[Any], None] | None = None
        self._refused = ""
        self._auth = auth  # the parser to come starts unauthenticated (-Y, -S)

    def feed(self, data: bytes) -> bool:
        if self.chosen is None and not self._refused:
            if not data:
                return True
            if data[0] == b.REQUEST:
                if self.mode == ASCII:
                    self._refused = "binary protocol request on an ascii-only port (-B ascii)"
                    return True
                self.chosen = self.make_binary()
            elif self.mode == BINARY:
                self.chosen = self.make_binary()  # which hangs up on the bad magic
            else:
                self.chosen = self.make_text()
            if self.adopt is not None:
                self.adopt(self.chosen)
        if self.chosen is None:
            return False
        return self.chosen.feed(data)

    def next_command(self) -> Any:
        if self.chosen is not None:
            return self.chosen.next_command()
        if self._refused:
            raise CloseConnection(self._refused, notice=True)
        return NEED_DATA

    def take(self, n: int) -> bytes | bytearray:
        if self.chosen is None:
            return b""
        return self.chosen.take(n)

    def release(self) -> None:
        # (at its connection's close) a connection closed before its first byte, or
        # refused it, still has this negotiator as its parser, and `adopt` is a method of
        # the connection: a cycle, which only the garbage collector would free
        self.adopt = None
        if self.chosen is not None:
            self.chosen.release()

    def compact(self) -> None:
        if self.chosen is not None:
            self.chosen.compact()

    @property
    def at_end(self) -> bool:
        return self.chosen.at_end if self.chosen is not None else False

    @property
    def buffered(self) -> int:
        return self.chosen.buffered if self.chosen is not None else 0

    @property
    def authenticating(self) -> bool:
        return self.chosen.authenticating if self.chosen is not None else self._auth

    @property
    def in_data_block(self) -> bool:
        return self.chosen.in_data_block if self.chosen is not None else False

    @property
    def swallowing(self) -> bool:
        return self.chosen.swallowing if self.chosen is not None else False


#: what a connection's parser may be
AnyParser = Parser | BinaryParser | Negotiator
