"""Programs as HTML coloured by PRM score: lines numbered as the scores number them, on a
colour-blind-safe scale that keeps text readable."""

from __future__ import annotations

from codeprm.api.prm import LineScore, PrmMetadata
from codeprm.lines import split_lines
from codeprm.render import TEXT, program_html, score_colour, score_range


def test_each_scored_code_line_is_coloured_and_escaped() -> None:
    code = "x = '<b>'\x0c  # form feed inside a line\n# note\nreturn x\n"
    scores = [
        LineScore(line=ln.index, start=ln.start, end=ln.end, score=s, kind=ln.kind)
        for ln, s in zip(split_lines(code), [0.9, None, -0.8], strict=True)
    ]
    page = program_html(code, scores)
    assert page.count('class="prm-line') == 3  # "\x0c" does not start a line
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert f"background:{score_colour(0.9)}" in page and "+0.90" in page
    assert f"background:{score_colour(-0.8)}" in page and "-0.80" in page
    assert 'prm-line neutral"><span class="n">2<' in page  # the comment: no colour


def rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def test_colours_run_from_vermillion_through_white_to_blue() -> None:
    # Half-way from white to Okabe-Ito vermillion (213, 94, 0) and blue (0, 114, 178),
    # rounding halves up: 255 - 255 / 2 = 127.5 -> 128.
    assert score_colour(-1.0) == "#eaaf80"
    assert score_colour(0.0) == "#ffffff"
    assert score_colour(1.0) == "#80b9d9"
    assert score_colour(-5.0) == score_colour(-1.0) and score_colour(5.0) == score_colour(1.0)
    assert score_colour(0.5, low=0.0, high=1.0) == "#ffffff"
    assert score_colour(1.0, low=0.0, high=1.0) == score_colour(1.0)


def test_lower_scores_are_more_vermillion_and_higher_ones_more_blue() -> None:
    scores = [i / 10 for i in range(-10, 11)]
    warmth = [r - b for r, _, b in map(rgb, map(score_colour, scores))]
    assert warmth == sorted(warmth, reverse=True) and warmth[0] > 0 > warmth[-1]


def luminance(colour: str) -> float:
    def linear(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_text_on_every_colour_meets_wcag_aaa_contrast() -> None:
    text = luminance(TEXT)
    for score in [i / 100 for i in range(-100, 101)]:
        background = luminance(score_colour(score))
        assert (background + 0.05) / (text + 0.05) >= 7.0, score


def test_the_scale_follows_the_checkpoints_label_scheme() -> None:
    assert score_range(PrmMetadata(label_scheme="pm1_mse")) == (-1.0, 1.0)
    assert score_range(PrmMetadata(label_scheme="binary_bce")) == (0.0, 1.0)
    assert score_range(PrmMetadata(label_scheme="trl_two_class")) == (0.0, 1.0)
