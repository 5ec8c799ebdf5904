"""One registry entry: its fields, typed and frozen, and the parsing and validation of one ``models:`` block.

Unknown fields are errors, so a typo in the registry never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RegistryError
from ..model.architecture import NAMED_UNITS, Architecture
from ..model.numerics import CODE_POOL_PADDING

_REQUIRED = ("source", "depth", "width", "classes", "resolution", "params", "dataset", "description")
#: ``labels`` is optional (absent = not published) so that registries written before it still load.
_OPTIONAL = ("sha256", "hub", "collection", "labels", "multi_label", "resolution_note", "code")
_HUB_KEYS = ("classification", "feature_extraction")
#: Label files of the bucket a head may name (the BiT bucket's lemma files, line i = class i).
LABEL_FILES = {"ilsvrc2012_wordnet_lemmas.txt": 1000, "imagenet21k_wordnet_lemmas.txt": 21843}


@dataclass(frozen=True)
class HubHandles:
    classification: str | None = None
    feature_extraction: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """One convertible checkpoint."""

    id: str
    source: str
    #: Units per block: a named depth's (``depth: 50``), or as ``depth:`` listed them
    #: (big_vision's ``get_block_desc`` takes a tuple as a depth).
    units: tuple[int, int, int, int]
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

    @property
    def architecture(self) -> Architecture:
        return Architecture(self.units, self.width, self.classes)

    @property
    def depth(self) -> int:
        """50, 101 or 152 for the authors' releases (``3 * sum(units) + 2``)."""
        return self.architecture.depth

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
        from ..model.forward import ForwardPass

        return ForwardPass(self.code, choice)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "architecture": self.arch_name,
            "depth": self.depth,
            "units": list(self.units),
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


def _int_field(model_id: str, raw: dict, name: str, positive: bool = True) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool) or (positive and value < 1):
        raise RegistryError(f"model {model_id!r}: {name} must be a positive integer, got {value!r}")
    return value


def parse_entry(model_id: str, raw, family: str | None = None) -> ModelEntry:
    if not isinstance(raw, dict):
        raise RegistryError(f"model {model_id!r}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise RegistryError(f"model {model_id!r}: unknown field(s) {', '.join(unknown)}")
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise RegistryError(f"model {model_id!r}: missing field(s) {', '.join(missing)}")
    units = _units_field(model_id, raw["depth"])
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
        units=units,
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
    )


def _units_field(model_id: str, value) -> tuple[int, int, int, int]:
    """``depth:`` as units per block: a named depth's (the official ones and big_vision's 26 and 200), or a
    list of four unit counts, as big_vision's ``bit.get_block_desc`` takes either."""
    if isinstance(value, list):
        if len(value) != 4 or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in value):
            raise RegistryError(f"model {model_id!r}: depth as a list needs four positive unit counts, got {value!r}")
        return tuple(value)
    if not isinstance(value, int) or isinstance(value, bool) or value not in NAMED_UNITS:
        raise RegistryError(
            f"model {model_id!r}: depth must be one of {sorted(NAMED_UNITS)} or a list of four unit counts "
            f"(units per block), got {value!r}"
        )
    return NAMED_UNITS[value]
