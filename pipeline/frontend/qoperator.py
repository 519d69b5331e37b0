"""QOperator -> QDQ: ONNX's integer operators in the form the int8 rewrite reads.

Pre-quantized models come in two forms. ONNX Runtime's default, QDQ, marks float ops with
QuantizeLinear/DequantizeLinear pairs; quantize.int8_rewrite turns those into int8 compute.
The other form, QOperator, uses integer ops: QLinearConv and QLinearMatMul (quantize_static
with QuantFormat.QOperator), ConvInteger and MatMulInteger (quantize_dynamic). TVM's importer
has no QLinearConv, QLinearMatMul or ConvInteger, and computes MatMulInteger in int32.

Each such node is rewritten here, before import, to the QDQ form it stands for:

    QLinearConv(x, sx, zx, w, sw, zw, sy, zy, B) -> Q(Conv(DQ(x, sx, zx), DQ(w, sw, zw), B*sx*sw), sy, zy)
    QLinearMatMul(a, sa, za, b, sb, zb, sy, zy)  -> Q(MatMul(DQ(a, sa, za), DQ(b, sb, zb)), sy, zy)
    ConvInteger(x, w, zx, zw)                    -> Cast<int32>(Conv(DQ(x, 1, zx), DQ(w, 1, zw)))
    MatMulInteger(a, b, za, zb)                  -> Cast<int32>(MatMul(DQ(a, 1, za), DQ(b, 1, zb)))

ONNX Runtime's com.microsoft.DynamicQuantizeMatMul (its graph optimizer fuses quantize_dynamic's
MatMul form into it) is first expanded back into that form (``_expand_contrib``).

so both forms take one road to int8 x int8 kernels with int32 accumulation. For the *Integer ops
the rewrite keeps the int32 result exact (quantize._exact_integer_outputs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import DeployError

OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
# ONNX Runtime's contrib ops rewritten here too (before import)
CONTRIB_OPS = {("com.microsoft", "DynamicQuantizeMatMul")}
INT8_MATMUL = ("int8: DynamicQuantizeLinear + MatMulInteger (A quantized to uint8 at run time, int32 "
               "accumulation, scaled by a_scale * b_scale), as ONNX Runtime computes it")
FLOAT_MATMUL = ("float32: B dequantized at compile time, A quantized to uint8 at run time as ONNX Runtime does "
                "(deploy's int8 kernels take constant int8 weights with zero point 0; this B is {why})")


def _contrib(n: onnx.NodeProto) -> bool:
    return (n.domain, n.op_type) in CONTRIB_OPS


def present(model: onnx.ModelProto) -> list[str]:
    """The QOperator op types (and contrib ops rewritten here) in the model's main graph."""
    return sorted({n.op_type for n in model.graph.node
                   if (n.op_type in OPS and n.domain in ("", "ai.onnx")) or _contrib(n)})


def notes(model: onnx.ModelProto) -> list[dict]:
    """How the contrib ops of the main graph compute once rewritten, for the manifest's ``notes``
    (``reference: int8``: ONNX Runtime quantizes their activations at run time, so the check
    compares with int8's tolerance). int8 where quantize.rewrite takes the weight, else float32."""
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[tuple, dict] = {}
    for n in model.graph.node:
        if not _contrib(n):
            continue
        b = n.input[1] if len(n.input) > 1 else ""
        zp = n.input[3] if len(n.input) > 3 else ""
        if b not in inits:
            computes = FLOAT_MATMUL.format(why="computed at run time")
        elif inits[b].data_type != TensorProto.INT8:
            computes = FLOAT_MATMUL.format(why=str(np.dtype(helper.tensor_dtype_to_np_dtype(inits[b].data_type))))
        elif zp and (zp not in inits or np.any(numpy_helper.to_array(inits[zp]) != 0)):
            computes = FLOAT_MATMUL.format(why="int8 with a zero point other than 0")
        else:
            computes = INT8_MATMUL
        key = (n.domain, n.op_type, computes)
        out.setdefault(key, {"op": f"{n.domain}.{n.op_type}", "nodes": [], "computes": computes, "reference": "int8"})
        out[key]["nodes"].append(n.name or n.output[0])
    return list(out.values())


def _expand_contrib(model: onnx.ModelProto) -> onnx.ModelProto:
    """com.microsoft.DynamicQuantizeMatMul(A, B, b_scale, b_zero_point, bias) -> the form ONNX
    Runtime's quantize_dynamic writes for a MatMul: DynamicQuantizeLinear(A) -> MatMulInteger ->
    Cast -> Mul(a_scale * b_scale) [-> Add(bias)], whose MatMulInteger to_qdq then rewrites."""
    if not any(_contrib(n) for n in model.graph.node):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    nodes = []
    for n in g.node:
        if not _contrib(n):
            nodes.append(n)
            continue
        label = n.name or n.output[0]
        args = list(n.input) + [""] * (5 - len(n.input))
        a, b, b_scale, b_zp, bias = args[:5]
        if not a or not b or not b_scale:
            raise DeployError(f"{n.op_type} node '{label}' needs inputs A, B and b_scale")
        p = f"{label}__dqmm"
        aq, a_scale, a_zp = p + "_aq", p + "_ascale", p + "_azp"
        acc, accf, scale = p + "_acc", p + "_accf", p + "_scale"
        y = p + "_y" if bias else n.output[0]
        nodes += [helper.make_node("DynamicQuantizeLinear", [a], [aq, a_scale, a_zp], name=p + "_dql"),
                  helper.make_node("MatMulInteger", [aq, b, a_zp] + ([b_zp] if b_zp else []), [acc], name=label),
                  helper.make_node("Cast", [acc], [accf], name=p + "_cast", to=TensorProto.FLOAT),
                  helper.make_node("Mul", [a_scale, b_scale], [scale], name=p + "_scale"),
                  helper.make_node("Mul", [accf, scale], [y], name=p + "_mul")]
        if bias:
            nodes.append(helper.make_node("Add", [y, bias], [n.output[0]], name=p + "_bias"))
    del g.node[:]
    g.node.extend(nodes)
    return model


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    types = {i.name: i.data_type for i in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


def to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every QOperator node (see the module docstring); other nodes are kept as they are."""
    model = _expand_contrib(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    types = _elem_types(model)
    nodes, new_inits = [], []
    counter = [0]

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}__qdq{counter[0]}"

    def const(name: str, value) -> str:
        n = fresh(name)
        new_inits.append(numpy_helper.from_array(np.asarray(value), n))
        return n

    def arg(n: onnx.NodeProto, i: int) -> str | None:
        return n.input[i] if len(n.input) > i and n.input[i] else None

    def zero_point(n, value: str, zp: str | None) -> str:
        if zp is not None:
            return zp
        dtype = types.get(value)
        if dtype not in (TensorProto.INT8, TensorProto.UINT8):
            raise DeployError(f"{n.op_type} node '{n.name or n.output[0]}': input '{value}' is not int8/uint8",
                              hint="only 8-bit integer inputs are supported")
        return const(value + "_zp", np.zeros((), helper.tensor_dtype_to_np_dtype(dtype)))

    def dq(value: str, scale: str, zp: str, axis: int | None = None) -> str:
        out = fresh(value + "_dq")
        attrs = {"axis": axis} if axis is not None else {}
        nodes.append(helper.make_node("DequantizeLinear", [value, scale, zp], [out], name=out, **attrs))
        return out

    for n in g.node:
        if n.op_type not in OPS or n.domain not in ("", "ai.onnx"):
            nodes.append(n)
            continue
        label = n.name or n.output[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "QLinearMatMul" and types.get(arg(n, 1)) in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            # float16/bfloat16 scales: ONNX rounds the multiplier sa * sb / sy in that type and scales
            # the exact int32 product by it; dequantized float16 values would be off by one
            x, sx, zx, w, sw, zw, sy, zy = (arg(n, i) for i in range(8))
            one = const(label + "_one", np.float32(1.0))
            if sw in inits:
                ones = const(label + "_ones", np.ones(numpy_helper.to_array(inits[sw]).shape, np.float32))
            else:  # ones in the run-time scale's shape
                swf, zero, ones = fresh(label + "_swf"), fresh(label + "_zero"), fresh(label + "_ones")
                nodes += [helper.make_node("Cast", [sw], [swf], name=swf, to=TensorProto.FLOAT),
                          helper.make_node("Mul", [swf, const(label + "_0", np.float32(0))], [zero], name=zero),
                          helper.make_node("Add", [zero, one], [ones], name=ones)]
            acc = fresh(n.output[0] + "_acc")
            nodes.append(helper.make_node("MatMul", [dq(x, one, zero_point(n, x, zx)),
                                                     dq(w, ones, zero_point(n, w, zw), axis=1)], [acc], name=label))
            m16, m32, yf = fresh(label + "_m16"), fresh(label + "_m"), fresh(n.output[0] + "_f")
            prod = fresh(label + "_sab")
            nodes += [helper.make_node("Mul", [sx, sw], [prod], name=prod),
                      helper.make_node("Div", [prod, sy], [m16], name=m16),
                      helper.make_node("Cast", [m16], [m32], name=m32, to=TensorProto.FLOAT),
                      helper.make_node("Mul", [acc, m32], [yf], name=yf),
                      helper.make_node("QuantizeLinear", [yf, one, zy], [n.output[0]], name=label + "_q")]
            continue
        if n.op_type in ("QLinearConv", "QLinearMatMul"):
            x, sx, zx, w, sw, zw, sy, zy = (arg(n, i) for i in range(8))
            xf = dq(x, sx, zx)
            wf = dq(w, sw, zw, axis=0 if n.op_type == "QLinearConv" else 1)
            ins = [xf, wf]
            bias = arg(n, 8)
            if bias is not None:
                if not all(v in inits for v in (bias, sx, sw)):
                    raise DeployError(f"QLinearConv '{label}': bias and scales must be constant initializers",
                                      hint="export the model with constant folding on")
                bscale = (numpy_helper.to_array(inits[sx]).astype(np.float32)
                          * numpy_helper.to_array(inits[sw]).astype(np.float32))
                ins.append(const(bias + "_f", (numpy_helper.to_array(inits[bias]) * bscale).astype(np.float32)))
            yf = fresh(n.output[0] + "_f")
            op = "Conv" if n.op_type == "QLinearConv" else "MatMul"
            nodes.append(helper.make_node(op, ins, [yf], name=label, **(conv_attrs if op == "Conv" else {})))
            nodes.append(helper.make_node("QuantizeLinear", [yf, sy, zy], [n.output[0]], name=label + "_q"))
        else:  # ConvInteger / MatMulInteger
            x, w, zx, zw = (arg(n, i) for i in range(4))
            one = const(label + "_one", np.float32(1.0))
            xf = dq(x, one, zero_point(n, x, zx))
            wz = zero_point(n, w, zw)
            if wz in inits and numpy_helper.to_array(inits[wz]).size > 1:  # per-channel: a scale per channel
                wone = const(label + "_ones", np.ones(numpy_helper.to_array(inits[wz]).shape, np.float32))
            else:
                wone = one
            wf = dq(w, wone, wz, axis=0 if n.op_type == "ConvInteger" else 1)
            yf = fresh(n.output[0] + "_f")
            op = "Conv" if n.op_type == "ConvInteger" else "MatMul"
            nodes.append(helper.make_node(op, [xf, wf], [yf], name=label, **(conv_attrs if op == "Conv" else {})))
            nodes.append(helper.make_node("Cast", [yf], [n.output[0]], name=label + "_i32", to=TensorProto.INT32))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(new_inits)
    return model
