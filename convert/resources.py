"""What the machine is doing now: usable CPUs, the CPU time other processes use, available memory.

The facts :func:`convert.parity.placement.measure` hands to the placement
decision. :class:`CpuWindow` measures the CPU time that *other* processes
used over a short window (Linux ``/proc/stat`` minus this process's own
time): the 1-minute load average lagged by a minute and counted an export's
own recent load (docs/performance.md).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Shortest window over which the CPU use of other processes is measured.
MIN_WINDOW_S = 0.25


@dataclass(frozen=True)
class CpuSample:
    t: float  # monotonic seconds
    busy: float  # CPU seconds the whole machine spent outside idle/iowait
    own: float  # CPU seconds of this process and its waited-for children
    cpus: int  # CPUs /proc/stat counts


def _sample() -> CpuSample | None:
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
    return CpuSample(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own, cpus)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


class CpuWindow:
    """Started early (before reading the checkpoint), read when the decision is due.

    ``sample``, ``usable`` and ``sleep`` are the machine's (``/proc/stat``,
    the affinity mask, time.sleep) unless injected.
    """

    def __init__(self, sample: Callable[[], CpuSample | None] | None = None, usable=None, sleep=time.sleep):
        self._sample = sample or _sample
        self._usable = usable or usable_cpus
        self._sleep = sleep
        self._start = self._sample()

    def idle_cpus(self) -> float | None:
        """CPUs that other processes left idle since the window started; None where unknown.

        Waits until the window is at least MIN_WINDOW_S long.
        """
        if self._start is None:
            return None
        wait = MIN_WINDOW_S - (time.monotonic() - self._start.t)
        if wait > 0:
            self._sleep(wait)
        end = self._sample()
        if end is None:
            return None
        wall = end.t - self._start.t
        others = max(0.0, (end.busy - self._start.busy) - (end.own - self._start.own)) / wall
        usable = self._usable()
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
