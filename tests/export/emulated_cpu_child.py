"""``python emulated_cpu_child.py IMAGES.npy OUT.npz TFLITE ONNX``: both classifiers on the images, as the export checks them.

Run by test_emulated_cpu.py under QEMU's user-mode emulator. Prints, as its last line, the
instruction sets the process sees through CPUID (numpy's record of them), so that the test knows
the emulation took effect; saves each runtime's outputs to OUT.npz.
"""

import json
import sys
from pathlib import Path

import numpy as np
from numpy._core._multiarray_umath import __cpu_features__  # CPUID as numpy read it at import

from convert.export.onnx import run_onnx
from convert.export.target import OUTPUT_NAMES
from convert.export.tflite import run_tflite

if __name__ == "__main__":
    images_npy, out_npz, tflite, onnx = sys.argv[1:]
    images = np.load(images_npy)
    outputs = {
        "litert": run_tflite(Path(tflite), images),
        "onnxruntime": run_onnx(Path(onnx), images, OUTPUT_NAMES["classification"]),
    }
    np.savez(out_npz, **outputs)
    print(json.dumps({name: bool(__cpu_features__[name]) for name in ("AVX2", "FMA3", "AVX512F")}))
