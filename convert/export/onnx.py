"""``--format onnx``: ONNX models converted by tf2onnx, run by onnxruntime's CPU provider.

Writes ``onnx/classification.onnx`` and ``onnx/feature_extraction.onnx``: one
float32 input ``images`` with dynamic dims ``[batch, height, width, 3]`` in the
export's input range, one output ``logits`` or ``feature_vector``, weight
standardisation folded into the kernels (:mod:`.folded`).

How: tf2onnx converts the forward pass with the weights as function
*arguments* (:func:`.folded.function_with_weight_inputs`), so the TF graph it
freezes is small whatever the model's size; the weights then become ONNX
initializers named after their checkpoint keys. Nodes and the names tf2onnx
generates are put in a canonical order and renumbered (:mod:`.onnx_graph`),
so re-exports are byte-identical.

Why tf2onnx (and not jax2onnx from the Flax model): it passes parity here on
TF 2.21 / numpy 2 / protobuf 7 and converts the very graph the SavedModels
are built from; jax2onnx is not installed and would pin orbax-checkpoint
back. tf2onnx's ``large_model`` mode is not used: it writes a zip rather than
ONNX external data, and it calls ``np.product``, gone in numpy 2.

Size: a protobuf cannot exceed 2 GB. When the weights (from the parameter
count, before converting) would not fit, they go to ONNX external data in
``<variant>.onnx.data`` next to the model, which onnxruntime reads from disk
(R152x4: 3.7 GB); the artifact lists both files.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import ExportError, LocalIOError, one_line
from .folded import folded_arrays, function_with_weight_inputs, variant_bytes
from .manifest import package_version as _version
from .target import INPUT_NAME, OUTPUT_NAMES, VARIANTS, Artifact, ExportJob, ExportTarget, Run, check_in_process

#: ONNX opset written (tf2onnx 1.17 converts every op of the graph at 17; onnxruntime 1.32 runs it).
OPSET = 17
#: One protobuf message holds less than 2 GiB.
PROTOBUF_LIMIT = 2**31 - 1
#: Room left for the graph beside the weights.
GRAPH_MARGIN = 64 * 2**20
#: Names of the dynamic input dims.
DIMS = ("batch", "height", "width")
PROVIDER = "CPUExecutionProvider"
RUNTIME = "onnxruntime"


class OnnxTarget(ExportTarget):
    """The ``onnx`` export target (see the module docstring). ``size_limit``: bytes per .onnx (tests inject less)."""

    name = "onnx"
    summary = "ONNX models (opset 17, standardisation folded; external data above 2 GB), run by onnxruntime"
    kaggle_framework = "onnx"

    def __init__(self, size_limit: int = PROTOBUF_LIMIT, opset: int = OPSET):
        self.size_limit = size_limit
        self.opset = opset

    def needs_external_data(self, arch, variant: str) -> bool:
        """Decided from the architecture's parameter count, before anything is converted."""
        return variant_bytes(arch, variant) + GRAPH_MARGIN > self.size_limit

    # -- write ------------------------------------------------------------------------

    def write(self, job: ExportJob) -> list[Artifact]:
        arrays = folded_arrays(job.net)
        out_dir = Path(job.export_dir) / "onnx"
        out_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        both, weight_inputs = self._convert(job, arrays)
        seconds = time.perf_counter() - t
        job.log(f"{job.model_id}: converted both variants to ONNX in {seconds:.1f}s")
        artifacts = []
        for variant in VARIANTS:
            t = time.perf_counter()
            model = finish_graph(both, weight_inputs, arrays, OUTPUT_NAMES[variant], job.model_id, variant)
            external = self.needs_external_data(job.arch, variant)
            rel = f"onnx/{variant}.onnx"
            files = _save(model, Path(job.export_dir), rel, external, job.model_id)
            del model
            total = sum(f["bytes"] for f in files.values())
            job.log(f"{job.model_id}: wrote {', '.join(files)} ({total / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
            facts = {
                "converter": "tf2onnx.convert.from_function",
                "converter_version": {"tf2onnx": _version("tf2onnx"), "tensorflow": _version("tensorflow")},
                "opset": self.opset,
                "runtime": f"onnxruntime.InferenceSession ({PROVIDER})",
                "runtime_version": {"onnxruntime": _version("onnxruntime")},
                "weight_dtype": "float32",
                "weight_standardization": "folded into the kernels",
                "external_data": external,
                "files": files,
                "input": {"name": INPUT_NAME, "shape": [*DIMS, 3], "range": job.input_range},
                "output": OUTPUT_NAMES[variant],
                "bytes": total,
                "convert_seconds": round(seconds, 2),
            }
            artifacts.append(Artifact(self.name, variant, rel, facts))
        return artifacts

    def _convert(self, job: ExportJob, arrays: dict[str, np.ndarray]):
        """Both variants' outputs in one ONNX graph, the weights still graph inputs; with input name -> checkpoint key."""
        import tf2onnx

        fn, signature, keys = function_with_weight_inputs(job.net, job.input_range, arrays)
        try:
            with _optimizers_in_place():
                model, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=self.opset)
        except Exception as exc:  # tf2onnx raises ValueError, RuntimeError and friends
            raise ExportError(f"{job.model_id}: tf2onnx failed: {one_line(exc)}") from exc
        weight_inputs = {f"w{i}": k for i, k in enumerate(keys)}
        inputs = [i.name for i in model.graph.input]
        outputs = sorted(o.name for o in model.graph.output)
        if inputs[0] != INPUT_NAME or set(inputs[1:]) != set(weight_inputs) or outputs != sorted(OUTPUT_NAMES.values()):
            raise ExportError(f"{job.model_id}: tf2onnx gave inputs {inputs[:3]}... and outputs {outputs}")
        return model, weight_inputs

    # -- check ------------------------------------------------------------------------

    def check(self, job: ExportJob, artifacts: list[Artifact], images: np.ndarray, prepared=None):
        images = np.ascontiguousarray(images, np.float32)
        return check_in_process(lambda a: self._run(job, a, images), artifacts)

    def _run(self, job: ExportJob, artifact: Artifact, images: np.ndarray) -> Run:
        t = time.perf_counter()
        try:
            outputs = run_onnx(Path(job.export_dir) / artifact.path, images, OUTPUT_NAMES[artifact.variant], spin=False)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
            raise ExportError(f"{job.model_id}: {artifact.path} does not run in onnxruntime: {one_line(exc)}") from exc
        return Run(
            artifact,
            RUNTIME,
            outputs,
            time.perf_counter() - t,
            {"onnxruntime": _version("onnxruntime"), "provider": PROVIDER, "allow_spinning": False},
        )

    # -- card and Kaggle ---------------------------------------------------------------

    def card(self, job: ExportJob, artifact: Artifact, figures: Mapping | None) -> str | None:
        from .cards.deploy_card import render_deploy_card

        return render_deploy_card(job, artifact, figures, usage=_usage(job, artifact), title="ONNX")

    def kaggle_usage(self, artifact: Artifact) -> tuple[list[str], list[str]]:
        return ["import onnxruntime as ort"], [
            f'session = ort.InferenceSession("${{PATH}}/{Path(artifact.path).name}")',
            'outputs = session.run(None, {"images": images})[0]',
        ]


def _usage(job: ExportJob, artifact: Artifact) -> str:
    size = getattr(job.entry, "resolution", None) or 224
    lo, hi = (0.0, 1.0) if job.input_range == "unit" else (-1.0, 1.0)
    out = OUTPUT_NAMES[artifact.variant]
    note = ""
    if artifact.facts.get("external_data"):
        note = f"  # reads {Path(artifact.path).name}.data from the same directory"
    return f"""```python
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("{Path(artifact.path).name}", providers=["{PROVIDER}"]){note}
images = np.random.uniform({lo}, {hi}, (2, {size}, {size}, 3)).astype(np.float32)  # any batch and size
({out},) = session.run(["{out}"], {{"{INPUT_NAME}": images}})
print({out}.shape)
```"""


#: tf2onnx's switch for the deep copy of the graph it makes before each optimiser, to skip an
#: optimiser that raises (tf2onnx tests only whether it is set, not its value).
CATCH_ERRORS_ENV = "TF2ONNX_CATCH_ERRORS"
#: The switch is process-wide: one conversion at a time sets and restores it.
_CATCH_ERRORS_LOCK = threading.Lock()


@contextlib.contextmanager
def _optimizers_in_place():
    """tf2onnx's optimisers on the graph itself, not on a deep copy each (about a third of a conversion's CPU).

    The same optimisers run in the same order on an equal graph, so the model is the same;
    an optimiser that fails now fails the conversion (an ExportError) instead of being skipped.
    tf2onnx offers no argument for it, only the environment variable, so conversions in threads
    take turns (a lock) and the variable is restored after each.
    """
    with _CATCH_ERRORS_LOCK:
        saved = os.environ.get(CATCH_ERRORS_ENV)
        os.environ[CATCH_ERRORS_ENV] = "FALSE"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(CATCH_ERRORS_ENV, None)
            else:
                os.environ[CATCH_ERRORS_ENV] = saved


def finish_graph(both, weight_inputs: dict[str, str], arrays: dict[str, np.ndarray], output: str, model_id: str, variant: str):
    """One variant's model from the two-output conversion ``both`` (left unchanged).

    Only ``output`` and the nodes it needs are kept (the feature extractor loses the head);
    weights go from graph inputs to initializers (named by checkpoint key); I/O names are
    fixed, the rest canonical (:mod:`.onnx_graph`). ``both``'s inputs and outputs were checked
    once, by ``OnnxTarget._convert``.
    """
    from onnx import ModelProto, numpy_helper

    from .onnx_graph import canonicalize, keep_output

    model = ModelProto()
    model.CopyFrom(both)
    graph = model.graph
    keep_output(graph, output)
    weight_inputs = {i.name: weight_inputs[i.name] for i in graph.input[1:]}
    for node in graph.node:
        node.input[:] = [weight_inputs.get(n, n) for n in node.input]
    canonicalize(graph, {INPUT_NAME, output, *weight_inputs.values()})
    images = graph.input[0]
    del graph.input[1:]
    for dim, label in zip(images.type.tensor_type.shape.dim[:3], DIMS, strict=True):
        dim.dim_param = label
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = DIMS[0]
    graph.initializer.extend(numpy_helper.from_array(arrays[k], name=k) for k in weight_inputs.values())
    graph.name = f"bitconvert_{model_id}_{variant}".replace("-", "_")
    graph.doc_string = ""
    model.doc_string = f"bitconvert {model_id} {variant}"
    return model


def _save(model, export_dir: Path, rel: str, external: bool, model_id: str) -> dict[str, dict]:
    """Write the model (and its external data); the files written, relative to the export directory, with sizes."""
    import onnx

    path = export_dir / rel
    data_rel = rel + ".data"
    try:
        if external:
            onnx.save_model(
                model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=Path(data_rel).name
            )
        else:
            onnx.save_model(model, str(path))
        written = [rel, data_rel] if external else [rel]
        for r in written:
            with open(export_dir / r, "rb+") as f:
                os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        (export_dir / data_rel).unlink(missing_ok=True)
        raise LocalIOError(f"{model_id}: cannot write {path}: {exc.strerror or exc}") from exc
    return {r: {"bytes": (export_dir / r).stat().st_size} for r in written}


#: onnxruntime's session option for its thread pool's busy-waiting between tasks.
SPINNING = "session.intra_op.allow_spinning"


def run_onnx(path: Path, images: np.ndarray, output: str, threads: int | None = None, spin: bool = True) -> np.ndarray:
    """Load ``path`` (and its external data) in onnxruntime's CPU provider and run ``images``.

    ``spin=False``: the pool's threads sleep between tasks instead of busy-waiting (the
    export's check: the same kernels and outputs, less CPU; docs/performance.md).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry(SPINNING, "0")
    session = ort.InferenceSession(str(path), options, providers=[PROVIDER])
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names != ([INPUT_NAME], [output]):
        raise ValueError(f"inputs {names[0]} and outputs {names[1]}, expected [{INPUT_NAME!r}] and [{output!r}]")
    return session.run([output], {INPUT_NAME: images})[0]


TARGET = OnnxTarget()
