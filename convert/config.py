"""Every ``BITCONVERT_*`` environment variable: its name, default and parser, in one place.

    config = from_env()          # or from_env({"BITCONVERT_OFFLINE": "yes"}) in a test
    config.cache_dir, config.base_url, config.offline, config.registry, config.debug, config.reference,
    config.min_speed, config.min_speed_time

Nothing else in the package reads these variables. Booleans follow click's
rules (``1/true/t/yes/y/on`` and ``0/false/f/no/n/off``, any case; empty is
unset), so a value means the same to an option's environment variable and to
the library. An unrecognised boolean is a UsageError naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError

CACHE = "BITCONVERT_CACHE"
BASE_URL = "BITCONVERT_BASE_URL"
OFFLINE = "BITCONVERT_OFFLINE"
REGISTRY = "BITCONVERT_REGISTRY"
DEBUG = "BITCONVERT_DEBUG"
REFERENCE = "BITCONVERT_REFERENCE"
MIN_SPEED = "BITCONVERT_MIN_SPEED"
MIN_SPEED_TIME = "BITCONVERT_MIN_SPEED_TIME"

DEFAULT_BASE_URL = "https://storage.googleapis.com/bit_models/"
#: Where the JAX reference runs: decided from the machine (auto), in a worker process, or in this process.
REFERENCE_MODES = ("auto", "worker", "inline")
REFERENCE_DEFAULT = "auto"
#: The downloader's minimum-throughput rule: fewer bytes a second than this, averaged over
#: MIN_SPEED_TIME_DEFAULT seconds, ends a download (docs/fetch.md). 0 turns it off.
MIN_SPEED_DEFAULT = 10_000.0
MIN_SPEED_TIME_DEFAULT = 60.0


@dataclass(frozen=True)
class Config:
    """The settings the environment gives; one field per variable."""

    #: BITCONVERT_CACHE; default ``$XDG_CACHE_HOME/bitconvert``, else ``~/.cache/bitconvert``.
    cache_dir: Path
    #: BITCONVERT_BASE_URL, always ending in "/"; default the public BiT bucket.
    base_url: str
    #: BITCONVERT_OFFLINE: never touch the network.
    offline: bool = False
    #: BITCONVERT_REGISTRY: another checkpoints.yaml (None: the shipped one).
    registry: Path | None = None
    #: BITCONVERT_DEBUG: full tracebacks instead of one-line errors.
    debug: bool = False
    #: BITCONVERT_REFERENCE: auto, worker or inline (convert.parity.placement).
    reference: str = REFERENCE_DEFAULT
    #: BITCONVERT_MIN_SPEED (bytes a second) and BITCONVERT_MIN_SPEED_TIME (seconds): the download floor.
    min_speed: float = MIN_SPEED_DEFAULT
    min_speed_time: float = MIN_SPEED_TIME_DEFAULT


def parse_bool(name: str, value: str | None, default: bool = False) -> bool:
    """The boolean an environment variable holds (click's rules); unset or empty gives ``default``."""
    from click.types import BoolParamType

    if value is None or not value.strip():
        return default
    parsed = BoolParamType.str_to_bool(value)
    if parsed is None:
        raise UsageError(f"{name}={value!r} is not a boolean: use 1/yes/true/on or 0/no/false/off")
    return parsed


def _path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_CACHE_HOME/bitconvert``, else ``~/.cache/bitconvert`` (BITCONVERT_CACHE aside)."""
    xdg = _path(environ.get("XDG_CACHE_HOME"))
    return (xdg or Path.home() / ".cache") / "bitconvert"


def normalise_base_url(url: str, source: str = "--base-url") -> str:
    """``url`` ending in "/"; a UsageError naming ``source`` unless it is an http(s) URL with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source} {url!r} is not an http:// or https:// URL with a host (e.g. {DEFAULT_BASE_URL})")
    return url if url.endswith("/") else url + "/"


def parse_number(name: str, value: str | None, default: float, minimum: float = 0.0) -> float:
    """A number variable (unset or empty: ``default``); anything else, or below ``minimum``, is a UsageError."""
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number >= minimum:
        raise UsageError(f"{name} must be a number >= {minimum:g}, got {value!r}")
    return number


def from_env(environ: Mapping[str, str] | None = None) -> Config:
    """Parse the variables of ``environ`` (default ``os.environ``), read at call time."""
    env = os.environ if environ is None else environ
    return Config(
        cache_dir=_path(env.get(CACHE)) or default_cache_dir(env),
        base_url=normalise_base_url(env.get(BASE_URL) or DEFAULT_BASE_URL, BASE_URL),
        offline=parse_bool(OFFLINE, env.get(OFFLINE)),
        registry=_path(env.get(REGISTRY)),
        debug=parse_bool(DEBUG, env.get(DEBUG)),
        reference=parse_reference(env.get(REFERENCE)),
        min_speed=parse_number(MIN_SPEED, env.get(MIN_SPEED), MIN_SPEED_DEFAULT),
        min_speed_time=parse_number(MIN_SPEED_TIME, env.get(MIN_SPEED_TIME), MIN_SPEED_TIME_DEFAULT, minimum=1.0),
    )


def parse_reference(value: str | None) -> str:
    """A BITCONVERT_REFERENCE value (auto, worker or inline; unset or empty: auto). A bad value is a UsageError."""
    value = (value or "").strip().lower()
    if not value:
        return REFERENCE_DEFAULT
    if value not in REFERENCE_MODES:
        raise UsageError(f"{REFERENCE} must be one of {', '.join(REFERENCE_MODES)}, got {value!r}")
    return value


def reference_mode(environ: Mapping[str, str] | None = None) -> str:
    """``BITCONVERT_REFERENCE`` of ``environ`` (default ``os.environ``)."""
    return parse_reference((os.environ if environ is None else environ).get(REFERENCE))


#: A test seam, not a setting: ``<step>:<file>`` makes an export create <file> when it reaches
#: <step> (convert.interrupts.pause_point) and wait there for a signal, so that a test can
#: signal it at a known moment (tests/export/test_faults.py).
TEST_PAUSE_AT = "BITCONVERT_TEST_PAUSE_AT"


def test_pause_at(environ: Mapping[str, str] | None = None) -> tuple[str, Path] | None:
    """``BITCONVERT_TEST_PAUSE_AT`` of ``environ`` as (step, file), or None when unset."""
    value = (os.environ if environ is None else environ).get(TEST_PAUSE_AT) or ""
    step, sep, file = value.partition(":")
    return (step, Path(file)) if sep and step and file else None
