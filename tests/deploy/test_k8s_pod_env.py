"""The kubelet's rules for a container's environment and command line, as simulated here.

The pod tests are only as good as this simulation, so its rules are checked
against what Kubernetes documents for dependent environment variables.
"""

from __future__ import annotations

from k8s_pod import container_argv, container_env, expand

POD = {"metadata": {"name": "web-0", "namespace": "prod"}}


def test_expand_follows_kubernetes_syntax() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)/$(A)", env) == "$(MISSING)/1"  # undefined: kept as written
    assert expand("$$(A)", env) == "$(A)"  # $$ escapes
    assert expand("cost: $5 $(A", env) == "cost: $5 $(A"  # not a reference


def test_env_refers_only_to_variables_defined_before_it() -> None:
    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}}],
        "env": [
            {"name": "EARLY", "value": "$(LATE)+$(FROM_CM)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LATE", "value": "$(POD).$(NS)"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
    }
    env = container_env(POD, container, {"cm": {"FROM_CM": "c"}})
    assert env == {
        "FROM_CM": "c",
        "EARLY": "$(LATE)+c",
        "POD": "web-0",
        "LATE": "web-0.$(NS)",
        "NS": "prod",
    }


def test_command_and_args_against_the_image() -> None:
    env = {"X": "1"}
    entry, cmd = ["synod"], ["--help"]
    assert container_argv({}, env, entry, cmd) == ["synod", "--help"]
    assert container_argv({"args": ["lock", "--n=$(X)"]}, env, entry, cmd) == [
        "synod",
        "lock",
        "--n=1",
    ]
    # command replaces the ENTRYPOINT and drops the image's CMD
    assert container_argv({"command": ["sh", "-c", "$(X)"]}, env, entry, cmd) == ["sh", "-c", "1"]
