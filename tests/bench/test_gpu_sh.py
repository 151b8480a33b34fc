"""`bench/gpu.sh` end to end at tiny shapes on the CPU, with this interpreter (nothing is
installed): every part runs and results.json holds its figures, so the script is ready for the
day a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.timeout(2700)
def test_gpu_sh_runs_every_part_at_tiny_shapes(tmp_path: Path) -> None:
    env = os.environ | {
        "CODEPRM_BENCH_SCALE": "tiny",
        "CODEPRM_BENCH_PYTHON": sys.executable,
        "CODEPRM_BENCH_DEVICE": "cpu",
        "CODEPRM_BENCH_LIMIT_S": "600",  # a loaded 2-core CI machine, not a GPU's 8 minutes
    }
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=2650,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["scale"] == "tiny" and results["targets"] is None
    logs = {
        name: (tmp_path / part["log"]).read_text()[-2000:]
        for name, part in results["parts"].items()
    }
    assert {name: part["status"] for name, part in results["parts"].items()} == {
        "prm_server_small": "ok",
        "prm_server_large": "ok",
        "ppo_step": "ok",
        "prm_train": "ok",
    }, logs
    server = results["parts"]["prm_server_small"]["figures"]
    assert server["dynamic_batching"]["rate"] > 0 and server["best_offline"]["rate"] > 0
    assert server["vs_one_forward_per_request"] > 0
    ppo = results["parts"]["ppo_step"]["figures"]
    assert 0 < ppo["reward_share"] < 1
    assert ppo["seconds"]["rewards"] <= ppo["step_s"]
    train = results["parts"]["prm_train"]["figures"]
    assert train["tokens_per_s"] > 0 and 0 <= train["padding_fraction"] < 0.5
    assert results["prm_train_tokens_per_s"] == train["tokens_per_s"]


def test_results_record_a_part_that_failed_or_ran_out_of_time(tmp_path: Path) -> None:
    (tmp_path / "prm_server_small.rc").write_text("124\n")
    (tmp_path / "prm_server_large.rc").write_text("1\n")
    (tmp_path / "ppo_step.rc").write_text("0\n")
    (tmp_path / "ppo_step.json").write_text(json.dumps({"reward_share": 0.25}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_results.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    status = {name: part["status"] for name, part in results["parts"].items()}
    assert status == {
        "prm_server_small": "timed out",
        "prm_server_large": "failed",
        "ppo_step": "ok",
        "prm_train": "not run",
    }
    assert results["targets"]["ppo_reward_share"] == {
        "measured": 0.25,
        "target": "<= 0.1",
        "met": False,
    }
    assert results["targets"]["prm_server_0.5b_vs_best_offline"]["met"] is None
