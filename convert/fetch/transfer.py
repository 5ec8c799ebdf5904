"""One download: attempts within a retry budget until the work file holds the verified object.

What is verified: the size always; crc32c when the server states it (the
bucket's integrity check for every object, and cheap), md5 only when it
does not (composite objects aside, GCS sends both: md5 would double the CPU
cost of a fetch for no extra assurance against transfer errors); sha256
always, against the registry's pin when there is one, and for the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import DownloadError, VerificationError
from .cache import Partial
from .http import (
    ObjectIdentity,
    Retry,
    check_encoding,
    check_status,
    content_range,
    final_reason,
    identity_from,
    network_errors,
    parse_goog_hash,
    refused_retry,
    short,
    socket_watch,
    trailing_bytes,
)
from .progress import Progress, mb
from .sink import CHUNK_SIZE, Digests, Sink


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Tests shrink the numbers and inject ``sleep``."""

    connect_timeout: float = 15.0
    #: Longest silence tolerated while reading (then the request is retried, resuming).
    read_timeout: float = 60.0
    #: The minimum-throughput rule: a request that moves fewer than ``min_speed`` bytes a second,
    #: averaged over a stretch of ``min_speed_time`` seconds (from the request on, waiting for the
    #: headers included), ends the download: a stalled or trickling server is given up on, not
    #: retried. ``min_speed`` 0 turns the rule off. Defaults: config.MIN_SPEED_DEFAULT, ..._TIME_DEFAULT.
    min_speed: float = config.MIN_SPEED_DEFAULT
    min_speed_time: float = config.MIN_SPEED_TIME_DEFAULT
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


@dataclass
class SpeedFloor:
    """The minimum-throughput rule of one request: fewer than ``speed`` bytes a second over any
    stretch of ``seconds`` (checked as each stretch ends) raises a final DownloadError."""

    url: str
    speed: float
    seconds: float
    clock: Callable[[], float] = time.monotonic
    received: int = 0
    start: float = dataclasses.field(default=0.0)

    def __post_init__(self):
        self.start = self.clock()

    def add(self, count: int) -> None:
        self.received += count
        self.check()

    def check(self) -> None:
        """Raise when the stretch that has just ended was too slow; else start a new stretch when it has ended."""
        elapsed = self.clock() - self.start
        if self.speed <= 0 or elapsed < self.seconds:
            return
        rate = self.received / elapsed
        if rate < self.speed:
            what = (
                f"no bytes for {elapsed:.0f} s (stalled)"
                if not self.received
                else f"{self.received} bytes in {elapsed:.0f} s ({rate:.0f} B/s)"
            )
            raise DownloadError(
                f"{self.url}: {what}, below the minimum speed of {self.speed:.0f} B/s over {self.seconds:.0f} s; "
                "gave up (set the floor with --min-speed and --min-speed-time, or BITCONVERT_MIN_SPEED and BITCONVERT_MIN_SPEED_TIME)"
            )
        self.start, self.received = self.clock(), 0


@dataclass(frozen=True)
class Wanted:
    """One object to fetch: where from, where to, what pins it, and how messages name it."""

    #: A model id or an object name: the progress label and the subject of messages.
    name: str
    url: str
    target: Path
    #: The sha256 (hex) the registry pins, if any.
    sha256: str | None = None
    #: What to do about an object the server gives no hash for and nothing pins.
    unverifiable_hint: str = "pass --allow-unverified (verify_hashes=False) to accept it by size only"
    #: What to do about an object that is not cached in offline mode.
    offline_hint: str = "run once without --offline first"


@dataclass(frozen=True)
class Fetched:
    """What a finished transfer hands to the install: the object it got and the digests of its bytes."""

    identity: ObjectIdentity
    digests: Digests


def hashes_to_check(ident: ObjectIdentity) -> tuple[str, ...]:
    """The server hash to verify: crc32c when stated, else md5 when stated, else none."""
    if ident.crc32c is not None:
        return ("crc32c",)
    return ("md5",) if ident.md5 is not None else ()


@dataclass
class Transfer:
    """Downloads one object into a work file until it verifies, within the retry budget."""

    wanted: Wanted
    work: Partial
    session: object
    policy: RetryPolicy
    progress: Progress
    verify_hashes: bool
    requests_made: int = 0

    def run(self) -> Fetched:
        """Attempt until the work file holds the verified object; raise once the budget is spent."""
        failures, started = 0, time.monotonic()
        while True:
            before = self.work.size()
            try:
                return self._attempt()
            except Retry as retry:
                failures = 0 if self.work.size() > before else failures + 1  # progress resets the count
                self._give_up_if_spent(retry, failures, time.monotonic() - started)
                delay = 0.0 if retry.immediate else self.policy.delay(failures, retry.retry_after)
                delay = delay if retry.delay is None else retry.delay
                self.progress.note(f"{retry}; retrying" + (f" in {delay:.1f} s" if delay else ""))
                if delay:
                    self.policy.sleep(delay)

    def _give_up_if_spent(self, retry: Retry, failures: int, elapsed: float) -> None:
        p = self.policy
        attempts = min(p.attempts, retry.attempts or p.attempts)
        if failures < attempts and self.requests_made < p.max_requests and elapsed < p.deadline:
            return
        spent = f"gave up after {self.requests_made} request(s) in {elapsed:.0f} s"
        if retry.error is not None:
            raise type(retry.error)(f"{retry.error} ({spent})") from None
        raise DownloadError(f"{self.wanted.url}: {retry} ({spent})") from None

    def _attempt(self) -> Fetched:
        ident, offset = self.work.load()
        if ident is not None and offset == ident.size:  # complete but never verified (killed while verifying)
            return Fetched(ident, self._receive(None, ident, offset))
        headers = {"Accept-Encoding": "identity"}
        if ident is not None and offset:
            headers["Range"] = f"bytes={offset}-"
            if ident.etag:
                headers["If-Match"] = ident.etag
        self.requests_made += 1
        p = self.policy
        floor = SpeedFloor(self.wanted.url, p.min_speed, p.min_speed_time)
        # A silence as long as the floor's stretch breaks the rule: no need to wait longer to know.
        read_timeout = min(p.read_timeout, p.min_speed_time) if p.min_speed > 0 else p.read_timeout
        try:
            resp = self.session.get(
                self.wanted.url, headers=headers, stream=True, allow_redirects=True, timeout=(p.connect_timeout, read_timeout)
            )
        except network_errors() as exc:
            reason = final_reason(exc)
            if reason:  # retrying cannot help: a redirect loop, a scheme nothing serves
                raise DownloadError(f"{self.wanted.url}: {reason}") from None
            floor.check()
            raise refused_retry(exc, self.wanted.url) or Retry(f"request failed: {short(exc)}") from None
        with contextlib.closing(resp):
            ident, offset = self._check_response(resp, ident, offset)
            return Fetched(ident, self._receive(resp, ident, offset, floor))

    def _check_response(self, resp, ident: ObjectIdentity | None, offset: int) -> tuple[ObjectIdentity, int]:
        """The identity and offset to receive the body at, or an exception that says why not."""
        check_status(resp, resumed=bool(offset))
        if offset and resp.status_code in (412, 416):
            self.work.discard()
            what = "changed on the server" if resp.status_code == 412 else "smaller than the partial download"
            raise Retry(f"HTTP {resp.status_code}: the object {what}; discarded the partial, restarting from 0", immediate=True)
        check_encoding(resp)
        if resp.status_code == 206:
            self._check_resume(resp, ident, offset)
            return ident, offset
        if offset:
            self.progress.note("the server ignored Range and sent the whole object; restarting from 0")
        fresh = identity_from(resp)
        self._require_verifiable(fresh)
        self.work.discard()
        self.work.bind(fresh)
        return fresh, 0

    def _check_resume(self, resp, ident: ObjectIdentity, offset: int) -> None:
        """A 206 must continue the very object the partial belongs to, at the very offset."""
        start, total = content_range(resp.headers.get("Content-Range"))
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
            raise Retry(
                f"resume answered Content-Range {got!r}, ETag {now.etag} for bytes {offset}- of {ident.etag}; discarded the partial, restarting from 0",
                immediate=True,
            )

    def _require_verifiable(self, ident: ObjectIdentity) -> None:
        if ident.crc32c or ident.md5 or self.wanted.sha256 or not self.verify_hashes:
            return
        raise VerificationError(
            f"{ident.url} sent no x-goog-hash and no sha256 is pinned for {self.wanted.name}: cannot verify it; "
            + self.wanted.unverifiable_hint
        )

    def _receive(self, resp, ident: ObjectIdentity, offset: int, floor: SpeedFloor | None = None) -> Digests:
        """Append the body (none: the file is complete) to the work file while hashing; fsync; verify."""
        with Sink(self.work.path, offset, hashes_to_check(ident)) as sink:
            self.progress.start(ident.size, offset)
            if resp is not None:
                self._copy_body(resp, sink, ident.size, floor)
            digests = sink.finish()
            received = sink.received
        self._verify(ident, digests, received)
        return digests

    def _copy_body(self, resp, sink: Sink, size: int, floor: SpeedFloor) -> None:
        """Read the body into ``sink`` until ``size`` bytes are in; a short or long body is a Retry."""
        watch = socket_watch(resp)
        read, errors = resp.raw.read1, network_errors()
        try:
            while True:
                try:
                    chunk = read(CHUNK_SIZE, decode_content=False)
                except errors as exc:
                    floor.check()  # a silence that ends a stretch below the floor is final
                    raise Retry(f"connection failed after {mb(sink.received)}: {short(exc)}") from None
                if not chunk:
                    break
                if sink.received + len(chunk) > size:
                    self.work.discard()
                    raise Retry(f"body longer than the object's {size} bytes; discarded")
                sink.write(chunk)
                self.progress.update(len(chunk))
                floor.add(len(chunk))
            if sink.received < size:
                raise Retry(f"body ended early at {sink.received} of {size} bytes")
            if trailing_bytes(watch):
                self.work.discard()
                raise Retry("body longer than its Content-Length; discarded")
        finally:
            if watch is not None:
                watch.close()

    def _verify(self, ident: ObjectIdentity, digests: Digests, received: int) -> None:
        problems = []
        if received != ident.size:
            problems.append(f"size expected {ident.size}, got {received}")
        for name in hashes_to_check(ident):
            expected, got = getattr(ident, name), getattr(digests, name)
            if got != expected:
                problems.append(f"{name} expected {expected}, got {got}")
        if self.wanted.sha256 is not None and digests.sha256 != self.wanted.sha256:
            problems.append(f"sha256 expected {self.wanted.sha256} (registry), got {digests.sha256}")
        if problems:
            self.work.discard()
            message = f"{ident.url}: downloaded bytes fail verification: {'; '.join(problems)}"
            raise Retry("verification failed: " + "; ".join(problems), error=VerificationError(message))
