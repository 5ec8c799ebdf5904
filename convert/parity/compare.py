"""Comparing a candidate (TF graph, reloaded artifact) with the JAX reference: metrics, verdict, report.

Metrics per stage (candidate = the TF side):

* ``max_abs``: max |candidate - JAX float32|
* ``rel_l2``: relative L2 error of the candidate against JAX float32
* ``tf_rel_l2_f64`` / ``jax_rel_l2_f64``: each float32 side against the
  float64 JAX run of the same inputs, so the report shows which side drifts
* ``max_abs_f64``: max |candidate - JAX float64|
* at ``logits``: top-1 agreement of each side with the float64 argmax.

A reference computed without its float32 run leaves the float32 columns empty
(None). Relative L2 errors are computed per image and the worst image is
reported (a border-only defect in one structured image is not averaged away).

Pass criterion: at every stage present, the candidate's relative L2 error
against the float64 reference is at most :func:`tolerance` of the
architecture, and every value is finite. Top-1 agreement is reported, not
judged: random weights produce near-ties that float32 noise may flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..model.architecture import STAGES, Architecture

if TYPE_CHECKING:
    from .reference import Reference

#: Error model of the float32 TF graph: its worst-stage, worst-image relative L2
#: error against float64 JAX is about ``ERROR_PER_UNIT * (sum(units) + 4) * width**2``
#: (the 4 stands for the stem, the head and the block transitions). Fitted on
#: the measurements in docs/calibration.md.
ERROR_PER_UNIT = 4e-6
#: The pass threshold is this many times the modelled error.
TOLERANCE_MARGIN = 5


def expected_error(arch: Architecture) -> float:
    """Modelled worst-stage relative L2 error of the float32 TF graph vs float64 (docs/calibration.md)."""
    return ERROR_PER_UNIT * (sum(arch.units) + 4) * arch.width**2


def tolerance(arch: Architecture) -> float:
    """The pass threshold for ``arch``: TOLERANCE_MARGIN x the modelled error, 2 significant digits."""
    return float(f"{TOLERANCE_MARGIN * expected_error(arch):.2g}")


def per_image_rel_l2(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative L2 error of each image of ``a`` against ``ref`` (float64, one value per image)."""
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
        forward = self.info.get("forward")
        pad = [f"forward pass: {forward.get('description') or forward['root_pool_padding']}"] if forward else []
        return "\n".join([head_line, *pad, *lines, f"parity: {verdict}"])


def compare(
    reference: Reference,
    candidate: dict[str, np.ndarray],
    arch: Architecture | None = None,
) -> ParityReport:
    """Compare ``candidate`` (stage -> array, any subset of STAGES) with ``reference``.

    Unknown stage names are a ValueError; missing ones are simply not judged
    (a classifier export has only ``logits``, a feature extractor only
    ``pre_logits``).
    """
    arch = arch or reference.arch
    tol = tolerance(arch)
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
        tf64 = per_image_rel_l2(c, r64)
        worst = int(np.nanargmax(tf64)) if np.isfinite(tf64).any() else 0
        res = StageResult(
            stage=stage,
            shape=tuple(c.shape),
            max_abs=None if r32 is None else float(np.max(np.abs(c.astype(np.float64) - r32))),
            rel_l2=None if r32 is None else float(np.max(per_image_rel_l2(c, r32))),
            tf_rel_l2_f64=float(np.max(tf64)),
            jax_rel_l2_f64=None if r32 is None else float(np.max(per_image_rel_l2(r32, r64))),
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
