"""The request parser: ``feed(bytes)``, then ``next_command()`` until it says `NEED_DATA`.

The parser owns the framing of memcached's text protocol (``proto_text.c`` in memcached 1.6):

* A command line ends with ``\\n``; a ``\\r`` before it is dropped, so telnet's and some
  clients' bare ``\\n`` work. Tokens are separated by one or more spaces; a NUL byte ends the
  line early (memcached tokenizes a C string).
* Storage commands are followed by a data block of exactly the declared length plus
  ``\\r\\n``. A block that does not end in ``\\r\\n`` is `BadDataChunk`; the bytes after the
  declared length + 2 are read as the next command, as memcached does.
* A value that cannot fit in an item of ``-I`` bytes (memcached counts its item header, the key
  and the CAS field against ``-I``) becomes `TooLarge` and its data block is swallowed without
  being buffered: the connection survives and memory does not grow.
* More than 2048 bytes without a newline closes the connection, unless the line is a ``get`` or
  ``gets`` (multigets may be long); those are capped at `MAX_MULTIGET_LINE`.

* The meta commands (``mg ms md ma mn me``) are parsed as memcached 1.6.18's
  ``process_m*_command`` reads them: a key, (``ms``) a data length, then single-character
  flags, some with a token (``T30``, ``Oabc``), each allowed once. The flags are read here
  once (`_meta_flags`, memcached's ``_meta_flag_preparse``) into the command; an error in
  them is memcached's error line. ``ms`` reads its data block as a storage command does, and
  swallows it when its flags are in error.

* With ``-Y`` (``Parser(auth=True)``) a connection starts unauthenticated: only memcached's
  ``set <key> <flags> <exptime> <n>`` + ``<user> <password>`` exchange is parsed, into `Auth`;
  every other line is ``CLIENT_ERROR unauthenticated``. The handler checks the credentials
  and calls `authenticated()`; the full protocol follows on the same buffer.

Errors that memcached answers with a line come back as `Invalid` commands naming the `Error`
(the renderer writes it, or hides it under ``noreply``); input that memcached hangs up on
raises `CloseConnection`.

Rule: the parser never holds more than one line or one data block beyond what the caller has
not yet taken, plus what the last ``feed()`` brought. With ``receive_min`` (the daemon's
parsers) a data block of that size or more that is still arriving is not held at all: the
command comes back as `Incoming` and the server receives the value itself (`take` hands it
what was already buffered), so a block held here is under ``receive_min`` bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Final

from mcached.cnum import decimal, int32, safe_strtod, safe_strtoul
from mcached.errors import CloseConnection
from mcached.protocol import commands as c
from mcached.protocol.outcomes import Error


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()

KEY_MAX_LENGTH = 250
BUFFER_SWITCH = 64 * 1024  # past this many unconsumed bytes, accumulate in a bytearray
MAX_LINE = 2048  # memcached: a line this long without "\n" must be a multiget, or we hang up
MAX_MULTIGET_LINE = 1024 * 1024  # our cap for a multiget line (memcached's grows unbounded)
# memcached reads into a 16 KB buffer (READ_BUFFER_SIZE): a line whose "\n" lies this far from
# its start never fits in it, so whatever the reads, memcached meets it as over MAX_LINE
# without a newline and hangs up (on a get or gets, it grows the buffer instead)
READ_BUFFER = 16384
# A get or gets line longer than this is taken a part of at most this many bytes at a time
# (`Parser._long_line`): its keys as one list would take ~19x the line (a 1 MB line of
# two-byte keys is 333,333 of them, `handlers.keys_held`). Past a UDP datagram's size, so
# a datagram's line is always one command.
LINE_PART = 64 * 1024
# a space, then a key over 250 bytes: the end of what a long line's get serves
_BAD_KEY = re.compile(rb" [^ ]{%d}" % (KEY_MAX_LENGTH + 1))
# A storage command's value (set, add, replace, cas, append, prepend, ms) of this size or more
# that has not fully arrived with its line is not buffered here (with
# ``receive_min=RECEIVE_MIN``, as the daemon's parsers have it): the parser answers
# `Incoming`, and the server receives the value into the cache's memory, so what a connection
# holds of a value in flight stays below this.
RECEIVE_MIN = 16 * 1024
# memcached's item header (struct _stritem on 64-bit) and its optional CAS field: counted with
# the key (plus its NUL) and the value (plus "\r\n") against -I; flags take 4 bytes when set.
ITEM_HEADER_SIZE = 48
ITEM_CAS_SIZE = 8
ITEM_FLAGS_SIZE = 4

UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

AUTH_BLOCK_MAX = 16384  # memcached's 16 KB read buffer: a longer auth block resets the link

# memcached's tokenize_command reads at most MAX_TOKENS - 1 (23) tokens of a line and leaves
# the rest unread; only the retrievals (_WHOLE_LINE) go on reading their keys from there. So
# for any other verb a 24th token and those after it do not exist: the last token a command
# sees (where set_noreply_maybe looks for "noreply", where the HTTP test looks) is the 23rd.
MAX_TOKENS = 24
_WHOLE_LINE = frozenset((b"get", b"gets", b"gat", b"gats", b"bget"))


def _http(tokens: list[bytes]) -> bool:
    """Whether memcached hangs up on this line of an unknown verb: it tests the line's last
    token for "HTTP/" only in its last branch, which a verb of one byte, of two bytes
    starting "m" (the meta commands'), or starting with one of "gsacidt" (its branches for
    get..., set/stats/shutdown/slabs, add/append, cas/cache_memlimit, incr,
    delete/decr, touch) never reaches: those are ERROR."""
    verb = tokens[0]
    if len(verb) < 2 or verb[0] in b"gsacidt" or (len(verb) == 2 and verb[0] == _M):
        return False
    return tokens[-1].startswith(b"HTTP/")


# a storage command waiting for its data block
_Pending = tuple[Callable[..., c.Command], bytes, int, int, int, int, bool, bytes]

_ERROR = c.Invalid(Error.UNKNOWN_COMMAND)
_Get = c.Get
_G, _M, _S = b"gms"  # Parser.lone: the first bytes of get, mg and set, as ints
_Set = c.Set
_FORMAT = c.Invalid(Error.BAD_FORMAT)
_UNAUTHENTICATED = c.Invalid(Error.UNAUTHENTICATED)
_AUTH_BAD_TERMINATION = c.Invalid(Error.AUTH_BAD_TERMINATION)
_AUTH_BAD_FORMAT = c.Invalid(Error.AUTH_BAD_FORMAT)
_NOREPLY = b"noreply"
_META_TOO_MANY = c.Invalid(Error.META_TOO_MANY_FLAGS)
_META_TOO_MANY_STORE = c.Invalid(Error.META_TOO_MANY_FLAGS_STORE)
_META_FLAG_BAD = c.Invalid(Error.META_FLAG_BAD)


def item_total_size(nkey: int, flags: int, vlen: int, cas_enabled: bool) -> int:
    """Bytes memcached charges an item of this shape (``item_make_header`` + CAS)."""
    total = ITEM_HEADER_SIZE + nkey + 1 + vlen + 2
    if flags:
        total += ITEM_FLAGS_SIZE
    if cas_enabled:
        total += ITEM_CAS_SIZE
    return total


# Parser.lone takes a set whose key and value add up to at most -I less this (an item of
# any flags and a CAS fits); one nearer the limit takes next_command(), which sizes it
_LONE_SET_MARGIN = item_total_size(0, 1, 0, True)


def plain_numbers(f: bytes, e: bytes, n: bytes) -> bool:
    """A storage line's flags, exptime and length as plain digits, under ten each: below
    2^31, which memcached's parsers take as they are (``int()`` reads them the same). The
    hot path's test; anything else takes memcached's parsers."""
    return (
        len(f) < 10 and len(e) < 10 and len(n) < 10 and f.isdigit() and e.isdigit() and n.isdigit()
    )


# ---- memcached's number parsers (util.c): strtoul and friends, then its extra checks ----


# strtol skips leading whitespace, and memcached's safe_strto* take the number when the byte
# after it is whitespace (isspace) or the end, whatever follows: "5\r" (a line that ended
# "\r\r\n": only one "\r" is cut), "\t5", "5\tx".
_STRTOL = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)(?:[ \t\n\v\f\r][\s\S]*)?")


def _digits(tok: bytes) -> int | None:
    """An optionally signed decimal, as safe_strtol reads a token; None if not a number."""
    if tok.isdigit():
        return decimal(tok)
    m = _STRTOL.fullmatch(tok)
    return decimal(m.group(1)) if m else None


def parse_uint64(tok: bytes) -> int | None:
    """``safe_strtoull``: 0..2^64-1. strtoull negates a minus-signed number modulo 2^64, and
    safe_strtoull refuses the result only when it reads as negative in 64 bits, so "-1" is
    refused but "-18446744073709551615" is 1 (and "-0" is 0)."""
    v = _digits(tok)
    if v is None:
        return None
    if v < 0:
        if v < -UINT64_MAX:
            return None  # ERANGE
        v &= UINT64_MAX
    elif v > UINT64_MAX:
        return None
    if v > INT64_MAX and b"-" in tok:
        return None
    return v


def parse_uint32(tok: bytes) -> int | None:
    """Item flags: parsed as 64 bits, then truncated to the 32 memcached 1.6 stores
    (4294967296 is stored as 0; -1 and 2^64 are refused)."""
    v = parse_uint64(tok)
    if v is None:
        return None
    return v & UINT32_MAX


def strtoul32(tok: bytes) -> int | None:
    """``safe_strtoul`` into a uint32_t (the ``-Y`` exchange's length, ``stats
    cachedump``'s numbers, class ids): `mcached.cnum`."""
    return safe_strtoul(tok.decode("latin-1"))


MAX_CLASS_ID = 63  # memcached's MAX_NUMBER_OF_SLAB_CLASSES - 1: the ids a command may name


def class_ids(tok: bytes) -> set[int] | None:
    """``lru_crawler crawl|metadump``'s list of class ids, read as memcached reads it: split
    on commas with empty pieces skipped (strtok_r), each a `strtoul32` from 1 to
    `MAX_CLASS_ID` whether the class holds pages or not; None if one is not. An empty set
    (``,``) names none."""
    ids = set()
    for piece in tok.split(b","):
        if piece:
            i = strtoul32(piece)
            if i is None or not 1 <= i <= MAX_CLASS_ID:
                return None
            ids.add(i)
    return ids


def strtod(tok: bytes) -> float | None:
    """``safe_strtod`` (``slabs automove ratio <r>``, ``lru tune``): `mcached.cnum`."""
    return safe_strtod(tok.decode("latin-1"))


def parse_int32(tok: bytes) -> int | None:
    """``safe_strtol`` into an int32: strtol's 64-bit range, then truncated to 32 bits as
    memcached 1.6 does (a length of 4294967296 reads as 0, 2147483648 as negative)."""
    v = _digits(tok)
    if v is None or v > INT64_MAX or v < INT64_MIN:
        return None
    return ((v + 2**31) & UINT32_MAX) - 2**31


class Buffered:
    """What a parser holds of the bytes received: ``_buf`` from ``_pos`` on (the text and
    the binary parsers both)."""

    __slots__ = ("_buf", "_pos")
    _buf: bytes | bytearray
    _pos: int

    @property
    def buffered(self) -> int:
        """Bytes held that no command has consumed yet."""
        return len(self._buf) - self._pos

    def release(self) -> None:
        """The connection is closed: the bytes it held go now, not when the garbage collector
        gets to the connection (the objects of a connection refer to each other)."""
        self._buf = b""
        self._pos = 0

    def compact(self) -> None:
        """Let go of the bytes commands have consumed, which the buffer holds until the next
        read replaces it: a long multiget's line (up to `MAX_MULTIGET_LINE`) while its reply
        streams, and nothing is read. What follows it is kept (copied)."""
        pos = self._pos
        if pos:
            buf = self._buf
            self._buf = buf[pos:] if pos < len(buf) else b""
            self._pos = 0

    def take(self, n: int) -> bytes | bytearray:
        """Up to `n` of the buffered bytes, consumed: the start of an `Incoming` value, which
        the server receives itself."""
        buf = self._buf
        pos = self._pos
        end = min(len(buf), pos + n)
        data = buf[pos:end]
        if end >= len(buf):
            self._buf = b""  # let the read buffer go now: the value may take long to come
            self._pos = 0
        else:
            self._pos = end
        return data


class Parser(Buffered):
    """One per connection. Not thread-safe: a connection lives on one worker."""

    __slots__ = (
        "_pending",
        "_swallow",
        "_after_swallow",
        "item_size_max",
        "cas_enabled",
        "_auth",
        "_auth_len",
        "_framed",
        "_part",
        "at_end",
        "receive_min",
    )

    def __init__(
        self,
        item_size_max: int = 1024 * 1024,
        cas_enabled: bool = True,
        auth: bool = False,
        receive_min: int | None = None,
    ) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        # a storage command waiting for its data block: (build, key, flags, exptime, vlen,
        # cas_unique, noreply, verb)
        self._pending: _Pending | None = None
        self._swallow = 0
        self._after_swallow: c.Command | None = None
        self.item_size_max = item_size_max
        self.cas_enabled = cas_enabled
        # values from this size on that are still arriving become `Incoming` (None: never;
        # the daemon's parsers use RECEIVE_MIN)
        self.receive_min = receive_min if receive_min is not None else INT32_MAX
        # -Y: until granted, only the authentication exchange is parsed (see _next_auth)
        self._auth = auth
        self._auth_len = -1  # the exchange's data block length (+2), once its line is read
        # Set whenever one of the four states above may be: next_command() then leaves its
        # one-line fast path for _next_framed(), which clears it once none is left. One
        # attribute test per command instead of four.
        self._framed = auth
        # a long get line under way (`_long_line`): (its parts' command, its last part's,
        # bytes of its keys left from _pos, bytes after them to the next line, whether a key
        # over 250 bytes ends them, whether a part had keys)
        self._part: tuple[type[c.Get], type[c.Get], int, int, bool, bool] | None = None
        # True when the last command took the last buffered byte and left no state: the
        # next next_command() would only say NEED_DATA, and the server skips that call
        # (~5 % of a get). Set on the one-line fast path, cleared by feed(); False
        # otherwise, which only means "ask".
        self.at_end = False

    # ---- buffer ----

    def feed(self, data: bytes) -> bool:
        """Add received bytes. Swallowed data (an oversized value) is dropped right here.

        True when the parser was at rest -- nothing buffered, no data block or login under
        way -- so these bytes begin a new request: the server times slow requests from there.
        """
        # Hot path: a request usually arrives whole in one read, so when everything before
        # it was consumed the received bytes become the buffer as they are (no copy); lines
        # and values are then single slices of it.
        self.at_end = False
        if self._pos >= len(self._buf) and not self._framed:
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return True
        fresh = True
        if self._swallow:
            fresh = False
            n = min(self._swallow, len(data))
            self._swallow -= n
            data = data[n:]
            if not data:
                return False
        # Only a remainder that grows past BUFFER_SWITCH (a large value arriving in pieces)
        # accumulates in a bytearray, so appending stays linear.
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return fresh and self._pending is None and self._auth_len < 0
        if type(buf) is bytearray:
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
        return False

    def release(self) -> None:
        super().release()
        self._part = None

    @property
    def authenticating(self) -> bool:
        """-Y: the connection has not authenticated yet."""
        return self._auth

    @property
    def in_data_block(self) -> bool:
        """A command line was read and its data block is still arriving (or being
        swallowed): memcached's ``conn_nread``/``conn_swallow``, which its idle_timeout
        leaves alone."""
        return self._pending is not None or self._swallow > 0 or self._auth_len >= 0

    @property
    def swallowing(self) -> bool:
        """A refused value's bytes are being skipped (memcached's ``conn_swallow``)."""
        return self._swallow > 0

    # ---- commands ----

    def next_command(self) -> c.Command | _NeedData:
        """The next complete command, or NEED_DATA. Raises CloseConnection on hostile input."""
        # Hot path: no data block pending, nothing to swallow, not authenticating -- one
        # line, split and dispatched right here (every attribute read and call saved is paid
        # back per request). Everything else goes through _next_framed().
        if self._framed:
            return self._next_framed()
        buf = self._buf
        pos = self._pos
        nl = buf.find(b"\n", pos)
        if nl < 0:
            if len(buf) - pos > MAX_LINE:
                self._check_partial_line()
            return NEED_DATA
        if nl - pos >= READ_BUFFER:
            start = self._multiget_line()
            if start < 0:
                raise CloseConnection(f"line over {READ_BUFFER} bytes")  # see READ_BUFFER
            if nl - pos > LINE_PART:
                return self._long_line(start, nl)
        end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl  # drop a "\r"
        line = buf[pos:end]
        if type(line) is not bytes:  # a bytearray buffer (see feed): keys must be bytes
            line = bytes(line)
        self._pos = nl + 1
        # `0 in line` looks for the NUL byte as an int: `b"\0" in line` first tries (and
        # fails) to read its operand as one, and building that TypeError cost ~4% of a get
        if 0 in line:
            line = line[: line.index(b"\0")]
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [t for t in tokens if t]
            if not tokens:
                return _ERROR
        elif len(tokens) == 2 and tokens[0] == b"get" and len(tokens[1]) <= KEY_MAX_LENGTH:
            self.at_end = nl + 1 >= len(buf)
            return _Get(tokens[1:])  # the commonest line of all, without the _get() call
        if len(tokens) >= MAX_TOKENS and tokens[0] not in _WHOLE_LINE:
            tokens = tokens[: MAX_TOKENS - 1]  # the rest is unread (see MAX_TOKENS)
        fn = _DISPATCH.get(tokens[0])
        if fn is None:
            if _http(tokens):
                raise CloseConnection("HTTP request on the memcached port")
            return _ERROR
        cmd = fn(self, tokens)
        if cmd is None:  # a storage header: its data block comes next
            return self._next_framed()
        self.at_end = self._pos >= len(self._buf) and not self._framed
        return cmd

    def lone(self) -> c.Command | None:
        """Right after feed() at rest: when the buffer is exactly one ``get <key>...`` or
        ``mg <key> v`` line, or one plain ``set`` with its data block (`_lone_set`), that
        command (the one next_command() would return), the buffer consumed; otherwise None,
        nothing consumed.

        Hot path: under a request-reply load most reads bring one such line. Recognised
        from its ends it costs a third of next_command(), and the server serves it without
        its turn loop (Connection.on_readable). Anything unusual -- a NUL, a second line, a
        doubled space, a bare LF, a key over 250 bytes -- is left to next_command()."""
        buf = self._buf
        first = buf[0] if buf else 0  # an int: any other request pays two comparisons
        if first == _G and buf[:4] == b"get ":
            key = buf[4:-2]
            meta = False
        elif first == _M and buf[:3] == b"mg " and buf[-4:] == b" v\r\n":
            key = buf[3:-4]
            meta = True
        elif first == _S:
            return self._lone_set(buf)
        else:
            return None
        if self._framed or self._pos:  # a login, data block or swallow under way
            return None
        if buf[-2:] != b"\r\n" or 10 in key or 0 in key:  # a second line; ints: see
            return None  # next_command's NUL test
        # fed at rest, the buffer is the received bytes object: the keys are bytes
        if 32 in key:  # a space: a multiget (never an mg)
            if len(buf) > LINE_PART:  # (a TLS read can be that long) taken in parts
                return None
            keys = key.split(b" ")
            if meta or b"" in keys or max(map(len, keys)) > KEY_MAX_LENGTH:
                return None  # a doubled space, a key over 250 bytes
            cmd: c.Command = _Get(keys)  # type: ignore[arg-type]
        elif not 0 < len(key) <= KEY_MAX_LENGTH:
            return None
        else:
            cmd = c.MetaValue(key) if meta else _Get([key])  # type: ignore[list-item,arg-type]
        self._pos = len(buf)
        self.at_end = True
        return cmd

    def _lone_set(self, buf: bytes | bytearray) -> c.Command | None:
        """`lone` for a read that is one ``set <key> <flags> <exptime> <bytes>`` and its
        whole data block: the Set next_command() would make, from one split of the line
        (next_command, _storage_header and _data_block take 1.9 us for it; this, 1.0).
        Anything else -- noreply, a number of ten digits or more or not plain digits, a
        doubled space, a NUL, a bare LF, a block still arriving or followed by more, an
        item near -I, a login under way -- is left to next_command()."""
        if self._framed or self._pos or type(buf) is not bytes:  # see lone: keys are bytes
            return None
        nl = buf.find(b"\n")
        if nl < 0 or buf[nl - 1] != 13:
            return None
        tokens = buf[: nl - 1].split(b" ")
        if len(tokens) != 5 or tokens[0] != b"set":
            return None
        _, key, f, e, n = tokens
        if not (0 < len(key) <= KEY_MAX_LENGTH and 0 not in key and plain_numbers(f, e, n)):
            return None
        vlen = int(n)
        end = nl + 1 + vlen
        if (
            end + 2 != len(buf)
            or buf[end] != 13
            or buf[end + 1] != 10
            or len(key) + vlen > self.item_size_max - _LONE_SET_MARGIN
        ):
            return None
        self._pos = end + 2
        self.at_end = True
        return _Set(key, int(f), int(e), buf[nl + 1 : end])

    def _next_framed(self) -> c.Command | _NeedData:
        """next_command() in the other states: authentication, swallowing an oversized
        value, a data block under way. Once none is left, plain lines resume."""
        cmd = self._framed_step()
        self._framed = (
            self._pending is not None
            or self._swallow > 0
            or self._auth
            or self._after_swallow is not None
            or self._part is not None
        )
        return cmd

    def _framed_step(self) -> c.Command | _NeedData:
        if self._auth:
            return self._next_auth()
        if self._part is not None:
            return self._line_part()
        if self._swallow:
            n = min(self._swallow, len(self._buf) - self._pos)
            self._pos += n
            self._swallow -= n
            if self._swallow:
                return NEED_DATA
        if self._after_swallow is not None:
            done, self._after_swallow = self._after_swallow, None
            return done
        if self._pending is not None:
            cmd = self._data_block()
            return NEED_DATA if cmd is None else cmd
        # No state left: next_command() takes the next line (and comes back here only if
        # that line sets a state again, so this never loops).
        self._framed = False
        return self.next_command()

    def _multiget_line(self) -> int:
        """Where the get or gets starts (after at most 100 spaces) when the line at the
        parser's place is one, the one kind memcached lets run past its read buffer; else
        -1."""
        raw = bytes(self._buf[self._pos : self._pos + 110])
        head = raw.lstrip(b" ")
        spaces = len(raw) - len(head)
        if spaces <= 100 and (head.startswith(b"get ") or head.startswith(b"gets ")):
            return self._pos + spaces
        return -1

    def _long_line(self, start: int, nl: int) -> c.Command:
        """A get or gets line over `LINE_PART` bytes (its verb at `start`, its end at `nl`):
        its first part now, the others as the server asks for the next command
        (`_line_part`). Each part is
        served as a get of its keys, the next one parsed once the server takes it, which it
        does not while a long reply waits for the client: so a connection holds the line's
        bytes and one part's keys, not the whole line's keys (memcached walks its line in
        place, key by key). A key over 250 bytes ends the line's get: the keys before it are
        looked up and the error sent alone, as `_cut` does for a line read whole."""
        buf = self._buf
        pos = self._pos
        end = nl - 1 if buf[nl - 1] == 13 else nl
        nul = buf.find(b"\0", pos, end)  # a NUL ends the line (see next_command)
        if nul >= 0:
            end = nul
        keys_at = buf.index(b" ", start)
        gets = keys_at - start == 4
        bad = _BAD_KEY.search(buf, keys_at, end)
        stop = end if bad is None else bad.start()
        self._part = (
            c.GetsPart if gets else c.GetPart,
            c.Gets if gets else c.Get,
            stop - keys_at,
            nl + 1 - stop,
            bad is not None,
            False,
        )
        self._pos = keys_at
        self._framed = True
        return self._line_part()

    def _line_part(self) -> c.Command:
        """The next part of a long get line (`_long_line`): its keys up to the last space
        within `LINE_PART` bytes (parts of spaces alone are skipped). Every part but the
        last is a `GetPart` (or `GetsPart`); the last is a plain `Get` (`Gets`), whose reply
        ends with END. Before a key over 250 bytes, each part is `Invalid`: looked up for
        its effects and counts, answered by nothing but the last part's error."""
        assert self._part is not None
        part, last, left, after, bad, had_keys = self._part
        buf = self._buf
        pos = self._pos
        while True:
            if left > LINE_PART:
                # a space lies within reach: no key before `stop` is over 250 bytes
                cut = buf.rfind(b" ", pos, pos + LINE_PART)
                assert cut >= pos
                nxt = cut + 1
            else:
                cut = nxt = pos + left
            chunk = buf[pos:cut]
            keys = (chunk if type(chunk) is bytes else bytes(chunk)).split(b" ")
            if b"" in keys:
                keys = [k for k in keys if k]
            left -= nxt - pos
            pos = nxt
            if keys or not left:
                break
        if left:
            self._pos = pos
            self._part = (part, last, left, after, bad, True)
            if bad:
                return c.Invalid(Error.BAD_FORMAT, noreply=True, before=last(keys))
            return part(keys)
        self._part = None
        self._pos = pos + after
        if bad:
            return c.Invalid(Error.BAD_FORMAT, before=last(keys) if keys else None)
        if not keys and not had_keys:
            return _ERROR  # "get" and spaces: no key at all
        return last(keys)

    def _check_partial_line(self) -> None:
        size = len(self._buf) - self._pos
        if size <= MAX_LINE:
            return
        if self._multiget_line() < 0:
            raise CloseConnection(f"line over {MAX_LINE} bytes without a newline")
        if size > MAX_MULTIGET_LINE:
            raise CloseConnection(f"multiget line over {MAX_MULTIGET_LINE} bytes")

    def _data_block(self) -> c.Command | None:
        assert self._pending is not None
        build, key, flags, exptime, vlen, cas_unique, noreply, verb = self._pending
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < vlen + 2:
            return None
        self._pending = None
        end = pos + vlen
        self._pos = end + 2
        if buf[end : end + 2] != b"\r\n":
            return c.BadDataChunk(verb, key, noreply, flags, vlen)
        value = buf[pos:end]
        if type(value) is not bytes:  # a bytearray buffer (a value that came in pieces)
            value = bytes(value)
        if build is c.Cas:
            return c.Cas(key, flags, exptime, value, cas_unique, noreply)
        return build(key, flags, exptime, value, noreply)

    # ---- verbs ----

    @staticmethod
    def _cut(keys: list[bytes], make: Callable[[list[bytes]], c.Get | c.Gat]) -> c.Invalid:
        """A retrieval with a key over 250 bytes: an error, after the keys before it
        (`c.Invalid.before`)."""
        n = next(i for i, k in enumerate(keys) if len(k) > KEY_MAX_LENGTH)
        return c.Invalid(Error.BAD_FORMAT, before=make(keys[:n])) if n else _FORMAT

    def _get(self, tokens: list[bytes]) -> c.Command:
        if len(tokens) < 2:
            return _ERROR
        keys = tokens[1:]
        if len(keys) == 1:
            if len(keys[0]) > KEY_MAX_LENGTH:
                return _FORMAT
        elif max(map(len, keys)) > KEY_MAX_LENGTH:
            return self._cut(keys, c.Get)
        return c.Get(keys)

    def _gets(self, tokens: list[bytes]) -> c.Command:
        if len(tokens) < 2:
            return _ERROR
        keys = tokens[1:]
        if max(map(len, keys)) > KEY_MAX_LENGTH:
            return self._cut(keys, c.Gets)
        return c.Gets(keys)

    def _gat(self, tokens: list[bytes]) -> c.Command:
        if len(tokens) < 2:
            return _ERROR  # "gat 10" with no key is a valid, empty request (END)
        exptime = parse_int32(tokens[1])
        if exptime is None:
            return c.Invalid(Error.BAD_EXPTIME)
        keys = tokens[2:]
        kind = c.Gat if tokens[0] == b"gat" else c.Gats
        if keys and max(map(len, keys)) > KEY_MAX_LENGTH:
            return self._cut(keys, partial(kind, exptime))
        return kind(exptime, keys)

    _STORAGE: dict[bytes, Callable[..., c.Command]] = {
        b"set": c.Set,
        b"add": c.Add,
        b"replace": c.Replace,
        b"append": c.Append,
        b"prepend": c.Prepend,
        b"cas": c.Cas,
    }

    def _storage(self, tokens: list[bytes]) -> c.Command | None:
        n = len(tokens)
        if n != 5 and n != 6:
            return _ERROR
        return self._storage_header(tokens, 0)

    def _cas(self, tokens: list[bytes]) -> c.Command | None:
        n = len(tokens)
        if n != 6 and n != 7:
            return _ERROR
        cas_unique = parse_uint64(tokens[5])
        if cas_unique is None:
            return c.Invalid(Error.BAD_FORMAT, tokens[-1] == _NOREPLY)
        return self._storage_header(tokens, cas_unique)

    def _storage_header(self, tokens: list[bytes], cas_unique: int) -> c.Command | None:
        noreply = tokens[-1] == _NOREPLY
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH:
            return c.Invalid(Error.BAD_FORMAT, noreply)
        f, e, n = tokens[2], tokens[3], tokens[4]
        if plain_numbers(f, e, n):
            flags: int | None = int(f)
            exptime: int | None = int(e)
            vlen: int | None = int(n)
        else:
            flags = parse_uint32(f)
            exptime = parse_int32(e)
            vlen = parse_int32(n)
        if flags is None or exptime is None or vlen is None or vlen < 0 or vlen > INT32_MAX - 2:
            return c.Invalid(Error.BAD_FORMAT, noreply)
        verb = tokens[0]
        if item_total_size(len(key), flags, vlen, self.cas_enabled) > self.item_size_max:
            # memcached answers once the whole block has been swallowed
            return self._swallow_block(vlen + 2, c.TooLarge(verb, key, noreply))
        build = self._STORAGE[verb]
        if vlen >= self.receive_min and len(self._buf) - self._pos < vlen + 2:
            # a large value still arriving: the server receives it into place (`take`)
            if build is c.Cas:
                store: c.Command = c.Cas(key, flags, exptime, b"", cas_unique, noreply)
            else:
                store = build(key, flags, exptime, b"", noreply)
            assert isinstance(store, c.Store)
            return c.Incoming(store, vlen)
        self._pending = (build, key, flags, exptime, vlen, cas_unique, noreply, verb)
        cmd = self._data_block()  # usually the block came with its line: done here
        if cmd is None:
            self._framed = True
        return cmd

    def _swallow_block(self, n: int, then: c.Command) -> c.Command | None:
        """Discard the next `n` bytes, then answer `then` (None while bytes are missing)."""
        avail = len(self._buf) - self._pos
        take = min(n, avail)
        self._pos += take
        self._swallow = n - take
        if self._swallow:
            self._after_swallow = then
            self._framed = True
            return None
        return then

    def _delete(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n < 2 or n > 4:
            return _ERROR
        noreply = False
        if n > 2:
            hold_is_zero = tokens[2] == b"0"
            noreply = tokens[-1] == _NOREPLY
            valid = (n == 3 and (hold_is_zero or noreply)) or (n == 4 and hold_is_zero and noreply)
            if not valid:
                return c.Invalid(Error.BAD_DELETE_FORMAT, noreply)
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return c.Invalid(Error.BAD_FORMAT, noreply)
        return c.Delete(tokens[1], noreply)

    def _arith(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n != 3 and n != 4:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return c.Invalid(Error.BAD_FORMAT, noreply)
        delta = parse_uint64(tokens[2])
        if delta is None:
            return c.Invalid(Error.BAD_DELTA, noreply)
        if tokens[0] == b"incr":
            return c.Incr(tokens[1], delta, noreply)
        return c.Decr(tokens[1], delta, noreply)

    def _touch(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n != 3 and n != 4:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        if len(tokens[1]) > KEY_MAX_LENGTH:
            return c.Invalid(Error.BAD_FORMAT, noreply)
        exptime = parse_int32(tokens[2])
        if exptime is None:
            return c.Invalid(Error.BAD_EXPTIME, noreply)
        return c.Touch(tokens[1], exptime, noreply)

    def _flush_all(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n > 3:
            return _ERROR
        noreply = n > 1 and tokens[-1] == _NOREPLY
        delay: int | None = 0
        if n != (2 if noreply else 1):
            delay = parse_int32(tokens[1])  # None: the handler answers the format error
        return c.FlushAll(delay, noreply)

    def _version(self, tokens: list[bytes]) -> c.Command:
        return c.Version()

    def _verbosity(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n != 2 and n != 3:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        level = parse_uint32(tokens[1])
        if level is None:
            # "verbosity noreply" lands here too, and noreply hides the error (memcached 1.6)
            return c.Invalid(Error.BAD_FORMAT, noreply)
        return c.Verbosity(level, noreply)

    def _quit(self, tokens: list[bytes]) -> c.Command:
        return c.Quit()

    def _shutdown(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n == 1:
            return c.ShutdownCmd(b"")
        if n == 2 and tokens[1] == b"graceful":
            return c.ShutdownCmd(b"graceful")
        return c.ShutdownCmd(None)

    def _stats(self, tokens: list[bytes]) -> c.Command:
        return c.Stats(tokens[1:])

    def _lru_crawler(self, tokens: list[bytes]) -> c.Command:
        if len(tokens) == 2 and tokens[1] in (b"enable", b"disable"):
            return c.LruCrawler([tokens[1], b""])
        if len(tokens) == 3 and tokens[1] in (b"sleep", b"tocrawl"):
            value = parse_uint32(tokens[2])  # safe_strtoul into a uint32_t
            if value is None:
                return _FORMAT
            if tokens[1] == b"sleep" and value > 1_000_000:
                return c.Invalid(Error.CRAWLER_SLEEP_RANGE)
            return c.LruCrawlerTune("lru_crawler_" + tokens[1].decode(), value)
        if len(tokens) != 3 or tokens[1] not in (b"metadump", b"crawl"):
            return _ERROR
        return c.LruCrawler(tokens[1:])

    def _slabs(self, tokens: list[bytes]) -> c.Command:
        """``slabs reassign <src> <dst>`` (exactly) and ``slabs automove <level> ...``, with
        memcached's token counts, number parsers and noreply (only automove takes it)."""
        n = len(tokens)
        if n == 4 and tokens[1] == b"reassign":
            return c.SlabsReassign(parse_int32(tokens[2]), parse_int32(tokens[3]))
        if n >= 3 and tokens[1] == b"automove":
            noreply = tokens[-1] == _NOREPLY
            if tokens[2] == b"ratio":
                ratio = strtod(tokens[3]) if n >= 4 else None
                if ratio is None:
                    return c.Invalid(Error.UNKNOWN_COMMAND, noreply)
                return c.SlabsAutomove(None, noreply, ratio)
            level = parse_uint32(tokens[2])  # safe_strtoul: 64 bits, kept modulo 2^32
            if level is None:
                return c.Invalid(Error.BAD_FORMAT, noreply)
            if level > 2:
                return c.Invalid(Error.UNKNOWN_COMMAND, noreply)
            return c.SlabsAutomove(level, noreply)
        return _ERROR

    def _lru(self, tokens: list[bytes]) -> c.Command:
        """``lru tune|mode|temp_ttl``, read as memcached's process_lru_command reads them:
        noreply, then each form's least token count and its numbers (safe_strtoul for the
        percentages, kept in a C int; safe_strtod for the factors; safe_strtol for the
        ttl), else ERROR."""
        n = len(tokens)
        if n < 2:
            return _ERROR
        noreply = tokens[-1] == _NOREPLY
        sub = tokens[1]
        if sub == b"tune" and n >= 6:
            hot, warm = parse_uint32(tokens[2]), parse_uint32(tokens[3])
            hot_factor, factor = strtod(tokens[4]), strtod(tokens[5])
            if hot is None or warm is None or hot_factor is None or factor is None:
                return c.Invalid(Error.UNKNOWN_COMMAND, noreply)
            if (hot + warm) & UINT32_MAX > 80:  # unsigned: it wraps
                return c.Invalid(Error.LRU_PCTS, noreply)
            if factor <= 0 or hot_factor <= 0:  # a NaN passes
                return c.Invalid(Error.LRU_FACTORS, noreply)
            values: tuple[tuple[str, object], ...] = (
                ("hot_lru_pct", int32(hot)),
                ("warm_lru_pct", int32(warm)),
                ("hot_max_factor", hot_factor),
                ("warm_max_factor", factor),
            )
            return c.Lru(values, False, noreply)
        if sub == b"mode" and n >= 3 and tokens[2] in (b"flat", b"segmented"):
            return c.Lru((("lru_segmented", tokens[2] == b"segmented"),), True, noreply)
        if sub == b"temp_ttl" and n >= 3:
            ttl = parse_int32(tokens[2])
            if ttl is not None:
                if ttl < 0:
                    return c.Lru((("temp_lru", False),), True, noreply)
                return c.Lru((("temp_lru", True), ("temporary_ttl", ttl)), True, noreply)
        return c.Invalid(Error.UNKNOWN_COMMAND, noreply)

    def _memlimit(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n != 2 and n != 3:
            return _ERROR
        return c.CacheMemlimit(parse_uint32(tokens[1]), tokens[-1] == _NOREPLY)

    def _refresh_certs(self, tokens: list[bytes]) -> c.Command:
        """``refresh_certs [noreply]``: reload the TLS certificates (other tokens ignored)."""
        return c.RefreshCerts(len(tokens) > 1 and tokens[-1] == _NOREPLY)

    def _watch(self, tokens: list[bytes]) -> c.Command:
        """``watch [<word>...]``. memcached's set_noreply_maybe applies, and then reads
        ``noreply`` as a word it does not know: its ERROR is hidden."""
        return c.Watch(tokens[1:], tokens[-1] == _NOREPLY)

    # ---- the meta commands: memcached 1.6.18's process_m*_command ----
    #
    # Each checks what memcached checks, in its order: enough tokens (else ERROR), the key's
    # length as sent (before any base64 decoding), the number of tokens, then the flags.

    def _mg(self, tokens: list[bytes]) -> c.Command:
        n = len(tokens)
        if n < 2:
            return _ERROR
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH:
            return _FORMAT
        if n == 2:
            return c.MetaGet(key, [])
        if n == 3 and tokens[2] == b"v":
            return c.MetaValue(key)  # the commonest meta request (see c.MetaValue)
        if n >= META_MAX_TOKENS:
            return _META_TOO_MANY
        flags = tokens[2:]
        # Hot path: flags that only ask for things to be returned (``mg <key> v``, ``s f t
        # c k q h l``), each once, need no reading beyond this.
        for tok in flags:
            if len(tok) != 1 or tok not in _MG_RETURN_ONLY:
                break
        else:
            if n == 3 or len(set(flags)) == n - 2:
                return c.MetaGet(key, flags, False, b"q" in flags, b"v" in flags)
        f = _meta_flags(key, flags)
        if isinstance(f, Error):
            return c.Invalid(f)
        if not _opaque_ok(flags):
            # memcached finds it as it writes the reply, having looked up (and changed) no
            # more than the flags before it; here before anything: no hit, win or touch
            return c.Invalid(Error.META_OPAQUE_TOO_LONG)
        return c.MetaGet(
            f.key,
            flags,
            f.binary,
            f.quiet,
            f.value,
            f.bump,
            f.touch,
            f.vivify,
            f.recache,
            f.recache_after_touch,
            f.vivify_last,
        )

    def _ms(self, tokens: list[bytes]) -> c.Command | None:
        n = len(tokens)
        if n < 2:
            return _ERROR
        key = tokens[1]
        if len(key) > KEY_MAX_LENGTH or n == 2:
            return _FORMAT
        if n >= META_MAX_TOKENS:
            return _META_TOO_MANY_STORE
        vlen = parse_int32(tokens[2])
        if vlen is None or vlen < 0 or vlen > INT32_MAX - 2:
            return _FORMAT
        # from here on an error swallows the data block (memcached's conn_swallow)
        flags = tokens[3:]
        f = _meta_flags(key, flags)
        if isinstance(f, Error):
            return self._swallow_block(vlen + 2, c.Invalid(f))
        opaque_ok = _opaque_ok(flags)
        build = _META_STORE.get(f.mode)
        if build is None:
            return self._swallow_block(vlen + 2, c.Invalid(Error.META_SET_MODE))
        if not opaque_ok:
            return self._swallow_block(vlen + 2, c.Invalid(Error.META_OPAQUE_TOO_LONG))
        if f.cas is not None and (build is c.MetaSet or build is c.MetaReplace):
            build = c.MetaCas  # a set or replace with a CAS is a cas
        key = f.key
        if item_total_size(len(key), f.client_flags, vlen, self.cas_enabled) > self.item_size_max:
            # memcached drops the item whatever the mode; the error is never quiet
            return self._swallow_block(vlen + 2, c.MetaTooLarge(_META_VERB[build], key))
        make = _MetaStoreBuilder(build, flags, f)
        if vlen >= self.receive_min and len(self._buf) - self._pos < vlen + 2:
            # a large value still arriving: received into place, as a set's (`take`)
            store = make(key, f.client_flags, f.exptime, b"", False)
            assert isinstance(store, c.Store)
            return c.Incoming(store, vlen)
        self._pending = (make, key, f.client_flags, f.exptime, vlen, 0, False, b"ms")
        cmd = self._data_block()  # usually the block came with its line
        if cmd is None:
            self._framed = True
        return cmd

    def _md(self, tokens: list[bytes]) -> c.Command:
        checked = _md_ma_flags(tokens)
        if not isinstance(checked, tuple):
            return checked
        flags, f = checked
        if not _opaque_ok(flags):
            return c.Invalid(Error.META_OPAQUE_TOO_LONG)
        return c.MetaDelete(f.key, flags, f.binary, f.quiet, f.cas, f.invalidate, f.touch)

    def _ma(self, tokens: list[bytes]) -> c.Command:
        checked = _md_ma_flags(tokens)
        if not isinstance(checked, tuple):
            return checked
        flags, f = checked
        incr = _META_ARITH.get(f.mode)
        if incr is None:
            return c.Invalid(Error.META_ARITH_MODE)
        # an O token too long is found as the reply is written, after the counter moved
        # (memcached's order: its reply loop meets it after do_add_delta)
        return c.MetaArith(
            f.key,
            flags,
            f.binary,
            f.quiet,
            incr,
            f.delta,
            f.cas or 0,
            f.vivify,
            f.initial,
            f.touch,
            f.vivify_last,
            f.value,
        )

    def _mn(self, tokens: list[bytes]) -> c.Command:
        return _MN  # whatever follows it

    def _me(self, tokens: list[bytes]) -> c.Command:
        if len(tokens) < 2 or len(tokens[1]) > KEY_MAX_LENGTH:
            return _FORMAT  # "me" alone included: memcached checks both at once
        key = tokens[1]
        if len(tokens) > 2 and tokens[2] == b"b":
            decoded = base64_decode(key)
            if decoded is None:
                return _FORMAT
            return c.MetaDebug(decoded, True)
        return c.MetaDebug(key)

    # ---- ASCII authentication (-Y): memcached 1.6.18's try_read_command_asciiauth ----

    def authenticated(self) -> None:
        """The handler accepted the credentials: parse the full protocol from here on."""
        self._auth = False

    def _next_auth(self) -> c.Command | _NeedData:
        """Until authenticated, a connection may only send ``set <any> <any> <any> <n>``
        and an n-byte ``<user> <password>`` block. Anything else is answered
        ``CLIENT_ERROR unauthenticated`` (never hidden by noreply), and nothing is ever
        buffered beyond one 2048-byte line or one `AUTH_BLOCK_MAX` block."""
        buf = self._buf
        pos = self._pos
        if self._auth_len < 0:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > MAX_LINE:
                    raise CloseConnection(f"unauthenticated line over {MAX_LINE} bytes")
                return NEED_DATA
            self._pos = nl + 1
            tokens = _tokens(bytes(buf[pos:nl]).removesuffix(b"\r"))
            size = strtoul32(tokens[4]) if len(tokens) >= 5 and tokens[0] == b"set" else None
            if size is None:
                return _UNAUTHENTICATED
            if size + 2 > AUTH_BLOCK_MAX:
                # memcached's read buffer cannot hold it either: it resets the connection
                raise CloseConnection(f"authentication block of {size} bytes")
            self._auth_len = size + 2
            pos = self._pos
        n = self._auth_len
        if len(buf) - pos < n:
            return NEED_DATA
        block = bytes(buf[pos : pos + n])
        self._pos = pos + n
        self._auth_len = -1
        if not block.endswith(b"\r\n"):
            return _AUTH_BAD_TERMINATION
        creds = _tokens(block[:-2])
        if len(creds) < 2:
            return _AUTH_BAD_FORMAT
        # memcached 1.6.18 tokenizes the block: the user and the password are its first two
        # tokens (so a password cannot contain a space), anything after them is ignored
        return c.Auth(creds[0], creds[1], self.authenticated)

    def _config(self, tokens: list[bytes]) -> c.Command | None:
        """``config get|set|delete <key>``: the auto-discovery endpoint."""
        n = len(tokens)
        if n >= 3 and tokens[1] == b"get":
            return c.ConfigGet(tokens[2]) if n == 3 else _ERROR
        if n >= 3 and tokens[1] == b"delete":
            noreply = tokens[-1] == _NOREPLY
            if n == 3 or (n == 4 and noreply):
                return c.ConfigDelete(tokens[2], noreply)
            return _ERROR
        if n in (5, 6) and tokens[1] == b"set":
            noreply = tokens[-1] == _NOREPLY
            key = tokens[2]
            flags = parse_uint32(tokens[3])
            vlen = parse_int32(tokens[4])
            if len(key) > KEY_MAX_LENGTH or flags is None or vlen is None:
                return c.Invalid(Error.BAD_FORMAT, noreply)
            if vlen < 0 or vlen > INT32_MAX - 2:  # +2 overflows memcached's int, as in a set
                return c.Invalid(Error.BAD_FORMAT, noreply)
            if vlen + 2 > self.item_size_max:
                return self._swallow_block(vlen + 2, c.Invalid(Error.TOO_LARGE, noreply))
            self._pending = (_config_set, key, flags, 0, vlen, 0, noreply, b"config")
            self._framed = True
            return None
        return _ERROR


# Dispatch on the verb: one dict lookup per line (hot path). The class's functions, called
# with the parser: a table of each parser's bound methods (34 of them, made for every
# connection) held the parser in a reference cycle, which only the garbage collector
# freed, at its next full pass for a connection that had lived long enough.
_DISPATCH: dict[bytes, Callable[[Parser, list[bytes]], c.Command | None]] = {
    b"get": Parser._get,
    b"bget": Parser._get,  # memcached keeps this ancient name of get
    b"gets": Parser._gets,
    b"set": Parser._storage,
    b"add": Parser._storage,
    b"replace": Parser._storage,
    b"append": Parser._storage,
    b"prepend": Parser._storage,
    b"cas": Parser._cas,
    b"delete": Parser._delete,
    b"incr": Parser._arith,
    b"decr": Parser._arith,
    b"touch": Parser._touch,
    b"gat": Parser._gat,
    b"gats": Parser._gat,
    b"flush_all": Parser._flush_all,
    b"version": Parser._version,
    b"verbosity": Parser._verbosity,
    b"quit": Parser._quit,
    b"shutdown": Parser._shutdown,
    b"stats": Parser._stats,
    b"cache_memlimit": Parser._memlimit,
    b"lru_crawler": Parser._lru_crawler,
    b"slabs": Parser._slabs,
    b"lru": Parser._lru,
    b"config": Parser._config,
    b"refresh_certs": Parser._refresh_certs,
    b"watch": Parser._watch,
    b"mg": Parser._mg,
    b"ms": Parser._ms,
    b"md": Parser._md,
    b"ma": Parser._ma,
    b"mn": Parser._mn,
    b"me": Parser._me,
}


# ---- the meta commands' flags: memcached 1.6.18's _meta_flag_preparse ----

# MFLAG_MAX_OPT_LENGTH: at this many tokens a meta command is refused (memcached counts a
# final empty token, so 19 real ones is the most: a key and 17 flags)
META_MAX_TOKENS = 20
OPAQUE_MAX = 32  # MFLAG_MAX_OPAQUE_LENGTH: an O token, its O included

_MN = c.MetaNoop()

# memcached's base64 decoding table: value of each byte, 0x80 for bytes that are skipped
_B64 = bytearray(b"\x80" * 256)
for _i, _ch in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[_ch] = _i
_B64[ord("=")] = 0


def base64_decode(src: bytes) -> bytes | None:
    """memcached's ``base64_decode`` (base64.c): bytes outside the alphabet are skipped, the
    rest must come in groups of four, and the first group holding ``=`` ends the input (one
    or two of them cut as many bytes; three or four are an error). None where memcached's
    returns 0, an empty result included."""
    table = _B64
    count = sum(1 for b in src if table[b] != 0x80)
    if count == 0 or count % 4:
        return None
    out = bytearray()
    block: list[int] = []
    pad = 0
    for b in src:
        v = table[b]
        if v == 0x80:
            continue
        if b == 61:  # "="
            pad += 1
        block.append(v)
        if len(block) == 4:
            a0, a1, a2, a3 = block
            out += bytes(
                ((a0 << 2 | a1 >> 4) & 255, (a1 << 4 | a2 >> 2) & 255, (a2 << 6 | a3) & 255)
            )
            block = []
            if pad:
                if pad > 2:
                    return None
                del out[-pad:]
                break
    return bytes(out) or None


class MetaFlags:
    """What `_meta_flags` read from a meta command's flags (memcached's ``struct
    _meta_flags``). Attributes not set by a flag keep the class defaults below (one object
    per request, and only the flags sent are written into it)."""

    key = b""
    binary = False  # b: the key was base64 and is decoded
    quiet = False  # q
    value = False  # v
    bump = True  # not u
    touch: int | None = None  # T, a client exptime
    vivify: int | None = None  # N
    recache: int | None = None  # R
    recache_after_touch = False  # T came before R: R compares the exptime T set
    vivify_last = True  # N came after T (or alone): a created item takes N's exptime
    client_flags = 0  # F
    exptime = 0  # T again, for ms
    cas: int | None = None  # C
    mode = 0  # M's character (0: none)
    invalidate = False  # I
    delta = 1  # D
    initial = 0  # J


def _md_ma_flags(tokens: list[bytes]) -> tuple[list[bytes], MetaFlags] | c.Command:
    """``md`` and ``ma``'s first checks, in memcached's order (enough tokens, the key's
    length, the number of tokens), then their flags: the flag tokens and what they say, or
    the command that answers the error (one word for every flag error)."""
    n = len(tokens)
    if n < 2:
        return _ERROR
    key = tokens[1]
    if len(key) > KEY_MAX_LENGTH:
        return _FORMAT
    if n >= META_MAX_TOKENS:
        return _META_TOO_MANY_STORE
    flags = tokens[2:]
    f = _meta_flags(key, flags)
    if isinstance(f, Error):
        return _META_FLAG_BAD
    return flags, f


def _meta_flags(key: bytes, tokens: list[bytes]) -> MetaFlags | Error:
    """The flags of a meta command, or the error memcached answers for them.

    As memcached's ``_meta_flag_preparse``: a flag is the first byte of its token; a byte
    over 126 or a flag seen before is at once "duplicate flag", an unknown one at once
    "invalid flag"; a bad token is noted and the reading goes on, so the last error noted is
    the one answered (a bad F notes no words of its own: then "bad command line format").
    Every meta command reads every flag any of them knows (mg reads M, ma reads F...)."""
    f = MetaFlags()
    f.key = key
    seen = bytearray(128)
    error: Error | None = None
    bad = False
    t_at = n_at = r_at = -1
    for i, tok in enumerate(tokens):
        o = tok[0]
        if o > 126 or seen[o]:
            return Error.META_FLAG_DUPLICATE
        seen[o] = 1
        if o == 118:  # v
            f.value = True
        elif o in _META_PLAIN:
            if o == 113:  # q
                f.quiet = True
            elif o == 117:  # u
                f.bump = False
            elif o == 73:  # I
                f.invalidate = True
        elif o == 84 or o == 78 or o == 82:  # T N R: a client exptime (safe_strtol)
            v = parse_int32(tok[1:])
            if v is None:
                error = Error.META_BAD_TOKEN
                bad = True
            elif o == 84:
                f.touch = f.exptime = v
                t_at = i
            elif o == 78:
                f.vivify = v
                n_at = i
            else:
                f.recache = v
                r_at = i
        elif o == 98:  # b: decode the key (memcached decodes it in place, here)
            decoded = base64_decode(key)
            f.binary = True
            if decoded is None:
                error = Error.META_KEY_DECODE
                bad = True
                decoded = b""
            f.key = decoded
        elif o == 67:  # C
            cas = parse_uint64(tok[1:])
            if cas is None:
                error = Error.META_BAD_TOKEN
                bad = True
            else:
                f.cas = cas
        elif o == 70:  # F: safe_strtoul, no words of its own
            flags = parse_uint32(tok[1:])
            if flags is None:
                bad = True
            else:
                f.client_flags = flags
        elif o == 77:  # M
            if len(tok) != 2:
                error = Error.META_MODE_LENGTH
                bad = True
            else:
                f.mode = tok[1]
        elif o == 74 or o == 68:  # J D
            v = parse_uint64(tok[1:])
            if v is None:
                error = Error.META_BAD_INITIAL if o == 74 else Error.META_BAD_DELTA
                bad = True
            elif o == 74:
                f.initial = v
            else:
                f.delta = v
        else:
            return Error.META_FLAG_INVALID
    if bad:
        return error or Error.BAD_FORMAT
    if t_at >= 0:
        f.recache_after_touch = t_at < r_at
        if n_at >= 0:
            f.vivify_last = n_at > t_at
    return f


# flags that are known and only switch something on, or nothing (O, P, L, k, s, t, c, f, h,
# l, q, u, I): the commands that use them read their tokens
_META_PLAIN = frozenset(b"OPLkstcfhlquI")
# mg's flags that only ask for something back, written alone: no token to read
_MG_RETURN_ONLY = frozenset((b"v", b"s", b"f", b"t", b"c", b"k", b"q", b"h", b"l"))


def _opaque_ok(tokens: list[bytes]) -> bool:
    """No O token longer than memcached's 32 bytes (its O included)."""
    for tok in tokens:
        if tok[0] == 79 and len(tok) > OPAQUE_MAX:
            return False
    return True


# ms's M: the store each mode is (a C turns set and replace into cas); ma's M: incr or not
_META_STORE: dict[int, type[c.MetaStore]] = {
    0: c.MetaSet,
    ord("S"): c.MetaSet,
    ord("E"): c.MetaAdd,
    ord("A"): c.MetaAppend,
    ord("P"): c.MetaPrepend,
    ord("R"): c.MetaReplace,
}
#: the command a watcher's mutations line names for each (memcached's comm)
_META_VERB: dict[type[c.MetaStore], bytes] = {
    c.MetaSet: b"set",
    c.MetaAdd: b"add",
    c.MetaAppend: b"append",
    c.MetaPrepend: b"prepend",
    c.MetaReplace: b"replace",
    c.MetaCas: b"cas",
}
_META_ARITH: dict[int, bool] = {
    0: True,
    ord("I"): True,
    ord("+"): True,
    ord("D"): False,
    ord("-"): False,
}


class _MetaStoreBuilder:
    """Builds an ms command once its data block is read (the parser's pending build)."""

    __slots__ = ("cls", "tokens", "f")

    def __init__(self, cls: type[c.MetaStore], tokens: list[bytes], f: MetaFlags) -> None:
        self.cls = cls
        self.tokens = tokens
        self.f = f

    def __call__(
        self, key: bytes, flags: int, exptime: int, value: bytes, noreply: bool
    ) -> c.Command:
        f = self.f
        return self.cls(
            key, flags, exptime, value, self.tokens, f.binary, f.quiet, f.cas or 0, f.invalidate
        )


def _config_set(key: bytes, flags: int, exptime: int, value: bytes, noreply: bool) -> c.Command:
    return c.ConfigSet(key, flags, value, noreply)


def _tokens(line: bytes) -> list[bytes]:
    """memcached's ``tokenize_command`` on a C string: a NUL ends it, spaces separate."""
    if 0 in line:  # the NUL as an int (see Parser.next_command)
        line = line[: line.index(0)]
    return [t for t in line.split(b" ") if t]
