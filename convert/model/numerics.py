"""Every numerical constant and padding rule of BiT ResNetV2, with its source.

Both forward passes (``tf_model`` and ``flax_model``) import these names and
nothing else hard-codes them, so a change here changes both sides and the
parity check stays honest.

Source for all of them: the BiT authors' JAX model (google-research/big_transfer,
``bit_jax/models.py``; ``bit_tf2/models.py`` and ``bit_pytorch/models.py`` agree); the one rule on
which the authors' two codebases differ, the root max-pool's padding, is below with both sources.
"""

from __future__ import annotations

#: Weight standardisation: ``(k - mean) / sqrt(var + WS_EPS)`` over the kernel's
#: (H, W, I) axes. The authors' ``StdConv`` uses 1e-10 (not 1e-5 as in some
#: third-party ports); with trained kernels the difference is visible in logits.
WS_EPS = 1e-10
#: Axes of an HWIO kernel reduced by weight standardisation.
WS_AXES = (0, 1, 2)

#: Group norm: 32 groups, statistics over (H, W, channels-in-group).
GN_GROUPS = 32
#: Group norm epsilon (flax.linen.GroupNorm's default, as used by the authors).
GN_EPS = 1e-5

#: Root convolution: 7x7, stride 2, after an explicit zero pad of 3 per side, VALID.
ROOT_KERNEL = 7
ROOT_STRIDE = 2
ROOT_PAD = 3

#: Root max-pool: 3x3, stride 2, after an explicit pad of 1 per side. The pad
#: VALUE is the one place where the authors' two codebases differ, and the root
#: conv output can be negative, so the two differ on the borders:
#: "zero" pads with zeros then pools VALID; "neg_inf" pads with -inf, which is
#: what a max-pool's own padding does (a 3x3 window always holds a real pixel,
#: so -inf never reaches the output).
POOL_WINDOW = 3
POOL_STRIDE = 2
POOL_PAD = 1
POOL_PAD_VALUES = {"zero": 0.0, "neg_inf": float("-inf")}
#: The root pool paddings, by name (``zero`` first: the original release's).
POOL_PADS = tuple(POOL_PAD_VALUES)
#: The LiteRT graph pads the root pool by copies of its edge rows and columns where the model pads
#: with -inf: the same pooled values, bit for bit, because every window that holds a padded row
#: (column) also holds the one it copies, which needs POOL_PAD <= POOL_WINDOW - 1. A -inf constant
#: would be a PADV2 (the converter writes float32's lowest value), which XNNPACK leaves out of its
#: partitions; the copies are slices and a concatenation, which it takes at any input size.
NEG_INF_POOL_PAD_AS_EDGE_COPIES = POOL_PAD <= POOL_WINDOW - 1

#: The code that defines a checkpoint's forward pass -> its root pool padding.
#: - ``big_transfer`` (google-research/big_transfer, the original BiT release:
#:   ``bit_jax/models.py`` pads with ``jax.lax.pad(x, 0.0, ...)`` then
#:   ``max_pool(..., padding="VALID")``; ``bit_pytorch`` with
#:   ``nn.ConstantPad2d(1, 0)``; ``bit_tf2`` with ``tf.pad``): zeros. It trained
#:   BiT-S, BiT-M, the ILSVRC-2012 and the VTAB-1k fine-tunes.
#: - ``big_vision`` (google-research/big_vision, ``big_vision/models/bit_paper.py``,
#:   ``RootBlock``: ``nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])``,
#:   which flax pads with the pool's init value, -inf): the distillation
#:   project's code (``configs/proj/distill/bit_i1k.py``: ``student_name`` and
#:   ``prof_m_name`` are ``'bit_paper'``), so every ``distill/`` file.
#: Which entry follows which: the registry (checkpoints.yaml, ``code:``).
CODE_POOL_PADDING = {"big_transfer": "zero", "big_vision": "neg_inf"}
CODES = tuple(CODE_POOL_PADDING)

#: The 3x3 conv of each unit: explicit zero pad of 1 per side, then VALID.
#: Never TF 'SAME' on a stride-2 layer: TF pads (0, 1) asymmetrically there,
#: which shifts the sampling grid by one pixel against the authors' (1, 1).
MID_KERNEL = 3
MID_PAD = 1

#: The stride of a block's first unit sits on the 3x3 conv and on the 1x1
#: projection (ResNet "v1.5"/v2 style), never on the first 1x1 conv.
BLOCK_STRIDES = (1, 2, 2, 2)


def unit_stride(block: int, unit: int) -> int:
    """The stride of unit ``unit`` (from 1) of block ``block`` (from 1): the block's on its first unit, else 1."""
    return BLOCK_STRIDES[block - 1] if unit == 1 else 1


#: Pixels arrive in [-1, 1]: ``(pixel - 127.5) / 127.5``.
INPUT_RANGE = (-1.0, 1.0)


def pixels_to_model_range(x, lo: float, hi: float):
    """Affine map from an input range ``[lo, hi]`` to the model's [-1, 1].

    Works on numpy arrays, TF tensors and JAX arrays alike (plain arithmetic).
    """
    m_lo, m_hi = INPUT_RANGE
    scale = (m_hi - m_lo) / (hi - lo)
    return (x - lo) * scale + m_lo


def model_range_to_pixels(x, lo: float, hi: float):
    """The inverse of :func:`pixels_to_model_range`: images in the model's [-1, 1] expressed in ``[lo, hi]``."""
    m_lo, m_hi = INPUT_RANGE
    scale = (hi - lo) / (m_hi - m_lo)
    return (x - m_lo) * scale + lo


#: The forward passes' mutation knob (tests prove the parity checks catch it):
#: strided layers padded explicitly (BiT) or TF/Keras "same". (The root pool's
#: padding is no knob: it is the checkpoint's, POOL_PADS above.)
STRIDED_PADDINGS = ("explicit", "same")
