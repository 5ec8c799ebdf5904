"""The TensorFlow backend's kernel for :class:`convert.model.keras_layers.StandardizedConv2D`.

Weight standardisation as one fused kernel: an HWIO kernel read as a tensor
whose channels are the output channels is exactly what batch norm in training
mode normalises, per channel over (H, W, I). ``tf.raw_ops`` and not
``tf.compat.v1.nn.fused_batch_norm``: the wrapper raises epsilon to at least
1.001e-5, and ``WS_EPS`` is 1e-10.

The kernel goes in as a 5-D ``NDHWC`` tensor (a leading axis of 1): TensorFlow's
x86 builds hand a 4-D fused batch norm to oneDNN, whose statistics are less
exact (the tensorflow backend's error against the authors' outputs went from
within 3.2e-5 to 8.4e-5), and keep TensorFlow's own two-pass kernel for 5-D
(docs/keras.md). Imported only when Keras runs on TensorFlow.
"""

from __future__ import annotations

import tensorflow as tf

#: Kernel dtypes TensorFlow's fused batch norm takes (statistics in float32).
FUSED_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


def standardize_kernel(kernel, ws_eps: float):
    """The HWIO ``kernel`` weight-standardised over (H, W, I): ``(k - mean) / sqrt(var + ws_eps)``, in its dtype.

    Differentiable (TensorFlow's batch-norm gradient), so training reaches the variable.
    """
    kernel = tf.convert_to_tensor(kernel)
    if kernel.dtype not in FUSED_DTYPES:  # float64: the plain two-pass arithmetic
        k = kernel - tf.reduce_mean(kernel, axis=(0, 1, 2), keepdims=True)
        return k * tf.math.rsqrt(tf.reduce_mean(tf.square(k), axis=(0, 1, 2), keepdims=True) + ws_eps)
    channels = kernel.shape[-1]
    empty = tf.zeros([0], tf.float32)
    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=kernel[None],
        scale=tf.ones([channels], tf.float32),
        offset=tf.zeros([channels], tf.float32),
        mean=empty,
        variance=empty,
        epsilon=ws_eps,
        is_training=True,
        data_format="NDHWC",
    )
    return y[0]
