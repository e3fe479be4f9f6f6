"""synod.consensus.v1.Internal: what followers ask the leader, on the peer port."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import ApiError, call_guarded
from synod.consensus.v1 import internal_pb2, internal_pb2_grpc
from synod.etcd.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from synod.consensus.member import Member

NOT_LEADER = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")


class InternalServicer(internal_pb2_grpc.InternalServicer):
    def __init__(self, member: Member):
        self.m = member

    async def _require_leader(self, context: grpc.aio.ServicerContext) -> None:
        if not self.m.lessor.clock.active:
            await context.abort(*NOT_LEADER)

    async def RenewLeases(
        self, request: internal_pb2.LeaseRenewals, context: grpc.aio.ServicerContext
    ) -> internal_pb2.LeaseRenewalAnswers:
        await self._require_leader(context)
        answers = await call_guarded(
            context, functools.partial(self.m.lessor.leader_renew, list(request.ids))
        )
        return internal_pb2.LeaseRenewalAnswers(answers=answers)

    async def LeaseTimeToLive(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        await self._require_leader(context)
        return self.m.lessor.local_time_to_live(request)

    async def ProposeConfChange(
        self, request: internal_pb2.ConfChangeRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.ConfChangeResponse:
        assert self.m.node is not None
        if self.m.node.leader != self.m.id:
            await context.abort(*NOT_LEADER)
        try:
            return await self.m.membership.change_on_leader(request)
        except ApiError as e:
            await context.abort(e.code, e.message)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "etcdserver: request timed out")
        raise AssertionError("unreachable")

    async def ClusterInfo(
        self, request: internal_pb2.ClusterInfoRequest, context: grpc.aio.ServicerContext
    ) -> internal_pb2.ClusterInfoResponse:
        return internal_pb2.ClusterInfoResponse(
            cluster_id=self.m.cluster_id, members=self.m.membership.members_pb()
        )
