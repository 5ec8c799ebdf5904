"""The strict reader: every kind of bad input is refused, named, and all at once."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import R50X1, TINY, tiny_registry

from convert.checkpoint import Deferred, inspect_checkpoint, load_checkpoint, open_deferred
from convert.errors import CheckpointError
from convert.model.architecture import Architecture, checkpoint_layout, infer_architecture
from convert.synthetic import synthetic_arrays, write_npz_atomic, write_synthetic_checkpoint

GAMMA = "resnet/block1/unit01/a/group_norm/gamma"
ROOT = "resnet/root_block/standardized_conv2d/kernel"
BIAS = "resnet/head/conv2d/bias"


def _write(tmp_path, arrays, name="c.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.fixture
def tiny_arrays():
    return synthetic_arrays(TINY, seed=5)


def _problems(path, arch=TINY):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, arch)
    msg = str(info.value)
    assert "\n" not in msg, "the error must be one line"
    return msg, info.value.problems


def test_valid_checkpoint_loads_every_array(tmp_path, tiny_arrays):
    ck = load_checkpoint(_write(tmp_path, tiny_arrays), TINY)
    assert list(ck.arrays) == list(checkpoint_layout(TINY))
    for key, arr in tiny_arrays.items():
        np.testing.assert_array_equal(ck.arrays[key], arr)
        assert ck.arrays[key].dtype == np.float32
    assert ck.parameters == sum(a.size for a in tiny_arrays.values())


def test_a_deferred_checkpoint_reads_each_array_when_it_is_used(tmp_path, tiny_arrays):
    """open_deferred (the reference's worker): headers now, each array's data at each use, checked as load_checkpoint checks it."""
    path = _write(tmp_path, tiny_arrays)
    ck = open_deferred(path, TINY)
    assert list(ck.arrays) == list(checkpoint_layout(TINY))
    assert all(isinstance(a, Deferred) for a in ck.arrays.values())
    assert ck.parameters == load_checkpoint(path, TINY).parameters
    for key, arr in tiny_arrays.items():
        assert ck.arrays[key].shape == arr.shape
        got = np.asarray(ck.arrays[key])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, arr)
    # Nothing was read up front: a value that turns non-finite afterwards is refused at its use.
    tiny_arrays[ROOT][0, 0, 0, 0] = np.nan
    ck = open_deferred(_write(tmp_path, tiny_arrays, "later.npz"), TINY)
    np.testing.assert_array_equal(np.asarray(ck.arrays[BIAS]), tiny_arrays[BIAS])
    with pytest.raises(CheckpointError, match=f"non-finite values in {ROOT}"):
        np.asarray(ck.arrays[ROOT])
    with pytest.raises(CheckpointError, match="missing"):
        open_deferred(_write(tmp_path, {k: v for k, v in tiny_arrays.items() if k != BIAS}, "short.npz"), TINY)


def test_synthetic_arrays_are_not_trivial(tiny_arrays):
    for key, arr in tiny_arrays.items():
        if key.endswith("gamma"):
            assert not np.allclose(arr, 1.0)
        if key.endswith("beta") or key.endswith("bias"):
            assert not np.allclose(arr, 0.0)
        assert np.std(arr) > 0


def test_missing_key_is_named_with_its_expected_shape(tmp_path, tiny_arrays):
    del tiny_arrays[GAMMA]
    msg, problems = _problems(_write(tmp_path, tiny_arrays))
    assert f"missing {GAMMA} (expected float32 (64,))" in msg
    assert [p.kind for p in problems] == ["missing"]


def test_unexpected_key_is_named(tmp_path, tiny_arrays):
    tiny_arrays["resnet/block9/unit01/a/group_norm/gamma"] = np.ones(3, np.float32)
    msg, problems = _problems(_write(tmp_path, tiny_arrays))
    assert "unexpected resnet/block9/unit01/a/group_norm/gamma float32 (3,)" in msg
    assert [p.kind for p in problems] == ["unexpected"]


def test_wrong_shape_names_got_and_expected(tmp_path, tiny_arrays):
    tiny_arrays[BIAS] = np.zeros(11, np.float32) + 0.5
    msg, _ = _problems(_write(tmp_path, tiny_arrays))
    assert f"wrong shape {BIAS}: got (11,), expected (10,)" in msg


def test_non_float32_is_refused(tmp_path, tiny_arrays):
    tiny_arrays[GAMMA] = tiny_arrays[GAMMA].astype(np.float64)
    msg, _ = _problems(_write(tmp_path, tiny_arrays))
    assert f"wrong dtype {GAMMA}: got float64, expected float32" in msg


@pytest.mark.parametrize("value, counts", [(np.nan, "1 NaN, 0 Inf"), (np.inf, "0 NaN, 1 Inf"), (-np.inf, "0 NaN, 1 Inf")])
def test_non_finite_values_are_refused(tmp_path, tiny_arrays, value, counts):
    tiny_arrays[ROOT][0, 0, 0, 0] = value
    msg, _ = _problems(_write(tmp_path, tiny_arrays))
    assert f"non-finite values in {ROOT}: {counts}" in msg


def test_object_array_is_refused_without_unpickling(tmp_path, tiny_arrays, monkeypatch):
    tiny_arrays[GAMMA] = np.array([{"boom": 1}] * 64, dtype=object)
    path = _write(tmp_path, tiny_arrays)
    # Unpickling would go through pickle.load: make it fatal to prove it never runs.
    import pickle

    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    msg, _ = _problems(path)
    assert f"object array {GAMMA} refused" in msg


def test_every_problem_is_reported_at_once(tmp_path, tiny_arrays):
    del tiny_arrays[GAMMA]
    tiny_arrays["extra"] = np.zeros(2, np.float32)
    tiny_arrays[BIAS] = np.zeros(3, np.float32)
    tiny_arrays[ROOT] = tiny_arrays[ROOT].astype(np.float16)
    msg, problems = _problems(_write(tmp_path, tiny_arrays))
    assert sorted(p.kind for p in problems) == ["dtype", "missing", "shape", "unexpected"]
    assert msg.startswith(f"{tmp_path / 'c.npz'}: not a valid R14x1[1,1,1,1] checkpoint: 4 problems: ")


def test_long_problem_lists_are_cut_and_point_to_inspect(tmp_path, tiny_arrays):
    arrays = {k: v for k, v in tiny_arrays.items() if "block" not in k}
    msg, problems = _problems(_write(tmp_path, arrays))
    assert len(problems) == len(tiny_arrays) - len(arrays)
    assert re.search(r"; and \d+ more \(see `bitconvert inspect .*c\.npz`\)$", msg)


def test_numbered_conv_names_are_normalised(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "s.npz", TINY, seed=1, conv_suffix=True)
    import zipfile

    assert any("standardized_conv2d_3/" in n for n in zipfile.ZipFile(path).namelist())
    ck = load_checkpoint(path, TINY)
    assert ROOT in ck.arrays and list(ck.arrays) == list(checkpoint_layout(TINY))


def test_two_members_normalising_to_one_key_are_duplicates(tmp_path, tiny_arrays):
    tiny_arrays[ROOT.replace("standardized_conv2d", "standardized_conv2d_7")] = tiny_arrays[ROOT]
    msg, problems = _problems(_write(tmp_path, tiny_arrays))
    assert [p.kind for p in problems] == ["duplicate"]
    assert f"duplicate {ROOT}" in msg


def test_truncated_file_is_a_clear_error(tmp_path, tiny_arrays):
    path = _write(tmp_path, tiny_arrays)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable \.npz \(zip\) file .*`bitconvert fetch --force`"):
        load_checkpoint(path, TINY)


def test_corrupted_data_is_caught_by_the_zip_crc(tmp_path, tiny_arrays):
    path = _write(tmp_path, tiny_arrays)
    data = bytearray(path.read_bytes())
    # Flip a byte inside the root kernel's data (well after its header).
    start = data.find(b"root_block/standardized_conv2d/kernel.npy")
    data[start + 400] ^= 0xFF
    path.write_bytes(bytes(data))
    msg, problems = _problems(path)
    assert problems and problems[0].kind == "truncated" and ROOT in msg


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_header_problems_stop_before_any_data_is_read(tmp_path, tiny_arrays, monkeypatch):
    tiny_arrays[BIAS] = np.zeros(11, np.float32)
    path = _write(tmp_path, tiny_arrays)
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("data read despite bad headers"))
    _problems(path)


def test_declared_size_larger_than_member_is_refused_from_the_header(tmp_path, tiny_arrays, monkeypatch):
    """A member whose header declares more data than it holds never gets its data read."""
    path = _write(tmp_path, tiny_arrays)
    import zipfile

    src = zipfile.ZipFile(path)
    out = tmp_path / "lying.npz"
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == BIAS + ".npy":
                raw = raw[: len(raw) - 8]  # header still says (10,) float32 = 40 bytes
            dst.writestr(info.filename, raw)
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: pytest.fail("data read"))
    msg, _ = _problems(out)
    assert f"bad size {BIAS}: header declares 40 data bytes, member holds 32" in msg


def test_compressed_npz_is_read(tmp_path, tiny_arrays):
    path = tmp_path / "z.npz"
    np.savez_compressed(path, **tiny_arrays)
    assert load_checkpoint(path, TINY).parameters == sum(a.size for a in tiny_arrays.values())


def test_big_endian_float32_is_accepted_as_native(tmp_path, tiny_arrays):
    tiny_arrays[GAMMA] = tiny_arrays[GAMMA].astype(">f4")
    ck = load_checkpoint(_write(tmp_path, tiny_arrays), TINY)
    assert ck.arrays[GAMMA].dtype == np.float32
    np.testing.assert_array_equal(ck.arrays[GAMMA], tiny_arrays[GAMMA].astype(np.float32))


# --- architecture inference -------------------------------------------------


def test_inference_of_full_r50x1(r50x1_npz):
    ck = load_checkpoint(r50x1_npz)
    assert ck.architecture == R50X1
    assert (ck.architecture.depth, ck.architecture.width, ck.architecture.classes) == (50, 1, 1000)


@pytest.mark.parametrize("depth, width, classes", [(50, 3, 21843), (101, 1, 5), (152, 2, 1000), (101, 4, 7)])
def test_inference_from_shapes(depth, width, classes):
    arch = Architecture.from_depth(depth, width, classes)
    assert infer_architecture(checkpoint_layout(arch)) == arch


def test_a_unit_missing_at_the_end_of_a_block_is_reported_against_the_official_depth(tmp_path):
    """A truncated R101 (block3 stops at unit20) is an R101 missing keys, not an 'R92'."""
    r101 = Architecture.from_depth(101, 1, 10)
    arrays = {k: np.ones(s, np.float32) for k, s in checkpoint_layout(r101).items() if not re.search(r"block3/unit2[123]/", k)}
    path = write_npz_atomic(tmp_path / "t.npz", arrays)
    ins = inspect_checkpoint(path)
    assert ins.architecture == r101
    assert {p.kind for p in ins.problems} == {"missing"}
    assert len(ins.problems) == 3 * 9  # 3 units x (3 convs + 3 gammas + 3 betas)


def test_a_reduced_layout_needs_permission(tmp_path):
    path = write_synthetic_checkpoint(tmp_path / "t.npz", TINY)
    assert inspect_checkpoint(path, allow_nonstandard=True).ok
    strict = inspect_checkpoint(path)
    assert strict.architecture.units == (3, 4, 6, 3) and not strict.ok


def test_inspect_s_error_line_points_at_its_own_list(invoke, tmp_path):
    """`bitconvert inspect` prints every problem, so its error line does not send the user to `bitconvert inspect`."""
    path = write_synthetic_checkpoint(tmp_path / "t.npz", TINY)
    result = invoke("inspect", path)
    assert result.exit_code == 1 and result.stdout.count("  - missing ") == len(inspect_checkpoint(path).problems)
    (line,) = result.stderr.splitlines()
    assert re.search(r"; and \d+ more \(each one is listed on stdout\)$", line) and "see `bitconvert" not in line


def test_a_reduced_layout_in_the_registry_is_known(tmp_path, monkeypatch):
    """A registry entry whose ``depth:`` lists that layout's units is its permission; another head size is not."""
    path = write_synthetic_checkpoint(tmp_path / "t.npz", TINY)
    monkeypatch.setenv("BITCONVERT_REGISTRY", str(tiny_registry(tmp_path / "r.yaml", "tiny-bit", "t.npz")))
    ins = inspect_checkpoint(path)
    assert ins.ok and ins.architecture == TINY
    other = write_synthetic_checkpoint(tmp_path / "o.npz", Architecture(TINY.units, TINY.width, TINY.classes + 1))
    assert inspect_checkpoint(other).architecture.units == (3, 4, 6, 3)


def test_not_a_bit_checkpoint(tmp_path):
    path = _write(tmp_path, {"weights": np.zeros(3, np.float32)})
    msg, problems = _problems(path, arch=None)
    assert "does not look like a BiT checkpoint" in msg and problems[0].kind == "layout"
