"""The default deployment's pods, started here as real processes from the rendered YAML.

The consensus StatefulSet's 3 pods, then the lock and router Deployments'
pods against them, each with the command, arguments and environment that the
manifests give its container (resolved as the kubelet does, with cluster DNS
names mapped to loopback addresses: tests/support/k8s_loopback.py). Nothing
about how to run a service is written here: a wrong flag, port or variable
in the manifests fails these tests.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import grpc
from k8s_loopback import LoopbackCluster, Pod
from k8s_render import KUSTOMIZATIONS, render

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.lock.v1 import lock_pb2, lock_pb2_grpc
from synod.router.v1 import router_pb2, router_pb2_grpc


def test_default_deployment_runs_from_its_manifests(tmp_path: Path) -> None:
    """One test, so that the pods start once (test functions may land on different workers)."""
    c = LoopbackCluster(render(KUSTOMIZATIONS["default"]), tmp_path)
    try:
        members = c.add_workload("StatefulSet", "synod-consensus")
        c.start(members)
        check_consensus_pods_form_one_cluster_named_by_the_statefulset(c)
        replicas = c.add_workload("Deployment", "synod-lock")
        replicas += c.add_workload("Deployment", "synod-router")
        c.start(replicas)
        check_lock_and_router_pods_serve_against_the_consensus_pods(c)
        check_prometheus_annotations_point_at_metrics(c)
        check_pods_write_only_to_their_volumes(c)
    finally:
        c.stop()


def _pods(cluster: LoopbackCluster, component: str) -> list[Pod]:
    pods = [p for p in cluster.pods if p.labels.get("app.kubernetes.io/component") == component]
    assert pods, f"no {component} pods"
    return pods


def check_consensus_pods_form_one_cluster_named_by_the_statefulset(
    cluster: LoopbackCluster,
) -> None:
    members = _pods(cluster, "consensus")
    assert len(members) == 3
    cluster.wait_probes(members)
    # Written through the client Service, read linearizably from every member.
    service = cluster.hosts["synod-consensus"]
    with grpc.insecure_channel(f"{service}:2379") as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k8s", value=b"ok"), timeout=10)
        listed = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10)
    assert sorted(m.name for m in listed.members) == [p.name for p in members]
    for m in listed.members:
        assert not m.isLearner
    for pod in members:
        with grpc.insecure_channel(f"{pod.address}:2379") as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k8s"), timeout=10)
        assert [kv.value for kv in r.kvs] == [b"ok"], pod.name
        # The data went where the volume is mounted, not into the working directory.
        assert any((pod.dir / "data").iterdir()), f"{pod.name} wrote nothing to its volume"


def check_lock_and_router_pods_serve_against_the_consensus_pods(cluster: LoopbackCluster) -> None:
    locks, routers = _pods(cluster, "lock"), _pods(cluster, "router")
    assert len(locks) == 2 and len(routers) == 2
    cluster.wait_probes(locks + routers)
    with grpc.insecure_channel(f"{locks[0].address}:{locks[0].port('grpc')}") as ch:
        stub = lock_pb2_grpc.LockStub(ch)
        session = stub.OpenSession(lock_pb2.OpenSessionRequest(ttl_seconds=10), timeout=10)
        held = stub.Acquire(
            lock_pb2.AcquireRequest(name="k8s/test", session_id=session.session_id), timeout=10
        )
    assert held.fencing_token > 0
    reg = router_pb2.RegisterRequest(ring="k8s", id="be-1", address="127.0.0.1:9", ttl_seconds=30)
    with grpc.insecure_channel(f"{routers[0].address}:{routers[0].port('grpc')}") as ch:
        router_pb2_grpc.RouterStub(ch).Register(reg, timeout=10)

    def found_on_other_replica() -> bool:
        target = f"{routers[1].address}:{routers[1].port('grpc')}"
        with grpc.insecure_channel(target) as ch:
            r = router_pb2_grpc.RouterStub(ch).Lookup(
                router_pb2.LookupRequest(ring="k8s", key=b"alice", replicas=1), timeout=5
            )
        return [m.id for m in r.members] == ["be-1"]

    cluster.wait(found_on_other_replica, 15, "the second router to see the registration")


def check_prometheus_annotations_point_at_metrics(cluster: LoopbackCluster) -> None:
    for pod in cluster.pods:
        a = pod.annotations
        assert a.get("prometheus.io/scrape") == "true", pod.name
        url = f"http://{pod.address}:{a['prometheus.io/port']}{a['prometheus.io/path']}"

        def scraped(url: str = url) -> bool:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200 and b"# TYPE" in r.read()

        cluster.wait(scraped, 15, f"{pod.name} metrics at {url}")


def check_pods_write_only_to_their_volumes(cluster: LoopbackCluster) -> None:
    """readOnlyRootFilesystem: nothing but the mounted volumes (and the log) in a pod's dir."""
    for pod in cluster.pods:
        mounts = {m["name"] for m in pod.container.get("volumeMounts", [])}
        extra = {p.name for p in Path(pod.dir).iterdir()} - mounts - {"log"}
        assert not extra, f"{pod.name} wrote {extra} outside its volumes"
