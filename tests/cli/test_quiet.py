"""Quiet output (issue 12, item 7): real `bitconvert export` / `verify` subprocesses on the tiny layout (10 classes).

With --quiet a successful run prints nothing on stderr (no CUDA probe, oneDNN or
absl lines from TensorFlow or JAX); without it, every stderr line is bitconvert's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, tiny_registry

from convert.cli.quiet import NATIVE_LINE, configure_environment, keep_lines

BIN = Path(sys.executable).parent
MODEL = "small-bit"
#: The parity images of every export and verify here: not square, so the CLI's HxW form runs end to end at no extra cost.
PX = "32x40"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from convert.synthetic import write_synthetic_checkpoint

    d = tmp_path_factory.mktemp("quiet")
    registry = tiny_registry(d / "registry.yaml", MODEL, "small.npz")
    ckpt = write_synthetic_checkpoint(d / "small.npz", TINY, seed=5)
    # The user's environment as a fresh shell has it: none of the variables bitconvert sets for itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "JAX_", "BITCONVERT_"))}
    env.update(BITCONVERT_REGISTRY=str(registry), BITCONVERT_CACHE=str(d / "cache"))
    return d, ckpt, env


def _run(setup, *args) -> subprocess.CompletedProcess:
    d, ckpt, env = setup
    proc = subprocess.run(
        [str(BIN / "bitconvert"), *args, "--checkpoint", str(ckpt)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _export(setup, out: str, *extra):
    d = setup[0]
    return _run(setup, "export", "--model", MODEL, "--output-dir", str(d / out), "--parity-resolution", PX, *extra)


def test_export_quiet_prints_nothing_on_stderr(setup):
    """LiteRT's check included: its first interpreter logs an XNNPACK INFO line whatever TF_CPP_MIN_LOG_LEVEL
    says, filtered too. One export writes and checks both formats, whose lines would share its stderr."""
    litert = importlib.util.find_spec("ai_edge_litert") is not None
    proc = _export(setup, "q", "--quiet", "--format", "savedmodel,tflite" if litert else "savedmodel")
    assert proc.stderr == ""
    assert proc.stdout.strip().endswith(MODEL)
    assert any((setup[0] / "q" / MODEL).rglob("*.tflite")) == litert


def test_verify_quiet_prints_nothing_on_stderr(setup):
    proc = _run(setup, "verify", "--model", MODEL, "--resolution", PX, "--batch", "1", "--quiet")
    assert proc.stderr == ""
    assert "logits" in proc.stdout


@pytest.mark.parametrize("command", ["export", "verify"])
def test_without_quiet_only_bitconvert_lines(setup, command):
    if command == "export":
        proc = _export(setup, "loud")
    else:
        proc = _run(setup, "verify", "--model", MODEL, "--resolution", PX, "--batch", "1")
    lines = proc.stderr.splitlines()
    assert lines, "expected progress lines without --quiet"
    strangers = [line for line in lines if not line.startswith((MODEL, "bitconvert"))]
    assert strangers == []
    assert f"images at {PX}" in proc.stderr if command == "verify" else f"images {PX}:" in proc.stderr
    if command == "export":
        manifest = json.loads((setup[0] / "loud" / MODEL / "manifest.json").read_text())
        assert manifest["parity"]["resolution"] == [32, 40] and manifest["parity"]["before_export"]["summary"]["passed"]


def test_native_lines_are_recognised_and_others_kept():
    noise = (
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        b"I0000 00:00:1796117757.542140   11573 port.cc:153] oneDNN custom operations are on.\n"
        b"E0000 00:00:1796117742.586494   11253 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.\n"
    )
    real = b"Traceback (most recent call last):\nImportError: libfoo.so: cannot open shared object file\n"
    assert keep_lines(noise + real) == real
    assert all(NATIVE_LINE.match(line) for line in noise.splitlines())


def test_the_user_s_own_settings_win():
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    assert configure_environment(env) == {"JAX_PLATFORMS": "cpu"}
    assert env == {"TF_CPP_MIN_LOG_LEVEL": "0", "JAX_PLATFORMS": "cpu"}
