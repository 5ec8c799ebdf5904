"""Child process of the Keras export check: ``KERAS_BACKEND=<b> python -m convert.keras_check WORKDIR``.

Does what a user does, and nothing more: imports keras and
:mod:`convert.keras_layers`, loads each ``.keras`` file with
``keras.saving.load_model`` (``safe_mode`` on), runs it on the images and
saves the outputs. ``WORKDIR/spec.json`` names the models and the images
(.npy, already in the export's input range); results go to
``WORKDIR/<i>.npy`` and ``WORKDIR/result.json``. A failure writes
``WORKDIR/error.json`` ({"model", "step", "message"}) and exits 1.

Images run ``"batch"`` at a time (all at once without it). With ``"repeat": n``
each model also runs n more times on the whole batch and the fastest run is
reported (the benchmark's warm timings).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


def main(workdir: str) -> int:
    work = Path(workdir)
    spec = json.loads((work / "spec.json").read_text())
    step, model_path = "import keras", None
    try:
        t = time.perf_counter()
        import keras
        import numpy as np

        import convert.keras_layers  # noqa: F401  (registers the custom layers)

        result = {"backend": keras.backend.backend(), "keras": keras.__version__, "import_s": time.perf_counter() - t}
        result["backend_version"] = _backend_version(result["backend"])
        step = "read the images"
        images = np.load(work / spec["images"])
        models = []
        for i, model_path in enumerate(spec["models"]):
            step = "load"
            t = time.perf_counter()
            model = keras.saving.load_model(model_path)
            loaded = time.perf_counter() - t
            step = "run"
            t = time.perf_counter()
            out = _predict(keras, model, images, int(spec.get("batch") or len(images)))
            first = time.perf_counter() - t
            best = None
            for _ in range(int(spec.get("repeat", 0))):
                t = time.perf_counter()
                model.predict_on_batch(images)
                best = min(best or float("inf"), time.perf_counter() - t)
            np.save(work / f"{i}.npy", out)
            models.append({"path": model_path, "load_s": loaded, "run_s": first, "best_run_s": best})
            del model, out
            gc.collect()  # the loaded model sits in reference cycles: free it before the next one loads
        result["models"] = models
        (work / "result.json").write_text(json.dumps(result))
        return 0
    except Exception as exc:  # reported to the parent as one line
        error = {"model": model_path, "step": step, "message": _one_line(exc)}
        (work / "error.json").write_text(json.dumps(error))
        return 1


def _predict(keras, model, images, batch: int):
    """``predict_on_batch`` on ``batch`` images at a time, outputs concatenated (float32 numpy).

    Small batches because Keras' functional model keeps every intermediate output
    until the call returns when it runs eagerly (the torch backend): R152x2 on 6
    images at 224 peaked at 6.2 GB, one image at a time at 2.9 GB.
    """
    import numpy as np

    parts = [keras.ops.convert_to_numpy(model.predict_on_batch(images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float32)


def _backend_version(backend: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(backend)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
