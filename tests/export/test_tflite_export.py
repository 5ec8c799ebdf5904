"""`--format tflite`: LiteRT files written through the target interface, reloaded by ai_edge_litert, equal to JAX."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import R50X1, R152X2, R152X4, TINY
from deploy_support import (
    MUTATIONS,
    chdir,
    load_with_reference,
    make_job,
    reports,
    usage_code,
    write_and_check,
)

from convert.errors import ExportError
from convert.export.cards.common import ParityFigures
from convert.export.target import INPUT_NAME, OUTPUT_NAMES, VARIANTS
from convert.export.tflite import TARGET, TFLiteTarget, run_tflite

PX = 48


@pytest.fixture(scope="module")
def tiny(tiny_npz):
    return load_with_reference(tiny_npz, TINY, PX)


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    ckpt, images, ref = tiny
    logs = []
    job = make_job(ckpt, tmp_path_factory.mktemp("tflite"), logs=logs)
    artifacts, runs = write_and_check(TARGET, job, images)
    return job, artifacts, runs, ref


def test_writes_both_variants_and_they_match_jax_from_disk(written):
    job, artifacts, runs, ref = written
    assert [a.path for a in artifacts] == ["tflite/classification.tflite", "tflite/feature_extraction.tflite"]
    assert [(r.artifact.variant, r.runtime) for r in runs] == [(v, "litert") for v in VARIANTS]
    for _variant, report in reports(ref, runs).items():
        assert report.passed, report.render()
    facts = artifacts[0].facts
    assert facts["converter"].startswith("tf.lite.TFLiteConverter") and facts["converter_version"]["tensorflow"]
    assert facts["runtime_version"]["ai-edge-litert"] and facts["weight_dtype"] == "float32"
    assert facts["bytes"] == (job.export_dir / artifacts[0].path).stat().st_size


def test_names_and_any_batch_and_size(written):
    job, artifacts, _, _ = written
    from ai_edge_litert.interpreter import Interpreter

    for a in artifacts:
        interpreter = Interpreter(model_path=str(job.export_dir / a.path))
        (inp,) = interpreter.get_input_details()
        (out,) = interpreter.get_output_details()
        assert inp["name"] == INPUT_NAME and list(inp["shape_signature"]) == [-1, -1, -1, 3]
        assert out["name"] == OUTPUT_NAMES[a.variant]
        sig = interpreter.get_signature_list()["serving_default"]
        assert sig == {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAMES[a.variant]]}
    rng = np.random.default_rng(1)
    for shape in [(1, 40, 56, 3), (3, 64, 64, 3)]:
        x = rng.uniform(0, 1, shape).astype(np.float32)
        got = run_tflite(job.export_dir / artifacts[0].path, x)
        want = job.net(x * 2 - 1).numpy()  # the live TF graph, standardising per call
        assert got.shape == (shape[0], TINY.classes)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_rewrite_is_byte_identical(written, tmp_path):
    job, artifacts, _, _ = written
    again = TARGET.write(make_job_like(job, tmp_path))
    for a, b in zip(artifacts, again, strict=True):
        assert _sha(job.export_dir / a.path) == _sha(tmp_path / b.path)


def make_job_like(job, export_dir):
    from dataclasses import replace

    return replace(job, export_dir=export_dir)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mutation", list(MUTATIONS.values()), ids=list(MUTATIONS))
def test_mutations_fail_parity(tiny, tmp_path, mutation):
    ckpt, images, ref = tiny
    _, runs = write_and_check(TARGET, make_job(ckpt, tmp_path, mutation), images)
    for variant, report in reports(ref, runs).items():
        assert not report.passed, f"{variant}: {report.render()}"


def test_size_limit_refuses_before_converting(tiny, tmp_path):
    ckpt, _, _ = tiny
    small = TFLiteTarget(size_limit=10_000_000)  # less than the tiny layout's 32 MB of weights
    job = make_job(ckpt, tmp_path)
    with pytest.raises(ExportError) as err:
        small.write(job)
    msg = str(err.value)
    assert "\n" not in msg and "FlatBuffer" in msg and "--format onnx" in msg
    assert not (tmp_path / "tflite").exists() or not any((tmp_path / "tflite").iterdir())


def test_default_limit_refuses_r152x4_only():
    why = TARGET.refusal(R152X4)
    assert why is not None and "3.7" in why
    assert TARGET.refusal(R152X2) is None and TARGET.refusal(R50X1) is None


def test_card_usage_runs_as_written(written):
    job, artifacts, runs, ref = written
    figures = {"litert": ParityFigures("pre_logits", 1e-5, 2e-6, 1.6e-4, PX, 6, 1)}
    card = TARGET.card(job, artifacts[1], figures)
    assert "feature_vector" in card and "resize_tensor_input" in card and "2.00e-06" in card
    scope: dict = {}
    with chdir(job.export_dir / "tflite"):
        exec(compile(usage_code(card), "card", "exec"), scope)
    assert scope["feature_vector"].shape == (2, TINY.features)


@pytest.mark.slow
def test_r50x1_full_layout(r50x1_npz, tmp_path):
    ckpt, images, ref = load_with_reference(r50x1_npz, R50X1, 64)
    _, runs = write_and_check(TARGET, make_job(ckpt, tmp_path), images)
    for _variant, report in reports(ref, runs).items():
        assert report.passed, report.render()


def test_a_damaged_file_fails_the_check_in_one_line(written, tmp_path):
    job, artifacts, _, _ = written
    from dataclasses import replace

    damaged = replace(job, export_dir=tmp_path)
    (tmp_path / "tflite").mkdir()
    data = (job.export_dir / artifacts[0].path).read_bytes()
    (tmp_path / artifacts[0].path).write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError) as err:
        TARGET.check(damaged, artifacts[:1], np.zeros((1, 32, 32, 3), np.float32))()
    assert "\n" not in str(err.value) and artifacts[0].path in str(err.value)
