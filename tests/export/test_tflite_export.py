"""`--format tflite`, what only LiteRT has: tensor names and signature, the manifest facts, the 2 GB FlatBuffer limit.

Written, reloaded, judged, mutated, labelled and carded like every target: tests/export/test_contract.py.
"""

from __future__ import annotations

import pytest
from conftest import R50X1, R152X2, R152X4, TINY
from deploy_support import MODEL, entries, load_with_reference, make_job, tflite_operators, write_and_check, xnnpack_partitions

from convert.errors import ExportError, ParityError
from convert.export import judge
from convert.export.target import INPUT_NAME, OUTPUT_NAMES
from convert.export.tflite import TARGET, TFLiteTarget
from convert.model.architecture import Architecture
from convert.testing.mutations import Mutation

#: Block 2's units 2 and 3 are stride-1 3x3 convolutions over 128 channels: Winograd layers
#: (convert.model.winograd); at 40 px block 2 is 5x5 and block 3 3x3, odd sides, so the crop runs.
WINOGRAD_ARCH, WINOGRAD_PX = Architecture((1, 3, 1, 1), width=1, classes=10), 40
WINOGRAD_KERNELS = tuple(f"resnet/block2/unit0{u}/b/standardized_conv2d/kernel" for u in (2, 3))


def test_names_signature_and_facts(tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    written = entries(tiny_export.manifest, "tflite")
    assert [e["path"] for e in written] == ["tflite/classification.tflite", "tflite/feature_extraction.tflite"]
    for e in written:
        path = tiny_export.path / e["path"]
        interpreter = Interpreter(model_path=str(path))
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        assert inp["name"] == INPUT_NAME and list(inp["shape_signature"]) == [-1, -1, -1, 3]
        assert out["name"] == OUTPUT_NAMES[e["variant"]]
        sig = interpreter.get_signature_list()["serving_default"]
        assert sig == {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAMES[e["variant"]]]}
        facts = e["facts"]
        assert facts["converter"].startswith("tf.lite.TFLiteConverter") and facts["converter_version"]["tensorflow"]
        assert facts["runtime_version"]["ai-edge-litert"] and facts["weight_dtype"] == "float32"
        assert facts["bytes"] == path.stat().st_size


def test_size_limit_refuses_before_converting(tiny_npz, tmp_path):
    ckpt, _, _ = load_with_reference(tiny_npz, TINY, 32)
    small = TFLiteTarget(size_limit=10_000_000)  # less than the tiny layout's 32 MB of weights
    with pytest.raises(ExportError) as err:
        small.write(make_job(ckpt, tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "FlatBuffer" in msg and "--format onnx" in msg
    assert not (tmp_path / "tflite").exists() or not any((tmp_path / "tflite").iterdir())


def test_default_limit_refuses_r152x4_only():
    why = TARGET.refusal(R152X4)
    assert why is not None and "3.7" in why
    assert TARGET.refusal(R152X2) is None and TARGET.refusal(R50X1) is None


def test_no_shape_is_computed_at_run_time(tiny_export):
    # XNNPACK cannot take a RESHAPE or a slice to a shape computed in the graph: each one split the
    # delegated graph (100 partitions for R50x1, docs/inference.md). Group norm reshapes only fixed
    # shapes; the root pool's edge copies slice constant bounds. Only a Winograd layer's crop computes
    # a shape (test_winograd_layers_pass_parity_from_disk_at_odd_sides), and the tiny layout has none.
    for e in entries(tiny_export.manifest, "tflite"):
        ops = {kind for kind, _ in tflite_operators(tiny_export.path / e["path"])}
        assert "CONV_2D" in ops and "SHAPE" not in ops, sorted(ops)


def test_each_file_holds_only_what_its_output_uses(tiny_export):
    # Both files come from one conversion with both outputs (convert.export.tflite_graph): each keeps
    # its own output and drops the rest, so the feature extractor holds no head, and nothing is orphaned.
    from tensorflow.lite.tools import flatbuffer_utils

    from convert.export.folded import variant_bytes

    sizes = {}
    for e in entries(tiny_export.manifest, "tflite"):
        model = flatbuffer_utils.read_model(str(tiny_export.path / e["path"]))
        (graph,) = model.subgraphs
        ops = graph.operators
        used = set(graph.inputs) | {t for op in ops for t in (*op.inputs, *op.outputs) if t >= 0}
        assert used == set(range(len(graph.tensors))), "tensors no operator uses"
        metadata = {m.buffer for m in model.metadata}
        assert {t.buffer for t in graph.tensors} | metadata | {0} == set(range(len(model.buffers))), "orphaned buffers"
        assert {op.opcodeIndex for op in ops} == set(range(len(model.operatorCodes))), "unused operator codes"
        assert len(graph.outputs) == 1 and graph.outputs[0] in {t for op in ops for t in op.outputs}
        sizes[e["variant"]] = sum(
            len(model.buffers[t.buffer].data) for t in graph.tensors if model.buffers[t.buffer].data is not None
        )
    for variant, size in sizes.items():
        # The weights, plus a few small constants (shapes, the pool's padding value, the input rescaling).
        assert variant_bytes(TINY, variant) <= size < variant_bytes(TINY, variant) + 64 * 1024, (variant, size)


@pytest.fixture(scope="module")
def winograd(tmp_path_factory):
    from convert.synthetic import write_synthetic_checkpoint

    path = write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "winograd.npz", WINOGRAD_ARCH, seed=5)
    return load_with_reference(path, WINOGRAD_ARCH, WINOGRAD_PX)


def test_winograd_layers_pass_parity_from_disk_at_odd_sides(winograd, tmp_path):
    ckpt, images, reference = winograd
    artifacts, runs = write_and_check(TARGET, make_job(ckpt, tmp_path), images)
    for artifact in artifacts:
        assert artifact.facts["winograd_layers"] == len(WINOGRAD_KERNELS)
        path = tmp_path / artifact.path
        ops = [kind for kind, _ in tflite_operators(path)]
        # Each Winograd layer: 20 depthwise transforms, and its crop to the input's size, the one
        # shape computed at run time, where XNNPACK's partition ends: one more partition per layer.
        assert ops.count("DEPTHWISE_CONV_2D") == 20 * len(WINOGRAD_KERNELS) and ops.count("SHAPE") == len(WINOGRAD_KERNELS)
        assert xnnpack_partitions(path, images.shape) == 1 + len(WINOGRAD_KERNELS)
    for run in runs:
        judge.judge_run(reference, TARGET, run, WINOGRAD_ARCH, MODEL, lambda m: None)
    card = TARGET.card(make_job(ckpt, tmp_path), artifacts[0], None)
    assert f"- {len(WINOGRAD_KERNELS)} stride-1 3x3 convolutions by Winograd's F(2x2, 3x3)" in card


def test_a_swapped_winograd_kernel_fails_parity(winograd, tmp_path):
    # The transformed kernels come from the net's (mutated) variables, not from the checkpoint beside it.
    ckpt, images, reference = winograd
    _, runs = write_and_check(TARGET, make_job(ckpt, tmp_path, Mutation("swapped", swap=WINOGRAD_KERNELS)), images)
    for run in runs:
        with pytest.raises(ParityError) as failed:
            judge.judge_run(reference, TARGET, run, WINOGRAD_ARCH, MODEL, lambda m: None)
        report = failed.value.report
        assert max(s.tf_rel_l2_f64 for s in report.stages.values()) > 20 * report.tolerance, report.render()


def test_winograd_gives_way_to_the_size_limit():
    # R50x1's transformed kernels add 7/9 of ten 3x3 kernels' weights (about 25 MB): under a limit
    # that the direct graph fits and the Winograd one would not, every layer convolves directly.
    direct = TFLiteTarget().winograd_plan(R50X1)
    assert len(direct) == 10
    from convert.export.folded import variant_bytes
    from convert.export.tflite import GRAPH_MARGIN

    fits_direct = max(variant_bytes(R50X1, v) for v in ("classification", "feature_extraction")) + GRAPH_MARGIN
    assert TFLiteTarget(size_limit=fits_direct + 10_000_000).winograd_plan(R50X1) == []
    assert TFLiteTarget(size_limit=fits_direct + 30_000_000).winograd_plan(R50X1) == direct
    assert TFLiteTarget(size_limit=fits_direct).refusal(R50X1) is None
