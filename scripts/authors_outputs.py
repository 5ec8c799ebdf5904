#!/usr/bin/env python
"""Every artifact of an export against the BiT authors' own outputs (tests/data/authors_outputs/), both paddings.

scripts/authors_outputs.py --case r50x1-160 --model r50x1-160 -o /tmp/authors
scripts/authors_outputs.py --case r50x1-160 --model bit-m-r50x1-ilsvrc2012 -o /tmp/authors

Regenerates the case's synthetic checkpoint (its sha256 must be the recorded one), exports it as
MODEL with --forward, reloads every artifact from disk in its runtime, runs it on the authors'
inputs and prints, per artifact and runtime, the worst-image relative L2 error against the authors'
-inf-padded and zero-padded outputs (the float64 reference's first). docs/family.md has the figures.
"""

from __future__ import annotations

import json

import click

from convert.cli.quiet import prepare


@click.command()
@click.option("--case", "case_name", default="r50x1-160", show_default=True, help="units1111 or r50x1-160.")
@click.option("--model", "model_id", required=True, help="Registry id to export the checkpoint as (same architecture).")
@click.option("--forward", type=click.Choice(["authors", "zero-pool"]), default="authors", show_default=True)
@click.option("--formats", default="savedmodel,keras,tflite,onnx", show_default=True)
@click.option("--output-dir", "-o", required=True, type=click.Path(file_okay=False))
@click.option("--existing", type=click.Path(file_okay=False), help="Measure this export of the case's checkpoint instead.")
@click.option("--json", "as_json", is_flag=True)
def main(case_name, model_id, forward, formats, output_dir, existing, as_json):
    prepare()
    from pathlib import Path

    from convert.checkpoint import load_checkpoint
    from convert.export import ExportOptions, export_model
    from convert.model.numerics import POOL_PADS
    from convert.parity import reference_outputs
    from convert.registry import load_registry
    from convert.testing.authors import CASES, export_runs, regenerate, relative_l2, runs_table

    case, out = CASES[case_name], Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = regenerate(case, out / "checkpoint.npz")
    authors = case.outputs()
    entry = load_registry().get(model_id)
    rows = []
    for padding in POOL_PADS:
        ref = reference_outputs(load_checkpoint(path, case.arch), authors["x"], float32=False, pool_padding=padding).f64
        for stage in ("logits", "pre_logits"):
            errors = [relative_l2(ref[stage], authors[f"{p}_{stage}"]) for p in ("neg_inf", "zero")]
            rows.append((f"float64 reference ({padding})", "jax", stage, *errors))
    if existing:
        export_dir = Path(existing)
    else:
        options = ExportOptions(output_dir=out / "exports", formats=tuple(formats.split(",")), forward=forward)
        export_dir = export_model(entry, path, options, arch=case.arch, log=lambda m: click.echo(m, err=True)).path
    pad = json.loads((export_dir / "manifest.json").read_text()).get("forward", {}).get("root_pool_padding", "zero")
    runs = export_runs(export_dir, entry, case.arch, authors["x"])
    rows += [(f"{t} ({pad})", rt, v, a, b) for t, rt, v, a, b in runs_table(runs, authors)]
    if as_json:
        click.echo(
            json.dumps(
                [dict(zip(("artifact", "runtime", "output", "vs_neg_inf", "vs_zero"), r, strict=True)) for r in rows], indent=2
            )
        )
        return
    click.echo(f"{model_id} (--forward {forward}), {case.file}: relative L2 vs the authors' outputs")
    click.echo("| artifact | runtime | output | vs -inf padding | vs zero padding |\n|---|---|---|---|---|")
    for artifact, runtime, output, neg, zero in rows:
        click.echo(f"| {artifact} | {runtime} | {output} | {neg:.1e} | {zero:.1e} |")


if __name__ == "__main__":
    main()
