"""A plain-socket client for one node: its configuration endpoint, its version and stats.

`NodeClient` speaks ``config get|set|delete cluster`` (falling back to the legacy
``get AmazonElastiCache:cluster`` when a server answers ``ERROR``), ``version`` and ``stats``.
It needs no pymemcache, so ``mcached-tool`` works without the ``client`` extra; the discovery
client (`mcached.client.cluster`) polls through it too.

Rules: one connection, reused for every request, as pollers do; any error closes it and the
next request reconnects. Every read is bounded by `timeout`. Replies are parsed by length (the
``<n>`` of the ``CONFIG`` line), never by guessing where the data ends.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from mcached.addr import format_address
from mcached.cluster.config import LEGACY_KEY, ClusterConfig, parse_data


class NodeError(Exception):
    """The node could not be reached, or answered something that is not a configuration."""


class NotSupported(NodeError):
    """The node knows neither ``config get cluster`` nor the legacy key."""


_CONFIG_HEADS = (b"CONFIG cluster ", b"VALUE " + LEGACY_KEY + b" ")


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
    n = int(parts[3])
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


def _line(buf: bytes) -> int | None:
    eol = buf.find(b"\r\n")
    return None if eol < 0 else eol + 2


def _block(buf: bytes) -> int | None:
    """A ``STAT ...`` block: complete at an ``END`` line, or at a single error line."""
    if buf.endswith(b"END\r\n") and (len(buf) == 5 or buf.endswith(b"\r\nEND\r\n")):
        return len(buf)
    if not buf.startswith(b"STAT ") and b"\r\n" in buf:
        return buf.index(b"\r\n") + 2
    return None


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

    def _request(self, data: bytes, complete: Callable[[bytes], int | None]) -> bytes:
        """Send `data`; read until `complete(buf)` gives the reply's length. Bounded in time."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock = self.sock
            sock.sendall(data)
            deadline = time.monotonic() + self.timeout
            buf = b""
            while True:
                n = complete(buf)
                if n is not None:
                    if n != len(buf):
                        raise NodeError(f"unexpected bytes after the reply: {buf[n:]!r}")
                    return buf
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NodeError(f"no complete reply within {self.timeout}s")
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    raise NodeError("connection closed by the node")
                buf += chunk
        except NodeError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise NodeError(f"{format_address(self.address)}: {exc}") from exc

    def config_get(self) -> ClusterConfig:
        """The node's configuration: ``config get cluster``, or the legacy key after ERROR."""
        found: list[ClusterConfig | None] = []

        def complete(buf: bytes) -> int | None:
            parsed = parse_config_reply(buf)
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

    def stats(self) -> dict[str, str]:
        reply = self._request(b"stats\r\n", _block)
        out = {}
        for line in reply.split(b"\r\n"):
            parts = line.split(b" ", 2)
            if len(parts) == 3 and parts[0] == b"STAT":
                out[parts[1].decode("ascii", "replace")] = parts[2].decode("ascii", "replace")
        return out
