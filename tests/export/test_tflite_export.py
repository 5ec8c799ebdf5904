"""`--format tflite`, what only LiteRT has: tensor names and signature, the manifest facts, the 2 GB FlatBuffer limit.

Written, reloaded, judged, mutated, labelled and carded like every target: tests/export/test_contract.py.
"""

from __future__ import annotations

import pytest
from conftest import R50X1, R152X2, R152X4, TINY
from deploy_support import entries, load_with_reference, make_job

from convert.errors import ExportError
from convert.export.target import INPUT_NAME, OUTPUT_NAMES
from convert.export.tflite import TARGET, TFLiteTarget


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
    # XNNPACK cannot take a RESHAPE to a shape computed in the graph: each one split the delegated
    # graph (100 partitions for R50x1, docs/inference.md). Group norm reshapes only fixed shapes.
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for e in entries(tiny_export.manifest, "tflite"):
        model = flatbuffer_utils.read_model(str(tiny_export.path / e["path"]))
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        ops = {names[codes[op.opcodeIndex]] for op in model.subgraphs[0].operators}
        assert "CONV_2D" in ops and not ops & {"SHAPE", "STRIDED_SLICE", "CONCATENATION"}, sorted(ops)


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
