"""``bitconvert inspect``: render a checkpoint inspection as text or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from ..checkpoint import Inspection, inspect_checkpoint, registry_matches, summarise
from ..errors import CheckpointError
from .options import emit_json

_MARK = {"missing": "-", "unexpected": "+"}


def forward_of_file(registry, path, arch, model_id: str | None = None) -> dict:
    """Which code a checkpoint file follows, and how that was decided: ``--model``, the file name, or the architecture.

    The file name decides when it is a registry source (the cache mirrors the
    bucket: ``.../distill/R50x1_160.npz``) or a source's base name, and, when
    the file's architecture is known, an entry of that architecture. Else the
    registry entries of the architecture decide when they all follow one code.
    """
    entries = list(registry.entries) if registry is not None else []
    how = "--model"
    chosen = [registry.get(model_id)] if model_id else []
    if not chosen:
        posix = Path(path).as_posix()
        fits = [e for e in entries if arch is None or e.architecture == arch]
        how = "file name"
        chosen = [e for e in fits if posix == e.source or posix.endswith("/" + e.source)]
        chosen = chosen or [e for e in fits if Path(e.source).name == Path(path).name]
    if len(chosen) != 1 and arch is not None:
        how = "architecture"
        chosen = [e for e in entries if e.architecture == arch]
    codes = sorted({e.code for e in chosen})
    if len(codes) != 1:
        return {"code": None, "root_pool_padding": None, "decided_by": None, "models": [e.id for e in chosen[:6]]}
    forward = chosen[0].forward()
    return {
        "code": forward.code,
        "root_pool_padding": forward.root_pool_padding,
        "decided_by": how,
        "models": [e.id for e in chosen[:6]],
        "description": forward.describe(),
    }


def _forward_line(fwd: dict) -> str:
    if fwd["code"] is None:
        return (
            "forward pass: not told by the file name (distill/ files follow big_vision, root max-pool padded with -inf; "
            "the others big_transfer, zeros); pass --model ID"
        )
    models = ", ".join(fwd["models"][:3]) + (" ..." if len(fwd["models"]) > 3 else "")
    return f"forward pass: {fwd['code']} ({fwd['description']}; by {fwd['decided_by']}: {models})"


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


def _registry():
    from ..errors import RegistryError
    from ..registry import load_registry

    try:
        return load_registry()
    except RegistryError:
        return None


def render_text(ins: Inspection, forward: dict | None = None) -> str:
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
    if forward is not None:
        lines.append(_forward_line(forward))
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
    forward = forward_of_file(_registry(), path, ins.actual or ins.architecture, model_id)
    if as_json:
        emit_json({**inspection_dict(ins), "forward": forward})
    else:
        click.echo(render_text(ins, forward))
    if ins.problems:
        listed = "each one is listed on stdout"  # not "see `bitconvert inspect`": this is it
        raise CheckpointError(summarise(ins.path, ins.architecture, ins.problems, ins.actual, listed), ins.problems)
