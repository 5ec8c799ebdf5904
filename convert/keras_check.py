"""Child process of the Keras export check: ``KERAS_BACKEND=<b> python -m convert.keras_check WORKDIR``.

Does what a user does, and nothing more: imports keras and
:mod:`convert.keras_layers`, loads each ``.keras`` file with
``keras.saving.load_model`` (``safe_mode`` on), runs it on the images and
saves the outputs. ``WORKDIR/spec.json`` names the models and the images
(.npy, already in the export's input range); results go to
``WORKDIR/<i>.npy`` and ``WORKDIR/result.json``. A failure writes
``WORKDIR/error.json`` ({"model", "step", "message"}) and exits 1.

With ``"repeat": n`` in the spec each model also runs n more times on the
same batch and the fastest run is reported (the benchmark's warm timings).
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
            out = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(images)), dtype=np.float32)
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


def _backend_version(backend: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(backend)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
