"""Throwaway PKI for the TLS tests, generated with `cryptography` (a test-only dependency).

`make_pki(directory)` writes PEM files: a CA, a server certificate for 127.0.0.1 signed by it,
a client certificate signed by it, and a client certificate from an unrelated CA (which a
server verifying against the first CA must refuse). EC P-256 keys: fast to generate.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PKI:
    ca: Path  # CA certificate (clients trust it; servers verify client certs with it)
    server_cert: Path
    server_key: Path
    server_combined: Path  # certificate and key in one file (ssl_key left unset)
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from another CA
    rogue_key: Path
    other_server_cert: Path  # a second server certificate (rotation tests)
    other_server_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13's default contexts verify strictly (VERIFY_X509_STRICT), which wants
        # the key identifiers RFC 5280 asks of a CA-issued certificate.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(d: Path) -> PKI:
    ca_key, rogue_ca_key = _key(), _key()
    ca = _cert("mcached test CA", ca_key, "mcached test CA", ca_key, ca=True)
    files = PKI(
        *(
            d / n
            for n in (
                "ca.pem",
                "server.pem",
                "server.key",
                "server-combined.pem",
                "client.pem",
                "client.key",
                "rogue.pem",
                "rogue.key",
                "server2.pem",
                "server2.key",
            )
        )
    )
    _write_cert(files.ca, ca)
    for cert_path, key_path, cn in (
        (files.server_cert, files.server_key, "127.0.0.1"),
        (files.other_server_cert, files.other_server_key, "127.0.0.1 (rotated)"),
    ):
        key = _key()
        _write_cert(cert_path, _cert(cn, key, "mcached test CA", ca_key, server=True))
        _write_key(key_path, key)
    files.server_combined.write_bytes(
        files.server_cert.read_bytes() + files.server_key.read_bytes()
    )
    key = _key()
    _write_cert(files.client_cert, _cert("client", key, "mcached test CA", ca_key))
    _write_key(files.client_key, key)
    key = _key()
    _write_cert(files.rogue_cert, _cert("rogue", key, "rogue CA", rogue_ca_key))
    _write_key(files.rogue_key, key)
    return files
