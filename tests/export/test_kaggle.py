"""Kaggle Models metadata (issue 12, item 8): the pure function and the instance folders."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from convert.cli.options import kaggle_option
from convert.export.formats import get_targets
from convert.export.kaggle import INSTANCE_METADATA, instance_of, kaggle_files, link_instances, parse_handle, variation_slug
from convert.export.target import Artifact, ExportTarget
from convert.registry import load_registry

REGISTRY = load_registry()
TARGETS = {t.name: t for t in get_targets(["savedmodel", "keras", "tflite", "onnx"])}


class NoKaggle(ExportTarget):
    name = "zip"


TARGETS["zip"] = NoKaggle()
MANIFEST = {
    "source_url": "https://storage.googleapis.com/bit_models/distill/R50x1_160.npz",
    "input": {"min": 0.0, "max": 1.0, "native_resolution": 160},
    "labels": {"embedded": True},
}
CARDS = {"classification": "# Module bitconvert/bit_r50x1_160_classification/1\n\ncard text\n", "feature_extraction": "# fe\n"}
ARTIFACTS = [
    Artifact("savedmodel", "classification", "classification"),
    Artifact("savedmodel", "feature_extraction", "feature_extraction"),
    Artifact("keras", "classification", "keras/classification.keras"),
    Artifact("tflite", "classification", "tflite/classification.tflite"),
    Artifact("onnx", "feature_extraction", "onnx/feature_extraction.onnx"),
]
#: The fields of each file the kaggle CLI reads (Kaggle/kaggle-api: `kaggle models init`, `kaggle models instances init`).
MODEL_FIELDS = {"ownerSlug", "title", "slug", "subtitle", "isPrivate", "description", "provenanceSources", "licenseName"}
INSTANCE_FIELDS = {
    "ownerSlug", "modelSlug", "instanceSlug", "framework", "overview", "usage", "licenseName",
    "fineTunable", "trainingData", "modelInstanceType", "baseModelInstance",
}  # fmt: skip


def _instances(artifacts, labels_embedded=True):
    return [i for a in artifacts if (i := instance_of(TARGETS[a.target], a, labels_embedded)) is not None]


def _files(entry_id="r50x1-160", artifacts=ARTIFACTS, cards=CARDS):
    instances = _instances(artifacts, MANIFEST["labels"]["embedded"])
    return {p: json.loads(t) for p, t in kaggle_files(REGISTRY.get(entry_id), MANIFEST, cards, instances, "me/bit").items()}


def test_one_model_file_and_one_instance_per_framework_variation():
    files = _files()
    assert sorted(files) == [
        "kaggle/keras/r50x1-160-classification/model-instance-metadata.json",
        "kaggle/model-metadata.json",
        "kaggle/onnx/r50x1-160-feature-vector/model-instance-metadata.json",
        "kaggle/tensorFlow2/r50x1-160-classification/model-instance-metadata.json",
        "kaggle/tensorFlow2/r50x1-160-feature-vector/model-instance-metadata.json",
        "kaggle/tfLite/r50x1-160-classification/model-instance-metadata.json",
    ]
    model = files["kaggle/model-metadata.json"]
    assert set(model) == MODEL_FIELDS
    assert (model["ownerSlug"], model["slug"], model["licenseName"]) == ("me", "bit", "Apache 2.0")
    assert model["description"] == CARDS["classification"]  # the card, as it is
    assert model["provenanceSources"] == MANIFEST["source_url"] and model["isPrivate"] is True
    for path, data in files.items():
        if path.endswith(INSTANCE_METADATA):
            assert set(data) == INSTANCE_FIELDS
            assert path.split("/")[1] == data["framework"] and path.split("/")[2] == data["instanceSlug"]
            assert (data["ownerSlug"], data["modelSlug"], data["fineTunable"]) == ("me", "bit", True)
            assert data["trainingData"] == ["imagenet-ilsvrc-2012-cls"] and data["licenseName"] == "Apache 2.0"
            assert "${PATH}" in data["usage"]


def test_usage_loads_each_framework_s_own_file():
    files = _files()
    sm = files["kaggle/tensorFlow2/r50x1-160-classification/model-instance-metadata.json"]["usage"]
    assert 'tf.saved_model.load("${PATH}")' in sm and "${PATH}/assets/labels.txt" in sm and "[0, 1]" in sm
    assert (
        'load_model("${PATH}/classification.keras")'
        in files["kaggle/keras/r50x1-160-classification/" + INSTANCE_METADATA]["usage"]
    )
    assert (
        'model_path="${PATH}/classification.tflite"'
        in files["kaggle/tfLite/r50x1-160-classification/" + INSTANCE_METADATA]["usage"]
    )
    assert "labels.txt" not in files["kaggle/tensorFlow2/r50x1-160-feature-vector/" + INSTANCE_METADATA]["usage"]


def test_multi_label_usage_and_unknown_targets():
    files = _files(
        "bit-m-r50x1", [Artifact("savedmodel", "classification", "classification"), Artifact("zip", "classification", "x")]
    )
    (inst,) = [d for p, d in files.items() if p.endswith(INSTANCE_METADATA)]
    assert "multi-label: use a sigmoid" in inst["usage"] and inst["trainingData"] == ["imagenet-21k"]


@pytest.mark.parametrize("bad", ["me", "me/bit/x", "Me/bit", "me/bit_1", "-me/bit", "me/"])
def test_handles_must_be_two_slugs(bad):
    with pytest.raises(ValueError, match="OWNER/MODEL"):
        parse_handle(bad)
    assert parse_handle("me-2/bit-resnet") == ("me-2", "bit-resnet")


def test_the_cli_option_refuses_a_bad_handle():
    @click.command()
    @kaggle_option
    def cmd(kaggle):
        click.echo(repr(kaggle))

    assert CliRunner().invoke(cmd, []).output.strip() == "None"
    assert CliRunner().invoke(cmd, ["--kaggle", "me/bit"]).output.strip() == "'me/bit'"
    bad = CliRunner().invoke(cmd, ["--kaggle", "me"])
    assert bad.exit_code == 2 and "OWNER/MODEL" in bad.output


def test_instance_folders_hold_hard_links_of_the_artifacts(tmp_path):
    (tmp_path / "classification" / "variables").mkdir(parents=True)
    (tmp_path / "classification" / "saved_model.pb").write_bytes(b"pb")
    (tmp_path / "classification" / "variables" / "variables.index").write_bytes(b"ix")
    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "classification.keras").write_bytes(b"zip")
    arts = [ARTIFACTS[0], ARTIFACTS[2]]
    link_instances(tmp_path, REGISTRY.get("r50x1-160"), _instances(arts))
    sm = tmp_path / "kaggle" / "tensorFlow2" / "r50x1-160-classification"
    assert (sm / "variables" / "variables.index").read_bytes() == b"ix"
    assert (sm / "saved_model.pb").stat().st_ino == (tmp_path / "classification" / "saved_model.pb").stat().st_ino
    assert (tmp_path / "kaggle" / "keras" / "r50x1-160-classification" / "classification.keras").read_bytes() == b"zip"


def test_every_target_has_a_framework_and_slugs_are_kaggle_slugs():
    frameworks = [t.kaggle_framework for name, t in TARGETS.items() if name != "zip"]
    assert frameworks == ["tensorFlow2", "keras", "tfLite", "onnx"]  # one each, as the kaggle CLI spells them
    for e in REGISTRY.entries:
        for variant in ("classification", "feature_extraction"):
            slug = variation_slug(e.id, variant)
            assert slug == slug.lower() and "_" not in slug
