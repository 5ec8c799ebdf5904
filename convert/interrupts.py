"""Ending a command on SIGINT, SIGTERM or SIGHUP within seconds, publishing nothing and leaving nothing.

An export holds a temporary directory, a JAX worker, Keras check processes
and their scratch directories. Python's default for Ctrl-C (KeyboardInterrupt
raised wherever the main thread happens to be) cannot promise that: raised
inside a garbage-collection callback (JAX registers one) it is printed as
"Exception ignored in: <function _xla_gc_callback>" and the export carries
on; while the main thread is inside a long C call (an XLA computation) it is
not raised at all. And SIGTERM and SIGHUP have no Python handler.

So :func:`ending_on_signals` installs handlers that raise nothing. The first
signal runs the clean-ups registered with :func:`on_stop` (newest first: kill
child processes, remove temporary directories), prints one line and ends the
process with ``os._exit(128 + signal)``: 130 for SIGINT, 143 for SIGTERM, 129
for SIGHUP. The handler runs in the main thread at its next Python step; a
thread woken by the same signal (``signal.set_wakeup_fd``) does it instead if
the main thread has not within :data:`GRACE_S` (it is inside a C call).
A step that must not be cut in two (publishing: a rename) runs inside
:func:`critical`; a signal that arrives meanwhile is acted on when it ends,
and nothing is published once a signal has arrived.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator

#: The signals that end a command; status 128 + their number.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: How long the main thread has to act on a signal before the waiting thread does it instead.
GRACE_S = 2.0

_cleanups: dict[int, Callable[[], None]] = {}
_ids = itertools.count()
#: Held while stopping (never released: the process ends) and by :func:`critical`.
_lock = threading.Lock()
_state = {"received": None, "critical": 0, "deferred": None}


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal's number."""
    return 128 + int(signum)


def message(signum: int) -> str:
    """The one line on stderr."""
    return f"bitconvert: interrupted ({_name(signum)}): the unfinished work is not published, its temporary files are removed"


def received() -> int | None:
    """The first ending signal received since :func:`ending_on_signals` started, else None."""
    return _state["received"]


@contextlib.contextmanager
def on_stop(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run ``cleanup`` if a signal ends the process inside this block (from a signal handler: no locks, no waiting)."""
    key = next(_ids)
    _cleanups[key] = cleanup
    try:
        yield
    finally:
        _cleanups.pop(key, None)


def register(cleanup: Callable[[], None]) -> Callable[[], None]:
    """Like :func:`on_stop` for a resource that outlives a block; returns the function that unregisters it."""
    key = next(_ids)
    _cleanups[key] = cleanup
    return lambda: _cleanups.pop(key, None)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A step a signal must not cut in two (main thread). If a signal has already arrived, the process ends here."""
    if _state["received"] is not None:
        _stop(_state["received"])
    with _lock:
        _state["critical"] += 1
        try:
            yield
        finally:
            _state["critical"] -= 1
    if _state["deferred"] is not None:
        _stop(_state["deferred"])


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _stop(signum: int) -> None:
    """Clean up and end the process; never returns."""
    _state["received"] = _state["received"] or signum
    _lock.acquire()  # waits for a critical step of another thread; never released
    for key in sorted(_cleanups, reverse=True):
        cleanup = _cleanups.pop(key, None)
        if cleanup is None:
            continue
        try:
            cleanup()
        except BaseException:  # noqa: BLE001, S110 - the others must run, and the process ends anyway
            pass
    try:
        sys.stderr.write(message(signum) + "\n")
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001, S110 - a reentrant write or a closed stream: leave silently
        pass
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
    os._exit(exit_status(signum))


def _handler(signum, _frame) -> None:
    if _state["critical"] and threading.current_thread() is threading.main_thread():
        _state["deferred"] = _state["deferred"] or signum
        _state["received"] = _state["received"] or signum
        return
    _stop(signum)


def _watch(read_fd: int, grace: float) -> None:
    """Woken by the C-level handler: if the main thread has not ended the process after ``grace``, do it here."""
    while True:
        try:
            data = os.read(read_fd, 64)
        except OSError:
            return
        if not data:
            return  # uninstalled
        signum = next((s for s in data if s in {int(x) for x in SIGNALS}), None)
        if signum is None:
            continue
        _state["received"] = _state["received"] or signum
        ready, _, _ = select.select([read_fd], [], [], grace)
        if ready and not os.read(read_fd, 64):
            return  # uninstalled meanwhile
        _stop(_state["received"])


@contextlib.contextmanager
def ending_on_signals(grace: float = GRACE_S) -> Iterator[None]:
    """Inside the block, SIGINT, SIGTERM and SIGHUP end the process as the module says (main thread only)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read_fd, grace), name="bitconvert-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(write_fd)  # the watcher reads end-of-file and returns
        watcher.join(timeout=5)
        os.close(read_fd)


#: The longest a pause point waits for its signal before the export carries on.
PAUSE_LIMIT_S = 300.0


def pause_point(step: str) -> None:
    """A test seam: with ``BITCONVERT_TEST_PAUSE_AT=<step>:<file>`` (convert.config), create <file> and wait here.

    The test signals the process once <file> exists; the wait ends with the
    process (or after PAUSE_LIMIT_S). Without the variable this does nothing.
    """
    import time

    from .config import test_pause_at

    seam = test_pause_at()
    if seam is None or seam[0] != step:
        return
    seam[1].write_text(f"{step} {os.getpid()}\n")
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.02)
