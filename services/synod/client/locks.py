"""A client for the lock service: sessions kept alive in the background, and fenced writes.

    async with LockSession(lock_endpoints, ttl=10) as session:
        async with session.lock("jobs/compactor") as held:
            ...                               # held.token is the fencing token
            await held.guarded_put(etcd, b"jobs/state", b"done")   # only while still held

`guarded_put` is the fencing pattern done in the consensus store itself: one
Txn that writes only if the lock's key still exists with the create revision
the grant returned. A holder that was paused past its session's TTL (and so
lost the lock) has its write rejected instead of clobbering the new holder's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from synod.client._transport import EOF
from synod.client.channels import open_channel
from synod.client.errors import LockLost
from synod.client.etcd import EtcdClient
from synod.client.kv import KeyLike, compare_create_revision, op_put
from synod.lock.v1 import lock_pb2, lock_pb2_grpc

__all__ = ["HeldLock", "LockLost", "LockSession"]


@dataclass(frozen=True)
class HeldLock:
    name: str
    key: bytes
    token: int
    session_id: int

    async def guarded_put(self, etcd: EtcdClient, key: KeyLike, value: KeyLike) -> int:
        """Put `key` only while this grant is still held; returns the write's revision."""
        resp = await etcd.txn(
            [compare_create_revision(self.key, "==", self.token)], [op_put(key, value)], []
        )
        if not resp.succeeded:
            raise LockLost(f"lock {self.name!r} (token {self.token}) is no longer held")
        return int(resp.header.revision)


class LockSession:
    """A lock-service session whose keepalives run in the background."""

    def __init__(
        self,
        endpoints: Sequence[str],
        ttl: int = 10,
        timeout: float = 10.0,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        """`credentials`: TLS to the replicas (e.g. `synod.tls.ClientTLS(...).credentials()`)."""
        if not endpoints:
            raise ValueError("at least one lock-service endpoint is required")
        self.endpoints = list(endpoints)
        self.ttl = ttl
        self.timeout = timeout
        self.credentials = credentials
        self.session_id = 0
        self._channel: grpc.aio.Channel | None = None
        self._stub: lock_pb2_grpc.LockStub | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._old_channels: list[grpc.aio.Channel] = []
        self.lost = asyncio.Event()

    async def __aenter__(self) -> LockSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _connect(self, i: int = 0) -> lock_pb2_grpc.LockStub:
        target = self.endpoints[i % len(self.endpoints)]
        if self._channel is not None:
            # Calls in flight on it (the keepalive stream, an Acquire) end by
            # themselves; it is closed with the session.
            self._old_channels.append(self._channel)
        self._channel = open_channel(target, self.credentials)
        self._stub = lock_pb2_grpc.LockStub(self._channel)
        return self._stub

    async def open(self) -> None:
        stub = self._connect()
        resp = await stub.OpenSession(
            lock_pb2.OpenSessionRequest(ttl_seconds=self.ttl), timeout=self.timeout
        )
        self.session_id = resp.session_id
        self._keeper = asyncio.create_task(self._keep_alive(), name="lock-session-keepalive")

    async def _keep_alive(self) -> None:
        attempt = 0
        while not self.lost.is_set():
            assert self._stub is not None
            try:
                call = self._stub.KeepAlive()
                while True:
                    await call.write(lock_pb2.KeepAliveRequest(session_id=self.session_id))
                    r = await call.read()
                    if r is EOF or r.ttl_seconds <= 0:
                        self.lost.set()
                        return
                    attempt = 0
                    await asyncio.sleep(self.ttl / 3)
            except grpc.aio.AioRpcError:
                attempt += 1
                self._connect(attempt)  # fail over to the next replica
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._stub is not None and not self.lost.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub.CloseSession(
                    lock_pb2.CloseSessionRequest(session_id=self.session_id), timeout=self.timeout
                )
        for ch in [*self._old_channels, self._channel]:
            if ch is not None:
                await ch.close(None)
        self._old_channels.clear()

    async def acquire(
        self, name: str, *, shared: bool = False, limit: int = 1, timeout: float | None = None
    ) -> HeldLock:
        """Wait for the lock (retrying on another replica if one goes away)."""
        req = lock_pb2.AcquireRequest(
            name=name,
            session_id=self.session_id,
            mode=lock_pb2.SHARED if shared else lock_pb2.EXCLUSIVE,
            limit=limit,
        )
        attempt = 0
        while True:
            assert self._stub is not None
            try:
                r = await self._stub.Acquire(req, timeout=timeout)
                return HeldLock(name, r.key, r.fencing_token, r.session_id)
            except grpc.aio.AioRpcError as e:
                # Acquire is idempotent per session: a retry elsewhere keeps our place.
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt >= 2 * len(self.endpoints):
                    raise
                attempt += 1
                self._connect(attempt)
                # Back off a little: UNAVAILABLE also means "the consensus service
                # has no leader right now", which no replica can fix at once.
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    async def release(self, held: HeldLock) -> None:
        """Release the grant, failing over to another replica if this one is gone."""
        req = lock_pb2.ReleaseRequest(name=held.name, session_id=held.session_id)
        attempt = 0
        while True:
            assert self._stub is not None
            try:
                await self._stub.Release(req, timeout=self.timeout)
                return
            except grpc.aio.AioRpcError as e:
                if attempt and e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    return  # the attempt whose answer we lost did release it
                if e.code() != grpc.StatusCode.UNAVAILABLE or attempt >= 2 * len(self.endpoints):
                    raise
                attempt += 1
                self._connect(attempt)
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    @contextlib.asynccontextmanager
    async def lock(self, name: str, **kw: object) -> AsyncIterator[HeldLock]:
        held = await self.acquire(name, **kw)  # type: ignore[arg-type]
        try:
            yield held
        finally:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.release(held)
