"""Download official checkpoints into a local cache, verified and resumable.

The cache mirrors the bucket: ``<cache>/<source>`` for ``<base URL>/<source>``.
Beside each checkpoint live

- ``<name>.verified.json``: the record of a verified file (sha256, the
  server's hashes, keyed by size and mtime) so a cached file is trusted
  without a network request and export manifests can cite its sha256;
- ``<name>.lock``: the lock that lets one process download while others wait;
- while a download is incomplete, ``<name>.part`` and ``<name>.part.json``:
  the bytes so far and the identity (size, ETag, generation, hashes) of the
  object they belong to, so a resume (``Range`` + ``If-Match``) never
  splices bytes of two different objects.

Nothing unverified ever reaches the final path: a complete ``.part`` is
renamed to a process-unique temporary name, its hashes (computed while the
bytes streamed in) are checked, it is fsynced and renamed over the final path.
An older good file stays until then. Facts behind each rule are in
shared/reference/download-facts.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import errno
import hashlib
import json
import os
import queue
import random
import select
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..errors import BitconvertError, DownloadError, LocalIOError, OfflineError, UsageError, VerificationError
from ..fsutil import fsync_dir
from ..registry import ModelEntry

DEFAULT_BASE_URL = "https://storage.googleapis.com/bit_models/"
BASE_URL_ENV = "BITCONVERT_BASE_URL"
CACHE_ENV = "BITCONVERT_CACHE"
OFFLINE_ENV = "BITCONVERT_OFFLINE"

#: Bytes asked of the socket per read, and hashed per update when re-reading a file. 1 MiB, not more:
#: copying 4 MiB chunks into the page cache measured 2-3x slower here (they overflow the CPU caches).
CHUNK_SIZE = 1 << 20
#: Start writeback of this many new bytes in the background, so the final fsync has little left to do.
_FLUSH_EVERY = 64 << 20
_RECORD_SUFFIX = ".verified.json"
_PART_SUFFIX = ".part"
_TMP_SUFFIX = ".tmp"
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


# --------------------------------------------------------------------------- where things live


def default_cache_dir() -> Path:
    """``$BITCONVERT_CACHE``, else ``$XDG_CACHE_HOME/bitconvert``, else ``~/.cache/bitconvert``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "bitconvert"


def _base_url(base_url: str | None) -> str:
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return base if base.endswith("/") else base + "/"


def source_url(entry: ModelEntry, base_url: str | None = None) -> str:
    """The URL of ``entry``'s checkpoint under ``base_url`` (default: env, then the BiT bucket)."""
    return _base_url(base_url) + quote(entry.source)


def cache_path(entry: ModelEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``entry``'s checkpoint lives in the cache: its path under the base URL, mirrored."""
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return root.joinpath(*entry.source.split("/"))


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _offline_from_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Tests shrink the numbers and inject ``sleep``."""

    connect_timeout: float = 15.0
    #: Longest silence tolerated while reading; a slow but moving body is never cut.
    read_timeout: float = 60.0
    #: Consecutive failed requests (that made no progress) before giving up.
    attempts: int = 6
    #: Requests in all, progress or not.
    max_requests: int = 40
    #: No new request starts after this many seconds.
    deadline: float = 3600.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    #: A server's Retry-After is honoured up to this many seconds.
    retry_after_max: float = 120.0
    #: How long to wait for another process that holds the download lock.
    lock_timeout: float = 1800.0
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random

    def delay(self, failures: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (between half and all of it); Retry-After wins, capped."""
        backoff = min(self.backoff_max, self.backoff_base * 2 ** max(failures - 1, 0))
        delay = backoff * (0.5 + 0.5 * self.jitter())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        return delay


DEFAULT_POLICY = RetryPolicy()


# --------------------------------------------------------------------------- object identity and hashes


@dataclass(frozen=True)
class ObjectIdentity:
    """What the server said about the object: a partial file is bound to it."""

    url: str
    size: int
    etag: str | None = None
    generation: str | None = None
    crc32c: str | None = None  # base64, as in x-goog-hash
    md5: str | None = None  # base64

    def same_object(self, other: ObjectIdentity) -> bool:
        """False when any identifier both sides know differs."""
        pairs = [
            (self.size, other.size),
            (self.etag, other.etag),
            (self.generation, other.generation),
            (self.crc32c, other.crc32c),
            (self.md5, other.md5),
        ]
        return all(a == b for a, b in pairs if a is not None and b is not None)


_DIGEST_SIZES = {"crc32c": 4, "md5": 16}


def parse_goog_hash(value: str | None) -> dict[str, str]:
    """``{"crc32c": b64, "md5": b64}`` from an ``x-goog-hash`` header (lines joined by ",").

    Unknown algorithms are ignored; a malformed entry or two different values
    for one algorithm raise :class:`DownloadError`.
    """
    hashes: dict[str, str] = {}
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, digest = item.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise DownloadError(f"malformed x-goog-hash entry {item!r}")
        if name not in _DIGEST_SIZES:
            continue
        digest = digest.strip()
        try:
            raw = base64.b64decode(digest, validate=True)
        except (binascii.Error, ValueError):
            raise DownloadError(f"malformed x-goog-hash {name} value {digest!r} (not base64)") from None
        if len(raw) != _DIGEST_SIZES[name]:
            raise DownloadError(
                f"malformed x-goog-hash {name} value {digest!r} ({len(raw)} bytes, expected {_DIGEST_SIZES[name]})"
            )
        if name in hashes and hashes[name] != digest:
            raise DownloadError(f"conflicting x-goog-hash {name} values {hashes[name]!r} and {digest!r}")
        hashes[name] = digest
    return hashes


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _HashThread:
    """One hash fed from a bounded queue in its own thread (hashlib releases the GIL)."""

    def __init__(self, hasher):
        self.hasher = hasher
        self._queue: queue.Queue = queue.Queue(maxsize=16)  # at most 16 chunks in flight: memory stays flat
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"hash-{hasher.name}")
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self.hasher.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self):
        self._queue.put(None)
        self._thread.join()
        return self.hasher


class _Hashes:
    """sha256 always, crc32c and md5 when the server gave them: all fed as bytes stream in.

    md5 (about 0.6 GB/s) and sha256 run in threads so that hashing overlaps
    the network and the disk; crc32c (C, several GB/s) runs inline.
    """

    def __init__(self, crc32c: bool, md5: bool):
        import google_crc32c

        if google_crc32c.implementation != "c":  # the pure-Python fallback runs at ~8 MB/s
            print("bitconvert: warning: google-crc32c has no C extension here; verification will be slow", file=sys.stderr)
        self._crc = google_crc32c.Checksum() if crc32c else None
        self._threads = {"sha256": _HashThread(hashlib.sha256())}
        if md5:
            self._threads["md5"] = _HashThread(hashlib.md5())
        self._done: dict[str, str] | None = None

    def update(self, chunk: bytes) -> None:
        for t in self._threads.values():
            t.update(chunk)
        if self._crc is not None:
            self._crc.update(chunk)

    def digests(self) -> dict[str, str]:
        """``sha256`` as hex, ``crc32c`` and ``md5`` as base64 (x-goog-hash form)."""
        if self._done is None:
            out = {}
            for name, t in self._threads.items():
                h = t.finish()
                out[name] = h.hexdigest() if name == "sha256" else base64.b64encode(h.digest()).decode()
            if self._crc is not None:
                out["crc32c"] = base64.b64encode(self._crc.digest()).decode()
            self._done = out
        return self._done

    def close(self) -> None:
        """Stop the threads (after an error); harmless after :meth:`digests`."""
        if self._done is None:
            self.digests()


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


# --------------------------------------------------------------------------- the verified-file record


def _record_path(path: Path) -> Path:
    return _sibling(path, _RECORD_SUFFIX)


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        return None
    return rec


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
    try:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _local_io_error(exc, path) from exc


def _stat_key(st: os.stat_result) -> dict:
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _key_matches(rec: dict, st: os.stat_result) -> bool:
    return rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns


def recorded_sha256(path: str | os.PathLike) -> str:
    """The sha256 (hex) of ``path``, from its record when the record still fits the file.

    A record whose size and mtime no longer match is recomputed; when the file
    still has the verified content the record is refreshed, otherwise it is
    rewritten as unverified (so a changed file is never trusted as fetched).
    Files without a record (not fetched by bitconvert) are hashed and left alone.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from exc
    rec = _read_record(path)
    if rec is not None and _key_matches(rec, st):
        return rec["sha256"]
    sha = sha256_file(path)
    if rec is not None:
        still_good = bool(rec.get("verified")) and rec["sha256"] == sha
        rec.update(_stat_key(st), sha256=sha, verified=still_good)
        with contextlib.suppress(BitconvertError):
            _write_json_atomic(_record_path(path), rec)
    return sha


def _cached_and_verified(target: Path, entry: ModelEntry) -> bool:
    """True when ``target`` holds the verified checkpoint; reads it only if its record is stale or absent."""
    try:
        st = target.stat()
    except OSError:
        return False
    rec = _read_record(target)
    if rec is not None and rec.get("verified") and rec.get("size") == st.st_size:
        sha = rec["sha256"] if _key_matches(rec, st) else recorded_sha256(target)
        return sha == rec["sha256"] and (entry.sha256 is None or sha == entry.sha256)
    if entry.sha256 is not None and sha256_file(target) == entry.sha256:
        _write_json_atomic(_record_path(target), {**_stat_key(st), "sha256": entry.sha256, "verified": True, "pinned": True})
        return True
    return False


# --------------------------------------------------------------------------- progress on stderr


class _Progress:
    """A tqdm bar on a terminal, a few plain lines otherwise (every 10% or 5 s), nothing when quiet."""

    def __init__(self, label: str, quiet: bool, stream=None):
        self.label, self.quiet = label, quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        self.total = self.done = 0
        self._last_pct = -1
        self._last_time = 0.0

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
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
        where = f"resuming at {_mb(initial)} ({self._last_pct}%)" if initial else "starting"
        self.note(f"{where}, {_mb(total)} in all")

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
            self.note(f"{pct}% ({_mb(self.done)} of {_mb(self.total)})")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------- errors


class _Retry(Exception):
    """A failure worth another request: the network, a 5xx/429, bytes that failed verification."""

    def __init__(self, message: str, *, retry_after: float | None = None, immediate: bool = False, error=None):
        super().__init__(message)
        self.retry_after = retry_after
        #: A clean restart (the partial was discarded): no backoff needed.
        self.immediate = immediate
        #: What to raise once the budget is spent (default: a DownloadError).
        self.error: BitconvertError | None = error


def _local_io_error(exc: OSError, path: Path) -> LocalIOError:
    if exc.errno in _DISK_FULL:
        return LocalIOError(f"disk full (or file size limit reached) writing {path}: {exc.strerror}; free space and re-run")
    return LocalIOError(f"cannot write {path}: {exc.strerror or exc}")


def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


# --------------------------------------------------------------------------- one download


class _Partial:
    """The bytes downloaded so far and the identity of the object they belong to."""

    def __init__(self, path: Path, resumable: bool):
        self.path = path
        self.meta = _sibling(path, ".json")
        self.resumable = resumable

    def load(self) -> tuple[ObjectIdentity | None, int]:
        """(identity, bytes on disk) of a partial worth resuming, else (None, 0) after discarding it."""
        if not self.resumable:
            return None, 0
        try:
            ident = ObjectIdentity(**json.loads(self.meta.read_text(encoding="utf-8")))
            size = self.path.stat().st_size
        except (OSError, ValueError, TypeError):
            self.discard()
            return None, 0
        if size > ident.size or not (ident.etag or ident.generation):
            self.discard()  # a stale partial larger than the object, or nothing to pin a resume to
            return None, 0
        return ident, size

    def bind(self, ident: ObjectIdentity) -> None:
        if self.resumable:
            _write_json_atomic(self.meta, asdict(ident))

    def discard(self) -> None:
        for p in (self.path, self.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


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
        if self.pending >= _FLUSH_EVERY:
            self.pending = 0
            self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()


def _write_all(fd: int, data: bytes, path: Path) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _local_io_error(exc, path) from exc


@dataclass
class _Transfer:
    """Downloads one object into a work file until it verifies, within the retry budget."""

    entry: ModelEntry
    url: str
    work: _Partial
    session: object
    policy: RetryPolicy
    progress: _Progress
    verify_hashes: bool
    requests_made: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    identity: ObjectIdentity | None = None

    def run(self) -> None:
        """Attempt until the work file holds the verified object; raise once the budget is spent."""
        failures, started = 0, time.monotonic()
        while True:
            before = self._work_size()
            try:
                self._attempt()
                return
            except _Retry as retry:
                failures = 0 if self._work_size() > before else failures + 1  # progress resets the count
                self._give_up_if_spent(retry, failures, time.monotonic() - started)
                delay = 0.0 if retry.immediate else self.policy.delay(failures, retry.retry_after)
                self.progress.note(f"{retry}; retrying" + (f" in {delay:.1f} s" if delay else ""))
                if delay:
                    self.policy.sleep(delay)

    def _give_up_if_spent(self, retry: _Retry, failures: int, elapsed: float) -> None:
        p = self.policy
        if failures < p.attempts and self.requests_made < p.max_requests and elapsed < p.deadline:
            return
        spent = f"gave up after {self.requests_made} request(s) in {elapsed:.0f} s"
        if retry.error is not None:
            raise type(retry.error)(f"{retry.error} ({spent})") from None
        raise DownloadError(f"{self.url}: {retry} ({spent})") from None

    def _work_size(self) -> int:
        try:
            return self.work.path.stat().st_size
        except OSError:
            return 0

    def _attempt(self) -> None:
        ident, offset = self.work.load()
        if ident is not None and offset == ident.size:  # complete but never verified (killed while verifying)
            self.identity = ident
            self._receive(None, ident, offset)
            return
        headers = {"Accept-Encoding": "identity"}
        if ident is not None and offset:
            headers["Range"] = f"bytes={offset}-"
            if ident.etag:
                headers["If-Match"] = ident.etag
        self.requests_made += 1
        try:
            resp = self.session.get(
                self.url,
                headers=headers,
                stream=True,
                allow_redirects=True,
                timeout=(self.policy.connect_timeout, self.policy.read_timeout),
            )
        except _network_errors() as exc:
            raise _Retry(f"request failed: {_short(exc)}") from None
        with contextlib.closing(resp):
            ident, offset = self._check_response(resp, ident, offset)
            self.identity = ident
            self._receive(resp, ident, offset)

    def _check_response(self, resp, ident: ObjectIdentity | None, offset: int) -> tuple[ObjectIdentity, int]:
        """The identity and offset to receive the body at, or an exception that says why not."""
        _check_status(resp, resumed=bool(offset))
        if offset and resp.status_code in (412, 416):
            self.work.discard()
            what = "changed on the server" if resp.status_code == 412 else "smaller than the partial download"
            raise _Retry(f"HTTP {resp.status_code}: the object {what}; discarded the partial, restarting from 0", immediate=True)
        _check_encoding(resp)
        if resp.status_code == 206:
            self._check_resume(resp, ident, offset)
            return ident, offset
        if offset:
            self.progress.note("the server ignored Range and sent the whole object; restarting from 0")
        fresh = _identity_from(resp)
        self._require_verifiable(fresh)
        self.work.discard()
        self.work.bind(fresh)
        return fresh, 0

    def _check_resume(self, resp, ident: ObjectIdentity, offset: int) -> None:
        """A 206 must continue the very object the partial belongs to, at the very offset."""
        start, total = _content_range(resp.headers.get("Content-Range"))
        hashes = parse_goog_hash(resp.headers.get("x-goog-hash"))
        now = ObjectIdentity(
            url=ident.url,
            size=total if total is not None else ident.size,
            etag=resp.headers.get("ETag"),
            generation=resp.headers.get("x-goog-generation"),
            crc32c=hashes.get("crc32c"),
            md5=hashes.get("md5"),
        )
        if start != offset or total != ident.size or not now.same_object(ident):
            self.work.discard()
            got = resp.headers.get("Content-Range")
            raise _Retry(
                f"resume answered Content-Range {got!r}, ETag {now.etag} for bytes {offset}- of {ident.etag}; discarded the partial, restarting from 0",
                immediate=True,
            )

    def _require_verifiable(self, ident: ObjectIdentity) -> None:
        if ident.crc32c or ident.md5 or self.entry.sha256 or not self.verify_hashes:
            return
        raise VerificationError(
            f"{ident.url} sent no x-goog-hash and the registry pins no sha256 for {self.entry.id}: cannot verify it; "
            "add its sha256 to checkpoints.yaml, or pass --allow-unverified to accept it by size only"
        )

    def _receive(self, resp, ident: ObjectIdentity, offset: int) -> None:
        """Append the body to the work file while hashing; verify; fsync."""
        hashes = _Hashes(crc32c=ident.crc32c is not None, md5=ident.md5 is not None)
        try:
            fd = os.open(self.work.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            hashes.close()
            raise _local_io_error(exc, self.work.path) from exc
        flusher = None
        try:
            _hash_prefix(fd, offset, hashes, self.work.path)
            self.progress.start(ident.size, offset)
            try:
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
            except OSError as exc:
                raise _local_io_error(exc, self.work.path) from exc
            flusher = _Flusher(fd)
            received = offset if resp is None else self._stream_body(resp, fd, offset, ident, hashes, flusher)
            flusher.stop()
            if flusher.error is not None:
                raise _local_io_error(flusher.error, self.work.path)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _local_io_error(exc, self.work.path) from exc
        finally:
            if flusher is not None:
                flusher.stop()
            os.close(fd)
            hashes.close()
        self.digests = hashes.digests()
        self._verify(ident, received)

    def _stream_body(self, resp, fd: int, offset: int, ident: ObjectIdentity, hashes: _Hashes, flusher: _Flusher) -> int:
        watch = _socket_watch(resp)
        try:
            return self._copy_body(resp, fd, offset, ident, hashes, flusher, watch)
        finally:
            if watch is not None:
                watch.close()

    def _copy_body(self, resp, fd, offset, ident, hashes, flusher, watch) -> int:
        received = offset
        read = resp.raw.read1
        errors = _network_errors()
        while True:
            try:
                chunk = read(CHUNK_SIZE, decode_content=False)
            except errors as exc:
                raise _Retry(f"connection failed after {_mb(received)}: {_short(exc)}") from None
            if not chunk:
                break
            if received + len(chunk) > ident.size:
                self.work.discard()
                raise _Retry(f"body longer than the object's {ident.size} bytes; discarded")
            _write_all(fd, chunk, self.work.path)
            hashes.update(chunk)
            flusher.wrote(len(chunk))
            received += len(chunk)
            self.progress.update(len(chunk))
        if received < ident.size:
            raise _Retry(f"body ended early at {received} of {ident.size} bytes")
        if _trailing_bytes(watch):
            self.work.discard()
            raise _Retry("body longer than its Content-Length; discarded")
        return received

    def _verify(self, ident: ObjectIdentity, received: int) -> None:
        problems = []
        if received != ident.size:
            problems.append(f"size expected {ident.size}, got {received}")
        for name in ("crc32c", "md5"):
            expected = getattr(ident, name)
            if expected is not None and self.digests[name] != expected:
                problems.append(f"{name} expected {expected}, got {self.digests[name]}")
        if self.entry.sha256 is not None and self.digests["sha256"] != self.entry.sha256:
            problems.append(f"sha256 expected {self.entry.sha256} (registry), got {self.digests['sha256']}")
        if problems:
            self.work.discard()
            message = f"{ident.url}: downloaded bytes fail verification: {'; '.join(problems)}"
            raise _Retry("verification failed: " + "; ".join(problems), error=VerificationError(message))


def _check_status(resp, resumed: bool) -> None:
    """Retry 429 and 5xx; fail on any other status but 200, 206 (to a Range) and 412/416 (to a resume)."""
    status = resp.status_code
    if status == 429 or status >= 500:
        raise _Retry(f"HTTP {status} {resp.reason}", retry_after=_parse_retry_after(resp.headers.get("Retry-After")))
    expected = (200, 206, 412, 416) if resumed else (200,)
    if status in expected:
        return
    hint = {404: " (no such object: check the model id and --base-url)", 403: " (access denied)"}.get(status, "")
    raise DownloadError(f"HTTP {status} {resp.reason} for {resp.url}{hint}")


def _check_encoding(resp) -> None:
    """Refuse bytes that are not the stored object verbatim (they could never match its hashes)."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(f"{resp.url} came with Content-Encoding: {encoding} though identity was asked; refusing to store it")
    stored = resp.headers.get("x-goog-stored-content-encoding", "identity").strip().lower()
    if stored not in ("", "identity"):
        raise DownloadError(f"{resp.url} is stored {stored}-encoded; its hashes would not match the bytes served")


def _hash_prefix(fd: int, offset: int, hashes: _Hashes, path: Path) -> None:
    """Feed the bytes already on disk to the hashes (a resume)."""
    done = 0
    try:
        while done < offset:
            chunk = os.pread(fd, min(CHUNK_SIZE, offset - done), done)
            if not chunk:
                raise LocalIOError(f"{path} shrank while resuming")
            hashes.update(chunk)
            done += len(chunk)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _identity_from(resp) -> ObjectIdentity:
    h = resp.headers
    hashes = parse_goog_hash(h.get("x-goog-hash"))
    length, stored = h.get("Content-Length"), h.get("x-goog-stored-content-length")
    if length is None or not length.strip().isdigit():
        raise DownloadError(f"{resp.url} sent no usable Content-Length ({length!r})")
    if stored is not None and stored.strip() != length.strip():
        raise DownloadError(f"{resp.url}: Content-Length {length} disagrees with x-goog-stored-content-length {stored}")
    return ObjectIdentity(
        url=resp.url,
        size=int(length),
        etag=h.get("ETag"),
        generation=h.get("x-goog-generation"),
        crc32c=hashes.get("crc32c"),
        md5=hashes.get("md5"),
    )


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of ``bytes start-end/total``; (None, None) when absent or malformed."""
    try:
        unit, _, rest = (value or "").partition(" ")
        span, _, total = rest.partition("/")
        start = span.partition("-")[0]
        if unit != "bytes":
            return None, None
        return int(start), int(total)
    except ValueError:
        return None, None


def _socket_watch(resp) -> socket.socket | None:
    """A duplicate of the response's socket, to look for bytes past the body once it is read.

    http.client closes its own file object (and, with ``Connection: close``,
    the socket) as soon as Content-Length bytes are read, so the socket is
    duplicated first. Reaching it needs urllib3/http.client internals; when
    they move, the check is skipped (the hashes still guard the bytes).
    """
    raw = resp.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None), "_sock", None)
    try:
        return socket.socket(fileno=os.dup(sock.fileno()))
    except (AttributeError, OSError, ValueError):
        return None


def _trailing_bytes(watch: socket.socket | None) -> bool:
    """True when bytes follow the body on the socket (a body longer than its Content-Length).

    Bytes that arrive with the headers of a tiny body sit in http.client's
    buffer and go unseen; checkpoints are far larger than that buffer.
    """
    if watch is None:
        return False
    try:
        readable, _, _ = select.select([watch], [], [], 0.02)
        if readable and watch.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
            watch.shutdown(socket.SHUT_RDWR)  # the connection is poisoned: never reuse it
            return True
    except OSError:
        pass
    return False


def _short(exc: BaseException) -> str:
    """One readable line for a network exception (urllib3 wraps the message in a tuple of args)."""
    first = exc.args[0] if exc.args else None
    while isinstance(first, BaseException) and first.args:
        first = first.args[0]
    text = first if isinstance(first, str) and first else (str(exc) or type(exc).__name__)
    text = text.splitlines()[0]
    return text if len(text) < 200 else text[:197] + "..."


# --------------------------------------------------------------------------- the cache entry: lock, finish


@contextlib.contextmanager
def _target_lock(target: Path, timeout: float, progress: _Progress) -> Iterator[bool]:
    """Hold the lock beside ``target``; yields False (and no lock) if it stays busy past ``timeout``.

    The lock only avoids duplicate downloads: correctness comes from the
    process-unique temporary file and the atomic rename, so a lock that cannot
    be had (a soft lock left by a crash on a filesystem without flock) costs a
    second download, never a wrong file. flock locks die with their process.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(_sibling(target, ".lock")), timeout=timeout)
    try:
        try:
            lock.acquire(blocking=False)
        except Timeout:
            progress.note(f"waiting for another process downloading {target.name} (lock {lock.lock_file})")
            lock.acquire(timeout=timeout)
    except Timeout:
        progress.note(f"the lock is still busy after {timeout:.0f} s; downloading without it into a private file")
        yield False
        return
    except OSError as exc:
        raise _local_io_error(exc, Path(lock.lock_file)) from exc
    try:
        yield True
    finally:
        lock.release()


def _unique_temp(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")


def _remove_dead_temps(target: Path) -> None:
    """Delete temporary candidates left by processes that no longer exist (a kill between renames)."""
    for p in target.parent.glob(f".{target.name}.*{_TMP_SUFFIX}"):
        parts = p.name.split(".")
        pid = parts[-3] if len(parts) >= 4 else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                p.unlink()
        except PermissionError:
            pass


def _install(transfer: _Transfer, target: Path) -> None:
    """Move the verified work file to ``target`` atomically, with its record."""
    candidate = _unique_temp(target)
    try:
        os.replace(transfer.work.path, candidate)
        with contextlib.suppress(FileNotFoundError):
            transfer.work.meta.unlink()
        st = candidate.stat()
        ident = transfer.identity
        record = {
            **_stat_key(st),
            "sha256": transfer.digests["sha256"],
            "verified": True,
            "url": ident.url,
            "etag": ident.etag,
            "generation": ident.generation,
            "crc32c": ident.crc32c,
            "md5": ident.md5,
            "pinned": transfer.entry.sha256 is not None,
        }
        _write_json_atomic(_record_path(target), record)
        os.replace(candidate, target)
        with contextlib.suppress(OSError):  # durability only: the rename itself has happened
            fsync_dir(target.parent)
    except OSError as exc:
        raise _local_io_error(exc, target) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def _session():
    import requests

    from .. import __version__

    session = requests.Session()  # trust_env stays on: proxies and CA bundles from the environment
    session.headers["User-Agent"] = f"bitconvert/{__version__}"
    return session


# --------------------------------------------------------------------------- public entry points


def fetch_checkpoint(
    entry: ModelEntry,
    *,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    offline: bool = False,
    force: bool = False,
    quiet: bool = False,
    verify_hashes: bool = True,
    policy: RetryPolicy | None = None,
) -> Path:
    """Make sure ``entry``'s checkpoint is in the cache, verified, and return its path.

    A cached file with a valid record costs no network request. ``offline``
    (or ``BITCONVERT_OFFLINE=1``) never touches the network. ``force``
    downloads again; the old file stays until the new one verifies.
    ``verify_hashes=False`` accepts a file that can be checked by size only
    (no x-goog-hash and no pinned sha256); otherwise such a file is refused.
    """
    policy = policy or DEFAULT_POLICY
    target = cache_path(entry, cache_dir)
    progress = _Progress(entry.id, quiet)
    if not force and _cached_and_verified(target, entry):
        return target
    if offline or _offline_from_env():
        state = "is cached but not verified" if target.exists() else "is not cached"
        raise OfflineError(f"{entry.id}: offline mode and {target} {state}; run `bitconvert fetch {entry.id}` online first")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _local_io_error(exc, target.parent) from exc
    with _target_lock(target, policy.lock_timeout, progress) as locked:
        if locked and not force and _cached_and_verified(target, entry):
            return target  # another process fetched it while we waited
        if locked:
            _remove_dead_temps(target)
        work = _Partial(_sibling(target, _PART_SUFFIX) if locked else _unique_temp(target), resumable=locked)
        transfer = _Transfer(entry, source_url(entry, base_url), work, _session(), policy, progress, verify_hashes)
        try:
            transfer.run()
            _install(transfer, target)
        finally:
            progress.close()
            transfer.session.close()
            if not locked:
                work.discard()
    progress.note(f"verified {target} (sha256 {transfer.digests['sha256'][:16]}...)")
    return target


def resolve_checkpoint(entry: ModelEntry, checkpoint: str | os.PathLike | None = None, **kwargs) -> Path:
    """``checkpoint`` when given (it must exist), else the cached checkpoint of ``entry``, fetched if needed.

    ``kwargs`` are those of :func:`fetch_checkpoint`.
    """
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise UsageError(f"--checkpoint {path}: no such file")
        return path
    return fetch_checkpoint(entry, **kwargs)
