"""Teacher-LLM mutation: prompt files, reply parsing, and labeling through a real executor with
a scripted chat teacher over real HTTP."""

from __future__ import annotations

import asyncio
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from codeprm.api.labeler import BackendSpec, MutationOptions
from codeprm.client import AsyncExecutorClient
from codeprm.datasets import Problem, humaneval
from codeprm.scripted_llm import ScriptedLLM
from codeprm.services.labeler.completions import OpenAIBackend
from codeprm.services.labeler.labeling import Labeled
from codeprm.services.labeler.mutation import label_by_mutation
from codeprm.services.labeler.teacher import load_prompt, parse_reply, render
from tests.contained import ContainedExecutor, require_isolation


def test_parse_reply_takes_the_code_block_and_keeps_indentation() -> None:
    original = "        total += x"
    assert parse_reply("Sure!\n```python\ntotal -= x\n```\nDone.", original) == "        total -= x"
    assert parse_reply("total *= x", original) == "        total *= x"
    assert parse_reply("```\n\n    total += x   \n```", original) is None  # unchanged
    assert parse_reply("", original) is None


def test_render_fills_placeholders_once() -> None:
    problem = Problem.model_validate(
        {
            "problem_id": "p",
            "prompt": "Do {line} things",
            "tests": {"kind": "assert", "code": "pass"},
        }
    )
    text = render("{prompt}|{number}|{line}\n{numbered}", problem, "a = 1\nb = 2", 1)
    assert text == "Do {line} things|2|b = 2\n1 | a = 1\n2 | b = 2"


def scripted_teacher(messages: list[dict[str, str]], n: int) -> list[str]:
    prompt = messages[-1]["content"]
    line = re.search(r"which is currently:\n(.*)\n", prompt)
    assert line is not None, prompt
    text = line[1]
    indent = text[: len(text) - len(text.lstrip())]
    if "subtle, realistic bug" in prompt:
        replies = [
            f"```python\n{indent}raise ValueError('teacher bug')\n```",
            f"```python\n{indent}raise ValueError('teacher bug')\n```",  # a duplicate
            "I cannot do that.",  # does not compile: dropped
        ]
    else:
        replies = [f"```python\n{text.strip()}  # same behaviour\n```"]
    return (replies * n)[:n]


@pytest.fixture
def executor_url(contained_executor: ContainedExecutor) -> str:
    require_isolation(contained_executor)
    return contained_executor.url


def label(
    url: str, problems: list[Problem], prompts: Path | None = None, **options: int
) -> tuple[list[Labeled], list[dict[str, Any]]]:
    with ScriptedLLM(chat=scripted_teacher) as llm:
        spec = BackendSpec(kind="openai", url=llm.url, model="scripted")
        mutation = MutationOptions(mutator="teacher", teacher=spec, **options)

        async def go() -> list[Labeled]:
            teacher = OpenAIBackend(spec)
            async with AsyncExecutorClient(url) as executor:
                try:
                    return [
                        await label_by_mutation(p, executor, mutation, teacher, prompts)
                        for p in problems
                    ]
                finally:
                    await teacher.aclose()

        return asyncio.run(go()), llm.requests


@pytest.mark.slow
def test_teacher_mutation_labels(executor_url: str) -> None:
    problems = humaneval()[:3]
    results, requests = label(executor_url, problems, variants_per_line=3, rewrites_per_line=1)
    for problem, labeled in zip(problems, results, strict=True):
        assert problem.solution is not None
        code_lines = [ln for ln in problem.solution.split("\n") if ln.strip()]
        assert labeled.completions == len(code_lines) * 4
        bugs = [s for s in labeled.samples if s.provenance.get("operator") == "teacher_bug"]
        rewrites = [s for s in labeled.samples if s.provenance.get("operator") == "teacher_rewrite"]
        assert len(rewrites) == len(code_lines)
        # One distinct bug per line, except where a raise cannot stand: a line opening a
        # block leaves its body orphaned, and the variant is dropped for not compiling.
        assert len(bugs) == sum(not ln.rstrip().endswith(":") for ln in code_lines)
        for s in bugs:  # a raise on the line fails: the line is -1, and the sample ends there
            assert s.line_labels[-1] == -1.0 and s.provenance["status"] != "ok"
            assert s.completions[-1].strip() == "raise ValueError('teacher bug')"
        for s in rewrites:  # behaviour-preserving: a whole program, all code lines +1
            assert -1.0 not in s.line_labels and s.provenance["status"] == "ok"
    assert all(r["messages"][0]["role"] == "user" for r in requests)


@pytest.mark.slow
def test_prompt_files_can_be_replaced(executor_url: str, tmp_path: Path) -> None:
    shutil.copytree(Path(str(resources.files("codeprm.services.labeler.prompts"))), tmp_path / "p")
    bug = tmp_path / "p" / "bug.md"
    bug.write_text("HOUSE STYLE 42\n" + bug.read_text())
    assert load_prompt("bug", tmp_path / "p").startswith("HOUSE STYLE 42")
    _, requests = label(
        executor_url, humaneval()[:1], tmp_path / "p", variants_per_line=1, rewrites_per_line=0
    )
    contents = [r["messages"][0]["content"] for r in requests]
    assert contents and all(c.startswith("HOUSE STYLE 42") for c in contents)
