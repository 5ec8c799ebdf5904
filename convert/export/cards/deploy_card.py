"""Markdown cards of the inference-only artifacts (LiteRT, ONNX): what the file is, how to run it, its parity.

Pure text from the job, the artifact's facts and the parity figures, so a
card cannot claim what was not measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from ..target import INPUT_NAME, OUTPUT_NAMES, VARIANT_STAGES
from .model_card import INPUT_RANGES, forward_text, probability_text, sidecar_labels_line

_TITLES = {"tflite": "LiteRT (.tflite)", "onnx": "ONNX"}


def _figure(fig, *names):
    """First present field of ``names`` in a figures object or mapping."""
    if dataclasses.is_dataclass(fig):
        fig = dataclasses.asdict(fig)
    for n in names:
        if isinstance(fig, Mapping) and fig.get(n) is not None:
            return fig[n]
    return None


def parity_lines(figures: Mapping | None, variant: str) -> list[str]:
    """One bullet per runtime: max abs and relative L2 error against the float64 JAX reference, and the bound."""
    if not figures:
        return ["Not compared with the JAX reference (exported with --skip-parity)."]
    stage = VARIANT_STAGES[variant]
    lines = [f"Reloaded from disk and run on the parity images; `{stage}` compared with the float64 JAX reference:", ""]
    for runtime, fig in figures.items():
        max_abs = _figure(fig, "max_abs_error", "max_abs_f64")
        rel = _figure(fig, "relative_l2_error", "tf_rel_l2_f64")
        bound = _figure(fig, "threshold", "tolerance")
        size = _figure(fig, "resolution")
        images = _figure(fig, "images")
        parts = [f"max abs error {max_abs:.2e}" if max_abs is not None else None]
        parts.append(f"relative L2 error {rel:.2e}" if rel is not None else None)
        parts.append(f"bound {bound:.1e}" if bound is not None else None)
        parts.append(f"{images} images at {size}x{size}" if images and size else None)
        lines.append(f"- {runtime}: " + ", ".join(p for p in parts if p))
    return lines


def render_deploy_card(job, artifact, figures: Mapping | None, usage: str) -> str:
    """The card of one LiteRT or ONNX artifact."""
    lo, hi = INPUT_RANGES[job.input_range]
    facts = artifact.facts
    out = OUTPUT_NAMES[artifact.variant]
    width = job.arch.classes if artifact.variant == "classification" else job.arch.features
    files = facts.get("files") or {artifact.path: {"bytes": facts.get("bytes")}}
    lines = [
        f"# {job.model_id}: {artifact.variant.replace('_', ' ')}, {_TITLES.get(artifact.target, artifact.target)}",
        "",
        f"BiT ResNetV2 {job.arch.name}, converted by bitconvert for inference only: weight standardisation is "
        "folded into the stored kernels (exact for inference; not fine-tunable).",
        "",
        "## Files",
        "",
        *[f"- `{p}`" + (f" ({f['bytes'] / 1e6:.1f} MB)" if f.get("bytes") else "") for p, f in files.items()],
        "",
        "## Interface",
        "",
        f"- input `{INPUT_NAME}`: float32 `[batch, height, width, 3]`, any batch and size, values in [{lo:g}, {hi:g}]",
        f"- output `{out}`: float32 `[batch, {width}]`",
        f"- converter: {facts.get('converter')} {_versions(facts.get('converter_version'))}",
    ]
    if artifact.variant == "classification":
        lines.append(f"- {probability_text(job.entry)}; {sidecar_labels_line(job.entry, job.labels is not None)}")
    if facts.get("opset"):
        lines.append(f"- ONNX opset {facts['opset']}")
    if facts.get("weight_dtype"):
        lines.append(f"- weights: {facts['weight_dtype']}")
    if job.forward is not None:
        lines.append(f"- {forward_text(job.forward)}")
    lines += ["", "## Usage", "", usage, "", "## Parity", "", *parity_lines(figures, artifact.variant), ""]
    return "\n".join(lines)


def _versions(v) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v or "")
