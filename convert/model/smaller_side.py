"""Which side of a weight-standardised convolution to standardise: the kernel, or the output where it is smaller.

Weight standardisation is an affine map per output channel ``o``,
``k_hat = (k - m_o) * r_o`` with ``r_o = 1 / sqrt(v_o + eps)``, and a
convolution is linear in its kernel::

    conv(x, k_hat)[..., o] = (conv(x, k)[..., o] - m_o * box(x)) * r_o

where ``box(x)`` is the sum of each window of ``x`` over its positions and input
channels (``x`` convolved with a kernel of ones, one output channel), ``x`` being
each image's inputs less their mean (which changes no output: ``k_hat`` sums to
zero over a window). The statistics are the same two-pass ones over the raw
kernel either way. Standardising the kernel writes a copy of it that the
convolution reads back, on every call (Keras keeps no standardised kernel between
calls on jax or tensorflow); standardising the output costs passes over the
output instead. So a layer whose output is smaller than its kernel (the deep
layers at small batches) standardises its output.

Accuracy: the subtraction cancels where a channel's mean is large against the
spread of its weights, more so the larger the kernel; centring the inputs takes
most of that away. Training cannot grow ``m_o``: a shift of one channel's
weights leaves the standardised kernel, hence the loss, unchanged, so no
gradient moves it (weight decay shrinks it). Every export checks its files
against the float64 reference either way (docs/keras.md, "Fourth pass").

Plain Python: the backends' kernels (:mod:`.keras_jax`, :mod:`.keras_tf`) share the rule.
"""

from __future__ import annotations


def standardise_output(batch: int, out_h: int, out_w: int, kernel_h: int, kernel_w: int, channels_in: int) -> bool:
    """Whether a layer standardises its output rather than its kernel: its output has fewer elements than its kernel.

    Both sides share the output channels, so the output has ``batch * out_h * out_w``
    values per channel against the kernel's ``kernel_h * kernel_w * channels_in``.
    """
    return batch * out_h * out_w < kernel_h * kernel_w * channels_in


def output_side_by_default(input_shape, kernel_shape, strides, itemsize: int) -> bool:
    """The decision for NHWC inputs (already padded) of ``input_shape`` and an HWIO kernel, VALID at ``strides``.

    From the shapes alone (static while a program is traced): the kernel's side when a
    dimension is unknown (``None``) or the inputs are half precision (``itemsize`` below
    4 bytes), whose rounding the output's side would grow; else :func:`standardise_output`.
    """
    n, h, w = tuple(input_shape)[:3]
    kh, kw, cin = tuple(kernel_shape)[:3]
    if None in (n, h, w) or itemsize < 4:
        return False
    sh, sw = strides
    return standardise_output(n, (h - kh) // sh + 1, (w - kw) // sw + 1, kh, kw, cin)
