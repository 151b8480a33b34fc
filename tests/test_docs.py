"""Every command in README.md and docs/*.md stays true.

`doc_commands()` reads every ```bash block and splits it into simple commands (continuation
lines joined, quoted strings across lines kept whole, heredoc bodies skipped, `$(...)`, `;`,
`&&`, `|` and `&` separating commands). `check_of()` then says how each one is checked, and a
command no rule covers fails `test_every_doc_command_has_a_check`:

* RUN: executed by a test in this file, as written or in a quick form that test names (the
  README's "Try it" and labeling blocks, docs/prm.md's serving block), or by the test named
  in RUN_ELSEWHERE (`bash bench/gpu.sh`, at tiny scale);
* CLI: a `codeprm` command (also one that `torchrun` or `accelerate launch` starts) that is
  itself the long thing (training, the demo, `up` until Ctrl-C) or needs what a test machine
  lacks (a vLLM server, a 1.5B checkpoint, GPUs): the real CLI's own parser reads it, so every
  sub-command, option and value the docs name exists and types;
* HELP: a script or module of this repository (bench/, codeprm.integrations): its --help must
  list every option the docs pass it;
* MAKE: a `make` target, which must exist in the Makefile;
* ELSEWHERE: other tools' commands: kubectl, docker and install act on a cluster or image
  registry (tests/deploy checks the manifests and images they apply); the RL frameworks'
  launchers need their venvs (tests/frameworks runs their trainers); the test suite itself;
  shell plumbing (export, for, grep, until, sleep, kill, echo, source).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

from codeprm.cli import app
from codeprm.stack import free_port
from tests.conftest import REDIS_URL
from tests.servers import port_open

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "k8s" / "README.md"]
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
SEPARATORS = {";", "&", "&&", "|", "||"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}
PLUMBING = {
    "export", "for", "do", "done", "until", "sleep", "kill", "echo", "grep", "source",
}  # fmt: skip
CLUSTER = {"kubectl", "docker", "install", "openssl"}
DISTRIBUTED_LAUNCHERS = {"torchrun", "accelerate"}
# Shell scripts of this repository that a test runs (at tiny scale): tests/bench/test_gpu_sh.py.
RUN_ELSEWHERE = {("bash", "bench/gpu.sh")}
FRAMEWORK_LAUNCHERS = ("openrlhf.", "verl.")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Command:
    block: Block
    words: list[str]

    def __str__(self) -> str:
        return f"{self.block.where}: {shlex.join(self.words)}"


def doc_blocks() -> Iterator[Block]:
    for path in DOCS:
        text = path.read_text()
        for match in BLOCK.finditer(text):
            yield Block(path, text[: match.start()].count("\n") + 1, match.group(1))


def logical_lines(text: str) -> Iterator[str]:
    """Lines joined where a backslash continues them or a quote spans them; heredoc bodies
    dropped."""
    pending = ""
    heredoc: str | None = None
    for raw in text.splitlines():
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quoted string goes on
            pending += "\n"
            continue
        if match := re.search(r"<<-?'?(\w+)'?", pending):
            heredoc = match.group(1)
        yield pending
        pending = ""


def simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line; a `$(...)` inside a word is a command of its own,
    and the words after it go on with the outer command."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    outer: list[list[str]] = []
    words: list[str] = []
    skip_next = False
    for token in lexer:
        if skip_next:
            skip_next = False
        elif token in REDIRECTS or token == "<<":
            skip_next = True
        elif token == "(":
            outer.append(words)
            words = []
        elif token == ")":
            if words:
                yield words
            words = outer.pop() if outer else []
        elif token in SEPARATORS:
            if words:
                yield words
            words = []
        else:
            words.append(token)
    if words:
        yield words


def doc_commands() -> list[Command]:
    commands = []
    for block in doc_blocks():
        for line in logical_lines(block.text):
            for words in simple_commands(line):
                while words and re.fullmatch(r"\w+=.*", words[0]):  # VAR=value before it
                    words = words[1:]
                words = without_launcher(words)
                if words:
                    commands.append(Command(block, words))
    return commands


def without_launcher(words: list[str]) -> list[str]:
    """`torchrun ... -m codeprm train prm ...` is checked as the `codeprm ...` it launches."""
    if words and words[0] in DISTRIBUTED_LAUNCHERS and "-m" in words:
        at = words.index("-m")
        if words[at + 1 : at + 2] == ["codeprm"]:
            return ["codeprm", *words[at + 2 :]]
    return words


# -- how each command is checked --------------------------------------------------------------

RUN_BLOCKS = [
    # README "Try it": run as written, on a free port instead of 8100.
    ("README.md", "codeprm executor serve --port 8100 &"),
    # README labeling: run with --limit 2 instead of 20 and the binary_search line (which needs
    # a vLLM server) only parsed, against a `codeprm up` on free ports.
    ("README.md", "codeprm up &"),
    # docs/prm.md serving: the tiny PRM instead of /path/to/prm, a free port instead of 8101.
    ("docs/prm.md", "codeprm prm serve --model /path/to/prm --port 8101 &"),
]


def in_run_block(block: Block) -> bool:
    where = str(block.path.relative_to(REPO))
    return any(where == path and block.text.startswith(first) for path, first in RUN_BLOCKS)


def run_block(path: str, first_line: str) -> Block:
    for block in doc_blocks():
        if block.path == REPO / path and block.text.startswith(first_line):
            return block
    raise AssertionError(f"no block of {path} starts with {first_line!r}")


def check_of(command: Command) -> str:
    words = command.words
    head = words[0]
    if head == "codeprm":
        return "CLI"
    if head in ("python", "python3"):
        if words[1:2] == ["-c"]:
            return "RUN"
        target = words[2] if words[1] == "-m" else words[1]
        if target.startswith(FRAMEWORK_LAUNCHERS):
            return "ELSEWHERE"
        return "HELP"
    if head == "make":
        return "MAKE"
    if head == ".venv/bin/pytest" or head in CLUSTER or head in PLUMBING:
        return "ELSEWHERE"
    if head == "curl" and in_run_block(command.block):
        return "RUN"
    if tuple(words) in RUN_ELSEWHERE:
        return "RUN"
    return "UNCHECKED"


def test_every_doc_command_has_a_check() -> None:
    commands = doc_commands()
    assert len(commands) > 40  # the parser found the docs' commands
    unchecked = [str(c) for c in commands if check_of(c) == "UNCHECKED"]
    assert not unchecked, "give these commands a check (module docstring):\n" + "\n".join(unchecked)


def parse_cli(words: list[str]) -> None:
    """Parse a `codeprm ...` command with the CLI's own click parser; run nothing."""
    command: click.Command = typer.main.get_command(app)
    ctx = command.make_context("codeprm", words[1:])
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, [*ctx.protected_args, *ctx.args])
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub


def _placeholders(words: list[str]) -> list[str]:
    return [re.sub(r"\$(\w+)", r"\1", w) for w in words]


def test_every_codeprm_command_in_the_docs_parses() -> None:
    failures = []
    for command in doc_commands():
        if check_of(command) == "CLI":
            try:
                parse_cli(_placeholders(command.words))
            except click.ClickException as exc:
                failures.append(f"{command}\n    {exc.format_message()}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_scripts_in_the_docs_take_the_options_they_are_given() -> None:
    options: dict[tuple[str, ...], set[str]] = {}
    for command in doc_commands():
        if check_of(command) == "HELP":
            words = command.words
            target = ("-m", words[2]) if words[1] == "-m" else (str(REPO / words[1]),)
            options.setdefault(target, set()).update(w for w in words if w.startswith("--"))
    assert options
    for target, used in options.items():
        done = subprocess.run(
            [sys.executable, *target, "--help"], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"{target}\n{done.stderr}"
        missing = [option for option in sorted(used) if option not in done.stdout]
        assert not missing, f"{target}: the docs pass {missing}, its --help has no such option"


def test_make_targets_in_the_docs_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for command in doc_commands():
        if check_of(command) == "MAKE":
            for target in command.words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), str(command)


@pytest.mark.slow
def test_python_one_liners_in_the_docs_run() -> None:
    one_liners = {
        tuple(c.words[1:])
        for c in doc_commands()
        if check_of(c) == "RUN" and c.words[0].startswith("python")
    }
    assert one_liners
    for args in sorted(one_liners):
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip(), f"{args}\n{done.stderr}"


# -- the blocks run as written (or in the quick form named above) ------------------------------


def bash(script: str, env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str, str]:
    """`script` in `cwd`, in its own process group, interrupted afterwards like a terminal's
    Ctrl-C (which stops a `codeprm up` it left in the background). Output goes to files: a
    server left running would hold a pipe open."""
    out, err = cwd / "stdout.txt", cwd / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            env=env,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        finally:
            stop_group(proc.pid)
    return code, out.read_text(), err.read_text()


def stop_group(pgid: int) -> None:
    """Ctrl-C first, as a terminal's; but a non-interactive shell starts its background jobs
    with SIGINT ignored, so a `codeprm up &` lives on: then SIGTERM (which `up` handles by
    stopping its stack), and SIGKILL for whatever is left."""
    for sig, grace_s in ((signal.SIGINT, 5.0), (signal.SIGTERM, 60.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def user_env(**extra: str) -> dict[str, str]:
    """The shell a user has after `source .venv/bin/activate`."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "COLUMNS": "200", **extra}


@pytest.mark.slow
def test_readme_try_it_block(tmp_path: Path) -> None:
    port = str(free_port())
    script = run_block("README.md", "codeprm executor serve").text.replace("8100", port)
    code, out, err = bash(script, user_env(), tmp_path, timeout=180)
    assert code == 0, out + err
    assert '"passed":true' in out.replace(" ", ""), out


@pytest.mark.slow
def test_prm_md_serving_block(tiny_prm_dir: Path, tmp_path: Path) -> None:
    port = str(free_port())
    script = (
        run_block("docs/prm.md", "codeprm prm serve")
        .text.replace("/path/to/prm", str(tiny_prm_dir))
        .replace("8101", port)
    )
    code, out, err = bash(script, user_env(), tmp_path, timeout=300)
    assert code == 0, out + err
    assert '"line_scores"' in out, out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_readme_labeling_block(tiny_prm_dir: Path, redis_namespace: str, tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(3)]
    block = run_block("README.md", "codeprm up &").text
    script = "\n".join(
        line
        for line in logical_lines(block)
        if "--strategy binary_search" not in line  # needs a vLLM server: parsed above only
    )
    script = (
        script.replace(
            "codeprm up &",
            f"codeprm up --executor-port {ports[0]} --prm-port {ports[1]} "
            f"--labeler-port {ports[2]} --prm-model {tiny_prm_dir} --log-dir {tmp_path} &",
        )
        .replace("localhost:8102", f"localhost:{ports[2]}")
        .replace("--limit 20", "--limit 2")
    )
    env = user_env(
        REDIS_URL=REDIS_URL,
        CODEPRM_LABELER_QUEUE_NAME=f"{redis_namespace}:q",
        CODEPRM_LABELER_KEY_PREFIX=redis_namespace,
        CODEPRM_LABELER_URL=f"http://127.0.0.1:{ports[2]}",
    )
    code, out, err = bash(script, env, tmp_path, timeout=540)
    assert code == 0, out + err
    for port in ports:  # the `codeprm up &` the block started is stopped with it
        assert not port_open(int(port)), f"port {port} still served"
    rows = (tmp_path / "labels.jsonl").read_text().splitlines()
    assert rows and all('"strategy":"mutation"' in row.replace(" ", "") for row in rows)
    assert "mutation" in out and "humaneval" in out  # `label list`
