"""Cards of the whole family: published handles, the ILSVRC2012 resolution note, labels, multi-label heads."""

from __future__ import annotations

import pytest

from convert.export.cards.common import LABELS_ASSET
from convert.export.cards.model_card import render_card
from convert.registry import load_registry

REGISTRY = load_registry()


def _card(model_id: str, variant: str = "classification", labels_embedded: bool = False) -> str:
    entry = REGISTRY.get(model_id)
    return render_card(
        entry,
        variant,
        input_range="unit",
        source_url=f"http://127.0.0.1/{entry.source}",
        sha256="ab" * 32,
        parity=None,
        features=entry.architecture.features,
        labels_embedded=labels_embedded,
    )


@pytest.mark.parametrize(
    "model_id, variant, handle, takes",
    [
        ("bit-s-r50x1", "feature_extraction", "google/bit/s-r50x1/1", "[0, 1]"),
        ("bit-s-r50x1", "classification", "google/bit/s-r50x1/ilsvrc2012_classification/1", "[0, 1]"),
        ("bit-m-r101x3", "classification", "google/bit/m-r101x3/imagenet21k_classification/1", "[0, 1]"),
        ("bit-m-r152x4-ilsvrc2012", "classification", "google/bit/m-r152x4/ilsvrc2012_classification/1", "[0, 1]"),
        ("r50x1-224", "classification", "sayakpaul/distill_bit_resnet50x1_224_classification/1", "[-1, 1]"),
    ],
)
def test_cards_link_the_published_handle(model_id, variant, handle, takes):
    card = _card(model_id, variant)
    assert f"published earlier as [`{handle}`](https://tfhub.dev/{handle}), which takes {takes} inputs." in card


def test_no_published_handle_no_claim():
    for model_id in ("bit-m-r152x2", "bit-m-r50x1-ilsvrc2012"):
        assert "published earlier" not in _card(model_id, "feature_extraction")


def test_ilsvrc2012_cards_state_the_resolution_question():
    card = _card("bit-m-r50x1-ilsvrc2012")
    assert "trained at **480x480**" in card
    assert "On that resolution: the authors' code evaluates at 480 (resize 512, crop 480); timm at 448" in card
    assert "On that resolution" not in _card("bit-s-r50x1")


def test_card_says_where_labels_are_or_why_there_are_none():
    embedded = _card("r50x1-160", labels_embedded=True)
    assert f"Labels: `{LABELS_ASSET}` inside this SavedModel" in embedded and "ilsvrc2012_wordnet_lemmas.txt" in embedded
    offline = _card("r50x1-160", labels_embedded=False)
    assert "Labels: not embedded" in offline and "bit_models/ilsvrc2012_wordnet_lemmas.txt" in offline
    vtab = _card("vtab-r50x1-run0-dtd", labels_embedded=False)
    assert (
        "the class names of this head are not published, so the export carries none: output i is class index i (0 to 46)" in vtab
    )
    assert "Labels:" not in _card("r50x1-160", "feature_extraction")


def test_multi_label_heads_say_sigmoid():
    assert "multi-label: apply `tf.math.sigmoid`" in _card("bit-m-r50x1")
    assert "apply `tf.nn.softmax` for probabilities" in _card("bit-m-r50x1-ilsvrc2012")
