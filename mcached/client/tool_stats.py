"""``mcached-tool HOST:PORT display|stats|settings|sizes|dump|keys|top``: what memcached's
``memcached-tool`` shows (``display`` when no command is given, as there), plus a live
view.

Rules: works against memcached as well as mcached, so it only reads ``stats``,
``stats settings|slabs|items``, ``lru_crawler metadump`` and ``get`` (and ``top`` a ``watch
fetchers`` stream, for its hot keys), through the one node client
(`mcached.client.node.NodeClient`); a node's error or an unreachable node is a one-line
message and exit 1 (click's `ClickException`), never a traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from mcached.client.node import NodeClient, NodeError
from mcached.client.tool_watch import HotKeys, Seconds, WatchClient, render_hot, watch

STATS_TIMEOUT = 5.0  # seconds: at least this for a node's reply, whatever --timeout says


@contextmanager
def _node(ctx: click.Context) -> Iterator[NodeClient]:
    """The node HOST:PORT names, closed on the way out; its errors as one-line messages."""
    target = ctx.obj
    node = NodeClient(target.address, max(target.timeout, STATS_TIMEOUT))
    try:
        yield node
    except NodeError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        node.close()


def _by_class(stats: dict[str, str], prefix: str = "") -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for name, value in stats.items():
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :]
        cls, sep, field = name.partition(":")
        if sep and cls.isdigit():
            out.setdefault(int(cls), {})[field] = value
    return out


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.1f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return f"{n}"


@click.command()
@click.pass_context
def display(ctx: click.Context) -> None:
    """The slab table, as memcached-tool prints it."""
    with _node(ctx) as node:
        slabs = _by_class(node.stats("slabs"))
        items = _by_class(node.stats("items"), "items:")
    click.echo("  #  Item_Size  Max_age   Pages   Count   Full?  Evicted Evict_Time OOM")
    for cls in sorted(set(slabs) | set(items)):
        s, it = slabs.get(cls, {}), items.get(cls, {})
        pages = int(s.get("total_pages", 0))
        chunks = int(s.get("total_chunks", 0))
        used = int(s.get("used_chunks", it.get("number", 0)))
        full = "yes" if chunks and used >= chunks and not int(s.get("free_chunks", 0)) else "no"
        click.echo(
            f"{cls:3d} {_size(float(s.get('chunk_size', 0))):>10} "
            f"{int(it.get('age', 0)):7d}s {pages:7d} {int(it.get('number', 0)):7d} "
            f"{full:>7} {int(it.get('evicted', 0)):8d} "
            f"{int(it.get('evicted_time', 0)):9d} {int(it.get('outofmemory', 0)):4d}"
        )


def _table(title: str, values: dict[str, str]) -> None:
    width = max((len(k) for k in values), default=10)
    click.echo(f"#{title}   Field{' ' * max(width - 5, 1)}   Value")
    for name, value in values.items():
        click.echo(f"{name:>{width + 3}} {value:>16}")


@click.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """General statistics."""
    with _node(ctx) as node:
        _table(f"{ctx.obj.address[0]}:{ctx.obj.address[1]}", node.stats())


@click.command()
@click.pass_context
def settings(ctx: click.Context) -> None:
    """The server's settings (stats settings)."""
    with _node(ctx) as node:
        _table(f"{ctx.obj.address[0]}:{ctx.obj.address[1]}", node.stats("settings"))


@click.command()
@click.pass_context
def sizes(ctx: click.Context) -> None:
    """The item size histogram (stats sizes: empty unless the server tracks sizes)."""
    with _node(ctx) as node:
        rows = node.stats("sizes")
    click.echo(f"#{ctx.obj.address[0]}:{ctx.obj.address[1]}   Size   Count")
    for size, count in rows.items():
        click.echo(f"{size:>24} {count:>12}")


@click.command()
@click.argument("limit", type=int, required=False)
@click.pass_context
def keys(ctx: click.Context, limit: int | None) -> None:
    """Every key, a metadump line each (key=, exp=, la=, cas=, fetch=, cls=, size=), as
    memcached-tool keys prints them; LIMIT keys at most."""
    if limit is not None and limit < 1:
        raise click.UsageError(f"invalid limit {limit}: at least 1")
    with _node(ctx) as node:
        lines = node.lines(b"lru_crawler metadump all")
    click.echo(
        "Dumping memcache keys" + (f" (limiting to {limit} keys)" if limit else ""), err=True
    )
    for line in [ln for ln in lines if ln.startswith(b"key=")][:limit]:
        click.echo(line.decode("ascii", "replace"))


@click.command()
@click.argument("limit", type=int, required=False)
@click.pass_context
def dump(ctx: click.Context, limit: int | None) -> None:
    """Every key and value as a replayable stream of `add` commands (memcached-tool dump);
    LIMIT keys at most. Keys no text command can carry (a binary protocol key with a space
    or a control byte) are left out, and counted."""
    if limit is not None and limit < 1:
        raise click.UsageError(f"invalid limit {limit}: at least 1")
    out = sys.stdout.buffer
    with _node(ctx) as node:
        keys, untold = node.metadump()
        if limit:
            keys = keys[:limit]
        click.echo(f"Dumping memcache contents ({len(keys)} keys)", err=True)
        if untold:
            click.echo(
                f"left out {untold} keys with spaces or control bytes (no text command "
                "can carry them)",
                err=True,
            )
        for i in range(0, len(keys), 100):
            batch = keys[i : i + 100]
            exp = dict(batch)
            for key, flags, value in node.get_many([k for k, _ in batch]):
                e = max(exp.get(key, 0), 0)
                out.write(b"add %b %b %d %d\r\n%b\r\n" % (key, flags, e, len(value), value))
        out.flush()


TOP_COUNTERS = (
    ("get", "cmd_get"),
    ("set", "cmd_set"),
    ("delete", ("delete_hits", "delete_misses")),
    ("incr", ("incr_hits", "incr_misses")),
    ("decr", ("decr_hits", "decr_misses")),
    ("cas", ("cas_hits", "cas_misses", "cas_badval")),
    ("touch", "cmd_touch"),
    ("flush", "cmd_flush"),
)


def _count(stats: dict[str, str], names: str | tuple[str, ...]) -> int:
    if isinstance(names, str):
        names = (names,)
    return sum(int(stats.get(n, 0)) for n in names)


def render_top(
    address: str, prev: dict[str, str], cur: dict[str, str], slabs: dict[str, str], elapsed: float
) -> str:
    """One screen of `top` from two stats snapshots `elapsed` seconds apart."""
    lines = [
        f"mcached-tool top  {address}  version {cur.get('version', '?')}  "
        f"uptime {cur.get('uptime', '?')}s  (Ctrl-C quits)",
        "",
    ]
    rates = []
    for label, names in TOP_COUNTERS:
        rates.append(f"{label} {(_count(cur, names) - _count(prev, names)) / elapsed:,.0f}/s")
    lines.append("ops:  " + "  ".join(rates))
    hits = int(cur.get("get_hits", 0)) - int(prev.get("get_hits", 0))
    gets = int(cur.get("cmd_get", 0)) - int(prev.get("cmd_get", 0))
    total_hits, total_gets = int(cur.get("get_hits", 0)), int(cur.get("cmd_get", 0))
    ratio_now = f"{100 * hits / gets:.1f}%" if gets else "-"
    ratio_all = f"{100 * total_hits / total_gets:.1f}%" if total_gets else "-"
    lines.append(f"hit ratio: {ratio_now} now, {ratio_all} since start")
    lines.append(
        f"connections: {cur.get('curr_connections', '?')} open, "
        f"{cur.get('total_connections', '?')} total, "
        f"{cur.get('rejected_connections', '0')} rejected"
    )
    evict_rate = (int(cur.get("evictions", 0)) - int(prev.get("evictions", 0))) / elapsed
    lines.append(
        f"memory: {_size(int(cur.get('bytes', 0)))} of "
        f"{_size(int(cur.get('limit_maxbytes', 0)))} in {cur.get('curr_items', 0)} "
        f"items; evictions {cur.get('evictions', 0)} ({evict_rate:,.0f}/s)"
    )
    rate_in = (int(cur.get("bytes_read", 0)) - int(prev.get("bytes_read", 0))) / elapsed
    rate_out = (int(cur.get("bytes_written", 0)) - int(prev.get("bytes_written", 0))) / elapsed
    lines.append(f"network: in {_size(rate_in)}/s  out {_size(rate_out)}/s")
    lines.append("")
    lines.append("  class  chunk_size   chunks_used   memory")
    for cls, s in sorted(_by_class(slabs).items()):
        used = int(s.get("used_chunks", 0))
        size = int(s.get("chunk_size", 0))
        lines.append(f"  {cls:5d}  {size:10d}   {used:11d}   {_size(used * size)}")
    return "\n".join(lines)


@click.command()
@click.option(
    "--interval", type=Seconds(), default=1.0, show_default=True, help="seconds between refreshes"
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    help="stop after this many refreshes (0: until Ctrl-C)",
)
@click.option(
    "--hot-keys",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="show this many of the most fetched keys (from `watch fetchers`; 0: none)",
)
@click.pass_context
def top(ctx: click.Context, interval: float, count: int, hot_keys: int) -> None:
    """A live view: ops/s by command, hit ratio, connections, memory by slab class, and
    the hot keys (a `watch fetchers` stream, while top runs)."""
    address = f"{ctx.obj.address[0]}:{ctx.obj.address[1]}"
    tty = sys.stdout.isatty()
    watcher: WatchClient | None = None
    hot = HotKeys()
    if hot_keys:
        try:
            watcher = WatchClient(ctx.obj.address, ("fetchers",), STATS_TIMEOUT)
        except NodeError:
            watcher = None  # a server without watch: top without hot keys
    with _node(ctx) as node:
        try:
            prev, t0 = node.stats(), time.monotonic()
            n = 0
            while count == 0 or n < count:
                _wait(watcher, hot, interval)
                cur, t1 = node.stats(), time.monotonic()
                elapsed = max(t1 - t0, 1e-6)
                screen = render_top(address, prev, cur, node.stats("slabs"), elapsed)
                if watcher is not None:
                    screen += "\n".join(render_hot(hot.top(hot_keys), elapsed, hot.skipped))
                    hot.clear()
                if tty:
                    click.echo("\x1b[H\x1b[2J" + screen)
                else:
                    click.echo(screen + "\n")
                prev, t0 = cur, t1
                n += 1
        except KeyboardInterrupt:
            pass
        finally:
            if watcher is not None:
                watcher.close()


def _wait(watcher: WatchClient | None, hot: HotKeys, interval: float) -> None:
    """`interval` seconds, reading the watcher's lines meanwhile."""
    if watcher is None:
        time.sleep(interval)
        return
    deadline = time.monotonic() + interval
    while (left := deadline - time.monotonic()) > 0:
        try:
            hot.feed(watcher.lines(left))
        except NodeError:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return


COMMANDS = (display, stats, settings, sizes, dump, keys, top, watch)
