"""Policy checks over every rendered overlay (what checkov or kube-linter would flag, and more).

Pod security: every pod meets Pod Security's `restricted` level, except the executor, whose
four exceptions are the ones its sandbox needs (docs/deploy.md): a Localhost seccomp profile
(Unconfined in the dev overlay), AppArmor unconfined, an unmasked /proc, in a user namespace.
Operations: requests and limits everywhere, pinned images, probes, disruption budgets, spread.
Traffic: the executor has no egress at all and only the labeler's workers and the trainer (and
labelled RL clients) reach it; the PRM server and Redis have their own short lists of callers.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import (
    OVERLAYS,
    Obj,
    Pod,
    Workload,
    egress_rules,
    find,
    ingress_allowed,
    matches,
    namespace_labels,
    of_kind,
    pod_of,
    rendered,
    workload,
    workloads,
)

SANDBOX = "executor"
# Volume types Pod Security `restricted` allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Ports served over HTTP by our images: the containers that must have HTTP probes.
HTTP_SERVICES = {"executor", "prm-server", "labeler-api"}

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def _all_workloads() -> list[tuple[str, Workload]]:
    return [(o, w) for o in OVERLAYS for w in workloads(rendered(o))]


each_workload = pytest.mark.parametrize(
    ("overlay", "w"), _all_workloads(), ids=lambda v: v if isinstance(v, str) else v.name
)


# -- pod security ---------------------------------------------------------------------------


@each_workload
def test_pods_run_as_non_root_without_privileges(overlay: str, w: Workload) -> None:
    pod_ctx = w.pod.get("securityContext", {})
    assert pod_ctx.get("runAsNonRoot") is True, w
    assert pod_ctx.get("runAsUser", 0) != 0 and pod_ctx.get("runAsGroup", 0) != 0, w
    assert pod_ctx.get("fsGroup", 1) != 0, w
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not w.pod.get(key, False), f"{w}: {key}"
    assert w.pod.get("automountServiceAccountToken") is False, f"{w}: no pod calls the API"
    for c in w.containers:
        ctx = c.get("securityContext", {})
        assert ctx.get("allowPrivilegeEscalation") is False, f"{w}/{c['name']}"
        assert not ctx.get("privileged", False), f"{w}/{c['name']}"
        assert ctx.get("capabilities", {}).get("drop") == ["ALL"], f"{w}/{c['name']}"
        assert not ctx.get("capabilities", {}).get("add"), f"{w}/{c['name']}"
        assert ctx.get("readOnlyRootFilesystem") is True, f"{w}/{c['name']}"
        assert ctx.get("runAsUser", 1) != 0 and ctx.get("runAsNonRoot", True), w
        assert "ports" not in c or all("hostPort" not in p for p in c["ports"]), w
    for volume in w.pod.get("volumes", []):
        (kind,) = set(volume) - {"name"}
        assert kind in RESTRICTED_VOLUMES, f"{w}: volume {volume['name']} is {kind}"


@each_workload
def test_only_the_executor_departs_from_the_restricted_profile(overlay: str, w: Workload) -> None:
    pod_ctx = w.pod["securityContext"]
    containers_ctx = [c.get("securityContext", {}) for c in w.containers]
    if w.name != SANDBOX:
        assert w.namespace == "codeprm"
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, w
        assert "appArmorProfile" not in pod_ctx, w
        assert all("seccompProfile" not in c and "appArmorProfile" not in c for c in containers_ctx)
        assert all(c.get("procMount", "Default") == "Default" for c in containers_ctx), w
        assert w.pod.get("hostUsers", True) is True, f"{w} needs no user namespace"
        return
    assert w.namespace == "codeprm-sandbox"
    assert w.pod["hostUsers"] is False, "the sandbox needs the pod's own user namespace"
    assert [c["procMount"] for c in containers_ctx] == ["Unmasked"]
    assert pod_ctx["appArmorProfile"] == {"type": "Unconfined"}
    expected = (
        {"type": "Unconfined"}
        if overlay == "dev"
        else {"type": "Localhost", "localhostProfile": "profiles/codeprm-executor.json"}
    )
    assert pod_ctx["seccompProfile"] == expected


@overlays
def test_namespaces_enforce_pod_security(overlay: str) -> None:
    objs = rendered(overlay)
    assert namespace_labels(objs, "codeprm")["pod-security.kubernetes.io/enforce"] == "restricted"
    sandbox = namespace_labels(objs, "codeprm-sandbox")
    assert sandbox["pod-security.kubernetes.io/enforce"] == "privileged"
    assert sandbox["pod-security.kubernetes.io/audit"] == "baseline"
    # The privileged namespace holds the executor and nothing else.
    assert [w.name for w in workloads(objs) if w.namespace == "codeprm-sandbox"] == [SANDBOX]


# -- resources and images ---------------------------------------------------------------------


@each_workload
def test_every_container_has_cpu_and_memory_requests_and_limits(overlay: str, w: Workload) -> None:
    for c in w.containers:
        resources = c.get("resources", {})
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), f"{w}/{c['name']}: {bound}"
        assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])
        assert _quantity(resources["requests"]["memory"]) <= _quantity(
            resources["limits"]["memory"]
        )


@each_workload
def test_images_are_pinned(overlay: str, w: Workload) -> None:
    for c in w.containers:
        image = c["image"]
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and tag and tag != "latest"), image
        assert c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent", image


def test_gpu_pods_request_gpus_and_tolerate_the_gpu_taint() -> None:
    for overlay in ("gpu", "keda"):
        for w in workloads(rendered(overlay)):
            gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in w.containers]
            if w.name in {"prm-server", "trainer"}:
                (container,) = w.pod["containers"]
                resources = container["resources"]
                assert resources["limits"]["nvidia.com/gpu"] == 1, w
                assert resources["requests"]["nvidia.com/gpu"] == 1, w
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                    w.pod["tolerations"]
                )
            else:
                assert not any(gpus), f"{w} takes a GPU it does not use"


def test_dev_is_cpu_only_with_one_replica_each() -> None:
    objs = rendered("dev")
    for w in workloads(objs):
        for c in w.containers:
            for bound in ("requests", "limits"):
                assert "nvidia.com/gpu" not in c["resources"][bound], w
        if w.kind != "Job":
            assert w.obj["spec"]["replicas"] == 1, w
    assert not of_kind(objs, "HorizontalPodAutoscaler")


# -- availability ---------------------------------------------------------------------------


@overlays
def test_http_services_have_startup_readiness_and_liveness_probes(overlay: str) -> None:
    for w in workloads(rendered(overlay)):
        for c in w.pod["containers"]:
            if w.name in HTTP_SERVICES:
                assert c["startupProbe"]["httpGet"]["path"] == "/healthz", w
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", w
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", w
                port_names = {p["name"] for p in c["ports"]}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert c[probe]["httpGet"]["port"] in port_names, f"{w}: {probe}"
            elif w.name == "redis":
                assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), w
            else:
                # A queue worker and a batch job serve no port (labeler.yaml, trainer.yaml).
                assert w.name in {"labeler-worker", "trainer"}, f"{w} has no probes"
                assert "ports" not in c, w


@overlays
def test_every_long_running_workload_has_a_disruption_budget_and_spreads(overlay: str) -> None:
    objs = rendered(overlay)
    budgets = of_kind(objs, "PodDisruptionBudget")
    for w in workloads(objs):
        if w.kind != "Deployment":
            continue  # the Job runs to completion; Redis is a single instance (redis.yaml)
        covering = [
            b
            for b in budgets
            if b["metadata"]["namespace"] == w.namespace
            and matches(b["spec"]["selector"], w.pod_labels)
        ]
        assert len(covering) == 1, f"{w}: {len(covering)} PodDisruptionBudgets"
        # maxUnavailable, never minAvailable: a one-replica service must not block drains.
        assert "maxUnavailable" in covering[0]["spec"], w
        spread = w.pod["topologySpreadConstraints"]
        assert {s["topologyKey"] for s in spread} >= {"kubernetes.io/hostname"}, w
        assert all(matches(s["labelSelector"], w.pod_labels) for s in spread), w


@overlays
def test_autoscaled_deployments_leave_replicas_to_the_autoscaler(overlay: str) -> None:
    objs = rendered(overlay)
    scalers = of_kind(objs, "HorizontalPodAutoscaler") + of_kind(objs, "ScaledObject")
    targets = [s["spec"]["scaleTargetRef"]["name"] for s in scalers]
    for name in targets:
        assert "replicas" not in workload(objs, name).obj["spec"], f"{name}: apply would fight"
    for hpa in of_kind(objs, "HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"
        target = workload(objs, hpa["spec"]["scaleTargetRef"]["name"])
        assert all("cpu" in c["resources"]["requests"] for c in target.containers)


# -- network policies -------------------------------------------------------------------------

CLIENTS_NS = {"codeprm.io/clients": "true"}
CLIENT = {"codeprm.io/client": "true"}


def _outsider(ns_labels: dict[str, str], labels: dict[str, str]) -> Pod:
    return Pod("rl-jobs", {**ns_labels, "kubernetes.io/metadata.name": "rl-jobs"}, labels)


def _callers(objs: list[Obj], target: str) -> set[str]:
    dst = pod_of(objs, workload(objs, target))
    return {w.name for w in workloads(objs) if ingress_allowed(objs, pod_of(objs, w), dst)}


@overlays
def test_executor_has_no_egress_at_all(overlay: str) -> None:
    objs = rendered(overlay)
    rules = egress_rules(objs, pod_of(objs, workload(objs, SANDBOX)))
    assert rules == [], f"executor egress rules: {rules}"


@overlays
def test_executor_accepts_only_the_labeler_workers_and_the_trainer(overlay: str) -> None:
    objs = rendered(overlay)
    assert _callers(objs, SANDBOX) == {"labeler-worker", "trainer"}
    executor = pod_of(objs, workload(objs, SANDBOX))
    assert ingress_allowed(objs, _outsider(CLIENTS_NS, CLIENT), executor)
    assert not ingress_allowed(objs, _outsider(CLIENTS_NS, {}), executor)
    assert not ingress_allowed(objs, _outsider({}, CLIENT), executor)


@overlays
def test_prm_server_labeler_and_redis_accept_only_their_callers(overlay: str) -> None:
    objs = rendered(overlay)
    assert _callers(objs, "prm-server") == {"trainer"}
    assert _callers(objs, "labeler-api") == {"trainer"}
    assert _callers(objs, "redis") == {"labeler-api", "labeler-worker"}
    for name in ("prm-server", "labeler-api"):
        target = pod_of(objs, workload(objs, name))
        assert ingress_allowed(objs, _outsider(CLIENTS_NS, CLIENT), target)
        assert not ingress_allowed(objs, _outsider({}, {}), target)
    redis = pod_of(objs, workload(objs, "redis"))
    assert not ingress_allowed(objs, _outsider(CLIENTS_NS, CLIENT), redis)
    keda = Pod("keda", {"kubernetes.io/metadata.name": "keda"}, {"app": "keda-operator"})
    assert ingress_allowed(objs, keda, redis) == (overlay == "keda")
    # Nothing talks to the queue workers or the trainer.
    for name in ("labeler-worker", "trainer"):
        assert not _callers(objs, name), name


@overlays
def test_network_policies_name_ports_the_pods_expose(overlay: str) -> None:
    objs = rendered(overlay)
    for policy in of_kind(objs, "NetworkPolicy"):
        selected = [
            w
            for w in workloads(objs)
            if w.namespace == policy["metadata"]["namespace"]
            and matches(policy["spec"]["podSelector"], w.pod_labels)
        ]
        assert selected, f"NetworkPolicy {policy['metadata']['name']} selects no pod"
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                for w in selected:
                    names = {p["name"] for c in w.pod["containers"] for p in c.get("ports", [])}
                    assert port["port"] in names, f"{policy['metadata']['name']}: {port}"


def test_storage_is_shared_across_nodes_except_in_dev() -> None:
    for overlay in OVERLAYS:
        claim = find(rendered(overlay), "PersistentVolumeClaim", "codeprm-data")
        expected = ["ReadWriteOnce"] if overlay == "dev" else ["ReadWriteMany"]
        assert claim["spec"]["accessModes"] == expected, overlay


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity ("500m", "4", "2Gi") as a number, enough to compare two."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert match, value
    number, suffix = float(match.group(1)), match.group(2)
    scale = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20}
    scale |= {"Gi": 2**30, "Ti": 2**40}
    return number * scale[suffix]
