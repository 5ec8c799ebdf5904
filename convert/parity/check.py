"""The whole check of ``bitconvert verify``: TF graph and JAX reference on the same inputs, every stage compared."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from ..imports import import_without
from .compare import ParityReport, compare
from .inputs import make_inputs
from .pending import PendingReference
from .placement import decide, start_window


def tf_stage_function(model):
    """``tf.function`` over ``model.stages`` with input signature [None, None, None, 3] float32."""
    import tensorflow as tf

    return tf.function(
        model.stages, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")], autograph=False
    )


def run_parity(
    checkpoint,
    resolution,
    batch: int = 2,
    seed: int = 0,
    *,
    model_id: str | None = None,
    log=None,
    reference: str = "auto",
    window=None,
    forward=None,
) -> ParityReport:
    """Build the TF graph (the SavedModels' form), run both sides (JAX in float32 and float64), compare every stage.

    ``checkpoint``: a loaded :class:`convert.checkpoint.Checkpoint`;
    ``resolution``: int or (height, width); ``log``: optional callable for
    progress lines. ``reference``: auto, worker or inline
    (:func:`convert.parity.placement.place`; auto measures the other
    processes' CPU use over ``window``, a CpuWindow the caller started before
    reading the checkpoint). In a worker the JAX reference overlaps the TF
    work; a checkpoint built in memory always runs inline. ``forward``: the
    :class:`convert.model.forward.ForwardPass` both sides compute (None: zero
    padding, big_transfer's); it lands in ``report.info["forward"]``, with the
    timings (seconds) and the TF tracing count.
    """
    log = log or (lambda msg: None)
    info: dict = {"model": model_id} if model_id else {}
    pool_padding = forward.root_pool_padding if forward is not None else "zero"
    info["forward"] = forward.as_dict() if forward is not None else {"root_pool_padding": pool_padding}
    images, names = make_inputs(resolution, batch, seed)
    t0 = time.perf_counter()
    path = getattr(checkpoint, "path", None)
    file_backed = path is not None and Path(path).is_file()
    window = window or start_window(reference)
    placement = decide(reference, checkpoint.parameters * 4, file_backed, window=window, worker_first=False)
    log(f"JAX reference {placement.describe()}")
    pending = PendingReference(checkpoint, images, names, placement, float32=True, pool_padding=pool_padding)
    if placement.where.in_worker:
        pending.start()
    try:
        tf_out = _run_tf(checkpoint, images, info, log, pool_padding)
        if not placement.where.in_worker:
            gc.collect()  # the TF graph and its standardised kernels, before the JAX params arrive
            pending.start()
        ref = pending.result()
    finally:
        pending.abandon()  # TF failed or we were interrupted: do not leave a worker running
    info.update(ref.timings)
    info["reference_process"] = placement.where.in_worker
    info["parity_wall_s"] = time.perf_counter() - t0
    log(f"JAX reference: float32 {ref.timings['jax_f32_s']:.1f} s, float64 {ref.timings['jax_f64_s']:.1f} s (compile and run)")
    report = compare(ref, tf_out)
    report.info.update(info)
    return report


def _run_tf(checkpoint, images, info: dict, log, pool_padding: str) -> dict:
    import_without("tensorflow")  # without JAX: in a worker, or imported later for the reference inline
    from ..model.tf_model import build_tf_model

    t = time.perf_counter()
    # The form the SavedModels hold (block 4 standardising its outputs):
    # the graph verified is the graph exported.
    model = build_tf_model(checkpoint, pool_pad=pool_padding).as_saved()
    info["tf_build_s"] = time.perf_counter() - t
    fn = tf_stage_function(model)
    t = time.perf_counter()
    out = {k: v.numpy() for k, v in fn(images).items()}
    info["tf_run_s"] = time.perf_counter() - t
    info["tf_tracing_count"] = int(fn.experimental_get_tracing_count())
    log(f"TF graph: {info['tf_run_s']:.1f} s (trace and run)")
    return out
