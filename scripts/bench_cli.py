#!/usr/bin/env python
"""Benchmark the light commands: `bitconvert list` start-up and `inspect` of full-size checkpoints.

Target (issue 2): `bitconvert list` returns in well under a second (we hold it to 0.5 s median).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert.architecture import Architecture
from convert.synthetic import write_synthetic_checkpoint

BITCONVERT = str(Path(sys.executable).with_name("bitconvert"))
LIST_TARGET_S = 0.5


def timed(args: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    rows = []
    lst = timed([BITCONVERT, "list"], 7)
    rows.append(("bitconvert list", statistics.median(lst), min(lst), f"< {LIST_TARGET_S}"))
    with tempfile.TemporaryDirectory() as tmp:
        for depth, width in ((50, 1), (152, 2)):
            path = write_synthetic_checkpoint(Path(tmp) / f"r{depth}.npz", Architecture.from_depth(depth, width, 1000))
            t = timed([BITCONVERT, "inspect", str(path)], 3)
            rows.append(
                (f"bitconvert inspect R{depth}x{width} ({path.stat().st_size / 1e6:.0f} MB)", statistics.median(t), min(t), "-")
            )
    print("| command | median s | min s | target s |")
    print("|---|---|---|---|")
    for name, med, best, target in rows:
        print(f"| {name} | {med:.3f} | {best:.3f} | {target} |")
    return 0 if rows[0][1] < LIST_TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
