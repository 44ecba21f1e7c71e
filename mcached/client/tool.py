"""``mcached-tool HOST:PORT COMMAND``: look at and manage running nodes (memcached ships
``memcached-tool``; this is ours).

The group takes the node first, as memcached-tool does, then a command. Commands so far:

* ``cluster``: the configuration the node serves, every listed node's state, and the health
  of every node as each node's own checks see it (``stats cluster``).
* ``cluster set|add|remove NODE...``: new membership, pushed with ``config set cluster`` to
  every node of the old and the new list (``--endpoint-only``: to HOST:PORT alone), with
  version max(versions seen) + 1, so every node serves the same bytes. The old list is the
  one the endpoint *lists* (nodes its health checks hide included: a change never drops them
  by accident). ``add --warm`` first copies the items that will map to the new nodes, and
  ``remove --warm`` the leaving nodes' items to their new owners (`mcached.client.warm`).
* ``cluster revert``: ``config delete cluster`` on the same nodes: each goes back to its
  ``--cluster-file``, ``--cluster-dns`` or itself.

Exit status: 0 when everything asked for worked (and, for ``cluster``, every node is up and
serves the same configuration); 1 when some node failed; 2 for bad usage or an endpoint that
cannot be read. Only plain sockets (`mcached.client.node`): no pymemcache needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import click

from mcached import __version__
from mcached.addr import format_address, parse_address
from mcached.client.hashing import Ring
from mcached.client.node import NodeClient, NodeError, ReplyError
from mcached.client.tool_watch import Seconds
from mcached.client.warm import warm
from mcached.cluster.config import ClusterConfig, Node, canonical, format_data, parse_node
from mcached.cluster.sources import resolve_name

Address = tuple[str, int]


class EndpointUnreadable(click.ClickException):
    exit_code = 2


@dataclass
class Target:
    address: Address
    timeout: float

    def endpoint(self, address: Address | None = None) -> NodeClient:
        return NodeClient(address or self.address, self.timeout)

    def config(self) -> ClusterConfig:
        """The endpoint's configuration, or exit 2 with the reason."""
        try:
            with self.endpoint() as ep:
                return ep.config_get()
        except NodeError as exc:
            raise EndpointUnreadable(
                f"{format_address(self.address)}: cannot read the cluster configuration: {exc}"
            ) from None

    def listed(self, config: ClusterConfig) -> tuple[tuple[Node, ...], dict[str, str]]:
        """The nodes the endpoint lists (served, and hidden by its health checks) and its
        ``stats cluster`` rows; the served nodes alone from a server without them."""
        try:
            with self.endpoint() as ep:
                rows = ep.stats("cluster")
        except NodeError:
            rows = {}
        return _listed_in(rows) or config.nodes, rows


def _listed_in(rows: dict[str, str]) -> tuple[Node, ...]:
    out = []
    for name in rows:
        if name.startswith("node:"):
            try:
                out.append(parse_node(name[5:]))
            except ValueError:
                continue
    return canonical(out)


def _address(ctx: click.Context, param: click.Parameter, value: str) -> Address:
    try:
        return parse_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(
    "mcached-tool",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    invoke_without_command=True,
)
@click.argument("address", metavar="HOST:PORT", callback=_address)
@click.option(
    "--timeout",
    type=Seconds(),
    default=2.0,
    show_default=True,
    help="seconds per node request (display, stats, settings, dump and top wait at least 5)",
)
@click.version_option(__version__, "-V", "--version", prog_name="mcached-tool")
@click.pass_context
def main(ctx: click.Context, address: Address, timeout: float) -> None:
    """Look at and manage the mcached (or memcached) node at HOST:PORT (``display`` when no
    command is given, as memcached-tool does)."""
    ctx.obj = Target(address, timeout)
    if ctx.invoked_subcommand is None:
        ctx.invoke(_DISPLAY)


# ---- cluster ----


@main.group(invoke_without_command=True)
@click.pass_context
def cluster(ctx: click.Context) -> None:
    """Show the discovered nodes and each node's health.

    The nodes are what HOST:PORT answers to `config get cluster` (the ElastiCache
    auto-discovery endpoint). Each node is then asked for its version, stats and its own
    configuration; CONFIG says whether it serves the same one. Exits 1 if a node is down or
    serves a different configuration.
    """
    if ctx.invoked_subcommand is not None:
        return
    target: Target = ctx.obj
    config = target.config()
    listed, rows = target.listed(config)
    nodes = canonical(listed + config.nodes)
    n = len(config.nodes)
    head = (
        f"{format_address(target.address)}: configuration version {config.version}, "
        f"{n} node{'s' if n != 1 else ''}"
    )
    hidden = [node for node in nodes if node not in config.nodes]
    if hidden:
        head += f" ({len(hidden)} more listed, hidden by its health checks)"
    click.echo(head)
    probes = {node: _probe(target, node, config) for node in nodes}
    width = max([len("NODE")] + [len(str(node)) for node in nodes])
    click.echo(
        f"{'NODE':<{width}}  {'STATE':<5}  {'LATENCY':>8}  {'VERSION':<8}  {'UPTIME':>8}  "
        f"{'ITEMS':>8}  {'CONNS':>5}  {'HEALTH':<12}  CONFIG"
    )
    healthy = True
    for node in nodes:
        row = probes[node]
        healthy = healthy and row.ok
        seen = _seen_by_others(node, probes)
        click.echo(f"{str(node):<{width}}  {row.text.replace('<HEALTH>', f'{seen:<12}')}")
    _health_section(rows, probes)
    if not healthy:
        ctx.exit(1)


@dataclass
class Probe:
    ok: bool
    text: str
    view: dict[str, str] = field(default_factory=dict)  # its stats cluster rows
    error: str = ""


def _uptime(seconds: str) -> str:
    if not seconds.isdigit():
        return "?"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _probe(target: Target, node: Node, expected: ClusterConfig) -> Probe:
    """version + stats + config get + stats cluster on one node, on one connection."""
    start = time.monotonic()
    try:
        with target.endpoint(node.address) as ep:
            version = ep.version()
            latency = (time.monotonic() - start) * 1000
            try:
                stats = ep.stats()
            except ReplyError:  # up, but keeps its stats to itself (-Y before a login)
                stats = {}
            try:
                theirs: ClusterConfig | None = ep.config_get()
            except NodeError:
                theirs = None
            try:
                view = ep.stats("cluster") if theirs is not None else {}
            except NodeError:
                view = {}
    except NodeError as exc:
        dash = "-"
        return Probe(
            False,
            f"{'DOWN':<5}  {dash:>8}  {dash:<8}  {dash:>8}  {dash:>8}  {dash:>5}  <HEALTH>  "
            f"{dash}  ({exc})",
            error=str(exc),
        )
    if theirs is None:
        same, agree = "none", False
    elif theirs == expected:
        same, agree = "same", True
    elif theirs.nodes == expected.nodes:
        same, agree = f"same nodes, version {theirs.version}", True
    else:
        same, agree = f"DIFFERS: version {theirs.version}, {len(theirs.nodes)} nodes", False
    return Probe(
        agree,
        f"{'up':<5}  {latency:>6.1f}ms  {version:<8}  {_uptime(stats.get('uptime', '')):>8}  "
        f"{stats.get('curr_items', '?'):>8}  {stats.get('curr_connections', '?'):>5}  "
        f"<HEALTH>  {same}",
        view,
    )


def _seen_by_others(node: Node, probes: dict[Node, Probe]) -> str:
    """How the other nodes' checks see `node`: ``up:3``, ``down:2,up:1``... (``-``: no node
    reports on it)."""
    counts: dict[str, int] = {}
    for other, probe in probes.items():
        if other == node:
            continue
        value = probe.view.get(f"node:{node}")
        if value is None or value == "self":
            continue
        state = value.split(" ", 1)[0]
        counts[state] = counts.get(state, 0) + 1
    if not counts:
        return "-"
    return ",".join(f"{s}:{n}" for s, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))


def _health_section(rows: dict[str, str], probes: dict[Node, Probe]) -> None:
    """One line per node: what its own checks see that is not ``up``."""
    if rows.get("health") is None:
        return
    if rows.get("health") == "off":
        click.echo("health checks: off on the endpoint")
    else:
        click.echo(
            f"health as each node sees it (checks every {rows.get('health_interval', '?')}s; "
            f"{rows.get('health_failures', '?')} failed in a row hide a node, "
            f"{rows.get('health_rise', '?')} passed bring it back):"
        )
    for node, probe in probes.items():
        if not probe.view:
            what = f"unreachable ({probe.error})" if probe.error else "no health view"
            click.echo(f"  {node}: {what}")
            continue
        if probe.view.get("health") == "off":
            click.echo(f"  {node}: health checks off")
            continue
        notes = []
        for name, value in probe.view.items():
            if not name.startswith("node:") or value == "self":
                continue
            parts = value.split(" ", 5)
            state = parts[0]
            if state == "up":
                continue
            fails = parts[1] if len(parts) > 1 else "?"
            age = parts[4] if len(parts) > 4 else "?"
            why = f" ({parts[5]})" if len(parts) > 5 else ""
            hidden = ", hidden" if state == "down" else ""
            notes.append(f"{name[5:]} {state}{hidden} for {age}s, {fails} failed in a row{why}")
        click.echo(f"  {node}: " + ("; ".join(notes) if notes else "every other node up"))


# ---- changing membership ----


def _parse_new(tokens: tuple[str, ...]) -> list[Node]:
    """NODE arguments -> nodes with their ip resolved here (the server never resolves a set)."""
    nodes = []
    for token in tokens:
        try:
            node = parse_node(token, resolve=resolve_name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="NODE") from None
        if not node.ip:
            raise click.BadParameter(
                f"{node.host} does not resolve; give its address too: {node.host}|<ip>|{node.port}",
                param_hint="NODE",
            )
        nodes.append(node)
    return nodes


def _matches(node: Node, spec: Node) -> bool:
    if node.port != spec.port:
        return False
    if spec.ip and spec.host != spec.ip:  # host|ip|port, exactly
        return node == spec
    return spec.host in (node.host, node.ip)


def _push(
    target: Target,
    ctx: click.Context,
    change: Callable[[tuple[Node, ...]], tuple[Node, ...]],
    endpoint_only: bool,
    before: Callable[[ClusterConfig, tuple[Node, ...]], None] | None = None,
) -> None:
    """`change(listed)` -> the new list; `before(served config, new list)` runs before the
    new list is announced (``--warm``)."""
    current = target.config()
    listed, _ = target.listed(current)
    new = change(listed)
    if not new:
        raise click.UsageError("that would leave the cluster with no node")
    addresses = [target.address]
    if not endpoint_only:
        addresses += [n.address for n in listed + new]
    addresses = list(dict.fromkeys(addresses))
    # The version: one more than any node serves, so every node moves to the same bytes and
    # clients that only act on a higher version (the Java client) act.
    version = current.version
    for address in addresses[1:]:
        try:
            with target.endpoint(address) as ep:
                version = max(version, ep.config_get().version)
        except NodeError:
            pass
    if before is not None:
        before(current, new)
    data = format_data(version + 1, new)
    click.echo(f"configuration version {version + 1}: {data.decode().splitlines()[1]}")
    failed = False
    for address in addresses:
        try:
            with target.endpoint(address) as ep:
                reply = ep.config_set(data).decode("ascii", "replace").strip()
        except NodeError as exc:
            reply = f"unreachable: {exc}"
        if reply != "STORED":
            failed = True
            if "not allowed" in reply:
                reply += " (start mcached with --enable-config-set)"
        click.echo(f"  {format_address(address)}: {reply}")
    if failed:
        ctx.exit(1)


_ENDPOINT_ONLY = click.option(
    "--endpoint-only",
    is_flag=True,
    help="send to HOST:PORT alone, not to every node of the old and new lists",
)


def _warm_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option(
        "--hash-by",
        type=click.Choice(["ip", "host"]),
        default="ip",
        show_default=True,
        help="how the clients name nodes in their ring: by ip (ClusterClient, "
        "django-elastipymemcache) or by hostname (ClusterClient(use_ip=False))",
    )(f)
    f = click.option(
        "--rate",
        type=click.FloatRange(min=0),
        default=5000.0,
        show_default=True,
        help="items copied per second at most (0: no bound)",
    )(f)
    return f


def _warmer(
    target: Target,
    sources: Callable[[ClusterConfig, tuple[Node, ...]], list[Node]],
    rate: float,
    hash_by: str,
) -> Callable[[ClusterConfig, tuple[Node, ...]], None]:
    """The `before` step of ``--warm``: the clients' ring now (the served nodes) and after
    (the served nodes with the change), and the items that change node between them."""

    def before(current: ClusterConfig, new: tuple[Node, ...]) -> None:
        # nodes the endpoint's health checks hide stay out of the clients' ring
        hidden = set(target.listed(current)[0]) - set(current.nodes)
        after = tuple(n for n in new if n not in hidden)
        old_ring, new_ring = Ring(current.nodes, hash_by), Ring(after, hash_by)
        click.echo(
            f"warm: {len(current.nodes)} -> {len(after)} nodes, clients hashing by {hash_by} "
            f"(pymemcache HashClient's rendezvous); at most {rate:g} items/s"
            if rate
            else f"warm: {len(current.nodes)} -> {len(after)} nodes, no rate bound"
        )
        report = warm(
            sources(current, after),
            old_ring,
            new_ring,
            lambda node: target.endpoint(node.address),
            rate=rate,
            echo=click.echo,
        )
        click.echo(report.line())

    return before


@cluster.command("set")
@click.argument("nodes", nargs=-1, required=True, metavar="NODE...")
@_ENDPOINT_ONLY
@click.pass_context
def cluster_set(ctx: click.Context, nodes: tuple[str, ...], endpoint_only: bool) -> None:
    """Make NODE... the whole membership (host:port, [v6]:port or host|ip|port)."""
    new = canonical(_parse_new(nodes))
    _push(ctx.obj, ctx, lambda listed: new, endpoint_only)


@cluster.command("add")
@click.argument("nodes", nargs=-1, required=True, metavar="NODE...")
@_ENDPOINT_ONLY
@click.option(
    "--warm",
    is_flag=True,
    help="first copy the items the clients' hashing will send to NODE... from the nodes "
    "that hold them now (flags and expiry kept), then announce",
)
@_warm_options
@click.pass_context
def cluster_add(
    ctx: click.Context,
    nodes: tuple[str, ...],
    endpoint_only: bool,
    warm: bool,
    rate: float,
    hash_by: str,
) -> None:
    """Add NODE... to the nodes HOST:PORT lists."""
    extra = _parse_new(nodes)
    before = None
    if warm:
        before = _warmer(
            ctx.obj,
            lambda current, after: [n for n in current.nodes if n not in extra],
            rate,
            hash_by,
        )
    _push(ctx.obj, ctx, lambda listed: canonical(listed + tuple(extra)), endpoint_only, before)


@cluster.command("remove")
@click.argument("nodes", nargs=-1, required=True, metavar="NODE...")
@_ENDPOINT_ONLY
@click.option(
    "--warm",
    is_flag=True,
    help="first copy the leaving nodes' items to the nodes the clients' hashing will send "
    "them to (flags and expiry kept), then announce",
)
@_warm_options
@click.pass_context
def cluster_remove(
    ctx: click.Context,
    nodes: tuple[str, ...],
    endpoint_only: bool,
    warm: bool,
    rate: float,
    hash_by: str,
) -> None:
    """Remove NODE... (host:port, ip:port or host|ip|port) from the nodes HOST:PORT lists."""
    try:
        specs = [parse_node(token) for token in nodes]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NODE") from None

    def leaving(node: Node) -> bool:
        return any(_matches(node, s) for s in specs)

    def change(listed: tuple[Node, ...]) -> tuple[Node, ...]:
        for spec, token in zip(specs, nodes, strict=True):
            if not any(_matches(n, spec) for n in listed):
                raise click.BadParameter(f"{token} is not in the cluster", param_hint="NODE")
        return tuple(n for n in listed if not leaving(n))

    before = None
    if warm:
        before = _warmer(
            ctx.obj,
            lambda current, after: [n for n in current.nodes if leaving(n)],
            rate,
            hash_by,
        )
    _push(ctx.obj, ctx, change, endpoint_only, before)


@cluster.command("revert")
@_ENDPOINT_ONLY
@click.pass_context
def cluster_revert(ctx: click.Context, endpoint_only: bool) -> None:
    """Drop what `cluster set|add|remove` stored (config delete cluster): each node serves its
    --cluster-file, --cluster-dns or itself again."""
    target: Target = ctx.obj
    listed, _ = target.listed(target.config())  # served, and hidden by health checks
    failed = False

    def revert(address: Address) -> None:
        nonlocal failed
        try:
            with target.endpoint(address) as ep:
                reply = ep.config_delete().decode("ascii", "replace").strip()
        except NodeError as exc:
            reply = f"unreachable: {exc}"
        if reply not in ("DELETED", "NOT_FOUND"):
            failed = True
        click.echo(f"  {format_address(address)}: {reply}")

    revert(target.address)
    if not endpoint_only:
        # the endpoint serves its source again: what it lists now names the nodes a
        # `cluster remove` left out of the override, which it was stored on too
        source, _ = target.listed(target.config())
        for address in dict.fromkeys(n.address for n in listed + source):
            if address != target.address:
                revert(address)
    if failed:
        ctx.exit(1)


# display, stats, settings, sizes, dump, keys, top (memcached-tool's own commands) live in
# tool_stats, watch in tool_watch
from mcached.client.tool_stats import COMMANDS as _STATS_COMMANDS  # noqa: E402
from mcached.client.tool_stats import display as _DISPLAY  # noqa: E402

for _command in _STATS_COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":
    main()
