"""`--format onnx`: ONNX files written through the target interface, reloaded by onnxruntime, equal to JAX."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest
from conftest import R50X1, R152X2, R152X4, TINY
from deploy_support import MUTATIONS, chdir, load_with_reference, make_job, reports, usage_code, write_and_check

from convert.export.cards.common import ParityFigures
from convert.export.onnx import DIMS, TARGET, OnnxTarget, run_onnx
from convert.export.target import INPUT_NAME, OUTPUT_NAMES, VARIANTS
from convert.model.architecture import checkpoint_layout

PX = 48


@pytest.fixture(scope="module")
def tiny(tiny_npz):
    return load_with_reference(tiny_npz, TINY, PX)


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    ckpt, images, ref = tiny
    job = make_job(ckpt, tmp_path_factory.mktemp("onnx"))
    artifacts, runs = write_and_check(TARGET, job, images)
    return job, artifacts, runs, ref


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_writes_both_variants_and_they_match_jax_from_disk(written):
    job, artifacts, runs, ref = written
    assert [a.path for a in artifacts] == ["onnx/classification.onnx", "onnx/feature_extraction.onnx"]
    assert [(r.artifact.variant, r.runtime) for r in runs] == [(v, "onnxruntime") for v in VARIANTS]
    for report in reports(ref, runs).values():
        assert report.passed, report.render()
    facts = artifacts[0].facts
    assert facts["opset"] >= 17 and facts["converter_version"]["tf2onnx"] and facts["runtime_version"]["onnxruntime"]
    assert facts["external_data"] is False and list(facts["files"]) == [artifacts[0].path]


def test_names_dims_and_initializers(written):
    import onnx

    job, artifacts, _, _ = written
    for a in artifacts:
        model = onnx.load(str(job.export_dir / a.path))
        (inp,) = model.graph.input
        (out,) = model.graph.output
        assert inp.name == INPUT_NAME and out.name == OUTPUT_NAMES[a.variant]
        assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [*DIMS, 3]
        # The weights are initializers named by checkpoint key, standardised kernels folded in.
        keys = {i.name for i in model.graph.initializer if i.name.startswith("resnet/")}
        layout = set(checkpoint_layout(TINY))
        assert keys == (layout if a.variant == "classification" else {k for k in layout if "/head/" not in k})
        kernel = next(i for i in model.graph.initializer if i.name == "resnet/root_block/standardized_conv2d/kernel")
        k = onnx.numpy_helper.to_array(kernel).astype(np.float64)
        assert np.abs(k.mean(axis=(0, 1, 2))).max() < 1e-6 and np.abs(k.std(axis=(0, 1, 2)) - 1).max() < 1e-5


def test_any_batch_and_size(written):
    job, artifacts, _, _ = written
    rng = np.random.default_rng(1)
    for shape in [(1, 40, 56, 3), (3, 64, 64, 3)]:
        x = rng.uniform(0, 1, shape).astype(np.float32)
        got = run_onnx(job.export_dir / artifacts[1].path, x, "feature_vector")
        want = job.net.features(x * 2 - 1).numpy()
        assert got.shape == (shape[0], TINY.features)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_rewrite_is_byte_identical(written, tmp_path):
    job, artifacts, _, _ = written
    again = TARGET.write(replace(job, export_dir=tmp_path))
    for a, b in zip(artifacts, again, strict=True):
        assert _sha(job.export_dir / a.path) == _sha(tmp_path / b.path)


@pytest.mark.parametrize("mutation", list(MUTATIONS.values()), ids=list(MUTATIONS))
def test_mutations_fail_parity(tiny, tmp_path, mutation):
    ckpt, images, ref = tiny
    _, runs = write_and_check(TARGET, make_job(ckpt, tmp_path, mutation), images)
    for variant, report in reports(ref, runs).items():
        assert not report.passed, f"{variant}: {report.render()}"


def test_over_the_size_limit_weights_go_to_external_data(tiny, tmp_path):
    ckpt, images, ref = tiny
    small = OnnxTarget(size_limit=10_000_000)  # less than the tiny layout's 32 MB of weights
    job = make_job(ckpt, tmp_path / "export")
    artifacts, runs = write_and_check(small, job, images)
    for a in artifacts:
        data = a.path + ".data"
        assert a.facts["external_data"] is True and list(a.facts["files"]) == [a.path, data]
        assert (job.export_dir / a.path).stat().st_size < 1_000_000 < (job.export_dir / data).stat().st_size
        assert a.facts["bytes"] == sum(f["bytes"] for f in a.facts["files"].values())
    for report in reports(ref, runs).values():
        assert report.passed, report.render()
    # onnxruntime really reads the data file from disk: without it the model does not load.
    (job.export_dir / artifacts[0].path).with_suffix(".onnx.data").rename(tmp_path / "aside")
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception classes
        run_onnx(job.export_dir / artifacts[0].path, images[:1], "logits")


def test_default_limit_external_data_for_r152x4_only():
    assert all(TARGET.needs_external_data(R152X4, v) for v in VARIANTS)
    assert not any(TARGET.needs_external_data(arch, v) for arch in (R50X1, R152X2) for v in VARIANTS)


def test_card_usage_runs_as_written(written):
    job, artifacts, _, _ = written
    figures = {"onnxruntime": ParityFigures("logits", 1e-5, 3e-6, 1.6e-4, PX, 6, 1)}
    card = TARGET.card(job, artifacts[0], figures)
    assert "InferenceSession" in card and "3.00e-06" in card and "opset 17" in card
    scope: dict = {}
    with chdir(job.export_dir / "onnx"):
        exec(compile(usage_code(card), "card", "exec"), scope)
    assert scope["logits"].shape == (2, TINY.classes)


@pytest.mark.slow
def test_r50x1_full_layout(r50x1_npz, tmp_path):
    ckpt, images, ref = load_with_reference(r50x1_npz, R50X1, 64)
    _, runs = write_and_check(TARGET, make_job(ckpt, tmp_path), images)
    for report in reports(ref, runs).values():
        assert report.passed, report.render()


def test_a_damaged_file_fails_the_check_in_one_line(written, tmp_path):
    from convert.errors import ExportError

    job, artifacts, _, _ = written
    (tmp_path / "onnx").mkdir()
    data = (job.export_dir / artifacts[0].path).read_bytes()
    (tmp_path / artifacts[0].path).write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError) as err:
        TARGET.check(replace(job, export_dir=tmp_path), artifacts[:1], np.zeros((1, 32, 32, 3), np.float32))()
    assert "\n" not in str(err.value) and artifacts[0].path in str(err.value)
