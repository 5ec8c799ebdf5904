"""Where the JAX reference runs: the CPU window (injected samples) and the placement rule (injected facts)."""

from __future__ import annotations

import pytest

from convert.config import reference_mode
from convert.errors import UsageError
from convert.parity.placement import (
    MEMORY_SHARE,
    MachineFacts,
    Where,
    alongside_bytes,
    decide,
    place,
    start_window,
    worker_first_bytes,
)
from convert.resources import MIN_WINDOW_S, CpuSample, CpuWindow


def _window(*samples, usable=2):
    it = iter(samples)
    slept = []
    window = CpuWindow(sample=lambda: next(it), usable=lambda: usable, sleep=slept.append)
    return window, slept


def test_own_work_is_not_counted_but_other_processes_are():
    """The load average counted an export's own recent load; the window subtracts this process's CPU."""
    # One second: the machine was busy 1 CPU-second, all of it this process's own.
    own, _ = _window(CpuSample(0.0, 10.0, 5.0, 2), CpuSample(1.0, 11.0, 6.0, 2))
    assert own.idle_cpus() == pytest.approx(2.0)
    # The same, plus another process using one CPU.
    other, _ = _window(CpuSample(0.0, 10.0, 5.0, 2), CpuSample(1.0, 12.0, 6.0, 2))
    assert other.idle_cpus() == pytest.approx(1.0)
    # /proc/stat counting 8 host CPUs of which we may use 2: the others' load is scaled to ours.
    host, _ = _window(CpuSample(0.0, 10.0, 5.0, 8), CpuSample(1.0, 14.0, 5.0, 8))
    assert host.idle_cpus() == pytest.approx(2.0 - 4.0 * 2 / 8)
    unknown, _ = _window(None)
    assert unknown.idle_cpus() is None


def test_window_waits_for_a_minimum_length():
    import time

    now = time.monotonic()
    window, slept = _window(CpuSample(now, 0.0, 0.0, 2), CpuSample(now + MIN_WINDOW_S, 0.0, 0.0, 2))
    window.idle_cpus()
    assert len(slept) == 1 and 0 < slept[0] <= MIN_WINDOW_S


def test_the_real_window_measures_something():
    idle = CpuWindow().idle_cpus()
    assert idle is None or idle >= 0.0


R152X2_BYTES, R50X1_BYTES, R101X3_BYTES = 945_340_832, 102_197_408, 1_550_000_000


def _facts(nbytes, idle=2.0, available=16e9, cpus=2, file_backed=True):
    return MachineFacts(cpus, idle, available, nbytes, file_backed)


def test_placement_follows_available_memory_not_a_fixed_budget():
    """With 16 GB available both R50x1 and R152x2 run alongside; the rule is the available memory's share."""
    assert place(_facts(R50X1_BYTES)).where is Where.WORKER_ALONGSIDE
    big = place(_facts(R152X2_BYTES))
    assert big.where is Where.WORKER_ALONGSIDE and big.needed_bytes == alongside_bytes(R152X2_BYTES)
    assert big.margin == pytest.approx(1 - MEMORY_SHARE) and big.source == "auto"
    # Room for the worker first but not for both at once: worker first; verify cannot wait: inline.
    tight = (alongside_bytes(R152X2_BYTES) + worker_first_bytes(R152X2_BYTES)) / 2 / MEMORY_SHARE
    assert place(_facts(R152X2_BYTES, available=tight)).where is Where.WORKER_FIRST
    assert place(_facts(R152X2_BYTES, available=tight), worker_first=False).where is Where.INLINE
    # Not even that: inline.
    assert place(_facts(R101X3_BYTES, available=worker_first_bytes(R101X3_BYTES))).where is Where.INLINE
    # Unknown memory does not block the worker.
    assert place(_facts(R152X2_BYTES, available=None)).where is Where.WORKER_ALONGSIDE


def test_placement_follows_cpus():
    busy = place(_facts(R50X1_BYTES, idle=0.8))
    assert busy.where is Where.INLINE and busy.idle_cpus == 0.8 and busy.usable_cpus == 2
    assert place(_facts(R50X1_BYTES, idle=None)).where is Where.INLINE  # cannot tell: in turn
    assert place(_facts(R50X1_BYTES, cpus=1, idle=1.0)).where is Where.INLINE
    assert place(_facts(R50X1_BYTES, file_backed=False)).where is Where.INLINE  # nothing to hand a worker


def test_overrides():
    assert place(_facts(R50X1_BYTES, idle=0.1), "worker").where is Where.WORKER_ALONGSIDE
    forced = place(_facts(R50X1_BYTES), "inline")
    assert forced.where is Where.INLINE and forced.source == "override" and forced.needed_bytes == 0
    tight = worker_first_bytes(R152X2_BYTES) / MEMORY_SHARE
    assert place(_facts(R152X2_BYTES, available=tight), "worker").where is Where.WORKER_FIRST
    assert place(_facts(R152X2_BYTES, available=tight), "worker", worker_first=False).where is Where.WORKER_ALONGSIDE
    assert place(_facts(R50X1_BYTES, file_backed=False), "worker").where is Where.INLINE
    with pytest.raises(ValueError):
        place(_facts(R50X1_BYTES), "sideways")
    assert "in a worker process" in place(_facts(R50X1_BYTES)).describe()


def test_one_decision_for_verify_and_export():
    """decide: the given facts placed as place() does; the window is started only when auto has to measure."""
    tight = (alongside_bytes(R152X2_BYTES) + worker_first_bytes(R152X2_BYTES)) / 2 / MEMORY_SHARE
    facts = _facts(R152X2_BYTES, available=tight)
    assert decide("auto", R152X2_BYTES, True, machine=facts) == place(facts)
    assert decide("auto", R152X2_BYTES, True, machine=facts, worker_first=False).where is Where.INLINE
    assert decide("inline", R50X1_BYTES, True).where is Where.INLINE  # measures nothing it needs
    assert start_window("worker") is None and start_window("inline") is None
    assert start_window("auto", machine=facts) is None
    assert isinstance(start_window("auto"), CpuWindow)


def test_reference_mode_from_the_environment():
    assert reference_mode({}) == "auto"
    assert reference_mode({"BITCONVERT_REFERENCE": "Inline "}) == "inline"
    assert reference_mode({"BITCONVERT_REFERENCE": "worker"}) == "worker"
    with pytest.raises(UsageError, match="BITCONVERT_REFERENCE must be one of auto, worker, inline, got 'both'"):
        reference_mode({"BITCONVERT_REFERENCE": "both"})
