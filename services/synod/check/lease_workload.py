"""The lease workload: grant short leases, attach a key, keep some alive, let them lapse.

Each worker runs one lease at a time through a cycle (ops recorded in the
history's vocabulary, history.py; checked by lease_checker.py):

1. ``grant`` a lease of 2-3 s (the harness's 1 s election timeout makes
   Synod's minimum TTL 2 s: consensus/leases.py ``min_ttl_seconds``);
2. ``put`` the lease's own key, once, attached to it;
3. a few ``keepalive`` calls (0-3, spaced over up to ~60 % of the TTL, so the
   lease stays alive past its first TTL when there are some), a ``read`` of the
   key after each;
4. now and then an explicit ``revoke``;
5. let it lapse: ``read`` the key every few hundred ms until a read finds it
   gone, or the lapse has lasted TTL + ``bound`` + 2 s (then move on: the final
   reads look again).

Keepalives go to the worker's own member (forwarded to the leader by a
follower), reads rotate over all members, so a lease kept alive through one
side of a partition is read through the other. Every call is sent once over
raw gRPC stubs, as the register workload does, and errors become outcomes by
the same rules (workloads.py): a failed read is ``fail``; grant, put,
keepalive and revoke change state, so an error is ``info`` unless it proves the
request never went out. After ``info`` the process is retired.

The final reads (after healing) wait until every lease is due to be gone (the
checker's liveness rule: last possible extension or the heal, whichever is
later, + TTL + bound) and read every key once more.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import grpc
import grpc.aio
import structlog

from synod.check.history import Op
from synod.check.lease_checker import DEFAULT_BOUND, WORKLOAD
from synod.check.workloads import (
    ERROR_BACKOFF,
    Channels,
    Recorder,
    error_text,
    read_key,
    until_ok,
    write_outcome,
)
from synod.etcd.etcdserverpb import rpc_pb2

log = structlog.get_logger("synod.check.lease_workload")


@dataclass
class _Tracked:
    """What the final reads need to know about one lease's key."""

    key: str
    ttl: int
    last_extension: float  # completion of the grant or of the last ok/info keepalive


class LeaseWorkload:
    name = WORKLOAD

    def __init__(
        self,
        recorder: Recorder,
        channels: Channels,
        prefix: str,
        rng: random.Random,
        *,
        workers: int = 3,
        timeout: float = 2.0,
        ttls: tuple[int, ...] = (2, 3),
        bound: float = DEFAULT_BOUND,
        revoke_ratio: float = 0.15,
    ):
        self.rec = recorder
        self.ch = channels
        self.prefix = prefix
        self.rng = rng
        self.workers = workers
        self.timeout = timeout
        self.ttls = ttls
        self.bound = bound
        self.revoke_ratio = revoke_ratio
        self.tracked: list[_Tracked] = []
        self._next = 0
        self._reads = 0  # rotates reads over the members

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.workers)))

    async def _worker(self, node: int, stop: asyncio.Event) -> None:
        process = self.rec.new_process()
        while not stop.is_set():
            key = f"{self.prefix}/l{self._next:06d}"
            self._next += 1
            process = await self._cycle(process, node, key, stop)

    async def _cycle(self, process: int, node: int, key: str, stop: asyncio.Event) -> int:
        """One lease from grant to lapse; returns the process to continue with."""
        op = await self.grant(process, node, key, self.rng.choice(self.ttls))
        if op.outcome != "ok":
            return await self._after_error(op, process)
        lease_id, ttl = op.result
        tracked = _Tracked(key, ttl, op.complete)
        self.tracked.append(tracked)
        op = await self.put(process, node, key, lease_id)
        if op.outcome != "ok":
            return await self._after_error(op, process)
        for _ in range(self.rng.randrange(4)):
            if stop.is_set():
                break
            await asyncio.sleep(self.rng.uniform(0.2, 0.6 * ttl))
            op = await self.keepalive(process, node, key, lease_id)
            if op.outcome != "fail":
                tracked.last_extension = op.complete
            if op.outcome != "ok":
                process = await self._after_error(op, process)
                break
            await self.read(process, self._read_node(), key)
        if self.rng.random() < self.revoke_ratio:
            op = await self.revoke(process, node, key, lease_id)
            if op.outcome != "ok":
                process = await self._after_error(op, process)
        # Lapse: read until the key is seen gone, or long past when it should be.
        give_up = tracked.last_extension + ttl + self.bound + 2.0
        while not stop.is_set() and time.monotonic() < give_up:
            op = await self.read(process, self._read_node(), key)
            if op.outcome == "ok" and op.result is None:
                break
            await asyncio.sleep(ERROR_BACKOFF if op.error else self.rng.uniform(0.1, 0.4))
        return process

    async def _after_error(self, op: Op, process: int) -> int:
        await asyncio.sleep(ERROR_BACKOFF)
        return self.rec.new_process() if op.outcome == "info" else process

    def _read_node(self) -> int:
        self._reads += 1
        return self._reads

    # --- the operations ------------------------------------------------------------

    async def grant(self, process: int, node: int, key: str, ttl: int) -> Op:
        t0 = time.monotonic()
        try:
            resp = await self.ch.lease(node).LeaseGrant(
                rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "grant", key, ttl, t0, write_outcome(e), error=error_text(e)
            )
        if resp.error:
            return self.rec.record(
                process, self.name, "grant", key, ttl, t0, "fail", error=resp.error
            )
        return self.rec.record(
            process, self.name, "grant", key, ttl, t0, "ok", [int(resp.ID), int(resp.TTL)]
        )

    async def put(self, process: int, node: int, key: str, lease_id: int) -> Op:
        t0 = time.monotonic()
        try:
            await self.ch.kv(node).Put(
                rpc_pb2.PutRequest(key=key.encode(), value=b"x", lease=lease_id),
                timeout=self.timeout,
            )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "put", key, lease_id, t0, write_outcome(e),
                error=error_text(e),
            )  # fmt: skip
        return self.rec.record(process, self.name, "put", key, lease_id, t0, "ok")

    async def keepalive(self, process: int, node: int, key: str, lease_id: int) -> Op:
        """One keepalive on its own stream (etcd's KeepAlive is a stream; one request,
        one answer, so the op's outcome is exactly that request's)."""
        t0 = time.monotonic()

        async def one() -> AsyncIterator[rpc_pb2.LeaseKeepAliveRequest]:
            yield rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)

        call = self.ch.lease(node).LeaseKeepAlive(one(), timeout=self.timeout)
        try:
            async for resp in call:
                return self.rec.record(
                    process, self.name, "keepalive", key, lease_id, t0, "ok", int(resp.TTL)
                )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "keepalive", key, lease_id, t0, write_outcome(e),
                error=error_text(e),
            )  # fmt: skip
        finally:
            call.cancel()
        return self.rec.record(
            process, self.name, "keepalive", key, lease_id, t0, "info",
            error="stream ended without an answer",
        )  # fmt: skip

    async def revoke(self, process: int, node: int, key: str, lease_id: int) -> Op:
        t0 = time.monotonic()
        try:
            await self.ch.lease(node).LeaseRevoke(
                rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as e:
            return self.rec.record(
                process, self.name, "revoke", key, lease_id, t0, write_outcome(e),
                error=error_text(e),
            )  # fmt: skip
        return self.rec.record(process, self.name, "revoke", key, lease_id, t0, "ok")

    async def read(self, process: int, node: int, key: str) -> Op:
        """A linearizable Range of the key: result the lease id it carries, None if absent."""
        return await read_key(
            self.rec, self.ch, self.name, self.timeout, process, node, key,
            lambda kv: int(kv.lease),
        )  # fmt: skip

    # --- after healing ---------------------------------------------------------------

    async def final_reads(self, healed_at: float, deadline: float) -> None:
        """Wait until every lease is due to be gone (see the module docstring), then one
        ok read of every key; the checker's liveness rule looks at these."""
        due = max(
            (max(t.last_extension, healed_at) + t.ttl + self.bound for t in self.tracked),
            default=0.0,
        )
        wait = min(due + 0.2, deadline) - time.monotonic()
        if wait > 0:
            log.info("lease_final_reads_wait", seconds=round(wait, 1))
            await asyncio.sleep(wait)  # the rule's time, not a guess: reads must start after it
        for t in self.tracked:
            await until_ok(partial(self._final_read, t.key), deadline)

    async def _final_read(self, key: str, attempt: int) -> Op:
        return await self.read(self.rec.new_process(), attempt, key)
