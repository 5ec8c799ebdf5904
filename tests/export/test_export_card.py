"""Model cards, archives and the users' CI workflow: pure-Python parts of the export (no TensorFlow)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from convert.errors import ExportError
from convert.export.archive import archive_members, write_archive
from convert.export.cards.common import ParityFigures
from convert.export.cards.model_card import TASKS, archive_name, hub_model_name, parse_card, render_card
from convert.export.target import VARIANTS
from convert.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
SHA = "ab" * 32


def _card(model_id: str, variant: str, input_range: str = "unit", parity: ParityFigures | None = None) -> str:
    entry = load_registry().get(model_id)
    return render_card(
        entry,
        variant,
        input_range=input_range,
        source_url=f"https://storage.googleapis.com/bit_models/{entry.source}",
        sha256=SHA,
        parity=parity,
        features=entry.architecture.features,
    )


FIGURES = ParityFigures("logits", 2.5e-3, 3.1e-5, 1e-4, 160, 6, 1)


@pytest.mark.parametrize("model_id", [e.id for e in load_registry().collection()])
@pytest.mark.parametrize("variant", VARIANTS)
def test_card_metadata_per_variant(model_id, variant):
    entry = load_registry().get(model_id)
    handle, meta = parse_card(_card(model_id, variant, parity=FIGURES))
    assert handle == f"bitconvert/{hub_model_name(entry, variant)}/1"
    assert meta["task"] == TASKS[variant]
    assert meta["fine-tunable"] == "true"
    assert meta["format"] == "saved_model_2"
    assert meta["asset-path"] == archive_name(entry, variant) and meta["asset-path"].endswith(".tar.gz")
    assert meta["network-architecture"] == "bit"
    assert meta["dataset"] == entry.dataset
    assert meta["license"] == "apache-2.0"


def test_feature_extractor_is_never_tagged_as_classifier():
    """The published collection tagged its feature extractors image-classification."""
    _, meta = parse_card(_card("r50x1-224", "feature_extraction"))
    assert meta["task"] == "image-feature-vector"
    assert "image-classification" not in _card("r50x1-224", "feature_extraction")


def test_handles_follow_one_scheme_and_differ_per_variant():
    names = {hub_model_name(e, v) for e in load_registry().collection() for v in VARIANTS}
    assert len(names) == 8
    assert all(n.startswith("bit_r") for n in names)
    assert hub_model_name(load_registry().get("r152x2-384"), "classification") == "bit_r152x2_384_classification"
    assert hub_model_name(load_registry().get("bit-m-r50x1"), "feature_extraction") == "bit_m_r50x1_feature_extraction"


@pytest.mark.parametrize("variant", VARIANTS)
def test_usage_examples_load_this_variant(variant):
    card = _card("r50x1-160", variant)
    other = next(v for v in VARIANTS if v != variant)
    assert f'"exports/r50x1-160/{variant}"' in card
    assert f"r50x1-160/{other}" not in card


def test_card_states_the_input_range_truthfully():
    unit = _card("r152x2-384", "classification", "unit")
    sym = _card("r152x2-384", "classification", "symmetric")
    assert "values in **[0, 1]**" in unit and "values in **[-1, 1]**" not in unit
    assert "values in **[-1, 1]**" in sym and "values in **[0, 1]**" not in sym
    assert "tf.random.uniform([2, 384, 384, 3], 0, 1)" in unit
    assert "tf.random.uniform([2, 384, 384, 3], -1, 1)" in sym


def test_card_states_the_native_resolution_and_nothing_else():
    """The published 384 card said "resized to 224x224"."""
    card = _card("r152x2-384", "feature_extraction")
    assert "384x384" in card
    assert "224" not in card
    assert "4096" in card  # R152x2 feature size


def test_teacher_cards_say_imagenet_21k_pretraining():
    """The published collection described the 152x2 teachers as ImageNet-1k only."""
    card = _card("r152x2-224", "classification")
    assert "ImageNet-21k pre-trained" in card and "ImageNet-1k fine-tuned" in card
    assert "arxiv.org/abs/2106.05237" in card  # the distillation paper, for the distill/ files


def test_classifier_card_names_classes_and_logits():
    card = _card("r50x1-160", "classification")
    assert "`logits`: float32 `[batch, 1000]`" in card
    assert "ilsvrc2012_wordnet_lemmas.txt" in card
    assert "sayakpaul/distill_bit_resnet50x1_160_classification/1" in card
    assert "sayakpaul/distill_bit_r50x1_160_feature_extraction/1" not in card


def test_parity_claimed_only_when_measured():
    checked = _card("r50x1-160", "classification", parity=FIGURES)
    assert "maximum absolute error 0.0025, relative L2 error 3.1e-05 (bound 0.0001)" in checked
    assert "on 6 images (1 random, 5 structured: flat, gradients, checkerboards) at 160x160" in checked
    unchecked = _card("r50x1-160", "classification", parity=None)
    assert "--skip-parity" in unchecked and "**not** compared" in unchecked
    assert "relative L2 error" not in unchecked


def test_parity_images_that_are_not_square_are_named_height_by_width():
    figures = replace(FIGURES, resolution=(101, 134))
    assert "structured: flat, gradients, checkerboards) at 101x134: maximum" in _card(
        "r50x1-160", "classification", parity=figures
    )


def test_parse_card_rejects_a_bad_first_line_and_repeated_keys():
    with pytest.raises(ValueError):
        parse_card("# Model x/y/1\n")
    with pytest.raises(ValueError):
        parse_card("# Module a/b/1\n<!-- task: x -->\n<!-- task: y -->\n")


def test_render_card_rejects_unknown_variant_and_range():
    with pytest.raises(ValueError):
        _card("r50x1-160", "segmentation")
    with pytest.raises(ValueError):
        _card("r50x1-160", "classification", input_range="bytes")


# -- archives ---------------------------------------------------------------------


def _fake_savedmodel(root: Path, payload: bytes = b"weights") -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "assets").mkdir()
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "fingerprint.pb").write_bytes(os.urandom(16))
    (root / "variables" / "variables.index").write_bytes(b"index")
    (root / "variables" / "variables.data-00000-of-00001").write_bytes(payload)
    return root


def test_archive_is_deterministic_sorted_and_anonymous(tmp_path):
    a = _fake_savedmodel(tmp_path / "a")
    b = _fake_savedmodel(tmp_path / "b")
    # Different mtimes, modes and fingerprint UUIDs must not matter.
    os.utime(a / "saved_model.pb", (1, 1))
    os.chmod(b / "saved_model.pb", 0o600)
    ta = write_archive(a, tmp_path / "a.tar.gz")
    tb = write_archive(b, tmp_path / "b.tar.gz")
    assert ta.read_bytes() == tb.read_bytes()
    raw = ta.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    assert raw[3] & 0x08 == 0  # no FNAME field
    with tarfile.open(ta) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == [
        "assets",
        "saved_model.pb",
        "variables",
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mode for m in members if m.isfile()} == {0o644}
    with tarfile.open(ta) as tar:
        assert tar.extractfile("variables/variables.data-00000-of-00001").read() == b"weights"


def test_archive_content_changes_the_bytes(tmp_path):
    a = write_archive(_fake_savedmodel(tmp_path / "a"), tmp_path / "a.tar.gz")
    b = write_archive(_fake_savedmodel(tmp_path / "b", b"weightz"), tmp_path / "b.tar.gz")
    assert a.read_bytes() != b.read_bytes()


def test_archive_leaves_out_the_fingerprint(tmp_path):
    root = _fake_savedmodel(tmp_path / "m")
    assert (root / "fingerprint.pb").exists() and "fingerprint.pb" not in archive_members(root)


def test_archive_refuses_members_tf_hub_does_not_accept(tmp_path):
    root = _fake_savedmodel(tmp_path / "m")
    (root / "notes.txt").write_text("x")
    with pytest.raises(ExportError, match="notes.txt"):
        write_archive(root, tmp_path / "m.tar.gz")
    assert not (tmp_path / "m.tar.gz").exists()
    assert not list(tmp_path.glob(".m.tar.gz.tmp-*"))


def test_archive_gzip_stream_is_plain(tmp_path):
    """Any gzip reader opens it; the tar inside is readable without extensions."""
    t = write_archive(_fake_savedmodel(tmp_path / "m"), tmp_path / "m.tar.gz")
    data = gzip.decompress(t.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "saved_model.pb" in tar.getnames()


# -- the users' workflow -------------------------------------------------------------


def test_workflow_runs_tests_on_push_and_verifies_the_collection_on_schedule():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    triggers = wf[True] if True in wf else wf["on"]  # YAML 1.1 reads a bare `on` as True
    assert {"push", "pull_request", "schedule", "workflow_dispatch"} <= set(triggers)
    assert triggers["schedule"][0]["cron"]
    test_job, verify_job = wf["jobs"]["test"], wf["jobs"]["verify-real-checkpoints"]
    assert any("make test" in s.get("run", "") for s in test_job["steps"])
    assert "schedule" not in test_job["if"] and "schedule" in verify_job["if"]
    assert verify_job["strategy"]["matrix"]["model"] == [e.id for e in load_registry().collection()]
    runs = " ".join(s.get("run", "") for s in verify_job["steps"])
    assert "bitconvert fetch ${{ matrix.model }}" in runs
    assert "bitconvert verify --model ${{ matrix.model }}" in runs
    pythons = [
        s["with"]["python-version"] for j in (test_job, verify_job) for s in j["steps"] if "setup-python" in s.get("uses", "")
    ]
    assert pythons == ["3.11", "3.11"]
