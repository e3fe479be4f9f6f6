"""What the kubelet would run for a container: its environment and its command line.

Follows Kubernetes' rules, so tests run exactly what the manifests say:

- the environment is built from `envFrom` (ConfigMaps) first, then `env` in
  order; a `value` may refer to variables defined before it as `$(NAME)`;
- `valueFrom.fieldRef` is the downward API (metadata.name, metadata.namespace);
- `command` replaces the image's ENTRYPOINT (and drops its CMD); `args`
  replaces its CMD; both are expanded against the final environment;
- `$(NAME)` of an undefined variable stays as written, `$$` is a literal `$`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Manifest = dict[str, Any]


def expand(value: str, env: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "$" and i + 1 < len(value):
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(env[name] if name in env else value[i : end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def _field(pod: Manifest, path: str) -> str:
    meta = pod["metadata"]
    if path == "metadata.name":
        return str(meta["name"])
    if path == "metadata.namespace":
        return str(meta["namespace"])
    if path.startswith("metadata.labels['") and path.endswith("']"):
        return str(meta.get("labels", {}).get(path[len("metadata.labels['") : -2], ""))
    raise NotImplementedError(f"downward API field {path!r} is not simulated here")


def container_env(
    pod: Manifest, container: Manifest, config_maps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it (pod is {"metadata": ...})."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref is None:
            raise NotImplementedError(f"envFrom {src} is not simulated here")
        prefix = src.get("prefix", "")
        for k, v in config_maps[ref["name"]].items():
            env[prefix + k] = str(v)
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" in var:
            source = var["valueFrom"]
            if "fieldRef" in source:
                env[name] = _field(pod, source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[name] = str(config_maps[ref["name"]][ref["key"]])
            else:
                raise NotImplementedError(f"env {name} from {source} is not simulated here")
        else:
            env[name] = expand(str(var.get("value", "")), env)
    return env


def container_argv(
    container: Manifest,
    env: Mapping[str, str],
    image_entrypoint: list[str],
    image_cmd: list[str],
) -> list[str]:
    command = container.get("command")
    args = container.get("args")
    if command:
        return [expand(a, env) for a in [*command, *(args or [])]]
    if args is not None:
        return [*image_entrypoint, *(expand(a, env) for a in args)]
    return [*image_entrypoint, *image_cmd]
