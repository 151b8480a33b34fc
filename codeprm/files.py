"""Writing a user's files without ever leaving a half-written or emptied one behind.

Every output codeprm writes (exports, checkpoints, metrics, reports, plots) is first written
beside its destination under a temporary name and renamed over it only once complete: a
crash, a Ctrl-C or an error found half-way (a run that does not exist, a service that went
away) leaves the previous file as it was. Callers check their inputs before they start.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A file to write `path`'s new content to; it replaces `path` when the block ends
    without an error, and is deleted otherwise (`path` untouched)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 is not what the user expects
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """An empty directory to build `path` in; it takes `path`'s place when the block ends
    without an error (the old `path`, if any, is removed then), and is deleted otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~_umask())
    if path.exists():
        # Moved aside rather than deleted first, so a crash here leaves one whole copy.
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.replace(path, old / path.name)
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, path)


def checkpoint_dir(path: Path, what: str) -> Path:
    """`path` if it holds a Hugging Face checkpoint; otherwise an error saying so, before
    any model code turns a typo into a page of traceback."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path}: no such directory")
    if not (path / "config.json").is_file():
        raise ValueError(f"{what} {path} is not a model checkpoint (it has no config.json)")
    return path
