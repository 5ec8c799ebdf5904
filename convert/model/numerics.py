"""Every numerical constant and padding rule of BiT ResNetV2, with its source.

Both forward passes (``tf_model`` and ``flax_model``) import these names and
nothing else hard-codes them, so a change here changes both sides and the
parity check stays honest.

Source for all of them: the BiT authors' JAX model (google-research/big_transfer,
``bit_jax/models.py``; ``bit_tf2/models.py`` and ``bit_pytorch/models.py`` agree).
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

#: Root max-pool: 3x3, stride 2, after an explicit pad of 1 per side with ZEROS
#: (not -inf). The root conv output can be negative, so the two differ on
#: the borders; the authors pad with ``jnp.pad`` (zeros) before ``max_pool``.
POOL_WINDOW = 3
POOL_STRIDE = 2
POOL_PAD = 1
POOL_PAD_VALUE = 0.0

#: The 3x3 conv of each unit: explicit zero pad of 1 per side, then VALID.
#: Never TF 'SAME' on a stride-2 layer: TF pads (0, 1) asymmetrically there,
#: which shifts the sampling grid by one pixel against the authors' (1, 1).
MID_KERNEL = 3
MID_PAD = 1

#: The stride of a block's first unit sits on the 3x3 conv and on the 1x1
#: projection (ResNet "v1.5"/v2 style), never on the first 1x1 conv.
BLOCK_STRIDES = (1, 2, 2, 2)

#: Pixels arrive in [-1, 1]: ``(pixel - 127.5) / 127.5``.
INPUT_RANGE = (-1.0, 1.0)


def pixels_to_model_range(x, lo: float, hi: float):
    """Affine map from an input range ``[lo, hi]`` to the model's [-1, 1].

    Works on numpy arrays, TF tensors and JAX arrays alike (plain arithmetic).
    """
    m_lo, m_hi = INPUT_RANGE
    scale = (m_hi - m_lo) / (hi - lo)
    return (x - lo) * scale + m_lo


#: The forward passes' mutation knobs (tests prove the parity checks catch them):
#: strided layers padded explicitly (BiT) or TF/Keras "same"; the root pool padded
#: with zeros (BiT) or -inf.
STRIDED_PADDINGS = ("explicit", "same")
POOL_PADS = ("zero", "neg_inf")
