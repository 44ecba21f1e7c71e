"""``python -m mcached``, and the ``mcached`` command (`run`).

A reload (SIGHUP) or a graceful stop (SIGUSR1) that came while the program still imports
would end it by the signal's default action: a log rotation's ``kill -HUP`` racing a restart
killed the daemon it meant to reload. Both are blocked here, before the imports, and stay
pending until the daemon has its handlers (`Daemon.run` unblocks them); only the
interpreter's own start-up, before this module runs, is left."""

import signal

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGUSR1})

from mcached.cli import main  # noqa: E402  (after the block: the imports take ~0.2 s)


def run() -> None:
    main()


if __name__ == "__main__":
    run()
