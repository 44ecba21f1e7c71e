"""ASCII authentication (``-Y``), byte for byte against memcached 1.6.18.

Until a connection has sent ``set <any> <any> <any> <n>`` with an n-byte ``<user> <password>``
block that the auth file lists, every request is answered ``CLIENT_ERROR unauthenticated``.
Every table here runs against both servers (`server_factory` with the `kind` fixture); the
reload on SIGHUP, the auth file's parser and what mcached does differently on purpose run
against mcached alone. The differences:

* memcached 1.6.18 reuses one response object for every unauthenticated line that arrives in
  one read, so only the last of their replies is sent (``get a\r\nget b\r\n`` in one packet:
  one reply). mcached answers every line. The tables send one request per packet, which both
  answer alike.
* memcached keeps the first 8 entries of the file and chops the last character of a password
  on a last line without a newline; mcached keeps every entry and the whole password.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError

from mcached.auth import AuthFile, AuthFileError, parse_auth_file
from tests.conftest import HOST, Server, free_port, wait_ready
from tests.wire import Conn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNAUTH = b"CLIENT_ERROR unauthenticated\r\n"
FAILURE = b"CLIENT_ERROR authentication failure\r\n"
BAD_FORMAT = b"CLIENT_ERROR bad authentication token format\r\n"
BAD_TERM = b"CLIENT_ERROR bad command line termination\r\n"
VERSION = b"VERSION 1.6.18\r\n"
LOGIN = b"set auth 0 0 12\r\nalice s3cret\r\n"


@pytest.fixture
def authfile(tmp_path: Path) -> Path:
    path = tmp_path / "auth"
    path.write_bytes(b"alice:s3cret\nbob:pw with space\ncarol:x:y\r\n")
    return path


@pytest.fixture
def auth_server(kind: str, authfile: Path, server_factory: Callable[..., Server]) -> Server:
    return server_factory(kind, "-Y", str(authfile))


Step = tuple[bytes, bytes]


def exchange(server: Server, *steps: Step) -> None:
    """On one connection, each step sends one packet and reads exactly the reply it expects
    (b"": none, then a pause, so that the next packet is a read of its own)."""
    with Conn(server.address) as c:
        for data, reply in steps:
            c.send(data)
            if reply:
                assert c.read_exact(len(reply)) == reply, (data, reply)
            else:
                time.sleep(0.05)


def answer(server: Server, data: bytes) -> bytes:
    """The one reply line to one packet (connections that get one line back)."""
    with Conn(server.address) as c:
        c.send(data)
        return c.read_until(b"\r\n")


# Before authenticating: every line is refused, and the connection stays open. Each entry
# is a list of (packet, reply) steps.
REFUSED: list[tuple[str, list[Step]]] = [
    ("get", [(b"get k\r\n", UNAUTH)]),
    ("version", [(b"version\r\n", UNAUTH)]),
    ("quit", [(b"quit\r\n", UNAUTH)]),
    ("stats", [(b"stats\r\n", UNAUTH)]),
    ("shutdown", [(b"shutdown\r\n", UNAUTH)]),
    ("empty-line", [(b"\r\n", UNAUTH)]),
    ("gibberish", [(b"\x00\x01\x02\xff\r\n", UNAUTH)]),
    ("http", [(b"GET / HTTP/1.1\r\n", UNAUTH)]),
    ("4-token-set", [(b"set k 0 0\r\n", UNAUTH)]),
    ("add", [(b"add k 0 0 12\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("cas", [(b"cas k 0 0 12 1\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("set-prefix", [(b"setx k 0 0 12\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("upper-case", [(b"SET k 0 0 12\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("tab", [(b"set\tk 0 0 12\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("no-key", [(b"set 0 0 12\r\n", UNAUTH), (b"alice s3cret\r\n", UNAUTH)]),
    ("size-not-a-number", [(b"set k 0 0 abc\r\n", UNAUTH)]),
    ("size-negative", [(b"set k 0 0 -1\r\n", UNAUTH)]),
    ("size-over-64-bits", [(b"set k 0 0 18446744073709551616\r\n", UNAUTH)]),
    # read as 64 bits, kept as 32: 2^32 is a 0-byte block, 2^32 + 12 a 12-byte one
    ("size-2^32-is-0", [(b"set k 0 0 4294967296\r\n", b""), (b"\r\n", BAD_FORMAT)]),
    (
        "size-2^32+12-is-12",
        [
            (b"set k 0 0 4294967308\r\n", b""),
            (b"alice s3cret\r\n", b"STORED\r\n"),
            (b"version\r\n", VERSION),
        ],
    ),
]


@pytest.mark.parametrize("steps", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_unauthenticated_requests_are_refused(auth_server: Server, steps: list[Step]) -> None:
    if steps[-1][1] != VERSION:
        steps = steps + [(b"version\r\n", UNAUTH)]  # still refused, still open
    exchange(auth_server, *steps)


# The exchange itself: the block's first two tokens are the user and the password.
EXCHANGES = [
    ("right", LOGIN, b"STORED\r\n"),
    ("wrong-password", b"set k 0 0 12\r\nalice wrong!\r\n", FAILURE),
    ("unknown-user", b"set k 0 0 9\r\nmallory x\r\n", FAILURE),
    ("password-prefix", b"set k 0 0 11\r\nalice s3cre\r\n", FAILURE),
    ("password-longer", b"set k 0 0 13\r\nalice s3crett\r\n", FAILURE),
    ("user-prefix", b"set k 0 0 11\r\nalic s3cret\r\n", FAILURE),
    ("no-space", b"set k 0 0 11\r\nalices3cret\r\n", BAD_FORMAT),
    ("empty-block", b"set k 0 0 0\r\n\r\n", BAD_FORMAT),
    ("user-only", b"set k 0 0 7\r\n s3cret\r\n", BAD_FORMAT),
    ("nul-ends-block", b"set k 0 0 12\r\nalice\x00s3cret\r\n", BAD_FORMAT),
    ("bad-termination", b"set k 0 0 12\r\nalice s3cretXY", BAD_TERM),
    ("noreply-still-answers", b"set k 0 0 12 noreply\r\nalice s3cret\r\n", b"STORED\r\n"),
    (
        "flags-and-key-ignored",
        b"set " + b"k" * 300 + b" abc def 12\r\nalice s3cret\r\n",
        b"STORED\r\n",
    ),
    ("extra-tokens", b"set k 0 0 12 a b c\r\nalice s3cret\r\n", b"STORED\r\n"),
    ("size-with-plus", b"set k 0 0 +12\r\nalice s3cret\r\n", b"STORED\r\n"),
    ("bare-lf-line", b"set k 0 0 12\nalice s3cret\r\n", b"STORED\r\n"),
    ("spaces-around", b"set  k  0  0  15\r\n alice  s3cret \r\n", b"STORED\r\n"),
    ("trailing-token-ignored", b"set k 0 0 17\r\nalice s3cret more\r\n", b"STORED\r\n"),
    ("nul-after-password", b"set k 0 0 14\r\nalice s3cret\x00x\r\n", b"STORED\r\n"),
    ("nul-in-line", b"set k 0 0 12\x00junk\r\nalice s3cret\r\n", b"STORED\r\n"),
    ("colon-in-password", b"set k 0 0 9\r\ncarol x:y\r\n", b"STORED\r\n"),
    # 1.6.18 tokenizes the block: a password with a space can never match
    ("space-in-password", b"set k 0 0 17\r\nbob pw with space\r\n", FAILURE),
    ("cr-in-password", b"set k 0 0 13\r\nalice s3cr\ret\r\n", FAILURE),
]


@pytest.mark.parametrize(
    ("request_", "expected"), [r[1:] for r in EXCHANGES], ids=[r[0] for r in EXCHANGES]
)
def test_authentication_exchange(auth_server: Server, request_: bytes, expected: bytes) -> None:
    after = VERSION if expected == b"STORED\r\n" else UNAUTH
    exchange(auth_server, (request_, expected), (b"version\r\n", after))


def test_login_then_full_protocol(auth_server: Server) -> None:
    """The exchange stores nothing; pipelined commands after it are served."""
    with Conn(auth_server.address) as c:
        c.send(LOGIN + b"get auth alice\r\nset k 0 0 2\r\nhi\r\nget k\r\nquit\r\n")
        reply = b"STORED\r\nEND\r\nSTORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
        assert c.read_exact(len(reply)) == reply
        assert c.closed()


def test_failure_keeps_the_connection_and_a_retry_works(auth_server: Server) -> None:
    exchange(
        auth_server,
        (b"set k 0 0 12\r\nalice wrong!\r\n", FAILURE),
        (b"set k 0 0 1\r\nx\r\n", BAD_FORMAT),
        (b"get k\r\n", UNAUTH),
        (LOGIN, b"STORED\r\n"),
        (b"version\r\n", VERSION),
    )


def test_exchange_split_byte_by_byte(auth_server: Server) -> None:
    with Conn(auth_server.address) as c:
        for b in LOGIN + b"version\r\n":
            c.send(bytes([b]))
        assert c.read_exact(len(b"STORED\r\n" + VERSION)) == b"STORED\r\n" + VERSION


def test_authentication_is_per_connection(auth_server: Server) -> None:
    with Conn(auth_server.address) as inside, Conn(auth_server.address) as outside:
        for conn, data, reply in [
            (inside, LOGIN, b"STORED\r\n"),
            (outside, b"get k\r\n", UNAUTH),
            (inside, b"set k 0 0 1\r\nv\r\n", b"STORED\r\n"),
            (outside, b"set k 0 0 7\r\nalice w\r\n", FAILURE),
            (inside, b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n"),
        ]:
            assert conn.request(data, expect_len=len(reply)) == reply


@pytest.mark.parametrize("size", [2000, 16382])
def test_auth_block_up_to_16382_bytes_is_read(auth_server: Server, size: int) -> None:
    block = b"alice " + b"x" * (size - 6)
    exchange(auth_server, (b"set k 0 0 %d\r\n" % size, b""), (block + b"\r\n", FAILURE))


@pytest.mark.parametrize("size", [16383, 1_000_000])
def test_auth_block_over_16382_bytes_closes(auth_server: Server, size: int) -> None:
    """memcached's 16 KB read buffer cannot take it and it drops the connection; so do we,
    before buffering any of it."""
    with Conn(auth_server.address) as c:
        c.send(b"set k 0 0 %d\r\n" % size)
        try:
            c.send(b"alice " + b"x" * 20000)
        except OSError:
            pass
        assert c.closed()


@pytest.mark.parametrize("line", [b"x" * 3000, b"get " + b"k " * 1500])
def test_unauthenticated_line_over_2048_bytes_closes(auth_server: Server, line: bytes) -> None:
    """Not even a multiget may be long before authentication."""
    with Conn(auth_server.address) as c:
        c.send(line)
        assert c.closed()


def test_auth_stats(auth_server: Server, authfile: Path) -> None:
    """Every checked block counts in auth_cmds, every refused one in auth_errors too; a
    malformed block counts in neither. stats settings names the file."""
    exchange(
        auth_server,
        (b"set k 0 0 12\r\nalice wrong!\r\n", FAILURE),
        (b"set k 0 0 3\r\nabc\r\n", BAD_FORMAT),
    )
    with Conn(auth_server.address) as c:
        assert c.request(LOGIN, expect_len=8) == b"STORED\r\n"
        c.send(b"stats\r\n")
        stats = dict(
            line.split(b" ")[1:3]
            for line in c.read_until(b"END\r\n").split(b"\r\n")
            if line.startswith(b"STAT ")
        )
        c.send(b"stats settings\r\n")
        settings = c.read_until(b"END\r\n").split(b"\r\n")
    assert (stats[b"auth_cmds"], stats[b"auth_errors"]) == (b"2", b"1")
    assert b"STAT auth_enabled_ascii " + str(authfile).encode() in settings


def test_without_auth_file_the_exchange_is_a_plain_set(server: Server) -> None:
    with Conn(server.address) as c:
        c.send(LOGIN + b"get auth\r\nstats settings\r\n")
        reply = b"STORED\r\nVALUE auth 0 12\r\nalice s3cret\r\nEND\r\n"
        assert c.read_exact(len(reply)) == reply
        assert b"STAT auth_enabled_ascii no\r\n" in c.read_until(b"END\r\n")


def test_pymemcache_plain_set_authenticates(auth_server: Server) -> None:
    """pymemcache has no auth call: its ordinary set does it (with noreply off, so that the
    STORED is read as the set's own reply)."""
    client = Client(auth_server.address, timeout=5, default_noreply=False)
    try:
        with pytest.raises(MemcacheClientError, match="unauthenticated"):
            client.get("k")
        with pytest.raises(MemcacheClientError, match="authentication failure"):
            client.set("alice", b"alice wrong")
        assert client.set("alice", b"alice s3cret") is True
        assert client.set("k", b"v") is True
        assert client.get("k") == b"v"
        assert client.get("alice") is None  # the exchange stored nothing
    finally:
        client.close()


# ---- start-up: memcached's messages and exit codes ----


def start_and_fail(kind: str, args: list[str]) -> tuple[int, str]:
    port = str(free_port())
    if kind == "memcached":
        if shutil.which("memcached") is None:
            pytest.skip("reference memcached not installed")
        cmd = ["memcached", "-l", HOST, "-p", port]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
    else:
        cmd = [sys.executable, "-m", "mcached", "-l", HOST, "-p", port]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run(cmd + args, capture_output=True, timeout=10, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{kind} {args} started instead of failing")
    return proc.returncode, proc.stderr.decode()


@pytest.mark.parametrize(
    ("content", "code", "message"),
    [
        (None, 1, "Could not open authfile [{path}] for reading, error No such file or directory"),
        (
            b"alice:s3cret\nnocolon\n",
            1,
            "Authfile [{path}] has a malformed entry. Should be 'user:password'",
        ),
        (b"a:b\n\nc:d\n", 1, "Authfile [{path}] has a malformed entry. Should be 'user:password'"),
    ],
    ids=["missing", "no-colon", "blank-line"],
)
def test_bad_auth_file_stops_the_start(
    kind: str, tmp_path: Path, content: bytes | None, code: int, message: str
) -> None:
    path = tmp_path / "auth"
    if content is not None:
        path.write_bytes(content)
    got_code, err = start_and_fail(kind, ["-U", "0", "-Y", str(path)])
    assert got_code == code
    assert message.format(path=path) in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as root and drop to -u")
def test_an_auth_file_the_user_cannot_read_stops_the_start(kind: str, tmp_path: Path) -> None:
    """memcached reads the -Y file once it is the -u user: a file only root can read stops
    its start. mcached read it as root and served it, and then no SIGHUP could read it
    again (a user removed from it could still log in until a restart)."""
    path = tmp_path / "auth"
    path.write_bytes(b"alice:s3cret\n")
    path.chmod(0o600)
    tmp_path.chmod(0o755)
    got_code, err = start_and_fail(kind, ["-U", "0", "-Y", str(path), "-u", "nobody"])
    assert got_code == 1, err
    assert f"Could not open authfile [{path}] for reading, error Permission denied" in err


def test_auth_refuses_udp(kind: str, authfile: Path) -> None:
    code, err = start_and_fail(kind, ["-U", str(free_port()), "-Y", str(authfile)])
    assert code == 64
    assert "Cannot use UDP with ascii authentication enabled (-U 0 to disable)" in err


# ---- mcached: reload, and the file's parser ----


def test_reload_changes_credentials_for_new_logins_only(
    authfile: Path, server_factory: Callable[..., Server]
) -> None:
    server = server_factory("mcached", "-Y", str(authfile))
    new_login = b"set k 0 0 9\r\nalice n3w\r\n"
    with Conn(server.address) as before:
        assert before.request(LOGIN, expect_len=8) == b"STORED\r\n"
        authfile.write_bytes(b"alice:n3w\n")
        server.handle.reload()  # what SIGHUP runs
        assert answer(server, LOGIN) == FAILURE
        assert answer(server, new_login) == b"STORED\r\n"
        assert before.request(b"version\r\n", expect_len=16) == VERSION  # still in
        authfile.write_bytes(b"garbage without a colon\n")
        server.handle.reload()  # a bad file keeps the credentials in force
        assert answer(server, new_login) == b"STORED\r\n"
        authfile.unlink()
        server.handle.reload()
        assert answer(server, new_login) == b"STORED\r\n"


def test_login_deadline(authfile: Path, server_factory: Callable[..., Server]) -> None:
    """mcached's --stall-timeout also bounds how long a connection may stay without logging
    in, so clients without credentials cannot sit on the -c slots; once in, a connection may
    idle (memcached has no such deadline)."""
    server = server_factory("mcached", "-Y", str(authfile), "--stall-timeout", "1")
    with Conn(server.address) as stranger, Conn(server.address) as member:
        assert member.request(LOGIN, expect_len=8) == b"STORED\r\n"
        assert stranger.request(b"get k\r\n", expect_len=len(UNAUTH)) == UNAUTH
        assert stranger.closed(wait=3)
        assert member.request(b"version\r\n", expect_len=16) == VERSION


def test_sighup_reloads_the_auth_file(authfile: Path) -> None:
    """The real signal path, in a real process."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcached", "-l", HOST, "-p", str(port), "-Y", str(authfile)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port)
        server = Server("mcached", HOST, port)
        assert answer(server, LOGIN) == b"STORED\r\n"
        authfile.write_bytes(b"dave:pa55\n")
        proc.send_signal(signal.SIGHUP)
        # every worker process reloads on its own: until the last has, a connection may
        # still land on one that knows the old file
        deadline = time.monotonic() + 5
        while (
            answer(server, b"set k 0 0 9\r\ndave pa55\r\n") != b"STORED\r\n"
            or answer(server, LOGIN) != FAILURE
        ):
            assert time.monotonic() < deadline, "SIGHUP did not reload the auth file"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "entries"),
    [
        (b"", []),
        (b"alice:s3cret\n", [(b"alice", b"s3cret")]),
        (b"alice:s3cret", [(b"alice", b"s3cret")]),  # memcached chops the t here
        (b"alice:s3cret\r\nbob:\n", [(b"alice", b"s3cret"), (b"bob", b"")]),
        (b"u:a:b:c\n", [(b"u", b"a:b:c")]),
        (b":nouser\n", [(b"", b"nouser")]),
        (b"u:pass\x00ignored\n", [(b"u", b"pass")]),
        # a lone \r ends the password, not the line (memcached reads lines with fgets;
        # regression: splitlines() made "junk" a malformed line and the start failed)
        (b"alice:pw1\rjunk\nbob:pw2\n", [(b"alice", b"pw1"), (b"bob", b"pw2")]),
        (b"alice:pw\r\r\nbob:x\n", [(b"alice", b"pw"), (b"bob", b"x")]),
        (
            b"".join(b"u%d:p%d\n" % (i, i) for i in range(20)),  # memcached keeps 8
            [(b"u%d" % i, b"p%d" % i) for i in range(20)],
        ),
    ],
)
def test_parse_auth_file(data: bytes, entries: list[tuple[bytes, bytes]]) -> None:
    assert parse_auth_file(data, "f") == entries


@pytest.mark.unit
@pytest.mark.parametrize("data", [b"nocolon\n", b"a:b\n\n", b"\n", b"a\x00b:c\n"])
def test_parse_auth_file_malformed(data: bytes) -> None:
    with pytest.raises(AuthFileError, match="malformed entry"):
        parse_auth_file(data, "f")


@pytest.mark.unit
def test_check_matches_whole_user_and_password(tmp_path: Path) -> None:
    path = tmp_path / "auth"
    path.write_bytes(b"alice:s3cret\nbob:hunter2\n")
    auth = AuthFile(str(path))
    assert len(auth) == 2
    assert auth.check(b"alice", b"s3cret") and auth.check(b"bob", b"hunter2")
    for user, password in [
        (b"alice", b"hunter2"),
        (b"bob", b"s3cret"),
        (b"alice", b"s3cre"),
        (b"alic", b"s3cret"),
        (b"", b""),
        (b"alice", b"s3cret\n"),
    ]:
        assert not auth.check(user, password)
