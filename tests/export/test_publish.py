"""Publishing an export: the atomic swap, stale temporary directories, a killed export, a full disk."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from export_support import ENV, MODEL, cli

from convert.export import MANIFEST_FORMAT, clear_stale_temp_dirs, publish_directory, temp_dir_prefix


def test_publish_directory_swaps_in_a_new_export(tmp_path):
    final = tmp_path / "m"
    final.mkdir()
    (final / "old").write_text("old")
    new = tmp_path / ".m.tmp-1"
    new.mkdir()
    (new / "new").write_text("new")
    publish_directory(new, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_stale_temp_dirs_are_judged_by_their_lock_not_a_pid(tmp_path):
    """A live export's directory is kept whatever its name's pid (another container's pid means nothing here)."""
    from convert.fsutil import make_locked_dir

    prefix = temp_dir_prefix(MODEL)
    dead = tmp_path / f"{prefix}{os.getppid()}-0badcafe"  # a live pid in its name, but no lock: left by a killed export
    other = tmp_path / f"{temp_dir_prefix('r50x1-224')}{2**22 + 12345}-0badcafe"
    for d in (dead, other):
        d.mkdir()
    live, fd = make_locked_dir(tmp_path, prefix)
    try:
        clear_stale_temp_dirs(tmp_path, MODEL)
        assert not dead.exists() and live.exists() and other.exists()
    finally:
        os.close(fd)
    clear_stale_temp_dirs(tmp_path, MODEL)
    assert not live.exists() and other.exists()


def test_not_enough_space_is_refused_before_writing(invoke, tmp_path, r50x1_npz, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity")
    assert result.exit_code == 6 and "not enough free space" in result.stderr
    assert not out.exists()


def _with_file_size_limit(limit: int, argv: list[str]) -> list[str]:
    """``argv`` run under RLIMIT_FSIZE: writes past ``limit`` fail with EFBIG, as on a full disk.

    Set in a tiny exec wrapper rather than a preexec_fn (fork in a threaded
    pytest process can deadlock). SIGXFSZ is ignored by Python and stays
    ignored across exec, so the write fails instead of killing the process.
    """
    wrapper = (
        "import os, resource, signal, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1]))); "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", wrapper, str(limit), *argv]


def test_full_disk_exits_6_and_leaves_no_output(tmp_path, r50x1_npz):
    out = tmp_path / "out"
    argv = cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity")
    # The R50x1 variables file is ~100 MB: the first SavedModel cannot be written.
    proc = subprocess.run(_with_file_size_limit(20 * 2**20, argv), capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 6, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bitconvert:")]
    assert len(errors) == 1 and "cannot write" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # no final export, no temporary directory, not even the directory it created


def test_killed_export_leaves_the_previous_export_untouched(tmp_path, r50x1_npz):
    out = tmp_path / "out"
    previous = out / MODEL
    previous.mkdir(parents=True)
    earlier = json.dumps({"format": MANIFEST_FORMAT, "model": {"id": MODEL}, "previous": True})
    (previous / "manifest.json").write_text(earlier)
    proc = subprocess.Popen(
        cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    pattern = f"{temp_dir_prefix(MODEL)}{proc.pid}-*/classification/variables"
    deadline = time.monotonic() + 240
    # Kill once the first SavedModel is being written: the worst moment.
    while not list(out.glob(pattern)) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished or failed before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert sorted(p.name for p in previous.iterdir()) == ["manifest.json"]
    assert (previous / "manifest.json").read_text() == earlier
    assert list(out.glob(pattern))  # what a SIGKILL leaves: only the temporary directory, its lock gone with it...
    clear_stale_temp_dirs(out, MODEL)  # ...which the next export of the id clears away
    assert sorted(p.name for p in out.iterdir()) == [MODEL]
