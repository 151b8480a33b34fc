"""`bench/gpu.sh`'s last step: every part's figures, status and targets in one results.json.

    python bench/gpu_results.py RESULTS_DIR [--scale full|tiny]

Reads RESULTS_DIR/<part>.json (the figures a bench script wrote) and <part>.rc (its exit
status); prints a summary and writes RESULTS_DIR/results.json. A part that failed or ran out
of time is recorded as such (its log is beside it), never left out. Targets are judged only
at full scale: tiny shapes on a CPU say nothing about them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

PARTS = ("prm_server_small", "prm_server_large", "ppo_step", "prm_train")


def read_part(out: Path, name: str) -> dict[str, Any]:
    rc_file, figures = out / f"{name}.rc", out / f"{name}.json"
    rc = int(rc_file.read_text()) if rc_file.is_file() else None
    status = {0: "ok", 124: "timed out", 137: "timed out", None: "not run"}.get(rc, "failed")
    if status == "ok" and not figures.is_file():
        status = "failed"
    part: dict[str, Any] = {"status": status, "exit_status": rc, "log": f"{name}.log"}
    if figures.is_file():
        part["figures"] = json.loads(figures.read_text())
    return part


def targets(parts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each target with the measured value (None when its part has no figures)."""

    def value(name: str, key: str) -> float | None:
        figures = parts[name].get("figures")
        return None if figures is None else float(figures[key])

    checks = {
        "prm_server_0.5b_vs_one_forward_per_request": (
            value("prm_server_small", "vs_one_forward_per_request"), ">=", 10.0),
        "prm_server_0.5b_vs_best_offline": (
            value("prm_server_small", "vs_best_offline"), ">=", 0.8),
        "prm_server_1.5b_vs_one_forward_per_request": (
            value("prm_server_large", "vs_one_forward_per_request"), ">=", 10.0),
        "prm_server_1.5b_vs_best_offline": (
            value("prm_server_large", "vs_best_offline"), ">=", 0.8),
        "ppo_reward_share": (value("ppo_step", "reward_share"), "<=", 0.10),
    }  # fmt: skip
    result = {}
    for name, (measured, op, bound) in checks.items():
        met = None if measured is None else (measured >= bound if op == ">=" else measured <= bound)
        result[name] = {"measured": measured, "target": f"{op} {bound}", "met": met}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", choices=("full", "tiny"), default="full")
    args = parser.parse_args()
    parts = {name: read_part(args.out, name) for name in PARTS}
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scale": args.scale,
        "parts": parts,
        "targets": targets(parts) if args.scale == "full" else None,
    }
    train = parts["prm_train"].get("figures")
    if train is not None:
        results["prm_train_tokens_per_s"] = train["tokens_per_s"]
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, part in parts.items():
        print(f"  {name:<18} {part['status']}")
    for name, check in (results["targets"] or {}).items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        print(f"  {name:<44} {check['measured']} (target {check['target']}): {verdict}")
    print(f"results: {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
