"""``export_model``: one export as a sequence of named steps, each returning what the next needs.

Order of work, so that failures cost little and leave nothing behind:

1. read the checkpoint strictly (any reader error stops here: nothing written);
2. unless ``skip_parity``: start the JAX reference (float64 only: the verdict
   is taken against float64) where its Placement says (convert.parity.placement);
3. build the TF graph; start what the targets' checks prepare (child
   processes that import their runtime meanwhile); run the live model on the
   parity images (judged at once if the reference is there); the targets write into
   ``<out>/.<id>.tmp-<pid>-<random>`` (locked while the export runs: convert.export.publish);
4. each target reloads what it wrote from disk and runs it; every run is
   compared with the JAX reference (judge.py); labels, cards, each target's
   finishing step, the manifest and the Kaggle metadata are written;
5. only then the temporary directory replaces ``<out>/<id>`` atomically. Any
   failure (parity, full disk) removes the temporary directory, and so does a signal
   (convert.interrupts); a killed process leaves only that directory, which the next export clears.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..checkpoint import load_checkpoint
from ..fetch import sha256_file
from ..fetch import source_url as bucket_url
from ..fsutil import atomic_write
from ..imports import import_without
from ..interrupts import pause_point
from . import judge
from .formats import get_targets
from .labels_asset import write_label_file
from .manifest import MANIFEST_NAME, build_manifest, manifest_text
from .publish import check_export_path, check_free_space, export_bytes, io_error, publish, temporary_export
from .state import ExportOptions, ExportResult, ExportState, ParityInputs, Source
from .target import COLLECT_ABOVE_BYTES, INPUT_RANGES, VARIANT_STAGES, ExportJob, from_model_range

if TYPE_CHECKING:
    from ..model.architecture import Architecture
    from ..parity import Reference
    from ..registry import ModelEntry
    from .state import Log

__all__ = ["PARITY_MAX_RESOLUTION", "ExportOptions", "ExportResult", "export_model"]

#: Default parity input size cap: 224, the size BiT was pre-trained at (the graph is
#: the same at every size; `bitconvert verify --resolution` checks any size).
PARITY_MAX_RESOLUTION = 224
#: Size of the image a reloaded artifact is run on when parity is skipped (cheap at any depth).
_PROBE_SIZE = 64


def _quiet(_msg: str) -> None:
    pass


def _no_collection() -> int:
    return 0


def _probe_images() -> np.ndarray:
    """One non-square image in the model's [-1, 1], to prove a reloaded model runs when parity is skipped."""
    return np.random.default_rng(0).uniform(-1.0, 1.0, (1, _PROBE_SIZE, _PROBE_SIZE + 8, 3)).astype(np.float32)


def read_source(state: ExportState, path: Path, sha256: str | None, source_url: str | None) -> None:
    """Step 1: read everything strictly before anything is written; refuse a disk that cannot hold the export."""
    entry, options = state.entry, state.options
    t = time.perf_counter()
    checkpoint = load_checkpoint(path, state.arch)
    state.log(
        f"{entry.id}: read {path} ({state.arch.name}, {checkpoint.parameters:,} parameters) in {time.perf_counter() - t:.1f}s"
    )
    sha256 = sha256 or sha256_file(path)
    if entry.sha256 and sha256 != entry.sha256:
        state.log(f"{entry.id}: warning: checkpoint sha256 {sha256} differs from the registry's {entry.sha256}")
    state.source = Source(checkpoint, path, sha256, source_url or bucket_url(entry), checkpoint.parameters)
    check_free_space(options.output_dir, export_bytes(state.source.weight_bytes, state.targets, options))


def start_reference(state: ExportState, window) -> None:
    """Step 2: unless --skip-parity, the parity images and the JAX reference, started where the placement says."""
    options, source = state.options, state.source
    if not options.skip_parity:
        from ..parity import PendingReference, make_inputs
        from ..parity.placement import decide

        resolution = options.parity_resolution or min(state.entry.resolution, PARITY_MAX_RESOLUTION)
        images, names = make_inputs(resolution, options.parity_batch, options.parity_seed)
        placement = decide(options.reference, source.weight_bytes, source.path.is_file(), window=window, machine=options.machine)
        state.log(f"{state.model_id}: JAX reference {placement.describe()}")
        padding = state.entry.forward(options.forward).root_pool_padding
        state.pending = PendingReference(source.checkpoint, images, names, placement, float32=False, pool_padding=padding).start()
        pause_point("reference")
        state.inputs = ParityInputs(images, names, resolution, options.parity_batch)
    probe = state.inputs.images if state.inputs is not None else _probe_images()
    state.images = from_model_range(probe, *INPUT_RANGES[options.input_range])


def wait_reference(state: ExportState) -> Reference | None:
    """The reference (None with --skip-parity), waited for the first time it is asked for; logged once."""
    if state.pending is None or state.reference is not None:
        return state.reference
    state.reference = ref = state.pending.result()
    from ..parity.inputs import size_text

    worker = " (in a worker process)" if state.pending.placement.where.in_worker else ""
    state.log(
        f"{state.model_id}: JAX reference on {len(state.inputs.images)} images {size_text(state.inputs.resolution)}: "
        f"float64 {ref.timings.get('jax_f64_s', 0):.1f}s{worker}"
    )
    return ref


def build_graph(state: ExportState, export_dir: Path) -> None:
    """Step 3: the TF graph holding the weights (the numpy copies dropped), in the job every target is given."""
    from ..parity import Where

    where = state.pending.placement.where if state.pending is not None else None
    if where is Where.INLINE:  # computed now, before TensorFlow is even imported
        wait_reference(state)
    import_without("tensorflow")  # JAX, which TensorFlow imports when installed, runs elsewhere or ran already

    if where is Where.WORKER_FIRST:  # only the TF import ran beside it: building now would add both peaks
        wait_reference(state)
    from ..model.tf_model import build_tf_model

    t = time.perf_counter()
    source = state.source
    forward = state.entry.forward(state.options.forward)
    # The checkpoint's arrays go one by one as the variables take them: the weights never exist twice.
    net = build_tf_model(source.checkpoint, pool_pad=forward.root_pool_padding, release=True)
    # A full collection costs about 0.4 s with TF loaded: worth it only for big checkpoints.
    release = gc.collect if source.weight_bytes >= COLLECT_ABOVE_BYTES else _no_collection
    release()
    state.log(f"{state.model_id}: TF graph built in {time.perf_counter() - t:.1f}s")
    state.job = ExportJob(
        model_id=state.model_id,
        entry=state.entry,
        arch=state.arch,
        net=net,
        input_range=state.options.input_range,
        export_dir=export_dir,
        log=state.log,
        labels=state.labels,
        source_url=source.source_url,
        sha256=source.sha256,
        release=release,
        forward=forward,
    )


def run_live_model(state: ExportState) -> None:
    """The live TF model's stages on the parity images, before anything is written; judged now if the reference is there."""
    if state.inputs is None:
        return
    import tensorflow as tf

    t = time.perf_counter()
    # In the SavedModels' form (block 4 standardising its outputs), so what is judged before writing is
    # what they compute; eagerly it is also the cheaper form (docs/performance.md, session 23).
    # Eagerly and in this thread: the same kernels and values as a traced graph (tested) without the
    # trace and graph optimisation a single call would pay for (docs/performance.md). Every eager
    # tensor takes a number from TF's process-wide counter, which also names the targets' traced
    # functions: run beside them, it would make re-exports differ; run here, first, it cannot.
    stages = state.job.net.as_saved().stages(tf.constant(state.inputs.images))
    state.live = {name: value.numpy() for name, value in stages.items()}
    del stages
    state.log(f"{state.model_id}: TF model run on the parity images in {time.perf_counter() - t:.1f}s")
    judge_live_graph(state, wait=False)  # a wrong graph stops here, before any file is written


def judge_live_graph(state: ExportState, *, wait: bool) -> None:
    """The live graph against the reference, once: now if the reference is there (or ``wait``), else later."""
    if state.live is None or state.before is not None or not (wait or state.pending.done):
        return
    state.before = judge.judge_live(wait_reference(state), state.live, state.arch, state.model_id, state.log)


def write_and_check(state: ExportState) -> None:
    """Start what the checks prepare, run the live model, write every target, drop the TF graph, check from disk."""
    job, targets = state.job, state.targets
    prepared: dict[str, object] = {}
    try:
        for t in targets:
            prepared[t.name] = t.prepare(job, state.images)
        run_live_model(state)
        for t in targets:
            state.written[t.name] = t.write(job)
            pause_point("write")
        state.job = job = job.without_net()  # the TF weights go before anything is reloaded
        judge_live_graph(state, wait=False)  # if the reference came while the targets wrote
        job.release()
        # Every check starts, then each is waited for (in-process checks run while children work).
        waits = {t.name: t.check(job, state.written[t.name], state.images, prepared.get(t.name)) for t in targets}
        pause_point("check")
        state.runs = {name: wait() for name, wait in waits.items()}
    finally:
        for handle in prepared.values():
            if handle is not None:
                handle.stop()


def judge_runs(state: ExportState) -> None:
    """Shape of every run, then (with a reference) its parity, by (target, path) and runtime."""
    reference = wait_reference(state)
    judge_live_graph(state, wait=True)
    for target in state.targets:
        for run in state.runs[target.name]:
            judge.check_shape(target, run, len(state.images), state.arch, state.model_id)
            if reference is not None:
                report = judge.judge_run(reference, target, run, state.arch, state.model_id, state.log)
                state.reports.setdefault((target.name, run.artifact.path), {})[run.runtime] = report


def write_labels(state: ExportState) -> None:
    """The class names beside every classifier whose target does not embed them."""
    if state.labels is None:
        return
    for target, artifact in state.artifacts():
        if artifact.variant == "classification" and not target.embeds_labels:
            write_label_file(state.job.export_dir, target.labels_path(artifact), state.labels)


def write_cards(state: ExportState) -> None:
    """Each artifact's card next to it (``classification/`` -> ``classification.md``)."""
    inputs = state.inputs
    for target, artifact in state.artifacts():
        figures = None
        if inputs is not None:
            stage = VARIANT_STAGES[artifact.variant]
            figures = {
                runtime: judge.figures(r, stage, inputs.resolution, len(inputs.images), inputs.batch)
                for runtime, r in state.reports[(target.name, artifact.path)].items()
            }
        text = target.card(state.job, artifact, figures)
        if text is not None:
            card = Path(artifact.path).with_suffix(".md").as_posix()
            atomic_write(state.job.export_dir / card, text)
            state.cards[(target.name, artifact.path)] = card


def finish_targets(state: ExportState) -> None:
    """Each target's last step on its proven artifacts (ExportTarget.finish: archives, for one)."""
    state.written = {t.name: t.finish(state.job, state.written[t.name], state.options) for t in state.targets}


def export_model(
    entry: ModelEntry,
    checkpoint_path: str | os.PathLike,
    options: ExportOptions | None = None,
    *,
    source_url: str | None = None,
    sha256: str | None = None,
    checkpoint_origin: str | None = None,
    arch: Architecture | None = None,
    labels: tuple[str, ...] | Callable[[], tuple[str, ...] | None] | None = None,
    log: Log = _quiet,
) -> ExportResult:
    """Export ``entry`` from the checkpoint at ``checkpoint_path`` in each of ``options.formats``.

    ``source_url``: where the checkpoint came from (manifest, cards; default the
    official bucket URL). ``sha256``: the file's digest when already known.
    ``checkpoint_origin``: how the file was obtained (the CLI says ``cache`` or
    ``--checkpoint``). ``arch``: override the entry's architecture (reduced test
    layouts only). ``labels``: the classifier's class names (convert.labels), embedded
    by every target; None exports indices only; a function is called once the checkpoint is read
    (a label download never delays a checkpoint's error). Raises CheckpointError, ParityError, ExportError,
    LocalIOError, JaxReferenceError, UsageError; on any failure nothing exists
    at ``<out>/<id>`` that was not there before.
    """
    from ..parity.placement import start_window

    options = options or ExportOptions()
    targets = get_targets(options.formats)
    state = ExportState(entry, arch or entry.architecture, options, targets, log, labels, checkpoint_origin)
    t_start = time.perf_counter()
    # How busy other processes keep the CPUs, measured while the checkpoint is read.
    window = start_window(options.reference, options.machine)
    final = options.output_dir / entry.id
    check_export_path(final, Path(checkpoint_path))  # before anything costly
    read_source(state, Path(checkpoint_path), sha256, source_url)
    if callable(state.labels):  # a label download never delays a checkpoint's error
        state.labels = state.labels()
    start_reference(state, window)
    try:
        with temporary_export(options.output_dir, entry.id, log) as tmp:
            _export_into(state, tmp)
            try:
                atomic_write(tmp / MANIFEST_NAME, manifest_text(state.manifest))
                publish(tmp, final, state.source.path)
            except OSError as exc:
                raise io_error(f"cannot write the export of {entry.id} under {options.output_dir}", exc) from exc
    finally:
        if state.pending is not None:
            state.pending.abandon()
    log(f"{entry.id}: exported to {final} in {time.perf_counter() - t_start:.1f}s")
    return ExportResult(entry.id, final, state.manifest, state.runs)


def _export_into(state: ExportState, tmp: Path) -> None:
    """Steps 3-4 inside the temporary directory: write and check, judge, labels, cards, finish, manifest, Kaggle."""
    build_graph(state, tmp)
    write_and_check(state)
    judge_runs(state)
    try:
        write_labels(state)
        write_cards(state)
        finish_targets(state)
    except OSError as exc:
        raise io_error(f"cannot write the export of {state.model_id} under {state.options.output_dir}", exc) from exc
    state.manifest = build_manifest(state)
    if state.options.kaggle:
        from .kaggle import write_kaggle

        write_kaggle(state)
