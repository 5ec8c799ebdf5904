"""The parity inputs: deterministic random images, then structured ones that expose border and stride bugs."""

from __future__ import annotations

import numpy as np

#: The structured test images, after the random ones.
STRUCTURED = ("flat", "gradient_h", "gradient_d", "checker_1", "checker_7")


def image_size(resolution) -> tuple[int, int]:
    """(height, width) of a resolution given as an int (square) or (height, width)."""
    if isinstance(resolution, int):
        return resolution, resolution
    h, w = resolution
    return int(h), int(w)


def size_text(resolution) -> str:
    """``HxW``, as logs and cards name an image size."""
    h, w = image_size(resolution)
    return f"{h}x{w}"


def structured_images(height: int, width: int) -> np.ndarray:
    """The STRUCTURED images, float32 (len(STRUCTURED), H, W, 3) in [-1, 1].

    flat: a constant colour; gradient_h: a left-to-right ramp; gradient_d: a
    diagonal ramp, one direction per channel; checker_1: a one-pixel +-1
    checkerboard (the highest frequency: any shift of the stride-2 sampling
    grid changes everything); checker_7: 7-pixel cells, so cell edges fall on
    odd offsets and reach the image border mid-cell.
    """
    yy, xx = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    iy, ix = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    flat = np.broadcast_to(np.array([0.6, -0.2, 0.1]), (height, width, 3))
    grad_h = np.stack([xx, 0.5 * xx, -xx], axis=-1)
    grad_d = np.stack([(xx + yy) / 2, (xx - yy) / 2, -(xx + yy) / 2], axis=-1)
    c1 = np.where((iy + ix) % 2 == 0, 1.0, -1.0)
    c7 = np.where((iy // 7 + ix // 7) % 2 == 0, 1.0, -1.0)
    checker_1 = np.stack([c1, -c1, c1], axis=-1)
    checker_7 = np.stack([c7, c7, -c7], axis=-1)
    return np.stack([flat, grad_h, grad_d, checker_1, checker_7]).astype(np.float32)


def make_inputs(resolution, batch: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Deterministic parity inputs: ``batch`` uniform random images then the STRUCTURED ones.

    ``resolution`` is an int (square) or (height, width). Returns float32 NHWC
    images in [-1, 1] of shape (batch + 5, H, W, 3) and one name per image
    (``random_0``.., then the STRUCTURED names).
    """
    h, w = image_size(resolution)
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-1.0, 1.0, size=(batch, h, w, 3)).astype(np.float32)
    images = np.concatenate([rand, structured_images(h, w)])
    names = [f"random_{i}" for i in range(batch)] + list(STRUCTURED)
    assert images.min() >= -1.0 and images.max() <= 1.0
    return images, names
