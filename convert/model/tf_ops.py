"""TensorFlow building blocks of :mod:`convert.model.tf_model`: shared constants, means in steps, weight standardisation.

Weight standardisation on either side of a convolution: the kernel's
(:func:`standardize_kernel`, once per kernel in float64 for the folded exports;
:func:`standardize_kernel_fused`, one fused op on every call of the SavedModels and
Keras on tensorflow) or the output's (:func:`conv_standardising_output`;
convert.model.smaller_side says when and why). Every constant comes from
:mod:`convert.model.numerics`.
"""

from __future__ import annotations

import weakref

import tensorflow as tf

from .numerics import WS_AXES, WS_EPS

#: Input channels of a kernel whose mean shifts it before the fused standardisation.
_SHIFT_INPUTS = 8

#: Per graph being traced, the names of the constants :func:`_const` made in it. Names, not tensors:
#: a value that referred to the graph would keep it alive through this weakly keyed table. Not in the
#: graph's collections (session 10 kept them there): TensorFlow exports a traced graph's collections
#: whenever it freezes it (``convert_variables_to_constants_v2``, as tf2onnx does) and warned twice per
#: ONNX variant that a table of tensors is not a collection it can serialise.
_CONSTANTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _const(value, dtype=tf.int32):
    """``tf.constant(value, dtype)``, made once per graph being traced and shared by every use.

    Each use of a Python value as an axis, shape or fill adds a Const node to a traced graph,
    and those repeats were most of the network's nodes; every node costs in tracing, saving,
    loading and graph optimisation (docs/performance.md). Made outside any control dependencies,
    so that a shared constant waits for nothing. Eagerly, a plain constant.
    """
    if tf.executing_eagerly():
        return tf.constant(value, dtype)
    graph = tf.compat.v1.get_default_graph()
    names = _CONSTANTS.setdefault(graph, {})
    key = (repr(value), dtype.name)
    if key in names:
        return graph.get_tensor_by_name(names[key])
    with tf.control_dependencies(None):
        constant = tf.constant(value, dtype)
    names[key] = constant.name
    return constant


def _mean_in_steps(x, axes):
    """``reduce_mean(x, axes, keepdims=True)`` as one reduction per axis, innermost axis first.

    Exact in arithmetic. In float32 it keeps accurate the runtimes that sum a
    multi-axis reduction in one running accumulator (XLA on CPU, which the
    exported SavedModels use; LiteRT; onnxruntime): a group norm over 56x56x8
    values otherwise accumulates rounding error over thousands of terms, worst
    on images whose group means dwarf their spread. Measured errors with and
    without: docs/inference.md and docs/deploy.md.
    """
    for axis in sorted(axes, reverse=True):
        x = tf.reduce_mean(x, axis=_const(axis), keepdims=True)
    return x


def standardize_kernel(k, eps: float = WS_EPS):
    """Weight standardisation over (H, W, I): ``(k - mean) * rsqrt(var + eps)``, in ``k``'s dtype.

    Any float dtype (the folded exports standardise in float64, once per kernel). The network's
    per-call standardisation is :func:`standardize_kernel_fused`.
    """
    k = k - _mean_in_steps(k, WS_AXES)
    return k * tf.math.rsqrt(_mean_in_steps(tf.square(k), WS_AXES) + eps)


#: Kernel dtypes given to TensorFlow's fused batch norm.
FUSED_DTYPES = (tf.float32,)
#: Kernel dtypes standardised in float32 and cast back. The fused op takes them, but its oneDNN
#: kernel for them exists only with AVX-512: on an AVX2-only CPU (an AMD EPYC) it aborts (Keras
#: under mixed precision did). It computes their statistics in float32 anyway.
HALF_DTYPES = (tf.float16, tf.bfloat16)


def standardize_kernel_fused(k, eps: float = WS_EPS):
    """:func:`standardize_kernel` of an HWIO kernel as one fused op, for every call of a network.

    Batch norm in training mode over an NHWC tensor normalises each channel by the mean and
    (biased) variance of the other three axes: on an HWIO kernel, each output channel over
    (H, W, I), which is weight standardisation (``WS_AXES``). One fused op (after a shift) instead of nine, with
    the op's own gradient (fine-tuning): the SavedModels (and Keras on TensorFlow) standardise
    every kernel on every call, the largest cost at batch 1 after the convolutions
    (docs/inference.md). The raw op, because ``tf.nn.fused_batch_norm`` raises any epsilon
    below 1.001e-5 to that (WS_EPS is 1e-10). float16 and bfloat16 kernels: in float32, cast
    back (``HALF_DTYPES``). Other dtypes (float64): the arithmetic of :func:`standardize_kernel`.
    """
    k = tf.convert_to_tensor(k)  # a variable read once
    if k.dtype in HALF_DTYPES:
        return tf.cast(standardize_kernel_fused(tf.cast(k, tf.float32), eps), k.dtype)
    if k.dtype not in FUSED_DTYPES:
        return standardize_kernel(k, eps)
    out = k.shape[-1]
    # The op's variance loses digits when a channel's mean dwarfs its spread (as in the synthetic
    # checkpoints; errors in docs/inference.md). Shifting each channel by the mean of a slice of
    # its inputs first changes nothing in arithmetic (the op subtracts its own mean; the
    # shift's gradient is zero) and keeps those digits.
    # k[:, :, :_SHIFT_INPUTS, :] (clamped to the kernel's inputs, known or not), from shared constants.
    every = 0b1011  # H, W and O whole
    first = tf.strided_slice(
        k, _const([0, 0, 0, 0]), _const([0, 0, _SHIFT_INPUTS, 0]), _const([1, 1, 1, 1]), begin_mask=every, end_mask=every
    )
    shift = tf.reduce_mean(first, axis=_const([0, 1, 2]), keepdims=True)
    shape = _const(k.shape.as_list()) if k.shape.is_fully_defined() else tf.shape(k)
    # As (H*W*I, 1, 1, O): oneDNN's kernel splits its work over the batch axis, which as
    # (H, W, I, O) is the kernel's height (1 for a 1x1 kernel); on an AVX2-only CPU that made
    # the op several times slower (docs/inference.md). The same statistics either way.
    rows = tf.reshape(k - tf.stop_gradient(shift), _const([-1, 1, 1, out]))
    standardized = tf.raw_ops.FusedBatchNormV3(
        x=rows,
        scale=_const([1.0] * out, tf.float32),
        offset=_const([0.0] * out, tf.float32),
        mean=_const([], tf.float32),
        variance=_const([], tf.float32),
        epsilon=eps,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )[0]
    return tf.reshape(standardized, shape)


def conv_valid(x, kernel, strides):
    """A VALID convolution of NHWC ``x`` with HWIO ``kernel``, as Keras' own ``convolution_op`` calls it (the same op)."""
    return tf.nn.convolution(x, kernel, strides, "VALID", data_format="NHWC", dilations=(1, 1))


def conv_standardising_output(x, kernel, strides, eps: float = WS_EPS):
    """VALID ``conv(x, standardize_kernel(kernel))`` with the standardisation applied to the output.

    ``(conv(x - c, k) - m * box(x - c)) * rsqrt(v + eps)``: ``m``, ``v`` the two-pass statistics
    of the raw kernel, ``c`` each image's mean, ``box`` each window's sum over its positions and
    input channels. The same outputs in arithmetic (convert.model.smaller_side); no standardised
    copy of the kernel is written. ``x``: NHWC, already padded; ``strides``: (height, width).
    """
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    axes = _const(list(WS_AXES))
    mean = tf.reduce_mean(kernel, axis=axes)
    var = tf.reduce_mean(tf.square(kernel - mean), axis=axes)
    # Centred inputs keep conv(x, k) from growing with the inputs' mean (a ReLU's outputs are never
    # negative) into a term that m * box(x) then cancels (docs/keras.md, "Fourth pass").
    x = x - tf.reduce_mean(x, axis=_const([1, 2, 3]), keepdims=True)
    sums = tf.reduce_sum(x, axis=_const(-1), keepdims=True)
    if (kh, kw) == (1, 1):
        box = sums if (sh, sw) == (1, 1) else sums[:, ::sh, ::sw, :]
    else:  # a convolution with ones: the windows' sums, and no product for grappler to reorder (below)
        box = conv_valid(sums, _const([[[[1.0]]] * kw] * kh, x.dtype), (sh, sw))
    # One product per operand: with two in a row (an average pool times the window's size, then
    # the mean) grappler's arithmetic optimiser reorders them where it knows the shapes, which
    # moved each rounding, and the subtraction magnified it: a SavedModel's signature and its
    # __call__ then differed by 3e-6 on the same images.
    return (conv_valid(x, kernel, (sh, sw)) - box * mean) * tf.math.rsqrt(var + _const(eps, x.dtype))
