"""The model registry: ``checkpoints.yaml`` loaded into typed, frozen objects.

The file is data; this package only parses and validates it (one entry: entry.py). Unknown fields
and unknown ids are errors (the latter with a did-you-mean), so a typo in the
registry or on the command line never passes silently. Cross-checks against
the architecture (parameter counts) live in the tests and in ``check()``.

Two kinds of entries: the named ones under ``models:``, written out, and the
generated ones of each rule under ``families:`` (the 285 VTAB-1k fine-tunes:
archs x runs x tasks), expanded (families.py) into the same :class:`ModelEntry` and
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
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import RegistryError, UnknownModelError
from ..model.architecture import parameter_count
from ..model.numerics import CODE_POOL_PADDING
from .entry import LABEL_FILES, HubHandles, ModelEntry, parse_entry
from .families import expand_family

__all__ = ["DEFAULT_REGISTRY", "LABEL_FILES", "REGISTRY_ENV", "HubHandles", "ModelEntry", "Registry", "check"]
__all__ += ["load_registry", "parse_registry"]

#: The registry: at the repo root next to setup.cfg (editable install, checkout),
#: else where setup.cfg's data_files put it for a regular install.
_SOURCE_REGISTRY = Path(__file__).resolve().parents[2] / "checkpoints.yaml"
_INSTALLED_REGISTRY = Path(sys.prefix) / "share" / "bitconvert" / "checkpoints.yaml"
DEFAULT_REGISTRY = _SOURCE_REGISTRY if _SOURCE_REGISTRY.exists() else _INSTALLED_REGISTRY
#: Environment variable to point at another registry file (parsed by convert.config).
REGISTRY_ENV = config.REGISTRY


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
    entries = [parse_entry(str(k), v) for k, v in doc["models"].items()]
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
