"""Failover: stop the leader, time until a write succeeds through another member.

Two ways to lose a leader:

- **kill -9**: the process dies and the kernel closes its connections. The
  followers' peer streams to it end at once; Synod's followers then campaign
  within two heartbeats (docs/consensus.md, "Failover"); etcd's followers
  wait for their election timeout.
- **paused** (SIGSTOP): the process hangs with its connections open, as a
  machine that froze or a partition would look. Only the election timeout
  tells, for both systems. The old leader is resumed (SIGCONT) after the write.

The clock starts just before the signal. The writer retries a Put against the
surviving members in turn, each attempt with a short deadline
(FAILOVER_ATTEMPT_S) and a pause after a failure (RETRY_PAUSE_S), so the
figure is the election plus the first commit, give or take one attempt. Each
round first restarts a killed member on its data and waits until every
member knows a leader again; the last kill -9 round leaves it dead, which is
why failover runs last.
"""

from __future__ import annotations

import asyncio
import signal
import time

import grpc

from synod.bench.clusters import Stack
from synod.bench.loadgen import CpuClock, channels, close_all
from synod.bench.scenario import Result, Scale, Scenario
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

FAILOVER_ATTEMPT_S = 0.2
RETRY_PAUSE_S = 0.01  # also the resolution of the figure, with the attempt's own time


async def failover(stack: Stack, scale: Scale, warm: bool) -> Result:
    return await _failover(stack, paused=False)


async def failover_paused(stack: Stack, scale: Scale, warm: bool) -> Result:
    return await _failover(stack, paused=True)


async def _failover(stack: Stack, paused: bool) -> Result:
    # The member killed by the last round comes back first (on its data, as an
    # operator's supervisor would restart it), and the cluster settles.
    for m in stack.members:
        if not m.alive():
            m.start()
    await asyncio.to_thread(stack.wait_members, 120.0)
    leader = await asyncio.to_thread(stack.leader)
    others = [m for m in stack.members if m is not leader]
    chans = channels([m.address for m in others])
    try:
        await asyncio.gather(*(c.channel_ready() for c in chans))
        stubs = [rpc_pb2_grpc.KVStub(c) for c in chans]
        req = rpc_pb2.PutRequest(key=b"failover", value=b"v")
        await stubs[0].Put(req, timeout=10)  # the connections are warm and the cluster writes
        clock = CpuClock()
        t0 = time.perf_counter()
        if paused:
            leader.send_signal(signal.SIGSTOP)
        else:
            leader.kill()
        attempts = 0
        try:
            while True:
                try:
                    await stubs[attempts % len(stubs)].Put(req, timeout=FAILOVER_ATTEMPT_S)
                    break
                except grpc.aio.AioRpcError:
                    attempts += 1
                    # A member without a leader may answer at once: pace the retries as a
                    # client would, so they do not compete with the election for the CPU.
                    await asyncio.sleep(RETRY_PAUSE_S)
                    if time.perf_counter() - t0 > 60:
                        raise TimeoutError(
                            f"{stack.system}: no write 60 s after the leader stopped"
                        ) from None
        finally:
            if paused:
                leader.send_signal(signal.SIGCONT)
        took = (time.perf_counter() - t0) * 1000.0
        gen_cpu = clock.cores()
    finally:
        await close_all(chans)
    key = "failover_paused" if paused else "failover"
    return Result({key: took}, gen_cpu, extra={"stopped": leader.name,
                                               "failed_attempts": attempts})  # fmt: skip


SCENARIOS = [
    # Paused first: the kill -9 rounds leave a member dead at the end.
    Scenario(
        "failover paused",
        ("failover_paused",),
        failover_paused,
        warmup=False,
        repeat=lambda scale, _r: scale.failovers,
    ),
    Scenario(
        "failover", ("failover",), failover, warmup=False, repeat=lambda scale, _r: scale.failovers
    ),
]
