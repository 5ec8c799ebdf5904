"""What one export knows, filled step by step: the options, the source, the reference, the artifacts, runs, reports, cards.

:class:`ExportState` is the one object the steps of
:func:`convert.export.orchestrator.export_model` hand each other: each step
reads what earlier steps left and adds its part; the manifest and the Kaggle
metadata are built from it at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .formats import DEFAULT
from .target import INPUT_RANGES, Artifact, ExportJob, ExportTarget, Run

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..model.architecture import Architecture
    from ..parity import ParityReport, PendingReference, Reference
    from ..parity.placement import MachineFacts
    from ..registry import ModelEntry

Log = Callable[[str], None]


@dataclass
class ExportOptions:
    """How to export. The defaults are the CLI's defaults."""

    output_dir: Path = Path("exports")
    input_range: str = "unit"
    archive: bool = False
    skip_parity: bool = False
    #: Random images in the parity check (the five structured ones always come on top).
    parity_batch: int = 1
    #: Parity input size, square or (height, width); None: the entry's native resolution, at most PARITY_MAX_RESOLUTION.
    parity_resolution: int | tuple[int, int] | None = None
    parity_seed: int = 0
    #: --format values, in any order (written in the order of convert.export.formats).
    formats: tuple[str, ...] = (DEFAULT,)
    #: Where the JAX reference runs: auto, worker or inline (convert.parity.placement.place).
    reference: str = "auto"
    #: --kaggle OWNER/MODEL: also write Kaggle Models metadata (convert.export.kaggle).
    kaggle: str | None = None
    #: The machine's facts for the placement, instead of measuring them (tests, benchmarks).
    machine: MachineFacts | None = None
    #: --forward: "authors" (the code that trained the checkpoint) or "zero-pool" (convert.model.forward).
    forward: str = "authors"

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        if self.input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {tuple(INPUT_RANGES)}, got {self.input_range!r}")


@dataclass
class ExportResult:
    """What an export wrote: its id, where it was published, its manifest, and every artifact's run from disk."""

    model_id: str
    path: Path
    manifest: dict = field(repr=False)
    #: By target name: each artifact reloaded from disk and run on the parity images (or the probe
    #: image with --skip-parity), its outputs in ``Run.outputs`` (the manifest keeps only their reports).
    runs: dict[str, list[Run]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Source:
    """The checkpoint, read and identified (step 1)."""

    checkpoint: Checkpoint
    path: Path
    sha256: str
    source_url: str
    parameters: int

    @property
    def weight_bytes(self) -> int:
        return self.parameters * 4


@dataclass(frozen=True)
class ParityInputs:
    images: np.ndarray  # in the model's [-1, 1]
    names: list[str]
    resolution: int
    batch: int


#: (target name, artifact path): how runs, reports and cards are keyed.
ArtifactKey = tuple[str, str]


@dataclass
class ExportState:
    """One export. The first five fields are given; each step fills the ones it is named after."""

    entry: ModelEntry
    arch: Architecture
    options: ExportOptions
    targets: list[ExportTarget]
    log: Log
    labels: tuple[str, ...] | None = None
    #: How the checkpoint was obtained (the CLI says ``cache`` or ``--checkpoint``).
    origin: str | None = None
    #: Step 1: the checkpoint read.
    source: Source | None = None
    #: Step 2: the JAX reference started (None with --skip-parity), its inputs, and the reference once waited for.
    pending: PendingReference | None = None
    inputs: ParityInputs | None = None
    reference: Reference | None = None
    #: Step 3: what every target is given (holding the TF graph only while the targets write).
    job: ExportJob | None = None
    #: The images every artifact runs on, in the export's input range.
    images: np.ndarray | None = None
    written: dict[str, list[Artifact]] = field(default_factory=dict)
    #: The live TF graph's stages on the parity images, and their report against the reference.
    live: dict | None = None
    before: ParityReport | None = None
    #: Step 4: every reloaded run, its report, each card written, then the manifest.
    runs: dict[str, list[Run]] = field(default_factory=dict)
    reports: dict[ArtifactKey, dict[str, ParityReport]] = field(default_factory=dict)
    cards: dict[ArtifactKey, str] = field(default_factory=dict)
    manifest: dict | None = None

    @property
    def model_id(self) -> str:
        return self.entry.id

    def artifacts(self) -> list[tuple[ExportTarget, Artifact]]:
        """Every artifact written, with its target, in target order."""
        return [(t, a) for t in self.targets for a in self.written.get(t.name, [])]
