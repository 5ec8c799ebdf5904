"""Whether this machine has room to run the JAX reference in a worker process alongside TF.

``bitconvert verify`` and ``bitconvert export`` need a JAX (Flax) forward pass
and TensorFlow work. In a second process the two overlap, which shortens the
wall time when a core is free, at the price of a second interpreter (about
4 s of extra CPU) and of both processes' memory at once. This module decides,
from what the machine is doing now:

* CPU: :class:`CpuWindow` measures the CPU time that *other* processes used
  over a short window (Linux ``/proc/stat`` minus this process's own time).
  The 1-minute load average used before lagged by a minute: right after one
  export it still counted that export's own load, so a second export in a
  row (``--all``, the benchmark) ran the halves in turn for nothing
  (R50x1-160: 36.5 s instead of 28 s).
* Memory: both processes together must stay within :data:`OVERLAP_MEMORY_BUDGET`
  and within what the kernel reports as available.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: Peak memory of the worker and the main process together, per byte of
#: checkpoint, plus a fixed part (two Python processes with TF and JAX loaded).
#: Measured (sum of both processes' RSS, sampled every 0.1 s, export with
#: default options): R50x1, 0.10 GB -> 1.71 GB; R152x2, 0.95 GB -> 5.49 GB.
OVERLAP_BYTES_PER_CHECKPOINT_BYTE = 4.5
OVERLAP_FIXED_BYTES = 1.25e9
#: While the worker runs first: the worker's peak plus this process holding the
#: checkpoint and TensorFlow's runtime. Measured: R152x2 (0.95 GB), parity at 224 px: 4.22 GB.
WORKER_FIRST_BYTES_PER_CHECKPOINT_BYTE = 3.5
WORKER_FIRST_FIXED_BYTES = 1.0e9
#: The most both processes may hold together: the export's memory target
#: (issue 5: R152x2 within 4.5 GB). Above it the halves run in turn, in one process.
OVERLAP_MEMORY_BUDGET = 4.5e9
#: Shortest window over which the CPU use of other processes is measured.
MIN_WINDOW_S = 0.25


@dataclass(frozen=True)
class _CpuSample:
    t: float  # monotonic seconds
    busy: float  # CPU seconds the whole machine spent outside idle/iowait
    own: float  # CPU seconds of this process and its waited-for children
    cpus: int  # CPUs /proc/stat counts


def _sample() -> _CpuSample | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    fields = lines[0].split()
    if fields[0] != "cpu" or len(fields) < 8:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return _CpuSample(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own, cpus)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class CpuWindow:
    """Started early (before reading the checkpoint), read when the decision is due."""

    def __init__(self):
        self._start = _sample()

    def idle_cpus(self) -> float | None:
        """CPUs that other processes left idle since the window started; None where unknown.

        Waits until the window is at least MIN_WINDOW_S long.
        """
        if self._start is None:
            return None
        wait = MIN_WINDOW_S - (time.monotonic() - self._start.t)
        if wait > 0:
            time.sleep(wait)
        end = _sample()
        if end is None:
            return None
        wall = end.t - self._start.t
        others = max(0.0, (end.busy - self._start.busy) - (end.own - self._start.own)) / wall
        usable = usable_cpus()
        # /proc/stat may count a container host's CPUs: scale the others' load to ours.
        return max(0.0, usable - others * usable / max(end.cpus, usable))


def available_memory() -> float | None:
    """Bytes the kernel reports as available (MemAvailable); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def overlap_memory(checkpoint_bytes: int) -> float:
    """Estimated peak of the worker and the main process together, the worker alongside the TF work."""
    return OVERLAP_FIXED_BYTES + OVERLAP_BYTES_PER_CHECKPOINT_BYTE * checkpoint_bytes


def worker_first_memory(checkpoint_bytes: int) -> float:
    """Estimated peak while the worker runs and this process only holds the checkpoint and imports TF."""
    return WORKER_FIRST_FIXED_BYTES + WORKER_FIRST_BYTES_PER_CHECKPOINT_BYTE * checkpoint_bytes


#: The JAX reference runs in a worker process alongside all of the TF work.
ALONGSIDE = "alongside"
#: The JAX reference runs in a worker process while this process imports TF;
#: the TF graph is built only once the worker is done (memory: R152x2).
WORKER_FIRST = "worker-first"
#: The JAX reference runs in this process, before the TF work.
IN_PROCESS = "in-process"


def reference_plan(checkpoint_bytes: int, window: CpuWindow | None, *, worker_first: bool = True) -> tuple[str, str]:
    """Where the JAX reference runs (ALONGSIDE, WORKER_FIRST or IN_PROCESS) and why, for the log.

    ``worker_first=False`` for callers that cannot wait for the worker between
    importing TensorFlow and building the graph (``bitconvert verify``).
    """
    if usable_cpus() < 2:
        return IN_PROCESS, "in this process, first: one CPU"
    idle = window.idle_cpus() if window is not None else None
    if idle is None:
        return IN_PROCESS, "in this process, first: cannot tell how busy the CPUs are"
    # This process takes one CPU; the worker needs most of another.
    if idle < 1.5:
        return IN_PROCESS, f"in this process, first: other processes keep {usable_cpus() - idle:.1f} of {usable_cpus()} CPUs busy"
    available = available_memory()
    budget = OVERLAP_MEMORY_BUDGET if available is None else min(OVERLAP_MEMORY_BUDGET, available)
    need = overlap_memory(checkpoint_bytes)
    if need <= budget:
        return ALONGSIDE, "in a worker process, alongside the TF work"
    if not worker_first:
        return IN_PROCESS, f"in this process, first: alongside, the two processes would need about {need / 1e9:.1f} GB"
    first = worker_first_memory(checkpoint_bytes)
    if first <= budget:
        return WORKER_FIRST, (
            f"in a worker process while TensorFlow is imported, then the TF work "
            f"(alongside, both would need about {need / 1e9:.1f} GB)"
        )
    return IN_PROCESS, f"in this process, first: a worker would need about {first / 1e9:.1f} GB, {budget / 1e9:.1f} GB allowed"
