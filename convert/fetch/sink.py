"""Where the body goes: a work file appended to while its bytes are hashed and written back in the background.

    with Sink(path, offset, server_hashes=("crc32c",)) as sink:   # re-hashes the first offset bytes
        sink.write(chunk) ...
        digests = sink.finish()                                   # fsynced; Digests(sha256=..., crc32c=...)

sha256 is always computed (pins and records cite it); crc32c or md5 only
when asked (the transfer asks for the one it will check). Writing, sha256
(and md5) run in their own threads (os.write and hashlib release the GIL),
so receiving, writing and hashing overlap; crc32c (C, several GB/s) runs
inline (figures: docs/fetch.md).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import LocalIOError

#: Bytes asked of the socket per read, and hashed per update when re-reading a file. 1 MiB, not more:
#: larger chunks overflow the CPU caches on their way to the page cache (docs/fetch.md).
CHUNK_SIZE = 1 << 20
#: Start writeback of this many new bytes in the background, so the final fsync has little left to do.
FLUSH_EVERY = 64 << 20
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
#: The hashes the server may state (x-goog-hash), besides sha256 which is always computed.
SERVER_HASHES = ("crc32c", "md5")


def local_io_error(exc: OSError, path: Path) -> LocalIOError:
    """One line for a failed write: a full disk (or file size limit) says so and what to do."""
    if exc.errno in _DISK_FULL:
        return LocalIOError(f"disk full (or file size limit reached) writing {path}: {exc.strerror}; free space and re-run")
    return LocalIOError(f"cannot write {path}: {exc.strerror or exc}")


@dataclass(frozen=True)
class Digests:
    """``sha256`` as hex; ``crc32c`` and ``md5`` as base64 (x-goog-hash form), None when not computed."""

    sha256: str
    crc32c: str | None = None
    md5: str | None = None


class _ChunkThread:
    """A thread that consumes the chunks put to it, in order, from a bounded queue."""

    def __init__(self, name: str, consume: Callable[[bytes], None]):
        self._consume = consume
        self._queue: queue.Queue = queue.Queue(maxsize=16)  # at most 16 chunks in flight: memory stays flat
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._consume(chunk)

    def put(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def stop(self) -> None:
        """Consume what is queued, then end the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class _HashThread(_ChunkThread):
    """One hash in its own thread (hashlib releases the GIL on large updates)."""

    def __init__(self, hasher):
        self.hasher = hasher
        super().__init__(f"hash-{hasher.name}", hasher.update)


class Hashes:
    """sha256, plus the server hashes named in ``server_hashes``, fed as the bytes stream in."""

    def __init__(self, server_hashes: tuple[str, ...] = ()):
        unknown = set(server_hashes) - set(SERVER_HASHES)
        if unknown:
            raise ValueError(f"unknown hashes {sorted(unknown)}")
        self._crc = _crc32c() if "crc32c" in server_hashes else None
        self._threads = {"sha256": _HashThread(hashlib.sha256())}
        if "md5" in server_hashes:
            self._threads["md5"] = _HashThread(hashlib.md5())

    def update(self, chunk: bytes) -> None:
        for t in self._threads.values():
            t.put(chunk)
        if self._crc is not None:
            self._crc.update(chunk)

    def stop(self) -> None:
        """Stop the threads (idempotent); needed after an error, done by :meth:`finish` otherwise."""
        for t in self._threads.values():
            t.stop()

    def finish(self) -> Digests:
        """Wait for the threads to take in every chunk and return the digests."""
        self.stop()
        md5 = self._threads.get("md5")
        return Digests(
            sha256=self._threads["sha256"].hasher.hexdigest(),
            crc32c=None if self._crc is None else base64.b64encode(self._crc.digest()).decode(),
            md5=None if md5 is None else base64.b64encode(md5.hasher.digest()).decode(),
        )


def _crc32c():
    import google_crc32c

    if google_crc32c.implementation != "c":  # the pure-Python fallback is hundreds of times slower (docs/performance.md)
        print("bitconvert: warning: google-crc32c has no C extension here; verification will be slow", file=sys.stderr)
    return google_crc32c.Checksum()


class _Flusher:
    """fdatasync in a background thread every few dozen MB, so the final fsync is short."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = 0
        self.error: OSError | None = None
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="flush")
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self.error = exc
                return

    def wrote(self, n: int) -> None:
        self.pending += n
        if self.pending >= FLUSH_EVERY:
            self.pending = 0
            self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()


class _Writer(_ChunkThread):
    """``os.write`` in its own thread, so that receiving, writing and hashing overlap."""

    def __init__(self, fd: int, flusher: _Flusher):
        self.fd, self.flusher = fd, flusher
        self.error: OSError | None = None
        super().__init__("write", self._write)

    def _write(self, chunk: bytes) -> None:
        if self.error is not None:
            return  # keep draining after a failure, so that put() never blocks
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self.error = exc
            return
        self.flusher.wrote(len(chunk))

    def put(self, chunk: bytes) -> None:
        if self.error is not None:
            raise self.error
        super().put(chunk)


class Sink:
    """The work file at ``path``, kept from byte ``offset`` on (its first bytes are hashed again), appended to.

    Three threads share the work besides the caller's (which receives and
    runs crc32c): one writes, one computes sha256 (and md5 when asked), one
    starts the writeback every few dozen MB.
    """

    def __init__(self, path: Path, offset: int, server_hashes: tuple[str, ...] = ()):
        self.path = path
        self.received = offset
        self._hashes = Hashes(server_hashes)
        self._flusher: _Flusher | None = None
        self._writer: _Writer | None = None
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._hashes.stop()
            raise local_io_error(exc, path) from exc
        try:
            self._hash_prefix(offset)
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            self.close()
            raise local_io_error(exc, path) from exc
        except BaseException:
            self.close()
            raise
        self._flusher = _Flusher(self._fd)
        self._writer = _Writer(self._fd, self._flusher)

    def _hash_prefix(self, offset: int) -> None:
        """Feed the bytes already on disk to the hashes (a resume)."""
        done = 0
        while done < offset:
            try:
                chunk = os.pread(self._fd, min(CHUNK_SIZE, offset - done), done)
            except OSError as exc:
                raise LocalIOError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
            if not chunk:
                raise LocalIOError(f"{self.path} shrank while resuming")
            self._hashes.update(chunk)
            done += len(chunk)

    def write(self, chunk: bytes) -> None:
        """Queue ``chunk`` for writing and hashing; a failed earlier write raises here."""
        try:
            self._writer.put(chunk)
        except OSError as exc:
            raise local_io_error(exc, self.path) from exc
        self._hashes.update(chunk)
        self.received += len(chunk)

    def finish(self) -> Digests:
        """Write what is queued, stop the background writeback, fsync the file; the digests of all its bytes."""
        writer, self._writer = self._writer, None
        flusher, self._flusher = self._flusher, None
        writer.stop()
        flusher.stop()
        try:
            for error in (writer.error, flusher.error):
                if error is not None:
                    raise error
            os.fsync(self._fd)
        except OSError as exc:
            raise local_io_error(exc, self.path) from exc
        return self._hashes.finish()

    def close(self) -> None:
        """Release the file and the threads (after :meth:`finish`, or instead of it after an error)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        if self._flusher is not None:
            self._flusher.stop()
            self._flusher = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._hashes.stop()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed; an unreadable file is a LocalIOError."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                h.update(chunk)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return h.hexdigest()
