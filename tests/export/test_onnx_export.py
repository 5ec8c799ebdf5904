"""`--format onnx`, what only ONNX has: names, dynamic dims, initializers, opset, external data above 2 GB.

Written, reloaded, judged, mutated, labelled and carded like every target: tests/export/test_contract.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import R50X1, R152X2, R152X4, TINY
from deploy_support import MODEL, entries, load_with_reference, make_job, to_unit

from convert.export import judge
from convert.export.onnx import CATCH_ERRORS_ENV, DIMS, TARGET, OnnxTarget, run_onnx
from convert.export.target import INPUT_NAME, OUTPUT_NAMES, VARIANTS
from convert.model.architecture import checkpoint_layout


def test_names_dims_initializers_and_facts(tiny_export):
    import onnx

    written = entries(tiny_export.manifest, "onnx")
    assert [e["path"] for e in written] == ["onnx/classification.onnx", "onnx/feature_extraction.onnx"]
    for e in written:
        model = onnx.load(str(tiny_export.path / e["path"]))
        (inp,) = model.graph.input
        (out,) = model.graph.output
        assert inp.name == INPUT_NAME and out.name == OUTPUT_NAMES[e["variant"]]
        assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [*DIMS, 3]
        # The weights are initializers named by checkpoint key, standardised kernels folded in.
        keys = {i.name for i in model.graph.initializer if i.name.startswith("resnet/")}
        layout = set(checkpoint_layout(TINY))
        assert keys == (layout if e["variant"] == "classification" else {k for k in layout if "/head/" not in k})
        # One conversion gave both files (convert.export.onnx_graph.keep_output): no node is left computing for nothing.
        read = {x for n in model.graph.node for x in n.input} | {out.name}
        assert all(set(n.output) & read for n in model.graph.node)
        kernel = next(i for i in model.graph.initializer if i.name == "resnet/root_block/standardized_conv2d/kernel")
        k = onnx.numpy_helper.to_array(kernel).astype(np.float64)
        assert np.abs(k.mean(axis=(0, 1, 2))).max() < 1e-6 and np.abs(k.std(axis=(0, 1, 2)) - 1).max() < 1e-5
        facts = e["facts"]
        assert facts["opset"] >= 17 and facts["converter_version"]["tf2onnx"] and facts["runtime_version"]["onnxruntime"]
        assert facts["external_data"] is False and list(facts["files"]) == [e["path"]]


def test_over_the_size_limit_weights_go_to_external_data(tiny_npz, tmp_path, monkeypatch):
    ckpt, images, reference = load_with_reference(tiny_npz, TINY, 32)
    small = OnnxTarget(size_limit=10_000_000)  # less than the tiny layout's 32 MB of weights
    job = make_job(ckpt, tmp_path / "export")
    monkeypatch.setenv(CATCH_ERRORS_ENV, "the user's")
    artifacts = small.write(job)
    assert os.environ[CATCH_ERRORS_ENV] == "the user's"  # the conversion's switch is restored
    for a in artifacts:
        data = a.path + ".data"
        assert a.facts["external_data"] is True and list(a.facts["files"]) == [a.path, data]
        assert (job.export_dir / a.path).stat().st_size < 1_000_000 < (job.export_dir / data).stat().st_size
        assert a.facts["bytes"] == sum(f["bytes"] for f in a.facts["files"].values())
    runs = small.check(job, artifacts, to_unit(images))()
    assert [r.artifact.variant for r in runs] == list(VARIANTS)
    for run in runs:
        judge.judge_run(reference, small, run, TINY, MODEL, lambda m: None)
    # onnxruntime really reads the data file from disk: without it the model does not load.
    (job.export_dir / artifacts[0].path).with_suffix(".onnx.data").rename(tmp_path / "aside")
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception classes
        run_onnx(job.export_dir / artifacts[0].path, to_unit(images[:1]), "logits")


def test_the_checks_sleeping_thread_pool_gives_the_same_outputs(tiny_export):
    # The export's check runs onnxruntime without busy-waiting threads: less CPU, the same kernels and numbers.
    path = tiny_export.path / "onnx" / "classification.onnx"
    images = np.random.default_rng(0).uniform(0, 1, (3, 40, 52, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(path, images, "logits", spin=False), run_onnx(path, images, "logits"))
    for e in entries(tiny_export.manifest, "onnx"):
        assert e["parity"]["onnxruntime"]["facts"]["allow_spinning"] is False


def test_default_limit_external_data_for_r152x4_only():
    assert all(TARGET.needs_external_data(R152X4, v) for v in VARIANTS)
    assert not any(TARGET.needs_external_data(arch, v) for arch in (R50X1, R152X2) for v in VARIANTS)


def test_no_shape_is_computed_at_run_time(tiny_export):
    # Group norm reshapes only its (batch, channels) statistics, to fixed shapes: no Shape op, no 5-D activations.
    import onnx

    for e in entries(tiny_export.manifest, "onnx"):
        ops = {n.op_type for n in onnx.load(str(tiny_export.path / e["path"])).graph.node}
        assert "Conv" in ops and "Shape" not in ops, sorted(ops)
