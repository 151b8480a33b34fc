"""veRL 0.9's built-in code reward (`default_compute_score` with `reward.sandbox_fusion.url`,
its SandboxFusion client) against the executor's `/run_code`, on the dataset shape
docs/integrations.md gives; and codeprm's own `compute_score` reading the same rows."""

from __future__ import annotations

import json

import pytest

pytest.importorskip(
    "verl", minversion="0.9", reason="veRL runs in its own venv: make test-frameworks"
)

from verl.utils.reward_score import default_compute_score  # noqa: E402

from codeprm.integrations.verl import compute_score  # noqa: E402
from tests.contained import ContainedExecutor, require_isolation  # noqa: E402

pytestmark = pytest.mark.slow

STDIN = {"inputs": ["2 3\n", "10 -4\n"], "outputs": ["5\n", "6\n"]}
STDIN_GOOD = "a, b = map(int, input().split())\nprint(a + b)\n"
STDIN_BAD = "a, b = map(int, input().split())\nprint(a - b)\n"
# Call-based: one JSON value per stdin line (an argument each), the printed result.
CALL = {"fn_name": "join", "inputs": ["[1, 2]\n[3]", '"a"\n"b"'], "outputs": ["[1, 2, 3]", "ab"]}
CALL_GOOD = "def join(a, b):\n    return a + b\n"
CALL_BAD = "def join(a, b):\n    return b + a\n"


def fenced(code: str) -> str:
    return f"Here it is:\n```python\n{code}```"


@pytest.mark.parametrize(
    ("truth", "good", "bad"), [(STDIN, STDIN_GOOD, STDIN_BAD), (CALL, CALL_GOOD, CALL_BAD)]
)
def test_verl_sandbox_fusion_reward_on_our_executor(
    contained_executor: ContainedExecutor,
    monkeypatch: pytest.MonkeyPatch,
    truth: dict[str, object],
    good: str,
    bad: str,
) -> None:
    require_isolation(contained_executor)
    url = f"{contained_executor.url}/run_code"

    def verl_score(solution: str) -> float:
        # What veRL's reward loop calls with reward.sandbox_fusion.url set.
        return float(
            default_compute_score(
                "apps", solution, json.dumps(truth), sandbox_fusion_url=url, memory_limit_mb=1024
            )
        )

    assert verl_score(fenced(good)) == 1.0
    assert verl_score(fenced(bad)) == 0.0
    assert verl_score(good) == 0.0  # no fenced block: veRL scores 0 without running it

    # The same rows through codeprm's reward function (outcome only).
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", contained_executor.url)
    from codeprm.integrations import verl as plugin

    plugin._rewards.cache_clear()
    try:
        assert compute_score("apps", fenced(good), json.dumps(truth))["passed"] == 1.0
        assert compute_score("apps", fenced(bad), json.dumps(truth))["passed"] == 0.0
    finally:
        plugin._rewards.cache_clear()
