"""Endpoint selection, channels, deadlines and retries shared by the client parts.

Threading: asyncio-only. A `Transport` (and everything built on it) belongs to
the event loop it was first used on; do not share it across loops or threads.

Failover model: the transport keeps a *current endpoint*. Any call or stream
that sees UNAVAILABLE (or cannot connect within `connect_timeout`) on the
current endpoint moves it to the next one in the list (round-robin). Idempotent
calls are then retried on the new endpoint with jittered exponential backoff,
bounded by `retry_budget` retries and by the call's deadline; non-idempotent
calls raise `Unavailable` at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from synod.etcd.etcdserverpb import rpc_pb2_grpc

from .errors import Cancelled, DeadlineExceeded, EtcdError, Unavailable, map_rpc_error

log = logging.getLogger("synod.client.etcd")

T = TypeVar("T")

# etcd closes Watch / LeaseKeepAlive streams carrying this metadata when the
# member loses its leader, so a partitioned member makes us fail over instead
# of silently starving.
#: end-of-stream marker returned by aio stream reads (missing from grpc-stubs)
EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]

REQUIRE_LEADER: tuple[tuple[str, str], ...] = (("hasleader", "true"),)


def normalize_endpoint(endpoint: str) -> str:
    """Accept "host:port", "http://host:port" or "https://host:port"."""
    ep = endpoint.strip()
    for scheme in ("http://", "https://", "grpc://"):
        if ep.startswith(scheme):
            ep = ep[len(scheme) :]
            break
    ep = ep.rstrip("/")
    if not ep:
        raise ValueError(f"empty endpoint: {endpoint!r}")
    return ep


@dataclass(frozen=True)
class Stubs:
    """The gRPC stubs for one endpoint's channel."""

    endpoint: str
    channel: grpc.aio.Channel
    kv: rpc_pb2_grpc.KVStub
    watch: rpc_pb2_grpc.WatchStub
    lease: rpc_pb2_grpc.LeaseStub
    cluster: rpc_pb2_grpc.ClusterStub
    maintenance: rpc_pb2_grpc.MaintenanceStub


class Backoff:
    """Exponential backoff with equal jitter: delay in [d/2, d], d = min(cap, base*2**n)."""

    def __init__(self, base: float = 0.025, cap: float = 1.0) -> None:
        self.base = base
        self.cap = cap

    def delay(self, attempt: int) -> float:
        d = min(self.cap, self.base * float(1 << min(attempt, 30)))
        return d / 2 + random.uniform(0, d / 2)


class Transport:
    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        connect_timeout: float,
        retry_budget: int,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        backoff: Backoff | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if credentials is None and any(e.strip().lower().startswith("https://") for e in endpoints):
            # https:// endpoints mean TLS, as for etcd's clients: the system's roots.
            credentials = grpc.ssl_channel_credentials()
        eps = [normalize_endpoint(e) for e in endpoints]
        if not eps:
            raise ValueError("at least one endpoint is required")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.endpoints: list[str] = list(dict.fromkeys(eps))
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_budget = retry_budget
        self.backoff = backoff or Backoff()
        self._credentials = credentials
        self._options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Connect attempts time out after connect_timeout (gRPC's default is 20s).
            ("grpc.min_reconnect_backoff_ms", int(connect_timeout * 1000)),
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # Detect dead peers under long-lived streams. etcd's default
            # enforcement minimum is 5s and it rejects pings without streams.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            *channel_options,
        ]
        self._current = 0
        self._stubs: dict[str, Stubs] = {}
        self.closed = False

    # --- endpoints ---------------------------------------------------------------

    @property
    def current_endpoint(self) -> str:
        return self.endpoints[self._current]

    def stubs(self, endpoint: str | None = None) -> Stubs:
        if self.closed:
            raise Cancelled("client is closed")
        ep = self.current_endpoint if endpoint is None else normalize_endpoint(endpoint)
        s = self._stubs.get(ep)
        if s is None:
            if self._credentials is not None:
                ch = grpc.aio.secure_channel(ep, self._credentials, options=self._options)
            else:
                ch = grpc.aio.insecure_channel(ep, options=self._options)
            s = Stubs(
                endpoint=ep,
                channel=ch,
                kv=rpc_pb2_grpc.KVStub(ch),
                watch=rpc_pb2_grpc.WatchStub(ch),
                lease=rpc_pb2_grpc.LeaseStub(ch),
                cluster=rpc_pb2_grpc.ClusterStub(ch),
                maintenance=rpc_pb2_grpc.MaintenanceStub(ch),
            )
            self._stubs[ep] = s
        return s

    def mark_failed(self, endpoint: str) -> None:
        """`endpoint` failed: if it is still the current one, move to the next."""
        if self.current_endpoint == endpoint and len(self.endpoints) > 1:
            self._current = (self._current + 1) % len(self.endpoints)
            log.info("etcd endpoint %s failed; switching to %s", endpoint, self.current_endpoint)

    async def ensure_connected(self, stubs: Stubs, timeout: float) -> None:
        """Wait until the channel is READY; raise Unavailable(maybe_applied=False) if not.

        Fails fast when the channel is in TRANSIENT_FAILURE (e.g. connection
        refused), so a dead endpoint costs one failed connect, not a deadline.
        """
        ch = stubs.channel
        state = ch.get_state(try_to_connect=True)
        if state == grpc.ChannelConnectivity.READY:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise Unavailable("cannot connect", endpoint=stubs.endpoint, maybe_applied=False)
            if state == grpc.ChannelConnectivity.SHUTDOWN:
                raise Cancelled("client is closed", endpoint=stubs.endpoint)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(
                    f"connect timed out after {timeout:.2f}s",
                    endpoint=stubs.endpoint,
                    maybe_applied=False,
                )
            try:
                await asyncio.wait_for(ch.wait_for_state_change(state), remaining)
            except TimeoutError:
                pass
            state = ch.get_state(try_to_connect=True)

    # --- calls -------------------------------------------------------------------

    async def call(
        self,
        operation: str,
        attempt_fn: Callable[[Stubs, float], Awaitable[T]],
        *,
        idempotent: bool,
        timeout: float | None = None,
        endpoint: str | None = None,
    ) -> T:
        """Run `attempt_fn(stubs, remaining_seconds)` with deadline, failover and retries.

        `timeout` bounds the whole call including retries. With `endpoint`
        set, the call is pinned to that endpoint: no failover, no retries.
        """
        loop = asyncio.get_running_loop()
        total = self.timeout if timeout is None else timeout
        deadline = loop.time() + total
        budget = self.retry_budget if idempotent and endpoint is None else 0
        attempt = 0
        last: EtcdError | None = None
        while True:
            stubs = self.stubs(endpoint)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"{operation}: deadline of {total:.2f}s exceeded"
                    + (f" (last error: {last})" if last else ""),
                    endpoint=stubs.endpoint,
                )
            err: EtcdError
            try:
                await self.ensure_connected(stubs, min(self.connect_timeout, remaining))
                remaining = deadline - loop.time()
                if remaining <= 0:
                    continue
                return await attempt_fn(stubs, remaining)
            except grpc.aio.AioRpcError as e:
                err = map_rpc_error(e, endpoint=stubs.endpoint, operation=operation)
            except Unavailable as e:
                err = e
            if isinstance(err, Unavailable) and endpoint is None:
                self.mark_failed(stubs.endpoint)
            if not (isinstance(err, Unavailable) and attempt < budget):
                if isinstance(err, Unavailable) and not idempotent:
                    outcome = "it may have been applied" if err.maybe_applied else "it was not sent"
                    err.message = f"{operation} not retried ({outcome}): {err.message}"
                    err.args = (err.message,)
                raise err
            last = err
            delay = min(self.backoff.delay(attempt), max(0.0, deadline - loop.time()))
            attempt += 1
            log.debug("%s: retry %d in %.3fs after %s", operation, attempt, delay, err)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        self.closed = True
        stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            await s.channel.close(None)
