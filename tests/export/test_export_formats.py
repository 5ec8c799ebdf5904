"""Every format through the orchestrator in one export: manifest, labels, cards, Kaggle metadata."""

from __future__ import annotations

import json

import pytest
from conftest import TINY

from convert.export import ExportOptions, export_model
from convert.export.formats import FORMATS
from convert.registry import load_registry

ALL = ("savedmodel", "keras", "tflite", "onnx")
RUNTIMES = {
    "savedmodel": {"tensorflow"},
    "keras": {"keras-jax", "keras-tensorflow", "keras-torch"},
    "tflite": {"litert"},
    "onnx": {"onnxruntime"},
}
LABELS = tuple(f"class {i}" for i in range(TINY.classes))


@pytest.fixture(scope="module")
def everything(tiny_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("formats")
    entry = load_registry().get("r50x1-160")
    options = ExportOptions(output_dir=out, formats=ALL, parity_resolution=48, kaggle="someone/bit-tiny")
    return export_model(entry, tiny_npz, options, arch=TINY, labels=LABELS)


def test_every_format_is_available():
    assert set(ALL) <= set(FORMATS)


def test_each_artifact_is_in_the_manifest_with_parity_per_runtime(everything):
    m = everything.manifest
    assert list(m["targets"]) == list(ALL)
    tolerance = m["parity"]["tolerance"]
    for name, entries in m["targets"].items():
        assert {e["variant"] for e in entries} == {"classification", "feature_extraction"}
        for e in entries:
            assert (everything.path / e["path"]).exists()
            assert (everything.path / e["card"]).is_file()
            assert set(e["parity"]) == RUNTIMES[name]
            for run in e["parity"].values():
                stage = "logits" if e["variant"] == "classification" else "pre_logits"
                assert run["report"]["summary"]["passed"] and run["report"][stage]["passed"]
                assert run["report"][stage]["tf_rel_l2_f64"] <= tolerance


def test_labels_travel_with_every_classifier(everything):
    m = everything.manifest
    assert m["labels"]["embedded"] and m["labels"]["count"] == len(LABELS)
    assert len(m["labels"]["paths"]) == len(ALL)
    for rel in m["labels"]["paths"]:
        assert tuple((everything.path / rel).read_text().splitlines()) == LABELS
    for name in ("keras", "tflite", "onnx"):
        card = (everything.path / name / "classification.md").read_text()
        assert "labels.txt" in card


def test_kaggle_metadata_names_one_instance_per_format_and_variant(everything):
    root = everything.path / "kaggle"
    model = json.loads((root / "model-metadata.json").read_text())
    assert (model["ownerSlug"], model["slug"]) == ("someone", "bit-tiny")
    instances = sorted(p.parent.relative_to(root).as_posix() for p in root.rglob("model-instance-metadata.json"))
    assert len(instances) == 2 * len(ALL)
    frameworks = {json.loads((root / i / "model-instance-metadata.json").read_text())["framework"] for i in instances}
    assert frameworks == {"tensorFlow2", "keras", "tfLite", "onnx"}
