"""Leases: the replicated table, and the leader's clock that expires them.

Two halves, kept apart on purpose:

- `LeaseTable` is replicated state. It changes only by applying log entries
  (grant, revoke), so every member holds the same leases, and a lease's keys
  disappear on every member at the same revision.
- `LeaseClock` runs on the leader only and decides *when* a lease expires,
  from the leader's monotonic clock. It never changes state itself: it
  proposes a revoke entry through the log. When a member becomes leader it
  gives every lease its full TTL again, so no lease expires early because the
  leader changed (etcd does the same); keepalives received by any member are
  forwarded to the leader, so a lease kept alive through any member lives.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog

from synod.consensus.v1 import internal_pb2
from synod.etcd.etcdserverpb import rpc_pb2

if TYPE_CHECKING:
    from synod.consensus.member import Member
    from synod.consensus.state import ConsensusState

log = structlog.get_logger("synod.leases")


@dataclass
class Lease:
    id: int
    #: the TTL the lease was granted with (seconds), after the minimum was applied
    ttl: int


class LeaseTable:
    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self.leases

    def get(self, lease_id: int) -> Lease | None:
        return self.leases.get(lease_id)

    def grant(self, lease_id: int, ttl: int) -> Lease:
        lease = self.leases[lease_id] = Lease(lease_id, ttl)
        return lease

    def revoke(self, lease_id: int) -> Lease | None:
        return self.leases.pop(lease_id, None)

    def to_json(self) -> list[list[int]]:
        return [[lease.id, lease.ttl] for lease in sorted(self.leases.values(), key=lambda x: x.id)]

    @classmethod
    def from_json(cls, rows: Iterable[list[int]]) -> LeaseTable:
        t = cls()
        for lease_id, ttl in rows:
            t.grant(int(lease_id), int(ttl))
        return t


def min_ttl_seconds(election_timeout_ms: int) -> int:
    """etcd's minimum lease TTL: 1.5 election timeouts, rounded up to whole seconds.

    A shorter lease could expire during an ordinary leader election.
    """
    return max(1, math.ceil(1.5 * election_timeout_ms / 1000))


class LeaseClock:
    """Expiry deadlines, kept by the leader (monotonic seconds)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.deadlines: dict[int, float] = {}
        #: leases whose revoke was proposed, and when (so it is retried, not spammed)
        self.revoking: dict[int, float] = {}
        self.active = False

    def promote(self, table: LeaseTable) -> None:
        """We became leader: every lease gets its whole TTL from now."""
        now = self.now()
        self.active = True
        self.deadlines = {lease.id: now + lease.ttl for lease in table.leases.values()}
        self.revoking.clear()

    def demote(self) -> None:
        self.active = False
        self.deadlines.clear()
        self.revoking.clear()

    def granted(self, lease: Lease) -> None:
        if self.active:
            self.deadlines[lease.id] = self.now() + lease.ttl

    def revoked(self, lease_id: int) -> None:
        self.deadlines.pop(lease_id, None)
        self.revoking.pop(lease_id, None)

    def renew(self, lease: Lease) -> None:
        self.deadlines[lease.id] = self.now() + lease.ttl
        self.revoking.pop(lease.id, None)

    def remaining(self, lease: Lease) -> int:
        deadline = self.deadlines.get(lease.id)
        if deadline is None:
            return lease.ttl
        return max(0, math.ceil(deadline - self.now()))

    def expired(self, retry_after: float) -> list[int]:
        """Leases past their deadline whose revoke is not already on its way."""
        now = self.now()
        out = []
        for lease_id, deadline in self.deadlines.items():
            if deadline <= now:
                asked = self.revoking.get(lease_id)
                if asked is None or now - asked > retry_after:
                    self.revoking[lease_id] = now
                    out.append(lease_id)
        return out


class Lessor:
    """A member's lease duties: expiring leases while it leads, and answering
    keepalives and TTL queries (on the leader, or by asking it)."""

    def __init__(self, member: Member, check_interval: float):
        self.m = member
        self.clock = LeaseClock()
        self.check_interval = check_interval
        self._task: asyncio.Task[None] | None = None
        self._revokes: set[asyncio.Task[None]] = set()
        #: a follower's renewals waiting for the next RenewLeases call to the leader
        self._renewals_to_forward: list[
            tuple[int, asyncio.Future[rpc_pb2.LeaseKeepAliveResponse]]
        ] = []
        self._forwarding_renewals: asyncio.Future[None] | None = None

    def attach(self, state: ConsensusState) -> None:
        state.on_lease_granted.append(self.clock.granted)
        state.on_lease_revoked.append(self.clock.revoked)
        state.on_restored.append(self._restored)

    def start(self) -> None:
        self._task = asyncio.create_task(self._expire_loop(), name="lease-expiry")

    async def stop(self) -> None:
        tasks = [t for t in [self._task, self._forwarding_renewals, *self._revokes] if t]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def leader_changed(self, leader: int) -> None:
        assert self.m.state is not None
        if leader == self.m.id:
            self.clock.promote(self.m.state.leases)
        else:
            self.clock.demote()

    def _restored(self) -> None:
        assert self.m.state is not None
        if self.clock.active:
            self.clock.promote(self.m.state.leases)

    async def _expire_loop(self) -> None:
        retry_after = self.m.config.election_timeout_ms / 1000
        while True:
            await asyncio.sleep(self.check_interval)
            if not self.clock.active:
                continue
            for lease_id in self.clock.expired(retry_after):
                t = asyncio.create_task(self._revoke(lease_id))
                self._revokes.add(t)
                t.add_done_callback(self._revokes.discard)

    async def _revoke(self, lease_id: int) -> None:
        log.info("lease_expired", lease=f"{lease_id:x}")
        req = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        try:
            await self.m.propose(req, timeout=self.m.config.election_timeout_ms / 1000)
        except Exception as e:  # noqa: BLE001 - retried by the expiry loop
            log.warning("lease_revoke_failed", lease=f"{lease_id:x}", error=repr(e))

    # -- keepalive and TTL ---------------------------------------------------------

    def caught_up(self) -> bool:
        """Whether this leader's lease table is current: it has committed an entry of
        its term and applied everything committed (etcd's waitAppliedIndex)."""
        node = self.m.node
        assert node is not None
        log_ = node.raw.raft.log
        return log_.term(log_.committed) == node.raw.raft.term and node.applied >= log_.committed

    async def keepalive(self, req: rpc_pb2.LeaseKeepAliveRequest) -> rpc_pb2.LeaseKeepAliveResponse:
        if self.clock.active:
            return (await self.leader_renew([req.ID]))[0]
        return await self._forward_renewal(req.ID)

    async def _forward_renewal(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew through the leader, in one RenewLeases call with the other renewals
        asked for while the previous call was on its way: a call per renewal costs
        both members a gRPC call's CPU each (docs/performance.md, sixth round)."""
        fut: asyncio.Future[rpc_pb2.LeaseKeepAliveResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._renewals_to_forward.append((lease_id, fut))
        if self._forwarding_renewals is None:
            self._forwarding_renewals = asyncio.ensure_future(self._forward_renewals())
        return await fut

    async def _forward_renewals(self) -> None:
        from synod.consensus.node import NotLeaderError

        try:
            while self._renewals_to_forward:
                batch, self._renewals_to_forward = self._renewals_to_forward, []
                outcome: list[rpc_pb2.LeaseKeepAliveResponse] | BaseException
                try:
                    stub = self.m.leader_stub()
                    ids = internal_pb2.LeaseRenewals(ids=[i for i, _ in batch])
                    self.m.metrics.renewal_forwards += 1
                    outcome = list((await _forward(stub.RenewLeases, ids)).answers)
                    if len(outcome) != len(batch):
                        outcome = NotLeaderError(
                            f"leader answered {len(outcome)} of {len(batch)} renewals"
                        )
                except NotLeaderError as e:
                    outcome = e
                for k, (_, fut) in enumerate(batch):
                    if fut.done():
                        continue  # its client went away
                    if isinstance(outcome, BaseException):
                        fut.set_exception(outcome)
                    else:
                        fut.set_result(outcome[k])
        finally:
            self._forwarding_renewals = None

    async def leader_renew(self, ids: list[int]) -> list[rpc_pb2.LeaseKeepAliveResponse]:
        """Renew on the leader, once a quorum has confirmed it still is the leader.

        A leader cut off from the others keeps its role until check-quorum deposes it,
        up to two election timeouts, while a new leader may already count the lease
        from its own promotion. Renewing meanwhile would promise the client a TTL the
        new leader does not honour: the lease would expire early. After a ReadIndex
        round (shared with concurrent reads and keepalives) no other leader can have
        been elected before the renewal (the voters that just answered us will not
        vote for an election timeout). etcd added the same check for the same reason.
        """
        from synod.consensus.node import NotLeaderError

        await self.m.read_barrier(timeout=self.m.config.election_timeout_ms / 1000)
        if not self.clock.active:
            raise NotLeaderError("leadership changed while confirming it; retry")
        assert self.m.state is not None
        if not self.caught_up():
            # A brand-new leader may not have applied a recent grant yet: do not
            # answer "not found" for a live lease; the client retries.
            raise NotLeaderError("leader is catching up; retry")
        header = self.m.header()
        leases = self.m.state.leases
        answers = []
        for lease_id in ids:
            lease = leases.get(lease_id)
            ttl = 0  # etcd answers an unknown lease with TTL 0
            if lease is not None and lease.id not in self.clock.revoking:
                self.clock.renew(lease)
                ttl = lease.ttl
            # A lease whose revoke is on its way is as good as gone: say so (TTL 0)
            # rather than renew it and let its keys vanish under the client.
            answers.append(rpc_pb2.LeaseKeepAliveResponse(header=header, ID=lease_id, TTL=ttl))
        return answers

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        if self.clock.active:
            return self.local_time_to_live(req)
        stub = self.m.leader_stub()
        return await _forward(stub.LeaseTimeToLive, req)

    def local_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        assert self.m.state is not None
        from synod.consensus.node import NotLeaderError

        if not self.caught_up():
            raise NotLeaderError("leader is catching up; retry")
        lease = self.m.state.leases.get(req.ID)
        if lease is None:
            # etcd reports an unknown or expired lease as TTL -1
            return rpc_pb2.LeaseTimeToLiveResponse(header=self.m.header(), ID=req.ID, TTL=-1)
        resp = rpc_pb2.LeaseTimeToLiveResponse(
            header=self.m.header(),
            ID=req.ID,
            TTL=self.clock.remaining(lease),
            grantedTTL=lease.ttl,
        )
        if req.keys:
            resp.keys.extend(sorted(self.m.state.store.keys_for_lease(req.ID)))
        return resp


T = TypeVar("T")


async def _forward(call: Callable[..., Awaitable[T]], req: Any) -> T:
    from synod.consensus.node import NotLeaderError

    try:
        return await call(req, timeout=2.0)
    except grpc.aio.AioRpcError as e:
        raise NotLeaderError(f"leader unreachable: {e.code().name}: {e.details()}") from None
