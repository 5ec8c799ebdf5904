"""Numerical parity: the TF graph (or a reloaded SavedModel) against the Flax reference.

The expensive part, the JAX reference, is computed once and reused for any
number of candidates::

    images, names = make_inputs(resolution, batch, seed)
    ref = reference_outputs(checkpoint, images)          # float32 and float64 JAX
    report = compare(ref, {"logits": classifier(images)}, arch)   # any subset of stages
    report.passed, report.as_dict(), report.render()

:func:`run_parity` does all of it for ``bitconvert verify``.

Metrics per stage (candidate = the TF side):

* ``max_abs``: max |candidate - JAX float32|
* ``rel_l2``: relative L2 error of the candidate against JAX float32
* ``tf_rel_l2_f64`` / ``jax_rel_l2_f64``: each float32 side against the
  float64 JAX run of the same inputs, so the report shows which side drifts
* ``max_abs_f64``: max |candidate - JAX float64|
* at ``logits``: top-1 agreement of each side with the float64 argmax.

A reference computed without its float32 run (``reference_outputs(...,
float32=False)``, as ``bitconvert export`` does: the verdict needs only the
float64 run, and the float32 one costs a third of the JAX time) leaves the
float32 columns empty (None).

Relative L2 errors are computed per image and the worst image is reported
(a border-only defect in one structured image is not averaged away).

Pass criterion: at every stage present, the candidate's relative L2 error
against the float64 reference is at most :func:`tolerance` of the
architecture, and every value is finite. Top-1 agreement is reported, not
judged: random weights produce near-ties that float32 noise may flip.
"""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..architecture import Architecture

#: Stage names in forward order (the same tuple as ``convert.tf_model.STAGES``;
#: repeated here so importing this module does not import TensorFlow).
STAGES = ("stem", "block1", "block2", "block3", "block4", "pre_logits", "logits")

#: The structured test images, after the random ones.
STRUCTURED = ("flat", "gradient_h", "gradient_d", "checker_1", "checker_7")

#: Error model of the float32 TF graph: its worst-stage, worst-image relative L2
#: error against float64 JAX is about ``ERROR_PER_UNIT * (sum(units) + 4) * width**2``
#: (the 4 stands for the stem, the head and the block transitions). Fitted on
#: the measurements in CALIBRATION; resolution hardly matters (R152x2: 9.3e-4
#: at 224, 9.5e-4 at 384).
ERROR_PER_UNIT = 4e-6
#: The pass threshold is this many times the modelled error.
TOLERANCE_MARGIN = 5

CALIBRATION = """
Measured on this 2-core machine (scripts/calibrate_parity.py; synthetic
official-layout weights, inputs = make_inputs(batch) incl. the structured
images; worst stage (always block4) and worst image; TF 2.21 default
build, whose oneDNN custom ops are off here: TF_ENABLE_ONEDNN_OPTS=0 gives
bit-identical outputs):

| arch   | res | TF f32 vs f64 | JAX f32 vs f64 | model | tolerance | smallest mutation error |
|--------|-----|---------------|----------------|-------|-----------|-------------------------|
| R14x1 (tiny, 1,1,1,1) | 63 | 3.1e-5 | 2.1e-5 | 3.2e-5 | 1.6e-4 | - |
| R50x1  | 160 | 8.0e-5 (seed 7: 7.7e-5) | 2.3e-3 | 8.0e-5 | 4.0e-4 | 1.4e-1 (-inf pool, stem) |
| R101x1 | 160 | 1.7e-4 | 5.9e-3 | 1.5e-4 | 7.4e-4 | (not run) |
| R50x3  | 128 | 4.1e-4 | 3.2e-4 | 7.2e-4 | 3.6e-3 | (not run) |
| R152x2 | 224 | 9.3e-4 | 8.8e-3 | 8.6e-4 | 4.3e-3 | 1.3e-1 (-inf pool, stem) |
| R152x2 | 384 | 9.5e-4 | 4.0e-2 | 8.6e-4 | 4.3e-3 | (not run at 384) |

The model was fitted on R14x1, R50x1 and R152x2 and then checked on R101x1
and R50x3 (predicted 1.5e-4 and 7.2e-4, measured 1.7e-4 and 4.1e-4).
R152x4 (tolerance 1.7e-2) is extrapolated, not measured.
With TF_ENABLE_ONEDNN_OPTS=1 the TF outputs change (max abs 2e-3 at block4 of
R50x1@160) but not the error level (8.0e-5 vs 7.95e-5).

At logits the TF error is smaller: 2.6e-5 (R50x1@160), 1.5e-4 (R152x2@224),
1.7e-4 (R152x2@384). The JAX float32 run drifts far more than TF on the flat
and checkerboard images: flax.linen.GroupNorm's default fast variance
(E[x^2] - E[x]^2, as in the authors' Flax) cancels catastrophically where a
group's mean dwarfs its spread. That is why the verdict is taken against
float64, not against JAX float32. Mutations (swapped same-shape arrays, SAME
padding on strided convs, -inf max-pool padding) all exceed 0.12 at their
worst stage and 0.09 at logits, 25x or more above the tolerance.
"""


def expected_error(arch: Architecture) -> float:
    """Modelled worst-stage relative L2 error of the float32 TF graph vs float64 (see CALIBRATION)."""
    return ERROR_PER_UNIT * (sum(arch.units) + 4) * arch.width**2


def tolerance(arch: Architecture) -> float:
    """The pass threshold for ``arch``: TOLERANCE_MARGIN x the modelled error, 2 significant digits.

    Depth- and width-dependent: R50x1 4.0e-4, R101x1 7.4e-4, R50x3 3.6e-3,
    R152x2 4.3e-3, R101x3 6.7e-3, R152x4 1.7e-2.
    """
    return float(f"{TOLERANCE_MARGIN * expected_error(arch):.2g}")


# -- inputs -------------------------------------------------------------------


def _size(resolution) -> tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    h, w = resolution
    return int(h), int(w)


def structured_images(height: int, width: int) -> np.ndarray:
    """The STRUCTURED images, float32 (len(STRUCTURED), H, W, 3) in [-1, 1].

    flat: a constant colour; gradient_h: a left-to-right ramp; gradient_d: a
    diagonal ramp, one direction per channel; checker_1: a one-pixel +-1
    checkerboard (the highest frequency: any shift of the stride-2 sampling
    grid changes everything); checker_7: 7-pixel cells, so cell edges fall on
    odd offsets and reach the image border mid-cell.
    """
    yy, xx = np.meshgrid(np.linspace(-1.0, 1.0, height), np.linspace(-1.0, 1.0, width), indexing="ij")
    iy, ix = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    flat = np.broadcast_to(np.array([0.6, -0.2, 0.1]), (height, width, 3))
    grad_h = np.stack([xx, 0.5 * xx, -xx], axis=-1)
    grad_d = np.stack([(xx + yy) / 2, (xx - yy) / 2, -(xx + yy) / 2], axis=-1)
    c1 = np.where((iy + ix) % 2 == 0, 1.0, -1.0)
    c7 = np.where((iy // 7 + ix // 7) % 2 == 0, 1.0, -1.0)
    checker_1 = np.stack([c1, -c1, c1], axis=-1)
    checker_7 = np.stack([c7, c7, -c7], axis=-1)
    return np.stack([flat, grad_h, grad_d, checker_1, checker_7]).astype(np.float32)


def make_inputs(resolution, batch: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Deterministic parity inputs: ``batch`` uniform random images then the STRUCTURED ones.

    ``resolution`` is an int (square) or (height, width). Returns float32 NHWC
    images in [-1, 1] of shape (batch + 5, H, W, 3) and one name per image
    (``random_0``.., then the STRUCTURED names).
    """
    h, w = _size(resolution)
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-1.0, 1.0, size=(batch, h, w, 3)).astype(np.float32)
    images = np.concatenate([rand, structured_images(h, w)])
    names = [f"random_{i}" for i in range(batch)] + list(STRUCTURED)
    assert images.min() >= -1.0 and images.max() <= 1.0
    return images, names


# -- reference ------------------------------------------------------------------


@dataclass
class Reference:
    """JAX outputs for one set of images: ``f32`` (None when not run) and ``f64`` map stage -> array."""

    arch: Architecture
    images: np.ndarray
    f32: dict[str, np.ndarray] | None
    f64: dict[str, np.ndarray]
    input_names: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


#: Below this (parameters x input pixels), compiling the reference costs more than
#: running it, so it is compiled with XLA's LLVM optimisation level 0
#: (R50x1 at 160: 6.5e11, R152x2 at 64: 9.7e11; R152x2 at 224: 1.2e13).
FAST_COMPILE_WORK = 2e12


def _compile_dominates(arch: Architecture, image_shape) -> bool:
    from ..architecture import parameter_count

    return parameter_count(arch) * image_shape[1] * image_shape[2] <= FAST_COMPILE_WORK


def reference_outputs(checkpoint, images: np.ndarray, input_names: list[str] | None = None, *, float32: bool = True) -> Reference:
    """Run the Flax reference on ``images`` in float32 (unless ``float32=False``) and in float64.

    ``checkpoint`` is a :class:`convert.checkpoint.Checkpoint` (``.architecture``,
    ``.arrays``). The params tree is built through the mapping (two-sided
    check) as views of the checkpoint's arrays, and the model runs one jitted
    module at a time (:func:`convert.flax_model.make_unitwise_apply`), each
    module's weights cast to the run's dtype just before it runs: no second
    copy of the weights, in either dtype, ever exists. The float64 run happens
    inside ``jax.enable_x64(True)`` only, leaving every other JAX computation
    float32. Compilations: one per distinct unit configuration, input shape
    and dtype, never per call.
    """
    import jax

    from ..flax_model import make_unitwise_apply
    from ..mapping import flax_params

    arch = checkpoint.architecture
    apply = make_unitwise_apply(arch, fast_compile=_compile_dominates(arch, np.shape(images)))
    params = flax_params(checkpoint.arrays, arch, dtype=np.float32)  # host views, no copy
    timings: dict[str, float] = {}
    f32 = None
    if float32:
        t = time.perf_counter()
        f32 = {k: np.asarray(v) for k, v in apply(params, np.asarray(images, np.float32), np.float32).items()}
        timings["jax_f32_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with jax.enable_x64(True):
        f64 = {k: np.asarray(v) for k, v in apply(params, np.asarray(images, np.float64), np.float64).items()}
    timings["jax_f64_s"] = time.perf_counter() - t
    for k, v in f64.items():
        assert v.dtype == np.float64, f"float64 reference ran in {v.dtype} at {k}"
    return Reference(arch, np.asarray(images), f32, f64, list(input_names or []), timings)


# -- comparison -----------------------------------------------------------------


def _per_image_rel_l2(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    num = np.linalg.norm(a - ref, axis=1)
    den = np.linalg.norm(ref, axis=1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), num)


@dataclass
class StageResult:
    stage: str
    shape: tuple[int, ...]
    max_abs: float | None  # candidate vs JAX float32 (None: no float32 run)
    rel_l2: float | None  # candidate vs JAX float32, worst image
    tf_rel_l2_f64: float  # candidate vs JAX float64, worst image (judged)
    jax_rel_l2_f64: float | None  # JAX float32 vs JAX float64, worst image
    worst_input: str  # image with the largest candidate-vs-float64 error
    finite: bool
    passed: bool
    max_abs_f64: float = math.nan  # candidate vs JAX float64
    top1_tf: float | None = None  # share of images whose argmax matches the float64 one
    top1_jax: float | None = None
    top1_tf_vs_jax: float | None = None

    def as_dict(self) -> dict:
        d = {
            "shape": list(self.shape),
            "max_abs": self.max_abs,
            "rel_l2": self.rel_l2,
            "max_abs_f64": self.max_abs_f64,
            "tf_rel_l2_f64": self.tf_rel_l2_f64,
            "jax_rel_l2_f64": self.jax_rel_l2_f64,
            "worst_input": self.worst_input,
            "finite": self.finite,
            "passed": self.passed,
        }
        if self.top1_tf is not None:
            d.update(top1_tf=self.top1_tf, top1_jax=self.top1_jax, top1_tf_vs_jax=self.top1_tf_vs_jax)
        return d


@dataclass
class ParityReport:
    """Per-stage comparison of one candidate against a :class:`Reference`."""

    arch: Architecture
    tolerance: float
    stages: dict[str, StageResult]
    input_names: list[str]
    image_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)  # model id, timings, tracing count...

    @property
    def passed(self) -> bool:
        return bool(self.stages) and all(s.passed for s in self.stages.values())

    @property
    def failed_stages(self) -> list[str]:
        return [k for k, s in self.stages.items() if not s.passed]

    def as_dict(self) -> dict:
        """Stage names as top-level keys (in forward order), plus a ``summary`` entry."""
        d: dict = {k: s.as_dict() for k, s in self.stages.items()}
        d["summary"] = {
            "passed": self.passed,
            "architecture": self.arch.name,
            "tolerance": self.tolerance,
            "criterion": "per stage: worst-image relative L2 error of the TF graph vs the float64 JAX reference <= tolerance",
            "images": list(self.image_shape),
            "inputs": list(self.input_names),
            "failed_stages": self.failed_stages,
            **self.info,
        }
        return d

    def render(self) -> str:
        """A text table, one row per stage, and a verdict line."""
        head = ("stage", "shape", "max|tf-jax|", "rel tf-jax", "rel tf-f64", "rel jax-f64", "worst input", "")
        rows = [head]

        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.2e}"

        for s in self.stages.values():
            rows.append(
                (
                    s.stage,
                    "x".join(map(str, s.shape[1:])),
                    num(s.max_abs),
                    num(s.rel_l2),
                    num(s.tf_rel_l2_f64),
                    num(s.jax_rel_l2_f64),
                    s.worst_input,
                    "ok" if s.passed else "FAIL",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        logits = self.stages.get("logits")
        if logits is not None and logits.top1_jax is not None:
            lines.append(
                f"top-1 agreement with float64: tf {logits.top1_tf:.0%}, jax {logits.top1_jax:.0%}; tf vs jax {logits.top1_tf_vs_jax:.0%}"
            )
        n, h, w = self.image_shape[:3]
        head_line = (
            f"{self.info.get('model', self.arch.name)} ({self.arch.name}) {n} images {h}x{w}; tolerance {self.tolerance:.1e}"
        )
        verdict = "PASS" if self.passed else f"FAIL at {', '.join(self.failed_stages) or 'every stage (none compared)'}"
        return "\n".join([head_line, *lines, f"parity: {verdict}"])


def compare(
    reference: Reference,
    candidate: dict[str, np.ndarray],
    arch: Architecture | None = None,
    tol: float | None = None,
) -> ParityReport:
    """Compare ``candidate`` (stage -> array, any subset of STAGES) with ``reference``.

    Unknown stage names are a ValueError; missing ones are simply not judged
    (a classifier export has only ``logits``, a feature extractor only
    ``pre_logits``). ``tol`` overrides :func:`tolerance` (tests only).
    """
    arch = arch or reference.arch
    tol = tolerance(arch) if tol is None else tol
    unknown = set(candidate) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; expected some of {STAGES}")
    names = reference.input_names or [f"image_{i}" for i in range(len(reference.images))]
    results: dict[str, StageResult] = {}
    for stage in STAGES:
        if stage not in candidate:
            continue
        c = np.asarray(candidate[stage])
        r64 = reference.f64[stage]
        r32 = reference.f32[stage] if reference.f32 is not None else None
        if c.shape != r64.shape:
            raise ValueError(f"{stage}: candidate shape {c.shape} != reference shape {r64.shape}")
        finite = bool(np.isfinite(c).all())
        tf64 = _per_image_rel_l2(c, r64)
        worst = int(np.nanargmax(tf64)) if np.isfinite(tf64).any() else 0
        res = StageResult(
            stage=stage,
            shape=tuple(c.shape),
            max_abs=None if r32 is None else float(np.max(np.abs(c.astype(np.float64) - r32))),
            rel_l2=None if r32 is None else float(np.max(_per_image_rel_l2(c, r32))),
            tf_rel_l2_f64=float(np.max(tf64)),
            jax_rel_l2_f64=None if r32 is None else float(np.max(_per_image_rel_l2(r32, r64))),
            worst_input=names[worst],
            finite=finite,
            passed=False,
            max_abs_f64=float(np.max(np.abs(c.astype(np.float64) - r64))),
        )
        res.passed = finite and math.isfinite(res.tf_rel_l2_f64) and res.tf_rel_l2_f64 <= tol
        if stage == "logits":
            top64 = r64.argmax(-1)
            res.top1_tf = float(np.mean(c.argmax(-1) == top64))
            if r32 is not None:
                res.top1_jax = float(np.mean(r32.argmax(-1) == top64))
                res.top1_tf_vs_jax = float(np.mean(c.argmax(-1) == r32.argmax(-1)))
        results[stage] = res
    return ParityReport(arch, tol, results, list(names), tuple(reference.images.shape), {})


# -- the whole check --------------------------------------------------------------


def tf_stage_function(model):
    """``tf.function`` over ``model.stages`` with input signature [None, None, None, 3] float32."""
    import tensorflow as tf

    return tf.function(
        model.stages, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False
    )


def _reference_from_file(path: str, arch: Architecture, images: np.ndarray, names: list[str], float32: bool) -> Reference:
    """Load (and validate) the checkpoint at ``path``, then :func:`reference_outputs`."""
    from ..checkpoint import load_checkpoint

    return reference_outputs(load_checkpoint(path, arch), images, names, float32=float32)


def start_reference_worker(
    path, arch: Architecture, images: np.ndarray, names: list[str], workdir: Path, *, float32: bool = True
):
    """Start ``python -m convert.parity WORKDIR``: the JAX reference in a fresh process.

    A plain subprocess rather than multiprocessing: no re-import of the
    caller's ``__main__`` (spawn) and no fork of a process that holds TF or
    JAX thread pools. Inputs and outputs travel as .npy/.npz files in ``workdir``.
    """
    import json
    import subprocess
    import sys

    np.save(workdir / "images.npy", images)
    spec = {
        "path": str(path),
        "units": list(arch.units),
        "width": arch.width,
        "classes": arch.classes,
        "names": names,
        "float32": float32,
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with open(workdir / "stderr.txt", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "convert.parity", str(workdir)], stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env
        )


def stop_reference_worker(proc) -> None:
    """Kill a reference worker that is still running (after a failure) and reap it; no-op once it has exited."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def finish_reference_worker(proc, arch: Architecture, images: np.ndarray, names: list[str], workdir: Path) -> Reference:
    import json

    rc = proc.wait()
    if rc != 0:
        tail = (workdir / "stderr.txt").read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"the JAX reference worker failed (exit {rc}): {' / '.join(tail)}")
    out32 = None
    if (workdir / "f32.npz").exists():
        with np.load(workdir / "f32.npz") as f32:
            out32 = {k: f32[k] for k in STAGES}
    with np.load(workdir / "f64.npz") as f64:
        out64 = {k: f64[k] for k in STAGES}
    timings = json.loads((workdir / "timings.json").read_text())
    return Reference(arch, images, out32, out64, list(names), timings)


def _worker_main(workdir: str) -> int:
    import json

    work = Path(workdir)
    spec = json.loads((work / "spec.json").read_text())
    arch = Architecture(tuple(spec["units"]), spec["width"], spec["classes"])
    ref = _reference_from_file(spec["path"], arch, np.load(work / "images.npy"), spec["names"], spec["float32"])
    if ref.f32 is not None:
        np.savez(work / "f32.npz", **ref.f32)
    np.savez(work / "f64.npz", **ref.f64)
    (work / "timings.json").write_text(json.dumps(ref.timings))
    return 0


def run_parity(
    checkpoint,
    resolution,
    batch: int = 2,
    seed: int = 0,
    *,
    tf_model=None,
    model_id: str | None = None,
    log=None,
    reference_process: bool | None = None,
    window=None,
) -> ParityReport:
    """Build the TF graph (unless ``tf_model`` is given), run both sides, compare every stage.

    ``checkpoint``: a loaded :class:`convert.checkpoint.Checkpoint`;
    ``resolution``: int or (height, width); ``log``: optional callable for
    progress lines. Timings (seconds) and the TF tracing count land in
    ``report.info``.

    With ``reference_process`` (and a checkpoint read from a file) the JAX
    reference runs in a worker process that reads the same file, while this
    process imports TensorFlow, builds, traces and runs the graph, so the two
    halves overlap. That pays only when a core is free: it costs about 4 s of
    extra CPU (a second interpreter, JAX import, reading the file again), and
    on this 2-core machine with another job running it was slower than
    running the halves in turn (R50x1 at 160: 31-36 s against 28.5 s; idle:
    about 22 s against 26 s). It also holds both processes' memory at once.
    ``None`` (the default) lets :func:`convert.resources.reference_plan`
    decide from the CPU use of other processes over ``window`` (started by
    the caller before reading the checkpoint; here when not given) and from
    the memory both processes would need. Otherwise, or for an in-memory
    checkpoint, the two run in turn in this process. A worker *thread* was
    tried first and lost both ways: the two halves spend their first seconds
    in Python (TF and Flax tracing) and fought for the GIL.
    """
    import tempfile

    log = log or (lambda msg: None)
    info: dict = {"model": model_id} if model_id else {}
    images, names = make_inputs(resolution, batch, seed)
    t0 = time.perf_counter()

    def run_tf():
        from ..tf_model import build_tf_model

        t = time.perf_counter()
        model = tf_model if tf_model is not None else build_tf_model(checkpoint)
        info["tf_build_s"] = time.perf_counter() - t
        fn = tf_stage_function(model)
        t = time.perf_counter()
        out = {k: v.numpy() for k, v in fn(images).items()}
        info["tf_run_s"] = time.perf_counter() - t
        info["tf_tracing_count"] = int(fn.experimental_get_tracing_count())
        log(f"TF graph: {info['tf_run_s']:.1f} s (trace and run)")
        return out

    path = getattr(checkpoint, "path", None)
    if reference_process is None:
        from ..resources import ALONGSIDE, CpuWindow, reference_plan

        plan, why = reference_plan(checkpoint.parameters * 4, window or CpuWindow(), worker_first=False)
        reference_process = plan == ALONGSIDE
        log(f"JAX reference {why}")
    in_worker = bool(reference_process and path is not None and Path(path).is_file())
    if in_worker:
        with tempfile.TemporaryDirectory(prefix="bitconvert-parity-") as tmp:
            work = Path(tmp)
            proc = start_reference_worker(path, checkpoint.architecture, images, names, work)
            try:
                tf_out = run_tf()
                ref = finish_reference_worker(proc, checkpoint.architecture, images, names, work)
            finally:
                stop_reference_worker(proc)  # TF failed or we were interrupted: do not leave it running
    else:
        tf_out = run_tf()
        gc.collect()  # the TF graph and its standardised kernels, before the JAX params arrive
        ref = reference_outputs(checkpoint, images, names)
    info.update(ref.timings)
    info["reference_process"] = in_worker
    info["parity_wall_s"] = time.perf_counter() - t0
    log(f"JAX reference: float32 {ref.timings['jax_f32_s']:.1f} s, float64 {ref.timings['jax_f64_s']:.1f} s (compile and run)")
    report = compare(ref, tf_out)
    report.info.update(info)
    return report
