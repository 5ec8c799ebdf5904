"""The exported ``__call__``: one plain TensorFlow graph, for inference and for training alike.

The Reusable SavedModel API's ``__call__`` takes an optional ``training``
argument (``hub.KerasLayer(trainable=True)`` passes ``training=True`` during
``fit``). BiT has no batch norm or dropout, so both values run the same traced
graph: weight standardisation on every call from the current variables (a
fine-tuned kernel is always the one used), and group norm in its per-channel
form (:meth:`convert.model.tf_model.BiTResNetV2._group_norm`).

Why not XLA (``jit_compile=True``, which the exports of issue 11 used for
inference): every loader then compiles the network at each new input shape,
2 s on an idle AVX-512 Xeon but 8-14 s on an AVX2 EPYC or a loaded machine,
before the first answer; the per-channel group norm makes the plain graph as
fast as timm without it (docs/inference.md has the figures).
"""

from __future__ import annotations

from collections.abc import Callable


def reusable_call(forward: Callable, spec):
    """A ``tf.function`` ``call(images, training=False)`` over ``forward(images)``, traced for ``spec``.

    The network is traced once; both values of ``training`` call that one
    graph, and both concrete functions exist before return, so
    ``tf.saved_model.save`` saves both (and traces nothing more).
    """
    import tensorflow as tf

    graph = tf.function(forward, input_signature=[spec], autograph=False).get_concrete_function()

    def call(images, training=False):
        del training  # the Reusable SavedModel API's argument: the same function either way
        return graph(images)

    fn = tf.function(call, autograph=False)
    for training in (False, True):
        fn.get_concrete_function(spec, training=training)
    return fn
