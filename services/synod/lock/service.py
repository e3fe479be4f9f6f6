"""gRPC faces of the lock service: synod.lock.v1.Lock and etcd's v3lockpb.Lock."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import structlog

from synod.client.errors import Compacted, DeadlineExceeded, EtcdError, Unavailable
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from synod.lock import rules
from synod.lock.core import Grant, LockCore, LockError
from synod.lock.rules import LockKey, Mode
from synod.lock.v1 import lock_pb2, lock_pb2_grpc

log = structlog.get_logger("synod.lock")
T = TypeVar("T")


class Shutdown:
    """Set when the service stops: waiters then get UNAVAILABLE and retry elsewhere."""

    def __init__(self) -> None:
        self.event = asyncio.Event()


async def guarded(
    context: grpc.aio.ServicerContext, shutdown: Shutdown, fn: Callable[[], Awaitable[T]]
) -> T:
    """Run `fn` until it ends, the service stops, or the call's deadline passes."""
    task = asyncio.ensure_future(fn())
    stop = asyncio.ensure_future(shutdown.event.wait())
    remaining = context.time_remaining()
    try:
        done, _ = await asyncio.wait(
            {task, stop}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        task.cancel()  # the client went away: give up our place in line
        await asyncio.gather(task, return_exceptions=True)
        raise
    finally:
        stop.cancel()
    if task in done:
        try:
            return task.result()
        except LockError as e:
            await context.abort(e.code, e.message)
        except (Unavailable, Compacted) as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"consensus service: {e.message}")
        except DeadlineExceeded as e:
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"consensus service: {e.message}"
            )
        except EtcdError as e:
            await context.abort(e.code, e.message)
        raise AssertionError("unreachable")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if shutdown.event.is_set():
        await context.abort(
            grpc.StatusCode.UNAVAILABLE, "lock service replica is shutting down; retry"
        )
    await context.abort(
        grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while waiting for the lock"
    )
    raise AssertionError("unreachable")


def holder_pb(k: LockKey) -> lock_pb2.Holder:
    return lock_pb2.Holder(
        session_id=k.lease,
        fencing_token=k.create_revision,
        mode=int(k.mode),  # type: ignore[arg-type]
        limit=k.limit,
        key=k.key,
        since_revision=k.mod_revision if k.granted_mark else k.create_revision,
    )


class LockServicer(lock_pb2_grpc.LockServicer):
    def __init__(self, core: LockCore, shutdown: Shutdown):
        self.core = core
        self.shutdown = shutdown

    async def OpenSession(
        self, request: lock_pb2.OpenSessionRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.OpenSessionResponse:
        sid, ttl = await guarded(
            context, self.shutdown, lambda: self.core.open_session(request.ttl_seconds)
        )
        return lock_pb2.OpenSessionResponse(session_id=sid, ttl_seconds=ttl)

    async def KeepAlive(
        self,
        request_iterator: AsyncIterator[lock_pb2.KeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[lock_pb2.KeepAliveResponse]:
        async for req in request_iterator:
            ttl = await guarded(
                context, self.shutdown, functools.partial(self.core.keepalive, req.session_id)
            )
            yield lock_pb2.KeepAliveResponse(session_id=req.session_id, ttl_seconds=ttl)

    async def CloseSession(
        self, request: lock_pb2.CloseSessionRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.CloseSessionResponse:
        await guarded(context, self.shutdown, lambda: self.core.close_session(request.session_id))
        return lock_pb2.CloseSessionResponse()

    async def _acquire(
        self, request: lock_pb2.AcquireRequest, context: grpc.aio.ServicerContext, wait: bool
    ) -> lock_pb2.AcquireResponse:
        g: Grant = await guarded(
            context,
            self.shutdown,
            lambda: self.core.acquire(
                request.name, request.session_id, Mode(request.mode), request.limit, wait
            ),
        )
        return lock_pb2.AcquireResponse(
            key=g.key,
            fencing_token=g.token,
            session_id=g.session,
            mode=int(g.mode),  # type: ignore[arg-type]
        )

    async def Acquire(
        self, request: lock_pb2.AcquireRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.AcquireResponse:
        return await self._acquire(request, context, wait=True)

    async def TryAcquire(
        self, request: lock_pb2.AcquireRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.AcquireResponse:
        return await self._acquire(request, context, wait=False)

    async def Release(
        self, request: lock_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.ReleaseResponse:
        await guarded(
            context,
            self.shutdown,
            lambda: self.core.release(request.name, request.session_id, request.key),
        )
        return lock_pb2.ReleaseResponse()

    async def Inspect(
        self, request: lock_pb2.InspectRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.InspectResponse:
        holders, waiters, rev = await guarded(
            context, self.shutdown, lambda: self.core.inspect(request.name)
        )
        return lock_pb2.InspectResponse(
            holders=[holder_pb(h) for h in holders],
            waiters=[holder_pb(w) for w in waiters],
            revision=rev,
        )

    async def Validate(
        self, request: lock_pb2.ValidateRequest, context: grpc.aio.ServicerContext
    ) -> lock_pb2.ValidateResponse:
        h = await guarded(
            context, self.shutdown, lambda: self.core.validate(request.name, request.fencing_token)
        )
        if h is None:
            return lock_pb2.ValidateResponse(held=False)
        return lock_pb2.ValidateResponse(held=True, holder=holder_pb(h))


class EtcdLockServicer(v3lock_pb2_grpc.LockServicer):
    """etcd's v3lockpb.Lock: an exclusive lock per (name, lease), key NAME/<lease hex>."""

    def __init__(self, core: LockCore, shutdown: Shutdown):
        self.core = core
        self.shutdown = shutdown

    async def Lock(
        self, request: v3lock_pb2.LockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.LockResponse:
        name = request.name.decode(errors="surrogateescape")
        g: Grant = await guarded(
            context,
            self.shutdown,
            lambda: self.core.acquire(name, request.lease, Mode.EXCLUSIVE, 1, wait=True),
        )
        header = rpc_pb2.ResponseHeader(revision=g.token)
        return v3lock_pb2.LockResponse(header=header, key=g.key)

    async def Unlock(
        self, request: v3lock_pb2.UnlockRequest, context: grpc.aio.ServicerContext
    ) -> v3lock_pb2.UnlockResponse:
        async def unlock() -> rpc_pb2.DeleteRangeResponse:
            return await self.core.client.delete(request.key)

        resp = await guarded(context, self.shutdown, unlock)
        return v3lock_pb2.UnlockResponse(header=resp.header)


__all__ = ["EtcdLockServicer", "LockServicer", "Shutdown", "rules"]
