"""The custom Keras 3 layers of bitconvert's BiT models: import this module before loading a ``.keras`` file.

Usage, on any backend (``KERAS_BACKEND=jax|tensorflow|torch``), with ``safe_mode`` left on::

    import keras
    import convert.model.keras_layers  # registers the layers below (package "bitconvert")

    model = keras.saving.load_model("classification.keras")

This module imports keras, numpy and :mod:`convert.model.numerics` (plain Python)
and nothing else: no TensorFlow, JAX or torch beyond the backend keras itself
loads (on torch, the layers' first call imports :mod:`convert.model.keras_torch`,
the torch kernels; on jax, :mod:`convert.model.keras_jax`; on TensorFlow,
:mod:`convert.model.keras_tf`). Every constant defaults to :mod:`convert.model.numerics` and is stored in the
layer's config, so a saved model carries the epsilons it was checked with.

The layers:

* :class:`StandardizedConv2D`: a bias-free ``Conv2D`` whose kernel is weight
  standardised (``(k - mean) / sqrt(var + eps)`` over H, W, I) through Keras'
  ``convolution_op`` hook, after its own symmetric zero padding (``pad``);
* :class:`GroupNorm`: group norm with BiT's two-pass variance, reduced axis by
  axis into per-channel statistics, and the ReLU that follows it (``relu``). Keras' ``GroupNormalization`` goes through ``ops.moments``, which the
  torch backend computes as ``E[x^2] - E[x]^2``: that cancels catastrophically
  where a group's mean dwarfs its spread (flat images), and one reduction over
  (H, W, C) loses accuracy on JAX (see :func:`_group_mean`), hence a layer of our own;
* :class:`InputRange`: the affine map from the export's input range ([0, 1]
  by default) to the [-1, 1] the weights were trained on;
* :class:`HostConstant`: the initial value of every weight, made with numpy
  (overwritten by the saved weights on load);
* :class:`ConstantPadding2D`: symmetric padding with a constant: the root
  max-pool's padding (zeros, or -inf for big_vision's ``distill/`` checkpoints).

On the TensorFlow backend a kernel is standardised by one fused op
(:func:`convert.model.tf_ops.standardize_kernel_fused`, the SavedModels' own).
On the jax and TensorFlow backends a layer whose output is smaller than its kernel
standardises its output instead (:mod:`convert.model.smaller_side`; the kernels in
:mod:`convert.model.keras_jax` and :mod:`convert.model.keras_tf`). On the torch backend the layers run :mod:`convert.model.keras_torch`'s kernels
(torch's own convolutions and group norm, kernels standardised once while they
are unchanged); fewer layers per unit because Keras' per-layer dispatch costs
more than a small layer's arithmetic there. ``.keras`` files written with
separate ``ZeroPadding2D`` and ``ReLU`` layers load and run as before.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .numerics import GN_EPS, GN_GROUPS, INPUT_RANGE, WS_AXES, WS_EPS, pixels_to_model_range

PACKAGE = "bitconvert"
_register = keras.saving.register_keras_serializable(package=PACKAGE)


def _on(backend: str) -> bool:
    """Keras runs on ``backend`` (on torch the layers use :mod:`convert.model.keras_torch`'s kernels)."""
    return keras.backend.backend() == backend


@_register
class HostConstant(keras.initializers.Initializer):
    """Fills a weight with ``value``, made with numpy on the host.

    Keras' own ``zeros`` and ``ones`` are backend operations, and on the JAX
    backend each new shape compiles one: loading R50x1 compiled 29 of them,
    more than half of the load time.
    """

    def __init__(self, value: float = 0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return np.full(tuple(shape), self.value, dtype=keras.backend.standardize_dtype(dtype or "float32"))

    def get_config(self):
        return {"value": self.value}


@_register
class StandardizedConv2D(keras.layers.Conv2D):
    """Bias-free Conv2D with weight standardisation: ``(k - mean) / sqrt(mean((k - mean)^2) + eps)`` over (H, W, I).

    ``pad``: zeros added on each side of H and W before the convolution (with
    ``padding="valid"``: BiT's explicit symmetric padding, never ``"same"``).
    """

    def __init__(self, filters, kernel_size, *, ws_eps: float = WS_EPS, pad: int = 0, **kwargs):
        kwargs.setdefault("use_bias", False)
        if kwargs["use_bias"]:
            raise ValueError("StandardizedConv2D has no bias")
        super().__init__(filters, kernel_size, **kwargs)
        self.ws_eps, self.pad = float(ws_eps), int(pad)
        if self.pad and (self.padding != "valid" or self.data_format != "channels_last"):
            raise ValueError(f"{self.name}: pad goes with padding='valid' and channels_last")

    def convolution_op(self, inputs, kernel):
        plain = self.padding == "valid" and self.data_format == "channels_last" and self.dilation_rate == (1, 1)
        if _on("torch") and plain and self.groups == 1:
            from .keras_torch import standardized_conv2d  # NCHW memory under NHWC shapes; cached kernels

            return standardized_conv2d(inputs, ops.convert_to_tensor(kernel), self.strides, self.ws_eps, self.pad)
        if self.pad:
            inputs = _pad_hw(inputs, self.pad)
        if _on("jax") and plain and self.groups == 1:
            from .keras_jax import standardized_conv2d  # the kernel's or the output's side, whichever is smaller

            return standardized_conv2d(inputs, ops.convert_to_tensor(kernel), self.strides, self.ws_eps)
        if _on("tensorflow") and plain and self.groups == 1:
            from .keras_tf import standardized_conv2d  # the kernel's (the SavedModels' fused op) or the output's side

            return standardized_conv2d(inputs, kernel, self.strides, self.ws_eps)
        if _on("tensorflow"):
            from .tf_ops import standardize_kernel_fused  # the SavedModels' fused op, not ~7 passes

            k = standardize_kernel_fused(kernel, self.ws_eps)
        else:
            k = kernel - ops.mean(kernel, axis=WS_AXES, keepdims=True)
            k = k / ops.sqrt(ops.mean(ops.square(k), axis=WS_AXES, keepdims=True) + self.ws_eps)
        return super().convolution_op(inputs, k)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = 2 * self.pad
        return super().compute_output_shape((n, None if h is None else h + grow, None if w is None else w + grow, c))

    def get_config(self):
        return {**super().get_config(), "ws_eps": self.ws_eps, "pad": self.pad}


def _group_mean(t, groups: int):
    """The mean of each channel's group over (H, W, channels-in-group) of NHWC ``t``, as (N, 1, 1, C).

    Per channel over W, then H, then over the group's channels: one axis at a
    time, which keeps float32 accurate where one reduction over (H, W, C) did
    not (XLA's CPU reduction accumulates long sums in order, and a block1 group
    at 160 px sums 12,800 values: R50x1 at 160 had a block4 error of 5.3e-4 on
    the JAX backend, over the 4.0e-4 tolerance; axis by axis, 4.2e-5). Only the
    (N, C) statistics are reshaped, never the activations (the per-channel form
    of :meth:`convert.model.tf_model.BiTResNetV2._group_norm`).
    """
    channels = t.shape[-1]
    s = ops.mean(ops.mean(t, axis=2, keepdims=True), axis=1, keepdims=True)
    s = ops.mean(ops.reshape(s, (-1, groups, channels // groups)), axis=2, keepdims=True)
    return ops.reshape(s * ops.ones((channels // groups,), s.dtype), (-1, 1, 1, channels))


@_register
class GroupNorm(keras.layers.Layer):
    """Group norm over (H, W, channels-in-group) of NHWC inputs, two-pass variance, as ``x * scale + (beta -
    mean * scale)`` with ``scale = gamma / sqrt(var + eps)`` (then a ReLU with ``relu=True``: BiT's
    pre-activations, one layer instead of two).

    Statistics are computed in float32 at least (float16/bfloat16 inputs are
    upcast, like Keras' own GroupNormalization); the output has the input's dtype.
    """

    def __init__(self, groups: int = GN_GROUPS, epsilon: float = GN_EPS, relu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)
        self.epsilon = float(epsilon)
        self.relu = bool(relu)
        self.autocast = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"{self.name}: {channels} channels do not split into {self.groups} groups")
        self.gamma = self.add_weight(shape=(channels,), name="gamma", initializer=HostConstant(1.0), autocast=False)
        self.beta = self.add_weight(shape=(channels,), name="beta", initializer=HostConstant(0.0), autocast=False)

    def call(self, inputs):
        dtype = inputs.dtype
        x = inputs if keras.backend.standardize_dtype(dtype) in ("float32", "float64") else ops.cast(inputs, "float32")
        if _on("torch"):
            from .keras_torch import group_norm  # torch's own group norm on NCHW memory

            y = group_norm(x, ops.cast(self.gamma, x.dtype), ops.cast(self.beta, x.dtype), self.groups, self.epsilon, self.relu)
            return ops.cast(y, dtype)
        # Per-channel statistics, the activations never reshaped: XLA (JAX) and TensorFlow's graph
        # run this form 10-20% faster than the grouped 5-D reshape (docs/keras.md).
        # Not centred first: one pass over the activations fewer (as convert.model.tf_model's).
        mean = _group_mean(x, self.groups)
        scale = ops.cast(self.gamma, x.dtype) * ops.rsqrt(_group_mean(ops.square(x - mean), self.groups) + self.epsilon)
        y = x * scale + (ops.cast(self.beta, x.dtype) - mean * scale)
        return ops.cast(ops.relu(y) if self.relu else y, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon, "relu": self.relu}


@_register
class InputRange(keras.layers.Layer):
    """Maps pixels from ``[low, high]`` to the model's range (``numerics.pixels_to_model_range``)."""

    def __init__(self, low: float = 0.0, high: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = float(low), float(high)
        if self.high <= self.low:
            raise ValueError(f"input range [{self.low}, {self.high}] is empty")

    def call(self, inputs):
        return pixels_to_model_range(inputs, self.low, self.high)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high, "model_range": list(INPUT_RANGE)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("model_range", None)  # informative: the map always targets numerics.INPUT_RANGE
        return cls(**config)


def _pad_hw(x, p: int, value: float = 0.0):
    """NHWC ``x`` padded by ``p`` on each side of H and W with ``value``."""
    return ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=value)


@_register
class ConstantPadding2D(keras.layers.Layer):
    """Pads H and W of NHWC inputs by ``padding`` on each side with ``value``."""

    def __init__(self, padding: int = 1, value: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.padding, self.value = int(padding), float(value)

    def call(self, inputs):
        p = self.padding
        if _on("torch"):
            from .keras_torch import pad2d  # keeps the NCHW memory of the other torch kernels

            return pad2d(inputs, p, self.value)
        return _pad_hw(inputs, p, self.value)

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = 2 * self.padding
        return (n, None if h is None else h + grow, None if w is None else w + grow, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "value": self.value}
