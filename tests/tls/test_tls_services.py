"""All three services over mutual TLS, and what they refuse.

One module-scoped environment: a 3-member consensus cluster with client and
peer mutual TLS (https:// URLs), one lock replica and one router replica that
serve mutual TLS themselves and dial the cluster with a client certificate.
Everything is signed by one throwaway CA (conftest.py); another CA signs the
certificates that must be refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, etcdctl, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lock_harness import LockReplica
from ports import free_port
from router_harness import EchoBackend, RouterProc
from tls_files import Pki
from waits import wait_for

from synod.client import Client, ClientTLS, SyncClient
from synod.consensus.v1 import internal_pb2, internal_pb2_grpc
from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from synod.router.v1 import router_pb2, router_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    pki: Pki
    cluster: LocalCluster
    lock: LockReplica
    router: RouterProc
    health_ports: dict[str, int]  # --health-addr of m1, the lock and the router replica

    @property
    def tls(self) -> ClientTLS:
        """What a well-configured client uses: the CA and a client certificate it signed."""
        g = self.pki.good
        return ClientTLS(g.ca_file, g.client.cert_file, g.client.key_file)


@pytest.fixture(scope="module")
def env(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("tls")
    cluster = LocalCluster(base, size=3, tls=pki.good, extra_args=["--unsafe-no-fsync"])
    endpoints = [m.client_url for m in cluster.members]  # https://
    health_ports = {"consensus": free_port(), "lock": free_port(), "router": free_port()}
    cluster.members[0].extra_args += ["--health-addr", f"127.0.0.1:{health_ports['consensus']}"]
    lock = LockReplica(
        "lock1", free_port(), free_port(), base / "lock1.log", endpoints, tls=pki.good,
        extra_args=["--health-addr", f"127.0.0.1:{health_ports['lock']}"],
    )  # fmt: skip
    g = pki.good
    router = RouterProc(
        "router1", endpoints, base / "router1.log", tls=g,
        extra_args=[
            "--health-addr", f"127.0.0.1:{health_ports['router']}",
            # forwarded calls go to the backends over mutual TLS too
            "--backend-ca-file", g.ca_file,
            "--backend-cert-file", g.client.cert_file,
            "--backend-key-file", g.client.key_file,
        ],
    )  # fmt: skip
    try:
        cluster.start(timeout=60)
        lock.start()
        wait_until(lock.serving, 30, "the lock replica to serve over TLS")
        router.start()
        yield Env(pki, cluster, lock, router, health_ports)
    finally:
        router.stop()
        lock.stop()
        cluster.stop()


# -- what works with a valid client certificate ----------------------------------------------


async def test_kv_lock_and_router_through_the_python_client(env: Env) -> None:
    endpoints = [m.client_url for m in env.cluster.members]
    async with Client(
        endpoints,
        lock_endpoints=[env.lock.address],
        router_endpoints=[env.router.address],
        tls=env.tls,
    ) as c:
        rev = await c.kv.put("tls/greeting", "hello")
        kv = await c.kv.get("tls/greeting")
        assert kv is not None and kv.value == b"hello" and kv.mod_revision == rev

        async with c.lock("tls/job", ttl=5) as held:
            assert held.token > 0
            await held.guarded_put("tls/job-state", "running")
        state = await c.kv.get("tls/job-state")
        assert state is not None and state.value == b"running"

        # A backend registers through the router; its lease lives in the TLS cluster.
        creds = env.pki.good.client_credentials()
        async with grpc.aio.secure_channel(env.router.address, creds) as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            reg = await stub.Register(
                router_pb2.RegisterRequest(
                    ring="tls-ring", id="be-1", address="127.0.0.1:50051", ttl_seconds=30
                ),
                timeout=10,
            )

            async def lookup() -> router_pb2.LookupResponse | None:
                r = await stub.Lookup(
                    router_pb2.LookupRequest(ring="tls-ring", key=b"alice", replicas=1), timeout=5
                )
                return r if r.revision >= reg.revision else None

            # The router answers from its watch of the store: wait for the registration.
            found = await wait_for(lookup, 20, "the router to see the registration")
            assert [m.id for m in found.members] == ["be-1"]
            assert found.members[0].address == "127.0.0.1:50051"
            async with c.router("tls-ring") as view:  # WatchRing over TLS too
                await view.wait_revision(found.revision, timeout=10)
                assert view.lookup(b"alice") == "be-1"
            gone = await stub.Deregister(
                router_pb2.DeregisterRequest(ring="tls-ring", id="be-1"), timeout=10
            )
            assert gone.existed


def test_sync_client_and_member_list_show_https_urls(env: Env) -> None:
    with SyncClient(",".join(m.client_url for m in env.cluster.members), tls=env.tls) as c:
        c.kv.put("tls/sync", "yes")
        kv = c.kv.get("tls/sync")
        assert kv is not None and kv.value == b"yes"
    with env.cluster.members[0].channel() as ch:
        members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    assert len(members.members) == 3
    for m in members.members:
        assert all(u.startswith("https://") for u in m.peerURLs), m
        assert all(u.startswith("https://") for u in m.clientURLs), m


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_etcdctl_speaks_to_the_cluster_over_mutual_tls(env: Env) -> None:
    etcdctl(env.cluster, "put", "tls/etcdctl", "wire-compatible")
    out = etcdctl(env.cluster, "get", "tls/etcdctl", "--print-value-only").stdout
    assert out.strip() == "wire-compatible"
    # Without a client certificate the same etcdctl is turned away.
    p = subprocess.run(
        [
            "etcdctl",
            f"--endpoints={env.cluster.members[0].client_url}",
            f"--cacert={env.pki.good.ca_file}",
            "--dial-timeout=2s",
            "--command-timeout=3s",
            "get",
            "tls/etcdctl",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=dict(os.environ, ETCDCTL_API="3"),
        timeout=30,
    )
    assert p.returncode != 0 and "wire-compatible" not in p.stdout


def test_synodctl_with_cacert_cert_key(env: Env) -> None:
    g = env.pki.good
    args = [
        str(REPO / ".venv" / "bin" / "synodctl") if (REPO / ".venv").exists() else "synodctl",
        "--endpoints", ",".join(m.client_url for m in env.cluster.members),
        "--lock-endpoints", env.lock.address,
        "--router-endpoints", env.router.address,
        "--cacert", g.ca_file, "--cert", g.client.cert_file, "--key", g.client.key_file,
        "-o", "json",
    ]  # fmt: skip
    p = subprocess.run([*args, "status"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count('"healthy": true') == 5, p.stdout
    # put/get: their positional KEY must not be taken for --key
    p = subprocess.run([*args, "put", "tls/ctl", "v1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*args[:-2], "get", "tls/ctl"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "v1" in p.stdout, p.stderr + p.stdout
    # https:// endpoints without --cacert: TLS against the default roots (pointed at our CA
    # here through gRPC's own variable, standing in for a publicly trusted CA).
    roots = dict(os.environ, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=g.ca_file)
    p = subprocess.run(
        [args[0], "--endpoints", env.cluster.members[1].client_url,
         "--cert", g.client.cert_file, "--key", g.client.key_file, "get", "tls/ctl"],
        capture_output=True, text=True, timeout=60, env=roots,
    )  # fmt: skip
    assert p.returncode == 0 and "v1" in p.stdout, p.stderr + p.stdout


# -- what is refused ------------------------------------------------------------------------------


def health_check(address: str, credentials: grpc.ChannelCredentials | None) -> int:
    """The health status, or raise the gRPC error the call failed with."""
    ch = (
        grpc.secure_channel(address, credentials)
        if credentials is not None
        else grpc.insecure_channel(address)
    )
    with ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(r.status)


def credentials(ca: str, cert: str = "", key: str = "") -> grpc.ChannelCredentials:
    return ClientTLS(ca, cert, key).credentials()


def test_a_client_without_a_valid_certificate_is_refused(env: Env) -> None:
    """On every service's port: plaintext, TLS without a certificate, a foreign CA's certificate.

    (One test for the nine cases: under xdist, fewer items in this module means
    fewer workers starting the whole environment again.)
    """
    g, p = env.pki.good, env.pki
    addresses = {
        "consensus": env.cluster.members[0].endpoint,
        "lock": env.lock.address,
        "router": env.router.address,
    }
    callers = {
        "plaintext": None,
        "no-client-cert": credentials(g.ca_file),
        "cert-from-another-ca": credentials(
            g.ca_file, p.other_client.cert_file, p.other_client.key_file
        ),
    }
    for service, address in addresses.items():
        for who, bad in callers.items():
            with pytest.raises(grpc.RpcError) as e:
                health_check(address, bad)
            code = e.value.code()  # type: ignore[attr-defined]
            assert code == grpc.StatusCode.UNAVAILABLE, f"{service}, {who}: {e.value}"
            # ... and the server goes on serving those who present a good certificate.
            ok = health_check(address, g.client_credentials())
            assert ok == health_pb2.HealthCheckResponse.SERVING, f"{service} after {who}"


def test_a_client_that_does_not_trust_the_servers_ca_refuses_it(env: Env) -> None:
    p = env.pki
    other = credentials(p.other_ca_file, p.other_client.cert_file, p.other_client.key_file)
    with pytest.raises(grpc.RpcError) as e:
        health_check(env.cluster.members[1].endpoint, other)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_the_peer_port_refuses_what_is_not_a_member(env: Env) -> None:
    """The peer port wants a certificate from the peer CA; plaintext or none is refused."""
    g = env.pki.good
    target = f"127.0.0.1:{env.cluster.members[0].peer_port}"
    for who in ("plaintext", "no-certificate"):
        ch = (
            grpc.insecure_channel(target)
            if who == "plaintext"
            else grpc.secure_channel(target, credentials(g.peer_ca_file))
        )
        with ch, pytest.raises(grpc.RpcError) as e:
            internal_pb2_grpc.InternalStub(ch).ClusterInfo(
                internal_pb2.ClusterInfoRequest(), timeout=5
            )
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, who  # type: ignore[attr-defined]
    peer_creds = credentials(g.peer_ca_file, g.peer.cert_file, g.peer.key_file)
    with grpc.secure_channel(target, peer_creds) as ch:
        info = internal_pb2_grpc.InternalStub(ch).ClusterInfo(
            internal_pb2.ClusterInfoRequest(), timeout=5
        )
    assert len(info.members) == 3


def test_the_health_port_answers_plaintext_probes_and_nothing_else(env: Env) -> None:
    """--health-addr: what a Kubernetes gRPC probe (no client certificate) can reach."""
    for service, port in env.health_ports.items():
        address = f"127.0.0.1:{port}"
        assert health_check(address, None) == health_pb2.HealthCheckResponse.SERVING, service
        with grpc.insecure_channel(address) as ch, pytest.raises(grpc.RpcError) as e:
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"tls/greeting"), timeout=5)
        code = e.value.code()  # type: ignore[attr-defined]
        assert code == grpc.StatusCode.UNIMPLEMENTED, service


async def test_the_router_forwards_to_a_backend_over_mutual_tls(env: Env) -> None:
    """--backend-*-file: a call forwarded by key reaches a backend that requires a client cert."""
    backend = EchoBackend("tls-be", "tls-echo", router="", tls=env.pki.good).start()
    try:
        creds = env.pki.good.client_credentials()
        async with grpc.aio.secure_channel(env.router.address, creds) as ch:
            stub = router_pb2_grpc.RouterStub(ch)
            reg = await stub.Register(
                router_pb2.RegisterRequest(
                    ring="tls-echo", id="tls-be", address=backend.address, ttl_seconds=30
                ),
                timeout=10,
            )

            async def member_seen() -> bool:
                r = await stub.Lookup(
                    router_pb2.LookupRequest(ring="tls-echo", key=b"k"), timeout=5
                )
                return r.revision >= reg.revision

            await wait_for(member_seen, 20, "the router to see the TLS backend")
            call = ch.unary_unary("/test.Echo/Unary")(
                b"hi", metadata=(("synod-ring", "tls-echo"), ("synod-route-key", "k")), timeout=10
            )
            assert await call == b"tls-be||hi"
            trailers = dict(await call.trailing_metadata())
            assert trailers["synod-backend"] == "tls-be"
            await stub.Deregister(router_pb2.DeregisterRequest(ring="tls-echo", id="tls-be"))
    finally:
        backend.kill()
