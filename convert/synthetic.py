"""Synthetic checkpoints in the exact official BiT layout, for offline testing.

The arrays are random but non-trivial: kernels are Gaussian with a per-output
channel mean offset (so weight standardisation has work to do), group-norm
gammas are spread around 1 and betas around 0 (never the ones/zeros a
"forgot to load" bug would produce), and the head has a real bias. Values are
deterministic for a given seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .fsutil import atomic_writer
from .model.architecture import Architecture, checkpoint_layout


def synthetic_arrays(arch: Architecture, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays for every key of ``arch``'s checkpoint layout."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for key, shape in checkpoint_layout(arch).items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "gamma":
            a = rng.uniform(0.5, 1.5, size=shape)
        elif leaf == "beta":
            a = rng.normal(0.0, 0.2, size=shape)
        elif leaf == "bias":
            a = rng.normal(0.0, 0.5, size=shape)
        elif key.endswith("head/conv2d/kernel"):
            a = rng.normal(0.0, 1.0 / np.sqrt(shape[2]), size=shape)
        else:  # standardised conv kernel: scale and offset are removed by WS anyway
            fan_in = int(np.prod(shape[:3]))
            a = rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=shape) + rng.normal(0.0, 0.05, size=shape[-1:])
        arrays[key] = a.astype(np.float32)
    return arrays


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez`` (uncompressed, as the official files are), atomically (:func:`fsutil.atomic_writer`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as f:
        np.savez(f, **arrays)
    return path


def write_synthetic_checkpoint(
    path: str | os.PathLike,
    arch: Architecture,
    seed: int = 0,
    conv_suffix: bool = False,
) -> Path:
    """Write a synthetic checkpoint of ``arch`` to ``path``.

    ``conv_suffix`` spells conv names ``standardized_conv2d_<n>`` as some
    official files do, to exercise the reader's normalisation.
    """
    arrays = synthetic_arrays(arch, seed)
    if conv_suffix:
        arrays = {k.replace("/standardized_conv2d/", f"/standardized_conv2d_{i}/"): v for i, (k, v) in enumerate(arrays.items())}
    return write_npz_atomic(path, arrays)
