"""The loopback mirror answers like GCS's XML API (docs/fetch.md) and injects faults on request."""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import socket
import struct

import google_crc32c
import pytest

from convert.testing.mirror import serve_directory


@pytest.fixture
def data() -> bytes:
    return os.urandom(300_000)


@pytest.fixture
def server(tmp_path, data):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "obj.bin").write_bytes(data)
    with serve_directory(tmp_path) as s:
        yield s


def request(server, method="GET", path="d/obj.bin", headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request(method, "/" + path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read() if method == "GET" else b""
    conn.close()
    return resp, body


def test_base_url_is_loopback_with_trailing_slash(server):
    assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/")


def test_full_get_has_gcs_headers(server, data):
    resp, body = request(server)
    assert resp.status == 200 and body == data
    crc = base64.b64encode(struct.pack(">I", google_crc32c.value(data))).decode()
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert resp.headers.get_all("x-goog-hash") == [f"crc32c={crc}", f"md5={md5}"]
    assert resp.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert resp.headers["x-goog-stored-content-length"] == str(len(data)) == resp.headers["Content-Length"]
    assert resp.headers["x-goog-generation"].isdigit()


def test_head_has_headers_and_no_body(server, data):
    resp, _ = request(server, "HEAD")
    assert resp.status == 200 and resp.headers["Content-Length"] == str(len(data))
    assert server.requests[-1][0] == "HEAD"


def test_range_206_and_416(server, data):
    resp, body = request(server, headers={"Range": "bytes=1000-"})
    assert resp.status == 206 and body == data[1000:]
    assert resp.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert resp.headers.get_all("x-goog-hash")  # hashes of the whole object, also on a 206
    resp, _ = request(server, headers={"Range": f"bytes={len(data)}-"})
    assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(data)}"


def test_if_match(server, data):
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert request(server, headers={"If-Match": etag, "Range": "bytes=5-"})[0].status == 206
    assert request(server, headers={"If-Match": '"nope"'})[0].status == 412


def test_missing_and_escaping_paths_are_404(server):
    assert request(server, path="d/none.bin")[0].status == 404
    assert request(server, path="d/../../etc/passwd")[0].status == 404


def test_requests_are_logged_and_counted_per_path(server):
    seen = []
    server.hook = lambda reply: seen.append((reply.method, reply.path, reply.number))
    request(server, headers={"X-Test": "1"})
    request(server, "HEAD")
    assert seen == [("GET", "d/obj.bin", 1), ("HEAD", "d/obj.bin", 2)]
    assert server.requests[0][2]["X-Test"] == "1"
    assert len(server.body_requests("d/obj.bin")) == 1


def raw_get(server, path: str) -> bytes:
    """Everything the server sends for one GET, read off a plain socket until it closes (no client fixes it up)."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_close_after_sends_a_short_body(server, data):
    server.hook = lambda reply: setattr(reply, "close_after", 1000)
    received = raw_get(server, "/d/obj.bin")
    head, _, body = received.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(data)}".encode() in head  # an honest length, a short body
    assert body == data[:1000]


def test_flip_and_extra(server, data):
    def hook(reply):
        reply.flip_at, reply.extra = 10, b"EXTRA"

    server.hook = hook
    received = raw_get(server, "/d/obj.bin")
    body = received.partition(b"\r\n\r\n")[2]
    expected = bytearray(data)
    expected[10] ^= 0xFF
    assert body == bytes(expected) + b"EXTRA"
