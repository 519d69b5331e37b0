"""The `deploy inspect` report of a model, and the FLOP count benchmarks divide by.

The report: opset, inputs/outputs, op histogram, parameters, compute, and every op the importer
cannot take."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from .importer import unsupported_ops
from .specs import TensorSpec, graph_inputs, opset_of, value_spec


@dataclass
class ModelInfo:
    opset: int
    producer: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    op_counts: dict[str, int]
    param_count: int
    param_bytes: int
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    gflop: float | None = None  # conv/matmul work per run; None while input shapes are dynamic
    dims: dict[str, list[str]] = field(default_factory=dict)  # dynamic dim -> the inputs' axes that have it
    format: str = "onnx"  # or "tflite (schema 3)": frontend/tflite.py describes those


def describe(path) -> ModelInfo:
    """`deploy inspect`'s report of the model file at ``path``, ONNX or TFLite."""
    from . import tflite
    from .load import load_model

    if tflite.is_tflite(path):
        fields = tflite.model_info(tflite.load_tflite(path))
        named = [TensorSpec(s.name, s.dtype, [f"{s.name} axis {k}" if d is None else d for k, d in enumerate(s.shape)])
                 for s in fields["inputs"]]  # a dynamic axis of a .tflite has no name: named after its place
        return ModelInfo(**fields, dims=dynamic_dims(named))
    return model_info(load_model(path).model)


def flops(model: onnx.ModelProto) -> int:
    """Multiply-adds x 2 of Conv, MatMul and Gemm nodes in a model with static shapes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for n in inferred.graph.node:
        out = shapes.get(n.output[0]) if n.output else None
        if out is None:
            continue
        if n.op_type == "Conv" and n.input[1] in shapes:
            w = shapes[n.input[1]]  # [Cout, Cin/groups, kh, kw]
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm") and n.input[0] in shapes:
            a = shapes[n.input[0]]
            k = a[0] if (n.op_type == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute)) else a[-1]
            total += 2 * int(np.prod(out)) * int(k)
    return total


def model_info(model: onnx.ModelProto) -> ModelInfo:
    ops = Counter()

    def walk(graph):
        for n in graph.node:
            ops[n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"] += 1
            for a in n.attribute:
                if a.g.node:
                    walk(a.g)

    walk(model.graph)
    count = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    size = sum(int(np.prod(i.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(i.data_type)).itemsize
               for i in model.graph.initializer)
    return ModelInfo(
        opset=opset_of(model),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        inputs=graph_inputs(model),
        outputs=[value_spec(v) for v in model.graph.output],
        op_counts=dict(ops.most_common()),
        param_count=count,
        param_bytes=size,
        unsupported=unsupported_ops(model),
        gflop=_gflop(model),
        dims=dynamic_dims(graph_inputs(model)),
    )


def dynamic_dims(inputs: list[TensorSpec]) -> dict[str, list[str]]:
    """Each named dynamic dim and where it is: {"seq": ["input_ids axis 1", "attention_mask axis 1"]}.
    Inputs that share a name share the size (ONNX's dim_param)."""
    out: dict[str, list[str]] = {}
    for s in inputs:
        for i, d in enumerate(s.shape):
            if isinstance(d, str):
                out.setdefault(d, []).append(f"{s.name} axis {i}")
    return out


def _gflop(model: onnx.ModelProto) -> float | None:
    if any(not isinstance(d, int) for s in graph_inputs(model) for d in s.shape):
        return None
    try:
        return float(f"{flops(model) / 1e9:.6g}")
    except Exception:  # shape inference can fail on exotic graphs: the count is informative only
        return None
