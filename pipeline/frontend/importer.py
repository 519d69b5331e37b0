"""Import: ONNX graph -> Relax IRModule with every input shape bound.

A pre-check lists every op that cannot be imported (and training-mode ops) at once; then TVM's
ONNX frontend converts the model, with deploy's own converters (``converters/``) installed
beside TVM's for the ops it converts badly or not at all.
"""

from __future__ import annotations

import contextlib
import io
import sys

import onnx

from .. import errors, log
from . import converters, functions, half, narrow, provenance, qoperator, training, unroll
from ..errors import DeployError
from .specs import graph_constants, graph_inputs, opset_of

# Ops TVM lists in its converter map but imports wrongly or not at all (shared/TVM_NOTES.md and
# the onnx backend conformance suite). (Opset-23 Attention, which TVM's map has as the contrib op
# of another meaning, is deploy's own converter now: converters/attention.py.)
_BROKEN: set[tuple[str, int]] = set()
# Ops TVM's importer converts itself, outside its converter map (its graph walk handles If)
_CONVERTED_BY_IMPORTER = {"If"}


def _convert_map():
    from tvm.relax.frontend.onnx import onnx_frontend

    with converters.installed():
        return onnx_frontend._get_convert_map()


def converter_exists(node, opset: int, convert_map) -> bool:
    """Whether TVM's importer (with deploy's converters) converts this node's op at this opset."""
    op = node.op_type
    if (node.domain, op) in qoperator.CONTRIB_OPS:  # rewritten to standard ops before import
        return True
    if node.domain in converters.CONTRIB:
        if op not in converters.CONTRIB[node.domain]:
            return False
    elif node.domain not in ("", "ai.onnx", narrow.DOMAIN):
        return False
    elif op in qoperator.OPS or op in _CONVERTED_BY_IMPORTER:  # rewritten to QDQ before import / by the graph walk
        return True
    if op not in convert_map:
        return False
    try:
        convert_map[op].get_converter(opset)
    except (NotImplementedError, IndexError):
        return False
    return not any(op == b and opset >= v for b, v in _BROKEN)


def expand_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Ops TVM cannot convert that ONNX defines as functions, replaced by their bodies (functions.py)."""
    convert_map, opset = _convert_map(), opset_of(model)
    model, expanded = functions.expand(model, lambda n: converter_exists(n, opset, convert_map))
    if expanded:
        log.info(f"  expanded into their ONNX function bodies: {', '.join(expanded)}")
    return model


def unsupported_ops(model: onnx.ModelProto, cleaned: bool = False) -> dict[str, list[str]]:
    """Every op TVM's ONNX importer cannot convert (with deploy's converters), mapped to the names
    of its nodes. An op ONNX defines as a function counts as convertible (clean-up expands it), and
    so do Loop and Scan before clean-up (which unrolls those of a known length)."""
    convert_map = _convert_map()
    opset = opset_of(model)
    found: dict[str, list[str]] = {}
    consts = graph_constants(model.graph)
    runtime = {i.name for i in graph_inputs(model)}

    def walk(graph, top: bool):
        for i, node in enumerate(graph.node):
            label = provenance.node_name(node, i)
            op = node.op_type
            key = op if node.domain in ("", "ai.onnx") else f"{node.domain}.{op}"
            if training.refused(node, consts, runtime if top else set()):
                found.setdefault(f"{op} in training mode (deploy compiles inference only)", []).append(label)
                continue
            wrong = _known_wrong(node)
            if wrong:
                found.setdefault(f"{op} {wrong}", []).append(label)
                continue
            if op in ("Loop", "Scan") and node.domain in ("", "ai.onnx"):
                if cleaned:
                    what = ("a Scan of opset 9+ whose length is" if op == "Scan"
                            else "a for-loop whose trip count is")
                    found.setdefault(f"{op} that deploy could not unroll (it unrolls {what} a constant up to "
                                     f"{unroll.MAX_STEPS})", []).append(label)
            elif not converter_exists(node, opset, convert_map) and not functions.defined_as_function(node, opset):
                found.setdefault(key, []).append(label)
            for a in node.attribute:
                if a.g.node:
                    walk(a.g, False)

    walk(model.graph, True)
    return found


def _known_wrong(node) -> str | None:
    """Why TVM would compute this node wrongly (a form of an op it converts, but not to ONNX's
    numbers), or None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "RoiAlign" and attrs.get("mode", b"avg") in (b"max", "max"):
        return "with mode=max (TVM pools the interpolated values; ONNX takes the max of the weighted corners)"
    if node.op_type == "Resize" and attrs.get("antialias", 0):
        return "with antialias=1 (TVM's resize does not antialias a downscale)"
    return None


def check_supported(model: onnx.ModelProto, cleaned: bool = False) -> None:
    missing = unsupported_ops(model, cleaned)
    if missing:
        raise errors.unsupported_ops(
            missing, "this model",
            hint="replace or remove these ops before export (export in eval mode: model.eval(); export loops "
                 "unrolled, or keep them out of the deployed subgraph)",
        )


def import_model(model: onnx.ModelProto, dims: dict | None = None, kernels=None, half_in_float32: bool = False):
    """Convert a cleaned-up ONNX model to a Relax IRModule. Input shapes are static except the
    dims named in ``dims`` (frontend.dims), which become symbolic sizes with their range.
    ``kernels``: the target family's fused kernels (``Backend.frontend_kernels``), or None.
    ``half_in_float32``: a float16/bfloat16 graph computes in float32 (``half.compute_in_float``;
    ``Backend.half_in_float32``)."""
    from tvm.relax.frontend.onnx import from_onnx, onnx_frontend

    dims = dims or {}
    check_supported(model, cleaned=True)
    imported = half.compute_in_float(model) if half_in_float32 else model
    shape_dict = {}
    for spec in graph_inputs(model):
        if any(not isinstance(d, int) and d not in dims for d in spec.shape):
            raise DeployError(f"input '{spec.name}' still has a dynamic shape {spec.shape}",
                              hint=f"pass --input-shape {spec.name}=DIMxDIM..., or a range for the dim (--dim)")
        if all(isinstance(d, int) for d in spec.shape):
            shape_dict[spec.name] = spec.shape
    printed = io.StringIO()  # TVM's importer prints "Error converting operator ..." before it raises
    try:
        with log.tvm_quiet(), contextlib.redirect_stdout(printed if not log.verbose() else sys.stdout), \
                converters.installed(kernels), provenance.tagging(onnx_frontend.ONNXGraphImporter) as order:
            mod = from_onnx(imported, shape_dict=shape_dict, opset=opset_of(model), keep_params_in_input=False)
    except DeployError as e:
        raise _quietly_dropped(e)
    except Exception as e:
        msg = str(e).strip().splitlines()
        where = (f" at node '{provenance.Current.name}' ({provenance.Current.op})"
                 if provenance.Current.name else "")
        raise DeployError(
            f"TVM's ONNX importer failed{where}: {type(e).__name__}: {msg[-1] if msg else ''}"[:600],
            hint="run with -v for the full trace; try simplifying the model (onnxslim) or another opset",
        ) from (e if log.verbose() else _quietly_dropped(e))
    mod = provenance.restore(mod, {}, order)
    mod = training.add_checks(mod, model)
    mod = half.accumulate_in_float(mod)
    if dims:
        mod = _with_bounds(mod, dims)
    return mod


def _quietly_dropped(e: BaseException) -> BaseException:
    """``e`` without the importer's frames: freeing them destroys its half-built BlockBuilder,
    which TVM reports with a warning ("destroyed with remaining blocks") unless it is quiet."""
    if log.verbose():
        return e
    import gc

    with log.tvm_quiet():
        e.__traceback__ = None
        e.__context__ = None
        gc.collect()
    return e


def _with_bounds(mod, dims: dict):
    """Tell TVM each symbolic dim's largest size: its memory planner then allocates every
    intermediate once, for the largest shape, instead of at every run."""
    main = mod["main"].with_attr("tir_var_upper_bound", {n: d.max for n, d in dims.items()})
    mod = mod.clone()
    mod["main"] = main
    return mod
