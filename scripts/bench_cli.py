#!/usr/bin/env python
"""Benchmark the light commands: `bitconvert list` start-up and `inspect` of full-size checkpoints.

Target (issue 2): `bitconvert list` returns in well under a second (we hold it to 0.5 s median).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from convert.model.architecture import Architecture
from convert.synthetic import write_synthetic_checkpoint
from convert.testing.bench import Measured, mb, measure, print_table, python_tool, script_arguments

BITCONVERT = python_tool("bitconvert")
LIST_TARGET_S = 0.5


def timed(args: list, repeat: int) -> list[Measured]:
    runs = [measure(args, quiet=True) for _ in range(repeat)]
    if not all(r.ok for r in runs):
        raise SystemExit(f"bench_cli: {' '.join(map(str, args))} failed")
    return runs


def row(name: str, runs: list[Measured], target: str) -> tuple:
    walls = [r.wall_s for r in runs]
    return (
        name,
        f"{statistics.median(walls):.3f}",
        f"{min(walls):.3f}",
        f"{statistics.median(r.cpu_s for r in runs):.3f}",
        mb(max(r.largest_rss for r in runs)),
        target,
    )


def main() -> int:
    listing = timed([BITCONVERT, "list"], 7)
    rows = [row("bitconvert list", listing, f"< {LIST_TARGET_S}")]
    with tempfile.TemporaryDirectory() as tmp:
        for depth, width in ((50, 1), (152, 2)):
            path = write_synthetic_checkpoint(Path(tmp) / f"r{depth}.npz", Architecture.from_depth(depth, width, 1000))
            name = f"bitconvert inspect R{depth}x{width} ({path.stat().st_size / 1e6:.0f} MB)"
            rows.append(row(name, timed([BITCONVERT, "inspect", path], 3), "-"))
    print_table(("command", "median s", "min s", "CPU s", "peak RSS MB", "target s"), rows, right=range(1, 5))
    return 0 if statistics.median(r.wall_s for r in listing) < LIST_TARGET_S else 1


if __name__ == "__main__":
    script_arguments(__doc__)
    sys.exit(main())
