"""The registry is data, checked against the architecture it names (timm's default_cfgs test)."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from convert.errors import RegistryError, UnknownModelError
from convert.model.architecture import Architecture, checkpoint_layout, parameter_count
from convert.registry import HubHandles, check, load_registry, parse_registry

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
    # The R50x1 classifiers were published on TF Hub as distill_bit_resnet50x1_*, the extractors as distill_bit_r50x1_*.
    for res in (224, 160):
        hub = by_id[f"r50x1-{res}"].hub
        assert hub.classification == f"sayakpaul/distill_bit_resnet50x1_{res}_classification/1"
        assert hub.feature_extraction == f"sayakpaul/distill_bit_r50x1_{res}_feature_extraction/1"


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
        "labels": "null",
        "description": "d",
        "code": "big_transfer",
    }
    base.update(fields)
    body = "\n".join(f"    {k}: {v}" for k, v in base.items() if v is not None)
    return f"models:\n  m:\n{body}\n"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"colour": "red"}, "model 'm': unknown field(s) colour"),
        ({"depth": None}, "model 'm': missing field(s) depth"),
        ({"depth": 34}, "depth must be one of [26, 50, 101, 152, 200] or a list of four unit counts (units per block), got 34"),
        ({"depth": "[1, 1, 1]"}, "depth as a list needs four positive unit counts, got [1, 1, 1]"),
        ({"depth": "[1, 0, 1, 1]"}, "depth as a list needs four positive unit counts, got [1, 0, 1, 1]"),
        ({"depth": "[1, 1.5, 1, 1]"}, "depth as a list needs four positive unit counts"),
        ({"depth": "[1, true, 1, 1]"}, "depth as a list needs four positive unit counts"),
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"classes": "many"}, "classes must be a positive integer"),
        ({"sha256": "abc"}, "sha256 must be 64 lowercase hex digits or null"),
        ({"source": "/abs.npz"}, "source must be a relative path"),
        ({"hub": "{colab: x}"}, "hub takes only classification, feature_extraction"),
        ({"collection": "maybe"}, "collection must be true or false"),
        ({"multi_label": "yes please"}, "multi_label must be true or false"),
        ({"labels": "my_labels.txt"}, "labels must be null or one of ilsvrc2012_wordnet_lemmas.txt"),
        ({"resolution_note": '""'}, "resolution_note must be a non-empty string"),
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


def test_depth_as_units_per_block_like_big_vision(tmp_path):
    """``depth: [1, 2, 1, 1]`` is that layout (big_vision's ``get_block_desc`` takes a tuple as a depth), checked
    against its own parameter count; the list of an official depth's units is that depth."""
    arch = Architecture((1, 2, 1, 1), 1, 10)
    text = _one_entry(depth="[1, 2, 1, 1]", params=parameter_count(arch))
    (entry,) = parse_registry(text, tmp_path / "r.yaml").entries
    assert (entry.architecture, entry.depth, entry.arch_name) == (arch, 17, "R17x1[1,2,1,1]")
    assert entry.as_dict()["units"] == [1, 2, 1, 1] and entry.as_dict()["architecture"] == "R17x1[1,2,1,1]"
    assert check(parse_registry(text, tmp_path / "r.yaml")) == []
    wrong = parse_registry(_one_entry(depth="[1, 2, 1, 1]"), tmp_path / "r.yaml")  # R50x1's count
    assert check(wrong) == [f"m: params {parameter_count(Architecture.from_depth(50, 1, 10))} but R17x1[1,2,1,1] "
                            f"with 10 classes has {parameter_count(arch)}"]  # fmt: skip
    (official,) = parse_registry(_one_entry(depth="[3, 4, 6, 3]"), tmp_path / "r.yaml").entries
    assert official == dataclasses.replace(entry, units=(3, 4, 6, 3), params=official.params)
    assert (official.arch_name, official.as_dict()["units"]) == ("R50x1", [3, 4, 6, 3])


@pytest.mark.parametrize("depth, units", [(26, (2, 2, 2, 2)), (200, (3, 24, 36, 3))])
def test_big_vision_s_other_named_depths(tmp_path, depth, units):
    """big_vision's ``get_block_desc`` also names 26 and 200: the same layouts as their lists, checked against
    their own parameter count, and not official (their names show the units)."""
    arch = Architecture(units, 1, 10)
    (named,) = parse_registry(_one_entry(depth=depth, params=parameter_count(arch)), tmp_path / "r.yaml").entries
    (listed,) = parse_registry(_one_entry(depth=list(units), params=parameter_count(arch)), tmp_path / "r.yaml").entries
    assert named == listed and named.architecture == arch and named.depth == depth
    assert named.arch_name == f"R{depth}x1[{','.join(map(str, units))}]"
    assert check(parse_registry(_one_entry(depth=depth), tmp_path / "r.yaml"))  # R50x1's count is refused


def test_duplicate_ids_are_refused(tmp_path):
    text = _one_entry() + _one_entry().replace("models:\n", "")
    with pytest.raises(RegistryError, match="duplicate key 'm'"):
        parse_registry(text, tmp_path / "r.yaml")


def test_shared_sources_are_refused(tmp_path):
    text = _one_entry() + _one_entry().replace("models:\n  m:", "  n:")
    with pytest.raises(RegistryError, match="share the source file"):
        parse_registry(text, tmp_path / "r.yaml")


def test_unknown_top_level_key_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="top-level 'models:' mapping"):
        parse_registry(_one_entry() + "extra: 1\n", tmp_path / "r.yaml")


# -- the whole family (google-research/big_transfer README and model lists) ----------------------

ARCHS = ("r50x1", "r50x3", "r101x1", "r101x3", "r152x2", "r152x4")
#: Google published BiT-S and BiT-M for five architectures; R152x2 was not among them.
GOOGLE_ARCHS = ("r50x1", "r50x3", "r101x1", "r101x3", "r152x4")
VTAB_ARCHS = ("R50x1", "R101x1", "R50x3", "R101x3", "R152x4")
#: VTAB-1k task slugs (the file names of the authors' README) and head sizes.
VTAB_TASKS = {
    "caltech101": 102, "cifar100": 100, "dtd": 47, "oxford_flowers102": 102, "oxford_iiit_pet": 37,
    "sun397": 397, "svhn": 10, "patch_camelyon": 2, "eurosat": 10, "resisc45": 45,
    "diabetic_retinopathy": 5, "clevr-count": 8, "clevr-distance": 6, "dmlab": 6, "kitti-distance": 4,
    "dsprites-xpos": 16, "dsprites-orientation": 16, "smallnorb-azimuth": 18, "smallnorb-elevation": 9,
}  # fmt: skip


def test_registry_size_and_named_entries():
    assert len(REGISTRY.entries) == 26 + 285
    assert len(REGISTRY.named()) == 26 and all(e.family is None for e in REGISTRY.named())
    assert len(set(REGISTRY.ids)) == len(REGISTRY.ids)


def test_r152x2_pretrained_entries():
    for prefix, classes, res in (("BiT-S", 1000, 224), ("BiT-M", 21843, 224)):
        e = REGISTRY.get(f"{prefix.lower()}-r152x2")
        assert (e.source, e.depth, e.width, e.classes, e.resolution) == (f"{prefix}-R152x2.npz", 152, 2, classes, res)
    e = REGISTRY.get("bit-m-r152x2-ilsvrc2012")
    assert (e.source, e.classes, e.resolution) == ("BiT-M-R152x2-ILSVRC2012.npz", 1000, 480)


@pytest.mark.parametrize("short, classes, dataset", [("flowers", 102, "oxford_flowers102"), ("pet", 37, "oxford_iiit_pet"),
                                                     ("food", 101, "food101"), ("sun", 397, "sun397")])  # fmt: skip
def test_the_128px_teachers(short, classes, dataset):
    e = REGISTRY.get(f"r152x2-{short}128")
    assert (e.source, e.arch_name, e.classes, e.resolution, e.dataset) == (
        f"distill/R152x2_T_{short}128.npz", "R152x2", classes, 128, dataset)  # fmt: skip
    assert e.labels is None and e.family_name == "distill"


def test_vtab_family_is_every_arch_run_and_task():
    vtab = {e.source: e for e in REGISTRY.family("vtab")}
    expected = {f"vtab/BiT-M-{a}-run{r}-{t}.npz": (a, n) for a in VTAB_ARCHS for r in range(3) for t, n in VTAB_TASKS.items()}
    assert sorted(vtab) == sorted(expected) and len(vtab) == 285
    for source, (arch, classes) in expected.items():
        e = vtab[source]
        assert (e.arch_name, e.classes, e.labels, e.multi_label) == (arch, classes, None, False)
        assert e.resolution in (128, 480) and e.id == source.removeprefix("vtab/").replace("BiT-M-", "vtab-").lower()[:-4]
    # every generated id resolves by itself, as the CLI's --model does
    assert REGISTRY.get("vtab-r152x4-run2-smallnorb-elevation").source == "vtab/BiT-M-R152x4-run2-smallnorb-elevation.npz"


def test_google_handles_for_the_five_published_architectures():
    for arch in ARCHS:
        s, m, ft = (REGISTRY.get(i) for i in (f"bit-s-{arch}", f"bit-m-{arch}", f"bit-m-{arch}-ilsvrc2012"))
        if arch not in GOOGLE_ARCHS:
            assert s.hub == m.hub == ft.hub == HubHandles()
            continue
        assert (s.hub.feature_extraction, s.hub.classification) == (
            f"google/bit/s-{arch}/1", f"google/bit/s-{arch}/ilsvrc2012_classification/1")  # fmt: skip
        assert (m.hub.feature_extraction, m.hub.classification) == (
            f"google/bit/m-{arch}/1", f"google/bit/m-{arch}/imagenet21k_classification/1")  # fmt: skip
        # The fine-tune's backbone differs from BiT-M's: only its classifier was published.
        assert (ft.hub.classification, ft.hub.feature_extraction) == (f"google/bit/m-{arch}/ilsvrc2012_classification/1", None)


def test_every_head_names_its_label_file_by_one_rule():
    for e in REGISTRY.entries:
        if e.family_name == "vtab" or e.id.endswith("128"):
            assert e.labels is None, e.id  # not published
        elif e.classes == 1000:
            assert e.labels == "ilsvrc2012_wordnet_lemmas.txt", e.id
        else:
            assert (e.classes, e.labels) == (21843, "imagenet21k_wordnet_lemmas.txt"), e.id
        assert e.multi_label == (e.classes == 21843), e.id  # only the BiT-M ImageNet-21k heads are sigmoid


def test_ilsvrc2012_resolution_is_one_value_with_the_disagreement_noted():
    for arch in ARCHS:
        e = REGISTRY.get(f"bit-m-{arch}-ilsvrc2012")
        assert e.resolution == 480 and "480" in e.resolution_note
        assert ("448" in e.resolution_note) == (arch != "r152x4"), e.resolution_note
    assert all(e.resolution_note is None for e in REGISTRY.entries if not e.id.endswith("-ilsvrc2012"))


def _family(**changes) -> str:
    rule = {
        "id": "f-{arch}-run{run}-{task}",
        "source": "f/{Arch}-{run}-{task}.npz",
        "dataset": '"{task}"',
        "description": '"{Arch} on {task}"',
        "labels": "null",
        "runs": "[0, 1]",
        "backbone_params": "{R50x1: 23500352}",
        "tasks": "{a: {classes: 3, resolution: 128}, b: {classes: 5, resolution: 480}}",
    }
    rule.update(changes)
    body = "\n".join(f"    {k}: {v}" for k, v in rule.items() if v is not None)
    return _one_entry() + f"families:\n  f:\n{body}\ncode:\n  f: big_transfer\n"


def test_a_family_rule_expands_to_checked_entries(tmp_path):
    reg = parse_registry(_family(), tmp_path / "r.yaml")
    assert [e.id for e in reg.family("f")] == ["f-r50x1-run0-a", "f-r50x1-run0-b", "f-r50x1-run1-a", "f-r50x1-run1-b"]
    assert check(reg) == []
    e = reg.get("f-r50x1-run1-b")
    assert (e.source, e.classes, e.resolution, e.description) == ("f/R50x1-1-b.npz", 5, 480, "R50x1 on b")


def test_a_wrong_backbone_count_fails_every_generated_entry(tmp_path):
    problems = check(parse_registry(_family(backbone_params="{R50x1: 23500353}"), tmp_path / "r.yaml"))
    assert len(problems) == 4 and all("R50x1" in p for p in problems)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"colour": "red"}, "family 'f': unknown field(s) ['colour']"),
        ({"runs": None}, "missing field(s) ['runs']"),
        ({"id": "f-{model}"}, "family 'f': bad template: 'model'"),
        ({"backbone_params": "{ResNet50: 1}"}, "backbone_params needs R<depth>x<width>"),
        ({"tasks": "{a: {classes: 3}}"}, "task 'a' needs exactly classes, resolution"),
        ({"tasks": "{a: {classes: 0, resolution: 128}}"}, "classes must be a positive integer"),
        ({"id": "f-{arch}-{task}"}, "several models share the id(s) f-r50x1-a"),
        ({"labels": "x.txt"}, "labels must be null or one of"),
    ],
)
def test_malformed_family_rules_are_refused(tmp_path, changes, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(_family(**changes), tmp_path / "r.yaml")


# -- which code defines each checkpoint's forward pass -------------------------------------------


def test_distill_files_follow_big_vision_and_the_rest_big_transfer():
    # bit-format.md, "Which code each checkpoint follows": every distill/ file (the collection's four and
    # the 128-px teachers) ran in big_vision's bit_paper.py (-inf root pool padding); the rest in big_transfer.
    for e in REGISTRY.entries:
        distill = e.source.startswith("distill/")
        assert e.code == ("big_vision" if distill else "big_transfer"), e.id
        assert e.root_pool_padding == ("neg_inf" if distill else "zero"), e.id
    assert sum(e.code == "big_vision" for e in REGISTRY.entries) == 8


def test_an_entry_overrides_its_family_code(tmp_path):
    text = _one_entry(code="big_vision").replace("models:\n", "code:\n  bit-m: big_transfer\nmodels:\n")
    (entry,) = parse_registry(text, tmp_path / "r.yaml").entries
    assert (entry.family_name, entry.code, entry.root_pool_padding) == ("bit-m", "big_vision", "neg_inf")
    assert entry.as_dict()["code"] == "big_vision" and entry.as_dict()["root_pool_padding"] == "neg_inf"


def test_an_entry_takes_its_family_code(tmp_path):
    text = _one_entry(code=None).replace("models:\n", "code:\n  bit-m: big_transfer\nmodels:\n")
    (entry,) = parse_registry(text, tmp_path / "r.yaml").entries
    assert entry.code == "big_transfer"


@pytest.mark.parametrize(
    "text, message",
    [
        (_one_entry(code=None), "no code for its forward pass; add 'bit-m: big_transfer|big_vision' under the top-level 'code:'"),
        (_one_entry(code="timm"), "code must be one of big_transfer, big_vision, got 'timm'"),
        (_one_entry(code=None) + "code:\n  bit-m: timm\n", "'code:' must map family names to one of big_transfer, big_vision"),
    ],
)
def test_a_missing_or_unknown_code_is_refused(tmp_path, text, message):
    with pytest.raises(RegistryError, match=re.escape(message)):
        parse_registry(text, tmp_path / "r.yaml")
