"""`codeprm demo --quick` as a user runs it: the whole pipeline, real services, real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.servers import port_open

pytestmark = pytest.mark.slow


def demo_env(tmp_path: Path, redis_namespace: str) -> dict[str, str]:
    """A user's environment, with this test's Redis queue and a fresh model cache."""
    return {
        **os.environ,
        "REDIS_URL": REDIS_URL,
        "CODEPRM_LABELER_QUEUE_NAME": redis_namespace,
        "CODEPRM_CACHE": str(tmp_path / "cache"),
        "COLUMNS": "120",
    }


# A few minutes on an idle 2-core machine; the limits leave room for a machine shared with
# other jobs (drawing the listfuncs family and the SFT steps are CPU-bound).
@pytest.mark.timeout(1500)
def test_demo_runs_the_whole_pipeline(tmp_path: Path, redis_namespace: str) -> None:
    out = tmp_path / "demo"
    env = demo_env(tmp_path, redis_namespace)
    done = subprocess.run(
        [sys.executable, "-m", "codeprm", "demo", "--quick", "--out", str(out), "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1400,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "demo passed" in output

    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert {row["strategy"] for row in labels} == {"mutation", "binary_search"}
    assert all(row["problem_id"].startswith("listfuncs/") for row in labels)
    on_policy = (out / "on_policy.jsonl").read_text().splitlines()
    assert on_policy and all(json.loads(row)["strategy"] == "binary_search" for row in on_policy)
    assert (out / "prm" / "codeprm_prm.json").is_file()
    assert (out / "prm" / "curves.png").is_file()
    prm_rows = [
        json.loads(line) for line in (out / "prm" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("on_policy_first_error_accuracy" in row for row in prm_rows)
    assert "on_policy_base_likelihood_auc" in prm_rows[0]  # the PRM's yardstick, at step 0
    rows = [json.loads(line) for line in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval/pass_at_1" in rows[0] and "eval/pass_at_1" in rows[-1]  # before and after
    assert all(r["time/prm_s"] > 0 and r["time/executor_s"] > 0 for r in rows[1:])
    assert "value/ev_start" in rows[1] and "value/ev_start_calibrated" in rows[1]
    page = (out / "ppo" / "report" / "index.html").read_text()
    assert re.search(r"background:#[0-9a-f]{6}", page)  # lines coloured by PRM score
    assert len((out / "eval.jsonl").read_text().splitlines()) == 8 * 4  # problems x samples
    assert "held-out sampled pass@1" in output


@pytest.mark.timeout(600)
def test_a_stopped_demo_stops_the_services_it_started(tmp_path: Path, redis_namespace: str) -> None:
    env = demo_env(tmp_path, redis_namespace)
    demo = subprocess.Popen(
        [sys.executable, "-m", "codeprm", "demo", "--quick", "--out", str(tmp_path / "demo")]
        + ["--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert demo.stdout is not None
    seen = ""
    try:
        for line in demo.stdout:  # the service checks come first, then the policy stage
            seen += line
            if "policy" in line and "http://" in seen:
                break
        ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", seen)]
        assert len(ports) == 3, seen
        demo.send_signal(signal.SIGTERM)
        seen += demo.communicate(timeout=120)[0]
    finally:
        demo.kill()
    assert demo.returncode != 0, seen
    for port in ports:
        assert not port_open(port), f"port {port} still served"
