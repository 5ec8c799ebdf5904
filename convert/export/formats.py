"""The export formats: ``--format`` name -> the module that implements it, imported only when used.

Each module exposes ``TARGET`` (convert.export.target.ExportTarget). Only the
modules present in this installation are listed.
"""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import UsageError

#: In the order they are written and listed; the first is the default.
_MODULES = {
    "savedmodel": "convert.export.savedmodel",
    "keras": "convert.export.keras",
    "tflite": "convert.export.tflite",
    "onnx": "convert.export.onnx",
}
DEFAULT = "savedmodel"


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


FORMATS: dict[str, str] = {name: module for name, module in _MODULES.items() if _present(module)}


def parse_formats(text: str) -> tuple[str, ...]:
    """``"savedmodel,keras"`` -> ("savedmodel", "keras") in table order; unknown names are a UsageError."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise UsageError(f"unknown format {', '.join(map(repr, unknown)) or repr(text)}; valid formats: {', '.join(FORMATS)}")
    return tuple(n for n in FORMATS if n in names)


def get_targets(names) -> list:
    """The TARGET objects of ``names`` (an iterable of format names), in table order."""
    chosen = parse_formats(",".join(names))
    return [importlib.import_module(FORMATS[n]).TARGET for n in chosen]


def summaries() -> dict[str, str]:
    """name -> one-line summary, for ``bitconvert export --help`` (imports the target modules, not TF)."""
    return {n: importlib.import_module(m).TARGET.summary for n, m in FORMATS.items()}
