"""``mcached-tool HOST:PORT watch [words...]`` and the hot keys of ``top``: memcached's
``watch`` stream, read by a client.

Works against memcached as well as mcached (both serve ``watch``). `WatchClient` sends
``watch <words>``, checks the ``OK`` and then yields complete lines as they arrive;
`HotKeys` counts the ``item_get`` lines of ``watch fetchers`` per key, which is the answer
memcached's users get when they ask how to find their hot keys.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections import Counter
from typing import Any
from urllib.parse import unquote_to_bytes

import click

from mcached.client.node import NodeError

WORDS = ("fetchers", "mutations", "evictions", "connevents", "deletions", "sysevents", "rawcmds")
_GET = re.compile(r"\btype=item_get key=(\S+) status=(\S+)")


class Seconds(click.FloatRange):
    """A number of seconds for the tool's options (a socket timeout, a sleep): finite and
    within what ``settimeout`` and ``sleep`` take, else a usage error; -1, inf or nan ended
    in their traceback. 0 only when `zero` (it means "no bound": 0 as a timeout would make
    the socket non-blocking)."""

    name = "seconds"

    def __init__(self, zero: bool = False) -> None:
        super().__init__(min=0, min_open=not zero, max=1e9)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):  # passes the range's comparisons
            self.fail(f"{value} is not a number of seconds", param, ctx)
        return seconds


class WatchClient:
    """A watcher connection: ``watch <words>`` sent, ``OK`` read, then lines."""

    def __init__(self, address: tuple[str, int], words: tuple[str, ...], timeout: float) -> None:
        try:
            self.sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise NodeError(f"{address[0]}:{address[1]}: {exc.strerror or exc}") from None
        self.buf = b""
        request = " ".join(("watch", *words)).encode() + b"\r\n"
        try:
            self.sock.sendall(request)
            while b"\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise NodeError("the server closed the connection")
                self.buf += chunk
        except OSError as exc:
            self.sock.close()
            raise NodeError(f"watch: {exc}") from None
        first, _, self.buf = self.buf.partition(b"\n")
        if first.rstrip(b"\r") != b"OK":
            self.sock.close()
            raise NodeError(f"watch refused: {first.decode('ascii', 'replace').strip()}")

    def lines(self, wait: float | None) -> list[str]:
        """The complete lines that arrived, waiting at most `wait` seconds for the first
        (None: until one comes); [] on a quiet socket. NodeError when the server closed or
        reset the connection."""
        try:
            return self._lines(wait)
        except TimeoutError:
            return []
        except OSError as exc:  # a reset: the one-line error of every command, not a traceback
            raise NodeError(f"watch: {exc}") from None

    def _lines(self, wait: float | None) -> list[str]:
        deadline = None if wait is None else time.monotonic() + wait
        while b"\n" not in self.buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return []
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise NodeError("the server closed the watch")
            self.buf += chunk
        # and whatever else is already there, without waiting
        self.sock.setblocking(False)
        try:
            while chunk := self.sock.recv(1 << 20):
                self.buf += chunk
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)
        complete, _, self.buf = self.buf.rpartition(b"\n")
        return complete.decode("utf-8", "replace").split("\n")

    def close(self) -> None:
        self.sock.close()


class HotKeys:
    """Fetches per key, from ``item_get`` lines: how often, and how often found."""

    def __init__(self) -> None:
        self.fetches: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.skipped = 0

    def feed(self, lines: list[str]) -> None:
        for line in lines:
            if line.startswith("skipped="):
                self.skipped += int(line[8:] or 0)
                continue
            m = _GET.search(line)
            if m:
                key = m.group(1)
                self.fetches[key] += 1
                if m.group(2) == "found":
                    self.hits[key] += 1

    def top(self, n: int) -> list[tuple[str, int, int]]:
        """The `n` most fetched keys: (key as the client sent it, fetches, hits)."""
        out = []
        for key, count in self.fetches.most_common(n):
            shown = unquote_to_bytes(key).decode("utf-8", "backslashreplace")
            out.append((shown, count, self.hits[key]))
        return out

    def clear(self) -> None:
        self.fetches.clear()
        self.hits.clear()
        self.skipped = 0


def render_hot(hot: list[tuple[str, int, int]], elapsed: float, skipped: int) -> list[str]:
    lines = ["", "  hot keys (watch fetchers)      fetches/s   hit%"]
    if not hot:
        lines.append("  (no fetches)")
    for key, count, hits in hot:
        shown = key if len(key) <= 28 else key[:25] + "..."
        lines.append(f"  {shown:28s}  {count / elapsed:10,.1f}  {100 * hits / count:5.1f}")
    if skipped:
        lines.append(f"  ({skipped} lines skipped by the server: counts are a sample)")
    return lines


@click.command()
@click.argument("words", nargs=-1, type=click.Choice(WORDS))
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    help="stop after this many lines (0: until Ctrl-C)",
)
@click.option(
    "--seconds",
    type=Seconds(zero=True),
    default=0.0,
    help="stop after this many seconds (0: until Ctrl-C)",
)
@click.pass_context
def watch(ctx: click.Context, words: tuple[str, ...], count: int, seconds: float) -> None:
    """memcached's log stream: one line per event the WORDS ask for (none: fetchers), e.g.
    ``watch fetchers mutations``, until Ctrl-C."""
    target = ctx.obj
    try:
        client = WatchClient(target.address, words, max(target.timeout, 5.0))
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None
    deadline = time.monotonic() + seconds if seconds else None
    shown = 0
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if deadline is not None and wait == 0.0:
                break
            for line in client.lines(wait if wait is not None else 1.0):
                click.echo(line)
                shown += 1
                if count and shown >= count:
                    return
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
