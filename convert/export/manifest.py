"""``manifest.json``: provenance, parity figures, versions and digests of one export, built from a dataclass."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..fetch import sha256_file
from .cards.model_card import INPUT_RANGES, OUTPUT_KEYS, card_file_name
from .target import INPUT_NAME, VARIANTS

MANIFEST_FORMAT = "bitconvert-export/1"
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


@dataclass(frozen=True)
class ParityRecord:
    """The parity check of an export: its inputs and every report."""

    resolution: int
    random_images: int
    seed: int
    inputs: tuple[str, ...]
    tolerance: float
    before: object  # ParityReport of the live TF graph
    #: savedmodel's reports by variant (the manifest's historical "after_export").
    after: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TargetEntry:
    """One artifact of a target other than savedmodel, for the manifest's "targets" key."""

    variant: str
    path: str
    card: str | None
    sha256: object  # hex digest of a file, or {relative path: digest} of a directory
    facts: dict
    parity: dict  # runtime -> {"seconds", "facts", "report"}; empty with --skip-parity


@dataclass(frozen=True)
class ManifestData:
    entry: object  # ModelEntry
    arch: object  # Architecture
    input_range: str
    source_url: str
    checkpoint_path: Path
    checkpoint_bytes: int
    parameters: int
    sha256: str
    origin: str | None
    #: savedmodel's Artifact.facts by variant; None when savedmodel was not written.
    savedmodel: dict | None
    archives: dict | None  # variant -> {"file", "sha256"} with --archive
    parity: ParityRecord | None  # None with --skip-parity
    targets: dict = field(default_factory=dict)  # name -> [TargetEntry]
    labels: dict | None = None  # convert.export.labels_asset.labels_manifest
    #: The forward pass every artifact computes (convert.model.forward.ForwardPass.as_dict).
    forward: dict | None = None


def digests(path: Path):
    """sha256 of a file, or of each file under a directory (relative POSIX names, sorted)."""
    if path.is_file():
        return sha256_file(path)
    return {p.relative_to(path).as_posix(): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def _parity(d: ManifestData) -> dict:
    if d.parity is None:
        return {"checked": False, "note": "exported with --skip-parity: not compared with the JAX reference"}
    p = d.parity
    return {
        "checked": True,
        "resolution": p.resolution,
        "random_images": p.random_images,
        "seed": p.seed,
        "inputs": list(p.inputs),
        "tolerance": p.tolerance,
        "before_export": report_dict(p.before),
        "after_export": {v: report_dict(r) for v, r in p.after.items()},
    }


def _variants(d: ManifestData) -> dict:
    if d.savedmodel is None:
        return {}
    archives = d.archives or {}
    return {
        v: {
            "path": v,
            "card": card_file_name(v),
            "output": OUTPUT_KEYS[v],
            "output_shape": [None, d.arch.classes if v == "classification" else d.arch.features],
            **d.savedmodel[v],
            "archive": archives.get(v),
        }
        for v in VARIANTS
    }


def _targets(d: ManifestData) -> dict:
    return {
        name: [
            {"variant": e.variant, "path": e.path, "card": e.card, "sha256": e.sha256, "facts": e.facts, "parity": e.parity}
            for e in entries
        ]
        for name, entries in d.targets.items()
    }


def build_manifest(d: ManifestData) -> dict:
    """The manifest as a dict, keys in their documented order; "targets" only when other formats were written."""
    lo, hi = INPUT_RANGES[d.input_range]
    arch, entry = d.arch, d.entry
    manifest = {
        "format": MANIFEST_FORMAT,
        "model": entry.as_dict(),
        **({"forward": d.forward} if d.forward is not None else {}),
        "architecture": {
            "name": arch.name,
            "units": list(arch.units),
            "width": arch.width,
            "classes": arch.classes,
            "features": arch.features,
        },
        "source_url": d.source_url,
        "checkpoint": {
            "file": d.checkpoint_path.name,
            "bytes": d.checkpoint_bytes,
            "sha256": d.sha256,
            "parameters": d.parameters,
            "origin": d.origin,
        },
        "registry_sha256_match": None if not entry.sha256 else entry.sha256 == d.sha256,
        "input": {
            "name": INPUT_NAME,
            "range": d.input_range,
            "min": lo,
            "max": hi,
            "shape": [None, None, None, 3],
            "dtype": "float32",
            "native_resolution": entry.resolution,
        },
        "variants": _variants(d),
        "parity": _parity(d),
        "versions": library_versions(),
    }
    if d.labels is not None:
        manifest["labels"] = d.labels
    if d.targets:
        manifest["targets"] = _targets(d)
    return manifest


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2) + "\n"


def _target_entries(tmp: Path, artifacts, runs, reports, cards) -> list[TargetEntry]:
    """A non-savedmodel target's artifacts: path, digests, facts, card, parity per runtime."""
    entries = []
    for a in artifacts:
        key = (a.target, a.path)
        parity = {
            r.runtime: {"seconds": round(r.seconds, 3), "facts": dict(r.facts), "report": report_dict(reports[key][r.runtime])}
            for r in runs
            if r.artifact.path == a.path and key in reports
        }
        entries.append(TargetEntry(a.variant, a.path, cards.get(key), digests(tmp / a.path), dict(a.facts), parity))
    return entries


def manifest_data(job, options, source, origin, written, runs, checked) -> ManifestData:
    """Everything the manifest says, from what the export's steps returned (convert.export.orchestrator).

    ``checked``: (reports, cards, archives, parity inputs, the live graph's report).
    """
    from .labels_asset import labels_manifest

    reports, cards, archives, inputs, before = checked
    parity = None
    if inputs is not None:
        after = {a.variant: reports[("savedmodel", a.path)]["tensorflow"] for a in written.get("savedmodel", [])}
        parity = ParityRecord(
            inputs.resolution, inputs.batch, options.parity_seed, tuple(inputs.names), before.tolerance, before, after
        )
    targets = {
        name: _target_entries(job.export_dir, artifacts, runs[name], reports, cards)
        for name, artifacts in written.items()
        if name != "savedmodel"
    }
    savedmodel = {a.variant: dict(a.facts) for a in written["savedmodel"]} if "savedmodel" in written else None
    return ManifestData(
        job.entry,
        job.arch,
        options.input_range,
        source.source_url,
        source.path,
        source.path.stat().st_size,
        source.parameters,
        source.sha256,
        origin,
        savedmodel,
        archives,
        parity,
        targets,
        labels_manifest(job.entry, job.labels, tuple(written)),
        job.forward.as_dict() if job.forward is not None else None,
    )
