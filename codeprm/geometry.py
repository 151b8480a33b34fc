"""Line geometry: which token of a tokenized (prompt + code) text ends each line of the code.

A PRM's score for line i is read at the token holding line i's last character (its newline
excluded), for training, serving and dense rewards alike, so the three agree by construction.

Hard cases, and the rule for each:
* BPE tokens that merge a newline with the next line's indentation ("\\n    ") start after the
  line's last character, so they never end the line before them;
* "\\r\\n": the "\\r" is outside the line's text (`codeprm/lines.py`), so it is not the last
  character either;
* a token spanning the line's last character and more (":\\n", multi-byte splits) ends it;
* empty lines have no character: no token (their score is None); blank lines made of spaces
  have one like any other line, unless the tokenizer drops whitespace (WordPiece) and no token
  overlaps the line: None again, never a token of an earlier line;
* the first line may share a token with the end of the prompt: that token ends it;
* truncation: a line whose last character is past the last token gets None.

PRMs trained by TRL's PRMTrainer saw a different layout: BOS, the prompt, then each step (line)
tokenized on its own and followed by the step separator, the label on the separator's last
token. `encode_steps` reproduces that layout exactly, so such a PRM is served as it was trained.

Only `(start, end)` character offsets are needed (a fast tokenizer's `offset_mapping`); special
tokens, whose offsets are (0, 0), are ignored.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from codeprm.lines import Line, split_lines


def line_end_tokens(
    lines: Sequence[Line],
    offsets: Sequence[tuple[int, int]],
    code_start: int,
    *,
    truncated: bool = False,
) -> list[int | None]:
    """For each line of the code, the index of its last token, or None.

    `offsets[t]` is token t's character span in the tokenized text, the code begins at
    character `code_start` of that text (the prompt's length), and `truncated` says whether
    the tokens stop before the text does.
    """
    real = [t for t, (start, end) in enumerate(offsets) if end > start]
    starts = [offsets[t][0] for t in real]
    covered = offsets[real[-1]][1] if real and truncated else None
    ends: list[int | None] = []
    for line in lines:
        last_char = code_start + line.end - 1
        i = bisect.bisect_right(starts, last_char) - 1
        if (
            line.end == line.start
            or i < 0
            or offsets[real[i]][1] <= code_start + line.start  # no token of its own
            or (covered is not None and last_char >= covered)
        ):
            ends.append(None)
        else:
            # The token starting at or before the last character: it covers it, or the
            # tokenizer dropped that character (normalised whitespace) and it is the line's
            # last token anyway.
            ends.append(real[i])
    return ends


@dataclass(frozen=True)
class EncodedLines:
    input_ids: list[int]
    lines: list[Line]
    line_tokens: list[int | None]
    """Per line of the code: the index in input_ids of its last token (None: no token)."""
    truncated: bool
    first_code_token: int
    """The index in input_ids of the first token holding code (a token that straddles the
    prompt's end counts as code); len(input_ids) when no code token is left."""


def encode_lines(
    tokenizer: Any,
    prompt: str,
    code: str,
    max_tokens: int | None = None,
) -> EncodedLines:
    """Tokenize `prompt + code` with a fast (offset-reporting) Hugging Face tokenizer and
    locate every code line's last token. Truncation keeps the start: lines past `max_tokens`
    get None."""
    text = prompt + code
    encoding = tokenizer(
        text,
        return_offsets_mapping=True,
        truncation=max_tokens is not None,
        max_length=max_tokens,
    )
    ids: list[int] = list(encoding["input_ids"])
    offsets = [tuple(pair) for pair in encoding["offset_mapping"]]
    covered = max((end for _, end in offsets), default=0)
    truncated = max_tokens is not None and len(ids) >= max_tokens and covered < len(text)
    lines = split_lines(code)
    tokens = line_end_tokens(lines, offsets, len(prompt), truncated=truncated)
    first = next((t for t, (_, end) in enumerate(offsets) if end > len(prompt)), len(ids))
    return EncodedLines(ids, lines, tokens, truncated, first)


def encode_steps(
    tokenizer: Any, prompt: str, code: str, max_tokens: int | None = None, separator: str = "\n"
) -> EncodedLines:
    """TRL PRMTrainer's layout (`tokenize_row`): BOS when the tokenizer has one, the prompt,
    then every line tokenized alone plus the separator; a line's token is its separator's
    last one. Truncation keeps the start: lines whose separator is cut off get None."""
    ids: list[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    ids += tokenizer(prompt, add_special_tokens=False)["input_ids"]
    first = len(ids)
    separator_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]
    lines = split_lines(code)
    tokens: list[int | None] = []
    for line in lines:
        ids += tokenizer(line.text, add_special_tokens=False)["input_ids"] + separator_ids
        tokens.append(len(ids) - 1)
    truncated = max_tokens is not None and len(ids) > max_tokens
    if truncated:
        ids = ids[:max_tokens]
        tokens = [t if t is not None and t < len(ids) else None for t in tokens]
    return EncodedLines(ids, lines, tokens, truncated, min(first, len(ids)))


def decode_with_ends(tokenizer: Any, ids: list[int]) -> tuple[str, list[int]]:
    """The decoded text and, per token, the length of the text up to and including it.

    A token's text is the growth of the decoded text when it is added, decoded with a few
    tokens of context (the way streaming detokenizers do it): a byte-level token holding half
    a UTF-8 character, or a SentencePiece token whose leading space only shows after another
    token, then gets the right length. Checked against the whole decode; where a tokenizer
    breaks that, every prefix is decoded in full.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    context = 6
    ends, total = [], 0
    for k in range(1, len(ids) + 1):
        j = max(0, k - context)
        if j == 0:
            total = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        else:
            grown = tokenizer.decode(ids[j:k], skip_special_tokens=True)
            before = tokenizer.decode(ids[j : k - 1], skip_special_tokens=True)
            total += len(grown) - len(before)
        ends.append(total)
    if ends and ends[-1] != len(text):
        ends = [
            len(tokenizer.decode(ids[:k], skip_special_tokens=True)) for k in range(1, len(ids) + 1)
        ]
    return text, ends


def token_spans(ends: Sequence[int]) -> list[tuple[int, int]]:
    """Per token, its (start, end) character span, from `decode_with_ends`'s ends."""
    return list(zip([0, *ends], ends, strict=False))  # the last end starts nothing
