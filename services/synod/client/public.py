"""The public Synod client: ``synod.client.Client`` (asyncio) and ``SyncClient``.

One entry point for the consensus store (etcd v3 KV, leases, watches), the lock
service and the router::

    async with Client(endpoints=["127.0.0.1:2379"], lock_endpoints=[...]) as c:
        await c.kv.put("greeting", "hello")
        kv = await c.kv.get("greeting")            # KeyValue | None
        async with c.lock("jobs/compactor", ttl=10) as held:
            await held.guarded_put("jobs/state", "done")   # fenced by held.token

``SyncClient`` offers the same surface to synchronous code; it runs one event
loop in a background thread. See docs/client.md for the retry policy and the
exceptions.

Threading: a `Client` belongs to the event loop it was opened on. A
`SyncClient` may be used from any thread (calls are serialised onto its loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2
from synod.router.ring import Ring, SlotTable
from synod.router.v1 import router_pb2, router_pb2_grpc
from synod.tls import ClientTLS

from .channels import open_channel, uses_https
from .errors import EtcdError, Unavailable, map_rpc_error
from .etcd import EtcdClient
from .kv import KeyLike, to_bytes
from .leases import LeaseKeeper, LostCallback
from .locks import HeldLock, LockSession
from .watch import Watcher

__all__ = [
    "Client",
    "KeyValue",
    "Lease",
    "Leases",
    "Lock",
    "KV",
    "RouterView",
    "SyncClient",
    "SyncKV",
    "SyncLeases",
    "SyncLock",
    "SyncRouterView",
]

T = TypeVar("T")

#: WatchRing errors that end a RouterView; anything else reopens the stream elsewhere
_FATAL = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


def _endpoint_list(endpoints: Sequence[str] | str) -> list[str]:
    if isinstance(endpoints, str):
        return [e.strip() for e in endpoints.split(",") if e.strip()]
    return list(endpoints)


async def _mapped(aw: Awaitable[T], endpoint: str | None, operation: str) -> T:
    """Await a raw gRPC call of the lock/router services; errors become `EtcdError`s."""
    try:
        return await aw
    except grpc.aio.AioRpcError as e:
        raise map_rpc_error(e, endpoint=endpoint, operation=operation) from e


# --- KV --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One key as stored (a plain copy of etcd's ``mvccpb.KeyValue``)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    @classmethod
    def from_proto(cls, kv: kv_pb2.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class KV:
    """Key-value calls (``client.kv``). Keys and values are ``bytes`` or ``str`` (UTF-8)."""

    def __init__(self, etcd: EtcdClient) -> None:
        self._etcd = etcd

    async def get(
        self, key: KeyLike, *, serializable: bool = False, timeout: float | None = None
    ) -> KeyValue | None:
        """The key, or None if it does not exist. Retried on UNAVAILABLE."""
        resp = await self._etcd.get(key, serializable=serializable, timeout=timeout)
        return KeyValue.from_proto(resp.kvs[0]) if resp.kvs else None

    async def range(
        self,
        key: KeyLike,
        *,
        range_end: KeyLike = b"",
        prefix: bool = False,
        limit: int = 0,
        revision: int = 0,
        timeout: float | None = None,
    ) -> list[KeyValue]:
        """Keys in ``[key, range_end)`` (or with prefix ``key``), sorted by key. Retried."""
        resp = await self._etcd.get(
            key,
            range_end=range_end,
            prefix=prefix,
            limit=limit,
            revision=revision,
            sort=("key", "ascend"),
            timeout=timeout,
        )
        return [KeyValue.from_proto(kv) for kv in resp.kvs]

    async def put(
        self, key: KeyLike, value: KeyLike, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Write; returns the store revision of the write. Never retried."""
        resp = await self._etcd.put(key, value, lease=lease, timeout=timeout)
        return int(resp.header.revision)

    async def delete(
        self, key: KeyLike, *, prefix: bool = False, timeout: float | None = None
    ) -> int:
        """Delete the key (or every key with prefix ``key``); returns how many. Never retried."""
        resp = await self._etcd.delete(key, prefix=prefix, timeout=timeout)
        return int(resp.deleted)

    async def txn(
        self,
        compare: Iterable[rpc_pb2.Compare] = (),
        success: Iterable[rpc_pb2.RequestOp] = (),
        failure: Iterable[rpc_pb2.RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> rpc_pb2.TxnResponse:
        """A transaction built with `compare_*` / `op_*` (etcd's ``TxnResponse``).

        Retried only when no branch writes.
        """
        return await self._etcd.txn(compare, success, failure, timeout=timeout)

    def watch(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        range_end: KeyLike = b"",
        start_revision: int = 0,
        prev_kv: bool = False,
    ) -> Watcher:
        """A `Watcher`: ``async with c.kv.watch("k/", prefix=True) as w: async for r in w``.

        Each item is etcd's ``WatchResponse`` (``.events``); the watch survives
        failover without losing or repeating events.
        """
        return self._etcd.watch(
            key, prefix=prefix, range_end=range_end, start_revision=start_revision, prev_kv=prev_kv
        )


# --- leases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: int


class Leases:
    """Lease calls (``client.leases``)."""

    def __init__(self, etcd: EtcdClient) -> None:
        self._etcd = etcd

    async def grant(self, ttl: int, *, id: int = 0, timeout: float | None = None) -> Lease:
        """A new lease. Retried only with an explicit ``id``."""
        lease_id, granted = await self._etcd.grant(ttl, id, timeout=timeout)
        return Lease(lease_id, granted)

    async def revoke(self, id: int, *, timeout: float | None = None) -> None:
        """Revoke (deleting its keys). `NotFound` if it does not exist. Never retried."""
        await self._etcd.revoke(id, timeout=timeout)

    async def time_to_live(self, id: int, *, timeout: float | None = None) -> int:
        """Remaining seconds; -1 if the lease does not exist. Retried."""
        resp = await self._etcd.time_to_live(id, timeout=timeout)
        return int(resp.TTL)

    def keep_alive(self, id: int, *, on_lost: LostCallback | None = None) -> LeaseKeeper:
        """Renew in the background: ``async with c.leases.keep_alive(lease.id) as keeper``."""
        return self._etcd.keep_alive(id, on_lost=on_lost)


# --- locks -----------------------------------------------------------------------------------


class Lock:
    """``async with client.lock(name) as lock``: a held lock of the lock service.

    Entering opens a lock-service session (kept alive in the background, every
    ttl/3) and waits for the lock; leaving - normally or by an exception -
    releases it and closes the session.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        ttl: int,
        shared: bool,
        limit: int,
        timeout: float | None,
    ) -> None:
        self._client = client
        self.name = name
        self.ttl = ttl
        self.shared = shared
        self.limit = limit
        self.acquire_timeout = timeout
        self._session: LockSession | None = None
        self._held: HeldLock | None = None

    @property
    def held(self) -> HeldLock:
        if self._held is None:
            raise RuntimeError(f"lock {self.name!r} is not held")
        return self._held

    @property
    def token(self) -> int:
        """The fencing token: strictly greater for every later grant of this name."""
        return self.held.token

    @property
    def key(self) -> bytes:
        """The lock's key in the consensus store."""
        return self.held.key

    @property
    def session_id(self) -> int:
        return self.held.session_id

    @property
    def lost(self) -> bool:
        """True once the session could not be kept alive (the lock may be gone)."""
        return self._session is not None and self._session.lost.is_set()

    async def acquire(self) -> Lock:
        endpoints = self._client.lock_endpoints
        if not endpoints:
            raise ValueError("Client(lock_endpoints=...) is required for locks")
        session = LockSession(
            endpoints,
            ttl=self.ttl,
            timeout=self._client.timeout,
            credentials=self._client.credentials,
        )
        try:
            await _mapped(session.open(), endpoints[0], "OpenSession")
            self._session = session
            self._held = await _mapped(
                session.acquire(
                    self.name, shared=self.shared, limit=self.limit, timeout=self.acquire_timeout
                ),
                None,
                "Acquire",
            )
        except BaseException:
            self._session = None
            await session.close()
            raise
        return self

    async def release(self) -> None:
        session, held = self._session, self._held
        self._session = self._held = None
        if session is None:
            return
        try:
            if held is not None and not session.lost.is_set():
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await session.release(held)
        finally:
            await session.close()

    async def guarded_put(self, key: KeyLike, value: KeyLike) -> int:
        """Write ``key`` only while this grant is held; `LockLost` otherwise. Not retried."""
        return await self.held.guarded_put(self._client.etcd, key, value)

    async def __aenter__(self) -> Lock:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


# --- router ----------------------------------------------------------------------------------


def ring_from_state(state: router_pb2.RingState) -> Ring | None:
    """A local `Ring` equal to the router's (None for an empty ring).

    The router sends its stored slot table; decoding it checks its checksum.
    """
    if not state.table:
        return None
    return Ring(SlotTable.decode(state.table))


class RouterView:
    """A local copy of one ring, kept current by the router's WatchRing stream.

    ``async with client.router("web") as view:`` waits for the first state;
    `lookup` / `lookup_n` are then computed locally (no RPC). When a router
    replica goes away the stream is reopened on the next one (jittered backoff).
    """

    def __init__(self, client: Client, ring: str) -> None:
        self._client = client
        self.ring = ring
        self.state: router_pb2.RingState | None = None
        self._ring: Ring | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._error: BaseException | None = None

    @property
    def revision(self) -> int:
        """Consensus revision up to which the cached ring reflects membership changes."""
        return int(self.state.revision) if self.state is not None else 0

    @property
    def members(self) -> dict[str, router_pb2.Member]:
        return {m.id: m for m in self.state.members} if self.state is not None else {}

    def _local(self) -> Ring:
        r = self._ring
        if r is None:
            raise LookupError(f"ring {self.ring!r} has no members")
        return r

    def lookup(self, key: KeyLike) -> str:
        """The id of the member owning ``key``; LookupError when the ring is empty."""
        return self._local().lookup(to_bytes(key))

    def lookup_n(self, key: KeyLike, n: int) -> list[str]:
        """The first ``n`` distinct member ids for ``key`` (owner first)."""
        return self._local().lookup_n(to_bytes(key), n)

    def address(self, member_id: str) -> str:
        return self.members[member_id].address

    async def wait_revision(self, revision: int, timeout: float | None = None) -> None:
        """Wait until the cache reflects every change up to ``revision``."""
        async with asyncio.timeout(timeout):
            while self.revision < revision:
                if self._error is not None:
                    raise self._error
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> RouterView:
        endpoints = self._client.router_endpoints
        if not endpoints:
            raise ValueError("Client(router_endpoints=...) is required for router views")
        first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(endpoints, first), name=f"ring-{self.ring}")
        try:
            async with asyncio.timeout(self._client.timeout):
                await first
        except BaseException:
            await self.aclose()
            raise
        return self

    def _apply(self, state: router_pb2.RingState) -> None:
        self._ring = ring_from_state(state)
        self.state = state
        self._changed.set()

    async def _run(self, endpoints: list[str], first: asyncio.Future[None]) -> None:
        attempt = 0
        i = 0
        while True:
            target = endpoints[i % len(endpoints)]
            try:
                async with open_channel(target, self._client.credentials) as ch:
                    stub = router_pb2_grpc.RouterStub(ch)
                    call = stub.WatchRing(router_pb2.WatchRingRequest(ring=self.ring))
                    async for state in call:
                        self._apply(state)
                        attempt = 0
                        if not first.done():
                            first.set_result(None)
                raise Unavailable("WatchRing stream ended", endpoint=target)
            except grpc.aio.AioRpcError as e:
                err: EtcdError = map_rpc_error(e, endpoint=target, operation="WatchRing")
            except Unavailable as e:
                err = e
            if err.code in _FATAL:
                # No such ring, bad name, ...: another replica would say the same.
                self._error = err
                self._changed.set()
                if not first.done():
                    first.set_exception(err)
                return
            i += 1
            attempt += 1
            delay = min(0.05 * 2**attempt, 1.0)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> RouterView:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --- the client ------------------------------------------------------------------------------


class Client:
    """Asyncio client for Synod: ``async with Client(endpoints=[...]) as c``.

    Args:
        endpoints: consensus members ("host:port", a list or a comma-separated string).
        lock_endpoints: lock-service replicas (needed for `lock`).
        router_endpoints: router replicas (needed for `router`).
        timeout: deadline in seconds of every call, retries included.
        tls: TLS to all three services: the CA their certificates are signed by
            and, for mutual TLS, this client's certificate and key. Without it,
            https:// endpoints mean TLS verified against the system's roots;
            otherwise plaintext.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        lock_endpoints: Sequence[str] | str = (),
        router_endpoints: Sequence[str] | str = (),
        timeout: float = 5.0,
        tls: ClientTLS | None = None,
    ) -> None:
        self.endpoints = _endpoint_list(endpoints)
        if not self.endpoints:
            raise ValueError("at least one consensus endpoint is required")
        self.lock_endpoints = _endpoint_list(lock_endpoints)
        self.router_endpoints = _endpoint_list(router_endpoints)
        self.timeout = timeout
        everything = self.endpoints + self.lock_endpoints + self.router_endpoints
        if tls is None and uses_https(everything):
            tls = ClientTLS()
        self.tls = tls
        #: the channel credentials every call uses (None: plaintext)
        self.credentials = tls.credentials() if tls is not None else None
        self._etcd: EtcdClient | None = None
        self._kv: KV | None = None
        self._leases: Leases | None = None
        self._views: set[RouterView] = set()

    async def open(self) -> Client:
        if self._etcd is None:
            self._etcd = EtcdClient(
                self.endpoints, timeout=self.timeout, credentials=self.credentials
            )
            self._kv = KV(self._etcd)
            self._leases = Leases(self._etcd)
        return self

    async def close(self) -> None:
        for v in list(self._views):
            await v.aclose()
        self._views.clear()
        if self._etcd is not None:
            await self._etcd.close()

    async def __aenter__(self) -> Client:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def etcd(self) -> EtcdClient:
        """The underlying `EtcdClient` (the full etcd v3 API)."""
        if self._etcd is None:
            raise RuntimeError("the client is not open: use `async with Client(...)`")
        return self._etcd

    @property
    def kv(self) -> KV:
        """Key-value calls; see `KV`."""
        if self._kv is None:
            raise RuntimeError("the client is not open: use `async with Client(...)`")
        return self._kv

    @property
    def leases(self) -> Leases:
        """Lease calls; see `Leases`."""
        if self._leases is None:
            raise RuntimeError("the client is not open: use `async with Client(...)`")
        return self._leases

    def lock(
        self,
        name: str,
        ttl: int = 10,
        *,
        shared: bool = False,
        limit: int = 1,
        timeout: float | None = None,
    ) -> Lock:
        """A `Lock` to enter with ``async with``; ``timeout`` bounds the wait (None: forever)."""
        return Lock(self, name, ttl, shared, limit, timeout)

    def router(self, ring: str) -> RouterView:
        """A `RouterView` of ``ring`` to enter with ``async with``."""
        view = RouterView(self, ring)
        self._views.add(view)
        return view


# --- the synchronous wrapper -----------------------------------------------------------------


class _Loop:
    """One event loop in a daemon thread; `run` submits a coroutine and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="synod-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("SyncClient called from its own event loop thread")
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class SyncKV:
    """`KV` for synchronous code (``sync_client.kv``)."""

    def __init__(self, run: _Loop, kv: KV) -> None:
        self._run, self._kv = run, kv

    def get(self, key: KeyLike, *, timeout: float | None = None) -> KeyValue | None:
        return self._run.run(self._kv.get(key, timeout=timeout))

    def range(
        self,
        key: KeyLike,
        *,
        range_end: KeyLike = b"",
        prefix: bool = False,
        limit: int = 0,
        timeout: float | None = None,
    ) -> list[KeyValue]:
        return self._run.run(
            self._kv.range(key, range_end=range_end, prefix=prefix, limit=limit, timeout=timeout)
        )

    def put(
        self, key: KeyLike, value: KeyLike, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        return self._run.run(self._kv.put(key, value, lease=lease, timeout=timeout))

    def delete(self, key: KeyLike, *, prefix: bool = False, timeout: float | None = None) -> int:
        return self._run.run(self._kv.delete(key, prefix=prefix, timeout=timeout))

    def txn(
        self,
        compare: Iterable[rpc_pb2.Compare] = (),
        success: Iterable[rpc_pb2.RequestOp] = (),
        failure: Iterable[rpc_pb2.RequestOp] = (),
        *,
        timeout: float | None = None,
    ) -> rpc_pb2.TxnResponse:
        return self._run.run(self._kv.txn(compare, success, failure, timeout=timeout))


class SyncLeases:
    """`Leases` for synchronous code (no background keep-alive: use `Client` for that)."""

    def __init__(self, run: _Loop, leases: Leases) -> None:
        self._run, self._leases = run, leases

    def grant(self, ttl: int, *, id: int = 0, timeout: float | None = None) -> Lease:
        return self._run.run(self._leases.grant(ttl, id=id, timeout=timeout))

    def revoke(self, id: int, *, timeout: float | None = None) -> None:
        self._run.run(self._leases.revoke(id, timeout=timeout))

    def time_to_live(self, id: int, *, timeout: float | None = None) -> int:
        return self._run.run(self._leases.time_to_live(id, timeout=timeout))

    def keep_alive_once(self, id: int, *, timeout: float | None = None) -> int:
        """Renew once; returns the new TTL (`NotFound` if the lease is gone)."""

        async def once() -> int:
            resp = await self._leases._etcd.keep_alive_once(id, timeout=timeout)
            return int(resp.TTL)

        return self._run.run(once())


class SyncLock:
    """``with sync_client.lock(name) as lock``: `Lock` for synchronous code.

    The session is kept alive by the client's background loop while the
    calling thread does its work.
    """

    def __init__(self, run: _Loop, lock: Lock) -> None:
        self._run, self._lock = run, lock
        self.name = lock.name

    @property
    def token(self) -> int:
        return self._lock.token

    @property
    def key(self) -> bytes:
        return self._lock.key

    @property
    def session_id(self) -> int:
        return self._lock.session_id

    @property
    def lost(self) -> bool:
        return self._lock.lost

    def guarded_put(self, key: KeyLike, value: KeyLike) -> int:
        return self._run.run(self._lock.guarded_put(key, value))

    def __enter__(self) -> SyncLock:
        self._run.run(self._lock.acquire())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run.run(self._lock.release())


class SyncRouterView:
    """``with sync_client.router(ring) as view``: `RouterView` for synchronous code."""

    def __init__(self, run: _Loop, view: RouterView) -> None:
        self._run, self._view = run, view

    @property
    def revision(self) -> int:
        return self._view.revision

    def lookup(self, key: KeyLike) -> str:
        return self._view.lookup(key)

    def lookup_n(self, key: KeyLike, n: int) -> list[str]:
        return self._view.lookup_n(key, n)

    def wait_revision(self, revision: int, timeout: float | None = None) -> None:
        self._run.run(self._view.wait_revision(revision, timeout))

    def __enter__(self) -> SyncRouterView:
        self._run.run(self._view.start())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._run.run(self._view.aclose())


class SyncClient:
    """`Client` for synchronous code: ``with SyncClient(endpoints=[...]) as c``.

    Runs one event loop in a background (daemon) thread; every call is sent to
    it with ``asyncio.run_coroutine_threadsafe`` and waited for. Same arguments
    as `Client`. Must not be called from inside its own loop's callbacks.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        lock_endpoints: Sequence[str] | str = (),
        router_endpoints: Sequence[str] | str = (),
        timeout: float = 5.0,
        tls: ClientTLS | None = None,
    ) -> None:
        self._loop = _Loop()

        async def make() -> Client:
            return await Client(
                endpoints,
                lock_endpoints=lock_endpoints,
                router_endpoints=router_endpoints,
                timeout=timeout,
                tls=tls,
            ).open()

        try:
            self.client = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise
        self.kv = SyncKV(self._loop, self.client.kv)
        self.leases = SyncLeases(self._loop, self.client.leases)
        self._closed = False

    def lock(
        self,
        name: str,
        ttl: int = 10,
        *,
        shared: bool = False,
        limit: int = 1,
        timeout: float | None = None,
    ) -> SyncLock:
        return SyncLock(
            self._loop, self.client.lock(name, ttl, shared=shared, limit=limit, timeout=timeout)
        )

    def router(self, ring: str) -> SyncRouterView:
        return SyncRouterView(self._loop, self.client.router(ring))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self.client.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
