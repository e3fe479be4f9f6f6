"""Router replicas and echo backends as real processes, for tests/router.

`store` (module-scoped, parametrized "synod" / "etcd") is a one-member consensus
service: Synod's (tests/support/cluster_harness.py) or a real etcd
(tests/support/etcd_harness.py). `routers` starts two `python -m synod router`
replicas on it: ``a`` with ``--bounded-load 1.25``, ``b`` without. Tests import these
fixtures into their module. Everything waits on conditions with deadlines.
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from cluster_harness import LocalCluster, free_port, wait_until
from etcd_harness import ETCD_BIN, EtcdCluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_files import TLSFiles

from synod.router.v1 import router_pb2, router_pb2_grpc

T = TypeVar("T")
SUPPORT = Path(__file__).resolve().parent
BACKENDS = ["synod", "etcd"]


@dataclass
class RouterProc:
    name: str
    endpoints: list[str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    #: serve mutual TLS and dial the consensus service with the client certificate
    tls: TLSFiles | None = None
    _channel: grpc.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RouterProc:
        args = [
            sys.executable, "-m", "synod", "--log-json", "router",
            "--listen", self.address,
            "--endpoints", ",".join(self.endpoints),
            "--namespace", "test",
            "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
            *(self.tls.server_flags() + self.tls.endpoint_flags() if self.tls else []),
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.wait(self.serving, 20, f"router {self.name} to serve")
        return self

    def serving(self) -> bool:
        r = health_pb2_grpc.HealthStub(self.channel()).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            if self.tls is not None:
                self._channel = grpc.secure_channel(self.address, self.tls.client_credentials())
            else:
                self._channel = grpc.insecure_channel(self.address)
        return self._channel

    def stub(self) -> router_pb2_grpc.RouterStub:
        return router_pb2_grpc.RouterStub(self.channel())

    def ring(self, name: str) -> router_pb2.RingState:
        resp: router_pb2.RingState = self.stub().GetRing(
            router_pb2.GetRingRequest(ring=name), timeout=5
        )
        return resp

    def member_ids(self, ring: str) -> set[str]:
        return {m.id for m in self.ring(ring).members}

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, lbl = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in lbl for k, v in labels.items()):
                total += float(value)
        return total

    def wait(self, fn: Callable[[], T | None], timeout: float, what: str) -> T:
        try:
            return wait_until(fn, timeout, what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.logs_tail()}") from None

    def logs_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        alive = self.proc is not None and self.proc.poll() is None
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join([f"--- router {self.name} ({'alive' if alive else 'dead'}) ---", *tail])

    def stop(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


@dataclass
class EchoBackend:
    """tests/support/router_echo_backend.py as a process; registered through `router`."""

    id: str
    ring: str
    router: str
    ttl: int = 2
    weight: int = 1
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    lease_id: int = 0
    granted_ttl: int = 0
    #: serve mutual TLS with the server certificate (register it yourself: router="")
    tls: TLSFiles | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EchoBackend:
        args = [
            sys.executable, str(SUPPORT / "router_echo_backend.py"),
            "--id", self.id, "--ring", self.ring, "--router", self.router,
            "--ttl", str(self.ttl), "--weight", str(self.weight),
            *(self.tls.server_flags() if self.tls is not None else []),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ)
        )
        line = self._readline(timeout)
        if not line.startswith("READY "):
            self.kill()
            raise AssertionError(f"echo backend {self.id} did not start: {line!r}")
        _, port, lease, ttl = line.split()
        self.port, self.lease_id, self.granted_ttl = int(port), int(lease), int(ttl)
        return self

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                return f"(no line after {timeout}s: {buf!r})"
            chunk = os.read(out.fileno(), 1)
            if not chunk:
                return f"(exited: {buf!r})"
            buf += chunk
        return buf.decode().strip()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


class Store:
    """A one-member consensus service: Synod's or a real etcd."""

    def __init__(self, kind: str, base: Path) -> None:
        self.kind = kind
        self._synod: LocalCluster | None = None
        self._etcd: EtcdCluster | None = None
        if kind == "synod":
            self._synod = LocalCluster(base, size=1, extra_args=["--unsafe-no-fsync"])
        else:
            self._etcd = EtcdCluster(base, size=1)

    @property
    def endpoints(self) -> list[str]:
        if self._synod is not None:
            return [m.endpoint for m in self._synod.members]
        assert self._etcd is not None
        return self._etcd.endpoints

    def start(self) -> Store:
        try:
            if self._synod is not None:
                self._synod.start()
            else:
                assert self._etcd is not None
                self._etcd.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._synod is not None:
            self._synod.stop()
        if self._etcd is not None:
            self._etcd.stop()


@dataclass
class Routers:
    a: RouterProc  # --bounded-load 1.25
    b: RouterProc
    store: Store
    base: Path
    backends: list[EchoBackend] = field(default_factory=list)

    @property
    def both(self) -> list[RouterProc]:
        return [self.a, self.b]

    def backend(
        self, id: str, ring: str, ttl: int = 2, via: RouterProc | None = None
    ) -> EchoBackend:
        b = EchoBackend(id, ring, (via or self.a).address, ttl=ttl).start()
        self.backends.append(b)
        return b

    def wait_members(self, ring: str, ids: set[str], timeout: float = 15.0) -> int:
        """Wait until both replicas show exactly `ids` in `ring`; returns the revision."""

        def same() -> int | None:
            states = [r.ring(ring) for r in self.both]
            if all({m.id for m in s.members} == ids for s in states):
                return max(s.revision for s in states)
            return None

        return self.a.wait(same, timeout, f"both routers to show {sorted(ids)} in {ring!r}")

    def wait_revision(self, revision: int, timeout: float = 15.0) -> None:
        """Wait until both replicas answer at `revision` exactly (no later writes happen)."""

        def at(r: RouterProc) -> bool:
            resp = r.stub().ListRings(router_pb2.ListRingsRequest(), timeout=2)
            return bool(resp.revision == revision)

        for r in self.both:
            r.wait(
                functools.partial(at, r),
                timeout,
                f"router {r.name} at revision {revision}",
            )

    def logs_tail(self) -> str:
        return "\n".join(r.logs_tail() for r in self.both)


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    kind = str(request.param)
    if kind == "etcd" and not shutil.which(ETCD_BIN):
        pytest.skip("etcd binary not installed")
    s = Store(kind, tmp_path_factory.mktemp(f"store-{kind}")).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def routers(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routers]:
    base = tmp_path_factory.mktemp("routers")
    a = RouterProc("a", store.endpoints, base / "router-a.log", ["--bounded-load", "1.25"])
    b = RouterProc("b", store.endpoints, base / "router-b.log")
    rs = Routers(a, b, store, base)
    try:
        a.start()
        b.start()
        yield rs
    finally:
        for be in rs.backends:
            be.kill()
        codes = [r.stop() for r in rs.both]
        assert codes == [0, 0], f"routers did not stop cleanly: {codes}\n{rs.logs_tail()}"


def status_of(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """Call `fn`, expect an RpcError, return (code, details)."""
    try:
        fn()
    except grpc.RpcError as err:
        e: Any = err
        return e.code(), e.details() or ""
    raise AssertionError("expected the call to fail")
