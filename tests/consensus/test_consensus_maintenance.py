"""Backups, leadership moves, hashes, and the Election service."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, etcdctl, free_port

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.etcd.v3electionpb import v3election_pb2, v3election_pb2_grpc

needs_etcdctl = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


@needs_etcdctl
def test_snapshot_save_then_restore_into_a_new_cluster(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    for i in range(5):
        etcdctl(cluster, "put", f"b/{i}", f"v{i}")
    backup = tmp_path / "backup.db"
    out = etcdctl(cluster, "snapshot", "save", str(backup), endpoints=cluster.members[0].endpoint)
    assert "Snapshot saved" in out.stdout
    restored = LocalCluster(tmp_path / "restored", size=1, extra_args=["--unsafe-no-fsync"])
    m = restored.members[0]
    p = subprocess.run(
        [
            sys.executable, "-m", "synod", "snapshot", "restore", str(backup),
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--initial-cluster", restored.initial_cluster,
            "--initial-advertise-peer-urls", m.peer_url,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    try:
        restored.start()
        got = etcdctl(restored, "get", "--prefix", "b/").stdout.splitlines()
        assert got == [x for i in range(5) for x in (f"b/{i}", f"v{i}")]
        assert len(etcdctl(restored, "member", "list").stdout.splitlines()) == 1
    finally:
        restored.stop()


def test_restore_refuses_a_damaged_backup(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\0" * 1000)
    port = free_port()
    p = subprocess.run(
        [
            sys.executable, "-m", "synod", "snapshot", "restore", str(bad),
            "--name", "x", "--data-dir", str(tmp_path / "x"),
            "--initial-cluster", f"x=http://127.0.0.1:{port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{port}",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2 and "checksum mismatch" in p.stderr


@needs_etcdctl
def test_move_leader_and_hashkv(cluster: LocalCluster) -> None:
    old = cluster.leader()
    target = next(m for m in cluster.members if m is not old)
    target_id = format(target.status().header.member_id, "x")
    out = etcdctl(cluster, "move-leader", target_id).stdout
    assert (
        f"Leadership transferred from {format(old.status().header.member_id, 'x')} to {target_id}"
        in out
    )
    assert cluster.leader() is target
    etcdctl(cluster, "put", "h", "1")
    hashes = etcdctl(cluster, "endpoint", "hashkv").stdout.splitlines()
    assert len({line.split(", ")[1] for line in hashes}) == 1
    assert "Finished defragmenting" in etcdctl(cluster, "defrag").stdout
    assert etcdctl(cluster, "alarm", "list").stdout == ""


def test_election_service_campaign_proclaim_observe_resign(cluster: LocalCluster) -> None:
    m = cluster.members[1]
    with m.channel() as ch:
        leases = rpc_pb2_grpc.LeaseStub(ch)
        election = v3election_pb2_grpc.ElectionStub(ch)
        l1 = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=5).ID
        l2 = leases.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=5).ID
        first = election.Campaign(
            v3election_pb2.CampaignRequest(name=b"e", lease=l1, value=b"one"), timeout=5
        ).leader
        leader = election.Leader(v3election_pb2.LeaderRequest(name=b"e"), timeout=5)
        assert leader.kv.value == b"one" and leader.kv.key == first.key
        # A second candidate waits until the first resigns.
        result: dict[str, v3election_pb2.LeaderKey] = {}

        def second() -> None:
            result["k"] = election.Campaign(
                v3election_pb2.CampaignRequest(name=b"e", lease=l2, value=b"two"), timeout=20
            ).leader

        t = threading.Thread(target=second)
        t.start()
        observed = election.Observe(v3election_pb2.LeaderRequest(name=b"e"), timeout=20)
        assert next(observed).kv.value == b"one"
        election.Proclaim(v3election_pb2.ProclaimRequest(leader=first, value=b"uno"), timeout=5)
        assert next(observed).kv.value == b"uno"
        assert t.is_alive(), "the second candidate must wait"
        election.Resign(v3election_pb2.ResignRequest(leader=first), timeout=5)
        t.join(20)
        assert result["k"].lease == l2
        assert next(observed).kv.value == b"two"
        observed.cancel()
        with pytest.raises(grpc.RpcError) as ei:
            election.Proclaim(v3election_pb2.ProclaimRequest(leader=first, value=b"x"), timeout=5)
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as ei:
            election.Leader(v3election_pb2.LeaderRequest(name=b"nobody"), timeout=5)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND


def _background_etcdctl(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.Popen(
        ["etcdctl", f"--endpoints={cluster.endpoints}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


@needs_etcdctl
def test_etcdctl_lock_excludes_and_hands_over(cluster: LocalCluster) -> None:
    # etcdctl's lock recipe is built on KV, leases and watches.
    first = _background_etcdctl(cluster, "lock", "mylock")
    assert first.stdout is not None
    holder_key = first.stdout.readline().strip()
    assert holder_key.startswith("mylock/")
    second = _background_etcdctl(cluster, "lock", "mylock")
    with pytest.raises(subprocess.TimeoutExpired):
        second.wait(timeout=1.5)  # still waiting behind the first holder
    first.send_signal(signal.SIGINT)  # releases
    first.wait(timeout=10)
    assert second.stdout is not None
    second_key = second.stdout.readline().strip()
    assert second_key.startswith("mylock/") and second_key != holder_key
    second.send_signal(signal.SIGINT)
    second.wait(timeout=10)


@needs_etcdctl
def test_etcdctl_elect_campaign_and_observe(cluster: LocalCluster) -> None:
    leader = _background_etcdctl(cluster, "elect", "myelection", "p1")
    assert leader.stdout is not None
    assert leader.stdout.readline().strip().startswith("myelection/")
    assert leader.stdout.readline().strip() == "p1"
    observer = _background_etcdctl(cluster, "elect", "-l", "myelection")
    assert observer.stdout is not None
    assert observer.stdout.readline().strip().startswith("myelection/")
    assert observer.stdout.readline().strip() == "p1"
    challenger = _background_etcdctl(cluster, "elect", "myelection", "p2")
    leader.send_signal(signal.SIGINT)  # resigns
    leader.wait(timeout=10)
    assert challenger.stdout is not None
    assert challenger.stdout.readline().strip().startswith("myelection/")
    assert challenger.stdout.readline().strip() == "p2"
    assert observer.stdout.readline().strip().startswith("myelection/")
    assert observer.stdout.readline().strip() == "p2"
    for p in (observer, challenger):
        p.send_signal(signal.SIGINT)
        p.wait(timeout=10)
