"""Clean-up: bind input shapes, then fold shape subgraphs and constants.

Models exported from PyTorch compute shapes at run time (Shape -> Gather -> Concat -> Reshape);
TVM's importer rejects many of them. Once every input dim is known, onnxslim (a maintained
ONNX optimizer) folds those subgraphs to constants and onnx's shape inference fills in types.
"""

from __future__ import annotations

import copy

import onnx

from .. import log
from ..errors import DeployError
from .specs import graph_inputs


def parse_shape(text: str) -> tuple[str, list[int]]:
    """'name=1x3x224x224' -> ('name', [1, 3, 224, 224])."""
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = [int(d) for d in dims.lower().replace(",", "x").split("x") if d != ""]
        if any(d <= 0 for d in shape):
            raise ValueError
    except ValueError:
        raise DeployError(f"bad --input-shape '{text}'", hint="write it as NAME=1x3x224x224 (positive ints)")
    return name, shape


def bind_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Write the given shapes into the graph inputs; error on unknown names or unbound dims."""
    specs = {s.name: s for s in graph_inputs(model)}
    unknown = sorted(set(shapes) - set(specs))
    if unknown:
        raise DeployError(f"--input-shape names unknown input(s) {unknown}",
                          hint=f"the model's inputs are: {', '.join(specs)}")
    problems = []
    for name, spec in specs.items():
        given = shapes.get(name)
        if given is None:
            dyn = spec.symbolic
            if dyn:
                dims = ", ".join(f"'{d}' (axis {i})" for i, d in dyn)
                example = "x".join(str(d) if isinstance(d, int) else "1" for d in spec.shape)
                problems.append(f"input '{name}' {spec.shape}: dynamic {dims} has no value; "
                                f"pass e.g. --input-shape {name}={example}")
            continue
        if len(given) != len(spec.shape):
            problems.append(f"input '{name}' has rank {len(spec.shape)} {spec.shape}, --input-shape gives {given}")
            continue
        for i, (d, g) in enumerate(zip(spec.shape, given)):
            if isinstance(d, int) and d != g:
                problems.append(f"input '{name}' axis {i} is fixed to {d} in the model, --input-shape gives {g}")
    if problems:
        raise DeployError("cannot bind the input shapes:\n    " + "\n    ".join(problems),
                          hint="every dynamic dimension needs a value: --input-shape NAME=1x3x224x224 (repeatable)")
    model = copy.deepcopy(model)
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits or vi.name not in shapes:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, g in zip(dims, shapes[vi.name]):
            d.Clear()
            d.dim_value = g
    return model


def cleanup(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    model = bind_input_shapes(model, shapes)
    try:
        import onnxslim

        with log.tvm_quiet():
            slimmed = onnxslim.slim(model)
        if slimmed is not None:
            model = slimmed
    except Exception as e:  # a failed simplification is not fatal: import may still work
        log.warn(f"onnxslim could not simplify the model ({type(e).__name__}: {str(e)[:120]}); importing as is")
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:
        log.debug(f"onnx shape inference failed: {e}")
    return model
