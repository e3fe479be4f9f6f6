"""The rendered manifests (default and every overlay): valid, current, and as production needs.

Validated against the Kubernetes OpenAPI schemas that `kubernetes-validate`
ships, strictly (an unknown field is an error, not silently dropped by the
API server), for the oldest and the newest Kubernetes we claim.
"""

from __future__ import annotations

import argparse
import re
import sys
from functools import cache
from pathlib import Path

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from k8s_pod import container_env
from k8s_render import K8S, KUSTOMIZATIONS, Manifest, find, render, workloads

from synod.cli import _SUBCOMMANDS
from synod.flags import env_name

# kubernetes_validate reads its 1.5 MB definitions file again for every object
# (0.2 s each); the files do not change while the tests run, so read each once.
kubernetes_validate.utils.schema_contents = cache(kubernetes_validate.utils.schema_contents)

#: gRPC probes are GA (on by default) from 1.27; the newest the validator knows.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]

#: the API version each kind we use is served at without deprecation
CURRENT_API = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Secret": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
}

ALL = sorted(KUSTOMIZATIONS)


def _rendered(which: str) -> list[Manifest]:
    return render(KUSTOMIZATIONS[which])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("which", ALL)
def test_every_manifest_validates_against_the_openapi_schemas(which: str, version: str) -> None:
    manifests = _rendered(which)
    assert manifests
    for m in manifests:
        try:
            kubernetes_validate.validate(m, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            pytest.fail(f"{which}: {m['kind']} {m['metadata']['name']} at {where}: {e.message}")


@pytest.mark.parametrize("which", ALL)
def test_no_deprecated_api_versions(which: str) -> None:
    for m in _rendered(which):
        assert m["kind"] in CURRENT_API, f"{m['kind']}: add it to CURRENT_API after checking"
        assert m["apiVersion"] == CURRENT_API[m["kind"]], (m["kind"], m["apiVersion"])


def test_examples_outside_the_base_use_current_apis() -> None:
    """The PodMonitor (its CRD may not exist, so no schema here): its port exists on every pod."""
    monitor = yaml.safe_load((K8S / "examples" / "podmonitor.yaml").read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    for w in workloads(_rendered("default")):
        ports = [p["name"] for p in w["spec"]["template"]["spec"]["containers"][0]["ports"]]
        assert port in ports, w["metadata"]["name"]


def _probes(container: Manifest) -> list[Manifest]:
    return [container[k] for k in ("readinessProbe", "livenessProbe")]


@pytest.mark.parametrize("which", ALL)
def test_workloads_are_locked_down_and_probed(which: str) -> None:
    for w in workloads(_rendered(which)):
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["enableServiceLinks"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            for probe in _probes(c):
                handlers = {"grpc", "tcpSocket", "httpGet", "exec"} & set(probe)
                assert len(handlers) == 1, f"{name}: one handler per probe, got {handlers}"
        assert w["spec"]["replicas"] >= 2, name
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "synod", f"{name}: docs select pods by it"
        pdbs = [
            m
            for m in _rendered(which)
            if m["kind"] == "PodDisruptionBudget"
            and m["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"]
        ]
        assert len(pdbs) == 1, f"{name}: one PodDisruptionBudget"


@pytest.mark.parametrize("which", ALL)
def test_consensus_statefulset_keeps_quorum_and_names_every_member(which: str) -> None:
    manifests = _rendered(which)
    sts = find(manifests, "StatefulSet", "synod-consensus")
    spec = sts["spec"]
    replicas = spec["replicas"]
    assert replicas % 2 == 1, "an odd number of members"
    assert spec["podManagementPolicy"] == "Parallel"
    quorum = replicas // 2 + 1
    assert find(manifests, "PodDisruptionBudget", "synod-consensus")["spec"] == {
        "minAvailable": quorum,
        "selector": spec["selector"],
    }
    peer = find(manifests, "Service", spec["serviceName"])["spec"]
    assert peer["clusterIP"] == "None" and peer["publishNotReadyAddresses"] is True
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    # Long enough for a leader to hand over (one election timeout) and drain.
    assert pod["terminationGracePeriodSeconds"] >= 10
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in pod["containers"][0]["volumeMounts"]
    }
    # --initial-cluster names exactly the StatefulSet's pods, each by its own DNS name.
    config_maps = {
        m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"
    }
    container = pod["containers"][0]
    for ordinal in range(replicas):
        meta = {"metadata": {"name": f"synod-consensus-{ordinal}", "namespace": "ns"}}
        env = container_env(meta, container, config_maps)
        members = dict(part.split("=", 1) for part in env["SYNOD_INITIAL_CLUSTER"].split(","))
        assert sorted(members) == [f"synod-consensus-{i}" for i in range(replicas)]
        me = env["SYNOD_INITIAL_ADVERTISE_PEER_URLS"]
        assert members[env["SYNOD_NAME"]] == me
        assert f"synod-consensus-{ordinal}.{spec['serviceName']}.ns.svc." in me


@pytest.mark.parametrize("which", ALL)
def test_every_variable_reference_resolves(which: str) -> None:
    """A $(VAR) the kubelet cannot expand is passed on literally: catch it here.

    (Kubernetes expands a reference only to variables defined before it, so an
    overlay that reorders env can break a value without any error.)
    """
    manifests = _rendered(which)
    config_maps = {
        m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"
    }
    for w in workloads(manifests):
        for c in w["spec"]["template"]["spec"]["containers"]:
            meta = {"metadata": {"name": "pod-0", "namespace": "ns"}}
            env = container_env(meta, c, config_maps)
            for k, v in env.items():
                assert not re.search(r"\$\([A-Za-z_]", v), f"{which}: {k}={v}"
            for a in c.get("args", []) + c.get("command", []):
                refs = re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a)
                assert set(refs) <= set(env), f"{which}: {a}"


def test_make_k8s_render_prints_what_the_tests_check() -> None:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    venv = Path(sys.executable).parent.parent
    # -o: never (re)install the venv from inside a test run
    argv = ["make", "-s", f"VENV={venv}", "-o", f"{venv}/.synod-installed", "k8s-render"]
    p = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(p.stdout) if d]
    assert kinds == [m["kind"] for m in _rendered("default")]


#: the TLS flags (issue 8), whose variables overlays/tls sets
TLS_VARIABLES = {
    "SYNOD_CERT_FILE",
    "SYNOD_KEY_FILE",
    "SYNOD_TRUSTED_CA_FILE",
    "SYNOD_PEER_CERT_FILE",
    "SYNOD_PEER_KEY_FILE",
    "SYNOD_PEER_TRUSTED_CA_FILE",
}


def _flag_variables(subcommand: str) -> set[str]:
    parser = argparse.ArgumentParser()
    add_args = _SUBCOMMANDS[subcommand].add_args
    assert add_args is not None
    add_args(parser)
    return {env_name(s) for a in parser._actions for s in a.option_strings if s.startswith("--")}


@pytest.mark.parametrize("which", ALL)
def test_every_synod_variable_is_a_flag_of_the_subcommand(which: str) -> None:
    """A misspelt SYNOD_* variable is silently ignored by the service: catch it here."""
    manifests = _rendered(which)
    config_maps = {
        m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"
    }
    unknown: set[str] = set()
    for w in workloads(manifests):
        c = w["spec"]["template"]["spec"]["containers"][0]
        known = _flag_variables(c["args"][0])
        env = container_env({"metadata": {"name": "p-0", "namespace": "ns"}}, c, config_maps)
        unknown |= {k for k in env if k.startswith("SYNOD_") and k not in known}
    # Until the TLS flags are merged (then this check holds the overlay to them).
    if (
        unknown
        and unknown <= TLS_VARIABLES
        and "SYNOD_CERT_FILE" not in _flag_variables("consensus")
    ):
        pytest.skip(f"the TLS flags are not in this tree yet: {sorted(unknown)}")
    assert not unknown, f"{which}: not flags of their subcommand: {sorted(unknown)}"
