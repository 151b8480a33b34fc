"""A program as HTML, each line coloured by its PRM score: the quickest way to see what a PRM
thinks (used by `codeprm report`; the PRM server's viewer, `services/prm_server/ui.html`,
computes the same colours in JavaScript).

The scale is diverging and colour-blind safe: Okabe-Ito vermillion for low scores, white in
the middle, Okabe-Ito blue for high ones (red/green is the pair most people with colour-vision
deficiency cannot tell apart). Colours are opaque and at most half-strength, so dark text keeps
a contrast of at least 7:1 (WCAG AAA) on every line, and the score is always printed as well,
so colour is never the only cue.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from codeprm.api.prm import LineScore, PrmMetadata
from codeprm.lines import split_lines

LOW_RGB = (213, 94, 0)  # Okabe-Ito vermillion
HIGH_RGB = (0, 114, 178)  # Okabe-Ito blue
STRENGTH = 0.5
"""How far the extremes go from white towards LOW_RGB / HIGH_RGB (text contrast)."""
TEXT = "#1f2328"

STYLE = f"""
.prm-program {{ font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; color: {TEXT};
  border: 1px solid #d0d7de; border-radius: 6px; overflow-x: auto; margin: 0 0 1.2em 0; }}
.prm-line {{ display: flex; white-space: pre; }}
.prm-line .n {{ color: #656d76; background: #f6f8fa; width: 3em; text-align: right;
  padding-right: .8em; user-select: none; }}
.prm-line .code {{ flex: 1; padding: 0 1em 0 .6em; }}
.prm-line .s {{ width: 5em; text-align: right; padding-right: .6em;
  font-variant-numeric: tabular-nums; }}
.prm-line.neutral .code {{ color: #656d76; }}
"""


def score_range(metadata: PrmMetadata) -> tuple[float, float]:
    """The scores a checkpoint gives, as (low, high): the ends of its colour scale."""
    return (-1.0, 1.0) if metadata.label_scheme == "pm1_mse" else (0.0, 1.0)


def score_colour(score: float, low: float = -1.0, high: float = 1.0) -> str:
    """Vermillion for `low`, white in the middle, blue for `high`, as `#rrggbb`.

    ui.html's `scoreColour` repeats this arithmetic operation for operation (floor(v + .5),
    not Python's round-half-even), so both give the same colour for the same score."""
    x = min(1.0, max(0.0, (score - low) / (high - low))) * 2 - 1  # -1 .. 1
    end = LOW_RGB if x < 0 else HIGH_RGB
    strength = STRENGTH * abs(x)
    r, g, b = (math.floor(255 + (c - 255) * strength + 0.5) for c in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def program_html(
    code: str, line_scores: Sequence[LineScore] | None, low: float = -1.0, high: float = 1.0
) -> str:
    """One `<div>` per line; scored code lines get a background from vermillion (low) to blue."""
    by_line = {s.line: s for s in line_scores or []}
    rows = []
    # The line numbering of the scores themselves (`codeprm/lines.py`), not str.splitlines,
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
