"""The ``mcached`` command: memcached's flags, letters and long names, built from `Settings`.

Every option comes from a `Settings` field's metadata, so ``--help``, the parser and
``stats settings`` cannot drift apart. Values are taken as text and converted here, so a bad
value gets memcached's message and a non-zero exit at once, before anything binds.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

import click

from mcached import MEMCACHED_VERSION, __version__
from mcached.settings import (
    MB,
    Settings,
    SettingsError,
    apply_extended,
    parse_size,
    validate,
)

# Flags that turn a default-on feature off (memcached's -M, -C, -F).
_INVERTED = {"evictions", "cas_enabled", "flush_enabled"}


def _extended_help() -> str:
    lines = []
    for f in dataclasses.fields(Settings):
        if f.metadata.get("extended"):
            lines.append(f"{f.name}: {f.metadata['help']}")
    return (
        "comma separated list of extended options (memcached's -o); most options have a "
        "'no_' prefix to disable. Honoured: " + "; ".join(lines) + ". memcached's other "
        "internal options are accepted with a warning."
    )


def _build_params() -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for f in dataclasses.fields(Settings):
        md = f.metadata
        flag = md.get("flag")
        if md.get("extended") or not (flag or md.get("long")):
            continue
        # memcached's letter and long name; mcached-only options have a long name alone
        decls = [d for d in (flag, md.get("long")) if d] + [f.name]
        if f.name == "verbose":
            params.append(click.Option(decls, count=True, help=md["help"]))
        elif f.type in ("bool", bool):
            params.append(click.Option(decls, is_flag=True, default=None,
                                       help=md["help"]))
        elif f.name == "listen":
            params.append(click.Option(decls, multiple=True, metavar=md["metavar"],
                                       help=md["help"]))
        else:
            params.append(click.Option(decls, type=str, default=None,
                                       metavar=md.get("metavar"), help=md["help"]))
    params.append(click.Option(["-o", "--extended", "extended"], multiple=True,
                               metavar="<opts>", help=_extended_help()))
    return params


def _convert(values: dict[str, Any]) -> Settings:
    """Raw option text -> a validated `Settings`; raises SettingsError with memcached's words."""
    options: dict[str, Any] = {}
    warnings: list[str] = []
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name, raw in values.items():
        if name == "extended" or raw is None or raw == ():
            continue
        f = fields[name]
        if name == "verbose":
            if raw:
                options[name] = int(raw)
        elif name in _INVERTED:
            if raw:
                options[name] = False
        elif f.type in ("bool", bool):
            if raw:
                options[name] = True
        elif name == "listen":
            hosts = tuple(h.strip() for spec in raw for h in spec.split(",") if h.strip())
            options[name] = hosts
        elif name == "memory_limit":
            text = raw.strip().lower().removesuffix("m")
            if not text.isdigit():
                raise SettingsError(f"Invalid value for -m: {raw!r} (megabytes)")
            options[name] = int(text) * MB
        elif name == "item_size_max":
            options[name] = parse_size(raw, "-I value")
        elif f.type in ("float", float):
            try:
                options[name] = float(raw)
            except ValueError:
                raise SettingsError("Factor must be greater than 1", code=1) from None
        elif f.type in ("int", int):
            try:
                options[name] = int(raw, 10)
            except ValueError:
                raise SettingsError(
                    f"Invalid value for {f.metadata['flag'] or f.metadata['long']}: {raw!r} "
                    "(a number)"
                ) from None
        else:
            options[name] = raw
    for spec in values.get("extended") or ():
        apply_extended(options, spec, warnings)
    settings = Settings(**options)
    validate(settings)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    return settings


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"mcached {__version__} (memcached {MEMCACHED_VERSION} compatible)")
        ctx.exit(0)


def _command() -> click.Command:
    params = _build_params()
    params.append(click.Option(["-V", "--version"], is_flag=True, expose_value=False,
                               is_eager=True, callback=_print_version,
                               help="print version and exit"))

    def callback(**values: Any) -> Settings:
        return _convert(values)

    return click.Command(
        "mcached",
        params=params,
        callback=callback,
        help=(
            "A memcached-compatible cache daemon. Takes memcached's flags, so an existing "
            "`memcached -m 64 -p 11211 -t 4 -c 1024` command line works with mcached in its "
            "place. Nothing is kept on disk: a restart starts empty."
        ),
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def parse_settings(argv: Sequence[str]) -> Settings:
    """Parse a memcached-style command line into `Settings` (raises SettingsError/UsageError)."""
    cmd = _command()
    with cmd.make_context("mcached", list(argv)) as ctx:
        result = cmd.invoke(ctx)
    assert isinstance(result, Settings)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    from mcached.daemon import Daemon, configure_logging

    args = list(sys.argv[1:] if argv is None else argv)
    cmd = _command()
    try:
        settings = cmd.main(args, prog_name="mcached", standalone_mode=False)
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(exc.code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(64)
    if not isinstance(settings, Settings):  # --help or --version already answered
        sys.exit(0)
    configure_logging(settings.verbose)
    daemon = Daemon(settings)
    try:
        code = daemon.run()
    except OSError as exc:
        click.echo(f"failed to listen on {','.join(settings.listen)}:{settings.port}: {exc}",
                   err=True)
        sys.exit(71)  # EX_OSERR, as memcached
    sys.exit(code)
