"""A real executor (contained) and a real PRM server (tiny model) for the plug-in tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from codeprm.integrations.rewards import RewardSettings
from tests.contained import ContainedExecutor, require_isolation
from tests.servers import start_prm_server


@pytest.fixture(scope="module")
def prm_url(tiny_prm_dir: Path) -> Iterator[str]:
    proc, url = start_prm_server(tiny_prm_dir)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def reward_env(
    monkeypatch: pytest.MonkeyPatch, contained_executor: ContainedExecutor, prm_url: str
) -> RewardSettings:
    """The plug-ins read their settings from CODEPRM_REWARD_* variables, as in a real job."""
    require_isolation(contained_executor)
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", contained_executor.url)
    monkeypatch.setenv("CODEPRM_REWARD_PRM_URL", prm_url)
    monkeypatch.setenv("CODEPRM_REWARD_PRM_WEIGHT", "0.5")
    return RewardSettings()
