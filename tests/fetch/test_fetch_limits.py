"""What the downloader gives up on, and when: the minimum-throughput rule, and failures no retry can cure.

Against convert.testing.mirror on 127.0.0.1 (a trickle, a stall, a redirect loop) or a closed loopback
port, with a policy of small numbers; each case is timed and its requests counted, so a rule that
retried what cannot succeed, or waited on a server that will never deliver, fails here.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from fetch_support import ENTRY, SOURCE, assert_pass_rule, make_payload, registry_yaml

from convert import config
from convert.errors import DownloadError, UsageError
from convert.fetch import RetryPolicy, fetch_checkpoint, speed_policy
from convert.fetch.http import LOOPBACK_REFUSED_ATTEMPTS, LOOPBACK_REFUSED_DELAY, refused_retry


@pytest.fixture
def payload() -> bytes:
    return make_payload(size=256 << 10)


def _policy(sleeps, **overrides) -> RetryPolicy:
    """Retries that would go on for a while (5 attempts, 10 s reads) unless a rule stops them."""
    fields = dict(
        connect_timeout=2.0, read_timeout=10.0, attempts=5, max_requests=50, deadline=60.0, backoff_base=0.01, backoff_max=0.02
    )
    return RetryPolicy(**{**fields, "sleep": sleeps.append, "jitter": lambda: 1.0, **overrides})


def _every_get(**faults):
    def hook(reply):
        if reply.method == "GET":
            for name, value in faults.items():
                setattr(reply, name, value)

    return hook


def _fetch(base_url: str, cache: Path, policy: RetryPolicy):
    return fetch_checkpoint(ENTRY, cache_dir=cache, base_url=base_url, policy=policy, quiet=True)


def test_a_trickle_below_the_floor_gives_up_at_once(mirror, cache, target, payload, sleeps):
    mirror.hook = _every_get(trickle=(64, 0.1))  # 640 B/s, moving: the read timeout never fires
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"B/s\), below the minimum speed of 10000 B/s over 1 s; gave up") as info:
        _fetch(mirror.base_url, cache, _policy(sleeps, min_speed=10_000, min_speed_time=1.0))
    assert time.monotonic() - started < 5.0
    assert len(mirror.body_requests(SOURCE)) == 1 and sleeps == []  # final: not retried
    assert "--min-speed" in str(info.value)
    assert_pass_rule(target, None, payload)  # what came in is kept for a resume


def test_a_stall_ends_the_download_after_the_floors_stretch(mirror, cache, target, payload, sleeps):
    mirror.hook = _every_get(stall_after=0, stall_seconds=30.0)  # headers, then nothing
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"no bytes for \d+ s \(stalled\)"):
        _fetch(mirror.base_url, cache, _policy(sleeps, min_speed=10_000, min_speed_time=1.0))
    assert time.monotonic() - started < 5.0  # the 1 s stretch, not the 10 s read timeout or 30 s stall
    assert len(mirror.body_requests(SOURCE)) == 1
    assert_pass_rule(target, None, payload)


def test_a_slow_server_above_the_floor_finishes(mirror, cache, target, payload, sleeps):
    mirror.hook = _every_get(trickle=(16 << 10, 0.05))  # about 320 kB/s over several stretches
    _fetch(mirror.base_url, cache, _policy(sleeps, min_speed=10_000, min_speed_time=0.3))
    assert len(mirror.body_requests(SOURCE)) == 1
    assert_pass_rule(target, payload)


def test_a_redirect_loop_is_not_retried(mirror, cache, sleeps):
    def loop(reply):
        reply.status, reply.body = 302, b""
        reply.set_header("Location", mirror.url(SOURCE))
        reply.set_header("Content-Length", "0")
        reply.set_header("Connection", "close")  # the mirror closes after a body it was given

    mirror.hook = loop
    with pytest.raises(DownloadError, match="redirect loop"):
        _fetch(mirror.base_url, cache, _policy(sleeps))
    assert len(mirror.body_requests(SOURCE)) <= 31 and sleeps == []  # one request's redirects, no retry


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_on_loopback_gets_one_short_retry(cache, sleeps):
    started = time.monotonic()
    with pytest.raises(DownloadError, match="connection refused by 127.0.0.1") as info:
        _fetch(f"http://127.0.0.1:{_closed_port()}/", cache, _policy(sleeps))
    assert "gave up after 2 request(s)" in str(info.value)
    assert sleeps == [LOOPBACK_REFUSED_DELAY] * (LOOPBACK_REFUSED_ATTEMPTS - 1)
    assert time.monotonic() - started < 5.0


def test_a_refusal_from_another_host_keeps_the_full_budget():
    refused = ConnectionError("Failed to establish a new connection")
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert refused_retry(refused, "https://storage.googleapis.com/bit_models/x.npz") is None
    assert refused_retry(refused, "http://localhost:8000/x.npz").attempts == LOOPBACK_REFUSED_ATTEMPTS
    assert refused_retry(TimeoutError("timed out"), "http://127.0.0.1:8000/x.npz") is None


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/bucket/", "not a url", "http:///no-host/", "file:///tmp/bucket/"])
def test_a_base_url_that_is_not_http_is_refused_before_any_request(cache, sleeps, url):
    started = time.monotonic()
    with pytest.raises(UsageError, match="is not an http:// or https:// URL with a host"):
        _fetch(url, cache, _policy(sleeps))
    assert time.monotonic() - started < 1.0 and sleeps == []


def test_the_floor_comes_from_the_environment_and_the_options(monkeypatch):
    monkeypatch.delenv(config.MIN_SPEED, raising=False)
    monkeypatch.delenv(config.MIN_SPEED_TIME, raising=False)
    default = speed_policy()
    assert (default.min_speed, default.min_speed_time) == (config.MIN_SPEED_DEFAULT, config.MIN_SPEED_TIME_DEFAULT)
    monkeypatch.setenv(config.MIN_SPEED, "500")
    monkeypatch.setenv(config.MIN_SPEED_TIME, "20")
    assert (speed_policy().min_speed, speed_policy().min_speed_time) == (500, 20)
    assert speed_policy(min_speed=0).min_speed == 0  # an option wins over the environment
    monkeypatch.setenv(config.MIN_SPEED, "fast")
    with pytest.raises(UsageError, match="BITCONVERT_MIN_SPEED must be a number"):
        speed_policy()


def test_the_cli_gives_up_with_status_4_and_says_why(invoke, mirror, cache, tmp_path, monkeypatch):
    registry = tmp_path / "registry.yaml"
    registry.write_text(registry_yaml({"test-a": SOURCE}))
    monkeypatch.setenv("BITCONVERT_REGISTRY", str(registry))
    mirror.hook = _every_get(trickle=(64, 0.1))
    args = [
        "fetch",
        "test-a",
        "--cache-dir",
        cache,
        "--base-url",
        mirror.base_url,
        "--min-speed",
        "10000",
        "--min-speed-time",
        "1",
    ]
    result = invoke(*args)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].startswith("bitconvert: error: ") and "below the minimum speed" in result.stderr
    bad = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", "ftp://127.0.0.1/")
    assert bad.exit_code == 2 and "not an http:// or https:// URL" in bad.stderr
    help_text = invoke("fetch", "--help").output
    assert "--min-speed" in help_text and "BITCONVERT_MIN_SPEED" in help_text
