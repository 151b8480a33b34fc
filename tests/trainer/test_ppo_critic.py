"""PPO's critic: what value_init loads and how each step's minibatches are drawn.

* A PRM critic starts at the PRM's own scores: its first values, read where the next token is
  chosen, equal `/v1/score`'s line scores of a real PRM server at every code line's end.
* A PRM whose head is not a value (BCE logits, TRL's two-class head) is refused with a clear
  error instead of being loaded with a random head.
* Each step shuffles its minibatches afresh (seeded by seed and step).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from codeprm.api.prm import METADATA_FILE
from codeprm.listfuncs import problems as listfuncs_problems
from codeprm.services.trainer.ppo import _values, build_batch, load_models, minibatches
from codeprm.services.trainer.ppo_config import PpoConfig
from codeprm.services.trainer.rollout import Sampling, cut_response
from codeprm.tiny import build_tiny_policy, build_tiny_prm
from tests.servers import start_prm_server


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("critic")
    return build_tiny_policy(root / "policy"), build_tiny_prm(root / "prm", seed=3)


def config(policy: Path, prm: Path, out: Path) -> PpoConfig:
    return PpoConfig(
        policy=policy,
        value_init=prm,
        mode="dense+value_init",
        dataset="listfuncs",
        out=out,
        device="cpu",
    )


def test_critic_starts_at_the_prm_servers_line_scores(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    policy, prm = models
    loaded = load_models(config(policy, prm, tmp_path / "run"), None)
    tokenizer = loaded.tokenizer
    rollouts = []
    for problem in listfuncs_problems("train", count=3):
        prompt_ids = tokenizer(problem.prompt)["input_ids"]
        response = tokenizer(problem.solution)["input_ids"] + [tokenizer.eos_token_id]
        rollouts.append(cut_response(tokenizer, problem, prompt_ids, response, Sampling()))
    loaded.critic.eval()
    batch = build_batch(rollouts, tokenizer.pad_token_id, loaded.device)
    with torch.no_grad():
        values = _values(loaded.critic, batch, loaded.device)

    proc, url = start_prm_server(prm)
    try:
        body = {"items": [{"prompt": r.problem.prompt, "code": r.text} for r in rollouts]}
        reply = httpx.post(f"{url}/v1/score", json=body, timeout=60)
    finally:
        proc.terminate()
        proc.wait(30)
    assert reply.status_code == 200, reply.text
    compared = 0
    for i, (rollout, result) in enumerate(zip(rollouts, reply.json()["results"], strict=True)):
        for line in result["line_scores"]:
            if line["kind"] != "code":
                continue
            # The token that holds the line's last character, then the value read after it:
            # V(prefix up to the line's end), the state in which the next token is chosen.
            last_char = line["end"] - 1
            end = next(t for t, (a, b) in enumerate(rollout.offsets) if a <= last_char < b)
            assert float(values[i, end + 1]) == pytest.approx(line["score"], abs=1e-4)
            compared += 1
    assert compared >= 6


@pytest.mark.parametrize(
    ("scheme", "num_labels"), [("binary_bce", 1), ("trl_two_class", 2), ("pm1_mse", 2)]
)
def test_value_init_refuses_a_prm_whose_head_is_not_a_value(
    models: tuple[Path, Path], tmp_path: Path, scheme: str, num_labels: int
) -> None:
    policy, _ = models
    prm = tmp_path / "prm"
    AutoModelForTokenClassification.from_pretrained(
        build_tiny_prm(tmp_path / "base"), num_labels=num_labels, ignore_mismatched_sizes=True
    ).save_pretrained(prm)
    AutoTokenizer.from_pretrained(tmp_path / "base").save_pretrained(prm)
    (prm / METADATA_FILE).write_text(json.dumps({"label_scheme": scheme}))
    with pytest.raises(ValueError, match="only a one-output 'pm1_mse' PRM"):
        load_models(config(policy, prm, tmp_path / "run"), None)


def test_every_step_shuffles_its_minibatches_afresh(tmp_path: Path) -> None:
    cfg = PpoConfig(
        policy=tmp_path,
        dataset="listfuncs",
        out=tmp_path,
        mode="outcome",
        ppo_epochs=2,
        minibatch_size=4,
    )
    orders = {step: [m.tolist() for m in minibatches(16, cfg, step)] for step in range(1, 6)}
    for order in orders.values():
        assert len(order) == 8  # 2 epochs of 4 minibatches of 4
        for epoch in (order[:4], order[4:]):
            assert sorted(i for m in epoch for i in m) == list(range(16))
    assert len({json.dumps(order) for order in orders.values()}) == 5  # one order per step
    assert [m.tolist() for m in minibatches(16, cfg, 3)] == orders[3]  # resumable
