"""A constructed problem whose first bad line is known, and a policy that knows its solution.

The policy (`oracle`, served by a ScriptedLLM) continues a prefix of the reference solution
with the rest of it (the program passes) and anything else with a wrong ending, so the prefix
through a bugged line is exactly the first unrecoverable one.
"""

from __future__ import annotations

from collections.abc import Callable

from codeprm.datasets import Problem
from codeprm.lines import split_lines

PROMPT = "# Write total(xs): twice the sum of the squares of the even numbers in xs.\n"
SOLUTION = (
    "def total(xs):\n"
    "    # squares of the even numbers\n"
    "    result = 0\n"
    "    for x in xs:\n"
    "        if x % 2 == 0:\n"
    "            result += x * x\n"
    "\n"
    "    result = result * 2\n"
    "    return result\n"
)
TESTS = {
    "kind": "assert",
    "code": "assert total([1, 2, 3, 4]) == 40\nassert total([]) == 0\n"
    "assert total([5]) == 0\nassert total([6]) == 72\n",
}
# A failing variant of each code line, by 1-based code-line ordinal.
BUGS = {
    1: "def total(ys):",
    2: "    result = 1",
    3: "    for x in xs[1:]:",
    4: "        if x % 2 == 1:",
    5: "            result += x",
    6: "    result = result * 3",
    7: "    return -result",
}
WRONG_ENDING = "    return None\n"
FIX_EVERYTHING = "    return sum(x * x for x in xs if x % 2 == 0) * 2\n"


def bugged(ordinal: int) -> str:
    lines = SOLUTION.split("\n")
    code = [line.index for line in split_lines(SOLUTION) if line.kind == "code"]
    lines[code[ordinal - 1]] = BUGS[ordinal]
    return "\n".join(lines)


def problem(candidates: list[str]) -> Problem:
    return Problem.model_validate(
        {"problem_id": "total", "prompt": PROMPT, "tests": TESTS, "candidates": candidates}
    )


def oracle(
    fix_after: int | None = None, good_share: float = 1.0
) -> Callable[[str, int], list[str]]:
    """Continues prefixes of SOLUTION correctly (`good_share` of the time), anything else
    wrongly, except that prefixes of at least `fix_after` code lines get a continuation that
    passes whatever came before: a non-monotone policy."""

    def complete(text: str, n: int) -> list[str]:
        prefix = text[len(PROMPT) :]
        if SOLUTION.startswith(prefix):
            good = round(n * good_share)
            return [SOLUTION[len(prefix) :]] * good + [WRONG_ENDING] * (n - good)
        written = sum(line.kind == "code" for line in split_lines(prefix))
        if fix_after is not None and written >= fix_after:
            return [FIX_EVERYTHING] * n
        return [WRONG_ENDING] * n

    return complete
