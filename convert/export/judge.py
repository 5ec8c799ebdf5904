"""The reload-and-compare rule, written once for every target, and the live TF model's judgement before export."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ExportError, ParityError
from .cards.common import ParityFigures
from .target import VARIANT_STAGES, ExportTarget, Run

if TYPE_CHECKING:
    from ..model.architecture import Architecture
    from ..parity import ParityReport, Reference

Log = Callable[[str], None]


def summary_line(report, stages) -> str:
    return ", ".join(f"{k} rel {report.stages[k].tf_rel_l2_f64:.2e} max|d| {report.stages[k].max_abs_f64:.2e}" for k in stages)


def judge_live(reference: Reference, live: dict, arch: Architecture, model_id: str, log: Log) -> ParityReport:
    """The live TF graph against the reference at every stage; a failure writes nothing."""
    from ..parity import compare

    before = compare(reference, live, arch)
    worst = max(s.tf_rel_l2_f64 for s in before.stages.values())
    return _passed(
        before,
        log,
        f"{model_id}: parity before export (live TF graph): {summary_line(before, ('pre_logits', 'logits'))}",
        f"{model_id}: the TF graph does not reproduce JAX before export (failed at {', '.join(before.failed_stages)}, "
        f"relative error {worst:.2e} > {before.tolerance:.1e}); nothing exported",
    )


def check_shape(target: ExportTarget, run: Run, images: int, arch: Architecture, model_id: str) -> None:
    """Every reloaded artifact returns (images, classes) or (images, features)."""
    width = arch.classes if run.artifact.variant == "classification" else arch.features
    shape = tuple(np.shape(run.outputs))
    if shape != (images, width):
        raise ExportError(f"{model_id}: the reloaded {target.what(run)} returns {shape}, expected ({images}, {width})")


def judge_run(reference: Reference, target: ExportTarget, run: Run, arch: Architecture, model_id: str, log: Log) -> ParityReport:
    """One run against the reference at its variant's stage, under the architecture's tolerance."""
    from ..parity import compare

    stage = VARIANT_STAGES[run.artifact.variant]
    report = compare(reference, {stage: run.outputs}, arch)
    return _passed(
        report,
        log,
        f"{model_id}: parity after export, {target.where(run)}: {summary_line(report, (stage,))}",
        f"{model_id}: the reloaded {target.what(run)} does not reproduce JAX "
        f"({stage} relative error {report.stages[stage].tf_rel_l2_f64:.2e} > {report.tolerance:.1e}); export removed",
    )


def _passed(report: ParityReport, log: Log, line: str, failure: str) -> ParityReport:
    """Log ``line``; ``report`` when it passed, else a :class:`ParityError` saying ``failure``."""
    log(line)
    if not report.passed:
        raise ParityError(failure, report)
    return report


def figures(report: ParityReport, stage: str, resolution: int, images: int, batch: int) -> ParityFigures:
    s = report.stages[stage]
    return ParityFigures(stage, s.max_abs_f64, s.tf_rel_l2_f64, report.tolerance, resolution, images, batch)
