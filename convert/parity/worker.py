"""The reference worker: ``python -m convert.parity WORKDIR`` computes the JAX reference in a fresh process.

A plain subprocess rather than multiprocessing: no re-import of the caller's
``__main__`` (spawn) and no fork of a process that holds TF or JAX thread
pools. The worker reads and validates the checkpoint file itself, so the
caller need not keep the arrays for it. Its files, all in one directory, are
described by :class:`WorkerFiles`; what it computes by :class:`WorkerSpec`.

The worker's standard input is a pipe the caller never writes to and keeps
open while it waits: end-of-file on it means the caller is gone (killed, even
by SIGKILL), and the worker removes its directory and exits at once instead
of computing for nobody (a thread waits for it, so this holds while JAX computes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BitconvertError, JaxReferenceError
from ..model.architecture import STAGES, Architecture
from .reference import ADVICE, Reference, reference_from_file


@dataclass(frozen=True)
class WorkerFiles:
    """The worker's files in its scratch directory: inputs (spec, images), outputs, its stderr."""

    workdir: Path

    @property
    def spec(self) -> Path:
        return self.workdir / "spec.json"

    @property
    def images(self) -> Path:
        return self.workdir / "images.npy"

    @property
    def f32(self) -> Path:
        return self.workdir / "f32.npz"

    @property
    def f64(self) -> Path:
        return self.workdir / "f64.npz"

    @property
    def timings(self) -> Path:
        return self.workdir / "timings.json"

    @property
    def stderr(self) -> Path:
        return self.workdir / "stderr.txt"


@dataclass(frozen=True)
class WorkerSpec:
    """What the worker computes: the checkpoint file, its architecture, the image names, float32 or not, the root pool padding."""

    path: str
    units: tuple[int, ...]
    width: int
    classes: int
    names: tuple[str, ...]
    float32: bool
    pool_padding: str = "zero"

    @property
    def arch(self) -> Architecture:
        return Architecture(tuple(self.units), self.width, self.classes)

    def dump(self, files: WorkerFiles) -> None:
        files.spec.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, files: WorkerFiles) -> WorkerSpec:
        d = json.loads(files.spec.read_text())
        return cls(d["path"], tuple(d["units"]), d["width"], d["classes"], tuple(d["names"]), d["float32"], d["pool_padding"])


def start_reference_worker(
    path, arch: Architecture, images: np.ndarray, names: list[str], workdir: Path, *, float32: bool = True, pool_padding="zero"
):
    """Start the worker on ``images``; returns its Popen. Collect with :func:`finish_reference_worker`."""
    files = WorkerFiles(Path(workdir))
    np.save(files.images, images)
    WorkerSpec(str(path), tuple(arch.units), arch.width, arch.classes, tuple(names), float32, pool_padding).dump(files)
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with open(files.stderr, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "convert.parity", str(files.workdir)],
            stdin=subprocess.PIPE,  # never written: its end-of-file tells the worker that this process is gone
            stdout=err,
            stderr=err,
            env=env,
        )


def stop_reference_worker(proc) -> None:
    """Kill a reference worker that is still running (after a failure) and reap it; no-op once it has exited."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    _close_stdin(proc)


def _close_stdin(proc) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()


def _failure(rc: int, files: WorkerFiles) -> JaxReferenceError:
    """One line: what happened to the worker, and what to do."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        why = " (out of memory?)" if -rc == signal.SIGKILL else ""
        return JaxReferenceError(
            f"the JAX reference worker was killed by {name}{why}; free some memory or run with --reference inline"
        )
    try:
        lines = [line.strip() for line in files.stderr.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = lines[-1].removeprefix("bitconvert: error: ") if lines else "no message"
    if ADVICE not in last:
        last = f"{last}; {ADVICE}"
    return JaxReferenceError(f"the JAX reference worker failed (exit {rc}): {last[:400]}")


def finish_reference_worker(proc, arch: Architecture, images: np.ndarray, names: list[str], workdir: Path) -> Reference:
    """Wait for the worker and read its outputs; a failed worker is a JaxReferenceError."""
    files = WorkerFiles(Path(workdir))
    rc = proc.wait()
    _close_stdin(proc)
    if rc != 0:
        raise _failure(rc, files)
    out32 = None
    if files.f32.exists():
        with np.load(files.f32) as f32:
            out32 = {k: f32[k] for k in STAGES}
    with np.load(files.f64) as f64:
        out64 = {k: f64[k] for k in STAGES}
    timings = json.loads(files.timings.read_text())
    return Reference(arch, images, out32, out64, list(names), timings)


#: The worker's exit status when its caller has gone (it removed its directory; nobody reads the status).
EXIT_ORPHANED = 3


def _exit_when_caller_leaves(workdir: Path) -> None:
    """In a thread: wait for end-of-file on standard input (the caller is gone), remove ``workdir``, end the process."""
    with contextlib.suppress(OSError, ValueError):
        while os.read(0, 4096):  # the raw descriptor: a buffered reader's lock would stop the interpreter's exit
            pass
    shutil.rmtree(workdir, ignore_errors=True)
    os._exit(EXIT_ORPHANED)


def worker_main(workdir: str) -> int:
    """The worker's body. A failure the user can act on is one line on stderr and its exit status."""
    files = WorkerFiles(Path(workdir))
    threading.Thread(target=_exit_when_caller_leaves, args=(files.workdir,), name="caller-watch", daemon=True).start()
    spec = WorkerSpec.load(files)
    try:
        ref = reference_from_file(spec.path, spec.arch, np.load(files.images), list(spec.names), spec.float32, spec.pool_padding)
    except BitconvertError as exc:
        print(f"bitconvert: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if ref.f32 is not None:
        np.savez(files.f32, **ref.f32)
    np.savez(files.f64, **ref.f64)
    files.timings.write_text(json.dumps(ref.timings))
    return 0
