"""Stage 3, import: ONNX graph -> Relax IRModule with every input shape bound."""

from __future__ import annotations

import onnx

from . import log
from .errors import DeployError
from .modelinfo import graph_inputs, opset_of

# Ops TVM lists in its converter map but imports wrongly or not at all (shared/TVM_NOTES.md and
# the onnx backend conformance suite): opset-23 Attention has a different meaning than the
# contrib op TVM's converter implements.
_BROKEN = {("Attention", 23)}


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Every op TVM's ONNX importer cannot convert, mapped to the names of its nodes."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    convert_map = _get_convert_map()
    opset = opset_of(model)
    found: dict[str, list[str]] = {}

    def walk(graph):
        for i, node in enumerate(graph.node):
            label = node.name or f"{node.op_type}_{i}"
            op = node.op_type
            key = op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}"
            ok = node.domain in ("", "ai.onnx") and op in convert_map
            if ok:
                try:
                    convert_map[op].get_converter(opset)
                except (NotImplementedError, IndexError):
                    ok = False
                if any(op == b and opset >= v for b, v in _BROKEN):
                    ok = False
            if not ok:
                found.setdefault(key, []).append(label)
            for a in node.attribute:
                if a.g.node:
                    walk(a.g)

    walk(model.graph)
    return found


def check_supported(model: onnx.ModelProto) -> None:
    missing = unsupported_ops(model)
    if missing:
        lines = [f"{op} ({len(nodes)}x: {', '.join(nodes[:5])}{', ...' if len(nodes) > 5 else ''})"
                 for op, nodes in sorted(missing.items())]
        raise DeployError(
            f"{len(missing)} op type(s) in this model cannot be imported by TVM:\n    " + "\n    ".join(lines),
            hint="replace or remove these ops before export (e.g. export RNNs unrolled, "
                 "or keep them out of the deployed subgraph)",
        )


def import_model(model: onnx.ModelProto):
    """Convert a cleaned-up ONNX model (all input shapes static) to a Relax IRModule."""
    from tvm.relax.frontend.onnx import from_onnx

    check_supported(model)
    shape_dict = {}
    for spec in graph_inputs(model):
        if any(not isinstance(d, int) for d in spec.shape):
            raise DeployError(f"input '{spec.name}' still has a dynamic shape {spec.shape}",
                              hint=f"pass --input-shape {spec.name}=DIMxDIM...")
        shape_dict[spec.name] = spec.shape
    try:
        with log.tvm_quiet():
            mod = from_onnx(model, shape_dict=shape_dict, opset=opset_of(model), keep_params_in_input=False)
    except DeployError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise DeployError(
            f"TVM's ONNX importer failed: {type(e).__name__}: {msg[-1] if msg else ''}"[:600],
            hint="run with -v for the full trace; try simplifying the model (onnxslim) or another opset",
        ) from e
    return mod
