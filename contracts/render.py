"""A program as HTML, each line coloured by its PRM score: the quickest way to see what a PRM
thinks (used by `codeprm report` and the PRM server's viewer)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from contracts.lines import split_lines
from contracts.prm import LineScore

STYLE = """
.prm-program { font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace;
  border: 1px solid #ddd; border-radius: 6px; overflow-x: auto; margin: 0 0 1.2em 0; }
.prm-line { display: flex; white-space: pre; }
.prm-line .n { color: #999; width: 3em; text-align: right; padding-right: .8em; user-select: none; }
.prm-line .code { flex: 1; padding-right: 1em; }
.prm-line .s { color: #555; width: 5em; text-align: right; padding-right: .6em; }
.prm-line.neutral .code { color: #888; }
"""


def score_colour(score: float, low: float = -1.0, high: float = 1.0) -> str:
    """Red for `low`, white in the middle, green for `high`."""
    x = min(1.0, max(0.0, (score - low) / (high - low))) * 2 - 1  # -1 .. 1
    if x < 0:
        return f"rgba(220, 50, 47, {0.55 * -x:.2f})"
    return f"rgba(40, 160, 70, {0.55 * x:.2f})"


def program_html(
    code: str, line_scores: Sequence[LineScore] | None, low: float = -1.0, high: float = 1.0
) -> str:
    """One `<div>` per line; scored code lines get a background from red (low) to green."""
    by_line = {s.line: s for s in line_scores or []}
    rows = []
    # The line numbering of the scores themselves (`contracts/lines.py`), not str.splitlines,
    # which also splits at form feeds and other separators a PRM does not treat as lines.
    for index, text in enumerate([line.text for line in split_lines(code)] or [""]):
        scored = by_line.get(index)
        style, label, kind = "", "", "code"
        if scored is not None:
            kind = scored.kind
            if scored.score is not None and scored.kind == "code":
                style = f' style="background:{score_colour(scored.score, low, high)}"'
                label = f"{scored.score:+.2f}"
        rows.append(
            f'<div class="prm-line{"" if kind == "code" else " neutral"}"{style}>'
            f'<span class="n">{index + 1}</span><span class="code">{html.escape(text)}</span>'
            f'<span class="s">{label}</span></div>'
        )
    return '<div class="prm-program">' + "".join(rows) + "</div>"
