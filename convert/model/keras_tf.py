"""The tensorflow backend's kernel for :class:`convert.model.keras_layers.StandardizedConv2D`.

Keras on tensorflow standardises every kernel on every call too (one fused op,
:func:`convert.model.tf_ops.standardize_kernel_fused`, the SavedModels' own),
and traces ``predict_on_batch`` at the call's shapes, so the jax backend's rule
applies as it is: a layer whose output is smaller than its kernel standardises
its output instead (:mod:`convert.model.smaller_side`: the rule, the arithmetic,
the accuracy). A trace with an unknown batch or size keeps the kernel's side.
The SavedModels are traced once for every shape and keep the fused op.
"""

from __future__ import annotations

import tensorflow as tf

from .smaller_side import output_side_by_default
from .tf_ops import conv_standardising_output, conv_valid, standardize_kernel_fused


def standardized_conv2d(inputs, kernel, strides: tuple[int, int], ws_eps: float, on_output: bool | None = None):
    """``inputs`` (NHWC, already padded) convolved VALID with ``kernel`` (HWIO) weight-standardised over (H, W, I).

    ``on_output``: apply the standardisation to the output (True) or to the kernel
    (False, the fused op); by default the shapes decide
    (:func:`convert.model.smaller_side.output_side_by_default`).
    """
    inputs, kernel = tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel)
    if on_output is None:
        on_output = output_side_by_default(inputs.shape, kernel.shape, strides, inputs.dtype.size)
    if not on_output:
        return conv_valid(inputs, standardize_kernel_fused(kernel, ws_eps), strides)
    return conv_standardising_output(inputs, kernel, strides, ws_eps)
