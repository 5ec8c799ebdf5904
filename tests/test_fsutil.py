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
