"""TLS for every service: what the flags say, checked at start, and the gRPC credentials.

Server side, with etcd's flag names (the consensus service has a second set
with the prefix ``--peer-`` for member-to-member traffic):

- ``--cert-file`` and ``--key-file``: serve TLS with this certificate (PEM).
- ``--trusted-ca-file``: also require every client to present a certificate
  signed by this CA (mutual TLS). Unlike etcd, where that needs
  ``--client-cert-auth`` as well, a CA alone turns client-certificate
  authentication on: on the server side the CA has no other use, and a CA
  that silently verifies nothing is a trap. ``--client-cert-auth`` is still
  accepted, so etcd command lines work unchanged; it is an error without a CA
  (nothing to verify against) and ``=false`` is an error with one.

Client side (the lock and router services dialling the consensus service,
consensus members dialling each other, synodctl and the Python client): a CA
to verify the server's certificate (the system's roots when none is given)
and optionally our own certificate and key, presented as a client
certificate.

Every file is read and checked when the flags are parsed (a key that does not
match its certificate, a file that is not PEM), so a bad setting stops the
process at start with the flag's name instead of failing each handshake later.
Servers then follow the files (a renewed certificate is served from the next
handshake on), and so does the peer transport's client side, per new channel.
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

from synod.flags import ConfigError, add_flags, env_name

__all__ = [
    "ClientTLS",
    "FollowingSSLContext",
    "ReloadingClientCredentials",
    "ServerTLS",
    "add_endpoint_arguments",
    "add_server_arguments",
    "client_tls_from",
    "endpoints_tls_from",
    "mode",
    "server_tls_from",
]

log = structlog.get_logger("synod.tls")

FlagGetter = Callable[[str], "str | None"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{flag}: cannot read {path!r}: {e.strerror or e}") from None


def _check_pair(cert_file: str, key_file: str, cert_flag: str, key_flag: str) -> None:
    """The certificate and key parse as PEM and belong together (checked with the stdlib)."""
    _read(cert_file, cert_flag)
    _read(key_file, key_flag)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        raise ConfigError(
            f"{cert_flag}/{key_flag}: {cert_file!r} and {key_file!r} are not a PEM "
            f"certificate and its private key ({e.reason or e})"
        ) from None


def _check_ca(ca_file: str, flag: str) -> None:
    _read(ca_file, flag)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as e:
        raise ConfigError(
            f"{flag}: {ca_file!r} holds no PEM CA certificate ({e.reason or e})"
        ) from None


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate and key, and the CA its clients' certificates must chain to."""

    cert_file: str
    key_file: str
    trusted_ca_file: str = ""

    @property
    def client_cert_auth(self) -> bool:
        """Clients must present a certificate signed by `trusted_ca_file`."""
        return bool(self.trusted_ca_file)

    def files(self) -> list[str]:
        return [f for f in (self.cert_file, self.key_file, self.trusted_ca_file) if f]

    def _configuration(self) -> Any:
        key = Path(self.key_file).read_bytes()
        cert = Path(self.cert_file).read_bytes()
        ca = Path(self.trusted_ca_file).read_bytes() if self.trusted_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that follow the files: a renewed certificate (cert-manager,
        say) is served from the next connection on, without a restart.

        gRPC asks before each new handshake; a stat of the files answers when nothing
        changed. Files that do not load (half-written, key and certificate from
        different renewals) are skipped, with a warning, until they do.
        """
        seen = _signature(self.files())
        warned: list[tuple[tuple[int, int], ...]] = []

        def fetch() -> Any:
            nonlocal seen
            now = _signature(self.files())
            if now == seen:
                return None  # keep what is served
            try:
                _check_pair(self.cert_file, self.key_file, "--cert-file", "--key-file")
                if self.trusted_ca_file:
                    _check_ca(self.trusted_ca_file, "--trusted-ca-file")
                config = self._configuration()
            except (ConfigError, OSError) as e:
                if now not in warned:
                    warned.append(now)
                    log.warning("tls_reload_skipped", cert_file=self.cert_file, error=str(e))
                return None
            seen = now
            log.info("tls_reloaded", cert_file=self.cert_file)
            return config

        return grpc.dynamic_ssl_server_credentials(
            self._configuration(), fetch, require_client_authentication=self.client_cert_auth
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings as a stdlib context, for the peer stream (TLS 1.2 or later)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.trusted_ca_file:
            ctx.load_verify_locations(cafile=self.trusted_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class FollowingSSLContext:
    """A stdlib SSL context made again when its files change (a renewed certificate).

    For the peer stream, which does its TLS with the stdlib rather than gRPC:
    `get()` before each handshake. Files that do not load (half-written, key and
    certificate from different renewals) keep the last good context, with a warning.
    """

    def __init__(self, build: Callable[[], ssl.SSLContext], files: list[str]) -> None:
        self._build = build
        self._files = [f for f in files if f]
        self._seen = _signature(self._files)
        self._context = build()
        self._warned: tuple[tuple[int, int], ...] | None = None

    def get(self) -> ssl.SSLContext:
        now = _signature(self._files)
        if now != self._seen:
            try:
                self._context = self._build()
                self._seen = now
                log.info("tls_reloaded", files=self._files)
            except (ssl.SSLError, OSError) as e:
                if self._warned != now:
                    self._warned = now
                    log.warning("tls_reload_skipped", files=self._files, error=str(e))
        return self._context


def _signature(files: list[str]) -> tuple[tuple[int, int], ...]:
    """(mtime, size) of each file; (-1, -1) for one that cannot be read now."""
    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((-1, -1))
    return tuple(out)


class ReloadingClientCredentials:
    """A `ClientTLS`'s channel credentials, made again when its files change.

    For callers that open channels over a long life (the peer transport opens a
    fresh channel after every broken stream): `get()` before each new channel
    presents the renewed client certificate once it is on disk.
    """

    def __init__(self, tls: ClientTLS) -> None:
        self.tls = tls
        self._files = [f for f in (tls.ca_file, tls.cert_file, tls.key_file) if f]
        self._seen = _signature(self._files)
        self._credentials = tls.credentials()

    def get(self) -> grpc.ChannelCredentials:
        now = _signature(self._files)
        if now != self._seen:
            try:
                self.tls.check("ca file", "cert file", "key file")
                self._credentials = self.tls.credentials()
                self._seen = now
                log.info("tls_client_reloaded", cert_file=self.tls.cert_file)
            except (ConfigError, OSError) as e:
                log.warning("tls_reload_skipped", cert_file=self.tls.cert_file, error=str(e))
        return self._credentials


@dataclass(frozen=True)
class ClientTLS:
    """How a client dials a TLS server: whom to trust, and what to present."""

    ca_file: str = ""  # "": the system's roots (gRPC's bundled set)
    cert_file: str = ""  # with key_file: presented as a client certificate
    key_file: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes() if self.ca_file else None,
            private_key=Path(self.key_file).read_bytes() if self.key_file else None,
            certificate_chain=Path(self.cert_file).read_bytes() if self.cert_file else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings as a stdlib context (verifies the server's name, too)."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def check(self, ca_flag: str, cert_flag: str, key_flag: str) -> ClientTLS:
        """Every file readable and well-formed, the key with the certificate; self."""
        if bool(self.cert_file) != bool(self.key_file):
            given, missing = (cert_flag, key_flag) if self.cert_file else (key_flag, cert_flag)
            raise ConfigError(f"{given} needs {missing} too")
        if self.cert_file:
            _check_pair(self.cert_file, self.key_file, cert_flag, key_flag)
        if self.ca_file:
            _check_ca(self.ca_file, ca_flag)
        return self


def add_server_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """One server side's flags: ``prefix`` "" (clients) or "peer-" (other members)."""
    who = "clients" if not prefix else "other members"
    add_flags(
        p,
        [
            (f"--{prefix}cert-file", "FILE", f"TLS certificate (PEM) served to {who}"),
            (f"--{prefix}key-file", "FILE", f"private key (PEM) of --{prefix}cert-file"),
            (
                f"--{prefix}trusted-ca-file",
                "FILE",
                f"CA (PEM) that {who}' certificates must be signed by: turns on "
                "client-certificate authentication (mutual TLS)",
            ),
        ],
    )
    # etcd's boolean flag, also in its `--flag=false` spelling.
    flag = f"--{prefix}client-cert-auth"
    p.add_argument(
        flag,
        nargs="?",
        const="true",
        default=None,
        metavar="true|false",
        help=f"implied by --{prefix}trusted-ca-file; accepted for etcd command lines "
        f"[env {env_name(flag)}]",
    )


def server_tls_from(get: FlagGetter, prefix: str = "") -> ServerTLS | None:
    """The server TLS the flags ask for (None: plaintext), every file checked."""
    cert_flag, key_flag = f"--{prefix}cert-file", f"--{prefix}key-file"
    ca_flag, auth_flag = f"--{prefix}trusted-ca-file", f"--{prefix}client-cert-auth"
    cert, key, ca = get(cert_flag) or "", get(key_flag) or "", get(ca_flag) or ""
    auth = (get(auth_flag) or "").strip().lower()
    if auth and auth not in _TRUE + _FALSE:
        raise ConfigError(f"{auth_flag}: must be true or false, got {auth!r}")
    if auth in _TRUE and not ca:
        raise ConfigError(
            f"{auth_flag} needs {ca_flag}: the CA that clients' certificates chain to"
        )
    if auth in _FALSE and ca:
        raise ConfigError(
            f"{ca_flag} turns on client-certificate authentication, so {auth_flag}=false "
            f"contradicts it: leave out {ca_flag} to serve TLS without client certificates"
        )
    if not (cert or key or ca):
        return None
    if not cert or not key:
        missing = cert_flag if not cert else key_flag
        raise ConfigError(f"{missing} is required for TLS (given: the other TLS flags)")
    _check_pair(cert, key, cert_flag, key_flag)
    if ca:
        _check_ca(ca, ca_flag)
    return ServerTLS(cert, key, ca)


def mode(server_tls: ServerTLS | None) -> str:
    """For logs: "off", "server-only" or "mutual"."""
    if server_tls is None:
        return "off"
    return "mutual" if server_tls.client_cert_auth else "server-only"


def client_tls_from(
    get: FlagGetter,
    ca_flag: str,
    cert_flag: str,
    key_flag: str,
    urls: list[str] | None = None,
) -> ClientTLS | None:
    """Client TLS from three flags; None (plaintext) unless one is set or a URL is https://."""
    tls = ClientTLS(get(ca_flag) or "", get(cert_flag) or "", get(key_flag) or "")
    wants = any(u.strip().lower().startswith("https://") for u in urls or [])
    if not (tls.ca_file or tls.cert_file or tls.key_file or wants):
        return None
    return tls.check(ca_flag, cert_flag, key_flag)


ENDPOINT_FLAGS = ("--endpoints-ca-file", "--endpoints-cert-file", "--endpoints-key-file")


def add_endpoint_arguments(p: argparse.ArgumentParser) -> None:
    """How the lock and router services dial the consensus service (like etcdctl's --cacert...)."""
    ca, cert, key = ENDPOINT_FLAGS
    add_flags(
        p,
        [
            (
                ca,
                "FILE",
                "CA (PEM) that the consensus service's certificate is signed by: dial "
                "--endpoints over TLS (https:// endpoints alone: the system's roots)",
            ),
            (cert, "FILE", "client certificate (PEM) presented to the consensus service"),
            (key, "FILE", f"private key (PEM) of {cert}"),
        ],
    )


def endpoints_tls_from(get: FlagGetter, endpoints: list[str]) -> ClientTLS | None:
    return client_tls_from(get, *ENDPOINT_FLAGS, urls=endpoints)
