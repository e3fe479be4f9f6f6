"""The processes of a checking run: consensus members (each in its network namespace,
or on its own loopback address behind a proxy: see network.py), lock-service replicas
and router replicas, with the nemesis's levers on them.

Members listen on their own address (client port 2379; peer port 2380, one
more per re-add, because a member's id derives from its peer URL and a
removed id never comes back). Lock and router replicas are ordinary processes
in the root namespace on free loopback ports; they reach the members directly
(over the bridge), like the harness's clients.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from synod.check.network import Network
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.ports import free_loopback_ports

log = structlog.get_logger("synod.check.cluster")

#: answers after which a membership call is tried again (on another member, later)
_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _retryable(e: grpc.RpcError) -> bool:
    # "not leader": the member forwarded to a leader that had just stepped down.
    not_leader = e.code() == grpc.StatusCode.FAILED_PRECONDITION and "not leader" in (
        e.details() or ""
    )
    return e.code() in _RETRY or not_leader


CLIENT_PORT = 2379
PEER_PORT = 2380




@dataclass
class Proc:
    """One process we start, kill, pause and restart."""

    name: str
    kind: str  # consensus | lock | router
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                start_new_session=True,  # a Ctrl-C of the harness is the harness's to handle
            )
        self.paused = False

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            if self.paused:
                self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait(timeout=15)
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        if self.paused:
            self.popen.send_signal(signal.SIGCONT)
            self.paused = False
        self.popen.terminate()
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=15)


@dataclass
class Member(Proc):
    address: str = ""
    data_dir: Path = Path()
    peer_port: int = PEER_PORT
    #: how many times this member was removed and re-added (a fresh identity each time)
    generation: int = 0
    removed: bool = False
    extra_args: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"


@dataclass
class Replica(Proc):
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def _grpc_ok(endpoint: str, fn: Callable[[grpc.Channel], bool]) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            return fn(ch)
    except grpc.RpcError:
        return False


def serving(endpoint: str, timeout: float = 1.0) -> bool:
    def check(ch: grpc.Channel) -> bool:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

    return _grpc_ok(endpoint, check)


def wait_until(what: str, fn: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


class ChaosCluster:
    """Members in namespaces of ``net``, lock and router replicas; all under ``workdir``."""

    def __init__(
        self,
        net: Network,
        workdir: Path,
        *,
        lock_replicas: int = 2,
        router_replicas: int = 1,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        member_args: list[str] | None = None,
        token: str = "synod-check",
    ):
        self.net = net
        self.workdir = workdir
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.token = token
        self.members = [
            Member(
                name=m,
                kind="consensus",
                log_path=workdir / f"{m}.log",
                address=net.address(m),
                data_dir=workdir / "data" / m,
                extra_args=list(member_args or []),
            )
            for m in net.members
        ]
        ports = free_loopback_ports(lock_replicas + router_replicas)
        self.locks = [
            Replica(name=f"lock{i + 1}", kind="lock", log_path=workdir / f"lock{i + 1}.log", port=p)
            for i, p in enumerate(ports[:lock_replicas])
        ]
        self.routers = [
            Replica(
                name=f"router{i + 1}",
                kind="router",
                log_path=workdir / f"router{i + 1}.log",
                port=p,
            )
            for i, p in enumerate(ports[lock_replicas:])
        ]

    # --- names and addresses -----------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def lock_endpoints(self) -> list[str]:
        return [r.endpoint for r in self.locks]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def replica(self, name: str) -> Replica:
        return next(r for r in [*self.locks, *self.routers] if r.name == name)

    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members if not m.removed)

    # --- starting ----------------------------------------------------------------

    def member_argv(self, m: Member, state: str = "new") -> list[str]:
        return [
            *self.net.exec_prefix(m.name),
            sys.executable, "-m", "synod", "--log-json", "consensus",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://{m.address}:{CLIENT_PORT}",
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--unsafe-no-fsync",  # kill -9 loses no acknowledged write: the page cache survives
            *m.extra_args,
        ]  # fmt: skip

    def start_member(self, m: Member, state: str = "new") -> None:
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        m.start(self.member_argv(m, state), self.net.member_env(m.name))

    def start_replica(self, r: Replica) -> None:
        endpoints = ",".join(self.endpoints)
        r.start(
            [
                sys.executable, "-m", "synod", "--log-json", r.kind,
                "--listen", r.endpoint, "--endpoints", endpoints,
            ]
        )  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        for m in self.members:
            self.start_member(m)
        self.wait_members(timeout)
        for r in [*self.locks, *self.routers]:
            self.start_replica(r)
        for r in [*self.locks, *self.routers]:
            wait_until(f"{r.name} to serve", partial(serving, r.endpoint), timeout)

    def wait_members(self, timeout: float) -> None:
        for m in self.members:
            if not m.removed:
                wait_until(f"{m.name} to serve", partial(serving, m.endpoint), timeout)
        self.leader(timeout)

    def stop(self) -> None:
        for p in [*self.routers, *self.locks, *self.members]:
            try:
                p.stop(grace=3.0)
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                log.warning("stop_failed", process=p.name, error=repr(e))

    # --- looking ----------------------------------------------------------------

    def status(self, m: Member, timeout: float = 1.0) -> rpc_pb2.StatusResponse | None:
        try:
            with grpc.insecure_channel(m.endpoint) as ch:
                st: rpc_pb2.StatusResponse = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                    rpc_pb2.StatusRequest(), timeout=timeout
                )
                return st
        except grpc.RpcError:
            return None

    def find_leader(self) -> Member | None:
        """The member that says it leads, among those alive and not paused."""
        for m in self.members:
            if m.removed or not m.alive() or m.paused:
                continue
            st = self.status(m)
            if st is not None and st.leader and st.leader == st.header.member_id:
                return m
        return None

    def leader(self, timeout: float = 30.0) -> Member:
        found = wait_until("a leader", self.find_leader, timeout)
        assert isinstance(found, Member)
        return found

    # --- membership --------------------------------------------------------------

    def _cluster_call(
        self, fn: Callable[[rpc_pb2_grpc.ClusterStub], object], timeout: float = 30.0
    ) -> object:
        """Call ``fn`` on some live member, trying each, again and again until ``timeout``:
        right after a fault the cluster may be between leaders ("no leader").
        Other errors are the answer, and are raised."""
        deadline = time.monotonic() + timeout
        last: grpc.RpcError | None = None
        while True:
            for m in self.members:
                if m.removed or not m.alive() or m.paused:
                    continue
                try:
                    with grpc.insecure_channel(m.endpoint) as ch:
                        return fn(rpc_pb2_grpc.ClusterStub(ch))
                except grpc.RpcError as e:
                    if not _retryable(e):
                        raise
                    last = e
            if time.monotonic() > deadline:
                raise RuntimeError(f"no member accepted the membership call: {last!r}")
            time.sleep(0.2)

    def member_list(self) -> list[rpc_pb2.Member]:
        resp = self._cluster_call(lambda s: s.MemberList(rpc_pb2.MemberListRequest(), timeout=5))
        assert isinstance(resp, rpc_pb2.MemberListResponse)
        return list(resp.members)

    def entry_of(self, m: Member) -> rpc_pb2.Member | None:
        """m's entry in the member list, whatever its generation: each member has its
        own address, and only one generation of it is ever in the list at a time."""
        for mm in self.member_list():
            if any(urlparse(u).hostname == m.address for u in mm.peerURLs):
                return mm
        return None

    def remove_member(self, m: Member) -> None:
        """MemberRemove (answered once applied), then stop the process and drop its data."""
        entry = self.entry_of(m)
        if entry is None:
            raise RuntimeError(f"{m.name} ({m.address}) is not in the member list")
        mid = int(entry.ID)

        def remove(s: rpc_pb2_grpc.ClusterStub) -> object:
            return s.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=mid), timeout=10)

        try:
            self._cluster_call(remove)
        except grpc.RpcError as e:
            # NOT_FOUND after a retry: an attempt whose answer was lost removed it.
            if e.code() != grpc.StatusCode.NOT_FOUND or self.entry_of(m) is not None:
                raise
        self.forget(m)

    def forget(self, m: Member) -> None:
        """m is out of the cluster: stop its process and drop its data."""
        m.removed = True
        m.kill()
        shutil.rmtree(m.data_dir, ignore_errors=True)

    def add_member(self, m: Member) -> None:
        """MemberAdd with a fresh peer URL, then start it empty with state ``existing``.

        If m is in the member list already (an add whose answer was lost), that entry
        is the one started."""
        entry = self.entry_of(m)
        if entry is not None:
            port = urlparse(entry.peerURLs[0]).port
            m.peer_port = port if port is not None else m.peer_port
        else:
            m.generation += 1
            m.peer_port = PEER_PORT + m.generation

            def add(s: rpc_pb2_grpc.ClusterStub) -> object:
                return s.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m.peer_url]), timeout=10)

            try:
                self._cluster_call(add)
            except grpc.RpcError as e:
                # "Peer URLs already exists": an attempt whose answer was lost added it.
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or self.entry_of(m) is None:
                    raise
        m.removed = False
        self.start_member(m, state="existing")

    def reconcile(self) -> None:
        """Make the harness's view match the member list: a member the cluster no longer
        lists (a removal whose answer was lost) is stopped and its data dropped."""
        for m in self.members:
            if not m.removed and self.entry_of(m) is None:
                log.warning("member_not_listed", member=m.name)
                self.forget(m)
