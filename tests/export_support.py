"""Shared parts of the export tests: the model, the CLI in a subprocess, SavedModel digests, a tiny export."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from conftest import R50X1, TINY

from convert.export import ExportOptions, export_model
from convert.model.architecture import checkpoint_layout
from convert.registry import load_registry

MODEL = "r50x1-160"
#: The parity resolution of the ``exported`` fixture (tests/conftest.py).
PARITY_PX = 64
BIN = Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
#: Variables of each variant: every checkpoint array; the feature extractor leaves out the head's two.
N_CLASSIFIER = len(checkpoint_layout(R50X1))
N_FEATURES = N_CLASSIFIER - 2


def cli(*args) -> list[str]:
    return [str(BIN / "bitconvert"), *map(str, args)]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_files(variant_dir: Path) -> dict[str, str]:
    """sha256 of saved_model.pb and every variables/ file (fingerprint.pb aside)."""
    files = {"saved_model.pb": sha(variant_dir / "saved_model.pb")}
    files.update({f"variables/{p.name}": sha(p) for p in sorted((variant_dir / "variables").iterdir())})
    return files


def tiny_export(tmp_path: Path, out: Path, log=None, labels=None, **kw):
    """A TINY-layout export (cheap JAX reference) with parity at 48 px; ``kw``: ExportOptions fields."""
    from convert.synthetic import write_synthetic_checkpoint

    ckpt = write_synthetic_checkpoint(tmp_path / "tiny.npz", TINY, seed=3)
    options = ExportOptions(output_dir=out, parity_resolution=48, **kw)
    return export_model(load_registry().get(MODEL), ckpt, options, arch=TINY, labels=labels, log=log or (lambda m: None))


def savedmodel_entry(manifest: dict, variant: str) -> dict:
    """The savedmodel target's entry of ``variant`` in a manifest."""
    (entry,) = [e for e in manifest["targets"]["savedmodel"] if e["variant"] == variant]
    return entry
