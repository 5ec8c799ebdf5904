"""``bitconvert export``: a thin command over :func:`convert.export.export_model`."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import BitconvertError
from .options import (
    ImageSize,
    checkpoint_option,
    forward_option,
    kaggle_option,
    model_option,
    output_dir_option,
    reference_option,
    source_options,
)
from .quiet import prepare


class ExportCommand(click.Command):
    """``export --help`` lists the formats this installation has, with their summaries."""

    def format_epilog(self, ctx, formatter):
        from ..export.formats import summaries

        with formatter.section("Formats"):
            formatter.write_dl(list(summaries().items()))
        super().format_epilog(ctx, formatter)


@click.command("export", cls=ExportCommand)
@model_option
@click.option(
    "--all", "export_all", is_flag=True, help="The four models of the TF Hub collection (`bitconvert list --collection`)."
)
@checkpoint_option
@output_dir_option("Exports go to DIR/<id>/.")
@click.option(
    "--input-range",
    type=click.Choice(["unit", "symmetric"]),
    default="unit",
    show_default=True,
    help="Pixel range every exported model takes: unit = [0, 1] (the TF Hub convention, rescaled in the graph); "
    "symmetric = [-1, 1] (what the weights were trained on, as the published collection took it).",
)
@click.option("--archive", is_flag=True, help="Also write a deterministic .tar.gz of each SavedModel (the TF Hub upload format).")
@click.option(
    "--skip-parity", is_flag=True, help="Do not compare with the JAX forward pass (faster; the manifest and model cards say so)."
)
@click.option(
    "--parity-resolution",
    metavar="PX|HxW",
    type=ImageSize(),
    help="Input size of the parity check, square or height x width (224x288) [default: the model's resolution, at most 224].",
)
@click.option("--parity-batch", type=click.IntRange(min=1), default=1, hidden=True, help="Random parity images.")
@click.option(
    "--format",
    "formats",
    metavar="NAME[,NAME...]",
    default="savedmodel",
    show_default=True,
    help="Formats to write, comma-separated (see Formats below).",
)
@kaggle_option
@reference_option
@forward_option
@source_options
def export_cmd(model_ids, export_all, checkpoint, formats, reference, cache_dir, base_url, offline, quiet, **layout):
    """Export BiT models (classifier and feature extractor), each artifact proven equal to JAX from disk.

    \b
    For each model, under DIR/<id>/ (--format savedmodel, the default):
      classification/, feature_extraction/   SavedModels: float32 [batch, h, w, 3]
                                             images of any batch and size
      classification.md, feature_extraction.md   tfhub.dev model cards
      manifest.json                          source, sha256, parity, versions, digests
      bit_<id>_<variant>.tar.gz              with --archive
    and with --format keras,tflite,onnx (see Formats below):
      keras/, tflite/, onnx/                 <variant>.keras/.tflite/.onnx, a card each,
                                             labels.txt beside the classifier
      kaggle/                                with --kaggle: Kaggle Models metadata

    The checkpoint is fetched when not cached, unless --checkpoint is given;
    the label file of an ImageNet head too (from --base-url), embedded in the
    classifiers. After writing, each artifact is reloaded from disk in its
    runtime (each Keras backend but the export's own in a fresh process) and compared with the JAX
    float64 forward pass; any failure removes the export and exits 1. Exports
    are written to a temporary directory and renamed into place, so DIR/<id>
    is always a complete export. Prints the path of each finished export on
    stdout.

    \b
    DIR/<id> is replaced only when it holds an earlier export (its
    manifest.json); a directory of your own, a file or a symlink there is
    refused before any work, with exit status 6. SIGINT (Ctrl-C), SIGTERM and
    SIGHUP end an export within seconds with status 130, 143 or 129: nothing
    is published, the helper processes are stopped, temporary files removed.
    """
    prepare()  # TensorFlow's and JAX's start-up lines off stderr, before either is imported
    from ..config import reference_mode
    from ..export import ExportOptions, parse_formats
    from ..registry import load_registry

    if bool(model_ids) == bool(export_all):
        raise click.UsageError("give --model ID (repeatable) or --all")
    try:
        chosen = parse_formats(formats)
    except BitconvertError as exc:
        raise click.UsageError(str(exc)) from exc
    registry = load_registry()
    entries = registry.collection() if export_all else [registry.get(m) for m in dict.fromkeys(model_ids)]
    if checkpoint and len(entries) != 1:
        raise click.UsageError("--checkpoint goes with exactly one --model")
    # ``layout``: --output-dir, --input-range, --archive, --skip-parity, --parity-*, --kaggle: ExportOptions' own names.
    options = ExportOptions(**layout, formats=chosen, reference=reference or reference_mode())
    source = {"cache_dir": cache_dir, "base_url": base_url, "offline": offline}
    for entry in entries:
        click.echo(str(_export_one(entry, checkpoint, options, source, quiet).path))


def _export_one(entry, checkpoint: str | None, options, source: dict, quiet: bool):
    """One entry: DIR/<id> checked, the checkpoint resolved, the export run with the signals handled."""
    from ..export import export_model
    from ..export.publish import check_export_path
    from ..fetch import recorded_sha256, resolve_checkpoint, source_url
    from ..interrupts import ending_on_signals
    from ..labels import load_labels

    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"bitconvert export: {msg}", err=True)

    def warn(msg: str) -> None:
        click.echo(f"bitconvert export: {msg}", err=True)

    def labels():  # fetched once the checkpoint is read and valid
        # A warning about missing labels shows even with --quiet: the export lacks something.
        return load_labels(entry, **source, log=warn)

    # What is at DIR/<id> is checked before anything costly, and again before publishing.
    check_export_path(options.output_dir / entry.id, Path(checkpoint) if checkpoint else None)
    path = resolve_checkpoint(entry, checkpoint=checkpoint, quiet=quiet, **source)
    # SIGINT, SIGTERM, SIGHUP: the export ends within seconds, nothing published (convert.interrupts).
    with ending_on_signals():
        return export_model(
            entry,
            path,
            options,
            source_url=source_url(entry, source["base_url"]),
            sha256=recorded_sha256(path),
            checkpoint_origin="--checkpoint" if checkpoint else "cache",
            labels=labels,
            log=log,
        )
