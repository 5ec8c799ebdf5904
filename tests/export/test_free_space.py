"""The free-space check before an export counts every format it will write (and the archives)."""

from __future__ import annotations

import shutil

import pytest

from convert.errors import LocalIOError
from convert.export.publish import check_free_space, export_bytes


def test_every_format_writes_two_variants_of_the_weights():
    one = export_bytes(1_000_000, ("savedmodel",))
    assert one == pytest.approx(2_000_000, rel=0.1)
    assert export_bytes(1_000_000, ("savedmodel", "keras", "tflite", "onnx")) == 4 * one
    assert export_bytes(1_000_000, ("onnx",)) == one
    assert export_bytes(1_000_000, ("savedmodel", "tflite"), archive=True) == 2 * one + one  # two tar.gz of the SavedModels


def test_an_export_larger_than_the_free_space_is_refused(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    weights = free // 7  # fits as a SavedModel (2 copies), not in four formats (8 copies)
    check_free_space(tmp_path / "out", export_bytes(weights, ("savedmodel",)))
    with pytest.raises(LocalIOError, match="not enough free space"):
        check_free_space(tmp_path / "out", export_bytes(weights, ("savedmodel", "keras", "tflite", "onnx")))
