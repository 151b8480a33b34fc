"""Every model the project writes loads back with the tokenizer it was trained with.

A tokenizer that reloads as another class (with another pre-tokenizer or normaliser) cuts the
same text into other tokens: a model trained before the save reads garbage after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from codeprm.services.trainer.sft import SftConfig, train_sft
from codeprm.tiny import build_tiny_policy, build_tiny_prm, build_tokenizer

TEXTS = [
    'def f(ys):\n    """Add 3 to each."""\n    ys = [y + 3 for y in ys]\n    return sum(ys)\n',
    "x = 1\r\n\tif x:\n\n        return  'é'  # tabs, CRLF, blank lines\n",
    "    for y in ys:\n        total += y\n        out.append(total)\n    return out",
]


def assert_same_tokenizer(saved: Path, original: object) -> None:
    loaded = AutoTokenizer.from_pretrained(saved)
    assert type(loaded) is type(original)
    assert json.loads(loaded.backend_tokenizer.to_str()) == json.loads(
        original.backend_tokenizer.to_str()  # type: ignore[attr-defined]
    )
    for text in TEXTS:
        a = original(text, return_offsets_mapping=True)  # type: ignore[operator]
        b = loaded(text, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"]
        assert a["offset_mapping"] == b["offset_mapping"]
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        assert getattr(loaded, name) == getattr(original, name)


@pytest.mark.parametrize("build", [build_tiny_policy, build_tiny_prm])
def test_tiny_models_reload_their_tokenizer(tmp_path: Path, build: object) -> None:
    saved = build(tmp_path / "model")  # type: ignore[operator]
    assert_same_tokenizer(saved, build_tokenizer())


def test_an_sft_policy_reloads_its_tokenizer(tmp_path: Path) -> None:
    out = train_sft(
        SftConfig(
            out=tmp_path / "policy",
            dataset="listfuncs-test",
            limit_problems=20,
            vocab_size=400,
            hidden=16,
            layers=1,
            heads=2,
            steps=2,
            batch_size=2,
            device="cpu",
        )
    )
    # Rebuilt from the same corpus, the tokenizer is the one the model was trained with.
    from codeprm.datasets import load_problems
    from codeprm.tiny import code_corpus

    problems = load_problems("listfuncs-test")[:20]
    corpus = [p.prompt + (p.solution or "") for p in problems] + code_corpus()[:6]
    assert_same_tokenizer(out, build_tokenizer(400, corpus))


def test_a_newline_is_cut_the_way_the_docstring_says() -> None:
    tok = build_tokenizer(vocab_size=1024)
    pieces = [tok.decode([i]) for i in tok("def f(x):\n    return x\n")["input_ids"]]
    assert "):\n" in pieces  # a token that spans a line end
    assert not any(p.startswith("\n ") for p in pieces)  # indentation is its own token


def test_fresh_sft_programs_come_from_the_listfuncs_training_split_only(tmp_path: Path) -> None:
    config = SftConfig(out=tmp_path / "policy", dataset="listfuncs-test", fresh=0.5, steps=1)
    with pytest.raises(ValueError, match="`listfuncs` training split only"):
        train_sft(config)


def test_an_sft_run_that_dies_while_saving_leaves_no_policy_that_looks_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json marks a finished policy (a rerun refuses it): it must not be there unless
    the weights and the tokenizer are."""
    from transformers import PreTrainedTokenizerBase

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", disk_full)
    out = tmp_path / "policy"
    config = SftConfig(
        out=out, dataset="listfuncs-test", limit_problems=4, vocab_size=400, hidden=16,
        layers=1, heads=2, steps=1, batch_size=2, device="cpu",
    )  # fmt: skip
    with pytest.raises(OSError, match="No space left"):
        train_sft(config)
    assert not (out / "config.json").exists()
    assert not list(out.glob(".policy.*"))  # the staging folder is gone too
    monkeypatch.undo()
    assert train_sft(config) == out  # and the rerun finishes it
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
