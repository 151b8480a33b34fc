"""The policy's own confidence in its programs: the yardstick a PRM's on-policy AUC is read
against.

Dense rewards from a PRM can only beat the outcome if the PRM knows something about the
policy's programs that the policy does not. `likelihood_auc` ranks the on-policy set's passing
and failing programs by their log-probability under the base model, which is the policy itself
when the PRM is trained from the policy's backbone (the demo's recipe). On `listfuncs` that
ranking scores 0.92-0.98 where the PRMs trained there score 0.70-0.76 (docs/results.md): a small
policy sampled at temperature 1 fails mostly by tokens it drew against its own odds, which its
likelihood sees and a PRM fine-tuned on a thousand labeled programs does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from codeprm.geometry import EncodedLines, encode_lines
from codeprm.prm_model import resolve_dtype
from codeprm.services.trainer.prm_data import PrmExample
from codeprm.services.trainer.prm_metrics import auc


def code_logprob(
    model: Any, tokenizer: Any, prompt: str, code: str, max_tokens: int, device: torch.device
) -> float:
    """Sum of log p(token | all before it) over the code's tokens, the prompt given (a token
    that straddles the two counts as code). `prompt + code` is tokenized afresh, as the PRM
    reads it, so a boundary token may differ from the one the policy sampled. Truncation keeps
    the start, as the PRM's does."""
    _, per_token, first = _scored(model, tokenizer, prompt, code, max_tokens, device)
    return sum(per_token[first:])


def line_logprobs(
    model: Any, tokenizer: Any, prompt: str, code: str, max_tokens: int, device: torch.device
) -> list[list[float]]:
    """Per line of `split_lines(code)`, the log-probs of its tokens: those after the previous
    line's last token up to its own (the PRM's line geometry, `codeprm/geometry.py`), so a
    line owns the newline before it, and the last line the tokens after it (a final newline,
    an EOS), so the lines add up to `code_logprob`. A line with no token of its own (cut off by
    truncation) gets []."""
    encoded, per_token, first = _scored(model, tokenizer, prompt, code, max_tokens, device)
    out: list[list[float]] = []
    for last in encoded.line_tokens:
        if last is None or last < first:
            out.append([])
            continue
        out.append(per_token[first : last + 1])
        first = last + 1
    if out and out[-1]:  # not truncated: what follows the last line is the last line's
        out[-1] += per_token[first:]
    return out


def _scored(
    model: Any, tokenizer: Any, prompt: str, code: str, max_tokens: int, device: torch.device
) -> tuple[EncodedLines, list[float], int]:
    """`prompt + code` in the PRM's geometry, per token its log-prob (per_token[i] is
    log p(ids[i]); 0 for the first token, which has nothing to be predicted from), and the
    index of the first code token that has a prediction."""
    encoded = encode_lines(tokenizer, prompt, code, max_tokens)
    first = max(encoded.first_code_token, 1)
    if first >= len(encoded.input_ids):
        return encoded, [0.0] * len(encoded.input_ids), len(encoded.input_ids)
    return encoded, [0.0, *_token_logprobs(model, encoded.input_ids, device)], first


def _token_logprobs(model: Any, ids: list[int], device: torch.device) -> list[float]:
    """log p(ids[i] | ids[:i]) for i = 1 .. len(ids) - 1, in one forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    predicted = logits[:-1].log_softmax(-1)
    targets = torch.tensor(ids[1:], device=device)
    return [float(v) for v in predicted.gather(1, targets[:, None])[:, 0]]


def likelihood_auc(
    base_model: Path, programs: Sequence[PrmExample], max_tokens: int, device: torch.device
) -> float | None:
    """AUC of passing vs failing programs ranked by their log-probability under `base_model`.
    None when it is not a causal LM (training goes on from a PRM, whose head is not a
    language model's) or when every program has the same verdict."""
    architectures = AutoConfig.from_pretrained(base_model).architectures or []
    if not any(name.endswith("ForCausalLM") for name in architectures):
        return None
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    dtype = resolve_dtype("auto", device)  # bf16 on a GPU: a second model next to the PRM
    model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model.to(device).eval()
    ranked = [
        (code_logprob(model, tokenizer, p.prompt, p.code, max_tokens, device), p.passed)
        for p in programs
    ]
    return auc(ranked)
