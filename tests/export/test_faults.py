"""Fault injection: signals at chosen moments of a real export, and whatever may be at DIR/<id>.

Each signal test runs the real CLI in its own process (fault_child.py: the
registry's entries in the TINY block layout, so that an export takes
seconds), makes it wait at a named step (the test seam
BITCONVERT_TEST_PAUSE_AT of convert.config: the export creates a file there
and waits), sends a real signal and checks what the issue asks: the status
128 + signal, one line, nothing published, no helper process left, no
temporary file left (in the output directory nor in TMPDIR). Each signal
comes at each moment, in worker and inline mode, spread over the cases so
that the suite stays short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY

from convert.errors import EXIT_IO
from convert.export import MANIFEST_FORMAT, MANIFEST_NAME, clear_stale_temp_dirs, temp_dir_prefix
from convert.fsutil import remove_unlocked_dirs
from convert.interrupts import exit_status, message
from convert.model.architecture import Architecture
from convert.parity.pending import WORKDIR_PREFIX
from convert.synthetic import write_synthetic_checkpoint

MODEL = "r50x1-160"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
#: The longest a signalled export may take to end: "within seconds", with room for a loaded machine.
END_WITHIN_S = 30.0
#: The longest the export may take to reach a step (imports and a TINY export on a busy machine).
REACH_WITHIN_S = 400.0


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The TINY layout with r50x1-160's 1000 classes (its label file fits)."""
    arch = Architecture(TINY.units, TINY.width, 1000)
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny1000.npz", arch, seed=3)


def _env(tmp: Path, **extra) -> dict:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(k) for k in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, which in a container may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start(tiny_checkpoint, out: Path, scratch: Path, step: str, reference: str, formats: str = "savedmodel"):
    marker = scratch / "reached"
    argv = [sys.executable, str(HERE / "fault_child.py"), "export", "-m", MODEL, "--checkpoint", str(tiny_checkpoint)]
    argv += ["-o", str(out), "--parity-resolution", "32", "--reference", reference, "--format", formats]
    env = _env(scratch / "tmp", BITCONVERT_TEST_PAUSE_AT=f"{step}:{marker}")
    (scratch / "tmp").mkdir(parents=True)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + REACH_WITHIN_S
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the export did not reach {step!r} (exit {proc.returncode}): {err[-2000:]}")
    return proc


def _ours(tmpdir: Path) -> list[str]:
    """bitconvert's entries in a TMPDIR (TensorFlow's autograph leaves its generated sources
    there on every run that ends with os._exit, finished or not: not ours to remove)."""
    return sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith("__autograph_generated_file"))


def _previous_export(out: Path) -> Path:
    """An earlier export of MODEL at out/MODEL: a manifest of the format, and a file to recognise it by."""
    previous = out / MODEL
    previous.mkdir(parents=True)
    (previous / MANIFEST_NAME).write_text(json.dumps({"format": MANIFEST_FORMAT, "model": {"id": MODEL}}))
    (previous / "old.txt").write_text("the previous export\n")
    return previous


CASES = [
    # (the step it waits at, the signal, where the JAX reference runs, formats)
    ("reference", signal.SIGINT, "worker", "savedmodel"),
    ("write", signal.SIGTERM, "worker", "savedmodel,keras"),  # the Keras check processes are importing
    ("check", signal.SIGHUP, "worker", "savedmodel"),
    ("reference", signal.SIGTERM, "inline", "savedmodel"),
    ("write", signal.SIGHUP, "inline", "savedmodel"),
    ("check", signal.SIGINT, "inline", "savedmodel"),
]


@pytest.mark.parametrize(("step", "signum", "reference", "formats"), CASES, ids=lambda v: getattr(v, "name", str(v)))
def test_a_signal_ends_the_export_at_once_publishing_nothing(tiny_checkpoint, tmp_path, step, signum, reference, formats):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    previous = _previous_export(out)
    proc = _start(tiny_checkpoint, out, scratch, step, reference, formats)
    helpers = _children(proc.pid)
    if reference == "worker" and step == "reference":
        assert helpers, "the JAX worker should be running at this step"
    if "keras" in formats:
        assert helpers, "the Keras check processes should be importing at this step"
    t = time.monotonic()
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=END_WITHIN_S + 30)
    took = time.monotonic() - t
    assert proc.returncode == exit_status(signum) == 128 + signum, err[-3000:]
    assert took < END_WITHIN_S, f"took {took:.1f}s to end"
    lines = err.strip().splitlines()
    assert lines[-1] == message(signum)
    assert "Traceback" not in err and "Exception ignored" not in err
    assert sorted(p.name for p in out.iterdir()) == [MODEL]  # no temporary directory
    assert sorted(p.name for p in previous.iterdir()) == [MANIFEST_NAME, "old.txt"]  # the earlier export untouched
    deadline = time.monotonic() + 10  # a killed process may take a moment to be gone
    while any(_running(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if _running(p)], "a helper process outlived the export"
    assert _ours(scratch / "tmp") == []  # the worker's and the Keras checks' directories


@pytest.mark.parametrize("step", ["reference", "write"])
def test_a_killed_export_leaves_no_worker_and_only_its_locked_temp_dir(tiny_checkpoint, tmp_path, step):
    """SIGKILL cannot be handled: a computing worker sees its parent go (end-of-file on its stdin) and removes its own
    directory; what is left (the export's temporary directory, a finished worker's) is unlocked, and the next run removes it."""
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    proc = _start(tiny_checkpoint, out, scratch, step, "worker")
    helpers = _children(proc.pid)
    if step == "reference":
        assert helpers, "the JAX worker should be running at this step"
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + END_WITHIN_S
    while any(_running(p) for p in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in helpers if _running(p)], "the worker outlived its killed parent"
    if step == "reference":  # the worker was computing: it removed its own directory
        assert _ours(scratch / "tmp") == []
    # A worker that had finished before the kill leaves its directory, unlocked: the next export removes it.
    remove_unlocked_dirs(scratch / "tmp", WORKDIR_PREFIX)
    assert _ours(scratch / "tmp") == []
    if step == "write":
        left = [p.name for p in out.iterdir()]
        assert len(left) == 1 and left[0].startswith(temp_dir_prefix(MODEL))  # its lock died with it...
        clear_stale_temp_dirs(out, MODEL)  # ...so the next export removes it
        assert list(out.iterdir()) == []


# -- what may be at DIR/<id>: refused before any work, left untouched --------------------------------


def _refused(invoke, out: Path, checkpoint) -> str:
    result = invoke("export", "--model", MODEL, "--checkpoint", checkpoint, "-o", out, "--offline")
    assert result.exit_code == EXIT_IO, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitconvert: error: ") and "not replacing it" in lines[0]
    return lines[0]


def test_a_users_directory_is_refused_and_left_alone(invoke, tmp_path, tiny_npz):
    mine = tmp_path / "m" / MODEL
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine\n")
    assert "not a bitconvert export" in _refused(invoke, tmp_path / "m", tiny_npz)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine\n"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [MODEL]


def test_the_checkpoint_being_read_is_never_replaced(invoke, tmp_path, tiny_npz):
    home = tmp_path / "m" / MODEL
    home.mkdir(parents=True)
    ckpt = home / "R50x1_160.npz"
    ckpt.write_bytes(Path(tiny_npz).read_bytes())
    _refused(invoke, tmp_path / "m", ckpt)
    assert ckpt.read_bytes() == Path(tiny_npz).read_bytes()
    (home / MANIFEST_NAME).write_text(json.dumps({"format": MANIFEST_FORMAT, "model": {"id": MODEL}}))
    assert "holding the checkpoint" in _refused(invoke, tmp_path / "m", ckpt)  # even inside an earlier export
    assert sorted(p.name for p in home.iterdir()) == ["R50x1_160.npz", MANIFEST_NAME]


@pytest.mark.parametrize("kind", ["file", "symlink to a directory", "symlink to an export", "dangling symlink"])
def test_a_file_or_symlink_is_refused_and_left_alone(invoke, tmp_path, tiny_npz, kind):
    out = tmp_path / "m"
    out.mkdir()
    at = out / MODEL
    elsewhere = tmp_path / "elsewhere"
    if kind == "file":
        at.write_text("a file of mine\n")
    elif kind == "dangling symlink":
        at.symlink_to(tmp_path / "nowhere")
    else:
        elsewhere.mkdir()
        if kind == "symlink to an export":
            (elsewhere / MANIFEST_NAME).write_text(json.dumps({"format": MANIFEST_FORMAT, "model": {"id": MODEL}}))
        at.symlink_to(elsewhere)
    before = at.read_text() if kind == "file" else os.readlink(at)
    _refused(invoke, out, tiny_npz)
    assert (at.read_text() if kind == "file" else os.readlink(at)) == before
    assert sorted(p.name for p in out.iterdir()) == [MODEL]  # nothing moved aside, no temporary directory
