"""convert.config: every BITCONVERT_* variable parsed in one place, booleans as click parses them."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from convert import config
from convert.errors import OfflineError, UsageError
from convert.fetch import fetch_file


@pytest.mark.parametrize("value", sorted(click.types.BoolParamType.bool_states))
def test_booleans_mean_what_they_mean_to_click(value):
    expected = click.BOOL.convert(value, None, None)
    assert config.from_env({config.OFFLINE: value, "HOME": "/h"}).offline is expected
    assert config.from_env({config.DEBUG: value.upper(), "HOME": "/h"}).debug is expected


def test_defaults_and_values():
    plain = config.from_env({"HOME": "/h", "XDG_CACHE_HOME": "/x"})
    assert plain == config.Config(cache_dir=Path("/x/bitconvert"), base_url=config.DEFAULT_BASE_URL)
    set_ = config.from_env({config.CACHE: "/c", config.BASE_URL: "http://127.0.0.1:9/m", config.REGISTRY: "/r.yaml"})
    assert (set_.cache_dir, set_.base_url, set_.registry) == (Path("/c"), "http://127.0.0.1:9/m/", Path("/r.yaml"))


def test_a_malformed_boolean_names_the_variable():
    with pytest.raises(UsageError, match=r"BITCONVERT_OFFLINE='maybe' is not a boolean"):
        config.from_env({config.OFFLINE: "maybe"})


def test_offline_y_from_the_environment_keeps_the_downloader_offline(monkeypatch, tmp_path):
    """`y` is true to click; the downloader reads the same variable the same way (no request is even tried)."""
    monkeypatch.setenv(config.OFFLINE, "y")
    with pytest.raises(OfflineError, match="offline mode"):
        fetch_file("labels.txt", cache_dir=tmp_path, base_url="http://127.0.0.1:9/")


def test_cli_reports_a_malformed_variable_in_one_line(invoke, monkeypatch, tmp_path):
    monkeypatch.setenv(config.OFFLINE, "maybe")
    res = invoke("fetch", "r50x1-160", "--cache-dir", tmp_path)
    assert res.exit_code == 2
    assert (
        res.stderr.strip()
        == "bitconvert: error: BITCONVERT_OFFLINE='maybe' is not a boolean: use 1/yes/true/on or 0/no/false/off"
    )
