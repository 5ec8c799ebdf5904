"""Export a BiT checkpoint in one or more formats, each artifact proven equal to JAX from disk.

For one registry entry, :func:`export_model` writes (``--format savedmodel``, the default)::

    <out>/<id>/classification/        SavedModel: images -> logits
    <out>/<id>/feature_extraction/    SavedModel: images -> pre-logits feature vector
    <out>/<id>/classification.md      tfhub.dev model card of each variant
    <out>/<id>/feature_extraction.md
    <out>/<id>/manifest.json          provenance, parity figures, versions, fingerprints
    <out>/<id>/bit_<id>_<variant>.tar.gz   with ``archive=True``: deterministic TF Hub upload archives

Modules: ``orchestrator`` (export_model: the steps), ``state`` (what the steps
fill in), ``target`` (the interface each format implements), ``formats`` (the
table of formats), ``savedmodel``, ``keras``, ``tflite``, ``onnx``, ``judge``
(the reload-and-compare rule), ``manifest``, ``publish`` (temporary directory,
atomic swap), ``cards/``.
"""

from .formats import FORMATS, get_targets, parse_formats
from .manifest import MANIFEST_FORMAT, MANIFEST_NAME, library_versions
from .orchestrator import PARITY_MAX_RESOLUTION, export_model
from .publish import check_export_path, check_free_space, clear_stale_temp_dirs, publish_directory, temp_dir_prefix
from .savedmodel import build_exportable, variant_variables
from .state import ExportOptions, ExportResult, ExportState
from .target import INPUT_NAME, VARIANT_STAGES, VARIANTS, Artifact, ExportJob, ExportTarget, Run

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "PARITY_MAX_RESOLUTION",
    "VARIANTS",
    "VARIANT_STAGES",
    "Artifact",
    "ExportJob",
    "ExportOptions",
    "ExportResult",
    "ExportState",
    "ExportTarget",
    "Run",
    "build_exportable",
    "check_export_path",
    "check_free_space",
    "clear_stale_temp_dirs",
    "export_model",
    "get_targets",
    "library_versions",
    "parse_formats",
    "publish_directory",
    "temp_dir_prefix",
    "variant_variables",
]
