"""The name mapping as data: checkpoint key -> TF variable -> Flax parameter path -> Keras weight path.

One pure function, :func:`mapping_rows`, derives every row from
:func:`convert.model.architecture.checkpoint_layout` alone (never from a file), so
the table can be printed, diffed and tested without loading anything.

Each row says where one checkpoint array goes on every side and which named
transform turns the checkpoint array into the Flax parameter and the Keras
weight (both hold the head as a Dense kernel; the TF variables keep the
checkpoint's shapes, so their transform is always the identity).

Loading checks both sides before assigning anything (:func:`check_sides`):
every checkpoint array used exactly once, every target set exactly once, equal
shapes. A failure raises :class:`MappingError` whose message lists each
difference (``-`` missing, ``+`` unexpected, ``~`` wrong shape, ``!`` used twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np

from ..errors import MappingError
from .architecture import CONV, PREFIX, UNIT_PARTS, Architecture, checkpoint_layout, format_shape

#: How many differences a MappingError message spells out before "and N more".
_DIFF_LIMIT = 12


@dataclass(frozen=True)
class Transform:
    """A named array transform: how a checkpoint array becomes a Flax parameter."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    doc: str


def _squeeze_head_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != 4 or shape[:2] != (1, 1):
        raise MappingError(f"squeeze_head expects a (1, 1, C, K) kernel, got {shape}")
    return (shape[2], shape[3])


#: Every transform a row may name, in one place.
TRANSFORMS: dict[str, Transform] = {
    "identity": Transform("identity", lambda a: a, lambda s: tuple(s), "used as is"),
    "squeeze_head": Transform(
        "squeeze_head",
        lambda a: a.reshape(_squeeze_head_shape(a.shape)),
        _squeeze_head_shape,
        "1x1 conv head kernel (1, 1, C, K) -> Dense kernel (C, K)",
    ),
}


@dataclass(frozen=True)
class MappingRow:
    """Where one checkpoint array goes.

    ``shape`` is the checkpoint's (and the TF variable's) shape; the Flax
    parameter has ``flax_shape`` = ``TRANSFORMS[transform].shape(shape)``.
    ``tf_variable`` is the name the TF variable is created with (``.name``
    without TF's ``:0`` suffix, and its key in ``BiTResNetV2.variables_by_key``).
    ``flax_path`` is '/'-joined under the ``params`` collection.
    ``keras_path`` is the Keras 3 weight's ``.path`` (``<layer name>/<weight name>``)
    in :mod:`convert.model.keras_model`'s models; its shape is ``flax_shape``.
    """

    checkpoint_key: str
    tf_variable: str
    flax_path: str
    shape: tuple[int, ...]
    transform: str = "identity"
    keras_path: str = ""

    @property
    def flax_shape(self) -> tuple[int, ...]:
        return TRANSFORMS[self.transform].shape(self.shape)

    def as_dict(self) -> dict:
        return {
            "checkpoint_key": self.checkpoint_key,
            "tf_variable": self.tf_variable,
            "flax_path": self.flax_path,
            "keras_path": self.keras_path,
            "shape": list(self.shape),
            "flax_shape": list(self.flax_shape),
            "transform": self.transform,
        }


#: Checkpoint sub-layer letter -> the authors' JAX names (a, b, c map to 1, 2, 3).
_PART_INDEX = {part: i for i, part in enumerate(UNIT_PARTS, start=1)}
_LEAF = {"gamma": "scale", "beta": "bias", "kernel": "kernel", "bias": "bias"}


def flax_path_for(key: str) -> tuple[str, str]:
    """(Flax path, transform name) for one checkpoint key; KeyError-free for layout keys.

    Raises :class:`MappingError` for a key that is not of the BiT layout.
    """
    if not key.startswith(PREFIX):
        raise MappingError(f"no Flax name for {key!r}: not under {PREFIX}")
    parts = key[len(PREFIX) :].split("/")
    leaf = _LEAF.get(parts[-1])
    if parts == ["root_block", CONV, "kernel"]:
        return "root_block/conv_root/kernel", "identity"
    if parts[:-1] == ["group_norm"] and leaf:
        return f"norm-pre-head/{leaf}", "identity"
    if parts == ["head", "conv2d", "kernel"]:
        return "conv_head/kernel", "squeeze_head"
    if parts == ["head", "conv2d", "bias"]:
        return "conv_head/bias", "identity"
    if len(parts) >= 5 and parts[0].startswith("block") and parts[1].startswith("unit") and parts[2] in _PART_INDEX and leaf:
        block, unit, part, rest = parts[0], parts[1], parts[2], parts[3:]
        n = _PART_INDEX[part]
        if rest == [CONV, "kernel"]:
            return f"{block}/{unit}/conv{n}/kernel", "identity"
        if rest == ["group_norm", parts[-1]] and parts[-1] in ("gamma", "beta"):
            return f"{block}/{unit}/gn{n}/{leaf}", "identity"
        if part == "a" and rest == ["proj", CONV, "kernel"]:
            return f"{block}/{unit}/conv_proj/kernel", "identity"
    raise MappingError(f"no Flax name for {key!r}")


#: Keras layer names (no '/' allowed in them) of the parts of a unit.
_KERAS_PART = {"group_norm": "gn", CONV: "conv", "proj": "proj"}


def keras_path_for(key: str) -> str:
    """The Keras weight path (``layer/weight``) of one checkpoint key in :mod:`convert.model.keras_model`'s models.

    The layer name is the checkpoint key's path with '/' turned into '_' and the
    long names shortened (``block1/unit01/a/group_norm/gamma`` -> ``block1_unit01_a_gn/gamma``).
    Raises :class:`MappingError` for a key that is not of the BiT layout.
    """
    try:
        flax_path_for(key)  # validates the key: the same keys are valid on every side
    except MappingError:
        raise MappingError(f"no Keras weight for {key!r}") from None
    parts = key[len(PREFIX) :].split("/")
    leaf = parts[-1]
    if parts[0] == "root_block":
        return f"root_conv/{leaf}"
    if parts[0] == "group_norm":
        return f"pre_head_gn/{leaf}"
    if parts[0] == "head":
        return f"head/{leaf}"
    block, unit, part, kind = parts[:4]
    return f"{block}_{unit}_{part}_{_KERAS_PART[kind]}/{leaf}"


def mapping_rows(arch: Architecture) -> tuple[MappingRow, ...]:
    """Every row of ``arch``'s mapping, in checkpoint layout (forward) order. Pure."""
    rows = []
    for key, shape in checkpoint_layout(arch).items():
        flax_path, transform = flax_path_for(key)
        rows.append(MappingRow(key, key, flax_path, tuple(shape), transform, keras_path_for(key)))
    return tuple(rows)


def check_sides(
    rows: Iterable[MappingRow],
    source: Mapping[str, tuple[int, ...]],
    target: Mapping[str, tuple[int, ...]],
    *,
    target_of: Callable[[MappingRow], str],
    target_shape_of: Callable[[MappingRow], tuple[int, ...]],
    target_label: str,
) -> list[str]:
    """Differences between (checkpoint arrays, rows, targets); empty when they match one to one.

    ``source``: checkpoint key -> shape. ``target``: target name -> shape
    (TF variables, or Flax parameter paths). Each difference is one line
    starting with ``-`` (missing), ``+`` (unexpected), ``~`` (shape) or ``!``
    (used more than once).
    """
    rows = list(rows)
    diffs: list[str] = []
    src_use = Counter(r.checkpoint_key for r in rows)
    tgt_use = Counter(target_of(r) for r in rows)
    for key, n in src_use.items():
        if n > 1:
            diffs.append(f"! checkpoint array {key} used by {n} rows")
    for name, n in tgt_use.items():
        if n > 1:
            diffs.append(f"! {target_label} {name} set by {n} rows")
    for r in rows:
        if r.checkpoint_key not in source:
            diffs.append(f"- checkpoint array {r.checkpoint_key} missing (expected {format_shape(r.shape)})")
        elif tuple(source[r.checkpoint_key]) != tuple(r.shape):
            diffs.append(
                f"~ checkpoint array {r.checkpoint_key}: got {format_shape(source[r.checkpoint_key])}, expected {format_shape(r.shape)}"
            )
        name = target_of(r)
        if name not in target:
            diffs.append(f"- {target_label} {name} missing (row for {r.checkpoint_key})")
        elif tuple(target[name]) != tuple(target_shape_of(r)):
            diffs.append(
                f"~ {target_label} {name}: has {format_shape(target[name])}, row gives {format_shape(target_shape_of(r))}"
            )
    for key in source:
        if key not in src_use:
            diffs.append(f"+ checkpoint array {key} {format_shape(source[key])} unused by the mapping")
    for name in target:
        if name not in tgt_use:
            diffs.append(f"+ {target_label} {name} {format_shape(target[name])} set by no row")
    return diffs


def raise_on_diffs(diffs: list[str], what: str) -> None:
    """Raise one :class:`MappingError` listing ``diffs`` (one line; ``.diffs`` holds them all)."""
    if not diffs:
        return
    shown = "; ".join(diffs[:_DIFF_LIMIT])
    more = f"; and {len(diffs) - _DIFF_LIMIT} more" if len(diffs) > _DIFF_LIMIT else ""
    err = MappingError(f"{what}: {len(diffs)} difference{'s' if len(diffs) != 1 else ''}: {shown}{more}")
    err.diffs = diffs
    raise err


def _shapes(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.shape(v)) for k, v in arrays.items()}


def _require_match(
    rows, arrays, target_shapes: Mapping[str, tuple[int, ...]], name_field: str, shape_field: str, label: str, model: str
) -> None:
    """:func:`check_sides` of ``rows`` between ``arrays`` and ``target_shapes``, raised as one
    :class:`MappingError`. ``name_field``/``shape_field``: the row's attributes naming the target and its shape."""
    diffs = check_sides(
        rows,
        _shapes(arrays),
        target_shapes,
        target_of=lambda r: getattr(r, name_field),
        target_shape_of=lambda r: getattr(r, shape_field),
        target_label=label,
    )
    raise_on_diffs(diffs, f"checkpoint -> {label.split()[0]} mapping for {model} does not match")


def tf_variables(
    arch: Architecture,
    arrays: MutableMapping[str, np.ndarray],
    rows: Iterable[MappingRow] | None = None,
    *,
    release: bool = False,
) -> dict:
    """The TF variables of ``arch``'s graph (name -> ``tf.Variable``), each created from its checkpoint array through ``rows``.

    Both sides are checked first, against the variables :class:`convert.model.tf_model.BiTResNetV2`
    creates (``checkpoint_layout``, in its order): nothing is created unless every array is used
    exactly once and every variable is set exactly once, with equal shapes. ``release``: each array
    leaves ``arrays`` once its variable holds a copy, so the weights never exist twice (zero-filled
    variables assigned afterwards held both copies at once: docs/performance.md).
    """
    import tensorflow as tf

    rows = tuple(mapping_rows(arch) if rows is None else rows)
    shapes = checkpoint_layout(arch)
    _require_match(rows, arrays, shapes, "tf_variable", "shape", "TF variable", arch.name)
    source = {r.tf_variable: r.checkpoint_key for r in rows}
    variables = {}
    for name in shapes:
        key = source[name]
        variables[name] = tf.Variable(np.asarray(arrays[key], dtype=np.float32), trainable=True, name=name)
        if release:
            del arrays[key]
    return variables


def assign_keras(model, arrays: Mapping[str, np.ndarray], rows: Iterable[MappingRow]) -> None:
    """Assign checkpoint ``arrays`` to a Keras model's weights (matched by ``.path``) through ``rows``.

    Both sides are checked first, as for TF and Flax: every array used once,
    every weight of ``model`` set once, the weight's shape equal to the row's
    ``flax_shape``. Nothing is assigned unless all of it holds.
    """
    rows = tuple(rows)
    weights = {w.path: w for w in model.weights}
    if len(weights) != len(model.weights):
        raise MappingError(f"the Keras model has {len(model.weights) - len(weights)} weights with duplicate paths")
    shapes = {path: tuple(w.shape) for path, w in weights.items()}
    _require_match(rows, arrays, shapes, "keras_path", "flax_shape", "Keras weight", model.name)
    for r in rows:
        value = TRANSFORMS[r.transform].apply(np.asarray(arrays[r.checkpoint_key], dtype=np.float32))
        weights[r.keras_path].assign(value)


def _flatten_tree(tree, prefix: str = "") -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten_tree(v, path + "/"))
        else:
            out[path] = tuple(v.shape)
    return out


def flax_params(
    arrays: Mapping[str, np.ndarray],
    arch: Architecture,
    rows: Iterable[MappingRow] | None = None,
    dtype=np.float32,
    put: Callable[[np.ndarray], object] | None = None,
) -> dict:
    """The Flax ``{'params': ...}`` tree for ``arch`` built from checkpoint ``arrays``.

    The expected tree comes from ``jax.eval_shape`` of the reference model's
    ``init`` (no compute), so a row pointing at a parameter the model does not
    have, or a parameter no row sets, is a :class:`MappingError` before any
    array is copied. Arrays are cast to ``dtype`` (float64 for the reference run);
    ``put`` (e.g. ``jax.device_put``) is applied leaf by leaf, so the host
    copies in ``dtype`` never all exist at once (R152x2 in float64: 1.9 GB).
    A :class:`convert.checkpoint.Deferred` array gives a deferred leaf: transformed
    and cast when numpy asks for it, nothing read here.
    """
    from ..checkpoint import Deferred
    from .flax_model import param_shapes

    rows = tuple(mapping_rows(arch) if rows is None else rows)
    _require_match(rows, arrays, _flatten_tree(param_shapes(arch)), "flax_path", "flax_shape", "Flax param", arch.name)
    tree: dict = {}
    for r in rows:
        node = tree
        *parents, leaf = r.flax_path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        source, transform = arrays[r.checkpoint_key], TRANSFORMS[r.transform].apply
        if isinstance(source, Deferred):  # read when the reference casts it (convert.checkpoint.open_deferred)
            value = source.then(lambda a, t=transform: np.asarray(t(a), dtype=dtype), r.flax_shape)
        else:
            value = np.asarray(transform(np.asarray(source)), dtype=dtype)
        node[leaf] = put(np.asarray(value)) if put is not None else value
    return {"params": tree}


def render_table(rows: Iterable[MappingRow]) -> str:
    """The mapping as an aligned text table (for ``bitconvert mapping``)."""
    head = ("CHECKPOINT KEY", "TF VARIABLE", "FLAX PATH", "KERAS WEIGHT", "SHAPE", "TRANSFORM")
    body = [(r.checkpoint_key, r.tf_variable + ":0", r.flax_path, r.keras_path, format_shape(r.shape), r.transform) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [head, *body])
