"""The two systems under test, each a set of real processes on loopback.

`synod_stack` is what users run: 3 consensus members with fsync on (the
default), 2 lock-service replicas and 2 router replicas. `etcd_stack` is the
alternative they would pick: 3 members of the Debian `etcd` binary (3.4 always
fsyncs), plus 2 replicas of our lock service pointed at etcd, so the lock
scenarios compare the two consensus stores under the same lock layer. Both
use the same Raft timing (heartbeat 100 ms, election 1000 ms: etcd's
defaults, and Synod's).

Processes are started in their own session so a Ctrl-C at the terminal
reaches only the bench, which then stops them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.ports import free_loopback_ports as free_ports

HEARTBEAT_MS = 100
ELECTION_MS = 1000




@dataclass
class Proc:
    kind: str  # member | lock | router
    name: str
    port: int
    args: list[str]
    log: Path
    data_dir: Path | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen is not None else 0

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def send_signal(self, sig: int) -> None:
        """Send `sig` and return at once (SIGSTOP / SIGCONT)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(timeout=20)


def _member_status(p: Proc, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
    try:
        with grpc.insecure_channel(p.address) as ch:
            st: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
            return st
    except grpc.RpcError:
        return None


def _serving(p: Proc, timeout: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(p.address) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


@dataclass
class Stack:
    """One system under test: consensus members, plus lock (and router) replicas on them."""

    system: str  # synod | etcd
    base_dir: Path
    members: list[Proc]
    locks: list[Proc] = field(default_factory=list)
    routers: list[Proc] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.address for m in self.members]

    @property
    def lock_endpoints(self) -> list[str]:
        return [p.address for p in self.locks]

    @property
    def router_endpoints(self) -> list[str]:
        return [p.address for p in self.routers]

    @property
    def procs(self) -> list[Proc]:
        return [*self.members, *self.locks, *self.routers]

    def start(self, timeout: float = 90.0) -> Stack:
        # All at once: lock and router replicas wait for a consensus leader by themselves.
        for p in self.procs:
            p.start()
        self.wait_members(timeout)
        self._wait(lambda: all(_serving(p) for p in [*self.locks, *self.routers]), timeout,
                   "lock and router replicas to serve")  # fmt: skip
        return self

    def _wait(self, ok: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dead = [p for p in self.procs if p.popen is not None and p.popen.poll() is not None]
            if dead:
                raise RuntimeError(
                    f"{self.system}: {dead[0].name} exited with code "
                    f"{dead[0].popen.returncode if dead[0].popen else None}\n{self.logs_tail()}"
                )
            if callable(ok) and ok():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.system}: timed out waiting for {what}\n"
                                   f"{self.logs_tail()}")  # fmt: skip
            time.sleep(0.1)

    def wait_members(self, timeout: float = 60.0) -> None:
        """Every live member answers Status and knows a leader."""

        def ready() -> bool:
            for m in self.members:
                if not m.alive():
                    continue
                st = _member_status(m)
                if st is None or not st.leader:
                    return False
            return True

        self._wait(ready, timeout, "every member to know a leader")

    def leader(self, timeout: float = 30.0) -> Proc:
        found: list[Proc] = []

        def find() -> bool:
            for m in self.members:
                if m.alive():
                    st = _member_status(m)
                    if st is not None and st.leader and st.leader == st.header.member_id:
                        found.append(m)
                        return True
            return False

        self._wait(find, timeout, "a leader")
        return found[0]

    def stop(self) -> None:
        for p in [*self.locks, *self.routers, *self.members]:  # clients of consensus first
            if p.alive():
                assert p.popen is not None
                p.popen.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p.popen is None:
                continue
            try:
                p.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for p in self.procs:
            if p.log.exists():
                tail = p.log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {p.name} ({'alive' if p.alive() else 'dead'}) ---")
                out.extend(tail)
        return "\n".join(out)


def _service_replicas(
    kind: str, n: int, ports: list[int], endpoints: list[str], base: Path
) -> list[Proc]:
    py = [sys.executable, "-m", "synod"]
    return [
        Proc(
            kind, f"{kind}{i + 1}", ports[i],
            [*py, kind, "--listen", f"127.0.0.1:{ports[i]}", "--endpoints", ",".join(endpoints)],
            base / f"{kind}{i + 1}.log",
        )
        for i in range(n)
    ]  # fmt: skip


def synod_stack(base: Path, size: int = 3) -> Stack:
    base.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * size + 4)
    peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
    cluster = ",".join(f"m{i + 1}={peers[i]}" for i in range(size))
    members = [
        Proc(
            "member", f"m{i + 1}", ports[2 * i],
            [sys.executable, "-m", "synod", "consensus", "--name", f"m{i + 1}",
             "--data-dir", str(base / f"m{i + 1}"),
             "--listen-client-urls", f"http://127.0.0.1:{ports[2 * i]}",
             "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
             "--initial-cluster", cluster,
             "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS)],
            base / f"m{i + 1}.log", data_dir=base / f"m{i + 1}",
        )
        for i in range(size)
    ]  # fmt: skip
    eps = [m.address for m in members]
    return Stack(
        "synod", base, members,
        locks=_service_replicas("lock", 2, ports[2 * size:2 * size + 2], eps, base),
        routers=_service_replicas("router", 2, ports[2 * size + 2:], eps, base),
    )  # fmt: skip


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_stack(base: Path, size: int = 3) -> Stack:
    etcd = etcd_binary()
    if etcd is None:
        raise FileNotFoundError("etcd is not installed (Debian: etcd-server)")
    base.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * size + 2)
    clients = [f"http://127.0.0.1:{ports[2 * i]}" for i in range(size)]
    peers = [f"http://127.0.0.1:{ports[2 * i + 1]}" for i in range(size)]
    cluster = ",".join(f"e{i + 1}={peers[i]}" for i in range(size))
    members = [
        Proc(
            "member", f"e{i + 1}", ports[2 * i],
            [etcd, "--name", f"e{i + 1}", "--data-dir", str(base / f"e{i + 1}"),
             "--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
             "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
             "--initial-cluster", cluster, "--initial-cluster-state", "new",
             "--initial-cluster-token", f"synod-bench-{ports[0]}",
             "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
             "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"],
            base / f"e{i + 1}.log", data_dir=base / f"e{i + 1}",
        )
        for i in range(size)
    ]  # fmt: skip
    eps = [m.address for m in members]
    return Stack(
        "etcd", base, members, locks=_service_replicas("lock", 2, ports[2 * size:], eps, base)
    )
