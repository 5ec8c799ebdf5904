"""The registry is data, checked against the architecture it names (timm's default_cfgs test)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from convert.architecture import Architecture, checkpoint_layout, parameter_count
from convert.errors import RegistryError, UnknownModelError
from convert.registry import check, load_registry, parse_registry

REGISTRY = load_registry()
COLLECTION_IDS = ["r152x2-384", "r152x2-224", "r50x1-224", "r50x1-160"]


@pytest.mark.parametrize("entry", REGISTRY.entries, ids=lambda e: e.id)
def test_entry_matches_its_architecture(entry):
    arch = entry.architecture
    layout = checkpoint_layout(arch)
    # Two independent computations of the size, and the registry's own figure.
    assert parameter_count(arch) == entry.params
    assert sum(math.prod(s) for s in layout.values()) == entry.params
    assert len(layout) == {50: 153, 101: 306, 152: 459}[entry.depth]
    assert layout["resnet/head/conv2d/bias"] == (entry.classes,)
    assert arch.features == 2048 * entry.width
    assert entry.source.endswith(".npz")


def test_check_catches_a_wrong_parameter_count(tmp_path):
    text = (Path(REGISTRY.path).read_text()).replace("params: 25549352", "params: 25549353", 1)
    problems = check(parse_registry(text, tmp_path / "r.yaml"))
    assert len(problems) == 1 and "25549353" in problems[0] and "25549352" in problems[0]


def test_collection_entries_match_the_reference_table():
    by_id = {e.id: e for e in REGISTRY.collection()}
    assert sorted(by_id) == sorted(COLLECTION_IDS)
    expected = {
        "r152x2-384": ("distill/R152x2_T_384.npz", 152, 2, 384),
        "r152x2-224": ("distill/R152x2_T_224.npz", 152, 2, 224),
        "r50x1-224": ("distill/R50x1_224.npz", 50, 1, 224),
        "r50x1-160": ("distill/R50x1_160.npz", 50, 1, 160),
    }
    for model_id, (source, depth, width, res) in expected.items():
        e = by_id[model_id]
        assert (e.source, e.depth, e.width, e.resolution, e.classes) == (source, depth, width, res, 1000)
        assert e.hub.classification and e.hub.feature_extraction
        assert e.hub.classification != e.hub.feature_extraction


def test_the_rest_of_the_family_is_registered():
    ids = set(REGISTRY.ids)
    for arch in ("r50x1", "r50x3", "r101x1", "r101x3", "r152x4"):
        assert {f"bit-s-{arch}", f"bit-m-{arch}", f"bit-m-{arch}-ilsvrc2012"} <= ids
    assert REGISTRY.get("bit-m-r50x1").classes == 21843
    assert REGISTRY.get("bit-s-r50x1").classes == 1000
    assert REGISTRY.get("bit-m-r152x4-ilsvrc2012").source == "BiT-M-R152x4-ILSVRC2012.npz"


def test_unknown_id_suggests_the_nearest():
    with pytest.raises(UnknownModelError, match=r"unknown model id 'r50x1-16'; did you mean r50x1-160"):
        REGISTRY.get("r50x1-16")


def test_unknown_id_without_a_near_match_points_to_list():
    with pytest.raises(UnknownModelError, match="bitconvert list"):
        REGISTRY.get("zzzzzz")


def _one_entry(**fields) -> str:
    base = {
        "source": "x.npz",
        "depth": 50,
        "width": 1,
        "classes": 10,
        "resolution": 224,
        "params": parameter_count(Architecture.from_depth(50, 1, 10)),
        "dataset": "d",
        "description": "d",
    }
    base.update(fields)
    body = "\n".join(f"    {k}: {v}" for k, v in base.items() if v is not None)
    return f"models:\n  m:\n{body}\n"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"colour": "red"}, "model 'm': unknown field(s) colour"),
        ({"depth": None}, "model 'm': missing field(s) depth"),
        ({"depth": 34}, "depth 34 is not one of [50, 101, 152]"),
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"classes": "many"}, "classes must be a positive integer"),
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits or null"),
        ({"source": "/abs.npz"}, "source must be a relative path"),
        ({"hub": "{colab: x}"}, "hub takes only classification, feature_extraction"),
        ({"collection": "maybe"}, "collection must be true or false"),
    ],
)
def test_malformed_entries_are_refused(tmp_path, fields, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(_one_entry(**fields), tmp_path / "r.yaml")


def test_a_valid_minimal_entry_parses(tmp_path):
    reg = parse_registry(_one_entry(sha256="a" * 64), tmp_path / "r.yaml")
    (entry,) = reg.entries
    assert entry.sha256 == "a" * 64 and entry.collection is False and entry.hub.classification is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.depth = 101


def test_duplicate_ids_are_refused(tmp_path):
    text = _one_entry() + _one_entry().replace("models:\n", "")
    with pytest.raises(RegistryError, match="duplicate key 'm'"):
        parse_registry(text, tmp_path / "r.yaml")


def test_shared_sources_are_refused(tmp_path):
    text = _one_entry() + _one_entry().replace("models:\n  m:", "  n:")
    with pytest.raises(RegistryError, match="share the source file"):
        parse_registry(text, tmp_path / "r.yaml")


def test_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="single top-level 'models:'"):
        parse_registry(_one_entry() + "extra: 1\n", tmp_path / "r.yaml")
