"""`codeprm report RUN`: a PPO run as PNG plots and one HTML page.

The page holds the run's configuration, the last step's metrics, the plots, and the rollouts
logged at the last few steps with each line coloured by its PRM score.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from codeprm.api.prm import LineScore
from codeprm.files import atomic_write_text
from codeprm.render import STYLE, program_html
from codeprm.services.trainer.ppo import METRICS, SAMPLES, plot_run


def write_report(
    run: Path, samples_from_last: int = 3, extra: dict[str, Any] | None = None
) -> Path:
    rows = _jsonl(run / METRICS)
    if not rows:
        raise FileNotFoundError(f"{run}: no {METRICS}; is this a PPO run directory?")
    out = run / "report"
    out.mkdir(exist_ok=True)
    plot_run(rows, out)
    last = rows[-1]
    steps = sorted({r["step"] for r in rows})[-samples_from_last:]
    samples = [s for s in _jsonl(run / SAMPLES) if s["step"] in steps]
    config = (run / "config.json").read_text() if (run / "config.json").is_file() else "{}"
    parts = [
        f"<h1>PPO run <code>{html.escape(run.name)}</code></h1>",
        '<img src="curves.png" style="max-width:100%">',
        "<h2>Last step</h2>",
        _table({k: v for k, v in last.items()}),
    ]
    if extra:
        parts += ["<h2>Evaluation</h2>", f"<pre>{html.escape(json.dumps(extra, indent=2))}</pre>"]
    parts.append(
        f"<h2>Rollouts of steps {', '.join(map(str, steps))}, lines coloured by PRM score</h2>"
    )
    for sample in samples:
        scores = (
            [LineScore.model_validate(s) for s in sample["line_scores"]]
            if sample.get("line_scores")
            else None
        )
        verdict = "passed" if sample["passed"] else "failed"
        parts.append(
            f"<h3>step {sample['step']} · {html.escape(sample['problem_id'])} · {verdict}</h3>"
            f"<details><summary>prompt</summary><pre>{html.escape(sample['prompt'])}</pre></details>"
            + program_html(sample["code"], scores)
        )
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(config)}</pre>"]
    page = out / "index.html"
    atomic_write_text(
        page,
        "<!doctype html><meta charset=utf-8><title>codeprm report</title>"
        f"<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}}"
        f"table{{border-collapse:collapse}}td{{padding:2px 10px;border-bottom:1px solid #eee}}"
        f"{STYLE}</style>" + "\n".join(parts),
    )
    return page


def _table(values: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table>{cells}</table>"


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
