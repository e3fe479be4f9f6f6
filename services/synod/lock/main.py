"""`synod lock`: run one replica of the lock service until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from synod import health_port, tls
from synod.client.etcd import EtcdClient
from synod.etcd.v3lockpb import v3lock_pb2_grpc
from synod.flags import ConfigError, FlagSource, add_flags, parse_endpoints, parse_url
from synod.grpc_server import server_options
from synod.lock.core import LockCore
from synod.lock.service import EtcdLockServicer, LockServicer, Shutdown
from synod.lock.v1 import lock_pb2_grpc

log = structlog.get_logger("synod.lock")

_FLAGS = [
    ("--listen", "HOST:PORT", "address to serve the lock API on (default 127.0.0.1:2479)"),
    ("--endpoints", "E1,E2,...", "consensus (or etcd) client endpoints"),
    ("--namespace", "PREFIX", "key prefix for every lock (default: none, as etcd's recipe)"),
    ("--metrics-addr", "HOST:PORT", "serve Prometheus metrics over HTTP here"),
    health_port.FLAG,
]


@dataclass
class LockConfig:
    listen: str
    endpoints: list[str]
    namespace: str
    metrics_addr: str
    #: plaintext port with only the health service ("": none)
    health_addr: str = ""
    #: the lock API's TLS (None: plaintext)
    server_tls: tls.ServerTLS | None = None
    #: how to dial --endpoints (None: plaintext)
    endpoints_tls: tls.ClientTLS | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_flags(p, _FLAGS)
    tls.add_server_arguments(p)
    tls.add_endpoint_arguments(p)


def config_from(args: argparse.Namespace, environ: dict[str, str] | None = None) -> LockConfig:
    get = FlagSource(args, environ).get

    listen = get("--listen") or "127.0.0.1:2479"
    parse_url(listen, "--listen")
    endpoints = parse_endpoints(get("--endpoints") or "", "--endpoints")
    metrics = get("--metrics-addr") or ""
    if metrics:
        parse_url(metrics, "--metrics-addr")
    health_addr = get("--health-addr") or ""
    if health_addr:
        parse_url(health_addr, "--health-addr")
    return LockConfig(
        listen,
        endpoints,
        get("--namespace") or "",
        metrics,
        health_addr=health_addr,
        server_tls=tls.server_tls_from(get),
        endpoints_tls=tls.endpoints_tls_from(get, endpoints),
    )


class LockMetrics:
    def __init__(self, core: LockCore) -> None:
        r = self.registry = CollectorRegistry()
        stats = core.stats
        Gauge("synod_lock_grants", "Locks granted by this replica", registry=r).set_function(
            lambda: stats.grants
        )
        Gauge("synod_lock_waits", "Acquisitions that had to wait", registry=r).set_function(
            lambda: stats.waits
        )
        Gauge(
            "synod_lock_wakeups", "Times a waiter woke up to look again", registry=r
        ).set_function(lambda: stats.wakeups)
        Gauge(
            "synod_lock_sessions_opened", "Sessions opened through this replica", registry=r
        ).set_function(lambda: stats.sessions_opened)
        self.wait_seconds = Histogram(
            "synod_lock_wait_seconds",
            "Time from joining the line to the grant",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60),
            registry=r,
        )


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from(args)
    except ConfigError as e:
        sys.stderr.write(f"synod lock: {e}\n")
        return 2
    import uvloop

    return uvloop.run(_serve(cfg))


async def _serve(cfg: LockConfig) -> int:
    client = EtcdClient(
        cfg.endpoints,
        credentials=cfg.endpoints_tls.credentials() if cfg.endpoints_tls is not None else None,
    )
    metrics_holder: list[LockMetrics] = []
    core = LockCore(
        client,
        cfg.namespace,
        on_wait_done=lambda s: (
            metrics_holder[0].wait_seconds.observe(s) if metrics_holder else None
        ),
    )
    metrics = LockMetrics(core)
    metrics_holder.append(metrics)
    shutdown = Shutdown()
    server = grpc.aio.server(options=server_options())
    lock_pb2_grpc.add_LockServicer_to_server(LockServicer(core, shutdown), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(EtcdLockServicer(core, shutdown), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    # The servicer says SERVING until told otherwise: say NOT_SERVING until the
    # first check has reached a consensus leader.
    await health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        ("synod.lock.v1.Lock", "v3lockpb.Lock", health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    host, port = parse_url(cfg.listen, "--listen")
    try:
        if cfg.server_tls is not None:
            server.add_secure_port(f"{host}:{port}", cfg.server_tls.credentials())
        else:
            server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as e:
        log.error("lock_start_failed", error=f"cannot listen on {cfg.listen}: {e}")
        return 1
    await server.start()
    health_server = None
    if cfg.health_addr:
        try:
            health_server = await health_port.serve(health_servicer, cfg.health_addr)
        except OSError as e:
            log.error("lock_start_failed", error=str(e))
            await server.stop(grace=None)
            return 1
    if cfg.metrics_addr:
        mh, mp = parse_url(cfg.metrics_addr, "--metrics-addr")
        start_http_server(mp, addr=mh, registry=metrics.registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health_task = asyncio.create_task(_track_health(client, health_servicer, stop))
    log.info(
        "lock_started",
        listen=cfg.listen,
        endpoints=cfg.endpoints,
        namespace=cfg.namespace,
        tls=tls.mode(cfg.server_tls),
        endpoints_tls=cfg.endpoints_tls is not None,
    )
    await stop.wait()
    log.info("lock_stopping")
    core.shutting_down = True
    shutdown.event.set()  # waiters get UNAVAILABLE and retry on another replica
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    if health_server is not None:
        await health_server.stop(grace=None)
    health_task.cancel()
    await asyncio.gather(health_task, return_exceptions=True)
    await client.close()
    log.info("lock_stopped")
    return 0


#: consecutive failed checks (one a second) before a serving replica says NOT_SERVING
HEALTH_FAILURES_TO_FLIP = 3


async def _track_health(client: EtcdClient, servicer: Any, stop: asyncio.Event) -> None:
    """SERVING while some consensus endpoint reports a leader.

    One slow or failed check does not flip a serving replica: that takes
    HEALTH_FAILURES_TO_FLIP in a row (about as long as a leader election), so
    probes do not flap while the consensus service is merely busy.
    """
    status = health_pb2.HealthCheckResponse
    current = status.NOT_SERVING  # as set before the server started
    failures = 0
    while not stop.is_set():
        try:
            st = await client.status(timeout=2.0)
            ok = st.leader != 0
        except Exception:  # noqa: BLE001 - any failure counts as a failed check
            ok = False
        failures = 0 if ok else failures + 1
        if ok:
            state = status.SERVING
        elif failures >= HEALTH_FAILURES_TO_FLIP:
            state = status.NOT_SERVING
        else:
            state = current
        if state != current:
            await servicer.set("", state)
            log.info("lock_health", serving=state == status.SERVING)
            current = state
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except TimeoutError:
            pass
