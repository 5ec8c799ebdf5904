"""BiT ResNetV2 as a Keras 3 functional model, beside the TF graph and the Flax reference.

Built from :mod:`convert.model.keras_layers` and Keras' own layers only (no Lambda
layers, so ``load_model`` works with ``safe_mode`` on), with every constant
from :mod:`convert.model.numerics`: weight-standardised convolutions, group norm
(``GN_GROUPS``, ``GN_EPS``, two-pass variance, with the ReLU that follows it), explicit symmetric zero padding
then VALID on every padded conv (the conv layer's ``pad``; never ``padding="same"``), the root max-pool
padded as the checkpoint's code pads it (``pool_pad``: zeros, or -inf for
big_vision's ``distill/`` files; :data:`convert.model.numerics.CODE_POOL_PADDING`), the stride on the 3x3 conv and on the projection. Imports
keras and numpy only, so it builds on any backend.

Layer names follow :func:`convert.model.mapping.keras_path_for` (``root_conv``,
``block1_unit01_a_gn``, ``block1_unit01_a_proj``, ..., ``pre_head_gn``,
``head``); weights are assigned through the mapping rows, both sides checked
before any weight is set. Every weight is trainable (BiT has no batch-norm
statistics); ``model.trainable = False`` freezes them all.

The mutation knob (parity tests only; the default is the correct model), the
same as :class:`convert.model.tf_model.BiTResNetV2`'s: ``strided_padding="same"``
uses Keras ``padding="same"`` on the strided padded convs (pads (0, 1) on even
inputs).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from . import numerics as nx
from .architecture import Architecture
from .keras_layers import ConstantPadding2D, GroupNorm, HostConstant, InputRange, StandardizedConv2D
from .mapping import assign_keras, mapping_rows

STRIDED_PADDING = nx.STRIDED_PADDINGS


def _zeros() -> HostConstant:
    """The initial value of a kernel or bias, a new object for every weight.

    Stored in the config, so also used by load_model before the saved weights
    arrive. Zeros, not random: an unloaded model must never look plausible.
    Made with numpy (keras_layers.HostConstant): the backend's own initialisers
    compile once per shape on the JAX backend. One object per weight: Keras
    saves an initialiser that several layers share as a "shared object" whose
    id is a memory address, which would make the config differ between runs.
    """
    return HostConstant(0.0)


class _Builder:
    def __init__(self, strided_padding: str, pool_pad: str):
        if strided_padding not in STRIDED_PADDING:
            raise ValueError(f"strided_padding must be one of {STRIDED_PADDING}, got {strided_padding!r}")
        if pool_pad not in nx.POOL_PADS:
            raise ValueError(f"pool_pad must be one of {nx.POOL_PADS}, got {pool_pad!r}")
        self.strided_padding, self.pool_pad = strided_padding, pool_pad

    def conv(self, x, name: str, filters: int, kernel: int, stride: int = 1, pad: int = 0):
        if pad and stride > 1 and self.strided_padding == "same":
            return StandardizedConv2D(filters, kernel, strides=stride, padding="same", kernel_initializer=_zeros(), name=name)(x)
        layer = StandardizedConv2D(
            filters, kernel, strides=stride, padding="valid", pad=pad, kernel_initializer=_zeros(), name=name
        )
        return layer(x)

    @staticmethod
    def gn_relu(x, name: str):
        return GroupNorm(relu=True, name=name)(x)

    def root(self, x, width: int):
        x = self.conv(x, "root_conv", width, nx.ROOT_KERNEL, nx.ROOT_STRIDE, nx.ROOT_PAD)
        x = ConstantPadding2D(nx.POOL_PAD, nx.POOL_PAD_VALUES[self.pool_pad], name="root_pool_pad")(x)
        return keras.layers.MaxPooling2D(nx.POOL_WINDOW, nx.POOL_STRIDE, padding="valid", name="root_pool")(x)

    def unit(self, x, arch: Architecture, block: int, unit: int):
        p = f"block{block}_unit{unit:02d}_"
        stride = nx.unit_stride(block, unit)
        mid, out = arch.mid_width(block), arch.out_width(block)
        y = self.gn_relu(x, f"{p}a_gn")
        shortcut = self.conv(y, f"{p}a_proj", out, 1, stride) if unit == 1 else x
        y = self.conv(y, f"{p}a_conv", mid, 1)
        y = self.gn_relu(y, f"{p}b_gn")
        y = self.conv(y, f"{p}b_conv", mid, nx.MID_KERNEL, stride, nx.MID_PAD)
        y = self.gn_relu(y, f"{p}c_gn")
        y = self.conv(y, f"{p}c_conv", out, 1)
        return keras.layers.Add(name=f"{p}add")([y, shortcut])


def build_keras_models(
    arch: Architecture,
    arrays: Mapping[str, np.ndarray] | None = None,
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    strided_padding: str = "explicit",
    pool_pad: str = "zero",
) -> tuple[keras.Model, keras.Model]:
    """(classifier, feature extractor) for ``arch``, sharing one set of layers and weights.

    Both take float32 ``(batch, height, width, 3)`` of any batch and size in
    ``input_range`` (rescaled inside the model to the weights' [-1, 1]); the
    classifier returns logits ``(batch, classes)``, the feature extractor the
    pre-logits vector ``(batch, 2048 * width)``. With ``arrays`` (checkpoint
    key -> array) the weights are assigned through the mapping rows after the
    two-sided check (:func:`convert.model.mapping.assign_keras`); without, they keep
    Keras' initial values (tests of the structure only).
    """
    b = _Builder(strided_padding, pool_pad)
    lo, hi = (float(v) for v in input_range)
    images = keras.Input((None, None, 3), dtype="float32", name="images")
    x = images if (lo, hi) == nx.INPUT_RANGE else InputRange(lo, hi, name="input_range")(images)
    x = b.root(x, arch.root_width)
    for block, n in enumerate(arch.units, start=1):
        for unit in range(1, n + 1):
            x = b.unit(x, arch, block, unit)
    x = b.gn_relu(x, "pre_head_gn")
    pre = keras.layers.GlobalAveragePooling2D(name="pre_logits")(x)
    logits = keras.layers.Dense(arch.classes, kernel_initializer=_zeros(), bias_initializer=_zeros(), name="head")(pre)
    classifier = keras.Model(images, logits, name="bit_classification")
    features = keras.Model(images, pre, name="bit_feature_extraction")
    if arrays is not None:
        assign_keras(classifier, arrays, mapping_rows(arch))
    return classifier, features


def layer_output_elements(arch: Architecture, height: int, width: int) -> int:
    """Elements in all layer outputs of the functional model for one ``height`` x ``width`` image.

    An eager call of a Keras functional model keeps every layer's output until
    it returns, so this is what one image costs such a call on top of the
    weights; the Keras check sizes its batches by it. Mirrors the layers of
    :class:`_Builder` (input range, root, every unit, the head), one term each.
    """

    def conv(size: int, kernel: int, stride: int, pad: int) -> int:
        return (size + 2 * pad - kernel) // stride + 1

    h, w = height, width
    total = 2 * 3 * h * w  # images, input range (each conv pads inside its own call)
    h, w = conv(h, nx.ROOT_KERNEL, nx.ROOT_STRIDE, nx.ROOT_PAD), conv(w, nx.ROOT_KERNEL, nx.ROOT_STRIDE, nx.ROOT_PAD)
    total += arch.root_width * (h * w + (h + 2 * nx.POOL_PAD) * (w + 2 * nx.POOL_PAD))  # root conv, pool pad
    h, w = conv(h, nx.POOL_WINDOW, nx.POOL_STRIDE, nx.POOL_PAD), conv(w, nx.POOL_WINDOW, nx.POOL_STRIDE, nx.POOL_PAD)
    total += arch.root_width * h * w  # root pool
    for block, unit in arch.iter_units():
        stride = nx.unit_stride(block, unit)
        mid, out = arch.mid_width(block), arch.out_width(block)
        total += arch.unit_in_width(block, unit) * h * w  # a_gn (with its relu)
        total += 2 * mid * h * w  # a_conv, b_gn
        h, w = conv(h, nx.MID_KERNEL, stride, nx.MID_PAD), conv(w, nx.MID_KERNEL, stride, nx.MID_PAD)
        total += 2 * mid * h * w + 2 * out * h * w + (out * h * w if unit == 1 else 0)  # b_conv, c_gn; c_conv, add; proj
    return total + arch.features * h * w + arch.features + arch.classes  # pre-head gn; pre_logits; head
