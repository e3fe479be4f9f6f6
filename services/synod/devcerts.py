"""A throwaway certificate authority and certificates, for tests and `synod up --tls`.

Not for production: keys are written unencrypted, certificates live a few
days, and nothing is revoked. Production certificates come from your own PKI
(cert-manager, Vault, openssl; see docs/tls.md).

Needs the `cryptography` package (``pip install 'synod[devcerts]'``); the
services themselves only read PEM files and do not.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Authority", "CertPair", "new_authority"]

#: how long a throwaway certificate lives
LIFETIME = datetime.timedelta(days=7)


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, as PEM files."""

    cert_file: str
    key_file: str


def _x509() -> Any:
    try:
        from cryptography import x509
    except ImportError:
        raise RuntimeError(
            "generating certificates needs the cryptography package: pip install 'synod[devcerts]'"
        ) from None
    return x509


class Authority:
    """A CA whose certificate and key are PEM files in `directory`; it signs leaf certificates."""

    def __init__(self, directory: Path, name: str, key: Any, cert: Any) -> None:
        self.directory = directory
        self.name = name
        self._key = key
        self._cert = cert
        self.ca_file = str(directory / f"{name}-ca.crt")

    def issue(
        self,
        name: str,
        hosts: list[str] = ["127.0.0.1", "localhost"],  # noqa: B006 - read only
        server: bool = True,
        client: bool = True,
    ) -> CertPair:
        """A leaf certificate for `hosts` (IP or DNS SANs), usable as server and/or client."""
        x509 = _x509()
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[Any] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + LIFETIME)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        pair = CertPair(str(self.directory / f"{name}.crt"), str(self.directory / f"{name}.key"))
        _write(Path(pair.key_file), _key_pem(key), private=True)
        _write(Path(pair.cert_file), _cert_pem(cert))
        return pair


def new_authority(directory: Path, name: str = "synod") -> Authority:
    """A fresh self-signed CA, written to `directory`/`name`-ca.crt (its key stays in memory)."""
    x509 = _x509()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} throwaway CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    ca = Authority(directory, name, key, cert)
    _write(Path(ca.ca_file), _cert_pem(cert))
    return ca


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return bytes(cert.public_bytes(Encoding.PEM))


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    return bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)
