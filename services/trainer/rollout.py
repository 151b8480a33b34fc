"""Sampling rollouts from the policy with `transformers` generate, cut at the end of the code.

A rollout keeps the exact tokens the policy sampled (PPO's ratios need them) and each token's
character span in the response text (dense rewards are placed by it). The response ends at the
first stop sequence (the code is over: a new top-level `def`, `if __name__`, ...) or at the
end-of-sequence token, which is kept as the policy's last action so it learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from codeprm.datasets import Problem
from codeprm.geometry import decode_with_ends, token_spans

# Where a completion of a function body is over (the HumanEval convention).
DEFAULT_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert "]


@dataclass(frozen=True)
class Rollout:
    problem: Problem
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    """The response as text: what the executor runs (after the problem's program prefix) and
    the PRM scores."""
    offsets: list[tuple[int, int]]
    """Per response token, its character span in `text`."""
    finished: bool
    """False when it ran into the token limit before the code was over."""


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = tuple(DEFAULT_STOP)


def generate(
    model: Any,
    tokenizer: Any,
    problems: list[Problem],
    samples_per_prompt: int,
    sampling: Sampling,
    device: torch.device,
) -> list[Rollout]:
    """`samples_per_prompt` rollouts per problem, in problem order."""
    tokenizer.padding_side = "left"  # prompts end at the same column, where generation starts
    batch = tokenizer([p.prompt for p in problems], return_tensors="pt", padding=True).to(device)
    sample = sampling.temperature > 0
    with torch.inference_mode():
        output = model.generate(
            **batch,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=samples_per_prompt,
            pad_token_id=tokenizer.pad_token_id,
        )
    width = batch["input_ids"].shape[1]
    rollouts = []
    for row in range(output.shape[0]):
        source = row // samples_per_prompt
        prompt_mask = batch["attention_mask"][source].bool()
        prompt_ids = batch["input_ids"][source][prompt_mask].tolist()
        rollouts.append(
            cut_response(
                tokenizer, problems[source], prompt_ids, output[row, width:].tolist(), sampling
            )
        )
    return rollouts


def cut_response(
    tokenizer: Any, problem: Problem, prompt_ids: list[int], ids: list[int], sampling: Sampling
) -> Rollout:
    eos = tokenizer.eos_token_id
    finished = False
    if eos in ids:
        ids = ids[: ids.index(eos) + 1]
        finished = True
    text, ends = decode_with_ends(tokenizer, ids)
    cut = min((i for s in sampling.stop if (i := text.find(s, 1)) != -1), default=None)
    if cut is not None:
        # Keep every token that starts before the cut: a token spanning it (")\n" before
        # "def") holds code the program needs.
        starts = [0, *ends[:-1]]
        keep = max(1, sum(start < cut for start in starts))
        ids, ends = ids[:keep], ends[:keep]
        finished = True
    return Rollout(
        problem=problem,
        prompt_ids=prompt_ids,
        response_ids=ids,
        text=text[: ends[-1]] if ends else "",
        offsets=token_spans(ends),
        finished=finished,
    )
