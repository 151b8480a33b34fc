"""The executor's seccomp profile (k8s/security/codeprm-executor.seccomp.json) is enough for the
sandbox, and every call it adds to the runtime's default profile is needed.

The executor is started as it runs in its pod: as uid 10001 inside a user namespace (the pod's
`hostUsers: false`), under the profile compiled by libseccomp with no_new_privs set (the pod's
`allowPrivilegeEscalation: false`). With the profile it must pass its start-up self-test and
run a program that starts a thread and a subprocess; with any one of the six added calls taken
away (clone back to the runtime default's "no namespace flags") it must stay unready.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeprm.stack import free_port
from tests.deploy.manifests import K8S, ROOT, Obj, rendered, workload

PROFILE = K8S / "security" / "codeprm-executor.seccomp.json"
# What the sandbox does beyond the runtime default (services/executor/jail.py, linux.py).
ADDED = ("clone", "unshare", "mount", "umount2", "pivot_root", "sethostname")
# The runtime default's clone rule: allowed only without CLONE_NEW* flags.
DEFAULT_CLONE = {
    "names": ["clone"],
    "action": "SCMP_ACT_ALLOW",
    "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
}
# Calls the runtime default refuses and this profile must keep refusing.
REFUSED = {
    "bpf",
    "perf_event_open",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "open_by_handle_at",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "setns",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "chroot",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "syslog",
    "quotactl",
    "iopl",
    "ioperm",
}
USER = ["unshare", "--user", "--map-user=10001", "--map-group=10001", "--"]
THREAD_AND_SUBPROCESS = """
import subprocess, threading
t = threading.Thread(target=print, args=("thread",)); t.start(); t.join()
print(subprocess.run(["/bin/echo", "child"], capture_output=True, text=True).stdout.strip())
"""


def _profile() -> Obj:
    profile: Obj = json.loads(PROFILE.read_text())
    return profile


def _allowed(profile: Obj) -> set[str]:
    """Calls allowed whatever their arguments."""
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_profile_is_plain_oci_that_every_runtime_reads_the_same_way() -> None:
    # containerd reads a Localhost profile as the OCI runtime spec's LinuxSeccomp: Docker's
    # conditional fields (includes, excludes, archMap) would be ignored, silently widening it.
    profile = _profile()
    assert set(profile) == {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "args", "errnoRet"}, rule
        assert rule["action"] in {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"}, rule


def test_profile_is_the_runtime_default_plus_what_the_sandbox_needs() -> None:
    profile = _profile()
    allowed = _allowed(profile)
    assert set(ADDED) <= allowed
    assert {"prctl", "capset", "setresuid", "setgroups"} <= allowed  # used by the jail too
    assert not allowed & REFUSED, sorted(allowed & REFUSED)
    (clone3,) = [r for r in profile["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}  # ENOSYS
    added_rule = profile["syscalls"][-1]
    assert added_rule == {"names": list(ADDED), "action": "SCMP_ACT_ALLOW"}


def test_base_and_gpu_executors_use_the_profile() -> None:
    for overlay in ("base", "gpu", "keda"):
        pod = workload(rendered(overlay), "executor").pod
        assert pod["securityContext"]["seccompProfile"] == {
            "type": "Localhost",
            "localhostProfile": f"profiles/{PROFILE.name.replace('.seccomp', '')}",
        }


def _can_map_users() -> bool:
    done = subprocess.run([*USER, "true"], capture_output=True, check=False)
    return done.returncode == 0


def _start(profile: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CODEPRM_")},
        "CODEPRM_EXECUTOR_PORT": str(port),
        "CODEPRM_EXECUTOR_WORKERS": "1",
    }
    command = [sys.executable, "-m", "codeprm", "executor", "serve"]
    loader = [sys.executable, "-m", "tests.deploy.seccomp", str(profile), "--"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*USER, *loader, *command],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, port


def _settled_readiness(proc: subprocess.Popen[bytes], port: int, log: Path) -> Any:
    """/readyz once the start-up (pool and self-test) is over, ready or not."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
            if body["checks"].get("sandbox") != "starting":
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"executor start-up did not finish:\n{log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def executors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The executor under the profile, and under the profile minus each added call."""
    if not _can_map_users():
        pytest.skip("this machine cannot create user namespaces (neither can the pod's node)")
    tmp = tmp_path_factory.mktemp("seccomp")
    variants: dict[str, Path] = {"profile": PROFILE}
    for call in ADDED:
        reduced = _profile()
        reduced["syscalls"][-1]["names"] = [n for n in ADDED if n != call]
        if call == "clone":
            reduced["syscalls"].append(DEFAULT_CLONE)
        variants[f"without {call}"] = tmp / f"without-{call}.json"
        variants[f"without {call}"].write_text(json.dumps(reduced))
    # Started side by side: most of the time is Python starting up.
    running = {
        name: (*_start(path, tmp / f"{name}.log"), tmp / f"{name}.log")
        for name, path in variants.items()
    }
    try:
        yield running
    finally:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_sandbox_works_under_the_profile(executors: dict[str, Any]) -> None:
    proc, port, log = executors["profile"]
    readiness = _settled_readiness(proc, port, log)
    assert readiness["ready"] is True, readiness
    assert set(readiness["checks"].values()) == {"ok"} and not readiness["warnings"]
    result = httpx.post(
        f"http://127.0.0.1:{port}/v1/run", json={"code": THREAD_AND_SUBPROCESS}, timeout=30
    ).json()
    assert (result["status"], result["stdout"].split()) == ("ok", ["thread", "child"]), result


@pytest.mark.parametrize("call", ADDED)
def test_each_added_call_is_needed(executors: dict[str, Any], call: str) -> None:
    proc, port, log = executors[f"without {call}"]
    readiness = _settled_readiness(proc, port, log)
    assert readiness["ready"] is False, f"the sandbox works without {call}: drop it"
    failed = {name: why for name, why in readiness["checks"].items() if why != "ok"}
    assert failed, readiness
