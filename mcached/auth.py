"""ASCII authentication (``-Y <file>``): the credentials file, loaded at start, re-read on HUP.

The file is memcached's (``authfile.c``): one ``user:password`` per line, the password running
to the end of the line (a ``\\r`` before the ``\\n`` is dropped). A line without a colon,
a blank line included, is malformed; memcached refuses to start on it, and so do we. Unlike
memcached, which keeps the first 8 entries and silently drops the rest, every entry counts.

Rules:

* `check()` compares every entry, user and password both, with `hmac.compare_digest` and no
  early exit, so the time it takes does not tell an attacker which user exists or how much of
  a password matched (memcached's ``safe_memcmp`` for the same reason).
* `reload()` (SIGHUP) builds the new table first and swaps it in with one assignment: a
  missing or malformed file keeps the previous credentials, and a worker thread reading
  ``self._entries`` mid-reload sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import hmac
import logging
import os

from mcached.settings import SettingsError, authfile_unreadable

log = logging.getLogger("mcached.auth")


class AuthFileError(SettingsError):
    """The file cannot be read or has a malformed entry (memcached's words, exit code 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=1)


def parse_auth_file(data: bytes, path: str) -> list[tuple[bytes, bytes]]:
    """``user:pass`` lines -> [(user, password)]; raises AuthFileError on a malformed line."""
    entries: list[tuple[bytes, bytes]] = []
    lines = data.split(b"\n")  # memcached's fgets: a lone \r ends no line (splitlines did)
    if not lines[-1]:
        del lines[-1]  # after the last \n
    for line in lines:
        user, colon, password = line.partition(b":")
        if not colon or b"\0" in user:
            raise AuthFileError(
                f"Authfile [{path}] has a malformed entry. Should be 'user:password'"
            )
        # memcached ends the password at the first \r, \n or NUL
        for stop in (b"\r", b"\n", b"\0"):
            password = password.split(stop, 1)[0]
        entries.append((user, password))
    return entries


def load_auth_file(path: str) -> list[tuple[bytes, bytes]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise AuthFileError(authfile_unreadable(path, reason)) from None
    return parse_auth_file(data, path)


class AuthFile:
    """The credentials of ``-Y``. Thread-safe: workers call `check()`, the main thread
    `reload()`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._entries = load_auth_file(path)

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, user: bytes, password: bytes) -> bool:
        """True when some entry has exactly this user and password. Constant time in the
        contents: every entry is compared in full, whatever matched before."""
        ok = False
        for e_user, e_password in self._entries:
            # both comparisons always run: `&`, not `and`
            ok |= hmac.compare_digest(user, e_user) & hmac.compare_digest(password, e_password)
        return ok

    def reload(self) -> None:
        """SIGHUP: re-read the file; on error keep the current credentials and log why."""
        try:
            entries = load_auth_file(self.path)
        except AuthFileError as exc:
            log.error("auth file not reloaded, keeping %d entries: %s", len(self._entries), exc)
            return
        self._entries = entries
        logging.getLogger("mcached.lifecycle").info(
            "auth file %s reloaded: %d entries", self.path, len(entries)
        )

    def __repr__(self) -> str:
        return f"AuthFile({self.path!r})"
