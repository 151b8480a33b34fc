"""OpenRLHF 0.11's own code driving codeprm: its command-line flags, its reward-file loader
and single-turn executor (`openrlhf.utils.agent.SingleTurnAgentExecutor`), and its HTTP
remote-reward path against the PRM server's `/get_reward`. Only vLLM's engine is replaced,
by a policy that writes fixed responses."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# (no minversion: openrlhf has no __version__)
pytest.importorskip("openrlhf", reason="OpenRLHF runs in its own venv: make test-frameworks")

from openrlhf.utils.agent import SingleTurnAgentExecutor  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import codeprm.integrations.openrlhf as plugin  # noqa: E402
from codeprm.client import PrmClient  # noqa: E402
from codeprm.integrations.rewards import RewardSettings  # noqa: E402
from codeprm.stack import free_port  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = "Write add(a, b).\n"
TESTS = json.dumps({"kind": "assert", "code": "assert add(2, 3) == 5", "entry_point": "add"})
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a * b\n"

# The flags docs/integrations.md gives for OpenRLHF 0.11.
DOCUMENTED = [
    "--reward.remote_url", "/path/to/openrlhf.py",
    "--data.input_key", "prompt",
    "--data.label_key", "tests",
    "--algo.dynamic_filtering_enable",
    "--algo.dynamic_filtering_range", "0.0", "1.0",
]  # fmt: skip


def openrlhf_parser() -> argparse.ArgumentParser:
    """The argument parser `openrlhf.cli.train_ppo_ray` builds under `__main__`, rebuilt from
    its own `parser.add_argument(...)` calls (the module itself imports vLLM and DeepSpeed)."""
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    main = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    )
    calls = [
        stmt
        for stmt in main.body
        if isinstance(stmt, ast.Expr) and ast.unparse(stmt).startswith("parser.add_argument(")
    ]
    assert len(calls) > 100  # the whole command line, not a few lines of it
    parser = argparse.ArgumentParser()
    namespace = {
        "parser": parser,
        "datetime": datetime,
    }  # the module's `from datetime import datetime`
    exec(compile(ast.Module(body=calls, type_ignores=[]), spec.origin, "exec"), namespace)
    return parser


def test_documented_flags_parse_and_old_ones_are_gone() -> None:
    parser = openrlhf_parser()
    args = vars(parser.parse_args(DOCUMENTED))
    assert args["reward.remote_url"] == "/path/to/openrlhf.py"
    assert args["data.input_key"] == "prompt" and args["data.label_key"] == "tests"
    assert args["algo.dynamic_filtering_enable"] is True
    for old in ("--remote_rm_url", "--input_key", "--label_key"):
        with pytest.raises(SystemExit):
            parser.parse_args([old, "x"])


@dataclass
class _Completion:
    token_ids: list[int]
    finish_reason: str = "stop"
    logprobs: Any = None


@dataclass
class ScriptedEngine:
    """vLLM's engine as OpenRLHF's executor calls it: `await generate(prompt_ids, params)`."""

    tokenizer: Any
    responses: list[str]
    calls: list[list[int]] = field(default_factory=list)

    async def generate(self, prompt_token_ids: list[int], params: Any, **kwargs: Any) -> Any:
        self.calls.append(prompt_token_ids)
        text = self.responses[len(self.calls) - 1]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return SimpleNamespace(outputs=[_Completion(ids)])


def sampling_params() -> Any:
    return SimpleNamespace(max_tokens=256, logprobs=None)


async def test_reward_file_through_openrlhf_executor(
    reward_env: RewardSettings, tiny_prm_dir: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_prm_dir)
    executor = SingleTurnAgentExecutor(remote_rm_url=[plugin.__file__])  # its file loader
    assert executor.reward_func is not None
    engine = ScriptedEngine(tokenizer, [f"```python\n{GOOD}```", BAD])
    good = await executor.execute(PROMPT, TESTS, sampling_params(), 1024, tokenizer, engine)
    bad = await executor.execute(PROMPT, TESTS, sampling_params(), 1024, tokenizer, engine)
    for out in (good, bad):
        assert set(out["extra_logs"]) == {"codeprm_pass", "codeprm_prm", "codeprm_infra_error"}
        assert out["extra_logs"]["codeprm_infra_error"].item() == 0.0
    assert good["scores"].item() == 1.0 and bad["scores"].item() == 0.0
    prm_good = good["extra_logs"]["codeprm_prm"].item()
    assert good["reward"].item() == pytest.approx(1.0 + 0.5 * prm_good)
    assert bad["reward"].item() == pytest.approx(0.5 * bad["extra_logs"]["codeprm_prm"].item())


async def test_infrastructure_error_is_no_reward_not_a_failure(
    reward_env: RewardSettings, tiny_prm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: the executor is unreachable (few retries to keep it short).
    monkeypatch.setenv("CODEPRM_REWARD_EXECUTOR_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CODEPRM_REWARD_RETRIES", "0")
    tokenizer = AutoTokenizer.from_pretrained(tiny_prm_dir)
    executor = SingleTurnAgentExecutor(remote_rm_url=[plugin.__file__])
    engine = ScriptedEngine(tokenizer, [GOOD])
    out = await executor.execute(PROMPT, TESTS, sampling_params(), 1024, tokenizer, engine)
    assert out["extra_logs"]["codeprm_infra_error"].item() == 1.0
    assert math.isnan(out["scores"].item())  # outside every dynamic-filtering range
    assert out["reward"].item() == 0.0


async def test_remote_reward_http_path(prm_url: str, tiny_prm_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_prm_dir)
    executor = SingleTurnAgentExecutor(remote_rm_url=[f"{prm_url}/get_reward"])
    engine = ScriptedEngine(tokenizer, [GOOD])
    out = await executor.execute(PROMPT, TESTS, sampling_params(), 1024, tokenizer, engine)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (PROMPT, GOOD)]
    query = tokenizer.decode(ids[0] + ids[1])
    with PrmClient(prm_url) as prm:
        expected = prm.get_reward([query], [PROMPT]).rewards
    assert out["reward"] == pytest.approx(expected)
