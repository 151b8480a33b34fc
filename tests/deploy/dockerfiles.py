"""Reading the Dockerfiles under docker/: stages, instructions, the command an image runs."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.manifests import DOCKER

# The images, by the name their tag carries (codeprm/<name>:<version>).
IMAGES = ("executor", "labeler", "prm-server", "trainer")
# The init process every image starts; what follows `--` is the codeprm command.
INIT = ["tini", "--"]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def exec_form(self, keyword: str) -> list[str]:
        value = json.loads(self.final.last(keyword))
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), keyword
        return value

    @property
    def command(self) -> list[str]:
        """ENTRYPOINT + CMD: what `docker run IMAGE` executes."""
        return [*self.exec_form("ENTRYPOINT"), *self.exec_form("CMD")]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for arg in self.final.all("ENV"):
            for item in shlex.split(arg):
                key, _, value = item.partition("=")
                env[key] = value
        return env

    @property
    def user(self) -> tuple[int, int]:
        uid, _, gid = self.final.last("USER").partition(":")
        return int(uid), int(gid)


def parse(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text())  # join continued lines
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arg = line.partition(" ")
        keyword, arg = keyword.upper(), " ".join(arg.split())
        if keyword == "FROM":
            base, _, name = arg.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, arg))
    return Dockerfile(path, stages)


def dockerfile(image: str) -> Dockerfile:
    return parse(DOCKER / f"{image}.Dockerfile")


def codeprm_args(command: list[str]) -> list[str]:
    """The arguments of `codeprm` in an image's command (after the init process)."""
    assert command[: len(INIT)] == INIT and command[len(INIT)] == "codeprm", command
    return command[len(INIT) + 1 :]
