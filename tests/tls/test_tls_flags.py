"""TLS flags of the three services: names, SYNOD_* variables, and the mistakes refused at start."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from tls_files import Pki

from synod.consensus import config as member_config
from synod.consensus import restore as snapshot_restore
from synod.flags import ConfigError
from synod.lock import main as lock_main
from synod.router import config as router_config

PEER = "https://127.0.0.1:2380"
CLIENT = "https://127.0.0.1:2379"


def parse_member(argv: list[str], env: dict[str, str] | None = None) -> member_config.MemberConfig:
    p = argparse.ArgumentParser()
    member_config.add_arguments(p)
    return member_config.from_args(p.parse_args(argv), environ=env or {})


def tls_member_argv(pki: Pki) -> list[str]:
    g = pki.good
    return [
        "--listen-client-urls", CLIENT,
        "--listen-peer-urls", PEER,
        "--initial-advertise-peer-urls", PEER,
        "--cert-file", g.server.cert_file, "--key-file", g.server.key_file,
        "--trusted-ca-file", g.ca_file,
        "--peer-cert-file", g.peer.cert_file, "--peer-key-file", g.peer.key_file,
        "--peer-trusted-ca-file", g.peer_ca_file,
    ]  # fmt: skip


def test_member_flags_turn_on_mutual_tls_on_both_sides(pki: Pki) -> None:
    c = parse_member(tls_member_argv(pki))
    g = pki.good
    assert c.client_tls is not None and c.client_tls.client_cert_auth
    assert c.client_tls.cert_file == g.server.cert_file
    assert c.peer_tls is not None and c.peer_tls.client_cert_auth
    # The peer transport presents the peer certificate and trusts the peer CA.
    assert c.peer_client_tls is not None
    assert (c.peer_client_tls.ca_file, c.peer_client_tls.cert_file) == (
        g.peer_ca_file,
        g.peer.cert_file,
    )
    assert c.initial_cluster == {"default": [PEER]}  # https:// is kept: others dial TLS
    # etcd's boolean flag is accepted (it is implied), in both spellings
    assert parse_member([*tls_member_argv(pki), "--client-cert-auth"]).client_tls is not None
    assert parse_member([*tls_member_argv(pki), "--peer-client-cert-auth=true"]).peer_tls


def test_member_tls_flags_from_the_environment(pki: Pki) -> None:
    g = pki.good
    env = {
        "SYNOD_LISTEN_CLIENT_URLS": CLIENT,
        "SYNOD_CERT_FILE": g.server.cert_file,
        "SYNOD_KEY_FILE": g.server.key_file,
        "SYNOD_TRUSTED_CA_FILE": g.ca_file,
        "SYNOD_CLIENT_CERT_AUTH": "true",
        "SYNOD_LISTEN_PEER_URLS": PEER,
        "SYNOD_INITIAL_ADVERTISE_PEER_URLS": PEER,
        "SYNOD_PEER_CERT_FILE": g.peer.cert_file,
        "SYNOD_PEER_KEY_FILE": g.peer.key_file,
    }
    c = parse_member([], env)
    assert c.client_tls is not None and c.client_tls.client_cert_auth
    # server TLS without client certificates: no --peer-trusted-ca-file
    assert c.peer_tls is not None and not c.peer_tls.client_cert_auth
    assert c.peer_client_tls is not None and c.peer_client_tls.ca_file == ""


def test_plaintext_stays_the_default() -> None:
    c = parse_member([])
    assert c.client_tls is None and c.peer_tls is None and c.peer_client_tls is None


@pytest.mark.parametrize(
    "change, text",
    [
        (lambda a: a[:6], "is https:// but no --cert-file"),
        (lambda a: [*a, "--listen-client-urls", "http://127.0.0.1:2379"], "is not https://"),
        (lambda a: [*a, "--advertise-client-urls", "http://h:2379"], "is not https://"),
        (lambda a: [*a, "--initial-advertise-peer-urls", "http://127.0.0.1:2380"], "not https"),
        (lambda a: [x for x in a if "server.key" not in x and x != "--key-file"], "--key-file"),
        (lambda a: [*a, "--client-cert-auth=false"], "contradicts"),
        (lambda a: [*a, "--client-cert-auth=maybe"], "true or false"),
    ],
    ids=[
        "https-without-cert",
        "http-listen-with-cert",
        "http-advertise-with-cert",
        "http-peer-with-peer-cert",
        "cert-without-key",
        "cert-auth-false-with-ca",
        "cert-auth-not-a-bool",
    ],
)
def test_member_tls_mistakes_are_refused(pki: Pki, change, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=text):
        parse_member(change(tls_member_argv(pki)))


def test_client_cert_auth_without_a_ca_is_refused(pki: Pki) -> None:
    g = pki.good
    argv = [
        "--listen-client-urls", CLIENT,
        "--cert-file", g.server.cert_file, "--key-file", g.server.key_file,
        "--client-cert-auth",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="needs --trusted-ca-file"):
        parse_member(argv)


def test_unreadable_or_mismatched_files_are_refused_with_the_flag(pki: Pki, tmp_path: Path) -> None:
    g = pki.good
    base = ["--listen-client-urls", CLIENT]
    with pytest.raises(ConfigError, match="--cert-file: cannot read"):
        parse_member(
            [*base, "--cert-file", str(tmp_path / "nope"), "--key-file", g.server.key_file]
        )
    with pytest.raises(ConfigError, match="not a PEM certificate and its private key"):
        # a key that belongs to another certificate
        parse_member([*base, "--cert-file", g.server.cert_file, "--key-file", g.client.key_file])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="--trusted-ca-file: .* holds no PEM CA"):
        parse_member(
            [*base, "--cert-file", g.server.cert_file, "--key-file", g.server.key_file,
             "--trusted-ca-file", str(junk)]
        )  # fmt: skip


def test_lock_and_router_flags(pki: Pki) -> None:
    g = pki.good
    argv = [
        "--endpoints", "https://127.0.0.1:2379",
        "--cert-file", g.server.cert_file, "--key-file", g.server.key_file,
        "--trusted-ca-file", g.ca_file,
        "--endpoints-ca-file", g.ca_file,
        "--endpoints-cert-file", g.client.cert_file,
        "--endpoints-key-file", g.client.key_file,
    ]  # fmt: skip
    p = argparse.ArgumentParser()
    lock_main.add_arguments(p)
    lc = lock_main.config_from(p.parse_args(argv), environ={})
    p = argparse.ArgumentParser()
    router_config.add_arguments(p)
    rc = router_config.from_args(p.parse_args(argv), environ={})
    for server_tls, endpoints_tls in [
        (lc.server_tls, lc.endpoints_tls),
        (rc.server_tls, rc.endpoints_tls),
    ]:
        assert server_tls is not None and server_tls.client_cert_auth
        assert endpoints_tls is not None
        assert endpoints_tls.cert_file == g.client.cert_file

    # https:// endpoints alone: TLS against the system's roots, no client certificate
    p = argparse.ArgumentParser()
    router_config.add_arguments(p)
    rc = router_config.from_args(p.parse_args(["--endpoints", "https://h:2379"]), environ={})
    assert rc.endpoints_tls is not None and rc.endpoints_tls.ca_file == ""
    assert rc.server_tls is None
    # and from the environment, a certificate without its key is refused
    env = {"SYNOD_ENDPOINTS": "h:2379", "SYNOD_ENDPOINTS_CERT_FILE": g.client.cert_file}
    p = argparse.ArgumentParser()
    lock_main.add_arguments(p)
    with pytest.raises(ConfigError, match="--endpoints-cert-file needs --endpoints-key-file"):
        lock_main.config_from(p.parse_args([]), environ=env)


def test_snapshot_restore_takes_https_peer_urls_without_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restore only writes a data directory: https:// peer URLs, no certificates needed."""
    p = argparse.ArgumentParser()
    snapshot_restore.add_arguments(p)
    missing = tmp_path / "backup.db"
    argv = [
        "restore", str(missing), "--name", "r1", "--data-dir", str(tmp_path / "r1"),
        "--initial-cluster", f"r1={PEER}", "--initial-advertise-peer-urls", PEER,
    ]  # fmt: skip
    # It gets past the flags to the (missing) backup file.
    assert snapshot_restore.run(p.parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert "backup.db" in err and "https" not in err, err
    # and the member id is the one the TLS member (same https:// URL) will have
    c = member_config.from_args(p.parse_args(argv), environ={}, serving=False)
    assert c.id == member_config.member_id([PEER], c.initial_cluster_token)
    assert c.id != member_config.member_id(["http://127.0.0.1:2380"], c.initial_cluster_token)
