"""Download official checkpoints and the bucket's other files into a local cache, verified and resumable.

The cache mirrors the bucket: ``<cache>/<object>`` for ``<base URL>/<object>``
(records, lock and partials beside each file: see :mod:`.cache`). Nothing
unverified ever reaches the final path: a complete ``.part`` is renamed to a
process-unique temporary name, its hashes (computed while the bytes streamed
in, see :mod:`.transfer` for which) are checked, it is fsynced and renamed
over the final path. An older good file stays until then. The rules and the
faults they answer: docs/fetch.md.

The package: ``http`` (what the server says), ``sink`` (hashing, writing,
flushing), ``transfer`` (attempts and retries), ``cache`` (records, lock,
install), ``progress``; this module holds the entry points.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from .. import config
from ..errors import CheckpointError, OfflineError, UsageError
from ..fsutil import require_regular
from ..registry import ModelEntry
from .cache import cached_and_verified, install, object_path, recorded_sha256, remove_dead_candidates, target_lock, work_file
from .http import ObjectIdentity, parse_goog_hash, session
from .progress import Progress
from .sink import CHUNK_SIZE, Digests, local_io_error, sha256_file
from .transfer import DEFAULT_POLICY, Fetched, RetryPolicy, Transfer, Wanted

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_BASE_URL",
    "DEFAULT_POLICY",
    "Digests",
    "ObjectIdentity",
    "RetryPolicy",
    "cache_path",
    "default_cache_dir",
    "fetch_checkpoint",
    "fetch_file",
    "object_url",
    "parse_goog_hash",
    "recorded_sha256",
    "resolve_checkpoint",
    "sha256_file",
    "source_url",
    "speed_policy",
]

DEFAULT_BASE_URL = config.DEFAULT_BASE_URL
Log = Callable[[str], None]


# --------------------------------------------------------------------------- where things live


def default_cache_dir() -> Path:
    """``$BITCONVERT_CACHE``, else ``$XDG_CACHE_HOME/bitconvert``, else ``~/.cache/bitconvert``."""
    return config.from_env().cache_dir


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def object_url(object_name: str, base_url: str | None = None) -> str:
    """The URL of the bucket's ``object_name`` under ``base_url`` (default: env, then the BiT bucket)."""
    base = config.normalise_base_url(base_url) if base_url else config.from_env().base_url
    return base + quote(object_name)


def source_url(entry: ModelEntry, base_url: str | None = None) -> str:
    """The URL of ``entry``'s checkpoint under ``base_url`` (default: env, then the BiT bucket)."""
    return object_url(entry.source, base_url)


def cache_path(entry: ModelEntry, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``entry``'s checkpoint lives in the cache: its path under the base URL, mirrored."""
    return object_path(_cache_root(cache_dir), entry.source)


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
    wanted = Wanted(
        name=entry.id,
        url=source_url(entry, base_url),
        target=cache_path(entry, cache_dir),
        sha256=entry.sha256,
        unverifiable_hint="add its sha256 to checkpoints.yaml, or pass --allow-unverified to accept it by size only",
        offline_hint=f"run `bitconvert fetch {entry.id}` online first",
    )
    progress = Progress(entry.id, quiet)
    return _fetch(wanted, offline=offline, force=force, verify_hashes=verify_hashes, policy=policy, progress=progress)


def fetch_file(
    object_name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    base_url: str | None = None,
    offline: bool = False,
    force: bool = False,
    quiet: bool = False,
    verify_hashes: bool = True,
    sha256: str | None = None,
    policy: RetryPolicy | None = None,
    log: Log | None = None,
) -> Path:
    """Make sure the bucket's ``object_name`` (e.g. ``ilsvrc2012_wordnet_lemmas.txt``) is cached, verified; its path.

    The same download, verification, cache and offline rules as
    :func:`fetch_checkpoint`; ``sha256`` pins the content when known. Progress
    and notes go to ``log`` (one line each) when given, else to stderr.
    """
    root = _cache_root(cache_dir)
    try:
        target = object_path(root, object_name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    wanted = Wanted(name=object_name, url=object_url(object_name, base_url), target=target, sha256=sha256)
    progress = Progress(object_name, quiet, log=log)
    return _fetch(wanted, offline=offline, force=force, verify_hashes=verify_hashes, policy=policy, progress=progress)


def resolve_checkpoint(entry: ModelEntry, checkpoint: str | os.PathLike | None = None, **kwargs) -> Path:
    """``checkpoint`` when given (it must be a readable regular file, else CheckpointError), else the cached checkpoint of ``entry``, fetched if needed.

    ``kwargs`` are those of :func:`fetch_checkpoint`.
    """
    if checkpoint is not None:
        return require_regular(checkpoint, CheckpointError, "--checkpoint ")
    return fetch_checkpoint(entry, **kwargs)


def speed_policy(min_speed: float | None = None, min_speed_time: float | None = None) -> RetryPolicy:
    """The default policy with the minimum-throughput rule given, else ``BITCONVERT_MIN_SPEED``/``_TIME``, else the defaults."""
    env = config.from_env()
    return dataclasses.replace(
        DEFAULT_POLICY,
        min_speed=env.min_speed if min_speed is None else min_speed,
        min_speed_time=env.min_speed_time if min_speed_time is None else min_speed_time,
    )


def _fetch(
    wanted: Wanted, *, offline: bool, force: bool, verify_hashes: bool, policy: RetryPolicy | None, progress: Progress
) -> Path:
    """Cached and verified, else (online) downloaded under the lock, verified and installed."""
    target = wanted.target
    policy = policy or speed_policy()
    if not force and cached_and_verified(target, wanted.sha256):
        return target
    if offline or config.from_env().offline:
        state = "is cached but not verified" if target.exists() else "is not cached"
        raise OfflineError(f"{wanted.name}: offline mode and {target} {state}; {wanted.offline_hint}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise local_io_error(exc, target.parent) from exc
    with target_lock(target, policy.lock_timeout, progress) as locked:
        if locked and not force and cached_and_verified(target, wanted.sha256):
            return target  # another process fetched it while we waited
        if locked:
            remove_dead_candidates(target)
        fetched = _download(wanted, work_file(target, locked), policy, progress, verify_hashes)
    progress.note(f"verified {target} (sha256 {fetched.digests.sha256[:16]}...)")
    return target


def _download(wanted: Wanted, work, policy: RetryPolicy, progress: Progress, verify_hashes: bool) -> Fetched:
    transfer = Transfer(wanted, work, session(), policy, progress, verify_hashes)
    try:
        fetched = transfer.run()
        install(work, wanted.target, fetched.identity, fetched.digests, pinned=wanted.sha256 is not None)
        return fetched
    finally:
        progress.close()
        transfer.session.close()
        if not work.resumable:
            work.discard()
