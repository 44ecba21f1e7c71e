"""A plain-socket client for one node, mcached or memcached: the one small client of the
project's tools.

`NodeClient` speaks ``config get|set|delete cluster`` (falling back to the legacy
``get AmazonElastiCache:cluster`` when a server answers ``ERROR``), ``version``,
``stats [<sub>]``, the requests answered by lines up to ``END`` (``lru_crawler metadump``)
and ``get`` of many keys. It needs no pymemcache, so ``mcached-tool`` works without the
``client`` extra; the discovery client (`mcached.client.cluster`) polls through it too.

Rules: one connection, reused for every request, as pollers do; a transport error or a reply
that cannot be read closes it and the next request reconnects, while an error line the node
answers (`ReplyError`) leaves it open. Every request is bounded by `timeout`: a small reply
must be whole within it, a bulk one (a dump's metadump or multiget) must not go silent for
longer. Replies are parsed by length (the ``<n>`` of a ``CONFIG`` or ``VALUE`` line), never by
guessing where the data ends.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import unquote_to_bytes

from mcached.addr import format_address
from mcached.cluster.config import LEGACY_KEY, ClusterConfig, parse_data


class NodeError(Exception):
    """The node could not be reached, or answered something that is not a configuration."""


class NotSupported(NodeError):
    """The node knows neither ``config get cluster`` nor the legacy key."""


class ReplyError(NodeError):
    """The node answered with an error line (``ERROR``, ``CLIENT_ERROR <msg>``...)."""

    def __init__(self, line: bytes) -> None:
        super().__init__(f"the node answered {line.decode('ascii', 'replace')}")
        self.line = line


# First words of the lines that answer a request with a refusal, memcached's included
# (``BADCLASS`` and ``BUSY`` come from lru_crawler).
ERROR_LINES = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"BADCLASS", b"BUSY")

Completer = Callable[[bytearray], int | None]
"""The reply read so far -> its length once it is complete, else None."""


_CONFIG_HEADS = (b"CONFIG cluster ", b"VALUE " + LEGACY_KEY + b" ")


CONFIG_DATA_MAX = 1 << 24  # bytes of configuration data: far more than any node list


def parse_config_reply(buf: bytes) -> tuple[int, ClusterConfig | None] | None:
    """One ``config get cluster`` or legacy ``get`` reply at the start of `buf`.

    Returns None while incomplete, else (bytes used, config); config is None for a legacy
    ``END`` (no such item). Raises NotSupported on ``ERROR``, NodeError on anything else
    that is not a well-formed configuration.
    """
    eol = buf.find(b"\r\n")
    if eol < 0:
        return None
    line = buf[:eol]
    if line == b"END":
        return eol + 2, None
    if line == b"ERROR":
        raise NotSupported("the node does not serve auto discovery (answered ERROR)")
    head = next((h for h in _CONFIG_HEADS if line.startswith(h)), None)
    parts = line.split(b" ")
    if head is None or len(parts) != 4 or not parts[3].isdigit():
        raise NodeError(f"unexpected reply {line[:200]!r}")
    # (a length of thousands of digits was int()'s ValueError, out of reach of the callers
    # that try the next endpoint on a NodeError)
    n = int(parts[3]) if len(parts[3]) <= 9 else CONFIG_DATA_MAX + 1
    if n > CONFIG_DATA_MAX:
        raise NodeError(f"configuration of {parts[3][:20]!r} bytes: more than any cluster's")
    start = eol + 2
    end = start + n
    if len(buf) < end + 7:
        return None
    if buf[end : end + 7] != b"\r\nEND\r\n":
        raise NodeError(f"bad framing after {n} data bytes: {buf[end : end + 7]!r}")
    data = buf[start:end]
    if not data.endswith(b"\n") or data.count(b"\n") != 2:
        raise NodeError(f"bad configuration data {data[:200]!r}")
    try:
        version, nodes = parse_data(data)
    except ValueError as exc:
        raise NodeError(f"bad configuration data: {exc}") from None
    if version is None:
        raise NodeError(f"no version line in {data[:200]!r}")
    return end + 7, ClusterConfig(version, nodes)


def _line(buf: bytearray) -> int | None:
    eol = buf.find(b"\r\n")
    return None if eol < 0 else eol + 2


def _error_line(buf: bytearray) -> int | None:
    if buf.startswith(ERROR_LINES):
        return _line(buf)
    return None


def _until_end(buf: bytearray) -> int | None:
    """Lines up to ``END`` (``STAT`` lines; metadump lines, which memcached ends with a bare
    ``\\n``), or a single error line."""
    if buf.endswith(b"END\r\n") and (len(buf) == 5 or buf[-6:-5] == b"\n"):
        return len(buf)
    return _error_line(buf)


def _values(buf: bytearray) -> int | None:
    """A ``get`` reply: ``VALUE <key> <flags> <bytes>`` blocks walked by length, then ``END``;
    or a single error line."""
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        if buf.startswith(b"VALUE ", pos):
            parts = buf[pos:eol].split(b" ")
            if len(parts) < 4 or not parts[3].isdigit():
                raise NodeError(f"bad VALUE line {bytes(buf[pos:eol][:200])!r}")
            pos = eol + 2 + int(parts[3]) + 2
            if len(buf) < pos:
                return None
        elif eol == pos + 3 and buf.startswith(b"END", pos):
            return eol + 2
        elif pos == 0 and buf.startswith(ERROR_LINES):
            return eol + 2
        else:
            raise NodeError(f"unexpected line in a get reply {bytes(buf[pos:eol][:200])!r}")


KEY_MAX = 250  # memcached's KEY_MAX_LENGTH
_NOT_IN_TEXT_KEYS = re.compile(rb"[\x00-\x20\x7f]")


def text_key(key: bytes) -> bool:
    """A key a text request can carry: 1 to 250 bytes, no space or control byte (the
    binary protocol stores others, which a dump lists)."""
    return 0 < len(key) <= KEY_MAX and _NOT_IN_TEXT_KEYS.search(key) is None


def _check_keys(keys: Iterable[bytes]) -> None:
    for key in keys:
        if not text_key(key):
            raise ValueError(f"a key the text protocol cannot carry: {key!r}")


class NodeClient:
    """One connection to one node. Not thread-safe: one user at a time."""

    def __init__(self, address: tuple[str, int], timeout: float = 2.0) -> None:
        self.address = address
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.legacy = False  # the node answered ERROR to config get: use the legacy key

    def __repr__(self) -> str:
        return f"<NodeClient {format_address(self.address)}>"

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, data: bytes, complete: Completer, bulk: bool = False) -> bytes:
        """Send `data`; read until `complete(buf)` gives the reply's length. The whole reply
        must come within `timeout`; a `bulk` one, within `timeout` of its last bytes."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.sock
            sock.sendall(data)
            deadline = time.monotonic() + self.timeout
            buf = bytearray()
            while True:
                n = complete(buf)
                if n is not None:
                    if n != len(buf):
                        raise NodeError(f"unexpected bytes after the reply: {bytes(buf[n:])!r}")
                    return bytes(buf)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NodeError(f"no complete reply within {self.timeout}s")
                sock.settimeout(left)
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise NodeError("connection closed by the node")
                buf += chunk
                if bulk:
                    deadline = time.monotonic() + self.timeout
        except NodeError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise NodeError(f"{format_address(self.address)}: {exc}") from exc

    def _checked(self, data: bytes, complete: Completer, bulk: bool = False) -> bytes:
        """`_request`, with an error line raised as `ReplyError` (the connection stays)."""
        reply = self._request(data, complete, bulk)
        if reply.startswith(ERROR_LINES):
            raise ReplyError(reply.rstrip(b"\r\n"))
        return reply

    def config_get(self) -> ClusterConfig:
        """The node's configuration: ``config get cluster``, or the legacy key after ERROR."""
        found: list[ClusterConfig | None] = []

        def complete(buf: bytearray) -> int | None:
            parsed = parse_config_reply(bytes(buf))
            if parsed is None:
                return None
            found.append(parsed[1])
            return parsed[0]

        if not self.legacy:
            try:
                self._request(b"config get cluster\r\n", complete)
            except NotSupported:
                self.legacy = True
        if self.legacy:
            self._request(b"get " + LEGACY_KEY + b"\r\n", complete)
        config = found[-1] if found else None
        if config is None:
            raise NotSupported("the node serves no cluster configuration")
        return config

    def config_set(self, data: bytes) -> bytes:
        """``config set cluster 0 <n>`` + `data` -> the reply line (``STORED\\r\\n``...)."""
        return self._request(b"config set cluster 0 %d\r\n%b\r\n" % (len(data), data), _line)

    def config_delete(self) -> bytes:
        return self._request(b"config delete cluster\r\n", _line)

    def version(self) -> str:
        reply = self._request(b"version\r\n", _line)
        if not reply.startswith(b"VERSION "):
            raise NodeError(f"unexpected reply {reply!r}")
        return reply[8:-2].decode("ascii", "replace")

    def lines(self, request: bytes) -> list[bytes]:
        """A request answered by lines up to ``END`` (``lru_crawler metadump ...``): its lines
        without their ends, ``END`` left out. Raises `ReplyError` on an error line."""
        reply = self._checked(request + b"\r\n", _until_end, bulk=True)
        return reply[:-5].splitlines()

    def stats(self, sub: str = "") -> dict[str, str]:
        """``stats`` or ``stats <sub>`` -> {name: value}, in the node's order."""
        request = b"stats " + sub.encode("ascii") if sub else b"stats"
        out = {}
        for line in self.lines(request):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                out[parts[1].decode("ascii", "replace")] = parts[2].decode("ascii", "replace")
        return out

    def store_many(
        self, items: Sequence[tuple[bytes, bytes, int, bytes]], verb: bytes = b"set"
    ) -> list[bytes]:
        """``set <key> <flags> <exptime> <n>`` + value for each (key, flags as sent, exptime,
        value), pipelined in one write -> each reply line (``STORED``...), in order."""
        if not items:
            return []
        _check_keys(key for key, _, _, _ in items)
        data = b"".join(
            b"%b %b %b %d %d\r\n%b\r\n" % (verb, key, flags, exptime, len(value), value)
            for key, flags, exptime, value in items
        )
        want = len(items)

        def complete(buf: bytearray) -> int | None:
            if buf.count(b"\r\n") >= want:
                return len(buf) if buf.endswith(b"\r\n") else None
            return None

        reply = self._request(data, complete, bulk=True)
        return reply.split(b"\r\n")[:want]

    def metadump(self) -> tuple[list[tuple[bytes, int]], int]:
        """Every key the node holds once, with its expiry (absolute Unix time, -1: never),
        and how many keys were left out: those a text request cannot carry (`text_key`: a
        binary protocol key with a space or a line end, which a ``get`` would read as more
        keys or another command, a ``flush_all`` even). ``metadump hash`` walks the hash
        table (memcached 1.6.10+); ``all`` is the LRU walk, which can meet an item twice
        (repeats are dropped)."""
        try:
            lines = self.lines(b"lru_crawler metadump hash")
        except ReplyError:
            lines = self.lines(b"lru_crawler metadump all")
        seen: dict[bytes, int] = {}
        for line in lines:
            if not line.startswith(b"key="):
                continue
            fields = dict(part.split(b"=", 1) for part in line.split(b" ") if b"=" in part)
            seen.setdefault(unquote_to_bytes(fields[b"key"]), int(fields[b"exp"]))
        keys = [(key, exp) for key, exp in seen.items() if text_key(key)]
        return keys, len(seen) - len(keys)

    def get_many(self, keys: Sequence[bytes]) -> list[tuple[bytes, bytes, bytes]]:
        """``get <key>...`` -> (key, flags as sent, value) of each hit, in the node's order.
        ValueError for a key the text protocol cannot carry (`text_key`): sent, its spaces
        or line ends would be read as more keys or another command."""
        _check_keys(keys)
        reply = self._checked(b"get " + b" ".join(keys) + b"\r\n", _values, bulk=True)
        out = []
        pos = 0
        while reply.startswith(b"VALUE ", pos):
            eol = reply.index(b"\r\n", pos)
            _, key, flags, length = reply[pos:eol].split(b" ")[:4]
            start = eol + 2
            out.append((key, flags, reply[start : start + int(length)]))
            pos = start + int(length) + 2
        return out
