"""systemd integration: sd_notify, socket activation and the watchdog, in stdlib only.

* `notify("READY=1")` sends one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
  abstract namespace). Outside systemd the variable is unset and every call is a no-op.
* `listen_fds()` returns the sockets systemd passed (``LISTEN_FDS`` from fd 3 on), when
  ``LISTEN_PID`` is ours; they are served instead of binding.
* `watchdog_interval()` is half of ``WATCHDOG_USEC`` (systemd's advice), or None.

These are the few lines of the protocol (``sd_notify(3)``, ``sd_listen_fds(3)``); gunicorn's
``gunicorn/systemd.py`` does the same.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("mcached.systemd")

SD_LISTEN_FDS_START = 3
_notify_failed = False  # said once: a socket that is gone stays gone (libsystemd is silent)


class ActivationError(Exception):
    """A socket systemd passed that mcached cannot serve (the unit's sockets are wrong)."""


def notify(state: str) -> bool:
    """Send `state` (e.g. ``READY=1``) to the service manager; False when not under one."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError as exc:
        global _notify_failed
        if not _notify_failed:
            _notify_failed = True
            log.warning("sd_notify(%s) failed: %s (said once)", state.split("\n")[0], exc)
        return False


def listen_fds(unset_environment: bool = True) -> list[socket.socket]:
    """Sockets passed by socket activation, or [] when there are none for this process."""
    try:
        pid = int(os.environ.get("LISTEN_PID", "0"))
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    if unset_environment:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
    if pid != os.getpid() or count <= 0:
        return []
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        socks.append(_listening_tcp(fd))
    return socks


def _listening_tcp(fd: int) -> socket.socket:
    """Passed descriptor `fd` as the listening TCP socket it must be (sd_is_socket's check:
    a ListenStream= of an address, Accept=no); ActivationError for anything else, which the
    daemon would otherwise fail on as it serves (a UDP or unix socket, a socket not
    listening, a file)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ActivationError(f"socket activation: descriptor {fd} is no socket ({exc})") from None
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        if listening:
            return sock
        what = "a TCP socket that is not listening (Accept=yes passes connections)"
    elif sock.type == socket.SOCK_DGRAM:
        what = "a datagram socket (ListenDatagram=: use -U for UDP)"
    elif sock.family == socket.AF_UNIX:
        what = "a unix socket (use -s for one)"
    else:
        what = f"a socket of family {sock.family!r}, type {sock.type!r}"
    sock.detach()  # left open, as it came
    raise ActivationError(
        f"socket activation: descriptor {fd} is {what}; mcached takes listening TCP sockets"
    )


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half the configured timeout), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    wpid = os.environ.get("WATCHDOG_PID")
    if not usec or (wpid and wpid != str(os.getpid())):
        return None
    try:
        usec_n = int(usec)
    except ValueError:
        return None
    return max(usec_n / 1_000_000 / 2, 0.05) if usec_n > 0 else None  # 0: none
