"""Real etcd members as processes on loopback, for the client tests.

`EtcdCluster` starts `size` members of /usr/bin/etcd (3.4) with free ports and
data under a temporary directory, waits (with deadlines, never blind sleeps)
until every member reports a leader, and kills them at the end. Logs go to
files next to the data and are printed when a wait fails.

etcd 3.4 has no --unsafe-no-fsync (added in 3.5); the fast heartbeat/election
settings are what keep startup quick.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from ports import free_port, free_ports
from waits import wait_for

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["ETCD_BIN", "EtcdCluster", "EtcdMember", "free_port", "free_ports", "wait_for"]

T = TypeVar("T")

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 1.0) -> rpc_pb2.StatusResponse:
        with grpc.insecure_channel(self.endpoint) as ch:
            resp: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
            return resp

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.client_url}/metrics", timeout=2) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, lbl = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in lbl for k, v in labels.items()):
                total += float(value)
        return total


class EtcdCluster:
    """`size` etcd members on loopback. Same surface the tests need from any backend."""

    backend = "etcd"

    def __init__(self, base_dir: Path, size: int = 1, extra_args: list[str] | None = None) -> None:
        self.base_dir = base_dir
        self.extra_args = list(extra_args or [])
        ports = free_ports(2 * size)
        self.members = [
            EtcdMember(
                name=f"e{i + 1}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=base_dir / f"e{i + 1}.etcd",
                log_path=base_dir / f"e{i + 1}.log",
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def member(self, endpoint: str) -> EtcdMember:
        return next(m for m in self.members if m.endpoint == endpoint)

    def args_for(self, m: EtcdMember) -> list[str]:
        return [
            ETCD_BIN,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"synod-client-test-{self.members[0].client_port}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", "warn",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 20.0) -> EtcdCluster:
        for m in self.members:
            with open(m.log_path, "ab") as log:
                m.proc = subprocess.Popen(
                    self.args_for(m), stdout=log, stderr=subprocess.STDOUT, cwd=self.base_dir
                )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for m in self.members:
            if not m.alive():
                continue
            last: BaseException | None = None
            while True:
                try:
                    if m.status().leader:
                        break
                except grpc.RpcError as e:
                    last = e
                if not m.alive() or time.monotonic() > deadline:
                    raise TimeoutError(
                        f"etcd {m.name} not ready after {timeout}s: {last!r}\n{self.logs_tail()}"
                    )
                time.sleep(0.02)

    def kill(self, m: EtcdMember) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait(timeout=15)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.kill()
        for m in self.members:
            if m.proc is not None:
                m.proc.wait(timeout=15)

    def logs_tail(self, lines: int = 25) -> str:
        out = []
        for m in self.members:
            if m.log_path.exists():
                tail = m.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {m.name} ({'alive' if m.alive() else 'dead'}) ---")
                out.extend(tail)
        return "\n".join(out)
