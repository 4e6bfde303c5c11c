"""arc.infra.files: an atomic write leaves the complete new file or the old one, never a temporary file, and
two writers of the same file never share a temporary name; capped reads refuse devices, FIFOs and runaway
files at once; a held lock names its holder and dies with it, and never writes through a link."""
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from arc.infra.files import (
    LockHeld,
    NotALockFile,
    atomic_write,
    atomic_write_text,
    check_writable,
    hold_lock,
    json_text,
    locked,
    read_capped,
    read_json,
    release_lock,
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


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "folder"])
def test_capped_reads_refuse_what_is_no_regular_file_at_once(tmp_path, kind):
    path = tmp_path / "config.json"
    {"dev_zero": lambda: path.symlink_to("/dev/zero"), "fifo": lambda: os.mkfifo(path), "folder": path.mkdir}[kind]()
    with pytest.raises(ValueError, match="not a regular file"):  # a FIFO without a writer would block the open
        read_json(path, 1 << 20)


def test_capped_reads_refuse_a_file_over_the_cap_and_what_is_not_json(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, 2]}')
    assert read_capped(path, 13) == b'{"a": [1, 2]}' and read_json(path, 13) == {"a": [1, 2]}
    with pytest.raises(ValueError, match="larger than"):
        read_capped(path, 12)
    for text, message in (('{"a": NaN}', "NaN is not JSON"), ("{nope", "not JSON: .* line 1 column 2"),
                          ("[" * 100_000, "nested too deeply"), (b"\xff", "not UTF-8")):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError, match=message):
            read_json(path, 1 << 20)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json", 100)


HOLDER = "import sys, time; from arc.infra.files import hold_lock; hold_lock(sys.argv[1], 'pid-of-' + sys.argv[2]); print('held', flush=True); time.sleep(60)"


def test_a_held_lock_names_its_holder_and_dies_with_its_process(tmp_path):
    lock = tmp_path / ".lock"
    root = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "other"], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as held:
            hold_lock(lock, "pid-of-me")
        assert held.value.holder == "pid-of-other"
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no clean-up runs, the file stays
        holder.wait()
    hold_lock(lock, "pid-of-me")  # the kernel dropped the dead process's lock: never stale
    assert lock.read_text() == "pid-of-me"
    hold_lock(lock, "pid-of-me")  # held already by this process: nothing to do
    release_lock(lock)


def test_the_lock_never_follows_a_link_nor_writes_anything_but_its_own_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".lock"
    cases = [(lambda: lock.symlink_to(victim), "is a symbolic link"),  # would overwrite the victim with the pid
             (lambda: lock.symlink_to(tmp_path / "created"), "is a symbolic link"),  # would create a file there
             (lambda: lock.mkdir(), "is a folder"),
             (lambda: os.mkfifo(lock), "is not a regular file"),
             (lambda: os.link(victim, lock), "has 2 names")]  # a hard link: the victim under another name
    for plant, message in cases:
        plant()
        with pytest.raises(NotALockFile, match=message):
            hold_lock(lock, "pid-of-me")
        if lock.is_dir() and not lock.is_symlink():
            lock.rmdir()
        else:
            lock.unlink()
    assert victim.read_text() == "keep me" and not (tmp_path / "created").exists()
    hold_lock(lock, "pid-of-me")  # a plain file, made by the lock itself
    assert lock.read_text() == "pid-of-me" and not lock.is_symlink()
    release_lock(lock)
