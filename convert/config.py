"""``BITCONVERT_*`` environment variables, each parsed in one place with its default.

(This branch holds only ``BITCONVERT_REFERENCE``; the others join it here.)
"""

from __future__ import annotations

import os

from .errors import UsageError

#: Where the JAX reference runs: decided from the machine (auto), in a worker process, or in this process.
REFERENCE_MODES = ("auto", "worker", "inline")
REFERENCE_DEFAULT = "auto"


def reference_mode(environ=None) -> str:
    """``BITCONVERT_REFERENCE`` (auto, worker or inline; default auto). A bad value is a UsageError."""
    value = (os.environ if environ is None else environ).get("BITCONVERT_REFERENCE", "").strip().lower()
    if not value:
        return REFERENCE_DEFAULT
    if value not in REFERENCE_MODES:
        raise UsageError(f"BITCONVERT_REFERENCE must be one of {', '.join(REFERENCE_MODES)}, got {value!r}")
    return value
