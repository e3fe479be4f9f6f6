"""Options every Synod gRPC server shares.

Keepalive enforcement: our clients (the etcd-API client, the peer transport, the
router's backend channels) send a keepalive ping every 10 s so that a dead peer under a
long-lived stream (a watch, a lease keep-alive, a Raft stream) is noticed. gRPC's
default server policy allows one ping per 5 minutes without data and answers more with
GOAWAY "too_many_pings", which broke watches and failed calls in flight every ~100 s.
We accept a ping every 5 s, with or without calls in flight — etcd's
``--grpc-keepalive-min-time`` default.
"""

from __future__ import annotations

from typing import Any

KEEPALIVE_ENFORCEMENT: list[tuple[str, Any]] = [
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def server_options(*extra: tuple[str, Any]) -> list[tuple[str, Any]]:
    """Keepalive enforcement plus ``extra`` (later options win)."""
    return [*KEEPALIVE_ENFORCEMENT, *extra]
