"""Certificates for the TLS tests, and the flags and credentials that use them.

`make_pki` makes two throwaway CAs with synod.devcerts (the `cryptography`
package): the one every server and client here trusts, and another that
nobody trusts, with a client/peer certificate of each, all for 127.0.0.1.

`TLSFiles` is what one process is started with: the harnesses
(cluster_harness, lock_harness, router_harness) take one to start their
processes with TLS, dial them with https:// and present the client
certificate, and leave everything plaintext without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from synod.devcerts import CertPair, new_authority


@dataclass(frozen=True)
class TLSFiles:
    ca_file: str  # the CA trusted on every side
    server: CertPair  # a server's certificate (client API, lock, router)
    client: CertPair  # presented by clients: the harness, lock/router dialling consensus
    peer: CertPair  # a consensus member's peer certificate (server and client)
    peer_ca_file: str  # the CA a member trusts for its peers

    def server_flags(self) -> list[str]:
        return [
            "--cert-file", self.server.cert_file,
            "--key-file", self.server.key_file,
            "--trusted-ca-file", self.ca_file,
        ]  # fmt: skip

    def peer_flags(self) -> list[str]:
        return [
            "--peer-cert-file", self.peer.cert_file,
            "--peer-key-file", self.peer.key_file,
            "--peer-trusted-ca-file", self.peer_ca_file,
        ]  # fmt: skip

    def endpoint_flags(self) -> list[str]:
        """How the lock and router services dial the consensus service."""
        return [
            "--endpoints-ca-file", self.ca_file,
            "--endpoints-cert-file", self.client.cert_file,
            "--endpoints-key-file", self.client.key_file,
        ]  # fmt: skip

    def etcdctl_flags(self) -> list[str]:
        return [
            f"--cacert={self.ca_file}",
            f"--cert={self.client.cert_file}",
            f"--key={self.client.key_file}",
        ]

    def client_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_file).read_bytes(),
            private_key=Path(self.client.key_file).read_bytes(),
            certificate_chain=Path(self.client.cert_file).read_bytes(),
        )


@dataclass(frozen=True)
class Pki:
    good: TLSFiles  # everything signed by the trusted CA
    other_ca_file: str  # a CA nobody here trusts
    other_client: CertPair  # a client certificate signed by it
    other_peer: CertPair  # a member's peer certificate signed by it


def make_pki(directory: Path) -> Pki:
    ca = new_authority(directory, "trusted")
    good = TLSFiles(
        ca_file=ca.ca_file,
        server=ca.issue("server"),
        client=ca.issue("client", server=False),
        peer=ca.issue("peer"),
        peer_ca_file=ca.ca_file,
    )
    other = new_authority(directory, "other")
    return Pki(
        good=good,
        other_ca_file=other.ca_file,
        other_client=other.issue("other-client", server=False),
        other_peer=other.issue("other-peer"),
    )
