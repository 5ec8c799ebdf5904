"""convert.testing.bench: the benchmarks' one way to measure a child (wall, CPU, memory of its process tree)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from convert.testing.bench import cpu_facts, judge_speed, measure, print_table

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


def test_speed_verdict_names_what_is_below_timm_and_the_best_runtime():
    times = {"LiteRT": {1: (0.16, 0.23), 8: (1.34, 1.25)}, "onnxruntime": {1: (0.15, 0.24), 8: (1.21, 1.23)}}
    v = judge_speed(times, {1: 0.1145, 8: 0.9161})
    assert [(name, b) for name, b, _ in v.below] == [("LiteRT", 8)]
    assert v.best[1][0] == v.best[8][0] == "onnxruntime"
    assert abs(v.best[1][1] - 0.24 / 0.15) < 1e-12 and abs(v.asks[8] - 1.23 / 1.5) < 1e-12
    lines = v.lines()
    assert "LiteRT batch 8 (0.93x)" in lines[0]
    assert "1.60x timm (target 2.0x: missed" in lines[1]
    assert v.missed() == [
        "LiteRT batch 8: 0.93x timm, below 1x",
        "best at batch 1: onnxruntime 1.60x timm, 2.0x asked",
        "best at batch 8: onnxruntime 1.02x timm, 1.5x asked",
    ]
    assert v.missed(best=False) == ["LiteRT batch 8: 0.93x timm, below 1x"]


def test_speed_verdict_misses_nothing_when_target_one_holds():
    times = {"LiteRT": {1: (0.040, 0.085), 8: (0.20, 0.31)}, "SavedModel": {1: (0.08, 0.085), 8: (0.30, 0.31)}}
    v = judge_speed(times, {1: 0.020, 8: 0.162})
    assert v.missed() == [] and v.best[8] == ("LiteRT", 0.31 / 0.20)
    # One runtime falling to 0.99x timm is a miss, whatever the best one does.
    assert judge_speed({**times, "ONNX": {1: (0.0859, 0.085), 8: (0.2, 0.31)}}, {1: 0.02, 8: 0.162}).missed() == [
        "ONNX batch 1: 0.99x timm, below 1x"
    ]


def test_speed_verdict_tells_a_speed_up_below_the_floor_from_one_above_it():
    times = {"LiteRT": {1: (0.040, 0.085), 8: (0.28, 0.34)}}
    # A fast CPU: the floor (0.020 / 0.162 s) is under what 2x / 1.5x ask (0.0425 / 0.2267 s).
    fast = judge_speed(times, {1: 0.020, 8: 0.162})
    assert fast.reachable(1) and fast.reachable(8)
    assert "met" in fast.lines()[1] and "out of reach" not in "".join(fast.lines())
    # A slow one: 1.5x timm asks less time than the convolutions take at the matmul peak.
    slow = judge_speed(times, {1: 0.020, 8: 0.25})
    assert slow.reachable(1) and not slow.reachable(8)
    assert slow.lines()[2].endswith(
        "it asks 0.2267 s, less than the fp32 floor's 0.2500 s: out of reach of direct convolutions on this CPU)."
    )
    assert judge_speed(times, {1: float("nan"), 8: float("nan")}).reachable(8)  # no floor measured: nothing ruled out
    assert judge_speed(times, {1: 0.02, 8: 0.16}).below == ()


SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_script_answers_help_and_refuses_an_unknown_option(script):
    """A helper given --help prints its usage and starts nothing; a mistyped option stops it at once (status 2),
    instead of a benchmark or an export running for minutes with the argument ignored."""
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.lower().startswith("usage:"), helped.stderr[-1000:]
    refused = subprocess.run([sys.executable, script, "--no-such-option"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "usage" in refused.stderr.lower(), refused.stderr[-1000:]
