"""Markdown cards of the inference-only artifacts (LiteRT, ONNX): what the file is, how to run it, its parity.

Pure text from the job, the artifact's facts and the parity figures, so a
card cannot claim what was not measured.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..target import INPUT_NAME, INPUT_RANGES, OUTPUT_NAMES, VARIANT_STAGES
from .common import ParityFigures, forward_text, probability_text, sidecar_labels_line


def parity_lines(figures: Mapping[str, ParityFigures] | None, variant: str) -> list[str]:
    """One bullet per runtime: max abs and relative L2 error against the float64 JAX reference, and the bound."""
    if not figures:
        return ["Not compared with the JAX reference (exported with --skip-parity)."]
    stage = VARIANT_STAGES[variant]
    lines = [f"Reloaded from disk and run on the parity images; `{stage}` compared with the float64 JAX reference:", ""]
    for runtime, f in figures.items():
        lines.append(
            f"- {runtime}: max abs error {f.max_abs_error:.2e}, relative L2 error {f.relative_l2_error:.2e}, "
            f"bound {f.threshold:.1e}, {f.images} images at {f.size}"
        )
    return lines


def render_deploy_card(job, artifact, figures: Mapping[str, ParityFigures] | None, usage: str, title: str) -> str:
    """The card of one inference-only artifact (LiteRT, ONNX): ``title`` names its format, ``usage`` shows how to run it."""
    lo, hi = INPUT_RANGES[job.input_range]
    facts = artifact.facts
    out = OUTPUT_NAMES[artifact.variant]
    width = job.arch.classes if artifact.variant == "classification" else job.arch.features
    files = facts.get("files") or {artifact.path: {"bytes": facts.get("bytes")}}
    lines = [
        f"# {job.model_id}: {artifact.variant.replace('_', ' ')}, {title}",
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
    if facts.get("winograd_layers"):
        lines.append(
            f"- {facts['winograd_layers']} stride-1 3x3 convolutions by Winograd's F(2x2, 3x3) "
            "(transformed kernels stored; the same values within float32 rounding)"
        )
    if job.forward is not None:
        lines.append(f"- {forward_text(job.forward)}")
    lines += ["", "## Usage", "", usage, "", "## Parity", "", *parity_lines(figures, artifact.variant), ""]
    return "\n".join(lines)


def _versions(v) -> str:
    if isinstance(v, Mapping):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v or "")
