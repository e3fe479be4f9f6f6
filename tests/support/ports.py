"""Free loopback ports for tests that start real servers (one place for every harness)."""

from __future__ import annotations

import random
import socket

from synod.ports import free_loopback_ports as free_ports

__all__ = ["free_base", "free_port", "free_ports"]


def free_base(span: int = 10) -> int:
    """A base port with `span` free ports after it.

    Drawn below Linux's ephemeral range (32768 and up), where other tests' ports
    (bound to port 0) and outgoing connections land, so nothing running beside
    the test takes one of the range between this check and the servers' start.
    """
    for _ in range(200):
        base = random.randrange(20000, 32768 - span)
        socks = []
        try:
            for p in range(base, base + span):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def free_port() -> int:
    return free_ports(1)[0]
