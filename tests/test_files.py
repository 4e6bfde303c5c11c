"""arc.infra.files: an atomic write leaves the complete new file or the old one, never a temporary file, and
two writers of the same file never share a temporary name."""
import fcntl
import json
import os

import pytest

from arc.infra.files import (
    atomic_write,
    atomic_write_text,
    check_writable,
    json_text,
    locked,
)


def test_writes_and_replaces_leaving_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_text(path, "old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_overlapping_writers_of_one_file_use_distinct_temporaries(tmp_path):
    path, seen = tmp_path / "a.json", []

    def outer(tmp):
        seen.append(tmp)
        tmp.write_text("outer")
        # a second writer of the same file starts and finishes while the first is still writing
        atomic_write(path, lambda inner: (seen.append(inner), inner.write_text("inner")))
        assert tmp.read_text() == "outer"

    atomic_write(path, outer)
    assert seen[0] != seen[1] and seen[0].parent == seen[1].parent == tmp_path
    assert path.read_text() == "outer"  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_json_text_writes_null_for_nan_and_infinity():
    text = json_text({"eval_loss": float("nan"), "x": [1.5, float("inf")], "t": (1, float("-inf"))}, indent=1)
    assert json.loads(text, parse_constant=pytest.fail) == {"eval_loss": None, "x": [1.5, None], "t": [1, None]}


def test_locked_excludes_a_second_holder(tmp_path):
    with locked(tmp_path):
        other = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    assert [p.name for p in tmp_path.iterdir()] == []  # no lock file left behind


def test_check_writable_creates_the_folder_or_raises(tmp_path):
    assert check_writable(tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        check_writable(tmp_path / "file" / "sub")
