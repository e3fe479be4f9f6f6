"""v3electionpb.Election: leader election on keys, leases and revisions, as etcd does it.

A candidate's key is `NAME/<lease id in hex>`, attached to its lease. The
leader is the key with the lowest create revision under `NAME/`; a candidate
becomes leader once every key created before its own is gone (deleted,
resigned, or expired with its lease). Waiting happens on this member: the
condition is checked after each apply, so no polling and no herd.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import abort, call_guarded, raise_result
from synod.consensus.api.kv import timeout_for
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2
from synod.etcd.mvccpb import kv_pb2
from synod.etcd.v3electionpb import v3election_pb2, v3election_pb2_grpc

if TYPE_CHECKING:
    from synod.consensus.member import Member

NOT_LEADER = (grpc.StatusCode.FAILED_PRECONDITION, "election: not leader")
NO_LEADER = (grpc.StatusCode.NOT_FOUND, "election: no leader")
SESSION_EXPIRED = (grpc.StatusCode.FAILED_PRECONDITION, "election: session expired")
EMPTY_NAME = (grpc.StatusCode.INVALID_ARGUMENT, "election: name is not provided")


def _prefix(name: bytes) -> tuple[bytes, bytes]:
    start = name + b"/"
    return start, name + b"0"  # "/" + 1 == "0"


class ElectionServicer(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, member: Member):
        self.m = member

    # -- helpers -----------------------------------------------------------------

    def _first(self, name: bytes, before: int = 0) -> kv_pb2.KeyValue | None:
        """The oldest candidate under NAME/, or the newest one created before `before`."""
        assert self.m.state is not None
        start, end = _prefix(name)
        req = rpc_pb2.RangeRequest(key=start, range_end=end, limit=1)
        req.sort_target = rpc_pb2.RangeRequest.CREATE
        if before:
            req.max_create_revision = before - 1
            req.sort_order = rpc_pb2.RangeRequest.DESCEND
        else:
            req.sort_order = rpc_pb2.RangeRequest.ASCEND
        resp = self.m.state.store.range(req)
        return resp.kvs[0] if resp.kvs else None

    def _get(self, key: bytes) -> kv_pb2.KeyValue | None:
        assert self.m.state is not None
        resp = self.m.state.store.range(rpc_pb2.RangeRequest(key=key))
        return resp.kvs[0] if resp.kvs else None

    async def _txn(
        self, txn: rpc_pb2.TxnRequest, context: grpc.aio.ServicerContext
    ) -> rpc_pb2.TxnResponse:
        async def go() -> rpc_pb2.TxnResponse:
            return raise_result(  # type: ignore[no-any-return]
                await self.m.propose(internal_pb2.InternalRequest(txn=txn), timeout_for(context))
            )

        return await call_guarded(context, go)

    # -- the five calls ------------------------------------------------------------

    async def Campaign(
        self, request: v3election_pb2.CampaignRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.CampaignResponse:
        if not request.name:
            await abort(context, EMPTY_NAME)
        key = request.name + b"/" + format(request.lease, "x").encode()
        put = rpc_pb2.PutRequest(key=key, value=request.value, lease=request.lease)
        txn = rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=key,
                    target=rpc_pb2.Compare.CREATE,
                    result=rpc_pb2.Compare.EQUAL,
                    create_revision=0,
                )
            ],
            success=[rpc_pb2.RequestOp(request_put=put)],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
        )
        resp = await self._txn(txn, context)
        if resp.succeeded:
            rev = resp.header.revision
        else:
            # Already campaigning with this lease: keep our place, update the value.
            rev = resp.responses[0].response_range.kvs[0].create_revision
            if resp.responses[0].response_range.kvs[0].value != request.value:
                await self._txn(
                    rpc_pb2.TxnRequest(
                        success=[
                            rpc_pb2.RequestOp(
                                request_put=rpc_pb2.PutRequest(
                                    key=key, value=request.value, ignore_lease=True
                                )
                            )
                        ]
                    ),
                    context,
                )
        # Leader once no candidate created before us remains, or out if our key went.
        await self.m.wait_for_state(
            lambda: self._first(request.name, before=rev) is None or self._get(key) is None
        )
        mine = self._get(key)
        if mine is None or mine.create_revision != rev:
            await abort(context, SESSION_EXPIRED)
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=rev, lease=request.lease)
        return v3election_pb2.CampaignResponse(header=self.m.header(), leader=leader)

    async def Proclaim(
        self, request: v3election_pb2.ProclaimRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.ProclaimResponse:
        lk = request.leader
        txn = rpc_pb2.TxnRequest(
            compare=[_is_leader(lk)],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(
                        key=lk.key, value=request.value, ignore_lease=True
                    )
                )
            ],
        )
        resp = await self._txn(txn, context)
        if not resp.succeeded:
            await abort(context, NOT_LEADER)
        return v3election_pb2.ProclaimResponse(header=self.m.header())

    async def Leader(
        self, request: v3election_pb2.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.LeaderResponse:
        await call_guarded(context, lambda: self.m.read_barrier(timeout_for(context)))
        kv = self._first(request.name)
        if kv is None:
            await abort(context, NO_LEADER)
        return v3election_pb2.LeaderResponse(header=self.m.header(), kv=kv)

    async def Observe(
        self, request: v3election_pb2.LeaderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every change of leader or of its value, starting with the current one."""
        await call_guarded(context, lambda: self.m.read_barrier(timeout_for(context)))
        seen: tuple[bytes, int] | None = None
        while True:
            kv = self._first(request.name)
            if kv is not None and (kv.key, kv.mod_revision) != seen:
                seen = (kv.key, kv.mod_revision)
                yield v3election_pb2.LeaderResponse(header=self.m.header(), kv=kv)

            def changed(seen: tuple[bytes, int] | None = seen) -> bool:
                cur = self._first(request.name)
                return cur is not None and (cur.key, cur.mod_revision) != seen

            await self.m.wait_for_state(changed)

    async def Resign(
        self, request: v3election_pb2.ResignRequest, context: grpc.aio.ServicerContext
    ) -> v3election_pb2.ResignResponse:
        lk = request.leader
        txn = rpc_pb2.TxnRequest(
            compare=[_is_leader(lk)],
            success=[
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=lk.key))
            ],
        )
        await self._txn(txn, context)
        return v3election_pb2.ResignResponse(header=self.m.header())


def _is_leader(lk: v3election_pb2.LeaderKey) -> rpc_pb2.Compare:
    return rpc_pb2.Compare(
        key=lk.key,
        target=rpc_pb2.Compare.CREATE,
        result=rpc_pb2.Compare.EQUAL,
        create_revision=lk.rev,
    )


def register(server: grpc.aio.Server, member: Member) -> None:
    v3election_pb2_grpc.add_ElectionServicer_to_server(ElectionServicer(member), server)
