"""Where the JAX reference runs, as data: a pure function of the machine's facts.

In a worker process the JAX reference overlaps the TensorFlow work, which
shortens the wall time when a CPU is free, at the price of a second
interpreter (JAX import, reading the checkpoint again) and of both processes'
memory at once. :func:`place` decides from injected :class:`MachineFacts`;
:func:`measure` gathers them on this machine (:mod:`convert.resources`).
The figures behind the estimates are in docs/performance.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..resources import CpuWindow

#: Peak memory of the worker and the main process together, per byte of
#: checkpoint, plus a fixed part (two Python processes with TF and JAX loaded): an
#: upper bound of every CPU measured (docs/performance.md, "The memory estimate").
ALONGSIDE_BYTES_PER_CHECKPOINT_BYTE = 2.5
ALONGSIDE_FIXED_BYTES = 1.6e9
#: While the worker runs first: the worker's peak plus this process holding the
#: checkpoint and TensorFlow's runtime (an upper bound of every peak measured, like the above).
WORKER_FIRST_BYTES_PER_CHECKPOINT_BYTE = 2.0
WORKER_FIRST_FIXED_BYTES = 1.45e9
#: Share of the available memory a placement may plan to use: the rest is the
#: safety margin for the estimate's error and for the other processes' growth.
MEMORY_SHARE = 0.75
#: Idle CPUs needed beside this process's own for a worker to pay (it needs most of one).
MIN_IDLE_CPUS = 1.5


class Where(enum.Enum):
    #: In a worker process, alongside all of the TF work.
    WORKER_ALONGSIDE = "worker-alongside"
    #: In a worker process while this process imports TF; the TF graph is built once it is done.
    WORKER_FIRST = "worker-first"
    #: In this process, before the TF work.
    INLINE = "inline"

    @property
    def in_worker(self) -> bool:
        return self is not Where.INLINE


@dataclass(frozen=True)
class MachineFacts:
    """What the decision depends on; None where the machine cannot tell."""

    usable_cpus: int
    idle_cpus: float | None
    available_bytes: float | None
    checkpoint_bytes: int
    #: The checkpoint was read from a file a worker can read again (not built in memory).
    file_backed: bool = True


@dataclass(frozen=True)
class Placement:
    """Where the reference runs and the facts that decided it (no prose: :meth:`describe` words it)."""

    where: Where
    source: str  # "auto" (decided from the facts) or "override" (--reference / BITCONVERT_REFERENCE)
    usable_cpus: int
    idle_cpus: float | None
    available_bytes: float | None
    needed_bytes: float  # estimated peak of the chosen placement (0 inline: nothing beyond this process)
    margin: float  # share of the available memory kept free (1 - MEMORY_SHARE)

    def describe(self) -> str:
        """One line for the log."""
        where = {
            Where.WORKER_ALONGSIDE: "in a worker process, alongside the TF work",
            Where.WORKER_FIRST: "in a worker process while TensorFlow is imported, then the TF work",
            Where.INLINE: "in this process, first",
        }[self.where]
        idle = "unknown" if self.idle_cpus is None else f"{self.idle_cpus:.1f}"
        avail = "unknown" if self.available_bytes is None else f"{self.available_bytes / 1e9:.1f} GB"
        return (
            f"{where} ({self.source}: {idle} of {self.usable_cpus} CPUs idle, {avail} available, "
            f"{self.needed_bytes / 1e9:.1f} GB needed)"
        )


def alongside_bytes(checkpoint_bytes: int) -> float:
    """Estimated peak of the worker and the main process together, the worker alongside the TF work."""
    return ALONGSIDE_FIXED_BYTES + ALONGSIDE_BYTES_PER_CHECKPOINT_BYTE * checkpoint_bytes


def worker_first_bytes(checkpoint_bytes: int) -> float:
    """Estimated peak while the worker runs and this process only holds the checkpoint and imports TF."""
    return WORKER_FIRST_FIXED_BYTES + WORKER_FIRST_BYTES_PER_CHECKPOINT_BYTE * checkpoint_bytes


def _fits(needed: float, available: float | None) -> bool:
    return available is None or needed <= MEMORY_SHARE * available


def place(facts: MachineFacts, mode: str = "auto", *, worker_first: bool = True) -> Placement:
    """Where the JAX reference runs, for ``mode`` auto, worker or inline.

    ``worker_first=False`` for callers that cannot wait for the worker between
    importing TensorFlow and building the graph (``bitconvert verify``). An
    in-memory checkpoint always runs inline (there is no file to hand a worker).
    ``worker`` picks the worker placement the memory allows (alongside, else
    first), alongside when the memory is unknown.
    """
    if mode not in ("auto", "worker", "inline"):
        raise ValueError(f"mode must be auto, worker or inline, got {mode!r}")
    source = "auto" if mode == "auto" else "override"
    alongside, first = alongside_bytes(facts.checkpoint_bytes), worker_first_bytes(facts.checkpoint_bytes)

    def result(where: Where) -> Placement:
        needed = {Where.WORKER_ALONGSIDE: alongside, Where.WORKER_FIRST: first, Where.INLINE: 0.0}[where]
        return Placement(where, source, facts.usable_cpus, facts.idle_cpus, facts.available_bytes, needed, 1 - MEMORY_SHARE)

    if mode == "inline" or not facts.file_backed:
        return result(Where.INLINE)
    if mode == "worker":
        if not worker_first or _fits(alongside, facts.available_bytes):
            return result(Where.WORKER_ALONGSIDE)
        return result(Where.WORKER_FIRST)
    if facts.usable_cpus < 2 or facts.idle_cpus is None or facts.idle_cpus < MIN_IDLE_CPUS:
        return result(Where.INLINE)
    if _fits(alongside, facts.available_bytes):
        return result(Where.WORKER_ALONGSIDE)
    if worker_first and _fits(first, facts.available_bytes):
        return result(Where.WORKER_FIRST)
    return result(Where.INLINE)


def start_window(mode: str, machine: MachineFacts | None = None) -> CpuWindow | None:
    """The window :func:`decide` measures the other processes' CPU use over, started now (before the
    checkpoint is read); None when nothing will be measured (``mode`` is not auto, or the facts are given)."""
    if mode != "auto" or machine is not None:
        return None
    from ..resources import CpuWindow

    return CpuWindow()


def decide(
    mode: str,
    checkpoint_bytes: int,
    file_backed: bool,
    *,
    window: CpuWindow | None = None,
    machine: MachineFacts | None = None,
    worker_first: bool = True,
) -> Placement:
    """Where the reference of ``bitconvert verify`` or ``export`` runs: the facts (``machine``, or measured
    over ``window`` from :func:`start_window`), then :func:`place`."""
    facts = machine or measure(window if mode == "auto" else None, checkpoint_bytes, file_backed)
    return place(facts, mode, worker_first=worker_first)


def measure(window: CpuWindow | None, checkpoint_bytes: int, file_backed: bool = True) -> MachineFacts:
    """This machine's facts now; ``window`` is a :class:`convert.resources.CpuWindow` started earlier (or None)."""
    from ..resources import available_memory, usable_cpus

    idle = window.idle_cpus() if window is not None else None
    return MachineFacts(usable_cpus(), idle, available_memory(), checkpoint_bytes, file_backed)
