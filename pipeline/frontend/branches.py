"""If: its branches' nodes moved into the enclosing graph before import, and the If itself a Where.

TVM's importer converts an If's branches with its own walk (``_convert_subgraph``), which differs
from the main graph's: a node with several results whose ONNX node names fewer outputs (an LSTM
with only ``Y``) hands its whole result tuple on, and clean-up never reached the branch (no
onnxslim folding of its shape computations), so converters there saw shapes the main graph
would not give them. TVM computes both branches anyway (the converters emit into the enclosing
block; the Relax ``If`` only picks a result), so nothing is lost by moving them out:

- ``hoist`` (before clean-up's folding) copies every If's branch nodes into the graph, names
  made unique (``<If node>/then/<name>``; names a branch takes from outside stay), nested Ifs
  too, and leaves an If whose branches only pass the results on. An If whose condition is a
  constant becomes its taken branch alone.
- ``select`` (after shape inference) turns such an If into ``Where(cond, then, else)`` where the
  two results have the same static shape and type, so the model stays one dataflow graph; an If
  whose branches give differently shaped results stays an If.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .provenance import node_name
from .specs import graph_constants


def _is_if(n) -> bool:
    return n.op_type == "If" and n.domain in ("", "ai.onnx")


def _defined(graph) -> set[str]:
    return ({i.name for i in graph.input} | {t.name for t in graph.initializer}
            | {o for n in graph.node for o in n.output if o})


def rename_outer(graph, names: dict[str, str]) -> None:
    """Rename, in place, the values ``graph`` (a subgraph) takes from the scopes around it."""
    names = {k: v for k, v in names.items() if k not in _defined(graph)}
    if not names:
        return
    for n in graph.node:
        for i, x in enumerate(n.input):
            if x in names:
                n.input[i] = names[x]
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else a.graphs:
                rename_outer(g, names)
    for o in graph.output:  # a branch may return an outer value as it is
        if o.name in names:
            o.name = names[o.name]


def _copy(body, prefix: str, inits: list) -> tuple[list, list[str]]:
    """The nodes of ``body`` with the names it defines made unique under ``prefix`` (its
    initializers go into ``inits``), and the names of its outputs."""
    names: dict[str, str] = {}
    for t in body.initializer:
        new = f"{prefix}/{t.name}"
        inits.append(numpy_helper.from_array(numpy_helper.to_array(t), new))
        names[t.name] = new
    for n in body.node:
        for x in n.output:
            if x:
                names[x] = f"{prefix}/{x}"
    nodes = []
    for i, n in enumerate(body.node):
        m = onnx.NodeProto()
        m.CopyFrom(n)
        for j, x in enumerate(m.input):
            m.input[j] = names.get(x, x)
        for j, x in enumerate(m.output):
            m.output[j] = names.get(x, x)
        m.name = f"{prefix}/{n.name or n.op_type + str(i)}"
        for a in m.attribute:
            for g in [a.g] if a.HasField("g") else a.graphs:
                rename_outer(g, names)
        nodes.append(m)
    return nodes, [names.get(o.name, o.name) for o in body.output]


def _pass_on(name: str, sources: list[str], outputs) -> onnx.GraphProto:
    """A branch that returns ``sources`` (values of the enclosing graph), typed as ``outputs``."""
    nodes, outs = [], []
    for k, (s, o) in enumerate(zip(sources, outputs)):
        out = f"{name}_{k}"
        nodes.append(helper.make_node("Identity", [s], [out], name=out))
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(o)
        vi.name = out
        outs.append(vi)
    return helper.make_graph(nodes, name, [], outs)


def hoist(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with every If's branch nodes in the main graph (see the module doc), and how many
    Ifs there were."""
    if not any(_is_if(n) for n in model.graph.node):
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = graph_constants(g)
    inits: list = []
    count = [0]
    used = {n.name for n in g.node}

    def unique(name: str) -> str:
        while name in used:
            name += "_"
        used.add(name)
        return name

    def flatten(nodes) -> list:
        out = []
        for i, n in enumerate(nodes):
            if not _is_if(n):
                out.append(n)
                continue
            count[0] += 1
            prefix = unique(node_name(n, i))
            attrs = {a.name: a.g for a in n.attribute if a.name in ("then_branch", "else_branch")}
            cond = consts.get(n.input[0])
            taken = None if cond is None or np.asarray(cond).size != 1 else bool(np.asarray(cond).reshape(-1)[0])
            results = {}
            for key, tag in (("then_branch", "then"), ("else_branch", "else")):
                if taken is not None and taken != (tag == "then"):
                    continue
                body, results[tag] = _copy(attrs[key], f"{prefix}/{tag}", inits)
                out += flatten(body)
            if taken is not None:
                src = results["then" if taken else "else"]
                out += [helper.make_node("Identity", [s], [o], name=f"{prefix}/taken{k}")
                        for k, (s, o) in enumerate(zip(src, n.output)) if o]
                continue
            m = helper.make_node("If", [n.input[0]], list(n.output), name=prefix,
                                 then_branch=_pass_on(f"{prefix}/then", results["then"], attrs["then_branch"].output),
                                 else_branch=_pass_on(f"{prefix}/else", results["else"], attrs["else_branch"].output))
            out.append(m)
        return out

    nodes = flatten(list(g.node))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(inits)
    return model, count[0]


def _passed_on(branch) -> list[str] | None:
    """The enclosing graph's values a branch returns, where it only passes them on."""
    src = {n.output[0]: n.input[0] for n in branch.node if n.op_type == "Identity"}
    if len(src) != len(branch.node) or branch.initializer:
        return None
    return [src.get(o.name) for o in branch.output] if all(o.name in src for o in branch.output) else None


def select(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each If left by ``hoist`` as ``Where(cond, then, else)`` where its two results per output
    have one static shape and type, or as the taken branch's results where the condition became a
    constant (see the module doc). Needs inferred shapes (value_info)."""
    g = model.graph
    if not any(_is_if(n) for n in g.node):
        return model
    types = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            types[vi.name] = (t.elem_type, tuple(d.dim_value for d in t.shape.dim))
    for t in g.initializer:
        types[t.name] = (t.data_type, tuple(t.dims))
    consts = graph_constants(g)
    nodes, changed = [], False
    for n in g.node:
        branches = {a.name: a.g for a in n.attribute} if _is_if(n) else {}
        then = _passed_on(branches["then_branch"]) if branches else None
        other = _passed_on(branches["else_branch"]) if branches else None
        if then is None or other is None:
            nodes.append(n)
            continue
        cond = consts.get(n.input[0])
        if cond is not None and np.asarray(cond).size == 1:
            src = then if bool(np.asarray(cond).reshape(-1)[0]) else other
            nodes += [helper.make_node("Identity", [s], [o], name=f"{n.name}/taken{k}")
                      for k, (s, o) in enumerate(zip(src, n.output)) if o]
            changed = True
            continue
        if not all(t in types and types[t] == types.get(e) for t, e in zip(then, other)):
            nodes.append(n)
            continue
        scalar = f"{n.name}/cond"
        shape = f"{n.name}/scalar_shape"
        g.initializer.append(numpy_helper.from_array(np.zeros((0,), np.int64), shape))
        nodes.append(helper.make_node("Reshape", [n.input[0], shape], [scalar], name=scalar))
        nodes += [helper.make_node("Where", [scalar, t, e], [o], name=f"{n.name}/where{k}")
                  for k, (t, e, o) in enumerate(zip(then, other, n.output)) if o]
        changed = True
    if changed:
        del g.node[:]
        g.node.extend(nodes)
    return model
