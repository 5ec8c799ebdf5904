"""The Keras check's processes: one fresh process per backend, started before the models exist.

Each process (``python -m convert.export.keras_check``) imports keras and its backend, then
waits for its spec on standard input, loads the written ``.keras`` files from disk and runs
them; :class:`BackendRuns` feeds them, collects their results and stops them however the
export ends (a signal included: convert.interrupts).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from .. import interrupts
from ..errors import ExportError
from ..fsutil import make_locked_dir, remove_unlocked_dirs
from ..model.xla_options import with_xla_flags
from .keras_check import SCRATCH_PREFIX

#: The checking processes run at this lower priority: the export's own steps are the
#: critical path, and the processes take what CPU those leave (docs/keras.md).
CHILD_NICENESS = 10


class KerasBackendError(ExportError):
    """A Keras backend could not load or run an exported model (exit status 1, like every export failure)."""


def runtime_name(backend: str) -> str:
    return f"keras-{backend}"


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent.parent)


class BackendRuns:
    """The checking processes of one export, one per backend, at most ``parallel`` at a time.

    Started before the models exist: :meth:`start` launches the first
    ``parallel`` processes at once, which import keras and their backend and
    wait for their spec (the export writes meanwhile). :meth:`submit` gives
    the spec (the models and the images); each further backend's process
    starts when one has finished.
    :meth:`wait` returns {backend: (outputs per model, the child's
    result.json)} or raises :class:`KerasBackendError` for the first backend
    (in ``backends`` order) that failed, after stopping the others.
    ``xla_flags``: prepended to the jax process's ``XLA_FLAGS`` (the user's own come last).
    :meth:`stop` ends every process and removes the scratch directory; the
    caller must call it (or :meth:`wait`) on every path: the threads that
    feed the processes are daemons, and a process whose parent is gone
    reads end-of-file and exits.
    """

    def __init__(
        self, backends, *, parallel: int, python: str = sys.executable, threads: int | None = None, xla_flags: str | None = None
    ):
        from ..resources import usable_cpus

        self.backends, self.paths, self.parallel = tuple(backends), [], max(1, min(parallel, len(backends)))
        # Threads per process, so that the processes running at once do not oversubscribe
        # the CPUs: torch's OpenMP threads spin while they wait, which slowed two
        # 2-thread processes on 2 busy cores tenfold (docs/performance.md).
        self.threads = threads or max(1, usable_cpus() // self.parallel)
        # Locked while this process lives: one left by a killed process is removed by the next.
        remove_unlocked_dirs(tempfile.gettempdir(), SCRATCH_PREFIX)
        self._scratch, lock_fd = make_locked_dir(tempfile.gettempdir(), SCRATCH_PREFIX)
        self._procs: list[subprocess.Popen] = []
        self._spec: dict | None = None
        self._go = threading.Event()
        self._stopped = False
        self._results = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _cleanup, self._procs, self._scratch, lock_fd)
        self._unregister = interrupts.register(functools.partial(_cleanup, self._procs, self._scratch, None, wait=False))
        self._futures = {b: Future() for b in self.backends}
        self._python = python
        self._xla_flags = xla_flags  # for the jax process: XLA's compilation options (convert.model.xla_options)
        self._started = False

    def start(self) -> BackendRuns:
        """Launch the first ``parallel`` processes (they import keras and their backend, then wait for :meth:`submit`)."""
        if self._started:
            raise RuntimeError("BackendRuns.start() called twice")
        self._started = True
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for b in self.backends:
            todo.put(b)
        for _ in range(self.parallel):
            threading.Thread(target=self._feed, args=(todo, self._python), name="keras-check", daemon=True).start()
        return self

    def submit(
        self, paths, images: np.ndarray, *, batch: int | None = None, repeat: int = 0, collect: bool = True
    ) -> BackendRuns:
        """Give every process its work: load ``paths``, run them on ``images``, ``batch`` at a time.

        ``collect``: a full garbage collection after each model (frees it before the next loads).
        """
        if not self._started:
            raise RuntimeError("BackendRuns.submit() before start()")
        self.paths = [str(p) for p in paths]
        np.save(self._scratch / "images.npy", np.asarray(images, np.float32))
        self._spec = {"images": "../images.npy", "models": self.paths, "repeat": repeat, "batch": batch, "collect": collect}
        self._go.set()
        return self

    def _feed(self, todo: queue.SimpleQueue, python: str) -> None:
        while True:
            try:
                backend = todo.get_nowait()
            except queue.Empty:
                return
            future = self._futures[backend]
            try:
                future.set_result(self._run(backend, python))
            except BaseException as exc:  # noqa: BLE001 - handed to wait()
                future.set_exception(exc)

    def _run(self, backend: str, python: str) -> int:
        work = self._scratch / backend
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
            env.setdefault(var, str(self.threads))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        if backend == "jax" and self._xla_flags:
            env["XLA_FLAGS"] = with_xla_flags(self._xla_flags, os.environ.get("XLA_FLAGS"))
        with self._lock:
            if self._stopped:
                return -1
            work.mkdir()
            err = open(work / "stderr.txt", "wb")
            proc = subprocess.Popen(
                [python, "-m", "convert.export.keras_check", str(work)], stdin=subprocess.PIPE, stdout=err, stderr=err, env=env
            )
            self._procs.append(proc)
            try:
                os.setpriority(os.PRIO_PROCESS, proc.pid, CHILD_NICENESS)
            except OSError:  # gone already, or not allowed: it runs at the export's priority
                pass
        with err:
            self._go.wait()
            spec = None if self._stopped else self._spec
            try:
                # One line, the pipe kept open: its end-of-file means this process is gone (keras_check).
                if spec:
                    proc.stdin.write(json.dumps(spec).encode() + b"\n")
                    proc.stdin.flush()
                else:
                    proc.stdin.close()
            except OSError:  # it died while importing: its exit status and stderr say why
                pass
            rc = proc.wait()
            with contextlib.suppress(OSError):
                proc.stdin.close()
            return rc

    def _collect(self, backend: str) -> tuple[list[np.ndarray], dict]:
        rc = self._futures[backend].result()
        work = self._scratch / backend
        if (work / "error.json").exists():
            e = json.loads((work / "error.json").read_text())
            what = f"{Path(e['model']).name}: " if e.get("model") else ""
            raise KerasBackendError(f"the Keras {backend} backend failed to {e['step']} {what}{e['message']}")
        if rc != 0 or not (work / "result.json").exists():
            tail = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise KerasBackendError(f"the Keras {backend} backend's check process died (exit {rc}): {tail[0][:300]}")
        outputs = [np.load(work / f"{i}.npy") for i in range(len(self.paths))]
        return outputs, json.loads((work / "result.json").read_text())

    def wait(self) -> dict[str, tuple[list[np.ndarray], dict]]:
        if self._results is None:
            if not self._go.is_set():
                raise RuntimeError("BackendRuns.wait() before submit()")
            try:
                self._results = {b: self._collect(b) for b in self.backends}
            finally:
                self.stop()
        return self._results

    def stop(self) -> None:
        """Stop every process still running and remove the scratch directory."""
        with self._lock:
            self._stopped = True
            self._go.set()
            self._finalizer()
            self._unregister()


def _cleanup(procs: list, scratch: Path, lock_fd: int | None, wait: bool = True) -> None:
    """Kill the processes and reap them (not from a signal handler: ``wait=False``), remove the scratch directory."""
    for proc in list(procs):
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            if wait:
                proc.wait()
    shutil.rmtree(scratch, ignore_errors=True)
    if lock_fd is not None:
        os.close(lock_fd)
