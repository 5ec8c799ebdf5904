"""``manifest.json``: provenance, parity figures, versions and digests of one export, built from the export's state."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import TYPE_CHECKING

from .. import __version__
from .labels_asset import labels_manifest
from .target import INPUT_NAME, INPUT_RANGES

if TYPE_CHECKING:
    from .state import ExportState
    from .target import Artifact, ExportTarget

#: Version 2: every format under "targets", the default one too (version 1 kept the default
#: format's artifacts under "variants" and their parity under "parity.after_export").
MANIFEST_FORMAT = "bitconvert-export/2"
MANIFEST_NAME = "manifest.json"


def package_version(dist: str) -> str | None:
    """An installed distribution's version (from its metadata: imports nothing), or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """Versions of what produced the export."""
    versions: dict[str, str | None] = {"bitconvert": __version__, "python": platform.python_version()}
    for dist in ("tensorflow", "keras", "jax", "jaxlib", "flax", "numpy"):
        versions[dist] = package_version(dist)
    return versions


def report_dict(report) -> dict:
    """A ParityReport as plain JSON types."""
    return json.loads(json.dumps(report.as_dict(), default=float))


def _parity(state: ExportState) -> dict:
    if state.inputs is None:
        return {"checked": False, "note": "exported with --skip-parity: not compared with the JAX reference"}
    inputs = state.inputs
    return {
        "checked": True,
        # An int, or [height, width] as the manifest's JSON has it.
        "resolution": inputs.resolution if isinstance(inputs.resolution, int) else list(inputs.resolution),
        "random_images": inputs.batch,
        "seed": state.options.parity_seed,
        "inputs": list(inputs.names),
        "tolerance": state.before.tolerance,
        "before_export": report_dict(state.before),
    }


def _entry(state: ExportState, target: ExportTarget, artifact: Artifact) -> dict:
    """One artifact: path, card, digests, facts, and its parity in each runtime that ran it."""
    key = (target.name, artifact.path)
    parity = {
        r.runtime: {"seconds": round(r.seconds, 3), "facts": dict(r.facts), "report": report_dict(state.reports[key][r.runtime])}
        for r in state.runs[target.name]
        if r.artifact.path == artifact.path and key in state.reports
    }
    return {
        "variant": artifact.variant,
        "path": artifact.path,
        "card": state.cards.get(key),
        "sha256": target.digests(state.job, artifact),
        "facts": dict(artifact.facts),
        "parity": parity,
    }


def _labels(state: ExportState) -> dict:
    paths = [t.labels_path(a) for t, a in state.artifacts() if a.variant == "classification"]
    return labels_manifest(state.entry, state.labels, paths)


def build_manifest(state: ExportState) -> dict:
    """The manifest of a checked export as a dict, keys in their documented order."""
    lo, hi = INPUT_RANGES[state.options.input_range]
    arch, entry, source = state.arch, state.entry, state.source
    return {
        "format": MANIFEST_FORMAT,
        "model": entry.as_dict(),
        **({"forward": state.job.forward.as_dict()} if state.job.forward is not None else {}),
        "architecture": {
            "name": arch.name,
            "units": list(arch.units),
            "width": arch.width,
            "classes": arch.classes,
            "features": arch.features,
        },
        "source_url": source.source_url,
        "checkpoint": {
            "file": source.path.name,
            "bytes": source.path.stat().st_size,
            "sha256": source.sha256,
            "parameters": source.parameters,
            "origin": state.origin,
        },
        "registry_sha256_match": None if not entry.sha256 else entry.sha256 == source.sha256,
        "input": {
            "name": INPUT_NAME,
            "range": state.options.input_range,
            "min": lo,
            "max": hi,
            "shape": [None, None, None, 3],
            "dtype": "float32",
            "native_resolution": entry.resolution,
        },
        "parity": _parity(state),
        "versions": library_versions(),
        "labels": _labels(state),
        "targets": {t.name: [_entry(state, t, a) for a in state.written[t.name]] for t in state.targets},
    }


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"
