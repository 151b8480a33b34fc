"""`codeprm train prm` on two CPU processes (gloo), launched by torchrun or by `accelerate
launch`: DDP and FSDP reach the weights one process reaches on the same global batch, a
checkpoint resumes on another number of processes, and what FSDP saves is what the PRM server
serves."""

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
from codeprm.api.prm import ScoreItem
from codeprm.prm_model import encode, forward, load_prm
from codeprm.services.trainer.prm_data import read_examples, split_by_problem
from codeprm.services.trainer.prm_train import TrainPrmConfig, train_prm
from codeprm.stack import free_port
from codeprm.tiny import build_tiny_policy
from tests.servers import start_prm_server
from tests.trainer.synthetic import synthetic_rows, write_rows

pytestmark = pytest.mark.slow

# 96 rows, 20% of problems held out: 10 steps of a global batch of 8 programs.
FLAGS = dict(
    lr=3e-3, epochs=1, batch_size=4, warmup_steps=2, eval_fraction=0.2, eval_every=3, device="cpu"
)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "labels.jsonl", synthetic_rows(96))


@pytest.fixture(scope="module")
def one_process(base_model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, 2 micro-batches of 4 per step."""
    out = tmp_path_factory.mktemp("runs") / "one"
    train_prm(config(data, base_model, out, grad_accum=2))
    return out


def config(data: Path, base: Path, out: Path, **overrides: object) -> TrainPrmConfig:
    fields: dict[str, object] = dict(data=data, base_model=base, out=out, **FLAGS)
    return TrainPrmConfig.model_validate(fields | overrides)


def launcher_argv(launcher: str) -> list[str]:
    """Two launchers a user may start `codeprm train prm` with; both start 2 processes with
    the same RANK / WORLD_SIZE / MASTER_ADDR environment. Accelerate runs several CPU
    processes only through --multi_gpu (its --cpu mode is one process), gloo on a CPU."""
    if launcher == "torchrun":
        return ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    return [
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2",
        "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no",
        f"--main_process_port={free_port()}",
    ]  # fmt: skip


def launch(data: Path, base: Path, out: Path, *flags: str, launcher: str = "torchrun") -> None:
    """`codeprm train prm` on 2 CPU processes, exactly as a user launches it."""
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in FLAGS.items()]
    done = subprocess.run(
        [
            sys.executable, *launcher_argv(launcher),
            "-m", "codeprm", "train", "prm", "--data", str(data), "--base-model", str(base),
            "--out", str(out), *argv, *flags,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (done.stdout + done.stderr).count("PRM written to") == 1  # one summary, from rank 0


def rows(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(a_dir / "model.safetensors")
    b = load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)


HELD_OUT = ("eval_line_accuracy", "eval_auc", "eval_first_error_accuracy")


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_ddp_on_two_processes_reaches_the_weights_of_one(
    launcher: str, one_process: Path, base_model: Path, data: Path, tmp_path: Path
) -> None:
    two = tmp_path / "two"
    launch(data, base_model, two, "--grad-accum=1", "--parallel=ddp", launcher=launcher)
    assert_same_weights(one_process, two)
    ref, got = rows(one_process), rows(two)
    assert [r["step"] for r in got] == [r["step"] for r in ref] == list(range(11))
    for a, b in zip(ref, got, strict=True):
        assert {k: a.get(k) for k in HELD_OUT} == {k: b.get(k) for k in HELD_OUT}
        assert b.get("loss") == pytest.approx(a.get("loss"), abs=1e-5)
        assert b.get("padding_fraction") == a.get("padding_fraction")
        if b["step"]:
            assert 0 <= b["padding_fraction"] < 0.5 and b["tokens_per_s"] > 0


def test_fsdp_resumes_a_one_process_checkpoint_and_the_server_serves_what_it_saved(
    one_process: Path,
    base_model: Path,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One process, interrupted after step 3 (its checkpoint is step 2's) ...
    out = tmp_path / "resumed"
    log_row = prm_train._log_row

    def stop_after_step_3(*args: object) -> None:
        log_row(*args)
        if args[2]["step"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(prm_train, "_log_row", stop_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_prm(config(data, base_model, out, grad_accum=2, save_every=2))
    monkeypatch.setattr(prm_train, "_log_row", log_row)
    # ... a different global batch is refused, with the flag that keeps it ...
    with pytest.raises(ValueError, match="--grad-accum 2"):
        train_prm(config(data, base_model, out, grad_accum=1))
    # ... and 2 FSDP processes finish the run: the weights of the uninterrupted one.
    launch(data, base_model, out, "--grad-accum=1", "--parallel=fsdp", "--save-every=2")
    assert_same_weights(one_process, out)
    assert [r["step"] for r in rows(out)] == list(range(11))
    assert rows(out)[-1]["eval_line_accuracy"] == rows(one_process)[-1]["eval_line_accuracy"]

    _, held_out = split_by_problem(read_examples(data), FLAGS["eval_fraction"], 0)
    items = [ScoreItem(prompt=e.prompt, code=e.code) for e in held_out]
    proc, url = start_prm_server(out)
    try:
        reply = httpx.post(
            f"{url}/v1/score", json={"items": [i.model_dump() for i in items]}, timeout=60
        )
        reply.raise_for_status()
    finally:
        proc.terminate()
        proc.wait(30)
    served = [[s["score"] for s in r["line_scores"]] for r in reply.json()["results"]]
    reference = load_prm(one_process, device="cpu")
    expected = [forward(reference, [encode(reference, item, 10_000)])[0] for item in items]
    assert len(served) == len(expected)
    for got, want in zip(served, expected, strict=True):
        assert [s is None for s in got] == [s is None for s in want]
        assert [s for s in got if s is not None] == pytest.approx(
            [s for s in want if s is not None], abs=1e-4
        )


def test_gradient_checkpointing_changes_memory_not_the_result(
    one_process: Path, base_model: Path, data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "checkpointed"
    train_prm(config(data, base_model, out, grad_accum=2, gradient_checkpointing=True))
    assert_same_weights(one_process, out)
