"""Loop and Scan with a length known at compile time, unrolled before import.

TVM's importer has neither.

- Scan (opset 9+): its length is the scan inputs' size along their scan axis, fixed once input
  shapes are bound. Step t takes slice t (or T-1-t, reversed) of each scan input, runs the body on
  the states and slices, and the scan outputs are the steps' slices stacked along their axis.
- Loop: unrolled when its trip count is a constant (up to ``MAX_STEPS``), its condition input
  absent or constant true, and the body passes the condition through unchanged (a for-loop, not a
  while-loop); scan outputs are stacked on a new first axis.

Each step is a copy of the body with its names made unique; names the body takes from the outer
graph stay as they are; an If in the body comes along with its branches seeing the step's names
(clean-up then moves them out: branches.py). A loop that does not qualify, and a loop inside an
unrolled body, is left for the import's check to refuse, with the reason.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .branches import rename_outer
from .specs import graph_constants

MAX_STEPS = 512


def _shapes(graph) -> dict[str, list]:
    out = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for t in graph.initializer:
        out[t.name] = list(t.dims)
    return out


class _Emitter:
    def __init__(self, prefix: str, opset: int):
        self.prefix, self.opset, self.nodes, self.inits, self.count = prefix, opset, [], [], 0

    def fresh(self, what: str) -> str:
        self.count += 1
        return f"{self.prefix}/{what}_{self.count}"

    def const(self, value, what: str = "c") -> str:
        name = self.fresh(what)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def body(self, body, bound: dict[str, str], step: str) -> dict[str, str]:
        """A copy of ``body`` with its inputs bound (formal -> actual); returns formal -> actual
        for every name it defines (its outputs among them)."""
        names = dict(bound)
        for t in body.initializer:
            new = f"{self.prefix}/{step}/{t.name}"
            self.inits.append(numpy_helper.from_array(numpy_helper.to_array(t), new))
            names[t.name] = new
        for i, n in enumerate(body.node):
            m = onnx.NodeProto()
            m.CopyFrom(n)
            del m.input[:]
            m.input.extend(names.get(x, x) for x in n.input)  # outer-scope names stay
            del m.output[:]
            for x in n.output:
                names[x] = f"{self.prefix}/{step}/{x}" if x else ""
                m.output.append(names[x])
            m.name = f"{self.prefix}/{step}/{n.name or n.op_type + str(i)}"
            for a in m.attribute:  # an If's branches see this step's names
                for g in [a.g] if a.HasField("g") else a.graphs:
                    rename_outer(g, names)
            self.nodes.append(m)
        return names

    def stack(self, slices: list[str], axis: int, out: str) -> None:
        if self.opset >= 13:
            ups = [self.node("Unsqueeze", [s, self.const(np.array([axis], np.int64), "axis")]) for s in slices]
        else:  # axes an attribute before opset 13
            ups = [self.node("Unsqueeze", [s], axes=[axis]) for s in slices]
        self.nodes.append(helper.make_node("Concat", ups, [out], name=f"{self.prefix}/stack_{out}", axis=axis))


def _scan(node, shapes, emit: _Emitter):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    body = attrs["body"]
    m = int(attrs["num_scan_inputs"])
    ins = list(node.input)
    n_state = len(ins) - m
    states, scans = ins[:n_state], ins[n_state:]
    in_axes = list(attrs.get("scan_input_axes", [0] * m))
    in_dirs = list(attrs.get("scan_input_directions", [0] * m))
    k = len(body.output) - n_state
    out_axes = list(attrs.get("scan_output_axes", [0] * k))
    out_dirs = list(attrs.get("scan_output_directions", [0] * k))
    ranks = [len(shapes[x]) if x in shapes else None for x in scans]
    if None in ranks:
        return None
    in_axes = [a + r if a < 0 else a for a, r in zip(in_axes, ranks)]
    lengths = {shapes[x][a] for x, a in zip(scans, in_axes)}
    if len(lengths) != 1 or None in lengths:
        return None
    T = lengths.pop()
    if not 0 < T <= MAX_STEPS:
        return None
    formal = [i.name for i in body.input]
    outs = [o.name for o in body.output]
    collected: list[list[str]] = [[] for _ in range(k)]
    for t in range(T):
        bound = dict(zip(formal[:n_state], states))
        for j, (x, a, d) in enumerate(zip(scans, in_axes, in_dirs)):
            idx = emit.const(np.array(T - 1 - t if d else t, np.int64), "t")
            bound[formal[n_state + j]] = emit.node("Gather", [x, idx], axis=a)
        names = emit.body(body, bound, f"t{t}")
        states = [names.get(o, o) for o in outs[:n_state]]
        for j in range(k):
            collected[j].append(names.get(outs[n_state + j], outs[n_state + j]))
    for s, out in zip(states, node.output[:n_state]):
        if out:
            emit.nodes.append(helper.make_node("Identity", [s], [out], name=f"{emit.prefix}/{out}"))
    for j, out in enumerate(node.output[n_state:]):
        if not out:
            continue
        axis = out_axes[j]
        if axis < 0:
            t = body.output[n_state + j].type.tensor_type
            if not t.HasField("shape"):
                return None
            axis += len(t.shape.dim) + 1
        emit.stack(collected[j][::-1] if out_dirs[j] else collected[j], axis, out)
    return emit


def _loop(node, consts, emit: _Emitter):
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    body = attrs["body"]
    ins = list(node.input) + [""] * (2 - len(node.input))
    trip, cond, carried = ins[0], ins[1], ins[2:]
    if not trip or trip not in consts:
        return None
    T = int(np.asarray(consts[trip]).reshape(-1)[0])
    if not 0 < T <= MAX_STEPS:
        return None
    if cond and not (cond in consts and bool(np.asarray(consts[cond]).reshape(-1)[0])):
        return None
    formal = [i.name for i in body.input]
    outs = [o.name for o in body.output]
    producer = {o: n for n in body.node for o in n.output}
    c = outs[0]  # a for-loop: the condition passes through, or is a constant true
    while c in producer and producer[c].op_type == "Identity":
        c = producer[c].input[0]
    body_consts = graph_constants(body)
    if not (c == formal[1] or (c in body_consts and bool(np.asarray(body_consts[c]).reshape(-1)[0]))):
        return None
    n_carried = len(carried)
    k = len(outs) - 1 - n_carried
    collected: list[list[str]] = [[] for _ in range(k)]
    true = emit.const(np.array(True), "true")
    for t in range(T):
        bound = {formal[0]: emit.const(np.array(t, np.int64), "i"), formal[1]: true}
        bound.update(zip(formal[2:], carried))
        names = emit.body(body, bound, f"i{t}")
        carried = [names.get(o, o) for o in outs[1:1 + n_carried]]
        for j in range(k):
            collected[j].append(names.get(outs[1 + n_carried + j], outs[1 + n_carried + j]))
    for s, out in zip(carried, node.output[:n_carried]):
        if out:
            emit.nodes.append(helper.make_node("Identity", [s], [out], name=f"{emit.prefix}/{out}"))
    for j, out in enumerate(node.output[n_carried:]):
        if out:
            emit.stack(collected[j], 0, out)
    return emit


def unroll(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, int]:
    """``model`` with each qualifying Loop and Scan unrolled (see the module doc), and how many."""
    g = model.graph
    if not any(n.op_type in ("Loop", "Scan") for n in g.node):
        return model, 0
    consts, shapes = graph_constants(g), _shapes(g)
    nodes, inits, done = [], [], 0
    for i, n in enumerate(g.node):
        emit = None
        if n.op_type in ("Loop", "Scan") and n.domain in ("", "ai.onnx"):
            e = _Emitter(f"{n.name or n.op_type + '_' + str(i)}", opset)
            emit = _scan(n, shapes, e) if n.op_type == "Scan" and opset >= 9 else \
                _loop(n, consts, e) if n.op_type == "Loop" else None
        if emit is None:
            nodes.append(n)
            continue
        nodes += emit.nodes
        inits += emit.inits
        done += 1
    if not done:
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    return model, done
