"""A labeled set where every line's label is decidable from the program's text.

Programs are sequences of harmless assignments; some contain one poisoned line (a division by
zero). As the labeler labels a failing program, every code line before the poisoned one is +1
and every line from it on is -1, so a PRM must look back across lines to label a line after
the poison. Rows are written in the labeler's export format (or TRL's stepwise format).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

NAMES = ["total", "count", "value", "item", "result", "acc", "size", "index"]


def _good(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    return rng.choice(
        [
            f"    {a} = {b} + {rng.randint(1, 9)}",
            f"    {a} = {b} * {rng.randint(2, 9)}",
            f"    {a} = max({a}, {b})",
            f"    {a} += {rng.randint(1, 9)}",
        ]
    )


def _poison(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    return f"    {a} = {b} / 0"


def synthetic_rows(n: int, seed: int = 0, trl: bool = False) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        lines = [_good(rng) for _ in range(rng.randint(4, 9))]
        bad = None
        if rng.random() < 0.6:
            bad = rng.randrange(len(lines))
            lines[bad] = _poison(rng)
        if rng.random() < 0.3:
            lines.insert(rng.randrange(len(lines)), "    # keep going")
        labels = []
        poisoned = False
        for line in lines:
            poisoned = poisoned or "/ 0" in line
            labels.append(0.0 if "#" in line else (-1.0 if poisoned else 1.0))
        prompt = f"def task_{i}(total, count, value):\n"
        row: dict[str, object] = {
            "prompt": prompt,
            "completions": lines,
            "labels": [v > 0 for v in labels],
        }
        if not trl:
            row |= {
                "line_labels": labels,
                "problem_id": f"synthetic/{i % (n // 2)}",
                "strategy": "mutation",
            }
        rows.append(row)
    return rows


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
