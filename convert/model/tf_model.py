"""BiT ResNetV2 as a plain TensorFlow graph (tf.Module + raw ops, no Keras layers).

One ``tf.Variable`` per checkpoint array, named after its checkpoint key, in
the checkpoint's own shape (HWIO kernels; the head kept as a (1, 1, C, K)
kernel and reshaped in the graph). Every constant and padding rule comes from
:mod:`convert.model.numerics`; the same module feeds the Flax reference model.

Variable names: TF keeps '/' in a variable's name verbatim when the variable
is created outside any name scope, and appends the output index, so the
variable for ``resnet/block1/unit01/a/group_norm/gamma`` has ``.name ==
'resnet/block1/unit01/a/group_norm/gamma:0'``. (Created inside
``self.name_scope`` it would gain a ``bit_resnetv2/`` prefix; we do not do
that.) TF does not otherwise interpret the '/'; SavedModel and
tf.train.Checkpoint key variables by object path, not by ``.name``.

Shapes: everything spatial and the batch are dynamic (``tf.shape``), so the
methods trace once with ``TensorSpec([None, None, None, 3], tf.float32)``.
There is no tensor-dependent Python control flow, so ``autograph=False`` is
safe and traces faster (docs/performance.md).

``pool_pad`` is the root max-pool's padding, the checkpoint's own
(``numerics.POOL_PADS``: ``"zero"`` for the big_transfer files, ``"neg_inf"``
for big_vision's ``distill/`` ones; :class:`convert.model.forward.ForwardPass`
says which). The mutation knob (for the parity tests; the default is the
correct model):

* ``strided_padding="same"`` replaces the explicit symmetric pad + VALID of
  the stride-2 convolutions (root 7x7, every strided 3x3) by TF ``'SAME'``,
  which pads (0, 1) / (2, 3) asymmetrically on even inputs: the classic
  port bug.

Inference-only exports (LiteRT, ONNX) fold weight standardisation into the
stored kernels: :func:`standardize_kernel` once per kernel, then a module
built with ``weights=`` (those tensors instead of new variables) and
``standardized_kernels=True`` (the convs use their kernels as given). The
SavedModels standardise block 4's outputs rather than its kernels
(``output_side_blocks``, :func:`conv_standardising_output`; :meth:`BiTResNetV2.as_saved`),
and so does every graph that judges them before or after export (the live run, ``verify``).
The LiteRT graph convolves its wider stride-1 3x3 layers by Winograd's algorithm
(``winograd=``, :mod:`.winograd`).

Group norm has one form everywhere: each group's statistics broadcast per channel,
the activations never reshaped (:meth:`BiTResNetV2._group_norm`; why: docs/inference.md).
"""

from __future__ import annotations

import tensorflow as tf

from .architecture import CONV, PREFIX, Architecture, checkpoint_layout, unit_prefix
from .numerics import (
    GN_EPS,
    GN_GROUPS,
    MID_PAD,
    NEG_INF_POOL_PAD_AS_EDGE_COPIES,
    POOL_PAD,
    POOL_PAD_VALUES,
    POOL_PADS,
    POOL_STRIDE,
    POOL_WINDOW,
    ROOT_PAD,
    ROOT_STRIDE,
    STRIDED_PADDINGS,
    unit_stride,
)
from .tf_ops import _const, _mean_in_steps, conv_standardising_output, standardize_kernel_fused
from .winograd import winograd_conv

STRIDED_PADDING = STRIDED_PADDINGS
#: The blocks whose convolutions the SavedModels standardise on the output's side: block 4's
#: outputs have (H/32) x (W/32) values per image and channel against 512-2048 x width weights
#: per kernel channel, so its output is the smaller side at the batches and sizes of inference
#: (R50x1 at 224: up to batch 10), and where it is not, both are small. Block 4 holds 59% of
#: R50x1's kernel weights. Figures: docs/inference.md, "Block 4 standardises its outputs".
OUTPUT_SIDE_BLOCKS = (4,)


def _pad(x, p: int, value: float = 0.0):
    # A Python value, so that a zero pad stays TF's Pad (PadV2 otherwise: another LiteRT op).
    return tf.pad(x, _const([[0, 0], [p, p], [p, p], [0, 0]]), constant_values=value)


def _pad_with_edges(x, p: int):
    """``x`` padded by ``p`` copies of its first and last rows, then of its first and last columns."""
    for axis in (1, 2):
        first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
        x = tf.concat([first] * p + [x] + [last] * p, axis)
    return x


class BiTResNetV2(tf.Module):
    """BiT ResNetV2 forward pass over variables named after the checkpoint keys.

    Attributes:
        arch: the :class:`Architecture`.
        variables_by_key: checkpoint key -> ``tf.Variable`` (trainable,
            float32, checkpoint shape), in checkpoint layout order.
    """

    def __init__(
        self,
        arch: Architecture,
        name: str = "bit_resnetv2",
        *,
        strided_padding: str = "explicit",
        pool_pad: str = "zero",
        standardized_kernels: bool = False,
        edge_pool_pad: bool = False,
        output_side_blocks: tuple[int, ...] = (),
        weights=None,
        winograd=None,
    ):
        super().__init__(name=name)
        if strided_padding not in STRIDED_PADDING:
            raise ValueError(f"strided_padding must be one of {STRIDED_PADDING}, got {strided_padding!r}")
        if pool_pad not in POOL_PADS:
            raise ValueError(f"pool_pad must be one of {POOL_PADS}, got {pool_pad!r}")
        self.arch = arch
        self.strided_padding = strided_padding
        self.pool_pad = pool_pad
        #: The conv kernels are standardised already (folded exports): use them as given.
        self.standardized_kernels = standardized_kernels
        #: A -inf root pool padding as copies of the edge rows and columns: the same pooled values
        #: and no infinite constant (the LiteRT graph; numerics.NEG_INF_POOL_PAD_AS_EDGE_COPIES).
        self.edge_pool_pad = edge_pool_pad
        #: Blocks whose convolutions standardise their outputs rather than their kernels
        #: (:func:`conv_standardising_output`; the SavedModels: :data:`OUTPUT_SIDE_BLOCKS`).
        self.output_side_blocks = tuple(output_side_blocks)
        #: Checkpoint key -> transformed kernel (:mod:`.winograd`): those stride-1 3x3
        #: convolutions go by Winograd's algorithm (the LiteRT graph; kernels standardised).
        self.winograd = dict(winograd or {})
        if self.winograd and not standardized_kernels:
            raise ValueError("winograd kernels are transformed standardised kernels: standardized_kernels=True")
        if weights is not None:  # key -> variable (build_tf_model) or tensor (folded kernels, function arguments)
            self.variables_by_key = dict(weights)
            return
        # Zeros, not random: an unloaded model must never look plausible.
        self.variables_by_key = {
            key: tf.Variable(tf.zeros(shape, tf.float32), trainable=True, name=key)
            for key, shape in checkpoint_layout(arch).items()
        }

    # -- building blocks ----------------------------------------------------

    def _conv(self, x, key: str, stride: int = 1, pad: int = 0, gate=None, on_output: bool = False):
        """Standardised conv: explicit symmetric zero pad, then VALID (or the 'same' mutation).

        ``gate``: the tensor the kernel's standardisation waits for (default ``x``).
        ``on_output``: standardise the output instead (:func:`conv_standardising_output`).
        """
        # A standardised kernel depends on its variable alone, so TF's executor otherwise
        # computes them all at the start and holds them: a second copy of the weights
        # (docs/performance.md). Gated on the unit's input, a unit's kernels are standardised
        # while its first layers run, and at most one unit's copies are held.
        if key in self.winograd and (stride, pad) == (1, MID_PAD):
            return winograd_conv(x, self.winograd[key])
        w = self.variables_by_key[key]
        same = pad and stride > 1 and self.strided_padding == "same"
        on_output = on_output and not self.standardized_kernels and not same
        if not self.standardized_kernels:
            with tf.control_dependencies([x if gate is None else gate]):
                w = tf.convert_to_tensor(w) if on_output else standardize_kernel_fused(w)
        if same:
            return tf.nn.conv2d(x, w, strides=stride, padding="SAME")
        if pad:
            x = _pad(x, pad)
        if on_output:
            return conv_standardising_output(x, w, (stride, stride))
        return tf.nn.conv2d(x, w, strides=stride, padding="VALID")

    def _group_norm(self, x, prefix: str):
        """GN_GROUPS groups, stats over (H, W, channels-in-group), eps GN_EPS, then gamma/beta.

        The activations are kept 4-D: each group's mean and variance are broadcast per channel,
        and only the (batch, channels) statistics are reshaped, to shapes fixed but for the batch.
        A reshape of the activations to a shape computed at run time (``tf.shape``) is what
        LiteRT's XNNPACK delegate cannot take, and what kept onnxruntime's layout changes around
        every group norm; TensorFlow's graph runs this form faster too (docs/inference.md).
        Means in steps as in :func:`_mean_in_steps` (W, H, then the group), the variance from
        the centred values (two passes, as the reference). Normalised as ``x * scale + (beta -
        mean * scale)``: one pass over the activations fewer than centring them first (LiteRT
        1.06x faster at batch 8). Where a group's mean is 100x its spread it is 1.8e-5 off
        against centring's 8.9e-6 (a one-pass variance: 3e-3); at 1000x, the statistics' own
        float32 rounding dominates both (docs/inference.md).
        """
        gamma = self.variables_by_key[prefix + "gamma"]
        beta = self.variables_by_key[prefix + "beta"]
        channels = gamma.shape[0]
        per_group = channels // GN_GROUPS

        def group_mean(t):  # (N, H, W, C) -> (N, 1, 1, C): the mean of each channel's group
            s = _mean_in_steps(t, (1, 2))
            s = tf.reduce_mean(tf.reshape(s, _const([-1, GN_GROUPS, per_group])), axis=_const(2), keepdims=True)
            return tf.reshape(s * _const([1.0] * per_group, tf.float32), _const([-1, 1, 1, channels]))

        mean = group_mean(x)
        scale = gamma * tf.math.rsqrt(group_mean(tf.math.squared_difference(x, mean)) + _const(GN_EPS, tf.float32))
        return x * scale + (beta - mean * scale)

    def _unit(self, x, block: int, unit: int):
        p = unit_prefix(block, unit)
        stride = unit_stride(block, unit)
        side = {"gate": x, "on_output": block in self.output_side_blocks}
        y = tf.nn.relu(self._group_norm(x, f"{p}a/group_norm/"))
        shortcut = self._conv(y, f"{p}a/proj/{CONV}/kernel", stride=stride, **side) if unit == 1 else x
        y = self._conv(y, f"{p}a/{CONV}/kernel", **side)
        y = tf.nn.relu(self._group_norm(y, f"{p}b/group_norm/"))
        y = self._conv(y, f"{p}b/{CONV}/kernel", stride=stride, pad=MID_PAD, **side)
        y = tf.nn.relu(self._group_norm(y, f"{p}c/group_norm/"))
        y = self._conv(y, f"{p}c/{CONV}/kernel", **side)
        return y + shortcut

    # -- public -------------------------------------------------------------

    def stages(self, images) -> dict[str, tf.Tensor]:
        """All named intermediate outputs for float32 NHWC ``images`` in [-1, 1].

        Keys, in order: stem (after the root max-pool), block1..block4 (each
        block's output, pre-activation), pre_logits (batch, 2048*width),
        logits (batch, classes).
        """
        return self._forward(images, logits=True)

    def _forward(self, images, logits: bool) -> dict[str, tf.Tensor]:
        x = tf.convert_to_tensor(images, tf.float32)
        out: dict[str, tf.Tensor] = {}
        x = self._conv(x, f"{PREFIX}root_block/{CONV}/kernel", stride=ROOT_STRIDE, pad=ROOT_PAD)
        pad_value = POOL_PAD_VALUES[self.pool_pad]
        if self.edge_pool_pad and pad_value == float("-inf") and NEG_INF_POOL_PAD_AS_EDGE_COPIES:
            x = _pad_with_edges(x, POOL_PAD)
        else:
            x = _pad(x, POOL_PAD, pad_value)
        x = tf.nn.max_pool2d(x, POOL_WINDOW, POOL_STRIDE, "VALID")
        out["stem"] = x
        for block, n in enumerate(self.arch.units, start=1):
            for unit in range(1, n + 1):
                x = self._unit(x, block, unit)
            out[f"block{block}"] = x
        x = tf.nn.relu(self._group_norm(x, f"{PREFIX}group_norm/"))
        pre = tf.reduce_mean(x, axis=[1, 2])
        out["pre_logits"] = pre
        if not logits:
            return out
        out["logits"] = self.head(pre)
        return out

    def head(self, pre_logits):
        """Logits (batch, classes) from the pre-logits feature vector (batch, 2048*width)."""
        kernel = self.variables_by_key[f"{PREFIX}head/conv2d/kernel"]
        head = tf.reshape(kernel, [self.arch.features, self.arch.classes])
        return tf.matmul(pre_logits, head) + self.variables_by_key[f"{PREFIX}head/conv2d/bias"]

    def __call__(self, images):
        """Logits (batch, classes) for float32 NHWC ``images`` in [-1, 1]."""
        return self.stages(images)["logits"]

    def features(self, images):
        """Pre-logits feature vector (batch, 2048*width) for ``images`` in [-1, 1]."""
        return self._forward(images, logits=False)["pre_logits"]

    def rebuilt(self, weights=None, **form) -> BiTResNetV2:
        """The same architecture and padding knobs (a mutated net stays mutated) over ``weights``
        (default: these variables), computed in ``form`` (the other build options)."""
        weights = self.variables_by_key if weights is None else weights
        return BiTResNetV2(self.arch, strided_padding=self.strided_padding, pool_pad=self.pool_pad, weights=weights, **form)

    def as_saved(self) -> BiTResNetV2:
        """The same variables in the SavedModels' form: :data:`OUTPUT_SIDE_BLOCKS` standardising
        their outputs (the same values in arithmetic)."""
        return self.rebuilt(output_side_blocks=OUTPUT_SIDE_BLOCKS)


def build_tf_model(checkpoint, rows=None, *, release: bool = False, **knobs) -> BiTResNetV2:
    """A :class:`BiTResNetV2` for ``checkpoint`` (a :class:`convert.checkpoint.Checkpoint`).

    Each variable is created from its array through the mapping (``rows``, default
    :func:`convert.model.mapping.mapping_rows` of the checkpoint's architecture),
    which checks both sides first and raises :class:`MappingError` listing
    every difference before any variable exists. ``release``: the checkpoint's
    arrays are dropped one by one as the variables take them (the export's build).
    ``knobs``: the build options of :class:`BiTResNetV2` (``pool_pad``, the
    checkpoint's root pool padding; ``strided_padding``, a mutation for tests only).
    """
    from .mapping import tf_variables

    weights = tf_variables(checkpoint.architecture, checkpoint.arrays, rows, release=release)
    return BiTResNetV2(checkpoint.architecture, weights=weights, **knobs)
