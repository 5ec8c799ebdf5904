"""The synthetic writer, as a library and as the scripts/ helper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import TINY

from convert.checkpoint import load_checkpoint
from convert.model.architecture import Architecture, checkpoint_layout
from convert.synthetic import synthetic_arrays

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_checkpoint.py"


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b, c = synthetic_arrays(TINY, 1), synthetic_arrays(TINY, 1), synthetic_arrays(TINY, 2)
    assert list(a) == list(checkpoint_layout(TINY))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a)


def test_script_writes_a_reduced_layout(tmp_path):
    out = tmp_path / "sub" / "t.npz"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--units", "1,2,1,1", "--width", "2", "--classes", "7"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == str(out)
    arch = Architecture((1, 2, 1, 1), 2, 7)
    assert load_checkpoint(out, allow_nonstandard=True).architecture == arch
    assert not list(out.parent.glob(".*.tmp")), "no temporary file left behind"


def test_script_writes_a_registry_model_with_numbered_conv_names(tmp_path):
    out = tmp_path / "r50.npz"
    subprocess.run([sys.executable, str(SCRIPT), str(out), "--model", "r50x1-160", "--conv-suffix"], check=True)
    assert load_checkpoint(out).architecture == Architecture.from_depth(50, 1, 1000)
