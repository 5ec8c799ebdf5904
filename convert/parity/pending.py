"""The JAX reference of one export or verify run, started where its :class:`Placement` says."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .placement import Placement
from .reference import Reference, reference_outputs
from .worker import finish_reference_worker, start_reference_worker, stop_reference_worker


class PendingReference:
    """Started by the constructor (a worker process), or computed by the first :meth:`result` (inline).

    ``result()`` waits for it; ``abandon()`` stops a worker still running and
    removes its scratch directory (idempotent; ``result`` calls it too).
    ``pool_padding``: the root max-pool's padding (the checkpoint's forward pass).
    """

    def __init__(
        self, checkpoint, images: np.ndarray, names: list[str], placement: Placement, *, float32: bool, pool_padding="zero"
    ):
        self.images, self.names, self.placement = images, list(names), placement
        self._arch = checkpoint.architecture
        self._reference: Reference | None = None
        self._proc = None
        self._workdir: Path | None = None
        self._compute: Callable[[], Reference] | None = None
        if placement.where.in_worker:
            self._workdir = Path(tempfile.mkdtemp(prefix="bitconvert-reference-"))
            self._proc = start_reference_worker(
                checkpoint.path, self._arch, images, self.names, self._workdir, float32=float32, pool_padding=pool_padding
            )
        else:
            arrays = checkpoint  # held until result(): the caller may drop its own reference to the arrays afterwards
            self._compute = lambda: reference_outputs(arrays, images, self.names, float32=float32, pool_padding=pool_padding)

    @property
    def done(self) -> bool:
        return self._reference is not None

    def result(self) -> Reference:
        if self._reference is None:
            if self._proc is not None:
                try:
                    self._reference = finish_reference_worker(self._proc, self._arch, self.images, self.names, self._workdir)
                finally:
                    self.abandon()
            else:
                self._reference = self._compute()
                self._compute = None
        return self._reference

    def abandon(self) -> None:
        if self._proc is not None:
            stop_reference_worker(self._proc)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
