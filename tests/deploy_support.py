"""Shared parts of the target tests: jobs over a (possibly mutated) TF graph, references, judging, card code.

A target is driven here as the orchestrator drives it (write, check from disk,
then the orchestrator's own judge), without the rest of an export, so that a
mutated model can be written and shown to fail.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import numpy as np

from convert.checkpoint import load_checkpoint
from convert.export.target import VARIANT_STAGES, ExportJob
from convert.model.tf_model import build_tf_model
from convert.parity import compare, make_inputs, reference_outputs
from convert.registry import load_registry
from convert.testing.mutations import Mutation, tf_build_options

MODEL = "r50x1-160"
#: One entry per code that defines a forward pass: a distill/ student (big_vision: root max-pool padded
#: with -inf) and a BiT-M fine-tune (big_transfer: zeros). The tests give them the tiny layout.
FAMILY_MODELS = {"big_vision": "r50x1-160", "big_transfer": "bit-m-r50x1-ilsvrc2012"}


def pool_padding(model: str = MODEL) -> str:
    """The root pool padding of ``model``'s forward pass (its registry entry's, the authors' code)."""
    return load_registry().get(model).forward().root_pool_padding


def to_unit(images: np.ndarray) -> np.ndarray:
    """Parity images ([-1, 1]) in the export's default [0, 1] input range."""
    return ((images + 1.0) / 2.0).astype(np.float32)


def make_job(
    ckpt, export_dir: Path, mutation: Mutation | None = None, input_range: str = "unit", logs=None, model: str = MODEL
) -> ExportJob:
    """An ExportJob of ``model`` over ``build_tf_model(ckpt)`` with the entry's forward pass, mutated as
    ``mutation`` says (None: the correct model; its knobs override the entry's root pool padding)."""
    entry = load_registry().get(model)
    knobs = {"pool_pad": entry.forward().root_pool_padding, **tf_build_options(ckpt.architecture, mutation)}
    net = build_tf_model(ckpt, **knobs)
    log = logs.append if logs is not None else (lambda msg: None)
    export_dir.mkdir(parents=True, exist_ok=True)
    return ExportJob(model, entry, ckpt.architecture, net, input_range, export_dir, log, forward=entry.forward())


def load_with_reference(path, arch, resolution, batch: int = 1, model: str = MODEL):
    """The checkpoint, the parity images at ``resolution`` (int or (height, width)) and the float64
    reference of ``model``'s forward pass on them."""
    ckpt = load_checkpoint(path, arch)
    images, names = make_inputs(resolution, batch)
    padding = pool_padding(model)
    return ckpt, images, reference_outputs(ckpt, images, names, float32=False, pool_padding=padding)


def write_and_check(target, job: ExportJob, images: np.ndarray):
    """write -> check (from disk) -> runs, as the orchestrator does."""
    artifacts = target.write(job)
    runs = target.check(job, artifacts, to_unit(images))()
    return artifacts, runs


def reports(ref, runs):
    """{variant: ParityReport} of one runtime's runs against the reference at each variant's stage."""
    return {run.artifact.variant: compare(ref, {VARIANT_STAGES[run.artifact.variant]: run.outputs}) for run in runs}


def entries(manifest: dict, name: str) -> list[dict]:
    """The manifest's entries of one target: ``{variant, path, card, sha256, facts, parity: {runtime: {report}}}``."""
    return manifest["targets"][name]


def usage_code(card: str) -> str:
    """The card's Python blocks, joined in order (later blocks may use names of earlier ones)."""
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert blocks, card
    return "\n".join(blocks)


@contextlib.contextmanager
def chdir(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def tflite_operators(path) -> list[tuple[str, object]]:
    """(builtin operator name, operator) for each operator of a .tflite file's graph, in order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return [(names[codes[op.opcodeIndex]], op) for op in model.subgraphs[0].operators]


def xnnpack_partitions(path, shape) -> int:
    """How many XNNPACK partitions ai_edge_litert's interpreter runs a .tflite file in, resized to ``shape``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.resize_tensor_input(0, shape)
    interpreter.allocate_tensors()
    return [op["op_name"] for op in interpreter._get_ops_details()].count("DELEGATE")
