"""Byte-reproducible ONNX graphs from tf2onnx: one output kept, canonical node order and names.

:func:`keep_output` reduces the two-output conversion to one variant's graph.

tf2onnx names what it adds from a process-wide counter and emits nodes in an
order that varies between runs (set iteration), so two conversions of the
same graph differ in bytes. :func:`canonicalize` renumbers every value and
node from the graph's *structure* alone: each node gets a digest of its op,
attributes and the digests of its inputs (graph inputs and weights by name,
tf2onnx's constants by content); nodes are then emitted in topological order,
ties broken by digest, and named in that order.
"""

from __future__ import annotations

import hashlib
import heapq


def _digest(*parts: bytes) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.digest()


def _value_digests(graph, fixed: set[str]) -> dict[str, bytes]:
    """Digest of every value name: fixed names as themselves, constants by content, node outputs by structure."""
    values: dict[str, bytes] = {"": b""}
    for name in fixed:
        values[name] = _digest(b"name", name.encode())
    for init in graph.initializer:
        if init.name not in fixed:
            body = type(init)()
            body.CopyFrom(init)
            body.name = ""
            values[init.name] = _digest(b"const", body.SerializeToString(deterministic=True))
    for node in graph.node:  # tf2onnx emits a topological order: inputs are known when a node comes
        attrs = b"".join(a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name))
        base = _digest(node.op_type.encode(), node.domain.encode(), attrs, *(values[i] for i in node.input))
        for k, out in enumerate(node.output):
            values[out] = _digest(base, str(k).encode())
    return values


def _topological_order(nodes, keys: list[bytes]) -> list[int]:
    """Kahn's algorithm, the ready node with the smallest digest first."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [0] * len(nodes)
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        deps = {producer[x] for x in n.input if x in producer}
        waiting[i] = len(deps)
        for d in deps:
            users[d].append(i)
    ready = [(keys[i], i) for i in range(len(nodes)) if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (keys[u], u))
    if len(order) != len(nodes):
        raise ValueError("the ONNX graph has a cycle")
    return order


def keep_output(graph, output: str) -> None:
    """Keep graph output ``output``, the nodes it depends on and the graph inputs they read (in place)."""
    (kept,) = [o for o in graph.output if o.name == output]
    producer = {out: i for i, n in enumerate(graph.node) for out in n.output}
    needed, stack, read = set(), [output], set()
    while stack:
        name = stack.pop()
        read.add(name)
        i = producer.get(name)
        if i is not None and i not in needed:
            needed.add(i)
            stack.extend(graph.node[i].input)
    nodes = [n for i, n in enumerate(graph.node) if i in needed]
    inputs = [x for k, x in enumerate(graph.input) if k == 0 or x.name in read]
    for field, values in ((graph.node, nodes), (graph.input, inputs), (graph.output, [kept])):
        copies = [type(v)() for v in values]
        for c, v in zip(copies, values, strict=True):
            c.CopyFrom(v)
        del field[:]
        field.extend(copies)


def canonicalize(graph, fixed: set[str]) -> None:
    """Reorder and rename ``graph``'s nodes, intermediate values and constants canonically (in place).

    ``fixed``: names kept as they are (the graph input, the weights, the output).
    """
    values = _value_digests(graph, fixed)
    nodes = list(graph.node)
    order = _topological_order(nodes, [_digest(*(values[o] for o in n.output)) for n in nodes])
    names: dict[str, str] = {}
    consts = {init.name for init in graph.initializer if init.name not in fixed}
    for i in order:
        for x in nodes[i].input:
            if x in consts and x not in names:
                names[x] = f"c{len(names)}"
        for out in nodes[i].output:
            if out not in fixed and out:
                names[out] = f"t{len(names)}"
    renamed = []
    for pos, i in enumerate(order):
        n = type(nodes[i])()
        n.CopyFrom(nodes[i])
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]
        n.name = f"{n.op_type}_{pos}"
        renamed.append(n)
    del graph.node[:]
    graph.node.extend(renamed)
    # Constants in order of first use (unused ones dropped), then any fixed-name initializers.
    used = sorted((i for i in graph.initializer if i.name in names), key=lambda i: int(names[i.name][1:]))
    kept = [i for i in graph.initializer if i.name not in consts]
    rest = []
    for src in used + kept:
        dst = type(src)()
        dst.CopyFrom(src)
        dst.name = names.get(src.name, src.name)
        rest.append(dst)
    del graph.initializer[:]
    graph.initializer.extend(rest)
    del graph.value_info[:]  # shape hints keyed by the old names; onnxruntime infers shapes itself
