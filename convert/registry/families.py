"""The generated families of the registry: one ``families:`` rule expanded into its entries (archs x runs x tasks)."""

from __future__ import annotations

import re

from ..errors import RegistryError
from .entry import ModelEntry, parse_entry

#: Fields of a family rule; the templates are formatted with {arch}, {Arch}, {run}, {task}, {classes}.
_FAMILY_FIELDS = ("id", "source", "dataset", "description", "labels", "runs", "backbone_params", "tasks")
_TASK_FIELDS = ("classes", "resolution")


def _arch_key(name) -> tuple[int, int] | None:
    m = re.fullmatch(r"R(\d+)x(\d+)", str(name))
    return (int(m.group(1)), int(m.group(2))) if m else None


def _rule_part(family: str, rule: dict, name: str, kind: type):
    value = rule[name]
    if not isinstance(value, kind) or not value:
        raise RegistryError(f"family {family!r}: {name} must be a non-empty {kind.__name__}")
    return value


def expand_family(family: str, rule) -> list[ModelEntry]:
    """The entries of one ``families:`` rule: every (arch, run, task), formatted from its templates.

    Each generated entry is a mapping of the same fields a named entry has,
    parsed by the same :func:`parse_entry`, so the rule cannot produce an
    entry that a hand-written block could not.
    """
    if not isinstance(rule, dict):
        raise RegistryError(f"family {family!r}: expected a mapping")
    unknown = sorted(set(rule) - set(_FAMILY_FIELDS))
    missing = [f for f in _FAMILY_FIELDS if f not in rule]
    if unknown or missing:
        raise RegistryError(f"family {family!r}: unknown field(s) {unknown}, missing field(s) {missing}")
    backbones = _rule_part(family, rule, "backbone_params", dict)
    runs = _rule_part(family, rule, "runs", list)
    tasks = _rule_part(family, rule, "tasks", dict)
    entries = []
    for arch_name, backbone in backbones.items():
        key = _arch_key(arch_name)
        if key is None or not isinstance(backbone, int):
            raise RegistryError(
                f"family {family!r}: backbone_params needs R<depth>x<width>: <count>, got {arch_name}: {backbone}"
            )
        depth, width = key
        for run in runs:
            for task, spec in tasks.items():
                if not isinstance(spec, dict) or sorted(spec) != sorted(_TASK_FIELDS):
                    raise RegistryError(f"family {family!r}: task {task!r} needs exactly {', '.join(_TASK_FIELDS)}")
                values = {"arch": arch_name.lower(), "Arch": arch_name, "run": run, "task": task, "classes": spec["classes"]}
                try:
                    fields = {f: rule[f].format(**values) for f in ("id", "source", "dataset", "description")}
                except (KeyError, AttributeError, ValueError) as exc:
                    raise RegistryError(f"family {family!r}: bad template: {exc}") from exc
                raw = {
                    **{f: v for f, v in fields.items() if f != "id"},
                    "depth": depth,
                    "width": width,
                    "classes": spec["classes"],
                    "resolution": spec["resolution"],
                    "params": backbone + (2048 * width + 1) * spec["classes"] if isinstance(spec["classes"], int) else None,
                    "labels": rule["labels"],
                }
                entries.append(parse_entry(fields["id"], raw, family=family))
    return entries
