"""Click options shared by several commands, defined once."""

from __future__ import annotations

import json

import click

from .. import config


class ImageSize(click.ParamType):
    """``PX`` (square) or ``HxW``, each side at least ``minimum``: an int, or (height, width)."""

    name = "size"

    def __init__(self, minimum: int = 32):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if isinstance(value, int | tuple):
            return value
        parts = str(value).lower().split("x")
        if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
            sides = [int(p) for p in parts]
            if min(sides) >= self.minimum:
                return sides[0] if len(sides) == 1 else (sides[0], sides[1])
        self.fail(f"{value!r} is not PX or HxW (e.g. 224 or 224x288), each side at least {self.minimum}", param, ctx)


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def emit_json(data) -> None:
    """What ``--json`` prints: ``data`` as indented JSON on stdout, keys in their order."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


model_option = click.option(
    "--model",
    "-m",
    "model_ids",
    multiple=True,
    metavar="ID",
    help="Registry id (see `bitconvert list`); repeatable.",
)

#: ``--model ID`` for the commands that take exactly one (verify, mapping): the same name, not repeatable.
one_model_option = click.option(
    "--model",
    "-m",
    "model_ids",
    multiple=True,
    metavar="ID",
    help="Registry id (see `bitconvert list`); exactly one.",
)

# No click checks on the path: convert.fsutil refuses anything but a regular file with one line and exit 1.
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(path_type=str),
    help="Use this local .npz instead of fetching the model's checkpoint.",
)

# The environment variables are read by convert.config (the library's defaults), not by click.
cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=str),
    help=f"Checkpoint cache [env {config.CACHE}; default $XDG_CACHE_HOME/bitconvert].",
)

base_url_option = click.option(
    "--base-url",
    metavar="URL",
    help=f"Mirror of the BiT bucket [env {config.BASE_URL}; default {config.DEFAULT_BASE_URL}].",
)

offline_option = click.option(
    "--offline",
    is_flag=True,
    help=f"Never touch the network; use cached files only [env {config.OFFLINE}=1].",
)

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress output on stderr.")


def source_options(f):
    """The options that say where a checkpoint comes from (fetch, verify, export)."""
    for opt in reversed((cache_dir_option, base_url_option, offline_option, quiet_option)):
        f = opt(f)
    return f


reference_option = click.option(
    "--reference",
    "reference",
    type=click.Choice(["auto", "worker", "inline"]),
    default=None,
    help="Where the JAX reference runs: auto (from free CPUs and memory), worker (a second process), "
    "inline (this process, first) [env BITCONVERT_REFERENCE; default auto].",
)


#: ``--forward`` on verify and export (convert.model.forward; the choices are listed there, imported lazily here).
forward_option = click.option(
    "--forward",
    "forward",
    type=click.Choice(["authors", "zero-pool"]),
    default="authors",
    show_default=True,
    help="Forward pass to convert: authors = the code that trained the checkpoint (distill/ files: big_vision, "
    "root max-pool padded with -inf; every other file: big_transfer, zeros); zero-pool = zeros for every file, "
    "as the 2022 TF Hub collection and timm compute (docs/family.md).",
)


def _kaggle_handle(ctx, param, value):
    if value is None:
        return None
    from ..export.kaggle import parse_handle

    try:
        parse_handle(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


#: ``bitconvert export --kaggle OWNER/MODEL`` (value None or "owner/model").
kaggle_option = click.option(
    "--kaggle",
    "kaggle",
    metavar="OWNER/MODEL",
    callback=_kaggle_handle,
    help="Also write Kaggle Models metadata under DIR/<id>/kaggle/: model-metadata.json and one "
    "model-instance-metadata.json per framework variation, each beside its files (docs/kaggle.md).",
)


def output_dir_option(help: str):
    """``--output-dir/-o DIR`` (default ``exports``), where exports are written and found."""
    return click.option(
        "--output-dir",
        "-o",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=str),
        default="exports",
        show_default=True,
        help=help,
    )
