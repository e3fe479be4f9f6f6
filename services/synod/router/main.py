"""`synod router`: serve the Router API and the forwarding proxy until SIGTERM/SIGINT.

Start: connect the etcd v3 client -> serve gRPC (health NOT_SERVING) -> load every
ring and watch -> health SERVING. Stop: health NOT_SERVING -> drain the server
(grace 2 s) -> stop watching -> close backend channels and the client.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import grpc.aio
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from synod import health_port, tls
from synod.consensus.config import parse_url
from synod.grpc_server import server_options
from synod.router import config as router_config

log = structlog.get_logger("synod.router")

SERVICE_NAME = "synod.router.v1.Router"


def add_arguments(p: argparse.ArgumentParser) -> None:
    router_config.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = router_config.from_args(args)
    except router_config.ConfigError as e:
        sys.stderr.write(f"synod router: {e}\n")
        return 2
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    return runner(serve(cfg))


async def serve(cfg: router_config.RouterConfig, stop: asyncio.Event | None = None) -> int:
    from synod.client.etcd import EtcdClient
    from synod.router.membership import Directory
    from synod.router.metrics import RouterMetrics
    from synod.router.proxy import Proxy
    from synod.router.service import RouterService
    from synod.router.v1 import router_pb2_grpc

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    metrics = RouterMetrics()
    client = EtcdClient(
        cfg.endpoints,
        credentials=cfg.endpoints_tls.credentials() if cfg.endpoints_tls is not None else None,
    )
    directory = Directory(client, cfg.namespace, metrics)
    proxy = Proxy(
        directory,
        metrics,
        bounded_load=cfg.bounded_load,
        default_timeout=cfg.forward_timeout,
        backend_credentials=cfg.backend_tls.credentials() if cfg.backend_tls else None,
    )
    # grpc_health ships its asyncio servicer as health.aio, which has no type stubs.
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    server = grpc.aio.server(
        options=server_options(
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        )
    )
    router_pb2_grpc.add_RouterServicer_to_server(RouterService(directory, client, metrics), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    server.add_generic_rpc_handlers((proxy,))  # last: anything not served above is forwarded
    try:
        if cfg.server_tls is not None:
            bound = server.add_secure_port(cfg.listen, cfg.server_tls.credentials())
        else:
            bound = server.add_insecure_port(cfg.listen)
    except RuntimeError as e:
        bound = 0
        log.error("router_listen_failed", listen=cfg.listen, error=str(e))
    if not bound:
        log.error("router_listen_failed", listen=cfg.listen)
        await client.close()
        return 1
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", not_serving)
    await health_servicer.set(SERVICE_NAME, not_serving)
    await server.start()
    health_server = None
    if cfg.health_addr:
        try:
            health_server = await health_port.serve(health_servicer, cfg.health_addr)
        except OSError as e:
            log.error("router_listen_failed", listen=cfg.health_addr, error=str(e))
            await server.stop(grace=None)
            await client.close()
            return 1
    if cfg.metrics_addr:
        host, port = parse_url(cfg.metrics_addr, "--metrics-addr")
        metrics.serve(host, port)
    directory.start()
    log.info(
        "router_started",
        listen=cfg.listen,
        endpoints=cfg.endpoints,
        namespace=cfg.namespace,
        bounded_load=cfg.bounded_load or None,
        metrics=cfg.metrics_addr or None,
        tls=tls.mode(cfg.server_tls),
        endpoints_tls=cfg.endpoints_tls is not None,
        backend_tls=cfg.backend_tls is not None,
    )

    async def mark_ready() -> None:
        await directory.ready.wait()
        serving = health_pb2.HealthCheckResponse.SERVING
        await health_servicer.set("", serving)
        await health_servicer.set(SERVICE_NAME, serving)
        log.info("router_serving", revision=directory.revision, rings=len(directory.rings))

    ready_task = asyncio.ensure_future(mark_ready())
    await stop.wait()
    log.info("router_stopping", reason="signal")
    ready_task.cancel()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    if health_server is not None:
        await health_server.stop(grace=None)
    await directory.stop()
    await proxy.close()
    await client.close()
    log.info("router_stopped")
    return 0
