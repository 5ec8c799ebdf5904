"""Shared fixtures: a CliRunner, synthetic checkpoints in the official layout."""

from __future__ import annotations

import fcntl
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from convert.model.architecture import Architecture, parameter_count
from convert.model.numerics import GN_EPS, GN_GROUPS
from convert.synthetic import write_synthetic_checkpoint

#: A reduced block layout for fast end-to-end tests (depth 14, width 1).
TINY = Architecture((1, 1, 1, 1), width=1, classes=10)
R50X1 = Architecture.from_depth(50, 1, 1000)
R152X2 = Architecture.from_depth(152, 2, 1000)
R152X4 = Architecture.from_depth(152, 4, 1000)


def group_norm_case(seed: int = 5):
    """(x, gamma, beta): NHWC activations of 4 channels a group whose group means are 100x their spread."""
    rng = np.random.default_rng(seed)
    channels = 4 * GN_GROUPS
    x = (rng.normal(0.0, 1.0, (2, 9, 7, channels)) + rng.normal(0.0, 1.0, channels) + 100.0).astype(np.float32)
    return x, rng.normal(1.0, 0.2, channels), rng.normal(0.0, 0.2, channels)


def grouped_norm_f64(x, gamma, beta, consecutive: bool = True):
    """The literal grouped group norm of NHWC ``x`` in float64: groups of consecutive channels (the
    reference's), or with ``consecutive=False`` every GN_GROUPS-th channel pooled (a wrong grouping)."""
    n, h, w, c = x.shape
    view = (n, h, w, GN_GROUPS, c // GN_GROUPS) if consecutive else (n, h, w, c // GN_GROUPS, GN_GROUPS)
    axes = (1, 2, 4) if consecutive else (1, 2, 3)  # all but N and the group axis
    g = x.astype(np.float64).reshape(view)
    g = (g - g.mean(axis=axes, keepdims=True)) / np.sqrt(g.var(axis=axes, keepdims=True) + GN_EPS)
    return g.reshape(x.shape) * gamma + beta


def tiny_registry(path: Path, model_id: str, source: str, code: str = "big_transfer") -> Path:
    """A registry file holding one entry of the TINY layout (``depth`` as its units per block), for CLI subprocesses
    (``BITCONVERT_REGISTRY``): they exercise the whole command on a model a few times cheaper than R50x1."""
    path.write_text(
        f"models:\n  {model_id}:\n    source: {source}\n    depth: {list(TINY.units)}\n    width: {TINY.width}\n"
        f"    classes: {TINY.classes}\n    resolution: 64\n    params: {parameter_count(TINY)}\n"
        f"    dataset: synthetic\n    description: a {TINY.classes}-class {TINY.name}\n    code: {code}\n"
    )
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run the CLI in-process: ``invoke("list", "--json")`` -> click Result."""
    from convert.cli import cli

    def _invoke(*args, **kwargs):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return _invoke


def once_per_run(tmp_path_factory, name: str, make: Callable[[], object]) -> object:
    """``make()``, computed once for the whole test run: by the first pytest-xdist worker that asks, read back by the other.

    A session fixture is computed once per worker process, and the same export written twice costs
    a minute of the run. The result (pickled, in the run's shared temporary directory) must name
    files the asking tests only read, and hold no facts of the worker that made it (its loopback
    bucket's port, its environment) unless it says so: the asking test may run on the other worker.
    Without xdist, ``make()``."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return make()
    shared = tmp_path_factory.getbasetemp().parent  # every worker's basetemp is a directory in it
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here while the first one computes
        done = shared / f"{name}.pickle"
        if done.is_file():
            return pickle.loads(done.read_bytes())
        value = make()
        done.write_bytes(pickle.dumps(value))  # under the lock: nobody reads it half-written
        return value


@pytest.fixture
def output_side_unstandardised(monkeypatch):
    """A fault that only the SavedModels' form of the TF graph holds (``BiTResNetV2.as_saved``):
    block 4's output-side weight standardisation convolves with the raw kernel instead."""
    import convert.model.tf_model as tf_model

    def unstandardised(x, kernel, strides):
        return tf_model.tf.nn.conv2d(x, kernel, strides, "VALID")

    monkeypatch.setattr(tf_model, "conv_standardising_output", unstandardised)


@pytest.fixture(scope="session")
def r50x1_npz(tmp_path_factory):
    """A full-size synthetic R50x1 checkpoint (1000 classes), written once per session."""
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "R50x1.npz", R50X1, seed=1)


@pytest.fixture(scope="session")
def r152x2_npz(tmp_path_factory):
    """A full-size synthetic R152x2 checkpoint (0.95 GB), written once per session."""
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "R152x2.npz", R152X2, seed=2)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.npz", TINY, seed=3)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, r50x1_npz):
    """`bitconvert export --model r50x1-160 --archive` of the full R50x1 layout, in-process, once per run
    (parity at 64 px: a cheap reference); the SavedModel and card tests read it. (path, the run's stdout, stderr
    and the loopback bucket it used: each xdist worker serves its own, and the other worker may have exported it)."""

    def make():
        from convert.cli import cli

        out = tmp_path_factory.mktemp("exports")
        argv = ["export", "--model", "r50x1-160", "--checkpoint", str(r50x1_npz), "--output-dir", str(out), "--archive"]
        result = CliRunner().invoke(cli, [*argv, "--parity-resolution", "64"], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        bucket = os.environ["BITCONVERT_BASE_URL"]
        return out / "r50x1-160", SimpleNamespace(stdout=result.stdout, stderr=result.stderr, base_url=bucket)

    return once_per_run(tmp_path_factory, "exported", make)


#: Every export format, and the class names the tiny classifier is exported with.
ALL_FORMATS = ("savedmodel", "keras", "tflite", "onnx")
TINY_LABELS = tuple(f"class {i}" for i in range(TINY.classes))
#: The parity image size of the tiny exports: even, so that the SAME-padding mutation shifts the grid.
TINY_PX = 48


@pytest.fixture(scope="session")
def tiny_export(tiny_npz, tmp_path_factory):
    """The tiny layout exported once per run in every format through export_model, with labels and Kaggle metadata.

    Published under ``<root>/exports/r50x1-160`` so that the cards' usage code
    (which names ``exports/<id>/...``) runs from ``<root>``.
    """
    from convert.export import ExportOptions, export_model
    from convert.registry import load_registry

    def make():
        out = tmp_path_factory.mktemp("every-format") / "exports"
        entry = load_registry().get("r50x1-160")
        options = ExportOptions(output_dir=out, formats=ALL_FORMATS, parity_resolution=TINY_PX, kaggle="someone/bit-tiny")
        return export_model(entry, tiny_npz, options, arch=TINY, labels=TINY_LABELS)

    return once_per_run(tmp_path_factory, "tiny_export", make)


# --- the downloader tests: a test object served by a loopback mirror -------------------------
# Each fetch test module defines its own ``bucket`` fixture (the directory served).


@pytest.fixture
def mirror(bucket):
    from convert.testing.mirror import serve_directory

    with serve_directory(bucket) as server:
        yield server


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def target(cache):
    from fetch_support import SOURCE

    return cache / SOURCE


# --- no test reaches the real bucket ----------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def loopback_bucket(tmp_path_factory):
    """The default bucket of every test: a loopback mirror holding the ILSVRC-2012 label file.

    An export fetches its labels from the bucket even with --checkpoint; without
    this, a test that gives no --base-url would try the real bucket. The cache
    is a session directory, never the user's. Tests that pass --base-url or
    --cache-dir (the downloader's) are unaffected.
    """
    from convert.testing.mirror import label_bucket

    bucket = tmp_path_factory.mktemp("default-bucket")
    with label_bucket(bucket) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv("BITCONVERT_BASE_URL", server.base_url)
        mp.setenv("BITCONVERT_CACHE", str(tmp_path_factory.mktemp("default-cache")))
        yield server


@pytest.fixture
def bucket(tmp_path, payload) -> Path:
    """A loopback bucket directory holding ``payload`` (each downloader test module says what it is) at SOURCE."""
    from fetch_support import SOURCE

    root = tmp_path / "bucket"
    (root / "distill").mkdir(parents=True)
    (root / SOURCE).write_bytes(payload)
    return root


@pytest.fixture
def sleeps() -> list[float]:
    """Where an injected RetryPolicy records its sleeps instead of sleeping."""
    return []
