"""Cluster health checks: ``stats cluster`` on one kept-open connection per member.

The rule that reads their results is `mcached.cluster.health`'s. This module is apart because
of asyncio, which the checks run on: the keeper (`mcached.cluster.discovery`) imports it with
the first peer it has to check, so a daemon alone, as most are, never loads it (asyncio is
~4.5 MB of heap in the process that imports it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from mcached.cluster.config import Node
from mcached.cluster.health import REPLY_MAX, parse_view


@dataclass
class Result:
    ok: bool
    latency: float | None
    error: str
    view: dict[Node, int] | None


class Prober:
    """One kept-open connection per member; `round` checks them all at once. Runs inside one
    asyncio loop (the keeper's health thread)."""

    REQUEST = b"stats cluster\r\n"
    ERROR_LINES = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")

    def __init__(self) -> None:
        self.conns: dict[Node, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def round(self, nodes: Iterable[Node], timeout: float) -> dict[Node, Result]:
        nodes = list(nodes)
        for gone in set(self.conns) - set(nodes):
            await self._drop(gone)
        results = await asyncio.gather(*(self.check(n, timeout) for n in nodes))
        return dict(zip(nodes, results, strict=True))

    async def check(self, node: Node, timeout: float) -> Result:
        start = time.monotonic()
        try:
            reply = await asyncio.wait_for(self._ask(node), timeout)
        except TimeoutError:
            await self._drop(node)
            return Result(False, None, f"no reply within {timeout:g}s", None)
        except (
            OSError,
            EOFError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            await self._drop(node)
            return Result(False, None, _describe(exc), None)
        latency = time.monotonic() - start
        return Result(True, latency, "", parse_view(reply))

    async def _ask(self, node: Node) -> bytes:
        conn = self.conns.get(node)
        if conn is None:
            host, port = node.address
            conn = await asyncio.open_connection(host, port, limit=REPLY_MAX)
            self.conns[node] = conn
        reader, writer = conn
        writer.write(self.REQUEST)
        await writer.drain()
        buf = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            buf += line
            if line == b"END\r\n" or (len(buf) == len(line) and line.startswith(self.ERROR_LINES)):
                return bytes(buf)
            if not line.startswith(b"STAT ") or len(buf) > REPLY_MAX:
                raise ValueError(f"unexpected reply {bytes(line[:80])!r}")

    async def _drop(self, node: Node) -> None:
        conn = self.conns.pop(node, None)
        if conn is None:
            return
        writer = conn[1]
        writer.transport.abort()  # nothing queued is worth waiting for
        # the error the connection ended with (a reset peer) is the check's, reported there;
        # taken here so that it is not reported again when the connection's objects are
        # collected. They form a cycle through the error's traceback, and asyncio's own
        # rescue (the protocol's __del__) does not always run first: on 3.13t every dropped
        # connection printed "Future exception was never retrieved" at exit
        try:
            await writer.wait_closed()
        except OSError:
            pass

    async def close(self) -> None:
        for node in list(self.conns):
            await self._drop(node)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the node"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    text = str(exc) or type(exc).__name__
    return text.replace("\r", " ").replace("\n", " ")[:200]


class Checks:
    """A `Prober` and the event loop it runs on, for a caller that is not asyncio's: the
    keeper's health thread."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.prober = Prober()

    def round(self, nodes: Iterable[Node], timeout: float) -> dict[Node, Result]:
        return self.runner.run(self.prober.round(nodes, timeout))

    def close(self) -> None:
        try:
            self.runner.run(self.prober.close())
        finally:
            self.runner.close()
