"""The PPO config file: the shipped example validates, and mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from codeprm.services.trainer.ppo_config import load_config

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE = EXAMPLES / "ppo.yaml"


def test_the_example_config_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.mode == "dense+value_init" and config.dense and config.prm_value_init
    assert config.collect is None


def test_the_listfuncs_example_matches_the_demo() -> None:
    from codeprm.demo import DENSE, LEARNING, DemoOptions

    config = load_config(EXAMPLES / "ppo-listfuncs.yaml")
    settings = config.model_dump()
    assert {k: settings[k] for k in LEARNING} == LEARNING
    assert {k: settings[k] for k in DENSE} == DENSE
    assert config.steps == DemoOptions(out=Path("x")).ppo_steps


def test_overrides_win_and_value_init_modes_need_a_prm(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("policy: /p\ndataset: humaneval\nout: runs/x\nmode: dense\n")
    assert load_config(path, steps=3).steps == 3
    with pytest.raises(ValidationError, match="needs `value_init`"):
        load_config(path, mode="value_init")
    path.write_text("policy: /p\ndataset: humaneval\nout: runs/x\nlearning_rate: 1\n")
    with pytest.raises(ValidationError, match="learning_rate"):
        load_config(path)
