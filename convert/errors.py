"""One exception hierarchy for bitconvert, each class with its own exit status.

The CLI turns any :class:`BitconvertError` into one line on stderr and its
``exit_code``; anything else is a bug and is reported as an internal error.

Exit statuses (also listed in ``bitconvert --help``):

====  ==========================================================
0     success
1     the input was checked and is bad: a damaged checkpoint, a
      parity failure, a file that failed verification
2     usage: unknown option, unknown model id (click's own code)
3     the registry (checkpoints.yaml) is malformed
4     download failed (network, HTTP error, retries exhausted)
5     offline mode and the file is not cached
6     local I/O failure: disk full, permission denied; ``DIR/<id>``
      holds something that is not an earlier bitconvert export
7     the JAX reference could not be computed: JAX cannot start
      (e.g. a bad ``JAX_PLATFORMS``), its worker process was killed
      or ran out of memory
70    internal error: a bug in bitconvert (``--debug`` shows the traceback)
129   ended by SIGHUP (the terminal closed): nothing published
130   interrupted (Ctrl-C, SIGINT): nothing published
143   ended by SIGTERM (``timeout``, ``docker stop``): nothing published
====  ==========================================================
"""

from __future__ import annotations

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_REGISTRY = 3
EXIT_DOWNLOAD = 4
EXIT_OFFLINE = 5
EXIT_IO = 6
EXIT_REFERENCE = 7
EXIT_INTERNAL = 70
EXIT_HANGUP = 129
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class BitconvertError(Exception):
    """Base class: a failure the user can act on. ``str(err)`` is one line."""

    exit_code = EXIT_BAD_INPUT


class UsageError(BitconvertError):
    """The command line asked for something that does not exist."""

    exit_code = EXIT_USAGE


class UnknownModelError(UsageError):
    """A model id that is not in the registry."""


class RegistryError(BitconvertError):
    """checkpoints.yaml is malformed or disagrees with the architecture."""

    exit_code = EXIT_REGISTRY


class CheckpointError(BitconvertError):
    """A checkpoint file is unreadable or does not fit its architecture.

    ``problems`` holds every individual finding; ``str()`` summarises them on
    one line.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class MappingError(BitconvertError):
    """The name mapping does not cover both sides exactly once."""

    exit_code = EXIT_BAD_INPUT


class ParityError(BitconvertError):
    """The converted model does not reproduce the reference forward pass."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class DownloadError(BitconvertError):
    """The network or the server failed us, after retries where they apply."""

    exit_code = EXIT_DOWNLOAD


class VerificationError(BitconvertError):
    """Downloaded bytes do not match the expected size or hashes."""

    exit_code = EXIT_BAD_INPUT


class OfflineError(BitconvertError):
    """Offline mode was requested and the file is not in the cache."""

    exit_code = EXIT_OFFLINE


class LocalIOError(BitconvertError):
    """Writing or reading a local file failed (disk full, permissions)."""

    exit_code = EXIT_IO


class LabelsError(BitconvertError):
    """A label file does not fit its head (line count != classes, empty names)."""

    exit_code = EXIT_BAD_INPUT


class ImageError(BitconvertError):
    """An input image is missing, unreadable, too large, or not a JPEG/PNG/WebP/GIF/BMP."""

    exit_code = EXIT_BAD_INPUT


class ExportError(BitconvertError):
    """Writing an export failed, or an export on disk is damaged (a missing or unloadable artifact)."""

    exit_code = EXIT_BAD_INPUT


class JaxReferenceError(BitconvertError):
    """The JAX reference could not be computed: JAX failed to start, or its worker was killed or ran out of memory."""

    exit_code = EXIT_REFERENCE


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (whitespace collapsed), cut at ``limit`` characters: for error lines."""
    return " ".join(str(exc).split())[:limit]
