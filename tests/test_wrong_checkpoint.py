"""A checkpoint of another architecture says what it is and which registry ids it fits (issue 12, item 6)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from conftest import R152X2

from convert.checkpoint import inspect_checkpoint, load_checkpoint
from convert.errors import CheckpointError
from convert.model.architecture import Architecture, checkpoint_layout

R50X1 = Architecture.from_depth(50, 1, 1000)


def write_zero_checkpoint(path, arch: Architecture) -> None:
    """An official-layout .npz of zeros, deflated (a 0.95 GB R152x2 in a few MB): headers and sizes are real."""
    chunk = np.zeros(1 << 22, np.float32).tobytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, shape in checkpoint_layout(arch).items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": shape})
                left = int(np.prod(shape)) * 4
                while left:
                    n = min(left, len(chunk))
                    f.write(chunk[:n])
                    left -= n


@pytest.fixture(scope="module")
def r152x2_zeros(tmp_path_factory):
    path = tmp_path_factory.mktemp("wrong") / "R152x2_T_384.npz"
    write_zero_checkpoint(path, R152X2)
    return path


def test_an_r152x2_file_for_an_r50x1_model_says_what_it_is(r152x2_zeros):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(r152x2_zeros, R50X1)
    message = str(err.value)
    n = len(err.value.problems)
    assert n > 400  # every key of R152x2 that R50x1 lacks, every shape that differs
    assert "\n" not in message
    assert message.startswith(f"{r152x2_zeros}: this is a valid R152x2 checkpoint with a 1000-class head (it fits r152x2-384, ")
    for model_id in ("r152x2-224", "bit-s-r152x2", "bit-m-r152x2-ilsvrc2012"):
        assert model_id in message
    assert "not the R50x1 with 1000 classes expected" in message
    assert message.endswith(f"{n} layout problems against R50x1 (`bitconvert inspect {r152x2_zeros}` lists them)")


def test_the_right_architecture_with_another_head_names_its_entry(tmp_path):
    path = tmp_path / "m.npz"
    write_zero_checkpoint(path, Architecture.from_depth(50, 1, 21843))
    with pytest.raises(
        CheckpointError, match=r"valid R50x1 checkpoint with a 21843-class head \(it fits bit-m-r50x1\).*: 2 layout problems"
    ):
        load_checkpoint(path, R50X1)


def test_a_head_no_entry_has(tmp_path):
    path = tmp_path / "odd.npz"
    write_zero_checkpoint(path, Architecture.from_depth(50, 1, 7))
    with pytest.raises(CheckpointError, match=r"with a 7-class head \(no registry entry has that architecture\)"):
        load_checkpoint(path, R50X1)


def test_a_damaged_file_of_the_right_architecture_keeps_the_problem_list(tmp_path):
    """Not another architecture, just broken: the message names the problems, as before."""
    path = tmp_path / "cut.npz"
    full = tmp_path / "full.npz"
    write_zero_checkpoint(full, R50X1)
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if "block4/unit03" not in info.filename:
                dst.writestr(info, src.read(info))
    ins = inspect_checkpoint(path, R50X1, read_data=False)
    assert ins.actual is None
    with pytest.raises(CheckpointError, match="not a valid R50x1 checkpoint: 9 problems: missing resnet/block4/unit03"):
        load_checkpoint(path, R50X1)


def test_inspect_against_a_model_reports_the_file_and_its_ids(invoke, r152x2_zeros):
    result = invoke("inspect", r152x2_zeros, "--model", "r50x1-160", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["actual"]["architecture"] == "R152x2" and data["actual"]["classes"] == 1000
    assert "r152x2-384" in data["actual"]["matches"] and "r50x1-160" not in data["actual"]["matches"]
    text = invoke("inspect", r152x2_zeros, "--model", "r50x1-160")
    assert "file is:     R152x2 with 1000 classes (registry: r152x2-384" in text.stdout
    assert text.stderr.startswith("bitconvert: error: ") and "this is a valid R152x2 checkpoint" in text.stderr
    assert text.stderr.rstrip().endswith("(each one is listed on stdout)")  # not "`bitconvert inspect` lists them"
