"""The SavedModel target: what is written, how users load it (Reusable SavedModel API, TF Hub, Keras 3), reproducibility.

One session-scoped export of the full R50x1 layout (``exported``, tests/conftest.py)
serves most tests; the reproducibility tests run the real CLI in subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, tiny_registry
from export_support import BIN, ENV, MODEL, N_CLASSIFIER, N_FEATURES, PARITY_PX, cli, model_files, savedmodel_entry, sha

from convert.export import ExportOptions, export_model
from convert.export.archive import archive_members
from convert.export.cards.model_card import archive_name
from convert.export.target import VARIANTS
from convert.model.architecture import checkpoint_layout
from convert.parity import tolerance
from convert.registry import load_registry


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(11)
    return rng.uniform(0.0, 1.0, size=(3, 72, 56, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def symmetric_export(tmp_path_factory, r50x1_npz):
    """The same weights exported for [-1, 1] inputs (no parity: the unit export carries it)."""
    out = tmp_path_factory.mktemp("exports_sym")
    options = ExportOptions(output_dir=out, input_range="symmetric", skip_parity=True)
    return export_model(load_registry().get(MODEL), r50x1_npz, options).path


def _load_each_variant(path: Path) -> dict:
    import tensorflow as tf

    return {v: tf.saved_model.load(str(path / v)) for v in VARIANTS}


@pytest.fixture(scope="module")
def loaded(exported):
    """Each variant of ``exported`` loaded from disk once for this module (calling a loaded SavedModel changes nothing):
    loading R50x1 and its first call at each shape are what these tests would otherwise repeat."""
    return _load_each_variant(exported[0])


@pytest.fixture(scope="module")
def loaded_symmetric(symmetric_export):
    return _load_each_variant(symmetric_export)


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
    path, result = exported
    m = json.loads((path / "manifest.json").read_text())
    entry = load_registry().get(MODEL)
    assert m["model"] == entry.as_dict()
    # The default bucket of the worker that exported it (conftest.loopback_bucket); the labels came from it too.
    assert m["source_url"] == result.base_url + "distill/R50x1_160.npz"
    assert m["labels"]["embedded"] and m["labels"]["count"] == 1000
    assert (path / m["labels"]["path"]).read_text().splitlines()[0] == "tench, Tinca tinca"
    assert m["checkpoint"]["sha256"] == sha(Path(r50x1_npz))
    assert m["checkpoint"]["origin"] == "--checkpoint"
    assert m["checkpoint"]["parameters"] == entry.params
    assert m["input"]["range"] == "unit" and (m["input"]["min"], m["input"]["max"]) == (0.0, 1.0)
    assert set(m["versions"]) >= {"bitconvert", "python", "tensorflow", "jax", "flax", "numpy"}
    assert all(m["versions"][k] for k in ("tensorflow", "jax", "flax", "numpy"))

    parity = m["parity"]
    assert parity["checked"] and parity["resolution"] == PARITY_PX
    before = parity["before_export"]
    assert before["summary"]["passed"] and {"logits", "pre_logits", "stem"} <= set(before)
    assert m["format"] == "bitconvert-export/2" and list(m["targets"]) == ["savedmodel"]
    for variant, stage in (("classification", "logits"), ("feature_extraction", "pre_logits")):
        (run,) = savedmodel_entry(m, variant)["parity"].values()
        after = run["report"]
        assert after["summary"]["passed"] and set(after) == {stage, "summary"}
        # The reloaded artifact is judged against the tolerance, like the live graph: its error may differ
        # from the live graph's by the CPU's rounding (3.3e-5 against 2.2e-5 on an AVX2-only CPU).
        assert 0 < after[stage]["tf_rel_l2_f64"] <= parity["tolerance"]
        assert 0 < before[stage]["tf_rel_l2_f64"] <= parity["tolerance"]
        # The reference is float64 only: no float32 columns, absolute error against float64.
        assert after[stage]["max_abs"] is None and after[stage]["max_abs_f64"] > 0

    import tensorflow as tf

    widths = {"classification": 1000, "feature_extraction": 2048}
    for v in VARIANTS:
        entry = savedmodel_entry(m, v)
        info = entry["facts"]
        assert (entry["path"], entry["card"], list(entry["parity"])) == (v, f"{v}.md", ["tensorflow"])
        assert info["output_shape"] == [None, widths[v]]
        fp = tf.saved_model.experimental.read_fingerprint(str(path / v))
        assert info["fingerprint"]["singleprint"] == fp.singleprint()
        assert info["fingerprint"]["sha256"] == model_files(path / v) == entry["sha256"]
        assert info["archive"]["sha256"] == sha(path / info["archive"]["file"])
    assert savedmodel_entry(m, "classification")["facts"]["variables"] == N_CLASSIFIER
    assert savedmodel_entry(m, "feature_extraction")["facts"]["variables"] == N_FEATURES


# -- loading: the Reusable SavedModel API and the image conventions ----------------------------


def test_saved_model_load_any_batch_and_size(loaded):
    import tensorflow as tf

    clf, fe = loaded["classification"], loaded["feature_extraction"]
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


def test_signature_and_call_agree(loaded, images):
    import tensorflow as tf

    clf = loaded["classification"]
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


def test_no_entry_point_is_xla_compiled_and_training_runs_the_same_graph(exported, loaded, images):
    """__call__ (either value of training) and serving_default run the plain graph: no loader compiles
    anything at a new input shape, and training=True computes what inference does."""
    path, _ = exported
    for variant in VARIANTS:
        reached = _compiled_functions_reached(path / variant)
        assert reached == {"__call__(training=False)": [], "__call__(training=True)": [], "serving_default": []}
    clf = loaded["classification"]
    inference, training = clf(images).numpy(), clf(images, training=True).numpy()
    np.testing.assert_allclose(inference, training, rtol=1e-6, atol=1e-6 * np.abs(training).max())


def test_unit_and_symmetric_ranges_agree(loaded, loaded_symmetric, symmetric_export, images):
    """[0, 1] inputs to the default export == the same pixels as [-1, 1] to --input-range symmetric."""
    for variant in VARIANTS:
        unit = loaded[variant](images).numpy()
        sym = loaded_symmetric[variant](images * 2.0 - 1.0).numpy()
        np.testing.assert_allclose(unit, sym, rtol=1e-4, atol=1e-4 * np.abs(sym).max())
        # and the range really matters: feeding [0, 1] to the symmetric model is different
        wrong = loaded_symmetric[variant](images).numpy()
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
    key = sys.argv[2]
    before = backbone[key].numpy().copy()
    rng = np.random.default_rng(0)
    model.fit(rng.uniform(0, 1, (4, 48, 48, 3)).astype("float32"), np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    print(len(layer.trainable_weights), float(np.abs(backbone[key].numpy() - before).max()))
    """
)


def test_tensorflow_lite_s_own_converter_takes_the_savedmodel(tiny_export):
    """A user's ``TFLiteConverter.from_saved_model`` on the exported classifier (not bitconvert's LiteRT target)
    converts it, and the LiteRT file computes what the SavedModel does. A SavedModel whose network is a
    ``_noinline`` function (session 14's Grappler lead, docs/inference.md) fails here: "unsupported
    StatefulPartitionedCallOp"."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    path = tiny_export.path / savedmodel_entry(tiny_export.manifest, "classification")["path"]
    blob = tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
    x = np.random.default_rng(5).uniform(0.0, 1.0, (2, 40, 56, 3)).astype(np.float32)
    interpreter = Interpreter(model_content=blob)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    want = tf.saved_model.load(str(path))(tf.constant(x)).numpy()
    got = interpreter.get_tensor(out["index"])
    assert np.linalg.norm(got - want) <= tolerance(TINY) * np.linalg.norm(want)


def test_hub_keraslayer_fine_tunes_the_backbone(tiny_export, tmp_path):
    """hub.KerasLayer(trainable=True) in a tf-keras model: every backbone weight is trainable and one training step
    moves the last unit's kernel. On the tiny layout's SavedModel: the same graph and signatures as R50x1's, written
    by the same code, at a fraction of the full layout's cost (docs/performance.md, "The suite's time")."""
    path = tiny_export.path / savedmodel_entry(tiny_export.manifest, "feature_extraction")["path"]
    script = tmp_path / "hub_step.py"
    script.write_text(HUB_SCRIPT)
    env = {**ENV, "TF_USE_LEGACY_KERAS": "1"}
    last = f"resnet/block4/unit{TINY.units[-1]:02d}/c/standardized_conv2d/kernel:0"
    proc = subprocess.run([sys.executable, str(script), str(path), last], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n, change = proc.stdout.split()
    assert int(n) == len(checkpoint_layout(TINY)) - 2  # all but the head's kernel and bias
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


def test_archive_extracts_to_the_same_working_savedmodel(exported, loaded, tmp_path, images):
    import tensorflow as tf

    path, _ = exported
    entry = load_registry().get(MODEL)
    archive = path / archive_name(entry, "classification")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == archive_members(path / "classification")
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in members)
        tar.extractall(tmp_path / "x", filter="data")
    assert model_files(tmp_path / "x") == model_files(path / "classification")
    np.testing.assert_array_equal(
        tf.saved_model.load(str(tmp_path / "x"))(images).numpy(),
        loaded["classification"](images).numpy(),
    )


# -- reproducibility --------------------------------------------------------------------------


def _run_side_by_side(logs: Path, *argvs: list[str], env: dict = ENV) -> None:
    """Run each command in a fresh process of its own, all at once (the two cores), and check that each succeeded.

    Their stderr goes to files under ``logs`` (a pipe nobody reads yet could stall one of them)."""
    procs = []
    try:
        for i, argv in enumerate(argvs):
            with open(logs / f"stderr-{i}.txt", "w") as err:
                procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env))
        for i, proc in enumerate(procs):
            proc.wait(timeout=600)
            assert proc.returncode == 0, (logs / f"stderr-{i}.txt").read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_reexport_in_fresh_processes_is_byte_identical_with_or_without_keras(tmp_path, tiny_npz):
    """Two exports of the same checkpoint, each in a fresh process, write the same SavedModel and archive
    bytes and the same manifest, although the second also writes the Keras target: building a Keras model
    on the TensorFlow backend advances TF's process-wide name counter, which the SavedModels' function
    names use (so the Keras target writes after them). One pair of exports proves both: a re-export that
    is not reproducible, or a Keras target that moves the SavedModels' names, makes the two differ.
    The tiny layout as a registry entry of its own (a collection model's code, big_vision): the same
    code path as R50x1's at a fraction of the cost."""
    model = "tiny-bit"
    registry = tiny_registry(tmp_path / "registry.yaml", model, "tiny.npz", code="big_vision")
    outs = {formats: tmp_path / formats.replace(",", "-") for formats in ("savedmodel", "savedmodel,keras")}
    common = ("--model", model, "--checkpoint", tiny_npz, "--archive", "--parity-resolution", 48)
    argvs = (cli("export", *common, "-o", out, "--format", formats) for formats, out in outs.items())
    _run_side_by_side(tmp_path, *argvs, env={**ENV, "BITCONVERT_REGISTRY": str(registry)})
    a, b = (out / model for out in outs.values())
    assert (b / "keras" / "classification.keras").is_file() and not (a / "keras").exists()
    for v in VARIANTS:
        assert model_files(a / v) == model_files(b / v)
        assert (a / v / "fingerprint.pb").read_bytes() != (b / v / "fingerprint.pb").read_bytes()  # random UUID by design
        name = archive_name(load_registry(registry).get(model), v)
        assert (a / name).read_bytes() == (b / name).read_bytes()
    ma, mb = (json.loads((p / "manifest.json").read_text()) for p in (a, b))
    assert set(mb["targets"]) - set(ma["targets"]) == {"keras"}
    del mb["targets"]["keras"]
    for m in (ma, mb):  # how long each reload took: the one thing that may differ
        for entry in m["targets"]["savedmodel"]:
            assert entry["parity"]["tensorflow"].pop("seconds") > 0
    assert ma == mb  # no timestamps, same figures, same singleprints


def test_writing_traces_the_network_once_for_both_variants(tmp_path, tiny_npz, monkeypatch):
    """Writing traces the network once: the classifier calls the feature extractor's function and adds the head."""
    from convert.checkpoint import load_checkpoint
    from convert.export import ExportJob
    from convert.export.savedmodel import TARGET
    from convert.model.tf_model import BiTResNetV2, build_tf_model

    net = build_tf_model(load_checkpoint(tiny_npz, TINY))
    traces = []
    for name, logits in (("__call__", True), ("features", False)):  # what could trace the network
        real = getattr(BiTResNetV2, name)
        wrapper = lambda self, images, real=real, logits=logits: traces.append(logits) or real(self, images)  # noqa: E731
        monkeypatch.setattr(BiTResNetV2, name, wrapper)
    job = ExportJob(MODEL, load_registry().get(MODEL), TINY, net, "unit", tmp_path, lambda msg: None)
    artifacts = TARGET.write(job)
    assert traces == [False]  # the feature extractor's graph, which the classifier calls
    assert [(a.variant, a.path) for a in artifacts] == [(v, v) for v in VARIANTS]
