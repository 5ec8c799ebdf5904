"""The jax backend's kernel for :class:`convert.model.keras_layers.StandardizedConv2D`.

Keras on jax runs every call as one ``jax.jit`` program whose arguments are the
model's variables, so a standardised kernel cannot be kept between calls (the
torch backend keeps one, :mod:`convert.model.keras_torch`): every call computes
it again, and writing that copy and reading it back is a pass over all the
weights. Where a layer's output is smaller than its kernel (the deep layers at
small batches) the standardisation is applied to the output instead. Weight
standardisation is an affine map per output channel ``o``,
``k_hat = (k - m_o) * r_o`` with ``r_o = 1 / sqrt(v_o + eps)``, and a
convolution is linear in its kernel::

    conv(x, k_hat)[..., o] = (conv(x, k)[..., o] - m_o * box(x)) * r_o

where ``box(x)`` is the sum of each window of ``x`` over its positions and input
channels (``x`` convolved with a kernel of ones, one output channel), ``x`` being
each image's inputs less their mean (which changes no output: ``k_hat`` sums to
zero over a window). The statistics are the same two-pass ones over the raw
kernel either way. The choice depends only on the layer's shapes, never on the
weights (:func:`standardise_output`).

Accuracy: the subtraction cancels where a channel's mean is large against the
spread of its weights, more so the larger the kernel; centring the inputs takes
most of that away. Training cannot grow ``m_o``: a shift of one channel's
weights leaves the standardised kernel, hence the loss, unchanged, so no
gradient moves it (weight decay shrinks it). Every export checks its files
against the float64 reference either way (docs/keras.md, "Fourth pass").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .numerics import WS_AXES

_DIMS = ("NHWC", "HWIO", "NHWC")


def standardise_output(batch: int, out_h: int, out_w: int, kernel_h: int, kernel_w: int, channels_in: int) -> bool:
    """Whether a layer standardises its output rather than its kernel: its output has fewer elements than its kernel.

    Both sides share the output channels, so the output has ``batch * out_h * out_w``
    values per channel against the kernel's ``kernel_h * kernel_w * channels_in``.
    """
    return batch * out_h * out_w < kernel_h * kernel_w * channels_in


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
    (False); by default :func:`standardise_output` decides from the shapes, and
    the kernel when a dimension is unknown or the inputs are half precision (whose
    rounding the output's side would grow).
    """
    kh, kw, cin, _ = kernel.shape
    sh, sw = strides
    if on_output is None:
        n, h, w, _ = inputs.shape
        exact = None not in (n, h, w) and jnp.dtype(inputs.dtype).itemsize >= 4
        on_output = exact and standardise_output(n, (h - kh) // sh + 1, (w - kw) // sw + 1, kh, kw, cin)
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
