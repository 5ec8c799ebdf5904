"""LiteRT and ONNX exports of a synthetic full-size checkpoint: parity, conversion time, sizes, inference speed.

    PYTHONPATH=. python scripts/bench_deploy.py [--arch R50x1] [--resolutions 160,224] [--json out.json]

Writes both targets through the export target interface, checks them from
disk against the float64 JAX reference at each resolution, then times
inference (best of ``--repeats`` warm runs, the runtimes taking turns) for LiteRT, onnxruntime and, as a
peer measured in the same run, the classifier SavedModel that
``bitconvert export`` writes today. Results on stdout as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Best of ``repeats`` warm runs of each callable, run round-robin so that load from other processes hits all alike."""
    for fn in fns.values():
        fn()  # warm-up (and, for TF, the trace at this shape)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _runners(loaded, session, interpreter, x: np.ndarray) -> dict:
    import tensorflow as tf

    idx = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(idx, x.shape)
    interpreter.allocate_tensors()
    xt = tf.constant(x)

    def litert():
        interpreter.set_tensor(idx, x)
        interpreter.invoke()

    return {
        "savedmodel": lambda: loaded(xt).numpy(),
        "litert": litert,
        "onnxruntime": lambda: session.run(["logits"], {"images": x}),
    }


def speed(export_dir: Path, net, sizes, repeats: int, threads: int) -> dict:
    import onnxruntime as ort
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from convert.export import build_exportable

    sm = export_dir / "savedmodel_classification"
    tf.saved_model.save(build_exportable(net, "classification", "unit"), str(sm))
    loaded = tf.saved_model.load(str(sm))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Spinning worker threads lose badly when other processes share the cores
    # (R50x1 batch 1 under load: 0.36 s spinning, 0.15 s not); an idle machine barely differs.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(export_dir / "onnx/classification.onnx"), opts, providers=["CPUExecutionProvider"])
    interpreter = Interpreter(model_path=str(export_dir / "tflite/classification.tflite"), num_threads=threads)
    out = {}
    for batch, px in sizes:
        x = np.random.default_rng(0).uniform(0, 1, (batch, px, px, 3)).astype(np.float32)
        row = interleaved_best(_runners(loaded, session, interpreter, x), repeats)
        out[f"batch {batch} at {px}"] = row
        print(f"speed batch {batch} {px}px: {row}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="R50x1")
    p.add_argument("--resolutions", default="160,224")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from deploy_support import load_with_reference, make_job, reports, to_unit

    from convert.export.onnx import TARGET as ONNX
    from convert.export.tflite import TARGET as TFLITE
    from convert.model.architecture import Architecture
    from convert.synthetic import write_synthetic_checkpoint

    depth, width = args.arch.upper().removeprefix("R").split("X")
    arch = Architecture.from_depth(int(depth), int(width), 1000)
    results: dict = {"arch": arch.name, "parity": {}, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        tmp = Path(tmp)
        npz = write_synthetic_checkpoint(tmp / "ckpt.npz", arch, seed=1)
        resolutions = [int(r) for r in args.resolutions.split(",")]
        ckpt, images, ref = load_with_reference(npz, arch, resolutions[0])
        job = make_job(ckpt, tmp / "export")
        for target in (TFLITE, ONNX):
            t = time.perf_counter()
            artifacts = target.write(job)
            results["targets"][target.name] = {
                "write_seconds": round(time.perf_counter() - t, 2),
                "files": {a.path: a.facts["bytes"] for a in artifacts},
                "artifacts": artifacts,
            }
        for px in resolutions:
            if px != resolutions[0]:
                ckpt, images, ref = load_with_reference(npz, arch, px)
            for target in (TFLITE, ONNX):
                runs = target.check(job, results["targets"][target.name]["artifacts"], to_unit(images))()
                for variant, report in reports(ref, runs).items():
                    stage = next(iter(report.stages.values()))
                    results["parity"][f"{target.name} {variant} {px}"] = {
                        "max_abs_f64": stage.max_abs_f64,
                        "rel_l2_f64": stage.tf_rel_l2_f64,
                        "tolerance": report.tolerance,
                        "passed": report.passed,
                        "check_seconds": round(next(r.seconds for r in runs if r.artifact.variant == variant), 2),
                    }
                    print(
                        f"parity {target.name} {variant} {px}: {results['parity'][f'{target.name} {variant} {px}']}",
                        file=sys.stderr,
                    )
        del ref, ckpt
        results["speed"] = speed(tmp / "export", job.net, [(1, 224), (8, 224)], args.repeats, os.cpu_count() or 1)
    for t in results["targets"].values():
        del t["artifacts"]
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


def render(r: dict) -> str:
    lines = [
        f"### {r['arch']} (synthetic weights)",
        "",
        "| target variant px | max abs vs f64 | rel L2 vs f64 | tolerance | pass |",
    ]
    lines.append("|---|---|---|---|---|")
    for k, v in r["parity"].items():
        lines.append(f"| {k} | {v['max_abs_f64']:.2e} | {v['rel_l2_f64']:.2e} | {v['tolerance']:.1e} | {v['passed']} |")
    lines += ["", "| target | write (both variants) s | files (bytes) |", "|---|---|---|"]
    for name, t in r["targets"].items():
        lines.append(f"| {name} | {t['write_seconds']} | {', '.join(f'{k}: {b:,}' for k, b in t['files'].items())} |")
    lines += ["", "| shape | SavedModel s | LiteRT s (ratio) | onnxruntime s (ratio) |", "|---|---|---|---|"]
    for shape, row in r["speed"].items():
        sm = row["savedmodel"]
        lines.append(
            f"| {shape} | {sm:.4f} | {row['litert']:.4f} ({sm / row['litert']:.2f}x) | "
            f"{row['onnxruntime']:.4f} ({sm / row['onnxruntime']:.2f}x) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
