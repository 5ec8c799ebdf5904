"""One converted LiteRT FlatBuffer, one file per variant: keep one output, drop what it does not use.

The LiteRT target converts the forward pass once, with both outputs (a
``serving_default`` signature holding ``logits`` and ``feature_vector``), and
writes each variant's file from it (:func:`single_outputs`, reading the converted
model once): the one output the variant names, the operators it depends on and
only the tensors, buffers and operator codes those use (the feature extractor
loses the head), in their converted order; the input is named ``images``. One
conversion instead of two halves the converter's share of the export
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..errors import ExportError
from .target import INPUT_NAME

#: Room beyond the converter's FlatBuffer for a rewritten one (names change; vtables may move).
PACK_SLACK = 2**20


def single_outputs(flat: bytes, outputs: Sequence[str]) -> Iterator[memoryview]:
    """For each of ``outputs`` in turn, the model of ``flat`` reduced to that signature output, input named ``images``.

    The model is read once and reduced step by step, so each output must be computable from
    what the one before it kept (the classifier's logits, then its feature vector). Each item
    is a view of the FlatBuffer builder's memory, valid until the next item is asked for.
    """
    import flatbuffers
    from tensorflow.lite.tools import flatbuffer_utils

    identifier, size = bytes(flat[4:8]), len(flat)  # the converter's identifier, "TFL3"
    # Read in place: the buffers' arrays are read-only views of ``flat`` (a bytearray copy of it
    # would be one more copy of the weights, 0.95 GB for R152x2); packing only reads them.
    model = flatbuffer_utils.read_model_from_bytearray(flat)
    if len(model.subgraphs) != 1 or len(model.signatureDefs or []) != 1:
        raise ExportError(
            f"the converter produced {len(model.subgraphs)} subgraphs and {len(model.signatureDefs or [])} signatures, "
            "expected one each"
        )
    graph, signature = model.subgraphs[0], model.signatureDefs[0]
    found = {t.name.decode(): t for t in signature.outputs}
    if len(graph.inputs) != 1 or len(signature.inputs) != 1 or not set(outputs) <= set(found):
        raise ExportError(
            f"the converter produced {len(graph.inputs)} inputs and the outputs {sorted(found)}; "
            f"expected one input and {sorted(outputs)}"
        )
    for output in outputs:
        kept = found[output]
        if kept.tensorIndex < 0:
            raise ValueError(f"output {output!r} was dropped for the output before it: ask for it first")
        tensor_map = _prune(model, graph, kept.tensorIndex)
        for t in found.values():
            t.tensorIndex = tensor_map.get(t.tensorIndex, -1)
        graph.inputs = [tensor_map[i] for i in graph.inputs]
        graph.outputs = [kept.tensorIndex]
        graph.tensors[graph.inputs[0]].name = INPUT_NAME.encode()
        graph.tensors[kept.tensorIndex].name = output.encode()
        signature.inputs[0].name = INPUT_NAME.encode()
        signature.inputs[0].tensorIndex = graph.inputs[0]
        signature.outputs = [kept]
        # flatbuffer_utils.convert_object_to_bytearray's packing, into a builder sized for the whole
        # model from the start (the same bytes, without copying the buffer at every doubling); its
        # memory is handed out as a view, not copied again.
        builder = flatbuffers.Builder(size + PACK_SLACK)
        builder.Finish(model.Pack(builder), file_identifier=identifier)
        yield memoryview(builder.Bytes)[builder.Head() :]
        del builder


def _prune(model, graph, output: int) -> dict[int, int]:
    """Keep the operators ``output`` needs and what they use (in place); old tensor index -> new."""
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs}
    needed, stack = set(), [output]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in needed:
            needed.add(i)
            stack.extend(t for t in graph.operators[i].inputs if t >= 0)
    operators = [op for i, op in enumerate(graph.operators) if i in needed]
    used = set(graph.inputs) | {output}
    for op in operators:
        used.update(t for t in (*op.inputs, *op.outputs, *(op.intermediates or ())) if t >= 0)
    tensor_map = {old: new for new, old in enumerate(sorted(used))}
    for op in operators:
        op.inputs = [tensor_map.get(t, -1) for t in op.inputs]
        op.outputs = [tensor_map[t] for t in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [tensor_map.get(t, -1) for t in op.intermediates]
    graph.tensors = [graph.tensors[old] for old in sorted(used)]
    _prune_buffers(model, graph)
    _prune_operator_codes(model, operators)
    graph.operators = operators
    return tensor_map


def _prune_buffers(model, graph) -> None:
    """Keep buffer 0 (the empty one), the kept tensors' and the metadata's; renumber every reference."""
    metadata = model.metadata or []
    used = {0, *(t.buffer for t in graph.tensors), *(m.buffer for m in metadata), *(model.metadataBuffer or ())}
    buffer_map = {old: new for new, old in enumerate(sorted(used))}
    model.buffers = [model.buffers[old] for old in sorted(used)]
    for t in graph.tensors:
        t.buffer = buffer_map[t.buffer]
    for m in metadata:
        m.buffer = buffer_map[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [buffer_map[b] for b in model.metadataBuffer]


def _prune_operator_codes(model, operators) -> None:
    used = sorted({op.opcodeIndex for op in operators})
    code_map = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[old] for old in used]
    for op in operators:
        op.opcodeIndex = code_map[op.opcodeIndex]
