"""binary_search and monte_carlo on a constructed problem whose first bad line is known."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator

import pytest

from codeprm.api.labeler import BackendSpec, SearchOptions
from codeprm.client import AsyncExecutorClient
from codeprm.lines import split_lines
from codeprm.scripted_llm import ScriptedLLM
from codeprm.services.labeler.binary_search import label_by_binary_search
from codeprm.services.labeler.completions import OpenAIBackend
from codeprm.services.labeler.labeling import Labeled
from codeprm.services.labeler.monte_carlo import label_by_monte_carlo
from tests.contained import ContainedExecutor, require_isolation
from tests.labeler.constructed import BUGS, PROMPT, SOLUTION, bugged, oracle, problem

pytestmark = pytest.mark.slow


@pytest.fixture
def executor_url(contained_executor: ContainedExecutor) -> str:
    require_isolation(contained_executor)
    return contained_executor.url


def run(strategy: Callable[..., object], url: str, llm: ScriptedLLM, **kw: object) -> Labeled:
    async def go() -> Labeled:
        spec = BackendSpec(kind="openai", url=llm.url, model="scripted")
        policy = OpenAIBackend(spec)
        async with AsyncExecutorClient(url) as executor:
            try:
                return await strategy(kw.pop("problem"), policy, executor, SearchOptions(**kw))  # type: ignore[no-any-return,misc]
            finally:
                await policy.aclose()

    return asyncio.run(go())


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(complete=oracle()) as server:
        yield server


def test_binary_search_finds_the_known_first_bad_line(executor_url: str, llm: ScriptedLLM) -> None:
    candidates = [SOLUTION] + [bugged(m) for m in BUGS]
    k = 4
    labeled = run(label_by_binary_search, executor_url, llm, problem=problem(candidates), k=k)
    passing, *failing = labeled.samples
    kinds = [line.kind for line in split_lines(SOLUTION)]
    assert passing.line_labels == [0.0 if kind != "code" else 1.0 for kind in kinds]
    assert passing.provenance["passed"] is True
    budget = math.ceil(math.log2(len(BUGS)))
    code_index = [line.index for line in split_lines(SOLUTION) if line.kind == "code"]
    for m, sample in zip(BUGS, failing, strict=True):
        assert sample.provenance["first_bad_line"] == code_index[m - 1]
        ordinals = iter(range(1, 8))
        expected = [
            0.0 if kind != "code" else (1.0 if next(ordinals) < m else -1.0) for kind in kinds
        ]
        assert sample.line_labels == expected, (m, sample.line_labels)
        # TRL's labels: one per code line (its step takes the neutral lines before it).
        code_labels = [v > 0 for v, kind in zip(expected, kinds, strict=True) if kind == "code"]
        assert sample.labels == code_labels
        assert sample.provenance["probes"] <= budget
        assert sample.provenance["completions"] == k * sample.provenance["probes"]
    probes = sum(s.provenance.get("probes", 0) for s in failing)
    assert labeled.completions == k * probes <= k * budget * len(BUGS)
    assert labeled.completions < k * (len(BUGS) - 1) * len(BUGS)  # a linear scan's cost
    assert labeled.stats == {"programs": 8, "passed": 1, "revised": 6, "unrecoverable": 1}
    # The k continuations of a probe are one text, and a good prefix continued correctly is
    # the solution itself: each distinct program is executed once.
    assert labeled.executions < len(candidates) + probes < labeled.completions


def test_verification_probes_count_non_monotone_prefixes(executor_url: str) -> None:
    with ScriptedLLM(complete=oracle(fix_after=5)) as llm:
        labeled = run(
            label_by_binary_search,
            executor_url,
            llm,
            problem=problem([bugged(2)]),
            k=2,
            verify_probes=3,
        )
    (sample,) = labeled.samples
    # The search path probes prefixes 3, 1, 2 and finds line 2; the checks probe 4, 5 and 6,
    # and the policy recovers from 5 and 6 although 3 was not recoverable.
    assert sample.provenance["probes"] == 6
    assert sample.provenance["nonmonotone"] == 2
    assert labeled.stats["nonmonotone"] == 2


def test_revised_only_keeps_failing_programs_with_a_recoverable_prefix(
    executor_url: str, llm: ScriptedLLM
) -> None:
    labeled = run(
        label_by_binary_search,
        executor_url,
        llm,
        problem=problem([SOLUTION, bugged(1), bugged(4)]),
        revised_only=True,
    )
    (sample,) = labeled.samples
    assert sample.provenance["candidate"] == 2
    assert labeled.stats["dropped_not_revised"] == 2


def test_programs_are_sampled_from_the_policy_without_candidates(executor_url: str) -> None:
    def complete(text: str, n: int) -> list[str]:
        if text == PROMPT:  # the bare prompt: the programs to label
            return [bugged(3), SOLUTION] * (n // 2)
        return oracle()(text, n)

    with ScriptedLLM(complete=complete) as llm:
        labeled = run(
            label_by_binary_search,
            executor_url,
            llm,
            problem=problem([]),
            samples_per_problem=4,
            k=2,
        )
    assert [s.provenance["passed"] for s in labeled.samples] == [False, True, False, True]
    assert labeled.completions == 4 + sum(
        s.provenance.get("completions", 0) for s in labeled.samples
    )


def test_monte_carlo_soft_labels_are_pass_rates(executor_url: str) -> None:
    with ScriptedLLM(complete=oracle(good_share=0.5)) as llm:
        labeled = run(
            label_by_monte_carlo,
            executor_url,
            llm,
            problem=problem([SOLUTION, bugged(4)]),
            k=4,
        )
    passing, failing = labeled.samples
    code = [
        v
        for v, line in zip(passing.line_labels, split_lines(SOLUTION), strict=True)
        if line.kind == "code"
    ]
    assert code == [0.5] * 6 + [1.0]  # the last line's value is the program's own verdict
    code = [
        v
        for v, line in zip(failing.line_labels, split_lines(SOLUTION), strict=True)
        if line.kind == "code"
    ]
    assert code == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert labeled.completions == 2 * 6 * 4
    assert failing.line_labels[1] == 0.0 and failing.line_labels[6] == 0.0  # comment, blank
    assert failing.labels == [v > 0 for v in code]  # one per code line, none for neutral ones
