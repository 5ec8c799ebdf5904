"""convert.interrupts: a signal ends the process with 128 + its number after the clean-ups, wherever the main thread is.

Each test runs a small child process under :func:`ending_on_signals`, puts its
main thread where Python's own Ctrl-C fails (inside a garbage-collection
callback, as JAX's is; inside a long C call; inside a critical step) and
signals it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convert.interrupts import GRACE_S, message

ROOT = Path(__file__).resolve().parent.parent
#: The child: register a clean-up that writes a file, announce where it is, then go there.
CHILD = """
import gc, hashlib, sys, threading, time
from pathlib import Path
from convert import interrupts
where, marker, cleaned = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def in_gc_callback(phase, info):
    if phase == "start":
        marker.touch()
        time.sleep(0.5)  # the signal lands here, where a KeyboardInterrupt is only "ignored"

with interrupts.ending_on_signals(), interrupts.on_stop(cleaned.touch):
    if where == "gc":
        gc.callbacks.append(in_gc_callback)
        while True:
            gc.collect()
    elif where == "c-call":
        # Announced by another thread half a second after the main thread goes on into the C call
        # (a handful of bytecodes, the GIL free meanwhile). Touched before the call, a signal could land
        # between the two and be handled at once: seen once on a loaded host.
        threading.Timer(0.5, marker.touch).start()
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", 10**9)  # minutes in C, the GIL released, no signal check
    elif where == "critical":
        with interrupts.critical():
            marker.touch()
            time.sleep(3)
            Path(str(cleaned) + ".published").touch()
    print("carried on", flush=True)
"""


def _run(tmp_path, where: str, signum: int):
    marker, cleaned = tmp_path / "there", tmp_path / "cleaned"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, where, str(marker), str(cleaned)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    t = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - t, out, err, cleaned


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_inside_a_gc_callback_is_not_swallowed(tmp_path, signum):
    rc, took, out, err, cleaned = _run(tmp_path, "gc", signum)
    assert rc == 128 + signum, err
    assert cleaned.exists() and out == "" and "Exception ignored" not in err
    assert err.strip() == message(signum)
    assert took < 30


def test_a_main_thread_stuck_in_c_is_ended_by_the_waiting_thread(tmp_path):
    rc, took, out, err, cleaned = _run(tmp_path, "c-call", signal.SIGTERM)
    assert rc == 143 and cleaned.exists() and out == "", err
    assert GRACE_S <= took < GRACE_S + 30


def test_a_critical_step_is_finished_before_the_process_ends(tmp_path):
    rc, took, out, err, cleaned = _run(tmp_path, "critical", signal.SIGINT)
    assert rc == 130 and cleaned.exists() and out == "", err
    assert Path(f"{cleaned}.published").exists()  # the step was not cut in two; nothing after it ran
