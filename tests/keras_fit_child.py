"""Run by tests/test_keras_export.py in a fresh process per backend: fine-tune a loaded feature extractor.

``KERAS_BACKEND=<b> python tests/keras_fit_child.py feature_extraction.keras`` prints one JSON line:
the top-level modules that importing ``convert.model.keras_layers`` added after keras,
how many backbone weights one ``fit`` step changed inside a larger model, and
how many changed once ``backbone.trainable = False``.
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


def main(path: str) -> None:
    backbone = keras.saving.load_model(path)
    inputs = keras.Input((32, 32, 3))
    head = keras.layers.Dense(3, name="new_head")
    model = keras.Model(inputs, head(backbone(inputs)))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (2, 32, 32, 3)).astype("float32"), np.array([0, 2])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model.compile(keras.optimizers.SGD(0.1), loss)
    before = snapshot(backbone.weights)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    trainable_changed = changed(before, backbone.weights)

    backbone.trainable = False
    model.compile(keras.optimizers.SGD(0.1), loss)
    before, head_before = snapshot(backbone.weights), snapshot(head.weights)
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    result = {
        "backend": keras.backend.backend(),
        "new_modules": NEW_MODULES,
        "weights": len(backbone.weights),
        "trainable_changed": trainable_changed,
        "frozen_changed": changed(before, backbone.weights),
        "frozen_head_changed": changed(head_before, head.weights),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
