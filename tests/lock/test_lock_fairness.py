"""Fairness (FIFO by create revision), shared/exclusive rules, semaphores, and no herd."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from lock_harness import LockEnv, Tracker, wait_for

from synod.client.locks import HeldLock, LockSession
from synod.lock.v1 import lock_pb2


async def open_sessions(env: LockEnv, n: int) -> list[LockSession]:
    sessions = [env.session(first=i % 2) for i in range(n)]
    for s in sessions:
        await s.open()
    return sessions


async def close_sessions(sessions: list[LockSession]) -> None:
    await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def test_fifo_order_under_contention(lock_env: LockEnv) -> None:
    name = "fifo"
    holder, *waiters = await open_sessions(lock_env, 9)
    try:
        first = await holder.acquire(name)
        order: list[int] = []
        tokens: list[int] = [first.token]

        async def wait_turn(i: int, s: LockSession) -> None:
            held = await s.acquire(name, timeout=30)
            order.append(i)
            tokens.append(held.token)
            await s.release(held)

        tasks = []
        for i, s in enumerate(waiters):
            tasks.append(asyncio.create_task(wait_turn(i, s)))
            # The next waiter joins only once this one is in line: a known order.
            await lock_env.wait_waiters(name, i + 1)
        line = await lock_env.inspect(name)
        assert [w.session_id for w in line.waiters] == [s.session_id for s in waiters]
        await holder.release(first)
        await asyncio.gather(*tasks)
        assert order == list(range(len(waiters)))
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    finally:
        await close_sessions([holder, *waiters])


async def test_shared_and_exclusive_interleaving(lock_env: LockEnv) -> None:
    """Readers share; a waiting writer holds back later readers; writers exclude everyone."""
    name = "rw"
    r1, r2, w1, r3, r4 = await open_sessions(lock_env, 5)
    try:
        h1 = await r1.acquire(name, shared=True, timeout=10)
        h2 = await r2.acquire(name, shared=True, timeout=10)  # readers overlap
        line = await lock_env.inspect(name)
        assert {h.session_id for h in line.holders} == {r1.session_id, r2.session_id}

        writer = asyncio.create_task(w1.acquire(name, timeout=30))
        await lock_env.wait_waiters(name, 1)
        reader3 = asyncio.create_task(r3.acquire(name, shared=True, timeout=30))
        await lock_env.wait_waiters(name, 2)  # behind the writer, though only readers hold
        with pytest.raises(grpc.aio.AioRpcError) as e:
            assert r4._stub is not None
            await r4._stub.TryAcquire(
                lock_pb2.AcquireRequest(name=name, session_id=r4.session_id, mode=lock_pb2.SHARED)
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        await r1.release(h1)
        line = await lock_env.inspect(name)
        assert [h.session_id for h in line.holders] == [r2.session_id]
        assert [w.session_id for w in line.waiters] == [w1.session_id, r3.session_id]
        assert not writer.done()

        await r2.release(h2)
        hw = await writer  # the writer goes before the reader that came after it
        assert hw.token > max(h1.token, h2.token)
        line = await lock_env.inspect(name)
        assert [h.session_id for h in line.holders] == [w1.session_id]
        assert [w.session_id for w in line.waiters] == [r3.session_id]
        assert not reader3.done()

        await w1.release(hw)
        h3 = await reader3
        assert h3.token > hw.token
        await r3.release(h3)
    finally:
        await close_sessions([r1, r2, w1, r3, r4])


async def test_shared_exclusive_random_mix_never_overlaps(lock_env: LockEnv) -> None:
    name = "rw-mix"
    tracker = Tracker()
    sessions = await open_sessions(lock_env, 8)
    rng = random.Random(5)
    plans = [[rng.random() < 0.6 for _ in range(10)] for _ in sessions]
    try:

        async def client(s: LockSession, plan: list[bool]) -> None:
            for shared in plan:
                held = await s.acquire(name, shared=shared, timeout=30)
                tracker.enter(held, shared=shared)
                await asyncio.sleep(0.005)  # stay inside so overlaps can show
                tracker.leave(shared=shared)
                await s.release(held)

        await asyncio.gather(*(client(s, p) for s, p in zip(sessions, plans, strict=True)))
    finally:
        await close_sessions(sessions)
    assert tracker.max_exclusive == 1
    assert tracker.max_shared >= 2, "readers never overlapped"


async def test_semaphore_never_above_limit(lock_env: LockEnv) -> None:
    name, limit = "sem", 3
    tracker = Tracker(limit=limit)
    sessions = await open_sessions(lock_env, 8)
    peak_seen_by_inspect = 0
    try:

        async def client(s: LockSession) -> None:
            nonlocal peak_seen_by_inspect
            for _ in range(6):
                held: HeldLock = await s.acquire(name, limit=limit, timeout=30)
                tracker.enter(held)
                line = await lock_env.inspect(name)
                peak_seen_by_inspect = max(peak_seen_by_inspect, len(line.holders))
                await asyncio.sleep(0.01)
                tracker.leave()
                await s.release(held)

        await asyncio.gather(*(client(s) for s in sessions))
    finally:
        await close_sessions(sessions)
    # Safety: never more than `limit` holders. (How close the peak gets to the
    # limit depends on scheduling on a busy machine, so only require overlap.)
    assert 2 <= tracker.max_exclusive <= limit
    assert peak_seen_by_inspect <= limit


async def _wakeups_per_release(env: LockEnv, name: str, waiters_n: int) -> float:
    holder, *waiters = await open_sessions(env, waiters_n + 1)
    try:
        first = await holder.acquire(name)
        done: list[int] = []

        async def wait_turn(s: LockSession) -> None:
            held = await s.acquire(name, timeout=60)
            done.append(held.token)
            await s.release(held)

        waits_at_start = env.metric("synod_lock_waits")
        tasks = [asyncio.create_task(wait_turn(s)) for s in waiters]
        await env.wait_waiters(name, waiters_n, timeout=30)
        # A waiter's key is in line a moment before its service replica counts the
        # wait: let every one of them settle into waiting first.
        await wait_for(
            lambda: env.metric("synod_lock_waits") == waits_at_start + waiters_n,
            30,
            f"{waiters_n} waits counted",
        )
        before = env.metric("synod_lock_wakeups")
        waits_before = env.metric("synod_lock_waits")
        await holder.release(first)
        await asyncio.gather(*tasks)
        after = env.metric("synod_lock_wakeups")
        assert env.metric("synod_lock_waits") == waits_before  # counted when they queued
        assert done == sorted(done) and len(done) == waiters_n
    finally:
        await close_sessions([holder, *waiters])
    # Releases that hand the lock on: the holder's and every waiter's but the last.
    return (after - before) / waiters_n


async def test_wakeups_per_release_constant_as_waiters_grow(lock_env: LockEnv) -> None:
    few = await _wakeups_per_release(lock_env, "herd-2", 2)
    many = await _wakeups_per_release(lock_env, "herd-50", 50)
    print(f"wake-ups per release: 2 waiters {few:.2f}, 50 waiters {many:.2f}")
    assert few <= 2 and many <= 2, (few, many)
    assert many <= few + 1, (few, many)


async def test_cancelled_or_try_acquire_waiter_leaves_no_trace(lock_env: LockEnv) -> None:
    name = "giving-up"
    holder, quitter, trier = await open_sessions(lock_env, 3)
    try:
        held = await holder.acquire(name)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await quitter.acquire(name, timeout=1.0)
        assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # Its place is given up at once: nobody is left in line behind the holder.
        await lock_env.wait_waiters(name, 0, timeout=1.0)
        assert trier._stub is not None
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await trier._stub.TryAcquire(
                lock_pb2.AcquireRequest(name=name, session_id=trier.session_id), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        line = await lock_env.inspect(name)
        assert [h.session_id for h in line.holders] == [holder.session_id] and not line.waiters
        await holder.release(held)
        # Nobody blocks the next acquisition.
        nxt = await quitter.acquire(name, timeout=5)
        assert nxt.token > held.token
        await quitter.release(nxt)
    finally:
        await close_sessions([holder, quitter, trier])
