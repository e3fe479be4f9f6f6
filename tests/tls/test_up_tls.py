"""`synod up --tls`: what it would start is mutual TLS everywhere (checked without starting it).

Each planned command line is parsed by the service's own flag parser, so the
flags and URLs `synod up --tls` writes are the ones the services accept.
(A real `synod up --tls` run, with etcdctl and synodctl against it, is in
docs/tls.md; tests/test_up.py starts the plaintext one.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synod import up
from synod.consensus import config as member_config
from synod.lock import main as lock_main
from synod.router import config as router_config


def parse(kind: str, argv: list[str]) -> object:
    p = argparse.ArgumentParser()
    if kind == "consensus":
        member_config.add_arguments(p)
        return member_config.from_args(p.parse_args(argv), environ={})
    if kind == "lock":
        lock_main.add_arguments(p)
        return lock_main.config_from(p.parse_args(argv), environ={})
    router_config.add_arguments(p)
    return router_config.from_args(p.parse_args(argv), environ={})


def test_every_planned_process_serves_and_dials_mutual_tls(tmp_path: Path) -> None:
    tls = up.UpTLS.make(tmp_path / "tls")
    procs = up.plan(2379, tmp_path, with_router=True, tls=tls)
    assert sorted(p.kind for p in procs) == ["consensus"] * 3 + ["lock"] * 2 + ["router"] * 2
    for p in procs:
        assert p.credentials is not None  # the health checks dial with the client certificate
        argv = p.args[p.args.index(p.kind) + 1 :]
        cfg = parse(p.kind, argv)
        if isinstance(cfg, member_config.MemberConfig):
            assert cfg.client_tls is not None and cfg.client_tls.client_cert_auth
            assert cfg.peer_tls is not None and cfg.peer_tls.client_cert_auth
            urls = [u for us in cfg.initial_cluster.values() for u in us]
            assert all(u.startswith("https://") for u in urls + cfg.listen_client_urls)
        else:
            assert isinstance(cfg, lock_main.LockConfig | router_config.RouterConfig)
            assert cfg.server_tls is not None and cfg.server_tls.client_cert_auth
            assert cfg.endpoints_tls is not None and cfg.endpoints_tls.cert_file
            assert all(e.startswith("https://") for e in cfg.endpoints)
    plain = up.plan(2379, tmp_path, with_router=True)
    assert all(p.credentials is None and "--cert-file" not in p.args for p in plain)


def test_a_data_dir_made_without_tls_is_not_started_with_it(tmp_path: Path) -> None:
    (tmp_path / "mode").write_text("plaintext\n")
    p = argparse.ArgumentParser()
    up.add_arguments(p)
    args = p.parse_args(["--data-dir", str(tmp_path), "--tls"])
    assert up.run(args) == 2
    assert not (tmp_path / "m1").exists()
