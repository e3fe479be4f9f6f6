"""Free loopback ports for tests that start real servers (one place for every harness).

Why they come from below the ephemeral range, and from a share per xdist worker:
services/synod/ports.py.
"""

from __future__ import annotations

from synod.ports import free_loopback_base, free_loopback_ports

__all__ = ["free_base", "free_port", "free_ports"]


def free_ports(n: int) -> list[int]:
    return free_loopback_ports(n)


def free_base(span: int = 10) -> int:
    """A base port with `span` free ports after it (for `synod up --base-port`)."""
    return free_loopback_base(span)


def free_port() -> int:
    return free_loopback_ports(1)[0]
