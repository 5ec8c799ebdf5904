"""``--format tflite``: LiteRT FlatBuffers, run by ``ai_edge_litert``'s interpreter.

Writes ``tflite/classification.tflite`` and ``tflite/feature_extraction.tflite``:
float32 weights with weight standardisation folded in (:mod:`.folded`), the wider
stride-1 3x3 convolutions by Winograd's algorithm (:mod:`convert.model.winograd`), one
float32 input ``images`` of shape ``[-1, -1, -1, 3]`` (any batch and size
through ``resize_tensor_input``) in the export's input range, one output
``logits`` or ``feature_vector``; the ``serving_default`` signature uses the
same names.

Converter: ``tf.lite.TFLiteConverter.from_concrete_functions``, the converter
the LiteRT docs and Keras' own LiteRT export use (``from_saved_model`` is the
same converter; the concrete function saves a SavedModel round trip). It runs
once, on a forward pass with both variants' outputs; each variant's file keeps
its own output and what that uses (:mod:`.tflite_graph`: the feature extractor
has no head), and the tensor names the converter generates
(``serving_default_images:0``, ``StatefulPartitionedCall:0``) are renamed.

Size: a FlatBuffer cannot exceed 2 GB, so a model whose float32 weights (from
the architecture's parameter count, before converting anything) do not fit
is refused with one line saying why and what to do (R152x4: 3.7 GB). Halving
the weights to float16 would fit but needs its own, measured tolerance;
that is not offered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ExportError, LocalIOError, one_line
from ..model.architecture import checkpoint_layout
from ..model.winograd import winograd_layers
from ..nativelog import native_stderr_filtered
from .folded import concrete_with_constants, folded_arrays, variant_bytes, winograd_arrays
from .manifest import package_version as _version
from .target import INPUT_NAME, OUTPUT_NAMES, VARIANTS, Artifact, ExportJob, ExportTarget, Run, check_in_process
from .tflite_graph import single_outputs

#: FlatBuffers address with 32-bit offsets: one .tflite holds less than 2 GiB.
FLATBUFFER_LIMIT = 2**31 - 1
#: Room left for the graph and FlatBuffer bookkeeping beside the weights.
GRAPH_MARGIN = 64 * 2**20
CONVERTER = "tf.lite.TFLiteConverter.from_concrete_functions"
RUNTIME = "litert"


class TFLiteTarget(ExportTarget):
    """The ``tflite`` export target (see the module docstring). ``size_limit``: bytes per file (tests inject less)."""

    name = "tflite"
    summary = "LiteRT .tflite files (float32, standardisation folded), run by ai_edge_litert"
    kaggle_framework = "tfLite"

    def __init__(self, size_limit: int = FLATBUFFER_LIMIT):
        self.size_limit = size_limit

    # -- write ------------------------------------------------------------------------

    def refusal(self, arch) -> str | None:
        """Why ``arch`` cannot be written as .tflite files (None when it can): decided from its parameter count."""
        weights = _weight_bytes(arch)
        if weights + GRAPH_MARGIN <= self.size_limit:
            return None
        return (
            f"{arch.name} does not fit in a .tflite file: its float32 weights are {weights / 1e9:.2f} GB, "
            f"a LiteRT FlatBuffer holds at most {self.size_limit / 1e9:.2f} GB; "
            "export --format onnx (external data) or savedmodel for this model instead"
        )

    def write(self, job: ExportJob) -> list[Artifact]:
        why = self.refusal(job.arch)
        if why is not None:
            raise ExportError(f"{job.model_id}: {why}")
        keys = self.winograd_plan(job.arch)
        # The graph convolves these by their transformed kernels only.
        arrays, transformed = folded_arrays(job.net, exclude=set(keys)), winograd_arrays(job.net, keys)
        out_dir = Path(job.export_dir) / "tflite"
        out_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        flat = self._convert(job, arrays, transformed)
        del arrays, transformed
        seconds = time.perf_counter() - t
        job.log(f"{job.model_id}: converted both variants to LiteRT in {seconds:.1f}s")
        artifacts, t = [], time.perf_counter()
        files = single_outputs(flat, [OUTPUT_NAMES[v] for v in VARIANTS])
        del flat  # single_outputs holds it (its arrays are views of it) while it is needed
        for variant, data in zip(VARIANTS, files, strict=True):
            if len(data) > self.size_limit:  # the estimate is a bound; never write a file that cannot load
                raise ExportError(f"{job.model_id}: the {variant} .tflite came out at {len(data) / 1e9:.2f} GB, over the limit")
            rel = f"tflite/{variant}.tflite"
            _write_file(Path(job.export_dir) / rel, data, job.model_id)
            job.log(f"{job.model_id}: wrote {rel} ({len(data) / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
            facts = {
                "converter": CONVERTER,
                "converter_version": {"tensorflow": _version("tensorflow")},
                "runtime": "ai_edge_litert.interpreter.Interpreter",
                "runtime_version": {"ai-edge-litert": _version("ai-edge-litert")},
                "weight_dtype": "float32",
                "weight_standardization": "folded into the kernels",
                "winograd_layers": len(keys),
                "input": {"name": INPUT_NAME, "shape_signature": [-1, -1, -1, 3], "range": job.input_range},
                "output": OUTPUT_NAMES[variant],
                "bytes": len(data),
                "convert_seconds": round(seconds, 2),
            }
            artifacts.append(Artifact(self.name, variant, rel, facts))
            del data
            t = time.perf_counter()
        return artifacts

    def winograd_plan(self, arch) -> list[str]:
        """The layers the graph convolves by Winograd's algorithm (:func:`convert.model.winograd.winograd_layers`).

        Empty when their transformed kernels (16 weights for every 9) would not fit in the file:
        then every layer convolves directly, as the refusal's estimate assumes.
        """
        layout = checkpoint_layout(arch)
        keys = winograd_layers(arch)
        extra = sum(int(np.prod(layout[k])) * 7 // 9 for k in keys) * 4
        return keys if _weight_bytes(arch) + extra + GRAPH_MARGIN <= self.size_limit else []

    def _convert(self, job: ExportJob, arrays: dict[str, np.ndarray], winograd: dict[str, np.ndarray]) -> bytes:
        """Both variants' outputs in one FlatBuffer (:mod:`.tflite_graph` writes each variant's file from it)."""
        import tensorflow as tf

        concrete, holder = concrete_with_constants(job.net, job.input_range, arrays, winograd)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        # The converter would replace every infinite constant by the largest finite float
        # (its default), reading every weight to find them (docs/performance.md).
        # The graph has none: its one candidate, a -inf root pool padding, is copies of the
        # edge rows and columns (folded.concrete_with_constants).
        converter.canonicalizing_inf_as_min_max_float = False
        try:
            return converter.convert()
        except Exception as exc:  # the converter raises ConverterError and friends
            raise ExportError(f"{job.model_id}: the LiteRT converter failed: {one_line(exc)}") from exc

    # -- check ------------------------------------------------------------------------

    def check(self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared=None):
        images = np.ascontiguousarray(images, np.float32)
        return check_in_process(lambda a: self._run(job, a, images), artifacts)

    def _run(self, job: ExportJob, artifact: Artifact, images: np.ndarray) -> Run:
        t = time.perf_counter()
        path = Path(job.export_dir) / artifact.path
        try:
            outputs = run_tflite(path, images)
        except (ValueError, RuntimeError) as exc:
            raise ExportError(f"{job.model_id}: {artifact.path} does not run in the LiteRT interpreter: {one_line(exc)}") from exc
        return Run(
            artifact,
            RUNTIME,
            outputs,
            time.perf_counter() - t,
            {"ai-edge-litert": _version("ai-edge-litert"), "delegate": "XNNPACK (default)"},
        )

    # -- card and Kaggle ---------------------------------------------------------------

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str | None:
        from .cards.deploy_card import render_deploy_card

        return render_deploy_card(job, artifact, figures, usage=_usage(job, artifact), title="LiteRT (.tflite)")

    def kaggle_usage(self, artifact: Artifact) -> tuple[list[str], list[str]]:
        return ["from ai_edge_litert.interpreter import Interpreter"], [
            f'interpreter = Interpreter(model_path="${{PATH}}/{Path(artifact.path).name}")',
            "runner = interpreter.get_signature_runner()",
            "outputs = runner(images=images)",
        ]


def _weight_bytes(arch) -> int:
    """The float32 weights of the larger variant's file (the classifier's), from the parameter count."""
    return max(variant_bytes(arch, v) for v in VARIANTS)


def _usage(job: ExportJob, artifact: Artifact) -> str:
    size = getattr(job.entry, "resolution", None) or 224
    lo, hi = (0.0, 1.0) if job.input_range == "unit" else (-1.0, 1.0)
    name = Path(artifact.path).name
    return f"""```python
import numpy as np
from ai_edge_litert.interpreter import Interpreter

interpreter = Interpreter(model_path="{name}", num_threads=4)
images = np.random.uniform({lo}, {hi}, (2, {size}, {size}, 3)).astype(np.float32)  # any batch and size
inp = interpreter.get_input_details()[0]  # name "{INPUT_NAME}"
interpreter.resize_tensor_input(inp["index"], images.shape)
interpreter.allocate_tensors()
interpreter.set_tensor(inp["index"], images)
interpreter.invoke()
{OUTPUT_NAMES[artifact.variant]} = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
print({OUTPUT_NAMES[artifact.variant]}.shape)
```"""


def run_tflite(path: Path, images: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """Load ``path`` in ``ai_edge_litert``'s interpreter, resize to ``images``' shape, run; the output (a copy)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if [d["name"] for d in inputs] != [INPUT_NAME] or len(outputs) != 1:
        raise ValueError(f"inputs {[d['name'] for d in inputs]}, {len(outputs)} outputs; expected [{INPUT_NAME!r}] and one")
    interpreter.resize_tensor_input(inputs[0]["index"], images.shape)
    with native_stderr_filtered():  # the XNNPACK delegate's INFO line, whatever TF_CPP_MIN_LOG_LEVEL says
        interpreter.allocate_tensors()
    interpreter.set_tensor(inputs[0]["index"], images)
    interpreter.invoke()
    return np.array(interpreter.get_tensor(outputs[0]["index"]))


def _write_file(path: Path, data: bytes | memoryview, model_id: str) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise LocalIOError(f"{model_id}: cannot write {path}: {exc.strerror or exc}") from exc


TARGET = TFLiteTarget()
