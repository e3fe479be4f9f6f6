"""Real consensus members as separate processes on loopback, for tests.

`LocalCluster` picks free ports, starts `python -m synod consensus` once per
member with data under a temporary directory, and waits on conditions (with
deadlines) rather than sleeping. Member logs go to files next to their data,
and are printed when a wait fails, so a failing test shows what the members
said.

With `tls=` (tls_files.TLSFiles) every member serves its client API and peers
over mutual TLS on https:// URLs, and the harness dials it with the client
certificate; a member's own `tls` may differ (a wrong peer certificate).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ports import free_port, free_ports
from tls_files import TLSFiles
from waits import wait_until

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc

__all__ = ["LocalCluster", "MemberProc", "etcdctl", "free_port", "wait_until"]

T = TypeVar("T")


@dataclass
class MemberProc:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)
    tls: TLSFiles | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def channel(self) -> grpc.Channel:
        if self.tls is not None:
            return grpc.secure_channel(self.endpoint, self.tls.client_credentials())
        return grpc.insecure_channel(self.endpoint)

    def kv(self) -> rpc_pb2_grpc.KVStub:
        return rpc_pb2_grpc.KVStub(self.channel())

    def status(self, timeout: float = 2.0) -> rpc_pb2.StatusResponse:
        with self.channel() as ch:
            st: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
            return st

    def serving(self) -> bool:
        with self.channel() as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(r.status == health_pb2.HealthCheckResponse.SERVING)


def etcdctl(
    cluster: LocalCluster,
    *args: str,
    stdin: str | None = None,
    check: bool = True,
    endpoints: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real etcdctl (v3 API) against the cluster; fail with its stderr and the logs."""
    env = dict(os.environ, ETCDCTL_API="3")
    tls = cluster.tls.etcdctl_flags() if cluster.tls is not None else []
    p = subprocess.run(
        [
            "etcdctl",
            f"--endpoints={endpoints or cluster.endpoints}",
            "--command-timeout=10s",
            *tls,
            *args,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if check and p.returncode != 0:
        raise AssertionError(f"etcdctl {' '.join(args)} failed: {p.stderr}\n{cluster.logs_tail()}")
    return p


class LocalCluster:
    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        extra_args: list[str] | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        tls: TLSFiles | None = None,
    ):
        self.base_dir = base_dir
        self.tls = tls
        self.extra_args = list(extra_args or [])
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        ports = free_ports(2 * size)  # all at once: never the same port twice
        self.members = [
            MemberProc(
                name=f"m{i + 1}",
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=base_dir / f"m{i + 1}",
                log_path=base_dir / f"m{i + 1}.log",
                tls=tls,
            )
            for i in range(size)
        ]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> str:
        """host:port of every member (https:// ones when the cluster runs TLS)."""
        if self.tls is not None:
            return ",".join(m.client_url for m in self.members)
        return ",".join(m.endpoint for m in self.members)

    def args_for(self, m: MemberProc) -> list[str]:
        return [
            sys.executable, "-m", "synod", "consensus",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            *(m.tls.server_flags() + m.tls.peer_flags() if m.tls is not None else []),
            *self.extra_args,
            *m.extra_args,
        ]  # fmt: skip

    def new_member(self, name: str) -> MemberProc:
        """A further member (not started) that will join with --initial-cluster-state existing."""
        client_port, peer_port = free_ports(2)
        m = MemberProc(
            name=name,
            client_port=client_port,
            peer_port=peer_port,
            data_dir=self.base_dir / name,
            log_path=self.base_dir / f"{name}.log",
            extra_args=["--initial-cluster-state", "existing"],
            tls=self.tls,
        )
        self.members.append(m)
        return m

    def start_member(self, m: MemberProc) -> None:
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        m.proc = subprocess.Popen(self.args_for(m), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    # Deadlines, not delays: a member on a loaded 2-core machine can take 15-20 s
    # just to import and bind, so a short one fails tests that are otherwise fine.
    def start(self, timeout: float = 60.0) -> LocalCluster:
        for m in self.members:
            self.start_member(m)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        for m in self.members:
            if m.alive():
                self.wait(m.serving, timeout, f"{m.name} to serve")

    def wait(self, fn: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_until(fn, timeout, what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.logs_tail()}") from None

    def leader(self, timeout: float = 10.0) -> MemberProc:
        def find() -> MemberProc | None:
            for m in self.members:
                if m.alive():
                    try:
                        st = m.status(timeout=1)
                    except grpc.RpcError:
                        continue
                    if st.leader and st.leader == st.header.member_id:
                        return m
            return None

        return self.wait(find, timeout, "a leader")

    def kill(self, m: MemberProc, sig: int = signal.SIGKILL) -> None:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            m.proc.wait(timeout=15)

    def stop(self) -> None:
        for m in self.members:
            if m.alive():
                assert m.proc is not None
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()

    def logs_tail(self, lines: int = 25) -> str:
        out = []
        for m in self.members:
            if m.log_path.exists():
                tail = m.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {m.name} ({'alive' if m.alive() else 'dead'}) ---")
                out.extend(tail)
        return "\n".join(out)
