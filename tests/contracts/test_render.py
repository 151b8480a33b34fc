"""Programs as HTML coloured by PRM score: lines numbered as the scores number them."""

from __future__ import annotations

from contracts.lines import split_lines
from contracts.prm import LineScore
from contracts.render import program_html, score_colour


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


def test_colours_run_from_red_to_green() -> None:
    assert score_colour(-1.0).startswith("rgba(220, 50, 47")
    assert score_colour(1.0).startswith("rgba(40, 160, 70")
    assert score_colour(0.0).endswith("0.00)")
