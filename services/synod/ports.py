"""Free TCP ports on loopback, for the processes `synod bench` and `synod check` start
(and the test harnesses)."""

from __future__ import annotations

import socket


def free_loopback_ports(n: int) -> list[int]:
    """`n` distinct free ports on 127.0.0.1, bound all at once so none repeats.

    Free when asked, not reserved: another process may take one before ours binds it,
    which on a test machine is rare enough to leave to the caller's retry or failure.
    """
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
