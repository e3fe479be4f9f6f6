"""Mutual exclusion and fencing under contention, across two lock-service replicas."""

from __future__ import annotations

import asyncio
import os

from lock_harness import FencedCounter, LockEnv, Tracker

from synod.client.locks import LockSession

CLIENTS = 16
ROUNDS = int(os.environ.get("SYNOD_LOCK_ROUNDS", "50"))


async def test_contended_mutex_fenced_counter_exact(lock_env: LockEnv) -> None:
    """16 clients x ROUNDS acquisitions of one name: no overlap, tokens rise, counter exact."""
    name = "contended"
    tracker = Tracker()
    async with lock_env.etcd() as etcd:
        counter = FencedCounter(etcd, "contended-counter")
        sessions = [lock_env.session(first=i % 2) for i in range(CLIENTS)]
        for s in sessions:
            await s.open()
        try:

            async def client(s: LockSession) -> None:
                for _ in range(ROUNDS):
                    held = await s.acquire(name, timeout=30)
                    tracker.enter(held)
                    try:
                        await counter.increment(held)
                    finally:
                        tracker.leave()
                    await s.release(held)

            await asyncio.gather(*(client(s) for s in sessions))
        finally:
            for s in sessions:
                await s.close()
        n, _, _ = await counter.read()
    total = CLIENTS * ROUNDS
    assert n == total == counter.accepted
    assert tracker.max_exclusive == 1
    assert tracker.tokens == sorted(tracker.tokens)
    assert len(set(tracker.tokens)) == total, "a fencing token was handed out twice"
    # Both replicas served grants.
    grants = [r.metric("synod_lock_grants") for r in lock_env.replicas]
    assert sum(grants) >= total and all(g > 0 for g in grants), grants
