"""Real lock-service replicas over a real consensus backend, for tests/lock.

`LockEnv` starts a consensus cluster (Synod, via synod_backend, or real etcd,
via etcd_harness) and N replicas of `python -m synod lock` against it, each
with its own Prometheus endpoint, and waits (with deadlines) until every
replica reports SERVING on its health service. Replica logs go to files next
to the cluster's and are printed when a wait fails.

Also here:
- `FencedCounter`: a counter in the consensus store that a lock holder
  increments with one Txn guarded by its fencing token (the lock key must
  still exist with create revision == token), and that remembers the highest
  token it accepted, so a stale or overlapping holder is caught.
- `Tracker`: in-test bookkeeping of who is inside a critical section now.
- `python lock_harness.py holder ...`: a tiny lock holder process (LockSession
  from synod.client.locks) that tests can SIGSTOP / SIGCONT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from etcd_harness import EtcdCluster  # noqa: E402
from ports import free_port  # noqa: E402
from synod_backend import SynodCluster  # noqa: E402
from tls_files import TLSFiles  # noqa: E402
from waits import wait_for  # noqa: E402

from synod.client.errors import DeadlineExceeded, EtcdError, Unavailable  # noqa: E402
from synod.client.etcd import EtcdClient  # noqa: E402
from synod.client.kv import compare_create_revision, compare_mod_revision, op_get, op_put  # noqa: E402
from synod.client.locks import HeldLock, LockLost, LockSession  # noqa: E402
from synod.lock.v1 import lock_pb2, lock_pb2_grpc  # noqa: E402

T = TypeVar("T")

#: election timeout (ms) both backends' fixtures run with
ELECTION_TIMEOUT_S = 0.5


# -- backends -------------------------------------------------------------------------------


def start_backend(backend: str, base: Path, size: int) -> Any:
    """A started consensus cluster: `.endpoints` (list), `.members`, `.kill(m)`, `.stop()`."""
    base.mkdir(parents=True, exist_ok=True)
    c: Any = EtcdCluster(base, size=size) if backend == "etcd" else SynodCluster(base, size=size)
    try:
        return c.start()
    except BaseException:
        c.stop()
        raise


def leader_of(cluster: Any, timeout: float = 10.0) -> Any:
    """The member that reports itself leader (waits for one)."""
    deadline = time.monotonic() + timeout
    while True:
        for m in cluster.members:
            if not m.alive():
                continue
            try:
                st = m.status(timeout=1.0)
            except grpc.RpcError:
                continue
            if st.leader and st.leader == st.header.member_id:
                return m
        if time.monotonic() > deadline:
            raise TimeoutError(f"no leader after {timeout}s\n{cluster.logs_tail()}")
        time.sleep(0.05)


# -- lock-service replicas --------------------------------------------------------------------


@dataclass
class LockReplica:
    name: str
    port: int
    metrics_port: int
    log_path: Path
    endpoints: list[str]
    namespace: str = ""
    proc: subprocess.Popen[bytes] | None = None
    #: serve mutual TLS and dial the consensus service with the client certificate
    tls: TLSFiles | None = None
    extra_args: list[str] = field(default_factory=list)
    _channel: grpc.Channel | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [
            sys.executable, "-m", "synod", "lock",
            "--listen", self.address,
            "--endpoints", ",".join(self.endpoints),
            "--metrics-addr", f"127.0.0.1:{self.metrics_port}",
        ]  # fmt: skip
        if self.namespace:
            args += ["--namespace", self.namespace]
        if self.tls is not None:
            args += self.tls.server_flags() + self.tls.endpoint_flags()
        args += self.extra_args
        with open(self.log_path, "ab") as log:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def new_channel(self) -> grpc.Channel:
        if self.tls is not None:
            return grpc.secure_channel(self.address, self.tls.client_credentials())
        return grpc.insecure_channel(self.address)

    def serving(self) -> bool:
        with self.new_channel() as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(r.status == health_pb2.HealthCheckResponse.SERVING)

    def stub(self) -> lock_pb2_grpc.LockStub:
        """A blocking stub (for simple checks from the test thread)."""
        if self._channel is None:
            self._channel = self.new_channel()
        return lock_pb2_grpc.LockStub(self._channel)

    def metric(self, name: str) -> float:
        """Sum of the samples of `name` on this replica's Prometheus endpoint."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.partition("{")[0] == name:
                total += float(value)
        return total

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LockEnv:
    """A consensus backend plus `replicas` lock-service processes against it."""

    def __init__(self, backend: str, base: Path, size: int = 1, replicas: int = 2):
        self.backend = backend
        self.base = base
        self.cluster = start_backend(backend, base / "cluster", size)
        self.replicas = [
            LockReplica(
                name=f"lock{i + 1}",
                port=free_port(),
                metrics_port=free_port(),
                log_path=base / f"lock{i + 1}.log",
                endpoints=list(self.cluster.endpoints),
            )
            for i in range(replicas)
        ]

    @property
    def etcd_endpoints(self) -> list[str]:
        return list(self.cluster.endpoints)

    @property
    def lock_endpoints(self) -> list[str]:
        return [r.address for r in self.replicas]

    def start(self, timeout: float = 20.0) -> LockEnv:
        for r in self.replicas:
            r.start()
        deadline = time.monotonic() + timeout
        for r in self.replicas:
            while True:
                try:
                    if r.serving():
                        break
                except grpc.RpcError:
                    pass
                if not r.alive():
                    raise RuntimeError(f"{r.name} exited before serving\n{self.logs_tail()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{r.name} not serving after {timeout}s\n{self.logs_tail()}")
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()
        self.cluster.stop()

    def metric(self, name: str) -> float:
        """Sum of `name` over the live replicas."""
        return sum(r.metric(name) for r in self.replicas if r.alive())

    def session(self, ttl: int = 10, first: int = 0, timeout: float = 10.0) -> LockSession:
        """A LockSession whose first replica is replicas[first] (the others are failovers)."""
        eps = self.lock_endpoints
        return LockSession(eps[first:] + eps[:first], ttl=ttl, timeout=timeout)

    def etcd(self, timeout: float = 5.0) -> EtcdClient:
        return EtcdClient(self.etcd_endpoints, timeout=timeout)

    async def inspect(self, name: str, replica: int = 0) -> lock_pb2.InspectResponse:
        async with grpc.aio.insecure_channel(self.replicas[replica].address) as ch:
            resp: lock_pb2.InspectResponse = await lock_pb2_grpc.LockStub(ch).Inspect(
                lock_pb2.InspectRequest(name=name), timeout=5
            )
            return resp

    async def wait_waiters(self, name: str, n: int, timeout: float = 20.0) -> None:
        """Until Inspect (on any live replica) shows exactly `n` waiters for `name`."""
        live = next(i for i, r in enumerate(self.replicas) if r.alive())

        async def check() -> bool:
            return len((await self.inspect(name, live)).waiters) == n

        await wait_for(check, timeout, f"{n} waiters on {name!r}\n")

    def logs_tail(self, lines: int = 25) -> str:
        out = [self.cluster.logs_tail(lines)]
        for r in self.replicas:
            if r.log_path.exists():
                tail = r.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {r.name} ({'alive' if r.alive() else 'dead'}) ---")
                out.extend(tail)
        return "\n".join(out)


# -- the fenced resource ----------------------------------------------------------------------


class StaleToken(AssertionError):
    """The fenced resource saw a token lower than one it already accepted."""


class FencedCounter:
    """A counter key in the consensus store, written only under a live grant.

    Each increment is one Txn: the lock key must still have create revision
    == token (the grant is alive) and the counter must be unchanged since we
    read it (nobody else wrote meanwhile: a second writer means two holders).
    The value records the writer's token, so an increment whose outcome is
    unknown (leader died mid-call) can be resolved exactly by reading it back.
    """

    def __init__(self, etcd: EtcdClient, key: str):
        self.etcd = etcd
        self.key = key.encode()
        self.highest_token = 0
        self.accepted = 0

    @staticmethod
    def parse(value: bytes) -> tuple[int, int]:
        if not value:
            return 0, 0
        n, _, tok = value.decode().partition(":")
        return int(n), int(tok)

    async def read(self) -> tuple[int, int, int]:
        """(count, token of the last writer, mod revision)."""
        r = await self.etcd.get(self.key)
        if not r.kvs:
            return 0, 0, 0
        n, tok = self.parse(r.kvs[0].value)
        return n, tok, r.kvs[0].mod_revision

    async def increment(self, held: HeldLock, deadline: float = 20.0) -> int:
        """Add one under `held`; retries unknown outcomes; LockLost if the grant is gone."""
        if held.token < self.highest_token:
            raise StaleToken(f"token {held.token} < highest accepted {self.highest_token}")
        async with asyncio.timeout(deadline):
            while True:
                try:
                    n, _, mod = await self.read()
                except (Unavailable, DeadlineExceeded):
                    await asyncio.sleep(0.05)
                    continue
                try:
                    resp = await self.etcd.txn(
                        [
                            compare_create_revision(held.key, "==", held.token),
                            compare_mod_revision(self.key, "==", mod),
                        ],
                        [op_put(self.key, f"{n + 1}:{held.token}")],
                        [op_get(held.key), op_get(self.key)],
                    )
                except (Unavailable, DeadlineExceeded):
                    # Outcome unknown: we still hold the lock (or the read below
                    # will tell), so the counter shows whether our write landed.
                    await asyncio.sleep(0.05)
                    try:
                        n2, tok2, _ = await self.read()
                    except EtcdError:
                        continue
                    if n2 == n + 1 and tok2 == held.token:
                        return self._accept(held, n + 1)
                    continue
                if resp.succeeded:
                    return self._accept(held, n + 1)
                lock_kvs = resp.responses[0].response_range.kvs
                if not lock_kvs or lock_kvs[0].create_revision != held.token:
                    raise LockLost(f"{held.name!r} token {held.token} no longer held")
                raise AssertionError(
                    f"counter changed under holder of token {held.token}: two writers at once"
                )

    def _accept(self, held: HeldLock, value: int) -> int:
        if held.token <= self.highest_token:
            raise StaleToken(f"token {held.token} <= highest accepted {self.highest_token}")
        self.highest_token = held.token
        self.accepted += 1
        return value


class Tracker:
    """Who is inside the critical section now; fails on a forbidden overlap."""

    def __init__(self, limit: int = 1):
        self.limit = limit
        self.exclusive = 0
        self.shared = 0
        self.max_exclusive = 0
        self.max_shared = 0
        self.tokens: list[int] = []

    def enter(self, held: HeldLock, shared: bool = False) -> None:
        self.tokens.append(held.token)
        if shared:
            assert self.exclusive == 0, f"reader (token {held.token}) entered while a writer holds"
            self.shared += 1
        else:
            assert self.shared == 0, f"writer (token {held.token}) entered while readers hold"
            assert self.exclusive < self.limit, (
                f"token {held.token}: {self.exclusive} holders already (limit {self.limit})"
            )
            self.exclusive += 1
        self.max_exclusive = max(self.max_exclusive, self.exclusive)
        self.max_shared = max(self.max_shared, self.shared)

    def leave(self, shared: bool = False) -> None:
        if shared:
            self.shared -= 1
        else:
            self.exclusive -= 1


# -- a holder process, for SIGSTOP tests ---------------------------------------------------------


def spawn_holder(env: LockEnv, name: str, ttl: int, log: Path) -> subprocess.Popen[str]:
    """Start `lock_harness.py holder`; it prints one JSON line once it holds `name`."""
    errlog = open(log, "a")  # noqa: SIM115 - owned by the process
    p = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "holder",
            "--lock-endpoints",
            ",".join(env.lock_endpoints),
            "--etcd-endpoints",
            ",".join(env.etcd_endpoints),
            "--name",
            name,
            "--ttl",
            str(ttl),
        ],  # fmt: skip
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=errlog,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    errlog.close()
    return p


async def _holder(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    async with EtcdClient(args.etcd_endpoints.split(",")) as etcd:
        async with LockSession(args.lock_endpoints.split(","), ttl=args.ttl) as s:
            held = await s.acquire(args.name, timeout=30)
            print(json.dumps({"token": held.token, "key": held.key.decode()}), flush=True)
            # Wait for the test to say "put" (it SIGSTOPs us in between).
            await loop.run_in_executor(None, sys.stdin.readline)
            try:
                rev = await held.guarded_put(etcd, f"{args.name}-resource", "from-old-holder")
                print(json.dumps({"put": "ok", "revision": rev}), flush=True)
            except LockLost as e:
                print(json.dumps({"put": "lost", "error": str(e)}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("holder")
    h.add_argument("--lock-endpoints", required=True)
    h.add_argument("--etcd-endpoints", required=True)
    h.add_argument("--name", required=True)
    h.add_argument("--ttl", type=int, default=2)
    args = p.parse_args()
    asyncio.run(_holder(args))


if __name__ == "__main__":
    main()
