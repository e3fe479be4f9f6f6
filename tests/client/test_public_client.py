"""The public client (`synod.client.Client` / `SyncClient`) against real processes.

A module-scoped environment: one Synod consensus member, two lock-service replicas
and one router replica (tests/support harnesses). The failover test starts its own
3-member LocalCluster. The examples in docs/client.md are executed as they are.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cluster_harness import LocalCluster, free_port, wait_until
from lock_harness import LockReplica, wait_for
from router_harness import RouterProc, Store

from synod.client import Client, LockLost, SyncClient, Unavailable
from synod.client.locks import LockSession
from synod.lock.v1 import lock_pb2, lock_pb2_grpc
from synod.router.v1 import router_pb2, router_pb2_grpc

DOCS = Path(__file__).resolve().parents[2] / "docs" / "client.md"


@dataclass
class Services:
    store: Store
    locks: list[LockReplica]
    router: RouterProc

    @property
    def endpoints(self) -> list[str]:
        return list(self.store.endpoints)

    @property
    def lock_endpoints(self) -> list[str]:
        return [r.address for r in self.locks]

    @property
    def router_endpoints(self) -> list[str]:
        return [self.router.address]


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    base = tmp_path_factory.mktemp("public-client")
    store = Store("synod", base).start()
    locks = [
        LockReplica(f"lock{i}", free_port(), free_port(), base / f"lock{i}.log", store.endpoints)
        for i in range(2)
    ]
    router = RouterProc("r", store.endpoints, base / "router.log")
    try:
        for r in locks:
            r.start()
        for r in locks:
            wait_until(r.serving, 30, f"{r.name} to serve")
        router.start()
        yield Services(store, locks, router)
    finally:
        router.stop()
        for r in locks:
            r.stop()
        store.stop()


async def try_acquire(stub: lock_pb2_grpc.LockStub, name: str, session_id: int) -> bool:
    """TryAcquire for another session: True if granted, False if the lock is held."""
    try:
        await stub.TryAcquire(lock_pb2.AcquireRequest(name=name, session_id=session_id), timeout=5)
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        return False
    await stub.Release(lock_pb2.ReleaseRequest(name=name, session_id=session_id), timeout=5)
    return True


# (1) locks -------------------------------------------------------------------------------------


async def test_lock_keeps_itself_alive_for_3_ttls_and_releases(svc: Services) -> None:
    ttl, name = 2, "held-3-ttls"
    async with (
        Client(svc.endpoints, lock_endpoints=svc.lock_endpoints) as c,
        LockSession(svc.lock_endpoints[1:], ttl=10) as other,
        grpc.aio.insecure_channel(svc.lock_endpoints[1]) as ch,
    ):
        stub = lock_pb2_grpc.LockStub(ch)
        async with c.lock(name, ttl=ttl) as lock:
            assert lock.token > 0 and lock.key
            rev = await lock.guarded_put("fenced/value", "v1")
            assert rev >= lock.token
            loop = asyncio.get_running_loop()
            end = loop.time() + 3 * ttl + 0.5
            tries = 0
            while loop.time() < end:
                assert not await try_acquire(stub, name, other.session_id), "lock was lost"
                tries += 1
                await asyncio.sleep(0.2)
            assert tries >= 10 and not lock.lost
            # still the same grant: the fenced write goes through
            assert await lock.guarded_put("fenced/value", "v2") > rev
            held = lock.held
        # released on exit: another session gets it at once; the old grant is fenced off
        assert await try_acquire(stub, name, other.session_id)
        with pytest.raises(LockLost):
            await held.guarded_put(c.etcd, "fenced/value", "stale")
        assert (await c.kv.get("fenced/value")).value == b"v2"  # type: ignore[union-attr]

        # released when the body raises
        with pytest.raises(RuntimeError, match="boom"):
            async with c.lock(name, ttl=ttl) as lock:
                assert not await try_acquire(stub, name, other.session_id)
                raise RuntimeError("boom")
        assert await try_acquire(stub, name, other.session_id)


# (2) the cached ring -----------------------------------------------------------------------------

KEYS = [f"user-{i}" for i in range(300)]


async def test_cached_ring_follows_membership_within_a_second(svc: Services) -> None:
    ring = "public-client"
    async with (
        Client(svc.endpoints, router_endpoints=svc.router_endpoints) as c,
        grpc.aio.insecure_channel(svc.router.address) as ch,
    ):
        stub = router_pb2_grpc.RouterStub(ch)

        async def register(mid: str) -> int:
            r = await stub.Register(
                router_pb2.RegisterRequest(
                    ring=ring, id=mid, address=f"10.0.0.{len(mid)}:80", ttl_seconds=60
                ),
                timeout=10,
            )
            return int(r.revision)

        for mid in ("a1", "a2", "a3"):
            rev = await register(mid)
        async with c.router(ring) as view:
            await view.wait_revision(rev, timeout=10)
            assert {view.lookup(k) for k in KEYS} == {"a1", "a2", "a3"}
            # The local answer is the router's answer.
            for k in KEYS[:20]:
                r = await stub.Lookup(
                    router_pb2.LookupRequest(ring=ring, key=k.encode(), replicas=2), timeout=5
                )
                assert view.lookup_n(k, 2) == [m.id for m in r.members]

            async def within(what: str, cond: Callable[[], object], acked_at: float) -> float:
                await wait_for(cond, 1.0 + 0.5, what, interval=0.01)
                elapsed = time.monotonic() - acked_at
                assert elapsed <= 1.2, f"{what} took {elapsed:.2f}s"
                return elapsed

            rev = await register("new")
            added = await within(
                "'new' in lookups",
                lambda: "new" in {view.lookup(k) for k in KEYS},
                time.monotonic(),
            )
            assert view.revision >= rev

            r = await stub.Deregister(router_pb2.DeregisterRequest(ring=ring, id="new"), timeout=10)
            acked = time.monotonic()
            assert r.existed
            removed = await within(
                "'new' gone from lookups",
                lambda: all("new" not in view.lookup_n(k, 3) for k in KEYS),
                acked,
            )
            assert view.revision >= r.revision and "new" not in view.members
            print(f"ring change seen after {added:.3f}s (add), {removed:.3f}s (remove)")


# (3) failover ---------------------------------------------------------------------------------


async def test_kv_keeps_working_when_its_member_is_killed(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, size=3, extra_args=["--unsafe-no-fsync"])
    try:
        await asyncio.to_thread(cluster.start)
        leader = await asyncio.to_thread(cluster.leader)
        # Talk to a follower first, so the kill does not also force an election.
        victim = next(m for m in cluster.members if m is not leader)
        order = [victim] + [m for m in cluster.members if m is not victim]
        async with Client([m.endpoint for m in order], timeout=10) as c:
            assert c.etcd.current_endpoint == victim.endpoint
            await c.kv.put("fo/before", "1")
            cluster.kill(victim)
            got = await c.kv.get("fo/before")  # retried on the next member
            assert got is not None and got.value == b"1"
            assert c.etcd.current_endpoint != victim.endpoint
            rev = await c.kv.put("fo/after", "2")
            assert [kv.key for kv in await c.kv.range("fo/", prefix=True)] == [
                b"fo/after",
                b"fo/before",
            ]
            assert (await c.kv.get("fo/after")).mod_revision == rev  # type: ignore[union-attr]
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_put_is_not_retried_but_says_whether_it_may_have_applied(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with Client([dead], timeout=1.0) as c:
        with pytest.raises(Unavailable) as ei:
            await c.kv.put("k", "v")
        assert ei.value.maybe_applied is False


# (4) the synchronous wrapper ---------------------------------------------------------------------


def test_sync_client_from_plain_code(svc: Services) -> None:
    with SyncClient(svc.endpoints, lock_endpoints=svc.lock_endpoints) as c:
        rev = c.kv.put("sync/a", "1")
        c.kv.put("sync/b", b"2")
        kv = c.kv.get("sync/a")
        assert kv is not None and kv.value == b"1" and kv.mod_revision == rev
        assert [k.value for k in c.kv.range("sync/", prefix=True)] == [b"1", b"2"]
        assert c.kv.delete("sync/", prefix=True) == 2 and c.kv.get("sync/a") is None

        lease = c.leases.grant(30)
        assert 0 < c.leases.time_to_live(lease.id) <= 30
        c.leases.revoke(lease.id)
        assert c.leases.time_to_live(lease.id) == -1

        stub = svc.locks[0].stub()
        with c.lock("sync-lock", ttl=2) as lock:
            assert lock.token > 0
            time.sleep(2.5)  # longer than the TTL: the background loop keeps it alive
            holders = stub.Inspect(lock_pb2.InspectRequest(name="sync-lock"), timeout=5).holders
            assert [h.fencing_token for h in holders] == [lock.token]
            lock.guarded_put("sync/fenced", "x")
        assert not stub.Inspect(lock_pb2.InspectRequest(name="sync-lock"), timeout=5).holders
        assert c.kv.get("sync/fenced") is not None

        with pytest.raises(ValueError), c.lock("sync-lock", ttl=2):
            raise ValueError
        assert not stub.Inspect(lock_pb2.InspectRequest(name="sync-lock"), timeout=5).holders


# the examples in docs/client.md -------------------------------------------------------------------


def doc_examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)


def test_docs_examples_run(svc: Services) -> None:
    examples = doc_examples()
    assert len(examples) >= 2
    # The router example needs members in ring "web".
    stub = svc.router.stub()
    for i in range(3):
        stub.Register(
            router_pb2.RegisterRequest(
                ring="web", id=f"web-{i}", address=f"10.1.0.{i}:80", ttl_seconds=60
            ),
            timeout=10,
        )
    for code in examples:
        env = {
            "ENDPOINTS": svc.endpoints,
            "LOCK_ENDPOINTS": svc.lock_endpoints,
            "ROUTER_ENDPOINTS": svc.router_endpoints,
            "__name__": "__docs__",
        }
        exec(compile(code, str(DOCS), "exec"), env)  # noqa: S102 - our own documentation
