"""``export_model``: one export as a sequence of named steps, each returning what the next needs.

Order of work, so that failures cost little and leave nothing behind:

1. read the checkpoint strictly (any reader error stops here: nothing written);
2. unless ``skip_parity``: start the JAX reference (float64 only: the verdict
   is taken against float64) where its Placement says (convert.parity.placement);
3. build the TF graph; start what the targets' checks prepare (the Keras
   check processes, which import keras and their backend meanwhile); run the
   graph on the parity images in a thread while the targets write into
   ``<out>/.<id>.tmp-<pid>``;
4. each target reloads what it wrote from disk and runs it; every run is
   compared with the JAX reference (judge.py); cards and manifest are written;
5. only then the temporary directory replaces ``<out>/<id>`` atomically. Any
   failure (parity, full disk, Ctrl-C) removes the temporary directory; a
   killed process leaves only that directory, which the next export clears.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint, load_checkpoint
from ..fetch import sha256_file
from ..fetch import source_url as bucket_url
from ..fsutil import atomic_write
from ..model.architecture import Architecture
from ..registry import ModelEntry
from . import judge
from .cards.model_card import INPUT_RANGES
from .formats import DEFAULT, get_targets
from .labels_asset import write_label_files
from .manifest import MANIFEST_NAME, build_manifest, manifest_data, manifest_text
from .publish import check_free_space, io_error, publish, temporary_export
from .target import COLLECT_ABOVE_BYTES, VARIANT_STAGES, Artifact, ExportJob, Run

#: Default parity input size cap: 224, the size BiT was pre-trained at (the graph is
#: the same at every size; `bitconvert verify --resolution` checks any size).
PARITY_MAX_RESOLUTION = 224
#: Size of the image a reloaded artifact is run on when parity is skipped (cheap at any depth).
_PROBE_SIZE = 64

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def _no_collection() -> int:
    return 0


@dataclass
class ExportOptions:
    """How to export. The defaults are the CLI's defaults."""

    output_dir: Path = Path("exports")
    input_range: str = "unit"
    archive: bool = False
    skip_parity: bool = False
    #: Random images in the parity check (the five structured ones always come on top).
    parity_batch: int = 1
    #: Parity input size; None: the entry's native resolution, at most PARITY_MAX_RESOLUTION.
    parity_resolution: int | None = None
    parity_seed: int = 0
    #: --format values, in any order (written in the order of convert.export.formats).
    formats: tuple[str, ...] = (DEFAULT,)
    #: Where the JAX reference runs: auto, worker or inline (convert.parity.placement.place).
    reference: str = "auto"
    #: --kaggle OWNER/MODEL: also write Kaggle Models metadata (convert.export.kaggle).
    kaggle: str | None = None
    #: The machine's facts for the placement, instead of measuring them (tests, benchmarks).
    machine: object | None = None  # convert.parity.placement.MachineFacts
    #: --forward: "authors" (the code that trained the checkpoint) or "zero-pool" (convert.model.forward).
    forward: str = "authors"

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {tuple(INPUT_RANGES)}, got {self.input_range!r}")


@dataclass
class ExportResult:
    model_id: str
    path: Path
    manifest: dict = field(repr=False)


@dataclass(frozen=True)
class Source:
    """The checkpoint, read and identified (step 1)."""

    checkpoint: Checkpoint
    path: Path
    sha256: str
    source_url: str
    parameters: int

    @property
    def weight_bytes(self) -> int:
        return self.parameters * 4


@dataclass(frozen=True)
class ParityInputs:
    images: np.ndarray  # in the model's [-1, 1]
    names: list[str]
    resolution: int
    batch: int


def _to_input_range(images: np.ndarray, input_range: str) -> np.ndarray:
    """Images in the model's [-1, 1] expressed in the export's input range (the inverse of pixels_to_model_range)."""
    lo, hi = INPUT_RANGES[input_range]
    return ((images + 1.0) * ((hi - lo) / 2.0) + lo).astype(np.float32)


def _probe_images() -> np.ndarray:
    """One non-square image in the model's [-1, 1], to prove a reloaded model runs when parity is skipped."""
    return np.random.default_rng(0).uniform(-1.0, 1.0, (1, _PROBE_SIZE, _PROBE_SIZE + 8, 3)).astype(np.float32)


def read_source(entry, path: Path, arch, options: ExportOptions, sha256, source_url, log: Log) -> Source:
    """Step 1: read everything strictly before anything is written; refuse a disk that cannot hold the export."""
    t = time.perf_counter()
    checkpoint = load_checkpoint(path, arch)
    log(f"{entry.id}: read {path} ({arch.name}, {checkpoint.parameters:,} parameters) in {time.perf_counter() - t:.1f}s")
    sha256 = sha256 or sha256_file(path)
    if entry.sha256 and sha256 != entry.sha256:
        log(f"{entry.id}: warning: checkpoint sha256 {sha256} differs from the registry's {entry.sha256}")
    source = Source(checkpoint, path, sha256, source_url or bucket_url(entry), checkpoint.parameters)
    # Two variants per target; the archives of random-looking floats barely compress.
    check_free_space(options.output_dir, int(source.weight_bytes * (4 if options.archive else 2) * 1.05))
    return source


def start_reference(entry, source: Source, options: ExportOptions, window, log: Log):
    """Step 2: (PendingReference, ParityInputs), or (None, None) with --skip-parity."""
    if options.skip_parity:
        return None, None
    from ..parity import PendingReference, make_inputs
    from ..parity.placement import measure, place

    resolution = options.parity_resolution or min(entry.resolution, PARITY_MAX_RESOLUTION)
    images, names = make_inputs(resolution, options.parity_batch, options.parity_seed)
    facts = options.machine or measure(window, source.weight_bytes, source.path.is_file())
    placement = place(facts, options.reference)
    log(f"{entry.id}: JAX reference {placement.describe()}")
    padding = entry.forward(options.forward).root_pool_padding
    pending = PendingReference(source.checkpoint, images, names, placement, float32=False, pool_padding=padding)
    return pending, ParityInputs(images, names, resolution, options.parity_batch)


def wait_reference(pending, inputs: ParityInputs, model_id: str, log: Log):
    """The reference, waited for; logged once when it arrives."""
    fresh = not pending.done
    ref = pending.result()
    if fresh:
        worker = " (in a worker process)" if pending.placement.where.in_worker else ""
        log(
            f"{model_id}: JAX reference on {len(inputs.images)} images {inputs.resolution}x{inputs.resolution}: "
            f"float64 {ref.timings.get('jax_f64_s', 0):.1f}s{worker}"
        )
    return ref


def build_graph(entry, source: Source, pending, inputs, log: Log, forward=None):
    """Step 3: the TF graph holding the weights (the numpy copies dropped), and the release policy."""
    from ..parity import Where

    where = pending.placement.where if pending is not None else None
    if where is Where.INLINE:  # computed now, before TensorFlow is even imported
        wait_reference(pending, inputs, entry.id, log)
    import tensorflow  # noqa: F401

    if where is Where.WORKER_FIRST:  # only the TF import ran beside it: building now would add both peaks
        wait_reference(pending, inputs, entry.id, log)
    from ..model.tf_model import build_tf_model

    t = time.perf_counter()
    net = build_tf_model(source.checkpoint, pool_pad=forward.root_pool_padding if forward is not None else "zero")
    source.checkpoint.arrays.clear()  # the TF variables hold the weights now (R152x2: 0.95 GB)
    # A full collection costs about 0.4 s with TF loaded: worth it only for big checkpoints.
    release = gc.collect if source.weight_bytes >= COLLECT_ABOVE_BYTES else _no_collection
    release()
    log(f"{entry.id}: TF graph built in {time.perf_counter() - t:.1f}s")
    return net, release


def start_live_run(net, inputs: ParityInputs | None):
    """The live graph's stages on the parity images, in a thread while the targets write."""
    if inputs is None:
        return None
    import tensorflow as tf

    from ..parity import tf_stage_function

    graph = tf_stage_function(net).get_concrete_function()
    # Its first call takes names from TF's process-wide counter, as the SavedModels'
    # traces do: made here, in order, so that the thread cannot make re-exports differ.
    graph(tf.zeros([1, 32, 32, 3]))
    return judge.LiveRun(graph, inputs.images)


def prepare_targets(targets, job: ExportJob, images: np.ndarray) -> dict[str, object]:
    """What each target's check needs started before anything is written (the Keras processes import meanwhile)."""
    return {t.name: t.prepare(job, images) for t in targets if hasattr(t, "prepare")}


def write_targets(targets, job: ExportJob) -> dict[str, list[Artifact]]:
    return {t.name: t.write(job) for t in targets}


def check_targets(targets, job: ExportJob, written, images: np.ndarray, prepared: dict) -> dict[str, list[Run]]:
    """Start every target's check, then wait for each (in-process checks run while children work)."""
    waits = {t.name: t.check(job, written[t.name], images, prepared.get(t.name)) for t in targets}
    return {name: wait() for name, wait in waits.items()}


def judge_all(runs: dict[str, list[Run]], reference, n_images: int, arch, model_id: str, log: Log) -> dict:
    """Shape of every run, then (with a reference) its parity: {(target, path): {runtime: report}}."""
    reports: dict = {}
    for target_runs in runs.values():
        for run in target_runs:
            judge.check_shape(run, n_images, arch, model_id)
            if reference is not None:
                key = (run.artifact.target, run.artifact.path)
                reports.setdefault(key, {})[run.runtime] = judge.judge_run(reference, run, arch, model_id, log)
    return reports


def write_cards(targets, job: ExportJob, written, reports: dict, inputs: ParityInputs | None) -> dict[tuple, str]:
    """Each artifact's card next to it (``classification/`` -> ``classification.md``); {(target, path): card path}."""
    cards = {}
    for target in targets:
        for artifact in written[target.name]:
            figures = None
            if inputs is not None:
                stage = VARIANT_STAGES[artifact.variant]
                figures = {
                    runtime: judge.figures(r, stage, inputs.resolution, len(inputs.images), inputs.batch)
                    for runtime, r in reports[(target.name, artifact.path)].items()
                }
            text = target.card(job, artifact, figures)
            if text is not None:
                card = Path(artifact.path).with_suffix(".md").as_posix()
                atomic_write(job.export_dir / card, text)
                cards[(target.name, artifact.path)] = card
    return cards


def export_model(
    entry: ModelEntry,
    checkpoint_path: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    source_url: str | None = None,
    sha256: str | None = None,
    checkpoint_origin: str | None = None,
    arch: Architecture | None = None,
    labels: tuple[str, ...] | None = None,
    log: Log = _quiet,
) -> ExportResult:
    """Export ``entry`` from the checkpoint at ``checkpoint_path`` in each of ``options.formats``.

    ``source_url``: where the checkpoint came from (manifest, cards; default the
    official bucket URL). ``sha256``: the file's digest when already known.
    ``checkpoint_origin``: how the file was obtained (the CLI says ``cache`` or
    ``--checkpoint``). ``arch``: override the entry's architecture (reduced test
    layouts only). ``labels``: the classifier's class names (convert.labels), embedded
    by every target; None exports indices only. Raises CheckpointError, ParityError, ExportError,
    LocalIOError, JaxReferenceError, UsageError; on any failure nothing exists
    at ``<out>/<id>`` that was not there before.
    """
    from ..resources import CpuWindow

    options = options or ExportOptions()
    arch = arch or entry.architecture
    targets = get_targets(options.formats)
    t_start = time.perf_counter()
    # How busy other processes keep the CPUs, measured while the checkpoint is read.
    window = CpuWindow() if options.reference == "auto" and options.machine is None else None
    source = read_source(entry, Path(checkpoint_path), arch, options, sha256, source_url, log)
    pending, inputs = start_reference(entry, source, options, window, log)
    final = options.output_dir / entry.id
    try:
        with temporary_export(options.output_dir, entry.id, log) as tmp:
            forward = entry.forward(options.forward)
            job = ExportJob(
                entry.id,
                entry,
                arch,
                None,
                options.input_range,
                tmp,
                log,
                labels,
                source.source_url,
                source.sha256,
                forward=forward,
            )
            manifest = _export_into(job, targets, options, source, checkpoint_origin, pending, inputs)
            try:
                atomic_write(tmp / MANIFEST_NAME, manifest_text(manifest))
                publish(tmp, final)
            except OSError as exc:
                raise io_error(f"cannot write the export of {entry.id} under {options.output_dir}", exc) from exc
    finally:
        if pending is not None:
            pending.abandon()
    log(f"{entry.id}: exported to {final} in {time.perf_counter() - t_start:.1f}s")
    return ExportResult(entry.id, final, manifest)


def _export_into(job: ExportJob, targets, options, source, origin, pending, inputs) -> dict:
    """Steps 3-4 inside the temporary directory: write and check, judge, cards, archives, manifest."""
    images = _to_input_range(inputs.images if inputs is not None else _probe_images(), job.input_range)
    job, written, runs, live_out, before = _write_and_check(job, targets, source, pending, inputs, images)
    reference = wait_reference(pending, inputs, job.model_id, job.log) if pending is not None else None
    if reference is not None and before is None:
        before = judge.judge_live(reference, live_out, job.arch, job.model_id, job.log)
    reports = judge_all(runs, reference, len(images), job.arch, job.model_id, job.log)
    try:
        write_label_files(job, written)  # labels_asset
        cards = write_cards(targets, job, written, reports, inputs)
        archives = None
        if options.archive and "savedmodel" in written:
            archives = next(t for t in targets if t.name == "savedmodel").archive(job, written["savedmodel"])
    except OSError as exc:
        raise io_error(f"cannot write the export of {job.model_id} under {options.output_dir}", exc) from exc
    checked = (reports, cards, archives, inputs, before)
    manifest = build_manifest(manifest_data(job, options, source, origin, written, runs, checked))
    if options.kaggle:
        from .kaggle import write_kaggle

        write_kaggle(job, options.kaggle, manifest, written, cards)
    return manifest


def _write_and_check(job: ExportJob, targets, source, pending, inputs, images):
    """Build the TF graph, start the targets' checks' processes, write, judge the live graph, check.

    Returns (the job without the TF graph, written, runs, the live graph's
    outputs, its parity report if the reference was already there). The TF
    graph exists only here, in ``net`` and the written-to job: once every
    target has written, both go, so no caller keeps the weights alive while reloading.
    """
    net, release = build_graph(job.entry, source, pending, inputs, job.log, job.forward)
    prepared = prepare_targets(targets, job, images)
    try:
        live = start_live_run(net, inputs)
        written = write_targets(targets, dataclasses.replace(job, net=net, release=release))
        del net
        job = dataclasses.replace(job, release=release)
        out = before = None
        if live is not None:
            out = live.result()
            job.log(f"{job.model_id}: TF graph run on the parity images in {live.seconds:.1f}s (alongside the writing)")
            if pending.done:  # the reference is there: judge the live graph before going on
                before = judge.judge_live(pending.result(), out, job.arch, job.model_id, job.log)
        job.release()
        runs = check_targets(targets, job, written, images, prepared)
    finally:
        for handle in prepared.values():
            handle.stop()
    return job, written, runs, out, before
