"""The plug-ins stand on codeprm's public modules (the SDK, the reward maths), never on a
service's internals: a framework loads them by path in its own processes, and what they
compute must not change when a service's code is reorganised."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

import codeprm.integrations

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(Path(codeprm.integrations.__file__).parent.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # `from x import name` where name is not a module
        return None
    if spec is None or spec.origin is None or not spec.has_location:
        return None
    return Path(spec.origin).resolve()


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plugins_import_no_service_code(plugin: Path) -> None:
    services = ROOT / "services"
    inside = sorted(
        module
        for module in imported_modules(plugin)
        if (path := source_file(module)) is not None and path.is_relative_to(services)
    )
    assert inside == [], f"{plugin.name} imports service internals: {inside}"
