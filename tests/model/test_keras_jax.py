"""The jax backend's standardised convolution: either side of the standardisation is the float64 one, and the rule picks by size."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from convert.model.keras_jax import standardise_output, standardized_conv2d
from convert.model.numerics import WS_AXES, WS_EPS


def _float64_conv(x, kernel, strides):
    """The weight-standardised VALID convolution in float64, window by window with numpy."""
    k = kernel.astype(np.float64)
    k = k - k.mean(axis=WS_AXES, keepdims=True)
    k = k / np.sqrt((k * k).mean(axis=WS_AXES, keepdims=True) + WS_EPS)
    kh, kw = k.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (kh, kw), axis=(1, 2))
    windows = windows[:, :: strides[0], :: strides[1]]  # (n, ho, wo, cin, kh, kw)
    return np.einsum("nhwcij,ijco->nhwo", windows, k)


def _case(kernel_size, channels_in, offset, seed=0):
    """Inputs like a unit's (non-negative, after a ReLU) and a kernel whose channels' means are ``offset`` spreads away."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(0.0, 1.0, (2, 9, 9, channels_in)), 0.0).astype(np.float32)
    spread = 1.0 / np.sqrt(kernel_size * kernel_size * channels_in)
    kernel = rng.normal(0.0, spread, (kernel_size, kernel_size, channels_in, 8)) + offset * spread * rng.normal(size=8)
    return x, kernel.astype(np.float32)


@pytest.mark.parametrize("kernel_size,strides", [(1, (1, 1)), (1, (2, 2)), (3, (1, 1)), (3, (2, 2))])
@pytest.mark.parametrize("on_output", [False, True])
def test_either_side_is_the_float64_standardised_convolution(kernel_size, strides, on_output):
    x, kernel = _case(kernel_size, 16, offset=3.0)
    got = np.asarray(standardized_conv2d(x, kernel, strides, WS_EPS, on_output=on_output))
    want = _float64_conv(x, kernel, strides)
    assert got.shape == want.shape
    # float32 rounding (1e-7 for a 1x1, 5e-6 for a 3x3 kernel here: the non-negative inputs meet a
    # standardised kernel that sums to zero, so its rounding shows), about the same on the output's
    # side; without its window sums that side would be off by 100%.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-5


def test_the_outputs_side_is_as_accurate_as_the_kernels_on_a_wide_layer():
    """3x3 x 512 inputs, non-negative, channels' means 3 spreads away: where the output's side cancels most."""
    x, kernel = _case(3, 512, offset=3.0)
    want = _float64_conv(x, kernel, (1, 1))
    error = {
        side: np.linalg.norm(np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS, on_output=side)) - want)
        / np.linalg.norm(want)
        for side in (False, True)
    }
    # Centred inputs keep the output's side within the kernel's rounding (without: 5x the kernel's error here).
    assert error[True] < 1.5 * error[False], error


def test_gradients_reach_the_kernel_the_same_way_on_either_side():
    x, kernel = _case(3, 16, offset=1.0)
    weights = np.random.default_rng(1).normal(size=(2, 7, 7, 8)).astype(np.float32)

    def loss(k, on_output):
        return (standardized_conv2d(x, k, (1, 1), WS_EPS, on_output=on_output) * weights).sum()

    # Under jit, as Keras' fit runs it (tests/export/test_keras_export.py runs the fit itself, on every backend).
    grad = jax.jit(jax.grad(loss), static_argnums=1)
    kernel_side, output_side = (np.asarray(grad(kernel, side)) for side in (False, True))
    assert np.linalg.norm(output_side - kernel_side) / np.linalg.norm(kernel_side) < 1e-4


def test_the_smaller_side_is_standardised():
    # R50x1 at 224, batch 1: the root conv's output (112 x 112) dwarfs its 7 x 7 x 3 kernel; block4's
    # 3x3 conv has 7 x 7 outputs per channel against 3 x 3 x 512 weights.
    assert not standardise_output(1, 112, 112, 7, 7, 3)
    assert standardise_output(1, 7, 7, 3, 3, 512)
    assert not standardise_output(8, 14, 14, 1, 1, 1024)  # 1568 outputs per channel against 1024 weights
    assert not standardise_output(1, 4, 4, 1, 1, 16)  # a tie keeps the kernel's side


def test_the_shapes_decide_by_default():
    x, kernel = _case(3, 16, offset=3.0)  # 2 x 7 x 7 outputs per channel against 3 x 3 x 16 weights
    assert standardise_output(2, 7, 7, 3, 3, 16)
    default = np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS))
    assert np.array_equal(default, np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS, on_output=True)))
    assert not np.array_equal(default, np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS, on_output=False)))


def test_half_precision_keeps_the_kernels_side():
    x, kernel = _case(3, 16, offset=3.0)
    x, kernel = x.astype(np.float16), kernel.astype(np.float16)
    default = np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS))
    assert np.array_equal(default, np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS, on_output=False)))
    assert not np.array_equal(default, np.asarray(standardized_conv2d(x, kernel, (1, 1), WS_EPS, on_output=True)))
