"""The cache on disk: where a file lives, its verified-file record, the download lock, the partial, the install.

Beside each cached file ``<name>`` live

- ``<name>.verified.json``: the record of a verified file (sha256, the
  server's hashes, keyed by size and mtime) so a cached file is trusted
  without a network request and export manifests can cite its sha256;
- ``<name>.lock``: the lock that lets one process download while others wait;
- while a download is incomplete, ``<name>.part`` and ``<name>.part.json``:
  the bytes so far and the identity (size, ETag, generation, hashes) of the
  object they belong to, so a resume never splices two different objects.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from ..errors import BitconvertError, LocalIOError
from ..fsutil import atomic_write, remove_dead_temps, replace_durably, temp_path
from .http import ObjectIdentity
from .progress import Progress
from .sink import Digests, local_io_error, sha256_file

RECORD_SUFFIX = ".verified.json"
PART_SUFFIX = ".part"


def sibling(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def object_path(root: Path, object_name: str) -> Path:
    """Where the bucket's ``object_name`` lives under the cache ``root``: its path, mirrored."""
    parts = [p for p in object_name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"not an object name: {object_name!r}")
    return root.joinpath(*parts)


# --------------------------------------------------------------------------- the verified-file record


def _record_path(path: Path) -> Path:
    return sibling(path, RECORD_SUFFIX)


def _read_record(path: Path) -> dict | None:
    try:
        rec = json.loads(_record_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), str):
        return None
    return rec


def write_json(path: Path, data: dict) -> None:
    """``data`` as JSON at ``path``, atomically and durably; a failure is a LocalIOError."""
    try:
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise local_io_error(exc, path) from exc


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
            write_json(_record_path(path), rec)
    return sha


def cached_and_verified(target: Path, pinned_sha256: str | None) -> bool:
    """True when ``target`` holds a verified file (matching the pin, if any); reads it only if its record is stale."""
    try:
        st = target.stat()
    except OSError:
        return False
    rec = _read_record(target)
    if rec is not None and rec.get("verified") and rec.get("size") == st.st_size:
        sha = rec["sha256"] if _key_matches(rec, st) else recorded_sha256(target)
        return sha == rec["sha256"] and (pinned_sha256 is None or sha == pinned_sha256)
    if pinned_sha256 is not None and sha256_file(target) == pinned_sha256:
        write_json(_record_path(target), {**_stat_key(st), "sha256": pinned_sha256, "verified": True, "pinned": True})
        return True
    return False


# --------------------------------------------------------------------------- the partial download


class Partial:
    """The bytes downloaded so far and the identity of the object they belong to."""

    def __init__(self, path: Path, resumable: bool):
        self.path = path
        self.meta = sibling(path, ".json")
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

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def bind(self, ident: ObjectIdentity) -> None:
        if self.resumable:
            write_json(self.meta, asdict(ident))

    def discard(self) -> None:
        for p in (self.path, self.meta):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def work_file(target: Path, locked: bool) -> Partial:
    """The resumable ``.part`` when this process holds the lock, else a private file nobody else resumes."""
    if locked:
        return Partial(sibling(target, PART_SUFFIX), resumable=True)
    return Partial(temp_path(target), resumable=False)


# --------------------------------------------------------------------------- lock and install


@contextlib.contextmanager
def target_lock(target: Path, timeout: float, progress: Progress) -> Iterator[bool]:
    """Hold the lock beside ``target``; yields False (and no lock) if it stays busy past ``timeout``.

    The lock only avoids duplicate downloads: correctness comes from the
    process-unique temporary file and the atomic rename, so a lock that cannot
    be had (a soft lock left by a crash on a filesystem without flock) costs a
    second download, never a wrong file. flock locks die with their process.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(sibling(target, ".lock")), timeout=timeout)
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
        raise local_io_error(exc, Path(lock.lock_file)) from exc
    try:
        yield True
    finally:
        lock.release()


def remove_dead_candidates(target: Path) -> None:
    """Delete temporary candidates left by processes that no longer exist (a kill between renames)."""
    remove_dead_temps(target.parent, f".{target.name}.{{pid}}.*.tmp")


def install(work: Partial, target: Path, identity: ObjectIdentity, digests: Digests, pinned: bool) -> None:
    """Move the verified work file to ``target`` atomically, with its record."""
    candidate = temp_path(target)
    try:
        os.replace(work.path, candidate)
        with contextlib.suppress(FileNotFoundError):
            work.meta.unlink()
        record = {
            **_stat_key(candidate.stat()),
            "sha256": digests.sha256,
            "verified": True,
            "checked": [name for name in ("crc32c", "md5") if getattr(digests, name) is not None],  # the server's, verified
            "url": identity.url,
            "etag": identity.etag,
            "generation": identity.generation,
            "crc32c": identity.crc32c,
            "md5": identity.md5,
            "pinned": pinned,
        }
        write_json(_record_path(target), record)
        replace_durably(candidate, target)
    except OSError as exc:
        raise local_io_error(exc, target) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
