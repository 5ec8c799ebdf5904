"""The ``bitconvert`` command line: thin click commands over the library.

Data goes to stdout, logs and progress to stderr. Every expected failure is a
:class:`convert.errors.BitconvertError` and ends as one line on stderr with
its own exit status (see ``convert.errors``); ``--debug`` shows tracebacks.
TensorFlow and JAX are imported only inside the commands that need them.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from .. import __version__, config
from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_IO, BitconvertError
from .export import export_cmd
from .options import (
    ImageSize,
    checkpoint_option,
    emit_json,
    forward_option,
    json_option,
    one_model_option,
    reference_option,
    source_options,
)
from .predict import predict_cmd

EPILOG = """\b
Exit status: 0 ok; 1 bad input (damaged checkpoint, parity failure,
failed verification); 2 usage; 3 registry; 4 download; 5 offline and
not cached; 6 local I/O (disk full, DIR/<id> not an earlier export);
7 the JAX reference failed (JAX cannot start, its worker was killed or
ran out of memory); 70 internal error (a bug); 129 SIGHUP; 130
interrupted (Ctrl-C); 143 SIGTERM.
"""


def _debug_enabled(ctx: click.Context) -> bool:
    root = ctx.find_root()
    if (root.obj or {}).get("debug"):
        return True
    try:
        return config.from_env().debug
    except BitconvertError:  # a malformed variable: its own error is being reported
        return False


def _io_failure(exc: OSError) -> str:
    """One line for an OSError that reached the CLI; when writing the output failed, stdout goes to /dev/null.

    (Else the interpreter's last flush of the unwritten output could fail again at exit.)
    """
    if any(f.f_code.co_name == "echo" and "click" in f.f_code.co_filename for f, _ in traceback.walk_tb(exc.__traceback__)):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return f"cannot write the output: {exc.strerror or exc}"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"local I/O failed{where}: {exc.strerror or exc}"


class BitconvertGroup(click.Group):
    """A group that turns library errors into one stderr line and an exit status."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BitconvertError as exc:
            if _debug_enabled(ctx):
                raise
            click.echo(f"bitconvert: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:  # `bitconvert list | head`: the reader left, not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("bitconvert: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as exc:  # `bitconvert list > /dev/full`, or a local file the library did not wrap: local I/O
            if _debug_enabled(ctx):
                raise
            click.echo(f"bitconvert: error: {_io_failure(exc)}", err=True)
            ctx.exit(EXIT_IO)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: say so in one line, traceback on request
            if _debug_enabled(ctx):
                raise
            click.echo(f"bitconvert: internal error: {type(exc).__name__}: {exc} (re-run with --debug for a traceback)", err=True)
            ctx.exit(EXIT_INTERNAL)


@click.group(cls=BitconvertGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors [env BITCONVERT_DEBUG=1].")
@click.version_option(__version__, prog_name="bitconvert")
@click.pass_context
def cli(ctx: click.Context, debug: bool):
    """Convert Big Transfer (BiT) ResNetV2 checkpoints to TensorFlow SavedModels, Keras 3, LiteRT and ONNX,
    each reloaded from disk and checked against a float64 JAX (Flax) forward pass of the checkpoint.

    \b
    Typical use:
      bitconvert list                        # the models it knows
      bitconvert fetch r50x1-160             # download and verify a checkpoint
      bitconvert verify --model r50x1-160    # TF vs JAX parity report
      bitconvert export --model r50x1-160    # TF Hub-style SavedModels
      bitconvert export --model r50x1-160 --format savedmodel,keras,tflite,onnx
      bitconvert predict --model r50x1-160 cat.jpg   # top-5 classes from the export
    """
    ctx.obj = {"debug": debug}


def prepare_frameworks() -> None:
    """TensorFlow's and JAX's start-up lines off stderr (convert.cli.quiet), before either is imported."""
    from .quiet import prepare

    prepare()


@cli.command("list")
@json_option
@click.option("--collection", is_flag=True, help="Only the four entries of the TF Hub collection.")
@click.option("--all", "show_all", is_flag=True, help="Every entry, the 285 generated VTAB-1k fine-tunes too.")
@click.option("--family", metavar="NAME", help="Only one family: bit-s, bit-m, bit-m-ilsvrc2012, distill or vtab.")
def list_cmd(as_json: bool, collection: bool, show_all: bool, family: str | None):
    """List the models in the registry (checkpoints.yaml).

    By default the named models; --all adds the generated families (VTAB-1k),
    --family shows one family, --json prints every entry (or the selection).
    """
    from ..registry import load_registry

    reg = load_registry()
    if collection:
        entries = reg.collection()
    elif family:
        entries = reg.family(family)
    elif show_all or as_json:
        entries = list(reg.entries)
    else:
        entries = reg.named()
    if as_json:
        emit_json([e.as_dict() for e in entries])
        return
    rows = [("ID", "ARCH", "CLASSES", "RES", "SOURCE")]
    rows += [(e.id, e.arch_name, str(e.classes), str(e.resolution), e.source) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    hidden = len(reg.entries) - len(entries)
    if hidden and not (collection or family) and sys.stdout.isatty():  # a hint for a reader, not for a pipe
        click.echo(
            f"bitconvert: {hidden} generated entries not shown (families: {', '.join(reg.families)}); "
            "`bitconvert list --all` or `--family vtab` lists them",
            err=True,
        )


@cli.command("inspect")
@click.argument("path", type=click.Path(path_type=str))
@click.option("--model", "model_id", metavar="ID", help="Check against this registry entry instead of inferring.")
@click.option("--allow-nonstandard", is_flag=True, help="Accept block layouts other than R50/R101/R152 (test files).")
@json_option
def inspect_cmd(path: str, model_id: str | None, allow_nonstandard: bool, as_json: bool):
    """Say what a checkpoint is (depth, width, classes, arrays), or every problem with it.

    Reads headers first and never unpickles. Exits 1 when anything is wrong,
    after listing each problem (- missing, + unexpected, ~ wrong).
    """
    from .inspect_report import inspect_command

    inspect_command(path, model_id, allow_nonstandard, as_json)


def _speed_floor_option(flag: str, lowest: float, metavar: str, text: str, env: str, default: float):
    """One of fetch's speed-floor options: a number from ``lowest`` up, its environment variable and default in the help."""
    return click.option(
        flag, type=click.FloatRange(min=lowest), metavar=metavar, help=f"{text} [env {env}; default {default:.0f}]."
    )


@cli.command("fetch")
@click.argument("model_ids", nargs=-1, metavar="[MODEL]...")
@click.option("--all", "fetch_all", is_flag=True, help="Every model in the registry.")
@click.option("--force", is_flag=True, help="Download again even if a verified copy is cached.")
@click.option(
    "--allow-unverified",
    is_flag=True,
    help="Accept a file checked by size only when the server sends no x-goog-hash and the registry pins no sha256.",
)
@_speed_floor_option(
    "--min-speed",
    0,
    "BYTES",
    "Give up (exit 4) on a server slower than BYTES a second over --min-speed-time; 0: never",
    config.MIN_SPEED,
    config.MIN_SPEED_DEFAULT,
)
@_speed_floor_option(
    "--min-speed-time",
    1,
    "SECONDS",
    "The stretch the --min-speed floor is averaged over; a stall this long also ends the download",
    config.MIN_SPEED_TIME,
    config.MIN_SPEED_TIME_DEFAULT,
)
@source_options
def fetch_cmd(model_ids, fetch_all, force, allow_unverified, min_speed, min_speed_time, cache_dir, base_url, offline, quiet):
    """Download official checkpoints into the cache, verified and resumable.

    Prints the local path of each checkpoint on stdout, one per line; progress
    goes to stderr. Interrupted downloads resume on the next run. Network
    failures are retried with backoff; a redirect loop, a URL that is not
    http(s) and a connection refused on this machine are not (docs/fetch.md).
    """
    from ..fetch import fetch_checkpoint, speed_policy
    from ..registry import load_registry

    if fetch_all == bool(model_ids):
        raise click.UsageError("name one or more model ids, or pass --all (not both)")
    registry = load_registry()
    entries = list(registry.entries) if fetch_all else [registry.get(m) for m in dict.fromkeys(model_ids)]
    for entry in entries:
        path = fetch_checkpoint(
            entry,
            cache_dir=cache_dir,
            base_url=base_url,
            offline=offline,
            force=force,
            quiet=quiet,
            verify_hashes=not allow_unverified,
            policy=speed_policy(min_speed, min_speed_time),
        )
        click.echo(str(path))


@cli.command("verify")
@one_model_option
@checkpoint_option
@click.option(
    "--resolution",
    metavar="PX|HxW",
    type=ImageSize(),
    help="Input size, square or height x width (default: the model's native one).",
)
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True, help="Random images per batch.")
@reference_option
@forward_option
@json_option
@source_options
def verify_cmd(model_ids, checkpoint, resolution, batch, reference, forward, as_json, cache_dir, base_url, offline, quiet):
    """Prove the TensorFlow graph computes what the JAX (Flax) model computes.

    Feeds both the same deterministic images (BATCH random ones in [-1, 1],
    then flat, gradient and checkerboard ones) and compares every stage (stem,
    block1-4, pre_logits, logits) against float32 and float64 JAX runs. The
    report goes to stdout (a table, or JSON keyed by stage with --json);
    exits 1 with the report when the TF graph's error exceeds the tolerance of
    its architecture. Without --checkpoint the model's checkpoint is fetched.
    Both sides compute the --forward pass (default: the authors' code's, which
    the report's "forward pass" line names).
    """
    prepare_frameworks()  # before TensorFlow or JAX is imported
    from ..checkpoint import load_checkpoint
    from ..config import reference_mode
    from ..errors import ParityError
    from ..fetch import resolve_checkpoint
    from ..parity import run_parity
    from ..parity.inputs import size_text
    from ..parity.placement import start_window
    from ..registry import load_registry

    if len(model_ids) != 1:
        raise click.UsageError("verify takes exactly one --model ID")
    entry = load_registry().get(model_ids[0])
    reference = reference or reference_mode()

    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"bitconvert verify: {msg}", err=True)

    path = resolve_checkpoint(entry, checkpoint=checkpoint, cache_dir=cache_dir, base_url=base_url, offline=offline, quiet=quiet)
    log(f"loading {path}")
    window = start_window(reference)  # how busy the other processes keep the CPUs, while reading
    ckpt = load_checkpoint(path, entry.architecture)
    size = resolution or entry.resolution
    fwd = entry.forward(forward)
    log(f"{entry.id}: TF graph and JAX reference (float32, float64) on {batch}+5 images at {size_text(size)}")
    log(f"{entry.id}: forward pass: {fwd.describe()}")
    report = run_parity(ckpt, size, batch, model_id=entry.id, log=log, reference=reference, window=window, forward=fwd)
    if as_json:
        emit_json(report.as_dict())
    else:
        click.echo(report.render())
    if not report.passed:
        worst = max(report.stages.values(), key=lambda s: s.tf_rel_l2_f64)
        raise ParityError(
            f"{entry.id}: parity failed at {', '.join(report.failed_stages)}: TF relative error {worst.tf_rel_l2_f64:.2e} "
            f"at {worst.stage} ({worst.worst_input}) exceeds the {entry.arch_name} tolerance {report.tolerance:.1e}",
            report,
        )


@cli.command("mapping")
@one_model_option
@json_option
def mapping_cmd(model_ids, as_json):
    """Print the name mapping: checkpoint key, TF variable, Flax path, Keras weight, shape, transform.

    Derived from the model's architecture alone (no checkpoint is read). The
    last line (JSON: "forward") names the forward pass every side computes:
    the root max-pool's padding, from the code that trained the checkpoint.
    """
    from ..model.mapping import mapping_rows, render_table
    from ..registry import load_registry

    if len(model_ids) != 1:
        raise click.UsageError("mapping takes exactly one --model ID")
    entry = load_registry().get(model_ids[0])
    rows = mapping_rows(entry.architecture)
    forward = entry.forward()
    if as_json:
        rows_json = [r.as_dict() for r in rows]
        emit_json({"model": entry.id, "architecture": entry.arch_name, "forward": forward.as_dict(), "rows": rows_json})
    else:
        click.echo(render_table(rows))
        click.echo(f"forward pass: {forward.describe()}")


cli.add_command(export_cmd)
cli.add_command(predict_cmd)

#: Modules whose interpreter shutdown is slow: freeing traced graphs and the
#: frameworks' static state takes seconds that os._exit saves (docs/performance.md).
SLOW_TO_UNLOAD = ("tensorflow", "jax")


def exit_status(code) -> int:
    """The process exit status for a SystemExit ``code`` (None, an int, or a message)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None, slow_to_unload: tuple[str, ...] = SLOW_TO_UNLOAD) -> None:
    """Console-script entry point.

    After a command that loaded one of ``slow_to_unload``, the process leaves with
    ``os._exit`` once stdout and stderr are flushed, skipping the interpreter's
    slow teardown. Nothing of ours depends on it: every file is written,
    fsynced and closed, the JAX worker is waited for and temporary directories
    are removed inside the command, before it returns.
    """
    try:
        cli.main(args=argv, prog_name="bitconvert")
    except SystemExit as exc:
        status = exit_status(exc.code)
        if not any(name in sys.modules for name in slow_to_unload):
            raise SystemExit(status) from None
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can be said
                pass
        os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
