"""ONNX functions: an op TVM cannot convert is replaced by its ONNX function body before import.

Such ops are those ONNX defines as a function of other ops (SwiGLU, MeanVarianceNormalization, ...).

onnx ships each body (``OpSchema.get_function_with_opset_version``, or the context-dependent
form that needs the inputs' types); the body's formal inputs, outputs and attribute references
are bound to the node's, its inner names made unique. A body may use ops that are functions in
turn: expansion repeats a few rounds. This is the general fallback behind the per-op converters.
"""

from __future__ import annotations

import onnx
from onnx import helper

from .specs import opset_of

_ROUNDS = 4


def defined_as_function(node, opset: int) -> bool:
    """Whether ONNX defines this node's op (at this opset) as a function of other ops."""
    if node.domain not in ("", "ai.onnx"):
        return False
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:  # noqa: BLE001
        return False
    return any(v <= opset for v in list(schema.function_opset_versions)
               + list(schema.context_dependent_function_opset_versions))


def _body(node, opset: int, types: dict[str, onnx.TypeProto]) -> onnx.FunctionProto | None:
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain or "")
    except Exception:  # noqa: BLE001 - not an ONNX op
        return None
    versions = [v for v in schema.function_opset_versions if v <= opset]
    data = None
    if versions:
        data = schema.get_function_with_opset_version(max(versions))
    else:
        versions = [v for v in schema.context_dependent_function_opset_versions if v <= opset]
        if not versions or any(x and x not in types for x in node.input):
            return None
        try:
            data = schema.get_context_dependent_function_with_opset_version(
                max(versions), node.SerializeToString(), [types[x].SerializeToString() for x in node.input if x])
        except Exception:  # noqa: BLE001 - onnx cannot build it for these types
            return None
    if not data:
        return None
    fp = onnx.FunctionProto()
    fp.ParseFromString(data)
    if any(a.type == onnx.AttributeProto.GRAPHS for n in fp.node for a in n.attribute):
        return None
    return fp


def _rename_outer(graph, names: dict[str, str]) -> None:
    """In a subgraph of a function body (a Scan's, an If's), the names it takes from the body
    renamed as the body's were; names the subgraph defines itself shadow them."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    for n in graph.node:
        for j, x in enumerate(n.input):
            if x and x not in local and x in names:
                n.input[j] = names[x]
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _rename_outer(a.g, {k: v for k, v in names.items() if k not in local})
    for o in graph.output:
        if o.name not in local and o.name in names:
            o.name = names[o.name]


def _inline(node, fp: onnx.FunctionProto, prefix: str) -> list[onnx.NodeProto]:
    names = {f: a for f, a in zip(fp.input, node.input)}
    names.update({f: "" for f in list(fp.input)[len(node.input):]})  # omitted optional inputs
    names.update({f: a for f, a in zip(fp.output, node.output)})
    given = {a.name: a for a in node.attribute}
    defaults = {a.name: a for a in fp.attribute_proto}

    def rename(x: str) -> str:
        if x == "":
            return ""
        if x not in names:
            names[x] = f"{prefix}/{x}"
        return names[x]

    out = []
    for i, n in enumerate(fp.node):
        m = onnx.NodeProto()
        m.CopyFrom(n)
        del m.input[:]
        m.input.extend(rename(x) for x in n.input)
        del m.output[:]
        m.output.extend(rename(x) for x in n.output)
        m.name = f"{prefix}/{n.name or n.op_type + str(i)}"
        attrs = []
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                b = onnx.AttributeProto()
                b.CopyFrom(a)
                _rename_outer(b.g, names)
                attrs.append(b)
            elif a.ref_attr_name:
                src = given.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
                if src is None:
                    continue  # not given, no default: the inner op's own default applies
                b = onnx.AttributeProto()
                b.CopyFrom(src)
                b.name = a.name
                attrs.append(b)
            else:
                attrs.append(a)
        del m.attribute[:]
        m.attribute.extend(attrs)
        out.append(m)
    return out


def expand(model: onnx.ModelProto, convertible) -> tuple[onnx.ModelProto, list[str]]:
    """``model`` with every node that ``convertible(node)`` rejects and ONNX defines as a function
    replaced by the function's body; and the op types expanded. ``model`` itself if none."""
    opset = opset_of(model)
    expanded: list[str] = []
    for _ in range(_ROUNDS):
        todo = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and not convertible(n)]
        if not todo:
            break
        if not expanded:
            model = onnx.ModelProto.FromString(model.SerializeToString())
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001
            inferred = model
        g = inferred.graph
        types = {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}
        for t in g.initializer:
            types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
        nodes, changed = [], False
        for i, n in enumerate(model.graph.node):
            fp = _body(n, opset, types) if n.domain in ("", "ai.onnx") and not convertible(n) else None
            if fp is None:
                nodes.append(n)
                continue
            nodes += _inline(n, fp, f"{n.name or n.op_type + '_' + str(i)}")
            expanded.append(n.op_type)
            changed = True
        if not changed:
            break
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return model, sorted(set(expanded))
