"""TRL 1.13 (the last release with `PRMTrainer`, in `trl.experimental.prm`), for real:
PRMTrainer trains on the labeler's export, and the PRM it saves serves from our PRM server
exactly as TRL reads it. `codeprm train prm` is the maintained way to train a PRM; this keeps
checkpoints from TRL's trainer usable."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest

pytest.importorskip(
    "trl", minversion="1.13", reason="TRL 1.13 runs in its own venv: make test-frameworks"
)
pytest.importorskip("trl.experimental.prm", reason="PRMTrainer left TRL in 1.14")

import torch  # noqa: E402

from codeprm.api.labeler import MutationOptions  # noqa: E402
from codeprm.api.prm import ScoreItem  # noqa: E402
from codeprm.client import AsyncExecutorClient, PrmClient  # noqa: E402
from codeprm.datasets import humaneval  # noqa: E402
from codeprm.services.labeler.mutation import label_by_mutation  # noqa: E402
from codeprm.tiny import build_tokenizer, tiny_config  # noqa: E402
from tests.contained import ContainedExecutor, require_isolation  # noqa: E402
from tests.frameworks.doc_examples import example, run, swap  # noqa: E402
from tests.servers import start_prm_server  # noqa: E402

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

pytestmark = pytest.mark.slow


async def labeler_export(executor_url: str, path: Path) -> Path:
    """Rows exactly as `GET /v1/label/runs/{id}/export` writes them, from real labeling."""
    options = MutationOptions(variants_per_line=1)
    rows = []
    async with AsyncExecutorClient(executor_url) as executor:
        for problem in humaneval()[:4]:
            labeled = await label_by_mutation(problem, executor, options)
            rows += [json.dumps(sample.model_dump()) for sample in labeled.samples]
    path.write_text("\n".join(rows) + "\n")
    return path


def two_label_base(path: Path) -> Path:
    """A tiny two-label token classifier saved as a checkpoint, TRL's PRM layout."""
    from transformers import AutoModelForTokenClassification

    built = build_tokenizer()
    torch.manual_seed(0)
    AutoModelForTokenClassification.from_config(tiny_config(built, num_labels=2)).save_pretrained(
        path
    )
    built.save_pretrained(path)
    return path


async def test_prm_trainer_on_our_export_then_served_by_us(
    contained_executor: ContainedExecutor, tmp_path: Path
) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from trl.experimental.prm import PRMConfig, PRMTrainer

    require_isolation(contained_executor)
    data = await labeler_export(contained_executor.url, tmp_path / "export.jsonl")
    dataset = load_dataset("json", data_files=str(data), split="train")
    assert {"prompt", "completions", "labels"} <= set(dataset.column_names)
    assert any(not all(row["labels"]) for row in dataset)  # mutants give negative steps

    # A base checkpoint on disk, loaded back the way a user's would be.
    base = two_label_base(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForTokenClassification.from_pretrained(base)
    args = PRMConfig(
        output_dir=str(tmp_path / "trl-prm"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_length=512,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
    )
    trainer = PRMTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    assert [row for row in trainer.state.log_history if "loss" in row]
    out = tmp_path / "trl-prm" / "final"
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)

    # What TRL's own model says at its own label positions...
    row = dataset[0]
    features = PRMTrainer.tokenize_row(
        row,
        tokenizer,
        args.step_separator,
        max_length=None,
        max_completion_length=None,
        train_on_last_step_only=False,
        is_eval=True,
    )
    # float32, as the server reads it on CPU (TRL may save bf16 weights)
    trained = AutoModelForTokenClassification.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = trained(input_ids=torch.tensor([features["input_ids"]])).logits[0]
    positions = [t for t, label in enumerate(features["labels"]) if label != -100]
    expected = logits.softmax(-1)[positions, 1].tolist()

    # ...is what our PRM server serves for the same program, line by line.
    proc, url = start_prm_server(out)
    try:
        code = "\n".join(row["completions"])
        with PrmClient(url) as prm:
            result = prm.score([ScoreItem(prompt=row["prompt"], code=code)]).results[0]
    finally:
        proc.terminate()
        proc.wait(30)
    # TRL labels each step at its end; a step ends on its code line (neutral lines before it
    # join it), so the served scores to compare are those of the lines that end a step.
    ends = list(itertools.accumulate(step.count("\n") + 1 for step in row["completions"]))
    served = [result.line_scores[end - 1].score for end in ends]
    assert len(served) == len(expected)
    assert served == pytest.approx(expected, abs=1e-4)


async def test_the_prm_trainer_example_in_the_docs_runs_on_cpu(
    contained_executor: ContainedExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/integrations.md's PRMTrainer example as written, on this CPU, on a real export in
    the working directory, with a local base model for the hub one and two steps."""

    require_isolation(contained_executor)
    await labeler_export(contained_executor.url, tmp_path / "labels.jsonl")
    base = two_label_base(tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    code = example("PRMTrainer(")
    code = swap(code, '"Qwen/Qwen2.5-Coder-0.5B"', repr(str(base)))
    code = swap(code, 'output_dir="trl-prm",', 'output_dir="trl-prm", max_steps=2,')
    namespace = run(code)
    assert isinstance(namespace["model"], torch.nn.Module)
    assert (tmp_path / "trl-prm" / "checkpoint-2").is_dir()
