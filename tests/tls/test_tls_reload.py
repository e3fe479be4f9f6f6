"""Renewed certificates are served without a restart (what cert-manager and the like do).

A one-member cluster serves mutual TLS from files that the test then replaces
with ones from another CA: from the next connection on, clients of the new CA
get in and clients of the old one are refused, while the process keeps running.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import pytest
from cluster_harness import LocalCluster, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_files import Pki, TLSFiles

from synod.devcerts import CertPair
from synod.tls import ClientTLS


def check(address: str, tls: ClientTLS) -> int:
    with grpc.secure_channel(address, tls.credentials()) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(r.status)


def replace(src: str, dst: str) -> None:
    """Swap a file in at once, as a renewal that writes beside and renames does."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_a_renewed_certificate_and_ca_are_picked_up_by_new_connections(
    pki: Pki, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    live.mkdir()
    g = pki.good
    for f in (g.ca_file, g.server.cert_file, g.server.key_file):
        shutil.copy(f, live)
    files = TLSFiles(
        ca_file=str(live / Path(g.ca_file).name),
        server=CertPair(str(live / "server.crt"), str(live / "server.key")),
        client=g.client,
        peer=g.peer,
        peer_ca_file=g.peer_ca_file,
    )
    cluster = LocalCluster(tmp_path / "c", size=1, tls=files, extra_args=["--unsafe-no-fsync"])
    (tmp_path / "c").mkdir()
    old = ClientTLS(g.ca_file, g.client.cert_file, g.client.key_file)
    new = ClientTLS(pki.other_ca_file, pki.other_client.cert_file, pki.other_client.key_file)
    try:
        cluster.start(timeout=60)
        m = cluster.members[0]
        assert check(m.endpoint, old) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError):
            check(m.endpoint, new)

        # The other CA's certificate (for 127.0.0.1), its key, and the other CA to trust.
        replace(pki.other_peer.cert_file, files.server.cert_file)
        replace(pki.other_peer.key_file, files.server.key_file)
        replace(pki.other_ca_file, files.ca_file)

        cluster.wait(
            lambda: check(m.endpoint, new) == health_pb2.HealthCheckResponse.SERVING,
            20,
            "the member to serve the renewed certificate and trust the new CA",
        )
        with pytest.raises(grpc.RpcError) as e:
            check(m.endpoint, old)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert m.alive()
        wait_until(lambda: "tls_reloaded" in m.log_path.read_text(), 10, "the reload logged")
    finally:
        cluster.stop()
