"""The model registry: ``checkpoints.yaml`` loaded into typed, frozen objects.

The file is data; this module only parses and validates it. Unknown fields
and unknown ids are errors (the latter with a did-you-mean), so a typo in the
registry or on the command line never passes silently. Cross-checks against
the architecture (parameter counts) live in the tests and in ``check()``.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import config
from .architecture import STANDARD_UNITS, Architecture, parameter_count
from .errors import RegistryError, UnknownModelError

#: The registry: at the repo root next to setup.cfg (editable install, checkout),
#: else where setup.cfg's data_files put it for a regular install.
_SOURCE_REGISTRY = Path(__file__).resolve().parent.parent / "checkpoints.yaml"
_INSTALLED_REGISTRY = Path(sys.prefix) / "share" / "bitconvert" / "checkpoints.yaml"
DEFAULT_REGISTRY = _SOURCE_REGISTRY if _SOURCE_REGISTRY.exists() else _INSTALLED_REGISTRY
#: Environment variable to point at another registry file (parsed by convert.config).
REGISTRY_ENV = config.REGISTRY

_REQUIRED = ("source", "depth", "width", "classes", "resolution", "params", "dataset", "description")
_OPTIONAL = ("sha256", "hub", "collection")
_HUB_KEYS = ("classification", "feature_extraction")


@dataclass(frozen=True)
class HubHandles:
    classification: str | None = None
    feature_extraction: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One convertible checkpoint."""

    id: str
    source: str
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

    @property
    def architecture(self) -> Architecture:
        return Architecture.from_depth(self.depth, self.width, self.classes)

    @property
    def arch_name(self) -> str:
        return f"R{self.depth}x{self.width}"

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "architecture": self.arch_name,
            "depth": self.depth,
            "width": self.width,
            "classes": self.classes,
            "resolution": self.resolution,
            "params": self.params,
            "sha256": self.sha256,
            "dataset": self.dataset,
            "description": self.description,
            "collection": self.collection,
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


def _int_field(model_id: str, raw: dict, name: str, positive: bool = True) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value < 1):
        raise RegistryError(f"model {model_id!r}: {name} must be a positive integer, got {value!r}")
    return value


def _parse_entry(model_id: str, raw) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"model {model_id!r}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown field(s) {', '.join(unknown)}")
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise RegistryError(f"model {model_id!r}: missing field(s) {', '.join(missing)}")
    depth = _int_field(model_id, raw, "depth")
    if depth not in STANDARD_UNITS:
        raise RegistryError(f"model {model_id!r}: depth {depth} is not one of {sorted(STANDARD_UNITS)}")
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
    collection = raw.get("collection", False)
    if not isinstance(collection, bool):
        raise RegistryError(f"model {model_id!r}: collection must be true or false")
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
        collection=collection,
    )


def _unique_key_loader():
    """A SafeLoader that refuses duplicate mapping keys (plain YAML keeps the last one silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
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
    if not isinstance(doc, dict) or set(doc) != {"models"} or not isinstance(doc["models"], dict):
        raise RegistryError(f"{path}: expected a single top-level 'models:' mapping")
    entries = tuple(_parse_entry(str(k), v) for k, v in doc["models"].items())
    if not entries:
        raise RegistryError(f"{path}: no models")
    sources = [e.source for e in entries]
    dup = sorted({s for s in sources if sources.count(s) > 1})
    if dup:
        raise RegistryError(f"{path}: several models share the source file(s) {', '.join(dup)}")
    return Registry(entries, path)


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
