"""Every overlay renders with kustomize, and every object it renders is a valid Kubernetes object.

Validation is offline, against the OpenAPI-derived JSON schemas that kubernetes-validate ships,
in strict mode (an unknown field is an error, as `kubectl apply --validate=strict` would say):
for the oldest Kubernetes these manifests support (user namespaces on by default: 1.33) and for
the newest schemas shipped. Custom resources have no schema there; KEDA's ScaledObject is the
only one, and it gets a structural check instead.
"""

from __future__ import annotations

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.manifests import OVERLAYS, Obj, rendered

OLDEST = "1.33"
# Custom resources (CRDs installed by an operator, not part of Kubernetes): skipped by the
# schema check, checked by hand below.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}


def _versions() -> list[str]:
    return sorted({OLDEST, kubernetes_validate.latest_version()})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_objects_in_known_namespaces(overlay: str) -> None:
    objs = rendered(overlay)
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert namespaces == {"codeprm", "codeprm-sandbox"}
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") in namespaces, f"{o['kind']} has no namespace"
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "codeprm"
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs]
    assert len(keys) == len(set(keys)), "an object is rendered twice"


@pytest.mark.parametrize("version", _versions())
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_validate_against_kubernetes_schemas(overlay: str, version: str) -> None:
    errors = []
    for obj in rendered(overlay):
        kind = (obj["apiVersion"], obj["kind"])
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if kind not in CUSTOM_KINDS:
                errors.append(f"{kind}: no Kubernetes schema, and not a known custom resource")
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        else:
            assert kind not in CUSTOM_KINDS, f"{kind} has a schema now: drop it from CUSTOM_KINDS"
    assert not errors, "\n".join(errors)


def _scaled_object() -> Obj:
    return next(o for o in rendered("keda") if o["kind"] == "ScaledObject")


def test_scaled_object_has_keda_required_fields() -> None:
    # keda.sh/v1alpha1 ScaledObject: scaleTargetRef.name and at least one trigger with a type
    # and metadata are required; the redis trigger needs an address, a listName and a length.
    spec = _scaled_object()["spec"]
    assert isinstance(spec["scaleTargetRef"]["name"], str)
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert {"address", "listName", "listLength"} <= set(meta)
    # KEDA reads trigger metadata as strings only.
    assert all(isinstance(v, str) for v in meta.values()), meta
    assert int(meta["listLength"]) > 0
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
