"""convert.testing.bench: the benchmarks' one way to measure a child (wall, CPU, memory of its process tree)."""

from __future__ import annotations

import io
import sys

from convert.testing.bench import cpu_facts, measure, print_table

#: A parent holding 120 MB that starts a child holding 80 MB; both stay alive together for 0.6 s, then burn CPU.
TREE = """
import subprocess, sys, time
held = bytearray(120 << 20)
child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(80 << 20); time.sleep(0.6)"])
child.wait()
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("done")
"""


def test_measure_sums_the_tree_and_counts_its_cpu():
    run = measure([sys.executable, "-c", TREE], capture=True)
    assert run.ok and run.stdout == "done\n"
    assert run.processes == 2
    assert run.peak_rss >= (120 + 80) << 20  # both at once: summed, not the larger alone
    assert (120 << 20) <= run.largest_rss < (120 + 80) << 20
    assert run.cpu_s >= 0.3 and run.wall_s >= 0.9


def test_a_failing_child_is_reported_not_raised():
    run = measure([sys.executable, "-c", "import sys; sys.exit(3)"], quiet=True)
    assert run.returncode == 3 and not run.ok


def test_print_table():
    out = io.StringIO()
    print_table(("tool", "seconds"), [("curl", "1.00"), ("bitconvert", "1.10")], file=out, right=(1,), machine=False)
    assert out.getvalue().splitlines() == ["| tool | seconds |", "|---|---:|", "| curl | 1.00 |", "| bitconvert | 1.10 |"]


def test_every_table_names_the_cpu_it_ran_on():
    out = io.StringIO()
    print_table(("tool", "seconds"), [("curl", "1.00")], file=out)
    first, blank, head = out.getvalue().splitlines()[:3]
    facts = cpu_facts()
    assert first.startswith(f"CPU: {facts['model']} (") and f"{facts['cores']} cores, load average " in first
    assert blank == "" and head == "| tool | seconds |"


def test_cpu_facts_name_the_instruction_sets_from_cpuinfo():
    flags = set()
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    isa = cpu_facts()["isa"]
    assert ("avx2" in isa) == ("avx2" in flags) and ("avx512f" in isa) == ("avx512f" in flags)
