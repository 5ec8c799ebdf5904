"""`bitconvert predict` on small synthetic exports (the reduced TINY layout, 10 classes, native 160 px).

Every format an export holds (SavedModel, LiteRT, ONNX), damaged exports, bounded memory for
extreme images and many images (docs: convert/predict/__init__.py, convert/predict/images.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import TINY
from predict_support import damage, huge_png

from convert.export import ExportOptions, build_exportable, export_model
from convert.predict import plan_batches, scores_from_logits
from convert.predict.images import fit
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
    entry = load_registry().get(MODEL)
    export_model(entry, ckpt, ExportOptions(output_dir=plain, skip_parity=True), arch=TINY)
    formats = ("savedmodel", "tflite", "onnx")
    export_model(entry, ckpt, ExportOptions(output_dir=base / "all", skip_parity=True, formats=formats), arch=TINY)
    export_model(entry, ckpt, ExportOptions(output_dir=base / "onnx_only", skip_parity=True, formats=("onnx",)), arch=TINY)
    manifest = json.loads((plain / MODEL / "manifest.json").read_text())
    net = build_tf_model(load_checkpoint(ckpt, TINY), pool_pad=entry.forward().root_pool_padding)  # as export_model builds it

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
    huge_png(d / "huge.png", 11000, 10000)
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


@pytest.mark.parametrize("shape", [(120, 200), (1, 300), (300, 7), (1000, 733), (37, 37), (161, 160)])
def test_fit_equals_tensorflows_resize_then_centre_crop(shape):
    """Only the crop is computed, with the weights of tf.image.resize(antialias=True): the same pixels."""
    import tensorflow as tf

    h, w = shape
    pixels = _image(h, w, 3)
    out = fit(pixels, RES)
    assert out.shape == (RES, RES, 3) and out.dtype == np.float32
    scale = RES / min(h, w)
    nh, nw = max(RES, round(h * scale)), max(RES, round(w * scale))
    full = tf.image.resize(tf.constant(pixels / 255.0, tf.float32), [nh, nw], method="bilinear", antialias=True).numpy()
    top, left = (nh - RES) // 2, (nw - RES) // 2
    np.testing.assert_allclose(out, np.clip(full[top : top + RES, left : left + RES], 0, 1), atol=3e-5)
    same = _image(RES, RES, 4)
    np.testing.assert_array_equal(fit(same, RES), same.astype(np.float32) / 255)  # already the model's size: untouched


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
        (lambda d, e: ["-o", e / "plain", d / "notes.txt"], 1, "notes.txt: not a JPEG, PNG, WebP, GIF or BMP image"),
        (lambda d, e: ["-o", e / "plain", d], 1, "is a directory, not a regular file"),
        (lambda d, e: ["-o", e / "plain", "/dev/zero"], 1, "/dev/zero: is a character device, not a regular file"),
        (lambda d, e: ["-o", e / "plain", d / "huge.png"], 1, "11000 x 10000 pixels is more than predict decodes"),
        (lambda d, e: ["-o", e / "onnx_only", "--format", "tflite", d / "exact.png"], 2, "holds no tflite classifier"),
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


# -- every format, chosen by speed; damaged exports -----------------------------------------


def _logits_rel_l2(export_dir, fmt: str, pixels01: np.ndarray) -> float:
    """The relative L2 distance of a format's logits from the SavedModel's inference path (training=False) on the same batch."""
    import tensorflow as tf

    from convert.predict import load_runner, open_export

    reference = tf.saved_model.load(str(export_dir / MODEL / "classification"))(tf.constant(pixels01)).numpy()
    got = load_runner(open_export(MODEL, export_dir, fmt))(pixels01)
    return float(np.linalg.norm(got - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_each_format_computes_the_exported_function(exports, fmt):
    from convert.parity.compare import tolerance

    pixels = np.stack([_image(RES, RES, s) for s in (0, 5)]).astype(np.float32) / 255
    assert _logits_rel_l2(exports / "all", fmt, pixels) <= tolerance(TINY)


def test_the_savedmodel_is_traced_once_for_every_input_shape(exports):
    """A restored ``__call__`` traces (and later prepares its graph) per new input shape unless it was traced
    shape-free first: three batch and image sizes, one trace, the same logits as a plain load."""
    import tensorflow as tf

    from convert.export.cards.model_card import TRACE_EVERY_SHAPE
    from convert.predict.runners import load_savedmodel

    path = exports / "plain" / MODEL / "classification"
    model, plain, card = load_savedmodel(path), tf.saved_model.load(str(path)), tf.saved_model.load(str(path))
    exec(TRACE_EVERY_SHAPE, {"tf": tf, "model": card})  # the cards' own line, run as a user runs it
    for shape in ((1, RES, RES, 3), (3, RES, RES, 3), (2, 24, 40, 3)):
        x = tf.constant(np.random.default_rng(sum(shape)).random(shape, np.float32))
        np.testing.assert_array_equal(model(x, training=True).numpy(), plain(x, training=True).numpy())
        np.testing.assert_array_equal(card(x).numpy(), plain(x, training=True).numpy())
    assert model.__call__.experimental_get_tracing_count() == card.__call__.experimental_get_tracing_count() == 1
    assert plain.__call__.experimental_get_tracing_count() == 3  # what a load alone does


def test_auto_runs_the_fastest_format_held_and_installed(exports):
    from convert.predict import choose_format, classifiers_in, open_export

    assert open_export(MODEL, exports / "all").format == "tflite"
    assert open_export(MODEL, exports / "all").holds == ("tflite", "onnx", "savedmodel")
    assert open_export(MODEL, exports / "plain").format == "savedmodel"
    manifest = json.loads((exports / "all" / MODEL / "manifest.json").read_text())
    holds = classifiers_in(manifest, exports / "all" / MODEL)
    assert choose_format(holds, "auto", installed=lambda module: module != "ai_edge_litert") == "onnx"


def test_an_onnx_only_export_predicts_without_tensorflow(exports, images):
    """--format onnx alone: no SavedModel in the manifest's variants, and TensorFlow is never imported."""
    import subprocess
    import sys

    d, _ = images
    code = (
        "import json, sys\nfrom convert.predict import open_export, predict\n"
        "e = open_export('r50x1-160', sys.argv[1])\n"
        "print(json.dumps([e.format, 'tensorflow' in sys.modules, predict(e, [sys.argv[2]], top=3)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, exports / "onnx_only", d / "photo.jpg"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    fmt, tf_loaded, (result,) = json.loads(proc.stdout)
    assert fmt == "onnx" and tf_loaded is False and len(result["top"]) == 3


@pytest.mark.parametrize(
    "how, fmt",
    [
        ("no variables/", "savedmodel"),
        ("truncated variables.data", "savedmodel"),
        ("corrupt saved_model.pb", "savedmodel"),
        ("truncated .tflite", "tflite"),
        ("truncated .onnx", "onnx"),
        ("corrupt manifest", "auto"),
    ],
)
def test_a_damaged_export_is_one_line_and_status_1(invoke, exports, images, tmp_path, how, fmt):
    d, _ = images
    damaged = tmp_path / "damaged"
    shutil.copytree(exports / "all", damaged)
    damage(damaged, how)
    result = invoke("predict", "-m", MODEL, "-o", damaged, "--format", fmt, d / "exact.png")
    assert result.exit_code == 1, result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert f"the export of {MODEL} is damaged" in result.stderr and "bitconvert export --model" in result.stderr


# -- bounded memory -------------------------------------------------------------------------


def test_plan_batches_bounds_and_evens_the_batches():
    assert plan_batches(1) == (1, [range(0, 1)])
    assert plan_batches(8) == (8, [range(0, 8)])
    size, ranges = plan_batches(200, 8)
    assert size == 8 and len(ranges) == 25
    size, ranges = plan_batches(9, 8)  # two batches of 5, not 8 + 1
    assert size == 5 and ranges == [range(0, 5), range(5, 9)]
    assert plan_batches(0) == (0, [])


def test_images_go_in_bounded_batches_in_order(exports, images):
    from convert.predict import load_runner, open_export, predict

    d, _ = images
    export = open_export(MODEL, exports / "all", "onnx")
    seen = []
    real = load_runner(export)

    def runner(batch):
        seen.append(batch.shape)
        return real(batch)

    paths = [d / name for name in ("exact.png", "wide.png", "photo.jpg")] * 4  # 12 images
    results = predict(export, [str(p) for p in paths], top=3, batch=5, runner=runner)
    assert seen == [(4, RES, RES, 3)] * 3  # 12 images, at most 5 a call: three calls of 4
    alone = predict(export, [str(d / "photo.jpg")], top=3, runner=real)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert [t["index"] for t in results[2]["top"]] == [t["index"] for t in alone[0]["top"]]
    assert [t["score"] for t in results[2]["top"]] == pytest.approx([t["score"] for t in alone[0]["top"]], rel=1e-5)


def test_a_bad_image_fails_before_the_model_runs(exports, images):
    from convert.errors import ImageError
    from convert.predict import open_export, predict

    d, _ = images
    calls = []
    with pytest.raises(ImageError, match="notes.txt"):
        predict(open_export(MODEL, exports / "all", "onnx"), [str(d / "exact.png"), str(d / "notes.txt")], runner=calls.append)
    assert calls == []


def test_a_long_thin_image_costs_its_crop_not_its_full_resize(exports, images, tmp_path):
    """A 140-byte 20000 x 1 PNG: resizing it whole to a shorter side of 160 would take 6 GB.

    Measured in a child as the growth of its peak RSS between predicting a normal image (the model
    loaded, warmed up) and predicting the strip."""
    import subprocess
    import sys

    from PIL import Image

    d, _ = images
    Image.fromarray(np.zeros((1, 20000, 3), np.uint8)).save(tmp_path / "strip.png")
    code = (
        "import resource, sys\nfrom convert.predict import open_export, predict\n"
        "e = open_export('r50x1-160', sys.argv[1])\n"
        "predict(e, [sys.argv[2]])\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "predict(e, [sys.argv[3]])\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    args = [sys.executable, "-c", code, exports / "plain", d / "exact.png", tmp_path / "strip.png"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) < 200  # MB; the full resize alone is 3.2 million x 160 x 3 floats


def test_webp_is_decoded_like_the_same_pixels_in_png(exports, images, tmp_path):
    from PIL import Image

    from convert.predict import open_export, predict

    _, files = images
    Image.fromarray(files["exact.png"]).save(tmp_path / "exact.webp", lossless=True)
    Image.fromarray(files["exact.png"]).save(tmp_path / "exact.png")
    export = open_export(MODEL, exports / "all", "onnx")
    webp, png = predict(export, [str(tmp_path / "exact.webp"), str(tmp_path / "exact.png")], top=10)
    assert webp["top"] == png["top"]
