"""The JAX (Flax) reference forward pass, in float64 (and float32 for ``bitconvert verify``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import JaxReferenceError
from ..model.architecture import Architecture

#: What to do when JAX fails, after the one line saying what failed.
ADVICE = "check JAX_PLATFORMS (unset it for the CPU) and the free memory"


@dataclass
class Reference:
    """JAX outputs for one set of images: ``f32`` (None when not run) and ``f64`` map stage -> array."""

    arch: Architecture
    images: np.ndarray
    f32: dict[str, np.ndarray] | None
    f64: dict[str, np.ndarray]
    input_names: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


#: Below this (parameters x input pixels), compiling the reference costs more than
#: running it, so it is compiled with XLA's LLVM optimisation level 0
#: (R50x1 at 160: 6.5e11, R152x2 at 64: 9.7e11; R152x2 at 224: 1.2e13).
FAST_COMPILE_WORK = 2e12


def _compile_dominates(arch: Architecture, image_shape) -> bool:
    from ..model.architecture import parameter_count

    return parameter_count(arch) * image_shape[1] * image_shape[2] <= FAST_COMPILE_WORK


def reference_outputs(
    checkpoint, images: np.ndarray, input_names: list[str] | None = None, *, float32: bool = True, pool_padding: str = "zero"
) -> Reference:
    """Run the Flax reference on ``images`` in float32 (unless ``float32=False``) and in float64.

    ``pool_padding``: the root max-pool's padding (``numerics.POOL_PADS``), the
    checkpoint's own (``ForwardPass.root_pool_padding``).

    ``checkpoint`` is a :class:`convert.checkpoint.Checkpoint` (``.architecture``,
    ``.arrays``). The params tree is built through the mapping (two-sided
    check) as views of the checkpoint's arrays, and the model runs one jitted
    module at a time (:func:`convert.model.flax_model.make_unitwise_apply`), each
    module's weights cast to the run's dtype just before it runs, and the
    run never more than one module ahead: no second copy of the whole
    weights, in either dtype, ever exists. The float64 run happens
    inside ``jax.enable_x64(True)`` only, leaving every other JAX computation
    float32. Compilations: one per distinct unit configuration, input shape
    and dtype, never per call. JAX failing to start or running out of memory
    raises :class:`convert.errors.JaxReferenceError`.
    """
    try:
        return _run(checkpoint, images, input_names, float32, pool_padding)
    except (RuntimeError, MemoryError) as exc:  # jax's backend and XLA errors are RuntimeErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise JaxReferenceError(f"the JAX reference could not be computed: {first[:300]}; {ADVICE}") from exc


def _run(checkpoint, images, input_names, float32: bool, pool_padding: str) -> Reference:
    import jax

    from ..model.flax_model import make_unitwise_apply
    from ..model.mapping import flax_params

    arch = checkpoint.architecture
    apply = make_unitwise_apply(arch, _compile_dominates(arch, np.shape(images)), pool_padding)
    params = flax_params(checkpoint.arrays, arch, dtype=np.float32)  # host views, no copy
    timings: dict[str, float] = {}
    f32 = None
    if float32:
        t = time.perf_counter()
        f32 = {k: np.asarray(v) for k, v in apply(params, np.asarray(images, np.float32), np.float32).items()}
        timings["jax_f32_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with jax.enable_x64(True):
        f64 = {k: np.asarray(v) for k, v in apply(params, np.asarray(images, np.float64), np.float64).items()}
    timings["jax_f64_s"] = time.perf_counter() - t
    for k, v in f64.items():
        assert v.dtype == np.float64, f"float64 reference ran in {v.dtype} at {k}"
    return Reference(arch, np.asarray(images), f32, f64, list(input_names or []), timings)


def reference_from_file(
    path: str, arch: Architecture, images: np.ndarray, names: list[str], float32: bool, pool_padding: str = "zero"
) -> Reference:
    """:func:`reference_outputs` of the checkpoint at ``path``, each array read (and checked) as its unit runs.

    The worker's way: its caller has loaded and checked the same file already, and holding a
    second whole copy of it would add the checkpoint's size to the export's peak (docs/performance.md).
    """
    from ..checkpoint import open_deferred

    return reference_outputs(open_deferred(path, arch), images, names, float32=float32, pool_padding=pool_padding)
