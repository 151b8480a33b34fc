"""PRM training data: the labeler's export and TRL's stepwise format, read into one shape.

Both formats are JSONL rows with `prompt`, `completions` and `labels`:

* the labeler's export (`codeprm/api/labels.py`) has TRL steps (a code line with the neutral
  lines before it) and adds `line_labels`, one per physical line (+1 / 0 / -1; soft pass
  fractions in [0, 1] for `monte_carlo`): the program is the steps joined by newlines;
* TRL's stepwise rows have only boolean `labels`, one per step; TRL's PRMTrainer puts a "\\n"
  separator after every step, so the program is `"".join(step + "\\n")`, and a step's label
  belongs to its last line (a multi-line step's other lines are not trained on).

Every label is mapped to the +1/-1 scale here: hard labels stay, soft pass fractions p become
2p - 1. Comment and blank lines are neutral whatever the data says (their label is 0), because
neither the server's aggregate nor the dense rewards ever read them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codeprm.lines import split_lines


class PrmDataError(ValueError):
    """A row that is neither the labeler's export nor TRL's stepwise format."""


@dataclass(frozen=True)
class PrmExample:
    problem_id: str
    prompt: str
    code: str
    labels: list[float | None]
    """Per line of `split_lines(code)`: +1 good .. -1 bad, 0 neutral, None not labeled."""
    passed: bool = False
    """The program passes its tests (the labeler's provenance says so, else no line is bad)."""
    strategy: str = ""


def read_examples(path: Path) -> list[PrmExample]:
    examples = []
    with path.open() as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                examples.append(parse_row(json.loads(text), default_id=f"row-{number}"))
            except (PrmDataError, json.JSONDecodeError) as exc:
                raise PrmDataError(f"{path}:{number}: {exc}") from None
    if not examples:
        raise PrmDataError(f"{path}: no rows")
    return examples


def parse_row(row: dict[str, Any], default_id: str = "") -> PrmExample:
    prompt, steps, flags = row.get("prompt"), row.get("completions"), row.get("labels")
    if not isinstance(prompt, str) or not isinstance(steps, list) or not steps:
        raise PrmDataError("a row needs `prompt` (str) and `completions` (non-empty list)")
    problem_id = str(row.get("problem_id") or default_id)
    provenance = row.get("provenance")
    if not isinstance(provenance, dict):
        provenance = {}
    example = _parse(row, prompt, steps, flags, problem_id)
    passed = provenance.get("passed")
    if not isinstance(passed, bool):
        passed = all(v is None or v >= 0 for v in example.labels)
    return replace(example, passed=passed, strategy=str(row.get("strategy") or ""))


def _parse(
    row: dict[str, Any], prompt: str, steps: list[Any], flags: Any, problem_id: str
) -> PrmExample:
    if "line_labels" in row:
        # One label per physical line; the steps joined with "\n" are those lines.
        values = row["line_labels"]
        if len(values) != sum(str(s).count("\n") + 1 for s in steps):
            raise PrmDataError("`line_labels` needs one entry per line of `completions`")
        soft = row.get("strategy") == "monte_carlo"
        return _example(
            problem_id, prompt, "\n".join(steps) + "\n", [2 * v - 1 if soft else v for v in values]
        )
    if not isinstance(flags, list) or len(flags) != len(steps):
        raise PrmDataError("`labels` needs one bool per entry of `completions`")
    labels: list[float | None] = []
    for step, good in zip(steps, flags, strict=True):
        inner = step.count("\n")
        labels += [None] * inner + [1.0 if good else -1.0]
    return _example(problem_id, prompt, "".join(s + "\n" for s in steps), labels)


def _example(problem_id: str, prompt: str, code: str, labels: list[float | None]) -> PrmExample:
    lines = split_lines(code)
    if len(lines) != len(labels):  # a step ending in "\n" adds an empty line
        raise PrmDataError(f"{len(labels)} labels for {len(lines)} lines")
    neutral = [
        None if v is None else (v if line.kind == "code" else 0.0)
        for line, v in zip(lines, labels, strict=True)
    ]
    return PrmExample(problem_id, prompt, code, neutral)


def split_by_problem(
    examples: Iterable[PrmExample], eval_fraction: float, seed: int
) -> tuple[list[PrmExample], list[PrmExample]]:
    """Hold out whole problems, so held-out metrics measure unseen problems, not unseen
    variants of a problem trained on."""
    examples = list(examples)
    problems = sorted({e.problem_id for e in examples})
    random.Random(seed).shuffle(problems)
    count = round(len(problems) * eval_fraction)
    if eval_fraction > 0 and len(problems) > 1:
        count = min(max(count, 1), len(problems) - 1)
    held = set(problems[:count])
    return (
        [e for e in examples if e.problem_id not in held],
        [e for e in examples if e.problem_id in held],
    )


def drop_after_first_error(example: PrmExample) -> PrmExample:
    """Lines after a program's first bad line unlabeled (None).

    Binary search labels every line from the first unrecoverable one to the end -1, so every
    failing program ends in a -1 line (its `return`, mostly); with most rows failing, a PRM
    learns that a last line is bad whatever it says. Mutation rows (PRLCoder) stop at the
    changed line for the same reason: what follows a wrong line teaches nothing about it."""
    first = next((i for i, v in enumerate(example.labels) if v is not None and v < 0), None)
    if first is None:
        return example
    labels = example.labels[: first + 1] + [None] * (len(example.labels) - first - 1)
    return replace(example, labels=labels)
