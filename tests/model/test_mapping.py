"""The name mapping: derived from the layout alone, two-sided checks before any assignment."""

from __future__ import annotations

import json
from dataclasses import replace

import jax
import numpy as np
import pytest
from conftest import R50X1, R152X2, TINY

from convert.errors import MappingError
from convert.model.architecture import Architecture, checkpoint_layout
from convert.model.mapping import (
    TRANSFORMS,
    MappingRow,
    flax_params,
    flax_path_for,
    keras_path_for,
    mapping_rows,
    tf_variables,
)
from convert.synthetic import synthetic_arrays


@pytest.mark.parametrize("arch", [TINY, R50X1, R152X2, Architecture.from_depth(101, 3, 21843)], ids=lambda a: a.name)
def test_rows_cover_the_layout_once_in_order(arch):
    rows = mapping_rows(arch)
    layout = checkpoint_layout(arch)
    assert [r.checkpoint_key for r in rows] == list(layout)
    assert [r.shape for r in rows] == list(layout.values())
    assert len({r.tf_variable for r in rows}) == len(rows)
    assert len({r.flax_path for r in rows}) == len(rows)
    assert len({r.keras_path for r in rows}) == len(rows)
    assert all(r.transform in TRANSFORMS for r in rows)
    # Only the head kernel is reshaped.
    assert [r.checkpoint_key for r in rows if r.transform != "identity"] == ["resnet/head/conv2d/kernel"]


@pytest.mark.parametrize(
    "key, path, transform",
    [
        ("resnet/root_block/standardized_conv2d/kernel", "root_block/conv_root/kernel", "identity"),
        ("resnet/block1/unit01/a/group_norm/gamma", "block1/unit01/gn1/scale", "identity"),
        ("resnet/block1/unit01/a/group_norm/beta", "block1/unit01/gn1/bias", "identity"),
        ("resnet/block1/unit01/a/standardized_conv2d/kernel", "block1/unit01/conv1/kernel", "identity"),
        ("resnet/block2/unit01/a/proj/standardized_conv2d/kernel", "block2/unit01/conv_proj/kernel", "identity"),
        ("resnet/block3/unit05/b/group_norm/gamma", "block3/unit05/gn2/scale", "identity"),
        ("resnet/block3/unit05/b/standardized_conv2d/kernel", "block3/unit05/conv2/kernel", "identity"),
        ("resnet/block4/unit03/c/group_norm/beta", "block4/unit03/gn3/bias", "identity"),
        ("resnet/block4/unit03/c/standardized_conv2d/kernel", "block4/unit03/conv3/kernel", "identity"),
        ("resnet/group_norm/gamma", "norm-pre-head/scale", "identity"),
        ("resnet/group_norm/beta", "norm-pre-head/bias", "identity"),
        ("resnet/head/conv2d/kernel", "conv_head/kernel", "squeeze_head"),
        ("resnet/head/conv2d/bias", "conv_head/bias", "identity"),
    ],
)
def test_authors_flax_names(key, path, transform):
    assert flax_path_for(key) == (path, transform)


@pytest.mark.parametrize(
    "key, path",
    [
        ("resnet/root_block/standardized_conv2d/kernel", "root_conv/kernel"),
        ("resnet/block1/unit01/a/group_norm/gamma", "block1_unit01_a_gn/gamma"),
        ("resnet/block2/unit01/a/proj/standardized_conv2d/kernel", "block2_unit01_a_proj/kernel"),
        ("resnet/block3/unit05/b/standardized_conv2d/kernel", "block3_unit05_b_conv/kernel"),
        ("resnet/block4/unit03/c/group_norm/beta", "block4_unit03_c_gn/beta"),
        ("resnet/group_norm/gamma", "pre_head_gn/gamma"),
        ("resnet/head/conv2d/kernel", "head/kernel"),
        ("resnet/head/conv2d/bias", "head/bias"),
    ],
)
def test_keras_weight_paths(key, path):
    assert keras_path_for(key) == path


@pytest.mark.parametrize("key", ["resnet/block1/unit01/d/group_norm/gamma", "other/root"])
def test_unknown_key_has_no_keras_path(key):
    with pytest.raises(MappingError, match="no Keras weight"):
        keras_path_for(key)


@pytest.mark.parametrize("key", ["resnet/block1/unit01/d/group_norm/gamma", "other/root", "resnet/head/dense/kernel"])
def test_unknown_key_has_no_flax_name(key):
    with pytest.raises(MappingError, match="no Flax name"):
        flax_path_for(key)


def test_squeeze_head_transform():
    k = np.arange(2 * 3, dtype=np.float32).reshape(1, 1, 2, 3)
    out = TRANSFORMS["squeeze_head"].apply(k)
    assert out.shape == (2, 3) and np.array_equal(out, k[0, 0])
    with pytest.raises(MappingError):
        TRANSFORMS["squeeze_head"].shape((3, 3, 2, 3))


# -- two-sided checks, TF side --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_arrays():
    return synthetic_arrays(TINY, seed=3)


def _message(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


#: One difference on the checkpoint's side each: (arrays to drop, arrays to add or replace, the line naming it).
CHECKPOINT_DIFFERENCES = {
    "missing": (
        ("resnet/block2/unit01/b/group_norm/gamma",),
        {},
        "- checkpoint array resnet/block2/unit01/b/group_norm/gamma missing",
    ),
    "extra": (
        (),
        {"resnet/block1/unit02/a/group_norm/gamma": np.ones(256, np.float32)},
        "+ checkpoint array resnet/block1/unit02/a/group_norm/gamma (256,) unused",
    ),
    "wrong shape": (
        (),
        {"resnet/head/conv2d/bias": np.zeros(11, np.float32)},
        "~ checkpoint array resnet/head/conv2d/bias: got (11,), expected (10,)",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINT_DIFFERENCES)
def test_a_checkpoint_difference_is_named_and_nothing_taken(tiny_arrays, case):
    drop, put, line = CHECKPOINT_DIFFERENCES[case]
    arrays = {k: v for k, v in tiny_arrays.items() if k not in drop} | put
    keys = set(arrays)
    with pytest.raises(MappingError) as exc:
        tf_variables(TINY, arrays, release=True)
    assert line in _message(exc)
    assert set(arrays) == keys


def test_every_difference_is_listed(tiny_arrays):
    arrays = dict(tiny_arrays)
    del arrays["resnet/group_norm/beta"]
    arrays["resnet/extra"] = np.zeros(3, np.float32)
    arrays["resnet/head/conv2d/bias"] = np.zeros(4, np.float32)
    with pytest.raises(MappingError) as exc:
        tf_variables(TINY, arrays)
    assert sorted(d[0] for d in exc.value.diffs) == ["+", "-", "~"]
    assert "3 differences" in _message(exc)


def test_row_targeting_a_variable_twice(tiny_arrays):
    rows = list(mapping_rows(TINY))
    i = next(i for i, r in enumerate(rows) if r.checkpoint_key == "resnet/block1/unit01/a/group_norm/beta")
    rows[i] = replace(rows[i], tf_variable="resnet/block1/unit01/a/group_norm/gamma")
    arrays = dict(tiny_arrays)
    with pytest.raises(MappingError) as exc:
        tf_variables(TINY, arrays, rows, release=True)
    msg = _message(exc)
    assert "! TF variable resnet/block1/unit01/a/group_norm/gamma set by 2 rows" in msg
    assert "+ TF variable resnet/block1/unit01/a/group_norm/beta (64,) set by no row" in msg
    assert arrays.keys() == tiny_arrays.keys()


def test_rows_of_another_architecture_fail_on_the_tf_side():
    other = Architecture((1, 1, 1, 1), 1, 12)
    with pytest.raises(MappingError) as exc:
        tf_variables(TINY, synthetic_arrays(other), mapping_rows(other))
    assert "~ TF variable resnet/head/conv2d/bias: has (10,), row gives (12,)" in _message(exc)


def test_tf_variables_take_the_arrays_one_by_one(tiny_arrays):
    """What build_tf_model creates: every variable from its array, in the graph's order, the arrays released."""
    arrays = dict(tiny_arrays)
    variables = tf_variables(TINY, arrays, release=True)
    assert not arrays
    assert list(variables) == list(checkpoint_layout(TINY))
    for key, var in variables.items():
        assert var.trainable and var.name == f"{key}:0"
        np.testing.assert_array_equal(var.numpy(), tiny_arrays[key])
    kept = dict(tiny_arrays)
    tf_variables(TINY, kept)
    assert kept.keys() == tiny_arrays.keys()


def test_tf_variables_follow_the_rows(tiny_arrays):
    """A row decides which array a variable takes (the swapped-arrays mutation relies on it)."""
    gamma, beta = "resnet/block1/unit01/a/group_norm/gamma", "resnet/block1/unit01/a/group_norm/beta"
    rows = [
        replace(r, checkpoint_key={gamma: beta, beta: gamma}.get(r.checkpoint_key, r.checkpoint_key)) for r in mapping_rows(TINY)
    ]
    variables = tf_variables(TINY, dict(tiny_arrays), rows, release=True)
    np.testing.assert_array_equal(variables[gamma].numpy(), tiny_arrays[beta])
    np.testing.assert_array_equal(variables[beta].numpy(), tiny_arrays[gamma])


# -- two-sided checks, Flax side -------------------------------------------------


def test_flax_params_tree(tiny_arrays):
    params = flax_params(tiny_arrays, TINY)["params"]
    assert set(params) == {"root_block", "block1", "block2", "block3", "block4", "norm-pre-head", "conv_head"}
    assert params["conv_head"]["kernel"].shape == (2048, 10)
    np.testing.assert_array_equal(params["conv_head"]["kernel"], tiny_arrays["resnet/head/conv2d/kernel"][0, 0])
    np.testing.assert_array_equal(
        params["block3"]["unit01"]["gn2"]["scale"], tiny_arrays["resnet/block3/unit01/b/group_norm/gamma"]
    )
    assert params["block1"]["unit01"]["conv_proj"]["kernel"].dtype == np.float32
    p64 = flax_params(tiny_arrays, TINY, dtype=np.float64)["params"]
    assert p64["root_block"]["conv_root"]["kernel"].dtype == np.float64


def test_flax_params_keeps_deferred_arrays_deferred(tiny_arrays):
    """The reference's worker builds the tree without reading a byte; each leaf reads, transforms and casts at its use."""
    from convert.checkpoint import Deferred

    reads = []

    def deferred(key):
        return Deferred(lambda: reads.append(key) or tiny_arrays[key], tiny_arrays[key].shape)

    lazy = flax_params({k: deferred(k) for k in tiny_arrays}, TINY, dtype=np.float64)
    assert not reads
    eager = flax_params(tiny_arrays, TINY, dtype=np.float64)
    lazy_leaves, eager_leaves = jax.tree.leaves(lazy), jax.tree.leaves(eager)
    assert all(isinstance(leaf, Deferred) for leaf in lazy_leaves)
    for got, want in zip(lazy_leaves, eager_leaves, strict=True):
        assert got.shape == want.shape
        value = np.asarray(got)
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, want)
    assert sorted(reads) == sorted(tiny_arrays)


def test_flax_side_rejects_a_path_the_model_lacks(tiny_arrays):
    rows = [
        replace(r, flax_path="block1/unit01/gn4/scale") if r.flax_path == "block1/unit01/gn1/scale" else r
        for r in mapping_rows(TINY)
    ]
    with pytest.raises(MappingError) as exc:
        flax_params(tiny_arrays, TINY, rows)
    msg = _message(exc)
    assert "- Flax param block1/unit01/gn4/scale missing" in msg
    assert "+ Flax param block1/unit01/gn1/scale (64,) set by no row" in msg


def test_flax_side_rejects_a_wrong_transform(tiny_arrays):
    rows = [replace(r, transform="identity") if r.transform == "squeeze_head" else r for r in mapping_rows(TINY)]
    with pytest.raises(MappingError, match=r"~ Flax param conv_head/kernel: has \(2048, 10\), row gives \(1, 1, 2048, 10\)"):
        flax_params(tiny_arrays, TINY, rows)


def test_flax_side_rejects_missing_array(tiny_arrays):
    arrays = {k: v for k, v in tiny_arrays.items() if k != "resnet/root_block/standardized_conv2d/kernel"}
    with pytest.raises(MappingError, match="- checkpoint array resnet/root_block/standardized_conv2d/kernel missing"):
        flax_params(arrays, TINY)


def test_mapping_row_as_dict():
    row = MappingRow("resnet/head/conv2d/kernel", "resnet/head/conv2d/kernel", "conv_head/kernel", (1, 1, 8, 3), "squeeze_head")
    assert row.as_dict()["flax_shape"] == [8, 3]


# -- CLI ----------------------------------------------------------------------------


def test_mapping_command_table(invoke):
    res = invoke("mapping", "--model", "r50x1-160")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["CHECKPOINT", "KEY", "TF", "VARIABLE", "FLAX", "PATH", "KERAS", "WEIGHT", "SHAPE", "TRANSFORM"]
    assert len(lines) == 1 + len(checkpoint_layout(R50X1)) + 1
    # r50x1-160 is a distill/ file: big_vision's forward pass, root pool padded with -inf.
    assert lines[-1].startswith("forward pass: root max-pool padded with -inf") and "big_vision" in lines[-1]
    head = next(line for line in lines if line.startswith("resnet/head/conv2d/kernel"))
    assert head.split() == [
        "resnet/head/conv2d/kernel",
        "resnet/head/conv2d/kernel:0",
        "conv_head/kernel",
        "head/kernel",
        "(1,",
        "1,",
        "2048,",
        "1000)",
        "squeeze_head",
    ]


def test_mapping_command_json(invoke):
    res = invoke("mapping", "--model", "r152x2-224", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["architecture"] == "R152x2"
    assert (doc["forward"]["code"], doc["forward"]["root_pool_padding"]) == ("big_vision", "neg_inf")
    assert len(doc["rows"]) == 459
    assert doc["rows"][0] == {
        "checkpoint_key": "resnet/root_block/standardized_conv2d/kernel",
        "tf_variable": "resnet/root_block/standardized_conv2d/kernel",
        "flax_path": "root_block/conv_root/kernel",
        "keras_path": "root_conv/kernel",
        "shape": [7, 7, 3, 128],
        "flax_shape": [7, 7, 3, 128],
        "transform": "identity",
    }


def test_mapping_command_needs_exactly_one_model(invoke):
    assert invoke("mapping").exit_code == 2
    assert invoke("mapping", "--model", "r50x1-160", "--model", "r50x1-224").exit_code == 2
    res = invoke("mapping", "--model", "r50x1-16")
    assert res.exit_code == 2 and "unknown model id" in res.stderr
