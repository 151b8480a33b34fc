"""From (prompt, code) to per-line scores: encoding, one padded forward pass, reading scores.

How a score is read depends on the checkpoint's label scheme (`contracts/prm.py`): the raw
regression output (+1/-1 training), a sigmoid (0/1 training), or the positive class's
probability (TRL's two-label PRMs, read at the newline after each line, where TRL puts it).
"""

from __future__ import annotations

import math

import torch

from contracts.geometry import EncodedLines, encode_lines
from contracts.prm import Aggregate, LineScore, ScoreItem, ScoreResult
from services.prm_server.model import LoadedPrm


def encode(prm: LoadedPrm, item: ScoreItem, max_tokens: int) -> EncodedLines:
    prefix = prm.metadata.prompt_template.replace("{prompt}", item.prompt)
    return encode_lines(
        prm.tokenizer,
        prefix,
        item.code,
        min(max_tokens, prm.metadata.max_tokens),
        at_newline=prm.metadata.label_scheme == "trl_two_class",
    )


def forward(prm: LoadedPrm, batch: list[EncodedLines]) -> list[list[float | None]]:
    """Scores of every line of every item, in one padded forward pass."""
    width = max(len(e.input_ids) for e in batch)
    pad = prm.tokenizer.pad_token_id
    pad = pad if pad is not None else 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, encoded in enumerate(batch):
        ids[row, : len(encoded.input_ids)] = torch.tensor(encoded.input_ids)
        mask[row, : len(encoded.input_ids)] = 1
    with torch.inference_mode():
        logits = prm.model(
            input_ids=ids.to(prm.device), attention_mask=mask.to(prm.device)
        ).logits.float()
        values = _values(logits, prm.metadata.label_scheme).cpu()
    return [
        [None if t is None else float(values[row, t]) for t in encoded.line_tokens]
        for row, encoded in enumerate(batch)
    ]


def _values(logits: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "trl_two_class":
        return logits.softmax(-1)[..., 1]
    if scheme == "binary_bce":
        return logits[..., 0].sigmoid()
    return logits[..., 0]


def result(encoded: EncodedLines, scores: list[float | None], aggregate: Aggregate) -> ScoreResult:
    line_scores = [
        LineScore(line=line.index, start=line.start, end=line.end, score=score, kind=line.kind)
        for line, score in zip(encoded.lines, scores, strict=True)
    ]
    judged = [s.score for s in line_scores if s.kind == "code" and s.score is not None]
    return ScoreResult(
        line_scores=line_scores,
        aggregate=aggregate_scores(judged, aggregate),
        num_tokens=len(encoded.input_ids),
    )


def aggregate_scores(scores: list[float], how: Aggregate) -> float | None:
    """One scalar per program, over its code lines (comment and blank lines are neutral)."""
    if not scores:
        return None
    if how == "min":
        return min(scores)
    if how == "mean":
        return sum(scores) / len(scores)
    if how == "last":
        return scores[-1]
    return math.prod(scores)
