"""The two forward passes: structure, names, dynamic shapes, and agreement on a small layout."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import tensorflow as tf
from conftest import R50X1, R152X2, TINY, group_norm_case, grouped_norm_f64

from convert.checkpoint import Checkpoint
from convert.model.architecture import CONV, Architecture, checkpoint_layout
from convert.model.flax_model import make_apply, make_unitwise_apply, param_shapes
from convert.model.mapping import flax_params, mapping_rows
from convert.model.numerics import (
    POOL_PAD,
    POOL_STRIDE,
    POOL_WINDOW,
    ROOT_KERNEL,
    ROOT_PAD,
    ROOT_STRIDE,
)
from convert.model.tf_model import BiTResNetV2, build_tf_model
from convert.model.tf_ops import standardize_kernel, standardize_kernel_fused
from convert.parity import STAGES, make_inputs
from convert.synthetic import synthetic_arrays

#: The event JAX records for each XLA compilation (jax.monitoring).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

SPEC = [tf.TensorSpec([None, None, None, 3], tf.float32)]


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = tuple(v.shape)
    return out


def _out_size(n: int) -> list[int]:
    """Spatial size after stem, block1..4 for input size n (explicit symmetric padding)."""
    stem = (n + 2 * ROOT_PAD - ROOT_KERNEL) // ROOT_STRIDE + 1
    stem = (stem + 2 * POOL_PAD - POOL_WINDOW) // POOL_STRIDE + 1
    sizes = [stem, stem]
    for _ in range(3):
        sizes.append((sizes[-1] + 2 - 3) // 2 + 1)
    return sizes


@pytest.fixture(scope="module")
def tiny_ckpt():
    return Checkpoint(None, TINY, synthetic_arrays(TINY, seed=3))


@pytest.fixture(scope="module")
def tiny_fn(tiny_ckpt):
    model = build_tf_model(tiny_ckpt)
    return model, tf.function(model.stages, input_signature=SPEC)


@pytest.mark.parametrize("arch", [TINY, R50X1], ids=lambda a: a.name)
def test_tf_variables_carry_the_checkpoint_names(arch):
    model = BiTResNetV2(arch)
    layout = checkpoint_layout(arch)
    assert list(model.variables_by_key) == list(layout)
    for key, var in model.variables_by_key.items():
        assert var.name == f"{key}:0"  # '/' kept verbatim, ':0' appended by TF
        assert tuple(var.shape) == layout[key]
        assert var.dtype == tf.float32 and var.trainable
    assert len(model.trainable_variables) == len(layout)
    assert model.arch == arch


def test_tf_model_starts_at_zero_and_loads_everything(tiny_ckpt):
    assert all(not np.any(v.numpy()) for v in BiTResNetV2(TINY).variables_by_key.values())
    model = build_tf_model(tiny_ckpt)
    for key, var in model.variables_by_key.items():
        np.testing.assert_array_equal(var.numpy(), tiny_ckpt.arrays[key])


def test_mutation_knobs_are_checked():
    with pytest.raises(ValueError, match="strided_padding"):
        BiTResNetV2(TINY, strided_padding="valid")
    with pytest.raises(ValueError, match="pool_pad"):
        BiTResNetV2(TINY, pool_pad="edge")


@pytest.mark.parametrize("arch", [TINY, R50X1, R152X2], ids=lambda a: a.name)
def test_flax_param_tree_uses_the_authors_names(arch):
    tree = _flat(param_shapes(arch))
    rows = mapping_rows(arch)
    assert tree == {r.flax_path: r.flax_shape for r in rows}
    assert "block1/unit01/conv_proj/kernel" in tree and "block1/unit02/conv_proj/kernel" not in tree
    assert tree["norm-pre-head/scale"] == (arch.features,)


def test_tf_traces_once_for_any_batch_and_size(tiny_fn):
    model, fn = tiny_fn
    for shape in [(1, 33, 47, 3), (2, 64, 64, 3), (3, 32, 41, 3), (1, 97, 35, 3)]:
        out = fn(tf.zeros(shape))
        assert list(out) == list(STAGES)
        sizes_h, sizes_w = _out_size(shape[1]), _out_size(shape[2])
        for i, stage in enumerate(STAGES[:5]):
            assert tuple(out[stage].shape[:3]) == (shape[0], sizes_h[i], sizes_w[i])
        assert tuple(out["pre_logits"].shape) == (shape[0], 2048)
        assert tuple(out["logits"].shape) == (shape[0], 10)
    assert fn.experimental_get_tracing_count() == 1


@pytest.fixture(scope="module")
def saved_graph(tiny_fn):
    """The network as the SavedModels trace it (convert.export.savedmodel.trace_features): its graph."""
    from convert.export.savedmodel import trace_features

    model, _ = tiny_fn
    return trace_features(model, "symmetric").graph


def _standardisations(graph, variables) -> tuple[list[str], list[str]]:
    """(the kernels a fused op standardises, the others) of ``graph``'s convolutions, by checkpoint key."""
    keys = {
        internal.op.name: key for key, v in variables.items() for external, internal in graph.captures if external is v.handle
    }
    fused, raw = [], []
    for conv in (op for op in graph.get_operations() if op.type == "Conv2D" and op.inputs[1].op.type != "Const"):
        ancestors = _ancestors(conv.inputs[1].op, control=False)
        (read,) = [op for op in ancestors if op.type == "ReadVariableOp"]
        key = keys[read.inputs[0].op.name]
        (fused if any(op.type == "FusedBatchNormV3" for op in ancestors) else raw).append(key)
    return fused, raw


def test_the_savedmodels_standardise_block4_on_the_outputs_side(tiny_fn, saved_graph):
    model, fn = tiny_fn
    fused, raw = _standardisations(saved_graph, model.variables_by_key)
    kernels = [k for k in checkpoint_layout(TINY) if k.endswith(f"{CONV}/kernel") and "/head/" not in k]
    assert sorted(raw) == sorted(k for k in kernels if "/block4/" in k)
    assert sorted(fused) == sorted(k for k in kernels if "/block4/" not in k)
    live_fused, live_raw = _standardisations(fn.get_concrete_function().graph, model.variables_by_key)
    assert live_raw == [] and sorted(live_fused) == sorted(kernels)  # the live parity graph keeps the kernels' side


@pytest.mark.parametrize("shape", [(1, 64, 64, 3), (9, 40, 56, 3)])  # block 4's output the smaller side, then not
def test_the_savedmodels_features_are_the_float64_ones(tiny_ckpt, tiny_fn, shape):
    from convert.export.savedmodel import trace_features
    from convert.parity import reference_outputs

    model, _ = tiny_fn
    x = np.random.default_rng(5).uniform(-1, 1, shape).astype(np.float32)
    want = reference_outputs(tiny_ckpt, x, float32=False).f64["pre_logits"]
    got = trace_features(model, "symmetric")(tf.constant(x)).numpy()
    # Measured 1.1e-5 and 7.9e-6 on a Zen 3 (the kernels' side everywhere: 2.4e-6 and 2.1e-6), 3.2e-5
    # and 2.8e-5 on an AVX-512 Zen 4, whose oneDNN convolutions (brgemm, avx512_core) round otherwise
    # (1.25e-5 and 7.8e-6 there with TF_ENABLE_ONEDNN_OPTS=0): TINY's synthetic block-4 kernels have
    # channel means several spreads wide, which the output's side cancels, so it shows each CPU's
    # rounding (convert.model.smaller_side); a wrong window sum or statistic is off by 1e-1 and more.
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


@pytest.mark.parametrize("which", ["live", "savedmodel"])
def test_each_kernel_is_standardised_only_once_its_unit_starts(tiny_fn, saved_graph, which):
    """Otherwise the executor standardises every kernel up front and holds them all (a second copy of the weights)."""
    _, fn = tiny_fn
    graph = fn.get_concrete_function().graph if which == "live" else saved_graph
    # Not the window sums of block 4's output side (a convolution with a constant kernel of ones).
    convs = [op for op in graph.get_operations() if op.type == "Conv2D" and op.inputs[1].op.type != "Const"]
    assert convs
    for conv in convs:
        kernel_reads = [op for op in _ancestors(conv.inputs[1].op, control=False) if op.type == "ReadVariableOp"]
        assert len(kernel_reads) == 1, conv.name
        gates = kernel_reads[0].control_inputs
        assert len(gates) == 1, f"{conv.name}: its kernel is read without waiting for anything"
        upstream = _ancestors(conv.inputs[0].op)
        assert gates[0] in upstream, f"{conv.name}: its kernel waits for {gates[0].name}, not for its own input's producers"
        # Between the gate and this conv's input: at most the unit's two earlier convs.
        between = [op for op in upstream if op in convs and gates[0] in _ancestors(op)]
        assert len(between) <= 2, f"{conv.name}: standardised {len(between)} convs early"


def test_fused_standardisation_is_the_two_pass_one():
    """The network's per-call op (FusedBatchNormV3) against the reference arithmetic in float64, values and gradients."""
    rng = np.random.default_rng(0)
    for shape, offset in (((3, 3, 16, 8), 0.0), ((1, 1, 64, 32), 0.3), ((7, 7, 3, 16), -2.0)):
        k = tf.Variable(rng.normal(offset, 0.05, shape).astype(np.float32))
        weights = tf.constant(rng.normal(size=shape).astype(np.float32))  # a loss whose gradient is not trivial
        grads = []
        for fn in (standardize_kernel_fused, lambda v: standardize_kernel(tf.cast(v, tf.float64))):
            with tf.GradientTape() as tape:
                out = fn(k)
                loss = tf.reduce_sum(tf.cast(out, tf.float64) * tf.cast(weights, tf.float64))
            grads.append(tape.gradient(loss, k).numpy())
            if fn is standardize_kernel_fused:
                fused = out.numpy()
            else:
                exact = out.numpy()
        assert fused.dtype == np.float32
        np.testing.assert_allclose(fused, exact, rtol=0, atol=2e-5 * np.abs(exact).max(), err_msg=str(shape))
        np.testing.assert_allclose(grads[0], grads[1], rtol=0, atol=1e-3 * np.abs(grads[1]).max(), err_msg=str(shape))
    # A channel whose mean dwarfs its spread keeps its digits (unshifted, the op is several times over the bound).
    k = rng.normal(0.0, 1.0, (3, 3, 64, 16)) * 0.01 + rng.uniform(-0.5, 0.5, 16)
    exact = standardize_kernel(tf.constant(k, tf.float64)).numpy()
    fused = standardize_kernel_fused(tf.constant(k.astype(np.float32))).numpy()
    assert np.linalg.norm(fused - exact) / np.linalg.norm(exact) < 2e-6
    # Other dtypes: float16 in float32 and cast back (HALF_DTYPES), float64 through the plain arithmetic.
    half = standardize_kernel_fused(tf.constant(k.astype(np.float16))).numpy()
    assert half.dtype == np.float16 and np.abs(half - exact).max() < 1e-2 * np.abs(exact).max()
    double = standardize_kernel_fused(tf.constant(k)).numpy()
    np.testing.assert_array_equal(double, exact)
    # Each output channel on its own: the mean and variance of (H, W, I) (numerics.WS_AXES), not of the whole kernel.
    k = np.stack([np.full((3, 3, 4), 1.0), np.arange(36.0).reshape(3, 3, 4)], axis=-1).astype(np.float32)
    out = standardize_kernel_fused(tf.constant(k)).numpy()
    np.testing.assert_allclose(out[..., 1].mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[..., 1].std(), 1.0, atol=1e-5)
    assert np.all(out[..., 0] == 0.0)


def test_fused_standardisation_gives_the_op_the_kernel_as_rows():
    """oneDNN's batch norm splits its work over the batch axis: the kernel goes in as (H*W*I, 1, 1, O), not as HWIO.

    As HWIO the batch axis is the kernel's height, 1 for a 1x1 kernel: on an AVX2-only CPU the
    op ran several times slower (docs/inference.md). The same statistics either way.
    """
    for shape in ((1, 1, 64, 32), (3, 3, 16, 8)):
        fn = tf.function(standardize_kernel_fused).get_concrete_function(tf.TensorSpec(shape, tf.float32))
        ops = [op for op in fn.graph.get_operations() if op.type == "FusedBatchNormV3"]
        assert [op.inputs[0].shape.as_list() for op in ops] == [[shape[0] * shape[1] * shape[2], 1, 1, shape[3]]]
        assert fn.outputs[0].shape.as_list() == list(shape)


def test_fused_standardisation_traced_without_the_kernel_shape_is_the_same():
    """Traced for unknown height, width and inputs (fewer inputs than the shift's slice, too): the eager values."""
    rng = np.random.default_rng(1)
    for shape in ((7, 7, 3, 64), (3, 3, 16, 8)):
        k = tf.constant(rng.normal(0.5, 1.0, shape).astype(np.float32))
        spec = tf.TensorSpec([None, None, None, shape[3]], tf.float32)
        traced = tf.function(standardize_kernel_fused).get_concrete_function(spec)
        np.testing.assert_array_equal(traced(k).numpy(), standardize_kernel_fused(k).numpy())


#: A child run with oneDNN (TensorFlow's CPU kernels) capped at AVX2, as on an AVX2-only AMD EPYC.
_AVX2_CHILD = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    from convert.model.tf_ops import standardize_kernel, standardize_kernel_fused

    rng = np.random.default_rng(0)
    k = rng.normal(0.0, 1.0, (3, 3, 64, 16)) * 0.01 + rng.uniform(-0.5, 0.5, 16)
    # Bounds: float32 the main test's; the half types their output's rounding (2**-11, 2**-8).
    for dtype, bound in ((tf.float32, 2e-6), (tf.float16, 1e-3), (tf.bfloat16, 8e-3)):
        given = tf.constant(k, dtype)
        exact = standardize_kernel(tf.cast(given, tf.float64)).numpy()  # of the kernel as rounded to dtype
        out = standardize_kernel_fused(given)
        assert out.dtype == dtype, (dtype, out.dtype)
        err = np.linalg.norm(tf.cast(out, tf.float64).numpy() - exact) / np.linalg.norm(exact)
        assert err < bound, (dtype.name, err)
        print(dtype.name, "ok")
    """
)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA cap is x86's")
def test_fused_standardisation_runs_every_dtype_on_a_cpu_without_avx512():
    """oneDNN has no float16/bfloat16 batch norm without AVX-512; such kernels are standardised in float32 instead.

    Given to the fused op as they are, they abort on an AVX2-only CPU (Keras under mixed precision did).
    """
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _AVX2_CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["float32", "ok", "float16", "ok", "bfloat16", "ok"]


def _ancestors(op, control: bool = True):
    """Every op ``op`` depends on by data (and by control, with ``control``), ``op`` included."""
    seen, todo = {op}, [op]
    while todo:
        current = todo.pop()
        for parent in [t.op for t in current.inputs] + (list(current.control_inputs) if control else []):
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_call_and_features_trace_with_unknown_dims(tiny_fn):
    model, stages = tiny_fn
    call = tf.function(model.__call__, input_signature=SPEC)
    features = tf.function(model.features, input_signature=SPEC)
    assert call.get_concrete_function().structured_outputs.shape.as_list() == [None, 10]
    assert features.get_concrete_function().structured_outputs.shape.as_list() == [None, 2048]
    x, _ = make_inputs((35, 41), 2)
    ref = stages(x)
    np.testing.assert_array_equal(call(x).numpy(), ref["logits"].numpy())
    np.testing.assert_array_equal(features(x).numpy(), ref["pre_logits"].numpy())


def test_eager_stages_are_the_traced_ones(tiny_fn):
    """An export runs the live model eagerly (orchestrator.run_live_model): the traced graph's values."""
    model, stages = tiny_fn
    x, _ = make_inputs((35, 41), 2)
    traced, eager = stages(x), model.stages(tf.constant(x))
    for stage in STAGES:
        a, b = eager[stage].numpy(), traced[stage].numpy()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=stage)


def test_a_traced_network_holds_each_constant_once(tiny_fn):
    """Axes, shapes and fills are one Const node each per graph, not one per use (tf_ops._const)."""
    model, _ = tiny_fn
    fd = tf.function(model.features, input_signature=SPEC).get_concrete_function().function_def
    consts = [(n.attr["dtype"].type, n.attr["value"].tensor.SerializeToString()) for n in fd.node_def if n.op == "Const"]
    assert consts and len(consts) == len(set(consts))


def test_shared_constants_go_with_their_graph():
    """The table of the constants a trace shares (names, weakly keyed by graph) never keeps a traced graph alive."""
    import gc
    import weakref

    from convert.model.tf_ops import _const

    graphs = []
    for _ in range(3):
        fn = tf.function(lambda x: x + tf.cast(_const([1, 2, 3]), tf.float32))
        graphs.append(weakref.ref(fn.get_concrete_function(tf.TensorSpec([3])).graph))
        del fn
    gc.collect()
    assert [g() for g in graphs] == [None, None, None]


def test_freezing_a_traced_network_logs_no_warning(tiny_fn):
    """Freezing the traced network (as tf2onnx does before converting it) exports its graph's collections:
    nothing of ours may sit there that TensorFlow cannot serialise and warns about on the user's stderr."""
    import logging

    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model, _ = tiny_fn
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        frozen = convert_variables_to_constants_v2(tf.function(model.features, input_signature=SPEC).get_concrete_function())
    finally:
        logger.removeHandler(handler)
    assert any(n.op == "Const" for n in frozen.graph.as_graph_def().node)
    assert [r.getMessage() for r in records] == []


@pytest.mark.parametrize("size", [(33, 47), (64, 64)])
def test_tf_matches_flax_on_a_small_layout(tiny_ckpt, tiny_fn, size):
    _, fn = tiny_fn
    x, _ = make_inputs(size, 1)
    tf_out = fn(x)
    jax_out = make_apply(TINY)(flax_params(tiny_ckpt.arrays, TINY), x)
    for stage in STAGES:
        a, b = tf_out[stage].numpy(), np.asarray(jax_out[stage])
        assert a.shape == b.shape, stage
        # Loose here: the calibrated comparison (against float64) is in test_parity.
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * np.abs(b).max(), err_msg=stage)


@contextlib.contextmanager
def compilations():
    """The XLA compilations JAX reports (jax.monitoring) while the block runs."""
    import jax

    seen: list[str] = []

    def listener(event, _secs, **_kw):
        if event == COMPILE_EVENT:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("side", [7, 8])
def test_a_1x1_std_conv_is_the_valid_convolution(stride, side):
    """StdConv runs 1x1 kernels as a matrix product: the same values as the convolution it stands for."""
    from jax import lax

    from convert.model.flax_model import StdConv, standardize

    rng = np.random.default_rng(side + stride)
    x = rng.standard_normal((2, side, side + 1, 5))
    conv = StdConv(3, 1, stride)
    with jax.enable_x64(True):
        params = {"params": {"kernel": rng.standard_normal((1, 1, 5, 3))}}
        got = np.asarray(conv.apply(params, x))
        want = np.asarray(
            lax.conv_general_dilated(
                x, standardize(params["params"]["kernel"]), (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        )
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_jax_compiles_once_per_input_shape(tiny_ckpt):
    arch = Architecture((1, 1, 1, 1), 1, 7)  # a fresh jit cache
    arrays = synthetic_arrays(arch, 0)
    apply = make_apply(arch)
    params = flax_params(arrays, arch)
    inputs = [make_inputs(40, 1, seed)[0] for seed in range(3)]
    with compilations() as first:
        apply(params, inputs[0])
    with compilations() as same_shape:
        for x in inputs[1:]:
            apply(params, x)
    with compilations() as new_shape:
        apply(params, make_inputs((40, 41), 1)[0])
    assert len(first) == 1 and not same_shape and len(new_shape) == 1


def test_unitwise_reference_is_the_whole_model_module_by_module():
    """The parity reference runs module by module; it must compute exactly what the whole model does."""
    arch = Architecture((2, 2, 1, 2), 1, 9)  # repeated units: configurations are reused
    params = flax_params(synthetic_arrays(arch, 4), arch)
    x, _ = make_inputs((37, 45), 2)
    whole = make_apply(arch)(params, x)
    unitwise = make_unitwise_apply(arch)
    with compilations() as first:
        staged = unitwise(params, x)
    assert list(staged) == list(STAGES)
    for stage in STAGES:
        np.testing.assert_array_equal(np.asarray(staged[stage]), np.asarray(whole[stage]), err_msg=stage)
    with compilations() as same_shape:
        unitwise(params, make_inputs((37, 45), 2, seed=1)[0])
    with compilations() as new_shape:
        unitwise(params, make_inputs(40, 2)[0])
    # Repeated units share one compilation; a new shape compiles each module at most once more.
    assert 0 < len(first) <= len(unitwise.jitted) and not same_shape
    assert 0 < len(new_shape) <= len(unitwise.jitted)


def test_unitwise_reference_runs_at_most_one_module_ahead():
    """JAX dispatches asynchronously: unbounded, the loop cast every unit's weights before the first
    unit had run (R152x2's reference held 1.9 GB more in float64). A module's weights are cast only
    once the module two steps before it has been waited for, and each output is waited for once."""
    arch = Architecture((2, 1, 1, 2), 1, 9)
    tree = flax_params(synthetic_arrays(arch, 4), arch)["params"]
    order = ["root_block"] + [f"block{b}/unit{u:02d}" for b, n in enumerate(arch.units, 1) for u in range(1, n + 1)]
    events = []

    class Leaf:  # a host array that says when the reference casts it
        def __init__(self, array, module):
            self.array, self.module = array, module

        def __array__(self, dtype=None, copy=None):
            events.append(("cast", self.module))
            return np.asarray(self.array, dtype)

    def tagged(subtree, module):
        return jax.tree.map(lambda a: Leaf(a, module), subtree)

    params = {"params": {k: dict(v) for k, v in tree.items()}}
    params["params"]["root_block"] = tagged(tree["root_block"], 0)
    for i, name in enumerate(order[1:], 1):
        block, unit = name.split("/")
        params["params"][block][unit] = tagged(tree[block][unit], i)
    for key in ("norm-pre-head", "conv_head"):
        params["params"][key] = tagged(tree[key], len(order))

    def wait(x):
        events.append(("wait", None))
        return jax.block_until_ready(x)

    staged = make_unitwise_apply(arch, wait=wait)(params, make_inputs(40, 1)[0])
    first_cast = {}
    waits = 0
    for kind, module in events:
        if kind == "wait":
            waits += 1
        else:
            first_cast.setdefault(module, waits)
    assert sorted(first_cast) == list(range(len(order) + 1))
    for module, waited in first_cast.items():
        assert waited >= module - 1, f"module {module}'s weights cast with only {waited} outputs waited for"
    assert waits == len(order) + 1  # the images, then every module's output but the head's
    whole = make_apply(arch)({"params": tree}, make_inputs(40, 1)[0])
    np.testing.assert_array_equal(np.asarray(staged["logits"]), np.asarray(whole["logits"]))


def test_checkpoint_roundtrip_keeps_slash_names(tiny_ckpt, tmp_path):
    """tf.train.Checkpoint tracks variables_by_key even though its keys contain '/'."""
    model = build_tf_model(tiny_ckpt)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = BiTResNetV2(TINY)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    for key, var in fresh.variables_by_key.items():
        np.testing.assert_array_equal(var.numpy(), tiny_ckpt.arrays[key])


def test_group_norm_is_the_grouped_one_in_float64():
    # The one group norm of every TF graph keeps the activations 4-D and broadcasts each group's
    # statistics per channel; here against the literal grouped form (the reference's) in float64,
    # on activations whose group means dwarf their spread, where a one-pass variance
    # (E[x^2] - E[x]^2 in float32) is off by 3e-3 and the two-pass one by 1.8e-5 (9e-6 when the
    # activations are centred before scaling, one pass more).
    x, gamma, beta = group_norm_case()
    prefix = "resnet/group_norm/"
    net = BiTResNetV2(
        TINY, weights={prefix + "gamma": tf.constant(gamma, tf.float32), prefix + "beta": tf.constant(beta, tf.float32)}
    )
    out = net._group_norm(tf.constant(x), prefix).numpy()
    np.testing.assert_allclose(out, grouped_norm_f64(x, gamma, beta), rtol=0, atol=1e-4)
    # Groups of consecutive channels: the same statistics pooled over every 32nd channel are far off.
    assert np.abs(out - grouped_norm_f64(x, gamma, beta, consecutive=False)).max() > 0.1


def test_edge_copies_pool_the_same_values_as_minus_inf_without_an_infinite_constant(tiny_ckpt):
    # The LiteRT export's graph (convert.export.folded): no PADV2 for XNNPACK to leave out, and the
    # converter needs no scan for infinities. 35x41 px: the pool's input is 18x21, an even and an odd side.
    graphs = {}
    for edges in (False, True):
        net = build_tf_model(tiny_ckpt, pool_pad="neg_inf", edge_pool_pad=edges)
        graphs[edges] = tf.function(net.stages, input_signature=SPEC).get_concrete_function()
    x, _ = make_inputs((35, 41), 2)
    for stage in STAGES:
        np.testing.assert_array_equal(graphs[True](x)[stage].numpy(), graphs[False](x)[stage].numpy(), err_msg=stage)

    def infinite_constants(graph):
        values = [tf.make_ndarray(op.get_attr("value")) for op in graph.get_operations() if op.type == "Const"]
        return sum(int(np.isinf(v).sum()) for v in values if v.dtype.kind == "f")

    assert infinite_constants(graphs[False].graph) == 1 and infinite_constants(graphs[True].graph) == 0
