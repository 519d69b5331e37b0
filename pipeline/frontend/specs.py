"""Tensor specs of a model's inputs and outputs (symbolic dims named), and its opset."""

from __future__ import annotations

import re
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


def known_dim(d) -> bool:
    """Whether an ONNX TensorShapeProto dim has a size. Older exporters (paddle2onnx, early tf2onnx)
    write a dynamic axis as ``dim_value: -1``, which ONNX Runtime reads as dynamic; 0 is a size
    (an empty tensor: ONNX Runtime refuses any other size for it), not an unknown dim."""
    return d.HasField("dim_value") and d.dim_value >= 0


def value_spec(vi: onnx.ValueInfoProto, unnamed: dict[int, str] | None = None) -> TensorSpec:
    """``unnamed``: the names to give this value's dynamic axes that have none (axis -> name)."""
    t = tensor_type(vi)
    shape: list = []
    if t.HasField("shape"):
        for i, d in enumerate(t.shape.dim):
            if known_dim(d):
                shape.append(int(d.dim_value))
            else:
                shape.append(d.dim_param or (unnamed or {}).get(i))
    return TensorSpec(vi.name, dtype_name(t.elem_type), shape)


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The model's run-time inputs. A dynamic axis without a name (none given, or a dim_value of
    -1) is named after its input and axis (``x_dim0``), so that ``--dim`` can give it a range and
    messages can point at it."""
    inits = {i.name for i in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in inits]
    taken = {d.dim_param for v in values if tensor_type(v).HasField("shape")
             for d in tensor_type(v).shape.dim if d.dim_param}
    specs = []
    for v in values:
        unnamed = {}
        t = tensor_type(v)
        for i, d in enumerate(t.shape.dim if t.HasField("shape") else ()):
            if not known_dim(d) and not d.dim_param:
                name = unnamed_dim_name(v.name, i)
                while name in taken:
                    name += "_"
                taken.add(name)
                unnamed[i] = name
        specs.append(value_spec(v, unnamed))
    return specs


def unnamed_dim_name(input_name: str, axis: int) -> str:
    """The name deploy gives an unnamed dynamic axis: ``x_dim0`` (a valid --dim name)."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", input_name)
    if not base or base[0].isdigit():
        base = "_" + base
    return f"{base}_dim{axis}"


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
