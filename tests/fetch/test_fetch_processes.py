"""`bitconvert fetch` in real processes: two at once, SIGKILL then rerun, Ctrl-C, a full disk.

Each child runs ``python -m convert fetch`` against a loopback mirror in this
process. Faults that must hit "the middle of a download" use a mirror stall
at 50%, so the test kills or interrupts at a known point, not after a sleep.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fetch_support import HALF, SOURCE, assert_pass_rule, make_payload, registry_yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parent.parent
REGISTRY = registry_yaml({"test-a": SOURCE})
#: Runs the CLI with a file-size limit, SIGXFSZ ignored so that write() fails with EFBIG instead of killing.
#: ``python -m convert`` with Ctrl-C's usual action: a suite started in the background by a
#: non-interactive shell (``cmd &``) inherits SIGINT ignored, and Python would keep it so.
CTRL_C = """import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv[0] = "bitconvert"
runpy.run_module("convert", run_name="__main__")
"""
LIMITED = """import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "bitconvert"
runpy.run_module("convert", run_name="__main__")
"""


@pytest.fixture
def payload() -> bytes:
    return make_payload()


@pytest.fixture
def bucket(tmp_path, payload) -> Path:
    (tmp_path / "bucket" / "distill").mkdir(parents=True)
    (tmp_path / "bucket" / SOURCE).write_bytes(payload)
    return tmp_path / "bucket"


@pytest.fixture
def child_env(tmp_path) -> dict[str, str]:
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITCONVERT_")}
    env.update(BITCONVERT_REGISTRY=str(registry), PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def start(mirror, cache, env, *extra, prefix=()) -> subprocess.Popen:
    command = [*(prefix or (CTRL_C,)), "fetch", "test-a", "--cache-dir", str(cache), "--base-url", mirror.base_url, *extra]
    argv = [sys.executable, "-c", *command]
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stall_first_get(mirror, seconds: float = 30.0, resume: threading.Event | None = None) -> None:
    def hook(reply):
        if reply.method == "GET" and reply.number == 1:
            reply.stall_after, reply.stall_seconds, reply.resume = HALF, seconds, resume

    mirror.hook = hook


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def part_size(target: Path) -> int:
    try:
        return (target.parent / f"{target.name}.part").stat().st_size
    except FileNotFoundError:
        return 0


def start_stalled_at_half(mirror, cache, child_env) -> subprocess.Popen:
    """A `bitconvert fetch` child whose download is stalled with half the body on its partial file."""
    stall_first_get(mirror)
    child = start(mirror, cache, child_env)
    try:
        assert mirror.stalled.wait(20), "the child never reached the middle of the body"
        wait_for(lambda: part_size(cache / SOURCE) >= HALF, 10, "half the body on disk")
    except BaseException:
        child.kill()
        raise
    return child


def test_two_processes_one_download(mirror, cache, target, payload, child_env):
    release = threading.Event()
    stall_first_get(mirror, resume=release)
    first = start(mirror, cache, child_env)
    try:
        assert mirror.stalled.wait(20), "the first process never reached the middle of the body"
        second = start(mirror, cache, child_env)
        waiting = threading.Event()
        second_err: list[str] = []

        def read_second_stderr():
            for line in second.stderr:
                second_err.append(line)
                if "waiting for another process" in line:
                    waiting.set()

        reader = threading.Thread(target=read_second_stderr, daemon=True)
        reader.start()
        assert waiting.wait(20), f"the second process did not wait on the lock: {second_err}"
        release.set()
        out1, err1 = first.communicate(timeout=30)
        out2 = second.stdout.read()
        assert second.wait(timeout=30) == 0, second_err
        reader.join(5)
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0, err1
    assert out1 == out2 == f"{target}\n"
    assert len(mirror.body_requests(SOURCE)) == 1  # one body download for both
    assert_pass_rule(target, payload)


def test_sigkill_at_half_then_rerun_completes(mirror, cache, target, payload, child_env):
    victim = start_stalled_at_half(mirror, cache, child_env)
    try:
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert not target.exists()
    assert_pass_rule(target, None, payload)  # only a bound partial is left
    lock = FileLock(str(target.parent / f"{target.name}.lock"))
    lock.acquire(blocking=False)  # the dead process's lock is gone: no wait on a stale lock
    lock.release()

    started = time.monotonic()
    rerun = start(mirror, cache, child_env)
    out, err = rerun.communicate(timeout=30)
    assert rerun.returncode == 0, err
    assert time.monotonic() - started < 15
    assert out == f"{target}\n"
    assert [h.get("Range") for _, _, h in mirror.body_requests(SOURCE)] == [None, f"bytes={HALF}-"]
    assert_pass_rule(target, payload)


def test_ctrl_c_exits_130_without_final_file(mirror, cache, target, payload, child_env):
    child = start_stalled_at_half(mirror, cache, child_env)
    try:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert out == ""
    assert err.strip().splitlines()[-1] == "bitconvert: interrupted"
    assert "Traceback" not in err
    assert_pass_rule(target, None, payload)


def test_disk_full_is_a_clean_error_and_keeps_the_old_file(mirror, cache, target, payload, child_env):
    good = start(mirror, cache, child_env, "--quiet")
    assert good.communicate(timeout=30)[0] == f"{target}\n"
    record_before = (target.parent / f"{target.name}.verified.json").read_text()

    limit = HALF // 2  # bytes a file may grow to in the child
    child = start(mirror, cache, child_env, "--force", "--quiet", prefix=(LIMITED, str(limit)))
    out, err = child.communicate(timeout=30)
    assert child.returncode == 6, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("bitconvert: error: disk full")
    assert str(target.parent) in err
    assert_pass_rule(target, payload)  # the older good file, untouched
    assert (target.parent / f"{target.name}.verified.json").read_text() == record_before
    part = target.parent / f"{target.name}.part"
    assert not part.exists() or part.stat().st_size <= limit
    meta = target.parent / f"{target.name}.part.json"
    if meta.exists():
        assert json.loads(meta.read_text())["etag"] == f'"{hashlib.md5(payload).hexdigest()}"'
