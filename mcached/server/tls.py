"""TLS (``-Z``): the server's SSLContext, built from memcached's ``-o ssl_*`` settings.

Only the standard library's `ssl` module (and, to name what is wrong with a certificate chain
that does not load, OpenSSL's own error through `ctypes`). The context is built once at
start (a bad file stops the daemon with memcached's message and exit code 64) and again by
``refresh_certs`` or SIGHUP, which swap in a new one only when every file loads: a bad file
keeps the running context (memcached, which reloads into its live context, can be left with
a certificate that does not match its key). Connections already open keep the context they
started with.

Accepted sockets are wrapped with ``do_handshake_on_connect=False``; the handshake runs on
the worker, one non-blocking step per readiness event (`Connection._handshake`), so a client
that stalls mid-handshake holds no thread.

memcached's settings map onto `ssl` as follows: ``ssl_verify_mode`` 0/1/2/3 -> CERT_NONE,
CERT_OPTIONAL, CERT_REQUIRED, CERT_REQUIRED (3, "once", differs from 2 only on
renegotiation, which is disabled); ``ssl_min_version`` 0..3 -> TLS 1.0 .. 1.3;
``ssl_session_cache``: reported, and turns on the ssl_new_sessions count; sessions resume by
ticket either way, as they do in memcached.

Counters (``stats``, shown only with -Z, memcached's names): ``ssl_handshake_errors``,
``ssl_new_sessions`` (with ssl_session_cache: sessions OpenSSL's callback would see, as
memcached counts them: `TLS.new_sessions`), each a
figure of the worker that counted it on the board (`mcached.server.board`: summed over
workers, a dead one's kept, zeroed by ``stats reset`` as memcached's are), and
``time_since_server_cert_refresh``.
"""

from __future__ import annotations

import base64
import ctypes
import functools
import logging
import os
import re
import socket
import ssl
import threading
import time

from mcached.settings import Settings, SettingsError

log = logging.getLogger("mcached.tls")

VERIFY_MODES = (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED, ssl.CERT_REQUIRED)
MIN_VERSIONS = (
    ssl.TLSVersion.TLSv1,
    ssl.TLSVersion.TLSv1_1,
    ssl.TLSVersion.TLSv1_2,
    ssl.TLSVersion.TLSv1_3,
)
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


class TLSError(SettingsError):
    """A certificate, key, CA or cipher setting that cannot be used (memcached: exit 64)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=64)


# OpenSSL 3's numbers and names for the libraries its errors come from (ERR_LIB_*): a
# message ends as memcached's does, with ERR_error_string_n's "error:<code>:<lib>::<reason>"
_LIBRARIES = {"SSL": (20, "SSL routines"), "X509": (11, "x509 certificate routines"),
              "PEM": (9, "PEM routines")}  # fmt: skip
NULL_FILE = "error:8000000E:system library::Bad address"  # OpenSSL given no file name
NO_PEM = "error:0480006C:PEM routines::no start line"  # a file with no PEM block of the kind
NO_KEY = "error:1E08010C:DECODER routines::unsupported"  # a key file with no key in it


class _Failed(ValueError):
    """A failure whose OpenSSL error line is known here (its one argument)."""


def _reason(exc: BaseException, default: str = "") -> str:
    """The error OpenSSL would report first, as memcached prints it (ERR_error_string_n);
    `default` when Python's exception names only a later one ("[SSL] PEM lib")."""
    if isinstance(exc, _Failed):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        lib = _LIBRARIES.get(exc.library or "")
        if lib and exc.reason and exc.reason != "PEM_LIB" and isinstance(exc.errno, int):
            code = lib[0] << 23 | exc.errno & 0x7FFFFF
            return f"error:{code:08X}:{lib[1]}::{exc.reason.lower().replace('_', ' ')}"
        return default or str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return f"error:{0x80000000 | exc.errno:08X}:system library::{os.strerror(exc.errno)}"
    return default or str(exc)


@functools.cache
def _libssl() -> ctypes.CDLL | None:
    """The OpenSSL library the `ssl` module runs on (found among this process's mappings:
    the same one, not another on the disk), or None where it cannot be reached."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libssl.so" in line}
        lib = ctypes.CDLL(paths.pop()) if len(paths) == 1 else None
        if lib is not None:
            lib.TLS_server_method.restype = ctypes.c_void_p
            lib.SSL_CTX_new.restype = ctypes.c_void_p
            lib.SSL_CTX_new.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_free.argtypes = [ctypes.c_void_p]
            lib.SSL_CTX_use_certificate_chain_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.ERR_get_error.restype = ctypes.c_ulong
            lib.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
        return lib
    except (OSError, AttributeError):
        return None


def _chain_error(path: str) -> str | None:
    """The error OpenSSL reports first for the chain file as memcached loads it
    (SSL_CTX_use_certificate_chain_file, into a scratch context), as ERR_error_string_n
    prints it; None if it loads, or if OpenSSL cannot be asked. The ssl module does not
    load a chain without its key, and names only the last error of a failure ("PEM lib"):
    a certificate that did not parse was blamed on the key."""
    lib = _libssl()
    if lib is None:
        return None
    ctx = lib.SSL_CTX_new(lib.TLS_server_method())
    if not ctx:
        return None
    try:
        lib.ERR_clear_error()
        if lib.SSL_CTX_use_certificate_chain_file(ctx, os.fsencode(path)) == 1:
            return None
        buf = ctypes.create_string_buffer(256)
        lib.ERR_error_string_n(lib.ERR_get_error(), buf, len(buf))
        return buf.value.decode(errors="replace")
    finally:
        lib.SSL_CTX_free(ctx)
        lib.ERR_clear_error()


def _check_chain(path: str | None) -> str:
    """The chain file is readable and holds certificates OpenSSL reads (so that an error
    from load_cert_chain can be blamed on the key, as memcached's messages do): its path."""
    what = "Error loading the certificate chain"
    if path is None:
        raise TLSError(f"{what}: (null) : {NULL_FILE}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TLSError(f"{what}: {path} : {_reason(exc)}") from None
    if _libssl() is not None:
        error = _chain_error(path)
    elif not _PEM_CERT.search(data):  # no OpenSSL to ask: the likeliest words, and whose fault
        error = NO_PEM
    else:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
            error = None
        except (OSError, ValueError) as exc:
            error = _reason(exc)
    if error is not None:
        raise TLSError(f"{what}: {path} : {error}")
    return path


#: errors of a key that was read, but does not go with the certificate
KEY_READ = ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED")
KEY_PEM, KEY_DER = 1, 2  # ssl_keyformat: OpenSSL's SSL_FILETYPE_PEM and SSL_FILETYPE_ASN1
BAD_FILETYPE = "error:0A00007C:SSL routines::bad ssl filetype"
# the PEM labels OpenSSL reads a DER private key under: PKCS #8, then the traditional ones
_DER_LABELS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY")


def _load_key_as(ctx: ssl.SSLContext, chain: str, key: str, keyformat: int) -> None:
    """``ssl_keyformat`` 2: the key file is DER, which the ssl module cannot read. Its bytes
    go into a PEM block, in memory (a memfd, read by its /proc path: no key file is written),
    under each label OpenSSL's DER reader would try, until one loads. Another format is
    refused once the file is read, as OpenSSL refuses it; a file that is not a DER key
    fails as memcached's does (NO_KEY)."""
    with open(key, "rb") as f:
        der = f.read()
    if keyformat != KEY_DER:
        raise _Failed(BAD_FILETYPE)
    body = base64.encodebytes(der)
    last: Exception | None = None
    for label in _DER_LABELS:
        pem = b"-----BEGIN %b-----\n%b-----END %b-----\n" % (label, body, label)
        fd = os.memfd_create("mcached-tls-key", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            ctx.load_cert_chain(chain, f"/proc/self/fd/{fd}")
            return
        except ssl.SSLError as exc:
            if exc.reason in KEY_READ:
                raise  # a key, but not the certificate's
            last = exc
        finally:
            os.close(fd)
    raise _Failed(NO_KEY) from last


def build_context(s: Settings) -> ssl.SSLContext:
    """A server context from the ``ssl_*`` settings; raises TLSError with memcached's words."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSIONS[s.ssl_min_version]
    load_files(ctx, s)
    ctx.verify_mode = VERIFY_MODES[s.ssl_verify_mode]
    if s.ssl_ciphers is not None:
        try:
            ctx.set_ciphers(s.ssl_ciphers)
        except ssl.SSLError:
            raise TLSError(f"Error setting the provided cipher(s): {s.ssl_ciphers}") from None
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # as memcached: a renegotiation is refused
    # Session tickets stay on, as in memcached (its ssl_session_cache turns on OpenSSL's
    # server-side cache; tickets resume sessions either way). The ssl module cannot switch
    # that cache, which OpenSSL keeps by default: the setting is reported, and counted.
    return ctx


def load_files(ctx: ssl.SSLContext, s: Settings) -> None:
    """The certificate chain, the key and the CA certificates into `ctx`; raises TLSError
    with memcached's words."""
    chain = _check_chain(s.ssl_chain_cert)
    try:
        if s.ssl_keyformat == KEY_PEM or s.ssl_key is None:
            ctx.load_cert_chain(chain, s.ssl_key)
        else:
            _load_key_as(ctx, chain, s.ssl_key, s.ssl_keyformat)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "NO_CERTIFICATE_ASSIGNED":
            # a key of another type than the certificate's: OpenSSL takes it, and
            # memcached's next step, SSL_CTX_check_private_key, fails
            raise TLSError(f"Error validating the certificate: {_reason(exc)}") from None
        key = "(null)" if s.ssl_key is None else s.ssl_key
        reason = _reason(exc, NULL_FILE if s.ssl_key is None else NO_KEY)
        raise TLSError(f"Error loading the key: {key} : {reason}") from None
    if s.ssl_ca_cert is not None:
        try:
            ctx.load_verify_locations(cafile=s.ssl_ca_cert)
        except (OSError, ValueError) as exc:
            raise TLSError(
                f"Error loading the CA certificate: {s.ssl_ca_cert} : {_reason(exc)}"
            ) from None


class TLS:
    """The live context, its reload, and the handshake counters (written by workers)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = build_context(settings)
        # Between a reload into the live context and the wraps of worker threads (thread
        # mode: one TLS for every worker): OpenSSL's SSL_new copies the context's
        # certificate, which the reload frees, and the ssl module runs both without the
        # GIL. memcached takes its ssl_ctx_lock the same way. (Worker processes each have
        # their own copy, and one thread.)
        self._lock = threading.Lock()
        # when refresh_certs last loaded the files; None: never since the start, when
        # memcached's clock stood at zero, 60 s before its uptime's (see `since_refresh`)
        self.loaded_at: float | None = None
        self.epoch = 0  # the board's TLS epoch these files were loaded for

    def wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        """A non-blocking server-side TLS socket; no I/O happens here."""
        with self._lock:
            return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def refresh(self) -> str | None:
        """``refresh_certs``: reload every file; None, or the error. The files are tried
        in a new context first (one that fails leaves the current certificates in force),
        then loaded into the live one, as memcached loads them into its one context: its
        session ticket keys, made once at the start and shared by every worker process
        forked since, stay (in a new context each worker made its own, and a ticket
        resumed on one worker in four after a refresh)."""
        try:
            context = build_context(self.settings)
        except TLSError as exc:
            log.error("TLS certificates not reloaded, keeping the current ones: %s", exc)
            return str(exc)
        with self._lock:
            try:
                load_files(self.context, self.settings)
            except TLSError:  # (the files changed since the try): the new context, whole
                self.context = context
        self.loaded_at = time.monotonic()
        logging.getLogger("mcached.lifecycle").info("TLS certificates reloaded")
        return None

    def since_refresh(self, uptime: int) -> int:
        """``time_since_server_cert_refresh``: memcached stamps its start-up load with its
        clock's zero, which runs 60 s (ITEM_UPDATE_INTERVAL) ahead of ``uptime``."""
        if self.loaded_at is None:
            return uptime + 60
        return int(time.monotonic() - self.loaded_at)

    def reload(self) -> None:
        """SIGHUP."""
        self.refresh()

    def new_sessions(self, sock: ssl.SSLSocket) -> int:
        """What a handshake just done adds to ``ssl_new_sessions`` (with ssl_session_cache
        only): memcached counts OpenSSL's new-session callback, which runs for every TLS 1.3
        ticket sent (the context's `num_tickets`, 2, after a full handshake; one after a
        resumption) and, below TLS 1.3, for a full handshake's session put in the server's
        cache, which OpenSSL does not do when it sends a ticket instead (the server's
        session then has no id)."""
        if not self.settings.ssl_session_cache:
            return 0
        if sock.version() == "TLSv1.3":
            return 1 if sock.session_reused else self.context.num_tickets
        session = sock.session
        return int(not sock.session_reused and session is not None and bool(session.id))

    def __repr__(self) -> str:
        return f"TLS({self.settings.ssl_chain_cert!r})"
