#!/usr/bin/env python
"""Benchmark inference of every exported target against timm's ResNetV2 (issue 11), beside the CPU's fp32 floor.

    make bench BENCH=inference       # or: .venv/bin/python scripts/bench_inference.py [--r152x2] [--reps 7]

One run: a synthetic r50x1-224 checkpoint (official layout, bench-results/)
is exported with the `bitconvert` CLI (``--skip-parity``: parity is the
export's own business; ``--export-args`` adds options such as more formats),
then every target found in the export directory is timed at batch 1 and 8,
224 px: the SavedModel classifier (``tf.saved_model.load``), and when present
``*.keras`` (one process per Keras backend), ``*.tflite`` (ai_edge_litert),
``*.onnx`` (onnxruntime, CPU); then JAX jit of the Flax reference.

Each runtime is timed in a child process of its own, *interleaved* with timm
(``resnetv2_<depth>x<width>_bit``, PyTorch eager, the same .npz weights,
``torch.set_num_threads(cores)``, ``torch.inference_mode``): round by round,
one call of each, best of ``--reps`` warm rounds. The ratio column is timm's
time in that same process over the runtime's (above 1: faster than timm), which
stays meaningful while other processes load the machine (a 0.3 s pause before
each timed call lets the previous runtime's spinning worker threads go idle). "first call" is the
first call at that input shape.

The floor: the fastest float32 matmul this CPU does (numpy and TensorFlow,
4096x4096, best of 5) in GFLOP/s, and the model's FLOPs per image counted
from the architecture (2 x multiply-adds of every convolution and the head;
R50x1 at 224: 8.2 GFLOP); seconds per batch = FLOPs x batch / peak.

Prints a Markdown table on stdout, then issue 19's target 1 judged on it
(``convert.testing.bench.judge_speed``: every runtime below timm, the best one
per batch against 2x / 1.5x, and whether that speed-up asks less time than the
fp32 floor, i.e. is out of reach of direct convolutions on this CPU); progress on stderr. Exits 1 when
a target is missed: the SavedModel slower than timm at any batch or its first
call at a new shape taking 3 s or more (issue 11), or issue 19's target 1 (a
runtime below timm, or the best one under 2x / 1.5x).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench-results" / "inference"
BIN = Path(sys.executable).parent
SIZE = 224
BATCHES = (1, 8)
FIRST_CALL_LIMIT_S = 3.0
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
#: Pause before each timed call: TF's, onnxruntime's and PyTorch's OpenMP worker threads
#: busy-wait for a while after a call and would slow the next runtime's call down.
PAUSE_S = 0.3
#: Threads each runtime may use (--threads; default: one per core, as issue 11 asks).
THREADS = int(os.environ.get("BENCH_THREADS") or os.cpu_count())


def model_flops(arch, size: int) -> int:
    """2 x multiply-adds of every convolution and the head of ``arch`` on one ``size`` x ``size`` image."""
    from convert.model import numerics as n

    h = (size + 2 * n.ROOT_PAD - n.ROOT_KERNEL) // n.ROOT_STRIDE + 1
    macs = h * h * n.ROOT_KERNEL**2 * 3 * arch.root_width
    h = (h + 2 * n.POOL_PAD - n.POOL_WINDOW) // n.POOL_STRIDE + 1
    for b, u in arch.iter_units():
        stride = n.BLOCK_STRIDES[b - 1] if u == 1 else 1
        cin, mid, out = arch.unit_in_width(b, u), arch.mid_width(b), arch.out_width(b)
        ho = (h + 2 * n.MID_PAD - n.MID_KERNEL) // stride + 1
        macs += h * h * cin * mid + ho * ho * n.MID_KERNEL**2 * mid * mid + ho * ho * mid * out
        if u == 1:
            macs += ho * ho * cin * out  # the projection shortcut
        h = ho
    return 2 * (macs + arch.features * arch.classes)


# -- the children: one runtime each, interleaved with timm ------------------------------------


def _timm(arch, checkpoint: str):
    import timm
    import torch

    torch.set_num_threads(THREADS)
    model = timm.create_model(f"resnetv2_{arch.depth}x{arch.width}_bit", pretrained=False, num_classes=arch.classes)
    model.load_pretrained(checkpoint)
    model.eval()

    def run(x):  # x: NHWC in [0, 1]; timm takes NCHW in the weights' [-1, 1]
        with torch.inference_mode():
            return model(torch.from_numpy((x * 2.0 - 1.0).transpose(0, 3, 1, 2).copy())).numpy()

    return run


def _runtime(kind: str, path: str, checkpoint: str, arch):
    """A callable NHWC float32 [0, 1] batch -> logits (numpy) for one runtime, loaded by the package's own
    loaders (convert.predict.runners: what `bitconvert predict` runs)."""
    from convert.export.target import OUTPUT_NAMES
    from convert.predict import runners

    if kind == "savedmodel":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
        return runners.savedmodel_runner(Path(path))
    if kind == "tflite":
        return runners.tflite_runner(Path(path), threads=THREADS)
    if kind == "onnx":
        return runners.onnx_runner(Path(path), OUTPUT_NAMES["classification"], threads=THREADS)
    if kind.startswith("keras-"):
        return runners.keras_runner(Path(path))
    if kind == "jax":
        import jax

        from convert.checkpoint import load_checkpoint
        from convert.model.flax_model import make_apply
        from convert.model.mapping import flax_params

        params = flax_params(load_checkpoint(checkpoint, arch).arrays, arch, put=jax.device_put)
        apply = make_apply(arch)
        return lambda x: apply(params, x * 2.0 - 1.0)["logits"].block_until_ready()
    raise ValueError(kind)


def child(kind: str, path: str, checkpoint: str, model_id: str) -> None:
    """Serve timed calls of ``kind`` (or timm, ``kind == "timm"``) over stdin/stdout, one line each.

    The parent writes a batch size; the child answers ``{"s": seconds, "cpu": seconds}`` for one
    call at that batch (the first call at a shape included: the parent keeps it apart). Each side
    runs in a process of its own, so neither's thread pool or allocator disturbs the other.
    """
    import numpy as np
    import torch  # noqa: F401  (before TensorFlow: the other order crashed in this venv)

    from convert.registry import load_registry

    arch = load_registry().get(model_id).architecture
    run = _timm(arch, checkpoint) if kind == "timm" else _runtime(kind, path, checkpoint, arch)
    print("ready", flush=True)
    for line in sys.stdin:
        batch = int(line)
        x = np.random.default_rng(batch).uniform(0.0, 1.0, (batch, SIZE, SIZE, 3)).astype(np.float32)
        t, c = time.perf_counter(), time.process_time()
        run(x)
        print(json.dumps({"s": time.perf_counter() - t, "cpu": time.process_time() - c}), flush=True)


class _Side:
    """One child process serving timed calls (see :func:`child`)."""

    def __init__(self, kind: str, path: str, checkpoint: str, model_id: str, env: dict | None = None):
        cmd = [sys.executable, __file__, "--child", kind, path, checkpoint, model_id]
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        t = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=full_env)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} did not start (exit {self.proc.wait()})")
        self.load_s = time.perf_counter() - t

    def call(self, batch: int) -> float:
        self.proc.stdin.write(f"{batch}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["s"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def alternate(kind: str, path: str, checkpoint: str, model_id: str, batches, reps: int, env=None) -> dict:
    """The runtime and timm in two processes, taking turns call by call: per batch, every warm time of each."""
    sides = {"runtime": _Side(kind, path, checkpoint, model_id, env), "timm": _Side("timm", "", checkpoint, model_id)}
    try:
        rows = {"load": {name: side.load_s for name, side in sides.items()}}
        for batch in batches:
            row = {name: {"first": side.call(batch), "warm": []} for name, side in sides.items()}
            for _ in range(reps):
                for name, side in sides.items():
                    time.sleep(PAUSE_S)  # the other side's worker threads stop spinning first
                    row[name]["warm"].append(side.call(batch))
            rows[str(batch)] = row
            best = {name: min(r["warm"]) for name, r in row.items()}
            print(f"bench: {kind} {model_id} batch {batch}: {best['runtime']:.4f}s, timm {best['timm']:.4f}s", file=sys.stderr)
        return rows
    finally:
        for side in sides.values():
            side.close()


def floor() -> dict:
    """Best float32 matmul GFLOP/s of numpy and TensorFlow on this CPU (4096 x 4096, best of 5)."""
    import numpy as np
    import tensorflow as tf

    n = 4096
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    ta = tf.constant(a)
    best = {}
    for name, fn in (("numpy", lambda: a @ a), ("tensorflow", lambda: tf.linalg.matmul(ta, ta).numpy())):
        fn()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best[name] = 2 * n**3 / min(times) / 1e9
    return best


# -- the orchestration -------------------------------------------------------------------------


def _call_child(args: list[str], env: dict | None = None) -> dict | None:  # the floor
    cmd = [sys.executable, __file__, *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=full_env)
    if proc.returncode != 0 or not proc.stdout.strip():
        print(f"bench: {' '.join(args[:3])} failed (exit {proc.returncode})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export(model_id: str, export_args: str, reuse: bool) -> tuple[Path, Path]:
    """The synthetic checkpoint and its export directory (written with the bitconvert CLI)."""
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint

    entry = load_registry().get(model_id)
    ckpt = RESULTS / "checkpoints" / Path(entry.source).name
    if not ckpt.exists():
        write_synthetic_checkpoint(ckpt, entry.architecture, seed=0)
    out = RESULTS / "exports"
    if not (reuse and (out / model_id / "classification").is_dir()):
        cmd = [str(BIN / "bitconvert"), "export", "--model", model_id, "--checkpoint", str(ckpt), "-o", str(out)]
        cmd += ["--skip-parity", "--quiet", *shlex.split(export_args)]
        print(f"bench: $ {' '.join(cmd)}", file=sys.stderr, flush=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return ckpt, out / model_id


def targets(export_dir: Path) -> list[tuple[str, str, Path]]:
    """(label, child kind, path) of every classifier target present in ``export_dir``."""
    found = [
        ("SavedModel (tf.saved_model.load)", "savedmodel", export_dir / "classification"),
    ]
    for path in sorted(export_dir.rglob("classification*.tflite")):
        found.append((f"LiteRT {path.name} (ai_edge_litert, XNNPACK)", "tflite", path))
    for path in sorted(export_dir.rglob("classification*.onnx")):
        found.append((f"ONNX {path.name} (onnxruntime CPU)", "onnx", path))
    for path in sorted(export_dir.rglob("classification*.keras")):
        for backend in KERAS_BACKENDS:
            found.append((f"Keras {path.name}, {backend} backend", f"keras-{backend}", path))
    return found


def _spread(times: list[float]) -> str:
    ordered = sorted(times)
    return f"{ordered[len(ordered) // 2]:.4f} / {ordered[-1]:.4f}"


def table(rows: list[tuple[str, dict, tuple[int, ...]]], peak: dict, flops: int, model_id: str, floor_batches=BATCHES) -> str:
    from convert.testing.bench import cpu_facts

    cpu = cpu_facts()
    lines = [
        f"{model_id}, {SIZE} px. CPU: {cpu['model']} ({', '.join(cpu['isa']) or 'no AVX'}), {cpu['cores']} cores, "
        f"load average {cpu['load'][0]:.1f}; {THREADS} threads per runtime. Each runtime and timm in a process of its own, "
        "taking turns call by call; best of the warm calls (median / worst beside); vs timm = timm's best / the runtime's best.",
        "",
        "| runtime | batch | best s | median / worst s | vs timm | timm best s | timm median / worst s | first call s (timm) | load s (timm) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, result, batches in rows:
        for b in batches:
            r, t = result[str(b)]["runtime"], result[str(b)]["timm"]
            lines.append(
                f"| {label} | {b} | {min(r['warm']):.4f} | {_spread(r['warm'])} | {min(t['warm']) / min(r['warm']):.2f}x "
                f"| {min(t['warm']):.4f} | {_spread(t['warm'])} | {r['first']:.2f} ({t['first']:.2f}) "
                f"| {result['load']['runtime']:.1f} ({result['load']['timm']:.1f}) |"
            )
    gflops = max(peak.values())
    how = ", ".join(f"{k} {v:.0f}" for k, v in peak.items())
    for b, sec in floor_seconds(peak, flops, floor_batches).items():
        lines.append(f"| fp32 floor ({flops / 1e9:.1f} GFLOP/image at {gflops:.0f} GFLOP/s) | {b} | {sec:.4f} | | | | | | |")
    lines += ["", f"Floor: fastest 4096x4096 float32 matmul, GFLOP/s: {how}."]
    return "\n".join(lines)


def floor_seconds(peak: dict, flops: int, batches) -> dict[int, float]:
    """Batch -> seconds of ``flops`` per image at the fastest matmul rate in ``peak`` (GFLOP/s)."""
    gflops = max(peak.values())
    return {b: flops * b / (gflops * 1e9) for b in batches}


def speed_verdict(rows, peak: dict, flops: int):
    """Issue 19's target 1 on R50x1's ``rows``: the exported runtimes (not the JAX reference) against timm and the floor."""
    from convert.testing.bench import judge_speed

    best_times = {
        label: {b: (min(result[str(b)]["runtime"]["warm"]), min(result[str(b)]["timm"]["warm"])) for b in batches}
        for label, result, batches in rows
        if not label.startswith("JAX")
    }
    return judge_speed(best_times, floor_seconds(peak, flops, BATCHES))


def time_runtimes(found, ckpt: Path, model_id: str, reps: int) -> tuple[list, list[str]]:
    """Each (label, kind, path) of ``found`` timed against timm at BATCHES: (rows, the labels that failed)."""
    rows, failed = [], []
    for label, kind, path in found:
        env = {"KERAS_BACKEND": kind.split("-", 1)[1]} if kind.startswith("keras-") else None
        try:
            result = alternate(kind, str(path), str(ckpt), model_id, BATCHES, reps, env)
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"bench: {label} failed: {exc}", file=sys.stderr)
            failed.append(label)
            continue
        rows.append((label, result, BATCHES))
    return rows, failed


@click.command()
@click.option("--reps", type=click.IntRange(1), default=7, show_default=True, help="Warm rounds per batch (best is kept).")
@click.option("--r152x2", is_flag=True, envvar="BENCH_R152X2", help="Also R152x2 at 224, batch 1 (SavedModel and timm).")
@click.option(
    "--export-args",
    default="--format savedmodel,keras,tflite,onnx",
    envvar="BENCH_EXPORT_ARGS",
    help="Extra `bitconvert export` options (default: every format).",
)
@click.option(
    "--threads", type=click.IntRange(1), help="Threads per runtime [default: one per core]; 1 is robust to a loaded machine."
)
@click.option("--only", help="Only these runtimes, comma-separated kinds (savedmodel, tflite, onnx, keras-torch, ..., jax).")
@click.option("--reuse", is_flag=True, help="Reuse an earlier export in bench-results/inference/.")
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False), help="Time this export instead (with --checkpoint).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="The .npz of --export-dir (timm loads it).")
@click.option("--child", "child_args", nargs=4, hidden=True, help="kind path checkpoint model_id (internal).")
@click.option("--floor", "floor_only", is_flag=True, hidden=True)
def main(reps, r152x2, export_args, threads, only, reuse, export_dir, checkpoint, child_args, floor_only):
    """Time every exported target, JAX and timm at batch 1 and 8; print one table."""
    if floor_only or child_args:
        from convert.cli.quiet import prepare

        prepare()  # TensorFlow's and JAX's start-up lines off stderr, as the CLI keeps them
    if floor_only:
        click.echo(json.dumps(floor()))
        return
    if child_args:
        child(*child_args)
        return
    from convert.registry import load_registry

    global THREADS
    if threads:  # the children read them at start-up
        THREADS = threads
        os.environ.update({"BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)})
        if threads == 1:
            os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    model_id = "r50x1-224"
    if export_dir and checkpoint:
        ckpt, export_dir = Path(checkpoint), Path(export_dir)
    else:
        ckpt, export_dir = export(model_id, export_args, reuse)
    found = [*targets(export_dir), ("JAX jit of the Flax reference", "jax", ckpt)]
    rows, failed = time_runtimes([f for f in found if not only or f[1] in only.split(",")], ckpt, model_id, reps)
    peak = _call_child(["--floor"]) or {"none": float("nan")}
    flops = model_flops(load_registry().get(model_id).architecture, SIZE)
    text = table(rows, peak, flops, model_id)
    verdict = speed_verdict(rows, peak, flops)  # R50x1's rows only: R152x2's join below
    if r152x2:
        big_id = "r152x2-224"
        big_ckpt, big_dir = export(big_id, "", reuse)
        try:
            big = alternate("savedmodel", str(big_dir / "classification"), str(big_ckpt), big_id, (1,), reps)
        except (RuntimeError, OSError, ValueError) as exc:
            print(f"bench: R152x2 SavedModel failed: {exc}", file=sys.stderr)
            failed.append("R152x2 SavedModel")
        else:
            big_flops = model_flops(load_registry().get(big_id).architecture, SIZE)
            big_row = ("SavedModel (tf.saved_model.load)", big, (1,))
            text += "\n\n" + table([big_row], peak, big_flops, big_id, floor_batches=(1,))
            rows.append(("R152x2 SavedModel", big, (1,)))
    click.echo(text)
    click.echo("\n" + "\n".join(verdict.lines()))
    missed = [*failed, *verdict.missed(best=not only)]  # R50x1's: below timm, or (all run) the best under 2x / 1.5x
    for label, result, bs in rows:
        first = result[str(bs[-1])]["runtime"]["first"]  # batch 8 after batch 1: a new shape, nothing else new
        if label.startswith("SavedModel (") and first >= FIRST_CALL_LIMIT_S:
            missed.append(f"{label}: first call at a new shape {first:.2f}s")
    if missed:
        print("bench: missed: " + "; ".join(missed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    from convert.testing.bench import loopback_bucket

    with loopback_bucket(RESULTS):  # the exports' label file, from 127.0.0.1
        main()
