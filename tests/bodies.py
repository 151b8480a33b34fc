"""Request bodies fuzzed leaf by leaf: each leaf of a valid body replaced in turn by each of a
set of raw JSON values (raw, so that NaN, 1e999 and lone surrogates can be written)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_MARK = "__codeprm_fuzzed_value__"


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every leaf (an empty list or object counts as one)."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path


def _replaced(value: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return _MARK
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:])
    return copy


def fuzzed(body: dict[str, Any], raw_values: dict[str, str]) -> list[tuple[str, bytes]]:
    """(name, JSON body) for each leaf of `body` and each raw value put there."""
    variants = []
    for path in leaves(body):
        template = json.dumps(_replaced(body, path))
        where = ".".join(map(str, path))
        for name, raw in raw_values.items():
            variants.append((f"{where}={name}", template.replace(f'"{_MARK}"', raw).encode()))
    return variants
