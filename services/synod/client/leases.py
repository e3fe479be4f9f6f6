"""Lease keep-alive: many leases multiplexed over one LeaseKeepAlive stream.

Threading: asyncio-only, one event loop. `LeaseKeeper` callbacks run on that
loop; a callback returning an awaitable is scheduled as a task.

`KeepAliveManager` owns at most one LeaseKeepAlive bidi stream per client. Each
registered `LeaseKeeper` is renewed every TTL/3 (TTL as last reported by the
server). When the stream breaks (member died, no leader, failover), the manager
moves to the next endpoint, reopens the stream with backoff and immediately
re-sends keepalives for every lease. A lease is reported *lost* (once) when the
server answers TTL<=0 (revoked/expired) or when the client could not renew it
before its conservatively-computed expiry (send time of the earliest
unacknowledged keepalive + TTL).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from synod.etcd.etcdserverpb import rpc_pb2

from ._transport import EOF, REQUIRE_LEADER, Transport
from .errors import EtcdError, NotFound, Unavailable, map_rpc_error

log = logging.getLogger("synod.client.etcd")

LostCallback = Callable[["LeaseKeeper"], Any]

REASON_REVOKED = "lease expired or revoked (server reported TTL<=0)"
REASON_EXPIRED = "could not renew the lease before it expired"


class LeaseKeeper:
    """Keeps one lease alive in the background until stopped or lost.

    Use as ``async with client.keep_alive(lease_id) as keeper:`` or
    ``keeper = await client.keep_alive(lease_id)`` ... ``await keeper.aclose()``.
    Stopping does not revoke the lease (pass ``revoke=True`` to `aclose`).
    """

    def __init__(
        self,
        manager: KeepAliveManager,
        lease_id: int,
        on_lost: LostCallback | None = None,
    ) -> None:
        self._mgr = manager
        self.id = lease_id
        self.on_lost = on_lost
        self.ttl: int = 0
        #: event-loop time after which the lease may have expired server-side
        self.expires_at: float = math.inf
        self.renewals = 0
        self.lost_reason: str | None = None
        self._lost = asyncio.Event()
        self._next_send: float = 0.0
        self._unacked_since: float | None = None
        self._started = False
        self._stopped = False

    # --- state -------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def active(self) -> bool:
        return self._started and not self._stopped and not self.lost

    def remaining(self) -> float:
        """Seconds until the client's conservative expiry estimate."""
        return self.expires_at - asyncio.get_running_loop().time()

    async def wait_lost(self) -> str:
        """Wait until the lease is reported lost; returns the reason."""
        await self._lost.wait()
        assert self.lost_reason is not None
        return self.lost_reason

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> LeaseKeeper:
        """Renew once (raises NotFound if the lease is gone), then keep renewing."""
        if self._started:
            return self
        loop = asyncio.get_running_loop()
        sent = loop.time()
        resp = await self._mgr.client_keep_alive_once(self.id, timeout=timeout)
        self._started = True
        self._renewed(sent, resp.TTL, loop.time())
        self._mgr.add(self)
        return self

    async def aclose(self, *, revoke: bool = False, timeout: float | None = None) -> None:
        """Stop renewing; optionally revoke the lease (NotFound is ignored)."""
        if not self._stopped:
            self._stopped = True
            self._mgr.remove(self)
        if revoke and not self.lost:
            try:
                await self._mgr.client_revoke(self.id, timeout=timeout)
            except NotFound:
                pass

    def __await__(self) -> Generator[Any, None, LeaseKeeper]:
        return self.start().__await__()

    async def __aenter__(self) -> LeaseKeeper:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- manager side ------------------------------------------------------------

    def _renewed(self, sent_at: float, ttl: int, now: float) -> None:
        self.ttl = ttl
        self.expires_at = sent_at + ttl
        self.renewals += 1
        self._unacked_since = None
        self._next_send = now + self.interval

    @property
    def interval(self) -> float:
        return max(self.ttl / 3.0, 0.1)

    def _mark_lost(self, reason: str) -> None:
        if self.lost:
            return
        self.lost_reason = reason
        self._lost.set()
        log.warning("lease %x lost: %s", self.id, reason)
        if self.on_lost is not None:
            try:
                r = self.on_lost(self)
                if inspect.isawaitable(r):
                    self._mgr.spawn(r)
            except Exception:
                log.exception("lease %x on_lost callback failed", self.id)

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("active" if self.active else "idle")
        return f"<LeaseKeeper id={self.id:#x} ttl={self.ttl} {state}>"


class KeepAliveManager:
    """One shared LeaseKeepAlive stream per client; see module docstring."""

    def __init__(
        self,
        transport: Transport,
        keep_alive_once: Callable[..., Awaitable[rpc_pb2.LeaseKeepAliveResponse]],
        revoke: Callable[..., Awaitable[object]],
    ) -> None:
        self._t = transport
        self.client_keep_alive_once = keep_alive_once
        self.client_revoke = revoke
        self._keepers: dict[int, LeaseKeeper] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._spawned: set[asyncio.Task[Any]] = set()
        self._stream_healthy = False
        #: number of LeaseKeepAlive streams opened (observability/tests)
        self.streams_opened = 0

    def add(self, keeper: LeaseKeeper) -> None:
        if keeper.id in self._keepers and self._keepers[keeper.id] is not keeper:
            raise ValueError(f"lease {keeper.id:#x} already has an active LeaseKeeper")
        self._keepers[keeper.id] = keeper
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="etcd-lease-keepalive"
            )
        self._wake.set()

    def remove(self, keeper: LeaseKeeper) -> None:
        if self._keepers.get(keeper.id) is keeper:
            del self._keepers[keeper.id]
        if not self._keepers and self._task is not None:
            self._task.cancel()
            self._task = None
        self._wake.set()

    def spawn(self, aw: Awaitable[Any]) -> None:
        async def run() -> None:
            await aw

        t = asyncio.get_running_loop().create_task(run())
        self._spawned.add(t)
        t.add_done_callback(self._spawned.discard)

    async def close(self) -> None:
        task, self._task = self._task, None
        for k in list(self._keepers.values()):
            k._stopped = True
        self._keepers.clear()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # --- the stream --------------------------------------------------------------

    def _lose(self, keeper: LeaseKeeper, reason: str) -> None:
        if self._keepers.get(keeper.id) is keeper:
            del self._keepers[keeper.id]
        keeper._mark_lost(reason)

    def _check_expiry(self, now: float) -> None:
        for k in list(self._keepers.values()):
            if now >= k.expires_at:
                self._lose(k, REASON_EXPIRED)

    def _next_deadline(self) -> float:
        return min(
            (min(k._next_send, k.expires_at) for k in self._keepers.values()), default=math.inf
        )

    async def _idle(self, until: float) -> None:
        """Sleep until `until` (loop time) or a wake-up, whichever first."""
        loop = asyncio.get_running_loop()
        delay = until - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
        self._wake.clear()

    async def _sleep_checking(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while self._keepers:
            now = loop.time()
            self._check_expiry(now)
            if now >= end:
                return
            await self._idle(min(end, self._next_deadline()))

    async def _read(self, call: Any, stubs_endpoint: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                resp = await call.read()
                if resp is EOF:
                    raise Unavailable("keepalive stream closed by server", endpoint=stubs_endpoint)
                self._stream_healthy = True
                k = self._keepers.get(resp.ID)
                if k is None:
                    continue
                if resp.TTL <= 0:
                    self._lose(k, REASON_REVOKED)
                else:
                    sent = k._unacked_since if k._unacked_since is not None else loop.time()
                    k._renewed(sent, resp.TTL, loop.time())
        finally:
            self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while self._keepers and not self._t.closed:
            stubs = self._t.stubs()
            reader: asyncio.Task[None] | None = None
            call: Any = None
            err: BaseException | None = None
            try:
                await self._t.ensure_connected(stubs, self._t.connect_timeout)
                call = stubs.lease.LeaseKeepAlive(metadata=REQUIRE_LEADER)
                self.streams_opened += 1
                self._stream_healthy = False
                reader = loop.create_task(self._read(call, stubs.endpoint))
                now = loop.time()
                for k in self._keepers.values():  # keepalive re-sends after (re)connect
                    k._next_send = now
                while self._keepers:
                    now = loop.time()
                    self._check_expiry(now)
                    if reader.done():
                        reader.result()  # raises the stream error
                        raise Unavailable("keepalive stream ended", endpoint=stubs.endpoint)
                    for k in list(self._keepers.values()):
                        if k._next_send <= now:
                            if k._unacked_since is None:
                                k._unacked_since = now
                            k._next_send = now + k.interval
                            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=k.id))
                    await self._idle(self._next_deadline())
                return
            except grpc.aio.AioRpcError as e:
                err = map_rpc_error(e, endpoint=stubs.endpoint, operation="LeaseKeepAlive")
            except EtcdError as e:
                err = e
            except (asyncio.InvalidStateError, grpc.aio.UsageError) as e:
                err = e
            finally:
                if reader is not None:
                    reader.cancel()
                if call is not None:
                    call.cancel()
            log.info("lease keepalive stream on %s broke: %s", stubs.endpoint, err)
            self._t.mark_failed(stubs.endpoint)
            if self._stream_healthy:
                attempt = 0
            await self._sleep_checking(self._t.backoff.delay(attempt))
            attempt += 1
