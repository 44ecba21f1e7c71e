"""The text protocol's clients users have, their whole API, against mcached and memcached.

The README's telnet session, read from the README, is replayed line by line on one connection
(as telnet sends it: each line ended by ``\\r\\n``) and each server's replies must be the
README's, but for the CAS unique, which each server draws its own way.

python-memcached (``memcache``, pure Python) runs one script against both servers, over TCP
and over a unix domain socket (``-s``), and pylibmc runs its script in its default text mode
(libmemcached's text protocol; ``test_binary_clients`` runs the same script in binary mode):
the results must be identical. mcached runs as its command does, with four worker processes;
each connection is served by whichever of them accepts it (the sharded test's four threads
hold a connection to each node apiece).

python-memcached's ``get_slabs`` is left out: under Python 3 it compares the bytes it reads
with ``'END'`` and splits them by a str, so it fails against any server.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, Server

memcache = pytest.importorskip("memcache")

pytestmark = pytest.mark.integration

WORKERS = ("-t", "4")
#: one step of a script: its name and what it returned, or the name of what it raised
Step = tuple[str, Any]


def run_steps(steps: list[tuple[str, Callable[[], Any]]]) -> list[Step]:
    out: list[Step] = []
    for name, step in steps:
        try:
            out.append((name, step()))
        except Exception as exc:  # the client's own exceptions count as results
            out.append((name, type(exc).__name__))
    return out


def memcache_script(address: str) -> list[Step]:
    """Every call of python-memcached's Client that talks to a server, once each way.

    `address` is what the client takes: ``host:port`` or ``unix:/path``."""
    c = memcache.Client(
        [address],
        cache_cas=True,
        socket_timeout=5,
        server_max_value_length=2 * 1024 * 1024,  # lets a value past the server's -I through
    )
    big = "v" * (1024 * 1024 - 200)  # one item under memcached's 1 MB -I, in several chunks
    too_big = "w" * (1024 * 1024 + 10)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("set str", lambda: c.set("pm:a", "text")),
        ("get str", lambda: c.get("pm:a")),
        ("get missing", lambda: c.get("pm:missing")),
        ("get missing, default", lambda: c.get("pm:missing", "fallback")),
        ("set int", lambda: c.set("pm:n", 41)),  # the integer flag
        ("get int", lambda: c.get("pm:n")),
        ("incr", lambda: c.incr("pm:n")),
        ("incr by 8", lambda: c.incr("pm:n", 8)),
        ("decr below 0", lambda: c.decr("pm:n", 100)),
        ("incr missing", lambda: c.incr("pm:none")),
        ("decr missing", lambda: c.decr("pm:none")),
        ("set bytes", lambda: c.set("pm:b", b"\x00\r\nEND\r\n\xff")),
        ("get bytes", lambda: c.get("pm:b")),
        ("set pickled", lambda: c.set("pm:p", {"x": [1, 2.5, None], "y": ("t",)})),
        ("get pickled", lambda: c.get("pm:p")),
        ("set with expiry", lambda: c.set("pm:e", "soon", time=100)),
        ("get with expiry", lambda: c.get("pm:e")),
        ("add existing", lambda: c.add("pm:a", "other")),
        ("add new", lambda: c.add("pm:new", "fresh")),
        ("replace missing", lambda: c.replace("pm:nope", "x")),
        ("replace", lambda: c.replace("pm:new", "replaced")),
        ("append", lambda: c.append("pm:a", "-tail")),
        ("prepend", lambda: c.prepend("pm:a", "head-")),
        ("get appended", lambda: c.get("pm:a")),
        ("append missing", lambda: c.append("pm:nope", "x")),
        ("prepend missing", lambda: c.prepend("pm:nope", "x")),
        ("gets", lambda: c.gets("pm:a")),
        ("cas", lambda: c.cas("pm:a", "swapped")),
        ("cas with a stale unique", lambda: c.cas("pm:a", "again")),
        ("get after cas", lambda: c.get("pm:a")),
        ("gets missing", lambda: c.gets("pm:missing")),
        ("cas of a key never fetched (a set)", lambda: c.cas("pm:never", "plain")),
        ("get it", lambda: c.get("pm:never")),
        ("touch", lambda: c.touch("pm:a", 100)),
        ("touch missing", lambda: c.touch("pm:missing", 100)),
        ("set_multi", lambda: c.set_multi({"x": 1, "y": "2", "z": b"3"}, key_prefix="pm:m:")),
        (
            "get_multi",
            lambda: sorted(c.get_multi(["x", "y", "z", "none"], key_prefix="pm:m:").items()),
        ),
        ("get_multi of none", lambda: c.get_multi(["pm:none1", "pm:none2"])),
        ("delete_multi", lambda: c.delete_multi(["x", "y"], key_prefix="pm:m:")),
        ("get_multi after it", lambda: sorted(c.get_multi(["pm:m:x", "pm:m:y", "pm:m:z"]))),
        ("delete", lambda: c.delete("pm:new")),
        ("delete again", lambda: c.delete("pm:new")),
        ("set compressed", lambda: c.set("pm:z", "z" * 10_000, min_compress_len=100)),
        ("get compressed", lambda: c.get("pm:z") == "z" * 10_000),
        ("set a value of nearly 1 MB", lambda: c.set("pm:big", big)),
        ("get it back", lambda: c.get("pm:big") == big),
        ("set a value past -I", lambda: c.set("pm:huge", too_big)),
        ("the connection still serves", lambda: c.get("pm:n")),
        ("set noreply", lambda: c.set("pm:q", "quiet", noreply=True)),
        ("incr noreply", lambda: c.set("pm:qn", "1") and c.incr("pm:qn", 5, noreply=True)),
        ("delete noreply", lambda: c.delete("pm:b", noreply=True)),
        ("touch noreply", lambda: c.touch("pm:q", 50, noreply=True)),
        ("after noreply", lambda: [c.get("pm:q"), c.get("pm:qn"), c.get("pm:b")]),
        ("set_multi noreply", lambda: c.set_multi({"pm:r1": "1", "pm:r2": "2"}, noreply=True)),
        ("get_multi after noreply", lambda: sorted(c.get_multi(["pm:r1", "pm:r2"]).items())),
        ("utf-8 key", lambda: c.set("pm:ключ", "значение")),
        ("get utf-8 key", lambda: c.get("pm:ключ")),
        ("key of 250 bytes", lambda: c.set("k" * 250, "long") and c.get("k" * 250)),
        ("stats: version", lambda: c.get_stats()[0][1]["version"]),
        ("stats: items", lambda: int(c.get_stats()[0][1]["curr_items"])),
        ("stats settings: item_size_max", lambda: c.get_stats("settings")[0][1]["item_size_max"]),
        ("stats items: names", lambda: sorted(c.get_stats("items")[0][1])),
        (
            "stats slabs: names",
            lambda: {
                k: sorted(v) for k, v in c.get_slab_stats()[0][1].items() if isinstance(v, dict)
            },
        ),
        ("flush_all", lambda: c.flush_all()),
        ("get flushed", lambda: [c.get("pm:a"), c.get("pm:n"), c.get("pm:big")]),
        ("incr a non-number", lambda: c.set("pm:t", "abc") and c.incr("pm:t")),
    ]
    try:
        return run_steps(steps)
    finally:
        c.quit_all()
        c.disconnect_all()


#: the commands of the README's session; a storage command's next line is its data
COMMANDS = {
    "set",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "get",
    "gets",
    "incr",
    "decr",
    "delete",
    "touch",
    "version",
    "quit",
}
STORAGE = {"set", "add", "replace", "append", "prepend", "cas"}


def readme_session() -> list[tuple[list[str], list[str]]]:
    """The README's telnet session as (lines sent, reply lines) pairs, in order."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## A telnet session", 1)[1].split("```", 2)[1]
    lines = block.strip("\n").splitlines()
    assert lines[0].startswith("$ telnet "), lines[0]
    pairs: list[tuple[list[str], list[str]]] = []
    rest = iter(lines[1:])
    for line in rest:
        if line.split(" ", 1)[0] in COMMANDS:
            sent = [line, next(rest)] if line.split(" ", 1)[0] in STORAGE else [line]
            pairs.append((sent, []))
        else:
            pairs[-1][1].append(line)
    return pairs


def replay(address: tuple[str, int], session: list[tuple[list[str], list[str]]]) -> None:
    """Each command of `session` on one connection, its reply checked before the next is
    sent. A ``gets`` reply's CAS unique is the server's own; the ``cas`` after it sends
    that one back where the README shows its own."""
    sock = socket.create_connection(address, timeout=5)
    readme_cas = unique = ""
    try:
        sock.sendall(b"flush_all\r\n")  # the session starts from an empty cache
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(100)
        assert buf == b"OK\r\n", buf
        buf = b""
        for sent, expected in session:
            if sent[0].startswith("cas "):
                assert sent[0].endswith(" " + readme_cas), (sent[0], readme_cas)
                sent = [sent[0][: -len(readme_cas)] + unique, *sent[1:]]
            sock.sendall(b"".join(line.encode() + b"\r\n" for line in sent))
            while buf.count(b"\r\n") < len(expected):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
            got = buf.decode().split("\r\n")[: len(expected)]
            buf = buf[sum(len(line) + 2 for line in got) :]
            for want, line in zip(expected, got, strict=False):
                if sent[0].startswith("gets ") and (m := re.fullmatch(r"(VALUE .*) (\d+)", want)):
                    readme_cas = m.group(2)
                    want = m.group(1) + " " + line.rsplit(" ", 1)[-1]
                    unique = line.rsplit(" ", 1)[-1]
                    assert unique.isdigit(), line
                assert line == want, (sent, expected, got)
            assert len(got) == len(expected), (sent, expected, got)
        assert session[-1][0] == ["quit"]
        sock.settimeout(2)
        assert buf == b"" and sock.recv(100) == b"", "quit did not close the connection"
    finally:
        sock.close()


def test_the_readme_telnet_session(servers: dict[str, Server]) -> None:
    session = readme_session()
    assert len(session) >= 10 and any(sent[0].startswith("cas ") for sent, _ in session)
    for srv in servers.values():
        replay(srv.address, session)


@pytest.fixture(scope="module")
def servers(module_server_factory: Callable[..., Server]) -> dict[str, Server]:
    return {
        "mcached": module_server_factory("mcached-procs", *WORKERS),
        "memcached": module_server_factory("memcached"),
    }


@pytest.fixture(scope="module")
def unix_servers(module_server_factory: Callable[..., Server]) -> Iterator[dict[str, Server]]:
    with tempfile.TemporaryDirectory(prefix="mcached-text-clients-") as tmp:
        yield {
            "mcached": module_server_factory(
                "mcached-procs", *WORKERS, "-s", os.path.join(tmp, "mcached.sock")
            ),
            "memcached": module_server_factory("memcached", "-s", os.path.join(tmp, "mc.sock")),
        }


def check_same(ours: list[Step], theirs: list[Step]) -> None:
    differ = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    assert not differ, f"mcached, memcached: {differ}"


def test_python_memcached_whole_api(servers: dict[str, Server]) -> None:
    ours = memcache_script(f"{servers['mcached'].host}:{servers['mcached'].port}")
    theirs = memcache_script(f"{servers['memcached'].host}:{servers['memcached'].port}")
    check_same(ours, theirs)
    results = dict(ours)
    # the script does what it says, not only the same on both
    assert results["get str"] == "text"
    assert results["get pickled"] == {"x": [1, 2.5, None], "y": ("t",)}
    assert results["get appended"] == "head-text-tail"
    assert results["get after cas"] == "swapped"
    assert results["cas with a stale unique"] is False
    assert results["get it back"] is True
    assert results["set a value past -I"] is False
    assert results["after noreply"] == ["quiet", "6", None]  # stored as text, incremented
    assert results["get flushed"] == [None, None, None]
    assert results["incr a non-number"] == "ValueError"  # the CLIENT_ERROR line, not a number


def test_python_memcached_over_a_unix_socket(unix_servers: dict[str, Server]) -> None:
    ours = memcache_script(f"unix:{unix_servers['mcached'].path}")
    theirs = memcache_script(f"unix:{unix_servers['memcached'].path}")
    check_same(ours, theirs)
    assert dict(ours)["get str"] == "text"


def test_pylibmc_text_mode_whole_api(servers: dict[str, Server]) -> None:
    # imported here: that module skips itself where pylibmc or bmemcached is not installed,
    # and python-memcached's tests above do not need either
    from tests.integration.test_binary_clients import pylibmc_script

    ours = pylibmc_script(servers["mcached"], binary=False)
    theirs = pylibmc_script(servers["memcached"], binary=False)
    check_same(ours, theirs)
    results = dict(ours)
    assert results["get"] == "1"
    assert results["get appended"] == b"start-mid-end"
    assert results["get after cas"] == 10
    assert results["touch"] is True


def shard_work(addresses: list[tuple[str, int]], t: int, errors: list[str]) -> None:
    """Thread `t`'s keys stored, read back and a third of them deleted, through a client of
    its own over every node."""
    c = memcache.Client(addresses, socket_timeout=5)
    try:
        values = {f"shard:{t}:{i}": f"{t}-{i}-" + "x" * (i % 300) for i in range(300)}
        if failed := c.set_multi(values):
            errors.append(f"thread {t}: not stored {failed[:5]}")
        got = c.get_multi(list(values))
        if got != values:
            errors.append(f"thread {t}: {len(got)} of {len(values)} read back right")
        for i in range(0, 300, 3):
            if not c.delete(f"shard:{t}:{i}"):
                errors.append(f"thread {t}: shard:{t}:{i} not deleted")
    finally:
        c.disconnect_all()


def sharded_counts(nodes: list[Server]) -> list[int]:
    """Four threads' `shard_work` over `nodes` (weights 2 and 1); each node's items after."""
    addresses = [(f"{n.host}:{n.port}", w) for n, w in zip(nodes, (2, 1), strict=True)]
    errors: list[str] = []
    threads = [threading.Thread(target=shard_work, args=(addresses, t, errors)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    c = memcache.Client(addresses)
    try:
        return [int(st["curr_items"]) for _, st in c.get_stats()]
    finally:
        c.disconnect_all()


def test_python_memcached_sharded_over_two_nodes(server_factory: Callable[..., Server]) -> None:
    """Two nodes of each kind, python-memcached's own hashing (crc32, the node's weight):
    each node holds the keys the client sent it, the same split as memcached's pair holds."""
    ours = sharded_counts([server_factory("mcached-procs", *WORKERS) for _ in range(2)])
    theirs = sharded_counts([server_factory("memcached") for _ in range(2)])
    assert sum(ours) == 4 * 200
    assert ours == theirs
    assert min(ours) > 0  # both nodes took keys
