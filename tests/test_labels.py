"""Label files: the shipped lemmas, parsing, fetching through the verified downloader, the SavedModel asset."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from conftest import TINY

from convert.errors import LabelsError
from convert.labels import DATA_DIR, load_labels, packaged_labels_path, parse_labels, read_labels_file
from convert.registry import load_registry

REPO = Path(__file__).resolve().parent.parent
IN1K = "ilsvrc2012_wordnet_lemmas.txt"
REGISTRY = load_registry()


def test_shipped_lemmas_are_the_1000_ilsvrc_classes():
    path = packaged_labels_path(IN1K)
    assert path == DATA_DIR / IN1K
    names = read_labels_file(path, 1000)
    # Known lines of the BiT bucket's file: class 0, 1 and 999.
    assert names[:2] == ("tench, Tinca tinca", "goldfish, Carassius auratus")
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue"
    # ImageNet's one repeated lemma: "crane" the bird (class 134) and the machine (class 517).
    assert len(set(names)) == 999 and [i for i, n in enumerate(names) if n == "crane"] == [134, 517]
    assert packaged_labels_path("imagenet21k_wordnet_lemmas.txt") is None  # not shipped


def test_shipped_lemmas_regenerate_from_timm():
    spec = importlib.util.spec_from_file_location("make_labels", REPO / "scripts" / "make_labels.py")
    make_labels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_labels)
    assert make_labels.lemmas_from_timm() == (DATA_DIR / IN1K).read_text(encoding="utf-8")
    assert "Apache" in (DATA_DIR / "NOTICE").read_text()
    assert "data/ilsvrc2012_wordnet_lemmas.txt" in (REPO / "setup.cfg").read_text()


@pytest.mark.parametrize(
    "text, names",
    [("a\nb\nc\n", ("a", "b", "c")), ("a\nb\nc", ("a", "b", "c")), ("a, x\r\nb\r\nc\r\n", ("a, x", "b", "c"))],
)
def test_parse_labels(text, names):
    assert parse_labels(text, 3, "f") == names


@pytest.mark.parametrize(
    "text, message",
    [
        ("a\nb\n", "f: 2 lines but the head has 3 classes"),
        ("a\nb\nc\nd\n", "4 lines"),
        ("a\n\nc\n", "empty class name on line 2"),
    ],
)
def test_parse_labels_refuses_what_does_not_fit(text, message):
    with pytest.raises(LabelsError, match=message):
        parse_labels(text, 3, "f")


# -- fetched like a checkpoint ---------------------------------------------------------------


@pytest.fixture
def bucket(tmp_path):
    root = tmp_path / "bucket"
    root.mkdir()
    shutil.copy(DATA_DIR / IN1K, root / IN1K)
    return root


def test_labels_come_from_the_base_url_verified_and_cached(mirror, cache):
    entry = REGISTRY.get("r50x1-160")
    warnings = []
    names = load_labels(entry, cache_dir=cache, base_url=mirror.base_url, log=warnings.append)
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca" and warnings == []
    assert [r[1] for r in mirror.body_requests()] == [IN1K]
    assert (cache / IN1K).is_file()
    # Cached and verified: offline works and asks nothing of the server.
    again = load_labels(entry, cache_dir=cache, base_url=mirror.base_url, offline=True)
    assert again == names and len(mirror.body_requests()) == 1


def test_offline_without_cached_labels_warns_once_and_gives_none(cache):
    warnings = []
    entry = REGISTRY.get("bit-m-r50x1-ilsvrc2012")
    assert load_labels(entry, cache_dir=cache, base_url="http://127.0.0.1:9/", offline=True, log=warnings.append) is None
    assert len(warnings) == 1
    assert warnings[0].startswith("bit-m-r50x1-ilsvrc2012: warning: offline and ilsvrc2012_wordnet_lemmas.txt is not cached")


def test_unpublished_labels_need_no_fetch():
    def no_fetch(*args, **kwargs):
        raise AssertionError("fetched although the head has no published labels")

    for model_id in ("vtab-r50x1-run0-dtd", "r152x2-pet128"):
        assert load_labels(REGISTRY.get(model_id), fetch=no_fetch) is None


def test_a_label_file_that_does_not_fit_the_head_is_an_error(mirror, cache, bucket):
    (bucket / IN1K).write_text("tench\ngoldfish\n")
    with pytest.raises(LabelsError, match="2 lines but the head has 1000 classes"):
        load_labels(REGISTRY.get("r50x1-160"), cache_dir=cache, base_url=mirror.base_url)


def test_corrupted_label_bytes_are_caught_and_fetched_again(mirror, cache):
    def flip_first(reply):
        if reply.number == 1:
            reply.flip_at = 10  # same size, one byte changed: the x-goog-hash no longer matches

    mirror.hook = flip_first
    names = load_labels(REGISTRY.get("r50x1-160"), cache_dir=cache, base_url=mirror.base_url)
    assert names == read_labels_file(DATA_DIR / IN1K, 1000)
    assert len(mirror.body_requests()) == 2


def test_a_mirror_without_the_label_file_warns(mirror, cache, bucket):
    (bucket / IN1K).unlink()
    warnings = []
    assert load_labels(REGISTRY.get("r50x1-160"), cache_dir=cache, base_url=mirror.base_url, log=warnings.append) is None
    assert len(warnings) == 1 and "cannot fetch ilsvrc2012_wordnet_lemmas.txt" in warnings[0]


def test_an_unavailable_bucket_costs_two_requests_then_a_warning(mirror, cache):
    """Label files are optional: their policy gives up after two requests, where a checkpoint's tries six."""
    from convert.labels import labels_policy

    def unavailable(reply):
        reply.status, reply.body = 503, b""
        reply.set_header("Content-Length", "0")

    mirror.hook = unavailable
    warnings = []
    assert load_labels(REGISTRY.get("r50x1-160"), cache_dir=cache, base_url=mirror.base_url, log=warnings.append) is None
    assert len(warnings) == 1 and "gave up after 2 request(s)" in warnings[0]
    assert len(mirror.requests) == labels_policy().attempts == 2


def test_an_unreachable_bucket_is_one_clean_line(cache):
    """A refused connection: the warning names the cause in one line, not urllib3's cut-off repr of a connection object."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warnings = []
    base = f"http://127.0.0.1:{port}/"
    assert load_labels(REGISTRY.get("r50x1-160"), cache_dir=cache, base_url=base, log=warnings.append) is None
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "Connection refused" in warnings[0] and "object at 0x" not in warnings[0] and "..." not in warnings[0]


def test_a_bad_local_checkpoint_is_refused_before_the_labels_are_fetched(invoke, mirror, cache, tmp_path, tiny_npz):
    """`export --checkpoint` reads and checks the file first: the bucket is not asked for anything."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(Path(tiny_npz).read_bytes()[:1000])
    out = tmp_path / "out"
    result = invoke("export", "--model", "r50x1-160", "--checkpoint", bad, "-o", out, "--base-url", mirror.base_url)
    assert result.exit_code == 1 and str(bad) in result.stderr
    assert mirror.requests == []
    assert not out.exists()


# -- inside the SavedModel ---------------------------------------------------------------------


def test_labels_asset_survives_a_move_and_a_reload(tmp_path, tiny_npz):
    import tensorflow as tf

    from convert.checkpoint import load_checkpoint
    from convert.errors import ExportError
    from convert.export import build_exportable
    from convert.export.saved_labels import check_reloaded_labels, read_saved_labels, tracked_labels
    from convert.model.tf_model import build_tf_model

    labels = tuple(f"class {i}, name" for i in range(TINY.classes))
    root = build_exportable(build_tf_model(load_checkpoint(tiny_npz, TINY)), "classification", "unit")
    with tracked_labels(root, labels) as source:
        tf.saved_model.save(root, str(tmp_path / "written"), signatures={"serving_default": root.serving_default})
    assert not source.exists()  # the scratch copy is gone; the SavedModel has its own
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "written", moved)
    assert read_saved_labels(moved) == labels
    loaded = tf.saved_model.load(str(moved))
    assert Path(loaded.labels_file.asset_path.numpy().decode()) == moved / "assets" / "labels.txt"
    check_reloaded_labels(loaded, moved, labels, "tiny")
    with pytest.raises(ExportError, match="does not hold the 10 labels"):
        check_reloaded_labels(loaded, moved, labels[::-1], "tiny")
    with pytest.raises(ExportError, match="carries labels although none were given"):
        check_reloaded_labels(loaded, moved, None, "tiny")
