"""Teacher-LLM variants of one line (PRLCoder): "introduce a bug in line i" and "rewrite line i
preserving behaviour".

The prompts are the files `bug.md` and `rewrite.md` in `services/labeler/prompts/`, or in the
directory `CODEPRM_LABELER_PROMPTS_DIR` names; placeholders: `{prompt}` (the problem),
`{numbered}` (the program with line numbers), `{number}` (1-based) and `{line}`.

A reply's first code block (or, without one, the reply itself) gives the new line: its first
non-empty line, re-indented like the original (teachers often drop indentation). Replies that
leave the line unchanged, repeat another reply, or make the program fail to compile are dropped.
"""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path
from typing import Literal

from codeprm.api.labeler import SamplingOptions
from codeprm.datasets import Problem
from codeprm.services.labeler.ast_mutator import Mutation
from codeprm.services.labeler.completions import CompletionBackend

Kind = Literal["bug", "rewrite"]
_PLACEHOLDER = re.compile(r"\{(prompt|numbered|number|line)\}")
_CODE_BLOCK = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)```", re.DOTALL)


def load_prompt(kind: Kind, prompts_dir: Path | None = None) -> str:
    if prompts_dir is not None:
        return (prompts_dir / f"{kind}.md").read_text()
    return resources.files("codeprm.services.labeler.prompts").joinpath(f"{kind}.md").read_text()


def render(template: str, problem: Problem, program: str, line: int) -> str:
    lines = program.split("\n")
    width = len(str(len(lines)))
    values = {
        "prompt": problem.prompt.strip("\n"),
        "numbered": "\n".join(f"{i + 1:>{width}} | {text}" for i, text in enumerate(lines)),
        "number": str(line + 1),
        "line": lines[line],
    }
    # One pass, so placeholders inside the problem's own text are left alone.
    return _PLACEHOLDER.sub(lambda m: values[m[1]], template)


def parse_reply(reply: str, original: str) -> str | None:
    """The replacement line a reply proposes, or None when it proposes nothing usable."""
    block = _CODE_BLOCK.search(reply)
    body = block[1] if block else reply
    candidates = [line for line in body.split("\n") if line.strip()]
    if not candidates:
        return None
    indent = original[: len(original) - len(original.lstrip())]
    line = indent + candidates[0].strip()
    return None if line.strip() == original.strip() else line


async def teacher_variants(
    problem: Problem,
    program: str,
    line: int,
    teacher: CompletionBackend,
    counts: dict[Kind, int],
    sampling: SamplingOptions,
    templates: dict[Kind, str],
) -> list[Mutation]:
    """Up to `counts[kind]` distinct, compiling variants of `program`'s 0-based `line`;
    `templates` are the prompts (`load_prompt`), read once per problem, not once per line."""
    lines = program.split("\n")
    kinds = [kind for kind, n in counts.items() if n > 0]
    replies = await asyncio.gather(
        *(
            teacher.chat(
                [
                    {
                        "role": "user",
                        "content": render(templates[k], problem, program, line),
                    }
                ],
                counts[k],
                sampling,
            )
            for k in kinds
        )
    )
    found: dict[str, Mutation] = {}
    for kind, answers in zip(kinds, replies, strict=True):
        for answer in answers:
            mutated = parse_reply(answer, lines[line])
            if mutated is None or mutated in found:
                continue
            try:
                compile(
                    "\n".join([*lines[:line], mutated, *lines[line + 1 :]]), "<variant>", "exec"
                )
            except (SyntaxError, ValueError):
                continue
            found[mutated] = Mutation(line, f"teacher_{kind}", lines[line], mutated)
    return list(found.values())
