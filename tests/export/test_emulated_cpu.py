"""LiteRT and onnxruntime on a CPU without AVX-512 (an emulated one): the exported files still pass parity.

`make test` reruns the numerics tests with TensorFlow's, torch's and XLA's CPU kernels capped at
AVX2 (Makefile: an AVX2-only CPU such as issue 19's AMD EPYC runs other kernels). XNNPACK (LiteRT)
and MLAS (onnxruntime) have no such cap: they choose their kernels from CPUID. QEMU's user-mode
emulator with a Haswell CPU model (AVX2 and FMA, no AVX-512) makes them choose their AVX2 kernels,
slowly (emulated), so this runs the tiny export. Skipped where ``qemu-x86_64`` (Debian's
``qemu-user``) is not installed; .ci/run installs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, TINY_PX
from deploy_support import entries, load_with_reference, to_unit

from convert.parity import compare

QEMU = shutil.which("qemu-x86_64")
#: QEMU's Haswell model: AVX2 and FMA, no AVX-512 (the "-v4" variant drops TSX, which QEMU's TCG lacks).
CPU_MODEL = "Haswell-v4"
CHILD = Path(__file__).with_name("emulated_cpu_child.py")

pytestmark = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 (Debian's qemu-user) is not installed")


def test_litert_and_onnxruntime_pass_parity_on_a_cpu_without_avx512(tiny_export, tiny_npz, tmp_path):
    _, images, reference = load_with_reference(tiny_npz, TINY, TINY_PX)
    files = {
        e["path"].split("/")[0]: tiny_export.path / e["path"]
        for t in ("tflite", "onnx")
        for e in entries(tiny_export.manifest, t)
        if e["variant"] == "classification"
    }
    np.save(tmp_path / "images.npy", to_unit(images))
    argv = [QEMU, "-cpu", CPU_MODEL, sys.executable, str(CHILD), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")]
    done = subprocess.run([*argv, str(files["tflite"]), str(files["onnx"])], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # The emulation took effect: the libraries saw AVX2 and FMA and no AVX-512.
    assert json.loads(done.stdout.splitlines()[-1]) == {"AVX2": True, "FMA3": True, "AVX512F": False}
    outputs = np.load(tmp_path / "out.npz")
    assert sorted(outputs) == ["litert", "onnxruntime"]
    for runtime in outputs:
        report = compare(reference, {"logits": outputs[runtime]}, TINY)
        assert report.passed, (runtime, report.stages["logits"])
