"""Re-exported ``.keras`` files byte-identical: the zip Keras wrote, rewritten with fixed metadata, ids and times.

``model.save`` makes three things differ on every save: ``metadata.json``'s
``date_saved`` (the wall clock), ``config.json``'s ``shared_object_id``
values (``id()`` of the shared objects: memory addresses) and the zip
members' modification times. :func:`make_reproducible` rewrites the file
with ``date_saved`` fixed at the zip format's epoch, the ids renumbered in
order of first appearance (each id names the same object as before:
``keras.saving.load_model`` only matches them within the file) and every
member dated at the epoch; members, their order and their compression stay
as Keras wrote them. The weights are copied in chunks, never held whole.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

from ..fsutil import atomic_writer

#: The zip format's earliest date: every member's time, and ``date_saved`` in Keras's format.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
DATE_SAVED = "1980-01-01@00:00:00"
_SHARED_ID = re.compile(rb'"shared_object_id": (\d+)')
_CHUNK = 1 << 20


def stable_ids(config: bytes) -> bytes:
    """``config.json`` with every ``shared_object_id`` renumbered 1, 2, ... in order of first appearance."""
    numbers: dict[bytes, int] = {}

    def renumber(match: re.Match) -> bytes:
        n = numbers.setdefault(match[1], len(numbers) + 1)
        return b'"shared_object_id": ' + str(n).encode()

    return _SHARED_ID.sub(renumber, config)


def fixed_metadata(metadata: bytes) -> bytes:
    data = json.loads(metadata)
    if "date_saved" in data:
        data["date_saved"] = DATE_SAVED
    return json.dumps(data).encode()


_REWRITE = {"metadata.json": fixed_metadata, "config.json": stable_ids}


def make_reproducible(path: str | Path) -> None:
    """Rewrite the ``.keras`` file at ``path`` so that the same model always gives the same bytes (atomically)."""
    path = Path(path)
    with zipfile.ZipFile(path) as src, atomic_writer(path) as f, zipfile.ZipFile(f, "w") as dst:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, ZIP_EPOCH)
            member.compress_type = info.compress_type
            member.external_attr = 0o644 << 16
            if info.filename in _REWRITE:
                dst.writestr(member, _REWRITE[info.filename](src.read(info)))
                continue
            member.file_size = info.file_size
            with src.open(info) as r, dst.open(member, "w", force_zip64=info.file_size >= zipfile.ZIP64_LIMIT) as w:
                shutil.copyfileobj(r, w, _CHUNK)
