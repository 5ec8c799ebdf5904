"""Download progress on stderr: a tqdm bar on a terminal, a few plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


class Progress:
    """A tqdm bar on a terminal, a few plain lines otherwise (every 10% or 5 s), nothing when quiet.

    With ``log`` (a callable taking one line), the plain lines go there instead of ``stream``.
    """

    def __init__(self, label: str, quiet: bool, stream=None, log: Callable[[str], None] | None = None):
        self.label, self.quiet, self.log = label, quiet, log
        self.stream = stream or sys.stderr
        self.tty = log is None and bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self.total = self.done = 0
        self._last_pct = -1
        self._last_time = 0.0

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self.log is not None:
            self.log(f"{self.label}: {message}")
        elif self._bar is not None:
            self._bar.write(f"{self.label}: {message}", file=self.stream)
        else:
            print(f"{self.label}: {message}", file=self.stream, flush=True)

    def start(self, total: int, initial: int) -> None:
        self.total, self.done = total, initial
        if self.quiet:
            return
        if self.tty:
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(
                    total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=self.label, file=self.stream
                )
            else:  # a new attempt: jump to its offset (reset() would flash 0% on a resume)
                self._bar.total, self._bar.n, self._bar.last_print_n = total, initial, initial
                self._bar.refresh()
            return
        self._last_pct = self._pct()
        self._last_time = time.monotonic()
        where = f"resuming at {mb(initial)} ({self._last_pct}%)" if initial else "starting"
        self.note(f"{where}, {mb(total)} in all")

    def _pct(self) -> int:
        return int(100 * self.done / self.total) if self.total else 100

    def update(self, n: int) -> None:
        self.done += n
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        pct, now = self._pct(), time.monotonic()
        if pct // 10 > self._last_pct // 10 or now - self._last_time >= 5.0:
            self._last_pct, self._last_time = pct, now
            self.note(f"{pct}% ({mb(self.done)} of {mb(self.total)})")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def mb(n: int) -> str:
    """Bytes as MB with one decimal, for messages."""
    return f"{n / 1e6:.1f} MB"
