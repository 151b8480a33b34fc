"""The OpenRLHF reward file loaded by path and called one sample per thread, as OpenRLHF's
`SingleTurnAgentExecutor` does, in the main venv. OpenRLHF's own code drives it in
tests/frameworks/openrlhf (`make test-frameworks`)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any

import pytest
import torch

import codeprm.integrations.openrlhf as plugin
from codeprm.integrations.rewards import RewardSettings

PROMPT = "<|im_start|>user\nWrite add(a, b).<|im_end|>\n<|im_start|>assistant\n"
TESTS = json.dumps({"kind": "assert", "code": "assert add(2, 3) == 5", "entry_point": "add"})


def load_like_openrlhf() -> Any:
    spec = importlib.util.spec_from_file_location("reward_func", plugin.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reward_func


@pytest.mark.slow
async def test_reward_func_as_openrlhf_calls_it(reward_env: RewardSettings) -> None:
    reward_func = load_like_openrlhf()
    responses = [
        "```python\ndef add(a, b):\n    return a + b\n```<|im_end|>",
        "def add(a, b):\n    return a * b\n<|im_end|><|endoftext|>",
    ]
    infos = await asyncio.gather(
        *(asyncio.to_thread(reward_func, [PROMPT + r], [PROMPT], [TESTS]) for r in responses)
    )
    good, bad = infos
    for info in infos:
        assert isinstance(info["rewards"], torch.Tensor) and info["rewards"].shape == (1,)
        assert set(info["extra_logs"]) == {"codeprm_pass", "codeprm_prm", "codeprm_infra_error"}
    assert good["scores"].item() == 1.0 and bad["scores"].item() == 0.0
    prm_good = good["extra_logs"]["codeprm_prm"].item()
    assert good["rewards"].item() == pytest.approx(1.0 + 0.5 * prm_good)
    assert bad["rewards"].item() == pytest.approx(0.5 * bad["extra_logs"]["codeprm_prm"].item())


@pytest.mark.slow
def test_reward_func_takes_a_batch(reward_env: RewardSettings) -> None:
    plugin._rewards.cache_clear()  # settings are read once per process, like in a Ray actor
    queries = [PROMPT + "def add(a, b):\n    return a + b\n"] * 3
    info = plugin.reward_func(queries, [PROMPT] * 3, [TESTS] * 3)
    assert info["scores"].tolist() == [1.0, 1.0, 1.0]
