"""deploy/docker/Dockerfile: linted, multi-stage, non-root, and its entrypoint is our CLI.

No Docker engine is assumed (there is none in CI): `make image` builds where
one exists. These checks hold the Dockerfile to what the manifests expect.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile import stages
from k8s_render import DOCKERFILE, KUSTOMIZATIONS, ROOT, render, workloads

from synod.cli import _SUBCOMMANDS, main


def _hadolint() -> str:
    return str(Path(sys.executable).parent / "hadolint")


def test_hadolint_finds_nothing() -> None:
    p = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_is_really_checking() -> None:
    """The same hadolint flags a Dockerfile that runs as root from an unpinned base."""
    p = subprocess.run(
        [_hadolint(), "--no-color", "-"],
        input="FROM python\nRUN pip install synod\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode != 0 and "DL3006" in p.stdout, p.stdout + p.stderr


def test_multi_stage_with_a_non_root_final_stage() -> None:
    build, final = stages(DOCKERFILE)
    assert build.name == "build"
    assert final.base == build.base, "both stages on the same base (the venv links to it)"
    # The final stage copies the built virtualenv and installs nothing itself.
    assert any(c.startswith("--from=build ") for c in final.all("COPY"))
    for run in final.all("RUN"):
        assert "pip " not in run and "apt-get" not in run, run
    user = final.last("USER")
    assert user is not None
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot checks it)"


def test_uid_matches_the_manifests() -> None:
    uid, gid = (int(x) for x in (stages(DOCKERFILE)[-1].last("USER") or "").split(":"))
    for w in workloads(render(KUSTOMIZATIONS["default"])):
        sc = w["spec"]["template"]["spec"]["securityContext"]
        assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid), w["metadata"]["name"]


def test_entrypoint_is_the_synod_command_and_manifests_run_its_subcommands() -> None:
    final = stages(DOCKERFILE)[-1]
    entrypoint = final.exec_form("ENTRYPOINT")
    assert entrypoint == ["synod"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["synod"] == "synod.cli:main"
    # The image's default command (no args) is valid for the CLI and exits 0.
    cmd = final.exec_form("CMD") or []
    with pytest.raises(SystemExit) as exited:
        main(cmd)
    assert exited.value.code in (0, None)
    # The overlays leave command and args alone (test_k8s_manifests renders them all).
    for w in workloads(render(KUSTOMIZATIONS["default"])):
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in c, "the image's ENTRYPOINT runs"
        assert c["args"][0] in _SUBCOMMANDS, c["args"]


def test_exposed_ports_are_the_manifests_ports() -> None:
    exposed = {int(p) for v in stages(DOCKERFILE)[-1].all("EXPOSE") for p in v.split()}
    used = {
        int(p["containerPort"])
        for w in workloads(render(KUSTOMIZATIONS["default"]))
        for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert exposed == used


def test_dockerignore_keeps_generated_and_local_files_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    rules = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*", "everything is out unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"pyproject.toml", "protos", "tools/gen_protos.py", "services"}
    for generated in ("**/*_pb2.py", "**/*_pb2_grpc.py", "**/__pycache__"):
        assert generated in rules
    # Everything the Dockerfile copies from the context is allowed in.
    copied = {
        c.split()[0].rstrip("/")
        for s in stages(DOCKERFILE)
        for c in s.all("COPY")
        if not c.startswith("--from")
    }
    assert copied <= allowed, copied - allowed
