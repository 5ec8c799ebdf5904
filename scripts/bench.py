#!/usr/bin/env python
"""Run every benchmark (scripts/bench_*.py), each in a fresh process, and print their tables.

    make bench                 # all of them
    make bench BENCH=fetch     # only scripts/bench_fetch.py (or: scripts/bench.py --only fetch)

Each bench_*.py prints a Markdown table on stdout (and progress on stderr) and
exits non-zero when a target from its issue is missed. A last table sums up
each benchmark's own cost (convert.testing.bench: wall, CPU, peak memory).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from convert.testing.bench import mb, measure, print_table, script_arguments

HERE = Path(__file__).resolve().parent


def _options(parser) -> None:
    names = ", ".join(s.stem[len("bench_") :] for s in sorted(HERE.glob("bench_*.py")))
    parser.add_argument(
        "--only",
        metavar="NAME",
        default=os.environ.get("BENCH") or None,
        help=f"one benchmark ({names}); default $BENCH, else all",
    )


def main(only: str | None) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem == f"bench_{only}"]
        if not scripts:
            print(f"no benchmark named {only!r}", file=sys.stderr)
            return 2
    if not scripts:
        print("no benchmarks yet", file=sys.stderr)
        return 1
    failed, rows = [], []
    for script in scripts:
        name = script.stem[len("bench_") :]
        print(f"\n## {name}\n", flush=True)
        run = measure([sys.executable, script])
        rows.append((name, run.returncode, f"{run.wall_s:.0f}", f"{run.cpu_s:.0f}", mb(run.peak_rss)))
        if not run.ok:
            failed.append(script.stem)
    print("\n## the benchmarks themselves\n")
    print_table(("benchmark", "exit", "wall s", "CPU s", "peak RSS MB, all processes"), rows, right=(1, 2, 3, 4))
    if failed:
        print(f"\nmissed targets or failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(script_arguments(__doc__, configure=_options).only))
