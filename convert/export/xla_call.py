"""The exported ``__call__``: XLA-compiled for inference, the plain graph for training.

Why (figures in docs/inference.md and docs/performance.md): TensorFlow's graph
executor runs BiT ResNetV2 slower than timm's PyTorch model on a CPU; the
same graph compiled by XLA (``jit_compile=True``) fuses weight
standardisation, group norm and the activations into the convolutions'
neighbours and runs faster than timm. The attribute that asks for
compilation (``_XlaMustCompile`` on the function) is saved in the SavedModel,
so every loader (``tf.saved_model.load``, ``hub.KerasLayer``, Keras 3's
``TFSMLayer``, ``saved_model_cli run``, TF Serving) compiles it; XLA compiles
once per input shape.

Fine-tuning is another matter: the gradient of a compiled function is
compiled too, for each shape, which delays a ``hub.KerasLayer``'s first
training step by far more than the plain graph does. So ``__call__`` takes
the Reusable SavedModel API's optional ``training`` argument:
``training=False`` (the default, and what ``serving_default`` uses) runs the
compiled graph, ``training=True`` (what ``hub.KerasLayer(trainable=True)``
passes during ``fit``) runs the same traced graph without XLA, exactly as it
was exported before. BiT has no batch norm or dropout: both branches compute
the same function of the current variables (standardisation is done on every
call, so fine-tuned kernels are always the ones used), to float32 rounding.
The network is traced once; the two branches call that one graph.
"""

from __future__ import annotations

from collections.abc import Callable


def inference_compiled_call(forward: Callable, spec):
    """A ``tf.function`` ``call(images, training=False)`` over ``forward(images)``, traced for ``spec``.

    ``training=False`` runs ``forward`` under XLA, ``training=True`` as a plain
    graph. Both concrete functions exist before return, so
    ``tf.saved_model.save`` saves both (and traces nothing more).
    """
    import tensorflow as tf

    plain = tf.function(forward, input_signature=[spec], autograph=False).get_concrete_function()
    compiled = tf.function(lambda images: plain(images), input_signature=[spec], autograph=False, jit_compile=True)

    def call(images, training=False):
        # `training` is a Python bool here: one concrete function per value, chosen at call time.
        return plain(images) if training else compiled(images)

    fn = tf.function(call, autograph=False)
    for training in (False, True):
        fn.get_concrete_function(spec, training=training)
    return fn
