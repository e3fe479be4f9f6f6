"""A member whose peer certificate is not from the peers' CA cannot take part.

A 3-member cluster with peer mutual TLS where m3 presents a peer certificate
signed by another CA (its client API is fine): m1 and m2 refuse it both ways
(its server certificate does not verify, and its client certificate is
refused), elect a leader between them and serve writes; m3 never hears from
a leader and falls behind. Restarted with the right certificate, m3 catches
up, which shows the certificate was the only thing in its way.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from cluster_harness import LocalCluster, MemberProc
from tls_files import Pki

from synod.etcd.etcdserverpb import rpc_pb2, rpc_pb2_grpc


def refusals(log: Path, url: str) -> list[str]:
    """Reasons the member writing `log` gave for not reaching the peer at `url`."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if '"peer_unreachable"' not in line:
            continue
        ev = json.loads(line)
        if ev.get("url") == url:
            out.append(str(ev.get("detail", "")))
    return out


def tls_refused(log: Path, url: str) -> bool:
    # gRPC's words for a failed handshake (a connection refused while the peer
    # was still starting is logged too, and does not count).
    return any(
        "handshake" in d.lower() or "certificate" in d.lower() or "socket closed" in d.lower()
        for d in refusals(log, url)
    )


def put(m: MemberProc, key: str, value: str) -> int:
    with m.channel() as ch:
        r = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()),
                                        timeout=10)  # fmt: skip
        return int(r.header.revision)


def test_a_member_with_a_peer_certificate_from_another_ca_is_kept_out(
    pki: Pki, tmp_path: Path
) -> None:
    cluster = LocalCluster(tmp_path, size=3, tls=pki.good, extra_args=["--unsafe-no-fsync"])
    m1, m2, m3 = cluster.members
    m3.tls = dataclasses.replace(pki.good, peer=pki.other_peer)
    try:
        for m in cluster.members:
            cluster.start_member(m)
        # The good two are a majority: they elect a leader and serve writes.
        cluster.wait(m1.serving, 60, "m1 to serve (with m2)")
        cluster.wait(m2.serving, 30, "m2 to serve (with m1)")
        revision = max(put(m1, f"k{i}", "v") for i in range(5))
        cluster.wait(lambda: m2.status().header.revision >= revision, 20, "m2 to apply the writes")
        # Both sides say why: the leader (m1 or m2: the one that keeps sending m3
        # heartbeats) cannot verify m3's server certificate, and m3's connections
        # are closed when its client certificate is refused.
        cluster.wait(
            lambda: any(tls_refused(m.log_path, m3.peer_url) for m in (m1, m2)),
            30,
            "the leader to log m3's refused handshake",
        )
        cluster.wait(
            lambda: tls_refused(m3.log_path, m1.peer_url), 30, "m3 to log its refused handshake"
        )
        st1, st3 = m1.status(), m3.status()
        assert m3.alive()
        assert st3.leader == 0, f"m3 knows a leader without a valid peer certificate: {st3}"
        assert st3.raftIndex < st1.raftIndex
        assert st3.header.revision < revision, "m3 applied writes it should never have received"
        assert not m3.serving(), "m3 says SERVING without a leader"

        # With the right certificate the same member (same data) catches up.
        cluster.kill(m3)
        m3.tls = pki.good
        cluster.start_member(m3)
        cluster.wait(
            lambda: m3.status().header.revision >= revision, 60, "m3 to catch up with its cert"
        )
    finally:
        cluster.stop()
