"""A run's JSONL logs (metrics, samples): appended row by row, trimmed on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codeprm.files import atomic_write_text

Row = dict[str, Any]


def append_row(path: Path, row: Row) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def rows_until(path: Path, step: int) -> list[Row]:
    """The rows up to `step`, and the file cut back to them: rows a crashed run logged after
    its last checkpoint would otherwise appear twice once the resumed run logs them again."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
