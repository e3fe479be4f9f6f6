"""A plaintext port serving only grpc.health.v1, for probes that cannot do mutual TLS.

Kubernetes' built-in gRPC probes present no client certificate, so under
mutual TLS they cannot reach the health service on a service's own port.
`--health-addr` serves the same health servicer (same statuses) on a second,
plaintext port that answers nothing but Check and Watch: no data and no
other API is reachable there.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from synod.flags import parse_url

FLAG = (
    "--health-addr",
    "HOST:PORT",
    "also serve grpc.health.v1, and only it, here in plaintext: for probes that cannot "
    "present a client certificate, like Kubernetes' gRPC probes (default: off)",
)


async def serve(servicer: Any, addr: str) -> grpc.aio.Server:
    """Start a server with only `servicer` (a grpc_health HealthServicer) on `addr`."""
    host, port = parse_url(addr, "--health-addr")
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError as e:
        raise OSError(f"--health-addr: cannot listen on {addr}: {e}") from None
    if bound == 0:
        raise OSError(f"--health-addr: cannot listen on {addr} (address in use?)")
    await server.start()
    return server
