#!/usr/bin/env python
"""`make demo`: a tour of the real pipeline, offline, on a synthetic r50x1-160 checkpoint.

    make demo                      # or: .venv/bin/python scripts/demo.py [--work-dir DIR]

1. writes a synthetic checkpoint in the official layout (random weights, NOT
   the real model) where the BiT bucket keeps it: <work>/bucket/distill/R50x1_160.npz,
   and beside it the bucket's label file, ilsvrc2012_wordnet_lemmas.txt (the
   copy shipped as package data, convert/data/);
2. serves <work>/bucket on 127.0.0.1 with a GCS-like server (convert/testing/mirror.py);
3. runs the real CLI against it: `bitconvert fetch r50x1-160 --base-url ...`,
   then `bitconvert export --model r50x1-160 ...` (checks parity with JAX,
   writes the SavedModels, cards and manifest);
4. writes a sample PNG and runs `bitconvert predict --model r50x1-160` on it:
   the top-5 classes with their names (from the export's assets/labels.txt,
   fetched from the mirror like the checkpoint) and softmax probabilities.

Because the weights are random, the top-5 are meaningless. Nothing leaves the
machine: the only address used is 127.0.0.1. Progress and timings go to
stderr, the top-5 table to stdout; any failed step exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "r50x1-160"
BIN = Path(sys.executable).parent


def step(n: int, text: str) -> float:
    print(f"\n[demo {n}/5] {text}", file=sys.stderr, flush=True)
    return time.perf_counter()


def done(t0: float) -> None:
    print(f"[demo] ... {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


def run_cli(args: list[str], env: dict) -> str:
    """Run the installed `bitconvert` for real; its stderr streams through, its stdout is returned."""
    cmd = [str(BIN / "bitconvert"), *args]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `bitconvert {args[0]}` failed with exit status {proc.returncode}")
    return proc.stdout


def write_sample_png(path: Path, size: int) -> Path:
    """A smooth colour gradient with a bright disc, written as an 8-bit PNG (no TensorFlow needed)."""
    import struct
    import zlib

    import numpy as np

    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    disc = ((yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.05).astype(np.float64)
    image = np.clip(np.stack([xx, yy, 0.5 * (1 - xx) + 0.5 * disc], axis=-1), 0.0, 1.0)
    rows = (image * 255).round().astype(np.uint8).reshape(size, size * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
    path.write_bytes(png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, default=REPO / "demo-work", help="scratch directory (default: demo-work/)")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    bucket, cache, exports = work / "bucket", work / "cache", work / "exports"

    from convert.labels import packaged_labels_path
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint
    from convert.testing.mirror import serve_directory

    entry = load_registry().get(MODEL)
    print(
        f"bitconvert demo: {MODEL} with SYNTHETIC random weights in the official layout, served on 127.0.0.1.\n"
        "The pipeline is the real one; the predictions are meaningless. See the README for real checkpoints.",
        file=sys.stderr,
    )
    t_all = time.perf_counter()

    # A fresh cache each time, so that the fetch step really downloads.
    shutil.rmtree(cache, ignore_errors=True)
    t = step(1, f"writing a synthetic {entry.arch_name} checkpoint at {bucket / entry.source}")
    ckpt = write_synthetic_checkpoint(bucket / entry.source, entry.architecture, seed=0)
    print(f"[demo] {ckpt.stat().st_size / 1e6:.0f} MB", file=sys.stderr)
    labels = packaged_labels_path(entry.labels)
    shutil.copyfile(labels, bucket / entry.labels)  # the mirror serves the bucket's label file too
    print(f"[demo] {bucket / entry.labels} (the package's copy of the bucket's label file)", file=sys.stderr)
    done(t)

    env = {k: v for k, v in os.environ.items() if not k.startswith("BITCONVERT_")}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    with serve_directory(bucket) as server:
        t = step(2, f"serving {bucket} at {server.base_url} (a GCS-like mirror of the BiT bucket)")
        done(t)
        source = ["--base-url", server.base_url, "--cache-dir", str(cache)]

        t = step(3, "bitconvert fetch: download, verify (x-goog-hash crc32c+md5) and cache")
        fetched = run_cli(["fetch", MODEL, *source], env).strip()
        print(f"[demo] cached at {fetched}", file=sys.stderr)
        done(t)

        t = step(4, "bitconvert export: parity with JAX, SavedModels, cards, manifest (from the cache)")
        exported = Path(run_cli(["export", "--model", MODEL, *source, "--output-dir", str(exports)], env).strip())
        done(t)

    t = step(5, f"bitconvert predict: the exported classifier on a {entry.resolution}x{entry.resolution} sample PNG")
    image = write_sample_png(work / "sample.png", entry.resolution)
    top5 = run_cli(["predict", "--model", MODEL, "--output-dir", str(exports), "--top", "5", str(image)], env)
    done(t)
    print(f"\nTop-5 for a gradient image (synthetic weights: the classes are meaningless):\n{top5}")
    print(
        f"\n[demo] done in {time.perf_counter() - t_all:.1f}s; the export is in {exported} "
        f"(cards: {exported}/classification.md, manifest: {exported}/manifest.json)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
