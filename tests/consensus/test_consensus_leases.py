"""Leases through etcdctl, and across the loss of the leader."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, etcdctl, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

needs_etcdctl = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


def lease_id(out: str) -> str:
    m = re.search(r"lease ([0-9a-f]+) granted with TTL\((\d+)s\)", out)
    assert m, out
    return m.group(1)


@needs_etcdctl
def test_lease_grant_put_timetolive_list_keepalive_revoke(cluster: LocalCluster) -> None:
    lid = lease_id(etcdctl(cluster, "lease", "grant", "30").stdout)
    assert etcdctl(cluster, "put", "--lease", lid, "leased", "v").stdout == "OK\n"
    ttl = etcdctl(cluster, "lease", "timetolive", lid, "--keys").stdout
    assert f"lease {lid} granted with TTL(30s)" in ttl and "attached keys([leased])" in ttl
    assert lid in etcdctl(cluster, "lease", "list").stdout
    assert (
        f"lease {lid} keepalived with TTL(30)"
        in etcdctl(cluster, "lease", "keep-alive", "--once", lid).stdout
    )
    assert etcdctl(cluster, "lease", "revoke", lid).stdout == f"lease {lid} revoked\n"
    assert etcdctl(cluster, "get", "leased").stdout == ""
    assert "already expired" in etcdctl(cluster, "lease", "timetolive", lid).stdout
    p = etcdctl(cluster, "lease", "revoke", lid, check=False)
    assert p.returncode != 0 and "requested lease not found" in p.stderr
    p = etcdctl(cluster, "put", "--lease", "1234abcd", "k", "v", check=False)
    assert p.returncode != 0 and "requested lease not found" in p.stderr


def test_kept_alive_lease_survives_leader_kill_and_abandoned_one_expires_everywhere(
    cluster: LocalCluster,
) -> None:
    c = cluster
    leader = c.leader()
    follower = next(m for m in c.members if m is not leader)
    ttl = 3
    with follower.channel() as ch:
        leases = rpc_pb2_grpc.LeaseStub(ch)
        kept = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=5).ID
        dropped = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=5).ID
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Put(rpc_pb2.PutRequest(key=b"kept", value=b"1", lease=kept), timeout=5)
        kv.Put(rpc_pb2.PutRequest(key=b"dropped/a", value=b"1", lease=dropped), timeout=5)
        kv.Put(rpc_pb2.PutRequest(key=b"dropped/b", value=b"1", lease=dropped), timeout=5)

    lost: list[str] = []
    stop = threading.Event()

    def keep_alive() -> None:
        # Keep `kept` alive through a follower, across the failover.
        with follower.channel() as ch:
            stub = rpc_pb2_grpc.LeaseStub(ch)
            while not stop.wait(ttl / 6):
                try:
                    req = iter([rpc_pb2.LeaseKeepAliveRequest(ID=kept)])
                    r = next(stub.LeaseKeepAlive(req, timeout=2))
                    if r.TTL <= 0:
                        lost.append(f"TTL {r.TTL}")
                except grpc.RpcError:
                    pass  # no leader for a moment: retry

    t = threading.Thread(target=keep_alive, daemon=True)
    t.start()
    c.kill(leader)
    killed_at = time.monotonic()
    survivors = [m for m in c.members if m is not leader]

    def gone_everywhere() -> set[int] | None:
        revs = set()
        for m in survivors:
            with m.channel() as ch:
                r = rpc_pb2_grpc.KVStub(ch).Range(
                    rpc_pb2.RangeRequest(key=b"dropped/", range_end=b"dropped0", serializable=True),
                    timeout=2,
                )
            if r.kvs:
                return None
            revs.add(r.header.revision)
        return revs

    # A new leader gives every lease its whole TTL again, so the abandoned lease
    # goes within an election timeout + TTL + 2 s of the kill.
    budget = c.election_ms / 1000 * 2 + ttl + 2
    c.wait(gone_everywhere, budget, "the abandoned lease's keys to disappear on every member")
    assert time.monotonic() - killed_at <= budget
    # Keep the other one alive for 3 TTLs in all.
    c.wait(lambda: time.monotonic() - killed_at > 3 * ttl, 4 * ttl, "three TTLs to pass")
    stop.set()
    t.join(10)
    assert not lost, lost
    with survivors[0].channel() as ch:
        assert rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"kept"), timeout=5).kvs
        ttl_resp = rpc_pb2_grpc.LeaseStub(ch).LeaseTimeToLive(
            rpc_pb2.LeaseTimeToLiveRequest(ID=dropped), timeout=5
        )
        assert ttl_resp.TTL == -1


def test_lease_deletes_happen_at_the_same_revision_on_every_member(cluster: LocalCluster) -> None:
    m = cluster.members[0]
    with m.channel() as ch:
        lid = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=5).ID
        kv = rpc_pb2_grpc.KVStub(ch)
        for k in (b"r/1", b"r/2", b"r/3"):
            kv.Put(rpc_pb2.PutRequest(key=k, value=b"x", lease=lid), timeout=5)
        rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=5)
        after = kv.Range(rpc_pb2.RangeRequest(key=b"r/", range_end=b"r0"), timeout=5)
        assert not after.kvs

    def hashes() -> set[int] | None:
        out = set()
        revs = set()
        for mm in cluster.members:
            with mm.channel() as ch:
                h = rpc_pb2_grpc.MaintenanceStub(ch).HashKV(rpc_pb2.HashKVRequest(), timeout=5)
            out.add(h.hash)
            revs.add(h.header.revision)
        return out if len(out) == 1 and len(revs) == 1 else None

    cluster.wait(hashes, 10, "every member to hold the same history")


def test_lease_bad_input(cluster: LocalCluster) -> None:
    with cluster.members[0].channel() as ch:
        leases = rpc_pb2_grpc.LeaseStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            leases.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=999), timeout=5)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        assert "requested lease not found" in (ei.value.details() or "")
        g = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1, ID=77), timeout=5)
        assert g.ID == 77 and g.TTL >= 1  # raised to the minimum TTL
        with pytest.raises(grpc.RpcError) as ei:
            leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10, ID=77), timeout=5)
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "lease already exists" in (ei.value.details() or "")


def test_a_leader_that_lost_its_quorum_does_not_renew_leases(cluster: LocalCluster) -> None:
    """With both followers stopped, the leader keeps its role until check-quorum deposes
    it, while the others could elect a new leader that counts the lease from its own
    promotion. A renewal then would promise a TTL nobody honours: keepalives must wait
    for a quorum to confirm the leadership (and here get none)."""
    leader = cluster.leader()
    followers = [m for m in cluster.members if m is not leader]
    with grpc.insecure_channel(leader.endpoint) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        lease = stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=5).ID

        def keepalive(timeout: float) -> rpc_pb2.LeaseKeepAliveResponse:
            return next(
                stub.LeaseKeepAlive(
                    iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), timeout=timeout
                )
            )

        assert keepalive(5).TTL == 30
        for m in followers:
            assert m.proc is not None
            m.proc.send_signal(signal.SIGSTOP)
        try:
            # Well within the election timeout (500 ms): the leader has not stepped down.
            with pytest.raises(grpc.RpcError) as err:
                keepalive(0.3)
            assert err.value.code() in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            )
        finally:
            for m in followers:
                assert m.proc is not None
                m.proc.send_signal(signal.SIGCONT)
    cluster.wait_healthy()
    new_leader = cluster.leader()
    with grpc.insecure_channel(new_leader.endpoint) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        resp = next(
            stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease)]), timeout=10)
        )
        assert resp.TTL == 30


def _counter(metrics_port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not exported")


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_renewals_on_one_stream_are_answered_together(tmp_path: Path, via: str) -> None:
    """A client renews all its leases on one stream. The leader confirms its
    leadership (a ReadIndex round) before a renewal, and a follower forwards
    renewals to the leader: handled one at a time, each renewal would take a
    round and a forward of its own; handled together, they share them."""
    c = LocalCluster(tmp_path, extra_args=["--unsafe-no-fsync"])
    metrics = {m.name: free_port() for m in c.members}
    for m in c.members:
        m.extra_args = ["--metrics-addr", f"127.0.0.1:{metrics[m.name]}"]
    try:
        c.start()
        leader = c.leader()
        member = leader if via == "leader" else next(m for m in c.members if m is not leader)

        def counters() -> tuple[float, float]:
            return (
                _counter(metrics[leader.name], "synod_read_index_rounds_total"),
                _counter(metrics[member.name], "synod_lease_renewal_forwards_total"),
            )

        n = 256
        with member.channel() as ch:
            stub = rpc_pb2_grpc.LeaseStub(ch)
            ids = [
                stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=5).ID for _ in range(n)
            ]
            rounds0, forwards0 = wait_until(counters, 10, "the metrics endpoints")
            requests = iter([rpc_pb2.LeaseKeepAliveRequest(ID=i) for i in ids])
            answers = list(stub.LeaseKeepAlive(requests, timeout=30))
        rounds1, forwards1 = counters()
        assert sorted(a.ID for a in answers) == sorted(ids)
        assert all(a.TTL == 60 for a in answers)
        # One at a time takes n rounds. Together, how many share a round depends on
        # how long a round trip takes against reading renewals off the stream; with
        # peer streams on plain TCP about two renewals share each round here.
        assert rounds1 - rounds0 < n * 3 / 4, f"{n} renewals took {rounds1 - rounds0} read rounds"
        if via == "follower":
            assert 0 < forwards1 - forwards0 < n / 2, f"{forwards1 - forwards0} forwards"
        else:
            assert forwards1 == forwards0
    finally:
        c.stop()
