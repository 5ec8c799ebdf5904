"""What the benchmarks share: run a child process and measure it; print a Markdown table.

    run = measure([sys.executable, "-m", "convert", "fetch", ...], env=env, sync=True)
    run.wall_s, run.cpu_s, run.peak_rss, run.largest_rss, run.processes, run.returncode
    print_table(["tool", "seconds"], [["curl", f"{run.wall_s:.2f}"]])

Memory comes from /proc, sampled every ``interval`` seconds while the child
runs: ``peak_rss`` is the largest sum of VmRSS over the child and all its
descendants (an export runs its JAX reference in a worker: both hold memory
at once), ``largest_rss`` the largest VmHWM (the kernel's own high-water
mark, so a short peak between samples still counts) of any one of them.
``ru_maxrss`` is not used: a child forked from a big parent inherits the
parent's figure. CPU is user+sys of the child and every descendant it
waited for (``wait4``), so it does not grow when other processes share the
cores, unlike the wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measured:
    """One child's run."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    #: user+sys seconds of the child and its waited-for descendants.
    cpu_s: float
    #: Bytes: the peak of the process tree's summed RSS (sampled).
    peak_rss: int
    #: Bytes: the largest high-water mark (VmHWM) of any single process of the tree.
    largest_rss: int
    #: The most processes seen in the tree at once.
    processes: int
    #: The child's stdout when ``capture=True``, else None.
    stdout: str | None = None

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (from /proc/<pid>/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return pids


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes; zeros once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return rss, hwm


class _Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True, name="bench-sampler")
        self.pid, self.interval = pid, interval
        self.peak_rss = self.largest_rss = self.processes = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = process_tree(self.pid)
            figures = [_memory(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in figures))
            self.largest_rss = max(self.largest_rss, max((h for _, h in figures), default=0))
            self.processes = max(self.processes, len(pids))
            self.done.wait(self.interval)


def measure(
    argv: Sequence[str | os.PathLike],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    capture: bool = False,
    quiet: bool = False,
    sync: bool = False,
    interval: float = 0.1,
) -> Measured:
    """Run ``argv`` to completion and measure it (see the module docstring).

    ``capture`` returns its stdout (else it is inherited, or discarded when
    ``quiet``); stderr is inherited, or discarded when ``quiet``. ``sync``
    writes back every dirty page first, so a run does not pay for the one
    before it. A non-zero exit is returned, not raised.
    """
    if sync:
        os.sync()
    stdout = subprocess.PIPE if capture else (subprocess.DEVNULL if quiet else None)
    stderr = subprocess.DEVNULL if quiet else None
    started = time.perf_counter()
    child = subprocess.Popen([str(a) for a in argv], env=env, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
    sampler = _Sampler(child.pid, interval)
    sampler.start()
    out = child.stdout.read() if capture else None  # read before waiting: a full pipe would block the child
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.done.set()
    sampler.join()
    if capture:
        child.stdout.close()
    return Measured(
        argv=tuple(str(a) for a in argv),
        returncode=child.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss=sampler.peak_rss,
        largest_rss=sampler.largest_rss,
        processes=sampler.processes,
        stdout=out,
    )


def print_table(
    head: Sequence[str], rows: Iterable[Sequence[object]], file=None, right: Iterable[int] = (), machine: bool = True
) -> None:
    """A Markdown table; the columns numbered in ``right`` are right-aligned (figures). ``machine``:
    the CPU and load line above it (:func:`machine_line`)."""
    file = file or sys.stdout
    right = set(right)
    if machine:
        print(f"{machine_line()}\n", file=file)
    print("| " + " | ".join(head) + " |", file=file)
    print("|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|", file=file)
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |", file=file)


def cpu_facts() -> dict:
    """The CPU's model name, the vector instruction sets it offers (from /proc/cpuinfo), cores and load."""
    model, flags = "unknown", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    isa = [name for name in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "avx2", "fma", "avx") if name in flags]
    return {"model": model, "isa": isa, "cores": os.cpu_count(), "load": os.getloadavg()}


def machine_line() -> str:
    """One line for above a table: figures depend on the CPU (and its load), so every table names them."""
    c = cpu_facts()
    load = "/".join(f"{x:.1f}" for x in c["load"])
    return f"CPU: {c['model']} ({', '.join(c['isa']) or 'no AVX'}), {c['cores']} cores, load average {load}"


#: Issue 19, target 1: the best exported runtime at least this many times timm's speed, per batch
#: (and every runtime at least 1x).
BEST_RUNTIME_SPEEDUP = {1: 2.0, 8: 1.5}


@dataclass(frozen=True)
class SpeedVerdict:
    """Issue 19's target 1 judged on one run, as data: what fell below timm, the best runtime per batch,
    and whether the best-runtime speed-up is reachable at all on this CPU (the time it asks against
    the fp32 floor, the model's direct-convolution FLOPs at numpy's matmul rate: a bound for direct
    convolutions only, since Winograd's computes fewer products: docs/inference.md)."""

    #: (runtime, batch, ratio to timm) for every ratio below 1, in the order given.
    below: tuple[tuple[str, int, float], ...]
    #: batch -> (runtime, its ratio to timm): the fastest relative to its own timm.
    best: dict[int, tuple[str, float]]
    #: batch -> seconds the speed-up asks (the best runtime's timm best / the speed-up).
    asks: dict[int, float]
    #: batch -> the fp32 floor's seconds.
    floor: dict[int, float]
    wanted: dict[int, float]

    def reachable(self, batch: int) -> bool:
        """Whether any runtime could meet the speed-up at ``batch`` here: it asks no less than the floor
        (an unmeasured floor, NaN, rules nothing out)."""
        return not self.asks[batch] < self.floor[batch]

    def missed(self, best: bool = True) -> list[str]:
        """Target 1's misses in this run, one short phrase each (none when it holds). ``best=False``:
        only the runtimes below timm (a run of some runtimes cannot say which is the best)."""
        out = [f"{name} batch {b}: {r:.2f}x timm, below 1x" for name, b, r in self.below]
        out += [
            f"best at batch {b}: {name} {ratio:.2f}x timm, {self.wanted[b]:.1f}x asked"
            for b, (name, ratio) in sorted(self.best.items())
            if best and ratio < self.wanted[b]
        ]
        return out

    def lines(self) -> list[str]:
        below = ", ".join(f"{name} batch {b} ({r:.2f}x)" for name, b, r in self.below) or "none"
        out = [f"Issue 19, target 1: every runtime at least 1.00x timm; below it in this run: {below}."]
        for b, (name, ratio) in sorted(self.best.items()):
            verdict = "met" if ratio >= self.wanted[b] else "missed"
            if self.reachable(b):
                reach = f"it asks {self.asks[b]:.4f} s, the fp32 floor is {self.floor[b]:.4f} s"
            else:
                reach = f"it asks {self.asks[b]:.4f} s, less than the fp32 floor's {self.floor[b]:.4f} s: out of reach of direct convolutions on this CPU"
            out.append(f"Best at batch {b}: {name}, {ratio:.2f}x timm (target {self.wanted[b]:.1f}x: {verdict}; {reach}).")
        return out


def judge_speed(
    best_times: Mapping[str, Mapping[int, tuple[float, float]]],
    floor: Mapping[int, float],
    wanted: Mapping[int, float] = BEST_RUNTIME_SPEEDUP,
) -> SpeedVerdict:
    """Judge ``best_times`` (runtime -> batch -> (its best s, its timm's best s)) against target 1."""
    below, best, asks = [], {}, {}
    for name, by_batch in best_times.items():
        for b, (ours, timm) in by_batch.items():
            ratio = timm / ours
            if ratio < 1.0:
                below.append((name, b, ratio))
            if b in wanted and (b not in best or ratio > best[b][1]):
                best[b] = (name, ratio)
                asks[b] = timm / wanted[b]
    return SpeedVerdict(tuple(below), best, asks, {b: floor[b] for b in best}, dict(wanted))


def script_arguments(doc: str | None, argv: Sequence[str] | None = None, configure=None) -> argparse.Namespace:
    """A benchmark script's command line: ``--help`` prints ``doc`` (its docstring) and exits 0.

    ``configure(parser)`` adds the script's options; without it the script takes none. Anything else
    stops with a usage line and exit status 2, so that a mistyped option never starts a long benchmark.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if configure is not None:
        configure(parser)
    return parser.parse_args(argv)


def mb(n: int) -> str:
    """Bytes as whole MB, for tables."""
    return f"{n / 1e6:.0f}"


def python_tool(name: str) -> Path:
    """A console script installed beside this interpreter (``bitconvert``)."""
    return Path(sys.executable).with_name(name)


@contextlib.contextmanager
def loopback_bucket(root: str | os.PathLike) -> Iterator[str]:
    """Point ``bitconvert`` at a loopback bucket with the shipped label files (and a cache under ``root``) for the block.

    Benchmarks export local checkpoints; without this each export would first try
    the real bucket for its label file. Yields the bucket's URL.
    """
    from .mirror import label_bucket

    root = Path(root)
    saved = {k: os.environ.get(k) for k in ("BITCONVERT_BASE_URL", "BITCONVERT_CACHE")}
    with label_bucket(root / "bucket") as server:
        os.environ.update(BITCONVERT_BASE_URL=server.base_url, BITCONVERT_CACHE=str(root / "cache"))
        try:
            yield server.base_url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
