"""The BiT ResNetV2 architecture as data: block layout, widths, array shapes.

Everything that says which arrays a checkpoint holds and how big they are is
derived here from (units per block, width factor, classes), the single source
for the registry check, the strict reader, the synthetic writer and the name
mapping. Source: the authors' release (google-research/big_transfer, whose
``bit_jax``, ``bit_tf2`` and ``bit_pytorch`` loaders read these keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Units per block for each official depth. depth == 3 * sum(units) + 2.
STANDARD_UNITS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

#: Every depth a registry entry may name: the official ones and the two more that big_vision's
#: ``bit.get_block_desc`` names (``big_vision/models/bit.py``; ``bit_paper.py``, which trained the
#: distill family, takes its depth through it). Their checkpoints are not official: ``is_standard``
#: stays false for them, so their names show the units (``R26x1[2,2,2,2]``).
NAMED_UNITS: dict[int, tuple[int, int, int, int]] = {
    **STANDARD_UNITS,
    26: (2, 2, 2, 2),
    200: (3, 24, 36, 3),
}

#: Checkpoint key prefix shared by every array.
PREFIX = "resnet/"
#: Checkpoint keys that only the classifier uses (the feature extractor leaves the head out).
HEAD_PREFIX = f"{PREFIX}head/"
#: The convolution name used in this code; checkpoints may also spell it
#: ``standardized_conv2d_<n>`` ("some files contain weird naming").
CONV = "standardized_conv2d"
_CONV_VARIANT = re.compile(r"/standardized_conv2d_\d+/")

#: The named outputs of the forward pass, in order: what the TF graph, the Flax
#: model and the parity report all use (the single definition).
STAGES = ("stem", "block1", "block2", "block3", "block4", "pre_logits", "logits")


def format_shape(shape) -> str:
    """A shape as Python prints a tuple: ``(3, 3, 64, 64)``, ``(1000,)``."""
    shape = tuple(shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


#: Sub-layer letters of a bottleneck unit in the checkpoint, in order.
UNIT_PARTS = ("a", "b", "c")


def normalise_key(key: str) -> str:
    """Map ``.../standardized_conv2d_<n>/...`` onto ``.../standardized_conv2d/...``."""
    return _CONV_VARIANT.sub(f"/{CONV}/", key)


@dataclass(frozen=True)
class Architecture:
    """A BiT ResNetV2: units per block, width factor and head size."""

    units: tuple[int, int, int, int]
    width: int
    classes: int

    def __post_init__(self):
        if len(self.units) != 4 or any(u < 1 for u in self.units):
            raise ValueError(f"units must be four positive counts, got {self.units}")
        if self.width < 1 or self.classes < 1:
            raise ValueError(f"width and classes must be positive, got {self.width}, {self.classes}")

    @classmethod
    def from_depth(cls, depth: int, width: int, classes: int) -> Architecture:
        if depth not in STANDARD_UNITS:
            raise ValueError(f"depth {depth} is not an official BiT depth ({', '.join(map(str, STANDARD_UNITS))})")
        return cls(STANDARD_UNITS[depth], width, classes)

    @property
    def depth(self) -> int:
        return 3 * sum(self.units) + 2

    @property
    def is_standard(self) -> bool:
        return STANDARD_UNITS.get(self.depth) == self.units

    @property
    def name(self) -> str:
        """``R50x1``-style name; a reduced layout shows its units."""
        base = f"R{self.depth}x{self.width}"
        return base if self.is_standard else f"{base}[{','.join(map(str, self.units))}]"

    @property
    def root_width(self) -> int:
        return 64 * self.width

    def mid_width(self, block: int) -> int:
        """Bottleneck width of block 1..4."""
        return 64 * self.width * 2 ** (block - 1)

    def out_width(self, block: int) -> int:
        return 4 * self.mid_width(block)

    @property
    def features(self) -> int:
        """Size of the pre-logits feature vector (2048 * width)."""
        return self.out_width(4)

    def unit_in_width(self, block: int, unit: int) -> int:
        if unit > 1:
            return self.out_width(block)
        return self.root_width if block == 1 else self.out_width(block - 1)

    def iter_units(self):
        """Yield (block, unit) pairs, 1-based, in forward order."""
        for b, n in enumerate(self.units, start=1):
            for u in range(1, n + 1):
                yield b, u


def unit_prefix(block: int, unit: int) -> str:
    return f"{PREFIX}block{block}/unit{unit:02d}/"


def checkpoint_layout(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every checkpoint key of ``arch`` with its shape, in forward order.

    All arrays are float32. Kernels are HWIO.
    """
    layout: dict[str, tuple[int, ...]] = {
        f"{PREFIX}root_block/{CONV}/kernel": (7, 7, 3, arch.root_width),
    }
    for b, u in arch.iter_units():
        p = unit_prefix(b, u)
        cin, mid = arch.unit_in_width(b, u), arch.mid_width(b)
        out = arch.out_width(b)
        layout[f"{p}a/group_norm/gamma"] = (cin,)
        layout[f"{p}a/group_norm/beta"] = (cin,)
        layout[f"{p}a/{CONV}/kernel"] = (1, 1, cin, mid)
        if u == 1:
            layout[f"{p}a/proj/{CONV}/kernel"] = (1, 1, cin, out)
        layout[f"{p}b/group_norm/gamma"] = (mid,)
        layout[f"{p}b/group_norm/beta"] = (mid,)
        layout[f"{p}b/{CONV}/kernel"] = (3, 3, mid, mid)
        layout[f"{p}c/group_norm/gamma"] = (mid,)
        layout[f"{p}c/group_norm/beta"] = (mid,)
        layout[f"{p}c/{CONV}/kernel"] = (1, 1, mid, out)
    layout[f"{PREFIX}group_norm/gamma"] = (arch.features,)
    layout[f"{PREFIX}group_norm/beta"] = (arch.features,)
    layout[f"{PREFIX}head/conv2d/kernel"] = (1, 1, arch.features, arch.classes)
    layout[f"{PREFIX}head/conv2d/bias"] = (arch.classes,)
    return layout


def parameter_count(arch: Architecture) -> int:
    """Number of scalars in a checkpoint of ``arch``, computed in closed form.

    Deliberately not ``sum(prod(shape) for shape in checkpoint_layout(arch))``:
    the registry test compares the two, so a slip in either shows.
    """
    w = arch.width
    total = 7 * 7 * 3 * 64 * w
    for b, n in enumerate(arch.units, start=1):
        mid = 64 * w * 2 ** (b - 1)
        out = 4 * mid
        cin_first = 64 * w if b == 1 else 2 * mid  # previous block's out = 4 * mid / 2
        for u in range(1, n + 1):
            cin = cin_first if u == 1 else out
            total += 2 * cin + cin * mid  # gn a + conv a
            total += 2 * mid + 9 * mid * mid  # gn b + conv b
            total += 2 * mid + mid * out  # gn c + conv c
            if u == 1:
                total += cin * out  # projection
    feats = 2048 * w
    total += 2 * feats + feats * arch.classes + arch.classes
    return total


_UNIT_KEY = re.compile(r"^resnet/block([1-4])/unit(\d{2})/")


def infer_architecture(shapes: dict[str, tuple[int, ...]]) -> Architecture:
    """Infer units, width and classes from (normalised) checkpoint keys and shapes.

    Units per block are the highest unit index seen in each block, so a unit
    missing in the middle shows up as missing keys rather than a smaller model.
    Raises ValueError when the file does not look like a BiT checkpoint at all.
    """
    root = shapes.get(f"{PREFIX}root_block/{CONV}/kernel")
    if root is None or len(root) != 4 or root[3] % 64:
        raise ValueError(f"no usable {PREFIX}root_block/{CONV}/kernel (need shape (7, 7, 3, 64*width))")
    width = root[3] // 64
    units = [0, 0, 0, 0]
    for key in shapes:
        m = _UNIT_KEY.match(key)
        if m:
            b, u = int(m.group(1)), int(m.group(2))
            units[b - 1] = max(units[b - 1], u)
    if not all(units):
        raise ValueError(f"blocks without units: {[f'block{i + 1}' for i, n in enumerate(units) if not n]}")
    bias = shapes.get(f"{PREFIX}head/conv2d/bias")
    kernel = shapes.get(f"{PREFIX}head/conv2d/kernel")
    # The kernel is the larger, more telling array; the bias is then checked against it.
    if kernel is not None and len(kernel) == 4:
        classes = kernel[3]
    elif bias is not None and len(bias) == 1:
        classes = bias[0]
    else:
        raise ValueError(f"cannot tell the number of classes: no usable {PREFIX}head/conv2d/bias or kernel")
    return Architecture(tuple(units), width, classes)
