#!/usr/bin/env python
"""Write a synthetic BiT checkpoint in the exact official layout.

scripts/make_synthetic_checkpoint.py --model r50x1-160 out.npz
scripts/make_synthetic_checkpoint.py --depth 50 --width 1 --classes 10 --units 1,1,1,1 tiny.npz
"""

from __future__ import annotations

import click

from convert.model.architecture import Architecture
from convert.registry import load_registry
from convert.synthetic import write_synthetic_checkpoint


@click.command()
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--model", "model_id", help="Registry id whose architecture to use.")
@click.option("--depth", type=click.Choice(["50", "101", "152"]), default="50", show_default=True)
@click.option("--width", type=click.IntRange(1, 4), default=1, show_default=True)
@click.option("--classes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--units", help="Reduced block layout for fast tests, e.g. 1,1,1,1 (overrides --depth).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--conv-suffix", is_flag=True, help="Spell conv names standardized_conv2d_<n> as some official files do.")
def main(output, model_id, depth, width, classes, units, seed, conv_suffix):
    """Write a synthetic checkpoint to OUTPUT (atomically)."""
    if model_id:
        arch = load_registry().get(model_id).architecture
    elif units:
        arch = Architecture(tuple(int(u) for u in units.split(",")), width, classes)
    else:
        arch = Architecture.from_depth(int(depth), width, classes)
    path = write_synthetic_checkpoint(output, arch, seed=seed, conv_suffix=conv_suffix)
    click.echo(str(path))


if __name__ == "__main__":
    main()
