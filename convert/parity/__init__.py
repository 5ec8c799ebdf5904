"""Numerical parity: the TF graph (or a reloaded artifact) against the Flax reference.

The expensive part, the JAX reference, is computed once and reused for any
number of candidates::

    images, names = make_inputs(resolution, batch, seed)
    ref = reference_outputs(checkpoint, images)          # float32 and float64 JAX
    report = compare(ref, {"logits": classifier(images)}, arch)   # any subset of stages
    report.passed, report.as_dict(), report.render()

:func:`run_parity` does all of it for ``bitconvert verify``. Modules: ``inputs``
(the images), ``reference`` (the Flax run), ``compare`` (metrics and verdict),
``worker`` (the reference in a second process, ``python -m convert.parity
WORKDIR``), ``placement`` (where the reference runs), ``pending`` (a
reference started where its placement says), ``check`` (run_parity). The
calibration behind the tolerance is in docs/calibration.md.
"""

from ..model.architecture import STAGES
from .check import run_parity, tf_stage_function
from .compare import ERROR_PER_UNIT, TOLERANCE_MARGIN, ParityReport, StageResult, compare, expected_error, tolerance
from .inputs import STRUCTURED, make_inputs, structured_images
from .pending import PendingReference
from .placement import MachineFacts, Placement, Where, place
from .reference import Reference, reference_outputs
from .worker import finish_reference_worker, start_reference_worker, stop_reference_worker

__all__ = [
    "ERROR_PER_UNIT",
    "STAGES",
    "STRUCTURED",
    "TOLERANCE_MARGIN",
    "MachineFacts",
    "ParityReport",
    "PendingReference",
    "Placement",
    "Reference",
    "StageResult",
    "Where",
    "compare",
    "expected_error",
    "finish_reference_worker",
    "make_inputs",
    "place",
    "reference_outputs",
    "run_parity",
    "start_reference_worker",
    "stop_reference_worker",
    "structured_images",
    "tf_stage_function",
    "tolerance",
]
