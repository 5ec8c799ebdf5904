"""Which forward pass a conversion computes: the authors' (the code that trained the checkpoint) or zero-pool.

The registry says, per checkpoint, which of the authors' two codebases defines
its forward pass (``ModelEntry.code``: ``big_transfer`` or ``big_vision``);
:data:`convert.model.numerics.CODE_POOL_PADDING` says how each pads the root
max-pool, the one rule on which they differ. ``--forward`` picks between the
authors' forward pass (the default) and ``zero-pool``, zero padding for every
file: what the 2022 TF Hub collection and timm compute, for users who need to
reproduce their numbers. For a big_transfer checkpoint the two are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from .numerics import CODE_POOL_PADDING, POOL_PADS

#: ``--forward`` values: the checkpoint's own code, or zero padding for every file.
FORWARD_CHOICES = ("authors", "zero-pool")
DEFAULT_FORWARD = "authors"
#: The padding ``zero-pool`` forces.
_FORCED = {"zero-pool": "zero"}
#: Each codebase as a card names it.
CODE_NAMES = {
    "big_transfer": "google-research/big_transfer (the original BiT release)",
    "big_vision": "google-research/big_vision, `big_vision/models/bit_paper.py`",
}
#: Each padding in words.
PADDING_NAMES = {"zero": "zeros", "neg_inf": "-inf"}
#: Why a checkpoint follows its code (sources: numerics.CODE_POOL_PADDING, docs/family.md).
CODE_WHY = {
    "big_vision": "The distillation project (Beyer et al.) trained and evaluated every `distill/` model, students and "
    "teachers, in that code (`configs/proj/distill/bit_i1k.py`: `student_name` and `prof_m_name` are `'bit_paper'`).",
    "big_transfer": "BiT-S, BiT-M and their ILSVRC-2012 and VTAB-1k fine-tunes were trained in that code.",
}


@dataclass(frozen=True)
class ForwardPass:
    """The forward pass of one conversion: the checkpoint's code and the ``--forward`` choice."""

    code: str
    choice: str = DEFAULT_FORWARD

    def __post_init__(self):
        if self.code not in CODE_POOL_PADDING:
            raise ValueError(f"code must be one of {tuple(CODE_POOL_PADDING)}, got {self.code!r}")
        if self.choice not in FORWARD_CHOICES:
            raise ValueError(f"forward must be one of {FORWARD_CHOICES}, got {self.choice!r}")

    @property
    def authors_padding(self) -> str:
        """The root pool padding of the code that trained the checkpoint."""
        return CODE_POOL_PADDING[self.code]

    @property
    def root_pool_padding(self) -> str:
        """The root pool padding computed (one of ``numerics.POOL_PADS``)."""
        return _FORCED.get(self.choice, self.authors_padding)

    @property
    def is_authors(self) -> bool:
        """Whether it computes what the authors' code computes for this checkpoint."""
        return self.root_pool_padding == self.authors_padding

    @property
    def other_padding(self) -> str:
        """The root pool padding it does not compute (the mutation the parity checks must catch)."""
        return next(p for p in POOL_PADS if p != self.root_pool_padding)

    def describe(self) -> str:
        """One line: the root pool padding and whose forward pass that is."""
        pad = f"root max-pool padded with {PADDING_NAMES[self.root_pool_padding]}"
        if self.is_authors:
            return f"{pad}, as the code that trained this checkpoint computes it ({CODE_NAMES[self.code]})"
        return (
            f"{pad} (--forward {self.choice}); the code that trained this checkpoint ({CODE_NAMES[self.code]}) "
            f"pads with {PADDING_NAMES[self.authors_padding]}"
        )

    def why(self) -> str:
        """Why this forward pass: the checkpoint's code, or the ``--forward`` choice that overrode it."""
        if self.is_authors:
            return CODE_WHY[self.code]
        return (
            f"Chosen with --forward {self.choice}, to reproduce the 2022 TF Hub collection and timm, which pad "
            f"with {PADDING_NAMES[self.root_pool_padding]} for every BiT file; outputs differ slightly from the authors' code."
        )

    def as_dict(self) -> dict:
        return {
            "choice": self.choice,
            "code": self.code,
            "root_pool_padding": self.root_pool_padding,
            "authors_root_pool_padding": self.authors_padding,
            "is_authors": self.is_authors,
            "description": self.describe(),
            "why": self.why(),
        }
