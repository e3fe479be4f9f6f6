"""etcdserverpb.Lease: grant, revoke, keep alive, time to live, list.

Grants and revokes go through the log. Keepalives and TTL queries are about
time, which only the leader keeps: a follower forwards them to the leader
over the peer port (synod.consensus.v1.Internal).
"""

from __future__ import annotations

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
        lessor = self.m.lessor
        async for req in request_iterator:
            yield await call_guarded(context, functools.partial(lessor.keepalive, req))

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


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(member), server)
