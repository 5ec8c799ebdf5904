"""Proof against the BiT authors' own code: its outputs (tests/data/authors_outputs/) on two synthetic checkpoints.

big_vision's ``bit_paper.py`` was run on this project's own synthetic checkpoints with the root
max-pool padded both ways (convert.testing.authors). The float64 reference and every exported
artifact reloaded from disk (SavedModel, Keras on each backend, LiteRT, ONNX) must agree with the
authors' outputs of the same padding within the modelled float32 error of one side
(``expected_error``: the authors' run is float32) and differ from those of the other padding by
more than the parity tolerance (the other padding fails parity).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from convert.checkpoint import load_checkpoint
from convert.export import ExportOptions, export_model
from convert.model.numerics import POOL_PADS
from convert.parity import expected_error, reference_outputs, tolerance
from convert.parity.inputs import make_inputs
from convert.registry import load_registry
from convert.testing.authors import CASES, regenerate, relative_l2, runs_table

STAGES = ("stem", "pre_logits", "logits")
FORMATS = ("savedmodel", "keras", "tflite", "onnx")


def _other(padding: str) -> str:
    return next(p for p in POOL_PADS if p != padding)


@pytest.mark.parametrize("name", ["units1111", pytest.param("r50x1-160", marks=pytest.mark.slow)])
def test_the_reference_computes_the_authors_code_for_each_padding(name, tmp_path):
    case = CASES[name]
    ckpt = load_checkpoint(regenerate(case, tmp_path / "ckpt.npz"), case.arch)
    authors = case.outputs()
    for padding in POOL_PADS:
        ref = reference_outputs(ckpt, authors["x"], float32=False, pool_padding=padding).f64
        for stage in STAGES:
            same = relative_l2(ref[stage], authors[f"{padding}_{stage}"])
            other = relative_l2(ref[stage], authors[f"{_other(padding)}_{stage}"])
            assert same <= expected_error(case.arch), f"{padding} {stage}: {same:.2e}"
            assert other > tolerance(case.arch), f"{padding} {stage} vs the other padding: {other:.2e}"


def test_a_changed_generator_is_caught(tmp_path):
    changed = replace(CASES["units1111"], seed=2)
    with pytest.raises(ValueError, match="no longer apply"):
        regenerate(changed, tmp_path / "ckpt.npz")


#: The units1111 case's input is the export's first parity image at this size and seed (asserted below),
#: so the export's own checks from disk run every artifact on it: no second reload of each.
AUTHORS_PARITY = {"parity_resolution": (101, 134), "parity_batch": 1, "parity_seed": 8}


@pytest.mark.parametrize(
    "model, forward, padding",
    [
        ("r50x1-160", "authors", "neg_inf"),  # a distill/ student: big_vision's forward pass
        ("bit-m-r50x1-ilsvrc2012", "authors", "zero"),  # a BiT-M fine-tune: big_transfer's
        pytest.param("r50x1-160", "zero-pool", "zero", marks=pytest.mark.slow),  # the 2022 collection's
    ],
)
def test_every_artifact_from_disk_computes_the_authors_code(model, forward, padding, tmp_path):
    case = CASES["units1111"]
    authors = case.outputs()
    images, _ = make_inputs(AUTHORS_PARITY["parity_resolution"], AUTHORS_PARITY["parity_batch"], AUTHORS_PARITY["parity_seed"])
    assert np.array_equal(images[:1], authors["x"])
    path = regenerate(case, tmp_path / "ckpt.npz")
    entry = load_registry().get(model)
    options = ExportOptions(
        output_dir=tmp_path / "exports", formats=FORMATS, reference="inline", forward=forward, **AUTHORS_PARITY
    )
    result = export_model(entry, path, options, arch=case.arch)
    assert result.manifest["forward"]["root_pool_padding"] == padding
    assert result.manifest["parity"]["resolution"] == [101, 134]
    runs = [replace(r, outputs=r.outputs[:1]) for target_runs in result.runs.values() for r in target_runs]
    runtimes = {(r.artifact.target, r.runtime) for r in runs}
    assert {t for t, _ in runtimes} == set(FORMATS)
    assert {rt for t, rt in runtimes if t == "keras"} == {"keras-jax", "keras-tensorflow", "keras-torch"}
    for target, runtime, variant, neg_inf, zero in runs_table(runs, authors):
        same, other = (neg_inf, zero) if padding == "neg_inf" else (zero, neg_inf)
        assert same <= expected_error(case.arch), f"{target} {runtime} {variant}: {same:.2e}"
        assert other > tolerance(case.arch), f"{target} {runtime} {variant} vs the other padding: {other:.2e}"
