#!/usr/bin/env python
"""Cold `bitconvert predict` on one image, per format, against timm's cold predict from the .npz (issue 19, target 3).

    .venv/bin/python scripts/bench_predict.py --export-dir DIR --checkpoint R50x1_160.npz --image cat.jpg [--reps 3]

Each run is a fresh process, timed from its start to its exit (wall) with its CPU time
(user + system, children included): `bitconvert predict --format F` for every format the
export under DIR/<model>/ holds, then timm doing the same from the checkpoint (import timm
and torch, build ``resnetv2_<depth>x<width>_bit``, load the .npz, decode, resize the
shorter side and crop the centre, run, top-5). The runs alternate, round by round; the
table gives the best and the median of each, and the ratio of timm's best CPU time to
each one's (above 1: cheaper than timm). Progress on stderr, the table on stdout.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
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


@click.command()
@click.option("--export-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default="r50x1-160", show_default=True)
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False), help="The .npz timm loads.")
@click.option("--image", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--reps", default=3, show_default=True)
def main(export_dir, model, checkpoint, image, reps):
    sys.path.insert(0, str(REPO))
    from convert.predict import PREFERENCE, classifiers_in

    manifest = json.loads((Path(export_dir) / model / "manifest.json").read_text())
    shape = [str(manifest["model"]["depth"]), str(manifest["model"]["width"]), str(manifest["architecture"]["classes"])]
    formats = [f for f in PREFERENCE if f in classifiers_in(manifest, Path(export_dir) / model)]
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
    timm_cpu = min(c for _, c in times["timm"])
    print(f"| cold predict, one image, {model} | best wall s | median wall s | best CPU s | median CPU s | timm CPU / this |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, got in times.items():
        walls, cpus = [w for w, _ in got], [c for _, c in got]
        label = "timm (from the .npz)" if name == "timm" else f"bitconvert predict --format {name}"
        print(
            f"| {label} | {min(walls):.2f} | {statistics.median(walls):.2f} | {min(cpus):.2f} | "
            f"{statistics.median(cpus):.2f} | {timm_cpu / min(cpus):.2f}x |"
        )


if __name__ == "__main__":
    main()
