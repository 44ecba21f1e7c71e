"""mcached/server/docs.py: one shared document, read by any process, written by any writer,
that no dead or concurrent writer can leave unreadable."""

from __future__ import annotations

import os
import threading
import time

import pytest

from mcached.server.docs import HEADER, SEQ, SharedDocs

pytestmark = pytest.mark.unit


def test_empty_then_newest_wins() -> None:
    d = SharedDocs(3, size=1024)
    assert d.read() == (0, b"") and d.newest() == 0
    k1 = d.write(0, b"first")
    assert d.read() == (k1, b"first") and d.newest() == k1
    k2 = d.write(2, b"second")
    assert k2 > k1 and d.read() == (k2, b"second")
    k3 = d.write(0, b"third")
    assert k3 > k2 and d.read() == (k3, b"third")
    k4 = d.write(0, b"")  # an empty document is a document too
    assert d.read() == (k4, b"")


def test_refuses_what_does_not_fit() -> None:
    d = SharedDocs(1, size=8)
    with pytest.raises(ValueError):
        d.write(0, b"123456789")
    with pytest.raises(ValueError):
        d.write(1, b"x")
    with pytest.raises(ValueError):
        SharedDocs(0)


def _buffer_of(d: SharedDocs, key: int) -> int:
    return key & 0xFFFF


def test_a_writer_dead_mid_write_leaves_its_last_document() -> None:
    d = SharedDocs(2, size=64)
    k1 = d.write(1, b"complete")
    # writer 1 starts its next write (SEQ odd) and dies before finishing it
    other = _buffer_of(d, k1) ^ 1
    d._set(other, SEQ, d._word(other, SEQ) | 1)
    start = other * d.stride + HEADER
    d._map[start : start + 4] = b"half"
    assert d.read() == (k1, b"complete")
    # its replacement writes over the garbage, and the store moves on
    k2 = d.write(1, b"again")
    assert d.read() == (k2, b"again")
    assert _buffer_of(d, k2) == other and d._word(other, SEQ) % 2 == 0


def test_the_previous_document_stays_readable_while_the_next_is_written() -> None:
    d = SharedDocs(1, size=64)
    k1 = d.write(0, b"one")
    nxt = _buffer_of(d, k1) ^ 1
    d._set(nxt, SEQ, d._word(nxt, SEQ) | 1)  # the writer is half-way through
    assert d.read() == (k1, b"one")


def test_a_torn_buffer_is_never_returned() -> None:
    d = SharedDocs(2, size=64)
    k1 = d.write(0, b"older")
    k2 = d.write(1, b"newer")
    buf = _buffer_of(d, k2)
    start = buf * d.stride + HEADER
    d._map[start : start + 5] = b"nXwer"  # bytes changed with SEQ even: the CRC catches it
    assert d.read() == (k1, b"older")


def test_concurrent_writers_in_forked_processes_readers_see_whole_documents() -> None:
    """Four forked writers rewrite the document as fast as they can while this process reads:
    every read is one writer's whole document, and once they stop every reader agrees."""
    d = SharedDocs(4, size=4096)
    d.write(0, b"start")
    pids = []
    for w in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            # each writer writes for 0.6 s from its own start, and the reader reads until
            # the last has stopped: on a loaded machine the forks alone may take longer
            stop_at = time.monotonic() + 0.6
            try:
                n = 0
                while time.monotonic() < stop_at:
                    n += 1
                    body = (b"%d:%d:" % (w, n)) * (1 + n % 200)
                    d.write(w, body)
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    reads = 0
    running = set(pids)
    while running:
        key, data = d.read()
        assert key
        if data != b"start":
            head = data.split(b":", 2)
            w, n = int(head[0]), int(head[1])
            assert data == (b"%d:%d:" % (w, n)) * (1 + n % 200)
        reads += 1
        if reads % 64 == 0:
            for pid in list(running):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0
                    running.discard(pid)
    assert reads > 100
    key, data = d.read()
    assert d.newest() == key and d.read() == (key, data)


def test_fork_while_a_thread_writes_leaves_the_childs_lock_free() -> None:
    d = SharedDocs(2, size=64)
    d._lock.acquire()  # another thread of the parent is inside write() at the fork
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                d.write(1, b"from the child")
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
    finally:
        d._lock.release()
    assert os.waitstatus_to_exitcode(status) == 0
    assert d.read()[1] == b"from the child"


def test_threads_of_one_process_share_a_writer() -> None:
    d = SharedDocs(1, size=256)
    errors = []

    def hammer(tag: bytes) -> None:
        try:
            for i in range(300):
                d.write(0, tag * (1 + i % 50))
                data = d.read()[1]
                assert data and len(set(data)) == 1
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(t,)) for t in (b"a", b"b", b"c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_exclusive_is_one_process_at_a_time_and_let_go_when_its_holder_dies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`exclusive`: a record lock; while another process holds it, a taker waits, and goes
    on without it past EXCLUSIVE_WAIT (a holder stopped or stuck); the kernel lets it go
    when its holder dies, however it dies."""
    import fcntl
    import signal

    from mcached.server import docs as docs_module

    monkeypatch.setattr(docs_module, "EXCLUSIVE_WAIT", 0.3)
    docs = SharedDocs(2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder
        with docs.exclusive():
            os.write(w, b"x")
            time.sleep(60)
        os._exit(0)
    try:
        assert os.read(r, 1) == b"x"
        with pytest.raises(OSError):  # held by the child
            fcntl.lockf(docs._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with docs.exclusive():  # passed over: it returns all the same
            pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        fcntl.lockf(docs._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: no error
        fcntl.lockf(docs._lockfile, fcntl.LOCK_UN)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(r)
        os.close(w)
        docs.close()
