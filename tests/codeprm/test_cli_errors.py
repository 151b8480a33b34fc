"""The CLI's error paths, run as a user runs them: one readable line, no traceback, and an exit
code that says whose the fault is (2: the input; 1: a service or Redis that is down)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from codeprm.stack import free_port
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def codeprm(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeprm", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for needle in needles:
        assert needle in errors[0], output
    return errors[0]


def test_the_shipped_ppo_example_names_the_missing_policy() -> None:
    # examples/ppo.yaml as shipped points at /ckpt/...: a user must edit it first.
    done = codeprm("train", "ppo", "--config", "examples/ppo.yaml", "--out", "/nonexistent/run")
    one_line_error(done, 2, "policy /ckpt/Qwen2.5-Coder-0.5B: no such directory")


def test_a_missing_or_broken_config_file(tmp_path: Path) -> None:
    one_line_error(codeprm("train", "ppo", "--config", str(tmp_path / "nope.yaml")), 2, "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: [unclosed\n")
    one_line_error(codeprm("train", "ppo", "--config", str(bad)), 2, "not valid YAML")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("policy: /x\nout: /y\nstepz: 3\n")
    one_line_error(codeprm("train", "ppo", "--config", str(wrong)), 2, "dataset", "stepz")


def test_train_prm_with_a_missing_base_model(tmp_path: Path) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text("")
    done = codeprm(
        "train", "prm", "--data", str(data), "--base-model", str(tmp_path / "no-model"),
        "--out", str(tmp_path / "prm"),
    )  # fmt: skip
    one_line_error(done, 2, "base model", "no-model: no such directory")


def test_eval_says_the_executor_is_down_before_sampling(tiny_prm_dir: Path) -> None:
    done = codeprm(
        "eval", "--model", str(tiny_prm_dir), "--dataset", "listfuncs-test", "--limit", "1",
        "--executor", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    one_line_error(done, 1, "/v1/ping", "is the service running?")


def test_eval_and_report_with_missing_paths(tmp_path: Path) -> None:
    one_line_error(codeprm("eval", "--model", str(tmp_path / "gone")), 2, "gone: no such directory")
    one_line_error(codeprm("report", str(tmp_path / "gone")), 2, "gone")


def test_label_commands_with_the_labeler_down(tmp_path: Path) -> None:
    down = {"CODEPRM_LABELER_URL": f"http://127.0.0.1:{free_port()}"}
    one_line_error(codeprm("label", "status", "abc", **down), 1, "is the service running?")
    one_line_error(codeprm("label", "list", **down), 1, "/v1/label/runs")
    out = tmp_path / "labels.jsonl"
    out.write_text("precious\n")
    one_line_error(codeprm("label", "export", "abc", "--out", str(out), **down), 1)
    assert out.read_text() == "precious\n"


def test_a_worker_with_redis_down_says_so() -> None:
    done = codeprm("label", "worker", "--burst", REDIS_URL=dead_redis())
    one_line_error(done, 1, "REDIS_URL")


def test_prm_serve_with_a_missing_or_broken_checkpoint(tmp_path: Path) -> None:
    one_line_error(
        codeprm("prm", "serve", "--model", str(tmp_path / "nope"), "--port", str(free_port())),
        2,
        "PRM checkpoint",
        "no such directory",
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')
    done = codeprm("prm", "serve", "--model", str(broken), "--port", str(free_port()))
    one_line_error(done, 2, "cannot load the PRM from", str(broken))


def test_a_relative_path_is_the_users_own_not_the_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Resolved before anything leaves the shell: the labeler's working directory is not ours.
    from codeprm.cli import _backend_spec, _dataset_arg

    monkeypatch.chdir(tmp_path)
    (tmp_path / "policy").mkdir()
    (tmp_path / "problems.jsonl").write_text("")
    assert _dataset_arg("problems.jsonl") == str(tmp_path / "problems.jsonl")
    assert _dataset_arg("humaneval") == "humaneval"
    assert _backend_spec("policy", None, "completions") == {
        "kind": "hf",
        "model": str(tmp_path / "policy"),
    }


def test_label_serve_with_redis_down_or_its_port_taken() -> None:
    down = codeprm("label", "serve", "--port", str(free_port()), REDIS_URL=dead_redis())
    one_line_error(down, 1, "REDIS_URL")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = codeprm("label", "serve", "--port", str(port), REDIS_URL=REDIS_URL)
    assert busy.returncode == 3, busy.stdout + busy.stderr  # as uvicorn.run: a failed start
    assert "address already in use" in busy.stderr.lower(), busy.stderr
