"""The ``mcached`` command: memcached's flags, letters and long names, built from `Settings`.

Every option comes from a setting's declaration (`mcached.settings.OPTIONS`): its flag, help,
how it is given, and how its text is read and checked. So ``--help``, the parser, the ``-o``
table and ``stats settings`` cannot drift apart, and nothing here names a setting. Values are
taken as text and read by each setting's own parser, so a bad value gets memcached's message
and a non-zero exit at once, before anything binds.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from mcached import MEMCACHED_VERSION, __version__
from mcached.errors import BindError
from mcached.settings import (
    COUNT,
    FLAG,
    LIST,
    OPTIONS,
    REREAD,
    Settings,
    SettingsError,
    convert,
    validate,
)


def _extended_help() -> str:
    lines = [f"{o.name}: {o.help}" for o in OPTIONS.values() if o.extended]
    return (
        "comma separated list of extended options (memcached's -o); most options have a "
        "'no_' prefix to disable. Honoured: " + "; ".join(lines) + ". memcached's other "
        "internal options are accepted with a warning."
    )


def _build_params() -> list[click.Parameter]:
    params: list[click.Parameter] = []
    for o in OPTIONS.values():
        if o.extended or not (o.flag or o.long):
            continue
        # memcached's letter and long name; mcached-only options have a long name alone
        decls = [d for d in (o.flag, o.long) if d] + [o.name]
        if o.take == COUNT:
            params.append(click.Option(decls, count=True, help=o.help))
        elif o.take == FLAG:
            params.append(click.Option(decls, is_flag=True, default=None, help=o.help))
        elif o.take == LIST:
            params.append(click.Option(decls, multiple=True, metavar=o.metavar, help=o.help))
        else:
            params.append(
                click.Option(decls, type=str, default=None, metavar=o.metavar, help=o.help)
            )
    params.append(
        click.Option(
            ["-o", "--extended", "extended"], multiple=True, metavar="<opts>", help=_extended_help()
        )
    )
    return params


def _convert(values: dict[str, Any]) -> Settings:
    """Raw option text -> a validated `Settings`; raises SettingsError with memcached's words."""
    raw = {k: v for k, v in values.items() if k != "extended"}
    options, warnings = convert(raw, tuple(values.get("extended") or ()))
    settings = Settings(**options)
    validate(settings)
    for w in warnings:
        click.echo(w, err=True)
    return settings


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"mcached {__version__} (memcached {MEMCACHED_VERSION} compatible)")
        ctx.exit(0)


def _exit_quietly(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.exit(0)


def _eager_flag(
    names: list[str],
    callback: Callable[[click.Context, click.Parameter, bool], None],
    help: str | None = None,
) -> click.Option:
    """A flag handled as it is read, before any other (-h, -V)."""
    return click.Option(
        names, is_flag=True, expose_value=False, is_eager=True, callback=callback, help=help
    )


def _command(quiet: bool = False) -> click.Command:
    """The command line's parser; `quiet`, for a caller that is no command line, makes -h
    and -V exit without printing (the calling program's stdout is not theirs to write)."""
    params = _build_params()
    params.append(
        click.Option(
            ["--config"],
            metavar="<file>",
            expose_value=False,
            help="read flags from <file> (the format of Debian's "
            "/etc/memcached.conf); command-line flags override it",
        )
    )
    version = _exit_quietly if quiet else _print_version
    params.append(_eager_flag(["-V", "--version"], version, "print version and exit"))
    if quiet:  # (click's own -h prints)
        params.append(_eager_flag(["-h", "--help"], _exit_quietly))

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
        # words that are no option, and all after ``--``, are ignored, as memcached's getopt
        # loop leaves them
        context_settings={
            "help_option_names": [] if quiet else ["-h", "--help"],
            "max_content_width": 100,
            "allow_extra_args": True,
        },
    )


def read_config_file(path: str) -> list[str]:
    """Flags from a file in the format of Debian's ``/etc/memcached.conf``.

    One flag per line (``-m 64``, ``-l 127.0.0.1``, ``-v``), ``#`` comments and blank lines
    ignored; Debian's ``logfile <path>`` line means ``--log-file <path>``; ``-d`` and ``-h``
    lines are skipped, as Debian's start-memcached and systemd wrapper skip them.
    """
    args: list[str] = []
    try:
        # bytes as the file system's names hold them (surrogateescape): a Latin-1 comment,
        # or a path in another encoding, reads (it was a UnicodeDecodeError's traceback)
        with open(path, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
            lines = f.read().split("\n")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}", code=66) from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            words = shlex.split(text, comments=True)
        except ValueError as exc:
            raise SettingsError(f"{path}:{number}: {exc}") from None
        if not words:
            continue
        if words[0] == "logfile" and len(words) == 2:
            args += ["--log-file", words[1]]
        elif words[0] in ("-d", "-h"):
            continue  # Debian's readers of the file skip these (the service manager detaches)
        elif words[0].startswith("-"):
            args += words
        else:
            raise SettingsError(f"{path}:{number}: not a flag: {text!r}")
    return args


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take ``--config FILE`` (or ``--config=FILE``) out of `argv`."""
    out: list[str] = []
    config = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise SettingsError("--config needs a file name")
            config = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return config, out


def _raw_params(args: list[str], quiet: bool = False) -> dict[str, Any]:
    cmd = _command(quiet)
    ctx = cmd.make_context("mcached", _getopt_longs(list(args), cmd))
    return dict(ctx.params)


def _getopt_longs(args: list[str], cmd: click.Command) -> list[str]:
    """Long options as getopt_long takes them: a unique abbreviation (``--thr=2``), and
    ``--verbose=N``, an optional value memcached ignores (one more -v)."""
    longs: set[str] = set()
    counts: set[str] = set()
    for p in cmd.params:
        if isinstance(p, click.Option):
            names = [n for n in p.opts + p.secondary_opts if n.startswith("--")]
            longs.update(names)
            if p.count:
                counts.update(names)
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            if name not in longs:
                found = [n for n in longs if n.startswith(name)]
                if len(found) == 1:
                    name = found[0]
            arg = name if name in counts else name + eq + value
        out.append(arg)
    return out


def _is_set(value: Any) -> bool:
    return value is not None and value != () and value != 0


def parse_settings(argv: Sequence[str], quiet: bool = False) -> Settings:
    """A memcached-style command line (with an optional ``--config FILE`` whose flags the
    command line overrides) -> `Settings`. Raises SettingsError or click's UsageError;
    -h and -V print (unless `quiet`) and raise click's Exit."""
    config, args = _split_config(list(argv))
    params = _raw_params(args, quiet)
    if config:
        # the command line's flags after the file's, as Debian's wrapper joins them: a
        # value given again wins, lists (-o, -l) add up
        merged = _raw_params(read_config_file(config), quiet)
        for k, v in params.items():
            if isinstance(v, tuple) and v and merged.get(k):
                merged[k] = merged[k] + v
            elif _is_set(v):
                merged[k] = v
        params = merged
    return _convert(params)


def flag_error(exc: click.NoSuchOption | click.BadOptionUsage) -> str:
    """getopt's words for a flag it does not know, or one without its argument."""
    name = exc.option_name
    if isinstance(exc, click.NoSuchOption):
        if name.startswith("--"):
            return f"unrecognized option '{name}'"
        return f"invalid option -- '{name[1:]}'"
    if name.startswith("--"):
        return f"option '{name}' requires an argument"
    return f"option requires an argument -- '{name[1:]}'"


def settings_of(argv: Sequence[str]) -> Settings:
    """`parse_settings` for a caller that is no command line (``serve()``): every refusal is
    a SettingsError, a flag's in getopt's words."""
    try:
        # -h and -V only raise here: the calling program's stdout is its own (redirecting
        # sys.stdout around the parse swapped it for the whole process, and two threads
        # starting servers at once could leave a buffer in its place for good)
        return parse_settings(argv, quiet=True)
    except (click.NoSuchOption, click.BadOptionUsage) as exc:
        raise SettingsError(flag_error(exc)) from None
    except click.ClickException as exc:
        raise SettingsError(exc.format_message()) from None
    except click.exceptions.Exit:  # -h, -V
        raise SettingsError("-h and -V print and exit: they start no server") from None


def main(argv: Sequence[str] | None = None) -> None:
    from mcached import process, systemd
    from mcached.daemon import Daemon, configure_logging, gil_enabled

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(args)
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        sys.exit(exc.code)
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except (click.NoSuchOption, click.BadOptionUsage) as exc:
        # getopt's words, then memcached's, and its exit status
        click.echo(f'mcached: {flag_error(exc)}\nIllegal argument "?"', err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(64)
    for o in OPTIONS.values():
        value = getattr(settings, o.name)
        if value and (o.path is True or (o.path == REREAD and settings.daemonize)):
            # -d changes directory to /: make paths absolute first
            settings = settings.replace(**{o.name: os.path.abspath(value)})
    try:
        log_file = configure_logging(settings.verbose, settings.log_file)
    except OSError as exc:
        click.echo(f"cannot open log file {settings.log_file}: {exc.strerror}", err=True)
        sys.exit(73)  # EX_CANTCREAT
    process.fix_malloc_threshold()
    if settings.enable_coredumps:
        process.raise_core_limit()
    # -c: room for that many connections in one process, and the daemon's own descriptors,
    # before anything is opened (memcached's words and EX_OSERR when it cannot)
    needed = process.open_files_needed(
        settings.max_connections, settings.threads, len(settings.listen)
    )
    got = process.raise_open_files(needed)
    if got < settings.max_connections:  # memcached's test: -c itself
        click.echo(
            "failed to set rlimit for open files. Try starting as root or requesting smaller "
            "maxconns value.",
            err=True,
        )
        sys.exit(71)
    if got < needed:
        click.echo(
            f"warning: the open files limit is {got}: -c {settings.max_connections} and "
            f"mcached's own descriptors need {needed}; connections near -c may wait to be "
            "accepted (raise the hard limit: ulimit -Hn, LimitNOFILE=)",
            err=True,
        )
    under_systemd = bool(os.environ.get("NOTIFY_SOCKET"))
    if settings.daemonize and under_systemd:
        click.echo("warning: -d ignored: running under systemd, which supervises mcached", err=True)
    if os.geteuid() == 0 and not settings.user:
        logging.getLogger("mcached").info(
            "running as root without -u: consider -u <user> to drop privileges"
        )
    try:
        passed = systemd.listen_fds()
    except systemd.ActivationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(78)  # EX_CONFIG: the unit's sockets
    if passed and settings.unix_socket:
        click.echo(
            "socket activation passed TCP sockets, but -s serves a unix socket in their "
            "place: drop one",
            err=True,
        )
        sys.exit(78)
    try:
        daemon = Daemon(settings, tcp_sockets=passed or None, processes=gil_enabled())
    except SettingsError as exc:  # -Y file, -Z certificates: memcached's messages and codes
        click.echo(str(exc), err=True)
        sys.exit(exc.code)
    if log_file is not None:
        daemon.reloadables.append(log_file)

    pidfile_written = False

    def before_start() -> None:
        # bound, no thread started yet: detach, give up root, then record the pid (as
        # memcached does: the file is the -u user's, who can remove it at exit)
        nonlocal pidfile_written
        if settings.daemonize and not under_systemd:
            process.daemonize(keep_stdio=settings.verbose > 0 and not settings.log_file)
        if settings.lock_memory:
            daemon.memory_locked = process.lock_memory()
        if settings.user:
            process.drop_privileges(settings.user)
            daemon.check_files_as_user()
        if settings.pidfile:
            pidfile_written = process.write_pidfile(settings.pidfile)

    try:
        code = daemon.run(before_start=before_start)
        # stopped: a reload or a graceful stop asked for now has nothing left to do. As the
        # interpreter exits it sets its signals' handlers back to the default, which would
        # end the process by that signal instead of its exit status (seen under a storm of
        # SIGHUPs at SIGTERM); ignored signals are left ignored
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)
        daemon.close()  # the mappings, the board's sockets and lock file: none left open
    except SettingsError as exc:  # (before_start's: a -Y file the -u user cannot read)
        click.echo(str(exc), err=True)
        sys.exit(exc.code)
    except OSError as exc:
        if isinstance(exc, BindError):
            where = exc.where
        elif settings.unix_socket:
            where = f"UNIX socket {settings.unix_socket}"
        else:
            where = f"{','.join(settings.listen)} port {settings.port}"
        click.echo(f"failed to listen on {where}: {exc.strerror or exc}", err=True)
        sys.exit(71)  # EX_OSERR, as memcached
    finally:
        if pidfile_written:
            process.remove_pidfile(settings.pidfile)
    sys.exit(code)
