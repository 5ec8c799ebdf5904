"""What the server says: status, headers, the object's identity and hashes, the socket after the body.

Facts behind each rule: Google Cloud Storage's XML API documentation (``x-goog-hash``,
``x-goog-stored-content-length``, ``ETag``, ``If-Match``, ``Range``); docs/fetch.md.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import ipaddress
import os
import re
import select
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import BitconvertError, DownloadError


class Retry(Exception):
    """A failure worth another request: the network, a 5xx/429, bytes that failed verification."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        immediate: bool = False,
        error=None,
        attempts: int | None = None,
        delay: float | None = None,
    ):
        super().__init__(message)
        self.retry_after = retry_after
        #: A clean restart (the partial was discarded): no backoff needed.
        self.immediate = immediate
        #: Give up after this many consecutive failures, when fewer than the policy's.
        self.attempts = attempts
        #: Wait this long before the next request instead of the policy's backoff.
        self.delay = delay
        #: What to raise once the budget is spent (default: a DownloadError).
        self.error: BitconvertError | None = error


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


def parse_retry_after(value: str | None) -> float | None:
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


def check_status(resp, resumed: bool) -> None:
    """Retry 429 and 5xx; fail on any other status but 200, 206 (to a Range) and 412/416 (to a resume)."""
    status = resp.status_code
    if status == 429 or status >= 500:
        raise Retry(f"HTTP {status} {resp.reason}", retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    expected = (200, 206, 412, 416) if resumed else (200,)
    if status in expected:
        return
    hint = {404: " (no such object: check the name and --base-url)", 403: " (access denied)"}.get(status, "")
    raise DownloadError(f"HTTP {status} {resp.reason} for {resp.url}{hint}")


def check_encoding(resp) -> None:
    """Refuse bytes that are not the stored object verbatim (they could never match its hashes)."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(f"{resp.url} came with Content-Encoding: {encoding} though identity was asked; refusing to store it")
    stored = resp.headers.get("x-goog-stored-content-encoding", "identity").strip().lower()
    if stored not in ("", "identity"):
        raise DownloadError(f"{resp.url} is stored {stored}-encoded; its hashes would not match the bytes served")


def identity_from(resp) -> ObjectIdentity:
    """The object a full (200) response describes; its size must be stated and consistent."""
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


def content_range(value: str | None) -> tuple[int | None, int | None]:
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


def socket_watch(resp) -> socket.socket | None:
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


def trailing_bytes(watch: socket.socket | None) -> bool:
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


def short(exc: BaseException) -> str:
    """One readable line for a network exception (urllib3 wraps the message in a tuple of args)."""
    first = exc.args[0] if exc.args else None
    while isinstance(first, BaseException) and first.args:
        # urllib3's MaxRetryError names its cause in ``reason``: "Failed to resolve ...", "Connection refused".
        reason = getattr(first, "reason", None)
        first = reason if isinstance(reason, BaseException) and reason.args else first.args[0]
    text = first if isinstance(first, str) and first else (str(exc) or type(exc).__name__)
    text = re.sub(r"^<[^>]* object at 0x[0-9a-f]+>: ", "", text.splitlines()[0])  # urllib3's connection repr
    return text if len(text) < 200 else text[:197] + "..."


def network_errors() -> tuple[type[BaseException], ...]:
    """What a request or a body read raises when the network fails (worth a retry)."""
    import http.client

    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, ConnectionError, TimeoutError)


def final_reason(exc: BaseException) -> str | None:
    """Why a request's failure cannot be cured by retrying (a redirect loop, a URL scheme nothing serves), else None."""
    import requests

    if isinstance(exc, requests.TooManyRedirects):
        return f"redirect loop (more than {requests.models.DEFAULT_REDIRECT_LIMIT} redirects); check --base-url"
    if isinstance(exc, (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema, requests.exceptions.InvalidURL)):
        return f"cannot be fetched: {short(exc)}"
    return None


#: Attempts for a connection refused on loopback, and the wait between them (see refused_retry).
LOOPBACK_REFUSED_ATTEMPTS = 2
LOOPBACK_REFUSED_DELAY = 0.5


def _refused(exc: BaseException | None, depth: int = 0) -> bool:
    """True when ``exc`` or anything it wraps (args, reason, cause, context) is a refused connection."""
    if exc is None or depth > 8:
        return False
    if isinstance(exc, ConnectionRefusedError):
        return True
    inner = [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    inner += [getattr(exc, "reason", None), exc.__cause__, exc.__context__]
    return any(_refused(e, depth + 1) for e in inner if isinstance(e, BaseException))


def refused_retry(exc: BaseException, url: str) -> Retry | None:
    """A Retry with a short budget for a connection refused on loopback; None for anything else.

    Nothing listens on that port of this machine: no network in between can recover, so one short
    retry (a mirror that is just starting) and then the download fails. A refusal from another host
    (a restarting server or load balancer) keeps the policy's full budget.
    """
    if not _refused(exc):
        return None
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    return Retry(f"connection refused by {host}: {short(exc)}", attempts=LOOPBACK_REFUSED_ATTEMPTS, delay=LOOPBACK_REFUSED_DELAY)


def session():
    """A requests session that trusts the environment (proxies, CA bundles) and names bitconvert."""
    import requests

    from .. import __version__

    session = requests.Session()  # trust_env stays on: proxies and CA bundles from the environment
    session.headers["User-Agent"] = f"bitconvert/{__version__}"
    return session
