"""The ``keras`` export target: native Keras 3 ``.keras`` files, checked on every installed backend.

``write`` builds the BiT model of :mod:`convert.keras_model` from the job's
weights (through the mapping rows, both sides checked first) and saves
``keras/classification.keras`` and ``keras/feature_extraction.keras``. The two
models share one set of layers, so the weights exist once more in memory, not twice.

``check`` reloads them as a user would: in a fresh process per backend
(``KERAS_BACKEND=jax|tensorflow|torch python -m convert.keras_check``, which
imports keras and :mod:`convert.keras_layers` only and calls
``keras.saving.load_model`` with ``safe_mode`` on), each process loading both
files and running them on the parity images. The processes start at once, at
most :meth:`KerasTarget.parallel_for` at a time. A backend that is not
installed is skipped and named with what to install; one that fails to load
or run a model is a :class:`KerasBackendError` naming it.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ExportError, LocalIOError
from ..model_card import INPUT_RANGES
from .target import VARIANTS, Artifact, ExportJob, Run

#: Every Keras 3 backend the export is checked on, in check order.
BACKENDS = ("jax", "tensorflow", "torch")
#: The module whose presence makes a backend usable.
BACKEND_MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
#: How to install a missing backend (setup.cfg extras; jax and TensorFlow are core dependencies).
INSTALL_HINTS = {"jax": "pip install .", "tensorflow": "pip install .", "torch": "pip install .[keras-torch]"}
#: Images per predict_on_batch call in the check (see convert.keras_check._predict: on the
#: torch backend a call holds every intermediate output of all its images).
CHECK_BATCH = 1
#: Directory of the artifacts inside the export.
SUBDIR = "keras"
#: Memory of one checking process: a fixed part (Python, keras, the backend) plus
#: this many bytes per byte of weights (the loaded model and the backend's working copies).
#: Measured peak RSS, R50x1 (0.1 GB of weights), both models, 6 images at 160: jax 0.92 GB,
#: tensorflow 1.27 GB, torch 1.71 GB (torch loads its CUDA libraries even on CPU).
CHILD_FIXED_BYTES = 1.5e9
CHILD_BYTES_PER_WEIGHT_BYTE = 2.5
#: What the checking processes may hold together (and never more than MemAvailable):
#: R50x1 two at a time, R152x2 (0.95 GB) one at a time.
CHILDREN_MEMORY_BUDGET = 4.0e9


class KerasBackendError(ExportError):
    """A Keras backend could not load or run an exported model (exit status 1, like every export failure)."""


def runtime_name(backend: str) -> str:
    return f"keras-{backend}"


def installed(backend: str) -> bool:
    """Whether ``backend``'s package is importable here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(BACKEND_MODULES[backend]) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


class BackendRuns:
    """The checking processes of one export: one per backend, started now, at most ``parallel`` at a time.

    :meth:`wait` returns {backend: (outputs per model, the child's result.json)}
    or raises :class:`KerasBackendError` for the first backend (in ``backends``
    order) that failed, after stopping the others. Scratch files live in a
    temporary directory removed by :meth:`wait` or, if it is never called,
    when this object is collected.
    """

    def __init__(
        self,
        paths,
        images: np.ndarray,
        backends,
        *,
        parallel: int,
        python: str = sys.executable,
        repeat: int = 0,
        threads: int | None = None,
        batch: int | None = CHECK_BATCH,
    ):
        from ..resources import usable_cpus

        self.paths, self.backends, self.batch = [str(p) for p in paths], tuple(backends), batch
        # Threads per process, so that the processes running at once do not oversubscribe
        # the CPUs: torch's OpenMP threads spin while they wait, and with two 2-thread
        # processes on 2 busy cores R50x1 at 224 ran 10x slower (0.73 s -> 8-11 s).
        self.threads = threads or max(1, usable_cpus() // max(1, parallel))
        self._scratch = Path(tempfile.mkdtemp(prefix="bitconvert-keras-check-"))
        self._procs: list[subprocess.Popen] = []
        self._stopped = False
        self._results = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self._scratch)
        np.save(self._scratch / "images.npy", np.asarray(images, np.float32))
        self._pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="keras-check")
        self._futures = {b: self._pool.submit(self._run, b, python, repeat) for b in self.backends}
        self._pool.shutdown(wait=False)

    def _run(self, backend: str, python: str, repeat: int) -> int:
        work = self._scratch / backend
        work.mkdir()
        spec = {"images": "../images.npy", "models": self.paths, "repeat": repeat, "batch": self.batch}
        (work / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env.setdefault(var, str(self.threads))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        with open(work / "stderr.txt", "wb") as err, self._lock:
            if self._stopped:
                return -1
            proc = subprocess.Popen(
                [python, "-m", "convert.keras_check", str(work)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env
            )
            self._procs.append(proc)
        return proc.wait()

    def _collect(self, backend: str) -> tuple[list[np.ndarray], dict]:
        rc = self._futures[backend].result()
        work = self._scratch / backend
        if (work / "error.json").exists():
            e = json.loads((work / "error.json").read_text())
            what = f"{Path(e['model']).name}: " if e.get("model") else ""
            raise KerasBackendError(f"the Keras {backend} backend failed to {e['step']} {what}{e['message']}")
        if rc != 0 or not (work / "result.json").exists():
            tail = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise KerasBackendError(f"the Keras {backend} backend's check process died (exit {rc}): {tail[0][:300]}")
        outputs = [np.load(work / f"{i}.npy") for i in range(len(self.paths))]
        return outputs, json.loads((work / "result.json").read_text())

    def wait(self) -> dict[str, tuple[list[np.ndarray], dict]]:
        if self._results is None:
            try:
                self._results = {b: self._collect(b) for b in self.backends}
            finally:
                self.stop()
        return self._results

    def stop(self) -> None:
        """Stop every process still running and remove the scratch directory."""
        with self._lock:
            self._stopped = True
        self._finalizer()


def _cleanup(procs: list, scratch: Path) -> None:
    for proc in list(procs):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class KerasTarget:
    """The ``keras`` target. Everything it depends on is a field, so tests inject what they need.

    ``backends``: which to check; ``is_installed``: the availability probe;
    ``parallel``: at most this many checking processes at once (None: from
    the CPUs and the memory each needs); ``build_options``: the mutation knobs
    of :func:`convert.keras_model.build_keras_models` (tests only).
    """

    name: str = "keras"
    summary: str = "Keras 3 .keras files (classifier and feature extractor), checked on the jax, tensorflow and torch backends"
    backends: tuple[str, ...] = BACKENDS
    is_installed: Callable[[str], bool] = installed
    parallel: int | None = None
    build_options: Mapping = field(default_factory=dict)
    python: str = sys.executable

    def write(self, job: ExportJob) -> list[Artifact]:
        import keras

        from ..keras_model import build_keras_models

        t = time.perf_counter()
        arrays = job.arrays()
        models = build_keras_models(job.arch, arrays, input_range=INPUT_RANGES[job.input_range], **dict(self.build_options))
        del arrays
        out = job.export_dir / SUBDIR
        artifacts = []
        try:
            out.mkdir(parents=True, exist_ok=True)
            for variant, model in zip(VARIANTS, models, strict=True):
                rel = f"{SUBDIR}/{variant}.keras"
                model.save(job.export_dir / rel)
                facts = {
                    "keras": keras.__version__,
                    "written_on_backend": keras.backend.backend(),
                    "parameters": int(model.count_params()),
                    "weights": len(model.weights),
                    "trainable_weights": len(model.trainable_weights),
                    "custom_layers": "convert.keras_layers",
                }
                artifacts.append(Artifact(self.name, variant, rel, facts))
        except OSError as exc:
            raise LocalIOError(f"cannot write the Keras models of {job.model_id} under {out}: {exc.strerror or exc}") from exc
        finally:
            del models
            gc.collect()
        job.log(f"{job.model_id}: wrote the Keras models in {time.perf_counter() - t:.1f}s")
        return artifacts

    def available(self, log=None) -> tuple[str, ...]:
        """The backends to check; each missing one is logged with how to install it."""
        chosen = tuple(b for b in self.backends if self.is_installed(b))
        for b in self.backends:
            if b not in chosen and log is not None:
                log(f"keras: the {b} backend is not installed, not checked (install it: {INSTALL_HINTS[b]})")
        if not chosen:
            hints = "; ".join(f"{b}: {INSTALL_HINTS[b]}" for b in self.backends)
            raise KerasBackendError(f"no Keras backend to check the export on is installed ({hints})")
        return chosen

    def parallel_for(self, weight_bytes: int, backends: int) -> int:
        """How many checking processes run at once: bounded by the backends, the CPUs and the memory each needs."""
        if self.parallel is not None:
            return max(1, self.parallel)
        from ..resources import available_memory, usable_cpus

        per_child = CHILD_FIXED_BYTES + CHILD_BYTES_PER_WEIGHT_BYTE * weight_bytes
        budget = min(CHILDREN_MEMORY_BUDGET, available_memory() or CHILDREN_MEMORY_BUDGET)
        return max(1, min(backends, usable_cpus(), int(budget // per_child)))

    def check(self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray) -> Callable[[], list[Run]]:
        from ..architecture import parameter_count

        backends = self.available(job.log)
        parallel = self.parallel_for(parameter_count(job.arch) * 4, len(backends))
        t0 = time.perf_counter()
        runs = BackendRuns([job.export_dir / a.path for a in artifacts], images, backends, parallel=parallel, python=self.python)
        job.log(f"{job.model_id}: checking the Keras models on {', '.join(backends)} ({parallel} at a time)")

        def wait() -> list[Run]:
            results = runs.wait()
            job.log(
                f"{job.model_id}: Keras models reloaded and run on {len(results)} backends in {time.perf_counter() - t0:.1f}s"
            )
            out = []
            for backend, (outputs, info) in results.items():
                for artifact, result, m in zip(artifacts, outputs, info["models"], strict=True):
                    facts = {
                        "backend": backend,
                        "backend_version": info["backend_version"],
                        "keras": info["keras"],
                        "safe_mode": True,
                        "import_s": round(info["import_s"], 3),
                        "load_s": round(m["load_s"], 3),
                        "run_s": round(m["run_s"], 3),
                    }
                    out.append(Run(artifact, runtime_name(backend), result, m["load_s"] + m["run_s"], facts))
            return out

        return wait

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str:
        from .keras_card import render_keras_card

        return render_keras_card(job, artifact, figures, BACKENDS, INSTALL_HINTS, self.is_installed)


TARGET = KerasTarget()
