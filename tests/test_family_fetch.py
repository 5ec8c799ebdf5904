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
