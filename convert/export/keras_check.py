"""Child process of the Keras export check: ``KERAS_BACKEND=<b> python -m convert.export.keras_check WORKDIR``.

Does what a user does, and nothing more: imports keras (on torch and TensorFlow without JAX,
which Keras imports when installed for a callback the check does not use) and
:mod:`convert.model.keras_layers`, loads each ``.keras`` file with
``keras.saving.load_model`` (``safe_mode`` on), runs it on the images and
saves the outputs. The imports come first; then the process reads its spec, one
JSON object on one line, from standard input, so that the parent can start it before the
files exist (it imports while the export writes). The parent keeps standard input
open until the process ends: end-of-file after the spec means the parent is
gone (killed), and the process removes the check's scratch directory and exits. The spec names the models,
the images (.npy, relative to WORKDIR, already in the export's input range),
``"batch"``, the images per call (all at once without it), and ``"collect"``,
whether to collect garbage after each model (default yes). Standard input
closed without a spec means the export was abandoned: the process exits 0.
Results go to ``WORKDIR/<i>.npy`` and ``WORKDIR/result.json``. A failure
writes ``WORKDIR/error.json`` ({"model", "step", "message"}) and exits 1.

With ``"repeat": n`` each model also runs n more times on the whole batch
through ``predict_on_batch`` and the fastest run is reported (the benchmark's
warm timings).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


def _import_keras(backend: str | None):
    """keras, as a user imports it; on torch and TensorFlow without JAX, which only Keras's Orbax callback would use."""
    if backend in ("tensorflow", "torch"):  # set by the parent (a keras.json could name jax otherwise)
        from convert.imports import import_without

        return import_without("keras")
    import keras

    return keras


def main(workdir: str) -> int:
    work = Path(workdir)
    step, model_path = "import keras", None
    try:
        t = time.perf_counter()
        keras = _import_keras(os.environ.get("KERAS_BACKEND"))
        import numpy as np

        import convert.model.keras_layers  # noqa: F401  (registers the custom layers)

        result = {"backend": keras.backend.backend(), "keras": keras.__version__, "import_s": time.perf_counter() - t}
        result["backend_version"] = backend_version(result["backend"])
        result["xla_flags"] = os.environ.get("XLA_FLAGS") if result["backend"] == "jax" else None
        text = sys.stdin.readline()
        if not text.strip():
            return 0  # abandoned before the models were written
        spec = json.loads(text)
        threading.Thread(target=_exit_when_parent_leaves, args=(work,), name="parent-watch", daemon=True).start()
        step = "read the images"
        images = np.load(work / spec["images"])
        outputs, models = run_models(
            keras, spec["models"], images, spec.get("batch"), spec.get("repeat", 0), spec.get("collect", True)
        )
        for i, out in enumerate(outputs):
            np.save(work / f"{i}.npy", out)
        result["models"] = models
        result["cpu_s"] = _cpu_seconds()
        (work / "result.json").write_text(json.dumps(result))
        return 0
    except ModelError as exc:  # reported to the parent as one line
        error = {"model": exc.model, "step": exc.step, "message": one_line(exc.__cause__)}
        (work / "error.json").write_text(json.dumps(error))
        return 1
    except Exception as exc:  # reported to the parent as one line
        error = {"model": model_path, "step": step, "message": one_line(exc)}
        (work / "error.json").write_text(json.dumps(error))
        return 1


class ModelError(Exception):
    """A model failed to load or run: ``step`` ("load", "run") and ``model`` (its path) say where; the cause is chained."""

    def __init__(self, step: str, model: str):
        super().__init__(f"{step} {model}")
        self.step, self.model = step, model


def run_models(keras, paths, images, batch: int | None = None, repeat: int = 0, collect: bool = True):
    """Load each of ``paths`` with ``keras.saving.load_model`` and run it on ``images``, ``batch`` at a time.

    Returns (outputs per model, {"path", "load_s", "run_s", "best_run_s"} per model);
    raises :class:`ModelError` (its cause chained) when a model fails to load or run.
    Used by the check process and, for its own backend, by the export itself (convert.export.keras).
    """
    outputs, models = [], []
    for model_path in paths:
        step = "load"
        try:
            t = time.perf_counter()
            model = keras.saving.load_model(model_path)
            loaded = time.perf_counter() - t
            step = "run"
            t = time.perf_counter()
            out = _predict(keras, model, images, int(batch or len(images)))
            first = time.perf_counter() - t
            best = None
            for _ in range(int(repeat)):
                t = time.perf_counter()
                model.predict_on_batch(images)
                best = min(best or float("inf"), time.perf_counter() - t)
        except Exception as exc:
            raise ModelError(step, str(model_path)) from exc
        outputs.append(out)
        models.append({"path": str(model_path), "load_s": loaded, "run_s": first, "best_run_s": best})
        del model, out
        if collect:
            gc.collect()  # the loaded model sits in reference cycles: free it before the next one loads
    return outputs, models


#: The scratch directory of one check (convert.export.keras.BackendRuns); each process works in a sub-directory.
SCRATCH_PREFIX = "bitconvert-keras-check-"


def _exit_when_parent_leaves(work: Path) -> None:
    """In a thread: at end-of-file on standard input the parent is gone: remove its scratch directory, end the process."""
    import shutil

    with contextlib.suppress(OSError, ValueError):
        while os.read(0, 4096):  # the raw descriptor: a buffered reader's lock would stop the interpreter's exit
            pass
    scratch = work.parent if work.parent.name.startswith(SCRATCH_PREFIX) else work
    shutil.rmtree(scratch, ignore_errors=True)
    os._exit(3)


def _predict(keras, model, images, batch: int):
    """The model on ``batch`` images at a time, outputs concatenated (float32 numpy).

    How each backend is called, both ways a user runs a Keras model:

    - tensorflow: ``model(x, training=False)``, eagerly; ``predict_on_batch``
      would first trace a ``tf.function`` (docs/performance.md);
    - jax: ``predict_on_batch``, one jit-compiled call; eagerly, JAX compiles
      every operation of every new shape on its own, which is slower;
    - torch: ``predict_on_batch``, eager and without autograd's records.

    Eager calls of a functional model keep every layer's output until they
    return, so the parent sizes ``batch`` by the activations of one image
    (convert.model.keras_model.layer_output_elements).
    """
    import numpy as np

    if keras.backend.backend() == "tensorflow":

        def call(x):
            return model(x, training=False)

    else:
        call = model.predict_on_batch
    parts = [keras.ops.convert_to_numpy(call(images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float32)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def backend_version(backend: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(backend)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    status = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    # Every result file is written and closed: skip the interpreter's teardown of the
    # backend, which costs the export up to a second of CPU per process.
    os._exit(status)
