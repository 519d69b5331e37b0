"""float16 and bfloat16 models: how much of them computes in float32.

TVM computes a float16 matmul, convolution, softmax or sum in float16 throughout, summing in
float16, and expands sigmoid, tanh, erf, ... into several float16 steps, each rounded; ONNX
Runtime's CPU provider computes float16 graphs in float32 (its half kernels are few, and it
casts around the rest), and the float16 answers drift apart by several units in the last place
(the conformance suite's float16 attention and causal convolution). Two levels, by target family:

- ``compute_in_float`` (CPU families, ``Backend.half_in_float32``): the ONNX graph computes in
  float32 from end to end before import. Half inputs are cast up where the graph starts, half
  outputs rounded once where it ends, half initializers and constants widened (exactly). A Cast
  or CastLike from another type to a half type stays a rounding, as written; one from a half
  type to it is then nothing. x86 has no half arithmetic (LLVM converts around every op), so this
  is also the faster form there. A graph with subgraphs (If, Loop bodies), local functions or
  sparse initializers keeps its types and gets the second level only.
- ``accumulate_in_float`` (every family, right after import): every matmul, convolution,
  reduction and transcendental op on half tensors computes in float32 and casts its result back;
  the model's types stay as exported. On a GPU the rest stays half: that is its speed.

(``--precision fp16`` converts a float32 model and sets float32 accumulation itself; a float32
model has nothing for either to do.)
"""

from __future__ import annotations

HALF = ("float16", "bfloat16")
_ACCUMULATE = ("relax.matmul", "relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d")
_IN_FLOAT = ("relax.nn.softmax", "relax.nn.log_softmax", "relax.sum", "relax.mean", "relax.nn.layer_norm",
             "relax.nn.rms_norm", "relax.nn.group_norm", "relax.variance", "relax.cumsum",
             # transcendental functions, which TVM expands into several float16 steps each rounded
             "relax.sigmoid", "relax.exp", "relax.log", "relax.tanh", "relax.erf", "relax.sqrt", "relax.rsqrt",
             "relax.sin", "relax.cos", "relax.tan", "relax.nn.silu", "relax.nn.gelu", "relax.nn.gelu_tanh",
             "relax.nn.softplus", "relax.power")


def _dtype(e) -> str | None:
    ty = getattr(e, "ty", None)
    return str(ty.dtype) if ty is not None and hasattr(ty, "dtype") else None


def accumulate_in_float(mod):
    """``mod`` with float16/bfloat16 reductions computed in float32 (see the module doc)."""
    import tvm
    from tvm import relax

    from .provenance import relax_functions

    changed = []

    @relax.expr_functor.mutator
    class Widen(relax.PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            name = getattr(call.op, "name", None)
            if name not in _ACCUMULATE + _IN_FLOAT or not call.args:
                return call
            half = _dtype(call)
            if half not in HALF or any(_dtype(a) not in HALF for a in call.args if _dtype(a) is not None):
                return call
            bb = self.builder_
            if name in _ACCUMULATE:
                if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "void", "None", half):
                    return call
                if name == "relax.matmul":
                    new = relax.op.matmul(*call.args, out_dtype="float32")
                else:
                    a = call.attrs
                    conv = getattr(relax.op.nn, name.rsplit(".", 1)[1])
                    new = conv(*call.args, strides=a.strides, padding=a.padding, dilation=a.dilation, groups=a.groups,
                               data_layout=a.data_layout, kernel_layout=a.kernel_layout, out_layout=a.out_layout,
                               out_dtype="float32")
                wide = relax.Call(new.op, new.args, new.attrs, new.ty_args, call.span)
            else:
                args = [bb.normalize(relax.op.astype(a, "float32")) if _dtype(a) in HALF else a for a in call.args]
                wide = relax.Call(call.op, args, call.attrs, call.ty_args, call.span)
            changed.append(name)
            return relax.op.astype(bb.normalize(wide), half)

    funcs = dict(mod.functions_items())
    for gv, func in relax_functions(mod):
        funcs[gv] = Widen(mod).visit_expr(func)
    if not changed:
        return mod
    return tvm.IRModule(funcs, attrs=mod.attrs, global_infos=mod.global_infos)


# attributes that name a node's output type (EyeLike, Random*, the windows, DequantizeLinear's
# output_dtype, deploy's CastFromBits): a half one becomes float
_TYPE_ATTRS = ("to", "dtype", "output_datatype", "output_dtype")


def compute_in_float(model):
    """``model`` computing in float32 where it computed in float16/bfloat16, its inputs' and
    outputs' types unchanged (see the module doc); ``model`` itself when it has no half tensor
    or has subgraphs, local functions or sparse initializers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .specs import elem_types

    half_types = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    g = model.graph
    types = elem_types(g)

    def half_attr(a) -> bool:
        return (a.type == onnx.AttributeProto.INT and a.name in _TYPE_ATTRS and a.i in half_types
                or a.type == onnx.AttributeProto.TENSOR and a.t.data_type in half_types)

    if not (any(t in half_types for t in types.values())
            or any(half_attr(a) for n in g.node for a in n.attribute)):
        return model
    if (model.functions or g.sparse_initializer
            or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute)):
        return model

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    used = {n for node in g.node for n in [*node.input, *node.output]} | set(types)

    def fresh(base: str) -> str:
        name, k = f"{base}__f32", 0
        while name in used:
            k += 1
            name = f"{base}__f32_{k}"
        used.add(name)
        return name

    def widen_tensor(t):
        w = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)
        t.CopyFrom(w)

    def rename_uses(old: str, new: str) -> None:
        for node in g.node:
            for i, n in enumerate(node.input):
                if n == old:
                    node.input[i] = new

    head, tail = [], []
    inputs, inits, outputs_done = {i.name for i in g.input}, {i.name for i in g.initializer}, set()
    for vi in g.input:  # a half input: cast up where the graph starts
        t = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if t in half_types and vi.name not in inits:
            wide = fresh(vi.name)
            rename_uses(vi.name, wide)
            types[wide] = t
            head.append(helper.make_node("Cast", [vi.name], [wide], name=f"{vi.name}/to_float32", to=TensorProto.FLOAT))
    for vo in g.output:  # a half output: rounded once where it ends
        t = vo.type.tensor_type.elem_type if vo.type.HasField("tensor_type") else types.get(vo.name, 0)
        if t not in half_types or vo.name in inputs or vo.name in outputs_done:
            continue
        outputs_done.add(vo.name)
        wide = fresh(vo.name)
        rename_uses(vo.name, wide)
        for node in g.node:
            for i, n in enumerate(node.output):
                if n == vo.name:
                    node.output[i] = wide
        for init in g.initializer:
            if init.name == vo.name:
                init.name = wide
        tail.append(helper.make_node("Cast", [wide], [vo.name], name=f"{vo.name}/to_{TensorProto.DataType.Name(t).lower()}",
                                     to=t))
    nodes = []
    for node in g.node:
        std = node.domain in ("", "ai.onnx")
        if std and node.op_type in ("Cast", "CastLike"):
            to = (next((a.i for a in node.attribute if a.name == "to"), 0) if node.op_type == "Cast"
                  else types.get(node.input[1], 0))
            if to in half_types:
                if types.get(node.input[0]) in half_types:  # half to half: nothing, once both are float
                    nodes.append(helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name))
                else:  # a rounding as written: to the half type and back up
                    mid = fresh(node.output[0] + "/rounded")
                    keep = [a for a in node.attribute if a.name not in ("to",)]
                    first = helper.make_node("Cast", [node.input[0]], [mid], name=node.name, to=to)
                    first.attribute.extend(keep)
                    nodes += [first, helper.make_node("Cast", [mid], list(node.output), name=f"{node.name}/to_float32",
                                                      to=TensorProto.FLOAT)]
                continue
        for a in node.attribute:
            if a.type == onnx.AttributeProto.INT and a.name in _TYPE_ATTRS and a.i in half_types:
                a.i = TensorProto.FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in half_types:
                widen_tensor(a.t)
        nodes.append(node)
    for init in g.initializer:
        if init.data_type in half_types:
            widen_tensor(init)
    for vi in g.value_info:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in half_types:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    del g.node[:]
    g.node.extend(head + nodes + tail)
    return out
