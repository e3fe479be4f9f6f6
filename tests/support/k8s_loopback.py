"""Pods of the rendered manifests as real processes on loopback, without a cluster.

Each pod gets its own loopback address (127.A.B.x, a /24 drawn at random and
checked free), standing in for its pod IP, so the ports in the manifests are
used as written and two pods never collide. What the cluster would provide
is simulated, and nothing else is changed:

- cluster DNS: every name a pod could resolve (a StatefulSet pod's
  `POD.SERVICE.NAMESPACE.svc.cluster.local` and its shorter forms, a
  Service's `NAME[.NAMESPACE[.svc[.cluster.local]]]`) is replaced by the
  address of the pod it reaches, in the container's environment and
  arguments (a Service maps to the first of its pods: one address is all a
  name can become here);
- `0.0.0.0` (all of the pod's addresses) becomes the pod's address;
- each volumeMount's path becomes a directory of its own under the test's
  temporary directory;
- the image's ENTRYPOINT/CMD come from deploy/docker/Dockerfile, and its
  `synod` is the one installed beside this interpreter.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from dockerfile import stages
from grpc_health.v1 import health_pb2, health_pb2_grpc
from k8s_pod import container_argv, container_env
from k8s_render import DOCKERFILE, Manifest, find
from waits import wait_until

NAMESPACE = "synod-test"
CLUSTER_DOMAIN = "cluster.local"

T = TypeVar("T")


@dataclass
class Pod:
    name: str
    address: str
    workload: Manifest
    spec: Manifest  # the pod template's spec
    labels: dict[str, str]
    annotations: dict[str, str]
    dir: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def container(self) -> Manifest:
        containers: list[Manifest] = self.spec["containers"]
        assert len(containers) == 1, "one container per pod"
        return containers[0]

    @property
    def log_path(self) -> Path:
        return self.dir / "log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def port(self, ref: int | str) -> int:
        """A probe's port: a number, or the name of one of the container's ports."""
        if isinstance(ref, int):
            return ref
        for p in self.container.get("ports", []):
            if p.get("name") == ref:
                return int(p["containerPort"])
        raise KeyError(f"{self.name}: no container port named {ref!r}")

    def container_ports(self) -> list[int]:
        return [int(p["containerPort"]) for p in self.container.get("ports", [])]


def health_status(address: str, port: int, service: str = "") -> int:
    with grpc.insecure_channel(f"{address}:{port}") as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(r.status)


def probe_passes(pod: Pod, probe: Manifest) -> bool:
    """Run a probe the way the kubelet does, against the pod's address."""
    if "grpc" in probe:
        g = probe["grpc"]
        status = health_status(pod.address, pod.port(g["port"]), g.get("service", ""))
        return status == health_pb2.HealthCheckResponse.SERVING
    if "tcpSocket" in probe:
        with socket.create_connection((pod.address, pod.port(probe["tcpSocket"]["port"])), 2):
            return True
    if "httpGet" in probe:
        h = probe["httpGet"]
        url = f"http://{pod.address}:{pod.port(h['port'])}{h.get('path', '/')}"
        with urllib.request.urlopen(url, timeout=2) as r:
            return 200 <= r.status < 400
    raise NotImplementedError(f"probe {probe} is not simulated here")


def dns_names(pod_name: str | None, service: str) -> list[str]:
    """Every form of a name a pod in NAMESPACE resolves, longest first."""
    base = f"{pod_name}.{service}" if pod_name else service
    return [
        f"{base}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}",
        f"{base}.{NAMESPACE}.svc",
        f"{base}.{NAMESPACE}",
        base,
    ]


def _free_subnet(ports: set[int], hosts: int) -> str:
    """A loopback /24 '127.A.B' whose first `hosts` addresses have every port free."""
    for _ in range(100):
        net = f"127.{random.randrange(100, 250)}.{random.randrange(1, 250)}"
        socks: list[socket.socket] = []
        try:
            for h in range(hosts):
                for p in ports:
                    s = socket.socket()
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((f"{net}.{10 + h}", p))
            return net
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free loopback /24 for the pods")


class LoopbackCluster:
    """Starts pods of StatefulSets and Deployments from rendered manifests."""

    def __init__(self, manifests: list[Manifest], base_dir: Path, max_pods: int = 16):
        self.manifests = manifests
        self.base_dir = base_dir
        self.pods: list[Pod] = []
        self.hosts: dict[str, str] = {}  # DNS name -> address
        final = stages(DOCKERFILE)[-1]
        self.entrypoint = final.exec_form("ENTRYPOINT") or []
        self.cmd = final.exec_form("CMD") or []
        ports = {
            int(p["containerPort"])
            for w in manifests
            if w["kind"] in ("StatefulSet", "Deployment")
            for c in w["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        self.subnet = _free_subnet(ports, max_pods)
        self.config_maps = {
            m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"
        }

    # -- pods ------------------------------------------------------------------------

    def new_pod(self, workload: Manifest, name: str) -> Pod:
        template = workload["spec"]["template"]
        pod = Pod(
            name=name,
            address=f"{self.subnet}.{10 + len(self.pods)}",
            workload=workload,
            spec=template["spec"],
            labels=dict(template["metadata"].get("labels", {})),
            annotations=dict(template["metadata"].get("annotations", {})),
            dir=self.base_dir / name,
        )
        pod.dir.mkdir(parents=True)
        self.pods.append(pod)
        return pod

    def add_workload(self, kind: str, name: str) -> list[Pod]:
        """Create the workload's pods (not started); a StatefulSet's get their DNS names."""
        w = find(self.manifests, kind, name)
        replicas = int(w["spec"].get("replicas", 1))
        if kind == "StatefulSet":
            pods = [self.new_pod(w, f"{name}-{i}") for i in range(replicas)]
            for p in pods:
                for n in dns_names(p.name, w["spec"]["serviceName"]):
                    self.hosts[n] = p.address
        else:
            pods = [self.new_pod(w, f"{name}-loopback-{i}") for i in range(replicas)]
        self._map_services()
        return pods

    def _map_services(self) -> None:
        for svc in (m for m in self.manifests if m["kind"] == "Service"):
            selector = svc["spec"].get("selector", {})
            backing = [
                p for p in self.pods if all(p.labels.get(k) == v for k, v in selector.items())
            ]
            if backing:
                for n in dns_names(None, svc["metadata"]["name"]):
                    self.hosts.setdefault(n, backing[0].address)

    def localize(self, pod: Pod, text: str) -> str:
        text = text.replace("0.0.0.0", pod.address)
        # One pass each, longest first, so a replacement is never replaced again
        # (a local path under /tmp is not the pod's /tmp mount).
        mounts = {
            m["mountPath"]: str(pod.dir / m["name"]) for m in pod.container.get("volumeMounts", [])
        }
        if mounts:
            alternatives = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))
            text = re.sub(
                rf"(?<![\w/.-])({alternatives})(?=/|$|[,:])", lambda m: mounts[m[1]], text
            )
        # A name is an address only with a port after it (the cluster token
        # "synod-consensus" is also a Service's name, and is not an address).
        if self.hosts:
            alternatives = "|".join(re.escape(n) for n in sorted(self.hosts, key=len, reverse=True))
            text = re.sub(rf"(?<![\w.-])({alternatives})(?=:\d)", lambda m: self.hosts[m[1]], text)
        return text

    def resolve(self, pod: Pod) -> None:
        """Fill in the pod's argv and env, as the kubelet would, mapped to loopback."""
        meta = {"metadata": {"name": pod.name, "namespace": NAMESPACE, "labels": pod.labels}}
        env = container_env(meta, pod.container, self.config_maps)
        argv = container_argv(pod.container, env, self.entrypoint, self.cmd)
        pod.env = {k: self.localize(pod, v) for k, v in env.items()}
        pod.argv = [self.localize(pod, a) for a in argv]
        for mount in pod.container.get("volumeMounts", []):
            (pod.dir / mount["name"]).mkdir(exist_ok=True)

    def start(self, pods: list[Pod]) -> None:
        for pod in pods:
            self.resolve(pod)
        bin_dir = str(Path(sys.executable).parent)
        for pod in pods:
            # Only what the pod's spec gives it, plus a PATH where `synod` is this venv's.
            env = {
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "HOME": str(pod.dir),
                "PYTHONUNBUFFERED": "1",
                **pod.env,
            }
            log = open(pod.log_path, "ab")  # noqa: SIM115 - owned by the process
            pod.proc = subprocess.Popen(
                pod.argv, env=env, cwd=pod.dir, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()

    # -- checks and teardown -----------------------------------------------------------

    def wait(self, fn: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_until(fn, timeout, what, interval=0.1)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.describe()}\n{self.logs_tail()}") from None

    def wait_probes(self, pods: list[Pod], timeout: float = 30.0) -> None:
        """Every readiness and liveness probe of every pod passes (within the deadline)."""
        for pod in pods:
            for kind in ("readinessProbe", "livenessProbe"):
                probe: Any = pod.container.get(kind)
                assert probe is not None, f"{pod.name} has no {kind}"

                def passes(pod: Pod = pod, probe: Any = probe) -> bool:
                    assert pod.alive(), f"{pod.name} exited with {pod.proc and pod.proc.poll()}"
                    return probe_passes(pod, probe)

                self.wait(passes, timeout, f"{pod.name}'s {kind} {probe}")

    def describe(self) -> str:
        return "\n".join(f"{p.name} {p.address}: {p.argv} {p.env}" for p in self.pods)

    def logs_tail(self, lines: int = 20) -> str:
        out = []
        for p in self.pods:
            if p.log_path.exists():
                out.append(f"--- {p.name} ({'alive' if p.alive() else 'dead'}) ---")
                out.extend(p.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self) -> None:
        for p in reversed(self.pods):
            if p.alive():
                assert p.proc is not None
                p.proc.send_signal(signal.SIGTERM)
        for p in self.pods:
            if p.proc is not None:
                try:
                    p.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait()
