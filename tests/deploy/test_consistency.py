"""The manifests agree with the code they deploy.

Environment variables are fields of the services' settings classes and their values validate;
probes hit routes the apps serve, on the ports the settings bind; every URL in a config names a
Service that exists, on a port that leads to the right container, and that the NetworkPolicies
let the caller reach; paths in configs sit on mounted volumes; grace periods cover the services'
own shutdown waits; image tags are the project's version.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from codeprm.services.executor.settings import ExecutorSettings
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.serving.settings import ServiceSettings
from tests.deploy.manifests import (
    OVERLAYS,
    ROOT,
    Obj,
    Pod,
    Workload,
    container_env,
    find,
    ingress_allowed,
    matches,
    of_kind,
    pod_of,
    rendered,
    workload,
    workloads,
)

# Which settings class reads the environment of which container (by image).
SETTINGS: dict[str, type[ServiceSettings]] = {
    "codeprm/executor": ExecutorSettings,
    "codeprm/prm-server": PrmSettings,
    "codeprm/labeler": LabelerSettings,
}
# Read by the CLI itself (codeprm/cli.py), not by a settings class.
CLI_VARIABLES = {"CODEPRM_LOG_LEVEL"}

overlays = pytest.mark.parametrize("overlay", OVERLAYS)


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a pydantic-settings class reads."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = set()
    for field_name, field in cls.model_fields.items():
        if isinstance(field.validation_alias, AliasChoices):
            choices = field.validation_alias.choices
            names |= {c for c in choices if isinstance(c, str) and c.isupper()}
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def _settings_class(c: Obj) -> type[ServiceSettings] | None:
    return SETTINGS.get(c["image"].rsplit(":", 1)[0])


def _service_containers(overlay: str) -> list[tuple[Workload, Obj, type[ServiceSettings]]]:
    found = []
    for w in workloads(rendered(overlay)):
        for c in w.pod["containers"]:
            cls = _settings_class(c)
            if cls is not None:
                found.append((w, c, cls))
    return found


def _settings(
    monkeypatch: pytest.MonkeyPatch, cls: type[ServiceSettings], env: dict[str, str | None]
) -> ServiceSettings:
    """The settings a container starts with: its environment, nothing from this process."""
    for name in [n for n in os.environ if n.startswith("CODEPRM_")]:
        monkeypatch.delenv(name)
    for name in ("REDIS_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value is not None:  # from a Secret: not known here
            monkeypatch.setenv(name, value)
    return cls()


# -- settings -------------------------------------------------------------------------------


@overlays
def test_every_variable_is_a_settings_field(overlay: str) -> None:
    objs = rendered(overlay)
    for w in workloads(objs):
        for c in w.containers:
            cls = _settings_class(c)
            known = (env_names(cls) if cls else set()) | CLI_VARIABLES
            unknown = set(container_env(objs, w, c)) - known
            assert not unknown, f"{w}/{c['name']}: no setting reads {sorted(unknown)}"


@overlays
def test_values_validate_and_bind_where_the_probes_look(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered(overlay)
    for w, c, cls in _service_containers(overlay):
        settings = _settings(monkeypatch, cls, container_env(objs, w, c))
        assert settings.host == "0.0.0.0", f"{w}: must listen on the pod's address"
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if c["args"][:2] == ["label", "worker"]:
            assert not ports
            continue
        assert ports == {"http": settings.port}, w


def _routes(cls: type[ServiceSettings]) -> set[str]:
    app: FastAPI
    if cls is ExecutorSettings:
        from codeprm.services.executor.app import create_app as executor_app

        app = executor_app(ExecutorSettings())
    elif cls is LabelerSettings:
        from codeprm.services.labeler.app import create_app as labeler_app

        app = labeler_app(LabelerSettings())
    else:
        from codeprm.services.prm_server.app import create_app as prm_app

        app = prm_app(PrmSettings())
    return {getattr(r, "path", "") for r in app.routes}


def test_probe_paths_are_routes_of_the_services() -> None:
    for overlay in OVERLAYS:
        for w, c, cls in _service_containers(overlay):
            probes = [c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe") if p in c]
            probes += [c["livenessProbe"]["httpGet"]["path"]] if "livenessProbe" in c else []
            assert set(probes) <= _routes(cls), f"{w}: {probes}"


@overlays
def test_executor_workers_match_its_cpus(overlay: str) -> None:
    # os.cpu_count() inside a pod is the node's: the worker count must be set explicitly.
    objs = rendered(overlay)
    w = workload(objs, "executor")
    (c,) = w.pod["containers"]
    env = container_env(objs, w, c)
    workers = int(str(env["CODEPRM_EXECUTOR_WORKERS"]))
    cpus = int(c["resources"]["limits"]["cpu"])
    pinned = str(env.get("CODEPRM_EXECUTOR_PIN_JUDGES", "true")).lower() == "true"
    # Pinned: two per CPU, as the default (`_default_workers`); unpinned: one per CPU + 1.
    assert workers == (2 * cpus if pinned else cpus + 1)


@overlays
def test_grace_periods_cover_the_services_own_shutdown(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered(overlay)
    for w, c, cls in _service_containers(overlay):
        settings = _settings(monkeypatch, cls, container_env(objs, w, c))
        grace = w.pod["terminationGracePeriodSeconds"]
        assert grace >= settings.graceful_shutdown_s + 5, w
        if isinstance(settings, LabelerSettings) and c["args"][:2] == ["label", "worker"]:
            assert grace >= settings.job_completion_wait_s + 10, w


# -- wiring ---------------------------------------------------------------------------------


def _service_target(objs: list[Obj], url: str, client: Pod) -> Workload:
    """The workload behind `url` as seen from `client`'s namespace, checking every hop."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    labels = host.split(".")
    namespace = labels[1] if len(labels) > 1 else client.namespace
    assert labels[2:] in ([], ["svc"], ["svc", "cluster", "local"]), url
    service = find(objs, "Service", labels[0], namespace)
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    selector = {"matchLabels": service["spec"]["selector"]}
    targets = [
        w for w in workloads(objs) if w.namespace == namespace and matches(selector, w.pod_labels)
    ]
    assert len(targets) == 1, f"{url}: {len(targets)} workloads behind it"
    container_ports = {
        p["name"]: p["containerPort"] for c in targets[0].pod["containers"] for p in c["ports"]
    }
    assert service_port["targetPort"] in container_ports, url
    assert ingress_allowed(objs, client, pod_of(objs, targets[0])), (
        f"the NetworkPolicies stop {client} from reaching {url}"
    )
    return targets[0]


@overlays
def test_labeler_reaches_executor_and_redis(overlay: str) -> None:
    objs = rendered(overlay)
    for name in ("labeler-api", "labeler-worker"):
        w = workload(objs, name)
        env = container_env(objs, w, w.pod["containers"][0])
        if name == "labeler-worker":
            executor_url = str(env["CODEPRM_LABELER_EXECUTOR_URL"])
            assert _service_target(objs, executor_url, pod_of(objs, w)).name == "executor"
        assert _service_target(objs, str(env["REDIS_URL"]), pod_of(objs, w)).name == "redis"


def _ppo_config(objs: list[Obj]) -> PpoConfig:
    import yaml

    w = workload(objs, "trainer")
    (volume,) = [v for v in w.pod["volumes"] if v["name"] == "config"]
    data = find(objs, "ConfigMap", volume["configMap"]["name"], w.namespace)["data"]
    return PpoConfig.model_validate(yaml.safe_load(data["ppo.yaml"]))


@overlays
def test_trainer_config_is_valid_and_reaches_its_services(overlay: str) -> None:
    objs = rendered(overlay)
    trainer = workload(objs, "trainer")
    config = _ppo_config(objs)
    client = pod_of(objs, trainer)
    assert _service_target(objs, config.executor_url, client).name == "executor"
    assert _service_target(objs, config.prm_url, client).name == "prm-server"
    (c,) = trainer.pod["containers"]
    assert c["args"][-1] == "/etc/codeprm/ppo.yaml"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/etc/codeprm" in mounts
    for path, writable in [(config.policy, False), (config.value_init, False), (config.out, True)]:
        assert path is not None
        mount = _mount_of(mounts, path)
        assert not (writable and mount.get("readOnly", False)), path


def _mount_of(mounts: dict[str, Obj], path: Path | str) -> Obj:
    hits = [m for p, m in mounts.items() if str(path).startswith(p.rstrip("/") + "/")]
    assert hits, f"{path} is on no mounted volume"
    return hits[0]


@overlays
def test_prm_model_is_on_a_mounted_volume(overlay: str) -> None:
    objs = rendered(overlay)
    w = workload(objs, "prm-server")
    (c,) = w.pod["containers"]
    model = str(container_env(objs, w, c)["CODEPRM_PRM_MODEL"])
    _mount_of({m["mountPath"]: m for m in c["volumeMounts"]}, model)


def test_keda_scales_on_the_labeler_queue() -> None:
    objs = rendered("keda")
    (scaled,) = of_kind(objs, "ScaledObject")
    worker = workload(objs, scaled["spec"]["scaleTargetRef"]["name"])
    assert worker.name == "labeler-worker"
    env = container_env(objs, worker, worker.pod["containers"][0])
    meta = scaled["spec"]["triggers"][0]["metadata"]
    assert meta["listName"] == env["CODEPRM_LABELER_QUEUE_NAME"]
    redis_url = urlsplit(str(env["REDIS_URL"]))
    assert meta["databaseIndex"] == (redis_url.path.strip("/") or "0")
    host, port = meta["address"].rsplit(":", 1)
    assert int(port) == redis_url.port
    # The KEDA operator connects from its own namespace.
    keda = Pod("keda", {"kubernetes.io/metadata.name": "keda"}, {"app": "keda-operator"})
    assert _service_target(objs, f"redis://{host}:{port}", keda).name == "redis"


# -- images ---------------------------------------------------------------------------------


def test_images_are_this_version_of_codeprm() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for overlay in OVERLAYS:
        for w in workloads(rendered(overlay)):
            for c in w.containers:
                name, tag = c["image"].rsplit(":", 1)
                if name.startswith("codeprm/"):
                    assert tag == version, c["image"]
                    dockerfile = f"{name.removeprefix('codeprm/')}.Dockerfile"
                    assert (ROOT / "docker" / dockerfile).is_file(), c["image"]
                else:
                    assert name == "redis", c["image"]
