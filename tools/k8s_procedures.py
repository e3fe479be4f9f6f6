#!/usr/bin/env python3
"""Walk docs/kubernetes.md's scaling and restore procedures on loopback pods.

The pods are those of the rendered manifests, started as `make test` starts
them (tests/support/k8s_loopback.py): each on its own 127.A.B.x address, with
the command line and environment the kubelet would give it. Each procedure
runs the documented `etcdctl` / `synod` steps and the StatefulSet changes,
and fails (exit 1) if the cluster does not end up as the docs say. Too slow
for `make test` (about a minute each), so run by hand after changing the
manifests or the procedures:

    .venv/bin/python tools/k8s_procedures.py scale-up|scale-down|restore|all

Needs `etcdctl` (Debian package etcd-client, `make deps`).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))

from k8s_loopback import NAMESPACE, LoopbackCluster, Pod, dns_names  # noqa: E402
from k8s_render import KUSTOMIZATIONS, Manifest, render  # noqa: E402
from waits import wait_until  # noqa: E402

PEER_DOMAIN = f"synod-consensus-peer.{NAMESPACE}.svc.cluster.local"


class ProcedureFailed(AssertionError):
    pass


def etcdctl(endpoints: str, *args: str, check: bool = True) -> str:
    env = dict(os.environ, ETCDCTL_API="3")
    p = subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=10s", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    print(f"$ etcdctl {' '.join(args)}\n{p.stdout}{p.stderr}", end="")
    if check and p.returncode != 0:
        raise ProcedureFailed(f"etcdctl {' '.join(args)}: {p.stderr}")
    return p.stdout


def member_id(endpoint: str, name: str) -> str:
    for line in etcdctl(endpoint, "member", "list").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if fields[2] == name:
            return fields[0]
    raise ProcedureFailed(f"{name} is not a member")


def stop(pod: Pod) -> None:
    assert pod.proc is not None
    pod.proc.send_signal(signal.SIGTERM)
    pod.proc.wait(timeout=20)


def env_var(sts: Manifest, name: str) -> dict[str, str]:
    for var in sts["spec"]["template"]["spec"]["containers"][0]["env"]:
        if var["name"] == name:
            return var  # type: ignore[no-any-return]
    raise KeyError(name)


def scale_up(c: LoopbackCluster) -> None:
    """3 -> 4: member add --learner, template names it with `existing`, roll, replicas, promote."""
    pods = c.add_workload("StatefulSet", "synod-consensus")
    c.start(pods)
    c.wait_probes(pods)
    ep = f"{pods[0].address}:2379"
    etcdctl(ep, "put", "before", "1")
    sts = copy.deepcopy(pods[0].workload)
    sts["spec"]["replicas"] = 4
    env_var(sts, "SYNOD_INITIAL_CLUSTER")["value"] += (
        ",synod-consensus-3=$(URL_SCHEME)://synod-consensus-3.$(PEER_DOMAIN):2380"
    )
    env_var(sts, "SYNOD_INITIAL_CLUSTER_STATE")["value"] = "existing"
    new = c.new_pod(sts, "synod-consensus-3")
    for n in dns_names(new.name, "synod-consensus-peer"):
        c.hosts[n] = new.address
    # 1. member add, as a learner
    peer_url = c.localize(new, f"http://synod-consensus-3.{PEER_DOMAIN}:2380")
    etcdctl(ep, "member", "add", "synod-consensus-3", "--learner", f"--peer-urls={peer_url}")
    # 2. the template changes: a rolling update, one member at a time
    for p in pods:
        stop(p)
        p.workload, p.spec = sts, sts["spec"]["template"]["spec"]
        c.start([p])
        c.wait_probes([p])
    # 3. replicas 4
    c.start([new])
    c.wait_probes([new])
    # 4. promote, retried until the learner has caught up
    mid = member_id(ep, "synod-consensus-3")
    wait_until(
        lambda: etcdctl(ep, "member", "promote", mid, check=False).find("promoted") >= 0,
        30,
        "the learner's promotion",
        interval=1,
    )
    everyone = pods + [new]
    if etcdctl(f"{new.address}:2379", "get", "before", "--print-value-only").strip() != "1":
        raise ProcedureFailed("the new member does not have the data")
    # and the whole cluster restarts with the template as it now is
    for p in everyone:
        stop(p)
    c.start(everyone)
    c.wait_probes(everyone, 40)
    etcdctl(ep, "put", "after", "2")
    listed = etcdctl(ep, "member", "list")
    if listed.count(", false") != 4:
        raise ProcedureFailed(f"expected 4 voting members:\n{listed}")


def scale_down(c: LoopbackCluster) -> None:
    """5 -> 3 (the five-members overlay's pods): member remove first, then the pod."""
    pods = c.add_workload("StatefulSet", "synod-consensus")
    if len(pods) != 5:
        raise ProcedureFailed("scale-down starts from the five-members overlay")
    c.start(pods)
    c.wait_probes(pods)
    ep = f"{pods[0].address}:2379"
    etcdctl(ep, "put", "k", "v")
    for victim in (pods[4], pods[3]):
        mid = member_id(ep, victim.name)
        # Removing the leader leaves the rest without one for an election timeout:
        # "no leader" then, and the removal is retried as the docs say.
        wait_until(
            lambda mid=mid: "removed" in etcdctl(ep, "member", "remove", mid, check=False),
            15,
            f"the removal of {victim.name}",
            interval=0.5,
        )
        stop(victim)
    rest = pods[:3]
    for p in rest:  # a restart of the rest, with the template not edited yet
        stop(p)
        c.start([p])
        c.wait_probes([p])
    # Three voters now: one more failure leaves a quorum of 2.
    assert rest[2].proc is not None
    rest[2].proc.kill()
    rest[2].proc.wait()
    etcdctl(f"{rest[0].address}:2379,{rest[1].address}:2379", "put", "k2", "v2")
    listed = etcdctl(ep, "member", "list")
    if sorted(line.split(", ")[2] for line in listed.splitlines()) != [p.name for p in rest]:
        raise ProcedureFailed(f"expected the three lowest ordinals:\n{listed}")


def restore(c: LoopbackCluster) -> None:
    """Backup with etcdctl, restore every volume with `synod snapshot restore`, start again."""
    pods = c.add_workload("StatefulSet", "synod-consensus")
    c.start(pods)
    c.wait_probes(pods)
    ep = f"{pods[0].address}:2379"
    etcdctl(ep, "put", "kept", "yes")
    backup = c.base_dir / "backup.db"
    etcdctl(ep, "snapshot", "save", str(backup))
    etcdctl(ep, "put", "lost", "after-backup")
    for p in pods:
        stop(p)
    cluster = ",".join(
        f"synod-consensus-{i}=http://synod-consensus-{i}.{PEER_DOMAIN}:2380" for i in range(3)
    )
    for i, p in enumerate(pods):
        data = p.dir / "data" / "data"
        shutil.rmtree(data)
        argv = [
            str(Path(sys.executable).parent / "synod"),
            "snapshot", "restore", str(backup),
            "--name", f"synod-consensus-{i}",
            "--data-dir", str(data),
            "--initial-cluster-token", "synod-consensus",
            "--initial-advertise-peer-urls",
            c.localize(p, f"http://synod-consensus-{i}.{PEER_DOMAIN}:2380"),
            "--initial-cluster", c.localize(p, cluster),
        ]  # fmt: skip
        subprocess.run(argv, check=True, timeout=60)
    c.start(pods)
    c.wait_probes(pods, 40)
    if etcdctl(ep, "get", "kept", "--print-value-only").strip() != "yes":
        raise ProcedureFailed("the backup's key is missing")
    if etcdctl(ep, "get", "lost", "--print-value-only").strip():
        raise ProcedureFailed("a key written after the backup survived the restore")
    etcdctl(ep, "put", "new", "write")


PROCEDURES: dict[str, tuple[str, Callable[[LoopbackCluster], None]]] = {
    "scale-up": ("default", scale_up),
    "scale-down": ("five-members", scale_down),
    "restore": ("default", restore),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("procedure", choices=[*PROCEDURES, "all"])
    args = ap.parse_args()
    if shutil.which("etcdctl") is None:
        print("etcdctl not found (make deps installs etcd-client)", file=sys.stderr)
        return 2
    names = list(PROCEDURES) if args.procedure == "all" else [args.procedure]
    failed = []
    for name in names:
        which, procedure = PROCEDURES[name]
        with tempfile.TemporaryDirectory(prefix=f"k8s-{name}-") as tmp:
            c = LoopbackCluster(render(KUSTOMIZATIONS[which]), Path(tmp))
            try:
                procedure(c)
                print(f"== {name}: OK")
            except (ProcedureFailed, TimeoutError) as e:
                print(f"== {name}: FAILED: {e}\n{c.logs_tail()}")
                failed.append(name)
            finally:
                c.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
