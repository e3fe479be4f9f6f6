"""Leases: grant+revoke pairs/s, and what keeping many leases alive costs the members.

The keep-alive scenario grants `Scale.leases_kept` leases (not timed), then
renews each one every TTL/3 over a few LeaseKeepAlive streams, as that many
clients would, and reads each member's CPU time from /proc over the window.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from synod.bench import procstat
from synod.bench.clusters import Stack
from synod.bench.loadgen import CpuClock, channels, close_all, closed_loop
from synod.bench.scenario import Result, Scale, Scenario
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

STREAMS = 6


async def grant_revoke(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.endpoints, 2)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.LeaseStub(c) for c in chans]

        async def op(w: int, k: int) -> None:
            s = stubs[w % len(stubs)]
            g = await s.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10)
            await s.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=g.ID), timeout=10)

        win = await closed_loop(op, 64, scale.warmup_window if warm else scale.window)
    finally:
        await close_all(chans)
    return Result({"lease_grant_revoke": win.rate}, win.gen_cpu, win.errors)


async def _each(stubs: list[rpc_pb2_grpc.LeaseStub], ids: list[int], grant: bool) -> None:
    """Grant len(ids) leases (filling ids) or revoke them, 256 at a time."""
    it = iter(range(len(ids)))

    async def worker(w: int) -> None:
        s = stubs[w % len(stubs)]
        for i in it:
            if grant:
                ids[i] = (await s.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=30)).ID
            else:
                try:
                    await s.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=ids[i]), timeout=30)
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise

    await asyncio.gather(*(worker(w) for w in range(256)))


async def _renew(stub: rpc_pb2_grpc.LeaseStub, ids: list[int], period: float,
                 stop: asyncio.Event, acks: list[int]) -> None:  # fmt: skip
    """Renew every lease in `ids` once per `period`, evenly spread, until `stop`."""
    call = stub.LeaseKeepAlive()

    async def read() -> None:
        async for _ in call:
            acks[0] += 1

    reader = asyncio.create_task(read())
    tick = 0.05
    per_tick = max(1, round(len(ids) * tick / period))
    i = 0
    next_t = time.perf_counter()
    try:
        while not stop.is_set():
            for _ in range(per_tick):
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=ids[i % len(ids)]))
                i += 1
            next_t += tick
            await asyncio.sleep(max(0.0, next_t - time.perf_counter()))
    finally:
        call.cancel()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def keepalive_cost(stack: Stack, scale: Scale, warm: bool) -> Result:
    chans = channels(stack.endpoints, 2)
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.LeaseStub(c) for c in chans]
        ids = [0] * scale.leases_kept
        await _each(stubs, ids, grant=True)
        # Renewals go out on a fixed 15 s TTL / 3 period, whatever the granted TTL (60 s):
        # the rate is what 10,000 clients renewing at TTL/3 would send.
        period = scale.lease_ttl / 3
        stop = asyncio.Event()
        acks = [0]
        shards = [ids[i::STREAMS] for i in range(STREAMS)]
        renewers = [
            asyncio.create_task(_renew(stubs[i % len(stubs)], shards[i], period, stop, acks))
            for i in range(STREAMS)
        ]
        await asyncio.sleep(min(1.0, scale.keepalive_window))  # streams opened and flowing
        pids = {m.name: m.pid for m in stack.members}
        cpu0 = {n: procstat.cpu_seconds(p) for n, p in pids.items()}
        acks0 = acks[0]
        clock = CpuClock()
        t0 = time.perf_counter()
        await asyncio.sleep(scale.keepalive_window)
        elapsed = time.perf_counter() - t0
        per_member = {n: 100.0 * (procstat.cpu_seconds(p) - cpu0[n]) / elapsed
                      for n, p in pids.items()}  # fmt: skip
        gen_cpu = clock.cores()
        renewed = (acks[0] - acks0) / elapsed
        stop.set()
        await asyncio.gather(*renewers, return_exceptions=True)
        await _each(stubs, ids, grant=False)
    finally:
        await close_all(chans)
    return Result(
        {
            "lease_keepalive_cpu": max(per_member.values()),
            "lease_keepalive_cpu_sum": sum(per_member.values()),
            "lease_keepalive_acked": renewed,
        },
        gen_cpu,
        extra={"cpu_percent_per_member": per_member, "renewals_acked_per_s": renewed,
               "leases": scale.leases_kept},
    )  # fmt: skip


SCENARIOS = [
    Scenario("lease grant+revoke @64", ("lease_grant_revoke",), grant_revoke),
    Scenario(
        "lease keep-alive cost",
        ("lease_keepalive_cpu", "lease_keepalive_cpu_sum", "lease_keepalive_acked"),
        keepalive_cost,
        warmup=False,
    ),
]
