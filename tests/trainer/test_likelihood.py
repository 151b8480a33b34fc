"""The base model's likelihood as the yardstick of a PRM's on-policy AUC: the code's
log-probability is the chain rule's, it ranks the model's own likely programs above unlikely
ones, and `train prm` reports it next to the PRM's on-policy AUC."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from codeprm.services.trainer.likelihood import code_logprob, likelihood_auc, line_logprobs
from codeprm.services.trainer.prm_data import PrmExample, read_examples
from codeprm.services.trainer.prm_train import METRICS, TrainPrmConfig, train_prm
from codeprm.tiny import build_tiny_policy, build_tiny_prm
from tests.trainer.synthetic import synthetic_rows, write_rows

CPU = torch.device("cpu")
PROMPT = 'def f(xs):\n    """Double each."""\n'


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("models") / "policy", seed=3)


def _load(path: Path) -> tuple[object, object]:
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _greedy(model: object, tokenizer: object, prompt: str, tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    out = model.generate(  # type: ignore[attr-defined]
        ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
    )
    return str(tokenizer.decode(out[0, ids.shape[1] :]))  # type: ignore[attr-defined]


def test_code_logprob_is_the_chain_rule_over_the_code_tokens(policy: Path) -> None:
    model, tokenizer = _load(policy)
    code = "    return [x * 2 for x in xs]\n"
    ids = tokenizer(PROMPT + code)["input_ids"]  # type: ignore[operator]
    prompt_ids = tokenizer(PROMPT)["input_ids"]  # type: ignore[operator]
    assert ids[: len(prompt_ids)] == prompt_ids  # the prompt ends on a token boundary
    expected = 0.0
    with torch.no_grad():
        for i in range(len(prompt_ids), len(ids)):  # one forward pass per code token
            logits = model(input_ids=torch.tensor([ids[:i]])).logits[0, -1]  # type: ignore[operator]
            expected += float(logits.log_softmax(-1)[ids[i]])
    got = code_logprob(model, tokenizer, PROMPT, code, 1024, CPU)
    assert got == pytest.approx(expected, abs=1e-3)
    assert code_logprob(model, tokenizer, PROMPT, "", 1024, CPU) == 0.0


def test_the_models_likely_programs_outrank_unlikely_ones(policy: Path) -> None:
    model, tokenizer = _load(policy)
    rng = random.Random(0)
    vocab = tokenizer.vocab_size  # type: ignore[attr-defined]
    programs = []
    for i in range(6):
        prompt = f'def f{i}(xs):\n    """Step {i}."""\n'
        likely = _greedy(model, tokenizer, prompt, 12)
        noise = str(tokenizer.decode([rng.randrange(vocab) for _ in range(12)]))  # type: ignore[attr-defined]
        programs.append(PrmExample(f"p{i}", prompt, likely, [], passed=True))
        programs.append(PrmExample(f"p{i}", prompt, noise, [], passed=False))
    assert likelihood_auc(policy, programs, 1024, CPU) == pytest.approx(1.0)
    # Swap the verdicts: the ranking turns over.
    swapped = [PrmExample(p.problem_id, p.prompt, p.code, [], not p.passed) for p in programs]
    assert likelihood_auc(policy, swapped, 1024, CPU) == pytest.approx(0.0)
    # One verdict only: nothing to rank.
    assert likelihood_auc(policy, programs[::2], 1024, CPU) is None


def test_a_prm_checkpoint_is_not_a_language_model(tmp_path: Path) -> None:
    prm = build_tiny_prm(tmp_path / "prm")
    programs = [
        PrmExample("a", PROMPT, "    return xs\n", [], passed=True),
        PrmExample("b", PROMPT, "    return 0\n", [], passed=False),
    ]
    assert likelihood_auc(prm, programs, 1024, CPU) is None


@pytest.mark.slow
def test_train_prm_reports_the_policys_likelihood_next_to_its_on_policy_auc(
    policy: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "labels.jsonl", synthetic_rows(60))
    on_policy = write_rows(tmp_path / "on_policy.jsonl", synthetic_rows(30, seed=1))
    config = TrainPrmConfig(
        data=data,
        base_model=policy,
        out=tmp_path / "prm",
        epochs=1,
        batch_size=16,
        eval_every=100,
        on_policy=on_policy,
    )
    result = train_prm(config)
    assert result.on_policy is not None and result.on_policy.auc is not None
    expected = likelihood_auc(policy, read_examples(on_policy), config.max_tokens, CPU)
    assert expected is not None
    assert result.on_policy_base_likelihood_auc == pytest.approx(expected)
    first = json.loads((config.out / METRICS).read_text().splitlines()[0])
    assert first["step"] == 0
    assert first["on_policy_base_likelihood_auc"] == pytest.approx(expected)


def test_line_logprobs_split_the_code_tokens_by_line(policy: Path) -> None:
    model, tokenizer = _load(policy)
    for code in (
        "    ys = [x * 2 for x in xs]\n\n    ys.sort()\n    return ys",
        "    ys = [x * 2 for x in xs]\n\n    ys.sort()\n    return ys\n",  # as sampled
    ):
        per_line = line_logprobs(model, tokenizer, PROMPT, code, 1024, CPU)
        assert len(per_line) == 4  # the blank line is a line too (split_lines)
        assert all(per_line[i] for i in (0, 2, 3))
        assert all(v <= 0 for line in per_line for v in line)
        # Every code token belongs to exactly one line: the lines add up to the program.
        total = code_logprob(model, tokenizer, PROMPT, code, 1024, CPU)
        assert sum(sum(line) for line in per_line) == pytest.approx(total, abs=1e-4)
    # Truncation keeps the start: the lines past the limit get no token.
    prompt_tokens = len(tokenizer(PROMPT)["input_ids"])  # type: ignore[operator]
    cut = line_logprobs(model, tokenizer, PROMPT, code, prompt_tokens + 3, CPU)
    assert cut[-1] == []
    assert cut[0] == pytest.approx(per_line[0][: len(cut[0])], abs=1e-4)
