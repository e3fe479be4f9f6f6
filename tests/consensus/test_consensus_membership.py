"""Membership through etcdctl: a fourth process joins as a learner, is promoted, removed."""

from __future__ import annotations

import shutil

import grpc
import pytest
from cluster_harness import LocalCluster, etcdctl

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")


def member_line(cluster: LocalCluster, name: str, endpoints: str | None = None) -> str | None:
    for line in etcdctl(cluster, "member", "list", endpoints=endpoints).stdout.splitlines():
        if f", {name}, " in line:
            return line
    return None


def test_add_learner_join_promote_remove(cluster: LocalCluster) -> None:
    c = cluster
    etcdctl(c, "put", "before-join", "1")
    m4 = c.new_member("m4")
    out = etcdctl(
        c, "member", "add", "m4", f"--peer-urls={m4.peer_url}", "--learner",
        endpoints=c.members[1].endpoint,  # a follower or the leader: either forwards
    ).stdout  # fmt: skip
    assert "added to cluster" in out and 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    c.start_member(m4)
    c.wait(lambda: m4.serving(), 20, "the new member to know the leader")

    def caught_up() -> bool:
        with m4.channel() as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"before-join", serializable=True), timeout=2
            )
        return bool(r.kvs)

    c.wait(caught_up, 20, "the learner to catch up")
    line = c.wait(lambda: member_line(c, "m4"), 10, "m4 in the member list")
    assert line.endswith(", true"), line  # a learner
    mid = line.split(",")[0]
    c.wait(
        lambda: "promoted" in etcdctl(c, "member", "promote", mid, check=False).stdout,
        15,
        "the learner to be promotable",
    )
    c.wait(lambda: (member_line(c, "m4") or "").endswith(", false"), 5, "m4 listed as a voter")
    # Now a voter: the cluster has 4 voters and still commits.
    etcdctl(c, "put", "after-promote", "1", endpoints=m4.endpoint)
    assert "removed from cluster" in etcdctl(c, "member", "remove", mid).stdout
    # Ask the remaining members (a removed member is no longer told anything),
    # and give a follower a moment to apply the removal.
    others = ",".join(m.endpoint for m in c.members if m is not m4)
    c.wait(
        lambda: member_line(c, "m4", endpoints=others) is None, 5, "m4 gone from the member list"
    )
    c.kill(m4)
    etcdctl(c, "put", "after-remove", "1")


def test_membership_errors(cluster: LocalCluster) -> None:
    c = cluster
    with c.members[0].channel() as ch:
        stub = rpc_pb2_grpc.ClusterStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=12345), timeout=5)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as ei:
            stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=12345), timeout=5)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
        voter = stub.MemberList(rpc_pb2.MemberListRequest(), timeout=5).members[0].ID
        with pytest.raises(grpc.RpcError) as ei:
            stub.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=voter), timeout=5)
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "only promote a learner" in (ei.value.details() or "")
        with pytest.raises(grpc.RpcError) as ei:
            stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[c.members[1].peer_url]), timeout=5)
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
