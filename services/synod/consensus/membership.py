"""Membership changes (etcd's Cluster API) on top of the core's single-server changes.

Any member accepts a change; only the leader can propose it, so a follower
forwards it to the leader over the peer port. The leader checks it against
the configuration, proposes it, and answers once it has applied the entry.

A new member's id is derived from its peer URLs and the cluster token, the
same way a member computes its own id at start, so `MemberAdd` and the new
member's own start agree on the id without talking to each other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc

from synod.consensus.api.errors import ApiError
from synod.consensus.config import member_id, normalize_url
from synod.consensus.node import NotLeaderError
from synod.consensus.raft import ConfChange, ConfChangeError, ConfChangeType, ProposalDropped
from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from synod.consensus.member import Member

CC = internal_pb2.ConfChangeRequest
_TYPES = {
    CC.ADD_VOTER: ConfChangeType.ADD_VOTER,
    CC.ADD_LEARNER: ConfChangeType.ADD_LEARNER,
    CC.REMOVE: ConfChangeType.REMOVE,
}
#: a learner may be promoted once it holds this share of the leader's log
PROMOTE_READY_RATIO = 0.9

MEMBER_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXISTS = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
NOT_FOUND = (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
NOT_LEARNER = (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
LEARNER_BEHIND = (
    grpc.StatusCode.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
BAD_URLS = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: peer URLs are not valid")


class Membership:
    def __init__(self, member: Member):
        self.m = member

    def member_pb(self, mid: int) -> rpc_pb2.Member:
        assert self.m.state is not None
        info = self.m.state.members[mid]
        return rpc_pb2.Member(
            ID=info.id,
            name=info.name,
            peerURLs=info.peer_urls,
            clientURLs=info.client_urls,
            isLearner=info.is_learner,
        )

    def members_pb(self) -> list[rpc_pb2.Member]:
        assert self.m.state is not None
        return [self.member_pb(mid) for mid in sorted(self.m.state.members)]

    # -- the four operations (any member) -------------------------------------------

    async def add(self, peer_urls: list[str], learner: bool) -> tuple[int, list[rpc_pb2.Member]]:
        try:
            urls = [normalize_url(u) for u in peer_urls]
        except ValueError:
            raise ApiError(*BAD_URLS) from None
        if not urls:
            raise ApiError(*BAD_URLS)
        new_id = member_id(urls, self.m.config.initial_cluster_token)
        req = CC(
            type=CC.ADD_LEARNER if learner else CC.ADD_VOTER,
            node_id=new_id,
            context=internal_pb2.MemberContext(peer_urls=urls),
        )
        resp = await self.change(req)
        return new_id, list(resp.members)

    async def remove(self, mid: int) -> list[rpc_pb2.Member]:
        return list((await self.change(CC(type=CC.REMOVE, node_id=mid))).members)

    async def promote(self, mid: int) -> list[rpc_pb2.Member]:
        # A promotion is an ADD_VOTER without peer URLs: the member exists already.
        return list((await self.change(CC(type=CC.ADD_VOTER, node_id=mid))).members)

    async def change(self, req: internal_pb2.ConfChangeRequest) -> internal_pb2.ConfChangeResponse:
        m = self.m
        assert m.node is not None
        if m.node.leader == m.id:
            return await self.change_on_leader(req)
        try:
            return await m.leader_stub().ProposeConfChange(req, timeout=10.0)  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                raise NotLeaderError(f"leader unreachable: {e.details()}") from None
            raise ApiError.from_rpc(e) from None

    # -- on the leader ----------------------------------------------------------------

    async def change_on_leader(
        self, req: internal_pb2.ConfChangeRequest
    ) -> internal_pb2.ConfChangeResponse:
        m = self.m
        assert m.node is not None and m.state is not None
        members = m.state.members
        mid = req.node_id
        kind = _TYPES.get(req.type)
        if kind is None:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"unknown change type {req.type}")
        ctx = req.context
        if kind == ConfChangeType.REMOVE:
            if mid not in members:
                raise ApiError(*NOT_FOUND)
        elif kind == ConfChangeType.ADD_VOTER and not req.context.peer_urls:
            self._check_promotable(mid)
            ctx = internal_pb2.MemberContext()
        else:
            if mid in members:
                raise ApiError(*MEMBER_EXISTS)
            taken = {u for info in members.values() for u in info.peer_urls}
            if taken & set(req.context.peer_urls):
                raise ApiError(*PEER_URL_EXISTS)
        cc = ConfChange(kind, mid, ctx.SerializeToString())
        try:
            index = m.node.propose_conf_change(cc)
        except ProposalDropped as e:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, f"etcdserver: {e}") from None
        except ConfChangeError as e:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"etcdserver: {e}") from None
        term = m.node.raw.raft.log.term(index)
        await asyncio.wait_for(m.node.wait_applied(index), timeout=10.0)
        # Applied at that index, but was it our entry? A leader change may have
        # replaced it with another leader's entry at the same index.
        if m.node.raw.raft.log.term(index) not in (term, None) or not self._took_effect(req):
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE,
                "etcdserver: leader changed before the membership change committed; retry",
            )
        return internal_pb2.ConfChangeResponse(members=self.members_pb(), raft_term=m.node.term)

    def _took_effect(self, req: internal_pb2.ConfChangeRequest) -> bool:
        assert self.m.state is not None
        info = self.m.state.members.get(req.node_id)
        if req.type == CC.REMOVE:
            return info is None
        if info is None:
            return False
        return info.is_learner == (req.type == CC.ADD_LEARNER)

    def _check_promotable(self, mid: int) -> None:
        m = self.m
        assert m.node is not None and m.state is not None
        info = m.state.members.get(mid)
        if info is None:
            raise ApiError(*NOT_FOUND)
        if not info.is_learner:
            raise ApiError(*NOT_LEARNER)
        raft = m.node.raw.raft
        pr = raft.prs.get(mid)
        if pr is None or pr.match < raft.log.committed * PROMOTE_READY_RATIO:
            raise ApiError(*LEARNER_BEHIND)
