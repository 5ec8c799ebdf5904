"""Winograd's F(2x2, 3x3) (convert.model.winograd), run in LiteRT, against the direct convolution in float64."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from conftest import R50X1

from convert.model.architecture import checkpoint_layout
from convert.model.winograd import transformed_kernel, winograd_conv, winograd_layers


def _direct(x, k):
    x, k = tf.constant(x, tf.float64), tf.constant(k, tf.float64)
    return tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), k, 1, "VALID").numpy()


def _litert(x, u, any_size: bool):
    """``winograd_conv(x, u)`` converted by the LiteRT converter (for any input size, or for ``x``'s) and run."""
    from ai_edge_litert.interpreter import Interpreter

    shape = [None, None, None, x.shape[-1]] if any_size else list(x.shape)
    fn = tf.function(lambda t: winograd_conv(t, tf.constant(u)), input_signature=[tf.TensorSpec(shape, tf.float32)])
    content = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()]).convert()
    it = Interpreter(model_content=content)
    it.resize_tensor_input(0, x.shape)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x.astype(np.float32))
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("any_size", [False, True], ids=["fixed-size", "any-size"])
@pytest.mark.parametrize("side", [(1, 1), (2, 3), (5, 4), (7, 7), (8, 6)])
def test_winograd_is_the_direct_convolution(side, any_size):
    # Odd sides take the crop: computed at run time in a graph for any size (the export's),
    # static at a known size. The kernel is exact (k = 1/8 multiples transform exactly) and
    # the input float32, so what is left is float32 arithmetic: about 1e-7 of the largest output.
    rng = np.random.default_rng(sum(side))
    x = rng.normal(size=(2, *side, 3)).astype(np.float32)
    k = np.round(rng.normal(size=(3, 3, 3, 5)) * 8) / 8
    got, want = _litert(x, transformed_kernel(k), any_size), _direct(x, k)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 2e-6 * np.max(np.abs(want)), np.max(np.abs(got - want))


@pytest.mark.parametrize("wrong", ["flipped kernel", "rows as columns"])
def test_a_wrong_transform_is_caught(wrong):
    rng = np.random.default_rng(0)
    x, k = rng.normal(size=(1, 6, 7, 2)).astype(np.float32), rng.normal(size=(3, 3, 2, 2))
    u = transformed_kernel(k[::-1] if wrong == "flipped kernel" else k.transpose(1, 0, 2, 3))
    assert np.max(np.abs(_litert(x, u, True) - _direct(x, k))) > 0.1


def test_winograd_layers_are_the_wide_stride_1_3x3_ones():
    layout = checkpoint_layout(R50X1)
    keys = winograd_layers(R50X1)
    # R50x1: blocks 2-4 (128-512 channels), every unit but the first (which has the block's stride).
    assert len(keys) == 3 + 5 + 2
    assert all(layout[k][:2] == (3, 3) and layout[k][2] >= 128 and "/unit01/" not in k for k in keys)
    assert not [k for k in keys if "/block1/" in k]
    # Every channel count: block 1's first unit too, whose stride is 1 (numerics.BLOCK_STRIDES).
    narrow = winograd_layers(R50X1, min_channels=1)
    assert len(narrow) == 3 + 3 + 5 + 2 and "resnet/block1/unit01/b/standardized_conv2d/kernel" in narrow
    assert not [k for k in narrow if "/unit01/" in k and "/block1/" not in k]
