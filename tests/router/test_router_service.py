"""The Router service against real processes: two router replicas on a Synod consensus
cluster and on a real etcd (parametrized), backends registered through the Router API
and directly at the documented key with an etcd client."""

from __future__ import annotations

import functools
import json
import time

import grpc
from router_harness import Routers, routers, status_of, store  # noqa: F401

from synod.client.public import ring_from_state
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.router.v1 import router_pb2

KEYS = [f"key-{i}".encode() for i in range(10_000)]


def batch(r: object, ring: str, replicas: int = 1) -> tuple[int, list[list[str]]]:
    resp = r.stub().LookupBatch(  # type: ignore[attr-defined]
        router_pb2.LookupBatchRequest(ring=ring, keys=KEYS, replicas=replicas), timeout=20
    )
    ids = [m.id for m in resp.members]
    return resp.revision, [[ids[j] for j in p.members] for p in resp.placements]


def register(rs: Routers, ring: str, id: str, address: str, ttl: int = 120) -> int:
    resp = rs.a.stub().Register(
        router_pb2.RegisterRequest(ring=ring, id=id, address=address, ttl_seconds=ttl), timeout=10
    )
    return int(resp.revision)


def test_replicas_agree_and_follow_membership(routers: Routers) -> None:  # noqa: F811
    rs, ring = routers, "agree"
    for i in range(5):
        register(rs, ring, f"node-{i}", f"127.0.1.{i}:80")
    # A backend in another language registers itself with any etcd client, at the
    # documented key, with a lease, without the router.
    with grpc.insecure_channel(rs.store.endpoints[0]) as ch:
        lease = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=120)).ID
        value = json.dumps({"address": "127.0.1.9:80", "weight": 2, "metadata": {"az": "b"}})
        put = rpc_pb2_grpc.KVStub(ch).Put(
            rpc_pb2.PutRequest(
                key=f"test/router/{ring}/members/direct".encode(), value=value.encode(), lease=lease
            )
        )
    ids = {f"node-{i}" for i in range(5)} | {"direct"}
    rev = rs.wait_members(ring, ids)  # the table a router wrote after seeing the put
    assert rev > put.header.revision
    rs.wait_revision(rev)
    rev_a, before_a = batch(rs.a, ring, replicas=3)
    rev_b, before_b = batch(rs.b, ring, replicas=3)
    assert rev_a == rev_b == rev
    assert before_a == before_b
    assert all(len(set(p)) == 3 for p in before_a)

    # GetRing gives everything needed to compute the same placement locally.
    state = rs.b.ring(ring)
    assert state.params.algorithm == "synod-slot-table-v2"
    assert {m.id: m.weight for m in state.members}["direct"] == 2
    assert dict(next(m for m in state.members if m.id == "direct").metadata) == {"az": "b"}
    local = ring_from_state(state)
    assert local is not None
    assert [local.lookup_n(k, 3) for k in KEYS] == before_a
    # The table is the one stored in consensus, at the documented key.
    with grpc.insecure_channel(rs.store.endpoints[0]) as ch:
        stored = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=f"test/router/{ring}/table".encode())
        )
    assert stored.kvs[0].value == state.table

    # A membership change: both replicas follow it and agree again.
    gone = before_a[0][0]
    resp = rs.b.stub().Deregister(router_pb2.DeregisterRequest(ring=ring, id=gone), timeout=10)
    assert resp.existed
    rs.wait_members(ring, ids - {gone})
    rs.wait_revision(resp.revision)
    rev_a, after_a = batch(rs.a, ring)
    rev_b, after_b = batch(rs.b, ring)
    assert rev_a == rev_b == resp.revision and after_a == after_b
    # Only the removed member's keys moved.
    moved = [(b[0], a[0]) for b, a in zip(before_a, after_a, strict=True) if b[0] != a[0]]
    assert moved and all(old == gone for old, _ in moved)


def test_killed_backend_leaves_within_ttl(routers: Routers) -> None:  # noqa: F811
    rs, ring = routers, "kill9"
    backends = [rs.backend(f"be-{i}", ring, ttl=2) for i in range(3)]
    rs.wait_members(ring, {b.id for b in backends})
    _, before = batch(rs.b, ring)
    victim = backends[1]
    killed_at = time.monotonic()
    victim.kill()  # SIGKILL: no deregistration, keepalives just stop
    rs.wait_members(ring, {backends[0].id, backends[2].id}, timeout=victim.granted_ttl + 5)
    elapsed = time.monotonic() - killed_at
    assert elapsed <= victim.granted_ttl + 1.0, f"left after {elapsed:.2f}s"
    rev_a, after_a = batch(rs.a, ring)
    rev_b, after_b = batch(rs.b, ring)
    assert after_a == after_b
    moved = [(b[0], a[0]) for b, a in zip(before, after_a, strict=True) if b[0] != a[0]]
    owned = sum(1 for b in before if b[0] == victim.id)
    assert len(moved) == owned > 0 and all(old == victim.id for old, _ in moved)
    print(f"kill -9 -> left the ring after {elapsed:.2f}s (ttl {victim.granted_ttl}s)")
    # The survivors keep their leases alive through the router's KeepAlive: still
    # there after more than a TTL has passed since they registered.
    assert rs.b.member_ids(ring) == {backends[0].id, backends[2].id}


def test_bad_input(routers: Routers) -> None:  # noqa: F811
    rs, ring = routers, "bad"
    rev = register(rs, ring, "m1", "10.1.0.1:80")
    register(rs, ring, "m2", "10.1.0.2:80")
    rs.wait_members(ring, {"m1", "m2"})
    stub = rs.b.stub()
    lookup = router_pb2.LookupRequest
    code, _ = status_of(lambda: stub.Lookup(lookup(ring=ring, key=b""), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = status_of(lambda: stub.Lookup(lookup(ring=ring, key=b"k", replicas=-1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "replicas" in details
    code, details = status_of(lambda: stub.Lookup(lookup(ring=ring, key=b"k", replicas=3)))
    assert code == grpc.StatusCode.OUT_OF_RANGE and "2 member" in details
    code, details = status_of(lambda: stub.Lookup(lookup(ring="nope", key=b"k")))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, _ = status_of(
        lambda: stub.LookupBatch(router_pb2.LookupBatchRequest(ring=ring, keys=[b"a", b""]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # replicas 0 means 1; 2 of 2 is fine
    assert len(stub.Lookup(lookup(ring=ring, key=b"k")).members) == 1
    two = stub.Lookup(lookup(ring=ring, key=b"k", replicas=2))
    assert {m.id for m in two.members} == {"m1", "m2"} and two.revision >= rev

    # Duplicate id with another address: refused; the same address: re-registered.
    code, details = status_of(lambda: register(rs, ring, "m1", "10.9.9.9:80"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "10.1.0.1:80" in details
    register(rs, ring, "m1", "10.1.0.1:80")
    reg = router_pb2.RegisterRequest
    for bad in (
        reg(ring="", id="x", address="h:1"),
        reg(ring="a/b", id="x", address="h:1"),
        reg(ring=ring, id="", address="h:1"),
        reg(ring=ring, id="x", address=""),
        reg(ring=ring, id="x", address="h:1", weight=5000),
        reg(ring=ring, id="x", address="h:1", ttl_seconds=-1),
    ):
        code, _ = status_of(functools.partial(stub.Register, bad, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, bad

    # ListRings / WatchRing / an emptied ring.
    assert ring in stub.ListRings(router_pb2.ListRingsRequest()).rings
    watch = stub.WatchRing(router_pb2.WatchRingRequest(ring=ring), timeout=20)
    first = next(watch)
    assert {m.id for m in first.members} == {"m1", "m2"} and first.exists
    for mid in ("m1", "m2"):
        stub.Deregister(router_pb2.DeregisterRequest(ring=ring, id=mid), timeout=5)
    states = []
    for st in watch:
        states.append(st)
        if not st.members:
            break
    watch.cancel()
    assert states[-1].exists and states[-1].revision > first.revision
    rs.wait_members(ring, set())
    code, details = status_of(lambda: stub.Lookup(lookup(ring=ring, key=b"k")))
    assert code == grpc.StatusCode.UNAVAILABLE and "no members" in details

    def watch_unknown() -> None:
        next(stub.WatchRing(router_pb2.WatchRingRequest(ring="nope"), timeout=5))

    code, _ = status_of(watch_unknown)
    assert code == grpc.StatusCode.NOT_FOUND
    assert rs.a.metric("synod_router_lookups_total") >= 0
    assert rs.b.metric("synod_router_revision") >= rev


def test_corrupt_stored_table_is_replaced(routers: Routers) -> None:  # noqa: F811
    """Damage to the table key is reported and repaired; the routers keep answering."""
    rs, ring = routers, "damaged"
    for i in range(3):
        register(rs, ring, f"d-{i}", f"127.0.2.{i}:80")
    ids = {f"d-{i}" for i in range(3)}
    rs.wait_members(ring, ids)
    key = f"test/router/{ring}/table".encode()
    with grpc.insecure_channel(rs.store.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        good = kv.Range(rpc_pb2.RangeRequest(key=key)).kvs[0].value
        damaged = good[:50] + bytes([good[50] ^ 0xFF]) + good[51:]
        kv.Put(rpc_pb2.PutRequest(key=key, value=damaged))

        def repaired() -> bool:
            stored = kv.Range(rpc_pb2.RangeRequest(key=key)).kvs[0].value
            if stored == damaged:
                return False
            states = [r.ring(ring) for r in rs.both]
            return all(s.table == stored and {m.id for m in s.members} == ids for s in states)

        rs.a.wait(repaired, 15, "the routers to replace the damaged table")
    logs = "".join(r.log_path.read_text(errors="replace") for r in rs.both)
    assert "router_table_corrupt" in logs and "checksum mismatch at offset" in logs
    _, placements = batch(rs.a, ring)
    assert {p[0] for p in placements} == ids
