"""mcached/sasl.py: the password file and the PLAIN and CRAM-MD5 mechanisms."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

import pytest

from mcached.protocol.binary import SaslState
from mcached.sasl import MECHS, Passwords, Result, Sasl, parse_pwdb

pytestmark = pytest.mark.unit


def test_pwdb_lines_as_memcached_reads_them() -> None:
    data = b"alice:secret\nbob:pw:ignored after a colon\r\nno colon here\n:nouser\ncarol:\n"
    assert parse_pwdb(data) == {b"alice": b"secret", b"bob": b"pw", b"carol": b""}


def sasl_for(tmp_path: Path, text: bytes = b"alice:secret\nbob@realm:pw\n") -> Sasl:
    f = tmp_path / "pwdb"
    f.write_bytes(text)
    return Sasl(Passwords(str(f)), hostname="host")


def test_plain(tmp_path: Path) -> None:
    sasl = sasl_for(tmp_path)
    assert sasl.mechs() == MECHS == b"PLAIN CRAM-MD5"

    def start(mech: bytes, data: bytes) -> tuple[Result, bytes]:
        return sasl.start(SaslState(), mech, data)  # each on a connection of its own

    assert start(b"PLAIN", b"\0alice\0secret") == (Result.OK, b"")
    assert start(b"PLAIN", b"alice\0alice\0secret")[0] is Result.OK  # libmemcached's
    assert start(b"PLAIN", b"\0bob@realm\0pw")[0] is Result.OK
    assert start(b"PLAIN", b"\0alice\0wrong")[0] is Result.FAIL
    assert start(b"PLAIN", b"\0bob\0pw")[0] is Result.FAIL  # the realm is the user's
    assert start(b"PLAIN", b"alice secret")[0] is Result.FAIL
    assert start(b"PLAIN", b"\0\0secret")[0] is Result.FAIL
    assert start(b"GSSAPI", b"")[0] is Result.FAIL


def test_plain_as_cyrus_reads_it(tmp_path: Path) -> None:
    """Found by a hunt against memcached with Cyrus's sasldb: a mechanism named in lower
    case, PLAIN with no initial response (an empty challenge, then the credentials in a
    step) and an identity to act as (authzid) that is not the user's: mcached failed the
    first two and let the third in."""
    sasl = sasl_for(tmp_path)
    assert sasl.start(SaslState(), b"plain", b"\0alice\0secret")[0] is Result.OK
    assert sasl.start(SaslState(), b"cram-md5", b"")[0] is Result.CONTINUE
    st = SaslState()
    assert sasl.start(st, b"PLAIN", b"") == (Result.CONTINUE, b"")
    assert sasl.step(st, b"\0alice\0secret")[0] is Result.OK
    st = SaslState()
    assert sasl.start(st, b"PLAIN", b"") == (Result.CONTINUE, b"")
    assert sasl.step(st, b"\0alice\0wrong")[0] is Result.FAIL
    assert sasl.step(st, b"\0alice\0secret")[0] is Result.FAIL  # the exchange is over
    assert sasl.start(SaslState(), b"PLAIN", b"bob@realm\0alice\0secret")[0] is Result.FAIL
    assert sasl.start(SaslState(), b"PLAIN", b"alice\0bob@realm\0pw")[0] is Result.FAIL


def test_after_a_success_the_next_login_fails_and_the_one_after_is_checked(
    tmp_path: Path,
) -> None:
    """As Cyrus SASL (memcached's): after a failure a connection may try again; after a
    success its next exchange fails whatever its credentials (a step after the doneflag),
    and that failed start clears the flag. Regression (a hunt against memcached with a
    sasldb, at -t 4): the password file's mode refused every later login for good, so a
    client that logged in again after a failed re-login was shut out."""
    sasl = sasl_for(tmp_path)
    good, bad = b"\0alice\0secret", b"\0alice\0wrong"

    def results(*calls: tuple[bytes, bytes] | bytes) -> list[Result]:
        """Each call on one connection: (mechanism, data) a start, bytes alone a step."""
        st = SaslState()
        out = []
        for call in calls:
            if isinstance(call, tuple):
                out.append(sasl.start(st, *call)[0])
            else:
                out.append(sasl.step(st, call)[0])
        return out

    ok, fail, more = Result.OK, Result.FAIL, Result.CONTINUE
    plain = b"PLAIN"
    # the sequences memcached 1.6.18 answered so (-S, Cyrus with a sasldb)
    assert results((plain, bad), (plain, good)) == [fail, ok]
    assert results((plain, good), (plain, bad), (plain, good)) == [ok, fail, ok]
    assert results((plain, good), (plain, good), (plain, good)) == [ok, fail, ok]
    assert results((plain, good), (b"NOPE", b""), (plain, good)) == [ok, fail, ok]
    assert results((plain, good), (b"CRAM-MD5", b""), (plain, good)) == [ok, fail, ok]
    # a step fails on a spent connection and leaves it spent
    assert results((plain, good), b"x", (plain, good), (plain, good)) == [ok, fail, fail, ok]
    # PLAIN with no initial response runs no step: an empty challenge, spent or not
    assert results((plain, good), (plain, b""), good, (plain, good), (plain, good)) == [
        ok, more, fail, fail, ok,
    ]  # fmt: skip


def test_cram_md5(tmp_path: Path) -> None:
    sasl = sasl_for(tmp_path)
    st = SaslState()
    result, challenge = sasl.start(st, b"CRAM-MD5", b"")
    assert result is Result.CONTINUE and challenge.startswith(b"<") and b"@host>" in challenge
    digest = hmac.new(b"secret", challenge, "md5").hexdigest().encode()
    assert sasl.step(st, b"alice " + digest) == (Result.OK, b"")
    # a challenge answers once
    assert sasl.step(st, b"alice " + digest)[0] is Result.FAIL
    for answer in (b"alice " + b"0" * 32, b"nobody " + digest, b"nospace"):
        st = SaslState()
        result, challenge = sasl.start(st, b"CRAM-MD5", b"")
        assert result is Result.CONTINUE
        assert sasl.step(st, answer)[0] is Result.FAIL


def test_cram_md5_digest_in_upper_case_is_refused(tmp_path: Path) -> None:
    """Regression (a hunt against memcached with a sasldb): the password file's mode let
    in a digest in upper-case hex, which Cyrus refuses (it compares the lower-case one)."""
    sasl = sasl_for(tmp_path)
    for upper in (True, False):
        st = SaslState()
        _, challenge = sasl.start(st, b"CRAM-MD5", b"")
        digest = hmac.new(b"secret", challenge, "md5").hexdigest()
        answer = b"alice " + (digest.upper() if upper else digest).encode()
        assert sasl.step(st, answer)[0] is (Result.FAIL if upper else Result.OK)


def test_cram_md5_with_an_initial_response_is_refused(tmp_path: Path) -> None:
    """Regression (a hunt against memcached with a sasldb): CRAM-MD5 started with data (the
    server speaks first there) was answered a challenge, and a right step let the client in;
    Cyrus refuses the start, memcached answers "Auth failure." The next start is checked."""
    sasl = sasl_for(tmp_path)
    st = SaslState()
    assert sasl.start(st, b"CRAM-MD5", b"junk") == (Result.FAIL, b"")
    assert sasl.step(st, b"alice " + b"0" * 32)[0] is Result.FAIL  # nothing was started
    result, challenge = sasl.start(st, b"CRAM-MD5", b"")
    assert result is Result.CONTINUE
    digest = hmac.new(b"secret", challenge, "md5").hexdigest().encode()
    assert sasl.step(st, b"alice " + digest) == (Result.OK, b"")


def test_step_without_start_fails(tmp_path: Path) -> None:
    assert sasl_for(tmp_path).step(SaslState(), b"alice x")[0] is Result.FAIL


def test_reload_swaps_and_a_missing_file_keeps(tmp_path: Path) -> None:
    sasl = sasl_for(tmp_path)
    st = SaslState()
    (tmp_path / "pwdb").write_bytes(b"alice:new\n")
    assert sasl.start(st, b"PLAIN", b"\0alice\0new")[0] is Result.FAIL  # until SIGHUP
    sasl.passwords.reload()
    assert sasl.start(st, b"PLAIN", b"\0alice\0new")[0] is Result.OK
    assert len(sasl.passwords) == 1
    (tmp_path / "pwdb").unlink()
    sasl.passwords.reload()
    assert sasl.start(SaslState(), b"PLAIN", b"\0alice\0new")[0] is Result.OK
    assert "pwdb" in repr(sasl.passwords)


def test_no_file_means_no_users(tmp_path: Path) -> None:
    st = SaslState()
    assert Sasl(Passwords("")).start(st, b"PLAIN", b"\0a\0b")[0] is Result.FAIL
    assert Sasl(Passwords(str(tmp_path / "missing"))).start(st, b"PLAIN", b"\0a\0b")[0] is (
        Result.FAIL
    )
    Passwords("").reload()  # nothing to re-read


def test_a_reload_of_a_file_gone_keeps_its_users_and_says_only_that(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the error line was followed by "reloaded: 1 entries"."""
    f = tmp_path / "pwdb"
    f.write_text("alice:s3cret\n")
    passwords = Passwords(str(f))
    f.unlink()
    with caplog.at_level(logging.INFO, "mcached"):
        passwords.reload()
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"SASL password file {f} not reloaded"
    ]
    assert len(passwords) == 1 and passwords.check(b"alice", b"s3cret")
    f.write_text("alice:s3cret\nbob:pw\n")
    with caplog.at_level(logging.INFO, "mcached"):
        passwords.reload()
    assert caplog.records[-1].getMessage() == f"SASL password file {f} reloaded: 2 entries"
