"""Line geometry on four tokenizer families built here (no downloads): GPT-2-style byte-level
BPE (newline+indent merges), Qwen2-style (punctuation merged with the newline after it),
SentencePiece-style Metaspace BPE with a BOS token, and BERT-style WordPiece that drops
whitespace from its offsets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from codeprm.geometry import encode_lines, encode_steps, line_end_tokens
from codeprm.lines import split_lines
from codeprm.tiny import build_tokenizer, code_corpus

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

PROGRAMS = [
    "def f(x):\n    if x:\n        return 1\n    return 2\n",
    "def f(x):\r\n    y = x + 1\r\n    return y\r\n",  # CRLF
    "x = 1\n\n\n    \ny = 2",  # empty lines, a blank line of spaces, no final newline
    "def g():\n    # a comment\n    s = '''a\n\n# not a comment\n'''\n    return s\n",
    "a = [" + ", ".join(str(i) for i in range(300)) + "]\nb = a\n",  # a very long line
    "def h():\n\treturn 'é' * 2  # tab, accent\n",
    "   \n",
    "",
]


def _fast(tok: Tokenizer, **special: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _byte_level_bpe(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Train `tok` (a byte-level pre-tokenizer already set) on the code corpus."""
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(code_corpus(), trainer)
    return _fast(tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def byte_level() -> PreTrainedTokenizerFast:
    """GPT-2's byte-level pre-tokenizer: a newline and the indentation after it merge."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return _byte_level_bpe(tok)


def tiny_models_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer(vocab_size=1024)


def qwen_style() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return _byte_level_bpe(tok)


def sentencepiece_style() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    tok.train_from_iterator(code_corpus(), trainer)
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return _fast(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def wordpiece() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=1024, special_tokens=["[UNK]", "[CLS]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator(code_corpus(), trainer)
    return _fast(tok, unk_token="[UNK]")


FAMILIES: dict[str, Callable[[], PreTrainedTokenizerFast]] = {
    "byte_level": byte_level,
    "qwen_style": qwen_style,
    "tiny_models": tiny_models_tokenizer,
    "sentencepiece": sentencepiece_style,
    "wordpiece": wordpiece,
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def tokenizer(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return FAMILIES[request.param]()


@pytest.mark.parametrize("prompt", ["", "# Write f.\n", "def f(x):  # prompt without newline"])
@pytest.mark.parametrize("code", PROGRAMS)
def test_each_line_ends_at_the_token_holding_its_last_character(
    tokenizer: PreTrainedTokenizerFast, prompt: str, code: str
) -> None:
    encoded = encode_lines(tokenizer, prompt, code)
    offsets = tokenizer(prompt + code, return_offsets_mapping=True)["offset_mapping"]
    assert len(encoded.line_tokens) == len(split_lines(code))
    # The first code token: the first whose span reaches past the prompt; none before it does.
    first = encoded.first_code_token
    assert all(e <= len(prompt) for _, e in offsets[:first])
    assert first == len(offsets) or offsets[first][1] > len(prompt)
    for line, token in zip(encoded.lines, encoded.line_tokens, strict=True):
        if line.end == line.start:
            assert token is None  # an empty line has no character to end it
            continue
        first, last = len(prompt) + line.start, len(prompt) + line.end - 1
        if token is None:  # only when no token overlaps the line (whitespace dropped)
            assert not any(s <= last and e > first for s, e in offsets if e > s), line
            continue
        assert offsets[token][1] > first, "the token ends before the line starts"
        start, end = offsets[token]
        assert start <= last, "the token starts after the line's last character"
        later = [s for s, e in offsets[token + 1 :] if e > s]
        assert all(s > last for s in later), "a later token starts inside the line"
        if any(s <= last < e for s, e in offsets):
            assert end > last, "a token covers the last character, but not this one"


def test_newline_merged_with_indentation_belongs_to_the_next_line() -> None:
    tokenizer = byte_level()
    code = "if x:\n    y = 1\n"
    encoded = encode_lines(tokenizer, "", code)
    offsets = tokenizer(code, return_offsets_mapping=True)["offset_mapping"]
    pieces = [code[s:e] for s, e in offsets]
    assert any(p.startswith("\n ") for p in pieces), pieces  # the merge really happens
    assert [code[slice(*offsets[t])] for t in encoded.line_tokens if t is not None] == [":", " 1"]


def test_punctuation_merged_with_its_newline_ends_the_line() -> None:
    tokenizer = qwen_style()
    code = "def f():\n    return g()\n"
    encoded = encode_lines(tokenizer, "", code)
    offsets = tokenizer(code, return_offsets_mapping=True)["offset_mapping"]
    ends = [code[slice(*offsets[t])] for t in encoded.line_tokens if t is not None]
    assert ends[0].endswith(":\n") and ends[1].endswith("()\n"), ends


def test_crlf_lines_end_before_the_carriage_return() -> None:
    tokenizer = byte_level()
    code = "a = 1\r\nb = 22\r\n"
    encoded = encode_lines(tokenizer, "", code)
    offsets = tokenizer(code, return_offsets_mapping=True)["offset_mapping"]
    for line, token in zip(encoded.lines, encoded.line_tokens, strict=True):
        assert token is not None
        start, end = offsets[token]
        assert start <= line.end - 1 < end and "\r" not in code[start : line.end]


def test_truncation_leaves_later_lines_without_a_token() -> None:
    tokenizer = byte_level()
    code = "".join(f"x{i} = {i} * {i}\n" for i in range(50))
    full = encode_lines(tokenizer, "", code)
    cut = encode_lines(tokenizer, "", code, max_tokens=40)
    assert not full.truncated and all(t is not None for t in full.line_tokens)
    assert cut.truncated and len(cut.input_ids) == 40
    known = [t for t in cut.line_tokens if t is not None]
    assert 3 < len(known) < 50 and cut.line_tokens[-1] is None
    assert known == full.line_tokens[: len(known)]  # the kept lines end where they did


def test_special_tokens_are_ignored() -> None:
    lines = split_lines("ab\ncd")
    # token 0 is a BOS with (0, 0) offsets; prompt "P" is one character
    offsets = [(0, 0), (0, 1), (1, 3), (3, 4), (4, 6)]
    assert line_end_tokens(lines, offsets, code_start=1) == [2, 4]


def test_encode_steps_is_trls_layout() -> None:
    tokenizer = byte_level()
    code = "a = 1\n\n    b = 2"
    encoded = encode_steps(tokenizer, "P:", code)
    sep = tokenizer("\n", add_special_tokens=False)["input_ids"]
    expected = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    expected += tokenizer("P:", add_special_tokens=False)["input_ids"]
    code_start = len(expected)
    positions = []
    for step in ("a = 1", "", "    b = 2"):  # what PRMTrainer.tokenize_row builds
        expected += tokenizer(step, add_special_tokens=False)["input_ids"] + sep
        positions.append(len(expected) - 1)
    assert encoded.input_ids == expected and encoded.line_tokens == positions
    assert encoded.first_code_token == code_start
    cut = encode_steps(tokenizer, "P:", code, max_tokens=positions[1] + 1)
    assert cut.truncated and cut.line_tokens == positions[:2] + [None]
