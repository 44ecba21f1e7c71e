"""A closed connection's objects are freed when it closes (reference counts), not left in
reference cycles for the garbage collector: a connection that lived through a collection is
promoted, and its cycles then wait for a full pass, which may not come for a long time; a
worker's memory grew by every connection it had closed meanwhile."""

from __future__ import annotations

import gc
import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HOST, Server
from tests.wire import readable

pytestmark = pytest.mark.integration

BINARY_GET = struct.pack(">BBHBBHIIQ", 0x80, 0x00, 1, 0, 0, 0, 1, 0, 0) + b"k"
REQUESTS = {
    "nothing": b"",
    "text get": b"get k\r\n",
    "meta get": b"mg k v\r\n",
    "binary get": BINARY_GET,
    "large set": b"set big 0 0 300000\r\n" + b"x" * 300000 + b"\r\n",
    "bad line": b"\x01\x02 nonsense\r\n",
}


def _mcached_garbage() -> list[str]:
    """Collect, and name the objects of mcached's own types that were found in cycles."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("mcached")
            or (type(o).__name__ == "method" and o.__module__.startswith("mcached"))
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


@pytest.mark.parametrize("mode", ["plain", "auth", "binary", "tls"])
def test_bug_closed_connections_were_left_in_reference_cycles(
    mode: str, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """Each text connection's parser held a table of its own bound methods (a cycle: 36
    objects a connection); a connection closed before its first byte, or whose first byte
    was refused, held its negotiator, which held one of the connection's methods."""
    flags: list[str] = []
    ctx: ssl.SSLContext | None = None
    if mode == "auth":
        auth = tmp_path / "auth"
        auth.write_text("user:secret\n")
        flags = ["-Y", str(auth)]
    elif mode == "binary":
        flags = ["-B", "binary"]
    elif mode == "tls":
        # imported here: `make test-free-threaded` runs this module where cryptography is
        # missing (and leaves this case out)
        from tests.certs import make_pki

        pki = make_pki(tmp_path)
        flags = ["-Z", "-o", f"ssl_chain_cert={pki.server_cert},ssl_key={pki.server_key}"]
        ctx = ssl.create_default_context(cafile=str(pki.ca))

    def connect() -> socket.socket:
        sock = socket.create_connection(srv.address, timeout=5)
        return sock if ctx is None else ctx.wrap_socket(sock, server_hostname=HOST)

    srv = server_factory("mcached", "-t", "1", *flags)
    worker = srv.handle.server.workers[0]
    for name, request in REQUESTS.items():
        if mode == "binary" and name in ("text get", "meta get", "bad line"):
            continue  # (shorter than a binary header: it waits for the rest)
        gc.collect()
        gc.disable()
        try:
            socks = [connect() for _ in range(5)]
            for s in socks:
                if request:
                    s.sendall(request)
                    readable([s], 5)  # a reply, or the server's hang-up
            for s in socks:
                s.close()
            deadline = time.monotonic() + 5
            while worker.conns and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not worker.conns, name
            assert _mcached_garbage() == [], f"{mode}: {name}"
        finally:
            gc.enable()
