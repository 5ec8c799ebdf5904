"""The JAX reference of one export or verify run, started where its :class:`Placement` says."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .. import interrupts
from ..fsutil import make_locked_dir, remove_unlocked_dirs
from .placement import Placement
from .reference import Reference, reference_outputs
from .worker import finish_reference_worker, start_reference_worker, stop_reference_worker

#: The worker's scratch directory in the system's temporary directory: ``bitconvert-reference-<pid>-<random>``.
WORKDIR_PREFIX = "bitconvert-reference-"


class PendingReference:
    """Started by :meth:`start` (a worker process), or computed by the first :meth:`result` (inline).

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
        self._lock_fd: int | None = None
        self._started = False
        self._checkpoint, self._float32, self._pool_padding = checkpoint, float32, pool_padding
        self._compute: Callable[[], Reference] | None = None

    def start(self) -> PendingReference:
        """Start the worker process where the placement says so; inline, the first :meth:`result` computes it."""
        if self._started:
            raise RuntimeError("PendingReference.start() called twice")
        self._started = True
        checkpoint, float32, pool_padding, self._checkpoint = self._checkpoint, self._float32, self._pool_padding, None
        if self.placement.where.in_worker:  # the worker reads the checkpoint file again
            self._unregister = interrupts.register(self._kill)  # a signal that ends the process stops the worker too
            # Locked while this process lives: one left by a killed process is removed by the next.
            remove_unlocked_dirs(tempfile.gettempdir(), WORKDIR_PREFIX)
            self._workdir, self._lock_fd = make_locked_dir(tempfile.gettempdir(), WORKDIR_PREFIX)
            self._proc = start_reference_worker(
                checkpoint.path, self._arch, self.images, self.names, self._workdir, float32=float32, pool_padding=pool_padding
            )
        else:  # the arrays are held until result(): the caller may drop its own reference to them meanwhile
            self._compute = lambda: reference_outputs(
                checkpoint, self.images, self.names, float32=float32, pool_padding=pool_padding
            )
        return self

    @property
    def done(self) -> bool:
        return self._reference is not None

    def result(self) -> Reference:
        if not self._started:
            raise RuntimeError("PendingReference.result() before start()")
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
            self._unregister()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _kill(self) -> None:
        """From a signal handler: kill the worker without waiting (the process is ending), remove its directory."""
        if self._proc is not None:
            with contextlib.suppress(OSError):
                self._proc.kill()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
