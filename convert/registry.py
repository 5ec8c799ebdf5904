"""The model registry: ``checkpoints.yaml`` loaded into typed, frozen objects.

The file is data; this module only parses and validates it. Unknown fields
and unknown ids are errors (the latter with a did-you-mean), so a typo in the
registry or on the command line never passes silently. Cross-checks against
the architecture (parameter counts) live in the tests and in ``check()``.

Two kinds of entries: the named ones under ``models:``, written out, and the
generated ones of each rule under ``families:`` (the 285 VTAB-1k fine-tunes:
archs x runs x tasks), expanded here into the same :class:`ModelEntry` and
validated by the same code, so every id is fetched, inspected, verified and
exported alike.

Which code defines each entry's forward pass (``code``: big_transfer or
big_vision, :data:`convert.model.numerics.CODE_POOL_PADDING`) is given per
family under the top-level ``code:`` mapping and may be overridden per entry;
a family without one is an error, never a silent default.
"""

from __future__ import annotations

import collections
import dataclasses
import difflib
import functools
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import RegistryError, UnknownModelError
from .model.architecture import STANDARD_UNITS, Architecture, parameter_count
from .model.numerics import CODE_POOL_PADDING

#: The registry: at the repo root next to setup.cfg (editable install, checkout),
#: else where setup.cfg's data_files put it for a regular install.
_SOURCE_REGISTRY = Path(__file__).resolve().parent.parent / "checkpoints.yaml"
_INSTALLED_REGISTRY = Path(sys.prefix) / "share" / "bitconvert" / "checkpoints.yaml"
DEFAULT_REGISTRY = _SOURCE_REGISTRY if _SOURCE_REGISTRY.exists() else _INSTALLED_REGISTRY
#: Environment variable to point at another registry file (parsed by convert.config).
REGISTRY_ENV = config.REGISTRY

_REQUIRED = ("source", "depth", "width", "classes", "resolution", "params", "dataset", "description")
#: ``labels`` is optional (absent = not published) so that registries written before it still load.
_OPTIONAL = ("sha256", "hub", "collection", "labels", "multi_label", "resolution_note", "code")
_HUB_KEYS = ("classification", "feature_extraction")
#: Label files of the bucket a head may name (the BiT bucket's lemma files, line i = class i).
LABEL_FILES = {"ilsvrc2012_wordnet_lemmas.txt": 1000, "imagenet21k_wordnet_lemmas.txt": 21843}
#: Fields of a family rule; the templates are formatted with {arch}, {Arch}, {run}, {task}, {classes}.
_FAMILY_FIELDS = ("id", "source", "dataset", "description", "labels", "runs", "backbone_params", "tasks")
_TASK_FIELDS = ("classes", "resolution")


@dataclass(frozen=True)
class HubHandles:
    classification: str | None = None
    feature_extraction: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One convertible checkpoint."""

    id: str
    source: str
    #: ``3 * sum(units) + 2``: 50, 101 or 152 for the authors' releases.
    depth: int
    width: int
    classes: int
    resolution: int
    params: int
    dataset: str
    description: str
    sha256: str | None = None
    hub: HubHandles = HubHandles()
    collection: bool = False
    #: The head's label file under the base URL, or None: labels not published.
    labels: str | None = None
    #: A sigmoid per class (BiT-M ImageNet-21k heads), not a softmax over all.
    multi_label: bool = False
    #: Where sources disagree on the resolution: what they say (cards repeat it).
    resolution_note: str | None = None
    #: The family rule that generated the entry (``vtab``), or None for a named entry.
    family: str | None = None
    #: The code that defines its forward pass (big_transfer or big_vision): the
    #: entry's own ``code:``, else its family's under the registry's ``code:``.
    code: str | None = None
    #: Units per block when ``depth:`` gave them as a list (big_vision's ``get_block_desc``
    #: takes a tuple as a depth); None: the official units of ``depth``.
    units: tuple[int, int, int, int] | None = None

    @property
    def architecture(self) -> Architecture:
        if self.units is not None:
            return Architecture(self.units, self.width, self.classes)
        return Architecture.from_depth(self.depth, self.width, self.classes)

    @property
    def arch_name(self) -> str:
        """``R50x1``; a layout given by its units shows them (``R14x1[1,1,1,1]``)."""
        return self.architecture.name

    @property
    def family_name(self) -> str:
        """The entry's family for ``bitconvert list --family``: its rule's name, else from its file name."""
        if self.family:
            return self.family
        if self.source.startswith("distill/"):
            return "distill"
        if self.source.endswith("-ILSVRC2012.npz"):
            return "bit-m-ilsvrc2012"
        return "bit-s" if self.source.startswith("BiT-S-") else "bit-m"

    @property
    def root_pool_padding(self) -> str:
        """The root max-pool padding of the code that trained it (numerics.POOL_PADS)."""
        return CODE_POOL_PADDING[self.code]

    def forward(self, choice: str = "authors"):
        """The :class:`convert.model.forward.ForwardPass` of this checkpoint under ``--forward choice``."""
        from .model.forward import ForwardPass

        return ForwardPass(self.code, choice)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "architecture": self.arch_name,
            "depth": self.depth,
            "units": list(self.architecture.units),
            "width": self.width,
            "classes": self.classes,
            "resolution": self.resolution,
            "params": self.params,
            "sha256": self.sha256,
            "dataset": self.dataset,
            "description": self.description,
            "collection": self.collection,
            "family": self.family_name,
            "labels": self.labels,
            "multi_label": self.multi_label,
            "resolution_note": self.resolution_note,
            "code": self.code,
            "root_pool_padding": self.root_pool_padding,
            "hub": {"classification": self.hub.classification, "feature_extraction": self.hub.feature_extraction},
        }


@dataclass(frozen=True)
class Registry:
    entries: tuple[ModelEntry, ...]
    path: Path

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def get(self, model_id: str) -> ModelEntry:
        for e in self.entries:
            if e.id == model_id:
                return e
        close = difflib.get_close_matches(model_id, self.ids, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; `bitconvert list` shows the known ids"
        raise UnknownModelError(f"unknown model id {model_id!r}{hint}")

    def collection(self) -> list[ModelEntry]:
        return [e for e in self.entries if e.collection]

    def named(self) -> list[ModelEntry]:
        """The entries written out under ``models:`` (what ``bitconvert list`` shows by default)."""
        return [e for e in self.entries if e.family is None]

    @property
    def families(self) -> list[str]:
        return sorted({e.family_name for e in self.entries})

    def family(self, name: str) -> list[ModelEntry]:
        if name not in self.families:
            raise UnknownModelError(f"unknown family {name!r}; known: {', '.join(self.families)}")
        return [e for e in self.entries if e.family_name == name]


def _int_field(model_id: str, raw: dict, name: str, positive: bool = True) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value < 1):
        raise RegistryError(f"model {model_id!r}: {name} must be a positive integer, got {value!r}")
    return value


def _parse_entry(model_id: str, raw, family: str | None = None) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"model {model_id!r}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown field(s) {', '.join(unknown)}")
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise RegistryError(f"model {model_id!r}: missing field(s) {', '.join(missing)}")
    depth, units = _depth_field(model_id, raw["depth"])
    for name in ("source", "dataset", "description"):
        if not isinstance(raw[name], str) or not raw[name].strip():
            raise RegistryError(f"model {model_id!r}: {name} must be a non-empty string")
    if raw["source"].startswith("/") or ".." in raw["source"].split("/"):
        raise RegistryError(f"model {model_id!r}: source must be a relative path under the base URL")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise RegistryError(f"model {model_id!r}: sha256 must be 64 lowercase hex digits or null")
    hub_raw = raw.get("hub") or {}
    if not isinstance(hub_raw, dict) or set(hub_raw) - set(_HUB_KEYS):
        raise RegistryError(f"model {model_id!r}: hub takes only {', '.join(_HUB_KEYS)}")
    flags = {}
    for name in ("collection", "multi_label"):
        flags[name] = raw.get(name, False)
        if not isinstance(flags[name], bool):
            raise RegistryError(f"model {model_id!r}: {name} must be true or false")
    labels = raw.get("labels")
    if labels is not None and labels not in LABEL_FILES:
        raise RegistryError(f"model {model_id!r}: labels must be null or one of {', '.join(LABEL_FILES)}, got {labels!r}")
    note = raw.get("resolution_note")
    if note is not None and (not isinstance(note, str) or not note.strip()):
        raise RegistryError(f"model {model_id!r}: resolution_note must be a non-empty string")
    code = raw.get("code")
    if code is not None and code not in CODE_POOL_PADDING:
        raise RegistryError(f"model {model_id!r}: code must be one of {', '.join(CODE_POOL_PADDING)}, got {code!r}")
    return ModelEntry(
        id=model_id,
        source=raw["source"],
        depth=depth,
        width=_int_field(model_id, raw, "width"),
        classes=_int_field(model_id, raw, "classes"),
        resolution=_int_field(model_id, raw, "resolution"),
        params=_int_field(model_id, raw, "params"),
        dataset=raw["dataset"],
        description=raw["description"],
        sha256=sha,
        hub=HubHandles(**hub_raw),
        collection=flags["collection"],
        labels=labels,
        multi_label=flags["multi_label"],
        resolution_note=note,
        family=family,
        code=code,
        units=units,
    )


def _depth_field(model_id: str, value) -> tuple[int, tuple[int, int, int, int] | None]:
    """``depth:`` as (depth, units): an official depth, or a list of four unit counts as big_vision's
    ``bit.get_block_desc`` takes one (units None for an official depth; a list of an official depth's units
    is that depth)."""
    if isinstance(value, list):
        if len(value) != 4 or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in value):
            raise RegistryError(f"model {model_id!r}: depth as a list needs four positive unit counts, got {value!r}")
        units = tuple(value)
        depth = 3 * sum(units) + 2
        return depth, None if STANDARD_UNITS.get(depth) == units else units
    if not isinstance(value, int) or isinstance(value, bool) or value not in STANDARD_UNITS:
        raise RegistryError(
            f"model {model_id!r}: depth must be one of {sorted(STANDARD_UNITS)} or a list of four unit counts "
            f"(units per block), got {value!r}"
        )
    return value, None


def _unique_key_loader():
    """A SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last one silently).

    libyaml's parser when PyYAML has it (its wheels do): the pure-Python scanner took most of
    ``inspect``'s start-up; the constructor, where keys are checked, is the same Python code."""
    import yaml

    class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def parse_registry(text: str, path: Path) -> Registry:
    import yaml  # local: keeps `import convert.registry` cheap for tools that only need types

    try:
        doc = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise RegistryError(f"{path}: not valid YAML: {detail}") from exc
    if (
        not isinstance(doc, dict)
        or "models" not in doc
        or set(doc) - {"models", "families", "code"}
        or not isinstance(doc["models"], dict)
    ):
        raise RegistryError(f"{path}: expected a top-level 'models:' mapping and optionally 'families:' and 'code:'")
    entries = [_parse_entry(str(k), v) for k, v in doc["models"].items()]
    families = doc.get("families") or {}
    if not isinstance(families, dict):
        raise RegistryError(f"{path}: 'families:' must map family names to rules")
    for name, rule in families.items():
        entries += expand_family(str(name), rule)
    if not entries:
        raise RegistryError(f"{path}: no models")
    entries = _with_codes(entries, doc.get("code") or {}, path)
    for what, said in (("id", "id(s)"), ("source", "source file(s)")):
        counts = collections.Counter(getattr(e, what) for e in entries)
        dup = sorted(v for v, n in counts.items() if n > 1)
        if dup:
            raise RegistryError(f"{path}: several models share the {said} {', '.join(dup[:5])}")
    return Registry(tuple(entries), path)


def _with_codes(entries: list[ModelEntry], by_family, path: Path) -> list[ModelEntry]:
    """Each entry with its code: its own, else its family's from the registry's ``code:`` mapping."""
    if not isinstance(by_family, dict) or any(v not in CODE_POOL_PADDING for v in by_family.values()):
        raise RegistryError(f"{path}: 'code:' must map family names to one of {', '.join(CODE_POOL_PADDING)}")
    out = []
    for e in entries:
        code = e.code or by_family.get(e.family_name)
        if code is None:
            raise RegistryError(
                f"{path}: model {e.id!r}: no code for its forward pass; add '{e.family_name}: "
                f"big_transfer|big_vision' under the top-level 'code:', or 'code:' to the entry"
            )
        out.append(dataclasses.replace(e, code=code))
    return out


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
    parsed by the same :func:`_parse_entry`, so the rule cannot produce an
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
                entries.append(_parse_entry(fields["id"], raw, family=family))
    return entries


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> Registry:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"cannot read registry {p}: {exc.strerror}") from exc
    return parse_registry(text, p)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Load the registry from ``path``, ``$BITCONVERT_REGISTRY`` or the shipped file."""
    chosen = path or config.from_env().registry or DEFAULT_REGISTRY
    return _load_cached(str(Path(chosen).resolve()))


def check(registry: Registry) -> list[str]:
    """Problems where an entry disagrees with the architecture it names."""
    problems = []
    for e in registry.entries:
        computed = parameter_count(e.architecture)
        if computed != e.params:
            problems.append(f"{e.id}: params {e.params} but {e.arch_name} with {e.classes} classes has {computed}")
    return problems
