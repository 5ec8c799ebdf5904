"""Run by tests/test_keras_export.py in a fresh process per backend: fine-tune a loaded feature extractor.

``KERAS_BACKEND=<b> python tests/keras_fit_child.py feature_extraction.keras STEP.npz`` prints one JSON line:
the top-level modules that importing ``convert.model.keras_layers`` added after keras,
how many backbone weights one ``fit`` step changed inside a larger model, whether the backbone
then predicts exactly what a fresh copy given its new weights predicts (a kernel kept from the
prediction before the step would not), and how many weights changed once ``backbone.trainable = False``.
The step (new minus old backbone weights; plain SGD from a fixed head, so a scaled gradient) goes
to STEP.npz, for comparison across backends.
"""

import json
import sys

import keras

_BEFORE = {m.split(".")[0] for m in sys.modules}
import convert.model.keras_layers  # noqa: E402, F401

NEW_MODULES = sorted({m.split(".")[0] for m in sys.modules} - _BEFORE)

import numpy as np  # noqa: E402


def snapshot(weights):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in weights]


def changed(before, weights):
    return sum(not np.array_equal(b, a) for b, a in zip(before, snapshot(weights), strict=True))


def main(path: str, step_path: str) -> None:
    backbone = keras.saving.load_model(path)
    inputs = keras.Input((32, 32, 3))
    head = keras.layers.Dense(3, name="new_head")
    model = keras.Model(inputs, head(backbone(inputs)))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32"), np.array([0, 2])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model.build((None, 32, 32, 3))
    head.set_weights([rng.standard_normal((head.kernel.shape[0], 3)).astype("float32"), np.zeros(3, "float32")])
    predicted_before = np.asarray(keras.ops.convert_to_numpy(backbone.predict_on_batch(x)))

    model.compile(keras.optimizers.SGD(0.1), loss)
    before = snapshot(backbone.weights)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    trainable_changed = changed(before, backbone.weights)
    after = snapshot(backbone.weights)
    np.savez(step_path, *[a - b for a, b in zip(after, before, strict=True)])
    fresh = keras.saving.load_model(path)
    fresh.set_weights(after)
    predicted = np.asarray(keras.ops.convert_to_numpy(backbone.predict_on_batch(x)))
    predicts_new_weights = np.array_equal(predicted, np.asarray(keras.ops.convert_to_numpy(fresh.predict_on_batch(x))))

    backbone.trainable = False
    model.compile(keras.optimizers.SGD(0.1), loss)
    before, head_before = snapshot(backbone.weights), snapshot(head.weights)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    result = {
        "backend": keras.backend.backend(),
        "new_modules": NEW_MODULES,
        "weights": len(backbone.weights),
        "trainable_changed": trainable_changed,
        "predicts_new_weights": predicts_new_weights and not np.array_equal(predicted, predicted_before),
        "frozen_changed": changed(before, backbone.weights),
        "frozen_head_changed": changed(head_before, head.weights),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
