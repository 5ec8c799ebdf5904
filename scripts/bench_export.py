#!/usr/bin/env python
"""Benchmark `bitconvert export` (issue 5): wall time and peak RSS, against the targets.

    make bench BENCH=export          # or: .venv/bin/python scripts/bench_export.py [--only r50x1-160]

Each export runs the real CLI in a fresh subprocess, with its defaults (parity
on), on a synthetic checkpoint in the official layout (R50x1: 0.1 GB; R152x2:
0.95 GB), written to bench-results/ once and reused. The memory judged is
the peak of the RSS of the export and its JAX reference worker summed
(sampled every 0.1 s; both hold memory at once when the worker runs
alongside); the largest single process (ru_maxrss, measured in a fresh
helper process so that earlier runs do not mask it) is shown too. CPU
time (user+sys of the whole process tree) is reported too: unlike wall time
it does not grow when other processes share the 2 cores. Prints a Markdown table
on stdout, progress on stderr; exits 1 when a target is missed.

Targets (issue 5, on the project's 2-core, 24 GB machine):
r50x1-160 within 30 s; r152x2-384 within 120 s and 4.5 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench-results" / "export"
BIN = Path(sys.executable).parent

#: model id -> (wall seconds, peak RSS bytes or None)
TARGETS = {"r50x1-160": (30.0, None), "r152x2-384": (120.0, 4.5e9)}

# Runs one command and reports its wall time, the peak RSS of its process tree's
# largest member (RUSAGE_CHILDREN: only this helper's own children are counted),
# and the peak of the whole tree's RSS summed (an export may run the JAX
# reference in a worker process: both hold memory at once), sampled every 0.1 s.
_MEASURE = """
import json, os, resource, subprocess, sys, threading, time

def tree(pid):
    pids = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    pids += tree(int(child))
    except OSError:
        pass
    return pids

def rss(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0

t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
peak = {"tree": 0, "processes": 0}

def sample():
    while proc.poll() is None:
        pids = tree(proc.pid)
        peak["tree"] = max(peak["tree"], sum(rss(p) for p in pids))
        peak["processes"] = max(peak["processes"], len(pids))
        time.sleep(0.1)

sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
rc = proc.wait()
wall = time.perf_counter() - t
sampler.join()
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_kb": ru.ru_maxrss,
                  "peak_tree_rss": peak["tree"], "processes": peak["processes"]}))
"""


def checkpoint_for(model_id: str) -> Path:
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint

    entry = load_registry().get(model_id)
    path = RESULTS / "checkpoints" / Path(entry.source).name
    if not path.exists():
        t = time.perf_counter()
        write_synthetic_checkpoint(path, entry.architecture, seed=0)
        print(f"bench: wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return path


def measure(model_id: str) -> dict:
    ckpt = checkpoint_for(model_id)
    out = RESULTS / "exports"
    cmd = [str(BIN / "bitconvert"), "export", "--model", model_id, "--checkpoint", str(ckpt), "--output-dir", str(out)]
    print(f"bench: $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"bench: measuring {model_id} failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    manifest = out / model_id / "manifest.json"
    if result["rc"] == 0 and manifest.exists():
        parity = json.loads(manifest.read_text())["parity"]
        result["parity_px"] = parity["resolution"]
        result["after"] = {
            v: max(s["tf_rel_l2_f64"] for k, s in r.items() if k != "summary") for v, r in parity["after_export"].items()
        }
        result["tolerance"] = parity["tolerance"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark bitconvert export against the issue's targets.")
    parser.add_argument("--only", choices=sorted(TARGETS), help="one model only")
    args = parser.parse_args()
    models = [args.only] if args.only else list(TARGETS)
    print(f"bench: load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)

    rows, missed = [], []
    for model_id in models:
        r = measure(model_id)
        wall_target, rss_target = TARGETS[model_id]
        rss = max(r["peak_tree_rss"], r["peak_rss_kb"] * 1024)  # the sampled sum can miss a short peak
        ok_wall = r["rc"] == 0 and r["wall_s"] <= wall_target
        ok_rss = rss_target is None or rss <= rss_target
        if not (ok_wall and ok_rss):
            missed.append(model_id)
        after = r.get("after", {})
        rows.append(
            (
                model_id,
                str(r["rc"]),
                f"{r['wall_s']:.1f} s",
                f"<= {wall_target:.0f} s" + ("" if ok_wall else " MISSED"),
                f"{r['cpu_s']:.0f} s",
                "worker" if r["processes"] > 1 else "in turn",
                f"{rss / 1e9:.2f} GB",
                f"{r['peak_rss_kb'] * 1024 / 1e9:.2f} GB",
                ("-" if rss_target is None else f"<= {rss_target / 1e9:.1f} GB") + ("" if ok_rss else " MISSED"),
                str(r.get("parity_px", "-")),
                ", ".join(f"{v}: {e:.1e}" for v, e in after.items()) or "-",
            )
        )
    head = (
        "model",
        "exit",
        "wall",
        "target",
        "CPU (user+sys)",
        "JAX reference",
        "peak RSS, all processes",
        "largest process",
        "target",
        "parity px",
        "after-export rel. error vs float64",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on the machine inflate these figures)")
    if missed:
        print(f"bench: missed targets: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
