"""int8 at the ONNX level: the QDQ model that calibrated ranges describe.

After clean-up and before import, every Conv and MatMul with a constant weight (Gemm is first
rewritten to MatMul + Add) gets QuantizeLinear -> DequantizeLinear on its activation input
(symmetric int8, scale from the calibrated range) and an int8 weight initializer with
per-channel (or per-tensor) scales behind a DequantizeLinear. This is the form ONNX Runtime's
quantize_static writes, so pre-quantized QDQ models take the same road from here. Dynamic int8
(no calibration) puts DynamicQuantizeLinear on each MatMul's activation instead, the run-time
scale ONNX Runtime's quantize_dynamic computes. Working in
ONNX keeps the calibration keyed by ONNX tensor names, which Relax vars lose.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import DeployError


@dataclass
class QDQModel:
    model: onnx.ModelProto
    layers: list[str]             # ONNX node names quantized
    serves: dict[str, list[str]]  # QuantizeLinear/DequantizeLinear node written -> the layers it serves
    weight_bytes: dict[str, int]  # {"float32": bytes before, "int8": bytes after}


def _inits(model) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Gemm(A, B const, C) with alpha = beta = 1, transA = 0 -> MatMul(A, B') + C."""
    model = copy.deepcopy(model)
    inits = _inits(model)
    nodes = []
    for n in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (n.op_type == "Gemm" and len(n.input) >= 2 and n.input[1] in inits and not attrs.get("transA", 0)
                and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0):
            w = numpy_helper.to_array(inits[n.input[1]])
            if attrs.get("transB", 0):
                w = w.T
            wname = n.input[1] + "_kn"
            model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
            name = n.name or n.output[0]
            if len(n.input) > 2 and n.input[2]:
                mm_out = n.output[0] + "_mm"
                nodes.append(helper.make_node("MatMul", [n.input[0], wname], [mm_out], name=name))
                nodes.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=name + "_bias"))
            else:
                nodes.append(helper.make_node("MatMul", [n.input[0], wname], [n.output[0]], name=name))
        else:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return _drop_unused_inits(model)


def _drop_unused_inits(model):
    used = {i for n in model.graph.node for i in n.input}
    used |= {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return model


def quantizable(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv (1-D and 2-D) and MatMul nodes whose weight is a constant and whose activation is not."""
    inits = _inits(model)
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) >= 2 and n.input[1] in inits and n.input[0] not in inits:
            if len(inits[n.input[1]].dims) in (3, 4):
                out.append(n)
        elif n.op_type == "MatMul" and n.input[1] in inits and n.input[0] not in inits:
            if len(inits[n.input[1]].dims) == 2:
                out.append(n)
    return out


def node_name(n: onnx.NodeProto) -> str:
    return n.name or n.output[0]


def check_exclude(model: onnx.ModelProto, exclude: list[str]) -> None:
    names = {node_name(n) for n in model.graph.node}
    unknown = [e for e in exclude if e not in names]
    if unknown:
        q = [node_name(n) for n in quantizable(model)]
        raise DeployError(f"--exclude names unknown node(s) {unknown}",
                          hint="quantizable nodes: " + ", ".join(q[:30]) + (" ..." if len(q) > 30 else ""))


def activation_tensors(model: onnx.ModelProto, skip: set[str] = frozenset()) -> list[str]:
    seen: list[str] = []
    for n in quantizable(model):
        if node_name(n) not in skip and n.input[0] not in seen:
            seen.append(n.input[0])
    return seen


def _weight_q(w: np.ndarray, axis: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if per_channel:
        other = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=other)
    else:
        amax = np.array(np.abs(w).max())
    scale = (np.maximum(amax, 1e-12) / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    if per_channel:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]] | None, per_channel: bool = True,
               skip: set[str] = frozenset()) -> QDQModel:
    """A QDQ copy of the model, the names of the nodes quantized and the weight bytes before/after.

    With ``ranges`` (static, calibrated): QuantizeLinear -> DequantizeLinear with a constant scale
    on each activation, for Conv and MatMul. With ``ranges=None`` (dynamic, like ONNX Runtime's
    quantize_dynamic): DynamicQuantizeLinear -> DequantizeLinear, the scale and zero point of
    uint8 activations computed at run time per tensor; MatMuls only (the layers of transformers).
    """
    model = copy.deepcopy(model)
    inits = _inits(model)
    dynamic = ranges is None
    targets = {node_name(n) for n in quantizable(model)
               if node_name(n) not in skip and not (dynamic and n.op_type != "MatMul")}
    new_nodes, new_inits, done = [], [], []
    act_dq: dict[str, str] = {}
    serves: dict[str, list[str]] = {}
    sizes = {"float32": 0, "int8": 0}
    for n in model.graph.node:
        if node_name(n) not in targets:
            new_nodes.append(n)
            continue
        a = n.input[0]
        if a not in act_dq:
            q = [a + "_q", a + "_qscale", a + "_qzero"]
            if dynamic:
                new_nodes.append(helper.make_node("DynamicQuantizeLinear", [a], q, name=a + "_quantize"))
            else:
                lo, hi = ranges[a]
                s = max(abs(lo), abs(hi), 1e-8) / 127.0
                new_inits += [numpy_helper.from_array(np.array(s, np.float32), q[1]),
                              numpy_helper.from_array(np.array(0, np.int8), q[2])]
                new_nodes.append(helper.make_node("QuantizeLinear", [a, q[1], q[2]], [q[0]], name=a + "_quantize"))
            new_nodes.append(helper.make_node("DequantizeLinear", q, [a + "_dq"], name=a + "_dequantize"))
            act_dq[a] = a + "_dq"
        for qn in (a + "_quantize", a + "_dequantize"):
            serves.setdefault(qn, []).append(node_name(n))
        wname = n.input[1]
        w = numpy_helper.to_array(inits[wname]).astype(np.float32)
        axis = 0 if n.op_type == "Conv" else 1
        q, scale = _weight_q(w, axis, per_channel)
        sizes["float32"] += w.nbytes
        sizes["int8"] += q.nbytes + scale.nbytes
        base = node_name(n) + "_w"
        new_inits += [numpy_helper.from_array(q, base + "_int8"), numpy_helper.from_array(scale, base + "_scale"),
                      numpy_helper.from_array(np.zeros(scale.shape, np.int8), base + "_zero")]
        attrs = {"axis": axis} if per_channel else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_int8", base + "_scale", base + "_zero"],
                                          [base + "_dq"], name=base + "_dequantize", **attrs))
        serves[base + "_dequantize"] = [node_name(n)]
        n.input[0] = act_dq[a]
        n.input[1] = base + "_dq"
        new_nodes.append(n)
        done.append(node_name(n))
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    if per_channel:
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx") and o.version < 13:
                o.version = 13
    model = _drop_unused_inits(model)
    return QDQModel(model, done, serves, sizes)


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
