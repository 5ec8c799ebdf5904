"""Inference-only forward passes with weight standardisation folded into the kernels.

LiteRT and ONNX artifacts are for inference only, so each standardised kernel
(:func:`convert.model.tf_ops.standardize_kernel`, with numerics.WS_EPS over
numerics.WS_AXES) is computed once, here, in float64, and stored: the graphs
never standardise per call. This is exact for inference, and it also spares
the LiteRT converter, which constant-folds the standardisation only for
kernels up to about 128 MiB (R152x4's 3x3x2048x2048 kernels would stay
computed at run time).

The graph itself is :class:`convert.model.tf_model.BiTResNetV2` built with
``weights=`` and ``standardized_kernels=True``: no copy of the forward pass.
"""

from __future__ import annotations

import numpy as np

from ..model.architecture import CONV, Architecture, parameter_count
from .target import OUTPUT_NAMES, VARIANT_STAGES, VARIANTS, images_spec, to_model_range


def is_standardized_kernel(key: str) -> bool:
    """Whether ``key`` is a weight-standardised conv kernel (every conv but the head)."""
    return key.endswith(f"/{CONV}/kernel")


def variant_bytes(arch: Architecture, variant: str, bytes_per_weight: int = 4) -> int:
    """Weight bytes of one variant, from the architecture's parameter count (nothing converted)."""
    n = parameter_count(arch)
    if variant == "feature_extraction":
        n -= arch.features * arch.classes + arch.classes
    return n * bytes_per_weight


def _standardized64(var) -> np.ndarray:
    import tensorflow as tf

    from ..model.tf_ops import standardize_kernel

    return standardize_kernel(tf.cast(var, tf.float64)).numpy()


def folded_arrays(net, exclude=()) -> dict[str, np.ndarray]:
    """Checkpoint key -> float32 array, conv kernels standardised (computed in float64, then rounded once).

    ``exclude``: keys left out (the kernels :func:`winograd_arrays` holds instead).
    """
    out = {}
    for key, var in net.variables_by_key.items():
        if key in exclude:
            continue
        out[key] = _standardized64(var).astype(np.float32) if is_standardized_kernel(key) else var.numpy()
    return out


def winograd_arrays(net, keys) -> dict[str, np.ndarray]:
    """Checkpoint key -> the :func:`~convert.model.winograd.transformed_kernel` of its standardised kernel.

    From the kernel standardised in float64 (as :func:`folded_arrays`), transformed, then rounded once.
    """
    from ..model.winograd import transformed_kernel

    return {k: transformed_kernel(_standardized64(net.variables_by_key[k])) for k in keys}


def forward_fn(net, input_range: str, weights, edge_pool_pad: bool = False, winograd=None):
    """``images -> {"logits": ..., "feature_vector": ...}`` over ``weights`` (key -> tensor), standardisation folded.

    Both variants' outputs (:data:`.target.OUTPUT_NAMES`) from one forward pass: LiteRT and ONNX
    convert it once and write each variant's file from it. ``images`` are float32 NHWC in
    ``input_range`` ("unit" or "symmetric"), rescaled inside; ``net`` lends its architecture
    and its build options (the padding knobs, so a mutated net stays mutated).
    ``edge_pool_pad``: BiTResNetV2's knob (a -inf root pool padding as copies of the edge rows and columns).
    ``winograd``: key -> transformed kernel, the layers convolved by Winograd's algorithm (LiteRT's graph).
    """
    folded = net.rebuilt(weights, standardized_kernels=True, edge_pool_pad=edge_pool_pad, winograd=winograd)

    def model_fn(images):
        stages = folded.stages(to_model_range(images, input_range))
        return {OUTPUT_NAMES[v]: stages[VARIANT_STAGES[v]] for v in VARIANTS}

    return model_fn


def concrete_with_constants(net, input_range: str, arrays: dict[str, np.ndarray], winograd=None):
    """A concrete function ``images -> {output: tensor}`` (both variants) whose folded weights are captured variables.

    Returns ``(concrete_function, holder)``; ``holder`` owns the variables
    (the LiteRT converter freezes them into constants). The graph holds no
    infinite constant (``edge_pool_pad``: a -inf root pool padding is copies of
    the edge rows and columns), so the converter need not scan every weight for
    infinities (convert.export.tflite). ``winograd``: key -> transformed kernel
    (:func:`winograd_arrays`), captured the same way.
    """
    import tensorflow as tf

    holder = tf.Module(name="folded")
    holder.weights = {k: tf.Variable(a, trainable=False, name=f"w{i}") for i, (k, a) in enumerate(arrays.items())}
    n = len(arrays)
    holder.winograd = {k: tf.Variable(a, trainable=False, name=f"w{n + i}") for i, (k, a) in enumerate((winograd or {}).items())}
    forward = forward_fn(net, input_range, holder.weights, edge_pool_pad=True, winograd=holder.winograd)
    fn = tf.function(forward, input_signature=[images_spec()], autograph=False)
    return fn.get_concrete_function(), holder


def function_with_weight_inputs(net, input_range: str, arrays: dict[str, np.ndarray]):
    """A tf.function ``(images, w0, w1, ...) -> {output: tensor}`` (both variants): the weights as arguments.

    Returns ``(function, input_signature, keys)``; argument ``w<i>`` is
    checkpoint key ``keys[i]``. The graph stays small whatever the model's
    size (no frozen constants, so no 2 GB protobuf limit on the way).
    """
    import tensorflow as tf

    keys = list(arrays)
    signature = [images_spec()] + [tf.TensorSpec(arrays[k].shape, tf.float32, name=f"w{i}") for i, k in enumerate(keys)]

    def fn(images, *ws):
        return forward_fn(net, input_range, dict(zip(keys, ws, strict=True)))(images)

    return tf.function(fn, input_signature=signature, autograph=False), signature, keys
