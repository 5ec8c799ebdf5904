"""The mutations every parity check must catch, defined once for every test that uses them.

Each is a plausible conversion bug that keeps every shape right, so only the
comparison with the JAX reference can notice it:

- ``swapped-arrays``: two same-shaped checkpoint arrays exchanged on the
  converted side (the classic mapping bug: the mapping's shape checks pass);
- ``same-padding``: TF/Keras ``"same"`` on the strided layers instead of the
  authors' explicit symmetric pad (numerics.MID_PAD): shifts the grid on even sizes;
- ``other-pool-padding``: the root max-pool padded with the value the model
  does not use (:func:`other_pool_pad`): the entry's forward pass decides which that is.

A mutation is data: ``swap`` (two checkpoint keys) and ``knobs``, the forward
passes' build options (``convert.model.tf_model.build_tf_model`` and
``convert.model.keras_model.build_keras_models`` take the same ones). What a
knob means for an entry is decided here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from convert.model.mapping import mapping_rows
from convert.model.numerics import POOL_PADS, STRIDED_PADDINGS


@dataclass(frozen=True)
class Mutation:
    name: str
    #: Two same-shaped checkpoint keys whose arrays are exchanged, or None.
    swap: tuple[str, str] | None = None
    #: Build options of the forward passes (``strided_padding``, ``pool_pad``).
    knobs: Mapping = field(default_factory=dict)


def other(choices: tuple[str, ...], used: str) -> str:
    """The first of ``choices`` that is not ``used``."""
    return next(c for c in choices if c != used)


def other_pool_pad(used: str) -> str:
    """The root pool padding a model does not use: the one knob whose meaning depends on the entry
    (``used``: the entry's, ``ModelEntry.forward().root_pool_padding``)."""
    return other(POOL_PADS, used)


def swap_pair(arch) -> tuple[str, str]:
    """Two same-shaped arrays of block 2's first unit: the group norm gamma and beta of its 3x3 conv."""
    return ("resnet/block2/unit01/b/group_norm/gamma", "resnet/block2/unit01/b/group_norm/beta")


def mutations(arch, pool_pad: str = POOL_PADS[0]) -> list[Mutation]:
    """The three mutations for ``arch`` whose forward pass pads the root pool with ``pool_pad``, in a fixed order."""
    return [
        Mutation("swapped-arrays", swap=swap_pair(arch)),
        Mutation("same-padding", knobs={"strided_padding": other(STRIDED_PADDINGS, STRIDED_PADDINGS[0])}),
        Mutation("other-pool-padding", knobs={"pool_pad": other_pool_pad(pool_pad)}),
    ]


#: The names, for ``pytest.mark.parametrize``.
NAMES = tuple(m.name for m in mutations(None))


def by_name(arch, name: str, pool_pad: str = POOL_PADS[0]) -> Mutation:
    return next(m for m in mutations(arch, pool_pad) if m.name == name)


def swapped_rows(arch, a: str, b: str):
    """The mapping rows of ``arch`` with the TF variables of checkpoint arrays ``a`` and ``b`` exchanged."""
    rows = mapping_rows(arch)
    by_key = {r.checkpoint_key: r for r in rows}
    assert by_key[a].shape == by_key[b].shape, (a, b)
    swap = {a: by_key[b].tf_variable, b: by_key[a].tf_variable}
    return tuple(replace(r, tf_variable=swap.get(r.checkpoint_key, r.tf_variable)) for r in rows)


def tf_build_options(arch, mutation: Mutation | None) -> dict:
    """``build_tf_model``'s keyword arguments for ``mutation`` (None: the correct model)."""
    if mutation is None:
        return {}
    options = dict(mutation.knobs)
    if mutation.swap:
        options["rows"] = swapped_rows(arch, *mutation.swap)
    return options
