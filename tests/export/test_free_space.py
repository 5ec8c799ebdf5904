"""The free-space check before an export counts every format it will write (and the archives)."""

from __future__ import annotations

import shutil

import pytest
from fake_target import FakeTarget

from convert.errors import LocalIOError
from convert.export.formats import get_targets
from convert.export.publish import check_free_space
from convert.export.publish import export_bytes as _export_bytes
from convert.export.state import ExportOptions

ALL = ("savedmodel", "keras", "tflite", "onnx")


def export_bytes(weights: int, formats, archive: bool = False) -> int:
    return _export_bytes(weights, get_targets(formats), ExportOptions(formats=tuple(formats), archive=archive))


def test_every_format_writes_two_variants_of_the_weights():
    one = export_bytes(1_000_000, ("savedmodel",))
    assert one == pytest.approx(2_000_000, rel=0.1)
    assert export_bytes(1_000_000, ALL) == 4 * one
    assert export_bytes(1_000_000, ("onnx",)) == one
    assert export_bytes(1_000_000, ("savedmodel", "tflite"), archive=True) == 2 * one + one  # two tar.gz of the SavedModels


def test_a_target_the_package_does_not_have_counts_through_the_interface():
    options = ExportOptions(archive=True)
    assert _export_bytes(1_000_000, [FakeTarget()], options) == export_bytes(1_000_000, ("onnx",))


def test_an_export_larger_than_the_free_space_is_refused(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    weights = free // 7  # fits as a SavedModel (2 copies), not in four formats (8 copies)
    check_free_space(tmp_path / "out", export_bytes(weights, ("savedmodel",)))
    with pytest.raises(LocalIOError, match="not enough free space"):
        check_free_space(tmp_path / "out", export_bytes(weights, ALL))
