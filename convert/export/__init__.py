"""Export a BiT checkpoint as two TF Hub-style SavedModels, proven equal to JAX.

For one registry entry, :func:`export_model` writes::

    <out>/<id>/classification/        SavedModel: images -> logits
    <out>/<id>/feature_extraction/    SavedModel: images -> pre-logits feature vector
    <out>/<id>/classification.md      tfhub.dev model card of each variant
    <out>/<id>/feature_extraction.md
    <out>/<id>/manifest.json          provenance, parity figures, versions, fingerprints
    <out>/<id>/bit_<id>_<variant>.tar.gz   with ``archive=True``: deterministic TF Hub upload archives

Order of work, so that failures cost little and leave nothing behind:

1. read the checkpoint strictly (any reader error stops here: nothing written);
2. unless ``skip_parity``: start the JAX reference (once, for every comparison;
   in a worker process alongside steps 3-4 when a core is free and both
   processes fit in memory; in a worker while only TensorFlow is imported
   when they would not; else first, in this process). Only its float64 run: the verdict
   is taken against float64, and the float32 run (``bitconvert verify``
   reports it) would add half again to the JAX time;
3. build the TF graph; run it on the parity images ("before export", in a
   thread) while both SavedModels are written into ``<out>/.<id>.tmp-<pid>``;
   judge that run as soon as both it and the reference are there;
4. reload each SavedModel from disk, check the Reusable SavedModel API and its
   signature, run it on the parity images ("after export"); compare both runs
   with the JAX reference; write cards and manifest;
5. only then rename the temporary directory to ``<out>/<id>``, swapping out
   an older export atomically. Any failure (parity, full disk, Ctrl-C)
   removes the temporary directory; a killed process leaves only that
   temporary directory, which the next export of the same id clears away.

The SavedModels follow the Reusable SavedModel API (``__call__``,
``variables``, ``trainable_variables``, ``regularization_losses``) and the
TF Hub image conventions: float32 ``[batch, height, width, 3]`` of any batch
and size, in [0, 1] by default (``input_range="unit"``, rescaled in the
graph) or [-1, 1] (``"symmetric"``, as the published collection took them).
Running the same export twice in fresh processes gives byte-identical
``saved_model.pb`` and ``variables/`` (``fingerprint.pb`` holds a random UUID).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from .. import __version__
from ..architecture import PREFIX, Architecture
from ..checkpoint import load_checkpoint
from ..errors import ExportError, LocalIOError, ParityError
from ..fetch import sha256_file
from ..fetch import source_url as bucket_url
from ..fsutil import fsync_dir
from ..model_card import (
    INPUT_RANGES,
    OUTPUT_KEYS,
    VARIANTS,
    ParityFigures,
    archive_name,
    card_file_name,
    render_card,
)
from ..registry import ModelEntry
from ..resources import ALONGSIDE, IN_PROCESS, WORKER_FIRST, CpuWindow, reference_plan

MANIFEST_FORMAT = "bitconvert-export/1"
#: Default parity input size cap: 224, the size BiT was pre-trained at. Above it the
#: float64 JAX reference alone takes minutes (R152x2 at 384: ~150 s); the graph is
#: the same at every size, and `bitconvert verify --resolution` checks any size.
PARITY_MAX_RESOLUTION = 224
MANIFEST_NAME = "manifest.json"
#: The stage of the JAX reference each variant's output is compared with.
VARIANT_STAGES = {"classification": "logits", "feature_extraction": "pre_logits"}
#: Name of the single input of every signature.
INPUT_NAME = "images"
#: Checkpoint keys that only the classifier uses (the feature extractor leaves the head out).
HEAD_PREFIX = f"{PREFIX}head/"
#: Checkpoints from this size up get a full garbage collection after each model is
#: done with (R152x2: 0.95 GB each time; R50x1, 0.1 GB, does without).
COLLECT_ABOVE_BYTES = 250_000_000
#: Size of the image a reloaded SavedModel is run on when parity is skipped (cheap at any depth).
_PROBE_SIZE = 64

Log = Callable[[str], None]


@dataclass
class ExportOptions:
    """How to export. The defaults are the CLI's defaults."""

    output_dir: Path = Path("exports")
    input_range: str = "unit"
    archive: bool = False
    skip_parity: bool = False
    #: Random images in the parity check (the five structured ones of
    #: :func:`convert.parity.make_inputs` always come on top).
    parity_batch: int = 1
    #: Parity input size; None: the entry's native resolution, at most PARITY_MAX_RESOLUTION.
    parity_resolution: int | None = None
    parity_seed: int = 0
    #: Run the JAX reference in a worker process alongside the TF work (True) or in
    #: this process first (False). None: convert.resources.reference_plan decides
    #: from the other processes' CPU use and the memory both would need (R50x1:
    #: alongside; R152x2: in a worker while TensorFlow is imported, then the TF work).
    overlap: bool | None = None

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {tuple(INPUT_RANGES)}, got {self.input_range!r}")


@dataclass
class ExportResult:
    model_id: str
    path: Path
    manifest: dict = field(repr=False)


def _quiet(_msg: str) -> None:
    pass


def _no_collection() -> int:
    return 0


# -- small helpers ------------------------------------------------------------------


def library_versions() -> dict[str, str | None]:
    """Versions of what produced the export (from package metadata: imports nothing)."""
    versions: dict[str, str | None] = {"bitconvert": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "keras", "jax", "jaxlib", "flax", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _to_model_range(images: np.ndarray, input_range: str) -> np.ndarray:
    """Parity images (in the model's [-1, 1]) expressed in the export's input range."""
    lo, hi = INPUT_RANGES[input_range]
    # The inverse of numerics.pixels_to_model_range(x, lo, hi).
    return ((images + 1.0) * ((hi - lo) / 2.0) + lo).astype(np.float32)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_dir_for(out: Path, model_id: str, pid: int | None = None) -> Path:
    return out / f".{model_id}.tmp-{pid or os.getpid()}"


def clear_stale_temp_dirs(out: Path, model_id: str, log: Log = _quiet) -> None:
    """Remove ``.<id>.tmp-<pid>`` directories left by killed exports (their pid is gone)."""
    if not out.is_dir():
        return
    prefix = f".{model_id}.tmp-"
    for child in out.iterdir():
        if not child.name.startswith(prefix):
            continue
        pid = child.name[len(prefix) :]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            log(f"removing {child}, left by an interrupted export")
            shutil.rmtree(child, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish_directory(tmp: Path, final: Path) -> None:
    """Move a finished export from ``tmp`` to ``final``; an older ``final`` is replaced atomically.

    With RENAME_EXCHANGE there is no instant at which ``final`` is missing or
    half-written. Without it (other OSes, some filesystems) the old export is
    renamed aside first and restored if the second rename fails.
    """
    if not final.exists():
        os.rename(tmp, final)
        return
    if _exchange(tmp, final):
        shutil.rmtree(tmp)  # now holds the old export
        return
    aside = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except OSError:
        os.rename(aside, final)
        raise
    shutil.rmtree(aside)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _io_error(what: str, exc: BaseException) -> LocalIOError:
    detail = getattr(exc, "strerror", None) or getattr(exc, "message", None) or str(exc)
    detail = " ".join(str(detail).split())  # TF messages span lines; ours is one
    return LocalIOError(f"{what}: {detail}")


def check_free_space(out: Path, needed: int) -> None:
    """Refuse early when ``out``'s filesystem clearly cannot hold ``needed`` bytes."""
    probe = out
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise LocalIOError(
            f"not enough free space in {probe}: the export needs about {needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free"
        )


# -- the exportable objects -----------------------------------------------------------


def variant_variables(net, variant: str) -> list:
    """The variables a variant's graph uses, in checkpoint layout order."""
    if variant == "classification":
        return list(net.variables_by_key.values())
    return [v for k, v in net.variables_by_key.items() if not k.startswith(HEAD_PREFIX)]


def build_exportable(net, variant: str, input_range: str):
    """The SavedModel root of one variant: a ``tf.train.Checkpoint`` with the Reusable SavedModel API.

    A plain ``tf.Module`` root reloads without ``variables`` (savedmodel-facts.md),
    hence the Checkpoint subclass. ``__call__`` takes float32
    ``[batch, height, width, 3]`` in ``input_range`` and returns a tensor; the
    ``serving_default`` signature (``root.serving_default``) takes ``images``
    and returns ``{"logits": ...}`` or ``{"feature_vector": ...}``.
    """
    import tensorflow as tf

    from ..numerics import pixels_to_model_range
    from ..xla_call import inference_compiled_call

    lo, hi = INPUT_RANGES[input_range]
    forward = net.__call__ if variant == "classification" else net.features
    key = OUTPUT_KEYS[variant]
    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name=INPUT_NAME)

    def model_fn(images):
        x = pixels_to_model_range(images, lo, hi) if (lo, hi) != (-1.0, 1.0) else images
        return forward(x)

    # XLA-compiled for inference, the plain graph when training (convert/xla_call.py).
    call = inference_compiled_call(model_fn, spec)

    def serving_fn(images):
        return {key: call(images)}

    serving = tf.function(serving_fn, input_signature=[spec], autograph=False)

    class BiTHubExport(tf.train.Checkpoint):
        """Root object: what ``tf.saved_model.load`` and ``hub.KerasLayer`` see."""

    root = BiTHubExport()
    root.variables = variant_variables(net, variant)
    # Every variable is trainable: BiT has no batch-norm statistics or other state.
    root.trainable_variables = [v for v in root.variables if v.trainable]
    root.regularization_losses = []
    root.__call__ = call
    root.serving_default = serving
    return root


# -- parity ---------------------------------------------------------------------------


@dataclass
class _ParityContext:
    images: np.ndarray  # in the model's [-1, 1]
    names: list[str]
    reference: object  # convert.parity.Reference
    resolution: int
    batch: int


def _report_dict(report) -> dict:
    return json.loads(json.dumps(report.as_dict(), default=float))


def _figures(report, stage: str, ctx: _ParityContext) -> ParityFigures:
    s = report.stages[stage]
    return ParityFigures(stage, s.max_abs_f64, s.tf_rel_l2_f64, report.tolerance, ctx.resolution, len(ctx.images), ctx.batch)


def _summary_line(report, stages) -> str:
    return ", ".join(f"{k} rel {report.stages[k].tf_rel_l2_f64:.2e} max|d| {report.stages[k].max_abs_f64:.2e}" for k in stages)


# -- the export -------------------------------------------------------------------------


def export_model(
    entry: ModelEntry,
    checkpoint_path: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    source_url: str | None = None,
    sha256: str | None = None,
    checkpoint_origin: str | None = None,
    arch: Architecture | None = None,
    log: Log = _quiet,
) -> ExportResult:
    """Export ``entry`` from the checkpoint at ``checkpoint_path``; see the module docstring.

    ``source_url``: where the checkpoint came from (manifest, cards; default the
    official bucket URL). ``sha256``: the file's digest when already known
    (computed otherwise). ``checkpoint_origin``: how the file was obtained, for
    the manifest (the CLI says ``cache`` or ``--checkpoint``). ``arch``: override the entry's architecture (reduced
    test layouts only). Raises CheckpointError, ParityError, ExportError,
    LocalIOError; on any failure nothing exists at ``<out>/<id>`` that was not
    there before.
    """
    options = options or ExportOptions()
    arch = arch or entry.architecture
    out = options.output_dir
    final = out / entry.id
    t_start = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    window = CpuWindow()  # how busy other processes keep the CPUs, while the checkpoint is read

    # 1. Read everything strictly before anything is written.
    t = time.perf_counter()
    checkpoint = load_checkpoint(checkpoint_path, arch)
    log(
        f"{entry.id}: read {checkpoint_path} ({arch.name}, {checkpoint.parameters:,} parameters) in {time.perf_counter() - t:.1f}s"
    )
    if sha256 is None:
        sha256 = sha256_file(checkpoint_path)
    if entry.sha256 and sha256 != entry.sha256:
        log(f"{entry.id}: warning: checkpoint sha256 {sha256} differs from the registry's {entry.sha256}")
    if source_url is None:
        source_url = bucket_url(entry)
    weight_bytes = checkpoint.parameters * 4
    # Two variants; the archives of random-looking floats barely compress.
    check_free_space(out, int(weight_bytes * (4 if options.archive else 2) * 1.05))

    # 2. The JAX reference, computed once for all comparisons, where reference_plan
    # says: in a worker process that reads the same file, or first, in this process.
    pending = None
    plan = IN_PROCESS
    if not options.skip_parity:
        from ..parity import make_inputs

        resolution = options.parity_resolution or min(entry.resolution, PARITY_MAX_RESOLUTION)
        images, names = make_inputs(resolution, options.parity_batch, options.parity_seed)
        if options.overlap is None:
            plan, why = reference_plan(weight_bytes, window)
            log(f"{entry.id}: JAX reference {why}")
        else:
            plan = ALONGSIDE if options.overlap else IN_PROCESS
        pending = _PendingReference(checkpoint, images, names, resolution, options.parity_batch, plan != IN_PROCESS)
        if plan == IN_PROCESS:
            pending.result(entry.id, log)

    import tensorflow as tf

    if pending is not None and plan == WORKER_FIRST:
        # Only the TF import ran beside the worker; building the graph now would
        # put both processes' peaks together (R152x2: 5.5 GB).
        pending.result(entry.id, log)

    from ..parity import tf_stage_function
    from ..tf_model import build_tf_model

    t = time.perf_counter()
    net = build_tf_model(checkpoint)
    checkpoint_params = checkpoint.parameters
    # The TF variables now hold the weights: drop the numpy copies (R152x2: 0.95 GB;
    # plain arrays, freed at once without a garbage collection).
    checkpoint.arrays.clear()
    # A full collection costs about 0.4 s with TF loaded (R50x1: 1.8 s of a 27 s export
    # in four of them). It is worth it only where it hands back a model's worth of
    # memory before the next one is loaded, i.e. for big checkpoints.
    release = gc.collect if weight_bytes >= COLLECT_ABOVE_BYTES else _no_collection
    release()
    log(f"{entry.id}: TF graph built in {time.perf_counter() - t:.1f}s")

    live = None
    before = None
    live_run = None
    if pending is not None:
        # Traced here, before the SavedModels' own traces (the saved graphs stay the
        # same), then run in a thread while they are written: the run is TF kernels,
        # which release the GIL; the writing is mostly Python on one core.
        # R152x2-384: 16.8 s run, then 23 s of writing, in turn.
        stages_graph = tf_stage_function(net).get_concrete_function()
        # Its first call (function instantiation, graph optimisation) takes names
        # from TF's process-wide counter, as the SavedModels' traces do: made here,
        # in order, so that the thread cannot make re-exports differ byte for byte.
        stages_graph(tf.zeros([1, 32, 32, 3]))
        live_run = _LiveRun(stages_graph, pending.images)
        del stages_graph

    # 3.-5. Write into a temporary directory, verify from disk, publish.
    clear_stale_temp_dirs(out, entry.id, log)
    created_out = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_for(out, entry.id)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        raise _io_error(f"cannot create {out}", exc) from exc

    published = False
    try:
        variants = _write_savedmodels(net, tmp, options.input_range, entry.id, log)
        del net
        if live_run is not None:
            live = live_run.result()
            log(f"{entry.id}: TF graph run on the parity images in {live_run.seconds:.1f}s (alongside the writing)")
            if pending.done:  # the reference is there: judge the live graph before going on
                before = _check_before(pending, live, arch, entry.id, log)
        release()
        outputs = _reload_savedmodels(tmp, variants, pending, options.input_range, arch, entry.id, log, release)
        after = {}
        if pending is not None:
            if before is None:
                before = _check_before(pending, live, arch, entry.id, log)
            after = _check_after(pending, outputs, arch, entry.id, log)
        del live, outputs
        ctx = pending.context() if pending is not None else None
        manifest = _manifest(
            entry, arch, options, checkpoint_path, checkpoint_params, source_url, sha256, variants, ctx, before, after
        )
        manifest["checkpoint"]["origin"] = checkpoint_origin
        try:
            for variant in VARIANTS:
                figures = _figures(after[variant], VARIANT_STAGES[variant], ctx) if ctx is not None else None
                card = render_card(
                    entry,
                    variant,
                    input_range=options.input_range,
                    source_url=source_url,
                    sha256=sha256,
                    parity=figures,
                    features=arch.features,
                )
                _write_text(tmp / card_file_name(variant), card)
            if options.archive:
                from ..archive import write_archive

                for variant in VARIANTS:
                    t = time.perf_counter()
                    dest = write_archive(tmp / variant, tmp / archive_name(entry, variant))
                    manifest["variants"][variant]["archive"] = {"file": dest.name, "sha256": sha256_file(dest)}
                    log(f"{entry.id}: archived {variant} as {dest.name} in {time.perf_counter() - t:.1f}s")
            _write_text(tmp / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
            fsync_dir(tmp)
            publish_directory(tmp, final)
            fsync_dir(out)
        except OSError as exc:
            raise _io_error(f"cannot write the export of {entry.id} under {out}", exc) from exc
        published = True
    finally:
        if not published:
            shutil.rmtree(tmp, ignore_errors=True)
            if pending is not None:
                pending.abandon()
            if created_out:
                with contextlib.suppress(OSError):
                    out.rmdir()  # only if still empty: nothing of ours remains
    log(f"{entry.id}: exported to {final} in {time.perf_counter() - t_start:.1f}s")
    return ExportResult(entry.id, final, manifest)


class _LiveRun:
    """The live TF graph's stages on the parity images, computed in a background thread."""

    def __init__(self, graph, images: np.ndarray):
        self._graph, self._images = graph, images
        self._out: dict | None = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True, name="live-tf-run")
        self._thread.start()

    def _run(self) -> None:
        import tensorflow as tf

        t = time.perf_counter()
        try:
            self._out = {k: v.numpy() for k, v in self._graph(tf.constant(self._images)).items()}
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc
        finally:
            self._graph = None
            self.seconds = time.perf_counter() - t

    def result(self) -> dict:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


class _PendingReference:
    """The JAX reference of one export: computed in this process now, or by a worker process.

    The worker is ``convert.parity``'s reference worker (``python -m convert.parity``):
    it reads and validates the same checkpoint file itself, so this process
    need not keep the arrays for it, and its Flax tracing and XLA compilation
    do not compete with TF for this process's GIL (a thread did; see
    convert.parity.run_parity).
    """

    def __init__(self, checkpoint, images, names, resolution: int, batch: int, background: bool):
        self.images, self.names, self.resolution, self.batch = images, names, resolution, batch
        self._arch = checkpoint.architecture
        self._reference = None
        self._proc = None
        self._workdir = None
        if background:
            import tempfile

            from ..parity import start_reference_worker

            self._workdir = Path(tempfile.mkdtemp(prefix="bitconvert-export-reference-"))
            self._proc = start_reference_worker(checkpoint.path, self._arch, images, names, self._workdir, float32=False)
        else:
            from ..parity import reference_outputs

            self._compute = lambda: reference_outputs(checkpoint, images, names, float32=False)

    @property
    def done(self) -> bool:
        return self._reference is not None

    def result(self, model_id: str, log: Log):
        if self._reference is None:
            if self._proc is not None:
                from ..parity import finish_reference_worker

                try:
                    self._reference = finish_reference_worker(self._proc, self._arch, self.images, self.names, self._workdir)
                except (RuntimeError, OSError, ValueError) as exc:
                    raise ExportError(f"{model_id}: the JAX reference could not be computed: {exc}") from exc
                finally:
                    self.abandon()
            else:
                self._reference = self._compute()
                del self._compute
            timings = self._reference.timings
            log(
                f"{model_id}: JAX reference on {len(self.images)} images {self.resolution}x{self.resolution}: "
                f"float64 {timings.get('jax_f64_s', 0):.1f}s" + (" (in a worker process)" if self._proc is not None else "")
            )
        return self._reference

    def abandon(self) -> None:
        """Stop a still-running worker (on failure) and remove its scratch directory."""
        if self._proc is not None:
            from ..parity import stop_reference_worker

            stop_reference_worker(self._proc)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def context(self) -> _ParityContext:
        return _ParityContext(self.images, self.names, self._reference, self.resolution, self.batch)


def _check_before(pending: _PendingReference, live: dict, arch, model_id: str, log: Log):
    from ..parity import compare

    before = compare(pending.result(model_id, log), live, arch)
    log(f"{model_id}: parity before export (live TF graph): {_summary_line(before, ('pre_logits', 'logits'))}")
    if not before.passed:
        raise ParityError(
            f"{model_id}: the TF graph does not reproduce JAX before export (failed at {', '.join(before.failed_stages)}, "
            f"relative error {max(s.tf_rel_l2_f64 for s in before.stages.values()):.2e} > {before.tolerance:.1e}); "
            "nothing exported",
            before,
        )
    return before


def _check_after(pending: _PendingReference, outputs: dict, arch, model_id: str, log: Log) -> dict:
    from ..parity import compare

    reports = {}
    for variant in VARIANTS:
        stage = VARIANT_STAGES[variant]
        report = compare(pending.result(model_id, log), {stage: outputs[variant]}, arch)
        reports[variant] = report
        log(f"{model_id}: parity after export, {variant} reloaded from disk: {_summary_line(report, (stage,))}")
        if not report.passed:
            raise ParityError(
                f"{model_id}: the reloaded {variant} SavedModel does not reproduce JAX "
                f"({stage} relative error {report.stages[stage].tf_rel_l2_f64:.2e} > {report.tolerance:.1e}); "
                "export removed",
                report,
            )
    return reports


def _write_savedmodels(net, tmp: Path, input_range: str, model_id: str, log: Log) -> dict[str, dict]:
    """Save both variants under ``tmp``; returns per-variant facts for the manifest."""
    import tensorflow as tf

    facts: dict[str, dict] = {}
    for variant in VARIANTS:
        t = time.perf_counter()
        root = build_exportable(net, variant, input_range)
        path = tmp / variant
        try:
            tf.saved_model.save(root, str(path), signatures={"serving_default": root.serving_default})
        except (OSError, tf.errors.OpError) as exc:
            raise _io_error(f"cannot write the {variant} SavedModel of {model_id} to {path}", exc) from exc
        facts[variant] = {
            "variables": len(root.variables),
            "trainable_variables": len(root.trainable_variables),
            "parameters": int(sum(int(np.prod(v.shape)) for v in root.variables)),
        }
        del root
        log(f"{model_id}: wrote the {variant} SavedModel in {time.perf_counter() - t:.1f}s")
    return facts


def _probe_images() -> np.ndarray:
    """One non-square image in the model's [-1, 1], to prove a reloaded model runs when parity is skipped."""
    return np.random.default_rng(0).uniform(-1.0, 1.0, (1, _PROBE_SIZE, _PROBE_SIZE + 8, 3)).astype(np.float32)


def _check_reloaded_api(loaded, variant: str, facts: dict, model_id: str, classes_or_features: int) -> None:
    """The Reusable SavedModel API and the signature, as users will find them."""
    import tensorflow as tf

    problems = []
    for attr in ("variables", "trainable_variables", "regularization_losses"):
        if not hasattr(loaded, attr):
            problems.append(f"no {attr}")
    if not problems:
        if len(loaded.variables) != facts["variables"]:
            problems.append(f"{len(loaded.variables)} variables, expected {facts['variables']}")
        if len(loaded.trainable_variables) != facts["trainable_variables"]:
            problems.append(f"{len(loaded.trainable_variables)} trainable variables, expected {facts['trainable_variables']}")
        if list(loaded.regularization_losses):
            problems.append("unexpected regularization losses")
    signature = loaded.signatures.get("serving_default")
    key = OUTPUT_KEYS[variant]
    if signature is None:
        problems.append("no serving_default signature")
    else:
        _, inputs = signature.structured_input_signature
        if list(inputs) != [INPUT_NAME]:
            problems.append(f"signature inputs {sorted(inputs)}, expected [{INPUT_NAME!r}]")
        if list(signature.structured_outputs) != [key]:
            problems.append(f"signature outputs {sorted(signature.structured_outputs)}, expected [{key!r}]")
        else:
            # Checked from the signature's specs, not by running it: a second function run
            # costs a graph optimisation (about 8 s on R152x2); the tests run it.
            in_spec, out_spec = inputs[INPUT_NAME], signature.structured_outputs[key]
            if in_spec.shape.as_list() != [None, None, None, 3] or in_spec.dtype != tf.float32:
                problems.append(f"signature input {in_spec}, expected float32 [None, None, None, 3]")
            if out_spec.shape.as_list() != [None, classes_or_features] or out_spec.dtype != tf.float32:
                problems.append(f"signature output {out_spec}, expected float32 [None, {classes_or_features}]")
    if problems:
        raise ExportError(f"{model_id}: the reloaded {variant} SavedModel is not as written: {'; '.join(problems)}")


def _reload_savedmodels(
    tmp: Path, facts: dict, pending, input_range: str, arch, model_id: str, log: Log, release: Callable[[], object]
) -> dict:
    """Reload each variant from disk, check its API and signature; its outputs on the parity images."""
    import tensorflow as tf

    outputs = {}
    for variant in VARIANTS:
        t = time.perf_counter()
        path = tmp / variant
        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, tf.errors.OpError) as exc:
            raise ExportError(f"{model_id}: the {variant} SavedModel just written does not load: {exc}") from exc
        width = arch.classes if variant == "classification" else arch.features
        _check_reloaded_api(loaded, variant, facts[variant], model_id, width)
        facts[variant]["fingerprint"] = _fingerprint(path)
        images = pending.images if pending is not None else _probe_images()
        result = loaded(tf.constant(_to_model_range(images, input_range))).numpy()
        if result.shape != (len(images), width):
            raise ExportError(
                f"{model_id}: the reloaded {variant} SavedModel returns {result.shape}, expected ({len(images)}, {width})"
            )
        if pending is not None:
            outputs[variant] = result
        del loaded
        release()  # the loaded model's weights, before the next variant is loaded
        log(f"{model_id}: reloaded and checked the {variant} SavedModel in {time.perf_counter() - t:.1f}s")
    return outputs


def _fingerprint(path: Path) -> dict:
    import tensorflow as tf

    fp = tf.saved_model.experimental.read_fingerprint(str(path))
    files = {"saved_model.pb": sha256_file(path / "saved_model.pb")}
    for f in sorted((path / "variables").iterdir()):
        files[f"variables/{f.name}"] = sha256_file(f)
    return {
        "singleprint": fp.singleprint(),
        "saved_model_checksum": int(fp.saved_model_checksum),
        "sha256": files,
    }


def _manifest(entry, arch, options, checkpoint_path, parameters, source_url, sha256, variants, ctx, before, after) -> dict:
    lo, hi = INPUT_RANGES[options.input_range]
    parity: dict = {"checked": ctx is not None}
    if ctx is None:
        parity["note"] = "exported with --skip-parity: not compared with the JAX reference"
    else:
        parity.update(
            resolution=ctx.resolution,
            random_images=ctx.batch,
            seed=options.parity_seed,
            inputs=list(ctx.names),
            tolerance=before.tolerance,
            before_export=_report_dict(before),
            after_export={v: _report_dict(r) for v, r in after.items()},
        )
    size = checkpoint_path.stat().st_size
    return {
        "format": MANIFEST_FORMAT,
        "model": entry.as_dict(),
        "architecture": {
            "name": arch.name,
            "units": list(arch.units),
            "width": arch.width,
            "classes": arch.classes,
            "features": arch.features,
        },
        "source_url": source_url,
        "checkpoint": {"file": checkpoint_path.name, "bytes": size, "sha256": sha256, "parameters": parameters},
        "registry_sha256_match": None if not entry.sha256 else entry.sha256 == sha256,
        "input": {
            "name": INPUT_NAME,
            "range": options.input_range,
            "min": lo,
            "max": hi,
            "shape": [None, None, None, 3],
            "dtype": "float32",
            "native_resolution": entry.resolution,
        },
        "variants": {
            v: {
                "path": v,
                "card": card_file_name(v),
                "output": OUTPUT_KEYS[v],
                "output_shape": [None, arch.classes if v == "classification" else arch.features],
                **variants[v],
                "archive": None,
            }
            for v in VARIANTS
        },
        "parity": parity,
        "versions": library_versions(),
    }
