"""Crashes, failover, catch-up by snapshot and bad input, against real member processes."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, MemberProc, wait_until

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc


class Writer(threading.Thread):
    """Writes unique keys to random members and records which writes were acknowledged."""

    def __init__(self, cluster: LocalCluster, prefix: str, seed: int):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.acked: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        channels = {m.name: m.channel() for m in self.cluster.members}
        i = 0
        while not self.stop.is_set():
            m = self.rng.choice(self.cluster.members)
            key = f"{self.prefix}/{i:06d}".encode()
            i += 1
            try:
                rpc_pb2_grpc.KVStub(channels[m.name]).Put(
                    rpc_pb2.PutRequest(key=key, value=b"v"), timeout=2
                )
                self.acked.append(key)
            except grpc.RpcError:
                time.sleep(0.01)
        for ch in channels.values():
            ch.close()


def get(m: MemberProc, key: bytes, **kw: object) -> rpc_pb2.RangeResponse:
    with m.channel() as ch:
        return rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key, **kw), timeout=5)  # type: ignore[arg-type]


def put(m: MemberProc, key: bytes, value: bytes, timeout: float = 5) -> rpc_pb2.PutResponse:
    with m.channel() as ch:
        return rpc_pb2_grpc.KVStub(ch).Put(
            rpc_pb2.PutRequest(key=key, value=value), timeout=timeout
        )


def count_prefix(m: MemberProc, prefix: bytes) -> set[bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, keys_only=True), timeout=10
        )
    return {kv.key for kv in r.kvs}


def test_kill_every_member_under_writes_loses_nothing_acknowledged(
    durable_cluster: LocalCluster,
) -> None:
    c = durable_cluster
    writers = [Writer(c, f"w{i}", seed=i) for i in range(4)]
    for w in writers:
        w.start()
    c.wait(lambda: sum(len(w.acked) for w in writers) >= 200, 30, "200 acknowledged writes")
    for m in c.members:
        c.kill(m, signal.SIGKILL)
    for w in writers:
        w.stop.set()
        w.join(10)
    acked = {k for w in writers for k in w.acked}
    for m in c.members:
        c.start_member(m)
    c.wait_healthy(30)
    present = count_prefix(c.leader(), b"w")
    missing = acked - present
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"


def test_leader_killed_under_load_a_new_leader_serves_quickly(cluster: LocalCluster) -> None:
    c = cluster
    w = Writer(c, "load", seed=7)
    w.start()
    c.wait(lambda: len(w.acked) >= 50, 20, "50 writes")
    old = c.leader()
    c.kill(old)
    killed_at = time.monotonic()
    survivors = [m for m in c.members if m is not old]

    def write_ok() -> bool:
        try:
            # A short deadline, as a client would use, so that a write lost
            # with the old leader does not hold up the next attempt.
            put(random.choice(survivors), b"after-failover", b"1", timeout=1)
            return True
        except grpc.RpcError:
            return False

    budget = c.election_ms / 1000 * 2 + 3.0
    c.wait(write_ok, budget, "a write through a surviving member")
    elapsed = time.monotonic() - killed_at
    w.stop.set()
    w.join(10)
    assert elapsed < budget
    assert c.leader() is not old


@pytest.mark.parametrize(
    "catchup, by_snapshot",
    [("0", True), ("1000", False)],
    ids=["log-compacted-past-it", "entries-kept-behind-the-snapshot"],
)
def test_member_that_missed_many_entries_catches_up(
    tmp_path: Path, catchup: str, by_snapshot: bool
) -> None:
    """300 entries missed, snapshots every 50: past the leader's log start, unless
    the leader keeps 1,000 entries behind each snapshot."""
    c = LocalCluster(
        tmp_path,
        extra_args=[
            "--unsafe-no-fsync",
            "--snapshot-count", "50",
            "--snapshot-catchup-entries", catchup,
        ],
    )  # fmt: skip
    try:
        c.start()
        lagging = c.members[2]
        c.kill(lagging, signal.SIGTERM)
        leader = c.leader()
        for i in range(300):
            put(leader, f"snap/{i:04d}".encode(), b"x")
        c.start_member(lagging)
        c.wait(
            lambda: len(count_prefix_serializable(lagging, b"snap/")) == 300,
            20,
            "the restarted member to hold all 300 keys",
        )
        log = lagging.log_path.read_text()
        installed = "snapshot_received" in log or "snapshot_installed" in log
        assert installed == by_snapshot, c.logs_tail()
    finally:
        c.stop()


def count_prefix_serializable(m: MemberProc, prefix: bytes) -> set[bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix, range_end=end, keys_only=True, serializable=True),
            timeout=5,
        )
    return {kv.key for kv in r.kvs}


def _put_op(key: bytes, value: bytes = b"") -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value))


BAD_REQUESTS = [
    ("Put", rpc_pb2.PutRequest(key=b"", value=b"x"),
     grpc.StatusCode.INVALID_ARGUMENT, "key is not provided"),
    ("Range", rpc_pb2.RangeRequest(key=b""),
     grpc.StatusCode.INVALID_ARGUMENT, "key is not provided"),
    ("Range", rpc_pb2.RangeRequest(key=b"a", revision=10**9),
     grpc.StatusCode.OUT_OF_RANGE, "future revision"),
    ("Txn", rpc_pb2.TxnRequest(success=[_put_op(b"d", b"1"), _put_op(b"d", b"2")]),
     grpc.StatusCode.INVALID_ARGUMENT, "duplicate key"),
    ("Txn", rpc_pb2.TxnRequest(success=[_put_op(b"k%d" % i) for i in range(200)]),
     grpc.StatusCode.INVALID_ARGUMENT, "too many operations"),
    ("Put", rpc_pb2.PutRequest(key=b"ok", value=b"x", ignore_value=True),
     grpc.StatusCode.INVALID_ARGUMENT, "value is provided"),
    ("Put", rpc_pb2.PutRequest(key=b"missing", ignore_value=True),
     grpc.StatusCode.INVALID_ARGUMENT, "key not found"),
]  # fmt: skip


def test_bad_requests_get_clear_status_codes(cluster: LocalCluster) -> None:
    m = cluster.members[0]
    with m.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for method, request, code, text in BAD_REQUESTS:
            with pytest.raises(grpc.RpcError) as ei:
                getattr(kv, method)(request, timeout=5)
            err = ei.value
            assert err.code() == code and text in (err.details() or ""), (method, err)
        # Larger than --max-request-bytes: refused, whichever layer sees it first.
        with pytest.raises(grpc.RpcError) as ei:
            kv.Put(rpc_pb2.PutRequest(key=b"big", value=b"x" * (2 * 1024 * 1024)), timeout=5)
        assert ei.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ), ei.value
        # A range whose end sorts before its key is simply empty.
        r = kv.Range(rpc_pb2.RangeRequest(key=b"z", range_end=b"a"), timeout=5)
        assert r.count == 0 and not r.kvs
        # And the member keeps serving.
        assert kv.Put(rpc_pb2.PutRequest(key=b"ok", value=b"1"), timeout=5).header.revision > 0
    assert all(mm.alive() for mm in cluster.members)


def test_compacted_revision_is_out_of_range(cluster: LocalCluster) -> None:
    m = cluster.members[1]
    for i in range(5):
        r = put(m, b"cmp", str(i).encode())
    with m.channel() as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Compact(rpc_pb2.CompactionRequest(revision=r.header.revision - 1), timeout=5)
        with pytest.raises(grpc.RpcError) as ei:
            kv.Range(rpc_pb2.RangeRequest(key=b"cmp", revision=r.header.revision - 2), timeout=5)
        assert ei.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "compacted" in (ei.value.details() or "")


def test_writes_on_a_follower_are_forwarded_and_reads_are_linearizable(
    cluster: LocalCluster,
) -> None:
    leader = cluster.leader()
    followers = [m for m in cluster.members if m is not leader]
    put(followers[0], b"fwd", b"1")
    # A linearizable read on the other follower sees it at once.
    r = get(followers[1], b"fwd")
    assert [kv.value for kv in r.kvs] == [b"1"]
    assert wait_until(lambda: get(followers[1], b"fwd", serializable=True).kvs, 5, "replication")


def test_restart_with_existing_before_any_snapshot_keeps_the_bootstrap_voters(
    tmp_path: Path,
) -> None:
    """Kubernetes restarts pods with --initial-cluster-state existing: a member restarted
    that way before its first snapshot still knows who votes (bootstrap_voters)."""
    cluster = LocalCluster(tmp_path, size=3, extra_args=["--unsafe-no-fsync"]).start()
    try:
        put(cluster.leader(), b"before", b"1")
        for m in cluster.members:
            assert (m.data_dir / "bootstrap_voters").read_text().count("\n") == 3
        cluster.stop()
        for m in cluster.members:
            m.extra_args = ["--initial-cluster-state", "existing"]
            cluster.start_member(m)
        cluster.wait_healthy()
        leader = cluster.leader()
        put(leader, b"after", b"2")
        for m in cluster.members:
            wait_until(lambda m=m: get(m, b"after").kvs, 10, f"{m.name} to have the write")
            assert get(m, b"before").kvs[0].value == b"1"
    finally:
        cluster.stop()
