"""etcdserverpb.Maintenance: status, snapshots, leadership moves, hashes, alarms."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from synod.consensus import backup
from synod.consensus.api.errors import abort, call_guarded
from synod.consensus.raft import ConfChangeError, ProposalDropped, Role
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member

#: bytes per Snapshot response message
SNAPSHOT_CHUNK = 32 * 1024
NOT_LEADER = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
BAD_TRANSFEREE = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
TRANSFER_TIMEOUT = (
    grpc.StatusCode.DEADLINE_EXCEEDED,
    "etcdserver: leader transfer timed out",
)


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

    async def Snapshot(
        self, request: rpc_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """The whole state as of now, in the backup file format of backup.py."""
        m = self.m
        assert m.state is not None and m.node is not None
        # Consistent: taken on the loop, between two applies.
        blob = backup.encode(m.state.snapshot_data(), m.node.applied, m.node.term)
        header = m.header()
        total = len(blob)
        for off in range(0, total, SNAPSHOT_CHUNK):
            chunk = blob[off : off + SNAPSHOT_CHUNK]
            yield rpc_pb2.SnapshotResponse(
                header=header, remaining_bytes=total - off - len(chunk), blob=chunk
            )

    async def MoveLeader(
        self, request: rpc_pb2.MoveLeaderRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.MoveLeaderResponse:
        m = self.m
        assert m.node is not None
        if m.node.role != Role.LEADER:
            await abort(context, NOT_LEADER)
        try:
            m.node.transfer_leadership(request.targetID)
        except (ConfChangeError, ProposalDropped):
            await abort(context, BAD_TRANSFEREE)
        deadline = asyncio.get_running_loop().time() + 2 * m.config.election_timeout_ms / 1000
        while m.node.leader != request.targetID:
            if asyncio.get_running_loop().time() > deadline:
                await abort(context, TRANSFER_TIMEOUT)
            await asyncio.sleep(m.config.heartbeat_interval_ms / 1000 / 2)
        return rpc_pb2.MoveLeaderResponse(header=m.header())

    async def Defragment(
        self, request: rpc_pb2.DefragmentRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.DefragmentResponse:
        # The store lives in memory and its snapshots are written whole: there
        # is no free space to reclaim, so defragmenting succeeds at once.
        return rpc_pb2.DefragmentResponse(header=self.m.header())

    async def HashKV(
        self, request: rpc_pb2.HashKVRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.HashKVResponse:
        m = self.m
        assert m.state is not None
        store = m.state.store

        async def go() -> tuple[int, int]:
            return store.hash_kv(request.revision)

        h, compact = await call_guarded(context, go)
        return rpc_pb2.HashKVResponse(
            header=m.header(),
            hash=h,
            compact_revision=compact,
            hash_revision=request.revision or store.revision,
        )

    async def Hash(
        self, request: rpc_pb2.HashRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.HashResponse:
        assert self.m.state is not None
        h, _ = self.m.state.store.hash_kv(0)
        return rpc_pb2.HashResponse(header=self.m.header(), hash=h)

    async def Alarm(
        self, request: rpc_pb2.AlarmRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.AlarmResponse:
        # Synod raises no alarms (no space quota, no corruption alarm yet):
        # listing returns none, and activating or deactivating changes nothing.
        return rpc_pb2.AlarmResponse(header=self.m.header())


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(member), server)
