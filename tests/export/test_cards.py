"""The cards an export writes, on disk: each reports the parity that export measured."""

from __future__ import annotations

import json

from export_support import MODEL, PARITY_PX, savedmodel_entry

from convert.export.cards.model_card import parse_card


def test_cards_on_disk_report_the_measured_parity(exported):
    path, _ = exported
    m = json.loads((path / "manifest.json").read_text())
    for variant, stage, task in (
        ("classification", "logits", "image-classification"),
        ("feature_extraction", "pre_logits", "image-feature-vector"),
    ):
        text = (path / f"{variant}.md").read_text()
        _, meta = parse_card(text)
        entry = savedmodel_entry(m, variant)
        assert entry["card"] == f"{variant}.md"
        assert meta["task"] == task and meta["asset-path"] == entry["facts"]["archive"]["file"]
        after = entry["parity"]["tensorflow"]["report"]
        rel = after[stage]["tf_rel_l2_f64"]
        assert f"relative L2 error {rel:.3g}" in text
        assert f"maximum absolute error {after[stage]['max_abs_f64']:.3g}" in text
        assert f"at {PARITY_PX}x{PARITY_PX}" in text
        assert f'tf.saved_model.load("exports/{MODEL}/{variant}")' in text  # not this machine's path
