"""The export's steps: bad input refused before writing, parity failures removing the export, the reference's
placement, and a format the package does not have exported through the interface alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from export_support import MODEL, model_files, savedmodel_entry, sha, tiny_export

from convert.export import ExportOptions, export_model
from convert.registry import load_registry

LABELS = tuple(f"class {i}" for i in range(TINY.classes))


@pytest.fixture(scope="module")
def inline(tmp_path_factory):
    """(checkpoint, result): one tiny export with the reference in this process and class names, made once for
    the tests that compare another export with it or need an earlier export to keep (they read it, or copy it)."""
    tmp = tmp_path_factory.mktemp("inline")
    return tmp / "tiny.npz", tiny_export(tmp, tmp / "out", reference="inline", labels=LABELS)


def _truncated_copy(src: Path, dest: Path) -> Path:
    data = Path(src).read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def test_damaged_checkpoint_stops_before_anything_is_written(invoke, tmp_path, r50x1_npz):
    bad = _truncated_copy(r50x1_npz, tmp_path / "bad.npz")
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", bad, "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitconvert: error: ") and "Traceback" not in result.stderr
    assert str(bad) in lines[0]
    assert not out.exists()


def test_wrong_architecture_checkpoint_is_refused(invoke, tmp_path, tiny_npz):
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", tiny_npz, "-o", out)
    assert result.exit_code == 1 and "missing resnet/block1/unit02" in result.stderr
    assert not out.exists()


def test_usage_errors(invoke, tmp_path, r50x1_npz):
    assert invoke("export", "-o", tmp_path).exit_code == 2
    assert invoke("export", "--all", "--model", MODEL, "-o", tmp_path).exit_code == 2
    r = invoke("export", "--model", MODEL, "--model", "r50x1-224", "--checkpoint", r50x1_npz, "-o", tmp_path)
    assert r.exit_code == 2 and "--checkpoint" in r.stderr
    r = invoke("export", "--model", "r50x1-161", "--checkpoint", r50x1_npz, "-o", tmp_path)
    assert r.exit_code == 2 and "r50x1-160" in r.stderr
    assert invoke("export", "--model", MODEL, "--input-range", "bytes", "-o", tmp_path).exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_all_offline_and_not_cached_writes_nothing(invoke, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", "--all", "--offline", "--cache-dir", tmp_path / "cache", "-o", out)
    assert result.exit_code == 5, result.stderr
    assert "r152x2-384" in result.stderr  # the first collection entry
    assert not out.exists()


def test_unknown_format_is_a_usage_error_listing_the_valid_ones(invoke, tmp_path, r50x1_npz):
    result = invoke("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", tmp_path, "--format", "savedmodel,pickle")
    assert result.exit_code == 2 and "unknown format 'pickle'; valid formats: savedmodel" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert "savedmodel  TF Hub-style SavedModels" in invoke("export", "--help").stdout


def test_parity_failure_after_export_removes_the_output(tmp_path, monkeypatch, inline):
    """A SavedModel that differs from the live graph (one head bias nudged before saving) is caught from disk."""
    import convert.export.savedmodel as savedmodel
    from convert.errors import ParityError

    out = tmp_path / "out"
    good = shutil.copytree(inline[1].path, out / MODEL)  # an earlier export at out/<id>
    good_files = model_files(good / "classification")

    real_build = savedmodel.build_exportable

    def nudged(net, variant, input_range, features=None):
        if variant == "classification":
            net.variables_by_key["resnet/head/conv2d/bias"].assign_add(np.full([10], 0.5, np.float32))
        return real_build(net, variant, input_range, features)

    monkeypatch.setattr(savedmodel, "build_exportable", nudged)  # after the live model's run: it passes
    with pytest.raises(ParityError, match="reloaded classification SavedModel does not reproduce JAX"):
        tiny_export(tmp_path, out, reference="worker")  # the reference in a worker process
    assert model_files(good / "classification") == good_files  # the previous export stays
    assert sorted(p.name for p in out.iterdir()) == [MODEL]  # and no temporary directory


def test_parity_failure_before_export_writes_nothing(tmp_path, monkeypatch):
    """The classic port bug (TF 'SAME' padding on stride 2) is refused before any file is written."""
    import convert.model.tf_model as tf_model
    from convert.errors import ParityError

    real = tf_model.build_tf_model
    monkeypatch.setattr(tf_model, "build_tf_model", lambda ckpt, **knobs: real(ckpt, **{**knobs, "strided_padding": "same"}))
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="before export"):
        tiny_export(tmp_path, out, reference="inline")  # the reference first, in this process
    assert not out.exists()


def test_the_graph_judged_before_export_is_the_savedmodels_form(tmp_path, output_side_unstandardised):
    """A fault only in the SavedModels' form of the network (block 4 standardising its outputs) is refused before writing."""
    from convert.errors import ParityError

    out = tmp_path / "out"
    with pytest.raises(ParityError, match="before export"):
        tiny_export(tmp_path, out, reference="inline")
    assert not out.exists()


def test_worker_first_placement_exports_the_same(tmp_path, inline):
    """With memory for the worker but not for both at once, the reference runs first in a worker: same figures."""
    from convert.parity import MachineFacts
    from convert.parity.placement import alongside_bytes

    checkpoint, in_process = inline
    nbytes = checkpoint.stat().st_size
    # Enough available memory for the worker-first estimate, not for the alongside one.
    tight = MachineFacts(usable_cpus=2, idle_cpus=2.0, available_bytes=alongside_bytes(nbytes) / 0.8, checkpoint_bytes=nbytes)
    lines = []
    options = ExportOptions(output_dir=tmp_path / "b", parity_resolution=48, machine=tight)
    worker_first = export_model(load_registry().get(MODEL), checkpoint, options, arch=TINY, log=lines.append)
    assert any("JAX reference in a worker process while TensorFlow is imported" in line for line in lines), lines
    assert any("JAX reference on" in line and "(in a worker process)" in line for line in lines)
    for variant, stage in (("classification", "logits"), ("feature_extraction", "pre_logits")):
        a, b = (
            savedmodel_entry(e.manifest, variant)["parity"]["tensorflow"]["report"][stage] for e in (in_process, worker_first)
        )
        assert b["tf_rel_l2_f64"] == pytest.approx(a["tf_rel_l2_f64"], rel=1e-9)


@pytest.fixture
def fake_format(monkeypatch):
    """tests/fake_target.py registered as --format fake (the formats table is data)."""
    import fake_target

    import convert.export.formats as formats

    monkeypatch.setitem(formats.FORMATS, "fake", "fake_target")
    monkeypatch.setitem(fake_target.SCALE, "value", 1.0)
    return fake_target


def _savedmodel_part(manifest: dict) -> dict:
    """Everything savedmodel's, without what differs between two exports in one process (TF's graph names in
    the fingerprints and digests, the reload times) or depends on the other formats (the labels' paths)."""
    d = json.loads(json.dumps({k: v for k, v in manifest.items() if k not in ("targets", "labels")}))
    d["savedmodel"] = json.loads(json.dumps(manifest["targets"]["savedmodel"]))
    for entry in d["savedmodel"]:
        del entry["sha256"], entry["facts"]["fingerprint"], entry["parity"]["tensorflow"]["seconds"]
    return d


def test_a_new_format_needs_nothing_but_its_target(tmp_path, fake_format, inline):
    """A format the package does not have, registered in the formats table only: its hooks run, its labels,
    card, digests and parity land under targets, it gets a Kaggle instance, and savedmodel's part is unchanged."""
    labels = LABELS
    _, only = inline
    fake_format.CALLS.clear()
    both = tiny_export(
        tmp_path, tmp_path / "out", reference="inline", formats=("savedmodel", "fake"), kaggle="me/bit-tiny", labels=labels
    )
    m = both.manifest
    assert fake_format.CALLS == ["prepare", "stop", "finish"]
    assert list(m) == list(only.manifest) and list(m["targets"]) == ["savedmodel", "fake"]
    assert _savedmodel_part(m) == _savedmodel_part(only.manifest)
    (entry,) = m["targets"]["fake"]
    assert (entry["variant"], entry["path"], entry["card"]) == ("classification", "fake/classification", "fake/classification.md")
    assert entry["facts"] == {"converter": "tf.saved_model", "finished": True}
    assert entry["sha256"]["saved_model.pb"] == sha(both.path / "fake/classification/saved_model.pb")
    report = entry["parity"]["tensorflow"]["report"]
    assert report["summary"]["passed"] and set(report) == {"logits", "summary"}
    assert f"relative L2 error {report['logits']['tf_rel_l2_f64']}" in (both.path / "fake/classification.md").read_text()
    assert m["labels"]["paths"] == ["classification/assets/labels.txt", "fake/classification.labels"]
    assert tuple((both.path / "fake/classification.labels").read_text().splitlines()) == labels

    kaggle = both.path / "kaggle"
    instances = sorted(p.parent.relative_to(kaggle).as_posix() for p in kaggle.rglob("model-instance-metadata.json"))
    fake_instance = f"{fake_format.FRAMEWORK}/{MODEL}-classification"
    assert instances == sorted([fake_instance, f"tensorFlow2/{MODEL}-classification", f"tensorFlow2/{MODEL}-feature-vector"])
    data = json.loads((kaggle / fake_instance / "model-instance-metadata.json").read_text())
    assert data["framework"] == fake_format.FRAMEWORK and data["ownerSlug"] == "me"
    assert 'fake.load("${PATH}/fake/classification")(images)' in data["usage"] and "Class names" not in data["usage"]
    assert sha(kaggle / fake_instance / "saved_model.pb") == entry["sha256"]["saved_model.pb"]


def test_second_target_failing_parity_removes_the_whole_export(tmp_path, fake_format):
    from convert.errors import ParityError

    fake_format.SCALE["value"] = 1.01  # 1% off: far above the tolerance
    out = tmp_path / "out"
    fake_format.CALLS.clear()
    with pytest.raises(ParityError, match=r"reloaded classification fake artifact \(tensorflow\) does not reproduce JAX"):
        tiny_export(tmp_path, out, reference="inline", formats=("savedmodel", "fake"))
    assert not out.exists()
    assert fake_format.CALLS == ["prepare", "stop"]  # stopped, and nothing finished


def test_check_images_are_the_reference_images_in_each_input_range():
    """What an artifact is checked on: the parity images the reference saw, in the export's input range. The
    model's own input map takes them back to within float32 rounding; in [-1, 1] they are the same bits."""
    from convert.export.target import INPUT_RANGES, from_model_range
    from convert.model.numerics import pixels_to_model_range
    from convert.parity import make_inputs

    images, _ = make_inputs(32, 2)
    for lo, hi in INPUT_RANGES.values():
        x = from_model_range(images, lo, hi)
        assert x.dtype == np.float32 and lo <= x.min() and x.max() <= hi
        back = pixels_to_model_range(x.astype(np.float64), lo, hi)
        assert np.abs(back - images).max() <= 2 * np.finfo(np.float32).eps
    assert np.array_equal(from_model_range(images, -1.0, 1.0), images)
