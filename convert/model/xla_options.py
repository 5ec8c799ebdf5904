"""XLA compilation options shared by the float64 reference and the Keras check's jax process.

Imports nothing heavy: the export's process names the options for a child without importing jax.
"""

from __future__ import annotations

from collections.abc import Mapping

#: XLA options for work that compiling dominates: LLVM optimisation level 0, and XLA:CPU's older
#: element-wise emitters instead of its MLIR fusion emitters. The float64 reference's units and the
#: Keras check's models compile in less time for about the same run time (docs/performance.md,
#: sessions 10 and 26). Convolutions and matrix products run the same library kernels (YNNPACK)
#: either way; results are not bit-identical.
FAST_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


def xla_flags(options: Mapping[str, object] = FAST_COMPILE_OPTIONS) -> str:
    """``options`` as an ``XLA_FLAGS`` value (``--name=value`` each; booleans as true/false)."""
    return " ".join(f"--{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())


def with_xla_flags(flags: str, existing: str | None) -> str:
    """``flags`` ahead of an ``XLA_FLAGS`` value already set: the user's own come last and win."""
    return " ".join(f for f in (flags, existing) if f)
