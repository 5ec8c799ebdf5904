"""The BiT authors' own outputs on this project's synthetic checkpoints, and every artifact of an export run on their inputs.

The figures (``tests/data/authors_outputs/``) are the outputs of big_vision's
``big_vision/models/bit_paper.py`` (google-research/big_vision, commit 0127fb6),
run in JAX float32 on CPU, once as it is (root max-pool padded with -inf, the
``distill/`` checkpoints' forward pass) and once zero-padded as big_transfer
does: keys ``x`` (the NHWC inputs in [-1, 1]) and ``{neg_inf,zero}_{stem,pre_logits,logits}``.
They apply to a checkpoint only if :func:`regenerate` writes the same bytes
(the sha256 below): a changed generator would make them meaningless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.architecture import Architecture

#: Where the test data lives in a checkout.
DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "authors_outputs"


@dataclass(frozen=True)
class AuthorsCase:
    """One file of the authors' outputs and the synthetic checkpoint they were computed on."""

    file: str
    arch: Architecture
    seed: int
    sha256: str  # of the checkpoint scripts/make_synthetic_checkpoint.py writes

    def outputs(self, data: Path = DATA) -> dict[str, np.ndarray]:
        with np.load(data / self.file) as f:
            return {k: f[k] for k in f.files}


CASES = {
    # scripts/make_synthetic_checkpoint.py --model r50x1-160 --seed 0 OUT.npz: 2 images 160x160
    "r50x1-160": AuthorsCase(
        "r50x1-160_seed0_authors.npz",
        Architecture.from_depth(50, 1, 1000),
        0,
        "c2acd581190f840f69f783fb727bbd7cc6f5d4e45e9285d3713785e3f0e3348d",
    ),
    # scripts/make_synthetic_checkpoint.py --units 1,1,1,1 --width 1 --classes 10 --seed 1 OUT.npz: 1 image 101x134
    "units1111": AuthorsCase(
        "units1111_w1_c10_seed1_authors.npz",
        Architecture((1, 1, 1, 1), 1, 10),
        1,
        "e51d99ea0ef45cc596cda4b8211971bf66edf967ca40abb8ae9974b8a835fac1",
    ),
}


def regenerate(case: AuthorsCase, path: Path) -> Path:
    """Write the case's synthetic checkpoint to ``path``; ValueError when its sha256 is not the recorded one."""
    from ..synthetic import write_synthetic_checkpoint

    write_synthetic_checkpoint(path, case.arch, seed=case.seed)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != case.sha256:
        raise ValueError(
            f"{path}: sha256 {digest}, not the {case.sha256} the authors' outputs were computed on: "
            f"convert/synthetic.py changed, so the figures of {case.file} no longer apply"
        )
    return Path(path)


def relative_l2(a, b) -> float:
    """Worst-image relative L2 error of ``a`` against ``b`` (computed in float64)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return float(np.max(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)))


def export_runs(export_dir: Path, entry, arch: Architecture, images: np.ndarray, log=None) -> list:
    """Every artifact of the export at ``export_dir`` reloaded from disk by its target and run on ``images``.

    ``images`` are in the model's [-1, 1]; they are mapped to the export's input
    range (its manifest's). Returns the targets' :class:`convert.export.target.Run` list.
    """
    import json

    from ..export.formats import get_targets
    from ..export.target import Artifact, ExportJob, from_model_range

    manifest = json.loads((export_dir / "manifest.json").read_text())
    lo, hi = manifest["input"]["min"], manifest["input"]["max"]
    x = from_model_range(images, lo, hi)
    artifacts = {}
    for name, entries in manifest["targets"].items():  # every format, savedmodel too (manifest format 2)
        artifacts[name] = [Artifact(name, e["variant"], e["path"], e["facts"]) for e in entries]
    job = ExportJob(entry.id, entry, arch, None, manifest["input"]["range"], export_dir, log or (lambda msg: None))
    runs = []
    for target in get_targets(tuple(a for a in artifacts if artifacts[a])):
        runs += target.check(job, artifacts[target.name], x)()
    return runs


def runs_table(runs, outputs: dict[str, np.ndarray]) -> list[tuple[str, str, str, float, float]]:
    """(target, runtime, variant, relative L2 vs the authors' -inf outputs, vs their zero-padded ones) per run."""
    from ..export.target import VARIANT_STAGES as stage

    return [
        (
            r.artifact.target,
            r.runtime,
            r.artifact.variant,
            relative_l2(r.outputs, outputs[f"neg_inf_{stage[r.artifact.variant]}"]),
            relative_l2(r.outputs, outputs[f"zero_{stage[r.artifact.variant]}"]),
        )
        for r in runs
    ]
