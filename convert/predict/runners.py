"""Each exported classifier loaded in the runtime a user would use: a function from a float32 NHWC
batch (in the export's input range) to the model's output, importing only that runtime.

``predict`` runs one of them; the inference benchmark (scripts/bench_inference.py) times them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..imports import import_without

Runner = Callable[[np.ndarray], np.ndarray]


def _threads(threads: int | None) -> int:
    from ..resources import usable_cpus

    return threads or usable_cpus()


def onnx_runner(path: Path, output: str, threads: int | None = None) -> Runner:
    """onnxruntime on the CPU; ``output``: the output's name (logits or feature_vector)."""
    import onnxruntime as ort

    from ..export.target import INPUT_NAME

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are for developers
    options.intra_op_num_threads = _threads(threads)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run([output], {INPUT_NAME: batch})[0]


def tflite_runner(path: Path, threads: int | None = None) -> Runner:
    """ai_edge_litert's interpreter (XNNPACK), its tensors allocated once per input shape."""
    from ai_edge_litert.interpreter import Interpreter

    from ..nativelog import native_stderr_filtered

    interpreter = Interpreter(model_path=str(path), num_threads=_threads(threads))
    inp, out = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    shape: list[tuple] = [()]

    def run(batch: np.ndarray) -> np.ndarray:
        if shape[0] != batch.shape:
            interpreter.resize_tensor_input(inp, batch.shape)
            with native_stderr_filtered():  # the XNNPACK delegate's INFO line, on the first allocation
                interpreter.allocate_tensors()
            shape[0] = batch.shape
        interpreter.set_tensor(inp, batch)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(out))

    return run


def load_savedmodel(path: Path):
    """``tf.saved_model.load``, its ``__call__(images, training=True)`` traced once for every input shape.

    A restored ``tf.function`` traces a wrapper around the saved graph at each new input shape
    (TensorFlow saves no ``reduce_retracing``), and the first run of each wrapper prepares the
    whole network's graph again. Traced first with the export's shape-free input spec, every later
    call dispatches to that one trace, at any batch or image size.
    """
    from ..export.target import images_spec

    tf = import_without("tensorflow")  # predict never runs JAX
    model = tf.saved_model.load(str(path))
    model.__call__.get_concrete_function(images_spec(), training=True)
    return model


def savedmodel_runner(path: Path) -> Runner:
    """The SavedModel (:func:`load_savedmodel`), called with ``training=True``: the plain graph in every
    export, also in those written before issue 19, whose ``training=False`` path XLA compiles at each
    new input shape (BiT has no batch norm or dropout, so both compute the same function)."""
    model = load_savedmodel(path)
    import tensorflow as tf

    return lambda batch: model(tf.constant(batch), training=True).numpy()


def keras_runner(path: Path) -> Runner:
    """``keras.saving.load_model`` on the backend KERAS_BACKEND names, the BiT layers registered as a user does."""
    import keras

    from ..model import keras_layers  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(str(path))
    return lambda batch: keras.ops.convert_to_numpy(model.predict_on_batch(batch))
