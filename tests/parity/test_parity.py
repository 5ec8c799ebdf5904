"""Parity of the TF graph with the Flax reference on full-depth, full-width layouts, and its teeth.

Reduced resolutions keep CI fast; the native-resolution figures are in
docs/calibration.md and come from scripts/calibrate_parity.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import R50X1, R152X2, TINY

from convert.checkpoint import Checkpoint, load_checkpoint
from convert.model.architecture import Architecture
from convert.model.tf_model import build_tf_model
from convert.parity import (
    STAGES,
    STRUCTURED,
    compare,
    make_inputs,
    reference_outputs,
    run_parity,
    tf_stage_function,
    tolerance,
)
from convert.synthetic import synthetic_arrays
from convert.testing.mutations import NAMES, Mutation, by_name, swapped_rows, tf_build_options

#: A mutation must miss by at least this factor over the tolerance ("a wide margin").
MARGIN = 20


def tf_stages(ckpt, images, **knobs) -> dict[str, np.ndarray]:
    """The TF graph's stages in the form the SavedModels hold and ``verify`` judges."""
    fn = tf_stage_function(build_tf_model(ckpt, **knobs).as_saved())
    return {k: v.numpy() for k, v in fn(images).items()}


# -- inputs -----------------------------------------------------------------------


def test_inputs_are_deterministic_and_in_range():
    a, names = make_inputs((33, 47), 3, seed=5)
    b, _ = make_inputs((33, 47), 3, seed=5)
    c, _ = make_inputs((33, 47), 3, seed=6)
    assert a.shape == (3 + len(STRUCTURED), 33, 47, 3) and a.dtype == np.float32
    assert names == ["random_0", "random_1", "random_2", *STRUCTURED]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:3], c[:3]) and np.array_equal(a[3:], c[3:])
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert a[:3].min() < -0.99 and a[:3].max() > 0.99  # the whole range is used
    flat, grad, _, checker1, checker7 = a[3:]
    assert np.ptp(flat) == 0 or all(np.ptp(flat[..., ch]) == 0 for ch in range(3))
    assert np.all(np.diff(grad[..., 0], axis=1) > 0)
    assert np.array_equal(checker1[0, :2, 0], [1.0, -1.0]) and np.array_equal(checker1[:2, 0, 0], [1.0, -1.0])
    # 7-pixel cells: the colour changes between columns 6 and 7, and at the 47-pixel border mid-cell.
    assert checker7[0, 6, 0] != checker7[0, 7, 0] and checker7[0, 0, 0] == checker7[0, 6, 0]


def test_tolerance_grows_with_depth_and_width():
    r101x1, r50x3 = Architecture.from_depth(101, 1, 1000), Architecture.from_depth(50, 3, 1000)
    assert tolerance(TINY) < tolerance(R50X1) < tolerance(r101x1) < tolerance(R152X2)
    assert tolerance(R50X1) < tolerance(r50x3)
    # Calibrated values (docs/calibration.md): 5x the measured worst error.
    assert tolerance(R50X1) == pytest.approx(4.0e-4) and tolerance(R152X2) == pytest.approx(4.3e-3)
    assert tolerance(Architecture.from_depth(50, 1, 21843)) == tolerance(R50X1)  # the head size does not matter


# -- R50x1, full depth and width, reduced resolution --------------------------------


@pytest.fixture(scope="module")
def r50(r50x1_npz):
    ckpt = load_checkpoint(r50x1_npz, R50X1)
    images, names = make_inputs(64, 2, seed=0)
    return ckpt, images, reference_outputs(ckpt, images, names)


@pytest.fixture(scope="module")
def r50_tf(r50):
    ckpt, images, _ = r50
    return tf_stages(ckpt, images)


def test_r50x1_parity(r50, r50_tf):
    ckpt, images, ref = r50
    report = compare(ref, r50_tf)
    assert report.passed, report.render()
    assert list(report.stages) == list(STAGES)
    tol = tolerance(R50X1)
    for s in report.stages.values():
        assert s.tf_rel_l2_f64 <= tol and s.finite
        assert s.rel_l2 > 0  # two independent implementations: never bit-identical
    assert report.stages["logits"].top1_tf == 1.0
    # The float64 run really is float64 and the float32 one float32.
    assert all(v.dtype == np.float64 for v in ref.f64.values())
    assert all(v.dtype == np.float32 for v in ref.f32.values())


#: Beyond the shared mutations: two same-shaped kernels deep in block4 swapped.
DEEP_SWAP = Mutation(
    "swapped-block4-kernels",
    swap=("resnet/block4/unit02/b/standardized_conv2d/kernel", "resnet/block4/unit03/b/standardized_conv2d/kernel"),
)


@pytest.mark.parametrize("mutation", [*NAMES, DEEP_SWAP.name])
def test_r50x1_mutations_fail_by_a_wide_margin(r50, mutation):
    ckpt, images, ref = r50
    m = DEEP_SWAP if mutation == DEEP_SWAP.name else by_name(R50X1, mutation)
    report = compare(ref, tf_stages(ckpt, images, **tf_build_options(R50X1, m)))
    assert not report.passed
    assert "logits" in report.failed_stages and "pre_logits" in report.failed_stages
    worst = max(s.tf_rel_l2_f64 for s in report.stages.values())
    assert worst > MARGIN * report.tolerance, report.render()
    assert report.stages["logits"].tf_rel_l2_f64 > MARGIN * report.tolerance, report.render()
    if "pool_pad" in m.knobs:
        # Random images alone barely show the other pool padding; the flat, gradient and
        # checkerboard images, whose border windows are all-negative, expose it.
        assert report.stages["stem"].worst_input in STRUCTURED


def test_r50x1_odd_image_size_single_image(r50):
    ckpt, _, _ = r50
    report = run_parity(ckpt, (33, 47), batch=1, seed=3, reference="worker")
    assert report.passed, report.render()
    assert report.image_shape == (1 + len(STRUCTURED), 33, 47, 3)
    assert report.stages["block4"].shape[1:3] == (2, 2)
    assert report.info["tf_tracing_count"] == 1
    assert report.info["reference_process"] is True  # a file-backed checkpoint: JAX ran in the worker


def test_in_memory_checkpoint_runs_the_reference_in_process():
    ckpt = Checkpoint(None, TINY, synthetic_arrays(TINY, seed=3))
    report = run_parity(ckpt, (41, 36), batch=1, reference="worker")  # nothing to hand a worker
    assert report.passed, report.render()
    assert report.info["reference_process"] is False and report.info["tf_tracing_count"] == 1


def test_float64_only_reference_gives_the_same_verdict(tmp_path):
    """export's reference (float32=False), in process and in the worker: same float64 figures, float32 columns empty."""
    from convert.parity import finish_reference_worker, start_reference_worker
    from convert.synthetic import write_synthetic_checkpoint

    path = write_synthetic_checkpoint(tmp_path / "tiny.npz", TINY, seed=3)
    ckpt = load_checkpoint(path, TINY)
    images, names = make_inputs(40, 1, seed=2)
    full = reference_outputs(ckpt, images, names)
    f64_only = reference_outputs(ckpt, images, names, float32=False)
    (tmp_path / "w").mkdir()
    proc = start_reference_worker(path, TINY, images, names, tmp_path / "w", float32=False)
    from_worker = finish_reference_worker(proc, TINY, images, names, tmp_path / "w")
    assert f64_only.f32 is None and from_worker.f32 is None and "jax_f32_s" not in f64_only.timings
    candidate = tf_stages(ckpt, images)
    judged = compare(full, candidate)
    for ref in (f64_only, from_worker):
        report = compare(ref, candidate)
        assert report.passed == judged.passed is True
        for stage, s in report.stages.items():
            assert s.tf_rel_l2_f64 == judged.stages[stage].tf_rel_l2_f64
            assert s.max_abs_f64 == judged.stages[stage].max_abs_f64 > 0
            assert s.max_abs is s.rel_l2 is s.jax_rel_l2_f64 is None
        assert report.stages["logits"].top1_tf == judged.stages["logits"].top1_tf
        assert "parity: PASS" in report.render() and " - " in report.render()
        json.dumps(report.as_dict())


def test_compare_subsets_for_exported_signatures(r50, r50_tf):
    ckpt, images, ref = r50
    out = r50_tf
    classifier = compare(ref, {"logits": out["logits"]}, R50X1)
    features = compare(ref, {"pre_logits": out["pre_logits"]}, R50X1)
    assert classifier.passed and features.passed
    assert list(classifier.as_dict()) == ["logits", "summary"]
    assert list(features.as_dict()) == ["pre_logits", "summary"]
    doc = json.loads(json.dumps(classifier.as_dict()))
    assert doc["summary"]["passed"] is True and doc["logits"]["top1_tf"] == 1.0
    bad = compare(ref, {"pre_logits": out["pre_logits"] * 1.01}, R50X1)
    assert not bad.passed and bad.failed_stages == ["pre_logits"]
    nan = out["logits"].copy()
    nan[0, 0] = np.nan
    report = compare(ref, {"logits": nan}, R50X1)
    assert not report.passed and not report.stages["logits"].finite
    with pytest.raises(ValueError, match="unknown stages"):
        compare(ref, {"features": out["pre_logits"]})
    with pytest.raises(ValueError, match="shape"):
        compare(ref, {"logits": out["logits"][:1]})
    assert not compare(ref, {}).passed  # nothing compared is not a pass


def test_report_renders_every_stage(r50, r50_tf):
    ckpt, images, ref = r50
    report = compare(ref, r50_tf)
    text = report.render()
    for stage in STAGES:
        assert f"\n{stage} " in text
    assert text.splitlines()[-1] == "parity: PASS"


# -- R152x2, full depth and width, reduced resolution ---------------------------------


@pytest.fixture(scope="module")
def r152():
    """Float64 only, as exports judge: the verdict is taken against float64 (test_float64_only_reference_gives_the_same_verdict
    shows the float32 run changes no verdict), and R152x2's float32 run would cost a third of the module."""
    ckpt = Checkpoint(None, R152X2, synthetic_arrays(R152X2, seed=2))
    images, names = make_inputs(64, 1, seed=0)
    return ckpt, images, reference_outputs(ckpt, images, names, float32=False)


def test_r152x2_parity(r152):
    ckpt, images, ref = r152
    report = compare(ref, tf_stages(ckpt, images))
    assert report.passed, report.render()
    assert report.tolerance == tolerance(R152X2)
    assert report.stages["pre_logits"].shape == (len(images), 4096)


def test_r152x2_swapped_mapping_fails(r152):
    """Two same-shaped kernels deep in block3 (units 35 and 36 of 36) swapped on the TF side."""
    ckpt, images, ref = r152
    a = "resnet/block3/unit35/a/standardized_conv2d/kernel"
    report = compare(ref, tf_stages(ckpt, images, rows=swapped_rows(R152X2, a, a.replace("unit35", "unit36"))))
    assert not report.passed
    assert report.stages["logits"].tf_rel_l2_f64 > MARGIN * report.tolerance, report.render()


def test_the_worker_s_reference_reads_the_file_as_it_runs_and_computes_the_same(tiny_npz):
    """reference_from_file (the worker's) reads each array as its unit runs: the same bits as from the loaded checkpoint."""
    from convert.parity.reference import reference_from_file

    images, names = make_inputs(40, 1)
    loaded = reference_outputs(load_checkpoint(tiny_npz, TINY), images, names, pool_padding="neg_inf")
    from_file = reference_from_file(str(tiny_npz), TINY, images, names, float32=True, pool_padding="neg_inf")
    for stage, want in loaded.f64.items():
        np.testing.assert_array_equal(from_file.f64[stage], want, err_msg=stage)
        np.testing.assert_array_equal(from_file.f32[stage], loaded.f32[stage], err_msg=stage)
