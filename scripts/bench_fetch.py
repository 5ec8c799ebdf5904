#!/usr/bin/env python
"""Benchmark `bitconvert fetch` against curl over loopback (issue 12's target: within 1.2x curl).

Serves a 1 GiB file with convert.testing.mirror on 127.0.0.1 (sendfile, so the server
is not the bottleneck) and times, in fresh child processes, each after a ``sync``:

- ``curl -s -o FILE URL`` (no verification at all), and
- ``python -m convert fetch ID --quiet`` (stream to disk, crc32c + sha256,
  fsync, atomic rename: the whole command, start-up included),

in alternating order (curl first in odd rounds, bitconvert first in even
ones), median of 3. Two more rows are measured the same way, for context:
``dd conv=fsync`` of the same file from the page cache (the disk's speed
for a durable copy; curl does not fsync) and sha256 of the file alone (the
slowest required hash is one sequential stream: a lower bound for any
verified fetch). A 128 MiB fetch shows that memory does not grow with the
file. Wall, CPU (user+sys) and peak RSS come from convert.testing.bench.

Other processes on the machine inflate wall times, curl's and ours alike, so
the ratio of each round (measured back to back) is printed beside the medians.
Exits 1 if bitconvert's median takes more than 1.2x curl's, or more than
300 MB of memory, or if its memory grows with the file.

    make bench BENCH=fetch
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from convert.testing.bench import Measured, measure, print_table, script_arguments
from convert.testing.mirror import serve_directory

REPO = Path(__file__).resolve().parent.parent

CURL = "/usr/bin/curl"
BIG = 1 << 30
SMALL = 128 << 20
BLOCK = 64 << 20
ROUNDS = 3
MAX_RATIO = 1.2
MAX_RSS_MB = 300
MAX_RSS_GROWTH_MB = 50

REGISTRY = """models:
{entries}"""
ENTRY = """  {id}:
    source: {source}
    depth: 50
    width: 1
    classes: 1000
    resolution: 224
    params: 1
    dataset: benchmark
    description: {size} random bytes for the fetch benchmark
    code: big_vision
"""


def log(message: str) -> None:
    print(f"bench_fetch: {message}", file=sys.stderr, flush=True)


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of a random 64 MiB block, tiled (quick to make, no sparse holes)."""
    block = os.urandom(min(BLOCK, size))
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)


def timed_child(argv: list[str], env: dict[str, str]) -> Measured:
    """One fresh child, after a sync (no run pays for the dirty pages of the one before); raises if it fails."""
    run = measure(argv, env=env, cwd=REPO, quiet=True, sync=True)
    if not run.ok:
        raise SystemExit(f"bench_fetch: {' '.join(argv[:4])} ... exited {run.returncode}")
    return run


def main() -> int:
    if not os.access(CURL, os.X_OK):
        print(f"{CURL} not found (nothing to compare with): install it and re-run", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    try:
        return run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> int:
    bucket = work / "bucket"
    (bucket / "bench").mkdir(parents=True)
    files = {"bench-1g": ("bench/big.bin", BIG), "bench-128m": ("bench/small.bin", SMALL)}
    log(f"writing {BIG >> 20} MiB and {SMALL >> 20} MiB test files under {work}")
    for source, size in files.values():
        make_file(bucket / source, size)
    registry = work / "registry.yaml"
    registry.write_text(REGISTRY.format(entries="".join(ENTRY.format(id=i, source=s, size=n) for i, (s, n) in files.items())))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITCONVERT_")}
    env.update(BITCONVERT_REGISTRY=str(registry), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")

    with serve_directory(bucket) as server:
        for source, _ in files.values():  # the mirror hashes each file once; keep that out of the timings
            server.info(bucket / source)
        runs = Runs(work, server, env, bucket / files["bench-1g"][0])
        samples: dict[str, list[Measured]] = {"curl": [], "bitconvert": [], "dd": [], "sha256": []}
        load_before = os.getloadavg()[0]
        for round_number in range(1, ROUNDS + 1):
            pair = [("curl", runs.curl), ("bitconvert", lambda: runs.fetch("bench-1g"))]
            for name, run_one in pair if round_number % 2 else reversed(pair):
                samples[name].append(run_one())
            samples["dd"].append(runs.durable_copy())
            samples["sha256"].append(runs.sha256_alone())
            c, b = samples["curl"][-1], samples["bitconvert"][-1]
            log(
                f"round {round_number}: curl {c.wall_s:.2f} s ({c.cpu_s:.2f} s CPU), "
                f"bitconvert {b.wall_s:.2f} s ({b.cpu_s:.2f} s CPU): {b.wall_s / c.wall_s:.2f}x"
            )
        small = runs.fetch("bench-128m")
        load_after = os.getloadavg()[0]
    return report(samples, small, (load_before, load_after))


class Runs:
    """The commands compared, each one fresh child measured by timed_child."""

    def __init__(self, work: Path, server, env: dict[str, str], big: Path):
        self.work, self.server, self.env, self.big = work, server, env, big

    def curl(self) -> Measured:
        out = self.work / "curl.out"
        result = timed_child([CURL, "-s", "-f", "-o", str(out), self.server.url("bench/big.bin")], self.env)
        assert out.stat().st_size == BIG
        out.unlink()
        return result

    def fetch(self, model_id: str) -> Measured:
        cache = self.work / "cache"
        argv = [sys.executable, "-m", "convert", "fetch", model_id, "--force", "--quiet"]
        result = timed_child([*argv, "--cache-dir", str(cache), "--base-url", self.server.base_url], self.env)
        shutil.rmtree(cache)
        return result

    def durable_copy(self) -> Measured:
        # What any downloader that fsyncs (as issue 3 requires) pays for the disk alone:
        # the served file, already in the page cache, copied and fsynced by dd.
        out = self.work / "dd.out"
        result = timed_child(["dd", f"if={self.big}", f"of={out}", "bs=1M", "conv=fsync", "status=none"], self.env)
        out.unlink()
        return result

    def sha256_alone(self) -> Measured:
        # The slowest of the required hashes, single-stream: a lower bound for any verified fetch.
        code = f"import hashlib; h = hashlib.sha256(); f = open({str(self.big)!r}, 'rb')\n"
        code += "while b := f.read(1 << 20): h.update(b)"
        return timed_child([sys.executable, "-c", code], self.env)


def report(samples: dict[str, list[Measured]], small: Measured, load) -> int:
    def row(name: str, runs: list[Measured], size: int):
        wall = statistics.median(r.wall_s for r in runs)
        return name, wall, statistics.median(r.cpu_s for r in runs), max(r.peak_rss for r in runs), size

    rows = [
        row("curl -s -o (no verification)", samples["curl"], BIG),
        row("bitconvert fetch (verified)", samples["bitconvert"], BIG),
        row("for scale: dd conv=fsync of the file (copy, then one fsync)", samples["dd"], BIG),
        row("lower bound: sha256 of the file alone, one thread", samples["sha256"], BIG),
        row("bitconvert fetch, 128 MiB file", [small], SMALL),
    ]
    curl_s, fetch_s = rows[0][1], rows[1][1]
    rounds = ", ".join(f"{b.wall_s / c.wall_s:.2f}" for c, b in zip(samples["curl"], samples["bitconvert"], strict=True))
    print(f"1 GiB over loopback; median of {ROUNDS} alternating runs, each a fresh process after a sync;")
    print(f"load average {load[0]:.1f} before, {load[1]:.1f} after, on {os.cpu_count()} CPUs.\n")
    table = []
    for name, seconds, cpu, rss, size in rows:
        ratio = f"{seconds / curl_s:.2f}" if size == BIG else ""
        table.append((name, f"{seconds:.2f}", f"{size / 1e6 / seconds:.0f}", f"{cpu:.2f}", f"{rss / 1e6:.0f}", ratio))
    print_table(("tool", "seconds", "MB/s", "CPU seconds", "peak RSS MB", "ratio vs curl"), table, right=range(1, 6))
    print(f"\nbitconvert / curl in each round, back to back: {rounds}")
    ratio, big_rss, small_rss = fetch_s / curl_s, rows[1][3] / 1e6, rows[-1][3] / 1e6
    failures = []
    if ratio > MAX_RATIO:
        failures.append(f"bitconvert took {ratio:.2f}x curl's time (target {MAX_RATIO}x)")
    if big_rss > MAX_RSS_MB:
        failures.append(f"peak RSS {big_rss:.0f} MB (target {MAX_RSS_MB} MB)")
    if big_rss - small_rss > MAX_RSS_GROWTH_MB:
        failures.append(f"memory grows with the file: {small_rss:.0f} MB at 128 MiB, {big_rss:.0f} MB at 1 GiB")
    print()
    print(
        "target missed: " + "; ".join(failures)
        if failures
        else f"targets met: ratio <= {MAX_RATIO}, RSS flat and <= {MAX_RSS_MB} MB"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    script_arguments(__doc__)
    sys.exit(main())
