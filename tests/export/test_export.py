"""`bitconvert export`: SavedModels that load everywhere users load them, equal to JAX, written atomically.

One module-scoped export of the full R50x1 layout (parity at 64 px to keep the
JAX reference cheap) serves most tests; the process tests (fresh-process
reproducibility, SIGKILL, full disk) run the real CLI in subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import R50X1, TINY

from convert.export import (
    ExportOptions,
    clear_stale_temp_dirs,
    export_model,
    publish_directory,
    temp_dir_for,
)
from convert.export.archive import archive_members
from convert.export.cards.model_card import VARIANTS, archive_name, parse_card
from convert.model.architecture import checkpoint_layout
from convert.registry import load_registry

MODEL = "r50x1-160"
PARITY_PX = 64
BIN = Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
#: Variables of each variant: every checkpoint array; the feature extractor leaves out the head's two.
N_CLASSIFIER = len(checkpoint_layout(R50X1))
N_FEATURES = N_CLASSIFIER - 2


def _cli(*args) -> list[str]:
    return [str(BIN / "bitconvert"), *map(str, args)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_files(variant_dir: Path) -> dict[str, str]:
    """sha256 of saved_model.pb and every variables/ file (fingerprint.pb aside)."""
    files = {"saved_model.pb": _sha(variant_dir / "saved_model.pb")}
    files.update({f"variables/{p.name}": _sha(p) for p in sorted((variant_dir / "variables").iterdir())})
    return files


@pytest.fixture(scope="module")
def exported(tmp_path_factory, r50x1_npz):
    """`bitconvert export --model r50x1-160 --checkpoint ... --archive`, in-process, once."""
    from convert.cli import cli

    out = tmp_path_factory.mktemp("exports")
    result = CliRunner().invoke(
        cli,
        ["export", "--model", MODEL, "--checkpoint", str(r50x1_npz), "--output-dir", str(out), "--archive"]
        + ["--parity-resolution", str(PARITY_PX)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    return out / MODEL, result


@pytest.fixture(scope="module")
def symmetric_export(tmp_path_factory, r50x1_npz):
    """The same weights exported for [-1, 1] inputs (no parity: the unit export carries it)."""
    out = tmp_path_factory.mktemp("exports_sym")
    options = ExportOptions(output_dir=out, input_range="symmetric", skip_parity=True)
    return export_model(load_registry().get(MODEL), r50x1_npz, options).path


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return rng.uniform(0.0, 1.0, size=(3, 72, 56, 3)).astype(np.float32)


# -- what is written ---------------------------------------------------------------------


def test_export_layout_and_stdout(exported):
    path, result = exported
    assert result.stdout.splitlines() == [str(path)]  # data on stdout, progress on stderr
    assert "parity after export" in result.stderr
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(
        ["classification", "feature_extraction", "classification.md", "feature_extraction.md", "manifest.json"]
        + [archive_name(load_registry().get(MODEL), v) for v in VARIANTS]
    )
    for v in VARIANTS:
        assert (path / v / "saved_model.pb").is_file()
        assert (path / v / "variables" / "variables.index").is_file()
    assert not list(path.parent.glob(".*"))  # no temporary directory left


def test_manifest_contents(exported, r50x1_npz):
    path, _ = exported
    m = json.loads((path / "manifest.json").read_text())
    entry = load_registry().get(MODEL)
    assert m["model"] == entry.as_dict()
    # The tests' default bucket (conftest.loopback_bucket); the labels came from it too.
    assert m["source_url"] == os.environ["BITCONVERT_BASE_URL"] + "distill/R50x1_160.npz"
    assert m["labels"]["embedded"] and m["labels"]["count"] == 1000
    assert (path / m["labels"]["path"]).read_text().splitlines()[0] == "tench, Tinca tinca"
    assert m["checkpoint"]["sha256"] == _sha(Path(r50x1_npz))
    assert m["checkpoint"]["origin"] == "--checkpoint"
    assert m["checkpoint"]["parameters"] == entry.params
    assert m["input"]["range"] == "unit" and (m["input"]["min"], m["input"]["max"]) == (0.0, 1.0)
    assert set(m["versions"]) >= {"bitconvert", "python", "tensorflow", "jax", "flax", "numpy"}
    assert all(m["versions"][k] for k in ("tensorflow", "jax", "flax", "numpy"))

    parity = m["parity"]
    assert parity["checked"] and parity["resolution"] == PARITY_PX
    before = parity["before_export"]
    assert before["summary"]["passed"] and {"logits", "pre_logits", "stem"} <= set(before)
    for variant, stage in (("classification", "logits"), ("feature_extraction", "pre_logits")):
        after = parity["after_export"][variant]
        assert after["summary"]["passed"] and set(after) == {stage, "summary"}
        assert 0 < after[stage]["tf_rel_l2_f64"] <= parity["tolerance"]
        # The reference is float64 only: no float32 columns, absolute error against float64.
        assert after[stage]["max_abs"] is None and after[stage]["max_abs_f64"] > 0
        # The reloaded artifact is judged against the tolerance, like the live graph: its error may differ
        # from the live graph's by the CPU's rounding (3.3e-5 against 2.2e-5 on an AVX2-only CPU).
        assert 0 < before[stage]["tf_rel_l2_f64"] <= parity["tolerance"]

    import tensorflow as tf

    for v in VARIANTS:
        info = m["variants"][v]
        fp = tf.saved_model.experimental.read_fingerprint(str(path / v))
        assert info["fingerprint"]["singleprint"] == fp.singleprint()
        assert info["fingerprint"]["sha256"] == _model_files(path / v)
        assert info["archive"]["sha256"] == _sha(path / info["archive"]["file"])
    assert m["variants"]["classification"]["variables"] == N_CLASSIFIER
    assert m["variants"]["feature_extraction"]["variables"] == N_FEATURES


def test_cards_on_disk_report_the_measured_parity(exported):
    path, _ = exported
    m = json.loads((path / "manifest.json").read_text())
    for variant, stage, task in (
        ("classification", "logits", "image-classification"),
        ("feature_extraction", "pre_logits", "image-feature-vector"),
    ):
        text = (path / f"{variant}.md").read_text()
        _, meta = parse_card(text)
        assert meta["task"] == task and meta["asset-path"] == m["variants"][variant]["archive"]["file"]
        rel = m["parity"]["after_export"][variant][stage]["tf_rel_l2_f64"]
        assert f"relative L2 error {rel:.3g}" in text
        assert f"maximum absolute error {m['parity']['after_export'][variant][stage]['max_abs_f64']:.3g}" in text
        assert f"at {PARITY_PX}x{PARITY_PX}" in text
        assert f'tf.saved_model.load("exports/{MODEL}/{variant}")' in text  # not this machine's path


# -- loading: the Reusable SavedModel API and the image conventions ----------------------------


def test_saved_model_load_any_batch_and_size(exported):
    import tensorflow as tf

    path, _ = exported
    clf = tf.saved_model.load(str(path / "classification"))
    fe = tf.saved_model.load(str(path / "feature_extraction"))
    for shape in ((1, 64, 64, 3), (3, 97, 50, 3), (2, 160, 160, 3)):
        x = tf.random.uniform(shape)
        assert clf(x).shape == (shape[0], 1000)
        assert fe(x).shape == (shape[0], 2048)
    assert len(clf.variables) == N_CLASSIFIER and len(clf.trainable_variables) == N_CLASSIFIER
    assert len(fe.variables) == N_FEATURES
    assert all(v.trainable for v in clf.trainable_variables)
    assert list(clf.regularization_losses) == []
    assert not any("head" in v.name for v in fe.variables)
    sig = clf.signatures["serving_default"]
    assert list(sig.structured_input_signature[1]) == ["images"]
    out = sig(images=tf.random.uniform([2, 40, 48, 3]))
    assert list(out) == ["logits"] and out["logits"].shape == (2, 1000)
    assert list(fe.signatures["serving_default"](images=tf.zeros([1, 32, 32, 3]))) == ["feature_vector"]


def test_signature_and_call_agree(exported, images):
    import tensorflow as tf

    path, _ = exported
    clf = tf.saved_model.load(str(path / "classification"))
    np.testing.assert_allclose(
        clf.signatures["serving_default"](images=tf.constant(images))["logits"].numpy(), clf(images).numpy(), rtol=1e-6, atol=1e-6
    )


def _compiled_functions_reached(variant_dir: Path) -> dict[str, list[str]]:
    """For each entry point of a saved_model.pb: the XLA-compiled (``_XlaMustCompile``) library functions it calls.

    Entry points: ``__call__`` per value of ``training``, and the serving signature.
    Read from the protos on disk, so it shows what every loader will find.
    """
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import nested_structure_coder

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((variant_dir / "saved_model.pb").read_bytes())
    meta = saved.meta_graphs[0]
    lib = {f.signature.name: f for f in meta.graph_def.library.function}
    objects = meta.object_graph_def

    def reached(name):
        seen, todo = {name}, [name]
        while todo:
            for node in lib[todo.pop()].node_def:
                for callee in [node.op, *(a.func.name for a in node.attr.values())]:
                    if callee in lib and callee not in seen:
                        seen.add(callee)
                        todo.append(callee)
        return sorted(f for f in seen if "_XlaMustCompile" in lib[f].attr and lib[f].attr["_XlaMustCompile"].b)

    def child(node, name):
        return objects.nodes[next(c.node_id for c in node.children if c.local_name == name)]

    out = {}
    for name in child(objects.nodes[0], "__call__").function.concrete_functions:
        args, _ = nested_structure_coder.decode_proto(objects.concrete_functions[name].canonicalized_input_signature)
        out[f"__call__(training={args[1]})"] = reached(name)
    serving = child(child(objects.nodes[0], "signatures"), "serving_default").bare_concrete_function
    out["serving_default"] = reached(serving.concrete_function_name)
    return out


def test_inference_is_xla_compiled_and_training_is_not(exported, images):
    """__call__ (training=False, the default) and serving_default run XLA-compiled; training=True the plain graph; all agree."""
    import tensorflow as tf

    path, _ = exported
    for variant in VARIANTS:
        reached = _compiled_functions_reached(path / variant)
        assert sorted(reached) == ["__call__(training=False)", "__call__(training=True)", "serving_default"]
        assert len(reached["__call__(training=False)"]) == 1
        assert reached["serving_default"] == reached["__call__(training=False)"]
        assert reached["__call__(training=True)"] == []
    clf = tf.saved_model.load(str(path / "classification"))
    compiled, plain = clf(images).numpy(), clf(images, training=True).numpy()
    assert not np.array_equal(compiled, plain)  # two different programs (XLA's fusions round differently) ...
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-4 * np.abs(plain).max())  # ... of one function


def test_unit_and_symmetric_ranges_agree(exported, symmetric_export, images):
    """[0, 1] inputs to the default export == the same pixels as [-1, 1] to --input-range symmetric."""
    import tensorflow as tf

    path, _ = exported
    for variant in VARIANTS:
        unit = tf.saved_model.load(str(path / variant))(images).numpy()
        sym = tf.saved_model.load(str(symmetric_export / variant))(images * 2.0 - 1.0).numpy()
        np.testing.assert_allclose(unit, sym, rtol=1e-4, atol=1e-4 * np.abs(sym).max())
        # and the range really matters: feeding [0, 1] to the symmetric model is different
        wrong = tf.saved_model.load(str(symmetric_export / variant))(images).numpy()
        assert np.abs(wrong - sym).max() > 100 * np.abs(unit - sym).max()
    card = (symmetric_export / "classification.md").read_text()
    assert "values in **[-1, 1]**" in card and "--skip-parity" in card
    assert json.loads((symmetric_export / "manifest.json").read_text())["parity"]["checked"] is False


def test_keras3_tfsmlayer_both_endpoints(exported, images):
    import keras

    path, _ = exported
    serving = keras.layers.TFSMLayer(str(path / "classification"), call_endpoint="serving_default")
    direct = keras.layers.TFSMLayer(str(path / "classification"), call_endpoint="__call__")
    a = serving(images)["logits"]
    b = direct(images)
    assert a.shape == (3, 1000)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    fe = keras.layers.TFSMLayer(str(path / "feature_extraction"), call_endpoint="serving_default")
    assert fe(images)["feature_vector"].shape == (3, 2048)
    assert len(direct.trainable_weights) == N_CLASSIFIER


HUB_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow_hub as hub
    import tf_keras

    layer = hub.KerasLayer(sys.argv[1], trainable=True)
    model = tf_keras.Sequential([tf_keras.Input((48, 48, 3)), layer, tf_keras.layers.Dense(3)])
    model.compile(
        optimizer=tf_keras.optimizers.SGD(0.5),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    backbone = {v.name: v for v in layer.trainable_weights}
    key = "resnet/block4/unit03/c/standardized_conv2d/kernel:0"
    before = backbone[key].numpy().copy()
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 1, (4, 48, 48, 3)).astype("float32"), np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    print(len(layer.trainable_weights), float(np.abs(backbone[key].numpy() - before).max()))
    """
)


def test_hub_keraslayer_fine_tunes_the_backbone(exported, tmp_path):
    """hub.KerasLayer(trainable=True) in a tf-keras model: one training step moves a backbone weight."""
    path, _ = exported
    script = tmp_path / "hub_step.py"
    script.write_text(HUB_SCRIPT)
    env = {**ENV, "TF_USE_LEGACY_KERAS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(path / "feature_extraction")], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    n, change = proc.stdout.split()
    assert int(n) == N_FEATURES
    assert float(change) > 0.0


def test_saved_model_cli_shows_the_signature(exported):
    path, _ = exported
    proc = subprocess.run(
        [str(BIN / "saved_model_cli"), "show", "--dir", str(path / "feature_extraction"), "--all"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "signature_def['serving_default']" in out
    assert "inputs['images'] tensor_info:" in out
    assert "outputs['feature_vector'] tensor_info:" in out
    assert "shape: (-1, -1, -1, 3)" in out and "shape: (-1, 2048)" in out


def test_archive_extracts_to_the_same_working_savedmodel(exported, tmp_path, images):
    import tensorflow as tf

    path, _ = exported
    entry = load_registry().get(MODEL)
    archive = path / archive_name(entry, "classification")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == archive_members(path / "classification")
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
        tar.extractall(tmp_path / "x", filter="data")
    assert _model_files(tmp_path / "x") == _model_files(path / "classification")
    np.testing.assert_array_equal(
        tf.saved_model.load(str(tmp_path / "x"))(images).numpy(),
        tf.saved_model.load(str(path / "classification"))(images).numpy(),
    )


# -- reproducibility --------------------------------------------------------------------------


def test_reexport_in_fresh_processes_is_byte_identical(tmp_path, r50x1_npz):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        proc = subprocess.run(
            _cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--archive", "--parity-resolution", 48),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (o / MODEL for o in outs)
    for v in VARIANTS:
        assert _model_files(a / v) == _model_files(b / v)
        assert (a / v / "fingerprint.pb").read_bytes() != (b / v / "fingerprint.pb").read_bytes()  # random UUID by design
        name = archive_name(load_registry().get(MODEL), v)
        assert (a / name).read_bytes() == (b / name).read_bytes()
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert ma == mb  # no timestamps, same figures, same singleprints


def test_savedmodels_are_the_same_bytes_with_or_without_keras(tmp_path, r50x1_npz):
    """The Keras target writes after the SavedModels: building a Keras model on the TensorFlow
    backend advances TF's process-wide name counter, which the SavedModels' function names use."""
    outs = {}
    for formats in ("savedmodel", "savedmodel,keras"):
        out = tmp_path / formats.replace(",", "-")
        argv = _cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--format", formats, "--skip-parity")
        proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[formats] = out / MODEL
    assert (outs["savedmodel,keras"] / "keras" / "classification.keras").is_file()
    for v in VARIANTS:
        assert _model_files(outs["savedmodel"] / v) == _model_files(outs["savedmodel,keras"] / v)


# -- bad input and failures: nothing half-written at a final path --------------------------------


def _truncated_copy(src: Path, dest: Path) -> Path:
    data = Path(src).read_bytes()
    dest.write_bytes(data[: len(data) // 2])
    return dest


def test_damaged_checkpoint_stops_before_anything_is_written(invoke, tmp_path, r50x1_npz):
    bad = _truncated_copy(r50x1_npz, tmp_path / "bad.npz")
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", bad, "-o", out)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bitconvert: error: ") and "Traceback" not in result.stderr
    assert str(bad) in lines[0]
    assert not out.exists()


def test_wrong_architecture_checkpoint_is_refused(invoke, tmp_path, tiny_npz):
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", tiny_npz, "-o", out)
    assert result.exit_code == 1 and "missing resnet/block1/unit02" in result.stderr
    assert not out.exists()


def test_usage_errors(invoke, tmp_path, r50x1_npz):
    assert invoke("export", "-o", tmp_path).exit_code == 2
    assert invoke("export", "--all", "--model", MODEL, "-o", tmp_path).exit_code == 2
    r = invoke("export", "--model", MODEL, "--model", "r50x1-224", "--checkpoint", r50x1_npz, "-o", tmp_path)
    assert r.exit_code == 2 and "--checkpoint" in r.stderr
    r = invoke("export", "--model", "r50x1-161", "--checkpoint", r50x1_npz, "-o", tmp_path)
    assert r.exit_code == 2 and "r50x1-160" in r.stderr
    assert invoke("export", "--model", MODEL, "--input-range", "bytes", "-o", tmp_path).exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_all_offline_and_not_cached_writes_nothing(invoke, tmp_path):
    out = tmp_path / "out"
    result = invoke("export", "--all", "--offline", "--cache-dir", tmp_path / "cache", "-o", out)
    assert result.exit_code == 5, result.stderr
    assert "r152x2-384" in result.stderr  # the first collection entry
    assert not out.exists()


def test_not_enough_space_is_refused_before_writing(invoke, tmp_path, r50x1_npz, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
    out = tmp_path / "out"
    result = invoke("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity")
    assert result.exit_code == 6 and "not enough free space" in result.stderr
    assert not out.exists()


def _with_file_size_limit(limit: int, argv: list[str]) -> list[str]:
    """``argv`` run under RLIMIT_FSIZE: writes past ``limit`` fail with EFBIG, as on a full disk.

    Set in a tiny exec wrapper rather than a preexec_fn (fork in a threaded
    pytest process can deadlock). SIGXFSZ is ignored by Python and stays
    ignored across exec, so the write fails instead of killing the process.
    """
    wrapper = (
        "import os, resource, signal, sys; "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1]))); "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    return [sys.executable, "-c", wrapper, str(limit), *argv]


def test_full_disk_exits_6_and_leaves_no_output(tmp_path, r50x1_npz):
    out = tmp_path / "out"
    argv = _cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity")
    # The R50x1 variables file is ~100 MB: the first SavedModel cannot be written.
    proc = subprocess.run(_with_file_size_limit(20 * 2**20, argv), capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 6, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bitconvert:")]
    assert len(errors) == 1 and "cannot write" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # no final export, no temporary directory, not even the directory it created


def test_killed_export_leaves_the_previous_export_untouched(tmp_path, r50x1_npz):
    out = tmp_path / "out"
    previous = out / MODEL
    previous.mkdir(parents=True)
    (previous / "manifest.json").write_text('{"previous": true}\n')
    proc = subprocess.Popen(
        _cli("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", out, "--skip-parity"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    tmp = temp_dir_for(out, MODEL, proc.pid)
    deadline = time.monotonic() + 240
    # Kill once the first SavedModel is being written: the worst moment.
    while not (tmp / "classification" / "variables").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the export finished or failed before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert sorted(p.name for p in previous.iterdir()) == ["manifest.json"]
    assert (previous / "manifest.json").read_text() == '{"previous": true}\n'
    assert tmp.exists()  # what a SIGKILL leaves: only the temporary directory...
    clear_stale_temp_dirs(out, MODEL)  # ...which the next export of the id clears away
    assert sorted(p.name for p in out.iterdir()) == [MODEL]


# -- parity failures (reduced TINY layout: cheap JAX reference) --------------------------------------


def _tiny_export(tmp_path, out, **kw):
    from convert.synthetic import write_synthetic_checkpoint

    ckpt = write_synthetic_checkpoint(tmp_path / "tiny.npz", TINY, seed=3)
    options = ExportOptions(output_dir=out, parity_resolution=48, **kw)
    return export_model(load_registry().get(MODEL), ckpt, options, arch=TINY)


def test_parity_failure_after_export_removes_the_output(tmp_path, monkeypatch):
    """A SavedModel that differs from the live graph (one head bias nudged before saving) is caught from disk."""
    import convert.export.judge as judge
    import convert.export.savedmodel as savedmodel
    from convert.errors import ParityError

    out = tmp_path / "out"
    good = _tiny_export(tmp_path, out)
    good_files = _model_files(good.path / "classification")

    real_build = savedmodel.build_exportable

    def nudged(net, variant, input_range):
        if variant == "classification":
            net.variables_by_key["resnet/head/conv2d/bias"].assign_add(np.full([10], 0.5, np.float32))
        return real_build(net, variant, input_range)

    class LiveRunFirst(judge.LiveRun):
        """The live run finishes before the SavedModels are written (and nudged), not alongside."""

        def __init__(self, graph, images):
            super().__init__(graph, images)
            self._thread.join()

    monkeypatch.setattr(savedmodel, "build_exportable", nudged)
    monkeypatch.setattr(judge, "LiveRun", LiveRunFirst)
    with pytest.raises(ParityError, match="reloaded classification SavedModel does not reproduce JAX"):
        _tiny_export(tmp_path, out, reference="worker")  # the reference in a worker process
    assert _model_files(good.path / "classification") == good_files  # the previous export stays
    assert sorted(p.name for p in out.iterdir()) == [MODEL]  # and no temporary directory


def test_writing_traces_the_network_once_per_variant(tmp_path, tiny_npz):
    """Writing traces each variant's graph once (a tf.function traced eagerly before tf.saved_model.save is traced again)."""
    from convert.checkpoint import load_checkpoint
    from convert.export import ExportJob
    from convert.export.savedmodel import TARGET
    from convert.model.tf_model import build_tf_model

    net = build_tf_model(load_checkpoint(tiny_npz, TINY))
    traces = []
    real_forward = net._forward
    net._forward = lambda images, logits: traces.append(logits) or real_forward(images, logits)
    job = ExportJob(MODEL, load_registry().get(MODEL), TINY, net, "unit", tmp_path, lambda msg: None)
    artifacts = TARGET.write(job)
    assert sorted(traces) == [False, True]  # the feature extractor's graph, the classifier's
    assert [(a.variant, a.path) for a in artifacts] == [(v, v) for v in VARIANTS]


def test_worker_first_placement_exports_the_same(tmp_path):
    """With memory for the worker but not for both at once, the reference runs first in a worker: same figures."""
    from convert.parity import MachineFacts
    from convert.parity.placement import alongside_bytes

    in_process = _tiny_export(tmp_path, tmp_path / "a", reference="inline")
    nbytes = (tmp_path / "tiny.npz").stat().st_size
    # Enough available memory for the worker-first estimate, not for the alongside one.
    tight = MachineFacts(usable_cpus=2, idle_cpus=2.0, available_bytes=alongside_bytes(nbytes) / 0.8, checkpoint_bytes=nbytes)
    lines = []
    options = ExportOptions(output_dir=tmp_path / "b", parity_resolution=48, machine=tight)
    worker_first = export_model(load_registry().get(MODEL), tmp_path / "tiny.npz", options, arch=TINY, log=lines.append)
    assert any("JAX reference in a worker process while TensorFlow is imported" in line for line in lines), lines
    assert any("JAX reference on" in line and "(in a worker process)" in line for line in lines)
    for variant, stage in (("classification", "logits"), ("feature_extraction", "pre_logits")):
        a = in_process.manifest["parity"]["after_export"][variant][stage]
        b = worker_first.manifest["parity"]["after_export"][variant][stage]
        assert b["tf_rel_l2_f64"] == pytest.approx(a["tf_rel_l2_f64"], rel=1e-9)


def test_unknown_format_is_a_usage_error_listing_the_valid_ones(invoke, tmp_path, r50x1_npz):
    result = invoke("export", "--model", MODEL, "--checkpoint", r50x1_npz, "-o", tmp_path, "--format", "savedmodel,pickle")
    assert result.exit_code == 2 and "unknown format 'pickle'; valid formats: savedmodel" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert "savedmodel  TF Hub-style SavedModels" in invoke("export", "--help").stdout


def test_parity_failure_before_export_writes_nothing(tmp_path, monkeypatch):
    """The classic port bug (TF 'SAME' padding on stride 2) is refused before any file is written."""
    import convert.model.tf_model as tf_model
    from convert.errors import ParityError

    real = tf_model.build_tf_model
    monkeypatch.setattr(tf_model, "build_tf_model", lambda ckpt: real(ckpt, strided_padding="same"))
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="before export"):
        _tiny_export(tmp_path, out, reference="inline")  # the reference first, in this process
    assert not out.exists()


# -- publishing ------------------------------------------------------------------------------


def test_publish_directory_swaps_in_a_new_export(tmp_path):
    final = tmp_path / "m"
    final.mkdir()
    (final / "old").write_text("old")
    new = tmp_path / ".m.tmp-1"
    new.mkdir()
    (new / "new").write_text("new")
    publish_directory(new, final)
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_stale_temp_dirs_of_live_processes_are_kept(tmp_path):
    dead = temp_dir_for(tmp_path, MODEL, 2**22 + 12345)  # above the default pid_max: never alive
    live = temp_dir_for(tmp_path, MODEL, os.getppid())
    other = temp_dir_for(tmp_path, "r50x1-224", 2**22 + 12345)
    for d in (dead, live, other):
        d.mkdir()
    clear_stale_temp_dirs(tmp_path, MODEL)
    assert not dead.exists() and live.exists() and other.exists()


# -- a second target through the same interface -------------------------------------------------


@pytest.fixture
def fake_format(monkeypatch):
    """tests/fake_target.py registered as --format fake (the formats table is data)."""
    import fake_target

    import convert.export.formats as formats

    monkeypatch.setitem(formats.FORMATS, "fake", "fake_target")
    monkeypatch.setitem(fake_target.SCALE, "value", 1.0)
    return fake_target


def test_second_target_gets_cards_digests_and_parity_under_targets(tmp_path, fake_format):
    out = tmp_path / "out"
    only = _tiny_export(tmp_path, tmp_path / "only", reference="inline")
    both = _tiny_export(tmp_path, out, reference="inline", formats=("savedmodel", "fake"))
    m = both.manifest

    def savedmodel_keys(manifest):
        """Everything but "targets", and the fingerprints (TF's graph names differ between exports in one process)."""
        d = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "targets"}))
        for v in d["variants"].values():
            del v["fingerprint"]
        return d

    assert list(m) == [*only.manifest, "targets"]
    assert savedmodel_keys(m) == savedmodel_keys(only.manifest)  # unchanged by a second target
    (entry,) = m["targets"]["fake"]
    assert (entry["variant"], entry["path"], entry["card"]) == ("classification", "fake/classification", "fake/classification.md")
    assert entry["facts"] == {"converter": "tf.saved_model"}
    assert entry["sha256"]["saved_model.pb"] == _sha(both.path / "fake/classification/saved_model.pb")
    report = entry["parity"]["tensorflow"]["report"]
    assert report["summary"]["passed"] and set(report) == {"logits", "summary"}
    assert f"relative L2 error {report['logits']['tf_rel_l2_f64']}" in (both.path / "fake/classification.md").read_text()


def test_second_target_failing_parity_removes_the_whole_export(tmp_path, fake_format):
    from convert.errors import ParityError

    fake_format.SCALE["value"] = 1.01  # 1% off: far above the tolerance
    out = tmp_path / "out"
    with pytest.raises(ParityError, match=r"reloaded classification fake artifact \(tensorflow\) does not reproduce JAX"):
        _tiny_export(tmp_path, out, reference="inline", formats=("savedmodel", "fake"))
    assert not out.exists()
