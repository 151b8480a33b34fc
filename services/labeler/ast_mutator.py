"""The built-in AST mutator: buggy variants of one line of a program, with no model at all.

Each variant changes exactly one line: a node that lies entirely on the target line is
rewritten and its source segment replaced, so every other line stays byte-identical.
Operators: arithmetic and comparison swaps, and/or, dropped `not`, integer constants ±1
(off-by-one constants and bounds), swapped call arguments, dropped statements, wrong return
values. Variants that do not compile, or that are identical to the original, are discarded.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass

_BINOP_SWAPS: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.FloorDiv,
    ast.FloorDiv: ast.Mult,
    ast.Div: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
}
_CMP_SWAPS: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


Located = ast.expr | ast.stmt  # nodes with a source position


@dataclass(frozen=True)
class Mutation:
    line: int
    """0-based line of the program that changed."""
    operator: str
    original: str
    mutated: str
    """The whole mutated line."""


def apply_mutation(program: str, mutation: Mutation) -> str:
    lines = program.split("\n")
    lines[mutation.line] = mutation.mutated
    return "\n".join(lines)


def mutate_line(program: str, line: int, limit: int = 8) -> list[Mutation]:
    """Up to `limit` distinct, compiling, one-line variants of `program`'s 0-based `line`."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return []
    lines = program.split("\n")
    original = lines[line]
    found: dict[str, Mutation] = {}
    for operator, node, replacement in _candidates(tree, line + 1):
        start, end = node.col_offset, node.end_col_offset
        if end is None:
            continue
        mutated = original[:start] + replacement + original[end:]
        if mutated == original or mutated in found:
            continue
        candidate = "\n".join([*lines[:line], mutated, *lines[line + 1 :]])
        try:
            compile(candidate, "<mutant>", "exec")
        except (SyntaxError, ValueError):
            continue
        found[mutated] = Mutation(line, operator, original, mutated)
        if len(found) >= limit:
            break
    return list(found.values())


def _on_line(node: ast.AST, lineno: int) -> bool:
    return getattr(node, "lineno", None) == lineno and getattr(node, "end_lineno", None) == lineno


def _candidates(tree: ast.Module, lineno: int) -> Iterator[tuple[str, Located, str]]:
    for node in ast.walk(tree):
        if not isinstance(node, Located) or not _on_line(node, lineno):
            continue
        yield from _statement_mutations(node)
        yield from _expression_mutations(node)


def _statement_mutations(node: Located) -> Iterator[tuple[str, Located, str]]:
    if isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "wrong_return", node, "return None"
    if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Expr) and not (
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # docstrings
    ):
        yield "drop_statement", node, "pass"


def _expression_mutations(node: Located) -> Iterator[tuple[str, Located, str]]:
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        binop = copy.copy(node)
        binop.op = _BINOP_SWAPS[type(node.op)]()
        yield "swap_arithmetic", node, ast.unparse(binop)
    elif isinstance(node, ast.Compare) and type(node.ops[0]) in _CMP_SWAPS:
        compare = copy.copy(node)
        compare.ops = [_CMP_SWAPS[type(node.ops[0])](), *node.ops[1:]]
        yield "swap_comparison", node, ast.unparse(compare)
    elif isinstance(node, ast.BoolOp):
        boolop = copy.copy(node)
        boolop.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield "swap_boolean", node, ast.unparse(boolop)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "drop_not", node, ast.unparse(node.operand)
    elif isinstance(node, ast.Constant) and type(node.value) is int:
        yield "off_by_one", node, repr(node.value + 1)
        yield "off_by_one", node, repr(node.value - 1)
    elif (
        isinstance(node, ast.Call)
        and len(node.args) >= 2
        and not any(isinstance(a, ast.Starred) for a in node.args[:2])
    ):
        call = copy.copy(node)
        call.args = [node.args[1], node.args[0], *node.args[2:]]
        yield "swap_arguments", node, ast.unparse(call)
