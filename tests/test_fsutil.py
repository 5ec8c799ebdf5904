"""convert.fsutil: atomic writes, live-process checks and the cleanup of dead processes' temporary files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from convert.fsutil import atomic_write, atomic_writer, pid_alive, remove_dead_temps, temp_path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert atomic_write(path, "new ✓") == path
    assert path.read_text(encoding="utf-8") == "new ✓"
    atomic_write(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(path) as f:
        f.write(b"half")
        raise RuntimeError("killed halfway")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())


def test_remove_dead_temps_keeps_live_and_foreign_names(tmp_path):
    mine = temp_path(tmp_path / "obj.bin")
    mine.write_bytes(b"")
    dead = tmp_path / f".obj.bin.{dead_pid()}.0badcafe.tmp"
    dead.write_bytes(b"")
    dead_dir = tmp_path / f".r50x1-160.tmp-{dead_pid()}"
    (dead_dir / "variables").mkdir(parents=True)
    live = tmp_path / f".obj.bin.{os.getppid()}.0badcafe.tmp"
    live.write_bytes(b"")
    other = tmp_path / ".other.bin.1.0badcafe.tmp"
    other.write_bytes(b"")
    assert remove_dead_temps(tmp_path, ".obj.bin.{pid}.*.tmp") == [dead]
    assert remove_dead_temps(tmp_path, ".r50x1-160.tmp-{pid}") == [dead_dir]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, live.name, other.name])
    with pytest.raises(ValueError, match="no {pid}"):
        remove_dead_temps(tmp_path, ".obj.bin.*.tmp")


def _hold_lock_in_another_process(path, ready):
    """A process (as another container's would be) holding an flock on ``path`` until its stdin closes."""
    code = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY); "
        "fcntl.flock(fd, fcntl.LOCK_EX); open(sys.argv[2], 'w').close(); sys.stdin.read()"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(path), str(ready)], stdin=subprocess.PIPE)


def test_a_directory_locked_by_another_process_is_kept_whatever_its_pid(tmp_path):
    import time

    from convert.fsutil import make_locked_dir, remove_unlocked_dirs

    mine, fd = make_locked_dir(tmp_path, ".m.tmp-")
    theirs = tmp_path / f".m.tmp-{dead_pid()}-0badcafe"  # a pid that means nothing in this namespace
    theirs.mkdir()
    ready = tmp_path / "ready"
    holder = _hold_lock_in_another_process(theirs, ready)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert remove_unlocked_dirs(tmp_path, ".m.tmp-") == []
        assert mine.exists() and theirs.exists()
    finally:
        holder.communicate(b"")  # its lock ends with it
    assert remove_unlocked_dirs(tmp_path, ".m.tmp-") == [theirs]
    os.close(fd)
    assert remove_unlocked_dirs(tmp_path, ".m.tmp-") == [mine]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready"]
