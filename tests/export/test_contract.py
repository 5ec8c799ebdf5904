"""The contract every export target keeps, one parametrized suite for savedmodel, keras, tflite and onnx.

For each target:

- through ``export_model`` (one export of the tiny layout in every format,
  ``tiny_export``): both variants written, reloaded from disk in each of the
  target's runtimes and passed by the orchestrator's judge, recorded in the
  manifest; reloaded again here in the user's runtime at another batch and
  size and judged by the same rule; the classifier's class names beside it;
  a card beside each artifact stating its measured error, whose code runs as
  written; one Kaggle instance per variant;
- through the target alone (write, check, judge, as the orchestrator drives
  it): each mutation of ``tests/mutations.py`` fails parity by a wide margin in
  every runtime; a damaged file fails the check in one line; re-exports are
  byte-identical where the format promises it.

Format-specific facts (tensor names, opsets, size limits, backends) stay in
each target's own test file.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import R50X1, TINY, TINY_LABELS, TINY_PX
from deploy_support import MODEL, chdir, entries, load_with_reference, make_job, pool_padding, to_unit, usage_code

from convert.errors import ExportError, ParityError
from convert.export import judge
from convert.export.target import OUTPUT_NAMES, VARIANTS, Artifact, ExportJob, Run
from convert.parity import make_inputs, reference_outputs
from convert.registry import load_registry
from convert.testing.mutations import NAMES, by_name

#: A mutation must miss by at least this factor over the tolerance ("a wide margin"), as in tests/parity.
MARGIN = 20
#: Another batch and size than the export's parity images, for the user's reload.
OTHER_SIZE, OTHER_BATCH = (40, 56), 3


def _load_savedmodel(path: Path, variant: str):
    import tensorflow as tf

    model = tf.saved_model.load(str(path))
    return lambda x: model(tf.constant(x)).numpy()


def _load_keras(path: Path, variant: str):
    import keras

    import convert.model.keras_layers  # noqa: F401 - registers the custom layers, as the card says

    model = keras.saving.load_model(path)
    return lambda x: np.asarray(model.predict_on_batch(x))


def _load_tflite(path: Path, variant: str):
    from convert.export.tflite import run_tflite

    return lambda x: run_tflite(path, x)


def _load_onnx(path: Path, variant: str):
    from convert.export.onnx import run_onnx

    return lambda x: run_onnx(path, x, OUTPUT_NAMES[variant])


def _keras_target(knobs, every_runtime: bool = False):
    from convert.export.keras import BACKENDS, KerasTarget

    # One backend for the quick target-level checks: the export runs all three.
    return KerasTarget(backends=BACKENDS if every_runtime else ("tensorflow",), build_options=dict(knobs))


def _module_target(module: str):
    def target(knobs, every_runtime: bool = False):
        import importlib

        return importlib.import_module(module).TARGET  # the knobs live in the job's TF graph

    return target


@dataclass(frozen=True)
class Case:
    name: str
    #: The runtimes the export's check runs each artifact in.
    runtimes: frozenset
    #: The user's loader: (path, variant) -> run(images) -> outputs.
    load: Callable
    #: The target to drive directly, built with the mutation's forward-pass knobs (every_runtime: all of them).
    target: Callable
    kaggle_framework: str
    #: Where the card's code runs: "root" (it names exports/<id>/...) or "artifact" (the file's own directory).
    usage_from: str
    #: Whether a re-export writes the same bytes.
    byte_identical: bool


CASES = {
    "savedmodel": Case(
        "savedmodel",
        frozenset({"tensorflow"}),
        _load_savedmodel,
        _module_target("convert.export.savedmodel"),
        "tensorFlow2",
        "root",
        False,  # byte-identical across fresh processes only (tests/export/test_savedmodel.py)
    ),
    "keras": Case(
        "keras",
        frozenset({"keras-jax", "keras-tensorflow", "keras-torch"}),
        _load_keras,
        _keras_target,
        "keras",
        "root",
        False,
    ),
    "tflite": Case(
        "tflite", frozenset({"litert"}), _load_tflite, _module_target("convert.export.tflite"), "tfLite", "artifact", True
    ),
    "onnx": Case("onnx", frozenset({"onnxruntime"}), _load_onnx, _module_target("convert.export.onnx"), "onnx", "artifact", True),
}
FORMATS = list(CASES)


def _artifact(name: str, entry: dict) -> Artifact:
    return Artifact(name, entry["variant"], entry["path"], entry["facts"])


def _job(export_dir: Path, arch=TINY) -> ExportJob:
    """A job as targets see it in check(): the TF weights already dropped."""
    return ExportJob(MODEL, load_registry().get(MODEL), arch, None, "unit", export_dir, lambda m: None)


def test_every_registered_format_keeps_the_contract():
    """A new format in convert/export/formats.py must get its case here."""
    from convert.export.formats import FORMATS as REGISTERED

    assert set(CASES) == set(REGISTERED)


# -- through export_model ------------------------------------------------------------


@pytest.mark.parametrize("name", FORMATS)
def test_both_variants_are_checked_in_every_runtime_and_recorded(tiny_export, name):
    manifest = tiny_export.manifest
    tolerance = manifest["parity"]["tolerance"]
    got = entries(manifest, name)
    assert [e["variant"] for e in got] == list(VARIANTS)
    for e in got:
        assert (tiny_export.path / e["path"]).exists() and (tiny_export.path / e["card"]).is_file()
        assert set(e["parity"]) == CASES[name].runtimes
        stage = "logits" if e["variant"] == "classification" else "pre_logits"
        for run in e["parity"].values():
            assert run["report"]["summary"]["passed"] and run["report"][stage]["passed"]
            assert run["report"][stage]["tf_rel_l2_f64"] <= tolerance


@pytest.fixture(scope="module")
def other_shape(tiny_npz):
    """Images of another batch and size than the export's, with their float64 JAX reference."""
    from convert.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tiny_npz, TINY)
    images, names = make_inputs(OTHER_SIZE, 1)
    images, names = images[:OTHER_BATCH], names[:OTHER_BATCH]
    return images, reference_outputs(ckpt, images, names, float32=False, pool_padding=pool_padding())


@pytest.mark.parametrize("name", FORMATS)
def test_the_users_runtime_runs_any_batch_and_size_from_disk(tiny_export, other_shape, name):
    images, reference = other_shape
    for e in entries(tiny_export.manifest, name):
        run_model = CASES[name].load(tiny_export.path / e["path"], e["variant"])
        run = Run(_artifact(name, e), "the user's", run_model(to_unit(images)))
        judge.check_shape(CASES[name].target({}), run, len(images), TINY, MODEL)
        judge.judge_run(reference, CASES[name].target({}), run, TINY, MODEL, lambda m: None)


@pytest.mark.parametrize("name", FORMATS)
def test_the_classifier_carries_its_class_names(tiny_export, name):
    labels = tiny_export.manifest["labels"]
    assert labels["embedded"] and labels["count"] == len(TINY_LABELS)
    classifier = next(e for e in entries(tiny_export.manifest, name) if e["variant"] == "classification")
    top = Path(classifier["path"]).parts[0]
    (path,) = [p for p in labels["paths"] if Path(p).parts[0] == top]
    assert tuple((tiny_export.path / path).read_text(encoding="utf-8").splitlines()) == TINY_LABELS


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+(?:e[-+]\d+)?", text)]


@pytest.mark.parametrize("name", FORMATS)
def test_each_card_states_its_figures_and_its_code_runs_as_written(tiny_export, name):
    root = tiny_export.path.parent.parent
    for e in entries(tiny_export.manifest, name):
        card = (tiny_export.path / e["card"]).read_text()
        assert Path(e["path"]).name in card
        stated = _numbers(card)
        for runtime, run in e["parity"].items():
            stage = "logits" if e["variant"] == "classification" else "pre_logits"
            rel = run["report"][stage]["tf_rel_l2_f64"]
            assert any(math.isclose(n, rel, rel_tol=0.01) for n in stated), f"{runtime}: {rel:.3g} not in the card"
        where = root if CASES[name].usage_from == "root" else (tiny_export.path / e["path"]).parent
        with chdir(where):
            exec(compile(usage_code(card), e["card"], "exec"), {})


@pytest.mark.parametrize("name", FORMATS)
def test_each_variant_is_one_kaggle_instance(tiny_export, name):
    kaggle = tiny_export.path / "kaggle"
    model = json.loads((kaggle / "model-metadata.json").read_text())
    assert (model["ownerSlug"], model["slug"]) == ("someone", "bit-tiny")
    instances = [json.loads(p.read_text()) for p in kaggle.rglob("model-instance-metadata.json")]
    assert len(instances) == len(VARIANTS) * len(CASES)
    assert sum(i["framework"] == CASES[name].kaggle_framework for i in instances) == len(VARIANTS)


# -- through the target alone --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tiny_npz):
    return load_with_reference(tiny_npz, TINY, TINY_PX)


@pytest.mark.parametrize("mutation", NAMES)
@pytest.mark.parametrize("name", FORMATS)
def test_mutations_fail_parity_by_a_wide_margin(tiny, tmp_path, name, mutation):
    ckpt, images, reference = tiny
    m = by_name(TINY, mutation, pool_padding())  # the other padding than this entry's forward pass
    job = make_job(ckpt, tmp_path, m)
    target = CASES[name].target(m.knobs)
    artifacts = target.write(job)
    runs = target.check(job, artifacts, to_unit(images))()
    assert {r.artifact.variant for r in runs} == set(VARIANTS)
    for run in runs:
        judge.check_shape(CASES[name].target({}), run, len(images), TINY, MODEL)
        with pytest.raises(ParityError) as failed:
            judge.judge_run(reference, CASES[name].target({}), run, TINY, MODEL, lambda m: None)
        report = failed.value.report
        worst = max(s.tf_rel_l2_f64 for s in report.stages.values())
        assert worst > MARGIN * report.tolerance, f"{run.runtime} {run.artifact.variant}: {report.render()}"


@pytest.mark.parametrize("name", FORMATS)
def test_a_damaged_file_fails_the_check_in_one_line(tiny_export, tmp_path, name):
    e = next(e for e in entries(tiny_export.manifest, name) if e["variant"] == "classification")
    source, copy = tiny_export.path / e["path"], tmp_path / e["path"]
    copy.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, copy)
    else:
        shutil.copy(source, copy)
    for f in [copy] if copy.is_file() else [p for p in copy.rglob("*") if p.is_file()]:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    images = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ExportError) as err:
        CASES[name].target({}).check(_job(tmp_path), [_artifact(name, e)], images)()
    msg = str(err.value)
    assert "\n" not in msg and Path(e["path"]).name in msg, msg


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.byte_identical])
def test_a_rewrite_is_byte_identical(tiny_export, tiny, tmp_path, name):
    ckpt, _, _ = tiny
    target, job = CASES[name].target({}), make_job(ckpt, tmp_path)
    again = target.write(job)
    for artifact, e in zip(again, entries(tiny_export.manifest, name), strict=True):
        assert target.digests(job, artifact) == e["sha256"]


@pytest.fixture(scope="module")
def r50x1(r50x1_npz):
    """The full R50x1 checkpoint, its parity images at 64 px and their float64 reference, computed once for every format."""
    return load_with_reference(r50x1_npz, R50X1, 64)


@pytest.mark.slow
# The SavedModels of the full layout: the session export ``exported`` (tests/conftest.py) writes, checks and
# judges them the same way at the same 64 px, and tests/export/test_savedmodel.py reads its manifest.
@pytest.mark.parametrize("name", [n for n in FORMATS if n != "savedmodel"])
def test_r50x1_full_layout(r50x1, tmp_path, name):
    ckpt, images, reference = r50x1
    job = make_job(ckpt, tmp_path)
    target = CASES[name].target({}, every_runtime=True)
    runs = target.check(job, target.write(job), to_unit(images))()
    assert {(r.runtime, r.artifact.variant) for r in runs} == {(rt, v) for rt in CASES[name].runtimes for v in VARIANTS}
    for run in runs:
        judge.check_shape(CASES[name].target({}), run, len(images), R50X1, MODEL)
        judge.judge_run(reference, CASES[name].target({}), run, R50X1, MODEL, lambda m: None)
