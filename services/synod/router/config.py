"""`synod router` configuration: flags, each also settable as SYNOD_<FLAG>.

A flag on the command line wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field

from synod import health_port, tls
from synod.flags import ConfigError, FlagSource, add_flags, parse_endpoints, parse_url

__all__ = ["ConfigError", "RouterConfig", "add_arguments", "from_args"]


@dataclass
class RouterConfig:
    listen: str = "127.0.0.1:7070"
    endpoints: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    namespace: str = "synod"
    bounded_load: float = 0.0  # 0: off; else C > 1
    metrics_addr: str = ""
    health_addr: str = ""  # plaintext port with only the health service ("": none)
    forward_timeout: float = 30.0  # deadline of a forwarded call when the caller set none
    #: the Router API's (and proxy's) TLS; None: plaintext
    server_tls: tls.ServerTLS | None = None
    #: how to dial --endpoints; None: plaintext
    endpoints_tls: tls.ClientTLS | None = None
    #: how to dial the backends calls are forwarded to; None: plaintext
    backend_tls: tls.ClientTLS | None = None

    @property
    def prefix(self) -> str:
        """Key prefix of every ring: ``<namespace>/router/``."""
        return f"{self.namespace}/router/"


_FLAGS: list[tuple[str, str, str]] = [
    ("--listen", "HOST:PORT", "serve the Router API and the proxy here (default 127.0.0.1:7070)"),
    ("--endpoints", "E1,E2", "consensus (etcd v3 API) endpoints (default 127.0.0.1:2379)"),
    ("--namespace", "PREFIX", "key prefix: members live under PREFIX/router/ (default synod)"),
    (
        "--bounded-load",
        "C",
        "forward to the next replica when the owner has > C x average in-flight calls "
        "(e.g. 1.25; default off)",
    ),
    ("--metrics-addr", "HOST:PORT", "serve Prometheus metrics over HTTP here (default off)"),
    ("--forward-timeout", "SECONDS", "deadline of forwarded calls without one (default 30)"),
    health_port.FLAG,
]


_BACKEND_FLAGS: list[tuple[str, str, str]] = [
    (
        "--backend-ca-file",
        "FILE",
        "CA (PEM) the backends' certificates are signed by: forward calls over TLS "
        "(default: plaintext)",
    ),
    ("--backend-cert-file", "FILE", "client certificate (PEM) presented to the backends"),
    ("--backend-key-file", "FILE", "private key (PEM) of --backend-cert-file"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, _FLAGS)
    tls.add_server_arguments(p)
    tls.add_endpoint_arguments(p)
    add_flags(p, _BACKEND_FLAGS)


def _float(value: str, flag: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{flag}: {value!r} is not a number") from None


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RouterConfig:
    get = FlagSource(args, environ).get

    c = RouterConfig()
    if (v := get("--listen")) is not None:
        host, port = parse_url(v, "--listen")
        c.listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if (v := get("--endpoints")) is not None:
        c.endpoints = parse_endpoints(v, "--endpoints")
    if (v := get("--namespace")) is not None:
        ns = v.strip().rstrip("/")
        if not ns:
            raise ConfigError("--namespace: must not be empty")
        c.namespace = ns
    if (v := get("--bounded-load")) is not None and v.strip():
        b = _float(v, "--bounded-load")
        if b != 0 and b <= 1.0:
            raise ConfigError(f"--bounded-load: must be > 1 (or 0 for off), got {b}")
        c.bounded_load = b
    if (v := get("--metrics-addr")) is not None and v:
        parse_url(v, "--metrics-addr")
        c.metrics_addr = v
    if (v := get("--health-addr")) is not None and v:
        parse_url(v, "--health-addr")
        c.health_addr = v
    if (v := get("--forward-timeout")) is not None:
        t = _float(v, "--forward-timeout")
        if t <= 0:
            raise ConfigError("--forward-timeout: must be > 0")
        c.forward_timeout = t
    c.server_tls = tls.server_tls_from(get)
    c.endpoints_tls = tls.endpoints_tls_from(get, c.endpoints)
    ca, cert, key = (flag for flag, _, _ in _BACKEND_FLAGS)
    c.backend_tls = tls.client_tls_from(get, ca, cert, key)
    return c
