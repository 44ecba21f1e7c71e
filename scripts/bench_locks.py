#!/usr/bin/env python3
"""The locks that could guard the shared arena: what each costs, and what a holder's death does.

Worker processes share the cache, so its locks must work across processes. Candidates:

* ``multiprocessing.Lock`` -- a POSIX semaphore in shared memory (what storage/arena.py uses);
* ``fcntl.lockf`` on a byte range of a file -- the kernel keeps it, and drops it when the
  process that took it dies;
* ``threading.Lock`` -- for comparison only: it does not work across processes.

For each, this prints the cost of one uncontended acquire + release (best of several rounds,
in-process), and what another process sees after a holder was killed with SIGKILL. It also
prints the cost of the holder word (one int64 store into shared memory), which is how mcached
learns that a worker died inside a cache operation (see storage/arena.py, "Holders").

Usage: ``python scripts/bench_locks.py [--ops N]``. Figures depend on the machine: read the
ratios between rows of one run.
"""

from __future__ import annotations

import argparse
import fcntl
import mmap
import multiprocessing
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable


def best_ns(fn: Callable[[], None], ops: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / ops)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--ops", type=int, default=200_000)
    args = p.parse_args()
    ops = args.ops

    sem = multiprocessing.get_context("fork").Lock()
    tlock = threading.Lock()
    fd, path = tempfile.mkstemp(prefix="bench-locks-")
    os.unlink(path)
    os.ftruncate(fd, 4096)
    words = memoryview(mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)).cast("q")

    def run_sem() -> None:
        acquire, release = sem.acquire, sem.release
        for _ in range(ops):
            acquire()
            release()

    def run_thread_lock() -> None:
        acquire, release = tlock.acquire, tlock.release
        for _ in range(ops):
            acquire()
            release()

    syscall_ops = ops // 10  # two system calls each: fewer of them

    def run_fcntl() -> None:
        lockf = fcntl.lockf
        for _ in range(syscall_ops):
            lockf(fd, fcntl.LOCK_EX, 1, 8)
            lockf(fd, fcntl.LOCK_UN, 1, 8)

    def run_holder() -> None:
        w = words
        for _ in range(ops):
            w[3] = 1
            w[3] = 0

    def run_empty() -> None:
        for _ in range(ops):
            pass

    empty = best_ns(run_empty, ops)
    rows = [
        ("multiprocessing.Lock (POSIX semaphore)", best_ns(run_sem, ops) - empty),
        ("fcntl.lockf byte range", best_ns(run_fcntl, syscall_ops) - empty),
        ("threading.Lock (one process only)", best_ns(run_thread_lock, ops) - empty),
        ("holder word: two int64 stores", best_ns(run_holder, ops) - empty),
    ]
    print(f"acquire + release, uncontended, ns (best of 5 x {ops:,}):")
    for name, ns in rows:
        print(f"  {name:42s} {ns:8.0f}")

    print("\nwhen the holder is killed (SIGKILL) with the lock taken:")
    # semaphore: stays taken
    pid = os.fork()
    if pid == 0:
        sem.acquire()
        time.sleep(60)
        os._exit(0)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    got = sem.acquire(timeout=0.5)
    print(
        "  multiprocessing.Lock: "
        + ("free again" if got else "still taken: every later acquire would wait for ever")
    )
    # fcntl: released by the kernel
    pid = os.fork()
    if pid == 0:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 8)
        time.sleep(60)
        os._exit(0)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 8)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, 8)
        print("  fcntl.lockf: released by the kernel (the data it guarded may be half written)")
    except OSError:
        print("  fcntl.lockf: still taken")
    print(
        "\nEither way the data under the lock cannot be trusted after such a death: mcached\n"
        "takes the cheap lock and tells a death inside an operation by the holder word, and\n"
        "then lays out a new arena (server/supervisor.py)."
    )
    os.close(fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
