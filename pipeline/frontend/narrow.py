"""Narrow types: float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), float4 E2M1 and the 4- and 2-bit ints.

TVM 0.27 converts none of them by ONNX's rules (its float8 casts round differently, the FNUZ
kinds and the sub-byte ints it does not know), so deploy carries such a tensor as its bits: one
uint8 per element, in ml_dtypes' layout (what a numpy user holds and ONNX Runtime takes).

- A graph input or output of a narrow type is uint8 inside the library; the manifest keeps its
  type as ``dtype`` and ``"storage": "uint8"``, and the runtime views the arrays both ways.
- Cast and CastLike to a narrow type become ``deploy.CastToBits`` (round to nearest even, with
  ONNX's saturation), from one ``deploy.CastFromBits`` (a table of every code):
  ``converters/narrow_cast.py``. An initializer of a narrow type is stored as its bits.
- QuantizeLinear and DequantizeLinear with a 4- or 2-bit int type compute in int8 (exact) and
  convert at the ends.
- Any other op on a narrow tensor is refused, naming the node. float8 E8M0 is read (cast from)
  only: a cast to it has rounding modes of its own.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import DeployError
from .specs import dtype_name, elem_types

DOMAIN = "deploy"
FLOATS = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
          TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT4E2M1}
INTS = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15), TensorProto.INT2: (-2, 1), TensorProto.UINT2: (0, 3)}
NARROW = FLOATS | set(INTS)
# narrow types deploy reads (a cast from them) but does not write (their casts to them have
# rounding modes of their own)
UNSUPPORTED = {TensorProto.FLOAT8E8M0}


def present(model: onnx.ModelProto) -> bool:
    g = model.graph
    if any(t in NARROW | UNSUPPORTED for t in elem_types(g).values()):
        return True
    return any(n.op_type == "Cast" and any(a.name == "to" and a.i in NARROW | UNSUPPORTED for a in n.attribute)
               for n in g.node)


def _refuse(node, i: int, what: str) -> DeployError:
    from .provenance import node_name

    return DeployError(f"node '{node_name(node, i)}' ({node.op_type}) {what}",
                       hint="deploy computes float8, float4 and 4-/2-bit int tensors only in Cast, CastLike, and "
                            "int QuantizeLinear/DequantizeLinear; cast them to float or int8 in the model first")


def lower(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every narrow tensor carried as uint8 bits (see the module doc); ``model``
    itself when it has none. Runs after shape inference (it needs every tensor's type)."""
    if not present(model):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    types = elem_types(g)
    for i, node in enumerate(g.node):
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH and any(t in NARROW for t in elem_types(a.g).values()):
                raise _refuse(node, i, "has a subgraph with float8/float4/int4/int2 tensors")
    nodes = []
    for i, node in enumerate(g.node):
        ins = [types.get(x) for x in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        op = node.op_type
        if op == "CastLike" and (ins[1] in NARROW or ins[0] in NARROW):
            op, attrs = "Cast", {"to": ins[1], **({"saturate": attrs["saturate"]} if "saturate" in attrs else {})}
            node = helper.make_node("Cast", [node.input[0]], list(node.output), name=node.name, **attrs)
        if op == "Cast" and attrs.get("to") in UNSUPPORTED:
            raise _refuse(node, i, f"casts to {dtype_name(attrs['to'])}, whose rounding modes deploy does not compute")
        if op == "Cast" and (attrs["to"] in NARROW or ins[0] in NARROW | UNSUPPORTED):
            nodes += _cast(node, ins[0], attrs["to"], int(attrs.get("saturate", 1)))
            types[node.output[0]] = attrs["to"]
        elif op in ("QuantizeLinear", "DequantizeLinear") and any(t in INTS for t in ins + [attrs.get("output_dtype")]):
            nodes += _qdq(node, i, ins, attrs, types)
        elif any(t in NARROW | UNSUPPORTED for t in ins + [types.get(o) for o in node.output]):
            bad = next(t for t in ins + [types.get(o) for o in node.output] if t in NARROW | UNSUPPORTED)
            raise _refuse(node, i, f"computes on a {dtype_name(bad)} tensor")
        else:
            nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    used = _names_read(g) | {o.name for o in g.output}
    keep = [vi for vi in g.input if vi.name in used]  # a CastLike's 'like' is no longer read
    del g.input[:]
    g.input.extend(keep)
    for t in g.initializer:
        if t.data_type in NARROW | UNSUPPORTED:
            bits = numpy_helper.to_array(t).view(np.uint8)
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(bits), t.name))
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type in NARROW | UNSUPPORTED:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


def _names_read(graph) -> set[str]:
    """Every tensor name a node of ``graph`` or of its subgraphs reads."""
    out = set()
    for n in graph.node:
        out.update(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out |= _names_read(a.g)
    return out


def _cast(node, src: int, to: int, saturate: int) -> list:
    out, name = node.output[0], node.name or node.output[0]
    if src in NARROW and to in NARROW:  # through float32 (exact for every narrow type)
        mid = f"{out}__deploy_f32"
        return [helper.make_node("CastFromBits", [node.input[0]], [mid], name=f"{name}/from", domain=DOMAIN,
                                 **{"from": src, "to": TensorProto.FLOAT}),
                helper.make_node("CastToBits", [mid], [out], name=f"{name}/to", domain=DOMAIN, to=to,
                                 saturate=saturate)]
    if to in NARROW:
        return [helper.make_node("CastToBits", [node.input[0]], [out], name=name, domain=DOMAIN, to=to,
                                 saturate=saturate)]
    return [helper.make_node("CastFromBits", [node.input[0]], [out], name=name, domain=DOMAIN,
                             **{"from": src, "to": to})]


def _qdq(node, i: int, ins: list, attrs: dict, types: dict) -> list:
    """Q/DQ with a 4- or 2-bit int: the same op in int8 (whose range holds theirs), the value
    clipped to the narrow range after quantizing, converted to/from the bits at the ends."""
    name = node.name or node.output[0]
    if node.op_type == "DequantizeLinear":
        kind = ins[0]
        if kind not in INTS or (len(ins) > 2 and ins[2] not in (None, kind)):
            raise _refuse(node, i, "mixes narrow and wide types")
        wide = TensorProto.INT8 if INTS[kind][0] < 0 else TensorProto.UINT8
        pre, new_inputs = [], list(node.input)
        for j in (0, 2):
            if j < len(node.input) and node.input[j]:
                w = f"{node.input[j]}__deploy_{helper.tensor_dtype_to_string(wide).lower()}"
                pre.append(helper.make_node("CastFromBits", [node.input[j]], [w], name=f"{name}/in{j}",
                                            domain=DOMAIN, **{"from": kind, "to": wide}))
                new_inputs[j] = w
        return pre + [helper.make_node("DequantizeLinear", new_inputs, list(node.output), name=name, **attrs)]
    # QuantizeLinear: the output type is the zero point's, or output_dtype
    kind = ins[2] if len(ins) > 2 and ins[2] is not None else attrs.get("output_dtype")
    if kind not in INTS:
        raise _refuse(node, i, "mixes narrow and wide types")
    lo, hi = INTS[kind]
    wide = TensorProto.INT8 if lo < 0 else TensorProto.UINT8
    new_inputs, pre = list(node.input), []
    if len(node.input) > 2 and node.input[2]:
        w = f"{node.input[2]}__deploy_wide"
        pre.append(helper.make_node("CastFromBits", [node.input[2]], [w], name=f"{name}/zp", domain=DOMAIN,
                                    **{"from": kind, "to": wide}))
        new_inputs[2] = w
    keep = {k: v for k, v in attrs.items() if k != "output_dtype"}
    if len(new_inputs) < 3 or not new_inputs[2]:
        keep["output_dtype"] = wide
    out = node.output[0]
    q, lo_t, hi_t, clipped = (f"{out}__deploy_q", f"{out}__deploy_lo", f"{out}__deploy_hi", f"{out}__deploy_clip")
    np_wide = np.int8 if lo < 0 else np.uint8
    return pre + [
        helper.make_node("QuantizeLinear", new_inputs, [q], name=name, **keep),
        helper.make_node("Constant", [], [lo_t], name=f"{name}/lo", value=numpy_helper.from_array(np_wide(lo))),
        helper.make_node("Constant", [], [hi_t], name=f"{name}/hi", value=numpy_helper.from_array(np_wide(hi))),
        helper.make_node("Clip", [q, lo_t, hi_t], [clipped], name=f"{name}/clip"),
        helper.make_node("CastToBits", [clipped], [out], name=f"{name}/bits", domain=DOMAIN, to=kind, saturate=1),
    ]


def io_specs(original: onnx.ModelProto, cleaned_specs: list[dict], outputs: bool = False) -> list[dict]:
    """The artifact's input (or output) specs: a tensor the model declares narrow keeps that type
    as ``dtype``, with ``storage`` the uint8 the library takes."""
    g = original.graph
    declared = {vi.name: vi.type.tensor_type.elem_type for vi in (g.output if outputs else g.input)}
    out = []
    for s in cleaned_specs:
        t = declared.get(s["name"])
        if t in NARROW | UNSUPPORTED and s["dtype"] == "uint8":
            s = dict(s, dtype=dtype_name(t), storage="uint8")
        out.append(s)
    return out
