#!/usr/bin/env python
"""Measure the LiteRT graph's Winograd F(2x2, 3x3) convolutions against XNNPACK's direct ones.

    .venv/bin/python scripts/measure_winograd.py [--rounds 7] [--layers-only] [--min-channels 128]

The record behind :mod:`convert.model.winograd` (issue 19, target 1 at batch 8). First each
stride-1 3x3 layer of R50x1's four blocks alone (224 px: 56, 28, 14 and 7 px sides, batch 8
and 1); then the whole folded R50x1 classifier at 224 px (synthetic weights, official layout),
converted as the LiteRT export converts it (:func:`convert.export.folded.concrete_with_constants`,
for any input size) twice: every convolution direct, and the stride-1 3x3 layers with at least
``--min-channels`` input channels by Winograd's algorithm (the export's: 128). Both run in one
process under ai_edge_litert's XNNPACK delegate on every core, resized to the input, taking
turns; best and median of ``--rounds`` calls, and the relative L2 difference.
Prints a Markdown table on stdout; progress on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from convert.model.winograd import MIN_CHANNELS  # noqa: E402  (numpy only)
from convert.testing.bench import print_table, script_arguments  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "bench-results" / "winograd" / "R50x1_224.npz"


def _options(parser) -> None:
    parser.add_argument("--rounds", type=int, default=7, help="timed calls of each graph (default 7)")
    parser.add_argument("--layers-only", action="store_true", help="only the single layers, not the network")
    parser.add_argument(
        "--min-channels",
        type=int,
        default=MIN_CHANNELS,
        help="the network's Winograd layers: stride-1 3x3 with this many input channels or more (default: the export's)",
    )


def _to_litert(fn, channels: int) -> bytes:
    import tensorflow as tf

    spec = tf.TensorSpec([None, None, None, channels], tf.float32)
    concrete = tf.function(fn, input_signature=[spec], autograph=False).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], tf.Module()).convert()


def _race(models: dict[str, bytes], x, rounds: int) -> dict[str, tuple[list[float], object]]:
    """Each model's call times and last output, resized to ``x``, the models taking turns call by call."""
    from ai_edge_litert.interpreter import Interpreter

    runs = {}
    for name, content in models.items():
        it = Interpreter(model_content=content, num_threads=os.cpu_count())
        it.resize_tensor_input(it.get_input_details()[0]["index"], x.shape)
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

    from convert.model.winograd import transformed_kernel, winograd_conv

    if form == "winograd":
        u = tf.constant(transformed_kernel(k))
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
            models = {name: _to_litert(_layer(name, k), ch) for name in ("direct", "winograd")}
            exact = tf.nn.conv2d(
                tf.pad(tf.constant(x, tf.float64), [[0, 0], [1, 1], [1, 1], [0, 0]]), tf.constant(k, tf.float64), 1, "VALID"
            )
            rows.append(_row(f"3x3 conv, {side}x{side}x{ch} -> {ch}", batch, _race(models, x, rounds), exact.numpy()))
            print(f"measure: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def network(rounds: int, min_channels: int) -> list[tuple]:
    import numpy as np
    import tensorflow as tf

    from convert.checkpoint import load_checkpoint
    from convert.export.folded import concrete_with_constants, folded_arrays, winograd_arrays
    from convert.model.tf_model import build_tf_model
    from convert.model.winograd import winograd_layers
    from convert.registry import load_registry
    from convert.synthetic import write_synthetic_checkpoint

    arch = load_registry().get("r50x1-224").architecture
    if not CHECKPOINT.exists():
        CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_checkpoint(CHECKPOINT, arch, seed=0)
    net = build_tf_model(load_checkpoint(CHECKPOINT, arch))
    arrays = folded_arrays(net)
    keys = winograd_layers(arch, min_channels)
    print(f"measure: {len(keys)} Winograd layers", file=sys.stderr, flush=True)

    def convert(winograd):
        concrete, holder = concrete_with_constants(net, "symmetric", arrays, winograd)
        return tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder).convert()

    models = {"direct": convert(None), "winograd": convert(winograd_arrays(net, keys))}
    sizes = {n: f"{len(m) / 1e6:.0f} MB" for n, m in models.items()}
    rows, rng = [], np.random.default_rng(1)
    for batch in (8, 1):
        x = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
        what = f"R50x1 at 224, the folded classifier ({sizes['direct']} / {sizes['winograd']})"
        rows.append(_row(what, batch, _race(models, x, rounds)))
        print(f"measure: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(rounds: int, layers_only: bool, min_channels: int) -> int:
    from convert.cli.quiet import prepare

    prepare()
    rows = layers(rounds) + ([] if layers_only else network(rounds, min_channels))
    print(
        f"{os.cpu_count()} threads; best / median of {rounds} calls, seconds; graphs for any input size; "
        f"the network's Winograd layers: stride-1 3x3 with {min_channels}+ input channels\n"
    )
    head = ("graph", "batch", "direct s", "Winograd s", "direct / Winograd", "rel. L2 vs float64 (direct); network: vs direct")
    print_table(head, rows, right=(1, 2, 3, 4))
    return 0


if __name__ == "__main__":
    args = script_arguments(__doc__, configure=_options)
    sys.exit(main(args.rounds, args.layers_only, args.min_channels))
