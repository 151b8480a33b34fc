"""A codeprm PRM as veRL's critic: the checkpoint veRL's `load_valuehead_model` can start from.

veRL 0.9 builds its critic with `AutoModelForTokenClassification.from_pretrained(critic.model
.path, config=<num_labels forced to 1>)`. A one-label codeprm PRM loads with its head intact,
so the critic starts from the PRM's values; a two-label PRM (TRL's PRMTrainer layout) does not
fit a one-label head, and veRL then either fails or, with TRL installed, falls back to a
causal LM with a *fresh* value head: the PRM is silently thrown away. This module refuses such
a checkpoint, or converts it: the one-label head becomes the difference of the two rows, the
log-odds of the positive class (sigmoid of it is TRL's score), recorded as `binary_bce`.

    python -m codeprm.integrations.verl_critic PRM_DIR [--convert-to OUT_DIR]

What veRL reads as the value: the critic's output at the token *before* each response token
(veRL shifts values by one: `values[:, t]` is the output at position t-1). The PRM's score of
line m, read at its last token e, is therefore veRL's value at response token e+1 (the first
token after the line), and the value at the first response token is read at the last prompt
token. With a `pm1_mse` PRM the value is the served score itself; with `binary_bce` (and a
converted two-label PRM) it is the logit, whose sigmoid is the served score.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from codeprm.api.prm import METADATA_FILE, PrmMetadata
from codeprm.prm_model import read_metadata


class NotACriticError(ValueError):
    """A checkpoint veRL's critic loader would not start from with its head intact."""


def check_critic(prm_dir: Path) -> PrmMetadata:
    """The PRM's metadata if veRL's critic loads it with its head intact; else raise."""
    config = AutoConfig.from_pretrained(prm_dir)
    metadata = read_metadata(prm_dir, config.num_labels)
    if config.num_labels != 1:
        raise NotACriticError(
            f"{prm_dir} has {config.num_labels} labels ({metadata.label_scheme}): veRL's critic "
            "has one, and would start from a fresh value head. Convert it first: "
            f"python -m codeprm.integrations.verl_critic {prm_dir} --convert-to OUT_DIR"
        )
    return metadata


def convert_two_label(prm_dir: Path, out_dir: Path) -> Path:
    """A one-label copy of a two-label PRM: head = positive row - negative row (log-odds)."""
    config = AutoConfig.from_pretrained(prm_dir)
    if config.num_labels != 2:
        raise NotACriticError(f"{prm_dir} has {config.num_labels} labels, not 2")
    model = AutoModelForTokenClassification.from_pretrained(prm_dir, dtype=torch.float32)
    head = _head(model)
    one = torch.nn.Linear(head.in_features, 1, bias=head.bias is not None)
    with torch.no_grad():
        one.weight.copy_(head.weight[1:2] - head.weight[0:1])
        if head.bias is not None:
            one.bias.copy_(head.bias[1:2] - head.bias[0:1])
    setattr(model, _head_name(model), one)
    model.config.num_labels = 1
    model.config.id2label = {0: "LABEL_0"}
    model.config.label2id = {"LABEL_0": 0}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(prm_dir).save_pretrained(out_dir)
    metadata = read_metadata(prm_dir, 2).model_copy(update={"label_scheme": "binary_bce"})
    (out_dir / METADATA_FILE).write_text(metadata.model_dump_json(indent=2))
    return out_dir


def _head_name(model: torch.nn.Module) -> str:
    for name in ("score", "classifier"):  # what transformers' *ForTokenClassification call it
        if isinstance(getattr(model, name, None), torch.nn.Linear):
            return name
    raise NotACriticError(f"no token-classification head found on {type(model).__name__}")


def _head(model: torch.nn.Module) -> torch.nn.Linear:
    head = getattr(model, _head_name(model))
    assert isinstance(head, torch.nn.Linear)
    return head


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prm_dir", type=Path)
    parser.add_argument("--convert-to", type=Path, help="write a one-label copy here")
    args = parser.parse_args(argv)
    try:
        if args.convert_to is not None:
            out = convert_two_label(args.prm_dir, args.convert_to)
            print(f"critic.model.path={out}")
            return
        metadata = check_critic(args.prm_dir)
    except NotACriticError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"critic.model.path={args.prm_dir}  # label scheme {metadata.label_scheme}")


if __name__ == "__main__":
    main()
