"""Tensor specs of a model's inputs and outputs (symbolic dims named), and its opset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list  # ints, or strings for symbolic dims, or None for unknown

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}

    @property
    def symbolic(self) -> list[tuple[int, str]]:
        return [(i, d if isinstance(d, str) else "?") for i, d in enumerate(self.shape) if not isinstance(d, int)]


def dtype_name(elem_type: int) -> str:
    """numpy's name of an ONNX element type (ml_dtypes' for bfloat16, float8, int4, ...)."""
    return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))) if elem_type else "unknown"


def tensor_type(vi: onnx.ValueInfoProto):
    """The tensor type of a value: its own, or the one inside an optional (optional(tensor))."""
    if vi.type.HasField("optional_type") and vi.type.optional_type.elem_type.HasField("tensor_type"):
        return vi.type.optional_type.elem_type.tensor_type
    return vi.type.tensor_type


def value_spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    t = tensor_type(vi)
    shape: list = []
    if t.HasField("shape"):
        for d in t.shape.dim:
            if d.HasField("dim_value"):  # 0 is a size (an empty tensor), not an unknown dim
                shape.append(int(d.dim_value))
            else:
                shape.append(d.dim_param or None)
    return TensorSpec(vi.name, dtype_name(t.elem_type), shape)


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    inits = {i.name for i in model.graph.initializer}
    return [value_spec(v) for v in model.graph.input if v.name not in inits]


def opset_of(model: onnx.ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def graph_constants(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values of a graph, by name (attribute-like inputs, trip counts)."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = numpy_helper.to_array(a.t)
    return out


def elem_types(graph) -> dict[str, int]:
    """Value name -> ONNX element type, from the graph's typed values and its initializers."""
    types = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    return types
