"""etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message

from synod.consensus.api.errors import (
    EMPTY_KEY,
    REQUEST_TOO_LARGE,
    TOO_MANY_OPS,
    abort,
    call_guarded,
    raise_result,
)
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member

R = TypeVar(
    "R",
    rpc_pb2.PutResponse,
    rpc_pb2.DeleteRangeResponse,
    rpc_pb2.TxnResponse,
    rpc_pb2.CompactionResponse,
)

#: etcd's default --max-txn-ops
MAX_TXN_OPS = 128


#: how long a write or linearizable read may wait when the client set no deadline
DEFAULT_REQUEST_TIMEOUT = 7.0


def timeout_for(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None:
        return DEFAULT_REQUEST_TIMEOUT
    return max(0.0, min(remaining - 0.05, DEFAULT_REQUEST_TIMEOUT * 4))


def _txn_problem(txn: rpc_pb2.TxnRequest, depth: int = 0) -> tuple[grpc.StatusCode, str] | None:
    if len(txn.compare) > MAX_TXN_OPS or max(len(txn.success), len(txn.failure)) > MAX_TXN_OPS:
        return TOO_MANY_OPS
    for c in txn.compare:
        if not c.key:
            return EMPTY_KEY
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_range" and not op.request_range.key:
            return EMPTY_KEY
        if kind == "request_put" and not op.request_put.key:
            return EMPTY_KEY
        if kind == "request_delete_range" and not op.request_delete_range.key:
            return EMPTY_KEY
        if kind == "request_txn":
            problem = _txn_problem(op.request_txn, depth + 1)
            if problem:
                return problem
    return None


def _read_only(txn: rpc_pb2.TxnRequest) -> bool:
    for op in (*txn.success, *txn.failure):
        kind = op.WhichOneof("request")
        if kind in ("request_put", "request_delete_range"):
            return False
        if kind == "request_txn" and not _read_only(op.request_txn):
            return False
    return True


class KVServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, member: Member):
        self.m = member

    def _finish_header(self, resp: Any) -> None:
        h = resp.header
        h.cluster_id = self.m.cluster_id
        h.member_id = self.m.id
        if not h.raft_term:
            assert self.m.node is not None
            h.raft_term = self.m.node.term

    async def _check_size(self, req: Message, context: grpc.aio.ServicerContext) -> None:
        if req.ByteSize() > self.m.config.max_request_bytes:
            await abort(context, REQUEST_TOO_LARGE)

    async def _propose(
        self, req: internal_pb2.InternalRequest, context: grpc.aio.ServicerContext, kind: type[R]
    ) -> R:
        """Replicate a write, wait until this member applied it, answer with its result."""

        async def go() -> R:
            result = raise_result(await self.m.propose(req, timeout_for(context)))
            assert isinstance(result, kind)
            return result

        resp = await call_guarded(context, go)
        self._finish_header(resp)
        return resp

    async def Range(
        self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.RangeResponse:
        if not request.key:
            await abort(context, EMPTY_KEY)
        m = self.m

        async def go() -> rpc_pb2.RangeResponse:
            if not request.serializable:
                await m.read_barrier(timeout_for(context))
            assert m.state is not None
            return m.state.store.range(request)

        resp = await call_guarded(context, go)
        resp.header.CopyFrom(m.header())
        return resp

    async def Put(
        self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.PutResponse:
        if not request.key:
            await abort(context, EMPTY_KEY)
        await self._check_size(request, context)
        return await self._propose(
            internal_pb2.InternalRequest(put=request), context, rpc_pb2.PutResponse
        )

    async def DeleteRange(
        self, request: rpc_pb2.DeleteRangeRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.DeleteRangeResponse:
        if not request.key:
            await abort(context, EMPTY_KEY)
        return await self._propose(
            internal_pb2.InternalRequest(delete_range=request), context, rpc_pb2.DeleteRangeResponse
        )

    async def Txn(
        self, request: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.TxnResponse:
        problem = _txn_problem(request)
        if problem:
            await abort(context, problem)
        await self._check_size(request, context)
        m = self.m
        if _read_only(request):
            # Nothing to write: evaluate on local state after a ReadIndex barrier.
            async def go() -> rpc_pb2.TxnResponse:
                await m.read_barrier(timeout_for(context))
                assert m.state is not None
                resp, _ = m.state.store.apply_txn(request)
                return resp

            resp = await call_guarded(context, go)
            resp.header.CopyFrom(m.header())
            return resp
        return await self._propose(
            internal_pb2.InternalRequest(txn=request), context, rpc_pb2.TxnResponse
        )

    async def Compact(
        self, request: rpc_pb2.CompactionRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.CompactionResponse:
        return await self._propose(
            internal_pb2.InternalRequest(compaction=request), context, rpc_pb2.CompactionResponse
        )


def register(server: grpc.aio.Server, member: Member) -> None:
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(member), server)
