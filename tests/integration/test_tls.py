"""TLS (``-Z``) against mcached and Debian's memcached 1.6.18, which is built with TLS.

Certificates come from `tests.certs` (a CA, a server certificate for 127.0.0.1, a client
certificate from that CA and one from an unrelated CA). Clients are pymemcache with a
``tls_context`` and raw `ssl` sockets. What both servers do the same way runs against both
(the `kind` fixture); what is mcached's own (certificates reloaded on SIGHUP and kept when the
new files are bad, the handshake deadline, the handshake counter) runs against mcached.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymemcache.client.base import Client

from tests.certs import PKI, make_pki
from tests.conftest import HOST, free_port
from tests.wire import Conn

if TYPE_CHECKING:
    from tests.conftest import Server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_flags(pki: PKI, *extra: str) -> list[str]:
    opts = f"ssl_chain_cert={pki.server_cert},ssl_key={pki.server_key}"
    if extra:
        opts += "," + ",".join(extra)
    return ["-Z", "-o", opts]


def client_context(
    pki: PKI, cert: tuple[Path, Path] | None = None, **versions: Any
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


def tls_conn(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname=HOST)


def request(sock: socket.socket, data: bytes, end: bytes = b"\r\n") -> bytes:
    sock.sendall(data)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf[-100:]!r}")
        buf += chunk
    return buf


def handshake_refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server refuses this client: the handshake fails, or (TLS 1.3, where the
    client's certificate is checked after the client's handshake is done) the first request
    gets an alert or a hang-up instead of a reply."""
    try:
        with tls_conn(port, ctx) as s:
            s.sendall(b"version\r\n")
            return not s.recv(100).startswith(b"VERSION")
    except (ssl.SSLError, ConnectionError, OSError):
        return True


def mc_client(server: Server, ctx: ssl.SSLContext | None = None) -> Client:
    return Client(
        server.address,
        tls_context=ctx,
        connect_timeout=TIMEOUT,
        timeout=TIMEOUT,
        default_noreply=False,
    )


def stat(server: Server, name: bytes, group: str = "", port: int | None = None) -> bytes:
    """One stat, read over a plain (notls) port or over TLS with a trusting context."""
    with Conn((server.host, port or server.port)) as c:
        lines = c.request(f"stats {group}".strip().encode() + b"\r\n").split(b"\r\n")
    for line in lines:
        if line.startswith(b"STAT " + name + b" "):
            return line.split(b" ", 2)[2]
    raise KeyError(name)


# ---- serving over TLS ----


def test_pymemcache_over_tls(kind: str, pki: PKI, server_factory: Callable[..., Server]) -> None:
    server = server_factory(kind, *tls_flags(pki))
    client = mc_client(server, client_context(pki))
    try:
        big = os.urandom(900_000)
        assert client.set("big", big) is True
        assert client.get("big") == big
        assert client.set("n", b"41") is True
        assert client.incr("n", 1) == 42
        values = {f"k{i}": os.urandom(i * 10) for i in range(1, 40)}
        assert client.set_many(values) == []
        assert client.get_many(list(values)) == values
        assert client.version() == b"1.6.18"
    finally:
        client.close()


def test_idle_timeout_closes_a_connection_silent_in_its_handshake(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached takes the handshake in its read state, which its idle kick covers: a
    client silent after its connect, or after half its handshake, is closed after
    idle_timeout and counted in idle_kicks. mcached left such a connection to the stall
    check alone (30 s; never, with ``--stall-timeout 0``), holding its place against -c."""
    server = server_factory(kind, *tls_flags(pki, "idle_timeout=1"))
    client = mc_client(server, client_context(pki))
    try:
        before = int(client.stats()[b"idle_kicks"])
        silent = socket.create_connection(server.address, timeout=TIMEOUT)
        half = socket.create_connection(server.address, timeout=TIMEOUT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname=HOST)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        half.sendall(outgoing.read())  # the ClientHello, then nothing
        for sock in (silent, half):
            sock.settimeout(15)  # memcached looks at idle connections every few seconds
            while sock.recv(65536):  # (the server's hello, for the half-way one)
                pass
            sock.close()
        client.close()
        client = mc_client(server, client_context(pki))  # (idle itself by now)
        assert int(client.stats()[b"idle_kicks"]) - before >= 2
    finally:
        client.close()


@pytest.mark.parametrize("how", ["quit", "idle_timeout"])
def test_bug_a_connection_the_server_closes_ends_with_a_close_notify(
    kind: str, how: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached sends a TLS close_notify alert before it closes a connection
    (``SSL_shutdown``); mcached closed the socket alone. A client then read an end of stream
    that TLS cannot tell from a cut one ("EOF occurred in violation of protocol"), and
    memcached's idle-timeout.t over TLS died of SIGPIPE (Perl's IO::Socket::SSL)."""
    server = server_factory(kind, *tls_flags(pki, *(["idle_timeout=1"] if how != "quit" else [])))
    ctx = client_context(pki)
    ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF  # Python's default takes a cut for an end
    raw = socket.create_connection((HOST, server.port), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=HOST, suppress_ragged_eofs=False) as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        if how == "quit":
            s.sendall(b"quit\r\n")
        # the closing alert reads as a clean end (b""); without it, SSLEOFError
        assert s.recv(100) == b""


def test_one_reply_larger_than_the_socket_buffer_over_tls(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """A single reply piece of megabytes (``lru_crawler metadump``) to a client that is slow
    to read: OpenSSL then wants its write retried with no fewer bytes, so mcached never hands
    it more than one bounded chunk at a time."""
    server = server_factory(kind, *tls_flags(pki))
    keys = [b"k%05d" % i + b"x" * 230 for i in range(16000)]  # a 5 MB reply
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # before connect: small window
    raw.settimeout(TIMEOUT)
    raw.connect(server.address)
    with client_context(pki).wrap_socket(raw, server_hostname=HOST) as s:
        s.sendall(b"".join(b"set %b 0 0 1 noreply\r\nv\r\n" % k for k in keys))
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        # the hash walk: memcached's LRU walk ("all") can skip or repeat an item that its LRU
        # maintainer moves meanwhile (seen in CI), which the exact key list below would fail
        s.sendall(b"lru_crawler metadump hash\r\n")
        time.sleep(0.3)  # let the server fill the socket and be told to retry
        reply = bytearray()
        while not reply.endswith(b"END\r\n"):
            chunk = s.recv(1 << 20)
            assert chunk, "closed mid-reply"
            reply += chunk
    lines = bytes(reply).split(b"\n")
    assert len(reply) > 4_000_000
    assert sorted(line.split(b" ")[0] for line in lines if line.startswith(b"key=")) == sorted(
        b"key=" + k for k in keys
    )


def test_pipelined_requests_larger_than_a_tls_record(
    pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """Requests pipelined past one 16 KB TLS record: the records OpenSSL has already read
    off the socket are invisible to select, so the connection drains `pending()` after each
    read. (memcached 1.6.18 stalls here: 20 pipelined sets of 100..1900 bytes get 18
    replies, then nothing, hence mcached only.)"""
    server = server_factory("mcached", *tls_flags(pki))
    client = mc_client(server, client_context(pki))
    try:
        values = {f"k{i}": os.urandom(i * 100) for i in range(1, 120)}
        assert client.set_many(values) == []
        assert client.get_many(list(values)) == values
    finally:
        client.close()


def test_a_request_in_the_record_a_received_value_ends_in_is_served(
    pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """A value of 16 KB or more is received straight into the cache's memory; once it was
    whole, the rest of the TLS record it ended in (the next request) stayed in OpenSSL,
    unseen by the selector, and went unanswered until the client sent more (found by a
    hunt; memcached 1.6.18 waits the same way, hence mcached only)."""
    server = server_factory("mcached", *tls_flags(pki))
    with tls_conn(server.port, client_context(pki)) as sock:
        for n in (20_000, 100_000, 16_384):
            value = bytes(range(256)) * (n // 256) + b"v" * (n % 256)
            sock.sendall(b"set k 0 0 %d\r\n" % n + value + b"\r\nget k\r\n")
            got = request(sock, b"", b"END\r\n")
            assert got == b"STORED\r\nVALUE k 0 %d\r\n" % n + value + b"\r\nEND\r\n"


def test_large_pipelined_replies_over_tls(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """Replies far larger than one TLS record and the socket buffer arrive whole (mcached
    cuts them into SSL_writes of its own and retries them as OpenSSL requires)."""
    server = server_factory(kind, "-m", "128", *tls_flags(pki))
    value = bytes(range(256)) * 4000  # 1,024,000 bytes
    with tls_conn(server.port, client_context(pki)) as s:
        for i in range(12):
            assert (
                request(s, b"set v%d 0 0 %d\r\n" % (i, len(value)) + value + b"\r\n")
                == b"STORED\r\n"
            )
        keys = b" ".join(b"v%d" % i for i in range(12))
        one = b"".join(b"VALUE v%d 0 %d\r\n" % (i, len(value)) + value + b"\r\n" for i in range(12))
        expected = (one + b"END\r\n") * 2
        s.sendall((b"get " + keys + b"\r\n") * 2)
        reply = bytearray()
        while len(reply) < len(expected):
            chunk = s.recv(1 << 20)
            assert chunk, "closed mid-reply"
            reply += chunk
    assert reply == expected


def test_notls_listener_beside_a_tls_one(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    plain = free_port()
    server = server_factory(kind, *tls_flags(pki), "-l", f"notls:{HOST}:{plain}")
    with Conn((HOST, plain)) as c:
        assert c.request(b"set k 0 0 2\r\nhi\r\n") == b"STORED\r\n"
    with tls_conn(server.port, client_context(pki)) as s:
        assert request(s, b"get k\r\n", end=b"END\r\n") == b"VALUE k 0 2\r\nhi\r\nEND\r\n"
    # plain text on the TLS port is not a protocol: the connection is dropped
    with Conn(server.address) as c:
        c.send(b"version\r\n")
        assert c.closed()
    assert stat(server, b"inter", "settings", port=plain) == f"{HOST},notls:{HOST}:{plain}".encode()


def test_stats_conns_names_tls_connections_that_sent_nothing_as_memcached(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """A connection to the TLS port that has sent nothing is in conn_new_cmd (memcached's
    handshake happens in its reads, which have not begun); one whose handshake is done but
    has sent no request is in conn_read (the handshake's reads put it there). mcached named
    them the other way round."""
    srv = server_factory(kind, *tls_flags(pki))
    ctx = client_context(pki)
    with (
        socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as bare,
        tls_conn(srv.port, ctx) as shaken,
        tls_conn(srv.port, ctx) as asker,
    ):
        ports = {name: str(c.getsockname()[1]) for name, c in (("bare", bare), ("shaken", shaken))}

        def states() -> dict[str, str]:
            text = request(asker, b"stats conns\r\n", b"END\r\n").decode()
            got = {}
            for group in re.split(r"(?=STAT \d+:addr )", text):  # one connection's rows each
                addr = re.search(r":addr tcp:\S+:(\d+)\r\n", group)
                state = re.search(r":state (\S+)\r\n", group)
                if addr and state:
                    got[addr[1]] = state[1]
            return got

        # the server reads the handshake's last message when its worker gets to it (on a
        # loaded machine, memcached's thread too may take more than a moment)
        deadline = time.monotonic() + 5
        got = states()
        while got.get(ports["shaken"]) != "conn_read" and time.monotonic() < deadline:
            time.sleep(0.1)
            got = states()
    assert got[ports["bare"]] == "conn_new_cmd"
    if kind == "memcached" and got[ports["shaken"]] == "conn_new_cmd":
        # memcached's state of a handshake done waits on when its worker thread reads the
        # client's last handshake message: seen still conn_new_cmd after 5 s in two CI runs
        # of 2026-12-07 (a timing of the reference's, not a naming mcached should copy)
        return
    assert got[ports["shaken"]] == "conn_read"


def test_stats_settings_name_the_tls_options(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    plain = free_port()
    server_factory(
        kind,
        "-Z",
        "-o",
        f"ssl_chain_cert={pki.server_cert},ssl_key={pki.server_key},ssl_verify_mode=2,"
        f"ssl_ca_cert={pki.ca},ssl_min_version=3,ssl_session_cache,ssl_ciphers=HIGH",
        "-l",
        f"notls:{HOST}:{plain}",
    )
    with Conn((HOST, plain)) as c:
        lines = c.request(b"stats settings\r\n").split(b"\r\n")
    ssl_lines = [
        ln
        for ln in lines
        if ln.startswith(b"STAT ssl_")
        and b"keyformat" not in ln
        and b"wbuf" not in ln
        and b"kernel" not in ln
    ]
    assert ssl_lines == [
        b"STAT ssl_enabled yes",
        b"STAT ssl_chain_cert " + str(pki.server_cert).encode(),
        b"STAT ssl_key " + str(pki.server_key).encode(),
        b"STAT ssl_verify_mode 3",  # OpenSSL's PEER|FAIL_IF_NO_PEER_CERT, as memcached prints
        b"STAT ssl_ciphers HIGH",
        b"STAT ssl_ca_cert " + str(pki.ca).encode(),
        b"STAT ssl_session_cache yes",
        b"STAT ssl_min_version tlsv1.3",
    ]


def test_stats_settings_without_tls(server: Server) -> None:
    with Conn(server.address) as c:
        lines = c.request(b"stats settings\r\n").split(b"\r\n")
    assert b"STAT ssl_enabled no" in lines
    assert b"STAT ssl_chain_cert (null)" in lines
    assert b"STAT ssl_ca_cert NULL" in lines
    assert b"STAT ssl_min_version tlsv1.2" in lines


def test_stats_settings_show_tls_options_given_empty(
    kind: str, server_factory: Callable[..., Server]
) -> None:
    """Without -Z the files and ciphers are only settings: given empty, memcached shows the
    row with no value (``STAT ssl_ciphers``), where a missing one reads NULL or (null);
    mcached showed NULL and (null) for both."""
    server = server_factory(kind, "-o", "ssl_chain_cert=,ssl_key=,ssl_ciphers=,ssl_ca_cert=")
    with Conn(server.address) as c:
        lines = c.request(b"stats settings\r\n").split(b"\r\n")
    for name in (b"ssl_chain_cert", b"ssl_key", b"ssl_ciphers", b"ssl_ca_cert"):
        assert b"STAT " + name in lines


# ---- client certificates and versions ----


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_client_certificate_verification(
    kind: str, mode: int, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """1: a certificate is optional but must verify if sent; 2 and 3: required."""
    server = server_factory(
        kind, *tls_flags(pki, f"ssl_verify_mode={mode}", f"ssl_ca_cert={pki.ca}")
    )
    good = client_context(pki, (pki.client_cert, pki.client_key))
    rogue = client_context(pki, (pki.rogue_cert, pki.rogue_key))
    none = client_context(pki)
    assert not handshake_refused(server.port, good)
    assert handshake_refused(server.port, rogue)
    assert handshake_refused(server.port, none) == (mode >= 2)
    client = mc_client(server, good)
    try:
        assert client.set("k", b"v") is True and client.get("k") == b"v"
    finally:
        client.close()


def test_min_version(kind: str, pki: PKI, server_factory: Callable[..., Server]) -> None:
    server = server_factory(kind, *tls_flags(pki, "ssl_min_version=3"))
    assert handshake_refused(
        server.port, client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    )
    assert not handshake_refused(
        server.port, client_context(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    )
    default = server_factory(kind, *tls_flags(pki))  # memcached's default: TLS 1.2 and up
    assert not handshake_refused(
        default.port, client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    )


def test_session_resumption(kind: str, pki: PKI, server_factory: Callable[..., Server]) -> None:
    """Session tickets resume a session with or without ssl_session_cache (which, in
    memcached, turns on OpenSSL's server-side session cache; tickets work regardless)."""
    for flags in ((), ("ssl_session_cache",)):
        server = server_factory(kind, *tls_flags(pki, *flags))
        ctx = client_context(pki)
        with tls_conn(server.port, ctx) as s:
            request(s, b"version\r\n")  # TLS 1.3 tickets arrive after the handshake
            session = s.session
        raw = socket.create_connection(server.address, timeout=TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname=HOST, session=session) as s:
            request(s, b"version\r\n")
            assert s.session_reused


@pytest.mark.parametrize("how", ["refresh_certs", "SIGHUP"])
@pytest.mark.parametrize("kind", ["mcached-procs", "memcached"])
def test_sessions_resume_on_every_worker_after_a_reload(
    kind: str, how: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """Regression: a reload built a new context in each worker process, each with session
    ticket keys of its own, so a ticket resumed only on the worker that issued it (4 of 24
    reconnections at -t 4, against memcached's 24). The files now go into the live
    context, whose keys every worker shares since the fork."""
    server = server_factory(kind, "-t", "4", *tls_flags(pki))
    ctx = client_context(pki)
    for reload in (False, True):
        if reload:
            if how == "SIGHUP":
                if kind == "memcached":
                    continue  # (memcached reloads nothing on SIGHUP)
                os.kill(server.handle.pid, signal.SIGHUP)
            else:
                with tls_conn(server.port, ctx) as s:
                    assert request(s, b"refresh_certs\r\n") == b"OK\r\n"
        # (after a SIGHUP each worker reloads as it wakes: looked at again until then)
        deadline = time.monotonic() + 10
        while True:
            with tls_conn(server.port, ctx) as s:
                request(s, b"version\r\n")  # TLS 1.3 tickets arrive after the handshake
                session = s.session
            reused = 0
            for _ in range(16):  # new connections spread over the workers
                raw = socket.create_connection(server.address, timeout=TIMEOUT)
                with ctx.wrap_socket(raw, server_hostname=HOST, session=session) as s:
                    request(s, b"version\r\n")
                    reused += s.session_reused
            if reused == 16 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reused == 16, (how, reload)


def test_key_inside_the_chain_file(pki: PKI, server_factory: Callable[..., Server]) -> None:
    """No ssl_key: the key is read from the chain file (memcached 1.6.18 refuses to start:
    "Error loading the key: (null)", although its help says ssl_key is needed only "if not
    part of the -ssl_chain_cert")."""
    server = server_factory("mcached", "-Z", "-o", f"ssl_chain_cert={pki.server_combined}")
    assert not handshake_refused(server.port, client_context(pki))


# ---- refresh_certs ----


def test_refresh_certs(kind: str, pki: PKI, server_factory: Callable[..., Server]) -> None:
    server = server_factory(kind, *tls_flags(pki))
    with tls_conn(server.port, client_context(pki)) as s:
        assert request(s, b"refresh_certs\r\n") == b"OK\r\n"
        # noreply hides the OK; extra tokens are ignored
        assert request(s, b"refresh_certs noreply\r\nrefresh_certs x y\r\n") == b"OK\r\n"


def test_refresh_certs_without_tls(server: Server) -> None:
    with Conn(server.address) as c:
        assert (
            c.request(b"refresh_certs\r\nrefresh_certs noreply\r\n")
            == b"Error TLS not enabled\r\n" * 2
        )


def test_refresh_certs_and_sighup_load_new_files_and_keep_old_ones_on_error(
    pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """Rotation: new connections get the new certificate. A bad new file is an error line for
    refresh_certs (a log line for SIGHUP) and the running context stays (memcached loads
    into its live context and can be left with a certificate that does not match its key)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    server = server_factory("mcached", "-Z", "-o", f"ssl_chain_cert={cert},ssl_key={key}")
    ctx = client_context(pki)

    def peer_cn() -> str:
        with tls_conn(server.port, ctx) as s:
            request(s, b"version\r\n")
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return str(subject["commonName"])

    assert peer_cn() == "127.0.0.1"
    old = tls_conn(server.port, ctx)
    shutil.copy(pki.other_server_cert, cert)
    with tls_conn(server.port, ctx) as s:
        assert request(s, b"refresh_certs\r\n").startswith(b"Error loading the key: ")
    assert peer_cn() == "127.0.0.1"  # the certificate did not match the key: nothing changed
    cert.write_text(broken_chain("cert-end-joined", pki.other_server_cert.read_text()))
    with tls_conn(server.port, ctx) as s:  # a file cut in a rotation: its own fault
        reply = request(s, b"refresh_certs\r\n")
        assert reply.startswith(f"Error loading the certificate chain: {cert} : {BAD_END}".encode())
    assert peer_cn() == "127.0.0.1"
    shutil.copy(pki.other_server_cert, cert)
    shutil.copy(pki.other_server_key, key)
    with tls_conn(server.port, ctx) as s:
        assert request(s, b"refresh_certs\r\n") == b"OK\r\n"
    assert peer_cn() == "127.0.0.1 (rotated)"
    assert request(old, b"version\r\n") == b"VERSION 1.6.18\r\n"  # open ones carry on
    old.close()
    # SIGHUP does the same (the daemon calls every reloadable's reload())
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    server.handle.reload()
    assert peer_cn() == "127.0.0.1"
    cert.write_text("not a certificate")
    server.handle.reload()
    assert peer_cn() == "127.0.0.1"


# ---- hostile TLS clients ----


def test_stalled_handshake_is_closed_and_others_are_served(
    pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """A client that connects to a TLS port and sends nothing, or half a ClientHello, holds
    no thread and is closed after --stall-timeout; one that sends garbage is closed.
    (Whether that garbage counts in ssl_handshake_errors depends on whether it was there
    at the accept, as on memcached: test_handshake_errors_count_only_what_came_with_the_accept
    makes it so.)"""
    server = server_factory("mcached", *tls_flags(pki), "--stall-timeout", "1")
    silent = socket.create_connection(server.address, timeout=TIMEOUT)
    half = socket.create_connection(server.address, timeout=TIMEOUT)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    ctx = client_context(pki)
    start = time.monotonic()
    with tls_conn(server.port, ctx) as s:
        for i in range(5):
            assert request(s, b"set k 0 0 1\r\n%d\r\n" % i) == b"STORED\r\n"
            time.sleep(0.1)
    for sock in (silent, half):
        sock.settimeout(4)
        assert sock.recv(100) == b""
    assert time.monotonic() - start < 4
    with Conn(server.address) as c:  # garbage instead of a ClientHello
        c.send(b"GET / HTTP/1.1\r\n\r\n")
        assert c.closed()
    stats = mc_client(server, ctx).stats()
    assert stats[b"curr_connections"] == 1


def test_reset_during_handshake_and_mid_reply(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    server = server_factory(kind, "-m", "64", *tls_flags(pki))
    ctx = client_context(pki)
    value = b"x" * 1_000_000
    with tls_conn(server.port, ctx) as s:
        for i in range(4):
            request(s, b"set b%d 0 0 %d\r\n" % (i, len(value)) + value + b"\r\n")
    for _ in range(10):
        raw = socket.create_connection(server.address, timeout=TIMEOUT)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        raw.sendall(b"\x16\x03\x01")
        raw.close()  # RST mid-handshake
        s = tls_conn(server.port, ctx)
        s.sendall(b"get b0 b1 b2 b3\r\n")
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST mid-reply
    client = mc_client(server, ctx)
    assert client.get("b3") == value
    client.close()


# ---- start-up errors: memcached's messages and exit codes ----


def start_and_fail(kind: str, args: list[str]) -> tuple[int, str]:
    port = str(free_port())
    if kind == "memcached":
        cmd = ["memcached", "-l", HOST, "-p", port, "-U", "0"]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    else:
        cmd = [sys.executable, "-m", "mcached", "-l", HOST, "-p", port]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    try:
        proc = subprocess.run(cmd + args, capture_output=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind} {args} started instead of failing")
    return proc.returncode, proc.stderr.decode()


NO_FILE = "error:80000002:system library::No such file or directory"
NULL_FILE = "error:8000000E:system library::Bad address"
NO_CERT_ASSIGNED = "error:0A0000B1:SSL routines::no certificate assigned"
NO_KEY_READ = "error:1E08010C:DECODER routines::unsupported"
BAD_FILETYPE = "error:0A00007C:SSL routines::bad ssl filetype"
KEY_CASES = ("der-as-pem", "other-type", "other-type-der")  # the keys der_keys makes
WRONG_TAG = "error:068000A8:asn1 encoding routines::wrong tag"
TOO_LONG = "error:0680009B:asn1 encoding routines::too long"
BAD_END = "error:04800066:PEM routines::bad end line"
BAD_BASE64 = "error:04800064:PEM routines::bad base64 decode"
NOT_DER = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def broken_chain(name: str, cert: str) -> str:
    """The server's certificate file `cert` (PEM) broken as test case `name` says."""
    lines = cert.strip().split("\n")
    return {
        "cert-not-der": NOT_DER,
        "cert-cut": "\n".join(lines[:6] + lines[-1:]) + "\n",  # the DER cut short
        "cert-end-joined": "\n".join(lines[:6]) + lines[-1] + "\n",  # no line break before
        "cert-bad-base64": NOT_DER.replace("AAAA", "A*AA"),
        "cert-then-junk": cert + NOT_DER,  # the chain's second certificate does not read
    }[name]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("missing-chain", "Error loading the certificate chain: {missing} : " + NO_FILE),
        ("no-chain", "Error loading the certificate chain: (null) : " + NULL_FILE),
        (
            "junk-chain",
            "Error loading the certificate chain: {junk} : "
            "error:0480006C:PEM routines::no start line",
        ),
        ("missing-key", "Error loading the key: {missing} : " + NO_FILE),
        ("no-key", "Error loading the key: (null) : " + NULL_FILE),
        ("bad-key", "Error loading the key: {ca} : " + NO_KEY_READ),
        (
            "mismatched-key",
            "Error loading the key: {other_key} : "
            "error:05800074:x509 certificate routines::key values mismatch",
        ),
        ("missing-ca", "Error loading the CA certificate: {missing} : " + NO_FILE),
        (
            "junk-ca",
            "Error loading the CA certificate: {junk} : "
            "error:05800088:x509 certificate routines::no certificate or crl found",
        ),
        ("bad-ciphers", "Error setting the provided cipher(s): BOGUS"),
        # given empty is given: the file "" (not a missing option's NULL), no cipher
        ("empty-chain", "Error loading the certificate chain:  : " + NO_FILE),
        ("empty-key", "Error loading the key:  : " + NO_FILE),
        ("empty-ca", "Error loading the CA certificate:  : " + NO_FILE),
        ("empty-ciphers", "Error setting the provided cipher(s): "),
        # a key in another format than ssl_keyformat says, an unknown format, a key of
        # another type than the certificate's (taken by OpenSSL, then refused by memcached's
        # check of the pair, where mcached said "Error loading the key")
        ("pem-as-der", "Error loading the key: {key} : " + NO_KEY_READ),
        ("der-as-pem", "Error loading the key: {der} : " + NO_KEY_READ),
        ("format-3", "Error loading the key: {key} : " + BAD_FILETYPE),
        ("format-0", "Error loading the key: {key} : " + BAD_FILETYPE),
        ("other-type", "Error validating the certificate: " + NO_CERT_ASSIGNED),
        ("other-type-der", "Error validating the certificate: " + NO_CERT_ASSIGNED),
        # a certificate block that is there but does not read: the chain's fault, in
        # OpenSSL's words (mcached said "Error loading the key", naming the good key file)
        ("cert-not-der", "Error loading the certificate chain: {broken} : " + WRONG_TAG),
        ("cert-cut", "Error loading the certificate chain: {broken} : " + TOO_LONG),
        ("cert-end-joined", "Error loading the certificate chain: {broken} : " + BAD_END),
        ("cert-bad-base64", "Error loading the certificate chain: {broken} : " + BAD_BASE64),
        ("cert-then-junk", "Error loading the certificate chain: {broken} : " + WRONG_TAG),
    ],
)
def test_bad_tls_files_stop_the_start(
    kind: str, name: str, expected: str, pki: PKI, tmp_path: Path
) -> None:
    """memcached's line, ending with OpenSSL's first error as ERR_error_string_n prints it
    (memcached prints the queue's later errors above it: those lines are not mcached's)."""
    if kind == "memcached" and shutil.which("memcached") is None:
        pytest.skip("reference memcached not installed")
    missing = tmp_path / "missing.pem"
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    files = f"ssl_chain_cert={pki.server_cert},ssl_key={pki.server_key}"
    chain = f"ssl_chain_cert={pki.server_cert}"
    keys = der_keys(pki, tmp_path) if name in KEY_CASES else {}
    broken = tmp_path / "broken.pem"
    if name.startswith("cert-"):
        broken.write_text(broken_chain(name, pki.server_cert.read_text()))
    opts = {
        "missing-chain": f"ssl_chain_cert={missing},ssl_key={pki.server_key}",
        "no-chain": f"ssl_key={pki.server_key}",
        "junk-chain": f"ssl_chain_cert={junk},ssl_key={pki.server_key}",
        "missing-key": f"ssl_chain_cert={pki.server_cert},ssl_key={missing}",
        "no-key": f"ssl_chain_cert={pki.server_cert}",
        "bad-key": f"ssl_chain_cert={pki.server_cert},ssl_key={pki.ca}",
        "mismatched-key": f"ssl_chain_cert={pki.server_cert},ssl_key={pki.other_server_key}",
        "missing-ca": f"{files},ssl_ca_cert={missing}",
        "junk-ca": f"{files},ssl_ca_cert={junk}",
        "bad-ciphers": f"{files},ssl_ciphers=BOGUS",
        "empty-chain": f"ssl_chain_cert=,ssl_key={pki.server_key}",
        "empty-key": f"ssl_chain_cert={pki.server_cert},ssl_key=",
        "empty-ca": f"{files},ssl_ca_cert=",
        "empty-ciphers": f"{files},ssl_ciphers=",
        "pem-as-der": f"{chain},ssl_key={pki.server_key},ssl_keyformat=2",
        "der-as-pem": f"{chain},ssl_key={keys.get('pkcs8')},ssl_keyformat=1",
        "format-3": f"{chain},ssl_key={pki.server_key},ssl_keyformat=3",
        "format-0": f"{chain},ssl_key={pki.server_key},ssl_keyformat=0",
        "other-type": f"{chain},ssl_key={keys.get('rsa')}",
        "other-type-der": f"{chain},ssl_key={keys.get('rsa-der')},ssl_keyformat=2",
    }.get(name, f"ssl_chain_cert={broken},ssl_key={pki.server_key}")
    code, err = start_and_fail(kind, ["-Z", "-o", opts])
    assert code == 64
    line = expected.format(
        missing=missing,
        ca=pki.ca,
        junk=junk,
        other_key=pki.other_server_key,
        key=pki.server_key,
        der=keys.get("pkcs8"),
        broken=broken,
    )
    assert err.splitlines()[-1] == line


def der_keys(pki: PKI, tmp_path: Path) -> dict[str, Path]:
    """The server's key as DER, PKCS #8 and traditional (SEC 1), and an RSA key in PEM and
    DER (a key of another type than the certificate's)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
    out = {}
    for name, fmt in (
        ("pkcs8", serialization.PrivateFormat.PKCS8),
        ("traditional", serialization.PrivateFormat.TraditionalOpenSSL),
    ):
        out[name] = tmp_path / f"{name}.der"
        out[name].write_bytes(
            key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption())
        )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for name, encoding in (
        ("rsa", serialization.Encoding.PEM),
        ("rsa-der", serialization.Encoding.DER),
    ):
        out[name] = tmp_path / f"{name}.key"
        out[name].write_bytes(
            other.private_bytes(
                encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return out


@pytest.mark.parametrize("form", ["pkcs8", "traditional"])
def test_ssl_keyformat_2_reads_a_der_key(
    kind: str, form: str, pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """``-o ssl_keyformat=2``: the key file is DER (OpenSSL's SSL_FILETYPE_ASN1). mcached
    took it as PEM, and a DER key stopped the start."""
    der = der_keys(pki, tmp_path)[form]
    server = server_factory(
        kind, "-Z", "-o", f"ssl_chain_cert={pki.server_cert},ssl_key={der},ssl_keyformat=2"
    )
    with tls_conn(server.port, client_context(pki)) as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"


def test_refresh_certs_error_line(
    kind: str, pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """A bad file at refresh_certs: memcached's error line, sent even with noreply."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki.server_cert, cert)
    shutil.copy(pki.server_key, key)
    server = server_factory(kind, "-Z", "-o", f"ssl_chain_cert={cert},ssl_key={key}")
    with tls_conn(server.port, client_context(pki)) as s:
        shutil.copy(pki.other_server_cert, cert)
        mismatch = (
            f"Error loading the key: {key} : "
            "error:05800074:x509 certificate routines::key values mismatch\r\n"
        ).encode()
        assert request(s, b"refresh_certs\r\n") == mismatch
        cert.write_text("junk\n")
        junk = (
            f"Error loading the certificate chain: {cert} : "
            "error:0480006C:PEM routines::no start line\r\n"
        ).encode()
        assert request(s, b"refresh_certs noreply\r\n") == junk


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("ssl_verify_mode=4", "Invalid ssl_verify_mode. Use help to see valid options."),
        ("ssl_min_version=tlsv1.2", "could not parse argument to ssl_min_version"),
        ("ssl_chain_cert", "Missing ssl_chain_cert argument"),
    ],
)
def test_bad_tls_options(kind: str, option: str, message: str) -> None:
    if kind == "memcached" and shutil.which("memcached") is None:
        pytest.skip("reference memcached not installed")
    code, err = start_and_fail(kind, ["-Z", "-o", option])
    assert code == 1
    assert message in err


def procs_with_rotating_files(
    pki: PKI, tmp_path: Path, server_factory: Callable[..., Server], threads: int
) -> tuple[Server, ssl.SSLContext]:
    """Worker processes serving TLS from copies of the PKI's files, which `rotate` replaces."""
    shutil.copy(pki.server_cert, tmp_path / "cert.pem")
    shutil.copy(pki.server_key, tmp_path / "key.pem")
    files = f"ssl_chain_cert={tmp_path / 'cert.pem'},ssl_key={tmp_path / 'key.pem'}"
    server = server_factory("mcached-procs", "-t", str(threads), "-Z", "-o", files)
    return server, client_context(pki)


def rotate(pki: PKI, tmp_path: Path, server: Server, ctx: ssl.SSLContext) -> None:
    """The other certificate and key in place of the files, and refresh_certs."""
    shutil.copy(pki.other_server_cert, tmp_path / "cert.pem")
    shutil.copy(pki.other_server_key, tmp_path / "key.pem")
    with tls_conn(server.port, ctx) as s:
        assert request(s, b"refresh_certs\r\n") == b"OK\r\n"


def peer_cns(server: Server, ctx: ssl.SSLContext, n: int) -> set[str]:
    """The certificate names `n` new connections were shown (open at once: they spread
    over the workers)."""
    names = set()
    socks = [tls_conn(server.port, ctx) for _ in range(n)]
    for s in socks:
        request(s, b"version\r\n")
        names.add(str(dict(x[0] for x in s.getpeercert()["subject"])["commonName"]))
    for s in socks:
        s.close()
    return names


def test_refresh_certs_reaches_every_worker_process(
    pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """With worker processes, refresh_certs on one connection loads the new files in every
    worker: each new handshake, whichever worker accepts it, shows the new certificate; and
    the handshake errors of every worker are counted in stats."""
    server, ctx = procs_with_rotating_files(pki, tmp_path, server_factory, 4)
    assert peer_cns(server, ctx, 12) == {"127.0.0.1"}
    rotate(pki, tmp_path, server, ctx)
    assert peer_cns(server, ctx, 12) == {"127.0.0.1 (rotated)"}
    # plain-text clients fail their handshakes on whichever worker; counted when their text
    # has come by the accept (as memcached counts), so it is sent while the workers are
    # stopped
    import psutil

    workers = psutil.Process(server.handle.pid).children()
    for p in workers:
        p.suspend()
    try:
        raws = [socket.create_connection(server.address, timeout=TIMEOUT) for _ in range(6)]
        for raw in raws:
            raw.sendall(b"version\r\n")
    finally:
        for p in workers:
            p.resume()
    for raw in raws:
        try:
            raw.recv(100)
        except OSError:
            pass
        raw.close()
    deadline = time.monotonic() + 5
    while True:
        with tls_conn(server.port, ctx) as s:
            reply = request(s, b"stats\r\n", end=b"END\r\n")
        if b"STAT ssl_handshake_errors 6\r\n" in reply:
            break
        assert time.monotonic() < deadline, reply
        time.sleep(0.05)


def wait_replaced(supervisor: Any, before: set[int], n: int) -> None:
    """Until `n` children of `supervisor` (a psutil.Process) are new since `before`, then
    half a second for them to start their loops."""
    deadline = time.monotonic() + 20
    while len({p.pid for p in supervisor.children()} - before) < n:
        assert time.monotonic() < deadline, "the dead workers were not replaced"
        time.sleep(0.05)
    time.sleep(0.5)


def test_a_worker_process_started_after_refresh_certs_serves_the_new_certificate(
    pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """A worker process that replaces a dead one is forked from the supervisor, which
    loaded the certificate files at start: it must load the files refresh_certs loaded
    since, before its first handshake, not at its first wake-up."""
    import psutil

    server, ctx = procs_with_rotating_files(pki, tmp_path, server_factory, 2)
    rotate(pki, tmp_path, server, ctx)
    assert peer_cns(server, ctx, 8) == {"127.0.0.1 (rotated)"}
    supervisor = psutil.Process(server.handle.pid)
    before = {p.pid for p in supervisor.children()}
    with tls_conn(server.port, ctx) as s:  # the worker that serves it is the one killed
        request(s, b"version\r\n")
        port = s.getsockname()[1]
        victim = next(
            p.pid
            for p in supervisor.children()
            if any(c.raddr and c.raddr.port == port for c in p.net_connections("tcp"))
        )
    os.kill(victim, 9)
    wait_replaced(supervisor, before, 1)
    # 8 new connections, none woken by anything: the balancing spreads them over both
    assert peer_cns(server, ctx, 8) == {"127.0.0.1 (rotated)"}


def test_a_worker_started_after_refresh_certs_serves_what_the_others_loaded(
    pki: PKI, tmp_path: Path, server_factory: Callable[..., Server]
) -> None:
    """Regression (a hunt at -t 4): after a refresh_certs, files changed on disk without
    another refresh (or removed) and then a worker died: its replacement read the files at
    its start and served other certificates than its siblings (the new files, or with the
    files gone the start's). The supervisor follows a refresh_certs within a second now,
    and a replacement starts with the certificates the others serve."""
    import psutil

    server, ctx = procs_with_rotating_files(pki, tmp_path, server_factory, 2)
    rotate(pki, tmp_path, server, ctx)
    time.sleep(2.0)  # the supervisor's copy follows (once a second)
    shutil.copy(pki.server_cert, tmp_path / "cert.pem")  # changed, not refreshed
    shutil.copy(pki.server_key, tmp_path / "key.pem")
    supervisor = psutil.Process(server.handle.pid)
    before = {p.pid for p in supervisor.children()}
    for victim in [p for p in supervisor.children() if p.net_connections("tcp")]:
        victim.kill()  # every worker (the maintainer holds no socket)
    wait_replaced(supervisor, before, 2)
    assert peer_cns(server, ctx, 8) == {"127.0.0.1 (rotated)"}


# ---- the ssl_* stats rows, counted as memcached counts them ----


def test_time_since_server_cert_refresh_counts_from_memcacheds_clock_zero(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached stamps the certificates loaded at start with its clock's zero, 60 s ahead
    of ``uptime`` (ITEM_UPDATE_INTERVAL): a fresh daemon shows uptime + 60; after
    refresh_certs, the seconds since it."""
    server = server_factory(kind, *tls_flags(pki))
    client = mc_client(server, client_context(pki))
    try:
        stats = client.stats()
        assert stats[b"time_since_server_cert_refresh"] - stats[b"uptime"] == 60
        with tls_conn(server.port, client_context(pki)) as s:
            assert request(s, b"refresh_certs\r\n") == b"OK\r\n"
        assert client.stats()[b"time_since_server_cert_refresh"] <= 1
    finally:
        client.close()


def test_ssl_new_sessions_counts_tickets(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached counts OpenSSL's new-session callback: TLS 1.3 sends two tickets after a
    full handshake and one after a resumption; TLS 1.2 caches a session (counted) only for
    a client that takes no ticket."""
    server = server_factory(kind, *tls_flags(pki, "ssl_session_cache"))

    def new_sessions() -> int:
        with tls_conn(server.port, client_context(pki)) as s:
            reply = request(s, b"stats\r\n", end=b"END\r\n")
        row = next(ln for ln in reply.split(b"\r\n") if ln.startswith(b"STAT ssl_new_sessions "))
        return int(row.split()[2])

    def connect(ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSession:
        raw = socket.create_connection(server.address, timeout=TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname=HOST, session=session) as s:
            request(s, b"version\r\n")  # TLS 1.3 tickets arrive after the handshake
            assert s.session_reused == (session is not None)
            assert s.session is not None
            return s.session

    tls13 = client_context(pki)
    tls12 = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    no_ticket = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    no_ticket.options |= ssl.OP_NO_TICKET
    counts = []
    before = new_sessions()  # itself a full TLS 1.3 handshake: 2
    for ctx in (tls13, tls12):
        session = connect(ctx)
        counts.append(new_sessions() - before - 2)
        connect(ctx, session)
        counts.append(new_sessions() - before - 4 - counts[-1])
        before = new_sessions()
    connect(no_ticket)
    counts.append(new_sessions() - before - 2)
    assert counts == [2, 1, 0, 0, 1]


def test_handshake_errors_count_only_what_came_with_the_accept(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached calls SSL_accept once as it accepts and counts only that call's failures
    in ssl_handshake_errors; the rest of the handshake runs in its reads, where a failure
    closes the connection uncounted. So a client that waits before its ClientHello and is
    then refused (no certificate, one from another CA), or that sends plain text late, or
    connects and leaves without a byte, is not counted; plain text that comes with the
    connection is."""
    server = server_factory(kind, *tls_flags(pki, "ssl_verify_mode=2", f"ssl_ca_cert={pki.ca}"))
    good = client_context(pki, (pki.client_cert, pki.client_key))

    def errors() -> int:
        client = mc_client(server, good)
        try:
            return int(client.stats()[b"ssl_handshake_errors"])
        finally:
            client.close()

    def slow(send: Callable[[socket.socket], None]) -> None:
        with socket.create_connection(server.address, timeout=TIMEOUT) as raw:
            time.sleep(0.3)  # accepted, and its first handshake step taken, by now
            try:
                send(raw)
            except (ssl.SSLError, OSError):
                pass

    def tls_client(ctx: ssl.SSLContext) -> Callable[[socket.socket], None]:
        def send(raw: socket.socket) -> None:
            s = ctx.wrap_socket(raw, server_hostname=HOST)
            s.sendall(b"version\r\n")
            s.recv(100)

        return send

    def plain_text(raw: socket.socket) -> None:
        raw.sendall(b"version\r\n")
        raw.recv(100)

    counts = [errors()]
    for send in (
        tls_client(client_context(pki)),
        tls_client(client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)),
        tls_client(client_context(pki, (pki.rogue_cert, pki.rogue_key))),
        plain_text,
        lambda raw: None,
    ):
        slow(send)
        counts.append(errors())
    assert counts == [counts[0]] * 6  # (the test harness's readiness probe may count once)


@pytest.mark.parametrize("kind", ["mcached-procs", "memcached"])
def test_a_connection_reset_before_the_accept_counts_as_a_handshake_error(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """A client that connects and resets before the server accepts (the server's processes
    stopped meanwhile, so that it surely comes first): memcached's handshake step at the
    accept fails on the reset socket, and counts it; mcached's set-up of the socket failed
    first and the connection was dropped uncounted (0 of 20 against memcached's 20)."""
    import psutil

    server = server_factory(kind, *tls_flags(pki))
    client = mc_client(server, client_context(pki))
    try:
        before = int(client.stats()[b"ssl_handshake_errors"])
        client.close()
        family = [psutil.Process(server.handle.pid)]
        family += family[0].children(recursive=True)
        for p in family:
            p.suspend()
        try:
            for _ in range(10):
                raw = socket.create_connection(server.address, timeout=TIMEOUT)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw.close()  # a reset, in the accept queue
        finally:
            for p in family:
                p.resume()
        client = mc_client(server, client_context(pki))
        deadline = time.monotonic() + 5
        while int(client.stats()[b"ssl_handshake_errors"]) - before < 10:
            assert time.monotonic() < deadline, client.stats()[b"ssl_handshake_errors"]
            time.sleep(0.05)
    finally:
        client.close()


def test_a_connection_refused_in_the_accepts_handshake_is_not_counted(
    kind: str, pki: PKI, server_factory: Callable[..., Server]
) -> None:
    """memcached takes the handshake's first step inside its accept and closes a
    connection that fails it (plain text that came with it) before counting it in
    total_connections: each connection counts in one of total_connections and
    ssl_handshake_errors (a step that waits for more is counted as accepted). Regression:
    mcached counted such a connection in both."""
    server = server_factory(kind, *tls_flags(pki))

    def figures() -> tuple[int, int]:
        client = mc_client(server, client_context(pki))
        try:
            st = client.stats()
            return int(st[b"total_connections"]), int(st[b"ssl_handshake_errors"])
        finally:
            client.close()

    total, errors = figures()
    sent = asked = 0
    # Whether the plain text is there at the accept depends on timing: a loaded machine
    # may accept a connection before its text arrives (then counted as accepted, its
    # failure not an error): connections are made until one is refused at the accept.
    for _ in range(8):
        for _ in range(5):
            with socket.create_connection(server.address, timeout=TIMEOUT) as raw:
                raw.sendall(b"stats\r\n")
                try:
                    while raw.recv(4096):
                        pass
                except OSError:
                    pass  # reset
            sent += 1
        total_after, errors_after = figures()
        asked += 1
        if errors_after > errors:
            break
    new = total_after - total - asked  # less the figures() clients' own
    assert errors_after > errors
    assert new + (errors_after - errors) == sent


def test_a_broken_chain_is_its_own_fault_without_openssl_to_ask_too(
    pki: PKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where OpenSSL's library cannot be reached through ctypes, a certificate block that
    does not read is still blamed on the chain (in the ssl module's words), not the key."""
    from mcached.server import tls

    monkeypatch.setattr(tls, "_libssl", lambda: None)
    broken = tmp_path / "broken.pem"
    broken.write_text(NOT_DER)
    with pytest.raises(tls.TLSError, match=f"^Error loading the certificate chain: {broken} : "):
        tls._check_chain(str(broken))
    broken.write_text("junk\n")
    with pytest.raises(tls.TLSError, match="PEM routines::no start line$"):
        tls._check_chain(str(broken))
    assert tls._check_chain(str(pki.server_cert)) == str(pki.server_cert)
