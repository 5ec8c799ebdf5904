"""The ``keras`` export target: native Keras 3 ``.keras`` files, checked on every installed backend.

``write`` builds the BiT model of :mod:`convert.model.keras_model` from the job's
weights (through the mapping rows, both sides checked first) and saves
``keras/classification.keras`` and ``keras/feature_extraction.keras``. The two
models share one set of layers, so the weights exist once more in memory, not twice.

``check`` reloads them as a user would: in a fresh process per backend
(``KERAS_BACKEND=jax|tensorflow|torch python -m convert.export.keras_check``, which
imports keras and :mod:`convert.model.keras_layers` only and calls
``keras.saving.load_model`` with ``safe_mode`` on), each process loading both
files and running them on the parity images. The export's own backend (the one
it wrote the files with, tensorflow unless ``KERAS_BACKEND`` says otherwise) is
checked in the export's process instead, with the same ``load_model`` call, when
another backend loads the files in a fresh process (:func:`runs_here`) and the
memory plan runs every check at once (R50x1, not R152x2): its import is done
already. ``prepare`` starts the processes before anything is written, so that
they import keras and their backend while the other targets write;
:meth:`KerasTarget.plan` says how many run at once and how many images go into a call. A backend that is not installed is
skipped and named with what to install; one that fails to load or run a model
is a :class:`KerasBackendError` naming it.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from ..errors import LocalIOError
from ..model.xla_options import FAST_COMPILE_OPTIONS, xla_flags
from .keras_runs import BackendRuns, KerasBackendError, runtime_name
from .keras_zip import make_reproducible
from .target import COLLECT_ABOVE_BYTES, INPUT_RANGES, VARIANTS, Artifact, ExportJob, ExportTarget, Run

#: Every Keras 3 backend the export is checked on, in check order.
BACKENDS = ("jax", "tensorflow", "torch")
#: The module whose presence makes a backend usable.
BACKEND_MODULES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}
#: How to install a missing backend (setup.cfg extras; jax and TensorFlow are core dependencies).
INSTALL_HINTS = {"jax": "pip install .", "tensorflow": "pip install .", "torch": "pip install .[keras-torch]"}
#: How the jax process compiles the models it checks: XLA's fast-compile options, as the float64
#: reference's (convert.model.xla_options). The check compiles each model once and runs it once,
#: so compiling dominates it; the program and its library kernels are the ones users run
#: (docs/performance.md, "Session 26").
CHECK_XLA_FLAGS = xla_flags(FAST_COMPILE_OPTIONS)
#: Directory of the artifacts inside the export.
SUBDIR = "keras"
#: Memory of one checking process: a fixed part (Python, keras, the backend), this many
#: bytes per byte of weights (the loaded model and the backend's working copies), and the
#: layer outputs of the images of one call (convert.model.keras_model.layer_output_elements);
#: fitted to the measured peaks of each backend (docs/performance.md), plus one copy of the
#: weights for the standardised kernels the torch backend keeps between calls (docs/keras.md).
CHILD_FIXED_BYTES = 0.9e9
CHILD_BYTES_PER_WEIGHT_BYTE = 3.5
#: What the layer outputs of one call may take: R50x1 runs its 6 parity images at 224 in
#: one call, R152x2 (0.46 GB an image at 224) two at a time.
CALL_ACTIVATION_BUDGET = 1.0e9
#: What the checking processes may hold together (and never more than the available
#: memory the plan is given): R50x1 checks all three backends at once, R152x2 one at a
#: time (docs/performance.md).
CHILDREN_MEMORY_BUDGET = 6.0e9


def runs_here(backend: str, others: tuple[str, ...]) -> bool:
    """Whether ``backend`` is checked in this process rather than a fresh one (``others``: the backends checked besides).

    Only this process's own Keras backend, whose import is done already (a fresh process
    would import keras and TensorFlow again: docs/performance.md), and only when another
    backend loads the files in a fresh process, which fails on anything the files need
    that only the writing process has.
    """
    if not others:
        return False
    import keras

    return keras.backend.backend() == backend


def installed(backend: str) -> bool:
    """Whether ``backend``'s package is importable here (looked up, not imported)."""
    try:
        return importlib.util.find_spec(BACKEND_MODULES[backend]) is not None
    except (ModuleNotFoundError, ValueError):
        return False


@dataclass(frozen=True)
class CheckPlan:
    """How the Keras check runs: images per call, and processes at once."""

    batch: int
    parallel: int
    #: A full garbage collection in the processes after each model (big checkpoints only).
    collect: bool = False


class Prepared(NamedTuple):
    """What :meth:`KerasTarget.prepare` started: the processes, the plan they were started for, the backend checked here."""

    runs: BackendRuns
    plan: CheckPlan
    #: The backend checked in this process (:func:`runs_here`), or None.
    here: str | None = None

    def stop(self) -> None:
        self.runs.stop()


@dataclass(frozen=True)
class KerasTarget(ExportTarget):
    """The ``keras`` target. Everything it depends on is a field, so tests inject what they need.

    ``backends``: which to check; ``is_installed``: the availability probe;
    ``parallel``: at most this many checking processes at once (None: from
    the CPUs and the memory each needs); ``runs_here``: which backend is checked in
    this process (:func:`runs_here`); ``build_options``: the mutation knobs
    of :func:`convert.model.keras_model.build_keras_models` (tests only).
    """

    name: str = "keras"
    summary: str = "Keras 3 .keras files (classifier and feature extractor), checked on the jax, tensorflow and torch backends"
    backends: tuple[str, ...] = BACKENDS
    is_installed: Callable[[str], bool] = installed
    parallel: int | None = None
    runs_here: Callable[[str, tuple[str, ...]], bool] = runs_here
    build_options: Mapping = field(default_factory=dict)
    python: str = sys.executable
    kaggle_framework: ClassVar[str] = "keras"

    def write(self, job: ExportJob) -> list[Artifact]:
        import keras

        from ..model.keras_model import build_keras_models

        t = time.perf_counter()
        arrays = job.arrays()
        options = {"pool_pad": job.net.pool_pad, **self.build_options}  # the TF graph's forward pass
        models = build_keras_models(job.arch, arrays, input_range=INPUT_RANGES[job.input_range], **options)
        del arrays
        out = job.export_dir / SUBDIR
        artifacts = []
        try:
            out.mkdir(parents=True, exist_ok=True)
            for variant, model in zip(VARIANTS, models, strict=True):
                rel = f"{SUBDIR}/{variant}.keras"
                model.save(job.export_dir / rel)
                make_reproducible(job.export_dir / rel)  # re-exports byte-identical (keras_zip)
                facts = {
                    "keras": keras.__version__,
                    "written_on_backend": keras.backend.backend(),
                    "parameters": int(model.count_params()),
                    "weights": len(model.weights),
                    "trainable_weights": len(model.trainable_weights),
                    "custom_layers": "convert.model.keras_layers",
                }
                artifacts.append(Artifact(self.name, variant, rel, facts))
        except OSError as exc:
            raise LocalIOError(f"cannot write the Keras models of {job.model_id} under {out}: {exc.strerror or exc}") from exc
        finally:
            del models
            job.release()  # the Keras copies of the weights (a full collection only for big checkpoints)
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

    def plan(self, arch, images: np.ndarray, backends: int, available_memory: int | None) -> CheckPlan:
        """How to check ``arch`` on ``images`` with ``backends`` processes in all.

        The batch is the largest divisor of the image count whose layer outputs
        fit CALL_ACTIVATION_BUDGET (equal calls: one jit compilation on JAX);
        the processes at once are bounded by the backends and by the memory each
        needs with that batch, within CHILDREN_MEMORY_BUDGET and
        ``available_memory`` (bytes; None when unknown: the budget alone).
        """
        from ..model.architecture import parameter_count
        from ..model.keras_model import layer_output_elements

        n, (height, width) = len(images), images.shape[1:3]
        per_image = 4 * layer_output_elements(arch, height, width)
        batch = max(d for d in range(1, n + 1) if n % d == 0 and (d == 1 or d * per_image <= CALL_ACTIVATION_BUDGET))
        weight_bytes = parameter_count(arch) * 4
        collect = weight_bytes >= COLLECT_ABOVE_BYTES
        if self.parallel is not None:
            return CheckPlan(batch, max(1, self.parallel), collect)
        per_child = CHILD_FIXED_BYTES + CHILD_BYTES_PER_WEIGHT_BYTE * weight_bytes + batch * per_image
        budget = min(CHILDREN_MEMORY_BUDGET, available_memory or CHILDREN_MEMORY_BUDGET)
        return CheckPlan(batch, max(1, min(backends, int(budget // per_child))), collect)

    def prepare(self, job: ExportJob, images: np.ndarray) -> Prepared:
        """Start the checking processes before the models are written: they import keras and their backend meanwhile."""
        from ..resources import available_memory

        backends, memory = self.available(job.log), available_memory()
        plan = self.plan(job.arch, images, len(backends), memory)
        here = None
        if plan.parallel >= len(backends):  # memory for every check at once: this process may hold one (not R152x2)
            here = next((b for b in backends if self.runs_here(b, tuple(o for o in backends if o != b))), None)
        children = tuple(b for b in backends if b != here)
        if here is not None:
            plan = self.plan(job.arch, images, len(children), memory)
        runs = BackendRuns(children, parallel=plan.parallel, python=self.python, xla_flags=CHECK_XLA_FLAGS)
        return Prepared(runs.start(), plan, here)

    def check(
        self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared: Prepared | None = None
    ) -> Callable[[], list[Run]]:
        runs, plan, here = prepared or self.prepare(job, images)
        t0 = time.perf_counter()
        paths = [job.export_dir / a.path for a in artifacts]
        runs.submit(paths, images, batch=plan.batch, collect=plan.collect)
        in_here = f"; {here} in this process" if here else ""
        job.log(
            f"{job.model_id}: checking the Keras models on {', '.join(runs.backends)} "
            f"({runs.parallel} at a time, {plan.batch} image{'s' if plan.batch > 1 else ''} a call{in_here})"
        )

        def wait() -> list[Run]:
            try:
                results = {here: _run_here(here, paths, images, plan)} if here else {}  # while the processes run
            except BaseException:
                runs.stop()
                raise
            results.update(runs.wait())
            job.log(
                f"{job.model_id}: Keras models reloaded and run on {len(results)} backends in {time.perf_counter() - t0:.1f}s"
            )
            out = []
            for backend in (b for b in self.backends if b in results):
                outputs, info = results[backend]
                for artifact, result, m in zip(artifacts, outputs, info["models"], strict=True):
                    facts = {
                        "backend": backend,
                        "backend_version": info["backend_version"],
                        "keras": info["keras"],
                        "safe_mode": True,
                        "fresh_process": backend != here,
                        "import_s": round(info["import_s"], 3),
                        "load_s": round(m["load_s"], 3),
                        "run_s": round(m["run_s"], 3),
                        "process_cpu_s": round(info.get("cpu_s", 0.0), 3),
                        "xla_flags": info.get("xla_flags"),
                    }
                    out.append(Run(artifact, runtime_name(backend), result, m["load_s"] + m["run_s"], facts))
            return out

        return wait

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str:
        from .cards.keras_card import render_keras_card

        return render_keras_card(job, artifact, figures, BACKENDS, INSTALL_HINTS, self.is_installed)

    def kaggle_usage(self, artifact: Artifact) -> tuple[list[str], list[str]]:
        return ["import keras"], [
            f'model = keras.saving.load_model("${{PATH}}/{Path(artifact.path).name}")',
            "outputs = model(images)",
        ]


def _run_here(backend: str, paths, images: np.ndarray, plan: CheckPlan) -> tuple[list[np.ndarray], dict]:
    """The check of this process's own backend: ``load_model`` and run, as the check process does; its result.json."""
    import keras

    from ..model import keras_layers  # noqa: F401  (registers the custom layers, as a user does)
    from .keras_check import ModelError, backend_version, one_line, run_models

    cpu = time.process_time()
    try:
        outputs, models = run_models(keras, [str(p) for p in paths], images, plan.batch, collect=plan.collect)
    except ModelError as exc:
        what = f"{Path(exc.model).name}: "
        raise KerasBackendError(f"the Keras {backend} backend failed to {exc.step} {what}{one_line(exc.__cause__)}") from exc
    info = {"backend": backend, "keras": keras.__version__, "backend_version": backend_version(backend), "import_s": 0.0}
    return outputs, {**info, "models": models, "cpu_s": time.process_time() - cpu}


TARGET = KerasTarget()
