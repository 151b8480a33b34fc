"""A PRM checkpoint in use: loading it, encoding (prompt, code) and reading line scores.

Shared by the PRM server, PRM training (held-out and on-policy evaluation) and the veRL critic
plug-in (the checkpoint's metadata), so that what is trained, evaluated and served is read the
same way. How a score is read depends
on the checkpoint's label scheme (`codeprm/api/prm.py`): the raw regression output (+1/-1
training), a sigmoid (0/1 training), or the positive class's probability (TRL's two-label
PRMs, encoded in TRL's own layout and read at each line's separator, where TRL puts it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from codeprm.api.prm import METADATA_FILE, PrmMetadata, ScoreItem
from codeprm.geometry import EncodedLines, encode_lines, encode_steps

log = logging.getLogger(__name__)


@dataclass
class LoadedPrm:
    name: str
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    device: torch.device
    dtype: torch.dtype
    metadata: PrmMetadata


def read_metadata(path: Path, num_labels: int) -> PrmMetadata:
    """codeprm's own file when there is one; otherwise a TRL PRMTrainer checkpoint has two
    labels, and a one-label head is read as +1/-1 regression."""
    file = path / METADATA_FILE
    if file.is_file():
        return PrmMetadata.model_validate_json(file.read_text())
    return PrmMetadata(label_scheme="trl_two_class" if num_labels == 2 else "pm1_mse")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory and doubles matmul speed on GPUs; CPUs are faster and exact in fp32.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)  # type: ignore[no-any-return]


def load_prm(path: Path, device: str = "auto", dtype: str = "auto") -> LoadedPrm:
    """Load a PRM exactly as a user's checkpoint is loaded: `from_pretrained` of a local dir."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
    hf_logging.disable_progress_bar()  # a progress bar would break the JSON log stream
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, dtype=dt).to(dev)
    model.eval()
    metadata = read_metadata(path, model.config.num_labels)
    if not tokenizer.is_fast:
        raise ValueError(f"{path}: line geometry needs a fast tokenizer (tokenizer.json)")
    log.info(
        "model loaded",
        extra={
            "model": str(path),
            "device": str(dev),
            "dtype": str(dt),
            "label_scheme": metadata.label_scheme,
        },
    )
    return LoadedPrm(path.name, tokenizer, model, dev, dt, metadata)


def encode(prm: LoadedPrm, item: ScoreItem, max_tokens: int) -> EncodedLines:
    prefix = prm.metadata.prompt_template.replace("{prompt}", item.prompt)
    limit = min(max_tokens, prm.metadata.max_tokens)
    if prm.metadata.label_scheme == "trl_two_class":
        return encode_steps(prm.tokenizer, prefix, item.code, limit)
    return encode_lines(prm.tokenizer, prefix, item.code, limit)


def forward(prm: LoadedPrm, batch: list[EncodedLines]) -> list[list[float | None]]:
    """Scores of every line of every item, in one padded forward pass."""
    width = max(len(e.input_ids) for e in batch)
    pad = prm.tokenizer.pad_token_id
    pad = pad if pad is not None else 0
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, encoded in enumerate(batch):
        ids[row, : len(encoded.input_ids)] = torch.tensor(encoded.input_ids)
        mask[row, : len(encoded.input_ids)] = 1
    # no_grad, not inference_mode: the trainer scores held-out programs with a model that is
    # still training, and FSDP keeps buffers made in the first forward pass; made under
    # inference_mode they could never be written again.
    with torch.no_grad():
        logits = prm.model(
            input_ids=ids.to(prm.device), attention_mask=mask.to(prm.device)
        ).logits.float()
        values = _values(logits, prm.metadata.label_scheme).cpu()
    return [
        [None if t is None else float(values[row, t]) for t in encoded.line_tokens]
        for row, encoded in enumerate(batch)
    ]


def _values(logits: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "trl_two_class":
        return logits.softmax(-1)[..., 1]
    if scheme == "binary_bce":
        return logits[..., 0].sigmoid()
    return logits[..., 0]
