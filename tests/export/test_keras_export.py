"""The keras export target: written, reloaded from disk in a fresh process per backend, equal to JAX.

Every check here loads the .keras files the way a user does: a new Python
process with KERAS_BACKEND set, ``import convert.model.keras_layers``, then
``keras.saving.load_model`` with safe_mode on (convert/export/keras_check.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import R50X1, R152X2, TINY

from convert.checkpoint import Checkpoint, load_checkpoint
from convert.export.cards.common import ParityFigures
from convert.export.keras import BACKENDS, TARGET, BackendRuns, CheckPlan, KerasBackendError, KerasTarget
from convert.export.target import VARIANT_STAGES, VARIANTS, ExportJob
from convert.model.architecture import checkpoint_layout
from convert.parity import compare, make_inputs, reference_outputs
from convert.registry import load_registry
from convert.synthetic import synthetic_arrays

ROOT = Path(__file__).resolve().parents[2]
#: Non-square and even: the SAME-padding mutation shifts the grid only on even sizes.
SIZE = (64, 48)
MODEL_ID = "r50x1-160"


def _env(backend: str) -> dict:
    # Several child processes run at once on the 2-core machine: one thread each (see convert.export.keras.BackendRuns).
    threads = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    return dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **threads)


def _job(checkpoint, export_dir: Path, input_range: str = "unit", log=None) -> ExportJob:
    from convert.model.tf_model import build_tf_model

    entry = load_registry().get(MODEL_ID)
    net = build_tf_model(checkpoint)
    return ExportJob(MODEL_ID, entry, checkpoint.architecture, net, input_range, export_dir, log or (lambda m: None))


def _unit(images: np.ndarray) -> np.ndarray:
    """Parity images ([-1, 1]) in the export's default [0, 1] range."""
    return ((images + 1.0) / 2.0).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return Checkpoint(None, TINY, synthetic_arrays(TINY, seed=3))


@pytest.fixture(scope="module")
def parity_inputs(tiny):
    images, names = make_inputs(SIZE, 1)
    return images, reference_outputs(tiny, images, names, float32=False)


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """The tiny model written by TARGET under <tmp>/exports/<id>/, as the CLI would lay it out."""
    root = tmp_path_factory.mktemp("keras")
    job = _job(tiny, root / "exports" / MODEL_ID)
    return root, job, TARGET.write(job)


def _judge(reference, runs):
    return {(r.runtime, r.artifact.variant): compare(reference, {VARIANT_STAGES[r.artifact.variant]: r.outputs}) for r in runs}


def test_every_backend_reproduces_jax_from_disk(exported, parity_inputs):
    _, job, artifacts = exported
    images, reference = parity_inputs
    assert [a.path for a in artifacts] == ["keras/classification.keras", "keras/feature_extraction.keras"]
    assert all((job.export_dir / a.path).is_file() for a in artifacts)
    assert artifacts[0].facts["trainable_weights"] == artifacts[0].facts["weights"]
    runs = TARGET.check(job, artifacts, _unit(images))()
    assert sorted((r.runtime, r.artifact.variant) for r in runs) == sorted((f"keras-{b}", v) for b in BACKENDS for v in VARIANTS)
    for (runtime, variant), report in _judge(reference, runs).items():
        assert report.passed, f"{runtime} {variant}:\n{report.render()}"
    widths = {"classification": TINY.classes, "feature_extraction": TINY.features}
    assert all(r.outputs.shape == (len(images), widths[r.artifact.variant]) for r in runs)
    assert all(r.facts["safe_mode"] and r.facts["backend_version"] for r in runs)


def test_input_range_is_inside_the_model(tiny, parity_inputs):
    from convert.model.keras_model import build_keras_models

    images, reference = parity_inputs
    unit, _ = build_keras_models(TINY, tiny.arrays)
    symmetric, _ = build_keras_models(TINY, tiny.arrays, input_range=(-1.0, 1.0))
    assert "input_range" in [layer.name for layer in unit.layers]
    assert "input_range" not in [layer.name for layer in symmetric.layers]
    for model, x in ((unit, _unit(images)), (symmetric, images)):
        assert compare(reference, {"logits": np.asarray(model.predict_on_batch(x))}).passed


def _mutated_job(tiny, export_dir: Path) -> ExportJob:
    """Two same-shape arrays swapped (the mapping cannot notice: shapes agree)."""
    arrays = dict(tiny.arrays)
    a, b = "resnet/block1/unit01/b/group_norm/gamma", "resnet/block1/unit01/c/group_norm/gamma"
    assert arrays[a].shape == arrays[b].shape
    arrays[a], arrays[b] = arrays[b], arrays[a]
    return _job(Checkpoint(None, TINY, arrays), export_dir)


def test_mutations_fail_keras_parity(tiny, exported, parity_inputs, tmp_path):
    _, good_job, good = exported
    images, reference = parity_inputs
    paths = {"correct": good_job.export_dir / good[0].path}
    # The root pool padded the other way (-inf against this zero-padded net's reference).
    for name, options in {"same_padding": {"strided_padding": "same"}, "other_pool_padding": {"pool_pad": "neg_inf"}}.items():
        job = _job(tiny, tmp_path / name)
        paths[name] = job.export_dir / KerasTarget(build_options=options).write(job)[0].path
    job = _mutated_job(tiny, tmp_path / "swapped")
    paths["swapped"] = job.export_dir / TARGET.write(job)[0].path
    runs = BackendRuns(["tensorflow"], parallel=1).start().submit(list(paths.values()), _unit(images))
    outputs, _ = runs.wait()["tensorflow"]
    reports = {name: compare(reference, {"logits": out}) for name, out in zip(paths, outputs, strict=True)}
    assert reports.pop("correct").passed
    for name, report in reports.items():
        assert not report.passed, f"mutation {name} passed:\n{report.render()}"
        assert report.stages["logits"].tf_rel_l2_f64 > 20 * report.tolerance, name


def _run_child(backend: str, args: list[str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=_env(backend), cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_fit_changes_the_backbone_and_trainable_false_freezes_it(exported):
    """Also: in each of those fresh processes, importing convert.model.keras_layers after keras adds no module but convert."""
    _, job, artifacts = exported
    path = str(job.export_dir / artifacts[1].path)
    child = str(Path(__file__).parents[1] / "keras_fit_child.py")
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(BACKENDS, pool.map(lambda b: _run_child(b, [child, path]), BACKENDS), strict=True))
    for backend, proc in done.items():
        assert proc.returncode == 0, f"{backend}: {proc.stderr[-2000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["backend"] == backend
        assert result["new_modules"] == ["convert"], backend
        assert result["weights"] == len(checkpoint_layout(TINY)) - 2  # all but the head kernel and bias
        assert result["trainable_changed"] == result["weights"], backend
        assert result["frozen_changed"] == 0, backend
        assert result["frozen_head_changed"], backend


def test_card_usage_blocks_run_as_written(exported, parity_inputs):
    root, job, artifacts = exported
    figures = {
        f"keras-{b}": ParityFigures("pre_logits", 1e-6, 2e-6, 1.6e-4, SIZE[0], len(parity_inputs[0]), 1) for b in BACKENDS[:2]
    }
    card = TARGET.card(job, artifacts[1], figures)
    assert "Checked on: jax, tensorflow." in card and "Not checked on torch" in card
    assert (
        "import convert.model.keras_layers" in card
        and 'keras.saving.load_model("exports/r50x1-160/keras/feature_extraction.keras")' in card
    )
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 2
    proc = _run_child("torch", ["-c", "\n".join(blocks)], cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    classifier_card = TARGET.card(job, artifacts[0], None)
    assert "--skip-parity" in classifier_card and "assert outputs.shape == (2, 10)" in classifier_card


def test_missing_backend_is_skipped_and_named(tmp_path):
    logs = []
    target = KerasTarget(is_installed=lambda b: b != "torch")
    assert target.available(logs.append) == ("jax", "tensorflow")
    assert logs == ["keras: the torch backend is not installed, not checked (install it: pip install .[keras-torch])"]
    with pytest.raises(KerasBackendError, match="no Keras backend"):
        KerasTarget(is_installed=lambda b: False).available()


def test_plan_batches_by_layer_outputs_and_runs_by_memory():
    from convert.model.architecture import Architecture

    six = {r: np.zeros((6, r, r, 3), np.float32) for r in (160, 224)}
    # R50x1 at 160: 79 MB of layer outputs an image, all 6 in one call, the three backends at once.
    assert KerasTarget().plan(R50X1, six[160], 3) == CheckPlan(6, 3)
    assert KerasTarget().plan(R50X1, six[160], 2) == CheckPlan(6, 2)
    # R101x1 at 224: 233 MB an image; 4 would fit the budget but do not divide 6 (one jit compilation on JAX).
    assert KerasTarget().plan(Architecture.from_depth(101, 1, 1000), six[224], 3).batch == 3
    # R152x2 at 224: 0.66 GB an image and 0.95 GB of weights: one image a call, one process at a time.
    assert KerasTarget().plan(R152X2, six[224], 3) == CheckPlan(1, 1, collect=True)
    assert KerasTarget(parallel=3).plan(R152X2, six[224], 3) == CheckPlan(1, 3, collect=True)


def test_layer_output_elements_counts_every_layer_output():
    """The estimate the batches are sized by, against the outputs of every layer of the real model."""
    import keras

    from convert.model.keras_model import build_keras_models, layer_output_elements

    classifier, _ = build_keras_models(TINY)
    every = keras.Model(classifier.inputs, [layer.output for layer in classifier.layers])
    outputs = every.predict_on_batch(np.zeros((1, *SIZE, 3), np.float32))
    assert layer_output_elements(TINY, *SIZE) == sum(int(np.prod(o.shape)) for o in outputs)


def test_processes_start_before_the_files_exist_and_stop_cleanly(exported, parity_inputs, tmp_path):
    _, job, artifacts = exported
    images, reference = parity_inputs
    early = BackendRuns(["tensorflow"], parallel=1).start()
    later = tmp_path / "written-after-the-process-started.keras"
    later.write_bytes((job.export_dir / artifacts[0].path).read_bytes())
    outputs, info = early.submit([later], _unit(images)).wait()["tensorflow"]
    assert compare(reference, {"logits": outputs[0]}).passed
    assert info["import_s"] > 0 and info["cpu_s"] > 0
    abandoned = BackendRuns(["tensorflow", "torch"], parallel=2).start()
    deadline = time.monotonic() + 60
    while len(abandoned._procs) < 2 and time.monotonic() < deadline:  # started by its threads
        time.sleep(0.05)
    procs = list(abandoned._procs)
    abandoned.stop()
    assert len(procs) == 2 and all(p.poll() is not None for p in procs)
    assert not abandoned._scratch.exists()


def test_a_check_process_without_a_spec_exits_quietly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "convert.export.keras_check", str(tmp_path)],
        env=_env("jax"),
        input="",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_a_backend_that_cannot_load_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "classification.keras"
    bad.write_bytes(b"not a zip file")
    runs = BackendRuns(["tensorflow"], parallel=1).start().submit([bad], np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(KerasBackendError) as exc:
        runs.wait()
    msg = str(exc.value)
    assert "\n" not in msg and "tensorflow backend failed to load classification.keras" in msg
    assert not runs._scratch.exists()


def test_assign_keras_checks_both_sides_before_setting_anything(tiny):
    from convert.errors import MappingError
    from convert.model.keras_model import build_keras_models
    from convert.model.mapping import assign_keras, mapping_rows

    classifier, features = build_keras_models(TINY)
    arrays = dict(tiny.arrays)
    del arrays["resnet/block2/unit01/b/group_norm/gamma"]
    with pytest.raises(MappingError, match="- checkpoint array resnet/block2/unit01/b/group_norm/gamma missing"):
        assign_keras(classifier, arrays, mapping_rows(TINY))
    with pytest.raises(MappingError, match=r"\+ Keras weight head/kernel \(2048, 10\) set by no row"):
        assign_keras(classifier, tiny.arrays, [r for r in mapping_rows(TINY) if r.keras_path != "head/kernel"])
    kernels = [w for w in classifier.weights if w.path.endswith("/kernel")]
    assert kernels and not any(np.any(np.asarray(w.numpy())) for w in kernels)  # zeros: nothing was set
    assign_keras(classifier, tiny.arrays, mapping_rows(TINY))
    np.testing.assert_array_equal(
        features.get_layer("block3_unit01_b_conv").kernel.numpy(),
        tiny.arrays["resnet/block3/unit01/b/standardized_conv2d/kernel"],
    )


@pytest.mark.slow
def test_r50x1_every_backend(r50x1_npz, tmp_path):
    checkpoint = load_checkpoint(r50x1_npz, R50X1)
    images, names = make_inputs(96, 1)
    job = _job(checkpoint, tmp_path)
    wait = TARGET.check(job, TARGET.write(job), _unit(images))
    reference = reference_outputs(checkpoint, images, names, float32=False)
    runs = wait()
    assert len(runs) == 2 * len(BACKENDS)
    for (runtime, variant), report in _judge(reference, runs).items():
        assert report.passed, f"{runtime} {variant}:\n{report.render()}"
