"""The root pool's padding is each entry's semantics, on every target: the other padding fails parity.

For each code that defines a forward pass (a distill/ entry: big_vision, -inf; a BiT-M entry:
big_transfer, zeros), every target writes the tiny layout with the entry's padding and with the
other one; reloaded from disk, the first passes parity against the entry's float64 reference and
the second fails (the distill entry's own padding is the session export ``tiny_export``'s, judged
in every runtime: it is not written twice). Also: the -inf pad survives each converter as a pad
value no real pixel can reach, so the max-pool cannot tell it from -inf.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import TINY, TINY_PX
from deploy_support import (
    FAMILY_MODELS,
    entries,
    load_with_reference,
    make_job,
    reports,
    tflite_operators,
    write_and_check,
    xnnpack_partitions,
)

from convert.export import onnx, savedmodel, tflite
from convert.export.keras import KerasTarget
from convert.export.target import VARIANTS
from convert.fetch import sha256_file
from convert.model.numerics import POOL_PAD_VALUES
from convert.registry import load_registry
from convert.testing.mutations import Mutation

PX = TINY_PX  # the session export's size, so that it proves the distill entry's own padding (below)
#: The Keras check on one backend here (each backend is a process); tests/export/test_authors_outputs.py runs all three.
TARGETS = {
    "savedmodel": savedmodel.TARGET,
    "tflite": tflite.TARGET,
    "onnx": onnx.TARGET,
    "keras": KerasTarget(backends=("tensorflow",), parallel=1),
}


@pytest.fixture(scope="module", params=list(FAMILY_MODELS.values()))
def family(request, tiny_npz):
    """(model id, checkpoint, images, the float64 reference of the entry's own forward pass)."""
    return (request.param, *load_with_reference(tiny_npz, TINY, PX, model=request.param))


def _is_tiny_export(manifest: dict, model: str, ckpt_sha256: str) -> bool:
    """Whether the session export ``tiny_export`` is this entry's own forward pass of the same checkpoint at PX."""
    forward = load_registry().get(model).forward()
    return (
        manifest["model"]["id"] == model
        and manifest["checkpoint"]["sha256"] == ckpt_sha256
        and manifest["forward"]["root_pool_padding"] == forward.root_pool_padding
        and manifest["parity"]["resolution"] == PX
    )


@pytest.mark.parametrize("name", list(TARGETS))
def test_the_other_padding_fails_parity_for_this_entry(family, name, tmp_path, tiny_npz, tiny_export):
    model, ckpt, images, ref = family
    forward = load_registry().get(model).forward()
    target = TARGETS[name]
    if _is_tiny_export(tiny_export.manifest, model, sha256_file(tiny_npz)):
        # The own padding of this entry: the session export wrote it from this checkpoint at PX and judged every
        # artifact from disk in every runtime; written again here it would prove the same thing.
        passed = {
            (e["variant"], rt): r["report"]["summary"]["passed"]
            for e in entries(tiny_export.manifest, name)
            for rt, r in e["parity"].items()
        }
        assert {v for v, _ in passed} == set(VARIANTS) and all(passed.values()), f"{model} {name}: {passed}"
    else:
        _, own = write_and_check(target, make_job(ckpt, tmp_path / "own", model=model), images)
        for variant, report in reports(ref, own).items():
            assert report.passed, f"{model} {name} {variant}: {report.render()}"
    other = make_job(
        ckpt, tmp_path / "other", Mutation("other-pool-padding", knobs={"pool_pad": forward.other_padding}), model=model
    )
    _, wrong = write_and_check(target, other, images)
    for variant, report in reports(ref, wrong).items():
        assert not report.passed, f"{model} {name} {variant} with {forward.other_padding} padding passed: {report.render()}"


@pytest.fixture(scope="module")
def distill_job(tiny_npz, tmp_path_factory):
    ckpt, _, _ = load_with_reference(tiny_npz, TINY, PX)
    return make_job(ckpt, tmp_path_factory.mktemp("neg_inf"), model=FAMILY_MODELS["big_vision"])


def test_litert_pads_minus_inf_as_edge_copies_in_one_xnnpack_partition(distill_job):
    # A -inf padding would be a PADV2, which XNNPACK leaves out of its partition; the copies of the edge
    # rows and columns pool to the same values (numerics.NEG_INF_POOL_PAD_AS_EDGE_COPIES; parity: the
    # contract's distill entry) and the whole graph (the tiny layout has no Winograd layer) is one partition.
    (artifact, _) = tflite.TARGET.write(distill_job)
    path = distill_job.export_dir / artifact.path
    ops = tflite_operators(path)
    assert not [kind for kind, _ in ops if kind == "PADV2"]
    (pool,) = [op for kind, op in ops if kind == "MAX_POOL_2D"]
    assert [kind for kind, op in ops if pool.inputs[0] in op.outputs] == ["CONCATENATION"]
    assert xnnpack_partitions(path, (2, 35, 41, 3)) == 1


def test_onnx_keeps_minus_inf(distill_job):
    import onnx as onnx_lib
    from onnx import numpy_helper

    (artifact, _) = onnx.TARGET.write(distill_job)
    graph = onnx_lib.load(str(distill_job.export_dir / artifact.path)).graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    pads = [n for n in graph.node if n.op_type == "Pad" and len(n.input) > 2 and consts.get(n.input[2], np.zeros(1)).size == 1]
    values = [float(consts[n.input[2]]) for n in pads if float(consts[n.input[2]]) != 0.0]
    assert values == [POOL_PAD_VALUES["neg_inf"]]
    (pad,) = [n for n in pads if float(consts[n.input[2]]) != 0.0]
    assert [n.op_type for n in graph.node if pad.output[0] in n.input] == ["MaxPool"]


def test_keras_stores_minus_inf(distill_job):
    (artifact, _) = TARGETS["keras"].write(distill_job)
    with zipfile.ZipFile(distill_job.export_dir / artifact.path) as zf:
        config = json.loads(zf.read("config.json"))
    layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
    pad = layers["root_pool_pad"]
    assert pad["class_name"] == "ConstantPadding2D" and pad["config"]["value"] == POOL_PAD_VALUES["neg_inf"]
