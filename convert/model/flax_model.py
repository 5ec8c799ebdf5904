"""The reference: BiT ResNetV2 in Flax (linen), as the authors' JAX model computes it.

Faithful to google-research/big_transfer ``bit_jax/models.py``: weight-standardised convolutions (eps
``WS_EPS``), ``flax.linen.GroupNorm`` (``GN_GROUPS`` groups, eps ``GN_EPS``,
Flax's own statistics, two-pass variance), explicit symmetric zero padding with VALID
convolutions (the 1x1 ones as matrix products over the channels: the same sums), a root
max-pool padded as the checkpoint's code pads it
(``pool_padding``: zeros in big_transfer, -inf in big_vision's ``bit_paper.py``;
:data:`convert.model.numerics.CODE_POOL_PADDING`), the stride on the 3x3 conv and on the
projection. Every constant comes from :mod:`convert.model.numerics`, like the TF graph.

Parameter tree (the authors' names)::

    params/root_block/conv_root/kernel                 (7, 7, 3, 64w)
    params/block{b}/unit{u:02d}/gn1|gn2|gn3/scale|bias
    params/block{b}/unit{u:02d}/conv1|conv2|conv3/kernel
    params/block{b}/unit01/conv_proj/kernel
    params/norm-pre-head/scale|bias
    params/conv_head/kernel (2048w, classes), params/conv_head/bias

The model returns every named stage (``convert.model.architecture.STAGES``), so one forward pass gives
the per-stage comparison. Convolutions and the head use
``precision=HIGHEST``: on CPU that is what float32 does anyway, but on GPU/TPU
JAX's default lets float32 convs/matmuls run in TF32/bfloat16 passes, which
would make the "reference" worse than the graph it judges. Running it in
float64 needs only float64 params and inputs under ``jax.enable_x64(True)``:
no layer pins a dtype.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .architecture import Architecture
from .numerics import (
    BLOCK_STRIDES,
    GN_EPS,
    GN_GROUPS,
    MID_KERNEL,
    MID_PAD,
    POOL_PAD,
    POOL_PAD_VALUES,
    POOL_STRIDE,
    POOL_WINDOW,
    ROOT_KERNEL,
    ROOT_PAD,
    ROOT_STRIDE,
    WS_AXES,
    WS_EPS,
)
from .xla_options import FAST_COMPILE_OPTIONS

PRECISION = lax.Precision.HIGHEST


def standardize(w, axis=WS_AXES, eps=WS_EPS):
    """Weight standardisation as the authors write it: centre, then divide by sqrt(mean square + eps)."""
    w = w - jnp.mean(w, axis=axis, keepdims=True)
    return w / jnp.sqrt(jnp.mean(jnp.square(w), axis=axis, keepdims=True) + eps)


def pad_hw(x, p: int, value: float = 0.0):
    """Symmetric explicit padding of H and W by ``p`` (no TF 'SAME' asymmetry)."""
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=value)


class StdConv(nn.Module):
    """Bias-free weight-standardised conv: explicit symmetric pad, then VALID."""

    features: int
    kernel: int
    stride: int = 1
    pad: int = 0

    @nn.compact
    def __call__(self, x):
        k = self.param("kernel", nn.initializers.lecun_normal(), (self.kernel, self.kernel, x.shape[-1], self.features))
        w = standardize(jnp.asarray(k, x.dtype))
        if self.kernel == 1 and not self.pad:
            # A matrix product over the channels (a strided 1x1 convolution reads every stride-th
            # pixel), the same bits here: XLA:CPU ran block1's 1x1 convolutions on one thread, in
            # float64 at about a third of numpy's dgemm speed (docs/performance.md, session 23).
            s = self.stride
            return lax.dot_general(x[:, ::s, ::s, :] if s > 1 else x, w[0, 0], (((3,), (0,)), ((), ())), precision=PRECISION)
        if self.pad:
            x = pad_hw(x, self.pad)
        return lax.conv_general_dilated(
            x,
            w,
            window_strides=(self.stride, self.stride),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=PRECISION,
        )


def group_norm(name: str) -> nn.GroupNorm:
    """Flax's GroupNorm with the two-pass variance E[(x - E[x])^2], as big_vision uses for these weights.

    The default one-pass E[x^2] - E[x]^2 cancels catastrophically in float32
    where a group's mean dwarfs its spread (flat images), which multiplies the
    float32 error at block4 (docs/calibration.md). The float64 verdict is unaffected.
    """
    return nn.GroupNorm(num_groups=GN_GROUPS, epsilon=GN_EPS, name=name, use_fast_variance=False)


class RootBlock(nn.Module):
    """The root conv, then the max-pool padded with ``POOL_PAD_VALUES[pool_padding]`` (then VALID)."""

    width: int
    pool_padding: str = "zero"

    @nn.compact
    def __call__(self, x):
        x = StdConv(self.width, ROOT_KERNEL, ROOT_STRIDE, ROOT_PAD, name="conv_root")(x)
        x = pad_hw(x, POOL_PAD, POOL_PAD_VALUES[self.pool_padding])
        return nn.max_pool(x, (POOL_WINDOW, POOL_WINDOW), strides=(POOL_STRIDE, POOL_STRIDE), padding="VALID")


class ResidualUnit(nn.Module):
    """Pre-activation bottleneck; the stride sits on conv2 (3x3) and conv_proj."""

    mid: int
    out: int
    stride: int = 1
    project: bool = False

    @nn.compact
    def __call__(self, x):
        y = nn.relu(group_norm("gn1")(x))
        shortcut = StdConv(self.out, 1, self.stride, name="conv_proj")(y) if self.project else x
        y = StdConv(self.mid, 1, name="conv1")(y)
        y = nn.relu(group_norm("gn2")(y))
        y = StdConv(self.mid, MID_KERNEL, self.stride, MID_PAD, name="conv2")(y)
        y = nn.relu(group_norm("gn3")(y))
        y = StdConv(self.out, 1, name="conv3")(y)
        return y + shortcut


class ResNetStage(nn.Module):
    units: int
    mid: int
    out: int
    stride: int

    @nn.compact
    def __call__(self, x):
        for u in range(1, self.units + 1):
            first = u == 1
            x = ResidualUnit(self.mid, self.out, self.stride if first else 1, first, name=f"unit{u:02d}")(x)
        return x


class BiTResNetV2Flax(nn.Module):
    """The whole network; ``__call__`` returns {stage name: output} in stage order (stem .. logits)."""

    arch: Architecture
    pool_padding: str = "zero"

    @nn.compact
    def __call__(self, x):
        a = self.arch
        out = {}
        x = RootBlock(a.root_width, self.pool_padding, name="root_block")(x)
        out["stem"] = x
        for b, n in enumerate(a.units, start=1):
            x = ResNetStage(n, a.mid_width(b), a.out_width(b), BLOCK_STRIDES[b - 1], name=f"block{b}")(x)
            out[f"block{b}"] = x
        x = nn.relu(group_norm("norm-pre-head")(x))
        x = jnp.mean(x, axis=(1, 2))
        out["pre_logits"] = x
        out["logits"] = nn.Dense(a.classes, precision=PRECISION, name="conv_head")(x)
        return out


@functools.lru_cache(maxsize=8)
def param_shapes(arch: Architecture) -> dict:
    """The model's ``params`` tree as nested dicts of ShapeDtypeStructs (no compute).

    From ``jax.eval_shape(model.init, ...)``: the shapes the mapping must fill.
    """
    model = BiTResNetV2Flax(arch)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    tree = jax.eval_shape(model.init, jax.random.key(0), x)
    return _to_dict(tree["params"])


def _to_dict(tree):
    return {k: _to_dict(v) if hasattr(v, "items") else v for k, v in tree.items()}


@functools.lru_cache(maxsize=8)
def make_apply(arch: Architecture, fast_compile: bool = False, pool_padding: str = "zero"):
    """A jitted ``(params, images) -> {stage: output}`` for ``arch``, root pool padded per ``pool_padding``.

    Params are an argument (not captured constants), so the weights are not
    baked into the compiled program; jit compiles once per (shape, dtype).
    ``fast_compile`` asks XLA for less compilation (``FAST_COMPILE_OPTIONS``) and
    slower element-wise fusions, so it pays for small work only
    (docs/performance.md). The results are float32 (float64) either way, not
    bit-identical between the two.
    """
    model = BiTResNetV2Flax(arch, pool_padding)
    return jax.jit(model.apply, compiler_options=FAST_COMPILE_OPTIONS if fast_compile else None)


class Head(nn.Module):
    """The pre-head and head of :class:`BiTResNetV2Flax`, as a module of its own.

    Same layers, same names (``norm-pre-head``, ``conv_head``), so it applies to
    the top-level params of the whole model; used by :func:`make_unitwise_apply`.
    """

    classes: int

    @nn.compact
    def __call__(self, x):
        x = nn.relu(group_norm("norm-pre-head")(x))
        pre = jnp.mean(x, axis=(1, 2))
        return pre, nn.Dense(self.classes, precision=PRECISION, name="conv_head")(pre)


@functools.lru_cache(maxsize=8)
def make_unitwise_apply(arch: Architecture, fast_compile: bool = False, pool_padding: str = "zero", wait=jax.block_until_ready):
    """``(params, images, dtype) -> {stage: np.ndarray}``: the same forward pass, one jitted unit at a time.

    ``params`` is the whole model's tree (``{'params': ...}``) of host arrays in
    any float dtype; each module's slice is cast to ``dtype`` and sent to the
    device just before it runs and dropped after, so at most two units' weights
    exist in ``dtype`` at a time (R152x2 in float64: tens of MB instead of the
    whole model's float64 params and XLA's copies; docs/performance.md).

    JAX dispatches asynchronously, so each module's output is ``wait``-ed for
    once the next module has been dispatched: the next unit's weights are cast
    and sent while the current one computes, and the loop never runs further
    ahead than that (unbounded, it cast every unit before the first finished).

    The modules are :class:`RootBlock`, :class:`ResidualUnit` and
    :class:`Head`, the very ones the whole model composes; one jit per distinct
    unit configuration (stride, projection, width: 2 per block), each compiled
    once per input shape and dtype and reused by every unit of that
    configuration. tests/test_models.py checks it against :func:`make_apply`.
    Call it inside ``jax.enable_x64(True)`` for ``dtype=float64``.
    """
    options = FAST_COMPILE_OPTIONS if fast_compile else None

    def jit(module):
        return jax.jit(module.apply, compiler_options=options)

    root = jit(RootBlock(arch.root_width, pool_padding))
    units = {
        (b, first): jit(ResidualUnit(arch.mid_width(b), arch.out_width(b), BLOCK_STRIDES[b - 1] if first else 1, project=first))
        for b in range(1, 5)
        for first in (True, False)
    }
    head = jit(Head(arch.classes))

    def apply(params, images, dtype=jnp.float32) -> dict:
        tree = params["params"]

        def on_device(subtree):
            # Cast on the host, then send: a cast on the device (jnp.asarray(a, dtype)) is a jitted
            # convert compiled once per weight shape, about 30 compilations for R50x1 (docs/performance.md).
            return {"params": jax.tree.map(lambda a: jax.device_put(np.asarray(a, dtype)), subtree)}

        def step(module, subtree, x):
            y = module(on_device(subtree), x)
            wait(x)  # the previous module is done: its weights are freed before the next unit's are cast
            return y

        out = {}
        x = jax.device_put(np.asarray(images, dtype))
        x = out["stem"] = step(root, tree["root_block"], x)
        for b, n in enumerate(arch.units, start=1):
            for u in range(1, n + 1):
                x = step(units[b, u == 1], tree[f"block{b}"][f"unit{u:02d}"], x)
            out[f"block{b}"] = x
        head_params = {k: tree[k] for k in ("norm-pre-head", "conv_head")}
        out["pre_logits"], out["logits"] = step(head, head_params, x)
        return out

    apply.jitted = (root, *units.values(), head)  # for tests: compilation counts
    return apply
