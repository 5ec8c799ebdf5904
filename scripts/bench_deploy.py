"""LiteRT and ONNX exports of a synthetic full-size checkpoint: parity, conversion time, sizes.

    PYTHONPATH=. python scripts/bench_deploy.py [--arch R50x1] [--resolutions 160,224] [--json out.json]

Writes both targets through the export target interface and checks them from
disk against the float64 JAX reference at each resolution. Results on stdout
as a Markdown table. Inference speed: scripts/bench_inference.py (every
runtime, timm beside, each in a process of its own).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="R50x1")
    p.add_argument("--resolutions", default="160,224")
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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
