from __future__ import annotations

from codeprm.datasets import humaneval
from codeprm.services.labeler.ast_mutator import mutate_line

PROGRAM = """def f(xs, k):
    total = 0  # running sum
    for x in xs:
        if x > k and not x % 2:
            total += x * 2
    return max(total, k - 1)
"""


def variants(line: int) -> dict[str, str]:
    return {m.mutated.strip(): m.operator for m in mutate_line(PROGRAM, line)}


def test_each_operator_family_fires() -> None:
    assert variants(1)["total = 1  # running sum"] == "off_by_one"
    assert variants(1)["pass  # running sum"] == "drop_statement"
    line3 = variants(3)
    assert line3["if x >= k and not x % 2:"] == "swap_comparison"
    assert line3["if x > k or not x % 2:"] == "swap_boolean"
    assert line3["if x > k and x % 2:"] == "drop_not"
    assert variants(4)["total += x // 2"] == "swap_arithmetic"
    line5 = variants(5)
    assert line5["return None"] == "wrong_return"
    assert line5["return max(k - 1, total)"] == "swap_arguments"


def test_only_the_target_line_changes_and_every_variant_compiles() -> None:
    original = PROGRAM.split("\n")
    for line in range(len(original)):
        for mutation in mutate_line(PROGRAM, line):
            lines = original.copy()
            lines[line] = mutation.mutated
            compile("\n".join(lines), "m", "exec")
            assert mutation.mutated != original[line]
            assert mutation.line == line


def test_lines_without_mutable_nodes_give_nothing() -> None:
    assert mutate_line("def f():\n    pass\n", 1) == []
    assert mutate_line("def f(:\n", 0) == []  # unparsable


def test_humaneval_solutions_are_mutable() -> None:
    mutated = 0
    for problem in humaneval():
        assert problem.solution is not None
        program = problem.program(problem.solution)
        first = len(problem.program_prefix.split("\n")) - 1
        if any(mutate_line(program, i) for i in range(first, len(program.split("\n")))):
            mutated += 1
    assert mutated >= 160
