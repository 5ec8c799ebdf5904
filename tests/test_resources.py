"""When the JAX reference runs in a worker process: other processes' CPU use, and memory."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import convert.resources as resources
from convert.resources import (
    ALONGSIDE,
    IN_PROCESS,
    WORKER_FIRST,
    CpuWindow,
    overlap_memory,
    reference_plan,
    worker_first_memory,
)

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


class _Idle:
    def __init__(self, idle):
        self.idle = idle

    def idle_cpus(self):
        return self.idle


R152X2_BYTES, R50X1_BYTES, R101X3_BYTES = 945_340_832, 102_197_408, 1_550_000_000


@pytest.fixture
def roomy(monkeypatch):
    """Two CPUs and plenty of memory available."""
    monkeypatch.setattr(resources, "usable_cpus", lambda: 2)
    monkeypatch.setattr(resources, "available_memory", lambda: 16e9)


def test_plan_follows_checkpoint_size(roomy):
    """R50x1 alongside; R152x2 (0.95 GB) in a worker while TF is imported (alongside: 5.5 GB); R101x3 in turn."""
    assert overlap_memory(R152X2_BYTES) > resources.OVERLAP_MEMORY_BUDGET >= overlap_memory(R50X1_BYTES)
    assert reference_plan(R50X1_BYTES, _Idle(2.0))[0] == ALONGSIDE
    plan, why = reference_plan(R152X2_BYTES, _Idle(2.0))
    assert plan == WORKER_FIRST and "both would need about 5.5 GB" in why
    assert worker_first_memory(R152X2_BYTES) <= resources.OVERLAP_MEMORY_BUDGET
    plan, why = reference_plan(R152X2_BYTES, _Idle(2.0), worker_first=False)  # verify's choice
    assert plan == IN_PROCESS and "would need about 5.5 GB" in why
    plan, why = reference_plan(R101X3_BYTES, _Idle(2.0))
    assert plan == IN_PROCESS and "4.5 GB allowed" in why


def test_plan_follows_cpus_and_available_memory(roomy, monkeypatch):
    plan, why = reference_plan(R50X1_BYTES, _Idle(0.8))
    assert plan == IN_PROCESS and "1.2 of 2 CPUs busy" in why
    assert reference_plan(R50X1_BYTES, _Idle(None))[0] == IN_PROCESS  # cannot tell: in turn
    monkeypatch.setattr(resources, "available_memory", lambda: 1e9)
    plan, why = reference_plan(R50X1_BYTES, _Idle(2.0))
    assert plan == IN_PROCESS and "1.0 GB allowed" in why
    monkeypatch.setattr(resources, "available_memory", lambda: 16e9)
    monkeypatch.setattr(resources, "usable_cpus", lambda: 1)
    assert reference_plan(R50X1_BYTES, _Idle(1.0)) == (IN_PROCESS, "in this process, first: one CPU")
