"""Keras' standardised convolution on jax and on tensorflow: either side of the standardisation is the float64 one, and the rule picks by size."""

from __future__ import annotations

import numpy as np
import pytest

from convert.model.numerics import WS_AXES, WS_EPS
from convert.model.smaller_side import output_side_by_default, standardise_output


def _jax_grad(conv, x, weights, on_output):
    import jax

    def loss(k, side):
        return (conv(x, k, (1, 1), WS_EPS, on_output=side) * weights).sum()

    # Under jit, as Keras' fit runs it (tests/export/test_keras_export.py runs the fit itself, on every backend).
    return lambda kernel: np.asarray(jax.jit(jax.grad(loss), static_argnums=1)(kernel, on_output))


def _tf_grad(conv, x, weights, on_output):
    import tensorflow as tf

    @tf.function(autograph=False)  # traced, as Keras' fit runs it
    def grad(kernel):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            loss = tf.reduce_sum(conv(tf.constant(x), kernel, (1, 1), WS_EPS, on_output=on_output) * weights)
        return tape.gradient(loss, kernel)

    return lambda kernel: grad(tf.constant(kernel)).numpy()


@pytest.fixture(params=["jax", "tensorflow"])
def backend(request):
    """(the backend's standardized_conv2d, a maker of its kernel gradient)."""
    if request.param == "jax":
        from convert.model.keras_jax import standardized_conv2d

        return standardized_conv2d, _jax_grad
    from convert.model.keras_tf import standardized_conv2d

    return standardized_conv2d, _tf_grad


def _run(conv, x, kernel, strides, on_output=None):
    return np.asarray(conv(x, kernel, strides, WS_EPS, on_output=on_output))


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
def test_either_side_is_the_float64_standardised_convolution(backend, kernel_size, strides, on_output):
    conv, _ = backend
    x, kernel = _case(kernel_size, 16, offset=3.0)
    got = _run(conv, x, kernel, strides, on_output)
    want = _float64_conv(x, kernel, strides)
    assert got.shape == want.shape
    # float32 rounding (1e-7 for a 1x1, 5e-6 for a 3x3 kernel here: the non-negative inputs meet a
    # standardised kernel that sums to zero, so its rounding shows), about the same on the output's
    # side; without its window sums that side would be off by 100%.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-5


def test_the_outputs_side_is_as_accurate_as_the_kernels_on_a_wide_layer(backend):
    """3x3 x 512 inputs, non-negative, channels' means 3 spreads away: where the output's side cancels most."""
    from convert.model.keras_jax import standardized_conv2d as plain  # the kernel's side in plain two-pass float32

    conv, _ = backend
    x, kernel = _case(3, 512, offset=3.0)
    want = _float64_conv(x, kernel, (1, 1))

    def error(fn, side):
        return np.linalg.norm(_run(fn, x, kernel, (1, 1), side) - want) / np.linalg.norm(want)

    # Centred inputs keep the output's side within the kernel's float32 rounding (without: 5x it on
    # jax, 12x on tensorflow). The bound is jax's kernel side on both backends: tensorflow's fused,
    # shifted op rounds differently (less here, more on a kernel whose means are small).
    assert error(conv, True) < 1.5 * error(plain, False), (error(conv, True), error(plain, False))


def test_gradients_reach_the_kernel_the_same_way_on_either_side(backend):
    conv, make_grad = backend
    x, kernel = _case(3, 16, offset=1.0)
    weights = np.random.default_rng(1).normal(size=(2, 7, 7, 8)).astype(np.float32)
    kernel_side, output_side = (make_grad(conv, x, weights, side)(kernel) for side in (False, True))
    assert np.linalg.norm(output_side - kernel_side) / np.linalg.norm(kernel_side) < 1e-4


def test_the_smaller_side_is_standardised():
    # R50x1 at 224, batch 1: the root conv's output (112 x 112) dwarfs its 7 x 7 x 3 kernel; block4's
    # 3x3 conv has 7 x 7 outputs per channel against 3 x 3 x 512 weights.
    assert not standardise_output(1, 112, 112, 7, 7, 3)
    assert standardise_output(1, 7, 7, 3, 3, 512)
    assert not standardise_output(8, 14, 14, 1, 1, 1024)  # 1568 outputs per channel against 1024 weights
    assert not standardise_output(1, 4, 4, 1, 1, 16)  # a tie keeps the kernel's side


def test_unknown_dimensions_and_half_precision_keep_the_kernels_side():
    assert output_side_by_default((2, 9, 9, 16), (3, 3, 16, 8), (1, 1), 4)
    assert not output_side_by_default((None, 9, 9, 16), (3, 3, 16, 8), (1, 1), 4)
    assert not output_side_by_default((2, None, 9, 16), (3, 3, 16, 8), (1, 1), 4)
    assert not output_side_by_default((2, 9, 9, 16), (3, 3, 16, 8), (1, 1), 2)


def test_the_shapes_decide_by_default(backend):
    conv, _ = backend
    x, kernel = _case(3, 16, offset=3.0)  # 2 x 7 x 7 outputs per channel against 3 x 3 x 16 weights
    assert standardise_output(2, 7, 7, 3, 3, 16)
    default = _run(conv, x, kernel, (1, 1))
    assert np.array_equal(default, _run(conv, x, kernel, (1, 1), True))
    assert not np.array_equal(default, _run(conv, x, kernel, (1, 1), False))


def test_half_precision_keeps_the_kernels_side(backend):
    conv, _ = backend
    x, kernel = _case(3, 16, offset=3.0)
    x, kernel = x.astype(np.float16), kernel.astype(np.float16)
    default = _run(conv, x, kernel, (1, 1))
    assert np.array_equal(default, _run(conv, x, kernel, (1, 1), False))
    assert not np.array_equal(default, _run(conv, x, kernel, (1, 1), True))


def test_a_trace_of_unknown_shape_keeps_the_kernels_side():
    """tensorflow: a function traced for any batch and size convolves the fused op's kernel, as the SavedModels do."""
    import tensorflow as tf

    from convert.model.keras_tf import standardized_conv2d

    x, kernel = _case(3, 16, offset=3.0)
    traced = tf.function(lambda images: standardized_conv2d(images, kernel, (1, 1), WS_EPS), autograph=False)
    concrete = traced.get_concrete_function(tf.TensorSpec([None, None, None, 16], tf.float32))
    ops = {op.type for op in concrete.graph.get_operations()}
    assert "FusedBatchNormV3" in ops and "AvgPool" not in ops
    # Judged against float64 as the eager calls are: the graph's convolution may run another kernel
    # than the eager one (on an AVX-512 Zen 4 they were a few float32 ulps apart, not bit-equal).
    want = _float64_conv(x, kernel, (1, 1))
    assert np.linalg.norm(concrete(tf.constant(x)).numpy() - want) / np.linalg.norm(want) < 2e-5
