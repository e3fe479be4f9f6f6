"""Failures: a paused holder, a killed lock-service replica, a killed consensus leader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from lock_harness import (
    ELECTION_TIMEOUT_S,
    FencedCounter,
    LockEnv,
    Tracker,
    leader_of,
    spawn_holder,
    wait_for,
)

from synod.client.locks import HeldLock, LockSession
from synod.lock.v1 import lock_pb2, lock_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def read_json_line(p: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    assert p.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), timeout)
    assert line, f"holder process exited (rc {p.poll()}) without a line"
    out: dict[str, object] = json.loads(line)
    return out


async def test_paused_holder_loses_lock_and_its_write_is_fenced(
    lock_env: LockEnv, tmp_path: Path
) -> None:
    name, ttl = "expiry", 2
    p = spawn_holder(lock_env, name, ttl, tmp_path / "holder.log")
    try:
        old = await read_json_line(p, 20)
        async with lock_env.session(ttl=10) as s:
            waiter = asyncio.create_task(s.acquire(name, timeout=30))
            await lock_env.wait_waiters(name, 1)
            os.kill(p.pid, signal.SIGSTOP)  # keepalives stop; the session runs out
            stopped = time.monotonic()
            held = await waiter
            elapsed = time.monotonic() - stopped
            bound = ttl + 1 + ELECTION_TIMEOUT_S
            print(f"{lock_env.backend}: next holder granted {elapsed:.2f}s after SIGSTOP")
            assert elapsed <= bound, f"granted {elapsed:.2f}s after the pause (bound {bound}s)"
            assert held.token > int(old["token"])  # type: ignore[call-overload]

            os.kill(p.pid, signal.SIGCONT)
            assert p.stdin is not None
            p.stdin.write("put\n")
            p.stdin.flush()
            result = await read_json_line(p, 20)
            assert result["put"] == "lost", result  # the stale holder's write is rejected
            async with lock_env.etcd() as etcd:
                await held.guarded_put(etcd, f"{name}-resource", "from-new-holder")
                r = await etcd.get(f"{name}-resource")
                assert r.kvs[0].value == b"from-new-holder"
            await s.release(held)
        assert p.wait(timeout=15) == 0, (tmp_path / "holder.log").read_text()
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()


async def test_replica_killed_with_waiters_clients_fail_over(lock_env: LockEnv) -> None:
    name, n = "failover", 6
    # The holder and every waiter talk to the replica that dies.
    holder = lock_env.session(first=0)
    waiters = [lock_env.session(first=0) for _ in range(n)]
    for s in [holder, *waiters]:
        await s.open()
    tracker = Tracker()
    try:
        async with lock_env.etcd() as etcd:
            counter = FencedCounter(etcd, f"{name}-counter")
            first = await holder.acquire(name)

            async def wait_turn(s: LockSession) -> None:
                held = await s.acquire(name, timeout=30)
                tracker.enter(held)
                await counter.increment(held)
                tracker.leave()
                await s.release(held)

            tasks = [asyncio.create_task(wait_turn(s)) for s in waiters]
            await lock_env.wait_waiters(name, n)
            survivor = lock_env.replicas[1]
            waits_before = survivor.metric("synod_lock_waits")
            lock_env.replicas[0].kill(signal.SIGKILL)
            # Every waiter's Acquire fails with UNAVAILABLE, is retried on the
            # survivor, and finds its own place there: still n waiters, not 2n.
            await wait_for(
                lambda: survivor.metric("synod_lock_waits") >= waits_before + n,
                20,
                f"{n} retried waits on the surviving replica",
            )
            await lock_env.wait_waiters(name, n)
            assert not any(t.done() for t in tasks)
            await holder.release(first)  # fails over too
            await asyncio.gather(*tasks)
            count, _, _ = await counter.read()
        assert count == n == counter.accepted
        assert tracker.tokens == sorted(tracker.tokens) and tracker.tokens[0] > first.token
        line = await lock_env.inspect(name, replica=1)
        assert not line.holders and not line.waiters
    finally:
        for s in [holder, *waiters]:
            await s.close()


async def _acquire_retrying(s: LockSession, name: str, deadline: float) -> HeldLock:
    while True:
        try:
            return await s.acquire(name, timeout=5)
        except grpc.aio.AioRpcError as e:
            if e.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _release_retrying(s: LockSession, held: HeldLock, deadline: float) -> None:
    retried = False
    while True:
        try:
            await s.release(held)
            return
        except grpc.aio.AioRpcError as e:
            if retried and e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return  # an earlier attempt whose answer we lost did release it
            if e.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            retried = True
            await asyncio.sleep(0.1)


async def test_consensus_leader_killed_under_lock_traffic(lock_env3: LockEnv) -> None:
    env, name, clients = lock_env3, "leader-kill", 6
    tracker = Tracker()
    sessions = [env.session(first=i % 2, ttl=10) for i in range(clients)]
    for s in sessions:
        await s.open()
    stop = asyncio.Event()
    deadline = time.monotonic() + 60
    try:
        async with env.etcd() as etcd:
            counter = FencedCounter(etcd, f"{name}-counter")

            async def client(s: LockSession) -> None:
                while not stop.is_set():
                    held = await _acquire_retrying(s, name, deadline)
                    tracker.enter(held)
                    try:
                        await counter.increment(held, deadline=30)
                    finally:
                        tracker.leave()
                    await _release_retrying(s, held, deadline)

            tasks = [asyncio.create_task(client(s)) for s in sessions]
            try:
                await wait_for(lambda: counter.accepted >= 30, 30, "30 increments before the kill")
                victim = leader_of(env.cluster)
                env.cluster.kill(victim)
                at_kill = counter.accepted
                killed = time.monotonic()
                await wait_for(
                    lambda: counter.accepted >= at_kill + 30, 40, "30 increments after the kill"
                )
                print(
                    f"{env.backend}: {at_kill} increments before the leader died, "
                    f"30 more {time.monotonic() - killed:.2f}s after"
                )
            finally:
                stop.set()
                results = await asyncio.gather(*tasks, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, errors
            count, _, _ = await counter.read()
        assert count == counter.accepted
        assert tracker.max_exclusive == 1
        assert tracker.tokens == sorted(tracker.tokens)
        assert len(set(tracker.tokens)) == len(tracker.tokens)
    finally:
        for s in sessions:
            await s.close()


async def test_sigterm_sends_waiters_unavailable_and_they_keep_their_place(
    lock_env: LockEnv,
) -> None:
    name = "sigterm"
    holder_s = lock_env.session(first=1)
    waiter_s = lock_env.session(first=0)
    for s in (holder_s, waiter_s):
        await s.open()
    try:
        first = await holder_s.acquire(name)
        stopping = lock_env.replicas[0]
        # A raw call on the replica that stops, so we see exactly what it answers.
        async with grpc.aio.insecure_channel(stopping.address) as ch:
            stub = lock_pb2_grpc.LockStub(ch)
            req = lock_pb2.AcquireRequest(name=name, session_id=waiter_s.session_id)
            call = stub.Acquire(req, timeout=30)
            await lock_env.wait_waiters(name, 1)
            assert stopping.proc is not None
            stopping.proc.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await call
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (ei.value.details() or "")
        assert stopping.proc.wait(timeout=15) == 0
        # Its place in line outlives the replica (it belongs to the session), so
        # the retry on the other replica waits where it was and then gets it.
        line = await lock_env.inspect(name, replica=1)
        assert [w.session_id for w in line.waiters] == [waiter_s.session_id]
        retry = asyncio.create_task(waiter_s.acquire(name, timeout=20))
        await holder_s.release(first)
        held = await retry
        assert held.token > first.token
        await waiter_s.release(held)
    finally:
        for s in (holder_s, waiter_s):
            await s.close()
