"""convert.export.tflite_graph: one two-output conversion, one file per output, each running in LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from convert.errors import ExportError
from convert.export.tflite_graph import single_outputs


@pytest.fixture(scope="module")
def two_outputs():
    """A small converted model with the export's shape of outputs: a feature vector, and logits computed from it."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    holder = tf.Module()  # as convert.export.folded does: the converter freezes the variables it owns
    holder.kernel = tf.Variable(rng.normal(size=(3, 3, 3, 8)).astype(np.float32))
    holder.head = tf.Variable(rng.normal(size=(8, 5)).astype(np.float32))

    def forward(images):
        features = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(images, holder.kernel, 1, "SAME")), axis=[1, 2])
        return {"feature_vector": features, "logits": tf.matmul(features, holder.head)}

    spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="x")
    concrete = tf.function(forward, input_signature=[spec], autograph=False).get_concrete_function()
    flat = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder).convert()
    images = rng.uniform(0, 1, (2, 12, 10, 3)).astype(np.float32)
    return flat, images, {k: v.numpy() for k, v in forward(tf.constant(images)).items()}


def _run(data, images):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(data))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    return inp["name"], out["name"], interpreter.get_tensor(out["index"]), interpreter


def test_each_output_gets_a_file_that_runs_alone(two_outputs):
    flat, images, expected = two_outputs
    names = ["logits", "feature_vector"]
    sizes = []
    for name, data in zip(names, single_outputs(flat, names), strict=True):
        inp, out, value, interpreter = _run(data, images)
        assert (inp, out) == ("images", name)
        assert interpreter.get_signature_list()["serving_default"] == {"inputs": ["images"], "outputs": [name]}
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-5)
        sizes.append(len(data))
    # The feature file lost the head: its 8x5 weights and the matmul.
    assert sizes[0] - sizes[1] >= 8 * 5 * 4


def test_an_output_the_one_before_dropped_is_refused(two_outputs):
    flat, _, _ = two_outputs
    with pytest.raises(ValueError, match="'logits' was dropped"):
        list(single_outputs(flat, ["feature_vector", "logits"]))


def test_an_output_the_converter_did_not_write_is_one_line(two_outputs):
    flat, _, _ = two_outputs
    with pytest.raises(ExportError) as err:
        list(single_outputs(flat, ["pre_logits"]))
    assert "\n" not in str(err.value) and "'pre_logits'" in str(err.value)
