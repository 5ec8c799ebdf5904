#!/usr/bin/env python
"""Benchmark `bitconvert fetch` against curl over loopback (issue 3's performance target).

Serves a 1 GiB file with convert.testing.mirror on 127.0.0.1 (sendfile, so the server
is not the bottleneck) and times, in fresh child processes, alternately:

- ``curl -s -o FILE URL`` (no verification at all), and
- ``python -m convert fetch ID --quiet`` (stream to disk, crc32c + md5 +
  sha256, fsync, atomic rename: the whole command, start-up included).

Two more rows are measured the same way, for context: ``dd conv=fsync`` of
the same file from the page cache (the disk's speed for a durable copy:
issue 3 requires the fsync, curl does not do it; dd fsyncs once at the end,
bitconvert writes back while it downloads, so dd is no lower bound), and
md5 of the file alone (the slowest required hash is one sequential stream:
a lower bound for any verified fetch).

Peak RSS comes from ``os.wait4`` of each child. A 128 MiB fetch is measured
too, to show that memory does not grow with the file. Prints a Markdown table
(medians of the rounds) and exits 1 if bitconvert takes more than 1.5x curl's
time or more than 300 MB of memory, or if its memory grows with the file.

    make bench BENCH=fetch
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert.testing.mirror import serve_directory

REPO = Path(__file__).resolve().parent.parent

CURL = "/usr/bin/curl"
TIME = "/usr/bin/time"
BIG = 1 << 30
SMALL = 128 << 20
BLOCK = 64 << 20
ROUNDS = 3
MAX_RATIO = 1.5
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
"""


def log(message: str) -> None:
    print(f"bench_fetch: {message}", file=sys.stderr, flush=True)


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of a random 64 MiB block, tiled (quick to make, no sparse holes)."""
    block = os.urandom(min(BLOCK, size))
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)


def timed_child(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of a command; raises if it fails.

    The command runs under GNU time, whose own tiny process forks it: the
    kernel's peak-RSS figure of a child includes the memory of the process
    that spawned it, and this one holds the mirror.
    """
    os.sync()  # start each run without the previous run's dirty pages
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        child = subprocess.Popen([TIME, "-f", "%M", "-o", rss.name, *argv], env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            raise SystemExit(f"bench_fetch: {' '.join(argv[:4])} ... exited {child.returncode}")
        peak_kib = int(rss.read().split()[-1])
    return elapsed, usage.ru_utime + usage.ru_stime, peak_kib / 1024


def main() -> int:
    for tool, why in ((CURL, "nothing to compare with"), (TIME, "needed to measure peak memory")):
        if not os.access(tool, os.X_OK):
            print(f"{tool} not found ({why}): install it and re-run", file=sys.stderr)
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
    cache = work / "cache"

    with serve_directory(bucket) as server:
        for source, _ in files.values():  # the mirror hashes each file once; keep that out of the timings
            server.info(bucket / source)

        def curl():
            out = work / "curl.out"
            result = timed_child([CURL, "-s", "-f", "-o", str(out), server.url(files["bench-1g"][0])], env)
            assert out.stat().st_size == BIG
            out.unlink()
            return result

        def fetch(model_id):
            argv = [sys.executable, "-m", "convert", "fetch", model_id, "--force", "--quiet"]
            result = timed_child([*argv, "--cache-dir", str(cache), "--base-url", server.base_url], env)
            shutil.rmtree(cache)
            return result

        def durable_copy():
            # What any downloader that fsyncs (as issue 3 requires) pays for the disk alone:
            # the served file, already in the page cache, copied and fsynced by dd.
            out = work / "dd.out"
            result = timed_child(
                ["dd", f"if={bucket / files['bench-1g'][0]}", f"of={out}", "bs=1M", "conv=fsync", "status=none"], env
            )
            out.unlink()
            return result

        def md5_alone():
            # The slowest of the required hashes, single-stream: a lower bound for any verified fetch.
            code = f"import hashlib; h = hashlib.md5(); f = open({str(bucket / files['bench-1g'][0])!r}, 'rb')\n"
            code += "while b := f.read(1 << 20): h.update(b)"
            return timed_child([sys.executable, "-c", code], env)

        samples: dict[str, list[tuple[float, float, float]]] = {"curl": [], "bitconvert": [], "dd": [], "md5": []}
        load_before = os.getloadavg()[0]
        for round_number in range(1, ROUNDS + 1):
            samples["curl"].append(curl())
            samples["bitconvert"].append(fetch("bench-1g"))
            samples["dd"].append(durable_copy())
            samples["md5"].append(md5_alone())
            c, b = samples["curl"][-1], samples["bitconvert"][-1]
            log(f"round {round_number}: curl {c[0]:.2f} s ({c[1]:.2f} s CPU), bitconvert {b[0]:.2f} s ({b[1]:.2f} s CPU)")
        small = fetch("bench-128m")
        load_after = os.getloadavg()[0]

    return report(samples, small, (load_before, load_after))


def report(samples: dict[str, list[tuple[float, float, float]]], small: tuple[float, float, float], load) -> int:
    def row(name: str, runs: list[tuple[float, float, float]], size: int):
        return name, statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), max(r[2] for r in runs), size

    rows = [
        row("curl -s -o (no verification)", samples["curl"], BIG),
        row("bitconvert fetch (verified)", samples["bitconvert"], BIG),
        row("for scale: dd conv=fsync of the file (copy, then one fsync)", samples["dd"], BIG),
        row("lower bound: md5 of the file alone, one thread", samples["md5"], BIG),
        row("bitconvert fetch, 128 MiB file", [small], SMALL),
    ]
    curl_s, fetch_s = rows[0][1], rows[1][1]
    print(f"1 GiB over loopback; median of {ROUNDS} alternating runs, each a fresh process;")
    print(f"load average {load[0]:.1f} before, {load[1]:.1f} after, on {os.cpu_count()} CPUs.\n")
    print("| tool | seconds | MB/s | CPU seconds | peak RSS MB | ratio vs curl |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, cpu, rss, size in rows:
        ratio = f"{seconds / curl_s:.2f}" if size == BIG else ""
        print(f"| {name} | {seconds:.2f} | {size / 1e6 / seconds:.0f} | {cpu:.2f} | {rss:.0f} | {ratio} |")
    ratio, big_rss, small_rss = fetch_s / curl_s, rows[1][3], rows[-1][3]
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
    sys.exit(main())
