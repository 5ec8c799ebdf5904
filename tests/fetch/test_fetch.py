"""`bitconvert fetch` against a loopback mirror: the fault matrix of docs/fetch.md, row by row.

Every test runs against convert.testing.mirror on 127.0.0.1 with a 1 MiB object,
small timeouts and an injected sleep, and checks the pass rule: the final
path exists only on success, its bytes equal the source, nothing is left
behind but a partial bound to the same object, and the lock is released.
Tests that need real processes (two at once, SIGKILL, Ctrl-C, disk full)
are in test_fetch_processes.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time

import pytest
from fetch_support import ENTRY, HALF, SIZE, SOURCE, assert_pass_rule, make_payload

from convert.errors import DownloadError, OfflineError, UsageError, VerificationError
from convert.fetch import (
    DEFAULT_BASE_URL,
    RetryPolicy,
    cache_path,
    default_cache_dir,
    fetch_checkpoint,
    fetch_file,
    parse_goog_hash,
    recorded_sha256,
    resolve_checkpoint,
    source_url,
)
from convert.fetch.progress import Progress as _Progress
from convert.registry import ModelEntry
from convert.testing.mirror import object_hashes, serve_directory


@pytest.fixture
def payload() -> bytes:
    return make_payload()


@pytest.fixture
def policy(sleeps) -> RetryPolicy:
    return RetryPolicy(
        connect_timeout=2.0,
        read_timeout=1.0,
        attempts=3,
        max_requests=10,
        deadline=30.0,
        backoff_base=0.01,
        backoff_max=0.04,
        lock_timeout=5.0,
        sleep=sleeps.append,
        jitter=lambda: 1.0,
    )


@pytest.fixture
def fetch(mirror, cache, policy):
    """``fetch(**kwargs)``: fetch_checkpoint of the test object from the mirror into the test cache."""

    def _fetch(entry: ModelEntry = ENTRY, **kwargs):
        kwargs.setdefault("quiet", True)
        kwargs.setdefault("base_url", mirror.base_url)
        kwargs.setdefault("policy", policy)
        return fetch_checkpoint(entry, cache_dir=cache, **kwargs)

    return _fetch


def on_request(number: int, **faults):
    """A mirror hook that applies ``faults`` to the ``number``-th GET of the object (0: every GET)."""

    def hook(reply):
        if reply.method == "GET" and (number == 0 or reply.number == number):
            for name, value in faults.items():
                setattr(reply, name, value)

    return hook


def cut_then_alter_resume(alter_206):
    """A mirror hook: the first GET closes at half the body; ``alter_206(reply)`` edits the resume's 206."""

    def hook(reply):
        if reply.method != "GET":
            return
        if reply.number == 1:
            reply.close_after = HALF
        elif reply.status == 206:
            alter_206(reply)

    return hook


def ranges(mirror) -> list[str | None]:
    """The Range header of each GET of the object, in order (None: a full request)."""
    return [h.get("Range") for _, _, h in mirror.body_requests(SOURCE)]


# ---------------------------------------------------------------------------------------------- the basics


def test_clean_fetch_writes_verified_file_and_record(fetch, mirror, target, payload):
    path = fetch()
    assert path == target
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None]
    headers = mirror.body_requests(SOURCE)[0][2]
    assert headers["Accept-Encoding"] == "identity"
    record = json.loads((target.parent / "obj.bin.verified.json").read_text())
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["verified"] is True and record["size"] == SIZE
    assert (record["crc32c"], record["md5"]) == object_hashes(payload)


def test_paths_and_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("BITCONVERT_BASE_URL", raising=False)
    monkeypatch.delenv("BITCONVERT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "bitconvert"
    assert source_url(ENTRY) == DEFAULT_BASE_URL + SOURCE == "https://storage.googleapis.com/bit_models/distill/obj.bin"
    assert source_url(ENTRY, "http://127.0.0.1:9/m") == "http://127.0.0.1:9/m/" + SOURCE
    assert cache_path(ENTRY) == tmp_path / "xdg" / "bitconvert" / "distill" / "obj.bin"
    monkeypatch.setenv("BITCONVERT_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("BITCONVERT_BASE_URL", "http://127.0.0.1:9/")
    assert cache_path(ENTRY) == tmp_path / "c" / "distill" / "obj.bin"
    assert source_url(ENTRY) == "http://127.0.0.1:9/" + SOURCE


def test_test_vector_headers_and_parse(tmp_path):
    (tmp_path / "ten.bin").write_bytes(b"0123456789")
    assert object_hashes(b"0123456789") == ("KAwGng==", "eB5eJF1ptWaXm4bijSPyxw==")
    import requests

    with serve_directory(tmp_path) as server:
        resp = requests.head(server.url("ten.bin"), timeout=5)
    raw = resp.raw.headers.getlist("x-goog-hash")
    assert raw == ["crc32c=KAwGng==", "md5=eB5eJF1ptWaXm4bijSPyxw=="]  # two header lines, as GCS sends
    assert parse_goog_hash(resp.headers["x-goog-hash"]) == {"crc32c": "KAwGng==", "md5": "eB5eJF1ptWaXm4bijSPyxw=="}


@pytest.mark.parametrize(
    "header, expected",
    [
        ("crc32c=KAwGng==, md5=eB5eJF1ptWaXm4bijSPyxw==", {"crc32c": "KAwGng==", "md5": "eB5eJF1ptWaXm4bijSPyxw=="}),
        ("crc32c=KAwGng==,md5=eB5eJF1ptWaXm4bijSPyxw==", {"crc32c": "KAwGng==", "md5": "eB5eJF1ptWaXm4bijSPyxw=="}),
        ("crc32c=KAwGng==", {"crc32c": "KAwGng=="}),
        ("md5=eB5eJF1ptWaXm4bijSPyxw==", {"md5": "eB5eJF1ptWaXm4bijSPyxw=="}),
        ("crc32c=KAwGng==, crc32c=KAwGng==", {"crc32c": "KAwGng=="}),
        ("sha512=abc, crc32c=KAwGng==", {"crc32c": "KAwGng=="}),
        (None, {}),
        ("", {}),
    ],
)
def test_parse_goog_hash(header, expected):
    assert parse_goog_hash(header) == expected


@pytest.mark.parametrize(
    "header, complaint",
    [
        ("crc32c", "malformed"),
        ("crc32c=KAwGng=", "not base64"),
        ("crc32c=KAwGngAA", "expected 4"),
        ("md5=KAwGng==", "expected 16"),
        ("crc32c=KAwGng==, crc32c=AAAAAA==", "conflicting"),
    ],
)
def test_parse_goog_hash_rejects_malformed_and_conflicting(header, complaint):
    with pytest.raises(DownloadError, match=complaint):
        parse_goog_hash(header)


# ---------------------------------------------------------------------------------------------- truncation and resume


def test_clean_close_at_half_resumes_with_range(fetch, mirror, target, payload):
    mirror.hook = on_request(1, close_after=HALF)
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, f"bytes={HALF}-"]
    second = mirror.body_requests(SOURCE)[1][2]
    assert second["If-Match"] == f'"{hashlib.md5(payload).hexdigest()}"'  # the resume is bound to the object


def test_connection_reset_mid_body_resumes(fetch, mirror, target, payload):
    mirror.hook = on_request(1, reset_after=HALF + 12345)
    fetch()
    assert_pass_rule(target, payload)
    assert len(ranges(mirror)) == 2 and ranges(mirror)[1].startswith("bytes=")
    assert int(ranges(mirror)[1][len("bytes=") : -1]) > 0


def test_resume_answered_200_restarts_from_zero(fetch, mirror, target, payload):
    def ignore_range(reply):  # a server that ignores Range: the whole object, 200
        reply.status, reply.start = 200, 0
        reply.set_header("Content-Range", None)
        reply.set_header("Content-Length", str(SIZE))

    mirror.hook = cut_then_alter_resume(ignore_range)
    fetch()
    assert_pass_rule(target, payload)
    assert target.stat().st_size == SIZE  # N, not n + N
    assert ranges(mirror) == [None, f"bytes={HALF}-"]


@pytest.mark.parametrize(
    "header, value",
    [
        ("Content-Range", f"bytes {HALF + 1}-{SIZE - 1}/{SIZE}"),  # wrong start
        ("Content-Range", f"bytes {HALF}-{SIZE - 1}/{SIZE + 1}"),  # wrong total
        ("ETag", '"0123456789abcdef0123456789abcdef"'),  # another object
        ("x-goog-generation", "42"),
    ],
)
def test_resume_with_wrong_206_is_never_spliced(fetch, mirror, target, payload, header, value, sleeps):
    mirror.hook = cut_then_alter_resume(lambda reply: reply.set_header(header, value))
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, f"bytes={HALF}-", None]  # discarded, restarted from 0


def test_412_on_resume_when_object_changed_restarts_once(bucket, fetch, mirror, target, sleeps):
    new_payload = make_payload(seed=8)
    mirror.hook = on_request(1, close_after=HALF)
    changed = []

    def sleep_and_change(seconds):  # the object is replaced on the server between two attempts
        sleeps.append(seconds)
        if not changed:
            time.sleep(0.01)  # a new mtime, hence a new generation
            (bucket / SOURCE).write_bytes(new_payload)
            changed.append(True)

    fetch(policy=RetryPolicy(read_timeout=2.0, attempts=3, sleep=sleep_and_change, jitter=lambda: 0.0, backoff_base=0.01))
    assert_pass_rule(target, new_payload)
    assert ranges(mirror) == [None, f"bytes={HALF}-", None]
    statuses = [h.get("If-Match") is not None for _, _, h in mirror.body_requests(SOURCE)]
    assert statuses == [False, True, False]


def test_416_for_stale_partial_restarts_once(fetch, mirror, target, payload):
    """A partial longer than the object (it shrank) but bound to its ETag: 416, then one clean restart."""
    target.parent.mkdir(parents=True)
    (target.parent / "obj.bin.part").write_bytes(payload + b"x" * 10)
    meta = {
        "url": "x",
        "size": SIZE + 100,
        "etag": f'"{hashlib.md5(payload).hexdigest()}"',
        "generation": None,
        "crc32c": None,
        "md5": None,
    }
    (target.parent / "obj.bin.part.json").write_text(json.dumps(meta))
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [f"bytes={SIZE + 10}-", None]


def test_partial_larger_than_object_is_discarded_before_asking(fetch, mirror, target, payload):
    target.parent.mkdir(parents=True)
    (target.parent / "obj.bin.part").write_bytes(payload + b"x" * 10)
    meta = {"url": "x", "size": SIZE, "etag": '"abc"', "generation": None, "crc32c": None, "md5": None}
    (target.parent / "obj.bin.part.json").write_text(json.dumps(meta))
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None]


# ---------------------------------------------------------------------------------------------- corruption


def test_flipped_byte_is_retried_then_succeeds(fetch, mirror, target, payload):
    mirror.hook = on_request(1, flip_at=1000)
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, None]  # the bad bytes were discarded, not resumed from


def test_flipped_byte_every_time_is_a_clear_error_and_keeps_old_file(fetch, mirror, target, payload):
    fetch()
    mirror.hook = on_request(0, flip_at=SIZE - 1)
    with pytest.raises(VerificationError) as err:
        fetch(force=True)
    message = str(err.value)
    crc, _ = object_hashes(payload)
    assert f"crc32c expected {crc}, got " in message and "md5" not in message  # crc32c is the check when sent
    assert "gave up after 3 request(s)" in message
    assert len(ranges(mirror)) == 1 + 3  # the first good fetch, then the retry budget
    assert_pass_rule(target, payload)  # the older good file is untouched


def test_gzip_content_encoding_is_refused(fetch, mirror, target, payload):
    body = gzip.compress(payload)

    def hook(reply):
        if reply.method == "GET":
            reply.body = body
            reply.set_header("Content-Encoding", "gzip")
            reply.set_header("Content-Length", str(len(body)))

    mirror.hook = hook
    with pytest.raises(DownloadError, match="Content-Encoding: gzip"):
        fetch()
    assert_pass_rule(target, None)
    assert not (target.parent / "obj.bin.part").exists()


def test_body_longer_than_content_length_is_rejected(fetch, mirror, target, payload):
    mirror.hook = on_request(1, extra=b"trailing garbage after the declared body")
    fetch()
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, None]  # the first body was rejected and discarded


# ---------------------------------------------------------------------------------------------- hash headers


def _hash_header_hook(values: list[str] | None):
    def hook(reply):
        reply.set_header("x-goog-hash", None)
        for v in values or []:
            reply.headers.append(("x-goog-hash", v))

    return hook


@pytest.mark.parametrize(
    "values, recorded",
    [
        (["crc32c={crc}", "md5={md5}"], ("crc", "md5")),  # two lines
        (["crc32c={crc},md5={md5}"], ("crc", "md5")),  # one joined line
        (["crc32c={crc}"], ("crc", None)),  # composite object: no md5
        (["md5={md5}"], (None, "md5")),
    ],
)
def test_hash_header_shapes_are_verified(fetch, mirror, target, payload, values, recorded):
    crc, md5 = object_hashes(payload)
    mirror.hook = _hash_header_hook([v.format(crc=crc, md5=md5) for v in values])
    fetch()
    assert_pass_rule(target, payload)
    record = json.loads((target.parent / "obj.bin.verified.json").read_text())
    assert (record["crc32c"], record["md5"]) == tuple({"crc": crc, "md5": md5}.get(r) for r in recorded)


@pytest.mark.parametrize("values", [["crc32c=AAAAAA=="], ["md5=AAAAAAAAAAAAAAAAAAAAAA=="]])
def test_wrong_single_hash_is_detected(fetch, mirror, target, values):
    mirror.hook = _hash_header_hook(values)
    with pytest.raises(VerificationError, match="expected AAAA"):
        fetch()
    assert_pass_rule(target, None)


@pytest.mark.parametrize("values", [["crc32c=not-base64!"], ["crc32c={crc}", "crc32c=AAAAAA=="]])
def test_malformed_or_conflicting_hash_is_an_error(fetch, mirror, target, payload, values):
    crc, _ = object_hashes(payload)
    mirror.hook = _hash_header_hook([v.format(crc=crc) for v in values])
    with pytest.raises(DownloadError, match="x-goog-hash"):
        fetch()
    assert_pass_rule(target, None)
    assert len(ranges(mirror)) == 1  # not retried: the server's answer is unusable, not flaky


def test_absent_hashes_without_pin_refuse(fetch, mirror, target):
    mirror.hook = _hash_header_hook(None)
    with pytest.raises(VerificationError, match="--allow-unverified"):
        fetch()
    assert_pass_rule(target, None)


def test_absent_hashes_with_allow_unverified_checks_size(fetch, mirror, target, payload):
    mirror.hook = _hash_header_hook(None)
    fetch(verify_hashes=False)
    assert_pass_rule(target, payload)


def test_absent_hashes_fall_back_to_pinned_sha256(fetch, mirror, target, payload, cache):
    mirror.hook = _hash_header_hook(None)
    pinned = ModelEntry(**{**ENTRY.__dict__, "sha256": hashlib.sha256(payload).hexdigest()})
    fetch(pinned)
    assert_pass_rule(target, payload)
    wrong = ModelEntry(**{**ENTRY.__dict__, "sha256": "0" * 64})
    with pytest.raises(VerificationError, match="sha256 expected 0000"):
        fetch(wrong, force=True)
    assert_pass_rule(target, payload)  # the good file stays


# ---------------------------------------------------------------------------------------------- server errors and backoff


def _status_hook(statuses: dict[int, int], headers: dict[str, str] | None = None, every: int | None = None):
    def hook(reply):
        status = statuses.get(reply.number, every)
        if reply.method == "GET" and status is not None:
            reply.status, reply.body = status, b"busy"
            reply.headers = [("Content-Length", "4"), *(headers or {}).items()]

    return hook


def test_503_twice_then_200_backs_off_with_growing_delays(fetch, mirror, target, payload, sleeps):
    mirror.hook = _status_hook({1: 503, 2: 503})
    fetch()
    assert_pass_rule(target, payload)
    assert len(ranges(mirror)) == 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0


def test_backoff_delay_is_jittered_and_capped():
    low = RetryPolicy(backoff_base=1.0, backoff_max=8.0, jitter=lambda: 0.0)
    high = RetryPolicy(backoff_base=1.0, backoff_max=8.0, jitter=lambda: 1.0)
    assert [low.delay(n, None) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [high.delay(n, None) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_500_every_time_gives_up_bounded(fetch, mirror, target, sleeps):
    mirror.hook = _status_hook({}, every=500)
    with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 request"):
        fetch()
    assert len(ranges(mirror)) == 3 and len(sleeps) == 2
    assert_pass_rule(target, None)


def test_deadline_bounds_the_retries(fetch, mirror, target):
    mirror.hook = _status_hook({}, every=503)
    with pytest.raises(DownloadError, match="gave up"):
        fetch(policy=RetryPolicy(attempts=100, max_requests=100, deadline=0.0, sleep=lambda s: None))
    assert len(ranges(mirror)) == 1


@pytest.mark.parametrize("retry_after, slept", [("7", 7.0), ("100000", 120.0)])
def test_429_retry_after_is_honoured_and_capped(fetch, mirror, target, payload, sleeps, retry_after, slept):
    mirror.hook = _status_hook({1: 429}, {"Retry-After": retry_after})
    fetch(policy=RetryPolicy(retry_after_max=120.0, sleep=sleeps.append, read_timeout=2.0))
    assert_pass_rule(target, payload)
    assert sleeps == [slept]


@pytest.mark.parametrize("status", [404, 403])
def test_4xx_is_not_retried(fetch, mirror, target, status):
    mirror.hook = _status_hook({}, every=status)
    with pytest.raises(DownloadError, match=f"HTTP {status}"):
        fetch()
    assert len(ranges(mirror)) == 1
    assert_pass_rule(target, None)


def test_missing_object_404_names_the_url(fetch, mirror, target):
    missing = ModelEntry(**{**ENTRY.__dict__, "source": "distill/nope.npz"})
    with pytest.raises(DownloadError, match=r"HTTP 404 .*distill/nope.npz.*--base-url"):
        fetch(missing)


# ---------------------------------------------------------------------------------------------- stalls and trickles


def test_headers_then_no_bytes_times_out_and_retries(fetch, mirror, target, payload):
    mirror.hook = on_request(1, stall_after=0, stall_seconds=5.0)
    started = time.monotonic()
    fetch()
    assert time.monotonic() - started < 4.0  # the 1 s read timeout fired, not the 5 s stall
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, None]


def test_stall_mid_body_times_out_and_resumes(fetch, mirror, target, payload):
    mirror.hook = on_request(1, stall_after=HALF, stall_seconds=5.0)
    started = time.monotonic()
    fetch()
    assert time.monotonic() - started < 4.0
    assert_pass_rule(target, payload)
    assert ranges(mirror) == [None, f"bytes={HALF}-"]


def test_slow_moving_trickle_is_not_killed(tmp_path, cache, policy):
    small = make_payload(size=64 << 10)
    (tmp_path / "b" / "distill").mkdir(parents=True)
    (tmp_path / "b" / SOURCE).write_bytes(small)
    with serve_directory(tmp_path / "b", hook=on_request(1, trickle=(4 << 10, 0.1))) as server:
        started = time.monotonic()
        fetch_checkpoint(ENTRY, cache_dir=cache, base_url=server.base_url, policy=policy, quiet=True)
        elapsed = time.monotonic() - started
        assert len(server.body_requests(SOURCE)) == 1
    assert elapsed > policy.read_timeout  # longer in all than the read timeout, yet never cut
    assert_pass_rule(cache / SOURCE, small)


# ---------------------------------------------------------------------------------------------- the cache


def test_cached_verified_file_costs_no_request(fetch, mirror, target, payload):
    fetch()
    before = len(mirror.requests)
    assert fetch() == target
    assert len(mirror.requests) == before


def test_cached_file_with_stale_record_but_same_bytes_costs_no_request(fetch, mirror, target, payload):
    fetch()
    before = len(mirror.requests)
    target.touch()  # a new mtime: the record is re-checked by hashing, not by downloading
    assert fetch() == target
    assert len(mirror.requests) == before


def test_corrupt_cached_file_is_replaced_only_after_verification(fetch, mirror, target, payload):
    fetch()
    corrupt = bytearray(payload)
    corrupt[100] ^= 0xFF
    target.write_bytes(bytes(corrupt))
    mirror.hook = on_request(0, flip_at=5)
    with pytest.raises(VerificationError):
        fetch()
    assert target.read_bytes() == corrupt  # not replaced by unverified bytes
    mirror.hook = None
    fetch()
    assert_pass_rule(target, payload)


def test_recorded_sha256(fetch, target, payload, tmp_path):
    fetch()
    sha = hashlib.sha256(payload).hexdigest()
    assert recorded_sha256(target) == sha
    target.write_bytes(b"changed")
    assert recorded_sha256(target) == hashlib.sha256(b"changed").hexdigest()
    record = json.loads((target.parent / "obj.bin.verified.json").read_text())
    assert record["verified"] is False  # a changed file is never laundered into a verified one
    loose = tmp_path / "loose.npz"
    loose.write_bytes(b"abc")
    assert recorded_sha256(loose) == hashlib.sha256(b"abc").hexdigest()
    assert not (tmp_path / "loose.npz.verified.json").exists()  # no sidecars in the user's directories


def test_offline_cached_and_missing(fetch, mirror, target, payload, monkeypatch):
    with pytest.raises(OfflineError, match="not cached"):
        fetch(offline=True)
    assert mirror.requests == []
    fetch()
    before = len(mirror.requests)
    monkeypatch.setenv("BITCONVERT_OFFLINE", "1")
    assert fetch() == target
    assert len(mirror.requests) == before
    target.write_bytes(b"not the checkpoint")
    with pytest.raises(OfflineError, match="not verified"):
        fetch()
    assert len(mirror.requests) == before


def test_force_downloads_again(fetch, mirror, target, payload):
    fetch()
    fetch(force=True)
    assert len(ranges(mirror)) == 2
    assert_pass_rule(target, payload)


def test_resolve_checkpoint(fetch, mirror, cache, tmp_path, policy):
    given = tmp_path / "mine.npz"
    given.write_bytes(b"x")
    assert resolve_checkpoint(ENTRY, given) == given
    assert mirror.requests == []
    with pytest.raises(Exception, match="no such file"):
        resolve_checkpoint(ENTRY, tmp_path / "absent.npz")
    path = resolve_checkpoint(ENTRY, cache_dir=cache, base_url=mirror.base_url, policy=policy, quiet=True)
    assert path == cache / SOURCE and path.exists()


# ---------------------------------------------------------------------------------------------- redirects, proxies


def test_redirect_to_second_host_uses_final_hashes(fetch, mirror, target, payload, bucket):
    with serve_directory(bucket) as second:

        def hook(reply):
            if reply.method == "GET":
                reply.status, reply.body = 302, b""
                reply.headers = [
                    ("Location", second.url(SOURCE)),
                    ("Content-Length", "0"),
                    ("x-goog-hash", "crc32c=AAAAAA=="),  # bogus: must not be the hash checked
                ]

        mirror.hook = hook
        fetch()
        assert len(second.body_requests(SOURCE)) == 1
    assert_pass_rule(target, payload)
    record = json.loads((target.parent / "obj.bin.verified.json").read_text())
    assert record["url"] == second.url(SOURCE)


def test_proxy_from_environment_is_used(fetch, mirror, target, payload, bucket, monkeypatch):
    with serve_directory(bucket) as proxy:  # the mirror understands absolute-URI requests, as a proxy gets them
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.setenv("http_proxy", proxy.base_url)
        fetch()
        assert len(proxy.body_requests(SOURCE)) == 1
    assert mirror.requests == []  # everything went through the proxy
    assert_pass_rule(target, payload)


# ---------------------------------------------------------------------------------------------- progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_tty_bar_starts_at_the_resume_offset():
    stream = FakeTTY()
    progress = _Progress("m", quiet=False, stream=stream)
    progress.start(total=1000, initial=500)
    progress.update(100)
    progress.close()
    text = stream.getvalue()
    first_frame = text.split("\r")[1] if text.startswith("\r") else text.split("\r")[0]
    assert " 50%" in first_frame
    assert " 60%" in text


def test_tty_bar_of_a_second_attempt_jumps_to_its_offset():
    stream = FakeTTY()
    progress = _Progress("m", quiet=False, stream=stream)
    progress.start(total=1000, initial=0)
    progress.update(300)
    progress.start(total=1000, initial=300)  # resumed after a failure
    frames = [f for f in stream.getvalue().split("\r") if "%" in f]
    progress.close()
    assert " 30%" in frames[-1]
    assert not any("  0%" in f for f in frames[1:])  # never back to 0% on a resume


def test_plain_progress_is_a_few_lines_without_carriage_returns():
    stream = io.StringIO()
    progress = _Progress("m", quiet=False, stream=stream)
    progress.start(total=10_000_000, initial=5_000_000)
    for _ in range(50):
        progress.update(100_000)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("m: resuming at 5.0 MB (50%)")
    assert 5 <= len(lines) <= 7  # one per 10%, not one per chunk


def test_quiet_progress_prints_nothing():
    stream = FakeTTY()
    progress = _Progress("m", quiet=True, stream=stream)
    progress.start(total=100, initial=0)
    progress.update(100)
    progress.note("hello")
    progress.close()
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------------------------- lock and leftovers


def test_busy_lock_past_timeout_downloads_privately(fetch, mirror, target, payload, cache, sleeps):
    """Correctness does not depend on the lock: a lock held elsewhere costs a private download, nothing more."""
    import fcntl

    target.parent.mkdir(parents=True)
    with open(target.parent / "obj.bin.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what a hung process on another host or an old soft lock looks like
        policy = RetryPolicy(lock_timeout=0.2, sleep=sleeps.append, read_timeout=1.0)
        fetch(policy=policy)
        names = sorted(p.name for p in target.parent.iterdir())
        assert names == ["obj.bin", "obj.bin.lock", "obj.bin.verified.json"]  # no .part, no private temp left
    assert_pass_rule(target, payload)


def test_temp_files_of_dead_processes_are_removed(fetch, target, payload):
    target.parent.mkdir(parents=True)
    dead = target.parent / ".obj.bin.999999999.0badcafe.tmp"  # no such pid
    dead.write_bytes(b"half renamed")
    fetch()
    assert not dead.exists()
    assert_pass_rule(target, payload)


def test_complete_partial_is_verified_without_a_request(fetch, mirror, target, payload):
    """Killed after the last byte but before the rename: the rerun only verifies."""
    crc, md5 = object_hashes(payload)
    target.parent.mkdir(parents=True)
    (target.parent / "obj.bin.part").write_bytes(payload)
    etag = f'"{hashlib.md5(payload).hexdigest()}"'
    meta = {"url": "x", "size": SIZE, "etag": etag, "generation": None, "crc32c": crc, "md5": md5}
    (target.parent / "obj.bin.part.json").write_text(json.dumps(meta))
    fetch()
    assert mirror.requests == []
    assert_pass_rule(target, payload)


def test_resume_206_without_hashes_still_verifies_against_the_first_response(fetch, mirror, target, payload):
    def strip_hashes_and_corrupt(reply):  # proxies strip x-goog-hash from partial responses...
        reply.set_header("x-goog-hash", None)
        reply.flip_at = SIZE - 10  # ...and this one also corrupts a byte

    mirror.hook = cut_then_alter_resume(strip_hashes_and_corrupt)
    fetch()
    assert_pass_rule(target, payload)
    # the spliced file failed the hashes kept from the first response: discarded, fetched again whole
    assert ranges(mirror) == [None, f"bytes={HALF}-", None]


# ---------------------------------------------------------------------------------------------- other files of the bucket

LEMMAS = "ilsvrc2012_wordnet_lemmas.txt"


def test_fetch_file_shares_the_verified_download_and_cache(bucket, mirror, cache, policy, monkeypatch):
    text = "".join(f"class {i}, lemma {i}\n" for i in range(1000)).encode()
    (bucket / LEMMAS).write_bytes(text)
    lines: list[str] = []
    path = fetch_file(LEMMAS, cache_dir=cache, base_url=mirror.base_url, policy=policy, log=lines.append)
    assert path == cache / LEMMAS and path.read_bytes() == text
    assert_pass_rule(path, text)
    record = json.loads((cache / f"{LEMMAS}.verified.json").read_text())
    assert record["sha256"] == hashlib.sha256(text).hexdigest() and record["checked"] == ["crc32c"]
    assert lines[-1].startswith(f"{LEMMAS}: verified {path}")
    assert [r[1] for r in mirror.body_requests()] == [LEMMAS]
    assert fetch_file(LEMMAS, cache_dir=cache, offline=True, log=lines.append) == path  # cached: no network
    assert len(mirror.requests) == 1
    monkeypatch.setenv("BITCONVERT_BASE_URL", mirror.base_url)  # the base URL from the environment, as for checkpoints
    fetch_file(LEMMAS, cache_dir=cache, force=True, policy=policy, quiet=True)
    assert len(mirror.body_requests(LEMMAS)) == 2


def test_fetch_file_is_verified_and_offline_like_checkpoints(bucket, mirror, cache, policy):
    (bucket / LEMMAS).write_bytes(b"tench, Tinca tinca\n")
    with pytest.raises(OfflineError, match=f"{LEMMAS}: offline mode and .* is not cached"):
        fetch_file(LEMMAS, cache_dir=cache, base_url=mirror.base_url, offline=True, policy=policy)
    assert mirror.requests == []
    mirror.hook = _hash_header_hook(["crc32c=AAAAAA=="])
    with pytest.raises(VerificationError, match="crc32c expected AAAAAA=="):
        fetch_file(LEMMAS, cache_dir=cache, base_url=mirror.base_url, quiet=True, policy=policy)
    assert_pass_rule(cache / LEMMAS, None)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch_file("imagenet21k_wordnet_lemmas.txt", cache_dir=cache, base_url=mirror.base_url, quiet=True, policy=policy)
    with pytest.raises(UsageError, match="not an object name"):
        fetch_file("../escape.txt", cache_dir=cache, base_url=mirror.base_url, policy=policy)
