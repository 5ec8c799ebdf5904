"""`bitconvert fetch` through the command line (CliRunner): stdout, stderr, exit statuses, overrides."""

from __future__ import annotations

import hashlib
import json

import pytest
from fetch_support import HALF, SOURCE, assert_pass_rule, make_payload, registry_yaml

import convert.fetch
from convert.fetch import RetryPolicy
from convert.testing.mirror import serve_directory

OTHER = "other/b.bin"
REGISTRY = registry_yaml({"test-a": SOURCE, "test-b": OTHER})


@pytest.fixture
def payloads() -> dict[str, bytes]:
    return {SOURCE: make_payload(1), OTHER: make_payload(2, size=300_000)}


@pytest.fixture
def mirror(tmp_path, payloads):
    for source, data in payloads.items():
        (tmp_path / "bucket" / source).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "bucket" / source).write_bytes(data)
    with serve_directory(tmp_path / "bucket") as server:
        yield server


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """A two-entry registry, no inherited BITCONVERT_* settings, a fast retry policy."""
    for name in ("BITCONVERT_CACHE", "BITCONVERT_BASE_URL", "BITCONVERT_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    registry = tmp_path / "registry.yaml"
    registry.write_text(REGISTRY)
    monkeypatch.setenv("BITCONVERT_REGISTRY", str(registry))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(convert.fetch, "DEFAULT_POLICY", RetryPolicy(read_timeout=1.0, attempts=2, sleep=lambda s: None))


def test_stdout_carries_only_the_paths(invoke, mirror, cache, payloads):
    result = invoke("fetch", "test-a", "test-b", "--cache-dir", cache, "--base-url", mirror.base_url)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{cache / SOURCE}\n{cache / OTHER}\n"
    for source, data in payloads.items():
        assert_pass_rule(cache / source, data)


def test_progress_is_plain_lines_on_a_pipe(invoke, mirror, cache):
    mirror.hook = lambda r: setattr(r, "close_after", HALF) if r.method == "GET" and r.number == 1 else None
    result = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url)
    assert result.exit_code == 0, result.stderr
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("test-a: ") for line in lines)
    assert any(line.startswith("test-a: resuming at 0.5 MB (50%)") for line in lines)  # the bar starts at the offset
    assert len(lines) < 20


def test_quiet_prints_nothing_on_stderr(invoke, mirror, cache):
    result = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url, "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == f"{cache / SOURCE}\n"


def test_all_fetches_every_entry(invoke, mirror, cache):
    result = invoke("fetch", "--all", "--cache-dir", cache, "--base-url", mirror.base_url, "-q")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [str(cache / SOURCE), str(cache / OTHER)]


def test_base_url_and_cache_from_environment(invoke, mirror, tmp_path, monkeypatch, payloads):
    monkeypatch.setenv("BITCONVERT_BASE_URL", mirror.base_url)
    monkeypatch.setenv("BITCONVERT_CACHE", str(tmp_path / "envcache"))
    result = invoke("fetch", "test-a", "test-b", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [str(tmp_path / "envcache" / SOURCE), str(tmp_path / "envcache" / OTHER)]
    assert sorted(path for _, path, _ in mirror.requests) == sorted(payloads)  # every request went to the mirror


def test_base_url_flag_sends_every_request_to_the_mirror(invoke, mirror, tmp_path):
    result = invoke("fetch", "test-b", "--base-url", mirror.base_url.rstrip("/"), "-q")  # no trailing slash
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'xdg' / 'bitconvert' / OTHER}\n"  # default cache under XDG_CACHE_HOME
    assert [path for _, path, _ in mirror.requests] == [OTHER]


def test_offline_flag_and_env(invoke, mirror, cache, monkeypatch):
    result = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url, "--offline")
    assert result.exit_code == 5
    assert result.stderr.startswith("bitconvert: error: test-a: offline mode") and result.stderr.count("\n") == 1
    assert mirror.requests == []
    assert invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url, "-q").exit_code == 0
    requests_before = len(mirror.requests)
    monkeypatch.setenv("BITCONVERT_OFFLINE", "1")
    result = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url)
    assert result.exit_code == 0 and result.stdout == f"{cache / SOURCE}\n"
    assert len(mirror.requests) == requests_before


@pytest.mark.parametrize(
    "args, message",
    [
        (["fetch"], "name one or more model ids, or pass --all"),
        (["fetch", "test-a", "--all"], "name one or more model ids, or pass --all"),
        (["fetch", "test-c"], "unknown model id 'test-c'; did you mean"),
    ],
)
def test_usage_errors(invoke, args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_http_404_is_one_line_exit_4(invoke, cache, tmp_path):
    (tmp_path / "empty-bucket").mkdir()
    with serve_directory(tmp_path / "empty-bucket") as server:
        result = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", server.base_url)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].startswith("bitconvert: error: HTTP 404")
    assert "Traceback" not in result.stderr
    assert not (cache / SOURCE).exists()


def test_allow_unverified_flag(invoke, mirror, cache, payloads):
    mirror.hook = lambda r: r.set_header("x-goog-hash", None)
    refused = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url, "-q")
    assert refused.exit_code == 1 and "--allow-unverified" in refused.stderr
    assert not (cache / SOURCE).exists()
    accepted = invoke("fetch", "test-a", "--cache-dir", cache, "--base-url", mirror.base_url, "-q", "--allow-unverified")
    assert accepted.exit_code == 0
    assert_pass_rule(cache / SOURCE, payloads[SOURCE])
    record = json.loads((cache / f"{SOURCE}.verified.json").read_text())
    assert record["sha256"] == hashlib.sha256(payloads[SOURCE]).hexdigest()
