"""`synod up`: a whole local Synod on loopback, as separate processes.

Three consensus members, two lock-service replicas and two router replicas,
data under ./.synod/ (kept across runs; --clean starts afresh). It waits until
every process reports SERVING on the standard gRPC health service, prints one
table, and then watches: a process that exits is reported at once. Ctrl-C
(or SIGTERM) stops everything, leader last.

Ports, from --base-port B (default 2379): member i (1..3) serves clients on
B + 2(i-1) and peers on B + 2(i-1) + 1; lock replicas on B + 6 and B + 7;
router replicas on B + 8 and B + 9.

With --tls every port speaks mutual TLS: a throwaway CA and certificates for
127.0.0.1 are made afresh in DATA/tls/ at each start (synod.devcerts, which
needs the `cryptography` package), and the printed commands use them.
"""

from __future__ import annotations

import argparse
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
from synod.ports import port_free
from synod.tls import ClientTLS


@dataclass(frozen=True)
class UpTLS:
    """The files `synod up --tls` makes: one CA, a server and a client certificate."""

    ca_file: str
    cert_file: str  # every server's certificate, also the peers' and lock/router's client one
    key_file: str
    client_cert_file: str  # for synodctl, etcdctl and the health checks here
    client_key_file: str

    @classmethod
    def make(cls, directory: Path) -> UpTLS:
        from synod.devcerts import new_authority

        ca = new_authority(directory, "synod-up")
        server = ca.issue("server", hosts=["127.0.0.1", "localhost"])
        client = ca.issue("client", server=False)
        return cls(ca.ca_file, server.cert_file, server.key_file, client.cert_file, client.key_file)

    def server_flags(self, prefix: str = "") -> list[str]:
        return [
            f"--{prefix}cert-file", self.cert_file,
            f"--{prefix}key-file", self.key_file,
            f"--{prefix}trusted-ca-file", self.ca_file,
        ]  # fmt: skip

    def endpoint_flags(self) -> list[str]:
        return [
            "--endpoints-ca-file", self.ca_file,
            "--endpoints-cert-file", self.cert_file,
            "--endpoints-key-file", self.key_file,
        ]  # fmt: skip

    def client_flags(self) -> str:
        """etcdctl's and synodctl's spelling."""
        return (
            f"--cacert {self.ca_file} --cert {self.client_cert_file} --key {self.client_key_file}"
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return ClientTLS(self.ca_file, self.client_cert_file, self.client_key_file).credentials()


@dataclass
class Proc:
    kind: str  # consensus | lock | router
    name: str
    port: int
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    reported_dead: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    #: how the health checks here dial it (None: plaintext)
    credentials: grpc.ChannelCredentials | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-port", type=int, default=2379, help="first of 10 ports (default 2379)")
    p.add_argument("--data-dir", default=".synod", help="where members keep data and logs")
    p.add_argument("--clean", action="store_true", help="delete --data-dir first")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for everything to be healthy"
    )
    p.add_argument(
        "--no-router",
        action="store_true",
        help="do not start the router replicas",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS everywhere, with a throwaway CA made in DATA_DIR/tls "
        "(needs the cryptography package: pip install 'synod[devcerts]')",
    )


def plan(base: int, data: Path, with_router: bool, tls: UpTLS | None = None) -> list[Proc]:
    py = [sys.executable, "-m", "synod"]
    scheme = "https" if tls is not None else "http"
    members = [(f"m{i}", base + 2 * (i - 1), base + 2 * (i - 1) + 1) for i in (1, 2, 3)]
    cluster = ",".join(f"{n}={scheme}://127.0.0.1:{peer}" for n, _, peer in members)
    endpoints = ",".join(f"{scheme}://127.0.0.1:{c}" for _, c, _ in members)
    member_tls = tls.server_flags() + tls.server_flags("peer-") if tls is not None else []
    service_tls = tls.server_flags() + tls.endpoint_flags() if tls is not None else []
    procs = []
    for name, client, peer in members:
        procs.append(
            Proc(
                "consensus", name, client,
                [*py, "consensus", "--name", name, "--data-dir", str(data / name),
                 "--listen-client-urls", f"{scheme}://127.0.0.1:{client}",
                 "--listen-peer-urls", f"{scheme}://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"{scheme}://127.0.0.1:{peer}",
                 "--initial-cluster", cluster, *member_tls],
                data / f"{name}.log",
                extra={"peer": f"127.0.0.1:{peer}"},
            )
        )  # fmt: skip
    for i, port in enumerate((base + 6, base + 7), 1):
        procs.append(
            Proc(
                "lock", f"lock{i}", port,
                [*py, "lock", "--listen", f"127.0.0.1:{port}", "--endpoints", endpoints,
                 *service_tls],
                data / f"lock{i}.log",
            )
        )  # fmt: skip
    if with_router:
        for i, port in enumerate((base + 8, base + 9), 1):
            procs.append(
                Proc(
                    "router", f"router{i}", port,
                    [*py, "router", "--listen", f"127.0.0.1:{port}", "--endpoints", endpoints,
                     *service_tls],
                    data / f"router{i}.log",
                )
            )  # fmt: skip
    if tls is not None:
        creds = tls.credentials()
        for p in procs:
            p.credentials = creds
    return procs


def _channel(p: Proc) -> grpc.Channel:
    if p.credentials is not None:
        return grpc.secure_channel(p.address, p.credentials)
    return grpc.insecure_channel(p.address)


def healthy(p: Proc, timeout: float = 1.0) -> bool:
    try:
        with _channel(p) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        return bool(r.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def consensus_role(p: Proc) -> str:
    try:
        with _channel(p) as ch:
            st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
    except grpc.RpcError:
        return "unreachable"
    if st.isLearner:
        return "learner"
    return "leader" if st.leader and st.leader == st.header.member_id else "follower"


def table(procs: list[Proc]) -> str:
    rows = [("SERVICE", "NAME", "ADDRESS", "STATE")]
    for p in procs:
        # A generous deadline: a busy process answering slowly is still healthy.
        state = "healthy" if healthy(p, timeout=5.0) else "NOT SERVING"
        if p.kind == "consensus":
            state = f"{consensus_role(p)}, {state}"
        rows.append((p.kind, p.name, p.address, state))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def run(args: argparse.Namespace) -> int:
    data = Path(args.data_dir)
    if args.clean and data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    with_router = not args.no_router
    # Member ids come from peer URLs, whose scheme TLS changes: a data directory
    # made one way cannot be started the other.
    mode_file = data / "mode"
    mode = "tls" if args.tls else "plaintext"
    if mode_file.exists() and mode_file.read_text().strip() != mode:
        print(
            f"synod up: {data} was made {mode_file.read_text().strip()}; start it the same way, "
            f"or use --clean or another --data-dir for {mode}",
            file=sys.stderr,
        )
        return 2
    tls: UpTLS | None = None
    if args.tls:
        try:
            tls = UpTLS.make(data / "tls")
        except RuntimeError as e:
            print(f"synod up: --tls: {e}", file=sys.stderr)
            return 2
    procs = plan(args.base_port, data, with_router, tls)
    taken = [
        port
        for p in procs
        for port in [p.port, *(int(v.rsplit(":", 1)[1]) for v in p.extra.values())]
        if not port_free(port)
    ]
    if taken:
        print(
            f"synod up: port(s) {', '.join(map(str, taken))} on 127.0.0.1 are already in use "
            f"(another synod up or etcd?). Stop that, or pick other ports: "
            f"synod up --base-port {args.base_port + 100}",
            file=sys.stderr,
        )
        return 2
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    mode_file.write_text(mode + "\n")
    for p in procs:
        with open(p.log, "ab") as log:
            p.popen = subprocess.Popen(
                p.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
    print(f"synod up: starting {len(procs)} processes (logs in {data}/*.log) ...", flush=True)
    deadline = time.monotonic() + args.timeout
    pending = list(procs)
    code = 0
    while pending and not stopping:
        pending = [p for p in pending if not healthy(p)]
        dead = [p for p in procs if p.popen is not None and p.popen.poll() is not None]
        if dead or time.monotonic() > deadline:
            for p in dead:
                rc = p.popen.returncode if p.popen is not None else None
                print(f"synod up: {p.name} exited with code {rc}; see {p.log}", file=sys.stderr)
            if not dead:
                names = ", ".join(p.name for p in pending)
                print(f"synod up: not healthy after {args.timeout:.0f}s: {names}", file=sys.stderr)
            code = 1
            stopping = True
            break
        time.sleep(0.2)
    if not stopping:
        endpoints = ",".join(p.address for p in procs if p.kind == "consensus")
        locks = ",".join(p.address for p in procs if p.kind == "lock")
        routers = ",".join(p.address for p in procs if p.kind == "router")
        certs = f" {tls.client_flags()}" if tls is not None else ""
        synodctl = (
            f"  synodctl --endpoints {endpoints} --lock-endpoints {locks}"
            + (f" --router-endpoints {routers}" if routers else "")
            + f"{certs} status\n"
        )
        if tls is not None:
            endpoints = ",".join(f"https://{p.address}" for p in procs if p.kind == "consensus")
        print("synod up: all healthy\n")
        print(table(procs))
        print(
            "\nNext steps:\n"
            f"  ETCDCTL_API=3 etcdctl --endpoints={endpoints}{certs} put hello world\n"
            f"  ETCDCTL_API=3 etcdctl --endpoints={endpoints}{certs} endpoint status -w table\n"
            f"  ETCDCTL_API=3 etcdctl --endpoints={endpoints}{certs} lock mylock   # until Ctrl-C\n"
            f"  lock service (synod.lock.v1.Lock) at {locks}\n"
            + synodctl
            + "Ctrl-C stops everything.",
            flush=True,
        )
    while not stopping:
        for p in procs:
            if p.popen is not None and p.popen.poll() is not None and not p.reported_dead:
                p.reported_dead = True
                print(
                    f"synod up: {p.kind} {p.name} ({p.address}) exited with code "
                    f"{p.popen.returncode}; see {p.log}",
                    file=sys.stderr,
                    flush=True,
                )
        time.sleep(0.5)
    shutdown(procs)
    return code


def shutdown(procs: list[Proc]) -> None:
    """SIGTERM everything (the consensus leader hands over first), then wait; SIGKILL stragglers."""
    print("\nsynod up: stopping ...", flush=True)
    for p in sorted(procs, key=lambda p: p.kind == "consensus"):  # clients of consensus first
        if p.popen is not None and p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        if p.popen is None:
            continue
        try:
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            p.popen.wait()
    print("synod up: stopped", flush=True)
