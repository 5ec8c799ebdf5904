"""Shared parts of the LiteRT and ONNX target tests: jobs, references, mutations, the usage block."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from convert.checkpoint import load_checkpoint
from convert.export.target import VARIANT_STAGES, ExportJob
from convert.model.mapping import mapping_rows
from convert.model.tf_model import build_tf_model
from convert.parity import compare, make_inputs, reference_outputs
from convert.registry import load_registry

MODEL = "r50x1-160"
#: One entry per code that defines a forward pass: a distill/ student (big_vision: root max-pool padded
#: with -inf) and a BiT-M fine-tune (big_transfer: zeros). The tests give them the tiny layout.
FAMILY_MODELS = {"big_vision": "r50x1-160", "big_transfer": "bit-m-r50x1-ilsvrc2012"}
#: Two same-shaped arrays of the tiny layout (swapped on the TF side: the classic mapping bug).
SWAP = ("resnet/block2/unit01/b/group_norm/gamma", "resnet/block2/unit01/b/group_norm/beta")
#: (The root pool's padding is no mutation but each entry's semantics: tests/export/test_forward_pass.py.)
MUTATIONS = {
    "swap-gn-gamma-beta": {"swap": SWAP},
    "same-padding": {"strided_padding": "same"},
}


def to_unit(images: np.ndarray) -> np.ndarray:
    """Parity images ([-1, 1]) in the export's default [0, 1] input range."""
    return ((images + 1.0) / 2.0).astype(np.float32)


def swapped_rows(arch, a: str, b: str):
    rows = mapping_rows(arch)
    by_key = {r.checkpoint_key: r for r in rows}
    assert by_key[a].shape == by_key[b].shape
    swap = {a: by_key[b].tf_variable, b: by_key[a].tf_variable}
    return tuple(replace(r, tf_variable=swap.get(r.checkpoint_key, r.tf_variable)) for r in rows)


def make_job(
    ckpt, export_dir: Path, mutation: dict | None = None, input_range: str = "unit", logs=None, model: str = MODEL
) -> ExportJob:
    """An ExportJob of ``model`` over ``build_tf_model(ckpt)`` with the entry's forward pass (mutated as asked:
    build options, ``pool_pad`` included, or swapped arrays)."""
    entry = load_registry().get(model)
    knobs = {"pool_pad": entry.forward().root_pool_padding, **(mutation or {})}
    swap = knobs.pop("swap", None)
    if swap:
        knobs["rows"] = swapped_rows(ckpt.architecture, *swap)
    net = build_tf_model(ckpt, **knobs)
    log = logs.append if logs is not None else (lambda msg: None)
    export_dir.mkdir(parents=True, exist_ok=True)
    return ExportJob(model, entry, ckpt.architecture, net, input_range, export_dir, log, forward=entry.forward())


def load_with_reference(path, arch, resolution: int, batch: int = 1, model: str = MODEL):
    """The checkpoint, the parity images, and the float64 reference of ``model``'s forward pass on them."""
    ckpt = load_checkpoint(path, arch)
    images, names = make_inputs(resolution, batch)
    padding = load_registry().get(model).root_pool_padding
    return ckpt, images, reference_outputs(ckpt, images, names, float32=False, pool_padding=padding)


def write_and_check(target, job: ExportJob, images: np.ndarray):
    """write -> check (from disk) -> runs, as the orchestrator does."""
    artifacts = target.write(job)
    runs = target.check(job, artifacts, to_unit(images))()
    return artifacts, runs


def reports(ref, runs):
    return {run.artifact.variant: compare(ref, {VARIANT_STAGES[run.artifact.variant]: run.outputs}) for run in runs}


def usage_code(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 1, card
    return blocks[0]


@contextlib.contextmanager
def chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
