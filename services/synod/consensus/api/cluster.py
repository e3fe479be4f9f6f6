"""etcdserverpb.Cluster: list, add (also as learner), remove, update, promote members."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import call_guarded, raise_result
from synod.consensus.api.kv import timeout_for
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, member: Member):
        self.m = member

    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            await call_guarded(context, lambda: self.m.read_barrier(timeout_for(context)))
        return rpc_pb2.MemberListResponse(
            header=self.m.header(), members=self.m.membership.members_pb()
        )

    async def MemberAdd(
        self, request: rpc_pb2.MemberAddRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberAddResponse:
        mid, members = await call_guarded(
            context, lambda: self.m.membership.add(list(request.peerURLs), request.isLearner)
        )
        added = next((m for m in members if m.ID == mid), rpc_pb2.Member(ID=mid))
        return rpc_pb2.MemberAddResponse(header=self.m.header(), member=added, members=members)

    async def MemberRemove(
        self, request: rpc_pb2.MemberRemoveRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberRemoveResponse:
        members = await call_guarded(context, lambda: self.m.membership.remove(request.ID))
        return rpc_pb2.MemberRemoveResponse(header=self.m.header(), members=members)

    async def MemberPromote(
        self, request: rpc_pb2.MemberPromoteRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberPromoteResponse:
        members = await call_guarded(context, lambda: self.m.membership.promote(request.ID))
        return rpc_pb2.MemberPromoteResponse(header=self.m.header(), members=members)

    async def MemberUpdate(
        self, request: rpc_pb2.MemberUpdateRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberUpdateResponse:
        from synod.consensus.config import normalize_url

        try:
            urls = [normalize_url(u) for u in request.peerURLs]
        except ValueError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: peer URLs are not valid"
            )
        update = internal_pb2.MemberUpdate(member_id=request.ID, peer_urls=urls)
        m = self.m

        async def go() -> None:
            raise_result(
                await m.propose(
                    internal_pb2.InternalRequest(member_update=update), timeout_for(context)
                )
            )

        await call_guarded(context, go)
        return rpc_pb2.MemberUpdateResponse(header=m.header(), members=m.membership.members_pb())


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(member), server)
