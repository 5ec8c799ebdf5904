"""`--format keras`, what only Keras has: backends, the check's processes and plan, fine-tuning, the torch card.

Written, reloaded (in a fresh process per backend), judged, mutated, labelled
and carded like every target: tests/export/test_contract.py. Every check here
loads the .keras files the way a user does: a new Python process with
KERAS_BACKEND set, ``import convert.model.keras_layers``, then
``keras.saving.load_model`` with safe_mode on (convert/export/keras_check.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import R50X1, R152X2, TINY, group_norm_case, grouped_norm_f64
from deploy_support import MODEL, entries, pool_padding, to_unit

from convert.checkpoint import Checkpoint
from convert.export.cards.common import ParityFigures
from convert.export.keras import (
    BACKENDS,
    CHECK_XLA_FLAGS,
    TARGET,
    BackendRuns,
    CheckPlan,
    KerasBackendError,
    KerasTarget,
)
from convert.export.target import Artifact, ExportJob
from convert.model.architecture import checkpoint_layout
from convert.model.xla_options import with_xla_flags, xla_flags
from convert.parity import compare, make_inputs, reference_outputs
from convert.registry import load_registry
from convert.synthetic import synthetic_arrays

ROOT = Path(__file__).resolve().parents[2]
#: Non-square and even: the SAME-padding mutation shifts the grid only on even sizes.
SIZE = (64, 48)
#: The check's scratch directories (under tempfile's directory).
SCRATCH_PREFIX = "bitconvert-keras-check-"
#: Relative L2 between two backends' SGD steps (scaled gradients) of the same float32 model. A step
#: that missed the gradient through the weight standardisation's statistics is 45% off, through the
#: group norm's 57% (measured on jax, as gradients of a random linear function of the features).
#: Agreeing backends are 1e-5-2e-5 apart, unless a unit sits at a ReLU's kink: TINY at 32 px has
#: some 20,000 pre-activations, the smallest 1e-6-1e-5 of their spread from zero for any input,
#: which the backends' float32 rounding (1e-7-1e-5) can put on either side. One such unit (on an
#: AVX-512 Zen 4, jax's compilation put one in block 2 on the other side) moves every earlier
#: weight's step, 0.89% in all. The bound sits between the two.
STEP_TOLERANCE = 5e-2


def _env(backend: str) -> dict:
    # Several child processes run at once on the 2-core machine: one thread each (see convert.export.keras.BackendRuns).
    threads = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
    return dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", **threads)


@pytest.fixture(scope="module")
def tiny():
    return Checkpoint(None, TINY, synthetic_arrays(TINY, seed=3))


@pytest.fixture(scope="module")
def parity_inputs(tiny):
    images, names = make_inputs(SIZE, 1)
    return images, reference_outputs(tiny, images, names, float32=False, pool_padding=pool_padding())


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """tempfile's directory for this test: where the check's scratch directories go, and must be gone from."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _check_children() -> list[int]:
    """The pids of this process's children running the Keras check (convert.export.keras_check)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == os.getpid() and b"convert.export.keras_check" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def test_facts_of_the_written_files_and_of_every_backend(tiny_export):
    written = entries(tiny_export.manifest, "keras")
    assert [e["path"] for e in written] == ["keras/classification.keras", "keras/feature_extraction.keras"]
    for e in written:
        assert e["facts"]["trainable_weights"] == e["facts"]["weights"]
        assert e["facts"]["custom_layers"] == "convert.model.keras_layers"
        for runtime, run in e["parity"].items():
            assert run["facts"]["safe_mode"] and run["facts"]["backend_version"], runtime
            assert runtime == f"keras-{run['facts']['backend']}"
        # The jax process compiles with the reference's fast-compile options; no other process is told.
        flags = {runtime: run["facts"]["xla_flags"] for runtime, run in e["parity"].items()}
        assert flags.pop("keras-jax") == CHECK_XLA_FLAGS
        assert set(flags.values()) == {None}


def test_xla_flags_are_the_options_and_come_before_the_users_own():
    assert xla_flags({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}) == (
        "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    )
    assert with_xla_flags("--a=0", "--a=1 --b=2") == "--a=0 --a=1 --b=2"
    assert with_xla_flags("--a=0", None) == "--a=0"


def test_input_range_is_inside_the_model(tiny, parity_inputs):
    from convert.model.keras_model import build_keras_models

    images, reference = parity_inputs
    unit, _ = build_keras_models(TINY, tiny.arrays, pool_pad=pool_padding())  # the reference's forward pass
    symmetric, _ = build_keras_models(TINY, tiny.arrays, input_range=(-1.0, 1.0), pool_pad=pool_padding())
    assert "input_range" in [layer.name for layer in unit.layers]
    assert "input_range" not in [layer.name for layer in symmetric.layers]
    for model, x in ((unit, to_unit(images)), (symmetric, images)):
        assert compare(reference, {"logits": np.asarray(model.predict_on_batch(x))}).passed


def _run_child(backend: str, args: list[str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=_env(backend), cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_fit_changes_the_backbone_and_trainable_false_freezes_it(tiny_export, tmp_path):
    """Also: in each of those fresh processes, importing convert.model.keras_layers after keras adds no module but convert;
    after the step the backbone predicts with its new weights (torch keeps standardised kernels between calls);
    the step itself, a scaled gradient, agrees across the backends."""
    path = str(tiny_export.path / "keras" / "feature_extraction.keras")
    child = str(Path(__file__).parents[1] / "keras_fit_child.py")
    steps = {b: tmp_path / f"{b}.npz" for b in BACKENDS}
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(BACKENDS, pool.map(lambda b: _run_child(b, [child, path, str(steps[b])]), BACKENDS), strict=True))
    for backend, proc in done.items():
        assert proc.returncode == 0, f"{backend}: {proc.stderr[-2000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["backend"] == backend
        assert result["new_modules"] == ["convert"], backend
        assert result["weights"] == len(checkpoint_layout(TINY)) - 2  # all but the head kernel and bias
        assert result["trainable_changed"] == result["weights"], backend
        assert result["predicts_new_weights"], backend
        assert result["frozen_changed"] == 0, backend
        assert result["frozen_head_changed"], backend
    step = {b: np.concatenate([a.ravel() for a in np.load(p).values()]).astype(np.float64) for b, p in steps.items()}
    for backend in BACKENDS[1:]:
        error = np.linalg.norm(step[backend] - step[BACKENDS[0]]) / np.linalg.norm(step[BACKENDS[0]])
        assert error < STEP_TOLERANCE, (backend, error)


def test_card_names_the_backends_checked_and_its_code_runs_on_torch(tiny_export):
    """The card's code loads the file on another backend than the export wrote it with."""
    written = {e["variant"]: e for e in entries(tiny_export.manifest, "keras")}
    job = ExportJob(MODEL, load_registry().get(MODEL), TINY, None, "unit", tiny_export.path, lambda m: None)
    artifact = Artifact("keras", "feature_extraction", written["feature_extraction"]["path"])
    figures = {f"keras-{b}": ParityFigures("pre_logits", 1e-6, 2e-6, 1.6e-4, 48, 6, 1) for b in BACKENDS[:2]}
    card = TARGET.card(job, artifact, figures)
    assert "Checked on: jax, tensorflow." in card and "Not checked on torch" in card
    assert (
        "import convert.model.keras_layers" in card
        and 'keras.saving.load_model("exports/r50x1-160/keras/feature_extraction.keras")' in card
    )
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 2
    proc = _run_child("torch", ["-c", "\n".join(blocks)], cwd=tiny_export.path.parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    classifier = Artifact("keras", "classification", written["classification"]["path"])
    classifier_card = TARGET.card(job, classifier, None)
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

    six = {r: np.zeros((6, r, r, 3), np.float32) for r in (160, 224, 256)}
    plenty, two_gb = 64e9, 2e9
    # R50x1 at 160: 55 MB of layer outputs an image, all 6 in one call, the three backends at once.
    assert KerasTarget().plan(R50X1, six[160], 3, plenty) == CheckPlan(6, 3)
    assert KerasTarget().plan(R50X1, six[160], 2, plenty) == CheckPlan(6, 2)
    # Unknown memory: the budget alone.
    assert KerasTarget().plan(R50X1, six[160], 3, None) == CheckPlan(6, 3)
    # Little memory: one process at a time, whatever the budget.
    assert KerasTarget().plan(R50X1, six[160], 3, two_gb) == CheckPlan(6, 1)
    # R101x1: 162 MB an image at 224, all 6 fit; 212 MB at 256: 4 would fit the budget but do not
    # divide 6 (equal calls: one jit compilation on JAX).
    assert KerasTarget().plan(Architecture.from_depth(101, 1, 1000), six[224], 3, plenty).batch == 6
    assert KerasTarget().plan(Architecture.from_depth(101, 1, 1000), six[256], 3, plenty).batch == 3
    # R152x2 at 224: 0.46 GB an image and 0.95 GB of weights: two images a call, one process at a time.
    assert KerasTarget().plan(R152X2, six[224], 3, plenty) == CheckPlan(2, 1, collect=True)
    assert KerasTarget(parallel=3).plan(R152X2, six[224], 3, two_gb) == CheckPlan(2, 3, collect=True)


def test_layer_output_elements_counts_every_layer_output():
    """The estimate the batches are sized by, against the outputs of every layer of the real model."""
    import keras

    from convert.model.keras_model import build_keras_models, layer_output_elements

    classifier, _ = build_keras_models(TINY)
    every = keras.Model(classifier.inputs, [layer.output for layer in classifier.layers])
    outputs = every.predict_on_batch(np.zeros((1, *SIZE, 3), np.float32))
    assert layer_output_elements(TINY, *SIZE) == sum(int(np.prod(o.shape)) for o in outputs)


def test_processes_start_before_the_files_exist_and_stop_cleanly(tiny_export, parity_inputs, tmp_path, scratch_root):
    images, reference = parity_inputs
    early = BackendRuns(["tensorflow"], parallel=1).start()
    later = tmp_path / "written-after-the-process-started.keras"
    later.write_bytes((tiny_export.path / "keras" / "classification.keras").read_bytes())
    outputs, info = early.submit([later], to_unit(images)).wait()["tensorflow"]
    assert compare(reference, {"logits": outputs[0]}).passed
    assert info["import_s"] > 0 and info["cpu_s"] > 0
    assert not _check_children() and not list(scratch_root.glob(SCRATCH_PREFIX + "*"))
    abandoned = BackendRuns(["tensorflow", "torch"], parallel=2).start()
    deadline = time.monotonic() + 60
    while len(_check_children()) < 2 and time.monotonic() < deadline:  # started by its threads
        time.sleep(0.05)
    assert len(_check_children()) == 2 and len(list(scratch_root.glob(SCRATCH_PREFIX + "*"))) == 1
    abandoned.stop()
    assert not _check_children()
    assert not list(scratch_root.glob(SCRATCH_PREFIX + "*"))


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


def test_a_backend_that_cannot_load_is_one_line_naming_it(tmp_path, scratch_root):
    bad = tmp_path / "classification.keras"
    bad.write_bytes(b"not a zip file")
    runs = BackendRuns(["tensorflow"], parallel=1).start().submit([bad], np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(KerasBackendError) as exc:
        runs.wait()
    msg = str(exc.value)
    assert "\n" not in msg and "tensorflow backend failed to load classification.keras" in msg
    assert not _check_children() and not list(scratch_root.glob(SCRATCH_PREFIX + "*"))


def test_the_exports_own_backend_is_checked_in_its_process_while_the_others_load_fresh(tiny_export):
    import keras

    from convert.export.keras import runs_here

    own = keras.backend.backend()
    for e in entries(tiny_export.manifest, "keras"):
        fresh = {runtime: run["facts"]["fresh_process"] for runtime, run in e["parity"].items()}
        assert fresh == {f"keras-{b}": b != own for b in BACKENDS}, e["variant"]
    assert runs_here(own, ("jax",)) and not runs_here(own, ())  # never without a fresh load beside it
    assert not any(runs_here(b, (own,)) for b in BACKENDS if b != own)


def test_checks_one_at_a_time_keep_a_process_each(tmp_path, scratch_root):
    # When memory allows one check at a time (R152x2), the export's own backend keeps its process too.
    target = KerasTarget(parallel=1)
    job = ExportJob(MODEL, load_registry().get(MODEL), TINY, None, "unit", tmp_path, lambda m: None)
    prepared = target.prepare(job, np.zeros((1, 32, 32, 3), np.float32))
    try:
        assert prepared.here is None and prepared.runs.backends == target.available()
    finally:
        prepared.stop()
    assert not _check_children()


def test_a_model_that_cannot_load_in_this_process_is_one_line_naming_it(tmp_path, scratch_root):
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "classification.keras").write_bytes(b"not a zip file")
    target = KerasTarget(backends=("tensorflow",), runs_here=lambda backend, others: True)
    job = ExportJob(MODEL, load_registry().get(MODEL), TINY, None, "unit", tmp_path, lambda m: None)
    images = np.zeros((1, 32, 32, 3), np.float32)
    prepared = target.prepare(job, images)
    assert prepared.here == "tensorflow" and prepared.runs.backends == ()
    wait = target.check(job, [Artifact("keras", "classification", "keras/classification.keras")], images, prepared)
    with pytest.raises(KerasBackendError) as exc:
        wait()
    msg = str(exc.value)
    assert "\n" not in msg and "tensorflow backend failed to load classification.keras" in msg
    assert not _check_children() and not list(scratch_root.glob(SCRATCH_PREFIX + "*"))


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


def test_keras_group_norm_is_the_grouped_one_in_float64():
    # As the TF graph's (tests/model/test_models.py): statistics per channel, normalised as
    # x * scale + (beta - mean * scale), against the literal grouped form in float64 on activations
    # whose group means dwarf their spread (this backend's kernels: the same keras.ops run on jax).
    from convert.model.keras_layers import GroupNorm

    x, gamma, beta = group_norm_case()
    layer = GroupNorm()
    layer.build(x.shape)
    layer.gamma.assign(gamma.astype(np.float32))
    layer.beta.assign(beta.astype(np.float32))
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out, grouped_norm_f64(x, gamma, beta), rtol=0, atol=1e-4)
    assert np.abs(out - grouped_norm_f64(x, gamma, beta, consecutive=False)).max() > 0.1
