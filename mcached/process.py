"""Process-level chores of a Unix daemon: detach, pid file, drop root, core dumps, mlock.

Each mirrors a memcached flag: ``-d`` (`daemonize`), ``-P`` (`write_pidfile`), ``-u``
(`drop_privileges`), ``-r`` (`raise_core_limit`), ``-k`` (`lock_memory`), ``-c`` (the open
files limit: `raise_open_files`). They run in the
main thread before any worker thread exists (fork and threads do not mix), in this order:
detach, lock memory, drop root, write the pid file (memcached's order for the last two; it
locks memory after dropping root, where the user's RLIMIT_MEMLOCK can refuse it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import sys

log = logging.getLogger("mcached")

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4  # Linux 4.4: a page is locked when first touched, not when mapped
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's default, kept fixed (`fix_malloc_threshold`)

# Descriptors a process of the daemon holds besides its -c connections, for RLIMIT_NOFILE.
# Every worker process holds, besides the connections it serves: stdio, its epoll, its
# spare descriptor (`mcached.server.workers`), the log file, a connection accepted past -c
# until it is refused, a connection on its way to or from another worker (open in both
# processes for a moment), and the maintainer's metrics and health-check sockets: 64 covers
# them. Then, per worker, since every process inherits them all: its wake-up and hand-over
# socket pairs (4 descriptors) and its copies of the listening sockets (a TCP and a UDP one
# per address, and an address may resolve to an IPv4 and an IPv6 one: 4 per -l address).
# Measured: a worker of -t 4 -U on one address holds 31 descriptors with no connection;
# this allows 96. With worker threads (one process), the same sum bounds the process.
OPEN_FILES_BASE = 64
OPEN_FILES_PER_WORKER = 4
OPEN_FILES_PER_ADDRESS = 4


def open_files_needed(max_connections: int, workers: int, addresses: int) -> int:
    """The RLIMIT_NOFILE soft limit a process of the daemon needs to serve ``-c``
    `max_connections` with `workers` workers listening on `addresses` addresses."""
    per_worker = OPEN_FILES_PER_WORKER + OPEN_FILES_PER_ADDRESS * max(1, addresses)
    return max_connections + OPEN_FILES_BASE + workers * per_worker


def raise_open_files(needed: int) -> int:
    """RLIMIT_NOFILE's soft limit raised to `needed` (and the hard limit too, when it is
    lower: root may), as memcached sets it from ``-c`` at start, but never lowered (memcached
    sets both to ``-c``, less than a limit set higher on purpose). Where the hard limit
    cannot be raised (not root, or past the system's fs.nr_open), the soft one goes as
    high as it allows. The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return needed
    if hard == resource.RLIM_INFINITY or hard >= needed:
        tries = [(needed, hard)]
    else:
        tries = [(needed, needed), (hard, hard)]  # the hard limit raised, or reached
    for limits in tries:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        except (ValueError, OSError):
            continue
        return limits[0]
    return soft


def daemonize(keep_stdio: bool = False) -> None:
    """Detach from the terminal: fork twice, new session, cwd /, stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    if not keep_stdio:
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(fd, target)
        if fd > 2:
            os.close(fd)


def write_pidfile(path: str) -> bool:
    """``-P``: this process's pid into `path`, written whole under a temporary name first
    (a reader never finds it empty), as memcached's ``save_pid``: once root is dropped, so
    that the ``-u`` user owns it and can remove it at exit (even from a sticky directory
    such as /tmp). A failure is logged with memcached's words, and the daemon runs on
    without one. False then."""
    pid = os.getpid()
    try:
        with open(path) as f:
            old = int(f.read().strip() or 0)
        if old > 0 and old != pid:
            os.kill(old, 0)
            log.warning("WARNING: The pid file contained the following (running) pid: %d", old)
    except (OSError, ValueError):
        pass  # none there, unreadable, or its process gone
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
    except OSError as exc:
        log.warning("Could not open the pid file %s for writing: %s", tmp, exc.strerror)
        return False
    try:
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Could not rename the pid file from %s to %s: %s", tmp, path, exc.strerror)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    return True


def remove_pidfile(path: str) -> None:
    """At exit: remove the pid file this process wrote (not one another instance wrote over
    it since); a failure is logged, as memcached's ``remove_pidfile`` prints it."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # another instance owns it now
        os.unlink(path)
    except OSError as exc:
        log.warning("Could not remove the pid file %s: %s", path, exc.strerror)


def drop_privileges(user: str) -> None:
    """``-u``: become `user` (its groups too). Only meaningful when started as root."""
    import grp
    import pwd

    if os.geteuid() != 0:
        log.warning("-u %s ignored: not running as root", user)
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        print(f"can't find the user {user} to switch to", file=sys.stderr)
        raise SystemExit(os.EX_NOUSER) from None  # (67, as memcached exits)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
    os.setgroups(sorted(set(groups + [pw.pw_gid])))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def raise_core_limit() -> None:
    """``-r``: core file size limit up to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("failed to ensure corefile creation: %s", exc)


def fix_malloc_threshold() -> None:
    """glibc's malloc serves a block of 128 KB or more with a mapping of its own, unmapped
    when it is freed; but each such free raises that threshold to the block's size (up to
    32 MB), and from then on blocks under it come from the heap, which keeps what is freed
    in the middle of it. Clients can make a process allocate and free such blocks at will
    (a long multiget's lists of keys, large values copied out): measured, one worker that
    shed 100 connections' 1 MB multiget lines of two-byte keys stayed 69 MB over its start,
    against 42 with the threshold fixed (README "Security"). Setting it fixes it at the
    default, in the daemon's processes only (children inherit it), never in a program that
    embeds the server."""
    try:
        libc = ctypes.CDLL(None)  # the process's symbols: libc's among them
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator's own policy stands


def lock_memory(level: int = logging.WARNING) -> bool:
    """``-k``: mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT); False, and a warning logged
    at `level`, if refused (the children lock again, after -u: `Daemon._lock_memory`).
    On fault: the arena reserves address space
    for its pages up front (several GB of it, untouched), which plain MCL_FUTURE would fill
    and lock at once (3.2 GB of RSS at -m 64); locked as touched, the daemon locks what it
    uses, as memcached does, whose pages are mapped as they are allocated."""
    try:
        # no cap on what may be locked, while root may lift it: the worker processes,
        # forked after -u, lock their own memory (locks are not inherited) under it
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY,) * 2)
    except (OSError, ValueError):
        pass  # not root: the limit stays what ulimit -l says
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's symbols: libc's among them
        if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
            return True
        err = ctypes.get_errno()
        log.log(level, "warning: -k invalid, mlockall() failed: %s", os.strerror(err))
    except (OSError, AttributeError) as exc:
        log.log(level, "warning: -k invalid, mlockall() unavailable: %s", exc)
    return False
