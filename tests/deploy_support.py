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
#: Two same-shaped arrays of the tiny layout (swapped on the TF side: the classic mapping bug).
SWAP = ("resnet/block2/unit01/b/group_norm/gamma", "resnet/block2/unit01/b/group_norm/beta")
MUTATIONS = {
    "swap-gn-gamma-beta": {"swap": SWAP},
    "same-padding": {"strided_padding": "same"},
    "neg-inf-pool": {"pool_pad": "neg_inf"},
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


def make_job(ckpt, export_dir: Path, mutation: dict | None = None, input_range: str = "unit", logs=None) -> ExportJob:
    """An ExportJob over ``build_tf_model(ckpt)`` (mutated as asked: build options or swapped arrays)."""
    knobs = dict(mutation or {})
    swap = knobs.pop("swap", None)
    if swap:
        knobs["rows"] = swapped_rows(ckpt.architecture, *swap)
    net = build_tf_model(ckpt, **knobs)
    entry = load_registry().get(MODEL)
    log = logs.append if logs is not None else (lambda msg: None)
    export_dir.mkdir(parents=True, exist_ok=True)
    return ExportJob(MODEL, entry, ckpt.architecture, net, input_range, export_dir, log)


def load_with_reference(path, arch, resolution: int, batch: int = 1):
    ckpt = load_checkpoint(path, arch)
    images, names = make_inputs(resolution, batch)
    return ckpt, images, reference_outputs(ckpt, images, names, float32=False)


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
