"""SASL (``-S``): the mechanisms mcached serves and the password file they check against.

memcached hands SASL to Cyrus SASL, whose mechanism list and user database come from the
system's configuration. mcached serves the two mechanisms its clients use, against
memcached's own password file (``MEMCACHED_SASL_PWDB``, or ``--sasl-pwdb``):

* ``PLAIN`` (RFC 4616): one message, ``[authzid] NUL user NUL password``; what
  python-binary-memcached sends, and what libmemcached picks when it is the only one offered.
* ``CRAM-MD5`` (RFC 2195): the server sends a challenge, the client answers
  ``user SP hex(HMAC-MD5(password, challenge))``: the password never crosses the wire.
  libmemcached (through Cyrus's client) picks it over PLAIN from the list we send.

`MECHS` is what ``SASL_LIST_MECHS`` answers: memcached's test configuration's list
(``t/sasl/memcached.conf``: ``mech_list: plain cram-md5``), in Cyrus's order.

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

import enum
import hmac
import logging
import os
import secrets
import socket
import time

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

    def _load(self, initial: bool = False) -> None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            if initial:
                log.warning("SASL password file %s unreadable (%s): no users", self.path, reason)
            else:
                log.error("SASL password file %s not reloaded (%s)", self.path, reason)
            return
        entries = []
        for line in data.splitlines():
            user, colon, rest = line.partition(b":")
            if colon and user:
                entries.append((user, rest.split(b":", 1)[0].split(b"\0", 1)[0]))
        self._entries, self._by_user = entries, parse_pwdb(data)

    def reload(self) -> None:
        """SIGHUP: re-read the file (a missing one keeps the current entries)."""
        if not self.path:
            return
        self._load()
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
        """SASL_AUTH: begin `mech` with the client's first message."""
        state.mech = b""  # type: ignore[attr-defined]
        state.challenge = b""  # type: ignore[attr-defined]
        if mech == PLAIN:
            parts = data.split(b"\0")
            if len(parts) != 3 or not parts[1]:
                return Result.FAIL, b""
            _authzid, user, password = parts
            ok = self.passwords.check(user, password)
            return (Result.OK if ok else Result.FAIL), b""
        if mech == CRAM_MD5:
            challenge = b"<%d.%d@%s>" % (
                secrets.randbits(63),
                int(time.time()),
                self.hostname.encode(),
            )
            state.mech = CRAM_MD5  # type: ignore[attr-defined]
            state.challenge = challenge  # type: ignore[attr-defined]
            return Result.CONTINUE, challenge
        return Result.FAIL, b""  # a mechanism we do not serve (Cyrus: SASL_NOMECH)

    def step(self, state: object, data: bytes) -> tuple[Result, bytes]:
        """SASL_STEP: the client's answer to the challenge `start` sent."""
        mech, challenge = state.mech, state.challenge  # type: ignore[attr-defined]
        state.mech = b""  # type: ignore[attr-defined]
        state.challenge = b""  # type: ignore[attr-defined]
        if mech != CRAM_MD5 or not challenge:
            return Result.FAIL, b""  # memcached: a step with no auth started fails
        user, sep, digest = data.rpartition(b" ")
        password = self.passwords.password(user) if sep else None
        if password is None:
            # compare anyway, so a missing user takes as long as a wrong password
            hmac.compare_digest(digest, hmac.new(b"", challenge, "md5").hexdigest().encode())
            return Result.FAIL, b""
        expected = hmac.new(password, challenge, "md5").hexdigest().encode()
        ok = hmac.compare_digest(digest.lower(), expected)
        return (Result.OK if ok else Result.FAIL), b""
