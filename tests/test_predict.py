"""`bitconvert predict` on small synthetic exports (the reduced TINY layout, 10 classes, native 160 px)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY

from convert.export import ExportOptions, build_exportable, export_model
from convert.predict import fit_to, scores_from_logits
from convert.registry import load_registry

MODEL = "r50x1-160"
RES = 160
LABELS = tuple(f"name {i}, synonym {i}" for i in range(TINY.classes))


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Four exports of the same weights: as the orchestrator writes them (no labels), with labels,
    with labels and a multi-label manifest, and in the symmetric [-1, 1] input range."""
    import tensorflow as tf

    from convert.checkpoint import load_checkpoint
    from convert.export.saved_labels import tracked_labels
    from convert.model.tf_model import build_tf_model
    from convert.synthetic import write_synthetic_checkpoint

    base = tmp_path_factory.mktemp("predict")
    ckpt = write_synthetic_checkpoint(base / "tiny.npz", TINY, seed=3)
    plain = base / "plain"
    export_model(load_registry().get(MODEL), ckpt, ExportOptions(output_dir=plain, skip_parity=True), arch=TINY)
    manifest = json.loads((plain / MODEL / "manifest.json").read_text())
    net = build_tf_model(load_checkpoint(ckpt, TINY))

    def variant(name: str, labels, input_range: str = "unit", format1: bool = False, **model_fields) -> None:
        root_dir = base / name / MODEL
        root_dir.mkdir(parents=True)
        root = build_exportable(net, "classification", input_range)
        with tracked_labels(root, labels):
            tf.saved_model.save(root, str(root_dir / "classification"), signatures={"serving_default": root.serving_default})
        lo = -1.0 if input_range == "symmetric" else 0.0
        m = {
            **manifest,
            "model": {**manifest["model"], **model_fields},
            "input": {**manifest["input"], "range": input_range, "min": lo},
        }
        if format1:  # as exports before manifest format 2 listed the SavedModels
            m = {k: v for k, v in m.items() if k != "targets"}
            m.update(format="bitconvert-export/1", variants={"classification": {"path": "classification"}})
        (root_dir / "manifest.json").write_text(json.dumps(m))

    variant("labelled", LABELS)
    variant("format1", LABELS, format1=True)
    variant("multi", LABELS, multi_label=True)
    variant("symmetric", None, "symmetric")
    return base


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import tensorflow as tf

    d = tmp_path_factory.mktemp("images")
    exact = _image(RES, RES, 0)
    wide = np.concatenate([_image(RES, 40, 1), exact, _image(RES, 40, 2)], axis=1)  # 160 x 240: the centre is `exact`
    files = {"exact.png": exact, "wide.png": wide, "photo.jpg": _image(120, 200, 3)}
    for name, arr in files.items():
        enc = tf.io.encode_png if name.endswith(".png") else tf.io.encode_jpeg
        tf.io.write_file(str(d / name), enc(arr))
    (d / "notes.txt").write_text("not an image\n")
    return d, files


def _reference(export_dir, pixels01: np.ndarray, multi_label: bool = False) -> np.ndarray:
    """Scores computed here, independently of convert.predict: the SavedModel on [0, 1] pixels."""
    import tensorflow as tf

    model = tf.saved_model.load(str(export_dir / MODEL / "classification"))
    logits = model(tf.constant(pixels01[None].astype(np.float32))).numpy().astype(np.float64)[0]
    if multi_label:
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _predict(invoke, export_dir, *args):
    result = invoke("predict", "--model", MODEL, "--output-dir", export_dir, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_json_top_k_is_the_softmax_of_the_exported_logits(invoke, exports, images):
    d, files = images
    (out,) = _predict(invoke, exports / "plain", "--top", "3", d / "exact.png")
    assert out["image"] == str(d / "exact.png") and len(out["top"]) == 3
    ref = _reference(exports / "plain", files["exact.png"] / 255.0)
    assert [t["index"] for t in out["top"]] == list(np.argsort(-ref)[:3])
    assert [t["score"] for t in out["top"]] == pytest.approx(list(np.sort(ref)[::-1][:3]), rel=1e-5)
    assert all(t["label"] is None for t in out["top"])  # this export carries no labels: indices only


def test_other_sizes_keep_aspect_and_crop_the_centre(invoke, exports, images):
    d, _ = images
    exact, wide = _predict(invoke, exports / "plain", "--top", "10", d / "exact.png", d / "wide.png")
    # 160 x 240: the shorter side is already 160, so only the centre 160 x 160 (= exact.png) is seen.
    assert [t["index"] for t in wide["top"]] == [t["index"] for t in exact["top"]]
    assert [t["score"] for t in wide["top"]] == pytest.approx([t["score"] for t in exact["top"]], rel=1e-5)


def test_fit_to_resizes_the_shorter_side_then_crops():
    import tensorflow as tf

    image = tf.constant(_image(120, 200, 3) / 255.0, tf.float32)
    out = fit_to(image, RES)
    assert out.shape == (RES, RES, 3)
    full = tf.image.resize(image, [RES, round(200 * RES / 120)], method="bilinear", antialias=True)  # 160 x 267
    np.testing.assert_allclose(out.numpy(), np.clip(full[:, 53 : 53 + RES].numpy(), 0, 1), atol=1e-6)
    same = tf.constant(_image(RES, RES, 4) / 255.0, tf.float32)
    assert fit_to(same, RES) is same  # already the model's size: untouched


def test_jpeg_and_labels_and_text_output(invoke, exports, images):
    d, _ = images
    (out,) = _predict(invoke, exports / "labelled", d / "photo.jpg")
    assert [t["label"] for t in out["top"]] == [LABELS[t["index"]] for t in out["top"]]
    assert sum(1 for _ in out["top"]) == 5 and sum(t["score"] for t in out["top"]) < 1.0 + 1e-9
    text = invoke("predict", "-m", MODEL, "-o", exports / "labelled", "--top", "2", d / "photo.jpg")
    assert text.exit_code == 0 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert lines[0] == f"{d / 'photo.jpg'}  (top 2, softmax)"
    first = out["top"][0]
    assert lines[1] == f"   1  {first['score']:.4f}  {first['index']:>5}  {first['label']}"


def test_exports_of_manifest_format_1_still_predict(invoke, exports, images):
    d, _ = images
    assert _predict(invoke, exports / "format1", d / "photo.jpg") == _predict(invoke, exports / "labelled", d / "photo.jpg")


def test_multi_label_heads_score_with_a_sigmoid(invoke, exports, images):
    d, files = images
    (out,) = _predict(invoke, exports / "multi", "--top", "10", d / "exact.png")
    ref = _reference(exports / "multi", files["exact.png"] / 255.0, multi_label=True)
    assert [t["score"] for t in out["top"]] == pytest.approx(list(np.sort(ref)[::-1]), rel=1e-5)
    assert sum(t["score"] for t in out["top"]) != pytest.approx(1.0)  # independent per class
    assert "sigmoid (multi-label)" in invoke("predict", "-m", MODEL, "-o", exports / "multi", d / "exact.png").stdout


def test_symmetric_exports_get_the_same_images_rescaled(invoke, exports, images):
    d, _ = images
    (unit,) = _predict(invoke, exports / "plain", d / "exact.png")
    (sym,) = _predict(invoke, exports / "symmetric", d / "exact.png")
    assert [t["index"] for t in sym["top"]] == [t["index"] for t in unit["top"]]
    assert [t["score"] for t in sym["top"]] == pytest.approx([t["score"] for t in unit["top"]], rel=1e-4)


def test_scores_from_logits():
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 0.0]])
    np.testing.assert_allclose(scores_from_logits(logits, False), [[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(scores_from_logits(np.array([[0.0, 2.0]]), True), [[0.5, 1 / (1 + np.exp(-2.0))]])


@pytest.mark.parametrize(
    "make_args, status, message",
    [
        (lambda d, e: ["-o", e / "nowhere", d / "exact.png"], 2, "no export of r50x1-160 under"),
        (lambda d, e: ["-o", e / "plain", d / "missing.png"], 1, "missing.png: no such file"),
        (lambda d, e: ["-o", e / "plain", d / "notes.txt"], 1, "notes.txt: not a JPEG, PNG, GIF or BMP image"),
        (lambda d, e: ["-o", e / "plain", d], 1, "cannot read"),
    ],
)
def test_bad_input_is_one_line_and_a_documented_status(invoke, exports, images, make_args, status, message):
    d, _ = images
    result = invoke("predict", "--model", MODEL, *make_args(d, exports))
    assert result.exit_code == status
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr and result.stderr.startswith("bitconvert: error: ")


def test_unknown_model_suggests_a_registry_id(invoke, exports, images):
    d, _ = images
    result = invoke("predict", "--model", "r50x1-16", "-o", exports / "plain", d / "exact.png")
    assert result.exit_code == 2 and "did you mean r50x1-160" in result.stderr


def test_missing_export_fails_before_tensorflow_is_loaded(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\nfrom convert.cli import main\n"
        "try:\n    main(['predict', '-m', 'r50x1-160', '-o', sys.argv[1], 'x.png'])\n"
        "except SystemExit as e:\n    print(e.code, 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False"], proc.stderr


def test_a_labels_file_that_does_not_fit_is_refused(invoke, exports, images, tmp_path):
    d, _ = images
    broken = tmp_path / "broken"
    shutil.copytree(exports / "labelled", broken)
    (broken / MODEL / "classification" / "assets" / "labels.txt").write_text("one\ntwo\n")
    result = invoke("predict", "-m", MODEL, "-o", broken, d / "exact.png")
    assert result.exit_code == 1 and "2 lines but the head has 10 classes" in result.stderr
