"""Command-line flags that can also come from the environment, for every service.

Each flag `--some-flag` may be given as `SYNOD_SOME_FLAG` instead (handy in
Kubernetes); the command line wins over the environment, the environment over
the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence


class ConfigError(ValueError):
    """A flag's value makes no sense; the message says which flag and why."""


def env_name(flag: str) -> str:
    return "SYNOD_" + flag.lstrip("-").replace("-", "_").upper()


def parse_url(url: str, flag: str) -> tuple[str, int]:
    """`http://host:port` or `host:port` -> (host, port)."""
    rest = url.strip()
    for scheme in ("http://", "https://", "unix://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme) :]
            break
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{flag}: {url!r} is not host:port or http://host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    p = int(port)
    if not 0 <= p <= 65535:
        raise ConfigError(f"{flag}: port {p} out of range in {url!r}")
    return host, p


def add_flags(p: argparse.ArgumentParser, flags: Sequence[tuple[str, str, str]]) -> None:
    """Add (flag, metavar, help) options, each naming its environment variable."""
    for flag, metavar, help_text in flags:
        p.add_argument(flag, metavar=metavar, help=f"{help_text} [env {env_name(flag)}]")


class FlagSource:
    """Reads a flag from parsed arguments, else from the environment."""

    def __init__(self, args: argparse.Namespace, environ: Mapping[str, str] | None = None):
        self.args = args
        self.env = os.environ if environ is None else environ

    def get(self, flag: str) -> str | None:
        v = getattr(self.args, flag.lstrip("-").replace("-", "_"), None)
        return v if v is not None else self.env.get(env_name(flag))


def parse_endpoints(value: str, flag: str) -> list[str]:
    """`host:port,host:port` (or http:// URLs) -> a non-empty list, each checked."""
    eps = [e.strip() for e in value.split(",") if e.strip()]
    if not eps:
        raise ConfigError(f"{flag}: at least one endpoint is required")
    for e in eps:
        parse_url(e, flag)
    return eps
