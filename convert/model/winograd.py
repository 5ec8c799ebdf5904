"""Winograd's F(2x2, 3x3): a 3x3 stride-1 convolution with zero padding 1, in fewer multiplications.

The LiteRT export's graph computes the stride-1 3x3 convolutions of its wider layers this way
(:func:`winograd_layers`); every other graph convolves directly. Each 2x2 tile of the output is
``A^T [(G g G^T) * (B^T d B)] A`` for the 4x4 input tile ``d`` around it and the 3x3 kernel
``g``: 16 products per tile and channel pair where the direct convolution does 36
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016, section 4.1,
whose matrices these are). Every transform is exact in arithmetic; in float32 the result
differs from the direct convolution by about 2e-6 (relative L2 over R50x1's logits).

Written with LiteRT operators that XNNPACK takes at any input size: the input transform as
per-channel (depthwise) convolutions with stride 2 and TensorFlow's ``SAME`` padding, whose
4-tap windows start one row (column) before each output tile on even and odd sides alike;
the products as 16 1x1 convolutions; the output transform as sums and a depth-to-space. An
odd side gives one output row (column) too many, cropped to the input's size: the one
operator computed at run time, and XNNPACK's partitions end there (docs/inference.md,
"Winograd convolutions"). The row and column transforms are separate (4 + 16 depthwise
convolutions, one stride each: 1.04-1.09x faster at R50x1's batch 8 than 16 4x4 ones):
TensorFlow's own CPU kernel takes only equal strides there, so this graph is for the LiteRT
converter and runs in LiteRT (as its tests do), not in TensorFlow.
"""

from __future__ import annotations

import numpy as np

#: B^T: the input transform, one row per component (taps over the 4-row tile).
BT = ((1.0, 0.0, -1.0, 0.0), (0.0, 1.0, 1.0, 0.0), (0.0, -1.0, 1.0, 0.0), (0.0, 1.0, 0.0, -1.0))
#: G: the kernel transform.
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
#: A^T: the output transform (two output rows from the four components).
AT = ((1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, -1.0))
#: Layers with fewer input channels than this keep the direct convolution: their input and output
#: transforms (memory-bound, linear in the channels) cost what the products save (quadratic in
#: them). Measured on R50x1 at 224 (docs/inference.md): block 1's 64-channel layers were
#: 0.80-1.03x the direct convolution alone and added nothing to the network; 128 and more, 1.2-1.9x.
MIN_CHANNELS = 128
#: The key suffix of a transformed kernel beside its checkpoint key (the LiteRT graph's weights).
SUFFIX = "#winograd"


def transformed_kernel(kernel) -> np.ndarray:
    """(3, 3, C, K) -> (4, 4, C, K) float32: ``G g G^T`` per channel pair, computed in float64, rounded once."""
    g = np.array(G)
    return np.einsum("ai,ijck,bj->abck", g, np.asarray(kernel, np.float64), g).astype(np.float32)


def winograd_layers(arch, min_channels: int = MIN_CHANNELS) -> list[str]:
    """The checkpoint keys of ``arch``'s kernels that the LiteRT graph convolves by Winograd's algorithm.

    Every unit's middle (3x3) convolution whose stride is 1 (:func:`~.numerics.unit_stride`)
    and whose input has at least ``min_channels`` channels.
    """
    from .architecture import CONV, unit_prefix
    from .numerics import unit_stride

    return [
        f"{unit_prefix(block, unit)}b/{CONV}/kernel"
        for block, unit in arch.iter_units()
        if unit_stride(block, unit) == 1 and arch.mid_width(block) >= min_channels
    ]


def _combine(coefficients, terms):
    """``sum(c * t)`` for coefficients in {-1, 0, 1}, as adds and subtractions only."""
    out = None
    for c, t in zip(coefficients, terms, strict=True):
        if c == 0:
            continue
        if out is None:
            out = t if c > 0 else -t
        else:
            out = out + t if c > 0 else out - t
    return out


def _taps(x, row, axis: int):
    """One component of B^T along ``axis`` (1: rows, 2: columns): a depthwise conv, 4 taps, stride 2, SAME."""
    import tensorflow as tf

    channels = x.shape[-1]
    taps = np.asarray(row, np.float32)[:, None] if axis == 1 else np.asarray(row, np.float32)[None, :]
    kernel = np.ascontiguousarray(np.broadcast_to(taps[:, :, None, None], (*taps.shape, channels, 1)))
    strides = [1, 2, 1, 1] if axis == 1 else [1, 1, 2, 1]
    return tf.nn.depthwise_conv2d(x, tf.constant(kernel, x.dtype), strides, "SAME")


def winograd_conv(x, u):
    """``x`` (N, H, W, C) convolved with the kernel whose :func:`transformed_kernel` is ``u``: stride 1, zero padding 1."""
    import tensorflow as tf

    rows = [_taps(x, r, 1) for r in BT]
    v = [[_taps(t, c, 2) for c in BT] for t in rows]
    m = [[tf.nn.conv2d(v[i][j], u[i, j][None, None], 1, "VALID") for j in range(4)] for i in range(4)]
    half = [[_combine([a[i] for i in range(4)], [m[i][j] for i in range(4)]) for j in range(4)] for a in AT]
    y = [_combine(b, half[dy]) for dy in range(2) for b in AT]  # (dy, dx) order: depth_to_space's
    y = tf.nn.depth_to_space(tf.concat(y, -1), 2)
    h, w = x.shape[1], x.shape[2]
    if h is not None and w is not None:  # a traced size: crop only an odd side, and statically
        return y if h % 2 == 0 and w % 2 == 0 else y[:, :h, :w]
    size = tf.shape(x)
    return tf.slice(y, [0, 0, 0, 0], tf.stack([-1, size[1], size[2], -1]))
