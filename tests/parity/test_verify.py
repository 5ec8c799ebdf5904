"""``bitconvert verify``: the report, the exit codes, and every damaged-checkpoint case of the reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import R50X1

from convert.parity import STAGES, STRUCTURED
from convert.synthetic import synthetic_arrays, write_npz_atomic, write_synthetic_checkpoint

MODEL = "r50x1-160"
#: Reduced resolution and batch shared with test_parity, so the JAX compilations are reused.
FAST = ("--resolution", "64", "--batch", "2")


@pytest.fixture(scope="module")
def r50_arrays():
    return synthetic_arrays(R50X1, seed=1)


def _error_line(res) -> str:
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr  # --quiet: the error is the only line
    assert lines[0].startswith("bitconvert: error: ")
    return lines[0]


# -- a good checkpoint ----------------------------------------------------------------


def test_verify_json_report(invoke, r50x1_npz):
    res = invoke("verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--json")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert list(doc) == [*STAGES, "summary"]
    summary = doc["summary"]
    assert summary["passed"] is True and summary["architecture"] == "R50x1" and summary["model"] == MODEL
    assert summary["images"] == [2 + len(STRUCTURED), 64, 64, 3]
    assert summary["tf_tracing_count"] == 1
    # A distill/ student: both sides compute big_vision's forward pass (root pool padded with -inf).
    assert (summary["forward"]["code"], summary["forward"]["root_pool_padding"]) == ("big_vision", "neg_inf")
    for stage in STAGES:
        s = doc[stage]
        assert set(s) >= {"max_abs", "rel_l2", "tf_rel_l2_f64", "jax_rel_l2_f64", "passed"}
        assert 0 < s["tf_rel_l2_f64"] <= summary["tolerance"]
    assert doc["logits"]["top1_tf"] == 1.0
    assert "verify: loading" in res.stderr  # progress on stderr, never on stdout


def test_verify_table_names_the_forward_pass(invoke, r50x1_npz):
    res = invoke("verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--forward", "zero-pool", "--quiet")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[1].startswith("forward pass: root max-pool padded with zeros (--forward zero-pool)"), lines[:3]
    assert "pads with -inf" in lines[1] and lines[2].split()[0] == "stage"


def test_verify_failure_prints_the_report_and_exits_1(invoke, r50x1_npz, monkeypatch):
    import convert.model.tf_model as tf_model

    build = tf_model.build_tf_model

    def other_padding(checkpoint, **knobs):  # the TF side pads the root pool with zeros, the reference with -inf
        return build(checkpoint, **{**knobs, "pool_pad": "zero"})

    monkeypatch.setattr(tf_model, "build_tf_model", other_padding)
    res = invoke("verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--json", "--quiet")
    assert res.exit_code == 1
    doc = json.loads(res.stdout)  # the report still comes out, on stdout
    assert doc["summary"]["passed"] is False and "logits" in doc["summary"]["failed_stages"]
    line = _error_line(res)
    assert f"{MODEL}: parity failed at " in line and "exceeds the R50x1 tolerance" in line


def test_verify_judges_the_form_the_savedmodels_hold(invoke, r50x1_npz, output_side_unstandardised):
    """A fault only in the exported form of the graph (block 4 standardising its outputs) fails verify."""
    res = invoke("verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--json", "--quiet")
    assert res.exit_code == 1
    assert "block4" in json.loads(res.stdout)["summary"]["failed_stages"]


def test_conv_suffix_names_are_accepted(invoke, tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "suffix.npz", R50X1, seed=4, conv_suffix=True)
    with zipfile.ZipFile(path) as zf:
        assert any("standardized_conv2d_7/" in n for n in zf.namelist())
    res = invoke("verify", "--model", MODEL, "--checkpoint", path, *FAST, "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "parity: PASS"


# -- the JAX reference fails: exit 7, one line ---------------------------------------------

BITCONVERT = Path(sys.executable).parent / "bitconvert"


def _one_error_line(proc) -> str:
    """Our one line (TF's C++ start-up chatter on stderr, which --quiet cannot silence, aside)."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith("bitconvert:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("bitconvert: error: ") and "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize("reference", ["worker", "inline"])
def test_jax_that_cannot_start_exits_7(r50x1_npz, reference):
    env = {**os.environ, "JAX_PLATFORMS": "bogus", "TF_CPP_MIN_LOG_LEVEL": "3"}
    argv = [BITCONVERT, "verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--quiet", "--reference", reference]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 7, proc.stderr[-3000:]
    line = _one_error_line(proc)
    assert "JAX reference" in line and "bogus" in line and "JAX_PLATFORMS" in line


def _worker_of(pid: int) -> int | None:
    """The pid of ``python -m convert.parity`` among the children of ``pid``, if started."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as c:
                    if b"convert.parity" in c.read():
                        return int(child)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_reference_worker_exits_7(r50x1_npz):
    """The worker SIGKILLed (what the OOM killer does): one line naming it, exit 7, no traceback."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BITCONVERT_REFERENCE": "worker"}
    argv = [BITCONVERT, "verify", "--model", MODEL, "--checkpoint", r50x1_npz, *FAST, "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    worker = None
    while worker is None and proc.poll() is None and time.monotonic() < deadline:
        worker = _worker_of(proc.pid)
        time.sleep(0.05)
    assert worker is not None, "no reference worker started"
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 7, err[-3000:]
    line = _one_error_line(subprocess.CompletedProcess(argv, 7, out, err))
    assert "worker was killed by SIGKILL" in line and "--reference inline" in line


# -- usage and sources ------------------------------------------------------------------


def test_verify_needs_exactly_one_model(invoke, r50x1_npz):
    assert invoke("verify", "--checkpoint", r50x1_npz).exit_code == 2
    res = invoke("verify", "-m", MODEL, "-m", "r50x1-224", "--checkpoint", r50x1_npz)
    assert res.exit_code == 2 and "exactly one" in res.stderr


def test_verify_without_checkpoint_fetches_and_prints_a_table(invoke, r50x1_npz, monkeypatch, tmp_path):
    import convert.fetch as fetch

    seen = {}

    def fake_resolve(entry, checkpoint=None, **kwargs):
        seen.update(kwargs, entry=entry.id, checkpoint=checkpoint)
        return r50x1_npz

    monkeypatch.setattr(fetch, "resolve_checkpoint", fake_resolve)
    res = invoke("verify", "--model", MODEL, *FAST, "--cache-dir", tmp_path, "--offline", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert seen["entry"] == MODEL and seen["checkpoint"] is None
    assert seen["offline"] is True and seen["cache_dir"] == str(tmp_path)
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{MODEL} (R50x1) 7 images 64x64; tolerance")
    assert lines[1].startswith("forward pass: ") and lines[2].split()[0] == "stage"
    assert [line.split()[0] for line in lines[3:10]] == list(STAGES)
    assert lines[-1] == "parity: PASS"
    assert res.stderr == ""


def test_verify_offline_without_cache_exits_5(invoke, tmp_path):
    res = invoke("verify", "--model", MODEL, "--offline", "--cache-dir", tmp_path / "empty", "--quiet")
    assert res.exit_code == 5, res.stderr
    assert res.stdout == ""


def test_verify_checkpoint_of_another_architecture(invoke, r50x1_npz):
    res = invoke("verify", "--model", "r152x2-224", "--checkpoint", r50x1_npz, "--quiet")
    assert res.exit_code == 1
    line = _error_line(res)
    # What the file is and which ids it fits, then the count (issue 12, item 6), not a list of 458 problems.
    assert (
        "this is a valid R50x1 checkpoint with a 1000-class head (it fits r50x1-224, r50x1-160, bit-s-r50x1, "
        "bit-m-r50x1-ilsvrc2012), not the R152x2 with 1000 classes expected: 458 layout problems against R152x2" in line
    )


# -- damaged checkpoints (every case of the strict reader) --------------------------------

KEY = "resnet/block3/unit04/b/group_norm/beta"
KERNEL = "resnet/block2/unit02/b/standardized_conv2d/kernel"


def _missing(a):
    del a[KEY]


def _unexpected(a):
    a["resnet/block3/unit07/a/group_norm/gamma"] = np.ones(1024, np.float32)


def _wrong_shape(a):
    a["resnet/head/conv2d/bias"] = np.zeros(1001, np.float32)


def _float64(a):
    a[KEY] = a[KEY].astype(np.float64)


def _nan(a):
    a[KERNEL] = a[KERNEL].copy()
    a[KERNEL][1, 1, 3, 5] = np.nan


def _inf(a):
    a[KERNEL] = a[KERNEL].copy()
    a[KERNEL][0, 2, 7, 1] = -np.inf
    a[KERNEL][2, 0, 1, 7] = np.inf


def _object(a):
    a[KEY] = np.array([object()] * 256, dtype=object)


DAMAGE = {
    "missing": (_missing, f"missing {KEY} (expected float32 (256,))"),
    "unexpected": (_unexpected, "unexpected resnet/block3/unit07/a/group_norm/gamma float32 (1024,)"),
    "wrong-shape": (_wrong_shape, "wrong shape resnet/head/conv2d/bias: got (1001,), expected (1000,)"),
    "float64": (_float64, f"wrong dtype {KEY}: got float64, expected float32"),
    "nan": (_nan, f"non-finite values in {KERNEL}: 1 NaN, 0 Inf"),
    "inf": (_inf, f"non-finite values in {KERNEL}: 0 NaN, 2 Inf"),
    "object": (_object, f"object array {KEY} refused"),
}


def _write(path, arrays):
    """np.savez, allowing the object array (the reader must refuse it without unpickling)."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_exits_1_naming_the_key(invoke, r50_arrays, tmp_path, case):
    damage, expected = DAMAGE[case]
    arrays = dict(r50_arrays)
    damage(arrays)
    path = _write(tmp_path / f"{case}.npz", arrays)
    res = invoke("verify", "--model", MODEL, "--checkpoint", path, "--quiet")
    assert res.exit_code == 1, res.stderr
    line = _error_line(res)
    assert f"{path}: not a valid R50x1 checkpoint: 1 problem: {expected}" in line
    assert res.stdout == ""


def test_truncated_checkpoint_exits_1(invoke, r50x1_npz, tmp_path):
    data = open(r50x1_npz, "rb").read()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) * 3 // 5])
    res = invoke("verify", "--model", MODEL, "--checkpoint", path, "--quiet")
    assert res.exit_code == 1
    line = _error_line(res)
    assert f"{path}: not a readable .npz (zip) file" in line and "truncated download" in line


def test_truncated_member_exits_1_naming_the_key(invoke, r50_arrays, tmp_path):
    """A member whose data is shorter than its header declares (a zip rewritten around a cut array)."""
    arrays = dict(r50_arrays)
    path = write_npz_atomic(tmp_path / "ok.npz", arrays)
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cut, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == f"{KERNEL}.npy":
                data = data[: len(data) - 4096]
            dst.writestr(info.filename, data)
    res = invoke("verify", "--model", MODEL, "--checkpoint", cut, "--quiet")
    assert res.exit_code == 1
    line = _error_line(res)
    assert f"bad size {KERNEL}" in line


def test_duplicate_conv_spellings_exit_1_naming_the_key(invoke, r50_arrays, tmp_path):
    """``standardized_conv2d`` and ``standardized_conv2d_<n>`` for the same array: ambiguous, refused."""
    arrays = dict(r50_arrays)
    arrays[KERNEL.replace("/standardized_conv2d/", "/standardized_conv2d_9/")] = arrays[KERNEL]
    path = _write(tmp_path / "dup.npz", arrays)
    res = invoke("verify", "--model", MODEL, "--checkpoint", path, "--quiet")
    assert res.exit_code == 1
    line = _error_line(res)
    assert f"1 problem: duplicate {KERNEL} (members " in line


def test_not_a_bit_checkpoint_exits_1(invoke, tmp_path):
    path = _write(tmp_path / "other.npz", {"weights": np.zeros((3, 3), np.float32)})
    res = invoke("verify", "--model", MODEL, "--checkpoint", path, "--quiet")
    assert res.exit_code == 1
    line = _error_line(res)
    assert "not a valid R50x1 checkpoint: 154 problems: missing resnet/root_block/standardized_conv2d/kernel" in line
