"""Shared pieces of the downloader tests: the test object, its payload and the fault matrix's pass rule.

The fixtures built on them (``mirror``, ``cache``, ``target``) live in conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from filelock import FileLock

from convert.registry import ModelEntry

SIZE = 1 << 20
HALF = SIZE // 2
SOURCE = "distill/obj.bin"
#: The registry entry of the test object (fetch reads only its id, source and sha256).
ENTRY = ModelEntry(
    id="test-obj",
    source=SOURCE,
    units=(3, 4, 6, 3),
    width=1,
    classes=10,
    resolution=32,
    params=1,
    dataset="synthetic",
    description="a random test object",
)


def registry_yaml(sources: dict[str, str]) -> str:
    """A registry (checkpoints.yaml text) whose entries ``id -> source`` are test objects, not checkpoints."""
    entries = "".join(
        f"  {model_id}:\n    source: {source}\n    depth: 50\n    width: 1\n    classes: 10\n    resolution: 32\n"
        f"    params: 1\n    dataset: synthetic\n    description: test object {model_id}\n    code: big_vision\n"
        for model_id, source in sources.items()
    )
    return "models:\n" + entries


def make_payload(seed: int = 7, size: int = SIZE) -> bytes:
    return random.Random(seed).randbytes(size)


def assert_pass_rule(target: Path, expected: bytes | None, payload: bytes | None = None) -> None:
    """The fault matrix's pass rule. ``expected``: the bytes at the final path, or None for no file."""
    if expected is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == expected
    if not target.parent.exists():
        return
    names = {p.name for p in target.parent.iterdir()}
    leftovers = names - {target.name, f"{target.name}.lock", f"{target.name}.verified.json"}
    if leftovers:  # only a partial download bound to the very object it belongs to
        assert leftovers == {f"{target.name}.part", f"{target.name}.part.json"}, leftovers
        meta = json.loads((target.parent / f"{target.name}.part.json").read_text())
        source = payload if payload is not None else expected
        assert meta["size"] == len(source) and meta["etag"] == f'"{hashlib.md5(source).hexdigest()}"'
        assert source.startswith((target.parent / f"{target.name}.part").read_bytes())
    lock_path = target.parent / f"{target.name}.lock"
    if lock_path.exists():
        lock = FileLock(str(lock_path))
        lock.acquire(blocking=False)  # raises Timeout if anyone still holds it
        lock.release()
