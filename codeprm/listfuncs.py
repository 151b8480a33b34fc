"""`listfuncs`: a generated family of multi-line Python functions with unit tests.

Each problem is a function over a list of integers whose docstring describes a pipeline of
steps, one sentence per step; the solution writes one code line per step, then a finishing
block (a `return`, or a short counting loop):

    def f(ys):
        \"\"\"Add 3 to each. Keep the positive ones. Sort descending. Return the sum.\"\"\"
        ys = [y + 3 for y in ys]
        ys = [y for y in ys if y > 0]
        ys = sorted(ys, reverse=True)
        return sum(ys)

Programs run from 2 to 14 code lines. Every line matters: a problem is kept only when deleting
any single code line of its solution changes the answer on at least one of its test inputs,
so a wrong line is a failing program (the labels of a line are real). The tests are asserts
of `candidate(input) == expected` on random inputs, expected values computed from the solution.

Problems are a pure function of (seed, index); `split` separates them by step sequence (a
held-out problem's prompt is never a training problem's), and each split holds a prompt once.
Names: `listfuncs` (train split), `listfuncs-test` (held out), `listfuncs-all`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeprm.datasets import Problem

VERSION = "v3"
"""Bumped whenever drawing changes: the cache of drawn problems is keyed by it."""
ENTRY_POINT = "f"
TRAIN_PROBLEMS = 1000
TEST_PROBLEMS = 100
MIN_STEPS, MAX_STEPS = 1, 12
TEST_INPUTS = 6


@dataclass(frozen=True)
class Step:
    """One sentence of the docstring and the code line(s) it asks for."""

    sentence: str
    lines: tuple[str, ...]


def _map(sentence: str, expr: str) -> Step:
    return Step(sentence, (f"ys = [{expr} for y in ys]",))


def _keep(sentence: str, cond: str) -> Step:
    return Step(sentence, (f"ys = [y for y in ys if {cond}]",))


# Each step's constant is part of its sentence, fixed by the menu: "Add 3 to each." always
# means `y + 3`. An earlier version drew a constant per problem, and a policy small enough to
# train on two CPU cores learnt the steps and their order but not copying a digit from the k-th
# sentence to the k-th line: 79% of its failing programs' first wrong line was the right step with
# a guessed constant (docs/results.md). Fixed constants keep what the family is for (a pipeline
# of steps where every line matters, each a sentence to follow in order) and leave the copying out.
MIDDLE_STEPS: tuple[Step, ...] = (
    _map("Add 3 to each.", "y + 3"),
    _map("Subtract 2 from each.", "y - 2"),
    _map("Multiply each by 3.", "y * 3"),
    _map("Take each modulo 5.", "y % 5"),
    _map("Square each.", "y * y"),
    _map("Negate each.", "-y"),
    _map("Take absolute values.", "abs(y)"),
    _map("Halve each, rounding down.", "y // 2"),
    _keep("Keep the positive ones.", "y > 0"),
    _keep("Keep those below 10.", "y < 10"),
    _keep("Keep the even ones.", "y % 2 == 0"),
    _keep("Keep the odd ones.", "y % 2 == 1"),
    _keep("Drop multiples of 3.", "y % 3 != 0"),
    Step("Sort ascending.", ("ys = sorted(ys)",)),
    Step("Sort descending.", ("ys = sorted(ys, reverse=True)",)),
    Step("Reverse the list.", ("ys = ys[::-1]",)),
    Step("Keep the first 4.", ("ys = ys[:4]",)),
    Step("Drop the first 2.", ("ys = ys[2:]",)),
    Step("Append their sum.", ("ys = ys + [sum(ys)]",)),
    Step("Drop duplicates, keeping order.", ("ys = list(dict.fromkeys(ys))",)),
)

FINISHERS: tuple[Step, ...] = (
    Step("Return the list.", ("return ys",)),
    Step("Return the sum.", ("return sum(ys)",)),
    Step("Return the length.", ("return len(ys)",)),
    Step("Return the largest, or 0 if empty.", ("return max(ys, default=0)",)),
    Step("Return the smallest, or 0 if empty.", ("return min(ys, default=0)",)),
    Step(
        "Return how many are above 2.",
        ("count = 0", "for y in ys:", "    if y > 2:", "        count += 1", "return count"),
    ),
    Step(
        "Return the product.",
        ("product = 1", "for y in ys:", "    product *= y", "return product"),
    ),
    Step(
        "Return the running total of the list.",
        (
            "total = 0",
            "out = []",
            "for y in ys:",
            "    total += y",
            "    out.append(total)",
            "return out",
        ),
    ),
)


@dataclass(frozen=True)
class Spec:
    """A drawn problem before it becomes a `Problem`."""

    problem_id: str
    steps: list[Step]
    inputs: list[list[int]]

    @property
    def prompt(self) -> str:
        doc = " ".join(step.sentence for step in self.steps)
        return f'def {ENTRY_POINT}(ys):\n    """{doc}"""\n'

    @property
    def code_lines(self) -> list[str]:
        return [line for step in self.steps for line in step.lines]

    @property
    def solution(self) -> str:
        return "".join(f"    {line}\n" for line in self.code_lines)


def run_function(prompt: str, body: str) -> Callable[[list[int]], Any]:
    """The generated function, compiled in this process: only ever the family's own reference
    solutions and their line deletions (trusted text this module wrote), never a policy's."""
    scope: dict[str, Any] = {}
    exec(compile(prompt + body, "<listfuncs>", "exec"), scope)  # noqa: S102
    fn: Callable[[list[int]], Any] = scope[ENTRY_POINT]
    return fn


def _outputs(spec: Spec, drop: int | None = None) -> list[Any] | None:
    """The solution's answers on the test inputs, with code line `drop` deleted if given
    (None when that program does not run: a deletion that breaks it changes its answer)."""
    middle = [step.lines[0] for step in spec.steps[:-1]]
    finish = list(spec.steps[-1].lines)
    if drop is not None and drop < len(middle):
        middle.pop(drop)
    elif drop is not None:
        finish.pop(drop - len(middle))
    fn = _finisher(tuple(finish))
    if fn is None:
        return None
    try:
        answers = []
        for x in spec.inputs:
            ys = list(x)
            for line in middle:
                ys = _apply(line, ys)
            answers.append(fn(ys))
        return answers
    except Exception:
        return None


_FINISHERS: dict[tuple[str, ...], Callable[[list[int]], Any] | None] = {}


def _finisher(lines: tuple[str, ...]) -> Callable[[list[int]], Any] | None:
    if lines not in _FINISHERS:
        body = "".join(f"    {line}\n" for line in lines) or "    pass\n"
        try:
            _FINISHERS[lines] = run_function(f"def {ENTRY_POINT}(ys):\n", body)
        except SyntaxError:  # a deleted `for` line leaves an indented block behind
            _FINISHERS[lines] = None
    return _FINISHERS[lines]


def _every_line_matters(spec: Spec) -> bool:
    expected = _outputs(spec)
    if expected is None or all(e == expected[0] for e in expected):
        return False  # a constant answer cannot tell programs apart
    return all(_outputs(spec, drop) != expected for drop in range(len(spec.code_lines)))


def draw(seed: int, index: int, steps: int | None = None) -> Spec:
    """Problem `index` of the family with this seed; `steps` pipeline steps (drawn when None).

    Steps are chosen one at a time against the test inputs: a step that leaves every list as
    it was, empties them, or lets the numbers grow past 10**4 is drawn again, so long
    pipelines stay meaningful; the whole solution is then checked line by line."""
    rng = random.Random(f"listfuncs:{seed}:{index}")
    count = steps if steps is not None else rng.randint(MIN_STEPS, MAX_STEPS)
    while True:
        inputs = [
            [rng.randint(-9, 20) for _ in range(rng.randint(5, 9))] for _ in range(TEST_INPUTS)
        ]
        values = [list(x) for x in inputs]
        chosen: list[Step] = []
        for _ in range(200):
            if len(chosen) == count:
                break
            step = rng.choice(MIDDLE_STEPS)
            after = [_apply(step.lines[0], v) for v in values]
            if after != values and _lively(after):
                chosen.append(step)
                values = after
        spec = Spec(f"listfuncs/{seed}/{index}", [*chosen, rng.choice(FINISHERS)], inputs)
        if len(chosen) == count and _every_line_matters(spec):
            return spec


def fresh_program(rng: random.Random, avoid: frozenset[str] = frozenset()) -> tuple[str, str]:
    """A newly drawn (prompt, solution) of the family for supervised training: steps and
    constants drawn as `draw` draws them, without its test inputs and checks (cheap: nothing
    is executed), and never one whose prompt is in `avoid` (the held-out problems')."""
    while True:
        count = rng.randint(MIN_STEPS, MAX_STEPS)
        steps = [rng.choice(MIDDLE_STEPS) for _ in range(count)]
        spec = Spec("", [*steps, rng.choice(FINISHERS)], [])
        if spec.prompt not in avoid:
            return spec.prompt, spec.solution


_COMPILED: dict[str, Any] = {}


def _apply(line: str, ys: list[int]) -> list[int]:
    code = _COMPILED.get(line) or _COMPILED.setdefault(line, compile(line, "<step>", "exec"))
    scope: dict[str, Any] = {"ys": list(ys)}
    exec(code, scope)  # noqa: S102 - one of the menu's own lines, see run_function
    result: list[int] = scope["ys"]
    return result


def _lively(values: list[list[int]]) -> bool:
    """Lists with something left in most of them, and numbers still readable."""
    alive = sum(len(v) >= 2 for v in values)
    return alive * 3 >= len(values) * 2 and all(abs(y) <= 10**4 for v in values for y in v)


def to_problem(spec: Spec) -> Problem:
    expected = _outputs(spec)
    assert expected is not None, "a drawn problem's solution runs"
    asserts = "".join(
        f"    assert candidate({x!r}) == {y!r}\n"
        for x, y in zip(spec.inputs, expected, strict=True)
    )
    return Problem.model_validate(
        {
            "problem_id": spec.problem_id,
            "prompt": spec.prompt,
            "program_prefix": spec.prompt,
            "solution": spec.solution,
            "tests": {
                "kind": "assert",
                "code": f"def check(candidate):\n{asserts}",
                "entry_point": ENTRY_POINT,
            },
        }
    )


def split_of(prompt: str) -> str:
    """'test' for about one step sequence in eleven, by a hash of the prompt; 'train' otherwise.
    Split by what the problem asks, not by its id: two ids can draw the same short pipeline."""
    digest = hashlib.sha256(prompt.encode()).digest()
    return "test" if digest[0] % 11 == 0 else "train"


def problems(split: str = "train", *, seed: int = 0, count: int | None = None) -> list[Problem]:
    """The first `count` problems of a split ('train', 'test' or 'all'); a fresh list of the
    (immutable in practice) problems drawn once per process."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"listfuncs has splits train, test and all, not {split!r}")
    default = TEST_PROBLEMS if split == "test" else TRAIN_PROBLEMS
    return list(_problems(split, seed, default if count is None else count))


@functools.cache
def _problems(split: str, seed: int, count: int) -> tuple[Problem, ...]:
    # Drawing takes tens of milliseconds a problem (every line's deletion is executed), so
    # each split is drawn once per machine and kept as JSONL in the cache directory.
    cache = _cache_dir() / f"{VERSION}-{split}-{seed}-{count}.jsonl"
    if cache.is_file():
        return tuple(Problem.model_validate_json(line) for line in cache.read_text().splitlines())
    found = _draw_split(split, seed, count)
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = cache.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text("".join(p.model_dump_json() + "\n" for p in found))
    staging.replace(cache)  # atomic: concurrent processes never read half a file
    return found


def _cache_dir() -> Path:
    return Path(os.environ.get("CODEPRM_CACHE", Path.home() / ".cache" / "codeprm")) / "listfuncs"


def _draw_split(split: str, seed: int, count: int) -> tuple[Problem, ...]:
    found: list[Problem] = []
    asked: set[str] = set()  # each step sequence once: a repeat would only weigh it double
    index = 0
    while len(found) < count:
        spec = draw(seed, index)
        if (split == "all" or split_of(spec.prompt) == split) and spec.prompt not in asked:
            asked.add(spec.prompt)
            found.append(to_problem(spec))
        index += 1
    return tuple(found)


def code_line_count(problem: Problem) -> int:
    """Code lines of the reference solution: the length a problem asks for."""
    return sum(1 for line in (problem.solution or "").splitlines() if line.strip())
