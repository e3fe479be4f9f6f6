"""The member process: flags and environment, health, metrics, SIGTERM, WAL damage."""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, free_port, wait_until
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from synod.consensus import config as member_config
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc


def parse(argv: list[str], env: dict[str, str] | None = None) -> member_config.MemberConfig:
    p = argparse.ArgumentParser()
    member_config.add_arguments(p)
    return member_config.from_args(p.parse_args(argv), environ=env or {})


def test_flags_mirror_etcd_and_environment_variables_fill_in() -> None:
    env = {
        "SYNOD_NAME": "n2",
        "SYNOD_INITIAL_CLUSTER": "n1=http://127.0.0.1:2380,n2=127.0.0.1:2480",
        "SYNOD_INITIAL_ADVERTISE_PEER_URLS": "127.0.0.1:2480",
        "SYNOD_HEARTBEAT_INTERVAL": "50",
        "SYNOD_ELECTION_TIMEOUT": "600",
        "SYNOD_UNSAFE_NO_FSYNC": "true",
    }
    c = parse(["--snapshot-count", "77", "--commit-broadcast-delay", "0.5"], env)
    assert c.name == "n2" and c.data_dir == "n2.synod"
    assert c.commit_broadcast_delay_ms == 0.5
    assert parse([]).commit_broadcast_delay_ms == 2.0
    assert c.heartbeat_interval_ms == 50 and c.election_ticks == 12
    assert c.snapshot_count == 77 and c.unsafe_no_fsync
    assert c.snapshot_catchup_entries == 5000
    assert parse(["--snapshot-catchup-entries", "0"]).snapshot_catchup_entries == 0
    assert c.initial_cluster["n2"] == ["http://127.0.0.1:2480"]
    assert c.max_request_bytes == int(1.5 * 1024 * 1024)
    # the command line wins over the environment
    assert (
        parse(["--name", "n1", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"], env).name
        == "n1"
    )


@pytest.mark.parametrize(
    "argv, text",
    [
        (["--initial-cluster", "x"], "not name=url"),
        (["--heartbeat-interval", "abc"], "not an integer"),
        (["--heartbeat-interval", "100", "--election-timeout", "200"], "at least 5x"),
        (["--initial-cluster-state", "maybe"], "new or existing"),
        (
            ["--name", "zz", "--initial-cluster", "a=http://127.0.0.1:1"],
            "does not name this member",
        ),
        (["--listen-client-urls", "http://nohost"], "not host:port"),
        (["--commit-broadcast-delay", "soon"], "not a number"),
        (["--commit-broadcast-delay", "-1"], "between 0 and --heartbeat-interval"),
        (["--commit-broadcast-delay", "150"], "between 0 and --heartbeat-interval"),
        (["--snapshot-catchup-entries", "-1"], "must be >= 0"),
    ],
)
def test_bad_flags_are_explained(argv: list[str], text: str) -> None:
    with pytest.raises(member_config.ConfigError, match=text):
        parse(argv)


def test_bad_flag_exits_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "synod", "consensus", "--election-timeout", "-5"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 2
    assert "--election-timeout" in p.stderr and "Traceback" not in p.stderr


def test_health_follows_leadership_and_reflection_lists_services(cluster: LocalCluster) -> None:
    m = cluster.members[0]
    with m.channel() as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        names = {s.name for s in resp.list_services_response.service}
    assert {"etcdserverpb.KV", "etcdserverpb.Maintenance", "grpc.health.v1.Health"} <= names
    # Without a quorum, no leader is known and the survivor stops reporting SERVING.
    for other in cluster.members[1:]:
        cluster.kill(other)
    cluster.wait(lambda: not m.serving(), 10, "the lone member to report NOT_SERVING")


def test_metrics_are_served(tmp_path: Path) -> None:
    port = free_port()
    c = LocalCluster(tmp_path, size=1, extra_args=["--unsafe-no-fsync"])
    c.members[0].extra_args = ["--metrics-addr", f"127.0.0.1:{port}"]
    try:
        c.start()
        with c.members[0].channel() as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"m", value=b"1"), timeout=5)
        body = wait_until(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                .read()
                .decode()
            ),
            10,
            "the metrics endpoint",
        )
        for name in (
            "synod_raft_term",
            "synod_raft_leader_changes_total",
            "synod_raft_commit_index",
            "synod_raft_apply_index",
            "synod_proposals_committed_total",
            "synod_proposals_failed_total",
            "synod_wal_fsync_seconds_bucket",
            "synod_apply_seconds_bucket",
        ):
            assert name in body, name
    finally:
        c.stop()


def test_sigterm_on_the_leader_hands_leadership_over(cluster: LocalCluster) -> None:
    old = cluster.leader()
    assert old.proc is not None
    old.proc.send_signal(signal.SIGTERM)
    assert old.proc.wait(timeout=15) == 0
    others = [m for m in cluster.members if m is not old]
    new = cluster.leader()
    assert new in others
    log = old.log_path.read_text()
    assert "leadership_transferred" in log, cluster.logs_tail()


def _wal_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal").glob("*.wal"))


def _single_member(tmp_path: Path) -> LocalCluster:
    return LocalCluster(tmp_path, size=1)


def test_torn_wal_tail_is_truncated_and_the_member_starts(tmp_path: Path) -> None:
    c = _single_member(tmp_path)
    m = c.members[0]
    try:
        c.start()
        with m.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(20):
                kv.Put(rpc_pb2.PutRequest(key=b"t%d" % i, value=b"v"), timeout=5)
        c.kill(m)
        wal = _wal_files(m.data_dir)[-1]
        with open(wal, "ab") as f:
            f.write(b"\x00\x00\x01\x00garbage-half-record")  # a write cut short by a crash
        c.start_member(m)
        c.wait_healthy(20)
        with m.channel() as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"t", range_end=b"u", count_only=True), timeout=5
            )
        assert r.count == 20
        assert "wal_truncating_torn_tail" in m.log_path.read_text()
    finally:
        c.stop()


def test_corrupt_wal_record_in_the_middle_stops_the_member_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    c = _single_member(tmp_path)
    m = c.members[0]
    try:
        c.start()
        with m.channel() as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(50):
                kv.Put(rpc_pb2.PutRequest(key=b"c%d" % i, value=b"x" * 50), timeout=5)
        c.kill(m)
        wal = _wal_files(m.data_dir)[-1]
        data = bytearray(wal.read_bytes())
        pos = len(data) // 2
        data[pos] ^= 0xFF
        wal.write_bytes(bytes(data))
        c.start_member(m)
        assert m.proc is not None
        assert m.proc.wait(timeout=20) != 0
        log = m.log_path.read_text()
        assert str(wal) in log and "offset" in log, log[-2000:]
    finally:
        c.stop()


def test_unknown_peer_is_refused(cluster: LocalCluster) -> None:
    """A peer stream from a member outside the configuration is refused, saying why;
    gRPC on the same peer port (the internal calls) still answers."""
    from synod.consensus import peer_stream
    from synod.consensus.v1 import internal_pb2, internal_pb2_grpc

    m = cluster.members[0]
    st = m.status()

    async def dial_as_stranger() -> str:
        try:
            _, writer = await peer_stream.dial(
                f"http://127.0.0.1:{m.peer_port}", None, st.header.cluster_id, 0xDEAD, 5.0
            )
        except peer_stream.PeerStreamError as e:
            return str(e)
        writer.close()
        return "accepted"

    why = asyncio.run(dial_as_stranger())
    assert why.startswith("refused:") and "dead is not in this cluster" in why, why
    with grpc.insecure_channel(f"127.0.0.1:{m.peer_port}") as ch:
        info = internal_pb2_grpc.InternalStub(ch).ClusterInfo(
            internal_pb2.ClusterInfoRequest(), timeout=5
        )
    assert info.cluster_id == st.header.cluster_id
    assert os.path.exists(m.data_dir)


def test_keepalive_pings_of_an_idle_watch_are_accepted(cluster: LocalCluster) -> None:
    """A client that pings every 6 s keeps an idle Watch stream: gRPC's default server
    policy (one ping per 5 minutes without data) would answer the third ping with
    GOAWAY too_many_pings and break the stream — it did, every ~100 s, to every watch
    of the lock and router services. The 20 s idle period is the scenario itself."""
    m = cluster.members[0]
    options = [
        ("grpc.keepalive_time_ms", 6_000),
        ("grpc.keepalive_timeout_ms", 2_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(m.endpoint, options=options) as ch:
        requests: queue.SimpleQueue[rpc_pb2.WatchRequest | None] = queue.SimpleQueue()
        requests.put(
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"idle-watch"))
        )
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(iter(requests.get, None), timeout=60)
        assert next(stream).created
        time.sleep(20)  # idle: three keepalive pings without data
        with grpc.insecure_channel(m.endpoint) as writer:
            rpc_pb2_grpc.KVStub(writer).Put(rpc_pb2.PutRequest(key=b"idle-watch", value=b"v"))
        event = next(stream)
        assert [e.kv.value for e in event.events] == [b"v"]
        requests.put(None)
        stream.cancel()
