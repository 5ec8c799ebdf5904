"""The forward pass of a conversion: the checkpoint's code, ``--forward``, and what the cards say of it."""

from __future__ import annotations

import pytest

from convert.export.cards.model_card import forward_text, published_line, render_card
from convert.model.forward import FORWARD_CHOICES, ForwardPass
from convert.model.numerics import CODE_POOL_PADDING, POOL_PAD_VALUES
from convert.registry import load_registry

REGISTRY = load_registry()


@pytest.mark.parametrize("code", list(CODE_POOL_PADDING))
@pytest.mark.parametrize("choice", FORWARD_CHOICES)
def test_the_padding_follows_the_code_unless_zero_pool_is_asked(code, choice):
    fwd = ForwardPass(code, choice)
    expected = "zero" if choice == "zero-pool" else CODE_POOL_PADDING[code]
    assert fwd.root_pool_padding == expected and fwd.other_padding != expected
    assert {fwd.root_pool_padding, fwd.other_padding} == set(POOL_PAD_VALUES)
    assert fwd.is_authors == (expected == CODE_POOL_PADDING[code])
    d = fwd.as_dict()
    assert (d["code"], d["choice"], d["root_pool_padding"]) == (code, choice, expected)


def test_unknown_code_or_choice_is_refused():
    with pytest.raises(ValueError, match="code must be one of"):
        ForwardPass("timm")
    with pytest.raises(ValueError, match="forward must be one of"):
        ForwardPass("big_vision", "neg-inf")


def _card(model_id: str, forward: ForwardPass) -> str:
    entry = REGISTRY.get(model_id)
    return render_card(
        entry,
        "classification",
        input_range="unit",
        source_url="u",
        sha256="0" * 64,
        parity=None,
        features=entry.architecture.features,
        forward=forward,
    )


def test_a_distill_card_says_why_and_how_it_differs_from_the_collection():
    card = _card("r50x1-160", REGISTRY.get("r50x1-160").forward())
    assert forward_text(REGISTRY.get("r50x1-160").forward()) in card
    assert "root max-pool padded with -inf" in card and "bit_paper.py" in card and "student_name" in card
    published = next(line for line in card.splitlines() if "published earlier as" in line)
    assert "That publication pads the root max-pool with zeros; this export pads it with -inf" in published
    assert "--forward zero-pool" in published


def test_a_zero_pool_distill_card_says_it_matches_the_collection_not_the_authors():
    card = _card("r50x1-160", REGISTRY.get("r50x1-160").forward("zero-pool"))
    assert "Chosen with --forward zero-pool" in card
    published = next(line for line in card.splitlines() if "published earlier as" in line)
    assert "pads the root max-pool with zeros, as this export does (--forward zero-pool)" in published


def test_a_bit_card_names_big_transfer_and_claims_no_comparison_with_google_modules():
    entry = REGISTRY.get("bit-m-r50x1-ilsvrc2012")
    line = published_line(entry.hub.classification, entry.forward())
    assert "This export pads the root max-pool with zeros, as the code that trained the checkpoint does" in line
    assert "has not compared" in line
    assert "big_transfer" in _card(entry.id, entry.forward())
