"""bitconvert: BiT ResNetV2 checkpoints to verified TensorFlow SavedModels.

Importing the package is cheap: TensorFlow and JAX are imported only by the
modules that need them (tf_model, flax_model, parity, export).
"""

__version__ = "0.1.0"
