"""`codeprm train prm` on a tiny Qwen2-shaped model built here: it learns labels that are
decidable from the text, the server reproduces its held-out accuracy over HTTP, and an
interrupted run resumes exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

import codeprm.services.trainer.prm_train as prm_train
from codeprm.api.prm import PrmMetadata
from codeprm.services.trainer.prm_data import read_examples, split_by_problem
from codeprm.services.trainer.prm_metrics import evaluate
from codeprm.services.trainer.prm_train import TrainPrmConfig, train_prm
from codeprm.tiny import build_tiny_policy
from tests.servers import start_prm_server
from tests.trainer.synthetic import synthetic_rows, write_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "labels.jsonl", synthetic_rows(400))


def config(data: Path, base: Path, out: Path, **overrides: object) -> TrainPrmConfig:
    fields: dict[str, object] = dict(
        data=data,
        base_model=base,
        out=out,
        lr=3e-3,
        epochs=4,
        batch_size=16,
        warmup_steps=5,
        eval_every=10,
        eval_fraction=0.2,
    )
    return TrainPrmConfig.model_validate(fields | overrides)


def test_learns_decidable_labels_and_the_server_reproduces_them(
    data: Path, base_model: Path, tmp_path: Path
) -> None:
    cfg = config(data, base_model, tmp_path / "prm")
    result = train_prm(cfg)
    assert result.final is not None
    assert result.final.line_accuracy >= 0.95, result.final
    assert result.final.first_error_accuracy >= 0.9, result.final
    rows = [json.loads(line) for line in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 0 and rows[0]["eval_line_accuracy"] < 0.9  # it did learn
    assert [r["step"] for r in rows[1:]] == list(range(1, result.steps + 1))
    assert (cfg.out / "curves.png").stat().st_size > 10_000
    assert (cfg.out / "model.safetensors").is_file()
    assert not (cfg.out / "checkpoint").exists()
    metadata = PrmMetadata.model_validate_json((cfg.out / "codeprm_prm.json").read_text())
    assert metadata.label_scheme == "pm1_mse"

    _, held_out = split_by_problem(read_examples(data), cfg.eval_fraction, cfg.seed)
    proc, url = start_prm_server(cfg.out, CODEPRM_PRM_MAX_ITEMS="256")
    try:
        items = [{"prompt": e.prompt, "code": e.code} for e in held_out]
        reply = httpx.post(f"{url}/v1/score", json={"items": items}, timeout=60)
        reply.raise_for_status()
    finally:
        proc.terminate()
        proc.wait(30)
    served = [[s["score"] for s in r["line_scores"]] for r in reply.json()["results"]]
    over_http = evaluate(served, [e.labels for e in held_out], threshold=0.0)
    assert over_http.lines == result.final.lines
    assert over_http.line_accuracy == pytest.approx(result.final.line_accuracy, abs=0.005)


def test_an_interrupted_run_resumes_to_the_same_weights(
    data: Path, base_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = dict(epochs=1, save_every=5, eval_every=100)
    whole = train_prm(config(data, base_model, tmp_path / "whole", **overrides))

    log_row = prm_train._log_row

    def crash_at_step_8(cfg: TrainPrmConfig, history: list, row: dict, procs: object) -> None:  # type: ignore[type-arg]
        log_row(cfg, history, row, procs)
        if row["step"] == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(prm_train, "_log_row", crash_at_step_8)
    cfg = config(data, base_model, tmp_path / "resumed", **overrides)
    with pytest.raises(KeyboardInterrupt):
        train_prm(cfg)
    assert (cfg.out / "checkpoint" / "state.pt").is_file()
    monkeypatch.setattr(prm_train, "_log_row", log_row)
    resumed = train_prm(cfg)

    assert resumed.steps == whole.steps
    steps = [json.loads(r)["step"] for r in (cfg.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(0, whole.steps + 1))  # 6..8 logged once, after the resume
    a = load_file(whole.out / "model.safetensors")
    b = load_file(resumed.out / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
    with pytest.raises(FileExistsError):
        train_prm(cfg)


def test_cli_trains_a_bce_prm_from_trl_rows(base_model: Path, tmp_path: Path) -> None:
    trl = write_rows(tmp_path / "trl.jsonl", synthetic_rows(400, seed=5, trl=True))
    out = tmp_path / "bce"
    done = subprocess.run(
        [
            sys.executable, "-m", "codeprm", "train", "prm",
            "--data", str(trl), "--base-model", str(base_model), "--out", str(out),
            "--objective", "bce", "--lr", "3e-3", "--epochs", "4", "--batch-size", "16",
            "--warmup-steps", "5", "--eval-fraction", "0.2",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "line accuracy" in done.stderr
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval_line_accuracy"] >= 0.9, last
    metadata = PrmMetadata.model_validate_json((out / "codeprm_prm.json").read_text())
    assert metadata.label_scheme == "binary_bce"
