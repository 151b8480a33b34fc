"""veRL 0.9's critic loader (`verl.utils.model.load_valuehead_model`) and value shift
(`verl.workers.utils.padding.no_padding_2_padding`) on codeprm PRMs: a one-label PRM starts the
critic with its head intact, so veRL's value at the token after each line end is the score
our PRM server serves for that line; a two-label PRM is refused, or converted so that it is.

veRL asks for `attn_implementation="flash_attention_2"`, a CUDA kernel: the tests hand its
loader the same weights with the eager kernel a CPU has, and nothing else changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "verl", minversion="0.9", reason="veRL runs in its own venv: make test-frameworks"
)

import torch  # noqa: E402
import transformers  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from transformers import AutoConfig, AutoModelForTokenClassification  # noqa: E402
from verl.utils.model import load_valuehead_model  # noqa: E402
from verl.workers.utils.padding import no_padding_2_padding  # noqa: E402

from codeprm.api.prm import ScoreItem  # noqa: E402
from codeprm.client import PrmClient  # noqa: E402
from codeprm.geometry import encode_lines  # noqa: E402
from codeprm.integrations.verl_critic import (  # noqa: E402
    NotACriticError,
    check_critic,
    convert_two_label,
    main,
)
from codeprm.tiny import build_tokenizer, tiny_config  # noqa: E402
from tests.servers import start_prm_server  # noqa: E402

pytestmark = pytest.mark.slow

PROMPT = "# Add the two numbers on stdin.\n"
CODE = "a, b = map(int, input().split())\n# add them\nprint(a + b)\n"


@pytest.fixture
def cpu_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """veRL's loader with the eager attention kernel instead of flash-attention 2."""
    original = transformers.AutoModelForTokenClassification.from_pretrained

    def from_pretrained(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("attn_implementation") == "flash_attention_2":
            kwargs["attn_implementation"] = "eager"
        return original(*args, **kwargs)

    monkeypatch.setattr(
        transformers.AutoModelForTokenClassification, "from_pretrained", from_pretrained
    )


def verl_critic(path: Path) -> Any:
    """The critic exactly as veRL's FSDP engine builds it (num_labels forced to 1)."""
    config = AutoConfig.from_pretrained(path)
    config.num_labels = 1
    config.classifier_dropout = 0.0
    return load_valuehead_model(path, torch.float32, config, False).eval()


def verl_values(critic: Any, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """veRL's values per response token: the critic's output, shifted the way veRL does it."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        out = critic(input_ids=ids).logits.squeeze(-1)[0]  # (seq,)
    data = TensorDict(
        {
            "prompts": torch.tensor([prompt_ids]),
            "responses": torch.tensor([response_ids]),
            "attention_mask": torch.ones_like(ids),
        },
        batch_size=1,
    )
    return no_padding_2_padding(out, data)[0]


def split_at_first_line(prm_dir: Path) -> tuple[list[int], list[int], list[int]]:
    """The PRM server's own encoding of (PROMPT, CODE), cut into a veRL prompt (up to the
    first line's last token) and response (the rest, plus an EOS as a policy writes it), and
    each line end as a response index."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(prm_dir)
    encoded = encode_lines(tokenizer, PROMPT, CODE)
    ends = [
        t
        for t, line in zip(encoded.line_tokens, encoded.lines, strict=True)
        if t is not None and line.kind == "code"
    ]
    cut = ends[0]
    prompt, response = encoded.input_ids[:cut], encoded.input_ids[cut:] + [tokenizer.eos_token_id]
    return prompt, response, [end - cut for end in ends]


@pytest.fixture(scope="module")
def served(tiny_prm_dir: Path) -> Iterator[list[float | None]]:
    proc, url = start_prm_server(tiny_prm_dir)
    try:
        with PrmClient(url) as prm:
            result = prm.score([ScoreItem(prompt=PROMPT, code=CODE)]).results[0]
        yield [s.score for s in result.line_scores if s.kind == "code"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_one_label_prm_is_the_critic_with_one_token_shift(
    tiny_prm_dir: Path, served: list[float | None], cpu_attention: None
) -> None:
    assert check_critic(tiny_prm_dir).label_scheme == "pm1_mse"
    critic = verl_critic(tiny_prm_dir)
    prm = AutoModelForTokenClassification.from_pretrained(tiny_prm_dir, dtype=torch.float32)
    assert torch.equal(critic.score.weight, prm.score.weight)  # the head, intact
    prompt, response, ends = split_at_first_line(tiny_prm_dir)
    values = verl_values(critic, prompt, response)
    scores = [s for s in served if s is not None]
    assert len(scores) == len(ends) == 2  # two code lines (the comment line is neutral)
    # veRL's value at the token *after* each line end is the served score of that line.
    assert [float(values[e + 1]) for e in ends] == pytest.approx(scores, abs=1e-5)
    assert [float(values[e]) for e in ends] != pytest.approx(scores, abs=1e-3)


@pytest.fixture
def two_label_prm(tmp_path: Path) -> Path:
    """A two-label token classifier, as TRL's PRMTrainer saves one."""
    tokenizer = build_tokenizer()
    torch.manual_seed(1)
    model = AutoModelForTokenClassification.from_config(tiny_config(tokenizer, num_labels=2))
    path = tmp_path / "trl-prm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_two_label_prm_never_gets_a_fresh_head_silently(
    two_label_prm: Path, tmp_path: Path, cpu_attention: None
) -> None:
    original = AutoModelForTokenClassification.from_pretrained(two_label_prm, dtype=torch.float32)
    weight = original.score.weight.detach()
    # What veRL's loader does with it as is: fail, or a head that is not the checkpoint's.
    try:
        loaded = verl_critic(two_label_prm)
    except (RuntimeError, ValueError, OSError):
        loaded = None
    if loaded is not None:
        head = getattr(loaded, "score", None) or getattr(loaded, "v_head", None)
        assert head is not None
        head_weight = head.weight if hasattr(head, "weight") else head.summary.weight
        assert not torch.allclose(head_weight, weight[1:2] - weight[0:1])

    # codeprm refuses it...
    with pytest.raises(NotACriticError, match="2 labels"):
        check_critic(two_label_prm)
    with pytest.raises(SystemExit, match="--convert-to"):
        main([str(two_label_prm)])

    # ...or converts it: veRL's critic then holds the positive class's log-odds.
    out = convert_two_label(two_label_prm, tmp_path / "critic")
    assert check_critic(out).label_scheme == "binary_bce"
    main([str(out)])  # accepted as is now
    critic = verl_critic(out)
    prompt, response, ends = split_at_first_line(out)
    values = verl_values(critic, prompt, response)
    with torch.no_grad():
        probs = original(input_ids=torch.tensor([prompt + response])).logits[0].softmax(-1)[:, 1]
    for e in ends:
        assert float(values[e + 1].sigmoid()) == pytest.approx(float(probs[len(prompt) + e]))
