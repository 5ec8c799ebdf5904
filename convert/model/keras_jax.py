"""The jax backend's kernel for :class:`convert.model.keras_layers.StandardizedConv2D`.

Keras on jax runs every call as one ``jax.jit`` program whose arguments are the
model's variables, so a standardised kernel cannot be kept between calls (the
torch backend keeps one, :mod:`convert.model.keras_torch`): every call computes
it again, and writing that copy and reading it back is a pass over all the
weights. Where a layer's output is smaller than its kernel (the deep layers at
small batches) the standardisation is applied to the output instead: the rule,
its arithmetic and its accuracy are in :mod:`convert.model.smaller_side`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .numerics import WS_AXES
from .smaller_side import output_side_by_default

_DIMS = ("NHWC", "HWIO", "NHWC")


def _convolve(x, kernel, strides):
    """A VALID convolution of NHWC ``x`` with HWIO ``kernel``; a 1x1 one as a matrix product over the channels."""
    sh, sw = strides
    if kernel.shape[:2] == (1, 1):
        # XLA on the CPU runs R50x1's 1x1 convolutions ~15% faster as dots, to the same bits.
        return jnp.matmul(x if (sh, sw) == (1, 1) else x[:, ::sh, ::sw, :], kernel[0, 0])
    return jax.lax.conv_general_dilated(x, kernel, (sh, sw), "VALID", dimension_numbers=_DIMS)


def standardized_conv2d(inputs, kernel, strides: tuple[int, int], ws_eps: float, on_output: bool | None = None):
    """``inputs`` (NHWC, already padded) convolved VALID with ``kernel`` (HWIO) weight-standardised over (H, W, I).

    ``on_output``: apply the standardisation to the output (True) or to the kernel
    (False); by default the shapes decide (:func:`convert.model.smaller_side.output_side_by_default`).
    """
    kh, kw, _, _ = kernel.shape
    sh, sw = strides
    if on_output is None:
        on_output = output_side_by_default(inputs.shape, kernel.shape, strides, jnp.dtype(inputs.dtype).itemsize)
    mean = jnp.mean(kernel, axis=WS_AXES, keepdims=True)
    centred = kernel - mean
    var = jnp.mean(jnp.square(centred), axis=WS_AXES, keepdims=True)
    if not on_output:
        return _convolve(inputs, centred / jnp.sqrt(var + ws_eps), strides)
    # Each image's inputs less their mean: the same outputs in arithmetic (a standardised kernel sums
    # to zero over a window), and it keeps conv(x, k) from growing with the inputs' mean (a ReLU's
    # outputs are never negative) into a term that m * box(x) then cancels (docs/keras.md).
    x = inputs - jnp.mean(inputs, axis=(1, 2, 3), keepdims=True)
    window = jax.lax.reduce_window(jnp.sum(x, axis=-1, keepdims=True), 0.0, jax.lax.add, (1, kh, kw, 1), (1, sh, sw, 1), "VALID")
    return (_convolve(x, kernel, strides) - window * mean[0, 0]) * jax.lax.rsqrt(var[0, 0] + ws_eps)
