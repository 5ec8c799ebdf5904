"""A heavy package's first import without the optional packages it would import for nothing.

``import tensorflow`` imports JAX whenever JAX is installed (TensorFlow Lite's converter keeps
``jax.jit`` for its JAX path), and so does ``import keras`` on every backend (its Orbax checkpoint
callback). Processes that never run JAX pay for that import in every cold start (the figures:
docs/performance.md, "Session 27"). Both import JAX inside ``try: ... except ImportError``, so
hiding it costs them only the features named.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

#: Packages hidden from a first import by default: bitconvert's processes that do not run JAX
#: (the export's and verify's with the reference in a worker, predict's, the Keras check's on
#: torch and TensorFlow) have no use for what TensorFlow and Keras import JAX for.
UNUSED = ("jax",)


def import_without(module: str, unused: tuple[str, ...] = UNUSED) -> ModuleType:
    """``module``, imported (the first time) while the packages ``unused`` cannot be.

    Only packages not imported yet are hidden (an import of one raises ModuleNotFoundError), and
    only while ``module`` is imported: importing them afterwards works as usual. Modules that
    ``module`` imported meanwhile keep what they did without them. The marker is process-wide:
    call it where no other thread may import one of ``unused`` meanwhile (in bitconvert's callers
    no other thread imports JAX: an inline reference runs before or after TensorFlow's import,
    never beside it, and a worker's in a process of its own).
    """
    if module in sys.modules:
        return sys.modules[module]
    hidden = [name for name in unused if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # the import system's own "not importable" marker
    try:
        return importlib.import_module(module)
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
