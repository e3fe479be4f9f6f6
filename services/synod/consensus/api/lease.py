"""etcdserverpb.Lease: grant, revoke, keep alive, time to live, list.

Grants and revokes go through the log. Keepalives and TTL queries are about
time, which only the leader keeps: a follower forwards them to the leader
over the peer port (synod.consensus.v1.Internal).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import abort, call_guarded, raise_result
from synod.consensus.api.kv import timeout_for
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member

#: renewals of one LeaseKeepAlive stream handled at once
RENEWALS_IN_FLIGHT_PER_STREAM = 256

#: etcd's MaxLeaseTTL
MAX_LEASE_TTL = 9_000_000_000
TTL_TOO_LARGE = (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: too large lease TTL")


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, member: Member):
        self.m = member

    def _finish(self, resp: rpc_pb2.LeaseGrantResponse | rpc_pb2.LeaseRevokeResponse) -> None:
        resp.header.cluster_id = self.m.cluster_id
        resp.header.member_id = self.m.id

    async def LeaseGrant(
        self, request: rpc_pb2.LeaseGrantRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseGrantResponse:
        if request.TTL > MAX_LEASE_TTL:
            await abort(context, TTL_TOO_LARGE)
        req = rpc_pb2.LeaseGrantRequest()
        req.CopyFrom(request)
        if req.ID == 0:
            req.ID = self.m.next_lease_id()
        m = self.m

        async def go() -> rpc_pb2.LeaseGrantResponse:
            result = await m.propose(
                internal_pb2.InternalRequest(lease_grant=req), timeout_for(context)
            )
            return raise_result(result)  # type: ignore[no-any-return]

        resp = await call_guarded(context, go)
        self._finish(resp)
        return resp

    async def LeaseRevoke(
        self, request: rpc_pb2.LeaseRevokeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseRevokeResponse:
        m = self.m

        async def go() -> rpc_pb2.LeaseRevokeResponse:
            result = await m.propose(
                internal_pb2.InternalRequest(lease_revoke=request), timeout_for(context)
            )
            return raise_result(result)  # type: ignore[no-any-return]

        resp = await call_guarded(context, go)
        self._finish(resp)
        return resp

    async def LeaseKeepAlive(
        self,
        request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """Renewals on one stream are handled at once, each answered when it is done.

        Clients renew all their leases on one stream (etcd's clientv3 and ours do),
        and a renewal waits for a quorum round on the leader, or a hop to it from a
        follower. One at a time, a stream answered a few hundred renewals a second
        (docs/performance.md, sixth round); together they share the leader's rounds.
        Answers may come out of order: each carries its lease ID, which is what
        clients match them by.
        """
        lessor = self.m.lessor
        finished: asyncio.Queue[asyncio.Future[rpc_pb2.LeaseKeepAliveResponse] | None]
        finished = asyncio.Queue()
        slots = asyncio.Semaphore(RENEWALS_IN_FLIGHT_PER_STREAM)
        in_flight: set[asyncio.Future[rpc_pb2.LeaseKeepAliveResponse]] = set()

        def done(f: asyncio.Future[rpc_pb2.LeaseKeepAliveResponse]) -> None:
            slots.release()
            finished.put_nowait(f)

        async def read_requests() -> None:
            try:
                async for req in request_iterator:
                    await slots.acquire()  # a client that sends faster waits here
                    f = asyncio.ensure_future(lessor.keepalive(req))
                    in_flight.add(f)
                    f.add_done_callback(done)
            finally:
                finished.put_nowait(None)

        reader = asyncio.ensure_future(read_requests())
        reading = True
        try:
            while reading or in_flight:
                f = await finished.get()
                if f is None:
                    reading = False
                    continue
                in_flight.discard(f)
                yield await call_guarded(context, functools.partial(_outcome, f))
            reader.result()  # the request stream's own error, if it broke
        finally:
            reader.cancel()
            for f in in_flight:
                f.cancel()

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await call_guarded(context, lambda: self.m.lessor.time_to_live(request))

    async def LeaseLeases(
        self, request: rpc_pb2.LeaseLeasesRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseLeasesResponse:
        m = self.m
        await call_guarded(context, lambda: m.read_barrier(timeout_for(context)))
        assert m.state is not None
        return rpc_pb2.LeaseLeasesResponse(
            header=m.header(),
            leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(m.state.leases.leases)],
        )


async def _outcome(
    f: asyncio.Future[rpc_pb2.LeaseKeepAliveResponse],
) -> rpc_pb2.LeaseKeepAliveResponse:
    return await f


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(member), server)
