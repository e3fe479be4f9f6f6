"""etcdserverpb.Maintenance: Status (the rest arrives with the next issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, member: Member):
        self.m = member

    async def Status(
        self, request: rpc_pb2.StatusRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.StatusResponse:
        m = self.m
        assert m.node is not None and m.state is not None
        raft = m.node.raw.raft
        errors = []
        if not m.node.leader:
            errors.append("etcdserver: no leader")
        if m.node.failure is not None:
            errors.append(f"synod: raft loop failed: {m.node.failure}")
        size = m.state.db_size()
        return rpc_pb2.StatusResponse(
            header=m.header(),
            version=m.version(),
            dbSize=size,
            dbSizeInUse=size,
            leader=m.node.leader,
            raftIndex=raft.log.committed,
            raftTerm=raft.term,
            raftAppliedIndex=m.node.applied,
            errors=errors,
            isLearner=m.id in raft.conf.learners,
        )


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(member), server)
