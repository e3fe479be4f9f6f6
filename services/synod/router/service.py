"""The `synod.router.v1.Router` gRPC service (asyncio).

Stateless: membership writes go to the consensus service through the etcd v3 client;
reads are answered from the `Directory`'s rings, each answer with the revision the
rings reflect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
import grpc.aio
import structlog

from synod.client.errors import EtcdError, NotFound
from synod.client.etcd import (
    EtcdClient,
    compare_mod_revision,
    compare_version,
    op_get,
    op_put,
)
from synod.router.membership import (
    Directory,
    InvalidMember,
    MemberRecord,
    RingSnapshot,
    decode_member,
    encode_member,
    valid_ring_name,
)
from synod.router.metrics import RouterMetrics
from synod.router.ring import MAX_WEIGHT, Member, RingParams
from synod.router.v1 import router_pb2, router_pb2_grpc

log = structlog.get_logger("synod.router")

DEFAULT_TTL = 10
MAX_TTL = 24 * 3600
SETTLE_TIMEOUT = 5.0  # Register/Deregister: longest wait for the ring to reflect the change
MAX_BATCH = 1_000_000


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str
) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("unreachable")  # pragma: no cover - abort raises


def member_pb(m: MemberRecord) -> router_pb2.Member:
    return router_pb2.Member(id=m.id, address=m.address, weight=m.weight, metadata=m.metadata)


def params_pb(p: RingParams) -> router_pb2.RingParams:
    return router_pb2.RingParams(
        algorithm=p.algorithm,
        slots=p.slots,
        key_seed=p.key_seed,
        member_seed=p.member_seed,
        slot_seed=p.slot_seed,
        hash=p.hash,
        mix=p.mix,
    )


class RouterService(router_pb2_grpc.RouterServicer):
    def __init__(self, directory: Directory, client: EtcdClient, metrics: RouterMetrics) -> None:
        self.directory = directory
        self.client = client
        self.metrics = metrics

    # --- helpers ---------------------------------------------------------------------

    async def _consensus_error(self, context: grpc.aio.ServicerContext, e: EtcdError) -> NoReturn:
        code = e.code if e.code != grpc.StatusCode.UNKNOWN else grpc.StatusCode.UNAVAILABLE
        await _abort(context, code, f"consensus service: {e}")

    async def _ring(
        self, name: str, context: grpc.aio.ServicerContext, *, need_members: bool = True
    ) -> tuple[RingSnapshot, int]:
        if not name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ring is required")
        if not self.directory.ready.is_set():
            await _abort(
                context, grpc.StatusCode.UNAVAILABLE, "router has not loaded the rings yet"
            )
        snap, rev = self.directory.snapshot(name)
        if snap is None:
            await _abort(
                context, grpc.StatusCode.NOT_FOUND, f"unknown ring {name!r} (revision {rev})"
            )
        if need_members and snap.ring is None:
            await _abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"ring {name!r} has no members (revision {rev})",
            )
        return snap, rev

    async def _replicas(
        self, requested: int, snap: RingSnapshot, rev: int, context: grpc.aio.ServicerContext
    ) -> int:
        n = requested or 1
        if n < 1:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"replicas must be >= 1, got {requested}"
            )
        if n > len(snap.members):
            await _abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"replicas={n} but ring {snap.name!r} has {len(snap.members)} member(s) "
                f"at revision {rev}",
            )
        return n

    def _state(self, name: str, snap: RingSnapshot | None, rev: int) -> router_pb2.RingState:
        if snap is None:
            return router_pb2.RingState(
                ring=name, params=params_pb(self.directory.params), revision=rev, exists=False
            )
        params = snap.ring.params if snap.ring is not None else self.directory.params
        return router_pb2.RingState(
            ring=name,
            members=[member_pb(m) for m in snap.ordered],
            params=params_pb(params),
            revision=rev,
            exists=True,
            table=snap.table,
        )

    # --- membership ------------------------------------------------------------------

    async def Register(
        self, request: router_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RegisterResponse:
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if not valid_ring_name(request.ring):
            await _abort(context, bad, "ring must be non-empty, without '/', <= 256 characters")
        if not request.id:
            await _abort(context, bad, "id is required")
        if not request.address:
            await _abort(context, bad, "address (host:port) is required")
        weight = request.weight or 1
        if not 1 <= weight <= MAX_WEIGHT:
            await _abort(context, bad, f"weight must be in 1..{MAX_WEIGHT}, got {weight}")
        ttl = request.ttl_seconds or DEFAULT_TTL
        if not 1 <= ttl <= MAX_TTL:
            await _abort(context, bad, f"ttl_seconds must be in 1..{MAX_TTL}, got {ttl}")
        d = self.directory
        mkey, ckey = d.member_key(request.ring, request.id), d.config_key(request.ring)
        metadata = dict(request.metadata)
        value = encode_member(request.address, weight, metadata)
        lease_id = 0
        try:
            # Declare the ring (idempotent): it stays known when its last member leaves.
            await self.client.txn([compare_version(ckey, "==", 0)], [op_put(ckey, b"{}")])
            lease_id, granted = await self.client.grant(int(ttl))
            for _ in range(8):
                resp = await self.client.txn(
                    [compare_version(mkey, "==", 0)],
                    [op_put(mkey, value, lease=lease_id)],
                    [op_get(mkey)],
                )
                if resp.succeeded:
                    break
                kvs = resp.responses[0].response_range.kvs
                if not kvs:
                    continue  # deleted meanwhile: try to create again
                kv = kvs[0]
                try:
                    existing: MemberRecord | None = decode_member(request.id, kv.value)
                except InvalidMember:
                    existing = None
                if existing is not None and existing.address != request.address:
                    await self._revoke_quietly(lease_id)
                    lease_id = 0
                    await _abort(
                        context,
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"member {request.id!r} of ring {request.ring!r} is already registered "
                        f"with address {existing.address!r} (not {request.address!r})",
                    )
                resp = await self.client.txn(
                    [compare_mod_revision(mkey, "==", kv.mod_revision)],
                    [op_put(mkey, value, lease=lease_id)],
                )
                if resp.succeeded:
                    break
            else:
                await self._revoke_quietly(lease_id)
                await _abort(
                    context, grpc.StatusCode.ABORTED, "member key changed concurrently; retry"
                )
        except EtcdError as e:
            if lease_id:
                await self._revoke_quietly(lease_id)
            await self._consensus_error(context, e)
        # Answer once this replica serves a table that holds the member, so a Lookup
        # right after Register sees it (the table is written by a router, see membership).
        in_ring = await d.wait_for(
            request.ring,
            lambda snap: (
                snap is not None
                and snap.ring is not None
                and snap.ring.members.get(request.id) == Member(request.id, weight)
            ),
            self._settle_timeout(context),
        )
        log.info(
            "member_registered",
            ring=request.ring,
            id=request.id,
            address=request.address,
            lease=f"{lease_id:x}",
            revision=resp.header.revision,
            in_ring_revision=in_ring,
        )
        return router_pb2.RegisterResponse(
            lease_id=lease_id,
            ttl_seconds=granted,
            revision=max(resp.header.revision, in_ring or 0),
        )

    @staticmethod
    def _settle_timeout(context: grpc.aio.ServicerContext) -> float:
        """How long Register/Deregister wait for the ring to reflect them."""
        remaining = context.time_remaining()
        return (
            SETTLE_TIMEOUT if remaining is None else max(0.0, min(SETTLE_TIMEOUT, remaining - 0.1))
        )

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            await self.client.revoke(lease_id)
        except EtcdError as e:
            log.warning("lease_revoke_failed", lease=f"{lease_id:x}", error=str(e))

    async def KeepAlive(
        self,
        request_iterator: AsyncIterator[router_pb2.KeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[router_pb2.KeepAliveResponse]:
        async for req in request_iterator:
            lease = req.lease_id
            try:
                if not lease:
                    if not req.ring or not req.id:
                        await _abort(
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            "give lease_id, or ring and id",
                        )
                    r = await self.client.get(self.directory.member_key(req.ring, req.id))
                    if not r.kvs or not r.kvs[0].lease:
                        yield router_pb2.KeepAliveResponse(lease_id=0, ttl_seconds=0)
                        continue
                    lease = r.kvs[0].lease
                try:
                    ka = await self.client.keep_alive_once(lease)
                    ttl = int(ka.TTL)
                except NotFound:
                    ttl = 0
            except EtcdError as e:
                await self._consensus_error(context, e)
            yield router_pb2.KeepAliveResponse(lease_id=lease, ttl_seconds=ttl)

    async def Deregister(
        self, request: router_pb2.DeregisterRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.DeregisterResponse:
        if not valid_ring_name(request.ring) or not request.id:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ring and id are required")
        try:
            resp = await self.client.delete(self.directory.member_key(request.ring, request.id))
        except EtcdError as e:
            await self._consensus_error(context, e)
        out_of_ring = await self.directory.wait_for(
            request.ring,
            lambda snap: snap is None or snap.ring is None or request.id not in snap.members,
            self._settle_timeout(context),
        )
        log.info(
            "member_deregistered",
            ring=request.ring,
            id=request.id,
            existed=resp.deleted > 0,
            out_of_ring_revision=out_of_ring,
        )
        return router_pb2.DeregisterResponse(
            existed=resp.deleted > 0, revision=max(resp.header.revision, out_of_ring or 0)
        )

    # --- placement -------------------------------------------------------------------

    async def Lookup(
        self, request: router_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.LookupResponse:
        if not request.key:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "key must not be empty")
        snap, rev = await self._ring(request.ring, context)
        n = await self._replicas(request.replicas, snap, rev, context)
        assert snap.ring is not None
        ids = snap.ring.lookup_n(request.key, n)
        self.metrics.lookups.labels(snap.name, "Lookup").inc()
        return router_pb2.LookupResponse(
            members=[member_pb(snap.members[i]) for i in ids], revision=rev
        )

    async def LookupBatch(
        self, request: router_pb2.LookupBatchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.LookupBatchResponse:
        if len(request.keys) > MAX_BATCH:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} keys per batch"
            )
        for i, k in enumerate(request.keys):
            if not k:
                await _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, f"keys[{i}] must not be empty"
                )
        snap, rev = await self._ring(request.ring, context)
        n = await self._replicas(request.replicas, snap, rev, context)
        ring = snap.ring
        assert ring is not None
        index: dict[str, int] = {}
        out = router_pb2.LookupBatchResponse(revision=rev)
        for key in request.keys:
            ids = [ring.lookup(key)] if n == 1 else ring.lookup_n(key, n)
            idx = []
            for mid in ids:
                j = index.get(mid)
                if j is None:
                    j = index[mid] = len(index)
                    out.members.append(member_pb(snap.members[mid]))
                idx.append(j)
            out.placements.add(members=idx)
        self.metrics.lookups.labels(snap.name, "LookupBatch").inc(len(request.keys))
        return out

    async def GetRing(
        self, request: router_pb2.GetRingRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.RingState:
        snap, rev = await self._ring(request.ring, context, need_members=False)
        return self._state(request.ring, snap, rev)

    async def WatchRing(
        self, request: router_pb2.WatchRingRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.RingState]:
        await self._ring(request.ring, context, need_members=False)
        d = self.directory
        last: Any = object()
        while True:
            changed = d.changed_event()
            snap, rev = d.snapshot(request.ring)
            if snap is not last:
                last = snap
                yield self._state(request.ring, snap, rev)
            await changed.wait()

    async def ListRings(
        self, request: router_pb2.ListRingsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListRingsResponse:
        if not self.directory.ready.is_set():
            await _abort(
                context, grpc.StatusCode.UNAVAILABLE, "router has not loaded the rings yet"
            )
        return router_pb2.ListRingsResponse(
            rings=sorted(self.directory.rings), revision=self.directory.revision
        )
