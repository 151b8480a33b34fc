"""The generated `listfuncs` family: real multi-line programs where every line matters."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from codeprm import listfuncs
from codeprm.datasets import load_problems


def passes(prompt: str, body: str, tests: str) -> bool:
    """The family's own reference text, run in-process (trusted: this module wrote it)."""
    try:
        fn = listfuncs.run_function(prompt, body)
        scope: dict[str, Any] = {}
        exec(tests, scope)  # noqa: S102
        scope["check"](fn)
    except Exception:
        return False
    return True


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEPRM_CACHE", str(tmp_path))
    listfuncs._problems.cache_clear()


def test_drawing_is_a_pure_function_of_seed_and_index() -> None:
    assert listfuncs.draw(3, 17) == listfuncs.draw(3, 17)
    assert listfuncs.draw(3, 17) != listfuncs.draw(4, 17)


@pytest.mark.parametrize("steps", [1, 4, 12])
def test_every_line_of_a_solution_is_needed(steps: int) -> None:
    for index in range(8):
        problem = listfuncs.to_problem(listfuncs.draw(0, index, steps=steps))
        assert problem.solution is not None
        tests = problem.tests.code  # type: ignore[union-attr]
        assert passes(problem.prompt, problem.solution, tests)
        lines = problem.solution.splitlines(keepends=True)
        assert len(lines) >= steps + 1
        for drop in range(len(lines)):
            body = "".join(lines[:drop] + lines[drop + 1 :])
            assert not passes(problem.prompt, body, tests), (problem.problem_id, drop)


def test_splits_are_disjoint_by_problem_and_span_lengths() -> None:
    train = listfuncs.problems("train", count=120)
    test = listfuncs.problems("test", count=20)
    assert not {p.problem_id for p in train} & {p.problem_id for p in test}
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert len({p.prompt for p in train}) == len(train)
    lengths = Counter(listfuncs.code_line_count(p) for p in train)
    assert min(lengths) == 2 and max(lengths) >= 13
    assert all(p.program_prefix == p.prompt and p.tests.kind == "assert" for p in train)


def test_named_datasets_load_through_load_problems() -> None:
    test = load_problems("listfuncs-test")
    assert len(test) == listfuncs.TEST_PROBLEMS
    assert all(listfuncs.split_of(p.prompt) == "test" for p in test)
    again = load_problems("listfuncs-test")
    assert [p.problem_id for p in again] == [p.problem_id for p in test]


def test_drawn_problems_are_cached_on_disk(tmp_path: Path) -> None:
    first = listfuncs.problems("test", count=5)
    cached = list((tmp_path / "listfuncs").glob("*.jsonl"))
    assert len(cached) == 1
    listfuncs._problems.cache_clear()
    assert listfuncs.problems("test", count=5) == first
    with pytest.raises(ValueError, match="splits"):
        listfuncs.problems("valid")


def test_fresh_programs_follow_their_docstring_and_avoid_the_held_out_prompts() -> None:
    rng = random.Random(0)
    for _ in range(200):
        prompt, solution = listfuncs.fresh_program(rng)
        listfuncs.run_function(prompt, solution)  # valid Python (the family's own text)
        sentences = prompt.split('"""')[1].removesuffix(".").split(". ")
        lines = solution.splitlines()
        # one line per pipeline step, carrying the sentence's constant; then the finisher
        for sentence, line in zip(sentences[:-1], lines, strict=False):
            numbers = re.findall(r"\d+", sentence)
            assert all(n in line for n in numbers), (sentence, line)
        assert len(lines) >= len(sentences)
    first = listfuncs.fresh_program(random.Random(1))[0]
    assert listfuncs.fresh_program(random.Random(1), frozenset({first}))[0] != first
