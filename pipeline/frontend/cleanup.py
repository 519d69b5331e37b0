"""Clean-up: bind input shapes, then fold shape subgraphs and constants.

Models exported from PyTorch compute shapes at run time (Shape -> Gather -> Concat -> Reshape);
TVM's importer rejects many of them. Once every input dim is known, onnxslim (a maintained
ONNX optimizer) folds those subgraphs to constants and onnx's shape inference fills in types.
Ops TVM cannot convert that ONNX defines as functions are replaced by their bodies first
(``functions.py``); If branches move into the graph (``branches.py``); Loop and Scan of a known
length are unrolled (``unroll.py``); last, tensors of narrow types (float8, int4, ...) become
their bits (``narrow.py``).
"""

from __future__ import annotations

import copy

import onnx

from .. import log
from ..errors import DeployError
from . import branches, narrow, unroll
from .dims import NAME as DIM_NAME, Dim
from .specs import graph_inputs, opset_of, tensor_type


def parse_shape(text: str) -> tuple[str, list]:
    """'name=1x3x224x224' -> ('name', [1, 3, 224, 224]); a dim may be a name given a range with
    --dim: 'input_ids=BxS' -> ('input_ids', ['B', 'S'])."""
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape: list = []
        for d in dims.split(",") if "," in dims else dims.split("x"):  # names with an x: B,text_len
            d = d.strip()
            if d == "":
                continue
            if DIM_NAME.match(d):
                shape.append(d)
            elif int(d) <= 0:
                raise ValueError
            else:
                shape.append(int(d))
        if not shape:
            raise ValueError
    except ValueError:
        raise DeployError(f"bad --input-shape '{text}'",
                          hint="write it as NAME=1x3x224x224 (positive ints), or name a dynamic dim: "
                               "NAME=Bx3x224x224 --dim B=1..32")
    return name, shape


def bind_input_shapes(model: onnx.ModelProto, shapes: dict[str, list],
                      dims: dict[str, Dim] | None = None) -> onnx.ModelProto:
    """Write the given shapes into the graph inputs; error on unknown names or unbound dims.

    A dim named in ``dims`` stays symbolic (under that name): it is given in ``shapes`` by name
    (``input_ids=BxS``) or is the model's own dim_param of that name, or the name deploy gives an
    unnamed one (``x_dim0``: specs.graph_inputs). Every other dynamic dim needs a size.
    """
    dims = dims or {}
    specs = {s.name: s for s in graph_inputs(model)}
    unknown = sorted(set(shapes) - set(specs))
    if unknown:
        raise DeployError(f"--input-shape names unknown input(s) {unknown}",
                          hint=f"the model's inputs are: {', '.join(specs)}")
    problems, used = [], set()
    final: dict[str, list] = {}
    for name, spec in specs.items():
        given = shapes.get(name)
        if given is not None and len(given) != len(spec.shape):
            problems.append(f"input '{name}' has rank {len(spec.shape)} {spec.shape}, --input-shape gives {given}")
            continue
        shape = list(given if given is not None else spec.shape)
        for i, (d, g) in enumerate(zip(spec.shape, shape)):
            if isinstance(d, int) and d != g:
                problems.append(f"input '{name}' axis {i} is fixed to {d} in the model, --input-shape gives {g}")
            elif isinstance(g, str) and g not in dims:
                if given is not None:
                    problems.append(f"input '{name}' axis {i}: dim '{g}' has no range; add --dim {g}=MIN..MAX")
                else:
                    example = "x".join(str(x) if isinstance(x, int) else "1" for x in spec.shape)
                    problems.append(f"input '{name}' {spec.shape}: dynamic '{g}' (axis {i}) has no value; "
                                    f"pass e.g. --input-shape {name}={example}, or a range: --dim {g}=1..64")
            elif isinstance(g, str):
                used.add(g)
        final[name] = shape
    for d in sorted(set(dims) - used):
        if not problems:
            problems.append(f"--dim {d} is not a dim of any input (inputs: "
                            + "; ".join(f"{n} {s.shape}" for n, s in specs.items()) + ")")
    if problems:
        raise DeployError("cannot bind the input shapes:\n    " + "\n    ".join(problems),
                          hint="every dynamic dimension needs a size (--input-shape NAME=1x3x224x224) or a range "
                               "(--input-shape NAME=Bx3x224x224 --dim B=1..32)")
    model = copy.deepcopy(model)
    _negative_dims_unknown(model.graph)
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits or vi.name not in final:
            continue
        for d, g in zip(tensor_type(vi).shape.dim, final[vi.name]):
            d.Clear()
            if isinstance(g, str):
                d.dim_param = g
            else:
                d.dim_value = g
    return model


def _negative_dims_unknown(graph) -> None:
    """A ``dim_value`` below 0 (older exporters' -1 for a dynamic axis) as an unknown dim, in every
    value's type, subgraphs included: onnx's shape inference keeps a declared -1 over the size it
    infers (and fails on it in strict mode), and the -1 would then read as a size downstream."""
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        t = tensor_type(vi)
        for d in t.shape.dim if t.HasField("shape") else ():
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()
    for n in graph.node:
        for a in n.attribute:
            for g in [a.g] if a.HasField("g") else list(a.graphs):
                _negative_dims_unknown(g)


def cleanup(model: onnx.ModelProto, shapes: dict[str, list], dims: dict[str, Dim] | None = None) -> onnx.ModelProto:
    from .importer import expand_functions

    model = bind_input_shapes(model, shapes, dims)
    model, hoisted = branches.hoist(model)
    if hoisted:
        log.info(f"  moved the branches of {hoisted} If node(s) into the graph")
    model = _slim(expand_functions(model))
    model = explicit_conv_pads(_infer(model))
    model, unrolled = unroll.unroll(model, opset_of(model))
    if unrolled:
        log.info(f"  unrolled {unrolled} Loop/Scan node(s)")
        model = _infer(_slim(branches.hoist(model)[0]))  # the Ifs the bodies held
    model = branches.select(model)
    return narrow.lower(model)


def explicit_conv_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """Conv's ``auto_pad`` (SAME_UPPER, SAME_LOWER, VALID; TensorFlow and HF EfficientNet exports)
    as the explicit ``pads`` it stands for, where the input's spatial size is known.

    TVM's importer pads such an input with a separate op before the conv, which left 76 of
    EfficientNet-B0's 81 convs out of int8 (the rewrite looks for the dequantize right at the conv)
    and costs a padded copy in float. Explicit pads go into the conv itself."""
    from onnx import helper

    known: dict[str, list] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            known[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    known.update({i.name: list(i.dims) for i in model.graph.initializer})
    for n in model.graph.node:
        if n.op_type != "Conv" or n.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        mode = attrs.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        x, w = known.get(n.input[0]), known.get(n.input[1])
        if mode not in ("SAME_UPPER", "SAME_LOWER", "VALID") or not x or not w or len(x) != len(w) or len(x) < 3:
            continue
        size, kernel = x[2:], list(attrs.get("kernel_shape", w[2:]))
        if any(v is None or v <= 0 for v in [*size, *kernel]):
            continue
        strides = list(attrs.get("strides", [1] * len(size)))
        dilations = list(attrs.get("dilations", [1] * len(size)))
        begin, end = [], []
        for i, d in enumerate(size):
            total = 0 if mode == "VALID" else max(
                (-(-d // strides[i]) - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - d, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if mode != "SAME_LOWER" else large)
            end.append(large if mode != "SAME_LOWER" else small)
        keep = [a for a in n.attribute if a.name not in ("auto_pad", "pads")]
        del n.attribute[:]
        n.attribute.extend(keep + [helper.make_attribute("pads", begin + end)])
    return model


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:
        log.debug(f"onnx shape inference failed: {e}")
        return model


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnxslim

        with log.tvm_quiet():
            slimmed = onnxslim.slim(model)
        return slimmed if slimmed is not None else model
    except Exception as e:  # a failed simplification is not fatal: import may still work
        log.warn(f"onnxslim could not simplify the model ({type(e).__name__}: {str(e)[:120]}); importing as is")
        return model
