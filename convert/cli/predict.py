"""``bitconvert predict``: classify images with an exported classifier."""

from __future__ import annotations

import click

from .options import emit_json, json_option, output_dir_option
from .quiet import prepare


@click.command("predict")
@click.option("--model", "-m", "model_id", required=True, metavar="ID", help="The exported model (registry id).")
@output_dir_option("Where `bitconvert export` wrote it: DIR/<id>/.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "onnx", "tflite", "savedmodel"]),
    default="auto",
    show_default=True,
    help="Which of the export's classifiers runs; auto: LiteRT, else ONNX, else the SavedModel (the first held and installed: fastest to a first answer first).",
)
@click.option("--top", "top", type=click.IntRange(min=1), default=5, show_default=True, help="Classes shown per image.")
@json_option
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...", type=click.Path(path_type=str))
def predict_cmd(model_id, output_dir, fmt, top, as_json, images):
    """Classify images with an exported classifier: the top classes with their probabilities.

    \b
    Reads DIR/<id>/manifest.json (input range, resolution, multi-label, the
    formats held) and the class names (classification/assets/labels.txt or
    <format>/labels.txt; indices when the head's labels are not published).
    JPEG, PNG, WebP, GIF or BMP, at most 100 megapixels; an image at the
    model's resolution is fed as is, any other keeps its aspect: shorter side
    resized to the resolution (bilinear, antialiased), centre crop. Images go
    through the model 8 at a time. Scores: softmax, or a sigmoid per class for
    the multi-label BiT-M ImageNet-21k heads.
    --json prints [{"image": PATH, "top": [{"index", "label", "score"}, ...]}, ...].
    Exit status 1: an image missing, unreadable or not an image, or a damaged
    export; 2: no such export, or no classifier in the --format asked for.
    """
    from ..predict import open_export, predict, render_text

    export = open_export(model_id, output_dir, fmt)  # before any framework: a missing export costs nothing
    prepare()  # TensorFlow's and JAX's start-up lines off stderr, before either is imported
    results = predict(export, list(images), top=top)
    if as_json:
        emit_json(results)
    else:
        click.echo(render_text(results, export.multi_label))
