#!/usr/bin/env python
"""Measure the error levels behind convert.parity.tolerance (docs/calibration.md), and the mutations' errors.

    .venv/bin/python scripts/calibrate_parity.py r50x1 160 [--batch 2] [--seed 1] [--mutations]
    TF_ENABLE_ONEDNN_OPTS=0 .venv/bin/python scripts/calibrate_parity.py r50x1 160

On synthetic official-layout weights (convert.synthetic, the given seed),
prints per stage and per input image the worst relative L2 error of the
float32 TF graph and of the float32 JAX run against the float64 JAX run, and,
with --mutations, the same for each mutated TF graph (swapped same-shape
arrays, SAME padding on strided convs, the other max-pool padding:
convert.testing.mutations). Output is a
Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from convert.checkpoint import Checkpoint  # noqa: E402
from convert.model.architecture import Architecture  # noqa: E402
from convert.parity import STAGES, make_inputs, reference_outputs, tf_stage_function, tolerance  # noqa: E402
from convert.parity.compare import per_image_rel_l2  # noqa: E402
from convert.synthetic import synthetic_arrays  # noqa: E402
from convert.testing.mutations import Mutation, tf_build_options  # noqa: E402
from convert.testing.mutations import mutations as shared_mutations  # noqa: E402

ARCHS = {
    "r50x1": Architecture.from_depth(50, 1, 1000),
    "r101x1": Architecture.from_depth(101, 1, 1000),
    "r50x3": Architecture.from_depth(50, 3, 1000),
    "r152x2": Architecture.from_depth(152, 2, 1000),
    "tiny": Architecture((1, 1, 1, 1), 1, 10),
}


def mutations(arch) -> dict:
    """label -> build_tf_model options: the shared mutations (convert.testing.mutations) and a swap deep in block4."""
    last = arch.units[3]
    deep = Mutation(
        f"swap block4 unit{last - 1:02d}/unit{last:02d} conv c",
        swap=(
            f"resnet/block4/unit{last - 1:02d}/c/standardized_conv2d/kernel",
            f"resnet/block4/unit{last:02d}/c/standardized_conv2d/kernel",
        ),
    )
    return {m.name: tf_build_options(arch, m) for m in [*shared_mutations(arch), deep]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=sorted(ARCHS))
    ap.add_argument("resolution", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mutations", action="store_true")
    args = ap.parse_args()
    arch = ARCHS[args.arch]
    size = (args.height, args.resolution) if args.height else args.resolution
    ckpt = Checkpoint(None, arch, synthetic_arrays(arch, args.seed))
    images, names = make_inputs(size, args.batch, 0)
    t = time.perf_counter()
    ref = reference_outputs(ckpt, images, names)
    print(f"reference {time.perf_counter() - t:.1f} s {ref.timings}", file=sys.stderr)

    from convert.model.tf_model import build_tf_model

    def run_tf(**knobs):
        fn = tf_stage_function(build_tf_model(ckpt, **knobs))
        return {k: v.numpy() for k, v in fn(images).items()}

    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    print(
        f"\n{arch.name} {size} batch {args.batch}+5, seed {args.seed}, TF_ENABLE_ONEDNN_OPTS={onednn}, tolerance {tolerance(arch):.1e}\n"
    )
    print("| side | stage | worst | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    tf_out = run_tf()
    for stage in STAGES:
        for side, out in (("TF f32", tf_out), ("JAX f32", ref.f32)):
            e = per_image_rel_l2(out[stage], ref.f64[stage])
            print(f"| {side} | {stage} | {e.max():.2e} | " + " | ".join(f"{v:.1e}" for v in e) + " |")
    if args.mutations:
        for label, knobs in mutations(arch).items():
            out = run_tf(**knobs)
            for stage in STAGES:
                e = per_image_rel_l2(out[stage], ref.f64[stage])
                print(f"| {label} | {stage} | {e.max():.2e} | " + " | ".join(f"{v:.1e}" for v in e) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
