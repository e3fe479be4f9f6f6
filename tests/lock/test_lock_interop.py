"""etcd compatibility (etcdctl lock, v3lockpb.Lock) and bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import grpc
import pytest
from lock_harness import LockEnv

from synod.etcd.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from synod.lock.v1 import lock_pb2, lock_pb2_grpc


def etcdctl_lock(env: LockEnv, name: str, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["etcdctl", f"--endpoints={','.join(env.etcd_endpoints)}", "lock", name, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, ETCDCTL_API="3"),
    )


async def test_etcdctl_lock_waits_for_the_lock_service(lock_env: LockEnv) -> None:
    name = "interop-a"
    async with lock_env.session() as s:
        held = await s.acquire(name)
        p = etcdctl_lock(lock_env, name, "echo", "etcdctl-got-it")
        try:
            await lock_env.wait_waiters(name, 1)  # etcdctl's key, in line behind ours
            assert p.poll() is None, p.communicate()
            await s.release(held)
            out, err = await asyncio.to_thread(p.communicate, timeout=20)
            assert p.returncode == 0, err
            assert "etcdctl-got-it" in out
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


async def test_lock_service_waits_for_etcdctl_lock(lock_env: LockEnv) -> None:
    name = "interop-b"
    p = etcdctl_lock(lock_env, name)
    try:
        assert p.stdout is not None
        key = (await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 20)).strip()
        assert key.startswith(f"{name}/"), key  # etcdctl prints the key once it holds the lock
        async with lock_env.session() as s:
            assert s._stub is not None
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s._stub.TryAcquire(
                    lock_pb2.AcquireRequest(name=name, session_id=s.session_id), timeout=5
                )
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "held by" in (e.value.details() or "")
            waiter = asyncio.create_task(s.acquire(name, timeout=30))
            await lock_env.wait_waiters(name, 1)
            line = await lock_env.inspect(name)
            assert [h.key for h in line.holders] == [key.encode()]
            assert not waiter.done()
            p.send_signal(signal.SIGINT)  # etcdctl unlocks on SIGINT
            held = await waiter
            assert held.token > line.holders[0].fencing_token
            await s.release(held)
        await asyncio.to_thread(p.wait, 15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_v3lockpb_lock_and_unlock(lock_env: LockEnv) -> None:
    name = b"v3"
    async with lock_env.etcd() as etcd:
        l1, _ = await etcd.grant(30)
        l2, _ = await etcd.grant(30)
        async with grpc.aio.insecure_channel(lock_env.replicas[0].address) as ch:
            stub = v3lock_pb2_grpc.LockStub(ch)
            r1 = await stub.Lock(v3lock_pb2.LockRequest(name=name, lease=l1), timeout=10)
            assert r1.key == name + b"/" + format(l1, "x").encode()
            second = asyncio.ensure_future(
                stub.Lock(v3lock_pb2.LockRequest(name=name, lease=l2), timeout=30)
            )
            await lock_env.wait_waiters("v3", 1)
            assert not second.done()
            await stub.Unlock(v3lock_pb2.UnlockRequest(key=r1.key), timeout=10)
            r2 = await second
            assert r2.key == name + b"/" + format(l2, "x").encode()
            assert r2.header.revision > r1.header.revision
            got = await etcd.get(r2.key)
            assert got.kvs and got.kvs[0].lease == l2
            await stub.Unlock(v3lock_pb2.UnlockRequest(key=r2.key), timeout=10)
            assert not (await etcd.get(name + b"/", prefix=True)).kvs
        await etcd.revoke(l1)
        await etcd.revoke(l2)


async def test_bad_input_gets_clear_status_and_replica_keeps_serving(lock_env: LockEnv) -> None:
    async with grpc.aio.insecure_channel(lock_env.replicas[0].address) as ch:
        stub = lock_pb2_grpc.LockStub(ch)

        async def status(call: object) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call  # type: ignore[misc]
            return e.value.code(), e.value.details() or ""

        code, msg = await status(stub.OpenSession(lock_pb2.OpenSessionRequest(ttl_seconds=-5)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "ttl" in msg, msg
        sid = (await stub.OpenSession(lock_pb2.OpenSessionRequest(ttl_seconds=10))).session_id

        code, msg = await status(stub.Acquire(lock_pb2.AcquireRequest(name="", session_id=sid)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in msg, msg

        unknown = 0x1234567
        code, msg = await status(
            stub.Acquire(lock_pb2.AcquireRequest(name="x", session_id=unknown), timeout=5)
        )
        assert code == grpc.StatusCode.NOT_FOUND and format(unknown, "x") in msg, msg

        code, msg = await status(stub.Acquire(lock_pb2.AcquireRequest(name="x", session_id=0)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "session" in msg, msg

        code, msg = await status(stub.Release(lock_pb2.ReleaseRequest(name="x", session_id=sid)))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no lock held" in msg, msg

        code, msg = await status(
            stub.CloseSession(lock_pb2.CloseSessionRequest(session_id=unknown))
        )
        assert code == grpc.StatusCode.NOT_FOUND and "does not exist" in msg, msg

        code, msg = await status(
            stub.Acquire(
                lock_pb2.AcquireRequest(name="x", session_id=sid, mode=lock_pb2.SHARED, limit=3)
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit" in msg, msg

        # Still serving: a real acquire / release round trip works.
        r = await stub.Acquire(lock_pb2.AcquireRequest(name="x", session_id=sid), timeout=10)
        assert r.fencing_token > 0
        v = await stub.Validate(lock_pb2.ValidateRequest(name="x", fencing_token=r.fencing_token))
        assert v.held and v.holder.session_id == sid
        await stub.Release(lock_pb2.ReleaseRequest(name="x", session_id=sid), timeout=10)
        v = await stub.Validate(lock_pb2.ValidateRequest(name="x", fencing_token=r.fencing_token))
        assert not v.held
        await stub.CloseSession(lock_pb2.CloseSessionRequest(session_id=sid))
    assert lock_env.replicas[0].alive() and lock_env.replicas[0].serving()
    assert lock_env.replicas[0].metric("synod_lock_sessions_opened") == 1
