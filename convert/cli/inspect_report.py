"""``bitconvert inspect``: render a checkpoint inspection as text or JSON."""

from __future__ import annotations

import json

import click

from ..checkpoint import Inspection, inspect_checkpoint, registry_matches, summarise
from ..errors import CheckpointError

_MARK = {"missing": "-", "unexpected": "+"}


def inspection_dict(ins: Inspection) -> dict:
    arch = ins.architecture
    return {
        "path": str(ins.path),
        "architecture": arch.name if arch else None,
        "depth": arch.depth if arch else None,
        "width": arch.width if arch else None,
        "classes": arch.classes if arch else None,
        "units": list(arch.units) if arch else None,
        "actual": None
        if ins.actual is None
        else {"architecture": ins.actual.name, "classes": ins.actual.classes, "matches": registry_matches(ins.actual)},
        "arrays": len(ins.infos),
        "parameters": ins.parameters,
        "ok": ins.ok,
        "problems": [p.as_dict() for p in ins.problems],
    }


def render_text(ins: Inspection) -> str:
    arch = ins.architecture
    lines = [f"path:        {ins.path}"]
    if arch:
        lines += [
            f"architecture: {arch.name} (depth {arch.depth}, width {arch.width}, units {','.join(map(str, arch.units))})",
            f"classes:     {arch.classes}",
        ]
    if ins.actual:
        ids = registry_matches(ins.actual)
        lines.append(
            f"file is:     {ins.actual.name} with {ins.actual.classes} classes"
            + (f" (registry: {', '.join(ids)})" if ids else " (no registry entry)")
        )
    lines += [f"arrays:      {len(ins.infos)}", f"parameters:  {ins.parameters:,}"]
    if ins.problems:
        lines.append(f"problems:    {len(ins.problems)}")
        lines += [f"  {_MARK.get(p.kind, '~')} {p}" for p in ins.problems]
    else:
        lines.append("status:      ok (names, shapes, dtypes and values checked)")
    return "\n".join(lines)


def inspect_command(path: str, model_id: str | None, allow_nonstandard: bool, as_json: bool) -> None:
    arch = None
    if model_id:
        from ..registry import load_registry

        arch = load_registry().get(model_id).architecture
    ins = inspect_checkpoint(path, arch, allow_nonstandard)
    click.echo(json.dumps(inspection_dict(ins), indent=2) if as_json else render_text(ins))
    if ins.problems:
        raise CheckpointError(summarise(ins.path, ins.architecture, ins.problems, ins.actual), ins.problems)
