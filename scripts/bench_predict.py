#!/usr/bin/env python
"""Cold `bitconvert predict` on one image, per format, against timm's cold predict from the .npz (issue 19, target 3).

    make bench BENCH=predict     # or: .venv/bin/python scripts/bench_predict.py [--reps 3]
    .venv/bin/python scripts/bench_predict.py --export-dir DIR --checkpoint R50x1_160.npz --image cat.jpg

Without --export-dir, a synthetic checkpoint of --model (official layout, seed 0) is written
under bench-results/predict/ and exported there with the `bitconvert` CLI as savedmodel,
tflite and onnx (once, then reused), and a 500 x 375 JPEG is made beside it.

Each run is a fresh process, timed from its start to its exit (wall: the time to the
first answer) with its CPU time (user + system, children included): `bitconvert predict`
as a user runs it (``auto``: the fastest format the export holds), then `--format F` for
every format held, then timm doing the same from the checkpoint (import timm and torch,
build ``resnetv2_<depth>x<width>_bit``, load the .npz, decode, resize the shorter side and
crop the centre, run, top-5). The runs alternate, round by round; the table gives the best
and the median of each, and timm's best over each one's (above 1: faster than timm).
Progress on stderr, the table on stdout, the CPU above it. Exits 1 when `bitconvert
predict` (auto) takes more than half timm's wall time (issue 19's target).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench-results" / "predict"
MODEL = "r50x1-160"
FORMATS = "savedmodel,tflite,onnx"
#: Issue 19: a cold `bitconvert predict` within this fraction of timm's wall time.
TARGET_RATIO = 0.5
TIMM = """
import sys
import numpy as np
from PIL import Image
import timm, torch

npz, image, res, depth, width, classes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
model = timm.create_model(f"resnetv2_{depth}x{width}_bit", pretrained=False, num_classes=classes)
model.load_pretrained(npz)
model.eval()
img = Image.open(image).convert("RGB")
w, h = img.size
s = res / min(w, h)
img = img.resize((max(res, round(w * s)), max(res, round(h * s))), Image.BILINEAR)
w, h = img.size
left, top = (w - res) // 2, (h - res) // 2
x = np.asarray(img.crop((left, top, left + res, top + res)), np.float32) / 127.5 - 1.0
with torch.inference_mode():
    logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
print(torch.softmax(logits, -1)[0].topk(5))
"""


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of one cold run, measured as every benchmark measures a child (convert.testing.bench)."""
    from convert.testing.bench import measure

    run = measure(cmd, env=env, capture=True, quiet=True)
    if not run.ok:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode})")
    return run.wall_s, run.cpu_s


def prepare(model: str) -> tuple[str, str, str]:
    """(export dir, checkpoint, image) of ``model``'s run, made under bench-results/predict/ once."""
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint
    from convert.testing.bench import loopback_bucket

    entry = load_registry().get(model)
    ckpt, out, image = RESULTS / Path(entry.source).name, RESULTS / "exports", RESULTS / "image.jpg"
    if not ckpt.exists():
        write_synthetic_checkpoint(ckpt, entry.architecture, seed=0)
    if not (out / model / "manifest.json").exists():
        cmd = [sys.executable, "-m", "convert", "export", "-m", model, "--checkpoint", str(ckpt), "-o", str(out)]
        print(f"bench: $ {' '.join(cmd)} --format {FORMATS}", file=sys.stderr, flush=True)
        with loopback_bucket(RESULTS):
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            subprocess.run([*cmd, "--format", FORMATS, "--quiet"], env=env, check=True, stdout=sys.stderr)
    return str(out), str(ckpt), str(sample_image(image))


def sample_image(path: Path) -> Path:
    """A 500 x 375 JPEG of noise at ``path``, written once: decoded, resized and cropped like a photo."""
    if not path.exists():
        import numpy as np
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return path


@click.command()
@click.option("--export-dir", type=click.Path(exists=True, file_okay=False), help="An export to time (default: made here).")
@click.option("--model", default=MODEL, show_default=True)
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), help="The .npz timm loads (with --export-dir).")
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="The image (with --export-dir).")
@click.option("--reps", default=3, show_default=True)
def main(export_dir, model, checkpoint, image, reps):
    """Cold predict on one image, per format, against timm's."""
    sys.path.insert(0, str(REPO))
    from convert.predict import PREFERENCE, classifiers_in
    from convert.testing.bench import machine_line

    if export_dir is None:
        export_dir, checkpoint, image = prepare(model)
    elif checkpoint is None or image is None:
        raise click.UsageError("--export-dir needs --checkpoint and --image")
    manifest = json.loads((Path(export_dir) / model / "manifest.json").read_text())
    shape = [str(manifest["model"]["depth"]), str(manifest["model"]["width"]), str(manifest["architecture"]["classes"])]
    formats = ["auto", *(f for f in PREFERENCE if f in classifiers_in(manifest, Path(export_dir) / model))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs = {f: [sys.executable, "-m", "convert", "predict", "-m", model, "-o", export_dir, "--format", f, image] for f in formats}
    res = str(manifest["input"]["native_resolution"])
    runs["timm"] = [sys.executable, "-c", TIMM, checkpoint, image, res, *shape]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for rep in range(reps):
        for name, cmd in runs.items():
            times[name].append(timed(cmd, env))
            wall, cpu = times[name][-1]
            print(f"round {rep + 1}: {name} {wall:.2f} s, {cpu:.2f} CPU-s, load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    timm_wall, timm_cpu = min(w for w, _ in times["timm"]), min(c for _, c in times["timm"])
    print(f"{machine_line()}\n")
    print(
        f"| cold predict, one image, {model} | best wall s (first answer) | median wall s | best CPU s | median CPU s | timm wall / this | timm CPU / this |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, got in times.items():
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        label = "timm (from the .npz)" if name == "timm" else f"bitconvert predict --format {name}"
        print(
            f"| {label} | {min(walls):.2f} | {statistics.median(walls):.2f} | {min(cpus):.2f} | "
            f"{statistics.median(cpus):.2f} | {timm_wall / min(walls):.2f}x | {timm_cpu / min(cpus):.2f}x |"
        )
    ratio = min(w for w, _ in times["auto"]) / timm_wall
    print(f"\n`bitconvert predict` takes {ratio:.2f}x timm's wall time (target: at most {TARGET_RATIO}x)")
    if ratio > TARGET_RATIO:
        print(f"bench predict: MISSED: {ratio:.2f}x timm's wall time > {TARGET_RATIO}x", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
