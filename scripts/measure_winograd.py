#!/usr/bin/env python
"""Measure Winograd F(2x2, 3x3) convolutions, written as LiteRT operators, against XNNPACK's direct ones.

    .venv/bin/python scripts/measure_winograd.py [--rounds 7] [--layers-only]

A measurement for issue 19 (target 1 at batch 8), not part of any export. First each
stride-1 3x3 layer of R50x1's four blocks alone (224 px: 56, 28, 14 and 7 px sides, batch 8
and 1); then the whole folded R50x1 classifier at 224 px (synthetic weights, official layout),
converted twice at a fixed input shape: as the LiteRT export builds it
(convert.export.folded), and with the stride-1 3x3 convolutions of ``--blocks`` (all four:
13 of R50x1's 16 3x3 layers) computed by Winograd's algorithm (the input transform as unit-stride slices and sums, 16 1x1 convolutions with the
transformed kernels, computed in float64 and rounded once, the output transform as sums and
a depth-to-space). Both run in one process under ai_edge_litert's XNNPACK delegate on every
core, taking turns; best and median of ``--rounds`` calls, and the relative L2 difference.

The transforms need the input's height and width at conversion: splitting rows and columns
into even and odd ones is a reshape to a shape fixed at conversion, and an odd side needs a
padding and a crop that depend on its parity. The export's LiteRT graph takes any input size
(``[None, None, None, 3]``), so this form would need a graph at a fixed resolution
(docs/inference.md, "Winograd convolutions, measured").
Prints a Markdown table on stdout; progress on stderr.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from convert.testing.bench import print_table, script_arguments  # noqa: E402

#: Winograd F(2, 3)'s kernel transform (Lavin and Gray, 2015); its input and output
#: transforms are written out as sums in :func:`_input_transform` and :func:`winograd_conv`.
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
CHECKPOINT = Path(__file__).resolve().parents[1] / "bench-results" / "winograd" / "R50x1_224.npz"


def _options(parser) -> None:
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of each graph (default 7)")
    parser.add_argument("--layers-only", action="store_true", help="only the single layers, not the network")
    parser.add_argument(
        "--blocks",
        default="1,2,3,4",
        help="the blocks whose stride-1 3x3 layers the network computes by Winograd (default 1,2,3,4)",
    )


def winograd_kernel(kernel):
    """(3, 3, C, K) -> (4, 4, C, K): G k G^T per input and output channel, in float64, rounded once."""
    import numpy as np

    g = np.array(G)
    return np.einsum("ai,ijck,bj->abck", g, kernel.astype(np.float64), g).astype(np.float32)


def _even_odd(t, axis: int):
    """The even and odd rows (axis 1) or columns (axis 2) of ``t``, whose shape is known: a reshape and a split."""
    import tensorflow as tf

    n, h, w, c = t.shape.as_list()
    if axis == 1:
        return tf.split(tf.reshape(t, [n, h // 2, 2 * w, c]), 2, axis=2)
    return tf.split(tf.reshape(t, [n, h, w // 2, 2 * c]), 2, axis=3)


def _input_transform(t, axis: int):
    """B^T along ``axis``: the four sums of each 4-wide tile at stride 2 (rows 0-3, 2-5, ...)."""
    even, odd = _even_odd(t, axis)
    n = even.shape[axis] - 1
    cut = (lambda x, a, b: x[:, a:b]) if axis == 1 else (lambda x, a, b: x[:, :, a:b])
    e0, e1, o0, o1 = cut(even, 0, n), cut(even, 1, n + 1), cut(odd, 0, n), cut(odd, 1, n + 1)
    return [e0 - e1, o0 + e1, e1 - o0, o0 - o1]


def winograd_conv(x, u):
    """A 3x3 stride-1 convolution with zero padding 1 of ``x`` (N, H, W, C; shape known) by the transformed ``u``."""
    import tensorflow as tf

    _, h, w, _ = x.shape.as_list()
    th, tw = math.ceil(h / 2), math.ceil(w / 2)
    xp = tf.pad(x, [[0, 0], [1, 1 + 2 * th - h], [1, 1 + 2 * tw - w], [0, 0]])
    v = [_input_transform(r, 2) for r in _input_transform(xp, 1)]
    m = [[tf.nn.conv2d(v[i][j], u[i, j][None, None], 1, "VALID") for j in range(4)] for i in range(4)]
    r0 = [m[0][j] + m[1][j] + m[2][j] for j in range(4)]
    r1 = [m[1][j] - m[2][j] - m[3][j] for j in range(4)]
    y = [r0[0] + r0[1] + r0[2], r0[1] - r0[2] - r0[3], r1[0] + r1[1] + r1[2], r1[1] - r1[2] - r1[3]]
    y = tf.nn.depth_to_space(tf.concat(y, -1), 2)
    return y if (2 * th, 2 * tw) == (h, w) else y[:, :h, :w]


def _to_litert(fn, shape, holder=None) -> bytes:
    import tensorflow as tf

    concrete = tf.function(fn, input_signature=[tf.TensorSpec(shape, tf.float32)], autograph=False).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder or tf.Module()).convert()


def _race(models: dict[str, bytes], x, rounds: int) -> dict[str, tuple[list[float], object]]:
    """Each model's call times and last output, the models taking turns call by call."""
    from ai_edge_litert.interpreter import Interpreter

    runs = {}
    for name, content in models.items():
        it = Interpreter(model_content=content, num_threads=os.cpu_count())
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()  # the first call prepares XNNPACK's packed weights
        runs[name] = (it, [])
    for _ in range(rounds):
        for it, times in runs.values():
            it.set_tensor(it.get_input_details()[0]["index"], x)
            time.sleep(0.2)  # the other interpreter's threads go idle
            t = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t)
    return {n: (times, it.get_tensor(it.get_output_details()[0]["index"])) for n, (it, times) in runs.items()}


def _row(what: str, batch: int, raced: dict, rel_to=None):
    import numpy as np

    (dt, d), (wt, w) = raced["direct"], raced["winograd"]
    ref = d if rel_to is None else rel_to
    rel = {k: np.linalg.norm(v - ref) / np.linalg.norm(ref) for k, v in (("direct", d), ("winograd", w))}
    return (
        what,
        str(batch),
        f"{min(dt):.4f} / {np.median(dt):.4f}",
        f"{min(wt):.4f} / {np.median(wt):.4f}",
        f"{min(dt) / min(wt):.2f}x",
        f"{rel['winograd']:.1e}" + ("" if rel_to is None else f" ({rel['direct']:.1e})"),
    )


def _layer(form: str, k):
    """``x -> conv3x3(x, k)`` with zero padding 1, ``form`` "direct" or "winograd" (the kernel a constant)."""
    import tensorflow as tf

    if form == "winograd":
        u = tf.constant(winograd_kernel(k))
        return lambda t: winograd_conv(t, u)
    kt = tf.constant(k)
    return lambda t: tf.nn.conv2d(tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]]), kt, 1, "VALID")


def layers(rounds: int) -> list[tuple]:
    import numpy as np
    import tensorflow as tf

    rng, rows = np.random.default_rng(0), []
    for batch in (8, 1):
        for side, ch in ((56, 64), (28, 128), (14, 256), (7, 512)):
            x = np.maximum(rng.normal(size=(batch, side, side, ch)), 0).astype(np.float32)
            k = (rng.normal(size=(3, 3, ch, ch)) / np.sqrt(9 * ch)).astype(np.float32)
            models = {name: _to_litert(_layer(name, k), x.shape) for name in ("direct", "winograd")}
            exact = tf.nn.conv2d(
                tf.pad(tf.constant(x, tf.float64), [[0, 0], [1, 1], [1, 1], [0, 0]]), tf.constant(k, tf.float64), 1, "VALID"
            )
            rows.append(_row(f"3x3 conv, {side}x{side}x{ch} -> {ch}", batch, _race(models, x, rounds), exact.numpy()))
            print(f"measure: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def network(rounds: int, blocks: set[int]) -> list[tuple]:
    import numpy as np
    import tensorflow as tf

    from convert.checkpoint import load_checkpoint
    from convert.export.folded import folded_arrays
    from convert.model.architecture import PREFIX
    from convert.model.tf_model import BiTResNetV2, build_tf_model
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint

    arch = load_registry().get("r50x1-224").architecture
    if not CHECKPOINT.exists():
        CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_checkpoint(CHECKPOINT, arch, seed=0)
    checkpoint = load_checkpoint(CHECKPOINT, arch)
    arrays = folded_arrays(build_tf_model(checkpoint))
    transformed = {f"{k}#winograd": winograd_kernel(a) for k, a in arrays.items() if a.ndim == 4 and a.shape[:2] == (3, 3)}

    class Winograd(BiTResNetV2):
        def _conv(self, x, key, stride=1, pad=0, gate=None, on_output=False):
            u = self.variables_by_key.get(f"{key}#winograd")
            if u is not None and (stride, pad) == (1, 1) and key.startswith(tuple(f"{PREFIX}block{b}/" for b in blocks)):
                return winograd_conv(x, u)
            return super()._conv(x, key, stride, pad, gate, on_output)

    def convert(cls, weights, shape):
        holder = tf.Module()
        holder.weights = {k: tf.Variable(a, trainable=False, name=f"w{i}") for i, (k, a) in enumerate(weights.items())}
        net = cls(arch, weights=holder.weights, standardized_kernels=True)
        return _to_litert(net, shape, holder)

    rows, rng = [], np.random.default_rng(1)
    for batch in (8, 1):
        shape = (batch, 224, 224, 3)
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        models = {"direct": convert(BiTResNetV2, arrays, shape), "winograd": convert(Winograd, {**arrays, **transformed}, shape)}
        rows.append(_row("R50x1 at 224, the folded classifier", batch, _race(models, x, rounds)))
        print(f"measure: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(rounds: int, layers_only: bool, blocks: set[int]) -> int:
    from convert.cli.quiet import prepare

    prepare()
    rows = layers(rounds) + ([] if layers_only else network(rounds, blocks))
    print(
        f"{os.cpu_count()} threads; best / median of {rounds} calls, seconds; the network's Winograd layers: blocks {sorted(blocks)}\n"
    )
    head = ("graph", "batch", "direct s", "Winograd s", "direct / Winograd", "rel. L2 vs float64 (direct); network: vs direct")
    print_table(head, rows, right=(1, 2, 3, 4))
    return 0


if __name__ == "__main__":
    args = script_arguments(__doc__, configure=_options)
    sys.exit(main(args.rounds, args.layers_only, {int(b) for b in args.blocks.split(",")}))
