"""etcdserverpb.Cluster: the member list (membership changes arrive with the next issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import NOT_SUPPORTED, abort
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member


def member_list(m: Member) -> list[rpc_pb2.Member]:
    assert m.state is not None
    return [
        rpc_pb2.Member(
            ID=info.id,
            name=info.name,
            peerURLs=info.peer_urls,
            clientURLs=info.client_urls,
            isLearner=info.is_learner,
        )
        for info in sorted(m.state.members.values(), key=lambda i: i.id)
    ]


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, member: Member):
        self.m = member

    async def MemberList(
        self, request: rpc_pb2.MemberListRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MemberListResponse:
        if request.linearizable:
            from synod.consensus.api.errors import call_guarded
            from synod.consensus.api.kv import timeout_for

            await call_guarded(context, lambda: self.m.read_barrier(timeout_for(context)))
        return rpc_pb2.MemberListResponse(header=self.m.header(), members=member_list(self.m))

    async def MemberAdd(self, request, context):  # type: ignore[no-untyped-def]
        await abort(context, NOT_SUPPORTED)

    async def MemberRemove(self, request, context):  # type: ignore[no-untyped-def]
        await abort(context, NOT_SUPPORTED)

    async def MemberUpdate(self, request, context):  # type: ignore[no-untyped-def]
        await abort(context, NOT_SUPPORTED)

    async def MemberPromote(self, request, context):  # type: ignore[no-untyped-def]
        await abort(context, NOT_SUPPORTED)


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(member), server)
