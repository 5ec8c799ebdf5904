"""A small GCS-like static file server on loopback, for tests, the demo and benchmarks.

It serves a directory the way ``storage.googleapis.com/<bucket>/<object>``
serves objects (Google Cloud Storage's XML API, docs/fetch.md): GET and
HEAD, ``Range: bytes=N-`` (206 with Content-Range; 416 past the end), an
``ETag`` (the md5 hex), ``x-goog-hash`` as two header lines (crc32c and md5,
base64), ``x-goog-stored-content-length``, ``x-goog-generation`` and
``If-Match`` (412 on a mismatch).

    with serve_directory(root) as server:
        url = server.base_url + "distill/R50x1_160.npz"

Faults are injected by a hook: ``server.hook = fn`` where ``fn(reply)`` sees
each :class:`Reply` before it is sent and may change its status, headers or
body, or ask for a fault (close early, reset, stall, trickle, flip a byte,
append bytes). ``reply.number`` counts the requests for the same path, so
"fail the first request, then behave" is one ``if``.

Unfaulted full bodies go out with ``os.sendfile`` (never the bottleneck of a benchmark). Nothing is logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import google_crc32c

from ..labels import DATA_DIR, LABEL_FILES

_HASH_CHUNK = 4 << 20
_SEND_CHUNK = 64 << 10


@dataclass(frozen=True)
class ObjectInfo:
    """What GCS would report about a stored object."""

    size: int
    md5_hex: str
    crc32c_b64: str
    md5_b64: str
    generation: str

    @property
    def etag(self) -> str:
        return f'"{self.md5_hex}"'


def object_hashes(data: bytes) -> tuple[str, str]:
    """``(crc32c, md5)`` of ``data`` in x-goog-hash form (base64 of the big-endian digests)."""
    crc = struct.pack(">I", google_crc32c.value(data))
    return base64.b64encode(crc).decode(), base64.b64encode(hashlib.md5(data).digest()).decode()


def _describe_file(path: Path, st: os.stat_result) -> ObjectInfo:
    md5 = hashlib.md5()
    crc = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            md5.update(chunk)
            crc.update(chunk)
    return ObjectInfo(
        size=st.st_size,
        md5_hex=md5.hexdigest(),
        crc32c_b64=base64.b64encode(crc.digest()).decode(),
        md5_b64=base64.b64encode(md5.digest()).decode(),
        generation=str(st.st_mtime_ns // 1000),
    )


@dataclass
class Reply:
    """One response the server is about to send; a hook may change any field.

    The body is the object's bytes ``start:end`` (or ``body`` when set). The
    fault fields count body bytes actually sent.
    """

    method: str
    path: str
    request_headers: dict[str, str]
    number: int
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    file: Path | None = None
    start: int = 0
    end: int = 0
    #: Replaces the file range as the body (Content-Length is not adjusted: set it yourself).
    body: bytes | None = None
    #: Send this many body bytes, then close the connection cleanly (an honest Content-Length, a short body).
    close_after: int | None = None
    #: Send this many body bytes, then reset the connection (RST).
    reset_after: int | None = None
    #: Send this many body bytes, then send nothing for ``stall_seconds`` and close; if ``resume``
    #: is set during the stall, send the rest of the body instead (a pause, not a failure).
    stall_after: int | None = None
    stall_seconds: float = 0.0
    resume: threading.Event | None = None
    #: A slow but moving body: ``(bytes, seconds)`` per step.
    trickle: tuple[int, float] | None = None
    #: Object offset of a byte to invert in the body.
    flip_at: int | None = None
    #: Bytes sent after the declared body (a body longer than Content-Length).
    extra: bytes = b""

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def set_header(self, name: str, value: str | None) -> None:
        """Replace every ``name`` header by one with ``value`` (``None`` removes them)."""
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            self.headers.append((name, value))

    @property
    def faulted(self) -> bool:
        return any(
            x is not None for x in (self.close_after, self.reset_after, self.stall_after, self.trickle, self.flip_at)
        ) or bool(self.extra)


Hook = Callable[[Reply], None]


class MirrorServer(ThreadingHTTPServer):
    """The server object of :func:`serve_directory`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.root = Path(root).resolve()
        self.hook: Hook | None = None
        #: (method, path, headers) of every request, in arrival order.
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        #: Set when a stall fault starts sending nothing (tests wait on it).
        self.stalled = threading.Event()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._info: dict[tuple[str, int, int], ObjectInfo] = {}
        super().__init__((host, 0), _Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def url(self, path: str) -> str:
        return self.base_url + path.lstrip("/")

    def body_requests(self, path: str | None = None) -> list[tuple[str, str, dict[str, str]]]:
        """The GET requests logged (for ``path`` when given)."""
        return [r for r in self.requests if r[0] == "GET" and (path is None or r[1] == path)]

    def info(self, path: Path) -> ObjectInfo:
        """Size and hashes of a served file, computed once per (size, mtime)."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._info.get(key)
        if cached is None:
            cached = _describe_file(path, st)
            with self._lock:
                self._info[key] = cached
        return cached

    def _log(self, method: str, path: str, headers: dict[str, str]) -> int:
        with self._lock:
            self.requests.append((method, path, headers))
            self._counts[path] = self._counts.get(path, 0) + 1
            return self._counts[path]

    def handle_error(self, request, client_address) -> None:
        """A client that hung up mid-reply (the tests' own doing) is not worth a traceback on stderr."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def resolve(self, path: str) -> Path | None:
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            return None
        candidate = self.root.joinpath(*parts)
        return candidate if candidate.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: MirrorServer

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class; quiet on purpose
        pass

    def do_HEAD(self):
        self._serve()

    def do_GET(self):
        self._serve()

    def _serve(self) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        headers = {k: v for k, v in self.headers.items()}
        number = self.server._log(self.command, path, headers)
        reply = self._plan(path, headers, number)
        if self.server.hook is not None:
            self.server.hook(reply)
        self._send(reply)

    def _plan(self, path: str, headers: dict[str, str], number: int) -> Reply:
        reply = Reply(self.command, path, headers, number, 200)
        file = self.server.resolve(path)
        if file is None:
            reply.status = 404
            reply.body = b"NoSuchKey"
            reply.set_header("Content-Length", str(len(reply.body)))
            return reply
        info = self.server.info(file)
        reply.file, reply.end = file, info.size
        reply.headers = [
            ("Content-Type", "application/octet-stream"),
            ("Accept-Ranges", "bytes"),
            ("ETag", info.etag),
            ("Last-Modified", formatdate(file.stat().st_mtime, usegmt=True)),
            ("x-goog-generation", info.generation),
            ("x-goog-metageneration", "1"),
            ("x-goog-stored-content-encoding", "identity"),
            ("x-goog-stored-content-length", str(info.size)),
            ("x-goog-hash", f"crc32c={info.crc32c_b64}"),
            ("x-goog-hash", f"md5={info.md5_b64}"),
        ]
        if_match = headers.get("If-Match")
        if if_match is not None and if_match.strip() not in ("*", info.etag, info.md5_hex):
            return _error(reply, 412, b"PreconditionFailed")
        self._apply_range(reply, headers.get("Range"), info.size)
        if reply.status in (200, 206):
            reply.set_header("Content-Length", str(reply.end - reply.start))
        return reply

    @staticmethod
    def _apply_range(reply: Reply, range_header: str | None, size: int) -> None:
        if not range_header or not range_header.startswith("bytes="):
            return
        spec = range_header[len("bytes=") :].strip()
        first, _, last = spec.partition("-")
        if "," in spec or not (first.isdigit() or last.isdigit()):
            return  # unsupported or malformed ranges: the whole object, as GCS does
        if first.isdigit():
            start = int(first)
            end = min(int(last) + 1, size) if last.isdigit() else size
        else:  # a suffix: the last N bytes
            start, end = max(size - int(last), 0), size
        if start >= size or end <= start:
            _error(reply, 416, b"InvalidRange")
            reply.set_header("Content-Range", f"bytes */{size}")
            return
        reply.status, reply.start, reply.end = 206, start, end
        reply.set_header("Content-Range", f"bytes {start}-{end - 1}/{size}")

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        if reply.faulted:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if reply.body is not None:
                self._send_bytes(reply, reply.body)
            elif reply.status not in (200, 206):
                pass
            elif not reply.faulted:
                self._sendfile(reply)
            else:
                self._send_faulted(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _sendfile(self, reply: Reply) -> None:
        self.wfile.flush()
        sock = self.connection
        with open(reply.file, "rb") as f:
            offset, remaining = reply.start, reply.end - reply.start
            while remaining > 0:
                sent = os.sendfile(sock.fileno(), f.fileno(), offset, min(remaining, 1 << 30))
                if sent == 0:
                    break
                offset += sent
                remaining -= sent

    def _send_bytes(self, reply: Reply, data: bytes) -> None:
        limit = _first_limit(reply)
        self.wfile.write(data if limit is None else data[:limit])
        self._finish_fault(reply, sent=len(data) if limit is None else min(limit, len(data)))

    def _send_faulted(self, reply: Reply) -> None:
        limit = _first_limit(reply)
        total = reply.end - reply.start if limit is None else min(limit, reply.end - reply.start)
        with open(reply.file, "rb") as f:
            sent = self._send_range(reply, f, 0, total)
            if reply.stall_after is not None and sent >= reply.stall_after and reply.resume is not None:
                self.wfile.flush()
                self.server.stalled.set()
                resumed = reply.resume.wait(reply.stall_seconds) and not self.server.stopping.is_set()
                reply.stall_after = None  # the stall is over either way
                if resumed:
                    sent = self._send_range(reply, f, sent, reply.end - reply.start)
        self._finish_fault(reply, sent)

    def _send_range(self, reply: Reply, f, sent: int, total: int) -> int:
        step, pause = reply.trickle or (_SEND_CHUNK, 0.0)
        f.seek(reply.start + sent)
        while sent < total and not self.server.stopping.is_set():
            chunk = bytearray(f.read(min(step, total - sent)))
            if reply.flip_at is not None and reply.start + sent <= reply.flip_at < reply.start + sent + len(chunk):
                chunk[reply.flip_at - reply.start - sent] ^= 0xFF
            self.wfile.write(chunk)
            self.wfile.flush()
            sent += len(chunk)
            if pause:
                time.sleep(pause)
        return sent

    def _finish_fault(self, reply: Reply, sent: int) -> None:
        self.wfile.flush()
        if reply.stall_after is not None and sent >= reply.stall_after:
            self.server.stalled.set()
            self.server.stopping.wait(reply.stall_seconds)
        elif reply.reset_after is not None and sent >= reply.reset_after:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif reply.extra:
            self.wfile.write(reply.extra)
            self.wfile.flush()
        self.close_connection = True


def _first_limit(reply: Reply) -> int | None:
    limits = [x for x in (reply.close_after, reply.reset_after, reply.stall_after) if x is not None]
    return min(limits) if limits else None


def _error(reply: Reply, status: int, body: bytes) -> Reply:
    reply.status = status
    reply.body = body
    reply.headers = [(k, v) for k, v in reply.headers if k.lower() in ("content-type",)]
    reply.set_header("Content-Length", str(len(body)))
    return reply


@contextlib.contextmanager
def serve_directory(root: str | os.PathLike, host: str = "127.0.0.1", hook: Hook | None = None) -> Iterator[MirrorServer]:
    """Serve ``root`` on ``host`` (a free port) in a daemon thread until the block exits."""
    server = MirrorServer(Path(root), host)
    server.hook = hook
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="mirror")
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def label_bucket(root: str | os.PathLike) -> Iterator[MirrorServer]:
    """A loopback bucket at ``root`` holding the package's copy of every shipped label file, served.

    What tests and benchmarks export against instead of the real bucket: an export
    fetches its label file from the bucket even when given a local checkpoint.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name in LABEL_FILES:
        if (DATA_DIR / name).is_file():
            shutil.copyfile(DATA_DIR / name, root / name)
    with serve_directory(root) as server:
        yield server
