"""Pieces of the predict tests: a huge PNG that costs little to write, and the ways an export gets damaged."""

from __future__ import annotations

import shutil
import struct
import zlib

MODEL = "r50x1-160"


def huge_png(path, width: int, height: int) -> None:
    """A valid black PNG of ``width x height`` pixels in a few hundred kB (zeros compress)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(1 + 3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def damage(root, how: str) -> None:
    """Damage the export under ``root`` as ``how`` says (a case of test_a_damaged_export_is_one_line_and_status_1)."""
    sm = root / MODEL / "classification"
    if how == "no variables/":
        shutil.rmtree(sm / "variables")
    elif how == "truncated variables.data":
        data = sm / "variables" / "variables.data-00000-of-00001"
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    elif how == "corrupt saved_model.pb":
        (sm / "saved_model.pb").write_bytes(b"\x00garbage" * 100)
    elif how == "truncated .tflite":
        f = root / MODEL / "tflite" / "classification.tflite"
        f.write_bytes(f.read_bytes()[:4096])
    elif how == "truncated .onnx":
        f = root / MODEL / "onnx" / "classification.onnx"
        f.write_bytes(f.read_bytes()[:4096])
    elif how == "corrupt manifest":
        (root / MODEL / "manifest.json").write_text("{not json")
