"""Writing a user's files: complete or not at all, never an emptied or half-written file."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeprm.files import atomic_dir, atomic_open, atomic_write_text, checkpoint_dir


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_text("precious\n")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write("half")
        raise RuntimeError("the run does not exist")
    assert path.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.jsonl"]


def test_a_complete_write_replaces_the_file_with_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o644 == 0o644  # not mkstemp's 0600
    with atomic_open(tmp_path / "fresh.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "fresh.bin").read_bytes() == b"\x00\x01"


def test_a_directory_is_swapped_in_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "policy"
    with atomic_dir(target) as staging:
        (staging / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as staging:
        (staging / "weights").write_text("half of v2")
        raise KeyboardInterrupt
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target) as staging:
        (staging / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_checkpoint_dir_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="policy .*nope: no such directory"):
        checkpoint_dir(tmp_path / "nope", "policy")
    with pytest.raises(ValueError, match="has no config.json"):
        checkpoint_dir(tmp_path, "base model")
    (tmp_path / "config.json").write_text("{}")
    assert checkpoint_dir(tmp_path, "base model") == tmp_path
