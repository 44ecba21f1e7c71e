"""SASL (``-S``): the mechanisms mcached serves and the password file they check against.

memcached hands SASL to Cyrus SASL, whose mechanism list and user database come from the
system's configuration. mcached serves the two mechanisms its clients use, against
memcached's own password file (``MEMCACHED_SASL_PWDB``, or ``--sasl-pwdb``):

* ``PLAIN`` (RFC 4616): one message, ``[authzid] NUL user NUL password``; what
  python-binary-memcached sends, and what libmemcached picks when it is the only one offered.
* ``CRAM-MD5`` (RFC 2195): the server sends a challenge, the client answers
  ``user SP hex(HMAC-MD5(password, challenge))``: the password never crosses the wire.
  libmemcached (through Cyrus's client) picks it over PLAIN from the list we send.

Without a password file, `Cyrus` serves SASL as memcached does: through Cyrus SASL's own
library (``libsasl2``, through ctypes), its configuration (``memcached.conf`` in
``SASL_CONF_PATH``, else ``/etc/sasl2``: ``mech_list``, ``sasldb_path``) and its user
database (``saslpasswd2 -a memcached``), whatever mechanisms its plugins offer.

`MECHS` is what ``SASL_LIST_MECHS`` answers with a password file: the list of memcached's
test configuration (``t/sasl/memcached.conf``: ``mech_list: plain cram-md5``), in the order
Cyrus lists it.

The file: one ``user:password`` per line, as memcached's ``sasl_server_userdb_checkpass``
reads it: the password ends at a ``:``, ``\\r``, ``\\n`` or the end of the line; lines
without a colon are ignored. A user may carry a realm (``user@realm``): it is compared as
the client sends it. memcached re-reads the file at every authentication; mcached reads it at
start and on SIGHUP (`reload`, in every worker process): a missing file then keeps the
previous entries.

Rules: `check` compares every entry in full (`hmac.compare_digest`, no early exit), as
memcached's ``safe_memcmp``; nothing here logs a password.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import hmac
import logging
import os
import secrets
import socket
import time
import weakref
from typing import Any

log = logging.getLogger("mcached.sasl")

MECHS = b"PLAIN CRAM-MD5"
PLAIN = b"PLAIN"
CRAM_MD5 = b"CRAM-MD5"
ENV = "MEMCACHED_SASL_PWDB"


class Result(enum.Enum):
    OK = "ok"  # authenticated
    CONTINUE = "continue"  # the mechanism sent a challenge: the client must step
    FAIL = "fail"

    __hash__ = object.__hash__


def parse_pwdb(data: bytes) -> dict[bytes, bytes]:
    """``user:password`` lines -> {user: password}; the first entry of a user wins for
    CRAM-MD5 (PLAIN accepts any of a user's entries, as memcached's loop does)."""
    entries: dict[bytes, bytes] = {}
    for line in data.splitlines():
        user, colon, rest = line.partition(b":")
        if not colon or not user:
            continue
        password = rest.split(b":", 1)[0].split(b"\0", 1)[0]
        entries.setdefault(user, password)
    return entries


class Passwords:
    """The password file; thread-safe: workers read, SIGHUP's `reload` swaps the table in
    one assignment."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._entries: list[tuple[bytes, bytes]] = []
        self._by_user: dict[bytes, bytes] = {}
        if path:
            self._load(initial=True)
        else:
            log.warning(
                "SASL is on without a password file (%s or --sasl-pwdb): every "
                "authentication fails",
                ENV,
            )

    def _load(self, initial: bool = False) -> bool:
        """Read the file; False (said why, the entries kept) if it cannot be read."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if initial:
                log.warning("SASL password file %s unreadable (%s): no users", self.path, reason)
            else:
                log.error("SASL password file %s not reloaded (%s)", self.path, reason)
            return False
        entries = []
        for line in data.splitlines():
            user, colon, rest = line.partition(b":")
            if colon and user:
                entries.append((user, rest.split(b":", 1)[0].split(b"\0", 1)[0]))
        self._entries, self._by_user = entries, parse_pwdb(data)
        return True

    def reload(self) -> None:
        """SIGHUP: re-read the file (a missing one keeps the current entries, and says so:
        only that, not that it reloaded)."""
        if self.path and self._load():
            logging.getLogger("mcached.lifecycle").info(
                "SASL password file %s reloaded: %d entries", self.path, len(self._entries)
            )

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, user: bytes, password: bytes) -> bool:
        """True when some entry has exactly this user and password (constant time in the
        contents: every entry is compared in full)."""
        ok = False
        for e_user, e_password in self._entries:
            ok |= hmac.compare_digest(user, e_user) & hmac.compare_digest(password, e_password)
        return ok

    def password(self, user: bytes) -> bytes | None:
        return self._by_user.get(user)

    def __repr__(self) -> str:
        return f"Passwords({self.path!r})"


class Sasl:
    """The server side of the mechanisms. A connection's conversation state lives in its
    `mcached.protocol.binary.SaslState` (``mech`` and ``challenge``), handed in per call."""

    def __init__(self, passwords: Passwords, hostname: str | None = None) -> None:
        self.passwords = passwords
        self.hostname = hostname or socket.gethostname() or "localhost"

    def mechs(self) -> bytes:
        return MECHS

    def start(self, state: object, mech: bytes, data: bytes) -> tuple[Result, bytes]:
        """SASL_AUTH: begin `mech` with the client's first message.

        As Cyrus SASL (memcached's): once an exchange has let a connection in (`spent`,
        Cyrus's doneflag), the mechanism's next step refuses ("attempting server step after
        doneflag"), and a start that fails clears the flag: the next start is a new exchange.
        So after a success the first new login fails and the one after it is checked; PLAIN
        with no initial response runs no step (an empty challenge asks for it)."""
        state.mech = b""  # type: ignore[attr-defined]
        state.challenge = b""  # type: ignore[attr-defined]
        mech = mech.upper()  # Cyrus names mechanisms without regard to case
        if mech == PLAIN and not data:
            # no initial response: Cyrus asks for it with an empty challenge
            state.mech = PLAIN  # type: ignore[attr-defined]
            return Result.CONTINUE, b""
        if state.spent or mech not in (PLAIN, CRAM_MD5):  # type: ignore[attr-defined]
            state.spent = False  # type: ignore[attr-defined]
            return Result.FAIL, b""  # (a mechanism we do not serve: Cyrus's SASL_NOMECH)
        if mech == PLAIN:
            return self._plain(state, data)
        if mech == CRAM_MD5:
            if data:
                # the server speaks first in CRAM-MD5: Cyrus refuses a client's initial
                # response (SASL_BADPROT), and memcached answers "Auth failure."
                return Result.FAIL, b""
            challenge = b"<%d.%d@%s>" % (
                secrets.randbits(63),
                int(time.time()),
                self.hostname.encode(),
            )
            state.mech = CRAM_MD5  # type: ignore[attr-defined]
            state.challenge = challenge  # type: ignore[attr-defined]
            return Result.CONTINUE, challenge
        raise AssertionError(mech)

    def step(self, state: object, data: bytes) -> tuple[Result, bytes]:
        """SASL_STEP: the client's answer to the challenge `start` sent (none on a
        connection an exchange let in: see `start`; the flag stays)."""
        mech, challenge = state.mech, state.challenge  # type: ignore[attr-defined]
        state.mech = b""  # type: ignore[attr-defined]
        state.challenge = b""  # type: ignore[attr-defined]
        if state.spent:  # type: ignore[attr-defined]
            return Result.FAIL, b""
        if mech == PLAIN:
            return self._plain(state, data)
        if mech != CRAM_MD5 or not challenge:
            return Result.FAIL, b""  # memcached: a step with no auth started fails
        user, sep, digest = data.rpartition(b" ")
        password = self.passwords.password(user) if sep else None
        if password is None:
            # compare anyway, so a missing user takes as long as a wrong password
            hmac.compare_digest(digest, hmac.new(b"", challenge, "md5").hexdigest().encode())
            return Result.FAIL, b""
        expected = hmac.new(password, challenge, "md5").hexdigest().encode()
        # the digest in lower case, as Cyrus compares it (an upper-case one is refused)
        return self._ended(state, hmac.compare_digest(digest, expected))

    def _plain(self, state: object, data: bytes) -> tuple[Result, bytes]:
        """PLAIN's one message, ``authzid NUL user NUL password``. As Cyrus (with no proxy
        policy), an identity to act as that is not the user's own is refused."""
        parts = data.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return Result.FAIL, b""
        authzid, user, password = parts
        if authzid and authzid != user:
            return Result.FAIL, b""
        return self._ended(state, self.passwords.check(user, password))

    @staticmethod
    def _ended(state: object, ok: bool) -> tuple[Result, bytes]:
        if ok:
            state.spent = True  # type: ignore[attr-defined]
        return (Result.OK if ok else Result.FAIL), b""


# ---- Cyrus SASL (libsasl2), memcached's own route ----

SASL_OK = 0
SASL_CONTINUE = 1
_c = ctypes.c_void_p


class CyrusUnavailable(Exception):
    """libsasl2 cannot be loaded or initialised."""


class Cyrus:
    """memcached's SASL: a ``sasl_conn_t`` per connection (kept in its `SaslState`, disposed
    with it), ``sasl_server_start``/``sasl_server_step`` deciding. Initialised once per
    process, at first use (worker processes are forked before any)."""

    def __init__(self, hostname: str | None = None, lib: Any = None) -> None:
        self.hostname = (hostname or socket.gethostname() or "").encode() or None
        self._lib = lib if lib is not None else self._load()
        self._pid = 0

    @staticmethod
    def _load() -> Any:
        name = ctypes.util.find_library("sasl2") or "libsasl2.so.2"
        try:
            lib = ctypes.CDLL(name)
        except OSError as exc:
            raise CyrusUnavailable(f"Cyrus SASL library not loadable: {exc}") from None
        p, cp, u = ctypes.c_char_p, ctypes.POINTER(_c), ctypes.c_uint
        lib.sasl_server_init.argtypes = [_c, p]
        lib.sasl_server_new.argtypes = [p, p, p, p, p, _c, u, cp]
        lib.sasl_listmech.argtypes = [
            _c, p, p, p, p, ctypes.POINTER(p), ctypes.POINTER(u), ctypes.POINTER(ctypes.c_int)
        ]  # fmt: skip
        lib.sasl_server_start.argtypes = [_c, p, p, u, cp, ctypes.POINTER(u)]
        lib.sasl_server_step.argtypes = [_c, p, u, cp, ctypes.POINTER(u)]
        lib.sasl_dispose.argtypes = [cp]
        return lib

    def _ready(self) -> None:
        pid = os.getpid()
        if self._pid != pid:
            if self._lib.sasl_server_init(None, b"memcached") != SASL_OK:
                raise CyrusUnavailable("sasl_server_init failed")
            self._pid = pid

    def _new(self) -> Any:
        self._ready()
        conn = _c()
        rc = self._lib.sasl_server_new(
            b"memcached", self.hostname, None, None, None, None, 0, ctypes.byref(conn)
        )
        if rc != SASL_OK:
            raise CyrusUnavailable(f"sasl_server_new failed ({rc})")
        return conn

    def _conn(self, state: Any) -> Any:
        conn = state.cyrus
        if conn is None:
            conn = state.cyrus = self._new()
            weakref.finalize(state, self._lib.sasl_dispose, ctypes.byref(conn))
        return conn

    def mechs(self) -> bytes:
        conn = self._new()
        try:
            out = ctypes.c_char_p()
            n = ctypes.c_uint()
            count = ctypes.c_int()
            rc = self._lib.sasl_listmech(
                conn, None, b"", b" ", b"", ctypes.byref(out), ctypes.byref(n), ctypes.byref(count)
            )
            return (out.value or b"") if rc == SASL_OK else b""
        finally:
            self._lib.sasl_dispose(ctypes.byref(conn))

    def _result(self, rc: int, out: Any, n: Any) -> tuple[Result, bytes]:
        if rc == SASL_OK:
            return Result.OK, b""
        if rc == SASL_CONTINUE:
            return Result.CONTINUE, ctypes.string_at(out, n.value) if n.value else b""
        return Result.FAIL, b""

    def start(self, state: Any, mech: bytes, data: bytes) -> tuple[Result, bytes]:
        conn = self._conn(state)
        out = _c()
        n = ctypes.c_uint()
        rc = self._lib.sasl_server_start(
            conn, mech, data or None, len(data), ctypes.byref(out), ctypes.byref(n)
        )
        state.mech = mech if rc in (SASL_OK, SASL_CONTINUE) else b""
        return self._result(rc, out, n)

    def step(self, state: Any, data: bytes) -> tuple[Result, bytes]:
        if not state.mech or state.cyrus is None:
            return Result.FAIL, b""  # memcached: SASL_STEP before sasl_server_start
        out = _c()
        n = ctypes.c_uint()
        rc = self._lib.sasl_server_step(
            state.cyrus, data or None, len(data), ctypes.byref(out), ctypes.byref(n)
        )
        return self._result(rc, out, n)

    def reload(self) -> None:
        """Cyrus reads its user database at every authentication: nothing to re-read."""
