"""The Python examples of docs/integrations.md, run by the framework tests as a user would
paste them. Only what a test machine cannot have is changed (the hub model, a run of
thousands of steps), and each change names the text it replaces, so an example that drifts
from what the test runs fails the test instead of going stale."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def example(marker: str) -> str:
    """The one ```python block of docs/integrations.md that contains `marker`."""
    blocks = [b for b in PYTHON_BLOCK.findall(DOC.read_text()) if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} python blocks in {DOC.name} contain {marker!r}"
    return str(blocks[0])


def swap(code: str, old: str, new: str) -> str:
    """`code` with every `old` replaced by `new`; `old` must be there."""
    assert old in code, f"the example no longer contains {old!r}"
    return code.replace(old, new)


def run(code: str) -> dict[str, object]:
    """Execute an example; its globals afterwards."""
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace
