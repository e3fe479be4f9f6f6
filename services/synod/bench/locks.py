"""Locks through our lock service, which runs on Synod in one stack and on etcd in the other.

Uncontended: 16 sessions, each acquiring and releasing its own name in a loop.
Handoff: 8 sessions queue on one name; each releases as soon as it holds the
lock, and the handoff is the time from that Release going out to the next
holder's Acquire returning.
"""

from __future__ import annotations

import asyncio
import itertools
import time

from synod.bench.clusters import Stack
from synod.bench.loadgen import CpuClock, closed_loop, percentile
from synod.bench.scenario import Result, Scale, Scenario
from synod.client.locks import LockSession

UNCONTENDED = 16
CONTENDERS = 8
_round = itertools.count()  # fresh lock names per run: no leftovers from the last one


async def _sessions(stack: Stack, n: int) -> list[LockSession]:
    eps = stack.lock_endpoints
    # Spread over the replicas; each session fails over to the others.
    sessions = [LockSession(eps[i % len(eps):] + eps[:i % len(eps)], ttl=30) for i in range(n)]
    await asyncio.gather(*(s.open() for s in sessions))
    return sessions


async def _close(sessions: list[LockSession]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def uncontended(stack: Stack, scale: Scale, warm: bool) -> Result:
    r = next(_round)
    sessions = await _sessions(stack, UNCONTENDED)
    try:

        async def op(w: int, k: int) -> None:
            held = await sessions[w].acquire(f"bench/u{r}/{w}", timeout=10)
            await sessions[w].release(held)

        win = await closed_loop(op, UNCONTENDED, scale.warmup_window if warm else scale.window)
    finally:
        await _close(sessions)
    return Result({"lock_cycles": win.rate}, win.gen_cpu, win.errors)


async def handoff(stack: Stack, scale: Scale, warm: bool) -> Result:
    name = f"bench/h{next(_round)}"
    sessions = await _sessions(stack, CONTENDERS)
    handoffs: list[float] = []
    last_release: list[tuple[int, float]] = []  # (by whom, when)
    seconds = scale.warmup_window if warm else scale.window
    try:

        async def contender(w: int) -> None:
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop:
                held = await sessions[w].acquire(name, timeout=30)
                now = time.perf_counter()
                if last_release and last_release[-1][0] != w:
                    handoffs.append((now - last_release[-1][1]) * 1000.0)
                last_release.append((w, time.perf_counter()))
                await sessions[w].release(held)

        clock = CpuClock()
        await asyncio.gather(*(contender(w) for w in range(CONTENDERS)))
        gen_cpu = clock.cores()
    finally:
        await _close(sessions)
    return Result(
        {"lock_handoff_p50": percentile(handoffs, 0.5),
         "lock_handoff_p99": percentile(handoffs, 0.99)},
        gen_cpu, samples={"lock_handoff": handoffs}, extra={"handoffs": len(handoffs)},
    )  # fmt: skip


SCENARIOS = [
    Scenario("locks uncontended", ("lock_cycles",), uncontended),
    Scenario("lock handoff, 8 contenders", ("lock_handoff_p50", "lock_handoff_p99"), handoff),
]
