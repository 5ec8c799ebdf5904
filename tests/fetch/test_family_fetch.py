"""A generated entry is fetched, verified and inspected by its id, like any other (a VTAB-1k fine-tune over loopback)."""

from __future__ import annotations

import json

import pytest

from convert.registry import load_registry
from convert.synthetic import write_synthetic_checkpoint

MODEL = "vtab-r50x1-run1-dtd"


@pytest.fixture
def bucket(tmp_path):
    root = tmp_path / "bucket"
    entry = load_registry().get(MODEL)
    write_synthetic_checkpoint(root / entry.source, entry.architecture, seed=9)
    return root


def test_fetch_then_inspect_a_vtab_entry_by_id(invoke, mirror, cache):
    fetched = invoke("fetch", MODEL, "--base-url", mirror.base_url, "--cache-dir", cache, "--quiet")
    assert fetched.exit_code == 0, fetched.stderr
    path = fetched.stdout.strip()
    assert path == str(cache / "vtab" / "BiT-M-R50x1-run1-dtd.npz")
    assert [r[1] for r in mirror.body_requests()] == ["vtab/BiT-M-R50x1-run1-dtd.npz"]
    inspected = invoke("inspect", path, "--model", MODEL, "--json")
    assert inspected.exit_code == 0, inspected.stderr
    data = json.loads(inspected.stdout)
    assert (data["architecture"], data["classes"], data["parameters"]) == ("R50x1", 47, load_registry().get(MODEL).params)


def test_export_and_predict_a_vtab_entry_by_id(invoke, tmp_path):
    """svhn's 10-class head on the reduced TINY layout: exported under its id, predicted by its id, with indices."""
    from conftest import TINY

    from convert.export import ExportOptions, export_model

    entry = load_registry().get("vtab-r50x1-run0-svhn")
    assert entry.classes == TINY.classes == 10 and entry.labels is None
    ckpt = write_synthetic_checkpoint(tmp_path / "svhn.npz", TINY, seed=4)
    result = export_model(entry, ckpt, ExportOptions(output_dir=tmp_path / "out", parity_resolution=32), arch=TINY)
    assert result.path == tmp_path / "out" / entry.id
    assert "the class names of this head are not published" in (result.path / "classification.md").read_text()
    image = tmp_path / "digit.png"
    image.write_bytes(_png(entry.resolution))
    out = json.loads(invoke("predict", "-m", entry.id, "-o", tmp_path / "out", "--json", image).stdout)
    assert len(out[0]["top"]) == 5 and all(t["label"] is None for t in out[0]["top"])


def _png(size: int) -> bytes:
    import numpy as np
    import tensorflow as tf

    return tf.io.encode_png(np.full((size, size, 3), 128, np.uint8)).numpy()
