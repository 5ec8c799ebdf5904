#!/usr/bin/env python
"""Run every benchmark (scripts/bench_*.py), each in a fresh process, and print their tables.

    make bench                 # all of them
    make bench BENCH=fetch     # only scripts/bench_fetch.py

Each bench_*.py prints a Markdown table on stdout (and progress on stderr) and
exits non-zero when a target from its issue is missed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    only = os.environ.get("BENCH")
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem == f"bench_{only}"]
        if not scripts:
            print(f"no benchmark named {only!r}", file=sys.stderr)
            return 2
    if not scripts:
        print("no benchmarks yet", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        print(f"\n## {script.stem[len('bench_') :]}\n", flush=True)
        rc = subprocess.call([sys.executable, str(script)])
        if rc:
            failed.append(script.stem)
    if failed:
        print(f"\nmissed targets or failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
