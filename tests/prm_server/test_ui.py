"""The viewer (`/ui`): the page itself over ASGI, then in headless Chromium against a real
`codeprm prm serve` with a tiny checkpoint, checking what a person would look at: each line's
colour is its score's colour, neutral lines stay neutral, a dataset row's labels sit beside
its lines. Screenshots go to `$CODEPRM_TEST_ARTIFACTS` (default `test-artifacts/`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from codeprm.api.labels import LabeledSample
from codeprm.lines import split_lines
from codeprm.render import score_colour
from codeprm.services.prm_server.app import create_app
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.services.trainer.prm_data import parse_row
from tests.servers import start_prm_server

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

KEY = "viewer-s3cret"
ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# A docstring line that looks like a comment, a comment, a blank line, and a character
# outside the BMP (the server's offsets count code points, JavaScript counts UTF-16 units).
PROGRAM = '''def mean(xs):
    """Average.
    # not a comment: inside the docstring
    """
    # guard against empty input
    if not xs:
        return 0.0

    label = "μ(𝑥)"
    return sum(xs) / len(xs)
'''


# --- The page, over ASGI (fast) -------------------------------------------------------


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(PrmSettings(model=None, api_key=KEY))) as client:
        yield client


def test_the_page_is_self_contained(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<textarea" in page and 'type="file"' in page
    # Nothing is fetched from elsewhere: no absolute or protocol-relative URL at all, no
    # external script, stylesheet or CSS import; the CSP makes the browser enforce it too.
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*//""", page)
    assert "<script src" not in page and 'rel="stylesheet"' not in page
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(?!data:)", page)
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp


def test_the_page_is_open_but_scoring_still_needs_the_key(client: TestClient) -> None:
    assert client.get("/ui").status_code == 200
    root = client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "ui"
    assert client.get("/ui/config").json() == {
        "auth_required": True,
        "label_scheme": None,  # no model loaded: the page falls back to -1 .. 1
        "low": -1.0,
        "high": 1.0,
        "aggregate": "min",
    }
    assert client.post("/v1/score", json={"items": [{"code": "x = 1"}]}).status_code == 401


# --- The page in headless Chromium (slow) ---------------------------------------------


def _unavailable(reason: str) -> NoReturn:
    # CI installs the browser, so there a missing one is a broken setup, not a reason to skip.
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the viewer test must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    try:
        from selenium import webdriver
    except ImportError:
        _unavailable("selenium is not installed (pip install selenium)")
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        _unavailable("no chromium/chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    # Both paths given, so Selenium Manager never looks for (or downloads) a browser.
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # Chromium's sandbox refuses to start as root, as in CI containers
        "--disable-dev-shm-usage",
        "--window-size=1440,1100",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(chromedriver))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(tiny_prm_dir: Path) -> Iterator[str]:
    proc, url = start_prm_server(tiny_prm_dir, CODEPRM_API_KEY=KEY)
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("CODEPRM_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "prm_ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wait(driver: WebDriver, condition: Callable[[WebDriver], T], timeout_s: float = 60) -> T:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(condition)


def paste(driver: WebDriver, element_id: str, text: str) -> None:
    # A paste, not typing: ChromeDriver cannot type characters outside the BMP.
    driver.execute_script(
        "const el = document.getElementById(arguments[0]); el.value = arguments[1];"
        "el.dispatchEvent(new Event('input'));",
        element_id,
        text,
    )


def shown_lines(driver: WebDriver) -> list[dict[str, str]]:
    """Each rendered line: its cells' text, class and computed background colour."""
    result: list[dict[str, str]] = driver.execute_script(
        """return [...document.querySelectorAll('#result tbody tr')].map((tr) => ({
             line: tr.dataset.line, kind: tr.dataset.kind, cls: tr.className,
             score: tr.querySelector('.s').textContent,
             label: tr.querySelector('.label').textContent,
             labelShown: getComputedStyle(tr.querySelector('.label')).display !== 'none',
             code: tr.querySelector('.code').textContent,
             background: getComputedStyle(tr).backgroundColor}))"""
    )
    return result


def rgba(css: str) -> tuple[int, int, int, float]:
    r, g, b, *alpha = re.findall(r"[\d.]+", css)
    return int(r), int(g), int(b), float(alpha[0]) if alpha else 1.0


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def expected_scores(url: str, prompt: str, code: str) -> dict[str, object]:
    response = httpx.post(
        f"{url}/v1/score",
        json={"items": [{"prompt": prompt, "code": code}]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()["results"][0]
    return result


def check_colours(shown: list[dict[str, str]], result: dict[str, object], code: str) -> None:
    """Every code line wears its score's colour and prints the score; others are neutral."""
    line_scores = result["line_scores"]
    assert isinstance(line_scores, list)
    lines = split_lines(code)
    assert [row["code"] for row in shown] == [line.text for line in lines]
    for row, line in zip(shown, line_scores, strict=True):
        assert row["kind"] == line["kind"]
        r, g, b, alpha = rgba(row["background"])
        if line["kind"] == "code" and line["score"] is not None:
            expected = hex_rgb(score_colour(line["score"]))  # the tiny PRM is pm1_mse: -1 .. 1
            assert (r, g, b, alpha) == (*expected, 1.0), row
            assert float(row["score"]) == pytest.approx(line["score"], abs=0.0051)
        else:
            assert "neutral" in row["cls"] and alpha == 0.0, row
            assert row["score"] == "—"
    # A lower score is never less vermillion (red minus blue) than a higher one.
    coded = [
        (float(row["score"]), rgba(row["background"])) for row in shown if row["kind"] == "code"
    ]
    coded.sort()
    warmth = [c[0] - c[2] for _, c in coded]
    assert warmth == sorted(warmth, reverse=True)


def screenshot(driver: WebDriver, path: Path) -> None:
    driver.execute_script("window.scrollTo(0, 0); document.activeElement.blur();")
    driver.save_screenshot(str(path))


def no_console_errors(driver: WebDriver) -> None:
    # A CSP violation (an external request) or a script error would be logged as SEVERE.
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors


@pytest.mark.slow
def test_pasted_program_lines_are_coloured_by_score(
    browser: WebDriver, server: str, artifacts: Path
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server}/ui")
    key = wait(browser, lambda d: d.find_element(By.ID, "key-field").is_displayed() or None)
    assert key is True  # the server has a key, so the page asks for one
    prompt = "Write mean(xs): the average of a list, 0.0 when it is empty.\n"
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    paste(browser, "code", PROGRAM)

    browser.find_element(By.ID, "score").click()  # no key yet: a clear error, no crash
    status = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#status.error"))[0].text
    assert status.startswith("401") and "bearer" in status
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("status of 401" in message for message in logged), logged

    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "score").click()
    wait(browser, lambda d: len(shown_lines(d)) == len(split_lines(PROGRAM)) or None)
    screenshot(browser, artifacts / "viewer-scores.png")

    result = expected_scores(server, prompt, PROGRAM)
    shown = shown_lines(browser)
    check_colours(shown, result, PROGRAM)
    kinds = [row["kind"] for row in shown]
    assert kinds[2] == "code" and kinds[4] == "comment" and kinds[7] == "blank"
    assert not any(row["labelShown"] for row in shown)  # no dataset: no label column
    summary = browser.find_element(By.ID, "summary").text
    aggregate = result["aggregate"]
    assert isinstance(aggregate, float) and f"{aggregate:+.3f}" in summary
    assert "tiny-prm" in summary
    no_console_errors(browser)


def dataset_rows() -> list[dict[str, object]]:
    """A program, its mutant that fails from line 3 on, Monte Carlo pass fractions, a TRL row."""
    good = ["def inc(x):", "    # add one", "    y = x + 1", "    return y"]
    rows: list[dict[str, object]] = [
        LabeledSample(
            prompt="Write inc(x).\n",
            completions=good,
            labels=[True, False, True, True],
            line_labels=[1.0, 0.0, 1.0, 1.0],
            problem_id="inc",
            strategy="mutation",
            provenance={"source": "solution"},
        ).model_dump(),
        LabeledSample(
            prompt="Write inc(x).\n",
            completions=[*good[:2], "    y = x - 1"],
            labels=[True, False, False],
            line_labels=[1.0, 0.0, -1.0],
            problem_id="inc",
            strategy="mutation",
            provenance={"source": "ast_mutator", "line": 2},
        ).model_dump(),
        LabeledSample(
            prompt="Write inc(x).\n",
            completions=["def inc(x):", "    return x - 1"],
            labels=[True, True],
            line_labels=[1.0, 0.25],  # pass fractions of the continuations
            problem_id="inc",
            strategy="monte_carlo",
        ).model_dump(),
        {
            "prompt": "Write twice(x).\n",
            "completions": ["def twice(x):\n    y = x * 2", "    return y"],
            "labels": [True, False],
        },
    ]
    return rows


@pytest.mark.slow
def test_a_dataset_row_shows_its_labels_beside_its_scores(
    browser: WebDriver, server: str, artifacts: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    rows = dataset_rows()
    data = tmp_path / "labels.jsonl"
    data.write_text(
        "\n".join([*map(json.dumps, rows[:2]), "{not json", *map(json.dumps, rows[2:])])
    )
    browser.get(f"{server}/ui")
    wait(browser, lambda d: d.find_element(By.ID, "key-field").is_displayed() or None)
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "file").send_keys(str(data))

    def showing(row: dict[str, object]) -> Callable[[WebDriver], bool | None]:
        code = parse_row(row).code  # the program as the PRM trainer reads the row

        def ready(d: WebDriver) -> bool | None:
            texts = [r["code"] for r in shown_lines(d)]
            return texts == [line.text for line in split_lines(code)] or None

        return ready

    wait(browser, showing(rows[0]))  # the first row opens and is scored at once
    select = Select(browser.find_element(By.ID, "row"))
    assert len(select.options) == 4
    assert "4 rows; 1 skipped (line 3:" in browser.find_element(By.ID, "dataset-info").text

    select.select_by_index(1)
    wait(browser, showing(rows[1]))
    example = parse_row(rows[1])
    assert browser.find_element(By.ID, "code").get_property("value") == example.code
    assert browser.find_element(By.ID, "prompt").get_property("value") == rows[1]["prompt"]
    shown = shown_lines(browser)
    assert [row["label"] for row in shown] == ["✓ +1", "· 0", "✗ -1"]
    assert all(row["labelShown"] for row in shown)
    check_colours(shown, expected_scores(server, example.prompt, example.code), example.code)
    assert "agrees with labels" in browser.find_element(By.ID, "summary").text
    screenshot(browser, artifacts / "viewer-dataset.png")

    select.select_by_index(2)  # a pass fraction is good above 1/2
    wait(browser, showing(rows[2]))
    assert [row["label"] for row in shown_lines(browser)] == ["✓ p=1.00", "✗ p=0.25"]

    select.select_by_index(3)  # TRL: a step's label belongs to its last line
    wait(browser, showing(rows[3]))
    assert [row["label"] for row in shown_lines(browser)] == ["", "✓ +1", "✗ -1"]

    paste(browser, "code", "x = 1\n")  # an edited program no longer matches the row's labels
    browser.find_element(By.ID, "score").click()
    wait(browser, lambda d: [r["code"] for r in shown_lines(d)] == ["x = 1"] or None)
    assert not any(row["labelShown"] for row in shown_lines(browser))
    no_console_errors(browser)
