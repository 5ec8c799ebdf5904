"""Native log lines of TensorFlow, JAX and LiteRT, kept off stderr while the chatty step runs.

The frameworks' C++ code writes to file descriptor 2 whatever ``TF_CPP_MIN_LOG_LEVEL``
says at some moments: TensorFlow's import (glog lines, absl's pre-init notice, the
CPU-feature notice) and LiteRT's first interpreter (``INFO: Created TensorFlow Lite
XNNPACK delegate for CPU.``, from its minimal logger, which reads no environment
variable). :func:`native_stderr_filtered` sends descriptor 2 to a temporary file for
the duration of such a step, then passes on every line that is not one of those, so
a genuine warning or error still shows. ``convert.cli.quiet`` wraps the frameworks'
imports with it; the LiteRT runners wrap the interpreter's creation.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

#: What the frameworks' native code prints on its own: glog/absl lines
#: (``I0000 00:00:1796117757.542140   11573 port.cc:153] ...``), absl's pre-init
#: notice, the second line of TF's CPU-feature notice, and LiteRT's XNNPACK INFO line.
NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)"
)


def keep_lines(data: bytes) -> bytes:
    """``data`` without its native log lines."""
    return b"".join(line for line in data.splitlines(keepends=True) if not NATIVE_LINE.match(line))


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the duration; then pass on what is not native chatter."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = keep_lines(capture.read())
            if kept:
                os.write(2, kept)
