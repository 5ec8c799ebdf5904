"""LiteRT and ONNX exports of a synthetic full-size checkpoint: parity, export time, sizes.

    PYTHONPATH=. python scripts/bench_deploy.py [--arch R50x1] [--resolutions 160,224] [--json out.json]

Exports both formats with the library's own export (``convert.export.export_model``, the
JAX reference inline, every artifact checked from disk) once per parity resolution, and
reads the parity figures, file sizes and check times from the manifest. Results on stdout
as a Markdown table. Inference speed: scripts/bench_inference.py (every runtime, timm
beside, each in a process of its own).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FORMATS = ("tflite", "onnx")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="R50x1")
    p.add_argument("--resolutions", default="160,224")
    p.add_argument("--model", default="r50x1-224", help="registry entry whose forward pass the export follows")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    from convert.export import ExportOptions, export_model
    from convert.model.architecture import Architecture
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint

    depth, width = args.arch.upper().removeprefix("R").split("X")
    arch = Architecture.from_depth(int(depth), int(width), 1000)
    entry = load_registry().get(args.model)
    results: dict = {"arch": arch.name, "model": entry.id, "parity": {}, "exports": {}}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        tmp = Path(tmp)
        npz = write_synthetic_checkpoint(tmp / "ckpt.npz", arch, seed=1)
        for px in (int(r) for r in args.resolutions.split(",")):
            options = ExportOptions(output_dir=tmp / str(px), formats=FORMATS, parity_resolution=px, reference="inline")
            t = time.perf_counter()
            manifest = export_model(entry, npz, options, arch=arch).manifest
            results["exports"][px] = {"seconds": round(time.perf_counter() - t, 2)}
            for name in FORMATS:
                for e in manifest["targets"][name]:
                    results["exports"][px][e["path"]] = e["facts"]["bytes"]
                    for runtime, run in e["parity"].items():
                        stage = next(v for k, v in run["report"].items() if k != "summary")
                        results["parity"][f"{name} {e['variant']} {px}"] = {
                            "runtime": runtime,
                            "max_abs_f64": stage["max_abs_f64"],
                            "rel_l2_f64": stage["tf_rel_l2_f64"],
                            "tolerance": manifest["parity"]["tolerance"],
                            "check_seconds": run["seconds"],
                        }
            print(f"exported at {px}: {results['exports'][px]}", file=sys.stderr)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    return 0


def render(r: dict) -> str:
    lines = [
        f"### {r['arch']} (synthetic weights, {r['model']}'s forward pass)",
        "",
        "| target variant px | runtime | max abs vs f64 | rel L2 vs f64 | tolerance | check s |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in r["parity"].items():
        lines.append(
            f"| {k} | {v['runtime']} | {v['max_abs_f64']:.2e} | {v['rel_l2_f64']:.2e} | {v['tolerance']:.1e} | {v['check_seconds']} |"
        )
    lines += ["", "| parity px | export s (both formats, both variants) | files (bytes) |", "|---|---|---|"]
    for px, e in r["exports"].items():
        files = ", ".join(f"{k}: {b:,}" for k, b in e.items() if k != "seconds")
        lines.append(f"| {px} | {e['seconds']} | {files} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
