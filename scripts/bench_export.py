#!/usr/bin/env python
"""Benchmark `bitconvert export` (issue 5): wall time and peak RSS, against the targets.

    make bench BENCH=export          # or: .venv/bin/python scripts/bench_export.py [--only r50x1-160]

Each export runs the real CLI in a fresh subprocess, with its defaults (parity
on), on a synthetic checkpoint in the official layout (R50x1: 0.1 GB; R152x2:
0.95 GB), written to bench-results/ once and reused. The memory judged is
the peak of the RSS of the export and its JAX reference worker summed
(sampled every 0.1 s; both hold memory at once when the worker runs
alongside); the largest single process (its VmHWM) is shown too
(convert.testing.bench measures both). CPU
time (user+sys of the whole process tree) is reported too: unlike wall time
it does not grow when other processes share the 2 cores. Prints a Markdown table
on stdout, progress on stderr; exits 1 when a target is missed.

Targets (issue 5, on the project's 2-core, 24 GB machine):
r50x1-160 within 30 s; r152x2-384 within 120 s and 4.5 GB peak RSS. Issue 10:
``--format savedmodel,keras`` within 1.5x the wall time of ``savedmodel`` alone
(r50x1-160) and within 3 GB more memory (r152x2-384), measured in the same run;
the ratio is judged on the median of ``--pairs`` alternating pairs (default 3).
Issue 19, target 4: the CPU of ``export --model r50x1-224`` within 3x the CPU of timm's
cold predict of one image (scripts/bench_predict.py, measured in the same run), and of
``--format savedmodel,keras,tflite,onnx`` within 8x; best of ``--rounds`` alternating
rounds each, with the CPU's model and the load average beside the table (``--cpu-only``
for these rows alone, ``--no-cpu`` without them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from convert.testing.bench import loopback_bucket, measure, print_table  # noqa: E402 - after the path set-up

RESULTS = REPO / "bench-results" / "export"
BIN = Path(sys.executable).parent

#: model id -> (wall seconds, peak RSS bytes or None)
TARGETS = {"r50x1-160": (30.0, None), "r152x2-384": (120.0, 4.5e9)}
#: Issue 10: savedmodel,keras against savedmodel alone, per model: (wall ratio or None, extra bytes or None).
KERAS_TARGETS = {"r50x1-160": (1.5, None), "r152x2-384": (None, 3e9)}
KERAS = "savedmodel,keras"
#: Issue 19, target 4: export CPU (user+sys of the process tree) at most this multiple of the CPU
#: of timm's cold predict on one image from the same checkpoint, measured in the same run.
CPU_MODEL = "r50x1-224"
CPU_TARGETS = {"savedmodel": 3.0, "savedmodel,keras,tflite,onnx": 8.0}


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


def measure_export(model_id: str, formats: str = "savedmodel") -> dict:
    ckpt = checkpoint_for(model_id)
    out = RESULTS / "exports"
    cmd = [str(BIN / "bitconvert"), "export", "--model", model_id, "--checkpoint", str(ckpt), "--output-dir", str(out)]
    cmd += ["--format", formats]
    print(f"bench: $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    # The environment as a user's: the CLI quiets TensorFlow itself (level 2 showed its cuInit error line).
    run = measure(cmd, capture=True)
    result = {"run": run}
    manifest = out / model_id / "manifest.json"
    if run.ok and manifest.exists():
        data = json.loads(manifest.read_text())
        parity = data["parity"]
        result["parity_px"] = parity["resolution"]
        reports = {e["variant"]: e["parity"]["tensorflow"]["report"] for e in data["targets"]["savedmodel"]}
        result["after"] = {v: max(s["tf_rel_l2_f64"] for k, s in r.items() if k != "summary") for v, r in reports.items()}
        result["tolerance"] = parity["tolerance"]
    return result


def _targets(model_id: str, run, base) -> tuple[str, bool, str, bool]:
    """(wall target text, met, memory target text, met): absolute for savedmodel, relative to ``base`` for keras."""
    rss = max(run.peak_rss, run.largest_rss)  # the sampled sum can miss a short peak
    if base is None:
        wall_target, rss_target = TARGETS[model_id]
        ok_wall, ok_rss = run.ok and run.wall_s <= wall_target, rss_target is None or rss <= rss_target
        wall_text = f"<= {wall_target:.0f} s"
        rss_text = "-" if rss_target is None else f"<= {rss_target / 1e9:.1f} GB"
        return wall_text, ok_wall, rss_text, ok_rss
    ratio, extra = KERAS_TARGETS[model_id]
    base_rss = max(base.peak_rss, base.largest_rss)
    ok_wall = run.ok and (ratio is None or run.wall_s <= ratio * base.wall_s)
    ok_rss = extra is None or rss <= base_rss + extra
    wall_text = "-" if ratio is None else f"<= {ratio}x savedmodel ({run.wall_s / base.wall_s:.2f}x)"
    rss_text = "-" if extra is None else f"<= savedmodel + {extra / 1e9:.0f} GB (+{(rss - base_rss) / 1e9:.2f} GB)"
    return wall_text, ok_wall, rss_text, ok_rss


def _row(model_id, formats, r, wall_text, ok_wall, rss_text, ok_rss, missed) -> tuple:
    run = r["run"]
    if not (ok_wall and ok_rss):
        missed.append(f"{model_id} --format {formats}")
    after = r.get("after", {})
    return (
        model_id,
        formats,
        str(run.returncode),
        f"{run.wall_s:.1f} s",
        wall_text + ("" if ok_wall else " MISSED"),
        f"{run.cpu_s:.0f} s",
        "worker" if run.processes > 1 else "in turn",
        f"{max(run.peak_rss, run.largest_rss) / 1e9:.2f} GB",
        f"{run.largest_rss / 1e9:.2f} GB",
        rss_text + ("" if ok_rss else " MISSED"),
        str(r.get("parity_px", "-")),
        ", ".join(f"{v}: {e:.1e}" for v, e in after.items()) or "-",
    )


def _measure_pairs(model_id: str, pairs: int) -> tuple[dict, dict | None, str | None]:
    """(savedmodel run, savedmodel,keras run or None, note): with ``pairs`` > 1, that many alternating
    pairs, and the pair of the median wall-time ratio (one machine varies by about 10% between runs)."""
    if pairs <= 1:
        return measure_export(model_id), None, None
    done = [(measure_export(model_id), measure_export(model_id, KERAS)) for _ in range(pairs)]
    ratios = [both["run"].wall_s / base["run"].wall_s for base, both in done]
    median = sorted(range(pairs), key=ratios.__getitem__)[pairs // 2]
    listed = ", ".join(
        f"{b['run'].wall_s:.1f} s / {k['run'].wall_s:.1f} s = {r:.2f}x" for (b, k), r in zip(done, ratios, strict=True)
    )
    base, both = done[median]
    return (
        base,
        both,
        f"{model_id}: {pairs} alternating pairs (savedmodel / savedmodel,keras): {listed}; the median pair is shown",
    )


def timm_cold_predict_cpu(model_id: str) -> float:
    """CPU seconds of timm's cold predict on one image from the checkpoint: scripts/bench_predict.py's own run."""
    from bench_predict import TIMM, sample_image, timed  # scripts/, this script's directory

    from convert.registry import load_registry

    entry = load_registry().get(model_id)
    arch = entry.architecture
    shape = [str(entry.resolution), str(arch.depth), str(arch.width), str(arch.classes)]
    wall, cpu = timed(
        [sys.executable, "-c", TIMM, str(checkpoint_for(model_id)), str(sample_image(RESULTS / "image.jpg")), *shape],
        dict(os.environ),
    )
    print(f"bench: timm cold predict {wall:.1f} s, {cpu:.1f} CPU-s", file=sys.stderr)
    return cpu


def cpu_targets(rounds: int, missed: list[str]) -> None:
    """Issue 19, target 4: ``rounds`` alternating rounds (timm, then each export), best CPU of each; a table."""
    timm, runs = [], {formats: [] for formats in CPU_TARGETS}
    for _ in range(max(1, rounds)):
        timm.append(timm_cold_predict_cpu(CPU_MODEL))
        for formats in CPU_TARGETS:
            runs[formats].append(measure_export(CPU_MODEL, formats)["run"])
    base, rows = min(timm), []
    for formats, limit in CPU_TARGETS.items():
        best = min(runs[formats], key=lambda r: r.cpu_s)
        ok = all(r.ok for r in runs[formats]) and best.cpu_s <= limit * base
        if not ok:
            missed.append(f"{CPU_MODEL} --format {formats} CPU")
        rows.append(
            (
                CPU_MODEL,
                formats,
                ",".join(str(r.returncode) for r in runs[formats]),
                ", ".join(f"{r.wall_s:.0f}" for r in runs[formats]),
                ", ".join(f"{r.cpu_s:.1f}" for r in runs[formats]),
                f"{base:.1f}",
                f"{best.cpu_s / base:.1f}x",
                f"<= {limit:.0f}x" + ("" if ok else " MISSED"),
            )
        )
    head = ("model", "formats", "exit", "wall s", "CPU s (user+sys)", "timm cold predict CPU s (best)", "best / timm", "target")
    print_table(head, rows, right=(3, 4, 5, 6))
    print(
        f"\ntimm cold predict, each round: {', '.join(f'{c:.1f}' for c in timm)} CPU-s; load average after: {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark bitconvert export against the issue's targets.")
    parser.add_argument("--only", choices=sorted(TARGETS), help="one model only")
    parser.add_argument("--no-keras", action="store_true", help="savedmodel alone, without the savedmodel,keras rows")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="alternating savedmodel / savedmodel,keras runs where a time ratio is judged (median)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the issue 19 CPU rows (best of them)")
    parser.add_argument("--cpu-only", action="store_true", help="only the issue 19 CPU rows (r50x1-224 against timm)")
    parser.add_argument("--no-cpu", action="store_true", help="without the issue 19 CPU rows")
    args = parser.parse_args()
    print(f"bench: load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", file=sys.stderr)
    missed: list[str] = []
    if not args.cpu_only:
        time_targets(args, missed)
    if not args.no_cpu:
        cpu_targets(args.rounds, missed)
    if missed:
        print(f"bench: missed targets: {', '.join(missed)}", file=sys.stderr)
        return 1
    return 0


def time_targets(args, missed: list[str]) -> None:
    """Issues 5 and 10: wall time and memory of each model, savedmodel and savedmodel,keras."""
    models = [args.only] if args.only else list(TARGETS)
    rows, notes = [], []
    for model_id in models:
        base, both, note = _measure_pairs(model_id, 1 if args.no_keras or KERAS_TARGETS[model_id][0] is None else args.pairs)
        rows.append(_row(model_id, "savedmodel", base, *_targets(model_id, base["run"], None), missed))
        if not args.no_keras:
            both = both or measure_export(model_id, KERAS)
            rows.append(_row(model_id, KERAS, both, *_targets(model_id, both["run"], base["run"]), missed))
        notes += [note] if note else []
    head = (
        "model",
        "formats",
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
    print_table(head, rows)
    for note in notes:
        print(f"\n{note}")
    print(f"\nload average after: {os.getloadavg()[0]:.1f} (other processes on the machine inflate these figures)")


if __name__ == "__main__":
    with loopback_bucket(RESULTS):  # the exports' label file, from 127.0.0.1
        sys.exit(main())
