"""When the JAX reference runs in a worker process: other processes' CPU use, and memory."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import convert.resources as resources
from convert.resources import CpuWindow, overlap_memory, reference_worker_decision

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_own_work_is_not_counted_but_other_processes_are():
    """The load average counted an export's own recent load; the window subtracts this process's CPU."""
    own = CpuWindow()
    _spin(0.6)  # this process keeps one CPU busy
    idle_while_we_work = own.idle_cpus()

    other = subprocess.Popen([sys.executable, "-c", "import time\nt = time.monotonic() + 3\nwhile time.monotonic() < t: pass"])
    try:
        time.sleep(0.3)  # let it start
        window = CpuWindow()
        time.sleep(0.6)
        idle_while_another_works = window.idle_cpus()
    finally:
        other.kill()
        other.wait()
    assert idle_while_we_work is not None and idle_while_another_works is not None
    # Same machine, same background: one busy foreign process takes about one CPU more.
    assert idle_while_we_work - idle_while_another_works > 0.5


def test_window_waits_for_a_minimum_length():
    t = time.monotonic()
    CpuWindow().idle_cpus()
    assert time.monotonic() - t >= resources.MIN_WINDOW_S * 0.9


def test_large_checkpoints_run_the_reference_in_turn():
    """R152x2 (0.95 GB) would take both processes past the memory budget; R50x1 (0.1 GB) fits."""
    r152x2, r50x1 = 945_340_832, 102_197_408
    assert overlap_memory(r152x2) > resources.OVERLAP_MEMORY_BUDGET >= overlap_memory(r50x1)
    ok, why = reference_worker_decision(r152x2, None)
    assert not ok and "would need about 5.5 GB" in why


def test_decision_follows_cpus_and_available_memory(monkeypatch):
    class Idle:
        def __init__(self, idle):
            self.idle = idle

        def idle_cpus(self):
            return self.idle

    monkeypatch.setattr(resources, "usable_cpus", lambda: 2)
    monkeypatch.setattr(resources, "available_memory", lambda: 16e9)
    assert reference_worker_decision(100_000_000, Idle(2.0))[0] is True
    ok, why = reference_worker_decision(100_000_000, Idle(0.8))
    assert not ok and "1.2 of 2 CPUs busy" in why
    assert reference_worker_decision(100_000_000, Idle(None))[0] is False  # cannot tell: in turn
    monkeypatch.setattr(resources, "available_memory", lambda: 1e9)
    ok, why = reference_worker_decision(100_000_000, Idle(2.0))
    assert not ok and "1.0 GB available" in why
    monkeypatch.setattr(resources, "available_memory", lambda: 16e9)
    monkeypatch.setattr(resources, "usable_cpus", lambda: 1)
    assert reference_worker_decision(100_000_000, Idle(1.0)) == (False, "in turn: one CPU")
